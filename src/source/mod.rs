//! Sources: where the pipeline's files come from, behind one interface. Local paths (`replay`), an S3 listing
//! (`replay s3://…`), a spool directory and SQS notifications (`run`) each feed the same pipeline through a bounded
//! channel of [`Input`]s, and hear back through their [`Feedback`] what was committed or rejected.

pub mod backfill;
pub mod consumer;
pub mod fetch;
pub mod local;
#[cfg(any(test, feature = "test-doubles"))]
pub mod memory;
pub mod notification;
pub mod spool;
pub mod sqs;
pub mod tracker;

use std::path::{Path, PathBuf};

use crate::shutdown::Listener;
use crate::source::fetch::FetchError;
use crate::store::LedgerKey;

/// A file to apply: where it is, and its identity in the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileJob {
    pub key: LedgerKey,
    pub location: Location,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Local(PathBuf),
    S3 { bucket: String, key: String },
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Local(path) => write!(f, "{}", path.display()),
            Location::S3 { bucket, key } => write!(f, "s3://{bucket}/{key}"),
        }
    }
}

impl FileJob {
    /// A local file's job: its ledger key is its CloudTrail file name, or its absolute path and size (see
    /// [`LedgerKey::local`]).
    pub fn local(path: PathBuf, size: u64) -> FileJob {
        let absolute = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
        let key = LedgerKey::local(&absolute.display().to_string(), size);
        FileJob { key, location: Location::Local(path) }
    }

    /// An S3 object's job: its ledger key is `s3://bucket/key` and its ETag.
    pub fn s3(bucket: &str, key: &str, etag: &str) -> FileJob {
        let ledger = LedgerKey { source: format!("s3://{bucket}/{key}"), version: etag.to_owned() };
        FileJob { key: ledger, location: Location::S3 { bucket: bucket.to_owned(), key: key.to_owned() } }
    }

    pub fn local_path(&self) -> Option<&Path> {
        match &self.location {
            Location::Local(path) => Some(path),
            Location::S3 { .. } => None,
        }
    }
}

/// A file for the workers: its bytes when the source fetched them (or why it could not), `None` for a local file
/// the worker reads itself.
pub struct Input {
    pub job: FileJob,
    pub bytes: Option<Result<Vec<u8>, FetchError>>,
    /// A digest's signature from the object's metadata (hex).
    pub signature: Option<String>,
}

/// The sending side of the pipeline's input channel. A source drops it when it stops; the workers finish once
/// every sender is gone.
pub type Feed = tokio::sync::mpsc::Sender<Input>;

/// Whether a source can take input now, for `/readyz`: `Err` says why not.
pub type Probe = std::sync::Arc<
    dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>> + Send + Sync,
>;

/// What the committer tells a source, on the committing thread, about the files it fed.
pub trait Feedback: Send {
    /// A batch is durably committed (and its keys are in the ledger set): its files.
    fn committed(&mut self, _files: &[FileJob]) {}
    /// A file that will not be applied: its bytes are bad (`may_heal` false), or it could not be read or fetched
    /// for a reason that may pass (`may_heal` true). `reason` is the bounded metric label.
    fn rejected(&mut self, _job: &FileJob, _reason: &'static str, _may_heal: bool) {}
    /// A commit failed: the run ends with the error once the workers are done with the files in hand. The source
    /// must stop feeding for that to happen.
    fn commit_failed(&mut self) {}
}

/// Feedback nobody listens to (replay and backfill keep nothing per file).
pub struct NoFeedback;

impl Feedback for NoFeedback {}

/// Where the pipeline's files come from.
pub trait Source: Send {
    /// Starts feeding `feed` on `runtime` for one run of the pipeline. The source stops, dropping `feed`, when it
    /// has fed everything it has, when `stop`'s stage is asked to stop, or when its feedback hears that a commit
    /// failed; it may be started again after that.
    fn start(&mut self, runtime: &tokio::runtime::Runtime, feed: Feed, stop: Listener) -> Started;

    /// How many inputs may wait between the source and `threads` workers. A source that hands over fetched bytes
    /// keeps it small, since they are in memory; one that hands over paths keeps the workers from ever waiting.
    fn input_capacity(&self, threads: usize) -> usize {
        threads * 2
    }

    /// For `/readyz`.
    fn probe(&self) -> Probe;

    /// What it reads, for the log line a daemon writes when it starts (`spool /data/spool`).
    fn describe(&self) -> String;
}

/// A source that has started.
pub struct Started {
    pub feedback: Box<dyn Feedback>,
    /// Files already applied, skipped without being fed (reported as duplicates).
    pub duplicates: u64,
    /// How many files it will feed, when it knows (no more workers start than there are files).
    pub files: Option<usize>,
    /// The source's own task: done when it has stopped feeding and let go of everything it started.
    pub done: tokio::task::JoinHandle<()>,
}

/// A probe that is always ready (local paths, a listing already made).
pub fn always_ready() -> Probe {
    std::sync::Arc::new(|| Box::pin(async { Ok(()) }))
}
