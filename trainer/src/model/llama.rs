//! The Llama-family decoder (Llama, Mistral-style, SmolLM, and Qwen2 with its q/k/v biases),
//! written for training: every projection is an [`AdaptedLinear`], every op on the gradient
//! path has a backward pass, and the forward returns the hidden states of *all* positions.
//!
//! Layout follows Hugging Face `modeling_llama.py`: embeddings → N × (RMSNorm → GQA attention
//! with rotate-half RoPE → residual → RMSNorm → SwiGLU MLP → residual) → RMSNorm → lm_head.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Result, Tensor, Var};

use super::input::ModelInput;
use super::linear::{AdaptedLinear, ForwardCtx, LinearWeight, Param};
use crate::error::TrainerError;
use crate::model::config::ModelConfig;
use crate::tensor::kernels;
use crate::tensor::ops::{self, FrozenWeight};

/// Root-mean-square layer norm: `x / sqrt(mean(x²) + eps) · weight`.
#[derive(Clone)]
pub struct RmsNorm {
    pub weight: Param,
    pub eps: f64,
}

impl RmsNorm {
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::rms_norm(x, self.weight.tensor(), self.eps)
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
    pub fn new(config: &ModelConfig, device: &Device) -> Result<Self> {
        let half = config.head_dim / 2;
        let positions = config.max_position_embeddings;
        // f64 tables rounded once to f32, like transformers' float32 inv_freq within 1 ulp.
        let inv_freq: Vec<f64> =
            (0..half).map(|i| 1.0 / config.rope_theta.powf(2.0 * i as f64 / config.head_dim as f64)).collect();
        let mut cos = Vec::with_capacity(positions * config.head_dim);
        let mut sin = Vec::with_capacity(positions * config.head_dim);
        for p in 0..positions {
            for _half in 0..2 {
                for f in &inv_freq {
                    let angle = (p as f64 * *f) as f32;
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
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
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
    /// Prepends the prefix keys/values (`[B, nkv, T, hd]` → `[B, nkv, P + T, hd]`).
    fn with_prefix(&self, k: Tensor, v: Tensor, ctx: &ForwardCtx) -> Result<(Tensor, Tensor)> {
        match &self.prefix {
            Some(prefix) if ctx.adapters => {
                let b = k.dim(0)?;
                let expand = |p: &Var| p.unsqueeze(0)?.broadcast_as((b, p.dim(0)?, p.dim(1)?, p.dim(2)?));
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
        if x.device().is_cpu() && !prefixed {
            // On the CPU, everything between the projections is one op (see
            // `kernels::Attention`): a short graph is a fast one.
            let project = |proj: &AdaptedLinear| proj.forward(x, ctx)?.reshape((b * t, ()))?.contiguous();
            let (cos, sin) = rotary.tables(&input.positions, x.dtype())?;
            let mask = input.mask.reshape((t, t))?.to_dtype(x.dtype())?.contiguous()?;
            let attention = kernels::Attention { cos, sin, mask, batch: b, heads: nh, kv_heads: nkv, head_dim: hd };
            let out = project(&self.q_proj)?.apply_op3(&project(&self.k_proj)?, &project(&self.v_proj)?, attention)?;
            return self.o_proj.forward(&out.reshape((b, t, nh * hd))?, ctx);
        }
        let groups = nh / nkv;
        let heads = |proj: &AdaptedLinear, n: usize| -> Result<Tensor> {
            proj.forward(x, ctx)?.reshape((b, t, n, hd))?.transpose(1, 2)?.contiguous()
        };
        let q = rotary.apply(&heads(&self.q_proj, nh)?, &input.positions)?;
        let k = rotary.apply(&heads(&self.k_proj, nkv)?, &input.positions)?;
        let (k, v) = self.with_prefix(k, heads(&self.v_proj, nkv)?, ctx)?;
        let keys = k.dim(2)?;
        // Grouped-query attention without copying K/V: the `groups` query heads that share a
        // KV head are stacked along the time axis, so one batched matmul serves them all.
        let q = (q.reshape((b, nkv, groups * t, hd))? * (1.0 / (hd as f64).sqrt()))?;
        let scores = q.matmul(&k.t()?.contiguous()?)?;
        let scores = scores.reshape((b, nkv, groups, t, keys))?;
        let probs = ops::masked_softmax(&scores, &input.mask)?;
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
        let heads = |proj: &AdaptedLinear| -> Result<Tensor> {
            proj.forward(x, ctx)?.reshape((1, t, nkv, hd))?.transpose(1, 2)?.contiguous()
        };
        let k = rotary.apply(&heads(&self.k_proj)?, &input.positions)?;
        let (k, v) = self.with_prefix(k, heads(&self.v_proj)?, ctx)?;
        let keys = k.dim(2)?;
        let x_rows = x.reshape((t, hidden))?.index_select(rows, 0)?;
        let positions = input.positions.index_select(rows, 0)?;
        let q = self.q_proj.forward(&x_rows, ctx)?.reshape((r, nh, hd))?;
        let q = rotary.apply_rows(&q, &positions)?;
        // [R, nkv, groups, hd] → [1, nkv, groups·R, hd], the layout of `forward`.
        let q =
            q.reshape((r, nkv, groups, hd))?.permute((1, 2, 0, 3))?.contiguous()?.reshape((1, nkv, groups * r, hd))?;
        let q = (q * (1.0 / (hd as f64).sqrt()))?;
        let scores = q.matmul(&k.t()?.contiguous()?)?.reshape((1, nkv, groups, r, keys))?;
        let mask = input.mask.reshape((t, keys))?.index_select(rows, 0)?.reshape((1, 1, 1, r, keys))?;
        let probs = ops::masked_softmax(&scores, &mask)?;
        let out = probs.reshape((1, nkv, groups * r, keys))?.matmul(&v)?;
        let out = out.reshape((nkv, groups, r, hd))?.permute((2, 0, 1, 3))?.reshape((r, nh * hd))?;
        self.o_proj.forward(&out, ctx)
    }
}

/// Keys and values of one layer seen so far in a decode, `[B, kv_heads, S, head_dim]` each.
#[derive(Clone)]
pub struct LayerCache {
    pub key: Tensor,
    pub value: Tensor,
}

impl LayerCache {
    /// Keeps the batch rows listed in `rows` (finished sequences leave the batch).
    pub fn select_rows(&self, rows: &Tensor) -> Result<LayerCache> {
        Ok(LayerCache { key: self.key.index_select(rows, 0)?, value: self.value.index_select(rows, 0)? })
    }
}

/// Inference-only attention for generation: new tokens `x` `[B, T, hidden]` at per-row
/// `positions` `[B, T]` attend to the cached keys/values plus their own. `mask` `[B, 1, 1, T, S]`
/// is additive over all S keys. Plain candle ops (no backward needed), so rows may sit at
/// different positions (left-padded prompts).
impl Attention {
    fn forward_cached(
        &self,
        x: &Tensor,
        positions: &Tensor,
        mask: &Tensor,
        cache: &mut Option<LayerCache>,
        rotary: &Rotary,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let (nh, nkv, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let groups = nh / nkv;
        let heads = |proj: &AdaptedLinear, n: usize| -> Result<Tensor> {
            proj.forward(x, ctx)?.reshape((b, t, n, hd))?.transpose(1, 2)?.contiguous()
        };
        let q = rotary.apply_per_row(&heads(&self.q_proj, nh)?, positions)?;
        let k = rotary.apply_per_row(&heads(&self.k_proj, nkv)?, positions)?;
        let v = heads(&self.v_proj, nkv)?;
        let (k, v) = match cache.take() {
            Some(old) => (Tensor::cat(&[&old.key, &k], 2)?, Tensor::cat(&[&old.value, &v], 2)?),
            None => (k, v),
        };
        *cache = Some(LayerCache { key: k.clone(), value: v.clone() });
        let keys = k.dim(2)?;
        let q = (q.reshape((b, nkv, groups * t, hd))? * (1.0 / (hd as f64).sqrt()))?;
        let scores = q.matmul(&k.t()?)?.reshape((b, nkv, groups, t, keys))?.broadcast_add(mask)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
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
}

impl Mlp {
    fn forward(&self, x: &Tensor, ctx: &ForwardCtx) -> Result<Tensor> {
        let gate = self.gate_proj.forward(x, ctx)?;
        let up = self.up_proj.forward(x, ctx)?;
        self.down_proj.forward(&ops::swiglu(&gate, &up)?, ctx)
    }
}

#[derive(Clone)]
pub struct DecoderLayer {
    pub input_layernorm: RmsNorm,
    pub self_attn: Attention,
    pub post_attention_layernorm: RmsNorm,
    pub mlp: Mlp,
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

    /// The second half of every layer: `x + MLP(RMSNorm(x))`.
    fn mlp_residual(&self, x: Tensor, ctx: &ForwardCtx) -> Result<Tensor> {
        let mlp = self.mlp.forward(&self.post_attention_layernorm.forward(&x)?, ctx)?;
        x + mlp
    }

    fn forward(&self, x: &Tensor, input: &ModelInput, rotary: &Rotary, ctx: &ForwardCtx) -> Result<Tensor> {
        let attn = self.self_attn.forward(&self.input_layernorm.forward(x)?, input, rotary, ctx)?;
        let x = (x + attn)?;
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
        let x = (x + self.self_attn.forward_cached(&normed, positions, mask, cache, rotary, ctx)?)?;
        self.mlp_residual(x, ctx)
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
        let x = (x.reshape(((), hidden))?.index_select(rows, 0)? + attn)?;
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
}

impl LlamaModel {
    /// Builds the model from Hugging Face tensor names (`model.layers.N.self_attn.q_proj.weight`, …).
    /// All tensors are converted to f32; `source` only appears in error messages.
    pub fn from_tensors(
        config: ModelConfig,
        mut tensors: HashMap<String, Tensor>,
        source: &Path,
        device: &Device,
    ) -> anyhow::Result<Self> {
        let mut take = |name: &str| -> anyhow::Result<Tensor> {
            let t = tensors
                .remove(name)
                .ok_or_else(|| TrainerError::MissingTensor { name: name.to_string(), path: source.to_path_buf() })?;
            Ok(t.to_dtype(DType::F32)?.to_device(device)?)
        };
        let embed_tokens = take("model.embed_tokens.weight")?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let mut linear = |name: &str, bias: bool| -> anyhow::Result<AdaptedLinear> {
                let weight = take(&format!("{p}.{name}.weight"))?;
                let bias = if bias { Some(take(&format!("{p}.{name}.bias"))?) } else { None };
                Ok(AdaptedLinear::frozen(weight, bias)?)
            };
            let self_attn = Attention {
                q_proj: linear("self_attn.q_proj", config.qkv_bias)?,
                k_proj: linear("self_attn.k_proj", config.qkv_bias)?,
                v_proj: linear("self_attn.v_proj", config.qkv_bias)?,
                o_proj: linear("self_attn.o_proj", config.o_bias)?,
                num_heads: config.num_attention_heads,
                num_kv_heads: config.num_key_value_heads,
                head_dim: config.head_dim,
                prefix: None,
            };
            let mlp = Mlp {
                gate_proj: linear("mlp.gate_proj", config.mlp_bias)?,
                up_proj: linear("mlp.up_proj", config.mlp_bias)?,
                down_proj: linear("mlp.down_proj", config.mlp_bias)?,
            };
            let norm = |t: Tensor| RmsNorm { weight: Param::Frozen(t), eps: config.rms_norm_eps };
            layers.push(DecoderLayer {
                input_layernorm: norm(take(&format!("{p}.input_layernorm.weight"))?),
                self_attn,
                post_attention_layernorm: norm(take(&format!("{p}.post_attention_layernorm.weight"))?),
                mlp,
            });
        }
        let norm = RmsNorm { weight: Param::Frozen(take("model.norm.weight")?), eps: config.rms_norm_eps };
        // Checkpoints with tied embeddings usually omit lm_head.weight; some still carry a copy.
        let lm_head =
            if config.tie_word_embeddings { None } else { Some(AdaptedLinear::frozen(take("lm_head.weight")?, None)?) };
        Ok(LlamaModel {
            rotary: Rotary::new(&config, device)?,
            config,
            embed_tokens: Param::Frozen(embed_tokens),
            layers,
            norm,
            lm_head,
        })
    }

    /// A model with random weights (normal, std 0.02 like transformers' `initializer_range`),
    /// for tests and benchmarks. Deterministic for a given seed.
    pub fn random(config: ModelConfig, seed: u64, device: &Device) -> anyhow::Result<Self> {
        let tensors = random_tensors(&config, seed)?;
        LlamaModel::from_tensors(config, tensors, Path::new("<random>"), device)
    }

    pub fn device(&self) -> &Device {
        self.embed_tokens.tensor().device()
    }

    /// Hidden states after the final norm for every position, `[B, T, hidden]`.
    pub fn hidden_states(&self, input: &ModelInput, ctx: &ForwardCtx) -> Result<Tensor> {
        let prefixed = self.prefixed_input(input, ctx)?;
        let input = prefixed.as_ref().unwrap_or(input);
        let mut x = self.embed(input)?;
        for layer in &self.layers {
            x = layer.forward(&x, input, &self.rotary, ctx)?;
        }
        self.norm.forward(&x)
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
        let mut x = self.embed(input)?;
        for layer in rest {
            x = layer.forward(&x, input, &self.rotary, ctx)?;
        }
        let x = last.forward_rows(&x, input, rows, &self.rotary, ctx)?;
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
        let (b, t) = ids.dims2()?;
        let mut x = self.embed_tokens.tensor().index_select(&ids.flatten_all()?, 0)?.reshape((
            b,
            t,
            self.config.hidden_size,
        ))?;
        for (layer, cache) in self.layers.iter().zip(caches.iter_mut()) {
            x = layer.forward_cached(&x, positions, mask, cache, &self.rotary, ctx)?;
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
                        v.as_tensor().unsqueeze(0)?.broadcast_as((b, v.dim(0)?, v.dim(1)?, v.dim(2)?))?.contiguous()
                    };
                    Ok(Some(LayerCache { key: expand(&prefix.key)?, value: expand(&prefix.value)? }))
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

    fn embed(&self, input: &ModelInput) -> Result<Tensor> {
        let (b, t) = input.ids.dims2()?;
        self.embed_tokens.tensor().index_select(&input.ids.flatten_all()?, 0)?.reshape((b, t, self.config.hidden_size))
    }

    /// Vocabulary logits for selected hidden-state rows `[n, hidden]` → `[n, vocab]`.
    pub fn logits(&self, rows: &Tensor, ctx: &ForwardCtx) -> Result<Tensor> {
        match (&self.lm_head, &self.embed_tokens) {
            (Some(head), _) => head.forward(rows, ctx),
            (None, Param::Frozen(embed)) => ops::frozen_linear(rows, &FrozenWeight::dense_once(embed.clone())),
            (None, Param::Trainable(embed)) => ops::trainable_linear(rows, embed.as_tensor(), ctx.grad_sink.as_ref()),
        }
    }

    /// Every base-model parameter with its Hugging Face name; LoRA folded in when present.
    pub fn merged_weights(&self) -> Result<Vec<(String, Tensor)>> {
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
            out.push((
                format!("model.layers.{i}.input_layernorm.weight"),
                layer.input_layernorm.weight.tensor().clone(),
            ));
            out.push((
                format!("model.layers.{i}.post_attention_layernorm.weight"),
                layer.post_attention_layernorm.weight.tensor().clone(),
            ));
        }
        out.push(("model.norm.weight".into(), self.norm.weight.tensor().clone()));
        if let Some(head) = &self.lm_head {
            out.push(("lm_head.weight".into(), head.dense_weight()?));
        }
        Ok(out)
    }

    /// Makes every base parameter trainable (full fine-tuning) and returns them by HF name.
    pub fn make_all_trainable(&mut self) -> Result<Vec<(String, Var)>> {
        let mut vars = vec![("model.embed_tokens.weight".to_string(), self.embed_tokens.make_trainable()?)];
        for (i, layer) in self.layers.iter_mut().enumerate() {
            vars.push((
                format!("model.layers.{i}.input_layernorm.weight"),
                layer.input_layernorm.weight.make_trainable()?,
            ));
            vars.push((
                format!("model.layers.{i}.post_attention_layernorm.weight"),
                layer.post_attention_layernorm.weight.make_trainable()?,
            ));
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

/// Random Hugging Face-named tensors for `config` (norm weights are ones).
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
        t.insert(format!("{p}.input_layernorm.weight"), Tensor::ones(h, DType::F32, &cpu)?);
        t.insert(format!("{p}.post_attention_layernorm.weight"), Tensor::ones(h, DType::F32, &cpu)?);
    }
    t.insert("model.norm.weight".into(), Tensor::ones(h, DType::F32, &cpu)?);
    if !config.tie_word_embeddings {
        t.insert("lm_head.weight".into(), randn(config.vocab_size, h)?);
    }
    Ok(t)
}
