//! Files → state: read, decode and parse on worker threads, then apply and commit in batches on one thread.
//!
//! Architecture invariant: per-record work happens on the workers, touches only thread-local data (a [`Delta`] per
//! file) and does no I/O and no locking. The committing thread only merges per-file deltas (one entry per distinct
//! principal and action, not per record) and writes a batch with its ledger entries in one transaction. The channel
//! between them is bounded, so a slow store slows the readers instead of growing memory.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use std::sync::Arc;

use crate::alert::UnitAlerts;
use crate::alert::stage::Alerting;
use crate::alert::write::AlertWrite;
use crate::alert::write::WriteOutcome;
use crate::config::{BatchLimits, Limits};
use crate::decode::{DecodeError, decode_into};
use crate::detect::ruleset::{MatchScratch, RuleSet};
use crate::metrics::Metrics;
use crate::parse::{ParseError, Parser, RecordCounts};
use crate::shutdown::Listener;
use crate::source::fetch::FetchError;
use crate::source::{Feedback, FileJob, Input, Location, Source};
use crate::state::{Delta, Scratch};
use crate::store::Applied;
use crate::store::{LedgerEntry, Store, StoreError};

/// Why a file was not applied. `kind()` is the bounded metric label.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: file size {size} exceeds the cap of {cap} bytes")]
    TooLarge { path: String, size: u64, cap: u64 },
    #[error("{path}: {source}")]
    Decode { path: String, source: DecodeError },
    #[error("{path}: {source}")]
    Parse { path: String, source: ParseError },
    #[error(transparent)]
    Fetch(FetchError),
    #[error(
        "{path}: decoding and parsing it would take at least {need} bytes, over the worker's budget of {budget} \
         (pipeline.max_worker_memory_bytes)"
    )]
    OverMemoryBudget { path: String, need: u64, budget: u64 },
}

impl FileError {
    pub fn kind(&self) -> &'static str {
        match self {
            FileError::Read { .. } => "read_error",
            FileError::TooLarge { .. } => "too_large",
            FileError::Decode { source, .. } => source.kind(),
            FileError::Parse { source, .. } => source.kind(),
            FileError::Fetch(source) => source.kind(),
            FileError::OverMemoryBudget { .. } => "over_memory_budget",
        }
    }
}

/// Why bytes could not be folded into a delta, before the file's name is attached.
#[derive(Debug)]
pub enum BytesError {
    Decode(DecodeError),
    Parse(ParseError),
    /// Decoding or parsing would take the worker past its memory budget: `need` bytes at least.
    OverBudget {
        need: u64,
    },
}

/// One worker's reusable buffers: after warm-up, a file's processing allocates only for keys new to its unit.
#[derive(Default)]
pub struct Worker {
    parser: Parser,
    raw: Vec<u8>,
    json: Vec<u8>,
    scratch: Scratch,
    /// Rules evaluated on every event in the same pass; their matches are folded into the delta's alerts.
    rules: Option<Arc<RuleSet>>,
    match_scratch: MatchScratch,
}

/// What a worker folds events into: the state aggregate, and the rule matches among the events (handed to the
/// alert planner, apart from the state).
#[derive(Debug, Default)]
pub struct Folded {
    pub delta: Delta,
    pub alerts: UnitAlerts,
}

/// Several files folded into one delta by one worker; committed as a whole, with a ledger entry per file.
///
/// Folding a few dozen files before handing them over, instead of one, means the allocations for a principal's
/// strings and maps are paid once per unit rather than once per file, and the committer merges fewer deltas.
#[derive(Default)]
pub struct Unit {
    pub folded: Folded,
    /// The unit's files with their record counts and newest event time.
    pub files: Vec<(FileJob, RecordCounts)>,
    pub counts: RecordCounts,
    pub read_bytes: u64,
    pub decoded_bytes: u64,
}

/// What workers hand to the committer.
pub enum Message {
    Unit(Unit),
    Rejected { job: FileJob, error: FileError, read_bytes: u64 },
}

impl Worker {
    /// A worker that also evaluates `rules` on every event, folding matches by each rule's dedup window.
    pub fn with_rules(rules: Option<Arc<RuleSet>>) -> Worker {
        Worker { rules, ..Worker::default() }
    }

    /// Decodes and parses one file's bytes, folding its events into `delta`.
    ///
    /// On error nothing was folded in: simd-json validates the whole document before the first record is visited,
    /// and a document that yields records is a log file.
    pub fn process_bytes(
        &mut self,
        input: &[u8],
        limits: Limits,
        out: &mut Folded,
    ) -> Result<RecordCounts, BytesError> {
        self.decode_and_budget(input, limits)?;
        let len = self.json.len();
        Parser::pad(&mut self.json);
        let scratch = &mut self.scratch;
        let rules = self.rules.as_deref();
        let MatchScratch { candidates, spare, group_key } = &mut self.match_scratch;
        let mut folded = 0u64;
        let Folded { delta, alerts } = out;
        let res = self.parser.parse(&mut self.json, len, &mut |event, record| {
            folded += 1;
            delta.apply(event, scratch);
            if let Some(rules) = rules {
                rules.evaluate(event, record, candidates, &mut |m| {
                    alerts.fold_view(rules, m, spare, group_key);
                });
            }
        });
        debug_assert!(res.is_ok() || folded == 0, "a rejected file folded {folded} events");
        match res {
            // simd-json's position is sometimes 0, and it has unescaped strings in place by then: serde_json says
            // where the fault is, on a fresh decode (only for files that are rejected anyway).
            Err(ParseError::InvalidJson(described)) => {
                let located = decode_into(input, &mut self.json, limits.max_decoded_bytes)
                    .ok()
                    .and_then(|_| serde_json::from_slice::<serde::de::IgnoredAny>(&self.json).err())
                    .map(|err| err.to_string());
                Err(BytesError::Parse(ParseError::InvalidJson(located.unwrap_or(described))))
            }
            res => res.map_err(BytesError::Parse),
        }
    }

    /// Decodes `input` into the JSON buffer, within the worker's memory budget: the decoded document takes its size
    /// twice (the buffer, and simd-json's string buffer), and parsing takes its tape and indexes, 28 bytes per
    /// structural position: a few per kilobyte of CloudTrail, but one per byte for `[0,0,0,…]`, which no decoded
    /// size cap alone can bound. The positions are counted before parsing when the size alone cannot rule out going
    /// over; buffers a larger file left behind are let go of first.
    fn decode_and_budget(&mut self, input: &[u8], limits: Limits) -> Result<(), BytesError> {
        let budget = usize::try_from(limits.max_worker_memory_bytes).unwrap_or(usize::MAX);
        let over = |need: usize| BytesError::OverBudget { need: need as u64 };
        // The input (the file as read, or as fetched) is held until the file is done.
        let held = input.len();
        let cap = limits.max_decoded_bytes.min((budget.saturating_sub(held) / 2) as u64);
        match decode_into(input, &mut self.json, cap) {
            Ok(_) => {}
            Err(DecodeError::TooLarge { .. }) if cap < limits.max_decoded_bytes => {
                return Err(over(held + 2 * (cap as usize + 1)));
            }
            Err(err) => return Err(BytesError::Decode(err)),
        }
        let len = self.json.len();
        let json_buffer = self.json.capacity().max(len + crate::parse::PADDING);
        let need = |parser: &Parser, structurals| held + json_buffer + parser.footprint(len, structurals);
        // At most one position per byte.
        if need(&self.parser, len) <= budget {
            return Ok(());
        }
        let structurals = crate::parse::structural_count(&self.json);
        if need(&self.parser, structurals) > budget {
            self.parser.release();
        }
        match need(&self.parser, structurals) {
            n if n > budget => Err(over(n)),
            _ => Ok(()),
        }
    }

    /// Lets go of the buffers a large file grew (over an eighth of the budget), so that what a worker holds
    /// between files stays small and the next file's budget check counts what it will use.
    fn shrink(&mut self, limits: Limits) {
        let large = usize::try_from(limits.max_worker_memory_bytes / 8).unwrap_or(usize::MAX);
        for buffer in [&mut self.raw, &mut self.json] {
            if buffer.capacity() > large {
                *buffer = Vec::new();
            }
        }
        if self.parser.retained() > large {
            self.parser.release();
        }
    }

    /// Reads, decodes and parses one local file into `delta`; returns the read size with the outcome.
    pub fn process_file(
        &mut self,
        job: &FileJob,
        limits: Limits,
        out: &mut Folded,
    ) -> (u64, Result<RecordCounts, FileError>) {
        let path = || job.location.to_string();
        let Some(local) = job.local_path() else {
            return (0, Err(FileError::Read { path: path(), source: std::io::Error::other("not a local file") }));
        };
        if let Err(source) = self.read(local, limits) {
            return (0, Err(source.with_path(path())));
        }
        self.process_raw(job, limits, out)
    }

    /// Decodes and parses bytes fetched elsewhere; the buffer is kept for reuse.
    pub fn process_fetched(
        &mut self,
        job: &FileJob,
        bytes: Vec<u8>,
        limits: Limits,
        out: &mut Folded,
    ) -> (u64, Result<RecordCounts, FileError>) {
        self.raw = bytes;
        self.process_raw(job, limits, out)
    }

    fn process_raw(
        &mut self,
        job: &FileJob,
        limits: Limits,
        out: &mut Folded,
    ) -> (u64, Result<RecordCounts, FileError>) {
        let path = || job.location.to_string();
        let read_bytes = self.raw.len() as u64;
        let delivered = match &job.location {
            Location::Local(path) => crate::layout::delivery_time(&path.to_string_lossy()),
            Location::S3 { key, .. } => crate::layout::delivery_time(key),
        };
        self.parser.set_plausible_times(crate::parse::plausible_event_times(delivered, crate::time::now()));
        let raw = std::mem::take(&mut self.raw);
        let res = self.process_bytes(&raw, limits, out);
        self.raw = raw;
        self.shrink(limits);
        let res = res.map_err(|err| match err {
            BytesError::Decode(source) => FileError::Decode { path: path(), source },
            BytesError::Parse(source) => FileError::Parse { path: path(), source },
            BytesError::OverBudget { need } => {
                FileError::OverMemoryBudget { path: path(), need, budget: limits.max_worker_memory_bytes }
            }
        });
        (read_bytes, res)
    }

    /// The bytes decoded by the last `process_*` call.
    pub fn decoded_len(&self) -> u64 {
        self.json.len().saturating_sub(crate::parse::PADDING) as u64
    }

    fn read(&mut self, path: &Path, limits: Limits) -> Result<(), FileError> {
        let read_err = |source| FileError::Read { path: String::new(), source };
        let file = std::fs::File::open(path).map_err(read_err)?;
        let size = file.metadata().map_err(read_err)?.len();
        if size > limits.max_file_bytes {
            return Err(FileError::TooLarge { path: String::new(), size, cap: limits.max_file_bytes });
        }
        // Held while it is decoded and parsed, which take at least its size again.
        if size > limits.max_worker_memory_bytes / 2 {
            let budget = limits.max_worker_memory_bytes;
            return Err(FileError::OverMemoryBudget { path: String::new(), need: 2 * size, budget });
        }
        self.raw.clear();
        // The file may grow while we read; the cap holds regardless.
        file.take(limits.max_file_bytes + 1).read_to_end(&mut self.raw).map_err(read_err)?;
        if self.raw.len() as u64 > limits.max_file_bytes {
            return Err(FileError::TooLarge {
                path: String::new(),
                size: self.raw.len() as u64,
                cap: limits.max_file_bytes,
            });
        }
        Ok(())
    }
}

impl FileError {
    fn with_path(self, path: String) -> FileError {
        match self {
            FileError::Read { source, .. } => FileError::Read { path, source },
            FileError::TooLarge { size, cap, .. } => FileError::TooLarge { path, size, cap },
            FileError::Decode { source, .. } => FileError::Decode { path, source },
            FileError::Parse { source, .. } => FileError::Parse { path, source },
            FileError::Fetch(source) => FileError::Fetch(source),
            FileError::OverMemoryBudget { need, budget, .. } => FileError::OverMemoryBudget { path, need, budget },
        }
    }
}

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
    let (feed, input) = tokio::sync::mpsc::channel::<Input>(ctx.threads.max(1) * 2);
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
    let mut committer = Committer {
        store,
        applied,
        ctx,
        batch: Batch::default(),
        summary: Summary::default(),
        starved: &starved,
        planner: None,
        feedback,
        progress,
    };
    committer.summary.files_duplicate = duplicates;
    committer.ctx.metrics.files.with_label_values(&["duplicate"]).inc_by(duplicates);
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
                let mut worker = Worker::with_rules(ctx.alerting.map(|a| a.rules.clone()));
                let mut unit = Unit::default();
                // Emptied when the worker stops (dropped), left behind if the process dies.
                let mut slot = ctx.inflight.and_then(|inflight| {
                    inflight
                        .slot(worker_index)
                        .inspect_err(|err| tracing::warn!("crash-loop guard slot: {}", err.to_string().to_lowercase()))
                        .ok()
                });
                while !failed.load(Ordering::Relaxed) {
                    // A worker hands over its partial unit before it may wait for input (the channel is empty, or
                    // another worker is blocked on the empty channel), so that a trickle (a spool, SQS) is committed
                    // promptly; while input flows, units stay full.
                    let flush =
                        |unit: &mut Unit| unit.files.is_empty() || tx.send(Message::Unit(std::mem::take(unit))).is_ok();
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
                    let Some(Input { job, bytes }) = next else { break };
                    let started = Instant::now();
                    if let Some(slot) = &mut slot {
                        slot.start(&job);
                    }
                    let (read_bytes, res) = match bytes {
                        None => worker.process_file(&job, ctx.limits, &mut unit.folded),
                        Some(Ok(bytes)) => worker.process_fetched(&job, bytes, ctx.limits, &mut unit.folded),
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
                            Message::Unit(std::mem::take(&mut unit))
                        }
                        Err(error) => Message::Rejected { job, error, read_bytes },
                    };
                    if tx.send(msg).is_err() {
                        return;
                    }
                }
                if !unit.files.is_empty() {
                    let _ = tx.send(Message::Unit(unit));
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
        if let Some(alerting) = ctx.alerting {
            let (plan_tx, plan_rx) = mpsc::sync_channel::<Planning>(threads * 2);
            let planner = std::thread::Builder::new().name("tw-alerts".into()).spawn_scoped(scope, move || {
                for msg in plan_rx {
                    match msg {
                        Planning::Unit(unit) => alerting.observe(unit),
                        Planning::Take { raised_at_ms, reply } => {
                            alerting.take_write_in_chunks(
                                raised_at_ms,
                                ctx.metrics,
                                ALERT_CHUNK,
                                &mut |chunk, last| reply.send((chunk, last)).is_ok(),
                            );
                        }
                    }
                }
            });
            // Without the thread, the committer plans the alerts itself.
            committer.planner = planner.ok().map(|_| plan_tx);
        }
        let res = committer.drain(&rx);
        // Ends the planner (the scope joins it).
        committer.planner = None;
        if res.is_err() {
            // Stop the workers and let them finish their current file; nothing more is committed.
            failed.store(true, Ordering::Relaxed);
            committer.feedback.commit_failed();
            while rx.recv().is_ok() {}
        }
        res
    })?;
    Ok(committer.summary)
}

#[derive(Default)]
struct Batch {
    delta: Delta,
    files: Vec<(FileJob, RecordCounts)>,
    counts: RecordCounts,
    opened: Option<Instant>,
}

struct Committer<'r, 'c> {
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

impl Committer<'_, '_> {
    fn drain(&mut self, rx: &mpsc::Receiver<Message>) -> Result<(), StoreError> {
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
                if crate::logs::allow("file_rejected") {
                    tracing::warn!(reason = error.kind(), "rejected {error}");
                }
                metrics.read_bytes.inc_by(read_bytes);
                metrics.files.with_label_values(&["rejected"]).inc();
                metrics.file_rejections.with_label_values(&[error.kind()]).inc();
                self.summary.read_bytes += read_bytes;
                self.summary.files_rejected += 1;
                *self.summary.rejections.entry(error.kind()).or_default() += 1;
                self.feedback.rejected(&job, error.kind(), matches!(error, FileError::Read { .. }));
            }
            Message::Unit(unit) => {
                tracing::debug!(files = unit.files.len(), records = unit.counts.records, "parsed unit");
                metrics.read_bytes.inc_by(unit.read_bytes);
                metrics.decoded_bytes.inc_by(unit.decoded_bytes);
                self.summary.read_bytes += unit.read_bytes;
                self.summary.decoded_bytes += unit.decoded_bytes;
                self.batch.opened.get_or_insert_with(Instant::now);
                let Folded { delta, alerts } = unit.folded;
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
        if self.batch.files.is_empty() {
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use super::*;
    use crate::config::Synchronous;

    /// Invalid JSON is reported where it is, by line and column of the decoded document.
    #[test]
    fn invalid_json_is_located() {
        let cases = [
            (&br#"{"Records":[{"a":1},{"b":2},,]}"#[..], "expected value at line 1 column 29"),
            (br#"{"Records":[{"a":1}, {"b" 2}]}"#, "expected `:` at line 1 column 27"),
            (
                b"{\"Records\":[{\"a\":\"x\x01y\"}]}",
                "control character (\\u0000-\\u001F) found while parsing a string at line 1 column 19",
            ),
            (
                b"{\"Records\": [\n {\"eventTime\": \"2026-10-01T00:00:00Z\" ] }",
                "expected `,` or `}` at line 2 column 39",
            ),
        ];
        let limits = Limits { max_file_bytes: 1 << 20, max_decoded_bytes: 1 << 20, max_worker_memory_bytes: 64 << 20 };
        for (json, message) in cases {
            let err = Worker::default().process_bytes(json, limits, &mut Folded::default()).unwrap_err();
            match err {
                BytesError::Parse(ParseError::InvalidJson(got)) => assert_eq!(got, message),
                other => panic!("{other:?}"),
            }
        }
    }

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
