//! The alert stage around the pipeline: workers fold matches into units' alerts (`fold`), the alert planner adds each
//! unit to the open batch (`observe`), then suppresses, routes and turns it into the outbox write that goes into
//! the batch's transaction (`take_write`); after the commit, the deliverer is woken.

use std::sync::{Arc, Mutex};

use crate::alert::correlate::Correlator;
use crate::alert::sink::Sink;
use crate::alert::{Alert, Planned, UnitAlerts, plan};
use crate::config::Suppression;
use crate::detect::pattern::{Anchor, Pattern};
use crate::detect::ruleset::{Mode, RuleSet};
use crate::detect::search::NoFields;
use crate::detect::value::FieldTest;
use crate::metrics::Metrics;
use crate::store::outbox::{AlertWrite, WriteOutcome};
use crate::store::{Store, StoreError};

pub struct Alerting {
    pub rules: Arc<RuleSet>,
    pub sinks: Vec<Arc<Sink>>,
    suppress: Vec<CompiledSuppression>,
    correlator: Mutex<Correlator>,
    /// The open batch's alerts so far (the planner adds each unit's matches as it arrives).
    pending: Mutex<Planned>,
    pub behaviour: crate::config::BehaviourConfig,
    /// Bumped after a commit that raised alerts; every sink's deliverer watches it (a bump made while one is
    /// busy is seen when it next waits).
    pub wake: tokio::sync::watch::Sender<u64>,
}

struct CompiledSuppression {
    rule: Option<Pattern>,
    principal: Option<Pattern>,
    account: Option<String>,
    source: Option<FieldTest>,
}

impl CompiledSuppression {
    fn matches(&self, alert: &Alert) -> bool {
        self.rule.as_ref().is_none_or(|p| p.matches(&alert.rule))
            && self.principal.as_ref().is_none_or(|p| p.matches(&alert.principal))
            && self.account.as_ref().is_none_or(|a| alert.account_id.as_deref() == Some(a))
            && self.source.as_ref().is_none_or(|t| t.test(alert.source_ip.as_deref(), &NoFields))
    }
}

impl Alerting {
    /// `store` supplies the correlation windows the committed files built.
    pub fn new(
        rules: Arc<RuleSet>,
        sinks: Vec<Arc<Sink>>,
        suppressions: &[Suppression],
        store: &Store,
    ) -> Result<Alerting, StoreError> {
        let pattern = |p: &Option<String>| p.as_deref().map(|p| Pattern::new(p, Anchor::Whole, false));
        let suppress = suppressions
            .iter()
            .map(|s| CompiledSuppression {
                rule: pattern(&s.rule),
                principal: pattern(&s.principal),
                account: s.account.clone(),
                // Validated with the configuration.
                source: s.source_cidr.as_deref().and_then(|c| FieldTest::compile(&["cidr"], &[Some(c)]).ok()),
            })
            .collect();
        let correlator = Mutex::new(load_windows(&rules, store)?);
        Ok(Alerting {
            rules,
            sinks,
            suppress,
            correlator,
            pending: Mutex::new(Planned::default()),
            behaviour: crate::config::BehaviourConfig::default(),
            wake: tokio::sync::watch::Sender::new(0),
        })
    }

    /// On the alert planner thread (or the committer): adds one unit's alerts to the open batch, and its hits to
    /// the correlation windows.
    pub fn observe(&self, unit: UnitAlerts) {
        if unit.is_empty() {
            return;
        }
        let mut correlator = self.correlator.lock().unwrap_or_else(|p| p.into_inner());
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        plan(&self.rules, unit, &mut correlator, &mut pending);
    }

    /// What the open batch writes to the outbox, suppressed and routed; the batch is closed.
    pub fn take_write(&self, raised_at_ms: i64, metrics: &Metrics) -> AlertWrite {
        let mut whole = AlertWrite::at(raised_at_ms);
        self.take_write_in_chunks(raised_at_ms, metrics, usize::MAX, &mut |chunk, _| {
            whole.append(chunk);
            true
        });
        whole
    }

    /// [`Alerting::take_write`] handed to `send` in chunks of at most `chunk_len` alerts as they are built, so
    /// that the committer writes one chunk while the next is built; `send` is told which chunk is the last (it
    /// carries the correlation log) and returns false to stop early. The batch is closed.
    pub fn take_write_in_chunks(
        &self,
        raised_at_ms: i64,
        metrics: &Metrics,
        chunk_len: usize,
        send: &mut dyn FnMut(AlertWrite, bool) -> bool,
    ) {
        let planned = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        let hits = self.correlator.lock().unwrap_or_else(|p| p.into_inner()).take_changes(&self.rules);
        let (alerts, counts) = planned.into_alerts(&self.rules);
        for (rule, mode, n) in &counts {
            let mode = match mode {
                Mode::Live => "live",
                Mode::DryRun => "dry_run",
            };
            metrics.rule_matches.with_label_values(&[rule, mode]).inc_by(*n);
        }
        let mut chunk = AlertWrite::at(raised_at_ms);
        for (alert, merge) in alerts {
            match self.route(&alert) {
                Some(sinks) => chunk.alerts.push((alert, merge, sinks)),
                None => metrics.alerts_suppressed.inc(),
            }
            if chunk.alerts.len() >= chunk_len {
                let mut full = std::mem::replace(&mut chunk, AlertWrite::at(raised_at_ms));
                full.serialize();
                if !send(full, false) {
                    return;
                }
            }
        }
        chunk.hits = hits;
        chunk.serialize();
        send(chunk, true);
    }

    /// The sinks an alert goes to, or `None` when a suppression drops it.
    fn route(&self, alert: &Alert) -> Option<Vec<String>> {
        if self.suppress.iter().any(|s| s.matches(alert)) {
            return None;
        }
        Some(self.sinks.iter().filter(|s| s.routes(&alert.rule, alert.severity)).map(|s| s.name().to_owned()).collect())
    }

    /// After the batch committed: metrics, and wake the deliverer.
    pub fn committed(&self, write: &AlertWrite, outcome: &WriteOutcome, metrics: &Metrics) {
        for ((alert, _, sinks), new) in write.alerts.iter().zip(&outcome.new) {
            if *new {
                tracing::debug!(rule = %alert.rule, alert = %alert.id, severity = alert.severity.as_str(), sinks = sinks.len(), "alert raised");
                metrics.alerts_raised.with_label_values(&[alert.severity.as_str()]).inc();
            } else {
                tracing::debug!(rule = %alert.rule, alert = %alert.id, "alert merged into one already raised");
            }
        }
        metrics.alerts_deduplicated.inc_by(outcome.merged());
        if outcome.raised() > 0 {
            tracing::info!(raised = outcome.raised(), merged = outcome.merged(), "alerts raised");
            self.wake.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// The behavioural facts of a batch as routed alerts (suppressed ones dropped and counted).
    pub fn behaviour_alerts(
        &self,
        facts: &[crate::alert::behaviour::Fact],
        raised_at_ms: i64,
        metrics: &Metrics,
    ) -> AlertWrite {
        let mut write = AlertWrite::at(raised_at_ms);
        for fact in facts {
            let alert = crate::alert::behaviour::to_alert(fact, &self.behaviour);
            metrics.rule_matches.with_label_values(&[&alert.rule, "live"]).inc();
            match self.route(&alert) {
                Some(sinks) => write.alerts.push((alert, crate::alert::Merge::Max, sinks)),
                None => metrics.alerts_suppressed.inc(),
            }
        }
        write
    }

    /// Raises the periodic findings at `as_of` (suppressions and routing as for rule alerts); returns how many
    /// were new.
    pub fn raise_findings(
        &self,
        conn: &mut rusqlite::Connection,
        as_of: crate::time::Timestamp,
        config: &crate::findings::PeriodicConfig,
        metrics: &Metrics,
    ) -> rusqlite::Result<u64> {
        let route = |alert: &Alert| {
            let sinks = self.route(alert);
            if sinks.is_none() {
                metrics.alerts_suppressed.inc();
            }
            sinks
        };
        let new = crate::findings::raise(conn, as_of, config, &route, crate::alert::deliver::now_ms())?;
        for severity in &new {
            metrics.alerts_raised.with_label_values(&[severity.as_str()]).inc();
        }
        metrics.findings_runs.inc();
        if !new.is_empty() {
            self.wake.send_modify(|n| *n = n.wrapping_add(1));
        }
        Ok(new.len() as u64)
    }

    /// The batch did not commit: the windows go back to what the store holds.
    pub fn rolled_back(&self, store: &Store) {
        *self.pending.lock().unwrap_or_else(|p| p.into_inner()) = Planned::default();
        let mut correlator = self.correlator.lock().unwrap_or_else(|p| p.into_inner());
        match load_windows(&self.rules, store) {
            Ok(windows) => *correlator = windows,
            Err(err) => tracing::error!("reloading correlation windows: {err}"),
        }
    }
}

/// The correlation windows the store's log holds; a row that cannot be read is reported and left out (its hits
/// are lost, the others still count).
fn load_windows(rules: &RuleSet, store: &Store) -> Result<Correlator, StoreError> {
    let (correlator, unreadable) = Correlator::load(rules, &store.correlation_log()?);
    if unreadable > 0 {
        tracing::warn!(rows = unreadable, "state store {}: unreadable correlation log rows left out", store.path());
    }
    Ok(correlator)
}

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
        tracing::warn!("`rules.dry_run` names `{id}`, which is not loaded");
    }
    for id in rules.set_dedup_windows(config.rules.dedup_window_secs, &config.rules.dedup_window_secs_by_rule) {
        tracing::warn!("`rules.dedup_window_secs_by_rule` names `{id}`, which is not loaded");
    }
    rules.set_correlation_lateness(config.rules.correlation_lateness_secs);
    tracing::info!(rules = rules.rules().len(), failed = errors.len(), "rules loaded");
    let sinks = config.alerts.sinks.iter().cloned().map(|sink| Arc::new(Sink::new(sink))).collect();
    let mut alerting = Alerting::new(Arc::new(rules), sinks, &config.alerts.suppress, store)?;
    alerting.behaviour = config.behaviour.clone();
    Ok(Some(Arc::new(alerting)))
}

/// The deliverers (one per sink), the periodic findings and alert retention, running on a daemon's runtime.
pub struct Delivery {
    stop: crate::shutdown::Stop,
    deliverers: Vec<(String, tokio::task::JoinHandle<()>)>,
    findings: Option<tokio::task::JoinHandle<()>>,
    retention: Option<tokio::task::JoinHandle<()>>,
}

/// How often the daemon deletes delivered alerts past `alerts.retention_days` (and once at start).
const RETENTION_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3600);

/// Alerts deleted per statement: each is a short write transaction beside the committer's.
const PRUNE_CHUNK: usize = 5000;

impl Delivery {
    /// Starts delivering what the outbox holds now (a previous run's leftovers) and whatever commits raise: one
    /// task per sink, each on its own connection, so that a sink that hangs delays only its own alerts.
    pub fn start(
        runtime: &tokio::runtime::Runtime,
        alerting: &Alerting,
        store: &Store,
        metrics: Arc<Metrics>,
        max_backoff: std::time::Duration,
    ) -> Result<Delivery, StoreError> {
        let stop = crate::shutdown::Stop::new();
        let configured: Vec<&str> = alerting.sinks.iter().map(|s| s.name()).collect();
        let unconfigured = crate::store::outbox::unconfigured_sinks(store.connection(), &configured)
            .map_err(|source| StoreError::Sqlite { path: store.path().to_owned(), source })?;
        for sink in unconfigured {
            tracing::warn!(sink = %sink, "the outbox names a sink that is not configured; its alerts wait for it");
        }
        let mut deliverers = Vec::with_capacity(alerting.sinks.len());
        for sink in &alerting.sinks {
            let deliverer = crate::alert::deliver::Deliverer::new(
                store.outbox_connection()?,
                Arc::clone(sink),
                Arc::clone(&metrics),
                max_backoff,
            );
            let task = runtime.spawn(deliverer.run(alerting.wake.subscribe(), stop.clone()));
            deliverers.push((sink.name().to_owned(), task));
        }
        Ok(Delivery { stop, deliverers, findings: None, retention: None })
    }

    /// Also raises the periodic findings every `config.interval_secs` (on its own connection: it writes only
    /// alerts and outbox rows, beside the committer).
    pub fn with_findings(
        mut self,
        runtime: &tokio::runtime::Runtime,
        alerting: &Arc<Alerting>,
        store: &Store,
        config: crate::findings::PeriodicConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Delivery, StoreError> {
        if config.findings.interval_secs == 0 {
            return Ok(self);
        }
        let conn = Arc::new(Mutex::new(store.outbox_connection()?));
        let (alerting, stop) = (Arc::clone(alerting), self.stop.clone());
        self.findings = Some(runtime.spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(config.findings.interval_secs));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = stop.wait() => return,
                }
                let (conn, alerting, config, metrics) =
                    (Arc::clone(&conn), Arc::clone(&alerting), config.clone(), Arc::clone(&metrics));
                let raised = tokio::task::spawn_blocking(move || {
                    let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
                    alerting.raise_findings(&mut conn, crate::time::now(), &config, &metrics)
                })
                .await;
                match raised {
                    Ok(Ok(0)) => {}
                    Ok(Ok(n)) => tracing::info!(raised = n, "periodic findings raised"),
                    Ok(Err(err)) => tracing::error!("periodic findings: {err}"),
                    Err(err) => tracing::error!("periodic findings: {err}"),
                }
            }
        }));
        Ok(self)
    }

    /// Also deletes, at start and hourly, the delivered alerts raised more than `retention_days` ago (periodic
    /// findings kept), on its own connection; 0 keeps every alert.
    pub fn with_retention(
        mut self,
        runtime: &tokio::runtime::Runtime,
        store: &Store,
        retention_days: u64,
        metrics: Arc<Metrics>,
    ) -> Result<Delivery, StoreError> {
        if retention_days == 0 {
            return Ok(self);
        }
        let conn = Arc::new(Mutex::new(store.outbox_connection()?));
        let (stop, path) = (self.stop.clone(), store.path().to_owned());
        let retention_ms = (retention_days as i64).saturating_mul(86_400_000);
        self.retention = Some(runtime.spawn(async move {
            let mut tick = tokio::time::interval(RETENTION_INTERVAL);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = stop.wait() => return,
                }
                let conn = Arc::clone(&conn);
                let cutoff_ms = crate::alert::deliver::now_ms().saturating_sub(retention_ms);
                let pruned = tokio::task::spawn_blocking(move || {
                    let conn = conn.lock().unwrap_or_else(|p| p.into_inner());
                    crate::store::outbox::prune(
                        &conn,
                        cutoff_ms,
                        &crate::detect::catalogue::PERIODIC_RULES,
                        PRUNE_CHUNK,
                    )
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
        }));
        Ok(self)
    }

    /// Stops after the passes in progress, waiting at most `grace` for them (a sink that hangs is given up on);
    /// what is left stays in the outbox for the next start, and what was sent but not recorded is sent again.
    pub fn stop(self, runtime: &tokio::runtime::Runtime, grace: std::time::Duration) {
        self.stop.stop();
        let deadline = tokio::time::Instant::now() + grace;
        let others = [("periodic findings", self.findings), ("alert retention", self.retention)]
            .into_iter()
            .filter_map(|(name, task)| Some((name.to_owned(), task?)));
        let deliverers = self.deliverers.into_iter().map(|(sink, task)| (format!("delivery to sink {sink}"), task));
        for (what, mut task) in deliverers.chain(others) {
            if runtime.block_on(async { tokio::time::timeout_at(deadline, &mut task).await }).is_err() {
                task.abort();
                tracing::warn!(
                    grace_secs = grace.as_secs(),
                    "{what} still in progress at the end of the shutdown grace; what it had not done stays to do"
                );
            }
        }
    }
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
        deliverers.push(crate::alert::deliver::Deliverer::new(
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

/// Rules, alerting and delivery (with the periodic findings) for a daemon, as `[rules]`, `[alerts]` and
/// `[findings]` say; `None` when alerting is off.
pub fn start(
    runtime: &tokio::runtime::Runtime,
    config: &crate::config::Config,
    store: &Store,
    metrics: &Arc<Metrics>,
) -> Result<(Option<Arc<Alerting>>, Option<Delivery>), StoreError> {
    let Some(alerting) = setup(config, store, true)? else { return Ok((None, None)) };
    let backoff = std::time::Duration::from_secs(config.alerts.max_backoff_secs);
    let delivery = Delivery::start(runtime, &alerting, store, Arc::clone(metrics), backoff)?
        .with_findings(
            runtime,
            &alerting,
            store,
            crate::findings::PeriodicConfig {
                findings: config.findings.clone(),
                permissions: config.permissions.clone(),
                inventory: config.inventory.clone(),
            },
            Arc::clone(metrics),
        )?
        .with_retention(runtime, store, config.alerts.retention_days, Arc::clone(metrics))?;
    Ok((Some(alerting), Some(delivery)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Synchronous;
    use crate::detect::ruleset::Match;
    use crate::store::{LedgerEntry, LedgerKey};

    /// Root used by `n` accounts, and a denied call (event id `denied`) feeding a correlation: `n` event-rule
    /// groups and a hit.
    fn planned(alerting: &Alerting, n: usize, denied: &str) {
        let rules = &alerting.rules;
        let root = rules.index_of("root-account-usage").unwrap();
        let mut matches: Vec<Match> = (0..n)
            .map(|i| {
                let (id, account) = (format!("e{i:03}"), format!("{:012}", 100 + i));
                let principal = format!("arn:aws:iam::{account}:root");
                let fields = [Some(&*id), Some("ListUsers"), Some(&*principal), Some(&*account), None, None, None];
                Match::new(root, 1_790_000_000 + i as i64, fields, &[])
            })
            .collect();
        let (rule, burst) =
            (rules.index_of("unauthorized-api-call").unwrap(), rules.index_of("unauthorized-api-calls"));
        let hit = (burst.unwrap(), "arn:aws:iam::1:user/u", None);
        let fields = [Some(denied), Some("GetUser"), Some("arn:aws:iam::1:user/u"), Some("1"), None, None, None];
        matches.push(Match::new(rule, 1_790_000_000, fields, &[hit]));
        let mut unit = UnitAlerts::default();
        unit.fold(rules, &mut matches, &mut Vec::new());
        alerting.observe(unit);
    }

    /// The planner hands a batch's alerts over in chunks; together they are the batch's alerts, the last chunk
    /// (and only it) is marked and carries the correlation log, and the store writes every chunk.
    #[test]
    fn a_batch_taken_in_chunks_is_the_batch_taken_whole() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("s.db"), Synchronous::Normal).unwrap();
        let rules = Arc::new(RuleSet::load(true, &[]).0);
        let alerting = |store: &Store| Alerting::new(Arc::clone(&rules), Vec::new(), &[], store);
        let metrics = Metrics::new();
        let (whole, chunked) = (alerting(&store).unwrap(), alerting(&store).unwrap());
        planned(&whole, 10, "d1");
        planned(&chunked, 10, "d1");
        let mut expected: Vec<String> = whole.take_write(7, &metrics).alerts.iter().map(|a| a.0.id.clone()).collect();
        expected.sort();
        assert_eq!(expected.len(), 10);

        let mut chunks = Vec::new();
        chunked.take_write_in_chunks(7, &metrics, 3, &mut |chunk, last| {
            chunks.push((chunk, last));
            true
        });
        let sizes: Vec<(usize, bool, bool)> =
            chunks.iter().map(|(c, last)| (c.alerts.len(), *last, c.hits.log.is_empty())).collect();
        // The denied call's hit is logged with the last chunk.
        assert_eq!(sizes, [(3, false, true), (3, false, true), (3, false, true), (1, true, false)]);

        // The store writes each chunk as the source hands it over, and returns them together. (Another denied
        // call: the same one again would be the same event, which a window counts once.)
        planned(&chunked, 10, "d2");
        let mut source = {
            let mut rx = Vec::new();
            chunked.take_write_in_chunks(8, &metrics, 4, &mut |chunk, _| {
                rx.push(chunk);
                true
            });
            rx.into_iter()
        };
        let key = LedgerKey { source: "file:/f.json".into(), version: "1".into() };
        let (outcome, written) = store
            .commit(&Default::default(), &[LedgerEntry { key: &key, records: 0 }], 0, || source.next(), None)
            .unwrap();
        let mut got: Vec<String> = written.alerts.iter().map(|a| a.0.id.clone()).collect();
        got.sort();
        assert_eq!(got, expected);
        assert_eq!(outcome.new, [true; 10]);
        // The planner serialized each chunk's alerts; each stored body is its own alert's.
        for (alert, _, _) in &written.alerts {
            let body: String = store
                .connection()
                .query_row("SELECT body FROM alerts WHERE id = ?1", [&alert.id], |r| r.get(0))
                .unwrap();
            assert_eq!(body, serde_json::to_string(alert).unwrap());
        }
        assert!(!written.hits.log.is_empty(), "the last chunk's correlation log is kept");
    }
}
