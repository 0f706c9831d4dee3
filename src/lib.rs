//! trailwatch: CloudTrail log files → durable per-identity state (last used, permission usage).
//!
//! # Layout
//! The pipeline stages, in the order a file meets them (see ARCHITECTURE.md):
//! - [`decode`]: gzip or plain JSON bytes → JSON bytes, with a decompressed-size cap.
//! - [`parse`]: JSON → validated events; [`action`] maps calls to IAM actions.
//! - [`state`]: events → per-file deltas → the SQLite store with its ledger.
//! - [`detect`]: Sigma rules matched on the workers in the same pass.
//! - [`alert`]: matches → alerts, correlation windows, behavioural rules; outbox delivery to sinks.
//! - [`pipeline`]: worker threads and the single committer that tie the stages together; [`inflight`] is its
//!   crash-loop guard.
//! - [`intake`]: where files come from in daemon mode (a spool directory, or SQS notifications).
//! - [`report`], [`findings`], [`synth`], [`config`], [`metrics`], [`http`]: the edges.

pub mod action;
pub mod alert;
pub mod aws;
pub mod config;
pub mod daemon;
pub mod decode;
pub mod delivery;
pub mod detect;
pub mod findings;
pub mod http;
pub mod iam;
pub mod inflight;
pub mod layout;
pub mod logs;
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
pub mod time;
