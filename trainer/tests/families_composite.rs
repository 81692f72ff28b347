//! The same parity checks as `families.rs` with the CPU kernels switched off, so every
//! forward and backward takes candle's composite ops: the code path a GPU runs, proven
//! against PyTorch on a machine without one. (Its own test binary: the switch is global.)

mod family_checks;

use pairwise_trainer::tensor::device::force_composite_ops;

#[test]
fn every_family_on_composite_ops() {
    force_composite_ops(true);
    for family in ["llama3", "qwen3", "qwen2", "mistral", "gemma3", "gemma2"] {
        family_checks::check_family(family);
    }
}
