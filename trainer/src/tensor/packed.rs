//! Frozen weights kept in llama.cpp's block formats (Q4_0, Q4_1, Q8_0) for the matmuls of a
//! few rows: decoding one token per sequence reads every weight once per token, so with the
//! f32 copy a step costs the time to stream 4 bytes a weight from memory, while these blocks
//! are 0.75 (4-bit) or 1.125 (8-bit) bytes a weight with their scales unpacked to f32. The
//! activations stay f32 (unlike llama.cpp and candle's `QMatMul`, which round them to 8
//! bits), so the result is the dequantized f32 matmul up to the order of the additions.
//!
//! Each block's 32 quantized values are widened to floats once, multiplied with the block's
//! inputs of every input row, and the sum scaled by the block's scale; a 4-bit block's `min`
//! times the inputs' block sum is added after. AVX2 + FMA (with software prefetch, which
//! doubles the speed once the weights come from memory) where the CPU has them, a portable
//! loop elsewhere; the output rows are split over rayon's pool.

use candle_core::quantized::GgmlDType;
use half::f16;
use rayon::prelude::*;

/// Weights a block holds (all three formats).
const BLOCK: usize = 32;

/// The most input rows [`PackedWeight::matmul`] is used for; more go to the dense gemm, which
/// is faster once a step multiplies enough rows to be bound by arithmetic, not memory
/// (BENCHMARKS.md, "Serving").
pub const PACKED_MAX_ROWS: usize = 8;

/// A `[rows, cols]` weight in blocks of 32 along `cols`, its scales unpacked to f32.
pub struct PackedWeight {
    rows: usize,
    cols: usize,
    blocks: Blocks,
}

enum Blocks {
    /// `w = scale · q + min` with `q` in 0..16, two a byte: a block's low nibbles are its
    /// first 16 weights, the high nibbles the last 16 (Q4_0 is this with `min = -8 · scale`).
    Nibbles { scales: Vec<f32>, mins: Vec<f32>, quants: Vec<u8> },
    /// `w = scale · q` with `q` in -128..128.
    Bytes { scales: Vec<f32>, quants: Vec<i8> },
}

fn f16_at(raw: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([raw[at], raw[at + 1]]).to_f32()
}

/// Calls the AVX2 kernel `$kernel` specialised for `$rows` input rows (1 to 8), with the
/// accumulators per row that suit that count (see [`avx2`]).
#[cfg(target_arch = "x86_64")]
macro_rules! by_row_count {
    ($kernel:ident, $rows:expr, $($arg:expr),*) => {
        match $rows {
            1 => avx2::$kernel::<1, 4>($($arg),*),
            2 => avx2::$kernel::<2, 4>($($arg),*),
            3 => avx2::$kernel::<3, 2>($($arg),*),
            4 => avx2::$kernel::<4, 2>($($arg),*),
            5 => avx2::$kernel::<5, 1>($($arg),*),
            6 => avx2::$kernel::<6, 1>($($arg),*),
            7 => avx2::$kernel::<7, 1>($($arg),*),
            _ => avx2::$kernel::<8, 1>($($arg),*),
        }
    };
}

impl PackedWeight {
    /// The weight from a GGUF tensor's raw data (ggml's block layout, rows one after the
    /// other), or `None` for a format kept only as f32.
    pub fn from_ggml(dtype: GgmlDType, raw: &[u8], (rows, cols): (usize, usize)) -> Option<Self> {
        if cols % BLOCK != 0 {
            return None;
        }
        let n = rows * cols / BLOCK;
        let blocks = match dtype {
            GgmlDType::Q4_0 | GgmlDType::Q4_1 => {
                // Q4_0: f16 scale, 16 bytes. Q4_1: f16 scale, f16 min, 16 bytes.
                let (size, quants_at) = if dtype == GgmlDType::Q4_0 { (18, 2) } else { (20, 4) };
                if raw.len() != n * size {
                    return None;
                }
                let mut scales = Vec::with_capacity(n);
                let mut mins = Vec::with_capacity(n);
                let mut quants = Vec::with_capacity(n * 16);
                for block in raw.chunks_exact(size) {
                    let scale = f16_at(block, 0);
                    scales.push(scale);
                    mins.push(if dtype == GgmlDType::Q4_0 { -8.0 * scale } else { f16_at(block, 2) });
                    quants.extend_from_slice(&block[quants_at..]);
                }
                Blocks::Nibbles { scales, mins, quants }
            }
            GgmlDType::Q8_0 => {
                if raw.len() != n * 34 {
                    return None;
                }
                let mut scales = Vec::with_capacity(n);
                let mut quants = Vec::with_capacity(n * BLOCK);
                for block in raw.chunks_exact(34) {
                    scales.push(f16_at(block, 0));
                    quants.extend(block[2..].iter().map(|&b| b as i8));
                }
                Blocks::Bytes { scales, quants }
            }
            _ => return None,
        };
        Some(PackedWeight { rows, cols, blocks })
    }

    pub fn dims(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// The weight with its rows reordered: row `i` of the result is row `order[i]` of this one.
    pub fn reorder_rows(&self, order: &[usize]) -> Self {
        assert_eq!(order.len(), self.rows, "one source row per row");
        let per_row = self.cols / BLOCK;
        let gather = |values: &[f32]| -> Vec<f32> {
            order.iter().flat_map(|&r| &values[r * per_row..(r + 1) * per_row]).copied().collect()
        };
        let blocks = match &self.blocks {
            Blocks::Nibbles { scales, mins, quants } => Blocks::Nibbles {
                scales: gather(scales),
                mins: gather(mins),
                quants: order
                    .iter()
                    .flat_map(|&r| &quants[r * per_row * 16..(r + 1) * per_row * 16])
                    .copied()
                    .collect(),
            },
            Blocks::Bytes { scales, quants } => Blocks::Bytes {
                scales: gather(scales),
                quants: order
                    .iter()
                    .flat_map(|&r| &quants[r * per_row * BLOCK..(r + 1) * per_row * BLOCK])
                    .copied()
                    .collect(),
            },
        };
        PackedWeight { rows: self.rows, cols: self.cols, blocks }
    }

    /// The weight as f32, row-major `[rows, cols]`.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        for (b, block) in out.chunks_exact_mut(BLOCK).enumerate() {
            match &self.blocks {
                Blocks::Nibbles { scales, mins, quants } => {
                    let q = &quants[b * 16..(b + 1) * 16];
                    for j in 0..16 {
                        block[j] = scales[b] * (q[j] & 15) as f32 + mins[b];
                        block[j + 16] = scales[b] * (q[j] >> 4) as f32 + mins[b];
                    }
                }
                Blocks::Bytes { scales, quants } => {
                    for (w, &q) in block.iter_mut().zip(&quants[b * BLOCK..(b + 1) * BLOCK]) {
                        *w = scales[b] * q as f32;
                    }
                }
            }
        }
        out
    }

    /// `x · Wᵀ` for `x` `[m, cols]` row-major, `m` at most [`PACKED_MAX_ROWS`]: `[m, rows]`.
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        assert!(m <= PACKED_MAX_ROWS && x.len() == m * self.cols, "packed matmul of {m} rows");
        let simd = simd_available();
        // Each input row's sum over each block, for the `min` term of 4-bit blocks:
        // Σ (scale·q + min)·x = scale · Σ q·x + min · Σ x.
        let block_sums: Vec<f32> = match self.blocks {
            Blocks::Nibbles { .. } => x.chunks_exact(BLOCK).map(|b| b.iter().sum()).collect(),
            Blocks::Bytes { .. } => Vec::new(),
        };
        // Output rows by weight row (`[rows, m]`), in chunks a thread each.
        let chunk = self.rows.div_ceil(4 * rayon::current_num_threads()).max(16);
        let mut by_row = vec![0f32; self.rows * m];
        by_row.par_chunks_mut(chunk * m).enumerate().for_each(|(c, out)| {
            let first = c * chunk;
            for (i, out) in out.chunks_exact_mut(m).enumerate() {
                self.row_times(first + i, x, &block_sums, out, simd);
            }
        });
        if m == 1 {
            return by_row;
        }
        let mut out = vec![0f32; m * self.rows];
        for (r, values) in by_row.chunks_exact(m).enumerate() {
            for (b, &v) in values.iter().enumerate() {
                out[b * self.rows + r] = v;
            }
        }
        out
    }

    /// Weight row `r` times each of the `out.len()` input rows of `x` (`block_sums`: the sum of
    /// each block of `x`'s rows).
    fn row_times(&self, r: usize, x: &[f32], block_sums: &[f32], out: &mut [f32], simd: bool) {
        let per_row = self.cols / BLOCK;
        let blocks = r * per_row..(r + 1) * per_row;
        match &self.blocks {
            Blocks::Nibbles { scales, mins, quants } => {
                let (scales, mins) = (&scales[blocks.clone()], &mins[blocks.clone()]);
                let quants = &quants[blocks.start * 16..blocks.end * 16];
                #[cfg(target_arch = "x86_64")]
                if simd {
                    // SAFETY: the CPU has AVX2 and FMA (`simd_available`); the slices hold
                    // `per_row` blocks and `x` `out.len()` rows of `cols`.
                    unsafe { by_row_count!(nibble_row, out.len(), scales, quants, x, self.cols, out) };
                    for (o, sums) in out.iter_mut().zip(block_sums.chunks_exact(per_row)) {
                        // SAFETY: as above; both slices hold `per_row` values.
                        *o += unsafe { avx2::dot(mins, sums) };
                    }
                    return;
                }
                let _ = (simd, block_sums);
                for (b, o) in out.iter_mut().enumerate() {
                    let x = &x[b * self.cols..(b + 1) * self.cols];
                    let mut sum = 0f32;
                    for k in 0..per_row {
                        let (q, xs) = (&quants[k * 16..(k + 1) * 16], &x[k * BLOCK..(k + 1) * BLOCK]);
                        let mut block = 0f32;
                        for j in 0..16 {
                            block += (scales[k] * (q[j] & 15) as f32 + mins[k]) * xs[j];
                            block += (scales[k] * (q[j] >> 4) as f32 + mins[k]) * xs[j + 16];
                        }
                        sum += block;
                    }
                    *o = sum;
                }
            }
            Blocks::Bytes { scales, quants } => {
                let scales = &scales[blocks.clone()];
                let quants = &quants[blocks.start * BLOCK..blocks.end * BLOCK];
                #[cfg(target_arch = "x86_64")]
                if simd {
                    // SAFETY: as above.
                    unsafe { by_row_count!(byte_row, out.len(), scales, quants, x, self.cols, out) };
                    return;
                }
                for (b, o) in out.iter_mut().enumerate() {
                    let x = &x[b * self.cols..(b + 1) * self.cols];
                    let mut sum = 0f32;
                    for k in 0..per_row {
                        let (q, xs) = (&quants[k * BLOCK..(k + 1) * BLOCK], &x[k * BLOCK..(k + 1) * BLOCK]);
                        sum += q.iter().zip(xs).map(|(&q, &x)| scales[k] * q as f32 * x).sum::<f32>();
                    }
                    *o = sum;
                }
            }
        }
    }
}

/// Whether the AVX2 + FMA kernels can run here (`PAIRWISE_PORTABLE_KERNELS=1` turns them off,
/// for the tests of the portable loop).
fn simd_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVAILABLE.get_or_init(|| {
            std::env::var_os("PAIRWISE_PORTABLE_KERNELS").is_none()
                && is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    //! One weight row times `M` input rows. The accumulators are locals of a kernel
    //! specialised for `M` (and `A` accumulators per input row), so they stay in registers:
    //! `A` independent FMA chains a row hide the FMA latency (4 for one or two rows, 2 for
    //! three or four, 1 for more, where the rows themselves give enough independent chains and
    //! 16 registers run out).

    use std::arch::x86_64::*;

    use super::BLOCK;

    /// Sum of the 8 lanes.
    #[target_feature(enable = "avx2,fma")]
    fn sum(v: __m256) -> f32 {
        let quad = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
        _mm_cvtss_f32(_mm_add_ss(pair, _mm_shuffle_ps(pair, pair, 1)))
    }

    /// `Σ a·b` over two slices of equal length.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        let mut acc = _mm256_setzero_ps();
        let (whole_a, whole_b) = (a.chunks_exact(8), b.chunks_exact(8));
        let tail: f32 = whole_a.remainder().iter().zip(whole_b.remainder()).map(|(x, y)| x * y).sum();
        for (x, y) in whole_a.zip(whole_b) {
            acc = _mm256_fmadd_ps(unsafe { _mm256_loadu_ps(x.as_ptr()) }, unsafe { _mm256_loadu_ps(y.as_ptr()) }, acc);
        }
        sum(acc) + tail
    }

    /// The low 8 bytes of `v`, unsigned, as 8 floats.
    #[target_feature(enable = "avx2,fma")]
    fn widen_u8(v: __m128i) -> __m256 {
        _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v))
    }

    /// 8 signed bytes at `at` as 8 floats.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn widen_i8(at: *const i8) -> __m256 {
        _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(unsafe { _mm_loadl_epi64(at as *const __m128i) }))
    }

    /// Asks for the cache line at `at` (which may lie past the data: a prefetch never faults).
    #[target_feature(enable = "avx2,fma")]
    fn prefetch(at: *const u8) {
        _mm_prefetch::<_MM_HINT_T0>(at as *const i8);
    }

    /// Runs `$quants` (block index → the block's 32 quantized values as four float vectors)
    /// over a row's blocks: each block's products with the matching 32 inputs of every input
    /// row, summed, times the block's scale `$scale(k)` (so dequantizing costs nothing per
    /// weight; a 4-bit block's `min` term is added by the caller).
    macro_rules! row_times_rows {
        ($blocks:expr, $scales_at:expr, $x:expr, $cols:expr, $out:expr, $scale:expr, $quants:expr) => {{
            let mut acc = [[_mm256_setzero_ps(); A]; M];
            for k in 0..$blocks {
                if k.is_multiple_of(16) {
                    prefetch($scales_at.wrapping_add(k + 256) as *const u8);
                }
                let q: [__m256; 4] = $quants(k);
                let scale: __m256 = $scale(k);
                for (b, acc) in acc.iter_mut().enumerate() {
                    let xs = unsafe { $x.as_ptr().add(b * $cols + k * BLOCK) };
                    let mut block = _mm256_mul_ps(q[0], unsafe { _mm256_loadu_ps(xs) });
                    for (j, &q) in q.iter().enumerate().skip(1) {
                        block = _mm256_fmadd_ps(q, unsafe { _mm256_loadu_ps(xs.add(8 * j)) }, block);
                    }
                    acc[k % A] = _mm256_fmadd_ps(scale, block, acc[k % A]);
                }
            }
            for (o, acc) in $out.iter_mut().zip(&acc) {
                let mut total = acc[0];
                for &a in &acc[1..] {
                    total = _mm256_add_ps(total, a);
                }
                *o = sum(total);
            }
        }};
    }

    /// A row of 4-bit blocks (`scales`, 16 bytes a block in `quants`) times `M` rows, without
    /// the blocks' `min` term.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; `quants` holds 16 bytes per scale, `x` `M` rows of `cols`
    /// (32 per scale), `out` `M` values.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn nibble_row<const M: usize, const A: usize>(
        scales: &[f32],
        quants: &[u8],
        x: &[f32],
        cols: usize,
        out: &mut [f32],
    ) {
        let low = _mm_set1_epi8(15);
        row_times_rows!(
            scales.len(),
            scales.as_ptr(),
            x,
            cols,
            out,
            |k: usize| _mm256_set1_ps(scales[k]),
            |k: usize| {
                // The hardware prefetcher alone leaves the loads waiting (half the speed without
                // this): ask for the line 64 blocks ahead, once a line.
                if k.is_multiple_of(4) {
                    prefetch(quants.as_ptr().wrapping_add(k * 16 + 1024));
                }
                let q = unsafe { _mm_loadu_si128(quants.as_ptr().add(k * 16) as *const __m128i) };
                let lo = _mm_and_si128(q, low);
                let hi = _mm_and_si128(_mm_srli_epi16(q, 4), low);
                [widen_u8(lo), widen_u8(_mm_srli_si128(lo, 8)), widen_u8(hi), widen_u8(_mm_srli_si128(hi, 8))]
            }
        );
    }

    /// A row of 8-bit blocks (`scales`, 32 bytes a block in `quants`) times `M` rows.
    ///
    /// # Safety
    /// As [`nibble_row`], with 32 bytes per scale.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn byte_row<const M: usize, const A: usize>(
        scales: &[f32],
        quants: &[i8],
        x: &[f32],
        cols: usize,
        out: &mut [f32],
    ) {
        row_times_rows!(
            scales.len(),
            scales.as_ptr(),
            x,
            cols,
            out,
            |k: usize| _mm256_set1_ps(scales[k]),
            |k: usize| {
                if k.is_multiple_of(2) {
                    prefetch(quants.as_ptr().wrapping_add(k * BLOCK + 2048) as *const u8);
                }
                let q = unsafe { quants.as_ptr().add(k * BLOCK) };
                unsafe { [widen_i8(q), widen_i8(q.add(8)), widen_i8(q.add(16)), widen_i8(q.add(24))] }
            }
        );
    }
}

#[cfg(test)]
mod tests {
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};

    use super::{PACKED_MAX_ROWS, PackedWeight, simd_available};

    /// A random `[rows, cols]` weight quantized by candle, its blocks packed, and candle's
    /// dequantized f32 copy.
    fn weight(dtype: GgmlDType, rows: usize, cols: usize) -> (PackedWeight, Vec<f32>) {
        let w = Tensor::randn(0f32, 0.5, (rows, cols), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&w, dtype).unwrap();
        let packed = PackedWeight::from_ggml(dtype, &q.data().unwrap(), (rows, cols)).unwrap();
        let dense = q.dequantize(&Device::Cpu).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        (packed, dense)
    }

    #[test]
    fn blocks_unpack_to_candles_dequantized_weights() {
        for dtype in [GgmlDType::Q4_0, GgmlDType::Q4_1, GgmlDType::Q8_0] {
            let (packed, dense) = weight(dtype, 7, 96);
            for (a, b) in packed.dequantize().iter().zip(&dense) {
                assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "{dtype:?}: {a} vs {b}");
            }
        }
    }

    /// Both kernels (the AVX2 one where it runs, and the portable loop) against the dense
    /// product of the dequantized weights, for every row count and a row count that does not
    /// fill the last chunk.
    #[test]
    fn matmul_equals_the_dequantized_product() {
        for dtype in [GgmlDType::Q4_0, GgmlDType::Q4_1, GgmlDType::Q8_0] {
            let (rows, cols) = (75, 160);
            let (packed, dense) = weight(dtype, rows, cols);
            for m in 1..=PACKED_MAX_ROWS {
                let x: Vec<f32> = Tensor::randn(0f32, 1.0, m * cols, &Device::Cpu).unwrap().to_vec1().unwrap();
                let want: Vec<f32> = (0..m)
                    .flat_map(|b| {
                        let (x, dense) = (&x, &dense);
                        (0..rows).map(move |r| {
                            (0..cols).map(|c| x[b * cols + c] as f64 * dense[r * cols + c] as f64).sum::<f64>() as f32
                        })
                    })
                    .collect();
                let mut kernels = vec![false];
                if simd_available() {
                    kernels.push(true);
                }
                for simd in kernels {
                    let mut got = vec![0f32; m * rows];
                    let block_sums: Vec<f32> = x.chunks_exact(32).map(|b| b.iter().sum()).collect();
                    for r in 0..rows {
                        let mut out = vec![0f32; m];
                        packed.row_times(r, &x, &block_sums, &mut out, simd);
                        for b in 0..m {
                            got[b * rows + r] = out[b];
                        }
                    }
                    if simd {
                        assert_eq!(got, packed.matmul(&x, m), "matmul runs the AVX2 kernel");
                    }
                    for (g, w) in got.iter().zip(&want) {
                        assert!((g - w).abs() <= 1e-4 * w.abs().max(1.0), "{dtype:?} m={m} simd={simd}: {g} vs {w}");
                    }
                }
            }
        }
    }

    #[test]
    fn reordered_rows_are_the_source_rows() {
        let (packed, dense) = weight(GgmlDType::Q4_1, 4, 64);
        let reordered = packed.reorder_rows(&[2, 0, 3, 1]).dequantize();
        for (i, &r) in [2, 0, 3, 1].iter().enumerate() {
            assert_eq!(&reordered[i * 64..(i + 1) * 64], &dense[r * 64..(r + 1) * 64]);
        }
    }

    #[test]
    fn formats_without_a_kernel_stay_dense() {
        assert!(PackedWeight::from_ggml(GgmlDType::Q6K, &[0; 210], (1, 256)).is_none());
        assert!(PackedWeight::from_ggml(GgmlDType::Q8_0, &[0; 34], (1, 33)).is_none());
    }
}
