//! The training layer: a run's settings ([`config`]), its setup ([`prepare`]), the loop every
//! pairwise method shares ([`run`]) with its optimizer ([`optim`]) and checkpoints
//! ([`checkpoint`]). Methods plug in through [`run::Objective`].

pub mod checkpoint;
pub mod config;
pub mod optim;
pub mod prepare;
pub mod run;
