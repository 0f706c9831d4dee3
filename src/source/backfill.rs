//! `trailwatch replay s3://bucket[/prefix]`: backfill from a CloudTrail bucket through the same pipeline and ledger.
//!
//! Listing prunes by account, region and day before it descends; objects are fetched with bounded concurrency into
//! a bounded channel that the CPU workers drain, so at most `max_concurrent_fetches` + 2 × threads objects are in
//! memory at once. Objects already in the ledger (same key and ETag) are never fetched.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::aws::{AwsSettings, s3_client, sdk_config};
use crate::layout::Filters;
use crate::pipeline::{self, Jobs, RunContext, Summary};
use crate::source::FetchedJob;
use crate::source::FileJob;
use crate::source::fetch::{ListError, get_object, list_log_files};
use crate::store::Applied;
use crate::store::{Store, StoreError};
use crate::time::Timestamp;

/// `s3://bucket[/prefix]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Url {
    pub bucket: String,
    pub prefix: String,
}

pub fn parse_s3_url(text: &str) -> Option<S3Url> {
    let rest = text.strip_prefix("s3://")?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    (!bucket.is_empty()).then(|| S3Url { bucket: bucket.to_owned(), prefix: prefix.to_owned() })
}

#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error(transparent)]
    List(#[from] ListError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("runtime: {0}")]
    Runtime(std::io::Error),
}

/// Lists, fetches and applies every log file under the URLs that `filters` keeps.
#[allow(clippy::too_many_arguments)] // One call site (the CLI); a struct would only rename these.
pub fn replay(
    urls: &[S3Url],
    filters: &Filters,
    today: Timestamp,
    aws: &AwsSettings,
    ctx: &RunContext<'_>,
    store: &mut Store,
    applied: &Applied,
    on_listed: &mut dyn FnMut(u64),
    observer: &mut dyn pipeline::Observer,
) -> Result<Summary, BackfillError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("trailwatch-s3")
        .enable_all()
        .build()
        .map_err(BackfillError::Runtime)?;
    let client = runtime.block_on(async { s3_client(&sdk_config(aws).await, aws) });
    let mut jobs = Vec::new();
    for url in urls {
        let listed = runtime.block_on(list_log_files(&client, &url.bucket, &url.prefix, filters, today))?;
        jobs.extend(listed.iter().map(|l| FileJob::s3(&url.bucket, &l.key, &l.etag)));
    }
    let mut jobs = crate::source::local::one_per_key_in_delivery_order(jobs);
    let total = jobs.len();
    jobs.retain(|job| !applied.contains(&job.key));
    let duplicates = (total - jobs.len()) as u64;
    on_listed(total as u64);
    tracing::info!(listed = total, already_applied = duplicates, "listed the bucket");

    let (tx, rx) = tokio::sync::mpsc::channel::<FetchedJob>(ctx.threads.max(1) * 2);
    let semaphore = Arc::new(tokio::sync::Semaphore::new(aws.max_concurrent_fetches.max(1)));
    let max_bytes = ctx.limits.max_file_bytes;
    let stop_flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producer = {
        let stop_flag = Arc::clone(&stop_flag);
        runtime.spawn(async move {
            for job in jobs {
                if stop_flag.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(permit) = Arc::clone(&semaphore).acquire_owned().await else { break };
                let (client, tx) = (client.clone(), tx.clone());
                tokio::spawn(async move {
                    let crate::source::Location::S3 { bucket, key } = &job.location else { return };
                    let bytes = get_object(&client, bucket, key, max_bytes).await.map(|f| f.bytes);
                    // The permit is held until the workers have room: fetched bytes in memory stay bounded.
                    let _ = tx.send(FetchedJob { job, bytes }).await;
                    drop(permit);
                });
            }
        })
    };
    let summary =
        pipeline::run(Jobs::Fetched { rx: std::sync::Mutex::new(rx), duplicates }, ctx, store, applied, observer);
    // The workers are done (or were stopped): no more fetches.
    stop_flag.store(true, Ordering::Relaxed);
    producer.abort();
    runtime.shutdown_background();
    Ok(summary?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_s3_urls() {
        let url = |b: &str, p: &str| Some(S3Url { bucket: b.to_owned(), prefix: p.to_owned() });
        assert_eq!(parse_s3_url("s3://bucket"), url("bucket", ""));
        assert_eq!(parse_s3_url("s3://bucket/"), url("bucket", ""));
        assert_eq!(parse_s3_url("s3://bucket/trails/AWSLogs"), url("bucket", "trails/AWSLogs"));
        assert_eq!(parse_s3_url("s3://"), None);
        assert_eq!(parse_s3_url("/local/path"), None);
    }
}
