//! Optimisation: AdamW with saveable state (for exact resume), learning-rate schedules with
//! warmup, and global gradient-norm clipping.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{CpuStorage, DType, Device, InplaceOp2, InplaceOp3, Layout, Result, Storage, Tensor, Var};
use rayon::prelude::*;
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
        let step = AdamStep {
            lr: lr as f32,
            beta1: self.beta1 as f32,
            beta2: self.beta2 as f32,
            eps: self.eps as f32,
            decay: (1.0 - lr * self.weight_decay) as f32,
            correction1: (1.0 - self.beta1.powi(t)) as f32,
            correction2: (1.0 - self.beta2.powi(t)) as f32,
        };
        if self.vars.iter().all(|v| v.device().is_cpu() && v.dtype() == DType::F32) {
            // One fused pass per variable, variables spread over rayon's pool.
            return (0..self.vars.len()).into_par_iter().try_for_each(|i| {
                let g = grads[i].contiguous()?;
                self.m[i].inplace_op2(&g, &ScaledAdd::moment(step.beta1, false))?;
                self.v[i].inplace_op2(&g, &ScaledAdd::moment(step.beta2, true))?;
                self.vars[i].as_tensor().inplace_op3(&self.m[i], &self.v[i], &ParamUpdate(step))
            });
        }
        for (i, var) in self.vars.iter().enumerate() {
            // Gradients computed from variables carry their graph; detaching keeps the
            // moments from chaining every step's activations together.
            let g = grads[i].detach();
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

/// The constants of one AdamW update.
#[derive(Clone, Copy)]
struct AdamStep {
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    /// `1 − lr · weight_decay`.
    decay: f32,
    correction1: f32,
    correction2: f32,
}

/// Contiguous f32 slices of a CPU tensor's storage.
fn f32_slice<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    match (storage, layout.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((start, end))) => Ok(&v[start..end]),
        _ => candle_core::bail!("AdamW's fused update needs contiguous f32 tensors"),
    }
}

fn f32_slice_mut<'a>(storage: &'a mut CpuStorage, layout: &Layout) -> Result<&'a mut [f32]> {
    match (storage, layout.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((start, end))) => Ok(&mut v[start..end]),
        _ => candle_core::bail!("AdamW's fused update needs contiguous f32 tensors"),
    }
}

/// In place on `acc`, given `g`: `acc ← keep·acc + add·g` (or `add·g²` when `squared`).
/// AdamW's moments are `keep = β, add = 1 − β` (the second moment on `g²`); summing gradients
/// is `keep = add = 1`.
#[derive(Clone, Copy)]
struct ScaledAdd {
    keep: f32,
    add: f32,
    squared: bool,
}

impl ScaledAdd {
    fn moment(beta: f32, squared: bool) -> Self {
        ScaledAdd { keep: beta, add: 1.0 - beta, squared }
    }
}

impl InplaceOp2 for ScaledAdd {
    fn name(&self) -> &'static str {
        "scaled-add-in-place"
    }

    fn cpu_fwd(&self, acc: &mut CpuStorage, al: &Layout, g: &CpuStorage, gl: &Layout) -> Result<()> {
        let acc = f32_slice_mut(acc, al)?;
        let g = f32_slice(g, gl)?;
        if acc.len() != g.len() {
            candle_core::bail!("in-place update: sizes differ ({} vs {})", acc.len(), g.len());
        }
        let ScaledAdd { keep, add, squared } = *self;
        if squared {
            acc.iter_mut().zip(g).for_each(|(a, &g)| *a = keep * *a + add * g * g);
        } else {
            acc.iter_mut().zip(g).for_each(|(a, &g)| *a = keep * *a + add * g);
        }
        Ok(())
    }
}

/// In place on the parameter: `p ← p·(1 − lr·wd) − lr · m̂ / (√v̂ + ε)` (bias-corrected moments).
struct ParamUpdate(AdamStep);

impl InplaceOp3 for ParamUpdate {
    fn name(&self) -> &'static str {
        "adamw-params"
    }

    fn cpu_fwd(
        &self,
        p: &mut CpuStorage,
        pl: &Layout,
        m: &CpuStorage,
        ml: &Layout,
        v: &CpuStorage,
        vl: &Layout,
    ) -> Result<()> {
        let AdamStep { lr, eps, decay, correction1, correction2, .. } = self.0;
        let p = f32_slice_mut(p, pl)?;
        let (m, v) = (f32_slice(m, ml)?, f32_slice(v, vl)?);
        if p.len() != m.len() || p.len() != v.len() {
            candle_core::bail!("AdamW: parameter and moment sizes differ");
        }
        for ((p, &m), &v) in p.iter_mut().zip(m).zip(v) {
            let m_hat = m / correction1;
            let v_hat = v / correction2;
            *p = *p * decay - lr * m_hat / (v_hat.sqrt() + eps);
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

/// The global L2 norm of `grads`, and the grads scaled down to `max_norm` if it is exceeded
/// (`max_norm <= 0` disables clipping), like `torch.nn.utils.clip_grad_norm_`.
pub fn clip_grad_norm(grads: Vec<Tensor>, max_norm: f64) -> Result<(Vec<Tensor>, f64)> {
    let squares = grads.par_iter().map(sum_of_squares).collect::<Result<Vec<f64>>>()?;
    let norm = squares.iter().sum::<f64>().sqrt();
    if max_norm > 0.0 && norm > max_norm {
        let scale = max_norm / (norm + 1e-6);
        let clipped = grads.iter().map(|g| g * scale).collect::<Result<Vec<_>>>()?;
        return Ok((clipped, norm));
    }
    Ok((grads, norm))
}

/// `acc + g`, added into `acc`'s own buffer on the CPU (no new allocation). `acc` must own its
/// storage: gradients read from a candle gradient store do (every entry is the fresh result
/// of an addition).
pub fn accumulate(acc: Tensor, g: &Tensor) -> Result<Tensor> {
    if acc.device().is_cpu() && acc.dtype() == DType::F32 && acc.is_contiguous() && acc.shape() == g.shape() {
        acc.inplace_op2(&g.contiguous()?, &ScaledAdd { keep: 1.0, add: 1.0, squared: false })?;
        return Ok(acc);
    }
    acc + g
}

/// `Σ g²`, in one pass without a temporary on the CPU (accumulated in f64).
fn sum_of_squares(g: &Tensor) -> Result<f64> {
    if g.device().is_cpu() && g.dtype() == DType::F32 && g.is_contiguous() {
        let (storage, layout) = g.storage_and_layout();
        if let Storage::Cpu(cpu) = &*storage {
            let values = f32_slice(cpu, layout)?;
            // Per-chunk f32 sums vectorise; the chunks add up in f64.
            return Ok(values.chunks(4096).map(|c| c.iter().map(|x| x * x).sum::<f32>() as f64).sum());
        }
    }
    g.sqr()?.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()
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
    fn accumulate_adds_in_place() -> Result<()> {
        let acc = Tensor::new(&[1.0f32, 2.0, 3.0], &Device::Cpu)?;
        let sum = accumulate(acc, &Tensor::new(&[0.5f32, -2.0, 1.0], &Device::Cpu)?)?;
        assert_eq!(sum.to_vec1::<f32>()?, vec![1.5, 0.0, 4.0]);
        Ok(())
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
            opt_fused.update(&[Tensor::new(&g.map(|x| x as f32), &Device::Cpu)?], lr)?;
            opt_reference.update(&[Tensor::new(g, &Device::Cpu)?], lr)?;
        }
        let (a, b) = (fused.to_vec1::<f32>()?, reference.to_vec1::<f64>()?);
        for (a, b) in a.iter().zip(&b) {
            assert!((*a as f64 - b).abs() < 1e-6, "fused {a:?} vs reference {b:?}");
        }
        Ok(())
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
