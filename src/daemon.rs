//! `trailwatch run`: the long-running daemon. Wires the spool intake, the pipeline and the HTTP edge, and owns the
//! shutdown order: stop taking files → let workers finish the file in hand → commit → stop serving → exit.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use crate::config::{Config, Intake};
use crate::inflight::{Suspect, Trial};
use crate::metrics::Metrics;
use crate::pipeline::{self, RunContext};
use crate::source::spool::{Spool, Unreadable};
use crate::store::Applied;
use crate::store::{Store, StoreError};

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
}

/// Runs until SIGTERM or SIGINT, then drains and returns `Ok`. `trial` tries the files a crash left in hand (see
/// [`crate::inflight`]) before anything else.
pub fn run(config: &Config, trial: &dyn Fn(&Suspect) -> Trial) -> Result<(), DaemonError> {
    let spool_config = match &config.intake {
        Intake::Spool(spool) => spool,
        Intake::Sqs(sqs) => return crate::source::consumer::run_daemon(config, sqs, trial),
    };
    std::fs::create_dir_all(&spool_config.dir)
        .map_err(|source| DaemonError::Spool { dir: spool_config.dir.display().to_string(), source })?;
    let mut store = Store::open(&config.store_path, config.synchronous)?;
    let applied = Applied::load(&store)?;
    let inflight = crate::inflight::guard(&config.store_path, &store, &applied, trial)?;
    let metrics = Arc::new(Metrics::new());
    let stop = Arc::new(AtomicBool::new(false));
    let (wake_tx, wake_rx) = mpsc::channel::<()>();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("trailwatch-http")
        .enable_all()
        .build()
        .map_err(DaemonError::Runtime)?;
    let commits = CommitHealth::default();
    let ready: crate::http::Readiness = {
        let (dir, state, commits) = (spool_config.dir.clone(), config.store_path.clone(), commits.clone());
        Arc::new(move || {
            let (dir, state, commits) = (dir.clone(), state.clone(), commits.clone());
            Box::pin(async move {
                commits.check()?;
                tokio::task::spawn_blocking(move || {
                    std::fs::read_dir(&dir)
                        .map_err(|e| format!("spool {}: {}", dir.display(), e.to_string().to_lowercase()))?;
                    store_ready(&state)
                })
                .await
                .unwrap_or_else(|e| Err(e.to_string()))
            })
        })
    };
    let (http_stop_tx, server) = serve_http(&runtime, config, Arc::clone(&metrics), ready)?;
    {
        let stop = Arc::clone(&stop);
        runtime.spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown requested: finishing files in hand");
            stop.store(true, Ordering::SeqCst);
            let _ = wake_tx.send(());
        });
    }
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        spool = %spool_config.dir.display(),
        state = %store.path(),
        listen = %config.http_listen,
        applied_files = applied.len(),
        "trailwatch running"
    );

    let (alerting, delivery) = crate::delivery::start(&runtime, config, &store, &metrics)?;
    let background = Background::start(&runtime, config, &store, &metrics)?;
    let mut spool = Spool::new(spool_config);
    let ctx = RunContext {
        threads: config.threads,
        limits: config.limits,
        batch: config.batch,
        metrics: &metrics,
        stop: &stop,
        flush_when_starved: None,
        alerting: alerting.as_deref(),
        log_batches: true,
        on_file: None,
        inflight: inflight.as_ref(),
    };
    // A failing scan (spool unmounted, permissions) is logged when it starts and when it ends, and retried.
    let mut scan_error: Option<String> = None;
    while !stop.load(Ordering::SeqCst) {
        let mut wait = spool_config.scan_interval;
        match spool.scan(&applied, SystemTime::now()) {
            Ok((jobs, unreadable_dirs)) => {
                metrics.spool_unreadable_dirs.inc_by(unreadable_dirs);
                if let Some(err) = scan_error.take() {
                    tracing::info!("spool {} is readable again (was: {err})", spool.dir().display());
                }
                if !jobs.is_empty() {
                    let mut unreadable = Unreadable::default();
                    match pipeline::run(pipeline::Jobs::Local(&jobs), &ctx, &mut store, &applied, &mut unreadable) {
                        Ok(summary) => {
                            commits.succeeded();
                            spool.note_unapplied(&jobs, &applied, &unreadable, SystemTime::now());
                            tracing::debug!(
                                files = summary.files_applied,
                                rejected = summary.files_rejected,
                                records = summary.counts.records,
                                "applied new files"
                            );
                        }
                        // Nothing of the failed batch was committed; its files are offered again after a backoff.
                        Err(err) => wait = commits.failed(&err),
                    }
                }
            }
            Err(err) => {
                metrics.spool_scan_failures.inc();
                let err = err.to_string();
                if scan_error.as_deref() != Some(err.as_str()) {
                    tracing::error!("cannot scan the spool, will retry: {err}");
                }
                scan_error = Some(err);
            }
        }
        match wake_rx.recv_timeout(wait) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    if let Some(delivery) = delivery {
        delivery.stop(&runtime, Duration::from_secs(config.alerts.shutdown_grace_secs));
    }
    background.stop(&runtime);
    let _ = http_stop_tx.send(());
    let _ = runtime.block_on(server);
    runtime.shutdown_timeout(Duration::from_secs(5));
    tracing::info!("stopped");
    Ok(())
}

/// Starts `/metrics`, `/healthz` and `/readyz` on `listen`; send on the returned channel to stop serving.
pub(crate) fn serve_http(
    runtime: &tokio::runtime::Runtime,
    config: &crate::config::Config,
    metrics: Arc<Metrics>,
    ready: crate::http::Readiness,
) -> Result<(tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<std::io::Result<()>>), DaemonError> {
    let listen = config.http_listen;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(listen))
        .map_err(|source| DaemonError::Listen { addr: listen, source })?;
    let api = crate::http::Api {
        store_path: config.store_path.clone(),
        findings: config.findings.clone(),
        token: config.api_token.clone(),
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = runtime.spawn(crate::http::serve(listener, metrics, ready, api, async {
        let _ = stop_rx.await;
    }));
    Ok((stop_tx, server))
}

/// The daemons' background tasks beside intake and delivery: the one-a-minute log summary, the state gauges
/// (every 15 s), and with `[inventory.iam]` the inventory refresh. Both daemon modes start and stop them alike.
pub(crate) struct Background {
    stop: crate::shutdown::Stop,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Background {
    pub(crate) fn start(
        runtime: &tokio::runtime::Runtime,
        config: &crate::config::Config,
        store: &Store,
        metrics: &Arc<Metrics>,
    ) -> Result<Background, crate::store::StoreError> {
        let stop = crate::shutdown::Stop::new();
        #[cfg_attr(not(feature = "iam"), allow(unused_mut))]
        let mut tasks = vec![
            crate::logs::start_summary(runtime, Arc::clone(metrics), Duration::from_secs(60), stop.clone()),
            crate::report::start_state_gauges(
                runtime,
                config.store_path.clone(),
                config.findings.inactive_days,
                Arc::clone(metrics),
                Duration::from_secs(15),
                stop.clone(),
            ),
        ];
        #[cfg(feature = "iam")]
        tasks.extend(crate::iam::start_refresh(runtime, config, store, stop.clone())?);
        #[cfg(not(feature = "iam"))]
        let _ = store;
        Ok(Background { stop, tasks })
    }

    /// Stops every task after what it is doing.
    pub(crate) fn stop(self, runtime: &tokio::runtime::Runtime) {
        self.stop.stop();
        for task in self.tasks {
            let _ = runtime.block_on(task);
        }
    }
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
