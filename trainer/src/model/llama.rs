//! The decoder of every supported family (Llama 1–3.x, Mistral, SmolLM, Qwen2, Qwen3,
//! Gemma 2, Gemma 3), written for training: every projection is an [`AdaptedLinear`], every op
//! on the gradient path has a backward pass, and the forward returns the hidden states of
//! *all* positions.
//!
//! Layout follows Hugging Face `modeling_llama.py`: embeddings → N × (RMSNorm → GQA attention
//! with rotate-half RoPE → residual → RMSNorm → SwiGLU MLP → residual) → RMSNorm → lm_head.
//! The families differ from it in a handful of places, each a switch of [`ModelConfig`]:
//! - Llama 3: RoPE frequencies scaled band-wise ([`crate::model::config::RopeScaling`]).
//! - Mistral, Qwen (optionally), Gemma: sliding-window layers, an extra additive mask per layer.
//! - Qwen3, Gemma 3: per-head RMSNorm on q and k before RoPE (`q_norm`, `k_norm`).
//! - Gemma: norms scale by `1 + w` (stored here as `1 + w`, so one norm serves all), embeddings
//!   times √hidden, GELU-tanh MLP, a norm on the attention output and around the MLP
//!   (`pre/post_feedforward_layernorm`), the score scale `query_pre_attn_scalar^-½`, local
//!   layers with their own RoPE base (Gemma 3), soft-capped scores and logits (Gemma 2).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{D, DType, Device, Result, Tensor, Var};

use super::input::ModelInput;
use super::linear::{AdaptedLinear, ForwardCtx, LinearWeight, Param};
use crate::error::TrainerError;
use crate::model::config::{Activation, ModelConfig, Rope};
use crate::model::load::Precision;
use crate::tensor::device::fused_kernels;
use crate::tensor::io::TensorSource;
use crate::tensor::kernels;
use crate::tensor::ops::{self, FrozenWeight};
use crate::tensor::packed::PackedWeight;

/// Root-mean-square layer norm: `x / sqrt(mean(x²) + eps) · weight`.
#[derive(Clone)]
pub struct RmsNorm {
    pub weight: Param,
    pub eps: f64,
}

impl RmsNorm {
    /// Half-precision activations are normalised in f32 (as transformers does) and rounded back.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::rms_norm(&ops::widen(x)?, self.weight.tensor(), self.eps)?.to_dtype(x.dtype())
    }
}

/// Precomputed RoPE tables for the rotate-half convention (first half / second half of each
/// head pair up), `[max_positions, head_dim]`.
#[derive(Clone)]
pub struct Rotary {
    cos: Tensor,
    sin: Tensor,
}

impl Rotary {
    pub fn new(config: &ModelConfig, rope: &Rope, device: &Device) -> Result<Self> {
        let positions = config.max_position_embeddings;
        // float32 throughout, as transformers computes them: `position · inv_freq` rounded
        // once, then cos and sin of that.
        let inv_freq = rope.inv_freq(config.head_dim);
        let mut cos = Vec::with_capacity(positions * config.head_dim);
        let mut sin = Vec::with_capacity(positions * config.head_dim);
        for p in 0..positions {
            for _half in 0..2 {
                for f in &inv_freq {
                    let angle = p as f32 * f;
                    cos.push(angle.cos());
                    sin.push(angle.sin());
                }
            }
        }
        let shape = (positions, config.head_dim);
        Ok(Rotary { cos: Tensor::from_vec(cos, shape, device)?, sin: Tensor::from_vec(sin, shape, device)? })
    }

    /// The cos and sin rows of `positions` `[T]`, `[T, head_dim]` each, in `dtype`.
    fn tables(&self, positions: &Tensor, dtype: DType) -> Result<(Tensor, Tensor)> {
        Ok((
            self.cos.index_select(positions, 0)?.to_dtype(dtype)?,
            self.sin.index_select(positions, 0)?.to_dtype(dtype)?,
        ))
    }

    /// Rotates `x` `[B, heads, T, head_dim]` by the angles of `positions` `[T]`.
    pub fn apply(&self, x: &Tensor, positions: &Tensor) -> Result<Tensor> {
        let (cos, sin) = self.tables(positions, x.dtype())?;
        ops::rope(x, &cos, &sin)
    }

    /// Rotates `x` `[B, heads, T, head_dim]` with per-row positions `[B, T]` (plain candle
    /// ops: for generation, where rows sit at different positions).
    fn apply_per_row(&self, x: &Tensor, positions: &Tensor) -> Result<Tensor> {
        let (b, _, t, hd) = x.dims4()?;
        let flat = positions.flatten_all()?;
        let cos = self.cos.index_select(&flat, 0)?.reshape((b, 1, t, hd))?.to_dtype(x.dtype())?;
        let sin = self.sin.index_select(&flat, 0)?.reshape((b, 1, t, hd))?.to_dtype(x.dtype())?;
        let half = hd / 2;
        let rotated = Tensor::cat(&[&x.narrow(3, half, half)?.neg()?, &x.narrow(3, 0, half)?], 3)?;
        x.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?
    }

    /// Rotates single-position rows `x` `[R, heads, head_dim]`, row `i` by `positions[i]`.
    fn apply_rows(&self, x: &Tensor, positions: &Tensor) -> Result<Tensor> {
        let cos = self.cos.index_select(positions, 0)?.unsqueeze(1)?.to_dtype(x.dtype())?;
        let sin = self.sin.index_select(positions, 0)?.unsqueeze(1)?.to_dtype(x.dtype())?;
        ops::rope(x, &cos, &sin)
    }
}

#[derive(Clone)]
pub struct Attention {
    pub q_proj: AdaptedLinear,
    pub k_proj: AdaptedLinear,
    pub v_proj: AdaptedLinear,
    pub o_proj: AdaptedLinear,
    /// Per-head norms of queries and keys before RoPE (Qwen3, Gemma 3).
    pub q_norm: Option<RmsNorm>,
    pub k_norm: Option<RmsNorm>,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    /// Multiplies the scores (`1/√head_dim` unless the family says otherwise).
    pub scale: f64,
    /// `cap · tanh(scores / cap)` before the mask (Gemma 2).
    pub softcap: Option<f64>,
    /// Trainable key/value prefix (prefix tuning), used when adapters are on.
    pub prefix: Option<Prefix>,
}

/// Virtual tokens' keys and values for one layer, `[kv_heads, virtual_tokens, head_dim]` each.
/// Like PEFT's past-key-values prefixes they are used as given (no RoPE) and every real token
/// attends to them; real tokens' positions start after them.
#[derive(Clone)]
pub struct Prefix {
    pub key: Var,
    pub value: Var,
}

impl Attention {
    /// The projection `proj` of `x` as `n` heads `[.., n·hd]` → `[.., n, hd]`, normalised per
    /// head by `norm` when the family has one.
    fn project_heads(
        &self,
        proj: &AdaptedLinear,
        norm: &Option<RmsNorm>,
        x: &Tensor,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        let y = proj.forward(x, ctx)?;
        let mut dims = y.dims().to_vec();
        let width = dims.pop().expect("a projection has a last dimension");
        dims.extend([width / self.head_dim, self.head_dim]);
        let y = y.reshape(dims)?;
        match norm {
            Some(norm) => norm.forward(&y),
            None => Ok(y),
        }
    }

    /// Softmax over the keys of `scale · q·kᵀ` scores (soft-capped first when asked) plus `mask`,
    /// in f32 for half-precision scores (as transformers does), rounded back to their dtype.
    fn probabilities(&self, scores: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let wide = ops::widen(scores)?;
        let mask = mask.to_dtype(wide.dtype())?;
        let probs = match self.softcap {
            Some(cap) => ops::masked_softmax(&ops::soft_cap(&wide, cap)?, &mask),
            None => ops::masked_softmax(&wide, &mask),
        }?;
        probs.to_dtype(scores.dtype())
    }

    /// Prepends the prefix keys/values (`[B, nkv, T, hd]` → `[B, nkv, P + T, hd]`).
    fn with_prefix(&self, k: Tensor, v: Tensor, ctx: &ForwardCtx) -> Result<(Tensor, Tensor)> {
        match &self.prefix {
            Some(prefix) if ctx.adapters => {
                let b = k.dim(0)?;
                let expand =
                    |p: &Var| p.to_dtype(k.dtype())?.unsqueeze(0)?.broadcast_as((b, p.dim(0)?, p.dim(1)?, p.dim(2)?));
                Ok((
                    Tensor::cat(&[&expand(&prefix.key)?, &k], 2)?.contiguous()?,
                    Tensor::cat(&[&expand(&prefix.value)?, &v], 2)?.contiguous()?,
                ))
            }
            _ => Ok((k, v)),
        }
    }

    fn forward(&self, x: &Tensor, input: &ModelInput, rotary: &Rotary, ctx: &ForwardCtx) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let (nh, nkv, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let prefixed = self.prefix.is_some() && ctx.adapters;
        if fused_kernels(x) && !prefixed {
            // On the CPU, everything between the projections (and their q/k norms) is one op
            // (see `kernels::Attention`): a short graph is a fast one.
            let project = |proj: &AdaptedLinear, norm: &Option<RmsNorm>| {
                self.project_heads(proj, norm, x, ctx)?.reshape((b * t, ()))?.contiguous()
            };
            let (cos, sin) = rotary.tables(&input.positions, x.dtype())?;
            let mask = input.mask.reshape((t, t))?.to_dtype(x.dtype())?.contiguous()?;
            let attention = kernels::Attention {
                cos,
                sin,
                mask,
                batch: b,
                heads: nh,
                kv_heads: nkv,
                head_dim: hd,
                scale: self.scale,
                softcap: self.softcap,
            };
            let (q, k, v) = (
                project(&self.q_proj, &self.q_norm)?,
                project(&self.k_proj, &self.k_norm)?,
                project(&self.v_proj, &None)?,
            );
            let out = q.apply_op3(&k, &v, attention)?;
            return self.o_proj.forward(&out.reshape((b, t, nh * hd))?, ctx);
        }
        let groups = nh / nkv;
        let heads = |proj: &AdaptedLinear, norm: &Option<RmsNorm>| -> Result<Tensor> {
            self.project_heads(proj, norm, x, ctx)?.transpose(1, 2)?.contiguous()
        };
        let q = rotary.apply(&heads(&self.q_proj, &self.q_norm)?, &input.positions)?;
        let k = rotary.apply(&heads(&self.k_proj, &self.k_norm)?, &input.positions)?;
        let (k, v) = self.with_prefix(k, heads(&self.v_proj, &None)?, ctx)?;
        let keys = k.dim(2)?;
        // Grouped-query attention without copying K/V: the `groups` query heads that share a
        // KV head are stacked along the time axis, so one batched matmul serves them all.
        let q = (q.reshape((b, nkv, groups * t, hd))? * self.scale)?;
        let scores = q.matmul(&k.t()?.contiguous()?)?;
        let scores = scores.reshape((b, nkv, groups, t, keys))?;
        let probs = self.probabilities(&scores, &input.mask)?;
        let out = probs.reshape((b, nkv, groups * t, keys))?.matmul(&v)?;
        let out = out.reshape((b, nh, t, hd))?.transpose(1, 2)?.reshape((b, t, nh * hd))?;
        self.o_proj.forward(&out, ctx)
    }

    /// Attention output for selected query positions only, `[R, hidden]`, of a single packed
    /// row (`B = 1`): keys and values still cover every position, but the queries, scores and
    /// output projection cost R rows instead of T.
    fn forward_rows(
        &self,
        x: &Tensor,
        input: &ModelInput,
        rows: &Tensor,
        rotary: &Rotary,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        let (_, t, hidden) = x.dims3()?;
        let (nh, nkv, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let groups = nh / nkv;
        let r = rows.dim(0)?;
        let heads = |proj: &AdaptedLinear, norm: &Option<RmsNorm>| -> Result<Tensor> {
            self.project_heads(proj, norm, x, ctx)?.transpose(1, 2)?.contiguous()
        };
        let k = rotary.apply(&heads(&self.k_proj, &self.k_norm)?, &input.positions)?;
        let (k, v) = self.with_prefix(k, heads(&self.v_proj, &None)?, ctx)?;
        let keys = k.dim(2)?;
        let x_rows = x.reshape((t, hidden))?.index_select(rows, 0)?;
        let positions = input.positions.index_select(rows, 0)?;
        let q = self.project_heads(&self.q_proj, &self.q_norm, &x_rows, ctx)?.contiguous()?;
        let q = rotary.apply_rows(&q, &positions)?;
        // [R, nkv, groups, hd] → [1, nkv, groups·R, hd], the layout of `forward`.
        let q =
            q.reshape((r, nkv, groups, hd))?.permute((1, 2, 0, 3))?.contiguous()?.reshape((1, nkv, groups * r, hd))?;
        let q = (q * self.scale)?;
        let scores = q.matmul(&k.t()?.contiguous()?)?.reshape((1, nkv, groups, r, keys))?;
        let mask = input.mask.reshape((t, keys))?.index_select(rows, 0)?.reshape((1, 1, 1, r, keys))?;
        let probs = self.probabilities(&scores, &mask)?;
        let out = probs.reshape((1, nkv, groups * r, keys))?.matmul(&v)?;
        let out = out.reshape((nkv, groups, r, hd))?.permute((2, 0, 1, 3))?.reshape((r, nh * hd))?;
        self.o_proj.forward(&out, ctx)
    }
}

/// Keys and values of one layer seen so far in a decode, `[B, kv_heads, S, head_dim]` each,
/// and the keys' RoPE positions `[B, S]` (u32; what a sliding window is measured in).
#[derive(Clone)]
pub struct LayerCache {
    pub key: Tensor,
    pub value: Tensor,
    pub positions: Tensor,
}

impl LayerCache {
    /// Keeps the batch rows listed in `rows` (finished sequences leave the batch).
    pub fn select_rows(&self, rows: &Tensor) -> Result<LayerCache> {
        Ok(LayerCache {
            key: self.key.index_select(rows, 0)?,
            value: self.value.index_select(rows, 0)?,
            positions: self.positions.index_select(rows, 0)?,
        })
    }
}

/// Additive mask hiding keys a sliding `window` does not reach: `−∞` where
/// `query_position − key_position ≥ window`. `queries` `[.., T]`, `keys` `[.., S]` (u32) →
/// `[.., T, S]` f32. (Keys after the query are the causal mask's business.)
pub fn window_mask(queries: &Tensor, keys: &Tensor, window: usize) -> Result<Tensor> {
    let q = queries.to_dtype(DType::F32)?.unsqueeze(D::Minus1)?;
    let k = keys.to_dtype(DType::F32)?.unsqueeze(D::Minus2)?;
    let far = q.broadcast_sub(&k)?.ge(window as f64)?;
    let hidden = Tensor::new(f32::NEG_INFINITY, queries.device())?.broadcast_as(far.shape())?;
    far.where_cond(&hidden, &hidden.zeros_like()?)
}

/// Inference-only attention for generation: new tokens `x` `[B, T, hidden]` at per-row
/// `positions` `[B, T]` attend to the cached keys/values plus their own. `mask` `[B, 1, 1, T, S]`
/// is additive over all S keys. Plain candle ops (no backward needed), so rows may sit at
/// different positions (left-padded prompts).
impl Attention {
    #[allow(clippy::too_many_arguments)]
    fn forward_cached(
        &self,
        x: &Tensor,
        positions: &Tensor,
        mask: &Tensor,
        window: Option<usize>,
        cache: &mut Option<LayerCache>,
        rotary: &Rotary,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let (nh, nkv, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let groups = nh / nkv;
        let heads = |proj: &AdaptedLinear, norm: &Option<RmsNorm>| -> Result<Tensor> {
            self.project_heads(proj, norm, x, ctx)?.transpose(1, 2)?.contiguous()
        };
        let q = rotary.apply_per_row(&heads(&self.q_proj, &self.q_norm)?, positions)?;
        let k = rotary.apply_per_row(&heads(&self.k_proj, &self.k_norm)?, positions)?;
        let v = heads(&self.v_proj, &None)?;
        let (k, v, key_positions) = match cache.take() {
            Some(old) => (
                Tensor::cat(&[&old.key, &k], 2)?,
                Tensor::cat(&[&old.value, &v], 2)?,
                Tensor::cat(&[&old.positions, positions], 1)?,
            ),
            None => (k, v, positions.clone()),
        };
        *cache = Some(LayerCache { key: k.clone(), value: v.clone(), positions: key_positions.clone() });
        let keys = k.dim(2)?;
        let mask = match window {
            Some(w) => mask.broadcast_add(&window_mask(positions, &key_positions, w)?.reshape((b, 1, 1, t, keys))?)?,
            None => mask.clone(),
        };
        let q = (q.reshape((b, nkv, groups * t, hd))? * self.scale)?;
        let scores = q.matmul(&k.t()?)?.reshape((b, nkv, groups, t, keys))?;
        // In f32 for half-precision scores, as in `probabilities`.
        let wide = ops::widen(&scores)?;
        let wide = match self.softcap {
            Some(cap) => ops::soft_cap(&wide, cap)?,
            None => wide,
        };
        let mask = mask.to_dtype(wide.dtype())?;
        let probs = candle_nn::ops::softmax_last_dim(&wide.broadcast_add(&mask)?)?.to_dtype(scores.dtype())?;
        let out = probs.reshape((b, nkv, groups * t, keys))?.matmul(&v)?;
        let out = out.reshape((b, nh, t, hd))?.transpose(1, 2)?.reshape((b, t, nh * hd))?;
        self.o_proj.forward(&out, ctx)
    }
}

#[derive(Clone)]
pub struct Mlp {
    pub gate_proj: AdaptedLinear,
    pub up_proj: AdaptedLinear,
    pub down_proj: AdaptedLinear,
    pub activation: Activation,
}

impl Mlp {
    fn forward(&self, x: &Tensor, ctx: &ForwardCtx) -> Result<Tensor> {
        let gate = self.gate_proj.forward(x, ctx)?;
        let up = self.up_proj.forward(x, ctx)?;
        let hidden = match self.activation {
            Activation::Silu => ops::swiglu(&gate, &up)?,
            Activation::GeluTanh => ops::gelu_tanh_glu(&gate, &up)?,
        };
        self.down_proj.forward(&hidden, ctx)
    }
}

#[derive(Clone)]
pub struct DecoderLayer {
    pub input_layernorm: RmsNorm,
    pub self_attn: Attention,
    /// Llama: the MLP's input norm. Gemma: the attention output's norm.
    pub post_attention_layernorm: RmsNorm,
    /// Gemma only: the MLP's input and output norms (`pre_feedforward_layernorm`,
    /// `post_feedforward_layernorm`).
    pub feedforward_norms: Option<(RmsNorm, RmsNorm)>,
    pub mlp: Mlp,
    /// The sliding window of this layer; `None` attends to every earlier position.
    pub window: Option<usize>,
    /// Whether this layer rotates with the local RoPE table (Gemma 3's sliding layers).
    pub local_rope: bool,
}

impl DecoderLayer {
    /// The layer's linears with their Hugging Face module names relative to the layer.
    pub fn linears_mut(&mut self) -> [(&'static str, &mut AdaptedLinear); 7] {
        [
            ("self_attn.q_proj", &mut self.self_attn.q_proj),
            ("self_attn.k_proj", &mut self.self_attn.k_proj),
            ("self_attn.v_proj", &mut self.self_attn.v_proj),
            ("self_attn.o_proj", &mut self.self_attn.o_proj),
            ("mlp.gate_proj", &mut self.mlp.gate_proj),
            ("mlp.up_proj", &mut self.mlp.up_proj),
            ("mlp.down_proj", &mut self.mlp.down_proj),
        ]
    }

    pub fn linears(&self) -> [(&'static str, &AdaptedLinear); 7] {
        [
            ("self_attn.q_proj", &self.self_attn.q_proj),
            ("self_attn.k_proj", &self.self_attn.k_proj),
            ("self_attn.v_proj", &self.self_attn.v_proj),
            ("self_attn.o_proj", &self.self_attn.o_proj),
            ("mlp.gate_proj", &self.mlp.gate_proj),
            ("mlp.up_proj", &self.mlp.up_proj),
            ("mlp.down_proj", &self.mlp.down_proj),
        ]
    }

    /// `x + attn`, the attention output normalised first in Gemma's layers.
    fn attn_residual(&self, x: &Tensor, attn: Tensor) -> Result<Tensor> {
        match self.feedforward_norms {
            Some(_) => x + self.post_attention_layernorm.forward(&attn)?,
            None => x + attn,
        }
    }

    /// The second half of every layer: `x + MLP(RMSNorm(x))`, or Gemma's
    /// `x + post_norm(MLP(pre_norm(x)))`.
    fn mlp_residual(&self, x: Tensor, ctx: &ForwardCtx) -> Result<Tensor> {
        let mlp = match &self.feedforward_norms {
            Some((pre, post)) => post.forward(&self.mlp.forward(&pre.forward(&x)?, ctx)?)?,
            None => self.mlp.forward(&self.post_attention_layernorm.forward(&x)?, ctx)?,
        };
        x + mlp
    }

    fn forward(&self, x: &Tensor, input: &ModelInput, rotary: &Rotary, ctx: &ForwardCtx) -> Result<Tensor> {
        let attn = self.self_attn.forward(&self.input_layernorm.forward(x)?, input, rotary, ctx)?;
        let x = self.attn_residual(x, attn)?;
        self.mlp_residual(x, ctx)
    }

    fn forward_cached(
        &self,
        x: &Tensor,
        positions: &Tensor,
        mask: &Tensor,
        cache: &mut Option<LayerCache>,
        rotary: &Rotary,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        let normed = self.input_layernorm.forward(x)?;
        let attn = self.self_attn.forward_cached(&normed, positions, mask, self.window, cache, rotary, ctx)?;
        let x = self.attn_residual(x, attn)?;
        self.mlp_residual(x, ctx)
    }

    /// The layer's norms with their Hugging Face names relative to the layer.
    fn norms(&self) -> Vec<(&'static str, &RmsNorm)> {
        let mut norms = vec![
            ("input_layernorm", &self.input_layernorm),
            ("post_attention_layernorm", &self.post_attention_layernorm),
        ];
        if let Some((pre, post)) = &self.feedforward_norms {
            norms.extend([("pre_feedforward_layernorm", pre), ("post_feedforward_layernorm", post)]);
        }
        norms.extend(self.self_attn.q_norm.iter().map(|n| ("self_attn.q_norm", n)));
        norms.extend(self.self_attn.k_norm.iter().map(|n| ("self_attn.k_norm", n)));
        norms
    }

    fn norms_mut(&mut self) -> Vec<(&'static str, &mut RmsNorm)> {
        let mut norms = vec![
            ("input_layernorm", &mut self.input_layernorm),
            ("post_attention_layernorm", &mut self.post_attention_layernorm),
        ];
        if let Some((pre, post)) = &mut self.feedforward_norms {
            norms.extend([("pre_feedforward_layernorm", pre), ("post_feedforward_layernorm", post)]);
        }
        norms.extend(self.self_attn.q_norm.iter_mut().map(|n| ("self_attn.q_norm", n)));
        norms.extend(self.self_attn.k_norm.iter_mut().map(|n| ("self_attn.k_norm", n)));
        norms
    }

    /// [`DecoderLayer::forward`] for selected positions of a single packed row → `[R, hidden]`.
    fn forward_rows(
        &self,
        x: &Tensor,
        input: &ModelInput,
        rows: &Tensor,
        rotary: &Rotary,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        let hidden = x.dim(2)?;
        let normed = self.input_layernorm.forward(x)?;
        let attn = self.self_attn.forward_rows(&normed, input, rows, rotary, ctx)?;
        let x = self.attn_residual(&x.reshape(((), hidden))?.index_select(rows, 0)?, attn)?;
        self.mlp_residual(x, ctx)
    }
}

#[derive(Clone)]
pub struct LlamaModel {
    pub config: ModelConfig,
    pub embed_tokens: Param,
    pub layers: Vec<DecoderLayer>,
    pub norm: RmsNorm,
    /// `None` when the output projection is tied to the embeddings.
    pub lm_head: Option<AdaptedLinear>,
    pub rotary: Rotary,
    /// The RoPE table of layers with `local_rope` (Gemma 3's sliding layers).
    pub local_rotary: Option<Rotary>,
    /// Tied embeddings' llama.cpp blocks (a GGUF model), for the output projection of a
    /// decode step.
    pub packed_embeddings: Option<Arc<PackedWeight>>,
    /// The activations' dtype, that of the frozen weights ([`Precision`]); trained
    /// parameters are f32 whatever it is, and rounded to it where the forward reads them.
    pub dtype: DType,
}

/// Gemma stores norm weights as `w` in `x̂·(1 + w)`; the model holds `1 + w`.
fn norm_offset(config: &ModelConfig) -> f64 {
    if config.architecture.is_gemma() { 1.0 } else { 0.0 }
}

/// The names a tensor may be stored under: its own, and in multimodal Gemma 3 checkpoints
/// the language model's `model.language_model.…` (transformers 5) or `language_model.model.…`
/// (4.x); the vision tower's tensors are never asked for.
fn stored_names(name: &str) -> Vec<String> {
    let mut names = vec![name.to_string()];
    if let Some(rest) = name.strip_prefix("model.") {
        names.extend([format!("model.language_model.{rest}"), format!("language_model.model.{rest}")]);
    } else {
        names.push(format!("language_model.{name}"));
    }
    names
}

impl LlamaModel {
    /// Builds the model from Hugging Face tensor names (`model.layers.N.self_attn.q_proj.weight`, …),
    /// taking one tensor at a time from `tensors`. Weights are converted to `precision`'s dtype
    /// (norms always to f32), except that with `quant` the decoder layers' linear weights are
    /// quantized as they arrive (QLoRA: the f32 copy of the base never exists whole). `path`
    /// only appears in error messages.
    pub fn from_tensors(
        config: ModelConfig,
        tensors: &mut dyn TensorSource,
        path: &Path,
        device: &Device,
        quant: Option<GgmlDType>,
        precision: Precision,
    ) -> anyhow::Result<Self> {
        let offset = norm_offset(&config);
        let dtype = precision.dtype();
        let mut packed = tensors.packed_weights();
        let mut take = |name: &str, dtype: DType| -> anyhow::Result<Tensor> {
            let stored = stored_names(name).into_iter().find(|n| tensors.contains(n));
            let t = match stored {
                Some(stored) => tensors.take(&stored)?,
                None => None,
            }
            .ok_or_else(|| TrainerError::MissingTensor { name: name.to_string(), path: path.to_path_buf() })?;
            Ok(t.to_dtype(dtype)?.to_device(device)?)
        };
        let embed_tokens = take("model.embed_tokens.weight", dtype)?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let mut linear = |name: &str, bias: bool| -> anyhow::Result<AdaptedLinear> {
                // Quantization reads f32 rows.
                let weight = take(&format!("{p}.{name}.weight"), if quant.is_some() { DType::F32 } else { dtype })?;
                let bias = if bias { Some(take(&format!("{p}.{name}.bias"), dtype)?) } else { None };
                match quant {
                    Some(dtype) => {
                        let (out_features, in_features) = weight.dims2()?;
                        if !in_features.is_multiple_of(dtype.block_size()) {
                            anyhow::bail!(
                                "{p}.{name}: input size {in_features} is not a multiple of the {dtype:?} block size {}",
                                dtype.block_size()
                            );
                        }
                        Ok(AdaptedLinear::frozen_quantized(
                            QTensor::quantize(&weight, dtype)?,
                            (out_features, in_features),
                            bias,
                        ))
                    }
                    None => {
                        let linear = AdaptedLinear::frozen(weight, bias)?;
                        Ok(match packed.remove(&format!("{p}.{name}.weight")) {
                            Some(blocks) => linear.with_packed(blocks),
                            None => linear,
                        })
                    }
                }
            };
            let q_proj = linear("self_attn.q_proj", config.qkv_bias)?;
            let k_proj = linear("self_attn.k_proj", config.qkv_bias)?;
            let v_proj = linear("self_attn.v_proj", config.qkv_bias)?;
            let o_proj = linear("self_attn.o_proj", config.o_bias)?;
            let mlp = Mlp {
                gate_proj: linear("mlp.gate_proj", config.mlp_bias)?,
                up_proj: linear("mlp.up_proj", config.mlp_bias)?,
                down_proj: linear("mlp.down_proj", config.mlp_bias)?,
                activation: config.activation,
            };
            let mut norm = |name: &str| -> anyhow::Result<RmsNorm> {
                let weight = (take(&format!("{p}.{name}.weight"), DType::F32)? + offset)?;
                Ok(RmsNorm { weight: Param::Frozen(weight), eps: config.rms_norm_eps })
            };
            let (q_norm, k_norm) = if config.qk_norm {
                (Some(norm("self_attn.q_norm")?), Some(norm("self_attn.k_norm")?))
            } else {
                (None, None)
            };
            let feedforward_norms = if config.architecture.is_gemma() {
                Some((norm("pre_feedforward_layernorm")?, norm("post_feedforward_layernorm")?))
            } else {
                None
            };
            let window = config.layer_window(i);
            layers.push(DecoderLayer {
                input_layernorm: norm("input_layernorm")?,
                self_attn: Attention {
                    q_proj,
                    k_proj,
                    v_proj,
                    o_proj,
                    q_norm,
                    k_norm,
                    num_heads: config.num_attention_heads,
                    num_kv_heads: config.num_key_value_heads,
                    head_dim: config.head_dim,
                    scale: config.attention_scale(),
                    softcap: config.attn_logit_softcapping,
                    prefix: None,
                },
                post_attention_layernorm: norm("post_attention_layernorm")?,
                feedforward_norms,
                mlp,
                window,
                local_rope: window.is_some() && config.local_rope.is_some(),
            });
        }
        let norm = RmsNorm {
            weight: Param::Frozen((take("model.norm.weight", DType::F32)? + offset)?),
            eps: config.rms_norm_eps,
        };
        // Checkpoints with tied embeddings usually omit lm_head.weight; some still carry a copy.
        let lm_head = if config.tie_word_embeddings {
            None
        } else {
            let head = AdaptedLinear::frozen(take("lm_head.weight", dtype)?, None)?;
            Some(match packed.remove("lm_head.weight") {
                Some(blocks) => head.with_packed(blocks),
                None => head,
            })
        };
        let packed_embeddings =
            packed.remove("model.embed_tokens.weight").filter(|_| config.tie_word_embeddings).map(Arc::new);
        let local_rotary = config.local_rope.as_ref().map(|rope| Rotary::new(&config, rope, device)).transpose()?;
        Ok(LlamaModel {
            rotary: Rotary::new(&config, &config.rope, device)?,
            local_rotary,
            config,
            embed_tokens: Param::Frozen(embed_tokens),
            layers,
            norm,
            lm_head,
            packed_embeddings,
            dtype,
        })
    }

    /// A model with random weights (normal, std 0.02 like transformers' `initializer_range`),
    /// for tests and benchmarks. Deterministic for a given seed.
    pub fn random(config: ModelConfig, seed: u64, device: &Device) -> anyhow::Result<Self> {
        let mut tensors = random_tensors(&config, seed)?;
        LlamaModel::from_tensors(config, &mut tensors, Path::new("<random>"), device, None, Precision::F32)
    }

    pub fn device(&self) -> &Device {
        self.embed_tokens.tensor().device()
    }

    /// How many weights decode steps multiply in their llama.cpp blocks (a GGUF model's).
    pub fn packed_weights(&self) -> usize {
        let linears = self.layers.iter().flat_map(|l| l.linears().map(|(_, linear)| linear)).chain(&self.lm_head);
        let packed = linears.filter(|l| matches!(&l.weight, LinearWeight::Frozen(w) if w.is_packed())).count();
        packed + usize::from(self.packed_embeddings.is_some())
    }

    /// Hidden states after the final norm for every position, `[B, T, hidden]`.
    pub fn hidden_states(&self, input: &ModelInput, ctx: &ForwardCtx) -> Result<Tensor> {
        let prefixed = self.prefixed_input(input, ctx)?;
        let input = prefixed.as_ref().unwrap_or(input);
        let windowed = self.windowed_input(input)?;
        let mut x = self.embed(&input.ids)?;
        for layer in &self.layers {
            let (input, rotary) = self.layer_view(layer, input, windowed.as_ref());
            x = layer.forward(&x, input, rotary, ctx)?;
        }
        self.norm.forward(&x)
    }

    /// `input` with the sliding window folded into its mask, when any layer has a window.
    /// Windows are measured in RoPE positions, so packed sequences (positions restarting at
    /// 0) and prefix-tuning's virtual tokens (keys at positions `0..P`) are handled alike.
    fn windowed_input(&self, input: &ModelInput) -> Result<Option<ModelInput>> {
        let Some(window) = self.config.sliding_window.filter(|_| self.layers.iter().any(|l| l.window.is_some())) else {
            return Ok(None);
        };
        let (t, keys) = (input.positions.dim(0)?, input.mask.dim(4)?);
        let key_positions = match keys - t {
            0 => input.positions.clone(),
            virtual_tokens => Tensor::cat(
                &[&Tensor::arange(0u32, virtual_tokens as u32, input.positions.device())?, &input.positions],
                0,
            )?,
        };
        let mask = window_mask(&input.positions, &key_positions, window)?.reshape((1, 1, 1, t, keys))?;
        Ok(Some(ModelInput {
            ids: input.ids.clone(),
            positions: input.positions.clone(),
            mask: input.mask.broadcast_add(&mask.to_dtype(input.mask.dtype())?)?,
        }))
    }

    /// What `layer` reads: the windowed or the full input, the local or the global RoPE table.
    fn layer_view<'a>(
        &'a self,
        layer: &DecoderLayer,
        input: &'a ModelInput,
        windowed: Option<&'a ModelInput>,
    ) -> (&'a ModelInput, &'a Rotary) {
        let input = match (layer.window, windowed) {
            (Some(_), Some(windowed)) => windowed,
            _ => input,
        };
        let rotary = match (&self.local_rotary, layer.local_rope) {
            (Some(local), true) => local,
            _ => &self.rotary,
        };
        (input, rotary)
    }

    /// Final hidden states of selected flat rows (indices into the `[B·T]` positions), `[R, hidden]`.
    ///
    /// Only these rows are read by the losses, so for a packed batch the last layer computes
    /// queries, attention output and MLP for them alone (keys and values still for all).
    pub fn hidden_rows(&self, input: &ModelInput, rows: &Tensor, ctx: &ForwardCtx) -> Result<Tensor> {
        let (b, t) = input.ids.dims2()?;
        let Some((last, rest)) = self.layers.split_last().filter(|_| b == 1) else {
            let hidden = self.hidden_states(input, ctx)?;
            return hidden.reshape((b * t, self.config.hidden_size))?.index_select(rows, 0);
        };
        let prefixed = self.prefixed_input(input, ctx)?;
        let input = prefixed.as_ref().unwrap_or(input);
        let windowed = self.windowed_input(input)?;
        let mut x = self.embed(&input.ids)?;
        for layer in rest {
            let (input, rotary) = self.layer_view(layer, input, windowed.as_ref());
            x = layer.forward(&x, input, rotary, ctx)?;
        }
        let (last_input, rotary) = self.layer_view(last, input, windowed.as_ref());
        let x = last.forward_rows(&x, last_input, rows, rotary, ctx)?;
        self.norm.forward(&x)
    }

    /// One step of cached decoding: `ids` `[B, T]` at `positions` `[B, T]` with the additive
    /// `mask` `[B, 1, 1, T, S]` over every key (cached + new). Extends `caches` (one per
    /// layer) and returns the logits of each row's last position, `[B, vocab]`.
    pub fn decode_step(
        &self,
        ids: &Tensor,
        positions: &Tensor,
        mask: &Tensor,
        caches: &mut [Option<LayerCache>],
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        let t = ids.dim(1)?;
        let mut x = self.embed(ids)?;
        for (layer, cache) in self.layers.iter().zip(caches.iter_mut()) {
            let rotary = match (&self.local_rotary, layer.local_rope) {
                (Some(local), true) => local,
                _ => &self.rotary,
            };
            x = layer.forward_cached(&x, positions, mask, cache, rotary, ctx)?;
        }
        let last = self.norm.forward(&x.narrow(1, t - 1, 1)?.squeeze(1)?)?;
        self.logits(&last, ctx)
    }

    /// Per-layer caches holding the prefix-tuning virtual tokens for a batch of `b` rows
    /// (`None`s without an active prefix), and the number of virtual tokens.
    pub fn initial_caches(&self, b: usize, ctx: &ForwardCtx) -> Result<(Vec<Option<LayerCache>>, usize)> {
        let p = self.prefix_len(ctx);
        let caches = self
            .layers
            .iter()
            .map(|layer| match (&layer.self_attn.prefix, p) {
                (Some(prefix), p) if p > 0 => {
                    let expand = |v: &Var| -> Result<Tensor> {
                        let v = v.to_dtype(self.dtype)?;
                        v.unsqueeze(0)?.broadcast_as((b, v.dim(0)?, v.dim(1)?, v.dim(2)?))?.contiguous()
                    };
                    let positions = Tensor::arange(0u32, p as u32, self.device())?
                        .unsqueeze(0)?
                        .broadcast_as((b, p))?
                        .contiguous()?;
                    Ok(Some(LayerCache { key: expand(&prefix.key)?, value: expand(&prefix.value)?, positions }))
                }
                _ => Ok(None),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((caches, p))
    }

    /// Number of prefix-tuning virtual tokens active in this forward pass.
    fn prefix_len(&self, ctx: &ForwardCtx) -> usize {
        match self.layers.first().and_then(|l| l.self_attn.prefix.as_ref()) {
            Some(p) if ctx.adapters => p.key.dim(1).unwrap_or(0),
            _ => 0,
        }
    }

    /// With prefix tuning on: real tokens' positions shifted past the virtual tokens and the
    /// mask widened so every token sees them (as with PEFT's past key values).
    fn prefixed_input(&self, input: &ModelInput, ctx: &ForwardCtx) -> Result<Option<ModelInput>> {
        let p = self.prefix_len(ctx);
        if p == 0 {
            return Ok(None);
        }
        let t = input.positions.dim(0)?;
        let visible = Tensor::zeros((1, 1, 1, t, p), input.mask.dtype(), input.mask.device())?;
        Ok(Some(ModelInput {
            ids: input.ids.clone(),
            positions: input.positions.broadcast_add(&Tensor::new(p as u32, input.positions.device())?)?,
            mask: Tensor::cat(&[&visible, &input.mask], 4)?,
        }))
    }

    /// Token embeddings of `ids` `[B, T]` → `[B, T, hidden]` in the activations' dtype (times
    /// √hidden for Gemma, in float32 as transformers rounds it).
    fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let rows = self.embed_tokens.tensor().index_select(&ids.flatten_all()?, 0)?;
        let x = rows.to_dtype(self.dtype)?.reshape((b, t, self.config.hidden_size))?;
        if self.config.architecture.is_gemma() { x * ((self.config.hidden_size as f32).sqrt() as f64) } else { Ok(x) }
    }

    /// Vocabulary logits for selected hidden-state rows `[n, hidden]` → `[n, vocab]`, in f32
    /// whatever the activations' dtype (the log-softmax and the losses read them).
    pub fn logits(&self, rows: &Tensor, ctx: &ForwardCtx) -> Result<Tensor> {
        let logits = match (&self.lm_head, &self.embed_tokens) {
            (Some(head), _) => head.forward(rows, ctx),
            (None, Param::Frozen(embed)) => {
                let weight = FrozenWeight::dense_once(embed.clone());
                let weight = match &self.packed_embeddings {
                    Some(blocks) => weight.with_packed(blocks.clone()),
                    None => weight,
                };
                ops::frozen_linear(rows, &weight)
            }
            (None, Param::Trainable(embed)) => {
                ops::trainable_linear(rows, &embed.to_dtype(rows.dtype())?, ctx.grad_sink.as_ref())
            }
        }?;
        let logits = ops::widen(&logits)?;
        match self.config.final_logit_softcapping {
            Some(cap) => ops::soft_cap(&logits, cap),
            None => Ok(logits),
        }
    }

    /// Every base-model parameter with its Hugging Face name, in f32; LoRA folded in when present.
    pub fn merged_weights(&self) -> Result<Vec<(String, Tensor)>> {
        let offset = norm_offset(&self.config);
        let mut out = vec![("model.embed_tokens.weight".to_string(), self.embed_tokens.tensor().clone())];
        for (i, layer) in self.layers.iter().enumerate() {
            for (name, linear) in layer.linears() {
                let mut w = linear.dense_weight()?;
                if let Some(lora) = &linear.lora {
                    w = (w + (lora.b.matmul(lora.a.as_tensor())? * lora.scale)?)?;
                }
                out.push((format!("model.layers.{i}.{name}.weight"), w));
                if let Some(bias) = &linear.bias {
                    out.push((format!("model.layers.{i}.{name}.bias"), bias.tensor().clone()));
                }
            }
            for (name, norm) in layer.norms() {
                out.push((format!("model.layers.{i}.{name}.weight"), (norm.weight.tensor() - offset)?));
            }
        }
        out.push(("model.norm.weight".into(), (self.norm.weight.tensor() - offset)?));
        if let Some(head) = &self.lm_head {
            out.push(("lm_head.weight".into(), head.dense_weight()?));
        }
        // A bf16 base gives f32 weights too, like the trained parameters beside them.
        out.into_iter().map(|(name, t)| Ok((name, ops::widen(&t)?))).collect()
    }

    /// Makes every base parameter trainable (full fine-tuning) and returns them by HF name.
    pub fn make_all_trainable(&mut self) -> Result<Vec<(String, Var)>> {
        let mut vars = vec![("model.embed_tokens.weight".to_string(), self.embed_tokens.make_trainable()?)];
        for (i, layer) in self.layers.iter_mut().enumerate() {
            // Gemma's norm parameters are trained as the `1 + w` the model holds; the model
            // folder gets `w` back from `merged_weights`.
            for (name, norm) in layer.norms_mut() {
                vars.push((format!("model.layers.{i}.{name}.weight"), norm.weight.make_trainable()?));
            }
            for (name, linear) in layer.linears_mut() {
                vars.push((format!("model.layers.{i}.{name}.weight"), make_linear_trainable(linear)?));
                if let Some(bias) = &mut linear.bias {
                    vars.push((format!("model.layers.{i}.{name}.bias"), bias.make_trainable()?));
                }
            }
        }
        vars.push(("model.norm.weight".into(), self.norm.weight.make_trainable()?));
        if let Some(head) = &mut self.lm_head {
            vars.push(("lm_head.weight".into(), make_linear_trainable(head)?));
        }
        Ok(vars)
    }
}

fn make_linear_trainable(linear: &mut AdaptedLinear) -> Result<Var> {
    let var = match &linear.weight {
        LinearWeight::Trainable(v) => v.clone(),
        LinearWeight::Frozen(w) => Var::from_tensor(&w.dense(DType::F32)?)?,
    };
    linear.weight = LinearWeight::Trainable(var.clone());
    Ok(var)
}

/// Random Hugging Face-named tensors for `config` (norms scale by one).
pub fn random_tensors(config: &ModelConfig, seed: u64) -> Result<HashMap<String, Tensor>> {
    use rand::SeedableRng;
    use rand_distr::{Distribution, Normal};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let normal = Normal::new(0.0f32, 0.02).expect("valid std");
    let cpu = Device::Cpu;
    let mut randn = |rows: usize, cols: usize| -> Result<Tensor> {
        let data: Vec<f32> = (0..rows * cols).map(|_| normal.sample(&mut rng)).collect();
        Tensor::from_vec(data, (rows, cols), &cpu)
    };
    let (h, i) = (config.hidden_size, config.intermediate_size);
    // Norm weights that scale by one: 1 (or Gemma's w = 0 in `1 + w`).
    let unit_norm = |width: usize| Tensor::ones(width, DType::F32, &cpu)? - norm_offset(config);
    let q = config.num_attention_heads * config.head_dim;
    let kv = config.num_key_value_heads * config.head_dim;
    let mut t = HashMap::new();
    t.insert("model.embed_tokens.weight".into(), randn(config.vocab_size, h)?);
    for l in 0..config.num_hidden_layers {
        let p = format!("model.layers.{l}");
        for (name, rows, cols, bias) in [
            ("self_attn.q_proj", q, h, config.qkv_bias),
            ("self_attn.k_proj", kv, h, config.qkv_bias),
            ("self_attn.v_proj", kv, h, config.qkv_bias),
            ("self_attn.o_proj", h, q, config.o_bias),
            ("mlp.gate_proj", i, h, config.mlp_bias),
            ("mlp.up_proj", i, h, config.mlp_bias),
            ("mlp.down_proj", h, i, config.mlp_bias),
        ] {
            t.insert(format!("{p}.{name}.weight"), randn(rows, cols)?);
            if bias {
                t.insert(format!("{p}.{name}.bias"), randn(1, rows)?.squeeze(0)?);
            }
        }
        let mut norms = vec![("input_layernorm", h), ("post_attention_layernorm", h)];
        if config.architecture.is_gemma() {
            norms.extend([("pre_feedforward_layernorm", h), ("post_feedforward_layernorm", h)]);
        }
        if config.qk_norm {
            norms.extend([("self_attn.q_norm", config.head_dim), ("self_attn.k_norm", config.head_dim)]);
        }
        for (name, width) in norms {
            t.insert(format!("{p}.{name}.weight"), unit_norm(width)?);
        }
    }
    t.insert("model.norm.weight".into(), unit_norm(h)?);
    if !config.tie_word_embeddings {
        t.insert("lm_head.weight".into(), randn(config.vocab_size, h)?);
    }
    Ok(t)
}
