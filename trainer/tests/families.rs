//! Parity with PyTorch for each model family beyond the Llama 2-style fixture (Llama 3.x with
//! RoPE scaling, Qwen2 on long sequences, Qwen3, Mistral's sliding window, Gemma 3, Gemma 2), on the CPU kernels; see
//! `family_checks` for what is checked and `tests/fixtures/families/make_fixtures.py` for how
//! the references were made.

mod family_checks;

#[test]
fn llama3() {
    family_checks::check_family("llama3");
}

#[test]
fn qwen3() {
    family_checks::check_family("qwen3");
}

#[test]
fn qwen2() {
    family_checks::check_family("qwen2");
}

#[test]
fn mistral() {
    family_checks::check_family("mistral");
}

#[test]
fn gemma3() {
    family_checks::check_family("gemma3");
}

#[test]
fn gemma2() {
    family_checks::check_family("gemma2");
}
