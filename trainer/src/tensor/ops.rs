//! Custom candle ops with hand-written backward passes.
//!
//! candle's own `matmul` backward always computes the gradient of *both* operands, so a frozen
//! base weight still costs a full `dW` matmul per layer and keeps that tensor alive in the
//! gradient store. [`frozen_linear`] skips it: its backward only returns `g · W`.
//! The other ops wrap the CPU kernels of [`crate::tensor::kernels`] (RMSNorm, SwiGLU, RoPE, token
//! log-probs) or candle's fused softmax forward (which silently drops gradients) with a
//! hand-written backward, and fall back to candle's composite ops off the CPU. Every op here
//! is checked against finite differences in the tests below.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use crate::tensor::buffer::accumulate;
use crate::tensor::device::fused_kernels;
use crate::tensor::kernels;
use crate::tensor::packed::{PACKED_MAX_ROWS, PackedWeight};

use candle_core::quantized::QTensor;
use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, D, DType, Device, Layout, Result, Shape, Storage, Tensor, TensorId, Var,
};

/// Copies the (possibly strided) CPU storage into a standalone tensor.
fn cpu_tensor(storage: &CpuStorage, layout: &Layout) -> Result<Tensor> {
    let whole = match storage {
        CpuStorage::F32(v) => Tensor::from_slice(v, v.len(), &Device::Cpu)?,
        CpuStorage::F64(v) => Tensor::from_slice(v, v.len(), &Device::Cpu)?,
        _ => candle_core::bail!("frozen linear supports f32 and f64 inputs only"),
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => whole.narrow(0, start, end - start)?.reshape(layout.shape()),
        None => candle_core::bail!("frozen linear expects a contiguous input"),
    }
}

/// Takes the storage out of a contiguous, offset-0 tensor produced inside a forward kernel.
fn into_cpu_storage(t: &Tensor) -> Result<(CpuStorage, Shape)> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    if layout.start_offset() != 0 {
        candle_core::bail!("internal: kernel result has an offset");
    }
    match &*storage {
        Storage::Cpu(cpu) => Ok((cpu.clone(), layout.shape().clone())),
        _ => candle_core::bail!("internal: kernel result is not on the CPU"),
    }
}

/// Where a frozen weight lives: a plain tensor, or a quantized tensor dequantized on demand.
#[derive(Clone)]
pub enum FrozenWeight {
    Dense(Arc<DenseWeight>),
    Quantized(Arc<QTensor>),
}

/// A dense frozen weight `[out, in]`. The forward `x · Wᵀ` is fastest with `Wᵀ` stored
/// contiguously (gemm packs a transposed operand one scalar at a time) while the backward
/// `g · W` wants `W` itself, so a weight that is multiplied many times keeps both: the
/// transpose is made on the first forward and costs a second copy of the weight.
#[derive(Clone)]
pub struct DenseWeight {
    pub weight: Tensor,
    /// `None` for a weight used once (no copy is kept).
    transposed: Option<OnceLock<Tensor>>,
    /// The same weight in the llama.cpp blocks it was read from (a GGUF file): inputs of at
    /// most [`PACKED_MAX_ROWS`] rows (a decode step) are multiplied with these instead.
    packed: Option<Arc<PackedWeight>>,
}

impl FrozenWeight {
    /// A dense weight that keeps its transpose after the first forward.
    pub fn dense_kept(weight: Tensor) -> Self {
        FrozenWeight::Dense(Arc::new(DenseWeight { weight, transposed: Some(OnceLock::new()), packed: None }))
    }

    /// A dense weight used for a single call: no transposed copy.
    pub fn dense_once(weight: Tensor) -> Self {
        FrozenWeight::Dense(Arc::new(DenseWeight { weight, transposed: None, packed: None }))
    }

    /// A dense weight with its llama.cpp blocks beside it, for few-row inputs (a quantized
    /// weight, or blocks of another shape, are left as they are).
    pub fn with_packed(self, packed: Arc<PackedWeight>) -> Self {
        match self {
            FrozenWeight::Dense(w) if w.weight.dims2().ok() == Some(packed.dims()) => {
                FrozenWeight::Dense(Arc::new(DenseWeight { packed: Some(packed), ..Arc::unwrap_or_clone(w) }))
            }
            other => other,
        }
    }

    /// Whether the weight's llama.cpp blocks are kept beside it.
    pub fn is_packed(&self) -> bool {
        matches!(self, FrozenWeight::Dense(w) if w.packed.is_some())
    }

    /// The weight as a dense tensor in `dtype`; for quantized weights a temporary copy.
    pub fn dense(&self, dtype: DType) -> Result<Tensor> {
        match self {
            FrozenWeight::Dense(w) => w.weight.to_dtype(dtype),
            FrozenWeight::Quantized(q) => q.dequantize(&q.device())?.to_dtype(dtype),
        }
    }

    /// `Wᵀ` `[in, out]` as a contiguous tensor when one is kept (made now if needed).
    fn kept_transpose(&self, dtype: DType) -> Result<Option<Tensor>> {
        let FrozenWeight::Dense(w) = self else {
            return Ok(None);
        };
        let Some(cell) = &w.transposed else {
            return Ok(None);
        };
        if w.weight.dtype() != dtype {
            return Ok(None);
        }
        if let Some(t) = cell.get() {
            return Ok(Some(t.clone()));
        }
        let t = w.weight.t()?.contiguous()?;
        Ok(Some(cell.get_or_init(|| t).clone()))
    }
}

/// `A · B` straight from two CPU buffers with gemm: `A` `[m, k]` and `B` `[k, n]` read
/// through their layouts (any 2-D strides, so a transposed view costs no copy), the result
/// `[m, n]` row-major. candle's own matmul needs tensors (building them inside a kernel copies
/// the storage) and zero-fills its output first. Multi-threaded on rayon's pool, which nests
/// with the per-shard parallelism of training.
fn gemm_layouts<T: 'static + Copy>((a, al): (&[T], &Layout), (b, bl): (&[T], &Layout), one: T) -> Result<Vec<T>> {
    let (m, k) = al.shape().dims2()?;
    let (kb, n) = bl.shape().dims2()?;
    if k != kb {
        candle_core::bail!("matmul: [{m}, {k}] · [{kb}, {n}] do not fit");
    }
    // Every element either operand's layout addresses lies inside its buffer.
    let within = |len: usize, l: &Layout, (rows, cols): (usize, usize)| {
        rows == 0 || cols == 0 || l.start_offset() + (rows - 1) * l.stride()[0] + (cols - 1) * l.stride()[1] < len
    };
    if !within(a.len(), al, (m, k)) || !within(b.len(), bl, (k, n)) {
        candle_core::bail!("matmul: a layout reaches past its buffer");
    }
    let threads = candle_core::utils::get_num_threads();
    let parallelism = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    let mut dst: Vec<T> = Vec::with_capacity(m * n);
    let stride = |l: &Layout, i: usize| l.stride()[i] as isize;
    // SAFETY: the checks above bound every read of `a` and `b`; `dst` has room for the
    // row-major `[m, n]` result, which gemm writes in full without reading it (`read_dst`
    // false; with k = 0 it writes zeros), so its length can then cover it.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr().add(al.start_offset()),
            stride(al, 1),
            stride(al, 0),
            b.as_ptr().add(bl.start_offset()),
            stride(bl, 1),
            stride(bl, 0),
            one,
            one,
            false,
            false,
            false,
            parallelism,
        );
        dst.set_len(m * n);
    }
    Ok(dst)
}

/// `A · B` on two CPU storages of one dtype (f32 or f64).
fn matmul_storage(a: &CpuStorage, al: &Layout, b: &CpuStorage, bl: &Layout) -> Result<(CpuStorage, Shape)> {
    let shape = Shape::from((al.shape().dims2()?.0, bl.shape().dims2()?.1));
    let out = match (a, b) {
        (CpuStorage::F32(a), CpuStorage::F32(b)) => CpuStorage::F32(gemm_layouts((a, al), (b, bl), 1.0)?),
        (CpuStorage::F64(a), CpuStorage::F64(b)) => CpuStorage::F64(gemm_layouts((a, al), (b, bl), 1.0)?),
        _ => candle_core::bail!("matmul supports f32 and f64 operands of one dtype only"),
    };
    Ok((out, shape))
}

/// `x · Wᵀ` on CPU storages for `x` `[m, k]` and `W` `[n, k]` (or, when `transposed`, the
/// kept `Wᵀ` `[k, n]` itself).
fn linear_storage(
    xs: &CpuStorage,
    xl: &Layout,
    ws: &CpuStorage,
    wl: &Layout,
    transposed: bool,
) -> Result<(CpuStorage, Shape)> {
    let w_t = if transposed { wl.clone() } else { wl.transpose(0, 1)? };
    matmul_storage(xs, xl, ws, &w_t)
}

/// `a · b` for 2-D tensors; on the CPU through [`gemm_layouts`], reading transposed views in
/// place and leaving the output unfilled until gemm writes it.
fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if !a.device().is_cpu() || !b.device().is_cpu() {
        return a.matmul(b);
    }
    let (out, shape) = {
        let ((sa, la), (sb, lb)) = (a.storage_and_layout(), b.storage_and_layout());
        match (&*sa, &*sb) {
            (Storage::Cpu(sa), Storage::Cpu(sb)) => matmul_storage(sa, la, sb, lb)?,
            _ => candle_core::bail!("matmul: operands on different devices"),
        }
    };
    match out {
        CpuStorage::F32(v) => Tensor::from_vec(v, shape, a.device()),
        CpuStorage::F64(v) => Tensor::from_vec(v, shape, a.device()),
        _ => unreachable!("matmul_storage returns f32 or f64"),
    }
}

struct FrozenLinear {
    weight: FrozenWeight,
}

impl CustomOp1 for FrozenLinear {
    fn name(&self) -> &'static str {
        "frozen-linear"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        if let (FrozenWeight::Dense(w), CpuStorage::F32(x)) = (&self.weight, storage)
            && let Some(packed) = &w.packed
            && let Ok((rows, cols)) = layout.shape().dims2()
            && rows <= PACKED_MAX_ROWS
            && cols == packed.dims().1
            && let Some((start, end)) = layout.contiguous_offsets()
        {
            return Ok((CpuStorage::F32(packed.matmul(&x[start..end], rows)), Shape::from((rows, packed.dims().0))));
        }
        // The dequantized copy of a quantized weight lives only for this matmul.
        let dtype = match storage {
            CpuStorage::F64(_) => DType::F64,
            _ => DType::F32,
        };
        let (w, transposed) = match self.weight.kept_transpose(dtype)? {
            Some(t) => (t, true),
            None => (self.weight.dense(dtype)?.contiguous()?, false),
        };
        let (ws, wl) = w.storage_and_layout();
        match &*ws {
            Storage::Cpu(ws) => linear_storage(storage, layout, ws, wl, transposed),
            _ => candle_core::bail!("frozen linear: the weight is not on the CPU"),
        }
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let w = self.weight.dense(arg.dtype())?;
        Ok(Some(matmul(grad_res, &w)?))
    }
}

/// `x · Wᵀ` for a 2-D `x` `[n, in]` and a weight `[out, in]` that never receives a gradient.
///
/// Off the CPU (the `cuda` feature) it falls back to candle's matmul on a detached weight,
/// which is correct but computes the unused weight gradient.
pub fn frozen_linear(x: &Tensor, weight: &FrozenWeight) -> Result<Tensor> {
    if fused_kernels(x) {
        x.contiguous()?.apply_op1(FrozenLinear { weight: weight.clone() })
    } else {
        x.matmul(&weight.dense(x.dtype())?.to_device(x.device())?.t()?)
    }
}

/// Weight gradients handed over by [`trainable_linear`]'s backward directly, outside candle's
/// gradient store. The store allocates a zero tensor and adds into it for every gradient it
/// keeps, which for a trained weight is two extra passes over a parameter-sized buffer per
/// backward (a full fine-tune spent ~10% of its step there). One sink serves one backward;
/// [`GradSink::gradients`] merges what it holds with what the store got by other routes
/// (a tied embedding is also read by `index_select`).
#[derive(Default)]
pub struct GradSink(Mutex<HashMap<TensorId, Tensor>>);

impl GradSink {
    fn add(&self, weight: TensorId, grad: Tensor) -> Result<()> {
        let mut held = self.0.lock().expect("gradient sink poisoned");
        let sum = match held.remove(&weight) {
            Some(acc) => accumulate(acc, &grad)?,
            None => grad,
        };
        held.insert(weight, sum);
        Ok(())
    }

    /// The whole gradient of each of `vars` after `store = loss.backward()`: what reached the
    /// sink plus what reached the store (`None` where neither got any).
    pub fn gradients(&self, store: &candle_core::backprop::GradStore, vars: &[Var]) -> Result<Vec<Option<Tensor>>> {
        let mut held = self.0.lock().expect("gradient sink poisoned");
        vars.iter()
            .map(|v| {
                Ok(match (held.remove(&v.id()), store.get(v)) {
                    (Some(sunk), Some(stored)) => Some(accumulate(sunk, stored)?),
                    (Some(sunk), None) => Some(sunk),
                    (None, stored) => stored.map(Tensor::detach),
                })
            })
            .collect()
    }
}

struct TrainableLinear {
    /// Where the weight gradient goes, keyed by the weight's own id (not that of the
    /// contiguous copy the op may have been handed).
    sink: Option<(Arc<GradSink>, TensorId)>,
}

impl CustomOp2 for TrainableLinear {
    fn name(&self) -> &'static str {
        "trainable-linear"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, ws: &CpuStorage, wl: &Layout) -> Result<(CpuStorage, Shape)> {
        linear_storage(xs, xl, ws, wl, false)
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dw = matmul(&grad.t()?, x)?;
        let dw = match &self.sink {
            Some((sink, weight)) => {
                sink.add(*weight, dw)?;
                None
            }
            None => Some(dw),
        };
        Ok((Some(matmul(grad, w)?), dw))
    }
}

/// `x · Wᵀ` for a 2-D `x` `[n, in]` and a trained weight `[out, in]`. candle's
/// `x.matmul(&w.t())` returns the weight gradient as a transposed view, which its gradient
/// store then adds element by element through strides; here `dW = gᵀ · x` comes out
/// contiguous in W's own layout, and goes to `sink` instead of the gradient store when given.
pub fn trainable_linear(x: &Tensor, weight: &Tensor, sink: Option<&Arc<GradSink>>) -> Result<Tensor> {
    if fused_kernels(x) {
        x.contiguous()?
            .apply_op2(&weight.contiguous()?, TrainableLinear { sink: sink.map(|s| (s.clone(), weight.id())) })
    } else {
        x.matmul(&weight.t()?)
    }
}

/// RMS norm over the last dimension: `x / sqrt(mean(x²) + eps) · weight` (Hugging Face order:
/// normalise in the input dtype, then scale). On the CPU one op with a hand-written backward
/// ([`kernels::RmsNorm`]).
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    if fused_kernels(x) {
        x.contiguous()?.apply_op2(&weight.contiguous()?, kernels::RmsNorm { eps })
    } else {
        rms_norm_composite(x, weight, eps)
    }
}

fn rms_norm_composite(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let mean_sq = x.sqr()?.mean_keepdim(D::Minus1)?;
    let inv_rms = (mean_sq + eps)?.sqrt()?.recip()?;
    x.broadcast_mul(&inv_rms)?.broadcast_mul(weight)
}

/// `silu(gate) · up`, the SwiGLU MLP's elementwise part; on the CPU one op with a hand-written
/// backward ([`kernels::GatedUnit`]).
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    if fused_kernels(gate) {
        gate.contiguous()?.apply_op2(&up.contiguous()?, kernels::GatedUnit(kernels::Gate::Silu))
    } else {
        candle_nn::ops::silu(gate)? * up
    }
}

/// `gelu_tanh(gate) · up`, the GeGLU MLP's elementwise part (Gemma's `gelu_pytorch_tanh`); on
/// the CPU one op with a hand-written backward ([`kernels::GatedUnit`]), elsewhere candle's
/// `gelu` (the tanh approximation, differentiable).
pub fn gelu_tanh_glu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    if fused_kernels(gate) {
        gate.contiguous()?.apply_op2(&up.contiguous()?, kernels::GatedUnit(kernels::Gate::GeluTanh))
    } else {
        gate.gelu()? * up
    }
}

/// `x` in f32 when it is half-precision (bf16, f16), else as it is: what norms, softmax and
/// log-probs of a mixed-precision run compute in.
pub fn widen(x: &Tensor) -> Result<Tensor> {
    match x.dtype() {
        DType::BF16 | DType::F16 => x.to_dtype(DType::F32),
        _ => Ok(x.clone()),
    }
}

/// `cap · tanh(x / cap)`: Gemma 2's soft-capping of attention scores and logits.
pub fn soft_cap(x: &Tensor, cap: f64) -> Result<Tensor> {
    (x / cap)?.tanh()? * cap
}

/// Rotate-half RoPE: `x·cos + rotate_half(x)·sin` over the last dimension. The tables are
/// `[T, D]` for `x` `[.., T, D]` (one position per time step), or `[R, 1, D]` for `x`
/// `[R, H, D]` (one position per leading row). On the CPU one op ([`kernels::Rope`]).
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    if !fused_kernels(x) {
        return rope_composite(x, cos, sin);
    }
    let repeat = match cos.rank() {
        2 => 1,
        3 => x.dim(1)?,
        rank => candle_core::bail!("rope: tables of rank {rank}"),
    };
    let (cos, sin) = (cos.contiguous()?, sin.contiguous()?);
    x.contiguous()?.apply_op1(kernels::Rope { cos, sin, repeat, inverse: false })
}

fn rope_composite(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let half = x.dim(D::Minus1)? / 2;
    let x1 = x.narrow(D::Minus1, 0, half)?;
    let x2 = x.narrow(D::Minus1, half, half)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    x.broadcast_mul(cos)? + rotated.broadcast_mul(sin)?
}

/// Softmax over the last dimension after adding an additive mask (0 or −∞) that broadcasts
/// against `scores`. On the CPU: candle's fused softmax kernel forward, [`Softmax::bwd`] backward.
pub fn masked_softmax(scores: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let masked = scores.broadcast_add(mask)?;
    if fused_kernels(&masked) { masked.apply_op1(Softmax) } else { candle_nn::ops::softmax(&masked, D::Minus1) }
}

struct Softmax;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "softmax"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = cpu_tensor(storage, layout)?;
        let y = match x.dtype() {
            DType::F32 => candle_nn::ops::softmax_last_dim(&x)?,
            _ => candle_nn::ops::softmax(&x, D::Minus1)?,
        };
        into_cpu_storage(&y)
    }

    /// `dx = y·(g − Σ g·y)`; masked entries have y = 0 and get no gradient.
    fn bwd(&self, _arg: &Tensor, y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        let gy = (g * y)?;
        Ok(Some((&gy - y.broadcast_mul(&gy.sum_keepdim(D::Minus1)?)?)?))
    }
}

/// `log_softmax(logits)[target]` per row: `logits` `[n, vocab]`, `targets` `[n]` (u32) → `[n]`.
/// On the CPU one op ([`kernels::TokenLogProbs`]) with backward `g·(onehot − softmax)`: unlike
/// the composite, it keeps no `[n, vocab]` intermediates alive for the backward pass.
pub fn token_log_probs(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    if fused_kernels(logits) {
        logits.contiguous()?.apply_op1(kernels::TokenLogProbs { targets: targets.to_vec1::<u32>()? })
    } else {
        candle_nn::ops::log_softmax(logits, D::Minus1)?.gather(&targets.unsqueeze(1)?, 1)?.squeeze(1)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use candle_core::Var;

    /// Central finite differences of `f` (which must reduce to a scalar) at a few entries of
    /// `var`, compared with the analytic gradient. Runs in f64 so the check is tight.
    pub(crate) fn check_gradient(var: &Var, f: &dyn Fn() -> Result<Tensor>, entries: &[usize]) -> Result<f64> {
        let loss = f()?;
        let grads = loss.backward()?;
        let analytic = grads.get(var).expect("no gradient reached the variable").flatten_all()?.to_vec1::<f64>()?;
        let base = var.flatten_all()?.to_vec1::<f64>()?;
        let eps = 1e-6;
        let mut worst: f64 = 0.0;
        for &i in entries {
            let mut plus = base.clone();
            plus[i] += eps;
            var.set(&Tensor::from_vec(plus, var.shape(), var.device())?)?;
            let up = f()?.to_scalar::<f64>()?;
            let mut minus = base.clone();
            minus[i] -= eps;
            var.set(&Tensor::from_vec(minus, var.shape(), var.device())?)?;
            let down = f()?.to_scalar::<f64>()?;
            var.set(&Tensor::from_vec(base.clone(), var.shape(), var.device())?)?;
            let numeric = (up - down) / (2.0 * eps);
            // The central difference carries the rounding error of `f` divided by `2·eps`
            // (`f` sums up to a few hundred terms; 1e3 ulps of |f| bounds its rounding), which
            // is discounted before the relative error, taken with a floor under the scale. The
            // inputs are random on every run, so without both a test fails now and then.
            let noise = 1e3 * f64::EPSILON * (up.abs() + down.abs()) / (2.0 * eps);
            let excess = ((numeric - analytic[i]).abs() - noise).max(0.0);
            let rel = excess / numeric.abs().max(analytic[i].abs()).max(1e-3);
            worst = worst.max(rel);
        }
        Ok(worst)
    }

    #[test]
    fn frozen_linear_matches_matmul_and_finite_differences() -> Result<()> {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f64, 1.0, (5, 7), &dev)?;
        let x = Var::from_tensor(&Tensor::randn(0f64, 1.0, (3, 7), &dev)?)?;
        let frozen = FrozenWeight::dense_kept(w.clone());
        let ours = frozen_linear(&x, &frozen)?;
        let reference = x.matmul(&w.t()?)?;
        let diff = (ours - reference)?.abs()?.max_all()?.to_scalar::<f64>()?;
        assert!(diff < 1e-12, "forward differs by {diff}");
        let probe = Tensor::randn(0f64, 1.0, (3, 5), &dev)?;
        let f = || (frozen_linear(&x, &frozen)?.sin()? * &probe)?.sum_all();
        let worst = check_gradient(&x, &f, &[0, 4, 8, 20])?;
        assert!(worst < 1e-6, "relative gradient error {worst}");
        Ok(())
    }

    #[test]
    fn gelu_tanh_glu_and_soft_cap_match_their_formulas_and_finite_differences() -> Result<()> {
        let dev = Device::Cpu;
        let gate = Var::from_tensor(&Tensor::randn(0f64, 2.0, (4, 6), &dev)?)?;
        let up = Var::from_tensor(&Tensor::randn(0f64, 1.0, (4, 6), &dev)?)?;
        // PyTorch's gelu(approximate="tanh"): 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
        let g = gate.flatten_all()?.to_vec1::<f64>()?;
        let u = up.flatten_all()?.to_vec1::<f64>()?;
        let ours = gelu_tanh_glu(&gate, &up)?.flatten_all()?.to_vec1::<f64>()?;
        for ((x, u), o) in g.iter().zip(&u).zip(&ours) {
            let gelu = 0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh());
            assert!((gelu * u - o).abs() < 1e-12, "gelu_tanh({x})·{u}: {o} vs {}", gelu * u);
        }
        let composite = (gate.gelu()? * up.as_tensor())?;
        assert!(max_diff(&gelu_tanh_glu(&gate, &up)?, &composite) < 1e-12, "the kernel and candle's gelu agree");
        let probe = Tensor::randn(0f64, 1.0, (4, 6), &dev)?;
        let f = || (soft_cap(&gelu_tanh_glu(&gate, &up)?, 1.5)? * &probe)?.sum_all();
        let worst = check_gradient(&gate, &f, &[0, 5, 11, 23])?.max(check_gradient(&up, &f, &[1, 7, 19])?);
        assert!(worst < 1e-6, "relative gradient error {worst}");
        let capped = soft_cap(&Tensor::new(&[100.0f64, -100.0, 0.3], &dev)?, 2.0)?.to_vec1::<f64>()?;
        assert!((capped[0] - 2.0).abs() < 1e-9 && (capped[1] + 2.0).abs() < 1e-9);
        assert!((capped[2] - 2.0 * (0.15f64).tanh()).abs() < 1e-12);
        Ok(())
    }

    #[test]
    fn trainable_linear_matches_matmul_and_finite_differences() -> Result<()> {
        let dev = Device::Cpu;
        let w = Var::from_tensor(&Tensor::randn(0f64, 1.0, (5, 7), &dev)?)?;
        let x = Var::from_tensor(&Tensor::randn(0f64, 1.0, (3, 7), &dev)?)?;
        let ours = trainable_linear(&x, &w, None)?;
        let reference = x.matmul(&w.t()?)?;
        let diff = (ours - reference)?.abs()?.max_all()?.to_scalar::<f64>()?;
        assert!(diff < 1e-12, "forward differs by {diff}");
        let probe = Tensor::randn(0f64, 1.0, (3, 5), &dev)?;
        let f = || (trainable_linear(&x, &w, None)?.sin()? * &probe)?.sum_all();
        let worst_x = check_gradient(&x, &f, &[0, 4, 8, 20])?;
        let worst_w = check_gradient(&w, &f, &[0, 6, 13, 34])?;
        assert!(worst_x < 1e-6 && worst_w < 1e-6, "relative gradient errors {worst_x}, {worst_w}");
        Ok(())
    }

    #[test]
    fn grad_sink_gives_the_gradient_store_s_gradients() -> Result<()> {
        let dev = Device::Cpu;
        let w = Var::from_tensor(&Tensor::randn(0f32, 1.0, (6, 4), &dev)?)?;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (3, 4), &dev)?)?;
        let ids = Tensor::new(&[1u32, 5, 1], &dev)?;
        // `w` is used twice as a trained weight (both reach the sink) and once, like a tied
        // embedding, through `index_select` (which reaches candle's store).
        let loss = |sink: Option<&Arc<GradSink>>| -> Result<Tensor> {
            let h = trainable_linear(&x, &w, sink)?.tanh()?;
            let y = trainable_linear(&h.narrow(1, 0, 4)?, &w, sink)?;
            y.sqr()?.sum_all()? + w.index_select(&ids, 0)?.sin()?.sum_all()?
        };
        let vars = [w.clone(), x.clone()];
        let store = loss(None)?.backward()?;
        let sink = Arc::new(GradSink::default());
        let sunk = sink.gradients(&loss(Some(&sink))?.backward()?, &vars)?;
        for (var, got) in vars.iter().zip(&sunk) {
            let got = got.as_ref().expect("a gradient for every variable");
            let diff = max_diff(got, store.get(var).expect("stored gradient"));
            assert!(diff < 1e-5, "sink and store gradients differ by {diff}");
        }
        Ok(())
    }

    #[test]
    fn frozen_linear_leaves_no_weight_gradient() -> Result<()> {
        let dev = Device::Cpu;
        let w = Var::from_tensor(&Tensor::randn(0f32, 1.0, (4, 6), &dev)?)?;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, 6), &dev)?)?;
        let y = frozen_linear(&x, &FrozenWeight::dense_kept(w.as_tensor().clone()))?;
        let grads = y.sum_all()?.backward()?;
        assert!(grads.get(&x).is_some());
        assert!(grads.get(&w).is_none());
        Ok(())
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    }

    #[test]
    fn fused_forwards_match_composites_in_f32() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (3, 5, 16), &dev)?;
        let w = Tensor::randn(1f32, 0.1, 16, &dev)?;
        assert!(max_diff(&rms_norm(&x, &w, 1e-5)?, &rms_norm_composite(&x, &w, 1e-5)?) < 1e-5);
        let mask = Tensor::new(
            &[
                0f32,
                0.0,
                f32::NEG_INFINITY,
                0.0,
                f32::NEG_INFINITY,
                0.0,
                0.0,
                0.0,
                0.0,
                0.0,
                0.0,
                0.0,
                0.0,
                0.0,
                0.0,
                0.0,
            ],
            &dev,
        )?;
        let composite = candle_nn::ops::softmax(&x.broadcast_add(&mask)?, D::Minus1)?;
        assert!(max_diff(&masked_softmax(&x, &mask)?, &composite) < 1e-6);
        let logits = Tensor::randn(0f32, 3.0, (4, 11), &dev)?;
        let targets = Tensor::new(&[0u32, 10, 3, 3], &dev)?;
        let composite =
            candle_nn::ops::log_softmax(&logits, D::Minus1)?.gather(&targets.unsqueeze(1)?, 1)?.squeeze(1)?;
        assert!(max_diff(&token_log_probs(&logits, &targets)?, &composite) < 1e-5);
        Ok(())
    }

    #[test]
    fn rms_norm_backward_matches_finite_differences() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f64, 1.0, (2, 3, 8), &dev)?)?;
        let w = Var::from_tensor(&Tensor::randn(1f64, 0.2, 8, &dev)?)?;
        let probe = Tensor::randn(0f64, 1.0, (2, 3, 8), &dev)?;
        let f = || (rms_norm(&x, &w, 1e-5)? * &probe)?.sum_all();
        assert!(check_gradient(&x, &f, &[0, 7, 13, 40])? < 1e-6);
        assert!(check_gradient(&w, &f, &[0, 3, 7])? < 1e-6);
        Ok(())
    }

    #[test]
    fn swiglu_matches_composite_and_finite_differences() -> Result<()> {
        let dev = Device::Cpu;
        let g = Var::from_tensor(&Tensor::randn(0f64, 2.0, (3, 7), &dev)?)?;
        let u = Var::from_tensor(&Tensor::randn(0f64, 1.0, (3, 7), &dev)?)?;
        let composite = (candle_nn::ops::silu(&g)? * u.as_tensor())?;
        assert!(max_diff(&swiglu(&g, &u)?, &composite) < 1e-12);
        let probe = Tensor::randn(0f64, 1.0, (3, 7), &dev)?;
        let f = || (swiglu(&g, &u)? * &probe)?.sum_all();
        assert!(check_gradient(&g, &f, &[0, 5, 11, 20])? < 1e-6);
        assert!(check_gradient(&u, &f, &[1, 6, 19])? < 1e-6);
        Ok(())
    }

    #[test]
    fn rope_matches_composite_and_finite_differences() -> Result<()> {
        let dev = Device::Cpu;
        // Tables per time step ([T, D] for x [B, H, T, D]) and per leading row ([R, 1, D] for
        // x [R, H, D]); distinct halves so a swapped table half would show.
        let cos = Tensor::randn(0f64, 1.0, (5, 8), &dev)?;
        let sin = Tensor::randn(0f64, 1.0, (5, 8), &dev)?;
        let x = Var::from_tensor(&Tensor::randn(0f64, 1.0, (2, 3, 5, 8), &dev)?)?;
        assert!(max_diff(&rope(&x, &cos, &sin)?, &rope_composite(&x, &cos, &sin)?) < 1e-12);
        let probe = Tensor::randn(0f64, 1.0, (2, 3, 5, 8), &dev)?;
        let f = || (rope(&x, &cos, &sin)? * &probe)?.sum_all();
        assert!(check_gradient(&x, &f, &[0, 3, 4, 77, 200])? < 1e-6);
        let rows = Var::from_tensor(&Tensor::randn(0f64, 1.0, (5, 3, 8), &dev)?)?;
        let (cos, sin) = (cos.unsqueeze(1)?, sin.unsqueeze(1)?);
        assert!(max_diff(&rope(&rows, &cos, &sin)?, &rope_composite(&rows, &cos, &sin)?) < 1e-12);
        let probe = Tensor::randn(0f64, 1.0, (5, 3, 8), &dev)?;
        let f = || (rope(&rows, &cos, &sin)? * &probe)?.sum_all();
        assert!(check_gradient(&rows, &f, &[0, 12, 30, 119])? < 1e-6);
        Ok(())
    }

    #[test]
    fn masked_softmax_backward_matches_finite_differences() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f64, 1.0, (2, 4, 4), &dev)?)?;
        let mask = Tensor::new(
            &[
                [0f64, f64::NEG_INFINITY, f64::NEG_INFINITY, f64::NEG_INFINITY],
                [0.0, 0.0, f64::NEG_INFINITY, f64::NEG_INFINITY],
                [0.0, 0.0, 0.0, f64::NEG_INFINITY],
                [0.0; 4],
            ],
            &dev,
        )?;
        let probe = Tensor::randn(0f64, 1.0, (2, 4, 4), &dev)?;
        let f = || (masked_softmax(&x, &mask)? * &probe)?.sum_all();
        assert!(check_gradient(&x, &f, &[4, 5, 10, 15, 30])? < 1e-6);
        Ok(())
    }

    #[test]
    fn token_log_probs_backward_matches_finite_differences() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f64, 2.0, (3, 7), &dev)?)?;
        let targets = Tensor::new(&[2u32, 6, 2], &dev)?;
        let probe = Tensor::new(&[0.3f64, -1.2, 2.0], &dev)?;
        let f = || (token_log_probs(&x, &targets)? * &probe)?.sum_all();
        assert!(check_gradient(&x, &f, &[0, 2, 6, 13, 16, 20])? < 1e-6);
        Ok(())
    }
}
