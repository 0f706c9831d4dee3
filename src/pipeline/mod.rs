//! Files → state: a source's files read, decoded and parsed on worker threads (`worker.rs`), then merged and
//! committed in batches on one thread (`committer.rs`), with the alert planner beside it.
//!
//! Architecture invariant: per-record work happens on the workers, touches only thread-local data (a unit's state
//! delta and matches) and does no I/O and no locking. The committing thread only merges units' deltas (one entry per
//! distinct principal and action, not per record) and writes a batch with its ledger entries in one transaction.
//! Every channel is bounded, so a slow store slows the readers instead of growing memory.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::alert::stage::Alerting;
use crate::config::{BatchLimits, Limits};
use crate::metrics::Metrics;
use crate::parse::RecordCounts;
use crate::shutdown::Listener;
use crate::source::{Feedback, Input, Source};
use crate::store::Applied;
use crate::store::{Store, StoreError};

mod committer;
mod worker;

use committer::Committer;

pub use worker::{BytesError, FileError, Folded, Message, Unit, Worker};

/// What a run did.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub files_applied: u64,
    pub files_duplicate: u64,
    pub files_rejected: u64,
    pub rejections: BTreeMap<&'static str, u64>,
    pub counts: RecordCounts,
    pub read_bytes: u64,
    pub decoded_bytes: u64,
    pub batches: u64,
}

impl Summary {
    pub fn files_seen(&self) -> u64 {
        self.files_applied + self.files_duplicate + self.files_rejected
    }
}

/// Everything a run needs besides its files.
#[derive(Clone, Copy)]
pub struct RunContext<'a> {
    pub threads: usize,
    pub limits: Limits,
    pub batch: BatchLimits,
    pub metrics: &'a Metrics,
    /// Also commit a batch when the workers are waiting for input, checked this often. The daemon sets it, so that
    /// a trickle is committed (and SQS messages deleted) promptly when traffic pauses (while input flows, batches
    /// still fill by size); replay leaves it off.
    pub flush_when_starved: Option<Duration>,
    /// Rules and alerting; `None` runs no rules (`--no-alerts`, `[alerts] enabled = false`).
    pub alerting: Option<&'a Alerting>,
    /// Log each committed batch at info (the daemons: what they do, batch by batch); replay shows a progress bar
    /// instead and logs batches at debug.
    pub log_batches: bool,
    /// Called by a worker after each file it has read, applied or rejected: a progress bar moves per file, not
    /// per batch.
    pub on_file: Option<&'a (dyn Fn() + Sync)>,
    /// Called by the committer after each batch it commits (the daemon's commit health).
    pub on_commit: Option<&'a (dyn Fn() + Sync)>,
    /// Where workers record the file in their hands, for the crash-loop guard ([`crate::inflight`]).
    pub inflight: Option<&'a crate::inflight::InFlight>,
    /// Log file validation (`[integrity] enabled`): digests are taken in and log files hashed as they are decoded.
    pub integrity: bool,
}

impl<'a> RunContext<'a> {
    /// A batch run (replay) as `config` says, with no rules; the daemon's differences are set field by field.
    pub fn new(config: &crate::config::Config, metrics: &'a Metrics) -> RunContext<'a> {
        RunContext {
            threads: config.threads,
            limits: config.limits,
            batch: config.batch,
            metrics,
            flush_when_starved: None,
            alerting: None,
            log_batches: false,
            on_file: None,
            on_commit: None,
            inflight: None,
            integrity: config.integrity.enabled,
        }
    }
}

/// A worker hands its unit over at this many records (or at the batch's file limit), whichever comes first.
const UNIT_MAX_RECORDS: u64 = 64_000;

/// Runs `source` through the workers and the committer until the source stops feeding and everything it fed is
/// committed (or rejected); `stop` is the source's shutdown listener.
///
/// Rejected files are logged and counted, and the run goes on; only a failing store ends it early, with the error
/// (nothing of the failed batch is committed; the source hears of it and stops).
pub fn run(
    source: &mut dyn Source,
    runtime: &tokio::runtime::Runtime,
    stop: Listener,
    ctx: &RunContext<'_>,
    store: &mut Store,
    applied: &Applied,
    progress: &mut dyn FnMut(&Summary),
) -> Result<Summary, StoreError> {
    let (feed, input) = tokio::sync::mpsc::channel::<Input>(source.input_capacity(ctx.threads.max(1)));
    let started = source.start(runtime, feed, stop);
    let threads = started.files.map_or(ctx.threads, |files| ctx.threads.min(files)).max(1);
    let mut feedback = started.feedback;
    let res = run_fed(input, started.duplicates, threads, ctx, store, applied, &mut *feedback, progress);
    // The committer's last word has been said: a source that waits for it (SQS deletes) can finish.
    drop(feedback);
    if let Err(err) = runtime.block_on(started.done) {
        tracing::error!("source: {err}");
    }
    res
}

/// The workers and the committer over one run's input channel.
#[allow(clippy::too_many_arguments)] // `run`'s own arguments, with the source taken apart.
fn run_fed(
    input: tokio::sync::mpsc::Receiver<Input>,
    duplicates: u64,
    threads: usize,
    ctx: &RunContext<'_>,
    store: &mut Store,
    applied: &Applied,
    feedback: &mut dyn Feedback,
    progress: &mut dyn FnMut(&Summary),
) -> Result<Summary, StoreError> {
    // Set while a worker holds the input channel and waits on it empty.
    let starved = AtomicBool::new(false);
    // Set when the store fails: the workers stop taking files.
    let failed = AtomicBool::new(false);
    let mut committer = Committer::new(store, applied, ctx, &starved, feedback, progress, duplicates);
    let input = std::sync::Mutex::new(input);
    let unit_max_files = ctx.batch.max_files.clamp(1, 64);
    let (tx, rx) = mpsc::sync_channel::<Message>(threads * 2);
    std::thread::scope(|scope| {
        for worker_index in 0..threads {
            let tx = tx.clone();
            let (input, starved, failed) = (&input, &starved, &failed);
            // Named, so that `top -H` and profiles tell workers from the committer (the calling thread).
            let worker_thread = std::thread::Builder::new().name("tw-worker".into());
            let spawned = worker_thread.spawn_scoped(scope, move || {
                let mut worker =
                    Worker::with_rules(ctx.alerting.map(|a| a.rules.clone())).with_integrity(ctx.integrity);
                let mut unit = Unit::default();
                // Emptied when the worker stops (dropped), left behind if the process dies.
                let mut slot = ctx.inflight.and_then(|inflight| {
                    inflight
                        .slot(worker_index)
                        .inspect_err(|err| tracing::warn!("crash-loop guard slot: {}", err.to_string().to_lowercase()))
                        .ok()
                });
                while !failed.load(Ordering::Relaxed) {
                    // In a daemon, a worker hands over its partial unit before it may wait for input (the channel is
                    // empty, or another worker is blocked on the empty channel), so that a trickle (a spool, SQS) is
                    // committed promptly; while input flows, units stay full. A batch run keeps filling its units.
                    let flush = |unit: &mut Unit| {
                        ctx.flush_when_starved.is_none()
                            || unit.is_empty()
                            || tx.send(Message::Unit(Box::new(std::mem::take(unit)))).is_ok()
                    };
                    let mut rx = loop {
                        match input.try_lock() {
                            Ok(rx) => break rx,
                            Err(std::sync::TryLockError::WouldBlock) if starved.load(Ordering::Acquire) => {
                                if !flush(&mut unit) {
                                    return;
                                }
                                // A poisoned lock means another worker panicked; the scope re-raises it.
                                match input.lock() {
                                    Ok(rx) => break rx,
                                    Err(_) => return,
                                }
                            }
                            // The holder is only taking the next item: wait a moment for it.
                            Err(std::sync::TryLockError::WouldBlock) => std::thread::yield_now(),
                            Err(std::sync::TryLockError::Poisoned(_)) => return,
                        }
                    };
                    let next = match rx.try_recv() {
                        Ok(next) => Some(next),
                        Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => None,
                        Err(tokio::sync::mpsc::error::TryRecvError::Empty) => {
                            if !flush(&mut unit) {
                                return;
                            }
                            starved.store(true, Ordering::Release);
                            let next = rx.blocking_recv();
                            starved.store(false, Ordering::Release);
                            next
                        }
                    };
                    drop(rx);
                    let Some(Input { job, bytes, signature }) = next else { break };
                    let started = Instant::now();
                    if let Some(slot) = &mut slot {
                        slot.start(&job);
                    }
                    let (read_bytes, res) = match bytes {
                        None => worker.process_file(&job, ctx.limits, &mut unit.folded),
                        Some(Ok(bytes)) => {
                            worker.process_fetched(&job, bytes, signature.as_deref(), ctx.limits, &mut unit.folded)
                        }
                        Some(Err(err)) => (0, Err(FileError::Fetch(err))),
                    };
                    ctx.metrics.file_duration.observe(started.elapsed().as_secs_f64());
                    if let Some(on_file) = ctx.on_file {
                        on_file();
                    }
                    let msg = match res {
                        Ok(counts) => {
                            unit.files.push((job, counts));
                            unit.counts.add(&counts);
                            unit.read_bytes += read_bytes;
                            unit.decoded_bytes += worker.decoded_len();
                            if unit.files.len() < unit_max_files && unit.counts.records < UNIT_MAX_RECORDS {
                                continue;
                            }
                            Message::Unit(Box::new(std::mem::take(&mut unit)))
                        }
                        Err(error) => Message::Rejected { job, error, read_bytes },
                    };
                    if tx.send(msg).is_err() {
                        return;
                    }
                }
                if !unit.is_empty() {
                    let _ = tx.send(Message::Unit(Box::new(unit)));
                }
            });
            // Spawning fails only when the OS is out of threads; fewer workers still do all the work.
            if let Err(err) = spawned {
                tracing::error!("cannot start a worker thread: {err}");
            }
        }
        drop(tx);
        // Alerts are planned on their own thread (correlation windows, building the batch's alerts) beside the
        // committer's delta merges and store writes: with many matches, doing both on one thread made it the
        // pipeline's critical path, working alone once the workers were done.
        committer.start_planner(scope, threads);
        let res = committer.drain(&rx);
        // Ends the planner (the scope joins it).
        committer.stop_planner();
        if res.is_err() {
            // Stop the workers and let them finish their current file; nothing more is committed.
            failed.store(true, Ordering::Relaxed);
            committer.commit_failed();
            while rx.recv().is_ok() {}
        }
        res
    })?;
    Ok(committer.into_summary())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use super::*;
    use std::sync::Arc;

    use crate::config::Synchronous;
    use crate::source::FileJob;

    /// A progress bar moves per file: each file a worker reads, applied or rejected, is reported when it is done,
    /// not when its batch commits (here, one batch for all of them).
    #[test]
    fn every_file_read_is_reported_as_it_is_done() {
        let dir = tempfile::tempdir().unwrap();
        let mut jobs = Vec::new();
        for i in 0..6 {
            let path = dir.path().join(format!("f{i}.json"));
            std::fs::write(&path, if i == 0 { &b"not json"[..] } else { &b"{\"Records\":[]}"[..] }).unwrap();
            jobs.push(FileJob::local(path, 1));
        }
        let mut store = Store::open(&dir.path().join("s.db"), Synchronous::Normal).unwrap();
        let (metrics, files_done) = (Metrics::new(), AtomicU64::new(0));
        let on_file = || {
            files_done.fetch_add(1, Ordering::Relaxed);
        };
        // Commits seen, and how many files the workers had reported done at each.
        let at_commit = std::sync::Mutex::new(Vec::new());
        let on_commit = || at_commit.lock().unwrap().push(files_done.load(Ordering::Relaxed));
        let ctx = RunContext {
            threads: 2,
            limits: Limits { max_file_bytes: 1 << 20, max_decoded_bytes: 1 << 20, max_worker_memory_bytes: 64 << 20 },
            batch: BatchLimits { max_files: 256, max_records: 1 << 20, max_wait: Duration::from_secs(60) },
            metrics: &metrics,
            flush_when_starved: None,
            alerting: None,
            log_batches: false,
            on_file: Some(&on_file),
            on_commit: Some(&on_commit),
            inflight: None,
            integrity: false,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let applied = Arc::new(Applied::default());
        let mut source = crate::source::local::LocalFiles::new(jobs, Arc::clone(&applied));
        let shutdown = crate::shutdown::Shutdown::new();
        let stop = shutdown.listener(crate::shutdown::Stage::Intake, "files");
        let summary = run(&mut source, &runtime, stop, &ctx, &mut store, &applied, &mut |_| {}).unwrap();
        assert_eq!((summary.files_applied, summary.files_rejected), (5, 1));
        assert_eq!(*at_commit.lock().unwrap(), [6], "one batch, committed after every file was reported");
    }
}
