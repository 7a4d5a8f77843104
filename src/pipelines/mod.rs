//! Pipelines: a loaded model plus a scheduler, run one step at a time so that the caller (the
//! CLI, the browser) drives the loop, shows previews and stops when it likes. One file per
//! diffusers pipeline; nothing here knows about JS.

pub mod ddpm;

pub use ddpm::*;
