//! Checkpoints with exact resume: the trainable tensors and the optimizer state every
//! `save_steps` steps (`OUTPUT/checkpoint-STEP/`), finding the newest complete one, and
//! trimming `metrics.jsonl` back to it.

use std::path::{Path, PathBuf};

use anyhow::Context;
use candle_core::{DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::train::optim::AdamW;

#[derive(Debug, Serialize, Deserialize)]
struct TrainerState {
    step: usize,
}

fn checkpoint_dir(output: &Path, step: usize) -> PathBuf {
    output.join(format!("checkpoint-{step}"))
}

pub fn save_checkpoint(
    output: &Path,
    step: usize,
    trainable: &[(String, Var)],
    optimizer: &AdamW,
) -> anyhow::Result<()> {
    let dir = checkpoint_dir(output, step);
    std::fs::create_dir_all(&dir)?;
    let tensors: Vec<(String, Tensor)> = trainable.iter().map(|(n, v)| (n.clone(), v.as_tensor().clone())).collect();
    crate::tensor::io::save_safetensors(&dir.join("trainable.safetensors"), &tensors)?;
    optimizer.save(&dir.join("optimizer.safetensors"))?;
    // Written last: a checkpoint without trainer_state.json is incomplete and ignored.
    std::fs::write(dir.join("trainer_state.json"), serde_json::to_string(&TrainerState { step })?)?;
    Ok(())
}

pub fn latest_checkpoint(output: &Path) -> anyhow::Result<Option<(usize, PathBuf)>> {
    let mut best = None;
    let Ok(entries) = std::fs::read_dir(output) else {
        return Ok(None);
    };
    for entry in entries {
        let path = entry?.path();
        let state = path.join("trainer_state.json");
        if !state.exists() {
            continue;
        }
        let state: TrainerState = serde_json::from_str(&std::fs::read_to_string(&state)?)?;
        if best.as_ref().is_none_or(|(s, _)| state.step > *s) {
            best = Some((state.step, path));
        }
    }
    Ok(best)
}

pub fn load_checkpoint(dir: &Path, trainable: &[(String, Var)], optimizer: &mut AdamW) -> anyhow::Result<()> {
    let mut saved = candle_core::safetensors::load(dir.join("trainable.safetensors"), &Device::Cpu)?;
    for (name, var) in trainable {
        let t = saved.remove(name).with_context(|| format!("checkpoint {} lacks {name}", dir.display()))?;
        var.set(&t.to_dtype(DType::F32)?.to_device(var.device())?)?;
    }
    optimizer.load(&dir.join("optimizer.safetensors"))
}

/// Drops metric lines written after `step`, so a resumed run's file equals an uninterrupted one.
pub fn keep_metrics_up_to(path: &Path, step: usize) -> anyhow::Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: Vec<&str> = text
        .lines()
        .filter(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| s as usize <= step)
        })
        .collect();
    let mut out = kept.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    std::fs::write(path, out)?;
    Ok(())
}
