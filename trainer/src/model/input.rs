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
    /// Pairs of sequences in a single row with their common first tokens (a pair's prompt)
    /// once, see [`ModelInput::shared_prefix`]; sequence `i` and `i + S/2` are a pair.
    SharedPrefix,
}

impl Layout {
    /// Picks the layout with fewer FLOPs: padding costs whole wasted rows in every linear
    /// layer, packing costs a larger (block-diagonal) attention matrix.
    /// `row_flops` ≈ 2·(linear parameters per token); `score_flops` ≈ per attention-score cost.
    /// `shared`, when the sequences are pairs (`i` and `i + S/2`), holds each pair's common
    /// prefix length: sharing it saves those rows, in a single row like packing.
    pub fn cheapest(lengths: &[usize], shared: Option<&[usize]>, row_flops: f64, score_flops: f64) -> Layout {
        let b = lengths.len() as f64;
        let t = lengths.iter().copied().max().unwrap_or(0) as f64;
        let n: f64 = lengths.iter().map(|&l| l as f64).sum();
        let padded = b * t * row_flops + b * t * t * score_flops;
        let packed = n * row_flops + n * n * score_flops;
        let unshared = n - shared.map_or(0, |s| s.iter().sum::<usize>()) as f64;
        let shared_cost = unshared * row_flops + unshared * unshared * score_flops;
        if shared_cost < packed.min(padded) {
            Layout::SharedPrefix
        } else if packed < padded {
            Layout::Packed
        } else {
            Layout::Padded
        }
    }
}

/// How many first tokens two sequences have in common.
pub fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
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

    /// Pairs of sequences in a single row, each pair's common first tokens once: the prefix,
    /// then the rest of the first sequence, then the rest of the second. The second's own
    /// tokens see the prefix and themselves but not the first's rest, and their RoPE
    /// positions continue the prefix's, so every sequence computes exactly what it would
    /// alone (a sliding window measures the same distances) while the prefix, a chosen and a
    /// rejected response's shared prompt, is computed once for both. Returns the input and,
    /// per pair, the row of each position of its first and of its second sequence.
    pub fn shared_prefix(pairs: &[(&[u32], &[u32])], device: &Device) -> Result<(Self, Vec<[Vec<usize>; 2]>)> {
        let mut ids = Vec::new();
        let mut positions = Vec::new();
        // Per row, the two ranges of rows it may attend to (the second one often empty).
        let mut visible: Vec<[(usize, usize); 2]> = Vec::new();
        let mut rows = Vec::with_capacity(pairs.len());
        for &(first, second) in pairs {
            let start = ids.len();
            let shared = common_prefix(first, second);
            for (pos, &id) in first.iter().enumerate() {
                ids.push(id);
                positions.push(pos as u32);
                visible.push([(start, start + pos + 1), (0, 0)]);
            }
            let rest = ids.len();
            for (offset, &id) in second[shared..].iter().enumerate() {
                ids.push(id);
                positions.push((shared + offset) as u32);
                visible.push([(start, start + shared), (rest, rest + offset + 1)]);
            }
            rows.push([
                (start..start + first.len()).collect(),
                (start..start + shared).chain(rest..rest + second.len() - shared).collect(),
            ]);
        }
        let n = ids.len();
        let mut mask = vec![f32::NEG_INFINITY; n * n];
        for (row, ranges) in visible.iter().enumerate() {
            for &(from, to) in ranges {
                mask[row * n + from..row * n + to].fill(0.0);
            }
        }
        let input = ModelInput {
            ids: Tensor::from_vec(ids, (1, n), device)?,
            positions: Tensor::from_vec(positions, n, device)?,
            mask: Tensor::from_vec(mask, (1, 1, 1, n, n), device)?,
        };
        Ok((input, rows))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_prefix_rows_positions_and_mask() {
        // Prefix [1, 2]; first [1, 2, 3, 4], second [1, 2, 5].
        let first: &[u32] = &[1, 2, 3, 4];
        let second: &[u32] = &[1, 2, 5];
        let (input, rows) = ModelInput::shared_prefix(&[(first, second)], &Device::Cpu).unwrap();
        assert_eq!(input.ids.to_vec2::<u32>().unwrap(), vec![vec![1, 2, 3, 4, 5]]);
        assert_eq!(input.positions.to_vec1::<u32>().unwrap(), vec![0, 1, 2, 3, 2]);
        assert_eq!(rows, vec![[vec![0, 1, 2, 3], vec![0, 1, 4]]]);
        let visible: Vec<Vec<bool>> = input
            .mask
            .reshape((5, 5))
            .unwrap()
            .to_vec2::<f32>()
            .unwrap()
            .iter()
            .map(|row| row.iter().map(|&m| m == 0.0).collect())
            .collect();
        let (o, x) = (true, false);
        assert_eq!(
            visible,
            vec![
                vec![o, x, x, x, x],
                vec![o, o, x, x, x],
                vec![o, o, o, x, x],
                vec![o, o, o, o, x],
                // The second's own token sees the prefix and itself, not the first's rest.
                vec![o, o, x, x, o],
            ]
        );
    }

    #[test]
    fn sharing_a_prefix_is_chosen_when_it_saves_rows() {
        let lengths = [30, 30, 20, 20];
        assert_eq!(Layout::cheapest(&lengths, Some(&[10, 10]), 1e6, 1e3), Layout::SharedPrefix);
        assert_eq!(Layout::cheapest(&lengths, Some(&[0, 0]), 1e6, 1e3), Layout::Packed);
        assert_eq!(Layout::cheapest(&[30, 30], None, 1e6, 1e6), Layout::Padded);
        assert_eq!(common_prefix(&[1, 2, 3], &[1, 2, 4, 5]), 2);
    }
}
