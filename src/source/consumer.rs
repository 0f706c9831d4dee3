//! The SQS source: the long-running consumer of the trail bucket's notifications.
//!
//! ```text
//! pollers ──body──► notification ──objects──► tracker ──new objects──► fetchers (bounded) ──bytes──► workers
//!    ▲                                           ▲                                                   │
//!    │ receive (long poll)                       └── done / failed ◄── committer (feedback) ◄────────┘
//! heartbeat: keeps in-flight deliveries invisible          deleter: DeleteMessageBatch of complete deliveries
//! ```
//!
//! Ack contract (ARCHITECTURE.md): a delivery is deleted only after every object it names is committed to the
//! store, found in the ledger, missing (`NoSuchKey`), or permanently unreadable. An object that cannot be fetched
//! for a reason that may heal (access denied, S3 errors after retries) leaves its deliveries undeleted and no longer
//! kept invisible, so the queue redelivers them and, past its redrive limit, moves them to a dead-letter queue. A
//! body that cannot be read is left the same way. Redeliveries are recognised through the ledger.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::SqsConfig;
use crate::events::{InternalEvent, S3FetchFailed, SqsBodyUnreadable, SqsDeleteFailed};
use crate::metrics::Metrics;
use crate::shutdown::{Listener, Shutdown, Stage, Trigger};
use crate::source::fetch::{FetchError, Objects};
use crate::source::notification::{ObjectRef, Skip, parse_body};
use crate::source::sqs::{Queue, Received};
use crate::source::tracker::{ObjectId, Tracker};
use crate::source::{Feed, Feedback, FileJob, Input, Location, Probe, Source, Started};
use crate::store::Applied;

/// Everything the consumer's tasks share.
///
/// It owns the sending side of the pipeline's input: the workers drain until the last `Shared` is dropped, which
/// is why the committer's feedback and the deleter hold only the tracker and the queue.
struct Shared<Q, O> {
    queue: Arc<Q>,
    objects: Arc<O>,
    tracker: Arc<Mutex<Tracker>>,
    /// Fetches in flight, aborted when the grace period ends.
    fetches: Mutex<tokio::task::JoinSet<()>>,
    applied: Arc<Applied>,
    metrics: Arc<Metrics>,
    jobs: Feed,
    deletes: tokio::sync::mpsc::Sender<String>,
    fetch_slots: Arc<tokio::sync::Semaphore>,
    max_file_bytes: u64,
    settings: SqsConfig,
    /// Fetch digest files too (log file validation).
    integrity: bool,
}

/// The tracker is plain data updated in short critical sections; a panic elsewhere does not corrupt it.
fn lock(tracker: &Mutex<Tracker>) -> std::sync::MutexGuard<'_, Tracker> {
    tracker.lock().unwrap_or_else(|e| e.into_inner())
}

impl<Q, O> Shared<Q, O> {
    fn tracker(&self) -> std::sync::MutexGuard<'_, Tracker> {
        lock(&self.tracker)
    }

    /// Marks an object done and queues the deletes of the deliveries it completes.
    async fn object_done(&self, object: &ObjectId) {
        let complete = self.tracker().done(object);
        for c in complete {
            let _ = self.deletes.send(c.receipt).await;
        }
    }
}

/// `run` with `intake.kind = "sqs"`: the trail bucket's notifications, over SQS and S3 (or, in volume tests and
/// benchmarks, the in-process doubles of `memory`).
pub struct SqsSource<Q, O> {
    queue: Arc<Q>,
    objects: Arc<O>,
    settings: SqsConfig,
    applied: Arc<Applied>,
    metrics: Arc<Metrics>,
    max_file_bytes: u64,
    max_concurrent_fetches: usize,
    integrity: bool,
}

impl<Q: Queue, O: Objects> SqsSource<Q, O> {
    pub fn new(
        queue: Arc<Q>,
        objects: O,
        settings: SqsConfig,
        applied: Arc<Applied>,
        metrics: Arc<Metrics>,
        limits: (u64, usize),
    ) -> SqsSource<Q, O> {
        let (max_file_bytes, max_concurrent_fetches) = limits;
        SqsSource {
            queue,
            objects: Arc::new(objects),
            settings,
            applied,
            metrics,
            max_file_bytes,
            max_concurrent_fetches,
            integrity: false,
        }
    }

    /// Also fetches the digest files notifications name, for log file validation.
    pub fn with_integrity(mut self, on: bool) -> SqsSource<Q, O> {
        self.integrity = on;
        self
    }
}

impl<Q: Queue, O: Objects> Source for SqsSource<Q, O> {
    /// Consumes the queue until `stop`, then lets objects in flight finish (within the grace period); the deletes
    /// of what the last commits complete are sent before the source is done.
    fn start(&mut self, runtime: &tokio::runtime::Runtime, feed: Feed, stop: Listener) -> Started {
        let (deletes_tx, deletes_rx) = tokio::sync::mpsc::channel::<String>(1024);
        let tracker = Arc::new(Mutex::new(Tracker::default()));
        let shared = Arc::new(Shared {
            queue: Arc::clone(&self.queue),
            objects: Arc::clone(&self.objects),
            tracker: Arc::clone(&tracker),
            fetches: Mutex::new(tokio::task::JoinSet::new()),
            applied: Arc::clone(&self.applied),
            metrics: Arc::clone(&self.metrics),
            jobs: feed,
            deletes: deletes_tx.clone(),
            fetch_slots: Arc::new(tokio::sync::Semaphore::new(self.max_concurrent_fetches.max(1))),
            max_file_bytes: self.max_file_bytes,
            settings: self.settings.clone(),
            integrity: self.integrity,
        });
        // The pollers stop when the daemon's intake stops, or when a commit fails: that ends the run as a
        // shutdown does, but without the grace period, since nothing in flight can complete.
        let receiving = Shutdown::new();
        let failed = Arc::new(AtomicBool::new(false));
        let feedback = Completion {
            tracker,
            deletes: deletes_tx,
            stop_receiving: receiving.trigger(),
            failed: Arc::clone(&failed),
        };
        let deleter = runtime.spawn(delete_loop(Arc::clone(&self.queue), Arc::clone(&self.metrics), deletes_rx));
        let done = runtime.spawn(async move {
            consume(Arc::clone(&shared), stop, receiving, &failed).await;
            // Pollers have stopped and the grace period is over: abandon what is still being fetched. The input
            // closes, and the workers finish, once the aborted fetches have let go of `Shared`.
            shared.fetches.lock().unwrap_or_else(|e| e.into_inner()).abort_all();
            drop(shared);
            // Ends once the committer's feedback, with its delete sender, is gone too.
            let _ = deleter.await;
        });
        Started { feedback: Box::new(feedback), duplicates: 0, files: None, done }
    }

    fn probe(&self) -> Probe {
        let queue = Arc::clone(&self.queue);
        Arc::new(move || {
            let queue = Arc::clone(&queue);
            Box::pin(async move { queue.probe().await.map_err(|e| e.to_string()) })
        })
    }

    fn describe(&self) -> String {
        format!("sqs {}", self.settings.queue_url)
    }
}

/// Pollers and the heartbeat, until `stop` (or a failed commit stops `receiving`); then waits (within the grace
/// period) for in-flight objects.
async fn consume<Q: Queue, O: Objects>(
    shared: Arc<Shared<Q, O>>,
    stop: Listener,
    receiving: Shutdown,
    failed: &AtomicBool,
) {
    let trigger = receiving.trigger();
    let signal = tokio::spawn(async move {
        stop.requested().await;
        trigger.request();
    });
    let mut pollers = Vec::new();
    for _ in 0..shared.settings.pollers {
        pollers.push(tokio::spawn(poll_loop(Arc::clone(&shared), receiving.listener(Stage::Intake, "sqs poller"))));
    }
    let heartbeat = tokio::spawn(heartbeat_loop(Arc::clone(&shared)));
    for poller in pollers {
        let _ = poller.await;
    }
    let deadline = Instant::now() + shared.settings.shutdown_grace;
    while shared.tracker().objects_in_flight() > 0 && Instant::now() < deadline && !failed.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let abandoned = shared.tracker().deliveries();
    if abandoned > 0 {
        tracing::warn!(abandoned, "grace period over: leaving deliveries in flight to become visible again");
    }
    heartbeat.abort();
    signal.abort();
}

async fn poll_loop<Q: Queue, O: Objects>(shared: Arc<Shared<Q, O>>, stop: Listener) {
    let settings = &shared.settings;
    let mut backoff = Duration::from_millis(200);
    while !stop.is_requested() {
        if shared.tracker().objects_in_flight() >= settings.max_in_flight_objects {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let wait = settings.wait_time_secs as i32;
        let visibility = settings.visibility_timeout_secs as i32;
        let received = tokio::select! {
            received = shared.queue.receive(wait, visibility) => received,
            () = stop.requested() => break,
        };
        match received {
            Ok(messages) => {
                backoff = Duration::from_millis(200);
                shared.metrics.sqs_received.inc_by(messages.len() as u64);
                for message in messages {
                    handle_message(&shared, message).await;
                }
            }
            Err(err) => {
                if crate::logs::allow("sqs_receive_failed") {
                    tracing::error!("receive failed, retrying in {backoff:?}: {err}");
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = stop.requested() => break,
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

async fn handle_message<Q: Queue, O: Objects>(shared: &Arc<Shared<Q, O>>, message: Received) {
    if let Some(sent_ms) = message.sent_at_ms {
        let now_ms =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        shared.metrics.sqs_message_lag.observe((now_ms - sent_ms).max(0) as f64 / 1000.0);
    }
    let mut notification = match parse_body(&message.body) {
        Ok(n) => n,
        Err(err) => {
            SqsBodyUnreadable {
                message_id: &message.message_id,
                receive_count: message.receive_count,
                reason: err.kind(),
                error: &err,
            }
            .emit(&shared.metrics);
            return;
        }
    };
    if shared.integrity {
        notification.objects.append(&mut notification.digests);
    }
    for _ in &notification.digests {
        shared.metrics.sqs_ignored.with_label_values(&[Skip::DigestFile.kind()]).inc();
    }
    for skip in &notification.skipped {
        shared.metrics.sqs_ignored.with_label_values(&[skip.kind()]).inc();
    }
    let (to_fetch, complete) = shared.tracker().add(&message.receipt, &message.message_id, &notification.objects);
    if let Some(c) = complete {
        let _ = shared.deletes.send(c.receipt).await;
    }
    for object in to_fetch {
        let Ok(slot) = Arc::clone(&shared.fetch_slots).acquire_owned().await else { return };
        let task_shared = Arc::clone(shared);
        shared.fetches.lock().unwrap_or_else(|e| e.into_inner()).spawn(async move {
            fetch_object(&task_shared, object).await;
            drop(slot);
        });
    }
}

async fn fetch_object<Q: Queue, O: Objects>(shared: &Shared<Q, O>, object: ObjectRef) {
    let id: ObjectId = (object.bucket.clone(), object.key.clone());
    // A notification that carries the ETag lets a redelivered object be recognised without fetching it.
    if let Some(etag) = &object.etag
        && shared.applied.contains(&FileJob::s3(&object.bucket, &object.key, etag).key)
    {
        shared.metrics.ledger_duplicates.inc();
        shared.object_done(&id).await;
        return;
    }
    let started = Instant::now();
    let fetched = shared.objects.get(&object.bucket, &object.key, shared.max_file_bytes).await;
    shared.metrics.s3_fetch_duration.observe(started.elapsed().as_secs_f64());
    let bytes = match fetched {
        Ok(fetched) => {
            shared.metrics.s3_fetched.inc();
            shared.metrics.s3_fetched_bytes.inc_by(fetched.bytes.len() as u64);
            let etag = fetched.etag.or(object.etag).unwrap_or_else(|| format!("size:{}", fetched.bytes.len()));
            let job = FileJob::s3(&object.bucket, &object.key, &etag);
            if shared.applied.contains(&job.key) {
                shared.metrics.ledger_duplicates.inc();
                shared.object_done(&id).await;
                return;
            }
            (job, Ok(fetched.bytes), fetched.signature)
        }
        // Permanent: counted as rejected by the pipeline, and the deliveries are deleted.
        Err(err @ (FetchError::NoSuchKey { .. } | FetchError::TooLarge { .. })) => {
            (FileJob::s3(&object.bucket, &object.key, object.etag.as_deref().unwrap_or("")), Err(err), None)
        }
        Err(err) => {
            S3FetchFailed { reason: err.kind(), error: &err }.emit(&shared.metrics);
            shared.tracker().failed(&id);
            return;
        }
    };
    let (job, bytes, signature) = bytes;
    if shared.jobs.send(Input { job, bytes: Some(bytes), signature }).await.is_err() {
        shared.tracker().failed(&id);
    }
}

/// Keeps in-flight deliveries invisible: every half visibility timeout, extends them by a full one.
async fn heartbeat_loop<Q: Queue, O: Objects>(shared: Arc<Shared<Q, O>>) {
    let visibility = shared.settings.visibility_timeout_secs as i32;
    let mut tick = tokio::time::interval(Duration::from_secs(u64::from(shared.settings.visibility_timeout_secs) / 2));
    tick.tick().await;
    loop {
        tick.tick().await;
        let receipts = shared.tracker().in_flight();
        for chunk in receipts.chunks(10) {
            match shared.queue.extend(chunk, visibility).await {
                Ok(failed) => shared.metrics.sqs_visibility_extensions.inc_by((chunk.len() - failed) as u64),
                Err(err) => tracing::warn!("visibility extension failed: {err}"),
            }
        }
    }
}

/// Deletes complete deliveries in batches of up to 10, until every sender is gone.
async fn delete_loop<Q: Queue>(queue: Arc<Q>, metrics: Arc<Metrics>, mut rx: tokio::sync::mpsc::Receiver<String>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < 10 {
            match rx.try_recv() {
                Ok(receipt) => batch.push(receipt),
                Err(_) => break,
            }
        }
        match queue.delete(&batch).await {
            Ok(failed) => {
                metrics.sqs_deleted.inc_by((batch.len() - failed) as u64);
                if failed > 0 {
                    SqsDeleteFailed { failed, error: None }.emit(&metrics);
                }
            }
            Err(err) => SqsDeleteFailed { failed: batch.len(), error: Some(&err) }.emit(&metrics),
        }
    }
}

/// The committer's view: committed and rejected objects complete their deliveries.
struct Completion {
    tracker: Arc<Mutex<Tracker>>,
    deletes: tokio::sync::mpsc::Sender<String>,
    /// Pulled when a commit fails, to end the run.
    stop_receiving: Trigger,
    failed: Arc<AtomicBool>,
}

impl Completion {
    fn finish(&self, job: &FileJob) {
        let Location::S3 { bucket, key } = &job.location else { return };
        let complete = lock(&self.tracker).done(&(bucket.clone(), key.clone()));
        for c in complete {
            // The committer is a plain thread, not a runtime task, so it may block on the bounded channel.
            let _ = self.deletes.blocking_send(c.receipt);
        }
    }
}

impl Feedback for Completion {
    fn committed(&mut self, files: &[FileJob]) {
        for job in files {
            self.finish(job);
        }
    }

    fn rejected(&mut self, job: &FileJob, reason: &'static str, _may_heal: bool) {
        tracing::debug!(file = %job.location, reason, "rejected object completes its messages");
        self.finish(job);
    }

    fn commit_failed(&mut self) {
        self.failed.store(true, Ordering::SeqCst);
        self.stop_receiving.request();
    }
}
