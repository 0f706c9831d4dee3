//! Every Prometheus metric trailwatch exports, in one place: names carry units, labels are bounded enums.
//!
//! Architecture invariant: no label ever holds an ARN, key, IP, account, bucket or path. Metrics are updated per
//! file or per batch, never per record.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

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
    /// Digest files taken in, by outcome (`verified`, `unsigned`, `invalid`; counted when settled).
    pub integrity_digests: IntCounterVec,
    /// Log files hashed for validation.
    pub integrity_log_files_hashed: IntCounter,
    /// From the last integrity check, over its look-back: log files by outcome (`valid`, `altered`, `missing`,
    /// `unlisted`, `pending`), digests by outcome (`verified`, `unsigned`, `unverified`, `invalid`, `missing`).
    pub integrity_log_files: IntGaugeVec,
    pub integrity_digest_files: IntGaugeVec,
    /// Chains by state: `current` (newest valid digest within the grace period of now) or `stale`.
    pub integrity_chains: IntGaugeVec,
    /// The oldest, over chains, of the age of a chain's newest valid digest (no per-chain label: chains carry
    /// accounts and regions).
    pub integrity_newest_valid_digest_age: IntGauge,
    pub integrity_checks: IntCounter,
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
    process_start_time: IntGauge,
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

/// Registers each metric as it is made, keeping its descriptor for the catalogue.
#[derive(Default)]
struct Registrar {
    registry: Registry,
    descs: Vec<prometheus::core::Desc>,
}

impl Registrar {
    fn add<C: prometheus::core::Collector + Clone + 'static>(&mut self, collector: C) -> C {
        self.descs.extend(collector.desc().into_iter().cloned());
        self.registry.register(Box::new(collector.clone())).expect("metric names are unique");
        collector
    }

    fn counter(&mut self, name: &str, help: &str) -> IntCounter {
        self.add(IntCounter::new(name, help).expect("valid metric"))
    }

    fn counter_vec(&mut self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.add(IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    fn gauge_vec(&mut self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.add(IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    fn gauge(&mut self, name: &str, help: &str) -> IntGauge {
        self.add(IntGauge::new(name, help).expect("valid metric"))
    }

    fn histogram(&mut self, name: &str, help: &str, buckets: &[f64]) -> Histogram {
        self.add(Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec())).expect("valid metric"))
    }
}

/// Buckets of the file, commit, fetch and delivery timings, and of the lags.
const FILE_SECS: [f64; 13] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
const COMMIT_SECS: [f64; 13] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
const FETCH_SECS: [f64; 12] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
const LAG_SECS: [f64; 14] =
    [1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0];
const DELIVERY_SECS: [f64; 14] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

impl Metrics {
    /// The table of every metric: field, name, help and labels, one line each.
    pub fn new() -> Metrics {
        let mut r = Registrar::default();
        #[rustfmt::skip]
        let metrics = Metrics {
            files: r.counter_vec("trailwatch_files_total", "CloudTrail files handled, by outcome", &["outcome"]),
            file_rejections: r.counter_vec("trailwatch_file_rejections_total", "Files that could not be applied, by reason", &["reason"]),
            records: r.counter("trailwatch_records_total", "Records read from applied files"),
            records_skipped: r.counter_vec("trailwatch_records_skipped_total", "Records skipped, by reason", &["reason"]),
            insight_events: r.counter("trailwatch_insight_events_total", "CloudTrail Insights events seen"),
            read_bytes: r.counter("trailwatch_read_bytes_total", "Bytes read from files, as stored"),
            decoded_bytes: r.counter("trailwatch_decoded_bytes_total", "Bytes of JSON after decompression"),
            file_duration: r.histogram("trailwatch_file_processing_duration_seconds", "Read, decode and parse time per file", &FILE_SECS),
            commit_duration: r.histogram("trailwatch_commit_duration_seconds", "Time to commit one batch to the state store", &COMMIT_SECS),
            commit_failures: r.counter("trailwatch_commit_failures_total", "Batches whose commit failed"),
            last_commit_timestamp: r.gauge("trailwatch_last_commit_timestamp_seconds", "Unix time of the last successful commit of applied files"),
            spool_scan_failures: r.counter("trailwatch_spool_scan_failures_total", "Scans of the spool directory that failed (they are retried)"),
            spool_unreadable_dirs: r.counter("trailwatch_spool_unreadable_directories_total", "Directories under the spool that could not be read and were skipped, counted at every scan"),
            http_connections_refused: r.counter("trailwatch_http_connections_refused_total", "HTTP connections closed on arrival because the server already had its maximum open"),
            sqs_received: r.counter("trailwatch_sqs_messages_received_total", "SQS messages received (deliveries)"),
            sqs_deleted: r.counter("trailwatch_sqs_messages_deleted_total", "SQS messages deleted after being handled"),
            sqs_delete_failures: r.counter("trailwatch_sqs_delete_failures_total", "SQS deletes that failed (the message comes back)"),
            sqs_ignored: r.counter_vec("trailwatch_sqs_ignored_total", "Notification parts handled without a fetch, by reason", &["reason"]),
            sqs_unreadable: r.counter_vec("trailwatch_sqs_unreadable_messages_total", "Message bodies that could not be read, by reason (left for the dead-letter queue)", &["reason"]),
            sqs_visibility_extensions: r.counter("trailwatch_sqs_visibility_extensions_total", "Visibility timeouts extended for in-flight messages"),
            s3_fetched: r.counter("trailwatch_s3_objects_fetched_total", "S3 objects fetched"),
            s3_fetched_bytes: r.counter("trailwatch_s3_fetched_bytes_total", "Bytes of S3 objects fetched"),
            s3_fetch_failures: r.counter_vec("trailwatch_s3_fetch_failures_total", "Fetches that failed and left their messages for redelivery, by reason", &["reason"]),
            s3_fetch_duration: r.histogram("trailwatch_s3_fetch_duration_seconds", "Time to fetch one S3 object", &FETCH_SECS),
            ledger_duplicates: r.counter("trailwatch_ledger_duplicates_total", "Objects found in the ledger and not applied again"),
            event_lag: r.histogram("trailwatch_event_lag_seconds", "Per committed file: seconds between its newest event and its commit", &LAG_SECS),
            sqs_message_lag: r.histogram("trailwatch_sqs_message_lag_seconds", "Per received message: seconds since it was sent", &LAG_SECS),
            rule_matches: r.counter_vec("trailwatch_rule_matches_total", "Rule matches, by rule id and mode (live or dry_run)", &["rule", "mode"]),
            alerts_raised: r.counter_vec("trailwatch_alerts_raised_total", "New alerts raised, by severity", &["severity"]),
            alerts_deduplicated: r.counter("trailwatch_alerts_deduplicated_total", "Alerts merged into an alert already raised within its dedup window (not sent again)"),
            alerts_suppressed: r.counter("trailwatch_alerts_suppressed_total", "Alerts dropped by a suppression"),
            alerts_pruned: r.counter("trailwatch_alerts_pruned_total", "Delivered alerts deleted from the state file once older than alerts.retention_days"),
            findings_runs: r.counter("trailwatch_findings_runs_total", "Periodic findings passes completed, whether they raised anything or not"),
            integrity_digests: r.counter_vec("trailwatch_integrity_digests_total", "CloudTrail digest files taken in, by outcome (verified, unsigned, invalid), counted once their signature is settled", &["outcome"]),
            integrity_log_files_hashed: r.counter("trailwatch_integrity_log_files_hashed_total", "Log files hashed for validation as they were decoded"),
            integrity_log_files: r.gauge_vec("trailwatch_integrity_log_files", "Log files in the last integrity check's look-back, by outcome (valid, altered, missing, unlisted, pending, unexamined: over integrity.max_untrusted_per_check)", &["outcome"]),
            integrity_digest_files: r.gauge_vec("trailwatch_integrity_digest_files", "Digest files in the last integrity check's look-back, by outcome (verified, unsigned, unverified, invalid, missing, unexamined: over integrity.max_untrusted_per_check)", &["outcome"]),
            integrity_chains: r.gauge_vec("trailwatch_integrity_chains", "Digest chains (trail, account, region) by state: current (newest valid digest within integrity.digest_grace_secs of now) or stale", &["state"]),
            integrity_newest_valid_digest_age: r.gauge("trailwatch_integrity_newest_valid_digest_age_seconds", "Over all chains, the largest age of a chain's newest valid digest (seconds since its end time)"),
            integrity_checks: r.counter("trailwatch_integrity_checks_total", "Integrity checks completed"),
            alerts_sent: r.counter_vec("trailwatch_alerts_sent_total", "Alert deliveries accepted, by sink kind", &["sink"]),
            alert_delivery_failures: r.counter_vec("trailwatch_alert_delivery_failures_total", "Alert delivery attempts that failed, or found their stored alert unreadable, and will be retried, by sink kind", &["sink"]),
            outbox_depth: r.gauge("trailwatch_alert_outbox_depth", "Alert deliveries (alert and sink) pending"),
            alert_latency: r.histogram("trailwatch_alert_latency_seconds", "Seconds from the commit of the file that raised an alert to the alert's delivery", &DELIVERY_SECS),
            identities: r.gauge("trailwatch_identities", "Identities (principals) in the state"),
            principal_actions: r.gauge("trailwatch_principal_actions", "Distinct principal and IAM action pairs in the state"),
            inactive_identities: r.gauge("trailwatch_inactive_identities", "Identities (not AWS services or accounts) with no event for findings.inactive_days"),
            access_keys: r.gauge("trailwatch_access_keys", "Long-term access keys seen in events"),
            ledger_files: r.gauge("trailwatch_ledger_files", "Files recorded in the ledger (applied once, skipped after)"),
            quarantined_files: r.gauge("trailwatch_quarantined_files", "Files quarantined because reading them killed the process (skipped until their row is deleted)"),
            newest_event_timestamp: r.gauge("trailwatch_newest_event_timestamp_seconds", "Unix time of the newest event in the state (its time, not when it arrived)"),
            process_resident_memory: r.gauge("trailwatch_process_resident_memory_bytes", "Resident memory of the trailwatch process"),
            process_cpu: r.add(prometheus::Counter::new("trailwatch_process_cpu_seconds_total", "CPU time (user and system) the trailwatch process has used").expect("valid metric")),
            process_start_time: r.gauge("trailwatch_process_start_time_seconds", "Unix time the trailwatch process started"),
            process_threads: r.gauge("trailwatch_process_threads", "Threads of the trailwatch process"),
            // Last: every metric above is in them by now.
            registry: std::mem::take(&mut r.registry),
            descs: std::mem::take(&mut r.descs),
        };
        metrics.process_start_time.set(crate::time::now() - process_uptime_secs().unwrap_or(0));
        // Every known label value from the start, so that dashboards see zeros rather than gaps.
        for severity in crate::detect::rule::Severity::ALL {
            metrics.alerts_raised.with_label_values(&[severity.as_str()]);
        }
        for outcome in ["applied", "duplicate", "rejected"] {
            metrics.files.with_label_values(&[outcome]);
        }
        for reason in SkipReason::ALL {
            metrics.records_skipped.with_label_values(&[reason.kind()]);
        }
        for outcome in ["verified", "unsigned", "invalid"] {
            metrics.integrity_digests.with_label_values(&[outcome]);
        }
        for outcome in ["verified", "unsigned", "unverified", "invalid", "missing"] {
            metrics.integrity_digest_files.with_label_values(&[outcome]);
        }
        for outcome in ["valid", "altered", "missing", "unlisted", "pending"] {
            metrics.integrity_log_files.with_label_values(&[outcome]);
        }
        for state in ["current", "stale"] {
            metrics.integrity_chains.with_label_values(&[state]);
        }
        metrics
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
    const BOUNDED_LABELS: &[&str] = &["outcome", "reason", "rule", "mode", "severity", "sink", "state"];

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
