//! Stage 1, intake: where files come from in daemon mode (a spool directory), and how SQS notification bodies name
//! S3 objects (the SQS consumer builds on `notification`).

pub mod backfill;
pub mod consumer;
pub mod fetch;
pub mod local;
pub mod memory;
pub mod notification;
pub mod spool;
pub mod sqs;
pub mod tracker;

use std::path::{Path, PathBuf};

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

/// A fetched file, or why it could not be fetched.
pub struct FetchedJob {
    pub job: FileJob,
    pub bytes: Result<Vec<u8>, FetchError>,
}
