//! Hand-written CPU kernels for the elementwise parts of a decoder layer — RoPE, SwiGLU and
//! RMSNorm — each forward and each backward one loop over contiguous buffers.
//!
//! Built from candle's tensor ops each of these is 5–10 graph nodes, and candle's backward
//! allocates a zero gradient and adds into it at every node, so a short graph is a fast
//! graph. The loops are written once, generic over f32 (training) and f64 (the
//! finite-difference checks in `ops`' tests); [`crate::tensor::ops`] wraps them as candle ops with
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

/// The activation of a gated MLP unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    /// SwiGLU: `silu(g) = g · σ(g)`.
    Silu,
    /// GeGLU: PyTorch's `gelu(g, approximate="tanh")` = `½·g·(1 + tanh(√(2/π)·(g + 0.044715·g³)))`.
    GeluTanh,
}

impl Gate {
    /// The activation and its derivative at `g`.
    fn value_and_slope<T: Float>(self, g: T) -> (T, T) {
        let one = T::one();
        match self {
            Gate::Silu => {
                let s = sigmoid(g);
                (g * s, s * (one + g * (one - s)))
            }
            Gate::GeluTanh => {
                let half: T = cast(0.5).expect("fits");
                let c: T = cast((2.0 / std::f64::consts::PI).sqrt()).expect("fits");
                let k: T = cast(0.044715).expect("fits");
                let three: T = cast(3.0).expect("fits");
                let t = (c * (g + k * g * g * g)).tanh();
                let value = half * g * (one + t);
                let slope = half * (one + t) + half * g * (one - t * t) * c * (one + three * k * g * g);
                (value, slope)
            }
        }
    }
}

/// `act(g) · u` elementwise (the gated MLP's elementwise part, SwiGLU or GeGLU).
pub struct GatedUnit(pub Gate);

impl candle_core::CustomOp2 for GatedUnit {
    fn name(&self) -> &'static str {
        "gated-unit"
    }

    fn cpu_fwd(&self, gs: &CpuStorage, gl: &Layout, us: &CpuStorage, ul: &Layout) -> Result<(CpuStorage, Shape)> {
        let gate = self.0;
        let out = dispatch!([(g, gs, gl), (u, us, ul)] => |T| {
            g.iter().zip(u).map(|(&g, &u)| gate.value_and_slope(g).0 * u).collect::<Vec<T>>()
        })?;
        Ok((out, gl.shape().clone()))
    }

    fn bwd(&self, g: &Tensor, u: &Tensor, _res: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let both = g.apply_op3_no_bwd(u, &dy.contiguous()?, &GatedUnitBackward(self.0))?;
        let n = g.elem_count();
        let split = |i: usize| both.narrow(0, i * n, n)?.reshape(g.shape());
        Ok((Some(split(0)?), Some(split(1)?)))
    }
}

/// `[dg; du]` flattened: `dg = dy·u·act'(g)`, `du = dy·act(g)`.
struct GatedUnitBackward(Gate);

impl candle_core::CustomOp3 for GatedUnitBackward {
    fn name(&self) -> &'static str {
        "gated-unit-backward"
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
        let gate = self.0;
        let out = dispatch!([(g, gs, gl), (u, us, ul), (dy, ds, dl)] => |T| {
            let mut out: Vec<T> = vec![T::zero(); 2 * n];
            let (dg, du) = out.split_at_mut(n);
            for i in 0..n {
                let (value, slope) = gate.value_and_slope(g[i]);
                dg[i] = dy[i] * u[i] * slope;
                du[i] = dy[i] * value;
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
                    dot += dy[i] * w[i] * x[i];
                }
                let k = r * r * r * dot / width;
                for i in 0..hidden {
                    dx[i] = r * dy[i] * w[i] - x[i] * k;
                    dw[i] += dy[i] * x[i] * r;
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
        let table_rows = cl.shape().elem_count() / d;
        let out = dispatch!([(x, xs, xl), (cos, cs, cl), (sin, ss, sl)] => |T| {
            let mut y: Vec<T> = vec![T::zero(); x.len()];
            for (i, (x, y)) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)).enumerate() {
                let t = (i / self.repeat) % table_rows;
                rotate(x, &cos[t * d..(t + 1) * d], &sin[t * d..(t + 1) * d], self.inverse, y);
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

/// `log_softmax(x)[target]` per row of logits `x` `[n, vocab]`: two passes over each row
/// (max, then the sum of exponentials), no `[n, vocab]` temporaries.
pub struct TokenLogProbs {
    pub targets: Vec<u32>,
}

impl candle_core::CustomOp1 for TokenLogProbs {
    fn name(&self) -> &'static str {
        "token-log-probs"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, vocab) = xl.shape().dims2()?;
        if self.targets.len() != n || self.targets.iter().any(|&t| t as usize >= vocab) {
            candle_core::bail!("token log-probs: {} targets for {n} rows of {vocab} logits", self.targets.len());
        }
        let out = dispatch!([(x, xs, xl)] => |T| {
            x.chunks_exact(vocab).zip(&self.targets).map(|(row, &t)| row[t as usize] - log_sum_exp(row)).collect::<Vec<T>>()
        })?;
        Ok((out, Shape::from(n)))
    }

    fn bwd(&self, x: &Tensor, res: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        let backward = TokenLogProbsBackward { targets: self.targets.clone() };
        Ok(Some(x.apply_op3_no_bwd(&res.contiguous()?, &g.contiguous()?, &backward)?))
    }
}

fn log_sum_exp<T: Float>(row: &[T]) -> T {
    let max = row.iter().fold(T::neg_infinity(), |m, &x| m.max(x));
    max + row.iter().fold(T::zero(), |acc, &x| acc + (x - max).exp()).ln()
}

/// `dx = g·(onehot(target) − softmax(x))` per row, with the log-sum-exp recovered from the
/// forward's output (`lse = x[target] − logp`).
struct TokenLogProbsBackward {
    targets: Vec<u32>,
}

impl candle_core::CustomOp3 for TokenLogProbsBackward {
    fn name(&self) -> &'static str {
        "token-log-probs-backward"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        rs: &CpuStorage,
        rl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (_, vocab) = xl.shape().dims2()?;
        let out = dispatch!([(x, xs, xl), (logp, rs, rl), (g, gs, gl)] => |T| {
            let mut dx: Vec<T> = Vec::with_capacity(x.len());
            for (i, (row, &t)) in x.chunks_exact(vocab).zip(&self.targets).enumerate() {
                let lse = row[t as usize] - logp[i];
                dx.extend(row.iter().map(|&x| -g[i] * (x - lse).exp()));
                dx[i * vocab + t as usize] += g[i];
            }
            dx
        })?;
        Ok((out, xl.shape().clone()))
    }
}

/// Rotates one head vector: `y = x·cos + rotate_half(x)·sin` (`inverse`: the transpose, which
/// undoes it and is its backward).
fn rotate<T: Float>(x: &[T], cos: &[T], sin: &[T], inverse: bool, y: &mut [T]) {
    let half = x.len() / 2;
    for f in 0..half {
        let (a, b) = (x[f], x[f + half]);
        if inverse {
            y[f] = a * cos[f] + b * sin[f + half];
            y[f + half] = b * cos[f + half] - a * sin[f];
        } else {
            y[f] = a * cos[f] - b * sin[f];
            y[f + half] = b * cos[f + half] + a * sin[f + half];
        }
    }
}

/// `dst ← alpha · lhs · rhs` (or `dst + alpha · lhs · rhs` when `accumulate`), single-threaded
/// gemm on strided views: each operand is `(buffer, row stride, column stride)`, dimensions
/// `(m, k, n)`. Callers run inside a batch shard, which already has its core.
fn gemm_views<T: Float + 'static>(
    (dst, dst_rs): (&mut [T], usize),
    accumulate: bool,
    (lhs, lhs_rs, lhs_cs): (&[T], usize, usize),
    (rhs, rhs_rs, rhs_cs): (&[T], usize, usize),
    (m, k, n): (usize, usize, usize),
    alpha: T,
) {
    if m == 0 || n == 0 {
        return;
    }
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| (rows - 1) * rs + (cols.max(1) - 1) * cs;
    assert!(last(m, n, dst_rs, 1) < dst.len(), "attention gemm: destination too small");
    if k > 0 {
        assert!(last(m, k, lhs_rs, lhs_cs) < lhs.len(), "attention gemm: left operand too small");
        assert!(last(k, n, rhs_rs, rhs_cs) < rhs.len(), "attention gemm: right operand too small");
    }
    // SAFETY: the asserts above bound every element the strides address in all three buffers.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            T::one(),
            alpha,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Grouped-query attention from the projections to the output projection's input, as one op:
/// `q` `[B·T, H·D]`, `k` and `v` `[B·T, KV·D]` (the linear layers' row-major outputs) →
/// `[B·T, H·D]`, with RoPE (tables `[T, D]`), the score scale, Gemma 2's soft-capping, the
/// additive mask `[T, T]` and softmax inside. The backward recomputes the scores rather than
/// keeping them (they are cheap at these lengths), so the op holds no intermediates between
/// the passes.
#[derive(Clone)]
pub struct Attention {
    pub cos: Tensor,
    pub sin: Tensor,
    pub mask: Tensor,
    pub batch: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Multiplies the scores: `1/√D`, or Gemma's `query_pre_attn_scalar^-½`.
    pub scale: f64,
    /// `cap · tanh(scores / cap)` on the scaled scores, before the mask (Gemma 2).
    pub softcap: Option<f64>,
}

/// The per-`(row, KV head)` pieces both passes share: rotated keys, values, and for each query
/// head of the group its rotated query, softmax probabilities and (soft-capped scores only)
/// the cap's slope `1 − tanh²(s / cap)` at each score.
struct HeadGroup<T> {
    keys: Vec<T>,
    values: Vec<T>,
    queries: Vec<Vec<T>>,
    probs: Vec<Vec<T>>,
    cap_slopes: Vec<Vec<T>>,
}

impl Attention {
    fn time(&self, rows: usize) -> usize {
        rows / self.batch
    }

    /// Checks the op's inputs against its settings: `q` `[B·T, H·D]`, `k` and `v` `[B·T, KV·D]`,
    /// tables `[T, D]`, mask `[T, T]`.
    fn check(&self, q: &Layout, k: &Layout, v: &Layout) -> Result<()> {
        if v.dims() != k.dims() {
            candle_core::bail!("attention: v {:?} differs from k {:?}", v.dims(), k.dims());
        }
        let (rows, q_width) = q.shape().dims2()?;
        let (k_rows, k_width) = k.shape().dims2()?;
        let t = self.time(rows);
        let fits = self.batch > 0
            && self.kv_heads > 0
            && self.heads.is_multiple_of(self.kv_heads)
            && rows == t * self.batch
            && k_rows == rows
            && q_width == self.heads * self.head_dim
            && k_width == self.kv_heads * self.head_dim
            && self.cos.dims() == [t, self.head_dim]
            && self.sin.dims() == [t, self.head_dim]
            && self.mask.dims() == [t, t];
        if !fits {
            candle_core::bail!(
                "attention: q {:?}, k/v {:?} do not fit batch {}, {} heads / {} KV heads of {}, tables {:?}, mask {:?}",
                q.dims(),
                k.dims(),
                self.batch,
                self.heads,
                self.kv_heads,
                self.head_dim,
                self.cos.dims(),
                self.mask.dims()
            );
        }
        Ok(())
    }

    /// Recomputes what the passes share for batch row `b` and KV head `j`.
    fn head_group<T: Float + 'static>(
        &self,
        (q, k, v): (&[T], &[T], &[T]),
        (cos, sin, mask): (&[T], &[T], &[T]),
        (b, j): (usize, usize),
    ) -> HeadGroup<T> {
        let d = self.head_dim;
        let t = self.time(q.len() / (self.heads * d));
        let groups = self.heads / self.kv_heads;
        let (q_width, kv_width) = (self.heads * d, self.kv_heads * d);
        let scale: T = cast(self.scale).expect("scale fits the dtype");
        let mut keys = vec![T::zero(); t * d];
        let mut values = vec![T::zero(); t * d];
        for s in 0..t {
            let row = (b * t + s) * kv_width + j * d;
            let table = &cos[s * d..(s + 1) * d];
            rotate(&k[row..row + d], table, &sin[s * d..(s + 1) * d], false, &mut keys[s * d..(s + 1) * d]);
            values[s * d..(s + 1) * d].copy_from_slice(&v[row..row + d]);
        }
        let softcap: Option<T> = self.softcap.map(|cap| cast(cap).expect("cap fits the dtype"));
        let mut queries = Vec::with_capacity(groups);
        let mut probs = Vec::with_capacity(groups);
        let mut cap_slopes = Vec::new();
        for g in 0..groups {
            let h = j * groups + g;
            let mut query = vec![T::zero(); t * d];
            for s in 0..t {
                let row = (b * t + s) * q_width + h * d;
                let (c, sn) = (&cos[s * d..(s + 1) * d], &sin[s * d..(s + 1) * d]);
                rotate(&q[row..row + d], c, sn, false, &mut query[s * d..(s + 1) * d]);
            }
            // scores = scale · Q Kᵀ + mask (soft-capped before the mask), then softmax per row.
            let mut p = match softcap {
                Some(_) => vec![T::zero(); t * t],
                None => mask.to_vec(),
            };
            gemm_views((&mut p, t), true, (&query, d, 1), (&keys, 1, d), (t, d, t), scale);
            if let Some(cap) = softcap {
                let mut slopes = Vec::with_capacity(t * t);
                for (x, &m) in p.iter_mut().zip(mask) {
                    let tanh = (*x / cap).tanh();
                    slopes.push(T::one() - tanh * tanh);
                    *x = cap * tanh + m;
                }
                cap_slopes.push(slopes);
            }
            for row in p.chunks_exact_mut(t) {
                let max = row.iter().fold(T::neg_infinity(), |m, &x| m.max(x));
                let mut sum = T::zero();
                for x in row.iter_mut() {
                    *x = (*x - max).exp();
                    sum = sum + *x;
                }
                row.iter_mut().for_each(|x| *x = *x / sum);
            }
            queries.push(query);
            probs.push(p);
        }
        HeadGroup { keys, values, queries, probs, cap_slopes }
    }

    fn tables<'a>(
        &self,
        cos: &'a CpuStorage,
        sin: &'a CpuStorage,
        mask: &'a CpuStorage,
    ) -> [(&'a CpuStorage, Layout); 3] {
        [(cos, self.cos.layout().clone()), (sin, self.sin.layout().clone()), (mask, self.mask.layout().clone())]
    }
}

/// Read guards on the CPU storages of some tensors.
fn cpu_storages<'a>(tensors: &[&'a Tensor]) -> Result<Vec<impl std::ops::Deref<Target = candle_core::Storage> + 'a>> {
    let guards: Vec<_> = tensors.iter().map(|t| t.storage_and_layout().0).collect();
    if guards.iter().any(|g| !matches!(&**g, candle_core::Storage::Cpu(_))) {
        candle_core::bail!("attention: tables must be on the CPU");
    }
    Ok(guards)
}

fn as_cpu(storage: &candle_core::Storage) -> &CpuStorage {
    match storage {
        candle_core::Storage::Cpu(s) => s,
        _ => unreachable!("checked by cpu_storages"),
    }
}

impl candle_core::CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "attention"
    }

    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.check(ql, kl, vl)?;
        let guards = cpu_storages(&[&self.cos, &self.sin, &self.mask])?;
        let [(cs, cl), (ss, sl), (ms, ml)] = self.tables(as_cpu(&guards[0]), as_cpu(&guards[1]), as_cpu(&guards[2]));
        let (d, groups) = (self.head_dim, self.heads / self.kv_heads);
        let out = dispatch!([(q, qs, ql), (k, ks, kl), (v, vs, vl), (cos, cs, &cl), (sin, ss, &sl), (mask, ms, &ml)] => |T| {
            let width = self.heads * d;
            let t = self.time(q.len() / width);
            let mut out: Vec<T> = vec![T::zero(); q.len()];
            for b in 0..self.batch {
                for j in 0..self.kv_heads {
                    let group = self.head_group((q, k, v), (cos, sin, mask), (b, j));
                    for (g, p) in group.probs.iter().enumerate() {
                        let h = j * groups + g;
                        let dst = &mut out[b * t * width + h * d..];
                        gemm_views((dst, width), false, (p, t, 1), (&group.values, d, 1), (t, t, d), T::one());
                    }
                }
            }
            out
        })?;
        Ok((out, ql.shape().clone()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        dout: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let backward = AttentionBackward { forward: self.clone(), dout: dout.contiguous()? };
        let all = q.apply_op3_no_bwd(k, v, &backward)?;
        let (nq, nk) = (q.elem_count(), k.elem_count());
        Ok((
            Some(all.narrow(0, 0, nq)?.reshape(q.shape())?),
            Some(all.narrow(0, nq, nk)?.reshape(k.shape())?),
            Some(all.narrow(0, nq + nk, nk)?.reshape(v.shape())?),
        ))
    }
}

/// `[dq; dk; dv]` flattened, for the output gradient `dout`. Per head, with `P` the softmax
/// probabilities and `O = P V`: `dV = Pᵀ dO`, `dP = dO Vᵀ`, `dS = P ∘ (dP − rowsum(dP ∘ P))`,
/// `dQ = scale · dS K`, `dK = scale · dSᵀ Q` (rotated space), then the inverse rotation;
/// soft-capped scores scale `dS` by the cap's slope first.
struct AttentionBackward {
    forward: Attention,
    dout: Tensor,
}

impl candle_core::CustomOp3 for AttentionBackward {
    fn name(&self) -> &'static str {
        "attention-backward"
    }

    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let a = &self.forward;
        a.check(ql, kl, vl)?;
        if self.dout.dims() != ql.dims() {
            candle_core::bail!(
                "attention backward: output gradient {:?} differs from q {:?}",
                self.dout.dims(),
                ql.dims()
            );
        }
        let guards = cpu_storages(&[&a.cos, &a.sin, &a.mask, &self.dout])?;
        let [(cs, cl), (ss, sl), (ms, ml)] = a.tables(as_cpu(&guards[0]), as_cpu(&guards[1]), as_cpu(&guards[2]));
        let (os, ol) = (as_cpu(&guards[3]), self.dout.layout().clone());
        let (d, groups) = (a.head_dim, a.heads / a.kv_heads);
        let total = ql.shape().elem_count() + 2 * kl.shape().elem_count();
        let out = dispatch!([(q, qs, ql), (k, ks, kl), (v, vs, vl), (cos, cs, &cl), (sin, ss, &sl), (mask, ms, &ml), (dout, os, &ol)] => |T| {
            let (q_width, kv_width) = (a.heads * d, a.kv_heads * d);
            let t = a.time(q.len() / q_width);
            let scale: T = cast(a.scale).expect("scale fits the dtype");
            let mut all: Vec<T> = vec![T::zero(); total];
            let (dq, rest) = all.split_at_mut(q.len());
            let (dk, dv) = rest.split_at_mut(k.len());
            let mut rotated = vec![T::zero(); t * d];
            let mut dp = vec![T::zero(); t * t];
            for b in 0..a.batch {
                for j in 0..a.kv_heads {
                    let group = a.head_group((q, k, v), (cos, sin, mask), (b, j));
                    let mut dkeys = vec![T::zero(); t * d];
                    for (g, (p, query)) in group.probs.iter().zip(&group.queries).enumerate() {
                        let h = j * groups + g;
                        let d_o = &dout[b * t * q_width + h * d..];
                        // dV (accumulated over the group, straight into dv's rows).
                        let dst = &mut dv[b * t * kv_width + j * d..];
                        gemm_views((dst, kv_width), true, (p, 1, t), (d_o, q_width, 1), (t, t, d), T::one());
                        // dP = dO Vᵀ, then dS in place.
                        gemm_views((&mut dp, t), false, (d_o, q_width, 1), (&group.values, 1, d), (t, d, t), T::one());
                        for (dp_row, p_row) in dp.chunks_exact_mut(t).zip(p.chunks_exact(t)) {
                            let dot = dp_row.iter().zip(p_row).fold(T::zero(), |acc, (&x, &y)| acc + x * y);
                            dp_row.iter_mut().zip(p_row).for_each(|(x, &y)| *x = y * (*x - dot));
                        }
                        if let Some(slopes) = group.cap_slopes.get(g) {
                            dp.iter_mut().zip(slopes).for_each(|(x, &slope)| *x *= slope);
                        }
                        // dQ (rotated) = scale · dS K, rotated back into dq's rows.
                        gemm_views((&mut rotated, d), false, (&dp, t, 1), (&group.keys, d, 1), (t, t, d), scale);
                        for s in 0..t {
                            let row = (b * t + s) * q_width + h * d;
                            let (c, sn) = (&cos[s * d..(s + 1) * d], &sin[s * d..(s + 1) * d]);
                            rotate(&rotated[s * d..(s + 1) * d], c, sn, true, &mut dq[row..row + d]);
                        }
                        // dK (rotated) += scale · dSᵀ Q.
                        gemm_views((&mut dkeys, d), true, (&dp, 1, t), (query, d, 1), (t, t, d), scale);
                    }
                    for s in 0..t {
                        let row = (b * t + s) * kv_width + j * d;
                        let (c, sn) = (&cos[s * d..(s + 1) * d], &sin[s * d..(s + 1) * d]);
                        rotate(&dkeys[s * d..(s + 1) * d], c, sn, true, &mut dk[row..row + d]);
                    }
                }
            }
            all
        })?;
        Ok((out, Shape::from(total)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::ops::tests::check_gradient;
    use candle_core::{D, Device, Var};

    const B: usize = 2;
    const T: usize = 5;
    const H: usize = 4;
    const KV: usize = 2;
    const HD: usize = 8;

    fn causal_mask() -> Result<Tensor> {
        let mask: Vec<f64> = (0..T * T).map(|i| if i % T <= i / T { 0.0 } else { f64::NEG_INFINITY }).collect();
        Tensor::from_vec(mask, (T, T), &Device::Cpu)
    }

    /// The same attention from candle's tensor ops: heads, RoPE, GQA by repeating KV heads,
    /// scores soft-capped by the composite path's own `ops::soft_cap` when asked.
    fn composite(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        softcap: Option<f64>,
    ) -> Result<Tensor> {
        let heads = |x: &Tensor, n: usize| x.reshape((B, T, n, HD))?.transpose(1, 2)?.contiguous();
        let rope = |x: &Tensor| -> Result<Tensor> {
            let (x1, x2) = (x.narrow(D::Minus1, 0, HD / 2)?, x.narrow(D::Minus1, HD / 2, HD / 2)?);
            let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
            x.broadcast_mul(cos)? + rotated.broadcast_mul(sin)?
        };
        let repeat = |x: Tensor| -> Result<Tensor> {
            let per_kv = (0..KV).map(|j| x.narrow(1, j, 1)).collect::<Result<Vec<_>>>()?;
            Tensor::cat(&per_kv.iter().flat_map(|h| std::iter::repeat_n(h, H / KV)).collect::<Vec<_>>(), 1)
        };
        let (q, k, v) = (rope(&heads(q, H)?)?, repeat(rope(&heads(k, KV)?)?)?, repeat(heads(v, KV)?)?);
        let scores = (q.matmul(&k.t()?)? / (HD as f64).sqrt())?;
        let scores = match softcap {
            Some(cap) => crate::tensor::ops::soft_cap(&scores, cap)?,
            None => scores,
        };
        let scores = scores.broadcast_add(&causal_mask()?)?;
        let probs = candle_nn::ops::softmax(&scores, D::Minus1)?;
        probs.matmul(&v)?.transpose(1, 2)?.reshape((B * T, H * HD))
    }

    #[test]
    fn attention_refuses_inputs_that_do_not_fit() -> Result<()> {
        let dev = Device::Cpu;
        let q = Tensor::zeros((B * T, H * HD), candle_core::DType::F64, &dev)?;
        let kv = Tensor::zeros((B * T, KV * HD), candle_core::DType::F64, &dev)?;
        let tables = Tensor::zeros((T, HD), candle_core::DType::F64, &dev)?;
        let op = |mask: Tensor| Attention {
            cos: tables.clone(),
            sin: tables.clone(),
            mask,
            batch: B,
            heads: H,
            kv_heads: KV,
            head_dim: HD,
            scale: 1.0 / (HD as f64).sqrt(),
            softcap: None,
        };
        assert!(q.apply_op3(&kv, &kv, op(causal_mask()?)).is_ok());
        let err = q.apply_op3(&kv, &kv, op(Tensor::zeros((T, T + 1), candle_core::DType::F64, &dev)?)).unwrap_err();
        assert!(err.to_string().contains("mask [5, 6]"), "{err}");
        assert!(q.apply_op3(&q, &q, op(causal_mask()?)).is_err(), "k with H heads instead of KV");
        Ok(())
    }

    #[test]
    fn attention_matches_composite_and_finite_differences() -> Result<()> {
        // A cap of 1 bends every score (they reach ±3 here), so the cap's slope is tested.
        for softcap in [None, Some(1.0)] {
            attention_matches_composite_with(softcap)?;
        }
        Ok(())
    }

    fn attention_matches_composite_with(softcap: Option<f64>) -> Result<()> {
        let dev = Device::Cpu;
        let q = Var::from_tensor(&Tensor::randn(0f64, 1.0, (B * T, H * HD), &dev)?)?;
        let k = Var::from_tensor(&Tensor::randn(0f64, 1.0, (B * T, KV * HD), &dev)?)?;
        let v = Var::from_tensor(&Tensor::randn(0f64, 1.0, (B * T, KV * HD), &dev)?)?;
        let cos = Tensor::randn(0f64, 1.0, (T, HD), &dev)?;
        let sin = Tensor::randn(0f64, 1.0, (T, HD), &dev)?;
        let op = Attention {
            cos: cos.clone(),
            sin: sin.clone(),
            mask: causal_mask()?,
            batch: B,
            heads: H,
            kv_heads: KV,
            head_dim: HD,
            scale: 1.0 / (HD as f64).sqrt(),
            softcap,
        };
        let fused = q.apply_op3(&k, &v, op.clone())?;
        let reference = composite(&q, &k, &v, &cos, &sin, softcap)?;
        let diff = (fused - reference)?.abs()?.max_all()?.to_scalar::<f64>()?;
        assert!(diff < 1e-12, "fused and composite attention (soft-cap {softcap:?}) differ by {diff}");
        let probe = Tensor::randn(0f64, 1.0, (B * T, H * HD), &dev)?;
        let f = || (q.apply_op3(&k, &v, op.clone())? * &probe)?.sum_all();
        for (var, entries) in [(&q, [0, 9, 130, 319]), (&k, [1, 20, 77, 159]), (&v, [2, 31, 64, 150])] {
            let worst = check_gradient(var, &f, &entries)?;
            assert!(worst < 1e-6, "relative gradient error {worst} (soft-cap {softcap:?})");
        }
        Ok(())
    }
}
