//! Every Prometheus metric trailwatch exports, in one place: names carry units, labels are bounded enums.
//!
//! Architecture invariant: no label ever holds an ARN, key, IP, account, bucket or path. Metrics are updated per
//! file or per batch, never per record.

use prometheus::{Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

use crate::parse::{RecordCounts, SkipReason};

pub struct Metrics {
    registry: Registry,
    /// Every registered metric's descriptor (name, help, label names), for the catalogue.
    descs: Vec<prometheus::core::Desc>,
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
    pub http_connections_refused: IntCounter,
    pub spool_unreadable_dirs: IntCounter,
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
    /// Delivered alerts deleted by retention (`alerts.retention_days`).
    pub alerts_pruned: IntCounter,
    /// Periodic findings passes completed (whether they raised anything or not).
    pub findings_runs: IntCounter,
    /// Deliveries accepted, by sink kind.
    pub alerts_sent: IntCounterVec,
    /// Delivery attempts that failed (retried with backoff), by sink kind.
    pub alert_delivery_failures: IntCounterVec,
    /// Undelivered (alert, sink) pairs.
    pub outbox_depth: IntGauge,
    /// Seconds from the commit that raised an alert to its delivery.
    pub alert_latency: Histogram,
    /// State gauges, refreshed periodically from the store (see [`StateStats`]).
    pub identities: IntGauge,
    pub principal_actions: IntGauge,
    pub inactive_identities: IntGauge,
    pub access_keys: IntGauge,
    pub ledger_files: IntGauge,
    pub quarantined_files: IntGauge,
    pub newest_event_timestamp: IntGauge,
    /// Process gauges, read from `/proc/self` when scraped.
    process_resident_memory: IntGauge,
    process_cpu: prometheus::Counter,
    process_threads: IntGauge,
}

/// One metric as the catalogue lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricInfo {
    pub name: String,
    /// `counter`, `gauge` or `histogram`.
    pub kind: &'static str,
    pub help: String,
    pub labels: Vec<String>,
}

/// The state's size, as the periodic refresh reads it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateStats {
    pub identities: i64,
    pub principal_actions: i64,
    pub inactive_identities: i64,
    pub access_keys: i64,
    pub ledger_files: i64,
    pub quarantined_files: i64,
    pub newest_event: Option<i64>,
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
        let spool_unreadable_dirs = IntCounter::new(
            "trailwatch_spool_unreadable_directories_total",
            "Directories under the spool that could not be read and were skipped, counted at every scan",
        )
        .expect("valid metric");
        let http_connections_refused = IntCounter::new(
            "trailwatch_http_connections_refused_total",
            "HTTP connections closed on arrival because the server already had its maximum open",
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
        let alerts_pruned = counter(
            "trailwatch_alerts_pruned_total",
            "Delivered alerts deleted from the state file once older than alerts.retention_days",
        );
        let findings_runs = counter(
            "trailwatch_findings_runs_total",
            "Periodic findings passes completed, whether they raised anything or not",
        );
        let alerts_sent =
            counter_vec("trailwatch_alerts_sent_total", "Alert deliveries accepted, by sink kind", "sink");
        let alert_delivery_failures = counter_vec(
            "trailwatch_alert_delivery_failures_total",
            "Alert delivery attempts that failed, or found their stored alert unreadable, and will be retried, by sink kind",
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
        let gauge = |name: &str, help: &str| IntGauge::new(name, help).expect("valid metric");
        let identities = gauge("trailwatch_identities", "Identities (principals) in the state");
        let principal_actions =
            gauge("trailwatch_principal_actions", "Distinct principal and IAM action pairs in the state");
        let inactive_identities = gauge(
            "trailwatch_inactive_identities",
            "Identities (not AWS services or accounts) with no event for findings.inactive_days",
        );
        let access_keys = gauge("trailwatch_access_keys", "Long-term access keys seen in events");
        let ledger_files =
            gauge("trailwatch_ledger_files", "Files recorded in the ledger (applied once, skipped after)");
        let quarantined_files = gauge(
            "trailwatch_quarantined_files",
            "Files quarantined because reading them killed the process (skipped until their row is deleted)",
        );
        let newest_event_timestamp = gauge(
            "trailwatch_newest_event_timestamp_seconds",
            "Unix time of the newest event in the state (its time, not when it arrived)",
        );
        let process_resident_memory =
            gauge("trailwatch_process_resident_memory_bytes", "Resident memory of the trailwatch process");
        let process_cpu = prometheus::Counter::new(
            "trailwatch_process_cpu_seconds_total",
            "CPU time (user and system) the trailwatch process has used",
        )
        .expect("valid metric");
        let process_start_time =
            gauge("trailwatch_process_start_time_seconds", "Unix time the trailwatch process started");
        let process_threads = gauge("trailwatch_process_threads", "Threads of the trailwatch process");
        process_start_time.set(crate::time::now() - process_uptime_secs().unwrap_or(0));
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
            Box::new(http_connections_refused.clone()),
            Box::new(spool_unreadable_dirs.clone()),
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
            Box::new(alerts_pruned.clone()),
            Box::new(findings_runs.clone()),
            Box::new(alerts_sent.clone()),
            Box::new(alert_delivery_failures.clone()),
            Box::new(outbox_depth.clone()),
            Box::new(alert_latency.clone()),
            Box::new(identities.clone()),
            Box::new(principal_actions.clone()),
            Box::new(inactive_identities.clone()),
            Box::new(access_keys.clone()),
            Box::new(ledger_files.clone()),
            Box::new(quarantined_files.clone()),
            Box::new(newest_event_timestamp.clone()),
            Box::new(process_resident_memory.clone()),
            Box::new(process_cpu.clone()),
            Box::new(process_start_time.clone()),
            Box::new(process_threads.clone()),
        ];
        let descs = collectors.iter().flat_map(|c| c.desc().into_iter().cloned()).collect();
        for c in collectors {
            registry.register(c).expect("metric names are unique");
        }
        Metrics {
            registry,
            descs,
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
            http_connections_refused,
            spool_unreadable_dirs,
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
            alerts_pruned,
            findings_runs,
            alerts_sent,
            alert_delivery_failures,
            outbox_depth,
            alert_latency,
            identities,
            principal_actions,
            inactive_identities,
            access_keys,
            ledger_files,
            quarantined_files,
            newest_event_timestamp,
            process_resident_memory,
            process_cpu,
            process_threads,
        }
    }

    /// Every metric this process exports: the catalogue `docs/metrics.md` documents (a test keeps them equal).
    pub fn catalogue(&self) -> Vec<MetricInfo> {
        let mut out: Vec<MetricInfo> = self
            .registry
            .gather()
            .iter()
            .map(|family| MetricInfo {
                name: family.name().to_owned(),
                kind: match family.get_field_type() {
                    prometheus::proto::MetricType::COUNTER => "counter",
                    prometheus::proto::MetricType::GAUGE => "gauge",
                    prometheus::proto::MetricType::HISTOGRAM => "histogram",
                    _ => "untyped",
                },
                help: family.help().to_owned(),
                labels: Vec::new(),
            })
            .collect();
        // Label names come from the descriptors: a vector with no child yet is not gathered.
        let mut labels: std::collections::BTreeMap<String, (String, Vec<String>)> = Default::default();
        for desc in &self.descs {
            labels.insert(desc.fq_name.clone(), (desc.help.clone(), desc.variable_labels.clone()));
        }
        for (name, (help, variable)) in &labels {
            match out.iter_mut().find(|m| &m.name == name) {
                Some(m) => m.labels = variable.clone(),
                None => out.push(MetricInfo {
                    name: name.clone(),
                    // Not gathered: a labelled vector with no child yet, and every labelled metric here is a
                    // counter (a test checks the catalogue against the docs, which say each one's type).
                    kind: "counter",
                    help: help.clone(),
                    labels: variable.clone(),
                }),
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Sets the state gauges.
    pub fn set_state(&self, stats: &StateStats) {
        self.identities.set(stats.identities);
        self.principal_actions.set(stats.principal_actions);
        self.inactive_identities.set(stats.inactive_identities);
        self.access_keys.set(stats.access_keys);
        self.ledger_files.set(stats.ledger_files);
        self.quarantined_files.set(stats.quarantined_files);
        if let Some(newest) = stats.newest_event {
            self.newest_event_timestamp.set(newest);
        }
    }

    /// Reads the process gauges from `/proc/self` (Linux; elsewhere they stay 0).
    fn refresh_process(&self) {
        if let Some(stat) = std::fs::read_to_string("/proc/self/stat").ok().as_deref().and_then(proc_stat) {
            let page = 4096;
            self.process_resident_memory.set(stat.rss_pages * page);
            self.process_threads.set(stat.threads);
            let cpu = stat.cpu_ticks as f64 / 100.0;
            let seen = self.process_cpu.get();
            if cpu > seen {
                self.process_cpu.inc_by(cpu - seen);
            }
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
        self.refresh_process();
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// The fields of `/proc/self/stat` the process gauges need.
struct ProcStat {
    cpu_ticks: u64,
    threads: i64,
    rss_pages: i64,
    start_ticks: u64,
}

/// Parses `/proc/<pid>/stat`: fields after the command name (which may hold spaces, so it is skipped up to its
/// closing parenthesis). Clock ticks are 100 per second on Linux.
fn proc_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime and stime are fields 14 and 15, threads 20, starttime 22, rss 24.
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    Some(ProcStat {
        cpu_ticks: field(14)? + field(15)?,
        threads: field(20)? as i64,
        start_ticks: field(22)?,
        rss_pages: field(24)? as i64,
    })
}

/// Seconds since the process started (from `/proc`), to date its start.
fn process_uptime_secs() -> Option<i64> {
    let stat = proc_stat(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
    let uptime: f64 = std::fs::read_to_string("/proc/uptime").ok()?.split_whitespace().next()?.parse().ok()?;
    Some((uptime - stat.start_ticks as f64 / 100.0).max(0.0) as i64)
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// The catalogue as the Markdown table `docs/metrics.md` holds between its markers.
pub fn catalogue_table(catalogue: &[MetricInfo]) -> String {
    let mut out = String::from("| metric | type | labels | meaning |\n| --- | --- | --- | --- |\n");
    for m in catalogue {
        let labels = if m.labels.is_empty() { "-".to_owned() } else { m.labels.join(", ") };
        out.push_str(&format!("| `{}` | {} | {} | {} |\n", m.name, m.kind, labels, m.help));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Label names allowed: bounded enums only, never an ARN, key, IP, account or bucket.
    const BOUNDED_LABELS: &[&str] = &["outcome", "reason", "rule", "mode", "severity", "sink"];

    #[test]
    fn the_catalogue_follows_the_naming_conventions() {
        for m in Metrics::new().catalogue() {
            assert!(m.name.starts_with("trailwatch_"), "{}", m.name);
            assert_eq!(
                m.kind == "counter",
                m.name.ends_with("_total"),
                "{}: counters and only counters end in _total",
                m.name
            );
            if m.kind == "histogram" {
                assert!(m.name.ends_with("_seconds"), "{}: histograms here are latencies and lags", m.name);
            }
            for label in &m.labels {
                assert!(BOUNDED_LABELS.contains(&label.as_str()), "{}: label {label} is not a bounded enum", m.name);
            }
            assert!(!m.help.is_empty(), "{}", m.name);
        }
    }

    #[test]
    fn docs_metrics_md_lists_exactly_the_catalogue() {
        let docs = include_str!("../docs/metrics.md");
        let (begin, end) = ("<!-- catalogue:begin -->\n", "<!-- catalogue:end -->");
        let start = docs.find(begin).expect("docs/metrics.md has the begin marker") + begin.len();
        let stop = docs.find(end).expect("docs/metrics.md has the end marker");
        let want = catalogue_table(&Metrics::new().catalogue());
        assert!(docs[start..stop] == want, "docs/metrics.md is out of date; its table should be:\n{want}");
    }

    #[test]
    fn proc_stat_fields_are_read_after_the_command_name() {
        let line = "4242 (trail watch (x)) S 1 4242 4242 0 -1 4194560 1500 0 0 0 250 50 0 0 20 0 7 0 123456 1000000 2560 18446744073709551615";
        let stat = proc_stat(line).unwrap();
        assert_eq!((stat.cpu_ticks, stat.threads, stat.start_ticks, stat.rss_pages), (300, 7, 123456, 2560));
    }
}
