//! `cargo bench -p pairwise-trainer --bench packed_matmul [-- ROWS]`: the decode-step matmul
//! of one, four and eight input rows against a `[ROWS, 576]` weight (SmolLM2-135M's width; the
//! default 131,072 rows is 75M weights, more than a core's caches hold, like a model's
//! weights in a decode step), in llama.cpp's Q4_1 and Q8_0 blocks (`tensor::packed`) on one
//! and two threads, and as candle's f32 matmul of the same weight (what decoding used
//! before). Prints milliseconds per product and the bytes of weight read per second.

use std::time::Instant;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use pairwise_trainer::tensor::packed::PackedWeight;

const ROUNDS: usize = 20;

fn time(mut f: impl FnMut()) -> f64 {
    for _ in 0..3 {
        f();
    }
    let started = Instant::now();
    for _ in 0..ROUNDS {
        f();
    }
    started.elapsed().as_secs_f64() / ROUNDS as f64
}

fn main() {
    let rows: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(131_072);
    let cols = 576;
    let weight = Tensor::randn(0f32, 0.5, (rows, cols), &Device::Cpu).unwrap();
    println!(
        "weight [{rows}, {cols}]; load average {}",
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()
    );
    for (dtype, bytes_per_weight) in [(GgmlDType::Q4_1, 0.75), (GgmlDType::Q8_0, 1.125)] {
        let quantized = QTensor::quantize(&weight, dtype).unwrap();
        let packed = PackedWeight::from_ggml(dtype, &quantized.data().unwrap(), (rows, cols)).unwrap();
        for m in [1, 4, 8] {
            let x: Vec<f32> = (0..m * cols).map(|i| (i % 7) as f32 * 0.1).collect();
            for threads in [1, 2] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                let s = pool.install(|| time(|| drop(std::hint::black_box(packed.matmul(&x, m)))));
                let gbs = (rows * cols) as f64 * bytes_per_weight / s / 1e9;
                println!("{dtype:?} blocks, {m} row(s), {threads} thread(s): {:7.3} ms, {gbs:5.1} GB/s", s * 1e3);
            }
        }
    }
    let transposed = weight.t().unwrap().contiguous().unwrap();
    for m in [1, 4, 8] {
        let x = Tensor::randn(0f32, 1.0, (m, cols), &Device::Cpu).unwrap();
        let s = time(|| drop(std::hint::black_box(x.matmul(&transposed).unwrap())));
        let gbs = (rows * cols * 4) as f64 / s / 1e9;
        println!("f32 matmul, {m} row(s), candle's threads: {:7.3} ms, {gbs:5.1} GB/s", s * 1e3);
    }
}
