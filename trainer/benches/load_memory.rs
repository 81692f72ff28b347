//! Peak memory of loading a ~0.5B-parameter bf16 checkpoint (Qwen2-0.5B's shape, random
//! weights, written once to a temporary folder) for LoRA (f32 base), LoRA in mixed precision
//! (`--precision bf16`: the base kept bf16) and QLoRA (Q8_0 base quantized as each tensor is
//! read). Each load runs in its own process, so its peak RSS
//! (VmHWM) is its own; the modes alternate for `--rounds` rounds (default 3) and the medians
//! are printed.
//!
//! `cargo bench -p pairwise-trainer --bench load_memory [-- --rounds N]`

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device};
use pairwise_trainer::model::config::ModelConfig;
use pairwise_trainer::model::llama::random_tensors;
use pairwise_trainer::model::load::{Precision, load_model_as};
use pairwise_trainer::peft::qlora::linear_weight_bytes;

/// Qwen2-0.5B's sizes (494M parameters, tied embeddings).
const CONFIG: &str = r#"{"model_type":"qwen2","vocab_size":151936,"hidden_size":896,"intermediate_size":4864,
"num_hidden_layers":24,"num_attention_heads":14,"num_key_value_heads":2,"rms_norm_eps":1e-6,
"rope_theta":1000000.0,"max_position_embeddings":1024,"tie_word_embeddings":true}"#;

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(f64::NAN);
    kb / 1024.0
}

fn write_checkpoint(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("config.json"), CONFIG)?;
    let config = ModelConfig::from_dir(dir)?;
    let mut tensors: Vec<(String, candle_core::Tensor)> = random_tensors(&config, 1)?
        .into_iter()
        .map(|(name, t)| Ok((name, t.to_dtype(DType::BF16)?)))
        .collect::<candle_core::Result<_>>()?;
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let params: usize = tensors.iter().map(|(_, t)| t.elem_count()).sum();
    pairwise_trainer::tensor::io::save_safetensors(&dir.join("model.safetensors"), &tensors)?;
    eprintln!("wrote {params} bf16 parameters to {}", dir.display());
    Ok(())
}

/// Child: load once and print `peak_rss_mb seconds linear_weight_mb`.
fn load(dir: &Path, mode: &str) -> anyhow::Result<()> {
    let (quant, precision) = match mode {
        "lora" => (None, Precision::F32),
        "bf16" => (None, Precision::Bf16),
        "qlora" => (Some(GgmlDType::Q8_0), Precision::F32),
        other => anyhow::bail!("mode {other}: lora, bf16 or qlora"),
    };
    let start = Instant::now();
    let model = load_model_as(dir, &Device::Cpu, quant, precision)?;
    let seconds = start.elapsed().as_secs_f64();
    println!("{:.0} {seconds:.2} {:.0}", peak_rss_mb(), linear_weight_bytes(&model) as f64 / 1e6);
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        return load(Path::new(&args[i + 1]), &args[i + 2]);
    }
    let rounds: usize = args.iter().position(|a| a == "--rounds").map_or(3, |i| args[i + 1].parse().unwrap_or(3));
    let dir = tempfile::tempdir()?;
    write_checkpoint(dir.path())?;
    let mut figures: Vec<(&str, Vec<f64>, Vec<f64>, f64)> =
        vec![("lora", vec![], vec![], 0.0), ("bf16", vec![], vec![], 0.0), ("qlora", vec![], vec![], 0.0)];
    for round in 0..rounds {
        for (mode, rss, secs, linear) in &mut figures {
            let out = Command::new(std::env::current_exe()?).args(["--child"]).arg(dir.path()).arg(*mode).output()?;
            anyhow::ensure!(out.status.success(), "{mode}: {}", String::from_utf8_lossy(&out.stderr));
            let text = String::from_utf8_lossy(&out.stdout);
            let v: Vec<f64> = text.split_whitespace().map(|x| x.parse().unwrap_or(f64::NAN)).collect();
            eprintln!("round {round} {mode}: peak RSS {} MB, {} s, linear weights {} MB", v[0], v[1], v[2]);
            rss.push(v[0]);
            secs.push(v[1]);
            *linear = v[2];
        }
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average at the end: {}", load.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
    for (mode, rss, secs, linear) in figures {
        println!(
            "{mode:>5}: median peak RSS {:.0} MB, median load time {:.2} s, decoder linear weights {linear:.0} MB ({rounds} rounds)",
            median(rss),
            median(secs)
        );
    }
    Ok(())
}
