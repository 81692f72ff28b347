//! The data layer: preference pairs ([`pairs`]) and single rated or reference completions
//! ([`completions`]) and rankings of several responses ([`rankings`]) read and tokenized, collated into forward
//! batches ([`batch`]) and read out as completion log-probs or rewards ([`readout`]), and data
//! fetched from a running Pairwise server ([`remote`]).

pub mod batch;
pub mod completions;
pub mod pairs;
pub mod rankings;
pub mod readout;
pub mod remote;
