//! A real `pairwise-train serve` process for the arena tests: a tiny self-made model with
//! two LoRA adapters, `warm` and `cold`, that change its answers, and adapter management
//! on (`ADMIN_KEY`). It stops when dropped.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use pairwise_trainer::synthetic::{tiny_config, write_random_adapter, write_tiny_policy};
use serde_json::{Value, json};

/// Names the served models answer to: the base and its two adapters.
pub const SERVED: [&str; 3] = ["tiny", "warm", "cold"];
/// The serve process's `--admin-key`.
pub const ADMIN_KEY: &str = "serve-admin-key";

pub struct ServedModels {
    /// The OpenAI base URL, `http://127.0.0.1:PORT/v1`.
    pub base_url: String,
    /// The base model's folder (a run that trains on it makes an adapter the process takes).
    pub model: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for ServedModels {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ServedModels {
    /// Writes the tiny model and adapters and starts serving them on a free port.
    pub fn start() -> ServedModels {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("model");
        write_tiny_policy(&model, &tiny_config(), 11).unwrap();
        let (warm, cold) = (dir.path().join("warm"), dir.path().join("cold"));
        write_random_adapter(&model, &warm, &["q", "v", "down"], 5).unwrap();
        write_random_adapter(&model, &cold, &["k", "o", "up", "gate"], 6).unwrap();
        let mut child = Command::new(crate::trainer_binary())
            .args(["serve", "--model"])
            .arg(&model)
            .args(["--name", SERVED[0], "--bind", "127.0.0.1:0", "--admin-key", ADMIN_KEY, "--adapter"])
            .arg(format!("warm={}", warm.display()))
            .arg("--adapter")
            .arg(format!("cold={}", cold.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start pairwise-train serve");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let base_url = loop {
            let line = lines.next().expect("pairwise-train serve exited before serving").unwrap();
            if let Some(url) = line.split(" on ").nth(1).filter(|_| line.starts_with("serving ")) {
                break url.trim().to_string();
            }
        };
        // Keep reading its log so the process never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        ServedModels { base_url, model, child, _dir: dir }
    }

    /// Contender settings for the served model `name`.
    pub fn contender(&self, name: &str) -> Value {
        json!({"name": name, "base_url": self.base_url, "model": name})
    }
}
