//! The committer: merges units into batches and writes each batch through one transaction of the store, with the
//! alert planner thread building the batch's alerts beside it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::alert::UnitAlerts;
use crate::alert::write::{AlertWrite, WriteOutcome};
use crate::events::{FileRejected, InternalEvent};
use crate::integrity::chain::DigestCheck;
use crate::parse::RecordCounts;
use crate::pipeline::worker::{FileError, Folded, Message};
use crate::pipeline::{RunContext, Summary};
use crate::source::fetch::FetchError;
use crate::source::{Feedback, FileJob};
use crate::state::Delta;
use crate::store::integrity::IntegrityRows;
use crate::store::{Applied, LedgerEntry, Store, StoreError};

#[derive(Default)]
struct Batch {
    delta: Delta,
    files: Vec<(FileJob, RecordCounts)>,
    counts: RecordCounts,
    opened: Option<Instant>,
    integrity: IntegrityRows,
}

pub(super) struct Committer<'r, 'c> {
    store: &'r mut Store,
    /// The source's: told what was committed or rejected.
    feedback: &'r mut dyn Feedback,
    /// The caller's: the running summary after each unit or rejection.
    progress: &'r mut dyn FnMut(&Summary),
    applied: &'r Applied,
    ctx: &'r RunContext<'c>,
    batch: Batch,
    summary: Summary,
    starved: &'r AtomicBool,
    /// The alert planner thread, when alerting is on and the thread started.
    planner: Option<mpsc::SyncSender<Planning>>,
}

/// What the committer asks of the alert planner thread, in order: each unit's alerts as it arrives, then the batch's
/// outbox write when the batch commits.
enum Planning {
    Unit(UnitAlerts),
    /// The batch's alerts come back in chunks, the last one marked.
    Take {
        raised_at_ms: i64,
        reply: mpsc::SyncSender<(AlertWrite, bool)>,
    },
}

/// Alerts per chunk the planner hands the committer: it writes one while the planner builds the next.
const ALERT_CHUNK: usize = 1024;

impl<'r, 'c> Committer<'r, 'c> {
    /// `duplicates`: files the source skipped as already applied, counted in the summary and the metrics.
    pub(super) fn new(
        store: &'r mut Store,
        applied: &'r Applied,
        ctx: &'r RunContext<'c>,
        starved: &'r AtomicBool,
        feedback: &'r mut dyn Feedback,
        progress: &'r mut dyn FnMut(&Summary),
        duplicates: u64,
    ) -> Committer<'r, 'c> {
        ctx.metrics.files.with_label_values(&["duplicate"]).inc_by(duplicates);
        let summary = Summary { files_duplicate: duplicates, ..Summary::default() };
        Committer { store, feedback, progress, applied, ctx, batch: Batch::default(), summary, starved, planner: None }
    }

    /// Starts the alert planner thread in `scope`, when alerting is on; without it, the committer plans the alerts
    /// itself.
    pub(super) fn start_planner<'s>(&mut self, scope: &'s std::thread::Scope<'s, '_>, threads: usize)
    where
        'c: 's,
        'r: 's,
    {
        let Some(alerting) = self.ctx.alerting else { return };
        let metrics = self.ctx.metrics;
        let (plan_tx, plan_rx) = mpsc::sync_channel::<Planning>(threads * 2);
        let planner = std::thread::Builder::new().name("tw-alerts".into()).spawn_scoped(scope, move || {
            for msg in plan_rx {
                match msg {
                    Planning::Unit(unit) => alerting.observe(unit),
                    Planning::Take { raised_at_ms, reply } => {
                        alerting.take_write_in_chunks(raised_at_ms, metrics, ALERT_CHUNK, &mut |chunk, last| {
                            reply.send((chunk, last)).is_ok()
                        });
                    }
                }
            }
        });
        self.planner = planner.ok().map(|_| plan_tx);
    }

    /// Ends the planner thread (its scope joins it).
    pub(super) fn stop_planner(&mut self) {
        self.planner = None;
    }

    pub(super) fn commit_failed(&mut self) {
        self.feedback.commit_failed();
    }

    pub(super) fn into_summary(self) -> Summary {
        self.summary
    }
}

impl Committer<'_, '_> {
    pub(super) fn drain(&mut self, rx: &mpsc::Receiver<Message>) -> Result<(), StoreError> {
        loop {
            let wait = match (self.batch.opened, self.ctx.flush_when_starved) {
                (Some(opened), Some(idle)) => self.ctx.batch.max_wait.saturating_sub(opened.elapsed()).min(idle),
                (Some(opened), None) => self.ctx.batch.max_wait.saturating_sub(opened.elapsed()),
                (None, _) => Duration::from_secs(3600),
            };
            match rx.recv_timeout(wait) {
                Ok(msg) => {
                    self.add(msg);
                    (self.progress)(&self.summary);
                    if self.batch.files.len() >= self.ctx.batch.max_files
                        || self.batch.counts.records >= self.ctx.batch.max_records
                    {
                        self.flush()?;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let waited_out = self.batch.opened.is_some_and(|o| o.elapsed() >= self.ctx.batch.max_wait);
                    if waited_out || self.starved.load(Ordering::Acquire) {
                        self.flush()?;
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return self.flush(),
            }
        }
    }

    fn add(&mut self, msg: Message) {
        let metrics = self.ctx.metrics;
        match msg {
            Message::Rejected { job, error, read_bytes } => {
                FileRejected { reason: error.kind(), error: &error, read_bytes }.emit(metrics);
                // A log file listed nowhere yet that is gone from its bucket: validation reports it missing.
                if let (true, FileError::Fetch(FetchError::NoSuchKey { bucket, key })) = (self.ctx.integrity, &error)
                    && crate::integrity::chain::ChainId::of(bucket, key).is_some()
                {
                    let gone = crate::integrity::chain::Location { bucket: bucket.clone(), key: key.clone() };
                    self.batch.integrity.gone.push(gone);
                    self.batch.opened.get_or_insert_with(Instant::now);
                }
                self.summary.read_bytes += read_bytes;
                self.summary.files_rejected += 1;
                *self.summary.rejections.entry(error.kind()).or_default() += 1;
                self.feedback.rejected(&job, error.kind(), matches!(error, FileError::Read { .. }));
            }
            Message::Unit(unit) => {
                let unit = *unit;
                tracing::debug!(files = unit.files.len(), records = unit.counts.records, "parsed unit");
                metrics.read_bytes.inc_by(unit.read_bytes);
                metrics.decoded_bytes.inc_by(unit.decoded_bytes);
                self.summary.read_bytes += unit.read_bytes;
                self.summary.decoded_bytes += unit.decoded_bytes;
                self.batch.opened.get_or_insert_with(Instant::now);
                let Folded { delta, alerts, integrity } = unit.folded;
                self.batch.integrity.append(integrity);
                match (&self.planner, self.ctx.alerting) {
                    (Some(planner), Some(alerting)) => {
                        if let Err(unsent) = planner.send(Planning::Unit(alerts))
                            && let Planning::Unit(alerts) = unsent.0
                        {
                            alerting.observe(alerts);
                        }
                    }
                    (None, Some(alerting)) => alerting.observe(alerts),
                    (_, None) => {}
                }
                self.batch.delta.merge(delta);
                self.batch.counts.add(&unit.counts);
                for (job, counts) in unit.files {
                    tracing::debug!(file = %job.location, records = counts.records, "parsed file");
                    self.batch.files.push((job, counts));
                }
            }
        }
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        if self.batch.files.is_empty() && self.batch.integrity.is_empty() {
            self.batch.opened = None;
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        let started = Instant::now();
        let entries: Vec<LedgerEntry<'_>> =
            batch.files.iter().map(|(job, counts)| LedgerEntry { key: &job.key, records: counts.records }).collect();
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        let now = now_ms / 1000;
        let metrics = self.ctx.metrics;
        // The planner builds the batch's alerts while the store writes the state, and the next chunk of them while
        // the store writes one.
        let planned = self.planner.as_ref().and_then(|planner| {
            let (reply, planned) = mpsc::sync_channel(2);
            planner.send(Planning::Take { raised_at_ms: now_ms, reply }).ok().map(|()| planned)
        });
        let (alerts, raised, raised_alerts) = match self.write(&batch, &entries, now, now_ms, planned.as_ref()) {
            Ok(written) => written,
            Err(err) => {
                metrics.commit_failures.inc();
                if let Some(alerting) = self.ctx.alerting {
                    // The planner may still be taking the batch's alerts when a write failed: let it finish.
                    if let Some(planned) = &planned {
                        while let Ok((_, last)) = planned.recv() {
                            if last {
                                break;
                            }
                        }
                    }
                    let windows = self.store.correlation_windows(&alerting.rules);
                    if let Err(err) = &windows {
                        tracing::error!("reloading correlation windows: {err}");
                    }
                    alerting.rolled_back(windows.ok());
                }
                return Err(err);
            }
        };
        metrics.commit_duration.observe(started.elapsed().as_secs_f64());
        metrics.last_commit_timestamp.set(now);
        metrics.files.with_label_values(&["applied"]).inc_by(batch.files.len() as u64);
        metrics.observe_records(&batch.counts);
        metrics.integrity_log_files_hashed.inc_by(batch.integrity.logs.len() as u64);
        for digest in &batch.integrity.digests {
            // Digests with a signature are counted when a key settles it.
            match digest.record.check {
                DigestCheck::Unsigned => metrics.integrity_digests.with_label_values(&["unsigned"]).inc(),
                DigestCheck::Invalid(_) => metrics.integrity_digests.with_label_values(&["invalid"]).inc(),
                DigestCheck::Verified | DigestCheck::Unverified => {}
            }
        }
        for newest in batch.files.iter().filter_map(|(_, counts)| counts.newest) {
            metrics.event_lag.observe((now - newest).max(0) as f64);
        }
        // How far behind real time the batch's newest event is.
        let lag_secs = batch.counts.newest.map(|newest| (now - newest).max(0));
        let (files, records, ms) = (batch.files.len(), batch.counts.records, started.elapsed().as_millis() as u64);
        if self.ctx.log_batches {
            tracing::info!(files, records, alerts = raised_alerts, lag_secs, commit_ms = ms, "applied a batch");
        } else {
            tracing::debug!(files, records, alerts = raised_alerts, lag_secs, commit_ms = ms, "applied a batch");
        }
        self.summary.files_applied += batch.files.len() as u64;
        self.summary.counts.add(&batch.counts);
        self.summary.batches += 1;
        self.applied.insert_all(batch.files.iter().map(|(job, _)| &job.key));
        let files: Vec<FileJob> = batch.files.into_iter().map(|(job, _)| job).collect();
        if let Some(on_commit) = self.ctx.on_commit {
            on_commit();
        }
        self.feedback.committed(&files);
        // A batch with SigmaHQ's rules frees about a hundred thousand allocations: not on the committer's time.
        crate::reaper::drop_later((batch.delta, alerts, raised));
        Ok(())
    }

    /// The one commit path: opens the batch's transaction and writes, in turn, the state and ledger rows, the
    /// planner's alerts chunk by chunk as it builds them (with the correlation log), and the alerts the
    /// behavioural rules raise from the state just written; then commits. Returns the rule alerts and the
    /// behavioural ones (their JSON freed), and how many were new.
    fn write(
        &mut self,
        batch: &Batch,
        entries: &[LedgerEntry<'_>],
        now: i64,
        now_ms: i64,
        planned: Option<&mpsc::Receiver<(AlertWrite, bool)>>,
    ) -> Result<(AlertWrite, AlertWrite, u64), StoreError> {
        let metrics = self.ctx.metrics;
        let mut tx = self.store.begin()?;
        tx.write_state(&batch.delta, entries, now)?;
        tx.write_integrity(&batch.integrity)?;
        let (mut rules, mut behaviour) = (AlertWrite::at(now_ms), AlertWrite::at(now_ms));
        let (mut rules_outcome, mut behaviour_outcome) = (WriteOutcome::default(), WriteOutcome::default());
        if let Some(alerting) = self.ctx.alerting {
            loop {
                let (mut chunk, last) = match planned.map(mpsc::Receiver::recv) {
                    Some(Ok(chunk)) => chunk,
                    // Without the planner thread (or once it is gone), what it had not taken is taken here.
                    Some(Err(_)) | None => (alerting.take_write(now_ms, metrics), true),
                };
                rules_outcome.new.extend(tx.write_alerts(&chunk)?.new);
                // Stored now: the alerts are kept for the metrics after the commit, not megabytes of their JSON.
                chunk.drop_bodies();
                rules.append(chunk);
                if last {
                    break;
                }
            }
            let facts = tx.behaviour_facts(&batch.delta, &alerting.behaviour)?;
            behaviour = alerting.behaviour_alerts(&facts, now_ms, metrics);
            behaviour_outcome = tx.write_alerts(&behaviour)?;
        }
        tx.commit()?;
        if let Some(alerting) = self.ctx.alerting {
            alerting.committed(&rules, &rules_outcome, metrics);
            alerting.committed(&behaviour, &behaviour_outcome, metrics);
        }
        Ok((rules, behaviour, rules_outcome.raised() + behaviour_outcome.raised()))
    }
}
