//! Reward modelling (`pairwise-train reward`): the transformer plus a scalar head on the last
//! non-padding token, trained with the Bradley–Terry loss (optional margin from rater
//! strength, soft labels from rater agreement, reward centering). Reports held-out accuracy
//! and mean margin under TRL's metric names; the trained head is read back by
//! [`load_reward_head`].

use std::path::Path;

use anyhow::Context;
use candle_core::{Device, Tensor, Var};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

use crate::data::batch::SequenceBatch;
use crate::data::pairs::TokenizedPair;
use crate::data::readout::last_token_rewards;
use crate::methods::loss::bradley_terry_loss;
use crate::model::{ForwardCtx, LlamaModel};
use crate::peft::{AdapterKind, PeftTask};
use crate::train::config::TrainConfig;
use crate::train::run::{Metrics, Objective};

pub struct RewardObjective {
    /// The scalar head `[1, hidden]` (`score.weight` in `LlamaForSequenceClassification`).
    pub score: Var,
    pub center_coef: f64,
    pub use_rater_signal: bool,
    pub strength_margin: f64,
    pub pad_id: u32,
}

impl RewardObjective {
    /// The objective with a fresh head ([`new_reward_head`]).
    pub fn new(model: &LlamaModel, config: &TrainConfig, pad_id: u32) -> anyhow::Result<Self> {
        Ok(RewardObjective {
            score: new_reward_head(model, config.seed)?,
            center_coef: config.center_rewards_coef,
            use_rater_signal: config.use_rater_signal,
            strength_margin: config.strength_margin,
            pad_id,
        })
    }
}

impl Objective for RewardObjective {
    type Example = TokenizedPair;

    fn tokens(&self, pair: &TokenizedPair) -> usize {
        pair.chosen.ids.len() + pair.rejected.ids.len()
    }

    fn batch_loss(
        &self,
        model: &LlamaModel,
        pairs: &[&TokenizedPair],
        _indices: &[usize],
        ctx: &ForwardCtx,
    ) -> anyhow::Result<(Tensor, Metrics)> {
        let n = pairs.len();
        let device = model.device();
        let batch = SequenceBatch::for_pairs(pairs, self.pad_id, &model.config, device)?;
        let rewards = last_token_rewards(model, &batch, &self.score, ctx)?;
        let chosen = rewards.narrow(0, 0, n)?;
        let rejected = rewards.narrow(0, n, n)?;
        let (margin, soft) = if self.use_rater_signal {
            let margin: Vec<f32> = pairs.iter().map(|p| p.signal.margin(self.strength_margin) as f32).collect();
            let soft: Vec<f32> = pairs.iter().map(|p| p.signal.label_smoothing() as f32).collect();
            (Some(Tensor::from_vec(margin, n, device)?), Some(Tensor::from_vec(soft, n, device)?))
        } else {
            (None, None)
        };
        let loss = bradley_terry_loss(&chosen, &rejected, margin.as_ref(), soft.as_ref(), self.center_coef)?;
        let c = chosen.detach().to_vec1::<f32>()?;
        let r = rejected.detach().to_vec1::<f32>()?;
        let mut m = Metrics::default();
        m.add("accuracy", &c.iter().zip(&r).map(|(c, r)| f32::from(u8::from(c > r))).collect::<Vec<_>>());
        m.add("margin", &c.iter().zip(&r).map(|(c, r)| c - r).collect::<Vec<_>>());
        m.add("rewards/chosen", &c);
        m.add("rewards/rejected", &r);
        Ok((loss, m))
    }

    fn extra_vars(&self) -> Vec<(String, Var)> {
        vec![("score.weight".into(), self.score.clone())]
    }

    fn save(&self, model: &LlamaModel, config: &TrainConfig, dir: &Path) -> anyhow::Result<()> {
        save_reward_model(model, config, dir, &self.score)
    }

    fn accuracy_metric(&self) -> &'static str {
        "accuracy"
    }
}

/// A fresh scalar head `[1, hidden]` initialised like transformers (normal, std 0.02), seeded.
pub fn new_reward_head(model: &LlamaModel, seed: u64) -> anyhow::Result<Var> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x5c0e);
    let normal = Normal::new(0.0f32, 0.02)?;
    let h = model.config.hidden_size;
    let init: Vec<f32> = (0..h).map(|_| normal.sample(&mut rng)).collect();
    Ok(Var::from_tensor(&Tensor::from_vec(init, (1, h), model.device())?)?)
}

/// Writes a trained reward model: the policy part (adapter or full model, with the head in
/// the PEFT adapter's `modules_to_save`) and the head alone as `reward_head.safetensors`.
pub fn save_reward_model(model: &LlamaModel, config: &TrainConfig, dir: &Path, score: &Var) -> anyhow::Result<()> {
    crate::methods::dpo::save_policy(model, config, dir, PeftTask::SequenceClassification, Some(score.as_tensor()))?;
    crate::tensor::io::save_safetensors(
        &dir.join("reward_head.safetensors"),
        &[("score.weight".into(), score.as_tensor().clone())],
    )
}

/// `pairwise-train reward`: prepares data and model, trains the reward model (on rankings with
/// `--listwise`).
pub fn run_reward(config: &TrainConfig) -> anyhow::Result<crate::train::run::RunSummary> {
    if config.listwise {
        return crate::methods::listwise::run_listwise_reward(config);
    }
    let crate::train::prepare::Prepared { tokenizer, mut model, train, eval } = crate::train::prepare::prepare(config)?;
    let trainable = reward_trainable(&mut model, config)?;
    let objective = RewardObjective::new(&model, config, tokenizer.pad_id)?;
    eprintln!(
        "reward model: {} train / {} eval pairs, {} trainable parameters (+{} head)",
        train.len(),
        eval.len(),
        crate::train::prepare::count_parameters(&trainable),
        model.config.hidden_size
    );
    let summary = crate::train::run::run(&objective, &model, trainable, &train, &eval, config)?;
    if config.adapter == AdapterKind::Full {
        crate::model::merge::write_rebuilt_tokenizer(&tokenizer, &config.model, &config.output)?;
    }
    Ok(summary)
}

/// The trainable parameters of a reward model: like [`crate::train::prepare::prepare_trainable`] but
/// without the lm_head, which a reward model never uses (as `LlamaForSequenceClassification`
/// has none).
pub fn reward_trainable(model: &mut LlamaModel, config: &TrainConfig) -> anyhow::Result<Vec<(String, Var)>> {
    let mut trainable = crate::train::prepare::prepare_trainable(model, config)?;
    trainable.retain(|(name, _)| name != "lm_head.weight");
    Ok(trainable)
}

/// The `score.weight` `[1, hidden]` of a reward head file.
pub fn load_reward_head(path: &Path, device: &Device) -> anyhow::Result<Tensor> {
    candle_core::safetensors::load(path, device)
        .with_context(|| format!("reading {}", path.display()))?
        .remove("score.weight")
        .with_context(|| format!("{} has no score.weight", path.display()))
}
