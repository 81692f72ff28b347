//! safetensors I/O: every tensor of a Hugging Face model folder (single file or sharded with
//! `model.safetensors.index.json`), and a writer that tags files with `format = pt` the way
//! transformers and PEFT expect.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use anyhow::Context;
use candle_core::{Device, Tensor};

use crate::error::TrainerError;

/// All tensors of a Hugging Face model folder, by name, on the CPU.
pub fn load_safetensors_dir(dir: &Path) -> anyhow::Result<HashMap<String, Tensor>> {
    let single = dir.join("model.safetensors");
    if single.exists() {
        return candle_core::safetensors::load(&single, &Device::Cpu)
            .with_context(|| format!("reading {}", single.display()));
    }
    let index_path = dir.join("model.safetensors.index.json");
    let index_text = std::fs::read_to_string(&index_path).map_err(|_| TrainerError::MissingFile {
        path: single.clone(),
        what: "a model folder needs model.safetensors or a sharded model.safetensors.index.json",
    })?;
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: HashMap<String, String>,
    }
    let index: Index =
        serde_json::from_str(&index_text).with_context(|| format!("parsing {}", index_path.display()))?;
    let shards: BTreeSet<&String> = index.weight_map.values().collect();
    let mut tensors = HashMap::new();
    for shard in shards {
        let path = dir.join(shard);
        if !path.exists() {
            return Err(TrainerError::MissingFile { path, what: "listed in model.safetensors.index.json" }.into());
        }
        tensors.extend(
            candle_core::safetensors::load(&path, &Device::Cpu)
                .with_context(|| format!("reading {}", path.display()))?,
        );
    }
    Ok(tensors)
}

/// Writes tensors to a safetensors file with the `{"format": "pt"}` metadata transformers checks.
pub fn save_safetensors(path: &Path, tensors: &[(String, Tensor)]) -> anyhow::Result<()> {
    let contiguous: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(n, t)| Ok((n.clone(), t.to_device(&Device::Cpu)?.contiguous()?)))
        .collect::<candle_core::Result<_>>()?;
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(contiguous, Some(metadata), path)
        .with_context(|| format!("writing {}", path.display()))
}
