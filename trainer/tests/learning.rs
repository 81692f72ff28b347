//! Learning: on synthetic preference data with a clear rule (chosen praises the topic,
//! rejected disparages it), a tiny random model must learn the rule: the reward model reaches
//! ≥ 95% held-out accuracy and DPO, SimPO and ORPO drive `rewards/accuracies` ≥ 95%; KTO on
//! thumbs (single answers labelled up or down) gives the right sign of reward to ≥ 90% of
//! held-out answers; SFT on the praising answers learns to write them; on rankings of four
//! answers by a simulated panel (graded praise), the listwise reward model and listwise DPO
//! order ≥ 90% of held-out differently ranked answer pairs as the panel did; in mixed precision
//! (bf16) DPO and a full fine-tune learn it too and save f32 weights. Also checks that a run
//! interrupted and resumed from a checkpoint logs exactly the same metrics.

use std::path::Path;

use pairwise_trainer::model::load::Precision;
use pairwise_trainer::peft::AdapterKind;
use pairwise_trainer::synthetic::{rule_completions, rule_pairs, rule_rankings, tiny_config, write_tiny_model};
use pairwise_trainer::train::config::DpoLossType;
use pairwise_trainer::train::config::TrainConfig;
use serde_json::Value;

fn setup(dir: &Path, pairs: usize) -> TrainConfig {
    write_tiny_model(&dir.join("model"), &tiny_config(), 7).unwrap();
    std::fs::write(dir.join("prefs.jsonl"), rule_pairs(pairs, 11).join("\n")).unwrap();
    TrainConfig {
        model: dir.join("model"),
        data: dir.join("prefs.jsonl"),
        output: dir.join("out"),
        eval_fraction: 0.2,
        lora_r: 8,
        lora_alpha: 16.0,
        lora_targets: ["q", "k", "v", "o", "gate", "up", "down"].map(String::from).to_vec(),
        learning_rate: 1e-2,
        warmup_ratio: 0.1,
        batch_size: 16,
        max_length: 64,
        max_prompt_length: 32,
        progress: false,
        ..TrainConfig::default()
    }
}

#[test]
fn reward_model_learns_the_rule() {
    let dir = tempfile::tempdir().unwrap();
    let config = TrainConfig { epochs: 3, ..setup(dir.path(), 400) };
    let summary = pairwise_trainer::methods::reward::run_reward(&config).unwrap();
    let accuracy = summary.eval["eval_accuracy"];
    println!("reward model: {:?}", summary.eval);
    assert!(accuracy >= 0.95, "held-out accuracy {accuracy}");
    assert!(config.output.join("adapter_model.safetensors").exists());
    assert!(config.output.join("reward_head.safetensors").exists());
}

#[test]
fn dpo_learns_the_rule() {
    let dir = tempfile::tempdir().unwrap();
    let config = TrainConfig { epochs: 3, beta: 0.1, ..setup(dir.path(), 400) };
    let summary = pairwise_trainer::methods::dpo::run_dpo(&config).unwrap();
    println!("dpo: {:?}", summary.eval);
    let accuracy = summary.eval["eval_rewards/accuracies"];
    assert!(accuracy >= 0.95, "held-out rewards/accuracies {accuracy}");
    assert!(summary.train["rewards/accuracies"] >= 0.95, "{:?}", summary.train);
    assert!(summary.eval["eval_rewards/margins"] > 0.0);
}

#[test]
fn reference_free_simpo_and_orpo_learn_the_rule() {
    for (loss_type, beta) in [(DpoLossType::Simpo, 2.0), (DpoLossType::Orpo, 0.5)] {
        let dir = tempfile::tempdir().unwrap();
        let config = TrainConfig { epochs: 3, beta, loss_type, simpo_gamma: 0.5, ..setup(dir.path(), 400) };
        let summary = pairwise_trainer::methods::dpo::run_dpo(&config).unwrap();
        println!("{loss_type:?}: {:?}", summary.eval);
        let accuracy = summary.eval["eval_rewards/accuracies"];
        assert!(accuracy >= 0.95, "{loss_type:?}: held-out rewards/accuracies {accuracy}");
        // No reference pass was made.
        assert!(!config.output.join("ref-cache").exists(), "{loss_type:?} computed reference log-probs");
        if loss_type == DpoLossType::Orpo {
            assert!(summary.eval.contains_key("eval_nll_loss"), "{:?}", summary.eval);
        }
    }
}

#[test]
fn kto_on_thumbs_learns_the_rule() {
    let dir = tempfile::tempdir().unwrap();
    let base = setup(dir.path(), 0);
    std::fs::write(dir.path().join("thumbs.jsonl"), rule_completions(600, 13).join("\n")).unwrap();
    let config = TrainConfig { epochs: 3, beta: 0.1, data: dir.path().join("thumbs.jsonl"), ..base };
    let summary = pairwise_trainer::methods::kto::run_kto(&config).unwrap();
    println!("kto: {:?}", summary.eval);
    let accuracy = summary.eval["eval_rewards/label_accuracy"];
    assert!(accuracy >= 0.9, "held-out label accuracy {accuracy}");
    assert!(summary.eval["eval_rewards/chosen"] > summary.eval["eval_rewards/rejected"], "{:?}", summary.eval);
    assert!(config.output.join("adapter_model.safetensors").exists());
}

#[test]
fn listwise_reward_model_and_dpo_learn_the_panels_rankings() {
    for method in ["reward", "dpo"] {
        let dir = tempfile::tempdir().unwrap();
        let base = setup(dir.path(), 0);
        std::fs::write(dir.path().join("rankings.jsonl"), rule_rankings(600, 4, 17).join("\n")).unwrap();
        let config = TrainConfig {
            epochs: 6,
            beta: 0.5,
            listwise: true,
            batch_size: 8,
            data: dir.path().join("rankings.jsonl"),
            ..base
        };
        let summary = match method {
            "reward" => pairwise_trainer::methods::reward::run_reward(&config).unwrap(),
            _ => pairwise_trainer::methods::dpo::run_dpo(&config).unwrap(),
        };
        println!("listwise {method}: {:?}", summary.eval);
        let accuracy = summary.eval["eval_accuracy"];
        assert!(accuracy >= 0.9, "listwise {method}: held-out pairwise ranking accuracy {accuracy}");
        assert!(summary.eval["eval_rewards/margins"] > 0.0, "{:?}", summary.eval);
        assert!(config.output.join("adapter_model.safetensors").exists());
        assert_eq!(config.output.join("reward_head.safetensors").exists(), method == "reward");
    }
}

#[test]
fn sft_learns_to_write_the_completions() {
    let dir = tempfile::tempdir().unwrap();
    let base = setup(dir.path(), 0);
    // An output layer with a trained model's logit range (a random one's cannot make any token
    // likely, and LoRA does not adapt it).
    pairwise_trainer::synthetic::write_tiny_policy(&base.model, &tiny_config(), 7).unwrap();
    // The praising answers only, as {"prompt","completion"} lines.
    let lines: Vec<String> = rule_pairs(300, 17)
        .iter()
        .map(|line| {
            let pair: Value = serde_json::from_str(line).unwrap();
            serde_json::json!({"prompt": pair["prompt"], "completion": pair["chosen"]}).to_string()
        })
        .collect();
    std::fs::write(dir.path().join("sft.jsonl"), lines.join("\n")).unwrap();
    let config = TrainConfig { epochs: 3, data: dir.path().join("sft.jsonl"), ..base };
    let summary = pairwise_trainer::methods::sft::run_sft(&config).unwrap();
    println!("sft: {:?}", summary.eval);
    let metrics = metrics_without_timing(&config.output.join("metrics.jsonl"));
    let first = metrics[0]["loss"].as_f64().unwrap();
    let held_out = summary.eval["eval_loss"];
    // The answers are 5–6 tokens, the topic given by the prompt, the praise one of six words.
    assert!(held_out < first / 3.0, "held-out loss {held_out} vs first step {first}");
    assert!(summary.eval["eval_mean_token_accuracy"] >= 0.6, "{:?}", summary.eval);
}

/// Metric lines without the wall-clock field, which legitimately differs between runs.
fn metrics_without_timing(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("tokens_per_second");
            v
        })
        .collect()
}

#[test]
fn resumed_run_matches_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let config = TrainConfig {
        max_steps: Some(12),
        save_steps: 4,
        eval_steps: 4,
        lora_dropout: 0.1,
        grad_accum: 2,
        batch_size: 4,
        scheduler: pairwise_trainer::train::optim::ScheduleKind::Cosine,
        ..setup(dir.path(), 120)
    };
    pairwise_trainer::methods::dpo::run_dpo(&config).unwrap();
    let metrics = config.output.join("metrics.jsonl");
    let uninterrupted = metrics_without_timing(&metrics);
    let adapter = std::fs::read(config.output.join("adapter_model.safetensors")).unwrap();
    assert_eq!(uninterrupted.len(), 12);
    // Pretend the run died after step 4: later checkpoints never got written.
    std::fs::remove_dir_all(config.output.join("checkpoint-8")).unwrap();
    let resumed = TrainConfig { resume: true, ..config.clone() };
    pairwise_trainer::methods::dpo::run_dpo(&resumed).unwrap();
    assert_eq!(metrics_without_timing(&metrics), uninterrupted);
    assert_eq!(std::fs::read(config.output.join("adapter_model.safetensors")).unwrap(), adapter);
    let cached = std::fs::read_dir(config.output.join("ref-cache")).unwrap().count();
    assert_eq!(cached, 1, "the second run must reuse the cached reference log-probs");
}

#[test]
fn divergence_stops_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let config = TrainConfig { learning_rate: 1e30, max_grad_norm: 0.0, max_steps: Some(5), ..setup(dir.path(), 40) };
    let err = pairwise_trainer::methods::reward::run_reward(&config).unwrap_err().to_string();
    assert!(err.contains("non-finite"), "{err}");
}

#[test]
fn full_fine_tuning_qlora_and_prefix_tuning_train_too() {
    for adapter in [AdapterKind::Full, AdapterKind::Qlora, AdapterKind::Prefix] {
        let dir = tempfile::tempdir().unwrap();
        let config = TrainConfig {
            adapter,
            // Prefixes start random (PEFT's init) and move the model further, so they get longer.
            epochs: if adapter == AdapterKind::Prefix { 4 } else { 2 },
            learning_rate: if adapter == AdapterKind::Full { 3e-3 } else { 1e-2 },
            ..setup(dir.path(), 200)
        };
        let summary = pairwise_trainer::methods::reward::run_reward(&config).unwrap();
        let accuracy = summary.eval["eval_accuracy"];
        println!("{adapter:?}: held-out accuracy {accuracy}");
        assert!(accuracy >= 0.9, "{adapter:?}: held-out accuracy {accuracy}");
        let saved = if adapter == AdapterKind::Full { "model.safetensors" } else { "adapter_model.safetensors" };
        assert!(config.output.join(saved).exists(), "{adapter:?} saved nothing");
    }
}

#[test]
fn mixed_precision_runs_learn_and_save_f32_weights() {
    for (method, adapter) in [("dpo", AdapterKind::Lora), ("reward", AdapterKind::Full)] {
        let dir = tempfile::tempdir().unwrap();
        let config = TrainConfig {
            adapter,
            precision: Precision::Bf16,
            epochs: 2,
            learning_rate: if adapter == AdapterKind::Full { 3e-3 } else { 1e-2 },
            ..setup(dir.path(), 200)
        };
        let accuracy = if method == "dpo" {
            pairwise_trainer::methods::dpo::run_dpo(&config).unwrap().eval["eval_rewards/accuracies"]
        } else {
            pairwise_trainer::methods::reward::run_reward(&config).unwrap().eval["eval_accuracy"]
        };
        println!("bf16 {method} {adapter:?}: held-out accuracy {accuracy}");
        assert!(accuracy >= 0.9, "bf16 {method} {adapter:?}: held-out accuracy {accuracy}");
        let saved = if adapter == AdapterKind::Full { "model.safetensors" } else { "adapter_model.safetensors" };
        let tensors = candle_core::safetensors::load(config.output.join(saved), &candle_core::Device::Cpu).unwrap();
        assert!(!tensors.is_empty());
        for (name, t) in tensors {
            assert_eq!(t.dtype(), candle_core::DType::F32, "bf16 {method}: {name} is saved from its f32 master");
        }
    }
}

#[test]
fn rater_signal_feeds_training_as_soft_labels_and_margins() {
    let dir = tempfile::tempdir().unwrap();
    let base = TrainConfig { epochs: 2, ..setup(dir.path(), 200) };
    let plain = pairwise_trainer::methods::reward::run_reward(&base).unwrap();
    let weighted = TrainConfig { use_rater_signal: true, output: dir.path().join("weighted"), ..base.clone() };
    let with_signal = pairwise_trainer::methods::reward::run_reward(&weighted).unwrap();
    // Some pairs have agreement 0.75 (label smoothing 0.25) and strengths 1–3 (margins), so the
    // optimum differs: the loss cannot reach the plain run's near-zero value.
    assert!(
        with_signal.eval["eval_loss"] > plain.eval["eval_loss"] + 0.01,
        "plain {} vs rater-weighted {}",
        plain.eval["eval_loss"],
        with_signal.eval["eval_loss"]
    );
    assert!(with_signal.eval["eval_accuracy"] >= 0.95, "{:?}", with_signal.eval);
    let dpo = TrainConfig { output: dir.path().join("dpo"), ..weighted };
    let summary = pairwise_trainer::methods::dpo::run_dpo(&dpo).unwrap();
    assert!(summary.eval["eval_rewards/accuracies"] >= 0.95, "{:?}", summary.eval);
}
