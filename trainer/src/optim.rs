//! Optimisation: AdamW with saveable state (for exact resume), learning-rate schedules with
//! warmup, and global gradient-norm clipping.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Result, Tensor, Var};
use serde::{Deserialize, Serialize};

/// AdamW exactly as `torch.optim.AdamW` (decoupled weight decay, bias correction).
pub struct AdamW {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Number of updates taken so far.
    pub step: usize,
    vars: Vec<Var>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
}

impl AdamW {
    pub fn new(vars: Vec<Var>, weight_decay: f64) -> Result<Self> {
        let m = vars.iter().map(|v| v.zeros_like()).collect::<Result<Vec<_>>>()?;
        let v = vars.iter().map(|v| v.zeros_like()).collect::<Result<Vec<_>>>()?;
        Ok(AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay, step: 0, vars, m, v })
    }

    /// One update with gradients in the order of the variables given to [`AdamW::new`].
    pub fn update(&mut self, grads: &[Tensor], lr: f64) -> Result<()> {
        self.step += 1;
        let t = self.step as i32;
        let correction1 = 1.0 - self.beta1.powi(t);
        let correction2 = 1.0 - self.beta2.powi(t);
        for (i, var) in self.vars.iter().enumerate() {
            // Gradients computed from variables carry their graph; detaching keeps the
            // moments from chaining every step's activations together.
            let g = grads[i].detach();
            self.m[i] = ((&self.m[i] * self.beta1)? + (&g * (1.0 - self.beta1))?)?.detach();
            self.v[i] = ((&self.v[i] * self.beta2)? + (g.sqr()? * (1.0 - self.beta2))?)?.detach();
            let m_hat = (&self.m[i] / correction1)?;
            let v_hat = (&self.v[i] / correction2)?;
            let decayed = (var.as_tensor().detach() * (1.0 - lr * self.weight_decay))?;
            let update = (m_hat / (v_hat.sqrt()? + self.eps)?)?;
            var.set(&(decayed - (update * lr)?)?)?;
        }
        Ok(())
    }

    /// Saves the moment estimates and step count.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let mut tensors = Vec::new();
        for i in 0..self.vars.len() {
            tensors.push((format!("m.{i}"), self.m[i].clone()));
            tensors.push((format!("v.{i}"), self.v[i].clone()));
        }
        tensors.push(("step".into(), Tensor::new(&[self.step as f64], &Device::Cpu)?));
        crate::weights::save_safetensors(path, &tensors)
    }

    pub fn load(&mut self, path: &Path) -> anyhow::Result<()> {
        let mut t: HashMap<String, Tensor> = candle_core::safetensors::load(path, &Device::Cpu)?;
        let mut take = |name: String| t.remove(&name).ok_or_else(|| anyhow::anyhow!("{} lacks {name}", path.display()));
        for i in 0..self.vars.len() {
            let device = self.vars[i].device().clone();
            self.m[i] = take(format!("m.{i}"))?.to_device(&device)?;
            self.v[i] = take(format!("v.{i}"))?.to_device(&device)?;
        }
        self.step = take("step".into())?.to_vec1::<f64>()?[0] as usize;
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    Cosine,
    Linear,
    Constant,
}

/// Linear warmup from 0, then cosine or linear decay to 0 at `total_steps` (transformers'
/// `get_cosine_schedule_with_warmup` / `get_linear_schedule_with_warmup`).
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub kind: ScheduleKind,
    pub base_lr: f64,
    pub warmup_steps: usize,
    pub total_steps: usize,
}

impl Schedule {
    /// Learning rate for the update numbered `step` (0-based).
    pub fn lr(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.base_lr * step as f64 / self.warmup_steps.max(1) as f64;
        }
        let decay_steps = self.total_steps.saturating_sub(self.warmup_steps).max(1);
        let progress = ((step - self.warmup_steps) as f64 / decay_steps as f64).min(1.0);
        let factor = match self.kind {
            ScheduleKind::Constant => 1.0,
            ScheduleKind::Linear => 1.0 - progress,
            ScheduleKind::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
        };
        self.base_lr * factor
    }
}

/// The global L2 norm of `grads`, and the grads scaled down to `max_norm` if it is exceeded
/// (`max_norm <= 0` disables clipping), like `torch.nn.utils.clip_grad_norm_`.
pub fn clip_grad_norm(grads: Vec<Tensor>, max_norm: f64) -> Result<(Vec<Tensor>, f64)> {
    let mut sq = 0.0f64;
    for g in &grads {
        sq += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
    }
    let norm = sq.sqrt();
    if max_norm > 0.0 && norm > max_norm {
        let scale = max_norm / (norm + 1e-6);
        let clipped = grads.iter().map(|g| g * scale).collect::<Result<Vec<_>>>()?;
        return Ok((clipped, norm));
    }
    Ok((grads, norm))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;

    #[test]
    fn adamw_first_step_moves_by_lr_and_decays() -> Result<()> {
        let var = Var::from_tensor(&Tensor::new(&[1.0f32, -2.0], &Device::Cpu)?)?;
        let mut opt = AdamW::new(vec![var.clone()], 0.1)?;
        opt.update(&[Tensor::new(&[0.5f32, -3.0], &Device::Cpu)?], 0.01)?;
        // First Adam step is lr·sign(g) (bias-corrected m/√v = ±1); decay multiplies by 1 − lr·wd.
        let got = var.to_vec1::<f32>()?;
        assert!((got[0] - (1.0 * 0.999 - 0.01)).abs() < 1e-6, "{got:?}");
        assert!((got[1] - (-2.0 * 0.999 + 0.01)).abs() < 1e-6, "{got:?}");
        Ok(())
    }

    #[test]
    fn schedules_warm_up_then_decay_to_zero() {
        let s = Schedule { kind: ScheduleKind::Cosine, base_lr: 1.0, warmup_steps: 10, total_steps: 110 };
        assert_eq!(s.lr(0), 0.0);
        assert!((s.lr(5) - 0.5).abs() < 1e-12);
        assert!((s.lr(10) - 1.0).abs() < 1e-12);
        assert!((s.lr(60) - 0.5).abs() < 1e-12);
        assert!(s.lr(110).abs() < 1e-12);
        let l = Schedule { kind: ScheduleKind::Linear, ..s };
        assert!((l.lr(85) - 0.25).abs() < 1e-12);
    }

    #[test]
    fn clipping_scales_to_max_norm() -> Result<()> {
        let g = vec![Tensor::new(&[3.0f32, 4.0], &Device::Cpu)?, Tensor::zeros(2, DType::F32, &Device::Cpu)?];
        let (clipped, norm) = clip_grad_norm(g, 1.0)?;
        assert!((norm - 5.0).abs() < 1e-6);
        let v = clipped[0].to_vec1::<f32>()?;
        assert!((v[0] - 0.6).abs() < 1e-5 && (v[1] - 0.8).abs() < 1e-5);
        Ok(())
    }
}
