//! Optimisation: AdamW with saveable state (for exact resume), learning-rate schedules with
//! warmup, and global gradient-norm clipping.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Result, Storage, Tensor, Var};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::tensor::buffer::{f32_slice, with_f32_mut};
use crate::tensor::io::save_safetensors;

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

    /// One update with gradients in the order of the variables given to [`AdamW::new`], each
    /// multiplied by `grad_scale` first (the factor of [`clip_factor`]).
    pub fn update(&mut self, grads: &[Tensor], lr: f64, grad_scale: f64) -> Result<()> {
        self.step += 1;
        let t = self.step as i32;
        let step = AdamStep {
            lr: lr as f32,
            grad_scale: grad_scale as f32,
            beta1: self.beta1 as f32,
            beta2: self.beta2 as f32,
            eps: self.eps as f32,
            decay: (1.0 - lr * self.weight_decay) as f32,
            correction1: (1.0 - self.beta1.powi(t)) as f32,
            correction2: (1.0 - self.beta2.powi(t)) as f32,
        };
        if self.vars.iter().all(|v| v.device().is_cpu() && v.dtype() == DType::F32) {
            // One pass per variable over gradient, moments and parameter together; variables
            // spread over rayon's pool.
            return (0..self.vars.len()).into_par_iter().try_for_each(|i| {
                let g = grads[i].contiguous()?;
                let (g_storage, g_layout) = g.storage_and_layout();
                let Storage::Cpu(g_cpu) = &*g_storage else { candle_core::bail!("AdamW: gradient not on the CPU") };
                let g = f32_slice(g_cpu, g_layout)?;
                with_f32_mut(&self.m[i], |m| {
                    with_f32_mut(&self.v[i], |v| with_f32_mut(self.vars[i].as_tensor(), |p| step.apply(p, m, v, g)))
                })
            });
        }
        for (i, var) in self.vars.iter().enumerate() {
            // Gradients computed from variables carry their graph; detaching keeps the
            // moments from chaining every step's activations together.
            let g = (grads[i].detach() * grad_scale)?;
            self.m[i] = ((&self.m[i] * self.beta1)? + (&g * (1.0 - self.beta1))?)?.detach();
            self.v[i] = ((&self.v[i] * self.beta2)? + (g.sqr()? * (1.0 - self.beta2))?)?.detach();
            let m_hat = (&self.m[i] / step.correction1 as f64)?;
            let v_hat = (&self.v[i] / step.correction2 as f64)?;
            let decayed = (var.as_tensor().detach() * step.decay as f64)?;
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
        save_safetensors(path, &tensors)
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

/// The constants of one AdamW update.
#[derive(Clone, Copy)]
struct AdamStep {
    lr: f32,
    grad_scale: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    /// `1 − lr · weight_decay`.
    decay: f32,
    correction1: f32,
    correction2: f32,
}

impl AdamStep {
    /// `g ← scale·g`; `m ← β₁m + (1−β₁)g`; `v ← β₂v + (1−β₂)g²`;
    /// `p ← p·(1 − lr·wd) − lr · m̂ / (√v̂ + ε)` with bias-corrected `m̂`, `v̂`.
    fn apply(&self, p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32]) -> Result<()> {
        if [m.len(), v.len(), g.len()].iter().any(|&n| n != p.len()) {
            candle_core::bail!("AdamW: parameter, moment and gradient sizes differ");
        }
        let AdamStep { lr, grad_scale, beta1, beta2, eps, decay, correction1, correction2 } = *self;
        for (((p, m), v), &g) in p.iter_mut().zip(m).zip(v).zip(g) {
            let g = grad_scale * g;
            *m = beta1 * *m + (1.0 - beta1) * g;
            *v = beta2 * *v + (1.0 - beta2) * g * g;
            *p = *p * decay - lr * (*m / correction1) / ((*v / correction2).sqrt() + eps);
        }
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

/// The global L2 norm of `grads` (accumulated in f64), as `torch.nn.utils.clip_grad_norm_`
/// measures it.
pub fn global_norm(grads: &[Tensor]) -> Result<f64> {
    let squares = grads.par_iter().map(sum_of_squares).collect::<Result<Vec<f64>>>()?;
    Ok(squares.iter().sum::<f64>().sqrt())
}

/// The factor that scales gradients of global norm `norm` down to `max_norm` when it is
/// exceeded (1 otherwise; `max_norm <= 0` disables clipping), as `clip_grad_norm_` does.
pub fn clip_factor(norm: f64, max_norm: f64) -> f64 {
    if max_norm > 0.0 && norm > max_norm { max_norm / (norm + 1e-6) } else { 1.0 }
}

/// `Σ g²`, in one pass without a temporary on the CPU (accumulated in f64).
fn sum_of_squares(g: &Tensor) -> Result<f64> {
    if g.device().is_cpu() && g.dtype() == DType::F32 && g.is_contiguous() {
        let (storage, layout) = g.storage_and_layout();
        if let Storage::Cpu(cpu) = &*storage {
            let values = f32_slice(cpu, layout)?;
            // Eight f32 lanes per chunk (a plain float sum cannot be reordered, so it would not
            // vectorise); the chunks add up in f64.
            return Ok(values
                .chunks(4096)
                .map(|chunk| {
                    let mut lanes = [0f32; 8];
                    let exact = chunk.chunks_exact(8);
                    let tail: f32 = exact.remainder().iter().map(|x| x * x).sum();
                    for c in exact {
                        lanes.iter_mut().zip(c).for_each(|(l, x)| *l += x * x);
                    }
                    (lanes.iter().sum::<f32>() + tail) as f64
                })
                .sum());
        }
    }
    g.sqr()?.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adamw_first_step_moves_by_lr_and_decays() -> Result<()> {
        let var = Var::from_tensor(&Tensor::new(&[1.0f32, -2.0], &Device::Cpu)?)?;
        let mut opt = AdamW::new(vec![var.clone()], 0.1)?;
        opt.update(&[Tensor::new(&[0.5f32, -3.0], &Device::Cpu)?], 0.01, 1.0)?;
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
    fn fused_update_matches_the_tensor_formula() -> Result<()> {
        // The fused CPU path against the composite-op path (taken for f64 variables).
        let init = [0.3f64, -1.2, 2.0, 0.0];
        let grads = [[0.1f64, -0.4, 2.5, -0.01], [-0.3, 0.2, 0.7, 0.05]];
        let fused = Var::from_tensor(&Tensor::new(&init.map(|x| x as f32), &Device::Cpu)?)?;
        let reference = Var::from_tensor(&Tensor::new(&init, &Device::Cpu)?)?;
        let mut opt_fused = AdamW::new(vec![fused.clone()], 0.01)?;
        let mut opt_reference = AdamW::new(vec![reference.clone()], 0.01)?;
        for (step, g) in grads.iter().enumerate() {
            let lr = 0.05 * (step + 1) as f64;
            // The second step is clipped (scale 0.5).
            let scale = if step == 1 { 0.5 } else { 1.0 };
            opt_fused.update(&[Tensor::new(&g.map(|x| x as f32), &Device::Cpu)?], lr, scale)?;
            opt_reference.update(&[Tensor::new(g, &Device::Cpu)?], lr, scale)?;
        }
        let (a, b) = (fused.to_vec1::<f32>()?, reference.to_vec1::<f64>()?);
        for (a, b) in a.iter().zip(&b) {
            assert!((*a as f64 - b).abs() < 1e-6, "fused {a:?} vs reference {b:?}");
        }
        Ok(())
    }

    #[test]
    fn clipping_scales_to_max_norm() -> Result<()> {
        let big: Vec<f32> = (0..1001).map(|i| (i % 7) as f32 - 3.0).collect();
        let expected = (big.iter().map(|x| (x * x) as f64).sum::<f64>() + 25.0).sqrt();
        let g = vec![Tensor::new(&[3.0f32, 4.0], &Device::Cpu)?, Tensor::new(big.as_slice(), &Device::Cpu)?];
        let norm = global_norm(&g)?;
        assert!((norm - expected).abs() < 1e-9 * expected, "{norm} vs {expected}");
        assert!((clip_factor(5.0, 1.0) - 0.2).abs() < 1e-6);
        assert_eq!(clip_factor(0.5, 1.0), 1.0);
        assert_eq!(clip_factor(5.0, 0.0), 1.0);
        Ok(())
    }
}
