//! What one forward pass consumes: token ids, RoPE positions and the additive attention mask.

use candle_core::{Device, Result, Tensor};

pub struct ModelInput {
    /// `[B, T]` u32 token ids.
    pub ids: Tensor,
    /// `[T]` u32 RoPE positions, shared by all rows.
    pub positions: Tensor,
    /// Additive causal mask (0 or −∞), `[1, 1, 1, T, T]`, broadcast over batch and heads.
    pub mask: Tensor,
}

/// Where each sequence of a batch sits in the model input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One row per sequence, right-padded to the longest.
    Padded,
    /// All sequences back to back in a single row, each attending only to itself.
    Packed,
}

impl Layout {
    /// Picks the layout with fewer FLOPs: padding costs whole wasted rows in every linear
    /// layer, packing costs a larger (block-diagonal) attention matrix.
    /// `row_flops` ≈ 2·(linear parameters per token); `score_flops` ≈ per attention-score cost.
    pub fn cheapest(lengths: &[usize], row_flops: f64, score_flops: f64) -> Layout {
        let b = lengths.len() as f64;
        let t = lengths.iter().copied().max().unwrap_or(0) as f64;
        let n: f64 = lengths.iter().map(|&l| l as f64).sum();
        let padded = b * t * row_flops + b * t * t * score_flops;
        let packed = n * row_flops + n * n * score_flops;
        if packed < padded { Layout::Packed } else { Layout::Padded }
    }
}

impl ModelInput {
    /// Right-padded batch. Padding sits after every real token, so with a causal mask no real
    /// token can attend to it and no padding mask is needed; outputs at padded positions are
    /// simply never read.
    pub fn right_padded(seqs: &[&[u32]], pad_id: u32, device: &Device) -> Result<Self> {
        let t = seqs.iter().map(|s| s.len()).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(seqs.len() * t);
        for s in seqs {
            ids.extend_from_slice(s);
            ids.extend(std::iter::repeat_n(pad_id, t - s.len()));
        }
        let mask: Vec<f32> = (0..t * t)
            .map(|i| {
                let (row, col) = (i / t, i % t);
                if col <= row { 0.0 } else { f32::NEG_INFINITY }
            })
            .collect();
        Ok(ModelInput {
            ids: Tensor::from_vec(ids, (seqs.len(), t), device)?,
            positions: Tensor::arange(0u32, t as u32, device)?,
            mask: Tensor::from_vec(mask, (1, 1, 1, t, t), device)?,
        })
    }

    /// All sequences concatenated into one row with a block-diagonal causal mask and RoPE
    /// positions restarting at 0 for each sequence, so every sequence computes exactly what
    /// it would alone, with no padding rows.
    pub fn packed(seqs: &[&[u32]], device: &Device) -> Result<Self> {
        let n: usize = seqs.iter().map(|s| s.len()).sum();
        let mut ids = Vec::with_capacity(n);
        let mut positions = Vec::with_capacity(n);
        let mut start_of = Vec::with_capacity(n);
        for s in seqs {
            let start = ids.len();
            ids.extend_from_slice(s);
            positions.extend(0..s.len() as u32);
            start_of.extend(std::iter::repeat_n(start, s.len()));
        }
        let mut mask = vec![f32::NEG_INFINITY; n * n];
        for row in 0..n {
            mask[row * n + start_of[row]..=row * n + row].fill(0.0);
        }
        Ok(ModelInput {
            ids: Tensor::from_vec(ids, (1, n), device)?,
            positions: Tensor::from_vec(positions, n, device)?,
            mask: Tensor::from_vec(mask, (1, 1, 1, n, n), device)?,
        })
    }
}
