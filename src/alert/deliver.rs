//! Delivery: sends what the outbox holds to the sinks, deleting each (alert, sink) row once the sink accepted it,
//! and backing off exponentially on failure. Runs beside the committer on its own connection to the state file.
//!
//! A restart resends whatever is still pending; receivers see the same alert `id`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::Connection;

use crate::alert::sink::Sink;
use crate::metrics::Metrics;
use crate::state::outbox;

/// Deliveries taken from the outbox per pass.
const PASS_LIMIT: usize = 256;

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

pub struct Deliverer {
    conn: Connection,
    sinks: Arc<Vec<Sink>>,
    metrics: Arc<Metrics>,
    max_backoff: Duration,
    /// Sinks named in the outbox but no longer configured, already logged.
    unknown_logged: std::collections::HashSet<String>,
}

/// What one pass over the due deliveries did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    pub sent: u64,
    pub failed: u64,
}

impl Deliverer {
    pub fn new(conn: Connection, sinks: Arc<Vec<Sink>>, metrics: Arc<Metrics>, max_backoff: Duration) -> Deliverer {
        Deliverer { conn, sinks, metrics, max_backoff, unknown_logged: Default::default() }
    }

    /// Sends every delivery due now, once.
    pub async fn pass(&mut self) -> rusqlite::Result<Pass> {
        let mut pass = Pass::default();
        loop {
            let due = outbox::due(&self.conn, now_ms(), PASS_LIMIT)?;
            if due.is_empty() {
                break;
            }
            let by_name: HashMap<&str, &Sink> = self.sinks.iter().map(|s| (s.name(), s)).collect();
            for pending in &due {
                let Some(sink) = by_name.get(pending.sink.as_str()) else {
                    if self.unknown_logged.insert(pending.sink.clone()) {
                        tracing::warn!(sink = %pending.sink, "outbox names a sink that is not configured; its alerts wait for it");
                    }
                    let retry = now_ms() + self.max_backoff.as_millis() as i64;
                    outbox::failed(&self.conn, &pending.alert.id, &pending.sink, retry, "sink not configured")?;
                    pass.failed += 1;
                    continue;
                };
                let kind = sink.config.kind.as_str();
                match sink.send(&pending.alert).await {
                    Ok(()) => {
                        outbox::delivered(&self.conn, &pending.alert.id, &pending.sink)?;
                        self.metrics.alerts_sent.with_label_values(&[kind]).inc();
                        let latency = (now_ms() - pending.raised_at_ms).max(0) as f64 / 1000.0;
                        self.metrics.alert_latency.observe(latency);
                        tracing::debug!(alert = %pending.alert.id, rule = %pending.alert.rule, sink = %pending.sink, "alert delivered");
                        pass.sent += 1;
                    }
                    Err(err) => {
                        let backoff = backoff(pending.attempts, self.max_backoff);
                        tracing::warn!(
                            alert = %pending.alert.id, attempts = pending.attempts + 1, retry_in_ms = backoff.as_millis() as u64,
                            reason = err.kind(), "alert delivery failed: {err}"
                        );
                        self.metrics.alert_delivery_failures.with_label_values(&[kind]).inc();
                        let retry = now_ms() + backoff.as_millis() as i64;
                        outbox::failed(&self.conn, &pending.alert.id, &pending.sink, retry, &err.to_string())?;
                        pass.failed += 1;
                    }
                }
            }
            if due.len() < PASS_LIMIT {
                break;
            }
        }
        self.metrics.outbox_depth.set(outbox::depth(&self.conn)? as i64);
        Ok(pass)
    }

    /// The daemon's loop: a pass whenever woken (a commit raised alerts) or when a retry falls due, until `stop`.
    pub async fn run(mut self, wake: Arc<tokio::sync::Notify>, stop: Stop) {
        loop {
            if let Err(err) = self.pass().await {
                tracing::error!("alert outbox: {err}");
            }
            let next = outbox::next_due_ms(&self.conn).ok().flatten();
            let sleep = match next {
                Some(due) => Duration::from_millis((due - now_ms()).clamp(10, 60_000) as u64),
                None => Duration::from_secs(60),
            };
            tokio::select! {
                () = wake.notified() => {}
                () = tokio::time::sleep(sleep) => {}
                () = stop.wait() => return,
            }
        }
    }

    /// For `replay`: passes until the outbox is empty or `wait` has passed; returns the deliveries left pending.
    pub async fn drain(&mut self, wait: Duration) -> rusqlite::Result<u64> {
        let deadline = Instant::now() + wait;
        loop {
            self.pass().await?;
            let left = outbox::depth(&self.conn)?;
            if left == 0 {
                return Ok(0);
            }
            let next = outbox::next_due_ms(&self.conn)?.unwrap_or_else(now_ms);
            let sleep = Duration::from_millis((next - now_ms()).max(10) as u64);
            if Instant::now() + sleep > deadline {
                return Ok(left);
            }
            tokio::time::sleep(sleep).await;
        }
    }
}

/// 1 s, 2 s, 4 s, … up to `max`.
pub fn backoff(attempts: u32, max: Duration) -> Duration {
    Duration::from_secs(1u64 << attempts.min(20)).min(max)
}

/// A stop signal that any number of tasks can wait on.
#[derive(Clone)]
pub struct Stop(Arc<tokio::sync::watch::Sender<bool>>, tokio::sync::watch::Receiver<bool>);

impl Stop {
    pub fn new() -> Stop {
        let (tx, rx) = tokio::sync::watch::channel(false);
        Stop(Arc::new(tx), rx)
    }

    pub fn stop(&self) {
        let _ = self.0.send(true);
    }

    pub async fn wait(&self) {
        let mut rx = self.1.clone();
        let _ = rx.wait_for(|stopped| *stopped).await;
    }
}

impl Default for Stop {
    fn default() -> Self {
        Stop::new()
    }
}
