//! Logging policy shared by the daemons: repeated error lines are rate-limited per kind (a flood of bad files or
//! a dead webhook must not drown the log), and one summary line per interval says what was done.
//!
//! The lines themselves never carry a secret: tokens, signatures and credentials are not logged anywhere.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::metrics::Metrics;

/// Error lines of one kind allowed per minute; the rest are counted and reported in the next summary.
pub const LINES_PER_MINUTE: u32 = 10;

#[derive(Default)]
struct Window {
    started: Option<Instant>,
    lines: u32,
    suppressed: u64,
}

fn windows() -> &'static Mutex<HashMap<&'static str, Window>> {
    static WINDOWS: OnceLock<Mutex<HashMap<&'static str, Window>>> = OnceLock::new();
    WINDOWS.get_or_init(Default::default)
}

/// Whether a line of `kind` may be logged now (at most [`LINES_PER_MINUTE`] a minute).
pub fn allow(kind: &'static str) -> bool {
    allow_at(kind, Instant::now())
}

fn allow_at(kind: &'static str, now: Instant) -> bool {
    let mut windows = windows().lock().unwrap_or_else(|p| p.into_inner());
    let window = windows.entry(kind).or_default();
    if window.started.is_none_or(|s| now.duration_since(s) >= Duration::from_secs(60)) {
        window.started = Some(now);
        window.lines = 0;
    }
    if window.lines < LINES_PER_MINUTE {
        window.lines += 1;
        true
    } else {
        window.suppressed += 1;
        false
    }
}

/// Lines suppressed since the last call, by kind.
pub fn take_suppressed() -> Vec<(&'static str, u64)> {
    let mut windows = windows().lock().unwrap_or_else(|p| p.into_inner());
    let mut out: Vec<_> = windows
        .iter_mut()
        .filter(|(_, w)| w.suppressed > 0)
        .map(|(k, w)| (*k, std::mem::take(&mut w.suppressed)))
        .collect();
    out.sort();
    out
}

/// The daemons' summary: every `every`, one info line with what happened since the previous one.
pub fn start_summary(
    runtime: &tokio::runtime::Runtime,
    metrics: Arc<Metrics>,
    every: Duration,
    stop: crate::shutdown::Listener,
) -> tokio::task::JoinHandle<()> {
    runtime.spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        let mut last = Totals::read(&metrics);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stop.requested() => return,
            }
            let now = Totals::read(&metrics);
            let suppressed = take_suppressed();
            if now != last || !suppressed.is_empty() {
                tracing::info!(
                    files_applied = now.applied - last.applied,
                    files_rejected = now.rejected - last.rejected,
                    records = now.records - last.records,
                    alerts_raised = now.raised - last.raised,
                    deliveries_sent = now.sent - last.sent,
                    deliveries_failed = now.failed - last.failed,
                    outbox_depth = metrics.outbox_depth.get(),
                    suppressed_log_lines = ?suppressed,
                    "summary"
                );
            }
            last = now;
        }
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Totals {
    applied: u64,
    rejected: u64,
    records: u64,
    raised: u64,
    sent: u64,
    failed: u64,
}

impl Totals {
    fn read(metrics: &Metrics) -> Totals {
        let sum = |family: &prometheus::IntCounterVec| -> u64 {
            use prometheus::core::Collector;
            family.collect().iter().flat_map(|f| f.get_metric()).map(|m| m.get_counter().get_value() as u64).sum()
        };
        Totals {
            applied: metrics.files.with_label_values(&["applied"]).get(),
            rejected: metrics.files.with_label_values(&["rejected"]).get(),
            records: metrics.records.get(),
            raised: sum(&metrics.alerts_raised),
            sent: sum(&metrics.alerts_sent),
            failed: sum(&metrics.alert_delivery_failures),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_gets_its_own_minute_of_lines() {
        let start = Instant::now();
        let allowed = (0..25).filter(|_| allow_at("test_a", start)).count();
        assert_eq!(allowed, LINES_PER_MINUTE as usize);
        assert!(allow_at("test_b", start), "another kind has its own budget");
        assert!(!allow_at("test_a", start + Duration::from_secs(59)));
        assert!(allow_at("test_a", start + Duration::from_secs(61)), "a new minute, a new budget");
        let suppressed: Vec<_> = take_suppressed().into_iter().filter(|(k, _)| k.starts_with("test_")).collect();
        assert_eq!(suppressed, [("test_a", 16)]);
        assert!(take_suppressed().iter().all(|(k, _)| !k.starts_with("test_")), "taken once");
    }
}
