//! The `pairwise-train` binary end to end: `score` on the parity fixture reproduces PyTorch's
//! numbers with exactly the documented fields, `reward` reads a TOML config overridden by
//! flags, and `merge` writes a model whose log-probs equal base + adapter.

use std::path::{Path, PathBuf};
use std::process::Command;

use pairwise_trainer::synthetic::{tiny_config, write_tiny_model};
use serde_json::Value;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parity")
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pairwise-train"))
}

fn read_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn run_score(model: &Path, adapter: Option<&Path>, out: &Path) -> Vec<Value> {
    let mut cmd = bin();
    cmd.args(["score", "--limit", "8", "--beta", "0.1"])
        .arg("--model")
        .arg(model)
        .arg("--data")
        .arg(fixture().join("prefs.jsonl"))
        .arg("--reward-head")
        .arg(fixture().join("reward_head.safetensors"))
        .arg("--out")
        .arg(out);
    if let Some(a) = adapter {
        cmd.arg("--adapter").arg(a);
    }
    let output = cmd.output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("implicit_reward_accuracy"), "{stderr}");
    read_lines(out)
}

#[test]
fn score_reproduces_the_fixture_with_the_documented_fields() {
    let dir = tempfile::tempdir().unwrap();
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("expected.json")).unwrap()).unwrap();
    let lines = run_score(&fixture().join("model"), Some(&fixture().join("lora")), &dir.path().join("s.jsonl"));
    assert_eq!(lines.len(), 8);
    let fields = [
        "index",
        "chosen_logp",
        "rejected_logp",
        "ref_chosen_logp",
        "ref_rejected_logp",
        "dpo_sigmoid",
        "ipo",
        "reward_chosen",
        "reward_rejected",
        "bt_loss",
    ];
    for (line, exp) in lines.iter().zip(expected["pairs"].as_array().unwrap()) {
        let mut keys: Vec<&str> = line.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        let mut want = fields.to_vec();
        want.sort_unstable();
        assert_eq!(keys, want);
        for (ours, theirs) in [
            ("chosen_logp", "lora_chosen_logp"),
            ("rejected_logp", "lora_rejected_logp"),
            ("ref_chosen_logp", "base_chosen_logp"),
            ("dpo_sigmoid", "dpo_sigmoid"),
            ("ipo", "ipo_trl"),
        ] {
            let d = (line[ours].as_f64().unwrap() - exp[theirs].as_f64().unwrap()).abs();
            assert!(d < 1e-4, "{ours}: |Δ| {d}");
        }
    }
}

#[test]
fn merged_model_scores_like_base_plus_adapter() {
    let dir = tempfile::tempdir().unwrap();
    let merged = dir.path().join("merged");
    let status = bin()
        .arg("merge")
        .arg("--model")
        .arg(fixture().join("model"))
        .arg("--adapter")
        .arg(fixture().join("lora"))
        .arg("--out")
        .arg(&merged)
        .status()
        .unwrap();
    assert!(status.success());
    let with_adapter = run_score(&fixture().join("model"), Some(&fixture().join("lora")), &dir.path().join("a.jsonl"));
    let from_merged = run_score(&merged, None, &dir.path().join("b.jsonl"));
    for (a, b) in with_adapter.iter().zip(&from_merged) {
        let d = (a["chosen_logp"].as_f64().unwrap() - b["chosen_logp"].as_f64().unwrap()).abs();
        assert!(d < 1e-4, "merged model differs by {d}");
    }
}

#[test]
fn reward_command_reads_toml_and_flags_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    pairwise_trainer::synthetic::write_tiny_model(&model, &pairwise_trainer::synthetic::tiny_config(), 3).unwrap();
    let data = dir.path().join("prefs.jsonl");
    std::fs::write(&data, pairwise_trainer::synthetic::rule_pairs(40, 5).join("\n")).unwrap();
    let config = dir.path().join("run.toml");
    std::fs::write(
        &config,
        format!(
            "model = {:?}\ndata = {:?}\nmax_steps = 50\nlora_targets = [\"q\", \"v\"]\nlearning_rate = 1e-3\nprogress = false\n",
            model, data
        ),
    )
    .unwrap();
    let out = dir.path().join("out");
    let output = bin()
        .arg("reward")
        .arg("--config")
        .arg(&config)
        .args(["--max-steps", "3", "--batch-size", "2"])
        .arg("--output")
        .arg(&out)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let metrics = read_lines(&out.join("metrics.jsonl"));
    assert_eq!(metrics.len(), 3, "--max-steps 3 must override the file's 50");
    for key in ["loss", "accuracy", "grad_norm", "learning_rate", "tokens_per_second"] {
        assert!(metrics[0].get(key).is_some(), "metrics lack {key}");
    }
    let adapter: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!(adapter["task_type"], "SEQ_CLS");
    assert_eq!(adapter["target_modules"], serde_json::json!(["q_proj", "v_proj"]));
}

#[test]
fn help_explains_the_options() {
    let output = bin().args(["dpo", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    for option in ["--beta", "--loss-type", "--lora-targets", "--grad-accum", "--resume", "--use-rater-signal"] {
        assert!(help.contains(option), "dpo --help lacks {option}");
    }
}

#[test]
fn unsupported_model_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), r#"{"model_type":"gpt2","vocab_size":1,"hidden_size":1,"intermediate_size":1,"num_hidden_layers":1,"num_attention_heads":1}"#).unwrap();
    std::fs::copy(fixture().join("model/tokenizer.json"), dir.path().join("tokenizer.json")).unwrap();
    std::fs::copy(fixture().join("model/tokenizer_config.json"), dir.path().join("tokenizer_config.json")).unwrap();
    let output = bin()
        .arg("score")
        .arg("--model")
        .arg(dir.path())
        .arg("--data")
        .arg(fixture().join("prefs.jsonl"))
        .arg("--out")
        .arg(dir.path().join("o.jsonl"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("unsupported model_type \"gpt2\""));
}

#[test]
fn generate_writes_import_jsonl() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_model(&dir.path().join("model"), &tiny_config(), 4).unwrap();
    let prompts = dir.path().join("prompts.jsonl");
    std::fs::write(
        &prompts,
        "{\"prompt\": \"tell me about cats\"}\n\n{\"prompt\": \"what is rain\", \"messages\": [{\"role\": \"system\", \"content\": \"be kind\"}]}\n",
    )
    .unwrap();
    let generate_into = |out: &Path| {
        let status = bin()
            .args(["generate", "--model"])
            .arg(dir.path().join("model"))
            .arg("--prompts")
            .arg(&prompts)
            .args(["--num-responses", "3", "--temperature", "1.0", "--max-new-tokens", "8", "--seed", "5"])
            .args(["--model-name", "tiny", "--out"])
            .arg(out)
            .status()
            .unwrap();
        assert!(status.success());
    };
    let out = dir.path().join("pairs.jsonl");
    generate_into(&out);
    let lines = read_lines(&out);
    assert!(!lines.is_empty(), "at least one prompt got two distinct responses");
    for line in &lines {
        let responses = line["responses"].as_array().unwrap();
        assert!(responses.len() >= 2 && responses.len() <= 3, "{line}");
        for r in responses {
            assert_eq!(r["model"], "tiny");
            assert_eq!(r["checkpoint"], "base");
            assert_eq!(r["params"]["temperature"], 1.0);
            assert!(!r["text"].as_str().unwrap().is_empty());
        }
    }
    let rain = lines.iter().find(|l| l["prompt"] == "what is rain");
    if let Some(rain) = rain {
        assert_eq!(rain["messages"][0]["content"], "be kind", "earlier turns are kept");
    }
    // Same seed, same responses.
    let again = dir.path().join("again.jsonl");
    generate_into(&again);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), std::fs::read_to_string(&again).unwrap());
}

#[test]
fn rlhf_trains_a_policy_against_a_trained_reward_model() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    write_tiny_model(&model, &tiny_config(), 4).unwrap();
    std::fs::write(dir.path().join("prefs.jsonl"), pairwise_trainer::synthetic::rule_pairs(64, 3).join("\n")).unwrap();
    let status = bin()
        .args(["reward", "--model"])
        .arg(&model)
        .arg("--data")
        .arg(dir.path().join("prefs.jsonl"))
        .arg("--output")
        .arg(dir.path().join("rm"))
        .args(["--max-steps", "4", "--batch-size", "8", "--max-length", "64", "--max-prompt-length", "32"])
        .status()
        .unwrap();
    assert!(status.success());
    let prompts = dir.path().join("prompts.jsonl");
    std::fs::write(&prompts, "{\"prompt\": \"tell me about cats\"}\n{\"prompt\": \"what is tea\"}\n").unwrap();
    let out = dir.path().join("policy");
    let status = bin()
        .args(["rlhf", "--model"])
        .arg(&model)
        .arg("--prompts")
        .arg(&prompts)
        .arg("--reward-adapter")
        .arg(dir.path().join("rm"))
        .arg("--output")
        .arg(&out)
        .args(["--steps", "3", "--prompts-per-step", "2", "--samples", "2", "--max-new-tokens", "6"])
        .args(["--learning-rate", "1e-3", "--lora-targets", "q,v"])
        .status()
        .unwrap();
    assert!(status.success());
    let lines = read_lines(&out.join("metrics.jsonl"));
    assert_eq!(lines.len(), 3);
    for name in ["loss", "reward", "kl", "entropy", "response_length", "objective", "grad_norm", "learning_rate"] {
        assert!(lines[2][name].is_number(), "{name} in {}", lines[2]);
    }
    assert!(out.join("adapter_config.json").exists() && out.join("adapter_model.safetensors").exists());
    // The adapter generates.
    let status = bin()
        .args(["generate", "--model"])
        .arg(&model)
        .arg("--adapter")
        .arg(&out)
        .arg("--prompts")
        .arg(&prompts)
        .args(["--max-new-tokens", "4", "--out"])
        .arg(dir.path().join("next.jsonl"))
        .status()
        .unwrap();
    assert!(status.success());

    // Pairs chosen by the reward model: the closest pair of each prompt, rewards recorded.
    let chosen = dir.path().join("closest.jsonl");
    let status = bin()
        .args(["generate", "--model"])
        .arg(&model)
        .arg("--prompts")
        .arg(&prompts)
        .arg("--reward-adapter")
        .arg(dir.path().join("rm"))
        .args(["--num-responses", "4", "--temperature", "1.5", "--max-new-tokens", "6", "--pairs-per-prompt", "1"])
        .arg("--out")
        .arg(&chosen)
        .status()
        .unwrap();
    assert!(status.success());
    let lines = read_lines(&chosen);
    assert!(!lines.is_empty() && lines.len() <= 2, "one pair per prompt");
    for line in &lines {
        let responses = line["responses"].as_array().unwrap();
        assert_eq!(responses.len(), 2);
        assert!(responses.iter().all(|r| r["params"]["reward"].is_number()), "{line}");
    }
}
