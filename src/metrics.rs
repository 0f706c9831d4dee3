//! Every Prometheus metric trailwatch exports, in one place: names carry units, labels are bounded enums.
//!
//! Architecture invariant: no label ever holds an ARN, key, IP, account, bucket or path. Metrics are updated per
//! file or per batch, never per record.

use prometheus::{Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

use crate::parse::{RecordCounts, SkipReason};

pub struct Metrics {
    registry: Registry,
    /// Files by outcome: `applied`, `duplicate` (already in the ledger), `rejected`.
    pub files: IntCounterVec,
    /// Rejected files by reason (`FileError::kind`).
    pub file_rejections: IntCounterVec,
    pub records: IntCounter,
    pub records_skipped: IntCounterVec,
    pub insight_events: IntCounter,
    pub read_bytes: IntCounter,
    pub decoded_bytes: IntCounter,
    pub file_duration: Histogram,
    pub commit_duration: Histogram,
    pub commit_failures: IntCounter,
    pub last_commit_timestamp: IntGauge,
    pub spool_scan_failures: IntCounter,
    pub sqs_received: IntCounter,
    pub sqs_deleted: IntCounter,
    pub sqs_delete_failures: IntCounter,
    /// Messages (or parts of them) handled without fetching, by `Skip::kind`.
    pub sqs_ignored: IntCounterVec,
    /// Bodies that could not be read, by `BodyError::kind`; left for the redrive policy.
    pub sqs_unreadable: IntCounterVec,
    pub sqs_visibility_extensions: IntCounter,
    pub s3_fetched: IntCounter,
    pub s3_fetched_bytes: IntCounter,
    /// Fetches that failed and left their messages for redelivery, by `FetchError::kind`.
    pub s3_fetch_failures: IntCounterVec,
    pub s3_fetch_duration: Histogram,
    /// Objects recognised in the ledger (key and ETag) and not applied again.
    pub ledger_duplicates: IntCounter,
    /// Per committed file: now − the newest `eventTime` in it (CloudTrail's delivery delay plus ours).
    pub event_lag: Histogram,
    /// Per received message: now − the time it was sent.
    pub sqs_message_lag: Histogram,
    /// Rule matches by rule id and mode (`live`, `dry_run`); a correlation counts when its condition holds.
    pub rule_matches: IntCounterVec,
    /// New alerts written to the outbox, by severity.
    pub alerts_raised: IntCounterVec,
    /// Alerts merged into one already raised (same id, within the dedup window): not sent again.
    pub alerts_deduplicated: IntCounter,
    /// Alerts dropped by a suppression.
    pub alerts_suppressed: IntCounter,
    /// Deliveries accepted, by sink kind.
    pub alerts_sent: IntCounterVec,
    /// Delivery attempts that failed (retried with backoff), by sink kind.
    pub alert_delivery_failures: IntCounterVec,
    /// Undelivered (alert, sink) pairs.
    pub outbox_depth: IntGauge,
    /// Seconds from the commit that raised an alert to its delivery.
    pub alert_latency: Histogram,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let files = IntCounterVec::new(
            Opts::new("trailwatch_files_total", "CloudTrail files handled, by outcome"),
            &["outcome"],
        )
        .expect("valid metric");
        let file_rejections = IntCounterVec::new(
            Opts::new("trailwatch_file_rejections_total", "Files that could not be applied, by reason"),
            &["reason"],
        )
        .expect("valid metric");
        let records =
            IntCounter::new("trailwatch_records_total", "Records read from applied files").expect("valid metric");
        let records_skipped = IntCounterVec::new(
            Opts::new("trailwatch_records_skipped_total", "Records skipped, by reason"),
            &["reason"],
        )
        .expect("valid metric");
        let insight_events = IntCounter::new("trailwatch_insight_events_total", "CloudTrail Insights events seen")
            .expect("valid metric");
        let read_bytes =
            IntCounter::new("trailwatch_read_bytes_total", "Bytes read from files, as stored").expect("valid metric");
        let decoded_bytes = IntCounter::new("trailwatch_decoded_bytes_total", "Bytes of JSON after decompression")
            .expect("valid metric");
        let file_duration = Histogram::with_opts(
            HistogramOpts::new("trailwatch_file_processing_duration_seconds", "Read, decode and parse time per file")
                .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]),
        )
        .expect("valid metric");
        let commit_duration = Histogram::with_opts(
            HistogramOpts::new("trailwatch_commit_duration_seconds", "Time to commit one batch to the state store")
                .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
        )
        .expect("valid metric");
        let commit_failures =
            IntCounter::new("trailwatch_commit_failures_total", "Batches whose commit failed").expect("valid metric");
        let last_commit_timestamp = IntGauge::new(
            "trailwatch_last_commit_timestamp_seconds",
            "Unix time of the last successful commit of applied files",
        )
        .expect("valid metric");
        let spool_scan_failures = IntCounter::new(
            "trailwatch_spool_scan_failures_total",
            "Scans of the spool directory that failed (they are retried)",
        )
        .expect("valid metric");
        let counter = |name: &str, help: &str| IntCounter::new(name, help).expect("valid metric");
        let counter_vec = |name: &str, help: &str, label: &str| {
            IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric")
        };
        let sqs_received = counter("trailwatch_sqs_messages_received_total", "SQS messages received (deliveries)");
        let sqs_deleted = counter("trailwatch_sqs_messages_deleted_total", "SQS messages deleted after being handled");
        let sqs_delete_failures =
            counter("trailwatch_sqs_delete_failures_total", "SQS deletes that failed (the message comes back)");
        let sqs_ignored = counter_vec(
            "trailwatch_sqs_ignored_total",
            "Notification parts handled without a fetch, by reason",
            "reason",
        );
        let sqs_unreadable = counter_vec(
            "trailwatch_sqs_unreadable_messages_total",
            "Message bodies that could not be read, by reason (left for the dead-letter queue)",
            "reason",
        );
        let sqs_visibility_extensions = counter(
            "trailwatch_sqs_visibility_extensions_total",
            "Visibility timeouts extended for in-flight messages",
        );
        let s3_fetched = counter("trailwatch_s3_objects_fetched_total", "S3 objects fetched");
        let s3_fetched_bytes = counter("trailwatch_s3_fetched_bytes_total", "Bytes of S3 objects fetched");
        let s3_fetch_failures = counter_vec(
            "trailwatch_s3_fetch_failures_total",
            "Fetches that failed and left their messages for redelivery, by reason",
            "reason",
        );
        let s3_fetch_duration = Histogram::with_opts(
            HistogramOpts::new("trailwatch_s3_fetch_duration_seconds", "Time to fetch one S3 object")
                .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
        )
        .expect("valid metric");
        let ledger_duplicates =
            counter("trailwatch_ledger_duplicates_total", "Objects found in the ledger and not applied again");
        let lag_buckets =
            vec![1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0];
        let event_lag = Histogram::with_opts(
            HistogramOpts::new(
                "trailwatch_event_lag_seconds",
                "Per committed file: seconds between its newest event and its commit",
            )
            .buckets(lag_buckets.clone()),
        )
        .expect("valid metric");
        let sqs_message_lag = Histogram::with_opts(
            HistogramOpts::new("trailwatch_sqs_message_lag_seconds", "Per received message: seconds since it was sent")
                .buckets(lag_buckets),
        )
        .expect("valid metric");
        let rule_matches = IntCounterVec::new(
            Opts::new("trailwatch_rule_matches_total", "Rule matches, by rule id and mode (live or dry_run)"),
            &["rule", "mode"],
        )
        .expect("valid metric");
        let alerts_raised = counter_vec("trailwatch_alerts_raised_total", "New alerts raised, by severity", "severity");
        let alerts_deduplicated = counter(
            "trailwatch_alerts_deduplicated_total",
            "Alerts merged into an alert already raised within its dedup window (not sent again)",
        );
        let alerts_suppressed = counter("trailwatch_alerts_suppressed_total", "Alerts dropped by a suppression");
        let alerts_sent =
            counter_vec("trailwatch_alerts_sent_total", "Alert deliveries accepted, by sink kind", "sink");
        let alert_delivery_failures = counter_vec(
            "trailwatch_alert_delivery_failures_total",
            "Alert delivery attempts that failed and will be retried, by sink kind",
            "sink",
        );
        let outbox_depth = IntGauge::new("trailwatch_alert_outbox_depth", "Alert deliveries (alert and sink) pending")
            .expect("valid metric");
        let alert_latency = Histogram::with_opts(
            HistogramOpts::new(
                "trailwatch_alert_latency_seconds",
                "Seconds from the commit of the file that raised an alert to the alert's delivery",
            )
            .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0]),
        )
        .expect("valid metric");
        for severity in crate::detect::rule::Severity::ALL {
            alerts_raised.with_label_values(&[severity.as_str()]);
        }
        for outcome in ["applied", "duplicate", "rejected"] {
            files.with_label_values(&[outcome]);
        }
        for reason in SkipReason::ALL {
            records_skipped.with_label_values(&[reason.kind()]);
        }
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(files.clone()),
            Box::new(file_rejections.clone()),
            Box::new(records.clone()),
            Box::new(records_skipped.clone()),
            Box::new(insight_events.clone()),
            Box::new(read_bytes.clone()),
            Box::new(decoded_bytes.clone()),
            Box::new(file_duration.clone()),
            Box::new(commit_duration.clone()),
            Box::new(commit_failures.clone()),
            Box::new(last_commit_timestamp.clone()),
            Box::new(spool_scan_failures.clone()),
            Box::new(sqs_received.clone()),
            Box::new(sqs_deleted.clone()),
            Box::new(sqs_delete_failures.clone()),
            Box::new(sqs_ignored.clone()),
            Box::new(sqs_unreadable.clone()),
            Box::new(sqs_visibility_extensions.clone()),
            Box::new(s3_fetched.clone()),
            Box::new(s3_fetched_bytes.clone()),
            Box::new(s3_fetch_failures.clone()),
            Box::new(s3_fetch_duration.clone()),
            Box::new(ledger_duplicates.clone()),
            Box::new(event_lag.clone()),
            Box::new(sqs_message_lag.clone()),
            Box::new(rule_matches.clone()),
            Box::new(alerts_raised.clone()),
            Box::new(alerts_deduplicated.clone()),
            Box::new(alerts_suppressed.clone()),
            Box::new(alerts_sent.clone()),
            Box::new(alert_delivery_failures.clone()),
            Box::new(outbox_depth.clone()),
            Box::new(alert_latency.clone()),
        ];
        for c in collectors {
            registry.register(c).expect("metric names are unique");
        }
        Metrics {
            registry,
            files,
            file_rejections,
            records,
            records_skipped,
            insight_events,
            read_bytes,
            decoded_bytes,
            file_duration,
            commit_duration,
            commit_failures,
            last_commit_timestamp,
            spool_scan_failures,
            sqs_received,
            sqs_deleted,
            sqs_delete_failures,
            sqs_ignored,
            sqs_unreadable,
            sqs_visibility_extensions,
            s3_fetched,
            s3_fetched_bytes,
            s3_fetch_failures,
            s3_fetch_duration,
            ledger_duplicates,
            event_lag,
            sqs_message_lag,
            rule_matches,
            alerts_raised,
            alerts_deduplicated,
            alerts_suppressed,
            alerts_sent,
            alert_delivery_failures,
            outbox_depth,
            alert_latency,
        }
    }

    /// Counts one applied file's records.
    pub fn observe_records(&self, counts: &RecordCounts) {
        self.records.inc_by(counts.records);
        self.insight_events.inc_by(counts.insights);
        for reason in SkipReason::ALL {
            let n = counts.skipped[reason as usize];
            if n > 0 {
                self.records_skipped.with_label_values(&[reason.kind()]).inc_by(n);
            }
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
