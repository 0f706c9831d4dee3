//! Delivery: sends what the outbox holds to the sinks, deleting each (alert, sink) row once the sink accepted it,
//! and backing off exponentially on failure. Each sink has its own deliverer, on its own connection to the state
//! file, so a sink that hangs or fails delays only its own alerts.
//!
//! A restart resends whatever is still pending; receivers see the same alert `id`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::alert::sink::{Sink, SinkError};
use crate::events::{AlertDeliveryFailed, AlertUnreadable, InternalEvent};
use crate::metrics::Metrics;
use crate::store::outbox;
use crate::store::outbox::Pending;

/// Deliveries taken from the outbox per pass.
const PASS_LIMIT: usize = 256;

/// Delivers one sink's alerts.
pub struct Deliverer {
    conn: Connection,
    sink: Arc<Sink>,
    metrics: Arc<Metrics>,
    max_backoff: Duration,
}

/// What one pass over the due deliveries did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    pub sent: u64,
    pub failed: u64,
}

impl Deliverer {
    pub fn new(conn: Connection, sink: Arc<Sink>, metrics: Arc<Metrics>, max_backoff: Duration) -> Deliverer {
        Deliverer { conn, sink, metrics, max_backoff }
    }

    /// Sends every delivery of this sink due now, once.
    ///
    /// Per chunk of due deliveries: a file or stdout sink takes them in one write, an HTTP sink one request per
    /// alert; then every outcome is recorded in one transaction. A crash (or a shutdown that runs out of grace)
    /// before that transaction resends the chunk's alerts with the same ids, which receivers already expect.
    pub async fn pass(&mut self) -> rusqlite::Result<Pass> {
        let mut pass = Pass::default();
        let sink = Arc::clone(&self.sink);
        loop {
            let due = outbox::due(&self.conn, sink.name(), crate::time::now_ms(), PASS_LIMIT, sink.writes_lines())?;
            if due.is_empty() {
                break;
            }
            let mut outcomes: Vec<(&Pending, Result<(), String>)> = Vec::with_capacity(due.len());
            if sink.writes_lines() {
                let bodies: Vec<&str> = due.pending.iter().map(|p| p.body.as_str()).collect();
                let res = if bodies.is_empty() { Ok(()) } else { sink.send_lines(&bodies) };
                for pending in &due.pending {
                    outcomes.push((pending, self.outcome(pending, res.as_ref().copied())));
                }
            } else {
                for pending in &due.pending {
                    let alert = pending.alert.as_ref().expect("rows for sinks that send alerts are read whole");
                    let res = sink.send(alert).await;
                    outcomes.push((pending, self.outcome(pending, res.as_ref().copied())));
                }
            }
            for unreadable in &due.unreadable {
                self.unreadable(unreadable);
            }
            let tx = self.conn.transaction()?;
            for (pending, outcome) in &outcomes {
                match outcome {
                    Ok(()) => {
                        outbox::delivered(&tx, &pending.alert_id, &pending.sink)?;
                        pass.sent += 1;
                    }
                    Err(reason) => {
                        let retry =
                            crate::time::now_ms() + backoff(pending.attempts, self.max_backoff).as_millis() as i64;
                        outbox::failed(&tx, &pending.alert_id, &pending.sink, retry, reason)?;
                        pass.failed += 1;
                    }
                }
            }
            for unreadable in &due.unreadable {
                // Nothing to send, but the row must leave the head of the outbox. It waits the longest backoff
                // (a version that can read it may run by then) and keeps counting as pending, so the outbox
                // gauge and the stuck-outbox alert still show it.
                let retry = crate::time::now_ms() + self.max_backoff.as_millis() as i64;
                outbox::failed(&tx, &unreadable.alert_id, &unreadable.sink, retry, &unreadable.reason)?;
                pass.failed += 1;
            }
            tx.commit()?;
            if due.len() < PASS_LIMIT {
                break;
            }
        }
        self.metrics.outbox_depth.set(outbox::depth(&self.conn)? as i64);
        Ok(pass)
    }

    /// Metrics and logs for one delivery attempt; the outcome as the outbox records it.
    fn outcome(&self, pending: &Pending, res: Result<(), &SinkError>) -> Result<(), String> {
        let kind = self.sink.config.kind.as_str();
        match res {
            Ok(()) => {
                self.metrics.alerts_sent.with_label_values(&[kind]).inc();
                let latency = (crate::time::now_ms() - pending.raised_at_ms).max(0) as f64 / 1000.0;
                self.metrics.alert_latency.observe(latency);
                tracing::debug!(alert = %pending.alert_id, rule = %pending.rule, sink = %pending.sink, "alert delivered");
                Ok(())
            }
            Err(err) => {
                AlertDeliveryFailed {
                    sink_kind: kind,
                    alert_id: &pending.alert_id,
                    attempts: pending.attempts + 1,
                    retry_in: backoff(pending.attempts, self.max_backoff),
                    reason: err.kind(),
                    error: err,
                }
                .emit(&self.metrics);
                Err(err.to_string())
            }
        }
    }

    /// Logs and counts a delivery whose alert cannot be read.
    fn unreadable(&self, unreadable: &outbox::Unreadable) {
        AlertUnreadable {
            sink_kind: self.sink.config.kind.as_str(),
            sink: &unreadable.sink,
            alert_id: &unreadable.alert_id,
            retry_in: self.max_backoff,
            reason: &unreadable.reason,
        }
        .emit(&self.metrics);
    }

    /// The daemon's loop: a pass whenever woken (a commit raised alerts) or when a retry falls due, until `stop`.
    pub async fn run(mut self, mut wake: tokio::sync::watch::Receiver<u64>, stop: crate::shutdown::Listener) {
        loop {
            if let Err(err) = self.pass().await {
                tracing::error!(sink = %self.sink.name(), "alert outbox: {err}");
            }
            let next = outbox::next_due_ms(&self.conn, self.sink.name()).ok().flatten();
            let sleep = match next {
                Some(due) => Duration::from_millis((due - crate::time::now_ms()).clamp(10, 60_000) as u64),
                None => Duration::from_secs(60),
            };
            tokio::select! {
                // Only a dropped sender fails, and then only the timer and the stop are left to wait for.
                Ok(()) = wake.changed() => {}
                () = tokio::time::sleep(sleep) => {}
                () = stop.requested() => return,
            }
        }
    }

    /// For `replay`: passes until this sink's deliveries are done or `wait` has passed; returns those left pending.
    pub async fn drain(&mut self, wait: Duration) -> rusqlite::Result<u64> {
        let deadline = Instant::now() + wait;
        loop {
            self.pass().await?;
            let Some(next) = outbox::next_due_ms(&self.conn, self.sink.name())? else {
                return Ok(0);
            };
            let sleep = Duration::from_millis((next - crate::time::now_ms()).max(10) as u64);
            if Instant::now() + sleep > deadline {
                return outbox::depth_of(&self.conn, self.sink.name());
            }
            tokio::time::sleep(sleep).await;
        }
    }
}

/// 1 s, 2 s, 4 s, … up to `max`.
pub fn backoff(attempts: u32, max: Duration) -> Duration {
    Duration::from_secs(1u64 << attempts.min(20)).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::write::AlertWrite;
    use crate::alert::{Alert, Derived, Merge};
    use crate::config::Synchronous;
    use crate::config::{SinkConfig, SinkKind};
    use crate::detect::rule::Severity;
    use crate::store::Store;

    /// Rows whose alert cannot be read (damaged bodies, and an outbox row with no alert) sit at the head of the
    /// outbox, more of them than one pass takes: the readable alert behind them is still delivered, and they are
    /// moved back by the longest backoff and kept, not retried on every pass or dropped.
    #[test]
    fn unreadable_alerts_do_not_hold_up_the_outbox() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db"), Synchronous::Normal).unwrap();
        let conn = store.connection();
        let alert = Alert::derived(Derived {
            rule: "root-account-usage",
            subject: "arn:aws:iam::111111111111:root",
            anchor: "1",
            title: "Root account used",
            severity: Severity::High,
            principal: "arn:aws:iam::111111111111:root".into(),
            account_id: Some("111111111111".into()),
            time: 1_790_000_000,
            summary: "root".into(),
            details: serde_json::json!({}),
        });
        let tx = conn.unchecked_transaction().unwrap();
        let mut write = AlertWrite::at(5);
        write.alerts.push((alert.clone(), Merge::Sum, vec!["jsonl".into()]));
        crate::store::outbox::write(&tx, &write, &mut Default::default()).unwrap();
        let damaged = PASS_LIMIT + 40;
        for i in 0..damaged {
            let id = format!("damaged{i:04}");
            tx.execute(
                "INSERT INTO alerts (id, rule, severity, event_time, raised_at_ms, body) VALUES (?1, 'r', 'high', 0, 0, '{not json')",
                [&id],
            )
            .unwrap();
            tx.execute("INSERT INTO outbox (alert_id, sink, next_attempt_ms) VALUES (?1, 'jsonl', 0)", [&id]).unwrap();
        }
        tx.execute("INSERT INTO outbox (alert_id, sink, next_attempt_ms) VALUES ('orphan', 'jsonl', 0)", []).unwrap();
        // A row whose body is another alert's: a line sink writes bodies as stored, so it would send the wrong id.
        let mut body = Vec::new();
        alert.write_json(&mut body);
        tx.execute(
            "INSERT INTO alerts (id, rule, severity, event_time, raised_at_ms, body) VALUES ('other', 'r', 'high', 0, 0, ?1)",
            [std::str::from_utf8(&body).unwrap()],
        )
        .unwrap();
        tx.execute("INSERT INTO outbox (alert_id, sink, next_attempt_ms) VALUES ('other', 'jsonl', 0)", []).unwrap();
        tx.commit().unwrap();

        let path = dir.path().join("alerts.jsonl");
        let mut config = SinkConfig::new("jsonl", SinkKind::File);
        config.path = Some(path.clone());
        let metrics = Arc::new(Metrics::new());
        let max_backoff = Duration::from_secs(3600);
        let mut deliverer = Deliverer::new(
            store.outbox_connection().unwrap(),
            Arc::new(Sink::new(config)),
            metrics.clone(),
            max_backoff,
        );
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let before = crate::time::now_ms();
        let pass = runtime.block_on(deliverer.pass()).unwrap();
        assert_eq!(pass, Pass { sent: 1, failed: damaged as u64 + 2 });
        let lines = std::fs::read_to_string(&path).unwrap();
        assert_eq!(lines, format!("{}\n", std::str::from_utf8(&body).unwrap()), "the stored JSON, as it is");
        assert_eq!(lines.lines().map(|l| serde_json::from_str::<Alert>(l).unwrap().id).collect::<Vec<_>>(), [alert.id]);
        assert_eq!(metrics.alert_delivery_failures.with_label_values(&["file"]).get(), damaged as u64 + 2);
        assert_eq!(outbox::depth(conn).unwrap(), damaged as u64 + 2, "unreadable deliveries stay pending");
        let next = outbox::next_due_ms(conn, "jsonl").unwrap().unwrap();
        assert!(next >= before + max_backoff.as_millis() as i64, "retried after the longest backoff, not at once");
        let reason: String =
            conn.query_row("SELECT last_error FROM outbox WHERE alert_id = 'orphan'", [], |r| r.get(0)).unwrap();
        assert_eq!(reason, "no alert with this id in the store");

        // Nothing is due until then: the next pass sends and touches nothing.
        assert_eq!(runtime.block_on(deliverer.pass()).unwrap(), Pass::default());
    }
}
