//! The adapter-aware linear layer every projection of the model goes through, and the
//! per-forward context (adapters on/off, dropout randomness, where trained weights'
//! gradients go, which served adapter each batch row uses).

use std::cell::RefCell;
use std::sync::Arc;

use candle_core::quantized::QTensor;
use candle_core::{DType, Device, Result, Tensor, Var};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::tensor::ops::{FrozenWeight, GradSink, frozen_linear, trainable_linear, widen};
use crate::tensor::packed::PackedWeight;

/// A model parameter that is either frozen (plain tensor) or trained (a `Var`).
#[derive(Clone)]
pub enum Param {
    Frozen(Tensor),
    Trainable(Var),
}

impl Param {
    pub fn tensor(&self) -> &Tensor {
        match self {
            Param::Frozen(t) => t,
            Param::Trainable(v) => v.as_tensor(),
        }
    }

    /// Turns a frozen parameter into a trainable one (full fine-tuning); a half-precision one
    /// gets an f32 master copy.
    pub fn make_trainable(&mut self) -> Result<Var> {
        let var = match self {
            Param::Frozen(t) => Var::from_tensor(&widen(t)?)?,
            Param::Trainable(v) => return Ok(v.clone()),
        };
        *self = Param::Trainable(var.clone());
        Ok(var)
    }
}

/// The weight of a linear layer: frozen (dense or quantized, through [`frozen_linear`]) or
/// trainable (through [`trainable_linear`], which also computes the weight gradient).
#[derive(Clone)]
pub enum LinearWeight {
    Frozen(FrozenWeight),
    Trainable(Var),
}

/// Low-rank adapter `ΔW = scale · B · A` as PEFT defines it: `A` is `[r, in]`, `B` is `[out, r]`.
#[derive(Clone)]
pub struct LoraAdapter {
    pub a: Var,
    pub b: Var,
    pub scale: f64,
    pub dropout: f32,
}

/// Settings of one forward pass.
pub struct ForwardCtx {
    /// Run adapters (LoRA, prefixes); `false` gives the reference model.
    pub adapters: bool,
    /// Randomness for dropout; `None` disables dropout (evaluation).
    pub dropout_rng: Option<RefCell<StdRng>>,
    /// Where trained weights' gradients go in the backward of a training forward (see
    /// [`GradSink`]); read them with [`ForwardCtx::gradients`].
    pub grad_sink: Option<Arc<GradSink>>,
    /// Serving several adapters in one batch: each row's slot in the layers'
    /// [`AdaptedLinear::bank`], used instead of [`AdaptedLinear::lora`] when set.
    pub row_adapters: Option<RowAdapters>,
}

/// Which adapter of the [`AdaptedLinear::bank`] each batch row runs (`None`: the base model),
/// grouped so a layer computes each adapter's delta once for all of its rows.
pub struct RowAdapters {
    /// `(slot, flat row indices)` for every slot in use; rows of the base model are absent.
    groups: Vec<(usize, Tensor)>,
    /// Every row uses this one slot: its delta covers the whole input, no gather needed.
    all: Option<usize>,
}

impl RowAdapters {
    /// `slots[b]` for batch row `b` of an input `[B, T, ..]` (every token of a row uses its
    /// row's adapter).
    pub fn new(slots: &[Option<usize>], tokens_per_row: usize, device: &Device) -> Result<Self> {
        let all = match slots.first() {
            Some(&Some(first)) if slots.iter().all(|s| *s == Some(first)) => Some(first),
            _ => None,
        };
        let mut used: Vec<usize> = slots.iter().flatten().copied().collect();
        used.sort_unstable();
        used.dedup();
        let groups = used
            .into_iter()
            .map(|slot| {
                let rows: Vec<u32> = slots
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| **s == Some(slot))
                    .flat_map(|(b, _)| (b * tokens_per_row..(b + 1) * tokens_per_row).map(|r| r as u32))
                    .collect();
                let n = rows.len();
                Ok((slot, Tensor::from_vec(rows, n, device)?))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(RowAdapters { groups, all })
    }
}

impl ForwardCtx {
    pub fn eval(adapters: bool) -> Self {
        ForwardCtx { adapters, dropout_rng: None, grad_sink: None, row_adapters: None }
    }

    /// A training forward: adapters on, seeded dropout, and a gradient sink. Trained weights'
    /// gradients then bypass candle's gradient store, so read them with
    /// [`ForwardCtx::gradients`], not from `loss.backward()` alone.
    pub fn train(seed: u64) -> Self {
        ForwardCtx {
            adapters: true,
            dropout_rng: Some(RefCell::new(StdRng::seed_from_u64(seed))),
            grad_sink: Some(Arc::default()),
            row_adapters: None,
        }
    }

    /// Backpropagates `loss` (computed in this context) and returns the gradient of each of
    /// `vars`, `None` where none flowed.
    pub fn gradients(&self, loss: &Tensor, vars: &[Var]) -> Result<Vec<Option<Tensor>>> {
        let store = loss.backward()?;
        match &self.grad_sink {
            Some(sink) => sink.gradients(&store, vars),
            None => Ok(vars.iter().map(|v| store.get(v).map(Tensor::detach)).collect()),
        }
    }

    /// Inverted dropout with a seeded mask, so runs repeat exactly.
    fn dropout(&self, x: &Tensor, p: f32) -> Result<Tensor> {
        let Some(rng) = &self.dropout_rng else {
            return Ok(x.clone());
        };
        if p <= 0.0 {
            return Ok(x.clone());
        }
        let keep = 1.0 / (1.0 - p);
        let mut rng = rng.borrow_mut();
        let mask: Vec<f32> = (0..x.elem_count()).map(|_| if rng.random::<f32>() < p { 0.0 } else { keep }).collect();
        let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
        x * mask
    }
}

#[derive(Clone)]
pub struct AdaptedLinear {
    pub weight: LinearWeight,
    pub bias: Option<Param>,
    pub lora: Option<LoraAdapter>,
    /// Adapters loaded side by side for serving, by slot (`None`: a removed one); a forward
    /// with [`ForwardCtx::row_adapters`] runs them instead of `lora`.
    pub bank: Vec<Option<LoraAdapter>>,
    pub in_features: usize,
    pub out_features: usize,
}

impl AdaptedLinear {
    pub fn frozen(weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        let (out_features, in_features) = weight.dims2()?;
        Ok(AdaptedLinear {
            weight: LinearWeight::Frozen(FrozenWeight::dense_kept(weight)),
            bias: bias.map(Param::Frozen),
            lora: None,
            bank: Vec::new(),
            in_features,
            out_features,
        })
    }

    /// A frozen linear layer whose `[out, in]` weight is stored quantized (QLoRA's base).
    pub fn frozen_quantized(
        weight: QTensor,
        (out_features, in_features): (usize, usize),
        bias: Option<Tensor>,
    ) -> Self {
        AdaptedLinear {
            weight: LinearWeight::Frozen(FrozenWeight::Quantized(Arc::new(weight))),
            bias: bias.map(Param::Frozen),
            lora: None,
            bank: Vec::new(),
            in_features,
            out_features,
        }
    }

    /// This layer with its frozen weight's llama.cpp blocks beside it, for decode steps.
    pub fn with_packed(mut self, packed: PackedWeight) -> Self {
        if let LinearWeight::Frozen(w) = self.weight {
            self.weight = LinearWeight::Frozen(w.with_packed(Arc::new(packed)));
        }
        self
    }

    /// The base weight as a dense f32 tensor (dequantized if needed).
    pub fn dense_weight(&self) -> Result<Tensor> {
        match &self.weight {
            LinearWeight::Frozen(w) => w.dense(DType::F32),
            LinearWeight::Trainable(v) => Ok(v.as_tensor().clone()),
        }
    }

    /// `y = x Wᵀ + b + scale · dropout(x) Aᵀ Bᵀ` over the last dimension of `x`, in `x`'s
    /// dtype: trained (f32) parameters are rounded to it where they are read, and their
    /// gradients come back through the rounding in f32.
    pub fn forward(&self, x: &Tensor, ctx: &ForwardCtx) -> Result<Tensor> {
        let mut out_dims = x.dims().to_vec();
        let rows = x.elem_count() / self.in_features;
        let x2 = x.reshape((rows, self.in_features))?;
        let mut y = match &self.weight {
            LinearWeight::Frozen(w) => frozen_linear(&x2, w)?,
            LinearWeight::Trainable(w) => trainable_linear(&x2, &w.to_dtype(x.dtype())?, ctx.grad_sink.as_ref())?,
        };
        if let Some(bias) = &self.bias {
            y = y.broadcast_add(&bias.tensor().to_dtype(y.dtype())?)?;
        }
        if let Some(rows) = ctx.row_adapters.as_ref().filter(|_| ctx.adapters) {
            y = self.add_bank_deltas(&x2, y, rows)?;
        } else if ctx.adapters
            && let Some(lora) = &self.lora
        {
            let dropped = ctx.dropout(&x2, lora.dropout)?;
            y = (y + Self::lora_delta(&dropped, lora, ctx.grad_sink.as_ref())?)?;
        }
        *out_dims.last_mut().expect("input has at least one dimension") = self.out_features;
        y.reshape(out_dims)
    }

    /// `scale · x Aᵀ Bᵀ` for rows `x` `[n, in]`.
    fn lora_delta(x: &Tensor, lora: &LoraAdapter, sink: Option<&Arc<GradSink>>) -> Result<Tensor> {
        let low = trainable_linear(x, &lora.a.to_dtype(x.dtype())?, sink)?;
        trainable_linear(&low, &lora.b.to_dtype(x.dtype())?, sink)? * lora.scale
    }

    /// The base output `y` plus each row's own bank adapter delta (inference only): the base
    /// matmul ran once for the whole batch, the low-rank deltas run per adapter on its rows.
    fn add_bank_deltas(&self, x: &Tensor, mut y: Tensor, rows: &RowAdapters) -> Result<Tensor> {
        let adapter = |slot: usize| self.bank.get(slot).and_then(Option::as_ref);
        if let Some(lora) = rows.all.and_then(adapter) {
            return y + Self::lora_delta(x, lora, None)?;
        }
        for (slot, index) in &rows.groups {
            if let Some(lora) = adapter(*slot) {
                let delta = Self::lora_delta(&x.index_select(index, 0)?, lora, None)?;
                y = y.index_add(index, &delta, 0)?;
            }
        }
        Ok(y)
    }
}
