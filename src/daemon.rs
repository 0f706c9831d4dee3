//! `trailwatch run`: the long-running daemon, on any source. Starts the runtime, the store, HTTP, alerting and the
//! background tasks once, feeds the pipeline from the configured source (a spool directory or SQS), and owns the
//! shutdown order: stop intake → finish the files in hand and commit → deliver or leave pending → stop the
//! periodic tasks → stop serving.

use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, Intake};
use crate::inflight::{Suspect, Trial};
use crate::metrics::Metrics;
use crate::pipeline::{self, RunContext};
use crate::shutdown::{Shutdown, Stage};
use crate::source::Source;
use crate::source::consumer::SqsSource;
use crate::source::spool::SpoolSource;
use crate::store::{Applied, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("http listener on {addr}: {source}")]
    Listen { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("spool directory {dir}: {source}")]
    Spool { dir: String, source: std::io::Error },

    #[error("runtime: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Integrity(#[from] crate::integrity::IntegrityError),
}

/// What fetches `ListPublicKeys` with `public_keys = "api"`; `None` with key files.
pub fn key_fetcher(
    runtime: &tokio::runtime::Runtime,
    config: &Config,
) -> Option<Box<dyn crate::validation::KeyFetcher>> {
    // Key files need no AWS configuration (loading it looks for a region, up to instance metadata).
    if config.integrity.public_keys != crate::config::PublicKeySource::Api {
        return None;
    }
    #[cfg(feature = "iam")]
    {
        let sdk = runtime.block_on(crate::aws::sdk_config(&config.aws));
        Some(Box::new(crate::validation::ApiKeys::new(sdk, runtime.handle().clone())))
    }
    #[cfg(not(feature = "iam"))]
    {
        let _ = (runtime, config);
        None
    }
}

/// Runs until SIGTERM or SIGINT, then drains and returns `Ok`. `trial` tries the files a crash left in hand (see
/// [`crate::inflight`]) before anything else.
pub fn run(config: &Config, trial: &dyn Fn(&Suspect) -> Trial) -> Result<(), DaemonError> {
    if let Intake::Spool(spool) = &config.intake {
        std::fs::create_dir_all(&spool.dir)
            .map_err(|source| DaemonError::Spool { dir: spool.dir.display().to_string(), source })?;
    }
    let mut store = Store::open(&config.store_path, config.synchronous)?;
    let applied = Arc::new(Applied::load(&store)?);
    let inflight = crate::inflight::guard(&config.store_path, &store, &applied, trial)?;
    let metrics = Arc::new(Metrics::new());
    let runtime = runtime(2, "trailwatch-io")?;
    let mut source: Box<dyn Source> = match &config.intake {
        Intake::Spool(spool) => Box::new(SpoolSource::new(spool, Arc::clone(&applied), Arc::clone(&metrics))),
        Intake::Sqs(sqs) => {
            let sdk = runtime.block_on(crate::aws::sdk_config(&config.aws));
            let queue = Arc::new(crate::source::sqs::SqsQueue::new(&sdk, &sqs.queue_url));
            let objects = crate::aws::s3_client(&sdk, &config.aws);
            let limits = (config.limits.max_file_bytes, config.aws.max_concurrent_fetches);
            let source =
                SqsSource::new(queue, objects, sqs.clone(), Arc::clone(&applied), Arc::clone(&metrics), limits);
            Box::new(source.with_integrity(config.integrity.enabled))
        }
    };

    let shutdown = Shutdown::new();
    let commits = CommitHealth::default();
    let ready = readiness(source.probe(), config.store_path.clone(), commits.clone());
    serve_http(&runtime, config, Arc::clone(&metrics), ready, &shutdown, true)?;
    let trigger = shutdown.trigger();
    runtime.spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested: no more input, finishing the files in hand");
        trigger.request();
    });
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        source = %source.describe(),
        state = %store.path(),
        listen = %config.http_listen,
        applied_files = applied.len(),
        "trailwatch running"
    );
    let alerting = crate::delivery::start(&runtime, config, &store, &metrics, &shutdown)?;
    if config.integrity.enabled {
        let keys = crate::validation::KeyRing::from_config(&config.integrity, key_fetcher(&runtime, config))?;
        let (integrity, alerting) = (&config.integrity, alerting.clone());
        crate::delivery::start_integrity(&runtime, alerting, &store, integrity, keys, &metrics, &shutdown)?;
    }
    start_background(&runtime, config, &store, &metrics, &shutdown)?;
    let committed = || commits.succeeded();
    let ctx = RunContext {
        flush_when_starved: Some(Duration::from_millis(5)),
        on_commit: Some(&committed),
        alerting: alerting.as_deref(),
        log_batches: true,
        inflight: inflight.as_ref(),
        ..RunContext::new(config, &metrics)
    };
    // A failed commit ends a run: nothing of its batch is stored, and the source offers those files again (the
    // spool rescans, SQS redelivers). Runs start again after a backoff until the shutdown.
    let summary = loop {
        let intake = shutdown.listener(Stage::Intake, source.describe());
        match pipeline::run(&mut *source, &runtime, intake, &ctx, &mut store, &applied, &mut |_| {}) {
            Ok(summary) => break Ok(summary),
            Err(err) if shutdown.is_requested() => break Err(err),
            Err(err) => {
                let retry = commits.failed(&err);
                runtime.block_on(async {
                    tokio::select! {
                        () = tokio::time::sleep(retry) => {}
                        () = shutdown.requested() => {}
                    }
                });
                if shutdown.is_requested() {
                    break Err(err);
                }
            }
        }
    };
    // The source has stopped and what it fed is committed. The rest stops in order, each stage within the grace.
    let grace = Duration::from_secs(config.alerts.shutdown_grace_secs);
    for stage in [Stage::Intake, Stage::Delivery, Stage::Background, Stage::Serving] {
        let left = runtime.block_on(shutdown.finish(stage, grace));
        for what in left {
            tracing::warn!(
                grace_secs = grace.as_secs(),
                "{what} still in progress at the end of the shutdown grace; what it had not done stays to do"
            );
        }
    }
    runtime.shutdown_timeout(Duration::from_secs(5));
    let summary = summary?;
    tracing::info!(files = summary.files_applied, rejected = summary.files_rejected, "stopped");
    Ok(())
}

/// `trailwatch serve`: the pages, the API and `/metrics` over an existing state file, reading only, until SIGTERM
/// or SIGINT. `on_listening` is told the bound address (the command prints it: `--listen 127.0.0.1:0` picks a
/// free port).
pub fn serve_state(config: &Config, on_listening: &dyn Fn(std::net::SocketAddr)) -> Result<(), DaemonError> {
    // Opened as the writer once, if no daemon holds it, so that an older state gets the schema the pages read
    // (migrating is not ingesting: no event is applied); a missing or damaged file is an error now, not a 500 on
    // every page. A daemon holding the state has migrated it already.
    match Store::open(&config.store_path, config.synchronous) {
        Ok(store) => drop(store),
        Err(StoreError::Locked { .. }) => {}
        Err(err) => return Err(err.into()),
    }
    Store::open_reader(&config.store_path)?;
    let metrics = Arc::new(Metrics::new());
    let runtime = runtime(2, "trailwatch-serve")?;
    let shutdown = Shutdown::new();
    let state = config.store_path.clone();
    let ready: crate::http::Readiness = Arc::new(move || {
        let state = state.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || store_ready(&state)).await.unwrap_or_else(|e| Err(e.to_string()))
        })
    });
    let addr = serve_http(&runtime, config, Arc::clone(&metrics), ready, &shutdown, false)?;
    crate::report::start_state_gauges(
        &runtime,
        config.store_path.clone(),
        config.findings.inactive_days,
        metrics,
        Duration::from_secs(15),
        shutdown.listener(Stage::Background, "state gauges"),
    );
    on_listening(addr);
    tracing::info!(state = %config.store_path.display(), listen = %addr, "trailwatch serving the state read-only");
    runtime.block_on(wait_for_signal());
    for stage in [Stage::Background, Stage::Serving] {
        runtime.block_on(shutdown.finish(stage, Duration::from_secs(2)));
    }
    runtime.shutdown_timeout(Duration::from_secs(2));
    Ok(())
}

/// The runtime for the daemon's I/O (HTTP, SQS and S3, delivery, periodic tasks); the pipeline's workers and
/// committer are threads of their own.
pub fn runtime(threads: usize, name: &str) -> Result<tokio::runtime::Runtime, DaemonError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(name)
        .enable_all()
        .build()
        .map_err(DaemonError::Runtime)
}

/// `/readyz`: commits succeed, the state store answers, and the source can take input.
fn readiness(source: crate::source::Probe, state: std::path::PathBuf, commits: CommitHealth) -> crate::http::Readiness {
    Arc::new(move || {
        let (source, state, commits) = (Arc::clone(&source), state.clone(), commits.clone());
        Box::pin(async move {
            commits.check()?;
            tokio::task::spawn_blocking(move || store_ready(&state)).await.unwrap_or_else(|e| Err(e.to_string()))?;
            source().await
        })
    })
}

/// Starts `/metrics`, `/healthz` and `/readyz` (and the API) on `listen`, until [`Stage::Serving`].
fn serve_http(
    runtime: &tokio::runtime::Runtime,
    config: &crate::config::Config,
    metrics: Arc<Metrics>,
    ready: crate::http::Readiness,
    shutdown: &Shutdown,
    ingesting: bool,
) -> Result<std::net::SocketAddr, DaemonError> {
    let listen = config.http_listen;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(listen))
        .map_err(|source| DaemonError::Listen { addr: listen, source })?;
    let bound = listener.local_addr().map_err(|source| DaemonError::Listen { addr: listen, source })?;
    // A daemon's pages also show what only its counters know (files rejected since start).
    let api = crate::http::Api { metrics: ingesting.then(|| Arc::clone(&metrics)), ..crate::http::Api::of(config) };
    let stop = shutdown.listener(Stage::Serving, "http");
    runtime.spawn(async move {
        let serving = crate::http::serve(listener, metrics, ready, api, async move { stop.requested().await });
        if let Err(err) = serving.await {
            tracing::error!("http: {err}");
        }
    });
    Ok(bound)
}

/// The daemon's periodic tasks beside intake and delivery, until [`Stage::Background`]: the one-a-minute log
/// summary, the state gauges (every 15 s), and with `[inventory.iam]` the inventory refresh.
fn start_background(
    runtime: &tokio::runtime::Runtime,
    config: &crate::config::Config,
    store: &Store,
    metrics: &Arc<Metrics>,
    shutdown: &Shutdown,
) -> Result<(), StoreError> {
    let summary = shutdown.listener(Stage::Background, "log summary");
    crate::logs::start_summary(runtime, Arc::clone(metrics), Duration::from_secs(60), summary);
    let gauges = shutdown.listener(Stage::Background, "state gauges");
    crate::report::start_state_gauges(
        runtime,
        config.store_path.clone(),
        config.findings.inactive_days,
        Arc::clone(metrics),
        Duration::from_secs(15),
        gauges,
    );
    #[cfg(feature = "iam")]
    crate::iam::start_refresh(runtime, config, store, shutdown.listener(Stage::Background, "inventory refresh"))?;
    #[cfg(not(feature = "iam"))]
    let _ = store;
    Ok(())
}

#[cfg(any(test, feature = "test-doubles"))]
/// The SQS consumer over the in-process doubles, run as the daemon runs it (without HTTP, alerting or signals)
/// until every message has been received and only `leave` remain: for volume tests and benchmarks.
#[allow(clippy::too_many_arguments)] // The consumer's world, plus where to stop.
pub fn drain_memory_queue<O: crate::source::fetch::Objects>(
    runtime: &tokio::runtime::Runtime,
    queue: &Arc<crate::source::memory::MemoryQueue>,
    objects: O,
    config: &Config,
    settings: &crate::config::SqsConfig,
    store: &mut Store,
    metrics: &Arc<Metrics>,
    leave: usize,
) -> Result<pipeline::Summary, StoreError> {
    let applied = Arc::new(Applied::default());
    let limits = (config.limits.max_file_bytes, config.aws.max_concurrent_fetches);
    let mut source =
        SqsSource::new(Arc::clone(queue), objects, settings.clone(), Arc::clone(&applied), Arc::clone(metrics), limits);
    let shutdown = Shutdown::new();
    let (trigger, drained) = (shutdown.trigger(), crate::source::memory::drained(Arc::clone(queue), leave));
    runtime.spawn(async move {
        drained.await;
        trigger.request();
    });
    let ctx = RunContext {
        flush_when_starved: Some(Duration::from_millis(5)),
        log_batches: true,
        ..RunContext::new(config, metrics)
    };
    let intake = shutdown.listener(Stage::Intake, source.describe());
    pipeline::run(&mut source, runtime, intake, &ctx, store, &applied, &mut |_| {})
}

/// Whether the last commit failed: a failing store (disk full, a damaged file) is retried with backoff, reported by
/// `/readyz` until a commit succeeds, and never ends the daemon as if it had been asked to stop.
#[derive(Clone, Default)]
pub(crate) struct CommitHealth(Arc<std::sync::Mutex<Option<(String, u32)>>>);

impl CommitHealth {
    /// Records a failed commit; returns how long to wait before trying again (1 s, doubling, up to a minute).
    pub(crate) fn failed(&self, err: &StoreError) -> Duration {
        let mut last = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let failures = last.as_ref().map_or(0, |(_, n)| *n) + 1;
        let retry = Duration::from_secs(1 << (failures - 1).min(6)).min(Duration::from_secs(60));
        tracing::error!(failures, retry_in_secs = retry.as_secs(), "commit failed, will retry: {err}");
        *last = Some((err.to_string(), failures));
        retry
    }

    pub(crate) fn succeeded(&self) {
        if let Some((_, failures)) = self.0.lock().unwrap_or_else(|e| e.into_inner()).take() {
            tracing::info!(failures, "committing again");
        }
    }

    /// `Err` while commits fail, saying why.
    pub(crate) fn check(&self) -> Result<(), String> {
        match &*self.0.lock().unwrap_or_else(|e| e.into_inner()) {
            Some((err, failures)) => Err(format!("commits failing ({failures} in a row): {err}")),
            None => Ok(()),
        }
    }
}

/// Whether the state store opens and answers a query.
pub(crate) fn store_ready(path: &std::path::Path) -> Result<(), String> {
    let store = Store::open_reader(path).map_err(|e| e.to_string())?;
    store.ledger_len().map(|_| ()).map_err(|e| e.to_string())
}

pub(crate) async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
