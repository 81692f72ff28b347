//! safetensors I/O: every tensor of a Hugging Face model folder (single file or sharded with
//! `model.safetensors.index.json`), read all at once or one tensor at a time
//! ([`SafetensorsFolder`], so a loader can convert or quantize each before reading the next),
//! and a writer that tags files with `format = pt` the way transformers and PEFT expect.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use candle_core::{DType, Device, Tensor};

use crate::error::TrainerError;
use crate::tensor::packed::PackedWeight;

/// Where a model's weights come from, tensor by tensor: a loader takes each one once.
pub trait TensorSource {
    /// The tensor `name` (removed from the source), or `None` when there is none.
    fn take(&mut self, name: &str) -> anyhow::Result<Option<Tensor>>;
    /// Whether the source holds `name` (without reading it).
    fn contains(&self, name: &str) -> bool;
    /// The llama.cpp blocks of the source's weights by name, for a source that has them (a
    /// GGUF file); the model multiplies few-row inputs with them (see [`PackedWeight`]).
    fn packed_weights(&mut self) -> HashMap<String, PackedWeight> {
        HashMap::new()
    }
}

impl TensorSource for HashMap<String, Tensor> {
    fn take(&mut self, name: &str) -> anyhow::Result<Option<Tensor>> {
        Ok(self.remove(name))
    }

    fn contains(&self, name: &str) -> bool {
        self.contains_key(name)
    }
}

/// One tensor's entry in a safetensors header.
#[derive(serde::Deserialize)]
struct TensorEntry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: (u64, u64),
}

/// The safetensors files of a model folder, read one tensor at a time with plain file reads
/// (no memory map), so that loading holds at most one tensor in its stored dtype besides
/// what the loader keeps: a bf16 checkpoint quantized for QLoRA never exists in f32 whole.
pub struct SafetensorsFolder {
    files: Vec<PathBuf>,
    /// Tensor name → (file index, absolute byte range, dtype, shape).
    entries: HashMap<String, (usize, u64, u64, DType, Vec<usize>)>,
}

impl SafetensorsFolder {
    /// Indexes `dir/model.safetensors`, or the shards `model.safetensors.index.json` lists.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        let files = shard_files(dir)?;
        let mut entries = HashMap::new();
        for (i, path) in files.iter().enumerate() {
            let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
            let mut len = [0u8; 8];
            file.read_exact(&mut len).with_context(|| format!("{}: no safetensors header", path.display()))?;
            let header_len = u64::from_le_bytes(len);
            if header_len > 100_000_000 {
                bail!("{}: safetensors header of {header_len} bytes; not a safetensors file?", path.display());
            }
            let mut header = vec![0u8; header_len as usize];
            file.read_exact(&mut header)
                .with_context(|| format!("{}: truncated safetensors header", path.display()))?;
            let mut map: HashMap<String, serde_json::Value> = serde_json::from_slice(&header)
                .with_context(|| format!("{}: the safetensors header is not JSON", path.display()))?;
            map.remove("__metadata__");
            let data_start = 8 + header_len;
            for (name, value) in map {
                let entry: TensorEntry = serde_json::from_value(value)
                    .with_context(|| format!("{}: header entry {name:?}", path.display()))?;
                let dtype = match entry.dtype.as_str() {
                    "F32" => DType::F32,
                    "F16" => DType::F16,
                    "BF16" => DType::BF16,
                    "F64" => DType::F64,
                    "U8" => DType::U8,
                    "U32" => DType::U32,
                    "I64" => DType::I64,
                    other => bail!("{}: tensor {name:?} has dtype {other}, which is not supported", path.display()),
                };
                let (start, end) = entry.data_offsets;
                let expected = entry.shape.iter().product::<usize>() * dtype.size_in_bytes();
                if end < start || (end - start) as usize != expected {
                    bail!(
                        "{}: tensor {name:?} spans {} bytes, its shape needs {expected}",
                        path.display(),
                        end - start
                    );
                }
                entries.insert(name, (i, data_start + start, data_start + end, dtype, entry.shape));
            }
        }
        Ok(SafetensorsFolder { files, entries })
    }

    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.entries.keys()
    }
}

impl TensorSource for SafetensorsFolder {
    fn take(&mut self, name: &str) -> anyhow::Result<Option<Tensor>> {
        let Some((file, start, end, dtype, shape)) = self.entries.remove(name) else {
            return Ok(None);
        };
        let path = &self.files[file];
        let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        f.seek(SeekFrom::Start(start))?;
        let mut bytes = vec![0u8; (end - start) as usize];
        f.read_exact(&mut bytes).with_context(|| format!("{}: tensor {name:?} is cut short", path.display()))?;
        Ok(Some(Tensor::from_raw_buffer(&bytes, dtype, &shape, &Device::Cpu)?))
    }

    fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }
}

/// The weight files of a model folder: `model.safetensors`, or every shard of the index.
fn shard_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
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
    shards
        .into_iter()
        .map(|shard| {
            let path = dir.join(shard);
            if path.exists() {
                Ok(path)
            } else {
                Err(TrainerError::MissingFile { path, what: "listed in model.safetensors.index.json" }.into())
            }
        })
        .collect()
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
