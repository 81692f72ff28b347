//! The data layer: preference pairs read and tokenized ([`pairs`]), collated into forward
//! batches ([`batch`]) and read out as completion log-probs or rewards ([`readout`]), and data
//! fetched from a running Pairwise server ([`remote`]).

pub mod batch;
pub mod pairs;
pub mod readout;
pub mod remote;
