//! The alert stage's edge: rules and alerting set up over the store, the outbox delivered to the sinks (one task per
//! sink), and the periodic findings and alert retention beside them.

pub mod deliverer;

use std::sync::{Arc, Mutex};

use crate::alert::sink::Sink;
use crate::alert::stage::Alerting;
use crate::detect::ruleset::RuleSet;
use crate::metrics::Metrics;
use crate::shutdown::{Shutdown, Stage};
use crate::store::{Store, StoreError};

/// Loads the rules `[rules]` names and sets up alerting, or `None` when alerting is off. Rules that cannot be
/// loaded are logged one by one; the others run.
pub fn setup(
    config: &crate::config::Config,
    store: &Store,
    enabled: bool,
) -> Result<Option<Arc<Alerting>>, StoreError> {
    if !enabled || !config.alerts.enabled {
        return Ok(None);
    }
    let (mut rules, errors) = RuleSet::load_except(config.rules.builtin, &config.rules.dirs, &config.rules.disabled);
    for err in &errors {
        tracing::warn!("rule not loaded: {err}");
    }
    for foreign in rules.foreign_fields() {
        tracing::warn!("{foreign}");
    }
    for id in rules.set_dry_run(&config.rules.dry_run) {
        if !crate::detect::catalogue::STATE_RULES.iter().any(|r| r.id == id) {
            tracing::warn!("`rules.dry_run` names `{id}`, which is not loaded");
        }
    }
    for id in rules.set_dedup_windows(config.rules.dedup_window_secs, &config.rules.dedup_window_secs_by_rule) {
        tracing::warn!("`rules.dedup_window_secs_by_rule` names `{id}`, which is not loaded");
    }
    rules.set_correlation_lateness(config.rules.correlation_lateness_secs);
    tracing::info!(rules = rules.rules().len(), failed = errors.len(), "rules loaded");
    let sinks = config.alerts.sinks.iter().cloned().map(|sink| Arc::new(Sink::new(sink))).collect();
    let windows = store.correlation_windows(&rules)?;
    let mut alerting = Alerting::new(Arc::new(rules), sinks, &config.alerts.suppress, windows);
    alerting.behaviour = config.behaviour.clone();
    // Rules raised from the state are not in the rule set: `rules.disabled` and `rules.dry_run` name them too.
    let state = |ids: &[String]| -> Vec<String> {
        let known = |id: &String| crate::detect::catalogue::STATE_RULES.iter().any(|r| r.id == id.as_str());
        ids.iter().filter(|id| known(id)).cloned().collect()
    };
    alerting.state_disabled = state(&config.rules.disabled);
    alerting.state_dry_run = state(&config.rules.dry_run);
    Ok(Some(Arc::new(alerting)))
}

/// How often the daemon deletes delivered alerts past `alerts.retention_days` (and once at start).
const RETENTION_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3600);

/// Alerts deleted per statement: each is a short write transaction beside the committer's.
const PRUNE_CHUNK: usize = 5000;

/// Starts delivering what the outbox holds now (a previous run's leftovers) and whatever commits raise: one task
/// per sink, each on its own connection, so that a sink that hangs delays only its own alerts. Each stops after
/// the pass in progress when [`Stage::Delivery`] is asked to; what is left stays in the outbox for the next start,
/// and what was sent but not recorded is sent again.
pub fn start_deliverers(
    runtime: &tokio::runtime::Runtime,
    alerting: &Alerting,
    store: &Store,
    metrics: &Arc<Metrics>,
    max_backoff: std::time::Duration,
    shutdown: &Shutdown,
) -> Result<(), StoreError> {
    let configured: Vec<&str> = alerting.sinks.iter().map(|s| s.name()).collect();
    let unconfigured = crate::store::outbox::unconfigured_sinks(store.connection(), &configured)
        .map_err(|source| StoreError::Sqlite { path: store.path().to_owned(), source })?;
    for sink in unconfigured {
        tracing::warn!(sink = %sink, "the outbox names a sink that is not configured; its alerts wait for it");
    }
    for sink in &alerting.sinks {
        let deliverer =
            deliverer::Deliverer::new(store.outbox_connection()?, Arc::clone(sink), Arc::clone(metrics), max_backoff);
        let stop = shutdown.listener(Stage::Delivery, format!("delivery to sink {}", sink.name()));
        runtime.spawn(deliverer.run(alerting.wake.subscribe(), stop));
    }
    Ok(())
}

/// Raises the periodic findings every `config.interval_secs` (on its own connection: it writes only alerts and
/// outbox rows, beside the committer), until [`Stage::Background`].
pub fn start_findings(
    runtime: &tokio::runtime::Runtime,
    alerting: &Arc<Alerting>,
    store: &Store,
    config: crate::findings::PeriodicConfig,
    metrics: &Arc<Metrics>,
    shutdown: &Shutdown,
) -> Result<(), StoreError> {
    if config.findings.interval_secs == 0 {
        return Ok(());
    }
    let mut conn = store.outbox_connection()?;
    let (alerting, metrics) = (Arc::clone(alerting), Arc::clone(metrics));
    let every = std::time::Duration::from_secs(config.findings.interval_secs);
    let stop = shutdown.listener(Stage::Background, "periodic findings");
    periodically(runtime, every, stop, "periodic findings", move || {
        crate::findings::raise_periodic(&alerting, &mut conn, crate::time::now(), &config, &metrics)
    });
    Ok(())
}

/// Checks log file integrity every `config.interval_secs` (on its own connection: it settles digest signatures
/// and writes alerts, beside the committer), until [`Stage::Background`]. Without alerting (`[alerts] enabled =
/// false`) it still settles signatures and sets the gauges.
pub fn start_integrity(
    runtime: &tokio::runtime::Runtime,
    alerting: Option<Arc<Alerting>>,
    store: &Store,
    config: &crate::config::IntegrityConfig,
    mut keys: crate::validation::KeyRing,
    metrics: &Arc<Metrics>,
    shutdown: &Shutdown,
) -> Result<(), StoreError> {
    if !config.enabled || config.interval_secs == 0 {
        return Ok(());
    }
    let mut conn = store.outbox_connection()?;
    let (metrics, config) = (Arc::clone(metrics), config.clone());
    let every = std::time::Duration::from_secs(config.interval_secs);
    let stop = shutdown.listener(Stage::Background, "integrity checks");
    periodically(runtime, every, stop, "integrity check", move || {
        let reach = crate::validation::Reach::Recent;
        match &alerting {
            Some(alerting) => {
                crate::validation::check_and_raise(alerting, &mut conn, &mut keys, &config, reach, &metrics)
                    .map(|(_, raised)| raised)
            }
            None => crate::validation::settle_and_check(&conn, &mut keys, &config, reach, &metrics).map(|_| 0),
        }
    });
    Ok(())
}

/// Runs `pass` on a blocking thread at once and then every `every`, one pass at a time, until `stop`; logs how
/// many alerts a pass raised, or why it failed, as `what`.
fn periodically(
    runtime: &tokio::runtime::Runtime,
    every: std::time::Duration,
    stop: crate::shutdown::Listener,
    what: &'static str,
    pass: impl FnMut() -> rusqlite::Result<u64> + Send + 'static,
) {
    let pass = Arc::new(Mutex::new(pass));
    runtime.spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stop.requested() => return,
            }
            let pass = Arc::clone(&pass);
            let raised = tokio::task::spawn_blocking(move || (pass.lock().unwrap_or_else(|p| p.into_inner()))()).await;
            match raised {
                Ok(Ok(0)) => {}
                Ok(Ok(n)) => tracing::info!(raised = n, "{what} raised alerts"),
                Ok(Err(err)) => tracing::error!("{what}: {err}"),
                Err(err) => tracing::error!("{what}: {err}"),
            }
        }
    });
}

/// Deletes, at start and hourly, the delivered alerts raised more than `retention_days` ago (periodic findings
/// kept), on its own connection, until [`Stage::Background`]; 0 keeps every alert.
pub fn start_retention(
    runtime: &tokio::runtime::Runtime,
    store: &Store,
    retention_days: u64,
    metrics: &Arc<Metrics>,
    shutdown: &Shutdown,
) -> Result<(), StoreError> {
    if retention_days == 0 {
        return Ok(());
    }
    let conn = Arc::new(Mutex::new(store.outbox_connection()?));
    let (path, metrics) = (store.path().to_owned(), Arc::clone(metrics));
    let retention_ms = (retention_days as i64).saturating_mul(86_400_000);
    let stop = shutdown.listener(Stage::Background, "alert retention");
    runtime.spawn(async move {
        let mut tick = tokio::time::interval(RETENTION_INTERVAL);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stop.requested() => return,
            }
            let conn = Arc::clone(&conn);
            let cutoff_ms = crate::time::now_ms().saturating_sub(retention_ms);
            let pruned = tokio::task::spawn_blocking(move || {
                let conn = conn.lock().unwrap_or_else(|p| p.into_inner());
                crate::store::outbox::prune(&conn, cutoff_ms, &crate::detect::catalogue::PERIODIC_RULES, PRUNE_CHUNK)
            })
            .await;
            match pruned {
                Ok(Ok(0)) => {}
                Ok(Ok(n)) => {
                    metrics.alerts_pruned.inc_by(n);
                    tracing::info!(deleted = n, retention_days, "delivered alerts past retention deleted");
                }
                Ok(Err(err)) => tracing::error!("alert retention: state store {path}: {err}"),
                Err(err) => tracing::error!("alert retention: {err}"),
            }
        }
    });
    Ok(())
}

/// For `replay`: delivers everything pending (retrying failures for up to `wait`); returns what is left pending.
pub fn drain(
    alerting: &Alerting,
    store: &Store,
    metrics: Arc<Metrics>,
    max_backoff: std::time::Duration,
    wait: std::time::Duration,
) -> Result<u64, StoreError> {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| StoreError::Sqlite {
            path: store.path().to_owned(),
            source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
        })?;
    // Every sink at once: one that keeps failing does not hold up the others.
    let mut deliverers = Vec::with_capacity(alerting.sinks.len());
    for sink in &alerting.sinks {
        let conn = store.outbox_connection()?;
        deliverers.push(crate::delivery::deliverer::Deliverer::new(
            conn,
            Arc::clone(sink),
            Arc::clone(&metrics),
            max_backoff,
        ));
    }
    let drained = runtime.block_on(async {
        let mut drains = tokio::task::JoinSet::new();
        for mut deliverer in deliverers {
            drains.spawn(async move { deliverer.drain(wait).await });
        }
        drains.join_all().await
    });
    let mut pending = 0;
    for drained in drained {
        pending += drained.map_err(|source| StoreError::Sqlite { path: store.path().to_owned(), source })?;
    }
    Ok(pending)
}

/// Rules, alerting, delivery, the periodic findings and alert retention for a daemon, as `[rules]`, `[alerts]` and
/// `[findings]` say; `None` when alerting is off.
pub fn start(
    runtime: &tokio::runtime::Runtime,
    config: &crate::config::Config,
    store: &Store,
    metrics: &Arc<Metrics>,
    shutdown: &Shutdown,
) -> Result<Option<Arc<Alerting>>, StoreError> {
    let Some(alerting) = setup(config, store, true)? else { return Ok(None) };
    let backoff = std::time::Duration::from_secs(config.alerts.max_backoff_secs);
    start_deliverers(runtime, &alerting, store, metrics, backoff, shutdown)?;
    let periodic = crate::findings::PeriodicConfig {
        findings: config.findings.clone(),
        permissions: config.permissions.clone(),
        inventory: config.inventory.clone(),
    };
    start_findings(runtime, &alerting, store, periodic, metrics, shutdown)?;
    start_retention(runtime, store, config.alerts.retention_days, metrics, shutdown)?;
    Ok(Some(alerting))
}
