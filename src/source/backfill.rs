//! `trailwatch replay s3://bucket[/prefix]`: backfill from a CloudTrail bucket through the same pipeline and ledger.
//!
//! Listing prunes by account, region and day before it descends; objects are fetched with bounded concurrency into
//! a bounded channel that the CPU workers drain, so at most `max_concurrent_fetches` + 2 × threads objects are in
//! memory at once. Objects already in the ledger (same key and ETag) are never fetched.

use std::sync::Arc;

use crate::aws::{AwsSettings, s3_client, sdk_config};
use crate::layout::Filters;
use crate::shutdown::Listener;
use crate::source::fetch::{ListError, get_object, list_log_files};
use crate::source::local::one_per_key_in_delivery_order;
use crate::source::{Feed, FileJob, Input, Location, NoFeedback, Probe, Source, Started, always_ready};
use crate::store::Applied;
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

/// `replay s3://…`: the log files of a listing, fetched with bounded concurrency.
pub struct S3Backfill {
    client: aws_sdk_s3::Client,
    jobs: Vec<FileJob>,
    duplicates: u64,
    max_concurrent_fetches: usize,
    max_file_bytes: u64,
}

impl S3Backfill {
    /// Lists every log file under the URLs that `filters` keeps; those already applied will not be fetched.
    pub fn list(
        runtime: &tokio::runtime::Runtime,
        urls: &[S3Url],
        filters: &Filters,
        today: Timestamp,
        aws: &AwsSettings,
        applied: &Applied,
        max_file_bytes: u64,
    ) -> Result<S3Backfill, ListError> {
        let client = runtime.block_on(async { s3_client(&sdk_config(aws).await, aws) });
        let mut jobs = Vec::new();
        for url in urls {
            let listed = runtime.block_on(list_log_files(&client, &url.bucket, &url.prefix, filters, today))?;
            jobs.extend(listed.iter().map(|l| FileJob::s3(&url.bucket, &l.key, &l.etag)));
        }
        let mut jobs = one_per_key_in_delivery_order(jobs);
        let total = jobs.len();
        jobs.retain(|job| !applied.contains(&job.key));
        let duplicates = (total - jobs.len()) as u64;
        tracing::info!(listed = total, already_applied = duplicates, "listed the bucket");
        Ok(S3Backfill {
            client,
            jobs,
            duplicates,
            max_concurrent_fetches: aws.max_concurrent_fetches.max(1),
            max_file_bytes,
        })
    }

    /// How many log files the listing found, applied ones included.
    pub fn listed(&self) -> u64 {
        self.jobs.len() as u64 + self.duplicates
    }
}

impl Source for S3Backfill {
    fn start(&mut self, runtime: &tokio::runtime::Runtime, feed: Feed, stop: Listener) -> Started {
        let jobs = std::mem::take(&mut self.jobs);
        let files = jobs.len();
        let semaphore = Arc::new(tokio::sync::Semaphore::new(self.max_concurrent_fetches));
        let (client, max_bytes) = (self.client.clone(), self.max_file_bytes);
        let done = runtime.spawn(async move {
            let mut fetches = tokio::task::JoinSet::new();
            for job in jobs {
                // Stopped, or the pipeline is gone (a failed commit): fetch nothing more.
                if stop.is_requested() || feed.is_closed() {
                    break;
                }
                let Ok(permit) = Arc::clone(&semaphore).acquire_owned().await else { break };
                let (client, feed) = (client.clone(), feed.clone());
                fetches.spawn(async move {
                    let Location::S3 { bucket, key } = &job.location else { return };
                    let (bytes, signature) = match get_object(&client, bucket, key, max_bytes).await {
                        Ok(fetched) => (Ok(fetched.bytes), fetched.signature),
                        Err(err) => (Err(err), None),
                    };
                    // The permit is held until the workers have room: fetched bytes in memory stay bounded.
                    let _ = feed.send(Input { job, bytes: Some(bytes), signature }).await;
                    drop(permit);
                });
                // Finished fetches are let go of as they end, not all at the end.
                while fetches.try_join_next().is_some() {}
            }
            drop(feed);
            while fetches.join_next().await.is_some() {}
        });
        Started { feedback: Box::new(NoFeedback), duplicates: self.duplicates, files: Some(files), done }
    }

    fn probe(&self) -> Probe {
        always_ready()
    }

    fn describe(&self) -> String {
        "s3 backfill".to_owned()
    }
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
