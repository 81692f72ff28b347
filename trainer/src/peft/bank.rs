//! Several LoRA adapters loaded side by side on one base model, for serving: each adapter
//! gets a slot in every layer's [`AdaptedLinear::bank`](crate::model::AdaptedLinear::bank),
//! and a forward pass with [`RowAdapters`](crate::model::linear::RowAdapters) runs each batch
//! row with its own slot while the base weights are multiplied once for the whole batch.

use std::path::Path;

use anyhow::bail;

use crate::model::LlamaModel;
use crate::peft::load::load_peft;

/// Reads the PEFT LoRA adapter in `dir` into bank `slot` of `model` (replacing what the slot
/// held). Prefix-tuning adapters and reward-model adapters (with a `score` head) are refused:
/// neither can share a decode batch as a per-row delta.
pub fn load_into_bank(dir: &Path, model: &mut LlamaModel, slot: usize) -> anyhow::Result<()> {
    // The clone shares the base tensors; it only gives the loader a model to attach to.
    let mut scratch = model.clone();
    let loaded = load_peft(dir, &mut scratch)?;
    if scratch.layers.first().is_some_and(|l| l.self_attn.prefix.is_some()) {
        bail!("{}: prefix-tuning adapters cannot be served side by side; merge or use LoRA", dir.display());
    }
    if loaded.score.is_some() {
        bail!("{}: this is a reward-model adapter (it has a score head), not a policy to chat with", dir.display());
    }
    for (layer, loaded_layer) in model.layers.iter_mut().zip(scratch.layers.iter_mut()) {
        for ((_, linear), (_, loaded_linear)) in layer.linears_mut().into_iter().zip(loaded_layer.linears_mut()) {
            if linear.bank.len() <= slot {
                linear.bank.resize(slot + 1, None);
            }
            linear.bank[slot] = loaded_linear.lora.take();
        }
    }
    Ok(())
}

/// Empties bank `slot` (its tensors are freed once no forward pass holds them).
pub fn remove_from_bank(model: &mut LlamaModel, slot: usize) {
    for layer in &mut model.layers {
        for (_, linear) in layer.linears_mut() {
            if let Some(entry) = linear.bank.get_mut(slot) {
                *entry = None;
            }
        }
    }
}
