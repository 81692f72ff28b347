//! Tokenized sequences (prompt + completion) collated into one forward batch (padded, packed,
//! or as pairs sharing their prompt), with the index tensors that pick out completion tokens
//! and last tokens.

use candle_core::{Device, Result, Tensor};

use crate::data::pairs::{TokenizedPair, TokenizedSequence};
use crate::model::config::ModelConfig;
use crate::model::input::{Layout, ModelInput, common_prefix};

pub struct SequenceBatch {
    pub input: ModelInput,
    /// `[M]` flat row (in the `[rows·T, hidden]` view of the hidden states) of the position whose logits predict each completion token.
    pub predict_rows: Tensor,
    /// `[M]` the completion tokens themselves.
    pub targets: Tensor,
    /// `[S, M]` 0/1 matrix that sums token log-probs into per-sequence totals.
    pub segments: Tensor,
    /// `[S]` flat row of each sequence's last real token.
    pub last_rows: Tensor,
    /// Completion tokens per sequence (IPO's length normalisation).
    pub completion_lens: Vec<usize>,
    /// Tokens of the batch's sequences, padding left out and a shared prefix counted in each
    /// of its two sequences (what tokens/s counts, as TRL does).
    pub real_tokens: usize,
}

impl SequenceBatch {
    /// One batch of all the chosen sequences followed by all the rejected ones: sequence `i`
    /// is pair `i`'s chosen, `n + i` its rejected (both methods score them in one pass). A
    /// pair's chosen and rejected begin with the same prompt, which the cheapest layout
    /// usually computes once for both ([`Layout::SharedPrefix`]).
    pub fn for_pairs(pairs: &[&TokenizedPair], pad_id: u32, config: &ModelConfig, device: &Device) -> Result<Self> {
        let seqs: Vec<TokenizedSequence> =
            pairs.iter().map(|p| p.chosen.clone()).chain(pairs.iter().map(|p| p.rejected.clone())).collect();
        let shared: Vec<usize> = pairs.iter().map(|p| common_prefix(&p.chosen.ids, &p.rejected.ids)).collect();
        Self::with_layout(&seqs, pad_id, cheapest_layout(&seqs, Some(&shared), config), device)
    }

    /// Collates `seqs` in whichever layout (padded or packed) costs `config` fewer FLOPs.
    pub fn new(seqs: &[TokenizedSequence], pad_id: u32, config: &ModelConfig, device: &Device) -> Result<Self> {
        Self::with_layout(seqs, pad_id, cheapest_layout(seqs, None, config), device)
    }

    /// Collates `seqs` in `layout`.
    pub fn with_layout(seqs: &[TokenizedSequence], pad_id: u32, layout: Layout, device: &Device) -> Result<Self> {
        let slices: Vec<&[u32]> = seqs.iter().map(|s| s.ids.as_slice()).collect();
        let t = slices.iter().map(|s| s.len()).max().unwrap_or(0);
        // The row (in the flat `[rows·T]` view) of every position of every sequence.
        let consecutive = |starts: Vec<usize>| -> Vec<Vec<usize>> {
            starts.iter().zip(&slices).map(|(&start, s)| (start..start + s.len()).collect()).collect()
        };
        let (input, rows): (ModelInput, Vec<Vec<usize>>) = match layout {
            Layout::Padded => (
                ModelInput::right_padded(&slices, pad_id, device)?,
                consecutive((0..seqs.len()).map(|b| b * t).collect()),
            ),
            Layout::Packed => (
                ModelInput::packed(&slices, device)?,
                consecutive(
                    slices
                        .iter()
                        .scan(0, |offset, s| {
                            let start = *offset;
                            *offset += s.len();
                            Some(start)
                        })
                        .collect(),
                ),
            ),
            Layout::SharedPrefix => {
                if !seqs.len().is_multiple_of(2) {
                    candle_core::bail!("a shared-prefix batch needs pairs of sequences, got {}", seqs.len());
                }
                let n = seqs.len() / 2;
                let pairs: Vec<(&[u32], &[u32])> = (0..n).map(|i| (slices[i], slices[n + i])).collect();
                let (input, pair_rows) = ModelInput::shared_prefix(&pairs, device)?;
                let (firsts, seconds): (Vec<_>, Vec<_>) = pair_rows.into_iter().map(|[a, b]| (a, b)).unzip();
                (input, firsts.into_iter().chain(seconds).collect())
            }
        };
        let mut predict_rows = Vec::new();
        let mut targets = Vec::new();
        let mut owner = Vec::new();
        let mut last_rows = Vec::with_capacity(seqs.len());
        for (b, seq) in seqs.iter().enumerate() {
            // Position 0 has nothing before it to predict it, so a completion needs a prompt.
            for pos in seq.prompt_len.max(1)..seq.ids.len() {
                predict_rows.push(rows[b][pos - 1] as u32);
                targets.push(seq.ids[pos]);
                owner.push(b);
            }
            last_rows.push(rows[b].last().copied().unwrap_or(0) as u32);
        }
        let m = targets.len();
        let mut segments = vec![0f32; seqs.len() * m];
        for (j, &b) in owner.iter().enumerate() {
            segments[b * m + j] = 1.0;
        }
        Ok(SequenceBatch {
            input,
            predict_rows: Tensor::from_vec(predict_rows, m, device)?,
            targets: Tensor::from_vec(targets, m, device)?,
            segments: Tensor::from_vec(segments, (seqs.len(), m), device)?,
            last_rows: Tensor::from_vec(last_rows, seqs.len(), device)?,
            completion_lens: seqs.iter().map(TokenizedSequence::completion_len).collect(),
            real_tokens: slices.iter().map(|s| s.len()).sum(),
        })
    }
}

/// The layout that costs `config` the fewest FLOPs for `seqs` (`shared`: see [`Layout::cheapest`]).
fn cheapest_layout(seqs: &[TokenizedSequence], shared: Option<&[usize]>, config: &ModelConfig) -> Layout {
    let lengths: Vec<usize> = seqs.iter().map(|s| s.ids.len()).collect();
    let attention_width = (config.num_attention_heads * config.head_dim) as f64;
    // Per token: 2 FLOPs per linear weight; per score: QKᵀ and PV, 2 FLOPs each per dim.
    let linear = config.layer_linear_parameters() as f64;
    Layout::cheapest(&lengths, shared, 2.0 * linear, 4.0 * attention_width * config.num_hidden_layers as f64)
}
