//! Stage 2, fetch: S3 objects → bytes, and listing CloudTrail's layout for backfills. A thin edge over the SDK.
//!
//! Errors name `s3://bucket/key` and have a bounded `kind()`. A missing object is its own kind, because the
//! consumer deletes its message, while access denied and other persistent errors leave the message for redelivery.

use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_s3::operation::get_object::GetObjectError;

use crate::layout::Filters;
use crate::source::notification::normalize_etag;
use crate::time::Timestamp;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("s3://{bucket}/{key}: no such key")]
    NoSuchKey { bucket: String, key: String },
    #[error("s3://{bucket}/{key}: access denied")]
    AccessDenied { bucket: String, key: String },
    #[error("s3://{bucket}/{key}: object size {size} exceeds the cap of {cap} bytes")]
    TooLarge { bucket: String, key: String, size: u64, cap: u64 },
    #[error("s3://{bucket}/{key}: {message}")]
    Other { bucket: String, key: String, message: String },
}

impl FetchError {
    pub fn kind(&self) -> &'static str {
        match self {
            FetchError::NoSuchKey { .. } => "no_such_key",
            FetchError::AccessDenied { .. } => "access_denied",
            FetchError::TooLarge { .. } => "too_large",
            FetchError::Other { .. } => "s3_error",
        }
    }
}

/// Where objects are read from: S3, or an in-process double for volume tests and benchmarks.
pub trait Objects: Send + Sync + 'static {
    fn get(
        &self,
        bucket: &str,
        key: &str,
        max_bytes: u64,
    ) -> impl std::future::Future<Output = Result<Fetched, FetchError>> + Send;
}

impl<T: Objects> Objects for std::sync::Arc<T> {
    fn get(
        &self,
        bucket: &str,
        key: &str,
        max_bytes: u64,
    ) -> impl std::future::Future<Output = Result<Fetched, FetchError>> + Send {
        (**self).get(bucket, key, max_bytes)
    }
}

impl Objects for aws_sdk_s3::Client {
    async fn get(&self, bucket: &str, key: &str, max_bytes: u64) -> Result<Fetched, FetchError> {
        get_object(self, bucket, key, max_bytes).await
    }
}

/// An object's bytes, its ETag (unquoted), and the `signature` metadata CloudTrail puts on digest files.
pub struct Fetched {
    pub bytes: Vec<u8>,
    pub etag: Option<String>,
    pub signature: Option<String>,
}

/// Reads a whole object, refusing more than `max_bytes` (checked against the size S3 announces, and while reading).
pub async fn get_object(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    max_bytes: u64,
) -> Result<Fetched, FetchError> {
    let names = || (bucket.to_owned(), key.to_owned());
    let resp = client.get_object().bucket(bucket).key(key).send().await.map_err(|err| {
        let (bucket, key) = names();
        let code = err.code().map(str::to_owned);
        let message = crate::aws::describe(&err);
        match err.into_service_error() {
            GetObjectError::NoSuchKey(_) => FetchError::NoSuchKey { bucket, key },
            _ if code.as_deref() == Some("AccessDenied") => FetchError::AccessDenied { bucket, key },
            _ => FetchError::Other { bucket, key, message },
        }
    })?;
    let announced = resp.content_length().unwrap_or(0).max(0) as u64;
    if announced > max_bytes {
        let (bucket, key) = names();
        return Err(FetchError::TooLarge { bucket, key, size: announced, cap: max_bytes });
    }
    let etag = resp.e_tag().map(normalize_etag);
    // A digest's signature is hex: anything longer than a 4096-bit key's is not one, and is not kept.
    let signature = resp.metadata().and_then(|m| m.get("signature")).filter(|s| s.len() <= 1024).cloned();
    let mut body = resp.body;
    let mut bytes = Vec::with_capacity(announced as usize);
    loop {
        let chunk = body.try_next().await.map_err(|err| {
            let (bucket, key) = names();
            FetchError::Other { bucket, key, message: format!("reading the body: {}", DisplayErrorContext(err)) }
        })?;
        let Some(chunk) = chunk else { break };
        bytes.extend_from_slice(&chunk);
        if bytes.len() as u64 > max_bytes {
            let (bucket, key) = names();
            return Err(FetchError::TooLarge { bucket, key, size: bytes.len() as u64, cap: max_bytes });
        }
    }
    Ok(Fetched { bytes, etag, signature })
}

/// An object found by a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    pub size: u64,
    pub etag: String,
}

#[derive(Debug, thiserror::Error)]
#[error("listing s3://{bucket}/{prefix}: {message}")]
pub struct ListError {
    pub bucket: String,
    pub prefix: String,
    pub message: String,
}

/// Lists the CloudTrail log and Insight files (and digests, when the filters ask) under `s3://bucket/prefix` that pass `filters`.
///
/// Above `AWSLogs/` it walks the layout one level at a time (organisation, account, trail kind, region) and
/// prunes accounts and regions before listing deeper; with a date range it lists only the day directories in the
/// range. Below `AWSLogs/` it lists the prefix and filters each key.
pub async fn list_log_files(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
    filters: &Filters,
    today: Timestamp,
) -> Result<Vec<Listed>, ListError> {
    let base = match prefix {
        "" => String::new(),
        p if p.ends_with('/') => p.to_owned(),
        p => format!("{p}/"),
    };
    let mut out = Vec::new();
    if base.split('/').any(|s| s == "AWSLogs") {
        list_all(client, bucket, &base, filters, &mut out).await?;
        return Ok(out);
    }
    let logs = format!("{base}AWSLogs/");
    let mut accounts = Vec::new();
    for top in list_dirs(client, bucket, &logs).await? {
        let name = last_segment(&top);
        if name.starts_with("o-") {
            accounts.extend(list_dirs(client, bucket, &top).await?);
        } else {
            accounts.push(top);
        }
    }
    for account in accounts.iter().filter(|a| filters.account(last_segment(a))) {
        let digests = filters.digests.then_some("CloudTrail-Digest/");
        for kind in ["CloudTrail/", "CloudTrail-Insight/"].into_iter().chain(digests) {
            let regions = list_dirs(client, bucket, &format!("{account}{kind}")).await?;
            for region in regions.iter().filter(|r| filters.region(last_segment(r))) {
                match (filters.since, filters.until) {
                    (None, None) => list_all(client, bucket, region, filters, &mut out).await?,
                    (since, until) => {
                        let until = until.unwrap_or(today);
                        // Without a start, take the region's earliest year as it is listed.
                        let since = match since {
                            Some(s) => s,
                            None => first_day(client, bucket, region).await?.unwrap_or(until),
                        };
                        let mut day = since;
                        while day <= until {
                            let date = crate::time::format_rfc3339(day);
                            let dir = format!("{region}{}/{}/{}/", &date[0..4], &date[5..7], &date[8..10]);
                            list_all(client, bucket, &dir, filters, &mut out).await?;
                            day += 86_400;
                        }
                    }
                }
            }
        }
    }
    Ok(out)
}

fn last_segment(dir: &str) -> &str {
    dir.trim_end_matches('/').rsplit('/').next().unwrap_or("")
}

/// The first day directory under a region (`…/<region>/YYYY/MM/DD/`), if any.
async fn first_day(client: &aws_sdk_s3::Client, bucket: &str, region: &str) -> Result<Option<Timestamp>, ListError> {
    let Some(year) = list_dirs(client, bucket, region).await?.into_iter().min() else { return Ok(None) };
    let Some(month) = list_dirs(client, bucket, &year).await?.into_iter().min() else { return Ok(None) };
    let Some(day) = list_dirs(client, bucket, &month).await?.into_iter().min() else { return Ok(None) };
    let parts: Vec<&str> = day.trim_end_matches('/').rsplit('/').take(3).collect();
    Ok(crate::time::parse_date(&format!("{}-{}-{}", parts[2], parts[1], parts[0])))
}

/// The "directories" (common prefixes) directly under `prefix`.
async fn list_dirs(client: &aws_sdk_s3::Client, bucket: &str, prefix: &str) -> Result<Vec<String>, ListError> {
    let mut pages = client.list_objects_v2().bucket(bucket).prefix(prefix).delimiter("/").into_paginator().send();
    let mut dirs = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|err| list_error(bucket, prefix, crate::aws::describe(&err)))?;
        dirs.extend(page.common_prefixes().iter().filter_map(|p| p.prefix().map(str::to_owned)));
    }
    Ok(dirs)
}

/// Every object under `prefix` that `filters` keeps.
async fn list_all(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
    filters: &Filters,
    out: &mut Vec<Listed>,
) -> Result<(), ListError> {
    let mut pages = client.list_objects_v2().bucket(bucket).prefix(prefix).into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|err| list_error(bucket, prefix, crate::aws::describe(&err)))?;
        for object in page.contents() {
            let Some(key) = object.key() else { continue };
            if filters.keeps(key) {
                out.push(Listed {
                    key: key.to_owned(),
                    size: object.size().unwrap_or(0).max(0) as u64,
                    etag: object.e_tag().map(normalize_etag).unwrap_or_default(),
                });
            }
        }
    }
    Ok(())
}

fn list_error(bucket: &str, prefix: &str, err: impl std::fmt::Display) -> ListError {
    ListError { bucket: bucket.to_owned(), prefix: prefix.to_owned(), message: err.to_string() }
}
