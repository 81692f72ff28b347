//! Hand-written CPU kernels for the elementwise parts of a decoder layer — RoPE, SwiGLU and
//! RMSNorm — each forward and each backward one loop over contiguous buffers.
//!
//! Built from candle's tensor ops each of these is 5–10 graph nodes, and candle's backward
//! allocates a zero gradient and adds into it at every node, so a short graph is a fast
//! graph. The loops are written once, generic over f32 (training) and f64 (the
//! finite-difference checks in `ops`' tests); [`crate::ops`] wraps them as candle ops with
//! backward passes and keeps the composite versions for other devices.

use candle_core::{CpuStorage, Layout, Result, Shape, Tensor, WithDType};
use num_traits::{Float, One, Zero, cast};

/// The contiguous values a layout covers in a CPU buffer.
fn values<'a, T: WithDType>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&storage.as_slice::<T>()?[start..end]),
        None => candle_core::bail!("kernel input must be contiguous"),
    }
}

/// Runs the f32 or f64 instance of a kernel on same-dtype inputs: `dispatch!([(name, storage,
/// layout), …] => |T| body)`
/// binds each name to its input's slice and `T` to the float type inside `body`, which
/// returns the output values.
macro_rules! dispatch {
    ([$(($name:ident, $storage:expr, $layout:expr)),+] => |$t:ident| $body:expr) => {{
        let first = [$($storage),+][0];
        match first {
            CpuStorage::F32(_) => {
                type $t = f32;
                $(let $name: &[f32] = values::<f32>($storage, $layout)?;)+
                Ok::<CpuStorage, candle_core::Error>(CpuStorage::F32($body))
            }
            CpuStorage::F64(_) => {
                type $t = f64;
                $(let $name: &[f64] = values::<f64>($storage, $layout)?;)+
                Ok::<CpuStorage, candle_core::Error>(CpuStorage::F64($body))
            }
            _ => candle_core::bail!("kernels support f32 and f64 only"),
        }
    }};
}

/// `silu(g) · u` elementwise (the SwiGLU MLP's gate), with `silu(g) = g · σ(g)`.
pub struct SwiGlu;

impl candle_core::CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "swiglu"
    }

    fn cpu_fwd(&self, gs: &CpuStorage, gl: &Layout, us: &CpuStorage, ul: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = dispatch!([(g, gs, gl), (u, us, ul)] => |T| {
            g.iter().zip(u).map(|(&g, &u)| g * sigmoid(g) * u).collect::<Vec<T>>()
        })?;
        Ok((out, gl.shape().clone()))
    }

    fn bwd(&self, g: &Tensor, u: &Tensor, _res: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let both = g.apply_op3_no_bwd(u, &dy.contiguous()?, &SwiGluBackward)?;
        let n = g.elem_count();
        let split = |i: usize| both.narrow(0, i * n, n)?.reshape(g.shape());
        Ok((Some(split(0)?), Some(split(1)?)))
    }
}

/// `[dg; du]` flattened: `dg = dy·u·σ(g)·(1 + g·(1 − σ(g)))`, `du = dy·silu(g)`.
struct SwiGluBackward;

impl candle_core::CustomOp3 for SwiGluBackward {
    fn name(&self) -> &'static str {
        "swiglu-backward"
    }

    fn cpu_fwd(
        &self,
        gs: &CpuStorage,
        gl: &Layout,
        us: &CpuStorage,
        ul: &Layout,
        ds: &CpuStorage,
        dl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let n = gl.shape().elem_count();
        let out = dispatch!([(g, gs, gl), (u, us, ul), (dy, ds, dl)] => |T| {
            let mut out: Vec<T> = vec![T::zero(); 2 * n];
            let (dg, du) = out.split_at_mut(n);
            for i in 0..n {
                let s = sigmoid(g[i]);
                let silu = g[i] * s;
                dg[i] = dy[i] * u[i] * s * (T::one() + g[i] * (T::one() - s));
                du[i] = dy[i] * silu;
            }
            out
        })?;
        Ok((out, Shape::from(2 * n)))
    }
}

fn sigmoid<T: Float>(x: T) -> T {
    T::one() / (T::one() + (-x).exp())
}

/// RMS norm over the last dimension, Hugging Face's order: `x · r · w` with
/// `r = 1/sqrt(mean(x²) + eps)` per row.
pub struct RmsNorm {
    pub eps: f64,
}

impl candle_core::CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "rms-norm"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, ws: &CpuStorage, wl: &Layout) -> Result<(CpuStorage, Shape)> {
        let hidden = wl.shape().elem_count();
        let out = dispatch!([(x, xs, xl), (w, ws, wl)] => |T| {
            let eps: T = cast(self.eps).expect("eps fits the dtype");
            let mut y: Vec<T> = Vec::with_capacity(x.len());
            for row in x.chunks_exact(hidden) {
                let r = inverse_rms(row, eps);
                y.extend(row.iter().zip(w).map(|(&x, &w)| x * r * w));
            }
            y
        })?;
        Ok((out, xl.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _res: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let both = x.apply_op3_no_bwd(w, &dy.contiguous()?, &RmsNormBackward { eps: self.eps })?;
        let n = x.elem_count();
        Ok((Some(both.narrow(0, 0, n)?.reshape(x.shape())?), Some(both.narrow(0, n, w.elem_count())?)))
    }
}

/// `[dx; dw]` flattened. With `u = dy·w`: `dx = r·u − x·r³·mean(u·x)`, `dw = Σ_rows dy·x·r`.
struct RmsNormBackward {
    eps: f64,
}

impl candle_core::CustomOp3 for RmsNormBackward {
    fn name(&self) -> &'static str {
        "rms-norm-backward"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        ds: &CpuStorage,
        dl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, hidden) = (xl.shape().elem_count(), wl.shape().elem_count());
        let out = dispatch!([(x, xs, xl), (w, ws, wl), (dy, ds, dl)] => |T| {
            let eps: T = cast(self.eps).expect("eps fits the dtype");
            let width: T = cast(hidden).expect("width fits the dtype");
            let mut out: Vec<T> = vec![T::zero(); n + hidden];
            let (dx, dw) = out.split_at_mut(n);
            for ((x, dy), dx) in x.chunks_exact(hidden).zip(dy.chunks_exact(hidden)).zip(dx.chunks_exact_mut(hidden)) {
                let r = inverse_rms(x, eps);
                let mut dot = T::zero();
                for i in 0..hidden {
                    dot = dot + dy[i] * w[i] * x[i];
                }
                let k = r * r * r * dot / width;
                for i in 0..hidden {
                    dx[i] = r * dy[i] * w[i] - x[i] * k;
                    dw[i] = dw[i] + dy[i] * x[i] * r;
                }
            }
            out
        })?;
        Ok((out, Shape::from(n + hidden)))
    }
}

fn inverse_rms<T: Float>(row: &[T], eps: T) -> T {
    let sum = row.iter().fold(T::zero(), |acc, &x| acc + x * x);
    let width: T = cast(row.len()).expect("width fits the dtype");
    T::one() / (sum / width + eps).sqrt()
}

/// Rotate-half RoPE, `x·cos + rotate_half(x)·sin` over the last dimension `D`, with tables
/// `[P, D]`: row `i` of `x` (its `D` values) uses table row `(i / repeat) % P`. The backward
/// is the inverse rotation, the same op with `inverse` set.
pub struct Rope {
    pub cos: Tensor,
    pub sin: Tensor,
    pub repeat: usize,
    pub inverse: bool,
}

impl candle_core::CustomOp1 for Rope {
    fn name(&self) -> &'static str {
        "rope"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout) -> Result<(CpuStorage, Shape)> {
        let (cs, cl) = self.cos.storage_and_layout();
        let (ss, sl) = self.sin.storage_and_layout();
        let (candle_core::Storage::Cpu(cs), candle_core::Storage::Cpu(ss)) = (&*cs, &*ss) else {
            candle_core::bail!("rope tables must be on the CPU");
        };
        let d = *xl.dims().last().expect("rope input has a last dimension");
        let half = d / 2;
        let table_rows = cl.shape().elem_count() / d;
        let out = dispatch!([(x, xs, xl), (cos, cs, cl), (sin, ss, sl)] => |T| {
            let mut y: Vec<T> = vec![T::zero(); x.len()];
            for (i, (x, y)) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)).enumerate() {
                let t = (i / self.repeat) % table_rows;
                let (c, s) = (&cos[t * d..(t + 1) * d], &sin[t * d..(t + 1) * d]);
                for f in 0..half {
                    let (a, b) = (x[f], x[f + half]);
                    if self.inverse {
                        y[f] = a * c[f] + b * s[f + half];
                        y[f + half] = b * c[f + half] - a * s[f];
                    } else {
                        y[f] = a * c[f] - b * s[f];
                        y[f + half] = b * c[f + half] + a * s[f + half];
                    }
                }
            }
            y
        })?;
        Ok((out, xl.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, _res: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let inverse =
            Rope { cos: self.cos.clone(), sin: self.sin.clone(), repeat: self.repeat, inverse: !self.inverse };
        Ok(Some(dy.contiguous()?.apply_op1_no_bwd(&inverse)?))
    }
}
