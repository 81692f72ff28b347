//! Round trip with Python: adapters trained here are loaded by `PeftModel.from_pretrained`
//! on top of transformers' `LlamaForCausalLM` (DPO policy: the completion log-prob must equal
//! ours) and `LlamaForSequenceClassification` (reward model with its `score` head: the
//! reward must equal ours), and a prefix-tuning policy (PEFT's `PREFIX_TUNING`). Skipped, with
//! the reason printed, when Python with torch, transformers and peft is not available (CI
//! installs no Python). Without Python: prefixes saved in PEFT's format and loaded back give
//! the same log-probs.

use std::process::Command;

use candle_core::Device;
use pairwise_trainer::data::batch::SequenceBatch;
use pairwise_trainer::data::pairs::TokenizedSequence;
use pairwise_trainer::data::readout::{completion_log_probs, sequence_log_probs};
use pairwise_trainer::model::load::load_model;
use pairwise_trainer::model::{ForwardCtx, LlamaModel};
use pairwise_trainer::peft::load::load_peft;
use pairwise_trainer::peft::prefix::{attach_prefix, load_prefix_peft, save_prefix_peft};
use pairwise_trainer::peft::{AdapterKind, PeftTask};
use pairwise_trainer::synthetic::{rule_pairs, tiny_config, write_tiny_model};
use pairwise_trainer::train::config::TrainConfig;

const SCRIPT: &str = r#"
import sys, torch
from transformers import AutoModelForCausalLM
from peft import PeftModel
model_dir, adapter_dir, prompt_len = sys.argv[1], sys.argv[2], int(sys.argv[3])
ids = torch.tensor([[int(x) for x in sys.argv[4].split(",")]])
base = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
model = PeftModel.from_pretrained(base, adapter_dir).eval()
with torch.no_grad():
    logits = model(input_ids=ids).logits[0, :-1]
logp = torch.log_softmax(logits, -1).gather(1, ids[0, 1:].unsqueeze(1)).squeeze(1)
print(float(logp[prompt_len - 1:].sum()))
"#;

/// The Python interpreter to check against (the first `python3` on `PATH`).
fn python() -> Command {
    Command::new("python3")
}

fn python_with_peft() -> Result<(), String> {
    let out = python()
        .args(["-c", "import torch, transformers, peft"])
        .output()
        .map_err(|e| format!("python3 not runnable: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("import failed").to_string())
    }
}

/// Trains a DPO policy for 5 steps on a tiny model (`adapter` sets the adapter options), then
/// compares one completion log-prob computed here with the adapter loaded back against the
/// same through `PeftModel.from_pretrained`.
fn dpo_policy_matches_peft(seed: u64, adapter: impl FnOnce(TrainConfig) -> TrainConfig) {
    let dir = tempfile::tempdir().unwrap();
    let model_dir = dir.path().join("model");
    write_tiny_model(&model_dir, &tiny_config(), seed).unwrap();
    std::fs::write(dir.path().join("prefs.jsonl"), rule_pairs(32, seed).join("\n")).unwrap();
    let config = adapter(TrainConfig {
        model: model_dir.clone(),
        data: dir.path().join("prefs.jsonl"),
        output: dir.path().join("adapter"),
        learning_rate: 1e-2,
        max_steps: Some(5),
        progress: false,
        ..TrainConfig::default()
    });
    pairwise_trainer::methods::dpo::run_dpo(&config).unwrap();

    let mut model = load_model(&model_dir, &candle_core::Device::Cpu).unwrap();
    load_peft(&config.output, &mut model).unwrap();
    let seq = TokenizedSequence { ids: vec![1, 4, 6, 7, 8, 13, 5, 13, 10, 29, 12, 2], prompt_len: 7 };
    let ours = sequence_log_probs(&model, std::slice::from_ref(&seq), 0, true, 1).unwrap()[0] as f64;
    let base = sequence_log_probs(&model, std::slice::from_ref(&seq), 0, false, 1).unwrap()[0] as f64;
    assert!((ours - base).abs() > 1e-3, "training should move the log-prob ({ours} vs base {base})");
    let ids: Vec<String> = seq.ids.iter().map(u32::to_string).collect();
    let out = python()
        .args(["-c", SCRIPT])
        .arg(&model_dir)
        .arg(&config.output)
        .arg(seq.prompt_len.to_string())
        .arg(ids.join(","))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let theirs: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!((ours - theirs).abs() < 1e-4, "ours {ours} vs PEFT {theirs}");
}

#[test]
fn trained_adapter_loads_in_peft_with_equal_log_probs() {
    if let Err(reason) = python_with_peft() {
        println!("SKIPPED peft round trip: torch/transformers/peft unavailable ({reason})");
        return;
    }
    dpo_policy_matches_peft(21, |config| TrainConfig {
        lora_targets: ["q", "k", "v", "o", "gate", "up", "down"].map(String::from).to_vec(),
        ..config
    });
}

#[test]
fn trained_prefix_adapter_loads_in_peft_with_equal_log_probs() {
    if let Err(reason) = python_with_peft() {
        println!("SKIPPED peft prefix round trip: torch/transformers/peft unavailable ({reason})");
        return;
    }
    dpo_policy_matches_peft(23, |config| TrainConfig { adapter: AdapterKind::Prefix, num_virtual_tokens: 4, ..config });
}

const REWARD_SCRIPT: &str = r#"
import sys, torch
from transformers import AutoModelForSequenceClassification
from peft import PeftModel
model_dir, adapter_dir = sys.argv[1], sys.argv[2]
ids = torch.tensor([[int(x) for x in sys.argv[3].split(",")]])
base = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1, torch_dtype=torch.float32)
model = PeftModel.from_pretrained(base, adapter_dir).eval()
with torch.no_grad():
    print(float(model(input_ids=ids).logits[0, 0]))
"#;

#[test]
fn trained_reward_adapter_loads_in_peft_with_equal_rewards() {
    if let Err(reason) = python_with_peft() {
        println!("SKIPPED peft reward round trip: torch/transformers/peft unavailable ({reason})");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let model_dir = dir.path().join("model");
    write_tiny_model(&model_dir, &tiny_config(), 22).unwrap();
    std::fs::write(dir.path().join("prefs.jsonl"), rule_pairs(32, 4).join("\n")).unwrap();
    let config = TrainConfig {
        model: model_dir.clone(),
        data: dir.path().join("prefs.jsonl"),
        output: dir.path().join("reward"),
        lora_targets: ["q", "v", "up"].map(String::from).to_vec(),
        learning_rate: 1e-2,
        max_steps: Some(5),
        progress: false,
        ..TrainConfig::default()
    };
    pairwise_trainer::methods::reward::run_reward(&config).unwrap();

    let mut model = load_model(&model_dir, &candle_core::Device::Cpu).unwrap();
    let head = load_peft(&config.output, &mut model).unwrap().score.expect("the adapter carries the score head");
    let seq = TokenizedSequence { ids: vec![1, 4, 6, 7, 8, 13, 5, 13, 10, 29, 12, 2], prompt_len: 7 };
    let ours = pairwise_trainer::data::readout::sequence_rewards(&model, std::slice::from_ref(&seq), 0, &head, true, 1)
        .unwrap()[0] as f64;
    let ids: Vec<String> = seq.ids.iter().map(u32::to_string).collect();
    let out =
        python().args(["-c", REWARD_SCRIPT]).arg(&model_dir).arg(&config.output).arg(ids.join(",")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let theirs: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!((ours - theirs).abs() < 1e-4, "ours {ours} vs PEFT {theirs}");
}

#[test]
fn prefixes_change_the_policy_and_round_trip_through_peft_format() -> anyhow::Result<()> {
    let mut model = LlamaModel::random(tiny_config(), 3, &Device::Cpu)?;
    let vars = attach_prefix(&mut model, 4, 1)?;
    assert_eq!(vars.len(), 2 * model.layers.len());
    let batch = SequenceBatch::new(
        &[TokenizedSequence { ids: vec![1, 4, 6, 7, 8, 13, 5, 13, 10, 29, 12, 2], prompt_len: 7 }],
        0,
        &model.config,
        &Device::Cpu,
    )?;
    let logp = |m: &LlamaModel, adapters| -> anyhow::Result<f32> {
        Ok(completion_log_probs(m, &batch, &ForwardCtx::eval(adapters))?.to_vec1::<f32>()?[0])
    };
    let with = logp(&model, true)?;
    assert_ne!(with, logp(&model, false)?, "the prefix must change the output");
    let dir = tempfile::tempdir()?;
    save_prefix_peft(dir.path(), &model, PeftTask::CausalLm, "base", None)?;
    let mut fresh = LlamaModel::random(tiny_config(), 3, &Device::Cpu)?;
    load_prefix_peft(dir.path(), &mut fresh)?;
    assert!((logp(&fresh, true)? - with).abs() < 1e-6);
    Ok(())
}
