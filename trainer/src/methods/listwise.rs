//! Listwise training on rankings of K responses (`pairwise-train reward|dpo --listwise`), both
//! with the Plackett–Luce loss ([`plackett_luce_loss`], ties by Breslow's rule):
//! - a reward model: the scalar head's rewards of all K responses are the scores;
//! - listwise DPO (the DPO paper's appendix A.3): the scores are the implicit rewards
//!   β·(π − ref), the reference log-probs computed once with adapters off and cached, as for DPO.
//!
//! For K = 2 without a tie both are exactly their pairwise counterparts (Bradley–Terry, DPO
//! sigmoid). All K responses of a micro-batch's rankings go through the model in one pass.
//! Accuracy is pairwise: the share of differently ranked response pairs that the scores order
//! as the raters did.

use std::path::Path;

use candle_core::{Tensor, Var};

use crate::data::batch::SequenceBatch;
use crate::data::pairs::TokenizedSequence;
use crate::data::rankings::TokenizedRanking;
use crate::data::readout::{completion_log_probs, last_token_rewards};
use crate::methods::dpo::cached_reference_log_probs;
use crate::methods::loss::plackett_luce_loss;
use crate::methods::reward::{new_reward_head, reward_trainable, save_reward_model};
use crate::model::{ForwardCtx, LlamaModel};
use crate::peft::AdapterKind;
use crate::train::config::{DpoLossType, TrainConfig};
use crate::train::prepare::{Prepared, Rankings, count_parameters, prepare_trainable, prepare_with};
use crate::train::run::{Metrics, Objective, RunSummary};

/// How the K scores of each ranking are made from the model.
pub enum ListwiseScores {
    /// `score · h_last`, a reward model's head.
    Reward { score: Var, center_coef: f64 },
    /// β·(π − ref): `reference` holds each ranking's reference log-probs by example index
    /// (train, then eval).
    Dpo { beta: f64, reference: Vec<Vec<f32>> },
}

pub struct ListwiseObjective {
    pub scores: ListwiseScores,
    pub pad_id: u32,
}

impl Objective for ListwiseObjective {
    type Example = TokenizedRanking;

    fn tokens(&self, ranking: &TokenizedRanking) -> usize {
        ranking.seqs.iter().map(|s| s.ids.len()).sum()
    }

    fn batch_loss(
        &self,
        model: &LlamaModel,
        rankings: &[&TokenizedRanking],
        indices: &[usize],
        ctx: &ForwardCtx,
    ) -> anyhow::Result<(Tensor, Metrics)> {
        let device = model.device();
        let seqs: Vec<TokenizedSequence> = rankings.iter().flat_map(|r| r.seqs.iter().cloned()).collect();
        let batch = SequenceBatch::new(&seqs, self.pad_id, &model.config, device)?;
        let all = match &self.scores {
            ListwiseScores::Reward { score, .. } => last_token_rewards(model, &batch, score, ctx)?,
            ListwiseScores::Dpo { beta, reference } => {
                let policy = completion_log_probs(model, &batch, ctx)?;
                let refs: Vec<f32> = indices.iter().flat_map(|&i| reference[i].iter().copied()).collect();
                ((policy - Tensor::from_vec(refs, seqs.len(), device)?)? * *beta)?
            }
        };
        let mut losses = Vec::with_capacity(rankings.len());
        let mut centering = Vec::new();
        let mut m = Metrics::default();
        let mut offset = 0;
        for ranking in rankings {
            let k = ranking.ranks.len();
            let scores = all.narrow(0, offset, k)?;
            offset += k;
            losses.push(plackett_luce_loss(&scores, &ranking.ranks)?);
            if let ListwiseScores::Reward { center_coef, .. } = &self.scores
                && *center_coef != 0.0
            {
                centering.push(scores.sum_all()?.sqr()?);
            }
            add_ranking_metrics(&mut m, &scores.detach().to_vec1::<f32>()?, &ranking.ranks);
        }
        let mut loss = Tensor::stack(&losses, 0)?.mean_all()?;
        if let ListwiseScores::Reward { center_coef, .. } = &self.scores
            && !centering.is_empty()
        {
            loss = (loss + (Tensor::stack(&centering, 0)?.mean_all()? * *center_coef)?)?;
        }
        Ok((loss, m))
    }

    fn extra_vars(&self) -> Vec<(String, Var)> {
        match &self.scores {
            ListwiseScores::Reward { score, .. } => vec![("score.weight".into(), score.clone())],
            ListwiseScores::Dpo { .. } => Vec::new(),
        }
    }

    fn save(&self, model: &LlamaModel, config: &TrainConfig, dir: &Path) -> anyhow::Result<()> {
        match &self.scores {
            ListwiseScores::Reward { score, .. } => save_reward_model(model, config, dir, score),
            ListwiseScores::Dpo { .. } => {
                crate::methods::dpo::save_policy(model, config, dir, crate::peft::PeftTask::CausalLm, None)
            }
        }
    }

    fn accuracy_metric(&self) -> &'static str {
        "accuracy"
    }
}

/// Pairwise accuracy (one value per differently ranked pair), whether the top score is a
/// best-ranked response, and the mean score of the best and of the worst ranked responses.
fn add_ranking_metrics(m: &mut Metrics, scores: &[f32], ranks: &[f64]) {
    let k = ranks.len();
    let ordered: Vec<f32> = (0..k)
        .flat_map(|i| (0..k).map(move |j| (i, j)))
        .filter(|&(i, j)| ranks[i] < ranks[j])
        .map(|(i, j)| f32::from(u8::from(scores[i] > scores[j])))
        .collect();
    m.add("accuracy", &ordered);
    let best = ranks.iter().copied().fold(f64::INFINITY, f64::min);
    let worst = ranks.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let top = (0..k).max_by(|&a, &b| scores[a].total_cmp(&scores[b])).expect("a ranking has responses");
    m.add("top1_accuracy", &[f32::from(u8::from(ranks[top] == best))]);
    let mean_at = |level: f64| {
        let v: Vec<f32> = (0..k).filter(|&i| ranks[i] == level).map(|i| scores[i]).collect();
        v.iter().sum::<f32>() / v.len() as f32
    };
    if best < worst {
        m.add("rewards/best", &[mean_at(best)]);
        m.add("rewards/worst", &[mean_at(worst)]);
        m.add("rewards/margins", &[mean_at(best) - mean_at(worst)]);
    }
}

fn report(what: &str, config: &TrainConfig, prepared: &Prepared<TokenizedRanking>, trainable: &[(String, Var)]) {
    let responses = |set: &[TokenizedRanking]| set.iter().map(|r| r.ranks.len()).sum::<usize>();
    eprintln!(
        "{what}: {} train / {} eval rankings ({} / {} responses), {} trainable parameters, batch {} rankings",
        prepared.train.len(),
        prepared.eval.len(),
        responses(&prepared.train),
        responses(&prepared.eval),
        count_parameters(trainable),
        config.batch_size
    );
}

/// `pairwise-train reward --listwise`: a reward model trained on rankings.
pub fn run_listwise_reward(config: &TrainConfig) -> anyhow::Result<RunSummary> {
    let mut prepared = prepare_with(config, &Rankings)?;
    let trainable = reward_trainable(&mut prepared.model, config)?;
    report("listwise reward model (Plackett–Luce)", config, &prepared, &trainable);
    let scores = ListwiseScores::Reward {
        score: new_reward_head(&prepared.model, config.seed)?,
        center_coef: config.center_rewards_coef,
    };
    finish(ListwiseObjective { scores, pad_id: prepared.tokenizer.pad_id }, prepared, trainable, config)
}

/// `pairwise-train dpo --listwise`: listwise DPO on rankings against the frozen base.
pub fn run_listwise_dpo(config: &TrainConfig) -> anyhow::Result<RunSummary> {
    if config.loss_type != DpoLossType::Sigmoid || config.label_smoothing != 0.0 || config.sft_weight != 0.0 {
        anyhow::bail!(
            "--listwise DPO is the Plackett–Luce form of the sigmoid loss: leave --loss-type sigmoid, \
             --label-smoothing 0 and --sft-weight 0 (ties in a ranking are handled by the loss itself)"
        );
    }
    let mut prepared = prepare_with(config, &Rankings)?;
    let seqs: Vec<TokenizedSequence> =
        prepared.train.iter().chain(&prepared.eval).flat_map(|r| r.seqs.iter().cloned()).collect();
    let flat = cached_reference_log_probs(
        &prepared.model,
        &seqs,
        prepared.tokenizer.pad_id,
        config.batch_size * 4,
        &config.output.join("ref-cache"),
    )?;
    let mut reference = Vec::with_capacity(prepared.train.len() + prepared.eval.len());
    let mut rest = flat.as_slice();
    for ranking in prepared.train.iter().chain(&prepared.eval) {
        let (own, tail) = rest.split_at(ranking.seqs.len());
        reference.push(own.to_vec());
        rest = tail;
    }
    let trainable = prepare_trainable(&mut prepared.model, config)?;
    report(&format!("listwise DPO (Plackett–Luce, beta {})", config.beta), config, &prepared, &trainable);
    let scores = ListwiseScores::Dpo { beta: config.beta, reference };
    finish(ListwiseObjective { scores, pad_id: prepared.tokenizer.pad_id }, prepared, trainable, config)
}

fn finish(
    objective: ListwiseObjective,
    prepared: Prepared<TokenizedRanking>,
    trainable: Vec<(String, Var)>,
    config: &TrainConfig,
) -> anyhow::Result<RunSummary> {
    let Prepared { tokenizer, model, train, eval } = prepared;
    let summary = crate::train::run::run(&objective, &model, trainable, &train, &eval, config)?;
    if config.adapter == AdapterKind::Full {
        crate::model::merge::write_rebuilt_tokenizer(&tokenizer, &config.model, &config.output)?;
    }
    Ok(summary)
}
