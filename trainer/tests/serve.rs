//! `pairwise-train serve` through its real HTTP API on a tiny model with two LoRA adapters:
//! greedy answers equal `generate_batch`'s for the base and for each adapter, alone and when
//! requests for different adapters share decode steps; streaming gives the same text as a
//! plain answer and ends in `[DONE]`; seeded `n > 1` repeats; bad requests get OpenAI's error
//! shape; adapters are added and removed at run time behind the admin key; and the official
//! `openai` Python client talks to it (skipped, with the reason printed, when it cannot be
//! installed).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use candle_core::Device;
use pairwise_trainer::methods::generate::{PromptRecord, Sampling, encode_prompt, generate_batch};
use pairwise_trainer::model::ForwardCtx;
use pairwise_trainer::model::load::load_model_and_tokenizer;
use pairwise_trainer::peft::load::load_peft;
use pairwise_trainer::serve::{ServeConfig, api, prepare};
use pairwise_trainer::synthetic::{tiny_config, write_random_adapter, write_tiny_policy};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::{Value, json};

const PROMPTS: [&str; 4] = ["tell me about cats", "what is really great", "tell me about rain .", "music"];
const MAX_TOKENS: usize = 12;

/// A tiny policy folder and two adapters on it, `warm` and `cold`, with non-zero B so they
/// change the answers.
struct Fixture {
    _dir: tempfile::TempDir,
    model: PathBuf,
    warm: PathBuf,
    cold: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    write_tiny_policy(&model, &tiny_config(), 11).unwrap();
    let (warm, cold) = (dir.path().join("warm"), dir.path().join("cold"));
    write_random_adapter(&model, &warm, &["q", "v", "down"], 5).unwrap();
    write_random_adapter(&model, &cold, &["k", "o", "up", "gate"], 6).unwrap();
    Fixture { _dir: dir, model, warm, cold }
}

/// What `pairwise-train generate` answers, greedily, for `prompt` (with `adapter` loaded).
fn generate_reference(fixture: &Fixture, adapter: Option<&Path>, prompt: &str) -> String {
    let (mut model, tokenizer) = load_model_and_tokenizer(&fixture.model, &Device::Cpu).unwrap();
    if let Some(dir) = adapter {
        load_peft(dir, &mut model).unwrap();
    }
    let ids = encode_prompt(&tokenizer, &PromptRecord { prompt: prompt.into(), messages: vec![] }).unwrap();
    let sampling =
        Sampling { temperature: 0.0, top_p: 1.0, top_k: 0, max_new_tokens: MAX_TOKENS, stop: vec![], seed: 0 };
    let out =
        generate_batch(&model, &tokenizer, &[ids], &sampling, &mut StdRng::seed_from_u64(0), &ForwardCtx::eval(true))
            .unwrap();
    out[0].text.clone()
}

/// A serve process's HTTP side in this process, on a free port; stops when dropped.
struct Server {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop.take().map(|stop| stop.send(()));
        let _ = self.thread.take().map(|t| t.join());
    }
}

fn config(fixture: &Fixture, admin_key: Option<&str>) -> ServeConfig {
    ServeConfig {
        model: fixture.model.clone(),
        name: Some("tiny".into()),
        adapter: vec![("warm".into(), fixture.warm.clone()), ("cold".into(), fixture.cold.clone())],
        bind: "127.0.0.1:0".parse().unwrap(),
        api_key: None,
        admin_key: admin_key.map(String::from),
        max_batch: 32,
        default_max_tokens: MAX_TOKENS,
        context_length: None,
        max_n: 8,
    }
}

fn start(config: &ServeConfig) -> Server {
    let state = prepare(config).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (bound, address) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            bound.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, api::router(Arc::clone(&state)))
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
    });
    let address = address.recv().unwrap();
    Server { url: format!("http://{address}"), stop: Some(stop), thread: Some(thread) }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).build().into()
}

/// POSTs JSON and returns the status and the body (JSON, or the raw text as a string).
fn post(url: &str, key: Option<&str>, body: &Value) -> (u16, Value) {
    let mut request = agent().post(url);
    if let Some(key) = key {
        request = request.header("Authorization", &format!("Bearer {key}"));
    }
    let mut response = request.header("Content-Type", "application/json").send(body.to_string()).unwrap();
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn chat(server: &Server, model: &str, prompt: &str) -> Value {
    let body = json!({"model": model, "messages": [{"role": "user", "content": prompt}], "temperature": 0});
    let (status, answer) = post(&format!("{}/v1/chat/completions", server.url), None, &body);
    assert_eq!(status, 200, "{answer}");
    answer
}

fn content(answer: &Value) -> String {
    answer["choices"][0]["message"]["content"].as_str().unwrap().to_string()
}

#[test]
fn greedy_answers_equal_generate_for_the_base_and_each_adapter() {
    let fixture = fixture();
    let server = start(&config(&fixture, None));
    let (_, models) = {
        let mut response = agent().get(&format!("{}/v1/models", server.url)).call().unwrap();
        (response.status(), serde_json::from_str::<Value>(&response.body_mut().read_to_string().unwrap()).unwrap())
    };
    let ids: Vec<&str> = models["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["tiny", "warm", "cold"]);

    let mut differs = false;
    let mut spoke = false;
    for prompt in PROMPTS {
        let base = generate_reference(&fixture, None, prompt);
        for (model, adapter) in [("tiny", None), ("warm", Some(&fixture.warm)), ("cold", Some(&fixture.cold))] {
            let expected = generate_reference(&fixture, adapter.map(PathBuf::as_path), prompt);
            let answer = chat(&server, model, prompt);
            assert_eq!(content(&answer), expected, "{model} on {prompt:?}");
            differs |= expected != base;
            spoke |= !expected.is_empty();
            let usage = &answer["usage"];
            assert!(usage["completion_tokens"].as_u64().unwrap() >= 1);
            assert_eq!(
                usage["total_tokens"].as_u64().unwrap(),
                usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
            );
            assert_eq!(answer["object"], "chat.completion");
            assert_eq!(answer["model"], model);
        }
    }
    assert!(spoke, "some answer must be non-empty, or equality would prove little");
    assert!(differs, "the adapters must change some answer, or this test could not tell them apart");
}

#[test]
fn concurrent_requests_for_different_adapters_share_the_batch_and_answer_as_alone() {
    let fixture = fixture();
    let server = start(&config(&fixture, None));
    let jobs: Vec<(&str, &str)> = PROMPTS.iter().flat_map(|p| ["tiny", "warm", "cold"].map(|m| (m, *p))).collect();
    let alone: Vec<String> = jobs.iter().map(|(model, prompt)| content(&chat(&server, model, prompt))).collect();
    // All at once, several rounds: the rows join and leave a shared batch at different steps.
    for _ in 0..2 {
        let together: Vec<String> = std::thread::scope(|scope| {
            let handles: Vec<_> = jobs
                .iter()
                .map(|(model, prompt)| {
                    let server = &server;
                    scope.spawn(move || content(&chat(server, model, prompt)))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(together, alone);
    }
}

/// The `data:` payloads of a server-sent event stream.
fn sse_events(text: &str) -> Vec<String> {
    text.lines().filter_map(|line| line.strip_prefix("data:")).map(|d| d.trim().to_string()).collect()
}

#[test]
fn streaming_gives_the_same_text_in_openai_chunks_and_ends_with_done() {
    let fixture = fixture();
    let server = start(&config(&fixture, None));
    for (model, prompt) in [("warm", PROMPTS[0]), ("tiny", PROMPTS[1])] {
        let plain = content(&chat(&server, model, prompt));
        let body = json!({"model": model, "messages": [{"role": "user", "content": prompt}], "temperature": 0,
            "stream": true, "stream_options": {"include_usage": true}});
        let (status, raw) = post(&format!("{}/v1/chat/completions", server.url), None, &body);
        assert_eq!(status, 200);
        let events = sse_events(raw.as_str().unwrap());
        assert_eq!(events.last().unwrap(), "[DONE]");
        let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        let text: String = chunks
            .iter()
            .filter_map(|c| c["choices"].get(0).and_then(|c| c["delta"]["content"].as_str()).map(String::from))
            .collect();
        assert_eq!(text, plain);
        assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"));
        let finishes: Vec<&Value> = chunks
            .iter()
            .filter_map(|c| c["choices"].get(0))
            .map(|c| &c["finish_reason"])
            .filter(|f| !f.is_null())
            .collect();
        assert_eq!(finishes.len(), 1, "one finish_reason per choice");
        let usage = &chunks.last().unwrap()["usage"];
        assert!(usage["completion_tokens"].as_u64().unwrap() >= 1, "{usage}");
    }
    // Plain completions stream too.
    let body = json!({"model": "tiny", "prompt": "tell me about", "temperature": 0, "stream": true, "max_tokens": 5});
    let (status, raw) = post(&format!("{}/v1/completions", server.url), None, &body);
    assert_eq!(status, 200);
    let events = sse_events(raw.as_str().unwrap());
    assert_eq!(events.last().unwrap(), "[DONE]");
    let (_, plain) = post(
        &format!("{}/v1/completions", server.url),
        None,
        &json!({"model": "tiny", "prompt": "tell me about", "temperature": 0, "max_tokens": 5}),
    );
    let streamed: String = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str::<Value>(e).unwrap()["choices"][0]["text"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(streamed, plain["choices"][0]["text"].as_str().unwrap());
    assert_eq!(plain["object"], "text_completion");
}

#[test]
fn seeded_sampling_with_n_repeats_and_choices_differ() {
    let fixture = fixture();
    let server = start(&config(&fixture, None));
    let body = json!({"model": "cold", "messages": [{"role": "user", "content": "tell me about tea"}],
        "temperature": 1.5, "seed": 42, "n": 4, "max_tokens": 10});
    let url = format!("{}/v1/chat/completions", server.url);
    let texts = |answer: &Value| -> Vec<String> {
        answer["choices"].as_array().unwrap().iter().map(|c| c["message"]["content"].as_str().unwrap().into()).collect()
    };
    let (status, first) = post(&url, None, &body);
    assert_eq!(status, 200, "{first}");
    let (_, second) = post(&url, None, &body);
    assert_eq!(texts(&first).len(), 4);
    assert_eq!(texts(&first), texts(&second), "same seed, same answers");
    let distinct: std::collections::BTreeSet<String> = texts(&first).into_iter().collect();
    assert!(distinct.len() > 1, "each choice draws with its own seed: {distinct:?}");
    let indices: Vec<u64> = first["choices"].as_array().unwrap().iter().map(|c| c["index"].as_u64().unwrap()).collect();
    assert_eq!(indices, [0, 1, 2, 3]);
}

#[test]
fn bad_requests_get_openai_errors_with_their_status() {
    let fixture = fixture();
    let server = start(&config(&fixture, None));
    let url = format!("{}/v1/chat/completions", server.url);
    let user = |content: &str| json!([{"role": "user", "content": content}]);
    let cases = [
        (json!({"model": "nope", "messages": user("cats")}), 404, "model_not_found", "model"),
        (json!({"model": "tiny", "messages": user("cats"), "temperature": 3}), 400, "invalid_value", "temperature"),
        (json!({"model": "tiny", "messages": user("cats"), "top_p": 0}), 400, "invalid_value", "top_p"),
        (json!({"model": "tiny", "messages": user("cats"), "n": 99}), 400, "invalid_value", "n"),
        (json!({"model": "tiny", "messages": []}), 400, "invalid_value", "messages"),
        (
            json!({"model": "tiny", "messages": user("cats"), "max_tokens": 500}),
            400,
            "context_length_exceeded",
            "messages",
        ),
        (json!({"model": "tiny", "messages": user(&"cats ".repeat(200))}), 400, "context_length_exceeded", "messages"),
        (json!({"model": "tiny", "messages": [{"role": "robot", "content": "hi"}]}), 400, "invalid_value", "messages"),
    ];
    for (body, status, code, param) in cases {
        let (got, error) = post(&url, None, &body);
        assert_eq!(got, status, "{body} -> {error}");
        assert_eq!(error["error"]["code"], code, "{error}");
        assert_eq!(error["error"]["param"], param, "{error}");
        assert!(error["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let mut response = agent().post(&url).header("Content-Type", "application/json").send("{not json").unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let error: Value = serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(error["error"]["code"], "invalid_json");
    // The server is still answering after all that.
    let (status, _) = post(&url, None, &json!({"model": "tiny", "messages": user("cats"), "max_tokens": 3}));
    assert_eq!(status, 200);
}

#[test]
fn adapters_are_added_and_removed_at_run_time_with_the_admin_key() {
    let fixture = fixture();
    let mut locked = config(&fixture, None);
    locked.adapter.clear();
    let server = start(&locked);
    let adapters = format!("{}/v1/adapters", server.url);
    let (status, error) = post(&adapters, None, &json!({"name": "warm", "path": fixture.warm}));
    assert_eq!(status, 403, "no admin key configured: adapter routes are off ({error})");
    drop(server);

    let mut open = config(&fixture, Some("s3cret"));
    open.adapter.truncate(1);
    let server = start(&open);
    let adapters = format!("{}/v1/adapters", server.url);
    let (status, _) = post(&adapters, Some("wrong"), &json!({"name": "cold", "path": fixture.cold}));
    assert_eq!(status, 401);
    let (status, error) = post(&adapters, Some("s3cret"), &json!({"name": "bad", "path": "/no/such/folder"}));
    assert_eq!(status, 400, "{error}");
    assert!(error["error"]["message"].as_str().unwrap().contains("adapter_config.json"), "{error}");
    let (status, error) = post(&adapters, Some("s3cret"), &json!({"name": "warm", "path": fixture.cold}));
    assert_eq!(status, 400, "the name is taken: {error}");

    let (status, created) = post(&adapters, Some("s3cret"), &json!({"name": "cold", "path": fixture.cold}));
    assert_eq!(status, 201, "{created}");
    let expected = generate_reference(&fixture, Some(&fixture.cold), PROMPTS[0]);
    assert_eq!(content(&chat(&server, "cold", PROMPTS[0])), expected);

    let delete = |name: &str, key: &str| {
        let mut response = agent()
            .delete(&format!("{adapters}/{name}"))
            .header("Authorization", &format!("Bearer {key}"))
            .call()
            .unwrap();
        (response.status().as_u16(), response.body_mut().read_to_string().unwrap())
    };
    assert_eq!(delete("warm", "wrong").0, 401);
    assert_eq!(delete("warm", "s3cret").0, 200);
    assert_eq!(delete("warm", "s3cret").0, 404);
    let body = json!({"model": "warm", "messages": [{"role": "user", "content": "cats"}]});
    let (status, _) = post(&format!("{}/v1/chat/completions", server.url), None, &body);
    assert_eq!(status, 404, "a removed adapter is no longer served");
    // Its slot is reused by the next one, and the one still loaded is unaffected.
    let (status, _) = post(&adapters, Some("s3cret"), &json!({"name": "warm2", "path": fixture.warm}));
    assert_eq!(status, 201);
    let warm = generate_reference(&fixture, Some(&fixture.warm), PROMPTS[2]);
    assert_eq!(content(&chat(&server, "warm2", PROMPTS[2])), warm);
    assert_eq!(content(&chat(&server, "cold", PROMPTS[0])), expected);
}

#[test]
fn api_key_guards_every_route() {
    let fixture = fixture();
    let mut keyed = config(&fixture, None);
    keyed.api_key = Some("k1".into());
    let server = start(&keyed);
    let url = format!("{}/v1/chat/completions", server.url);
    let body = json!({"model": "tiny", "messages": [{"role": "user", "content": "cats"}], "max_tokens": 2});
    assert_eq!(post(&url, None, &body).0, 401);
    assert_eq!(post(&url, Some("k2"), &body).0, 401);
    assert_eq!(post(&url, Some("k1"), &body).0, 200);
    let response = agent().get(&format!("{}/v1/models", server.url)).call().unwrap();
    assert_eq!(response.status().as_u16(), 401);
}

const OPENAI_CLIENT: &str = r#"
import sys, openai
client = openai.OpenAI(base_url=sys.argv[1] + "/v1", api_key="unused")
ask = [{"role": "user", "content": "tell me about cats"}]
plain = client.chat.completions.create(model="warm", messages=ask, temperature=0)
streamed = "".join(c.choices[0].delta.content or "" for c in
    client.chat.completions.create(model="warm", messages=ask, temperature=0, stream=True) if c.choices)
assert streamed == plain.choices[0].message.content, (streamed, plain.choices[0].message.content)
many = client.chat.completions.create(model="cold", messages=ask, temperature=1.0, seed=3, n=3, max_tokens=6)
assert len(many.choices) == 3 and many.usage.completion_tokens >= 3
try:
    client.chat.completions.create(model="nope", messages=ask)
    raise SystemExit("an unknown model must fail")
except openai.NotFoundError as e:
    assert e.status_code == 404
print(plain.choices[0].message.content)
"#;

/// A venv with the `openai` package under the target folder (installed once), or why not.
fn python_with_openai() -> Result<PathBuf, String> {
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/openai-venv");
    let python = target.join("bin/python");
    let ready =
        |python: &Path| Command::new(python).args(["-c", "import openai"]).output().is_ok_and(|o| o.status.success());
    if ready(&python) {
        return Ok(python);
    }
    let venv =
        Command::new("python3").args(["-m", "venv"]).arg(&target).output().map_err(|e| format!("python3: {e}"))?;
    if !venv.status.success() {
        return Err(format!("python3 -m venv failed: {}", String::from_utf8_lossy(&venv.stderr).trim()));
    }
    let pip = Command::new(&python)
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "openai"])
        .output()
        .map_err(|e| format!("pip: {e}"))?;
    if !pip.status.success() {
        return Err(format!("pip install openai failed: {}", String::from_utf8_lossy(&pip.stderr).trim()));
    }
    ready(&python).then_some(python).ok_or_else(|| "openai still not importable after pip install".into())
}

#[test]
fn the_official_openai_python_client_works() {
    let python = match python_with_openai() {
        Ok(python) => python,
        Err(reason) => {
            eprintln!("skipped: the openai Python client is not available ({reason})");
            return;
        }
    };
    let fixture = fixture();
    let server = start(&config(&fixture, None));
    let out = Command::new(python).args(["-c", OPENAI_CLIENT, &server.url]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout.trim(), generate_reference(&fixture, Some(&fixture.warm), "tell me about cats"));
}
