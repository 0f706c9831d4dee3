//! The alert stage around the pipeline: workers fold matches into units' alerts (`fold`), the alert planner adds each
//! unit to the open batch (`observe`), then suppresses, routes and turns it into the outbox write that goes into
//! the batch's transaction (`take_write`); after the commit, the deliverer is woken.

use std::sync::{Arc, Mutex};

use crate::alert::correlate::Correlator;
use crate::alert::sink::Sink;
use crate::alert::write::AlertWrite;
use crate::alert::write::WriteOutcome;
use crate::alert::{Alert, Planned, UnitAlerts, plan};
use crate::config::Suppression;
use crate::detect::pattern::{Anchor, Pattern};
use crate::detect::ruleset::{Mode, RuleSet};
use crate::detect::search::NoFields;
use crate::detect::value::FieldTest;
use crate::metrics::Metrics;

pub struct Alerting {
    pub rules: Arc<RuleSet>,
    pub sinks: Vec<Arc<Sink>>,
    suppress: Vec<CompiledSuppression>,
    correlator: Mutex<Correlator>,
    /// The open batch's alerts so far (the planner adds each unit's matches as it arrives).
    pending: Mutex<Planned>,
    pub behaviour: crate::config::BehaviourConfig,
    /// Rules raised from the state (behavioural, periodic, integrity) named by `rules.disabled`: not raised; and
    /// by `rules.dry_run`: stored (the explorer and the API show them) but sent to no sink.
    pub state_disabled: Vec<String>,
    pub state_dry_run: Vec<String>,
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
    /// `windows` are the correlation windows the committed files built (see `Store::correlation_windows`).
    pub fn new(
        rules: Arc<RuleSet>,
        sinks: Vec<Arc<Sink>>,
        suppressions: &[Suppression],
        windows: Correlator,
    ) -> Alerting {
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
        let correlator = Mutex::new(windows);
        Alerting {
            rules,
            sinks,
            suppress,
            correlator,
            pending: Mutex::new(Planned::default()),
            behaviour: crate::config::BehaviourConfig::default(),
            state_disabled: Vec::new(),
            state_dry_run: Vec::new(),
            wake: tokio::sync::watch::Sender::new(0),
        }
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

    /// Whether a rule raised from the state is raised at all (`rules.disabled`).
    pub fn raises(&self, rule: &str) -> bool {
        !self.state_disabled.iter().any(|r| r == rule)
    }

    /// The sinks an alert goes to (none for a state rule in dry run), or `None` when a suppression drops it.
    pub(crate) fn route(&self, alert: &Alert) -> Option<Vec<String>> {
        if self.suppress.iter().any(|s| s.matches(alert)) {
            return None;
        }
        if self.state_dry_run.contains(&alert.rule) {
            return Some(Vec::new());
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
            if !self.raises(&alert.rule) {
                continue;
            }
            let mode = if self.state_dry_run.contains(&alert.rule) { "dry_run" } else { "live" };
            metrics.rule_matches.with_label_values(&[&alert.rule, mode]).inc();
            match self.route(&alert) {
                Some(sinks) => write.alerts.push((alert, crate::alert::Merge::Max, sinks)),
                None => metrics.alerts_suppressed.inc(),
            }
        }
        write
    }

    /// The batch did not commit: the windows go back to what the store holds (`None` when they could not be read
    /// again: the windows are left as they are).
    pub fn rolled_back(&self, stored: Option<Correlator>) {
        *self.pending.lock().unwrap_or_else(|p| p.into_inner()) = Planned::default();
        if let Some(windows) = stored {
            *self.correlator.lock().unwrap_or_else(|p| p.into_inner()) = windows;
        }
    }
}
