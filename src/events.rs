//! Notable occurrences as small event types: each one's `emit` writes its log line (rate-limited per kind, see
//! [`crate::logs::allow`]) and bumps its metric together, as Vector's internal events do, so that the two never
//! drift apart and a new occurrence is added in one place.
//!
//! Events carry only what may be shown: reasons are bounded labels, errors are our own messages (which name the
//! object, never a secret), and no value from a log file becomes a label.

use std::fmt::Display;
use std::time::Duration;

use crate::metrics::Metrics;

/// Something worth a log line and a metric.
pub trait InternalEvent {
    fn emit(self, metrics: &Metrics);
}

/// A file that will not be applied; `reason` is its bounded label.
pub struct FileRejected<'a> {
    pub reason: &'static str,
    pub error: &'a dyn Display,
    pub read_bytes: u64,
}

impl InternalEvent for FileRejected<'_> {
    fn emit(self, metrics: &Metrics) {
        if crate::logs::allow("file_rejected") {
            tracing::warn!(reason = self.reason, "rejected {}", self.error);
        }
        metrics.read_bytes.inc_by(self.read_bytes);
        metrics.files.with_label_values(&["rejected"]).inc();
        metrics.file_rejections.with_label_values(&[self.reason]).inc();
    }
}

/// A sink did not take an alert; it is retried after `retry_in`.
pub struct AlertDeliveryFailed<'a> {
    pub sink_kind: &'static str,
    pub alert_id: &'a str,
    pub attempts: u32,
    pub retry_in: Duration,
    pub reason: &'static str,
    pub error: &'a dyn Display,
}

impl InternalEvent for AlertDeliveryFailed<'_> {
    fn emit(self, metrics: &Metrics) {
        if crate::logs::allow("alert_delivery_failed") {
            tracing::warn!(
                alert = %self.alert_id, attempts = self.attempts, retry_in_ms = self.retry_in.as_millis() as u64,
                reason = self.reason, "alert delivery failed: {}", self.error
            );
        }
        metrics.alert_delivery_failures.with_label_values(&[self.sink_kind]).inc();
    }
}

/// A delivery whose stored alert cannot be read; it waits the longest backoff and stays pending.
pub struct AlertUnreadable<'a> {
    pub sink_kind: &'static str,
    pub sink: &'a str,
    pub alert_id: &'a str,
    pub retry_in: Duration,
    pub reason: &'a str,
}

impl InternalEvent for AlertUnreadable<'_> {
    fn emit(self, metrics: &Metrics) {
        if crate::logs::allow("alert_unreadable") {
            tracing::warn!(
                alert = %self.alert_id, sink = %self.sink, retry_in_ms = self.retry_in.as_millis() as u64,
                "alert delivery skipped: {}", self.reason
            );
        }
        metrics.alert_delivery_failures.with_label_values(&[self.sink_kind]).inc();
    }
}

/// An SQS message body that is not a notification trailwatch understands; left for the dead-letter queue.
pub struct SqsBodyUnreadable<'a> {
    pub message_id: &'a str,
    pub receive_count: u32,
    pub reason: &'static str,
    pub error: &'a dyn Display,
}

impl InternalEvent for SqsBodyUnreadable<'_> {
    fn emit(self, metrics: &Metrics) {
        metrics.sqs_unreadable.with_label_values(&[self.reason]).inc();
        if crate::logs::allow("sqs_unreadable") {
            tracing::warn!(
                message_id = %self.message_id,
                receive_count = self.receive_count,
                reason = self.reason,
                "cannot read notification, leaving it for the dead-letter queue: {}", self.error
            );
        }
    }
}

/// An S3 object that could not be fetched for a reason that may pass; its messages come back.
pub struct S3FetchFailed<'a> {
    pub reason: &'static str,
    pub error: &'a dyn Display,
}

impl InternalEvent for S3FetchFailed<'_> {
    fn emit(self, metrics: &Metrics) {
        metrics.s3_fetch_failures.with_label_values(&[self.reason]).inc();
        if crate::logs::allow("s3_fetch_failed") {
            tracing::warn!(reason = self.reason, "fetch failed, leaving its messages for redelivery: {}", self.error);
        }
    }
}

/// SQS deletes that failed (`failed` of them): those messages are delivered again.
pub struct SqsDeleteFailed<'a> {
    pub failed: usize,
    /// The whole request failed, and why; `None` when only some entries did.
    pub error: Option<&'a dyn Display>,
}

impl InternalEvent for SqsDeleteFailed<'_> {
    fn emit(self, metrics: &Metrics) {
        metrics.sqs_delete_failures.inc_by(self.failed as u64);
        match self.error {
            Some(err) => tracing::error!("delete failed, the messages will be delivered again: {err}"),
            None => tracing::warn!(failed = self.failed, "some deletes failed: those messages will be delivered again"),
        }
    }
}

/// A scan of the spool that failed; logged when the error first appears (or changes), counted every time.
pub struct SpoolScanFailed<'a> {
    pub error: &'a str,
    /// The error the previous scan reported, if it failed too.
    pub previous: Option<&'a str>,
}

impl InternalEvent for SpoolScanFailed<'_> {
    fn emit(self, metrics: &Metrics) {
        metrics.spool_scan_failures.inc();
        if self.previous != Some(self.error) {
            tracing::error!("cannot scan the spool, will retry: {}", self.error);
        }
    }
}
