//! The trainer's generation feeding the store: responses sampled from a (tiny, self-made)
//! policy are posted to a campaign through the import API (what `pairwise-train generate
//! --to` does) and become pairs raters are served — on both databases.

use candle_core::Device;
use pairwise_server::accounts::Role;
use pairwise_tests::{Backend, TestServer, both_backends, create_campaign};
use pairwise_trainer::methods::generate::{Batching, PromptRecord, Sampling, encode_prompt, generate_all};
use pairwise_trainer::model::ForwardCtx;
use pairwise_trainer::synthetic::{tiny_config, write_tiny_model};
use serde_json::json;

async fn generated_responses_become_pairs(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.client_for("admin", Role::Admin).await;
    let campaign = create_campaign(&admin, json!({"name": "round 2", "status": "active", "overlap": 1})).await;
    let dir = tempfile::tempdir().unwrap();
    write_tiny_model(dir.path(), &tiny_config(), 8).unwrap();
    let (model, tokenizer) = pairwise_trainer::model::load::load_model_and_tokenizer(dir.path(), &Device::Cpu).unwrap();
    let prompts: Vec<PromptRecord> = ["tell me about cats", "what is tea", "tell me about trains"]
        .map(|p| PromptRecord { prompt: p.into(), messages: vec![] })
        .to_vec();
    let encoded: Vec<Vec<u32>> = prompts.iter().map(|p| encode_prompt(&tokenizer, p).unwrap()).collect();
    let sampling = Sampling { temperature: 1.2, top_p: 1.0, top_k: 0, max_new_tokens: 10, stop: vec![], seed: 3 };
    let batching = Batching { responses_per_prompt: 2, batch_size: 4 };
    let results =
        generate_all(&model, &tokenizer, &encoded, batching, &sampling, &ForwardCtx::eval(true), |_| {}).unwrap();
    let body: String = prompts
        .iter()
        .zip(&results)
        .filter(|(_, r)| r[0].text != r[1].text && r.iter().all(|c| !c.text.is_empty()))
        .map(|(p, r)| {
            let responses: Vec<_> =
                r.iter().map(|c| json!({"text": c.text, "model": "tiny", "checkpoint": "round-1"})).collect();
            format!("{}\n", json!({"prompt": p.prompt, "responses": responses}))
        })
        .collect();
    let expected = body.lines().count();
    assert!(expected >= 2, "sampling at temperature 1.2 gives distinct responses");
    let url = format!("{}/api/v1/campaigns/{campaign}", server.base);
    let token = admin.token.clone().unwrap();
    let report = tokio::task::spawn_blocking(move || {
        pairwise_trainer::data::remote::import_to_campaign(&url, &token, body.into_bytes())
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(report["pairs_created"], expected);
    let rater = server.client_for("rater", Role::Annotator).await;
    let next = rater.get(&format!("/api/v1/campaigns/{campaign}/next")).await.json;
    assert_eq!(next["status"], "assigned", "{next}");

    // A bad push is refused with the server's message (line and field).
    let url = format!("{}/campaigns/{campaign}", server.base);
    let token = admin.token.clone().unwrap();
    let error = tokio::task::spawn_blocking(move || {
        pairwise_trainer::data::remote::import_to_campaign(&url, &token, b"{\"prompt\": \"x\"}\n".to_vec())
    })
    .await
    .unwrap()
    .unwrap_err();
    assert!(error.to_string().contains("line 1"), "{error}");
    server.stop().await;
}
both_backends!(generated_responses_become_pairs);
