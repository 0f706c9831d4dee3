//! The integration test binary: the real `trailwatch` executable against files on disk.

// Helpers: running the binary, fixtures, gzip, HTTP, bounded polling.
mod util;

// The modules' dependency order, as ARCHITECTURE.md writes it.
mod layers;

// `replay` on hand-written fixtures, synth corpora, the shared real-world corpus, and crash safety.
mod replay;

// `run`: the spool daemon, its HTTP endpoints and its shutdown.
mod daemon;

// The AWS edge against moto's S3 emulator and the real SDK: backfill from S3.
mod aws;

// The SQS consumer at volume on the in-process queue and object store.
mod volume;

// `validate` and configuration errors.
mod config;

// The command line: closed pipes, usage errors, filters, help, permission reports without AWS, missing credentials.
mod cli;

// Detections and alerts: injected incidents, webhook retries and a crash before delivery, a real Alertmanager.
mod alerts;

// Granted versus used: `report permissions|policy` on an authorization-details fixture and replayed usage.
mod permissions;

// The identity explorer: `serve`, its pages over HTTP and in a real browser (chromedriver).
mod browser;
mod explorer;

// Log file validation: a signed trail from local files and from moto's S3, untouched and tampered with.
mod integrity;

// Operability with real tools: promtool, a real Prometheus, and the deploy/ files against the catalogue.
mod observe;
