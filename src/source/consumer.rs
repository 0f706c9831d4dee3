//! `trailwatch run` with `intake.kind = "sqs"`: the long-running consumer of the trail bucket's notifications.
//!
//! ```text
//! pollers ──body──► notification ──objects──► tracker ──new objects──► fetchers (bounded) ──bytes──► workers
//!    ▲                                           ▲                                                   │
//!    │ receive (long poll)                       └── done / failed ◄── committer (observer) ◄────────┘
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

use crate::aws::{s3_client, sdk_config};
use crate::config::{Config, SqsConfig};
use crate::daemon::{CommitHealth, DaemonError, serve_http, store_ready, wait_for_signal};
use crate::metrics::Metrics;
use crate::pipeline::{self, FileError, Jobs, Observer, RunContext};
use crate::source::FetchedJob;
use crate::source::FileJob;
use crate::source::Location;
use crate::source::fetch::{FetchError, Objects};
use crate::source::notification::{ObjectRef, parse_body};
use crate::source::sqs::{Queue, Received, SqsQueue};
use crate::source::tracker::{ObjectId, Tracker};
use crate::store::Applied;
use crate::store::Store;

/// Everything the consumer's tasks share.
///
/// It owns the sending side of the fetch channel: the workers drain until the last `Shared` is dropped, which is
/// why the committer's observer and the deleter hold only the tracker and the queue.
struct Shared<Q, O> {
    queue: Arc<Q>,
    objects: O,
    tracker: Arc<Mutex<Tracker>>,
    /// Fetches in flight, aborted when the grace period ends.
    fetches: Mutex<tokio::task::JoinSet<()>>,
    applied: Arc<Applied>,
    metrics: Arc<Metrics>,
    jobs: tokio::sync::mpsc::Sender<FetchedJob>,
    deletes: tokio::sync::mpsc::Sender<String>,
    fetch_slots: Arc<tokio::sync::Semaphore>,
    max_file_bytes: u64,
    settings: SqsConfig,
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

/// Runs until SIGTERM or SIGINT, then drains within the grace period and returns.
pub fn run_daemon(
    config: &Config,
    settings: &SqsConfig,
    trial: &dyn Fn(&crate::inflight::Suspect) -> crate::inflight::Trial,
) -> Result<(), DaemonError> {
    let mut store = Store::open(&config.store_path, config.synchronous)?;
    let applied = Applied::load(&store)?;
    let inflight = crate::inflight::guard(&config.store_path, &store, &applied, trial)?;
    let metrics = Arc::new(Metrics::new());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("trailwatch-io")
        .enable_all()
        .build()
        .map_err(DaemonError::Runtime)?;
    let sdk = runtime.block_on(sdk_config(&config.aws));
    let queue = Arc::new(SqsQueue::new(&sdk, &settings.queue_url));
    let commits = CommitHealth::default();
    let ready: crate::http::Readiness = {
        let (queue, state, commits) = (Arc::clone(&queue), config.store_path.clone(), commits.clone());
        Arc::new(move || {
            let (queue, state, commits) = (Arc::clone(&queue), state.clone(), commits.clone());
            Box::pin(async move {
                commits.check()?;
                tokio::task::spawn_blocking(move || store_ready(&state))
                    .await
                    .unwrap_or_else(|e| Err(e.to_string()))?;
                queue.probe().await.map_err(|e| e.to_string())
            })
        })
    };
    let (http_stop, http) = serve_http(&runtime, config, Arc::clone(&metrics), ready)?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        queue = %settings.queue_url,
        state = %store.path(),
        listen = %config.http_listen,
        applied_files = applied.len(),
        "trailwatch running"
    );
    let objects = s3_client(&sdk, &config.aws);
    let (alerting, delivery) = crate::delivery::start(&runtime, config, &store, &metrics)?;
    let background = crate::daemon::Background::start(&runtime, config, &store, &metrics)?;
    let stop = crate::shutdown::Stop::new();
    {
        let stop = stop.clone();
        runtime.spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown requested: no more receives, finishing objects in flight");
            stop.stop();
        });
    }
    // A failed commit ends a run; its messages were not deleted and come back after their visibility timeout.
    // Runs start again after a backoff until a signal.
    let mut applied = Some(applied);
    let summary = loop {
        let applied = match applied.take() {
            Some(applied) => applied,
            None => Applied::load(&store)?,
        };
        let stopped = stop.clone();
        let res = run(
            &runtime,
            Arc::clone(&queue),
            objects.clone(),
            config,
            settings,
            &mut store,
            applied,
            &metrics,
            alerting.as_deref(),
            inflight.as_ref(),
            async move { stopped.wait().await },
        );
        match res {
            Ok(summary) => break Ok(summary),
            Err(err) if stop.is_stopped() => break Err(err),
            Err(err) => {
                let retry = commits.failed(&err);
                runtime.block_on(async {
                    tokio::select! {
                        () = tokio::time::sleep(retry) => {}
                        () = stop.wait() => {}
                    }
                });
                if stop.is_stopped() {
                    break Err(err);
                }
            }
        }
    };
    if let Some(delivery) = delivery {
        delivery.stop(&runtime, Duration::from_secs(config.alerts.shutdown_grace_secs));
    }
    background.stop(&runtime);
    let _ = http_stop.send(());
    let _ = runtime.block_on(http);
    runtime.shutdown_timeout(Duration::from_secs(5));
    let summary = summary?;
    tracing::info!(files = summary.files_applied, rejected = summary.files_rejected, "stopped");
    Ok(())
}

/// Consumes `queue` until `shutdown` resolves, then lets objects in flight finish (within the grace period),
/// commits, deletes what is complete and returns. The daemon passes SQS, S3 and a signal; volume tests and the
/// benchmark pass in-process doubles and "the queue is empty".
#[allow(clippy::too_many_arguments)] // Two call sites; these are the consumer's whole world.
pub fn run<Q: Queue, O: Objects>(
    runtime: &tokio::runtime::Runtime,
    queue: Arc<Q>,
    objects: O,
    config: &Config,
    settings: &SqsConfig,
    store: &mut Store,
    applied: Applied,
    metrics: &Arc<Metrics>,
    alerting: Option<&crate::alert::stage::Alerting>,
    inflight: Option<&crate::inflight::InFlight>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<pipeline::Summary, crate::store::StoreError> {
    let applied = Arc::new(applied);
    let (jobs_tx, jobs_rx) = tokio::sync::mpsc::channel::<FetchedJob>(config.threads.max(1) * 2);
    let (deletes_tx, deletes_rx) = tokio::sync::mpsc::channel::<String>(1024);
    let tracker = Arc::new(Mutex::new(Tracker::default()));
    let shared = Arc::new(Shared {
        queue: Arc::clone(&queue),
        objects,
        tracker: Arc::clone(&tracker),
        fetches: Mutex::new(tokio::task::JoinSet::new()),
        applied: Arc::clone(&applied),
        metrics: Arc::clone(metrics),
        jobs: jobs_tx,
        deletes: deletes_tx.clone(),
        fetch_slots: Arc::new(tokio::sync::Semaphore::new(config.aws.max_concurrent_fetches)),
        max_file_bytes: config.limits.max_file_bytes,
        settings: settings.clone(),
    });
    // The workers drain the fetch channel until it closes; they are never stopped half-way.
    let never = AtomicBool::new(false);
    let ctx = RunContext {
        threads: config.threads,
        limits: config.limits,
        batch: config.batch,
        metrics,
        stop: &never,
        flush_when_starved: Some(Duration::from_millis(5)),
        alerting,
        log_batches: true,
        on_file: None,
        inflight,
    };
    // A failed commit ends the run as a shutdown does, without the grace period: nothing in flight can complete.
    let commit_failed = Arc::new(tokio::sync::Notify::new());
    let failed = Arc::new(AtomicBool::new(false));
    let mut observer = Completion {
        tracker,
        deletes: deletes_tx,
        commit_failed: Arc::clone(&commit_failed),
        failed: Arc::clone(&failed),
    };
    let shutdown = {
        let commit_failed = Arc::clone(&commit_failed);
        async move {
            tokio::select! {
                () = shutdown => {}
                () = commit_failed.notified() => {}
            }
        }
    };
    std::thread::scope(|scope| {
        let committer = scope.spawn(move || {
            let summary = pipeline::run(
                Jobs::Fetched { rx: Mutex::new(jobs_rx), duplicates: 0 },
                &ctx,
                store,
                &applied,
                &mut observer,
            );
            // The observer's delete sender goes with it; the deleter ends once `Shared`'s has gone too.
            drop(observer);
            summary
        });
        let deleter = runtime.spawn(delete_loop(queue, Arc::clone(metrics), deletes_rx));
        runtime.block_on(async {
            consume(Arc::clone(&shared), shutdown, &failed).await;
            // Pollers have stopped and the grace period is over: abandon what is still being fetched, and wait for
            // every task to let go of `Shared`, whose fetch-channel sender must close for the workers to finish.
            shared.fetches.lock().unwrap_or_else(|e| e.into_inner()).abort_all();
            while Arc::strong_count(&shared) > 1 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        drop(shared);
        let summary = committer.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        let _ = runtime.block_on(deleter);
        summary
    })
}

/// Pollers and the heartbeat, until a signal; then waits (within the grace period) for in-flight objects.
async fn consume<Q: Queue, O: Objects>(
    shared: Arc<Shared<Q, O>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    commit_failed: &AtomicBool,
) {
    let stopping = Arc::new(tokio::sync::Notify::new());
    let stopped = Arc::new(AtomicBool::new(false));
    {
        let (stopping, stopped) = (Arc::clone(&stopping), Arc::clone(&stopped));
        tokio::spawn(async move {
            shutdown.await;
            stopped.store(true, Ordering::SeqCst);
            stopping.notify_waiters();
        });
    }
    let mut pollers = Vec::new();
    for _ in 0..shared.settings.pollers {
        pollers.push(tokio::spawn(poll_loop(Arc::clone(&shared), Arc::clone(&stopping), Arc::clone(&stopped))));
    }
    let heartbeat = tokio::spawn(heartbeat_loop(Arc::clone(&shared)));
    for poller in pollers {
        let _ = poller.await;
    }
    let deadline = Instant::now() + shared.settings.shutdown_grace;
    while shared.tracker().objects_in_flight() > 0 && Instant::now() < deadline && !commit_failed.load(Ordering::SeqCst)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let abandoned = shared.tracker().deliveries();
    if abandoned > 0 {
        tracing::warn!(abandoned, "grace period over: leaving deliveries in flight to become visible again");
    }
    heartbeat.abort();
}

async fn poll_loop<Q: Queue, O: Objects>(
    shared: Arc<Shared<Q, O>>,
    stopping: Arc<tokio::sync::Notify>,
    stopped: Arc<AtomicBool>,
) {
    let settings = &shared.settings;
    let mut backoff = Duration::from_millis(200);
    while !stopped.load(Ordering::SeqCst) {
        if shared.tracker().objects_in_flight() >= settings.max_in_flight_objects {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let wait = settings.wait_time_secs as i32;
        let visibility = settings.visibility_timeout_secs as i32;
        let received = tokio::select! {
            received = shared.queue.receive(wait, visibility) => received,
            () = stopping.notified() => break,
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
                    () = stopping.notified() => break,
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
    let notification = match parse_body(&message.body) {
        Ok(n) => n,
        Err(err) => {
            shared.metrics.sqs_unreadable.with_label_values(&[err.kind()]).inc();
            if crate::logs::allow("sqs_unreadable") {
                tracing::warn!(
                    message_id = %message.message_id,
                    receive_count = message.receive_count,
                    reason = err.kind(),
                    "cannot read notification, leaving it for the dead-letter queue: {err}"
                );
            }
            return;
        }
    };
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
            (job, Ok(fetched.bytes))
        }
        // Permanent: counted as rejected by the pipeline, and the deliveries are deleted.
        Err(err @ (FetchError::NoSuchKey { .. } | FetchError::TooLarge { .. })) => {
            (FileJob::s3(&object.bucket, &object.key, object.etag.as_deref().unwrap_or("")), Err(err))
        }
        Err(err) => {
            shared.metrics.s3_fetch_failures.with_label_values(&[err.kind()]).inc();
            if crate::logs::allow("s3_fetch_failed") {
                tracing::warn!(reason = err.kind(), "fetch failed, leaving its messages for redelivery: {err}");
            }
            shared.tracker().failed(&id);
            return;
        }
    };
    let (job, bytes) = bytes;
    if shared.jobs.send(FetchedJob { job, bytes }).await.is_err() {
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
                metrics.sqs_delete_failures.inc_by(failed as u64);
                if failed > 0 {
                    tracing::warn!(failed, "some deletes failed: those messages will be delivered again");
                }
            }
            Err(err) => {
                metrics.sqs_delete_failures.inc_by(batch.len() as u64);
                tracing::error!("delete failed, the messages will be delivered again: {err}");
            }
        }
    }
}

/// The committer's view: committed and rejected objects complete their deliveries.
struct Completion {
    tracker: Arc<Mutex<Tracker>>,
    deletes: tokio::sync::mpsc::Sender<String>,
    /// Told when a commit fails, to end the run.
    commit_failed: Arc<tokio::sync::Notify>,
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

impl Observer for Completion {
    fn committed(&mut self, files: &[FileJob]) {
        for job in files {
            self.finish(job);
        }
    }

    fn rejected(&mut self, job: &FileJob, error: &FileError) {
        tracing::debug!(file = %job.location, reason = error.kind(), "rejected object completes its messages");
        self.finish(job);
    }

    fn commit_failed(&mut self) {
        self.failed.store(true, Ordering::SeqCst);
        self.commit_failed.notify_one();
    }
}
