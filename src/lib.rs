//! trailwatch: CloudTrail log files → durable per-identity state (last used, permission usage) and alerts.
//!
//! ARCHITECTURE.md is the map. Each module uses only the modules listed before it in ARCHITECTURE.md's dependency
//! order (`tests/it/layers.rs` checks it). Modules that the binary, the integration tests and the benches do not
//! use are private to the crate.

pub(crate) mod action;
pub mod alert;
pub mod aws;
pub mod config;
pub mod daemon;
pub mod decode;
pub mod delivery;
pub mod detect;
pub(crate) mod events;
pub mod findings;
pub(crate) mod http;
pub mod iam;
pub mod inflight;
pub mod integrity;
pub mod layout;
pub(crate) mod logs;
pub mod metrics;
pub mod parse;
pub mod permissions;
pub mod pipeline;
pub mod reaper;
pub mod report;
pub mod shutdown;
pub mod source;
pub mod state;
pub mod store;
pub mod synth;
pub mod terminal;
pub mod time;
pub mod ui;
pub mod validation;
