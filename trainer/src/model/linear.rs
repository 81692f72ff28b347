//! The adapter-aware linear layer every projection of the model goes through, and the
//! per-forward context (adapters on/off, dropout randomness, where trained weights'
//! gradients go).

use std::cell::RefCell;
use std::sync::Arc;

use candle_core::quantized::QTensor;
use candle_core::{DType, Result, Tensor, Var};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::tensor::ops::{FrozenWeight, GradSink, frozen_linear, trainable_linear};

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

    /// Turns a frozen parameter into a trainable one (full fine-tuning).
    pub fn make_trainable(&mut self) -> Result<Var> {
        let var = match self {
            Param::Frozen(t) => Var::from_tensor(t)?,
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
}

impl ForwardCtx {
    pub fn eval(adapters: bool) -> Self {
        ForwardCtx { adapters, dropout_rng: None, grad_sink: None }
    }

    /// A training forward: adapters on, seeded dropout, and a gradient sink. Trained weights'
    /// gradients then bypass candle's gradient store, so read them with
    /// [`ForwardCtx::gradients`], not from `loss.backward()` alone.
    pub fn train(seed: u64) -> Self {
        ForwardCtx {
            adapters: true,
            dropout_rng: Some(RefCell::new(StdRng::seed_from_u64(seed))),
            grad_sink: Some(Arc::default()),
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
            in_features,
            out_features,
        }
    }

    /// The base weight as a dense f32 tensor (dequantized if needed).
    pub fn dense_weight(&self) -> Result<Tensor> {
        match &self.weight {
            LinearWeight::Frozen(w) => w.dense(DType::F32),
            LinearWeight::Trainable(v) => Ok(v.as_tensor().clone()),
        }
    }

    /// `y = x Wᵀ + b + scale · dropout(x) Aᵀ Bᵀ` over the last dimension of `x`.
    pub fn forward(&self, x: &Tensor, ctx: &ForwardCtx) -> Result<Tensor> {
        let mut out_dims = x.dims().to_vec();
        let rows = x.elem_count() / self.in_features;
        let x2 = x.reshape((rows, self.in_features))?;
        let mut y = match &self.weight {
            LinearWeight::Frozen(w) => frozen_linear(&x2, w)?,
            LinearWeight::Trainable(w) => trainable_linear(&x2, w.as_tensor(), ctx.grad_sink.as_ref())?,
        };
        if let Some(bias) = &self.bias {
            y = y.broadcast_add(bias.tensor())?;
        }
        if ctx.adapters
            && let Some(lora) = &self.lora
        {
            let dropped = ctx.dropout(&x2, lora.dropout)?;
            let low = trainable_linear(&dropped, lora.a.as_tensor(), ctx.grad_sink.as_ref())?;
            let delta = (trainable_linear(&low, lora.b.as_tensor(), ctx.grad_sink.as_ref())? * lora.scale)?;
            y = (y + delta)?;
        }
        *out_dims.last_mut().expect("input has at least one dimension") = self.out_features;
        y.reshape(out_dims)
    }
}
