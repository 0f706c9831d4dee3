//! The commands, one module each; `main.rs` parses the command line and dispatches.

pub mod alerts;
pub mod integrity;
pub mod inventory;
pub mod replay;
pub mod report;
pub mod rules;
pub mod run;
pub mod serve;
pub mod synth;
