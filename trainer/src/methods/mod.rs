//! The top layer: the training methods and commands of `pairwise-train`. Reward models
//! ([`reward`]), DPO and its reference-free variants ([`dpo`]), KTO on labelled single
//! completions ([`kto`]), supervised fine-tuning ([`sft`]) and the listwise reward model and
//! DPO on rankings ([`listwise`]) on the shared training loop
//! with their losses ([`loss`]),
//! RLHF against a reward model ([`rlhf`]), sampling ([`generate`]) and the import files made
//! from it ([`import`]), scoring pairs ([`score`]), merging an adapter ([`merge`]) and
//! exporting to GGUF ([`export`]).

pub mod dpo;
pub mod export;
pub mod generate;
pub mod import;
pub mod kto;
pub mod listwise;
pub mod loss;
pub mod merge;
pub mod reward;
pub mod rlhf;
pub mod score;
pub mod sft;
