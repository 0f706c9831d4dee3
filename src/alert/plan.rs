//! Planning a batch's alerts on the planner thread: units' groups merged, correlation hits fed to the windows, and
//! one alert built per group when the batch is taken.

use std::collections::hash_map::Entry;

use rustc_hash::FxHashMap as HashMap;

use crate::alert::correlate;
use crate::alert::group::{Group, merge_groups};
use crate::alert::{Alert, EventIds, Merge, UnitAlerts, bucket, digest};
use crate::detect::ruleset::{Match, Mode, RuleSet};

/// An alert for one event rule's match.
pub fn from_match(rules: &RuleSet, m: &Match) -> Alert {
    let rule = rules.rule(m.rule);
    let account = m.account_id().unwrap_or("");
    let fingerprint = digest(&[&rule.id, m.principal(), account], 16);
    let id = digest(&[&fingerprint, &bucket(m.time, rules.dedup_secs(m.rule)).to_string()], 16);
    let summary = summary(&rule.title, m);
    Alert {
        id,
        fingerprint,
        rule: rule.id.clone(),
        title: rule.title.clone(),
        severity: rule.level,
        principal: m.principal().to_owned(),
        account_id: m.account_id().map(str::to_owned),
        region: m.region().map(str::to_owned),
        source_ip: m.source_ip().map(str::to_owned),
        user_agent: m.user_agent().map(str::to_owned),
        event_ids: EventIds::from_sorted(m.event_id().into_iter()),
        event_time: m.time,
        first_seen: m.time,
        count: 1,
        summary,
        details: details(m, &rule.origin),
    }
}

/// The event's name, the rule's origin and, for a denied or failed attempt, its error code.
fn details(m: &Match, origin: &str) -> serde_json::Value {
    let mut details = serde_json::json!({ "event_name": m.event_name(), "origin": origin });
    if let Some(code) = m.error_code() {
        details["error_code"] = code.into();
    }
    details
}

/// Matches of one rule (by id) in one mode.
pub type RuleCount = (String, Mode, u64);

/// What a batch's matches amount to so far: built unit by unit as workers hand them over (so the work overlaps
/// with parsing), taken whole when the batch commits.
#[derive(Debug, Default)]
pub struct Planned {
    /// Event-rule matches by rule, subject and bucket (see [`UnitAlerts`]), merged across units: each becomes one
    /// alert when the batch is taken, so formatting and hashing happen once per batch, not once per unit.
    groups: HashMap<Box<[u8]>, Group>,
    /// Correlation alerts by id, with how they merge.
    alerts: HashMap<String, (Alert, Merge)>,
    /// Matches per rule and mode, for the metrics.
    counts: HashMap<(u32, Mode), u64>,
}

impl Planned {
    fn add(&mut self, alert: Alert, merge: Merge) {
        match self.alerts.entry(alert.id.clone()) {
            Entry::Occupied(mut mine) => mine.get_mut().0.merge(alert, merge),
            Entry::Vacant(slot) => {
                slot.insert((alert, merge));
            }
        }
    }

    /// The alerts sorted by id, and the match counts per rule id and mode (tests compare batches with it).
    #[cfg(test)]
    pub fn finish(self, rules: &RuleSet) -> (Vec<(Alert, Merge)>, Vec<RuleCount>) {
        let (alerts, counts) = self.into_alerts(rules);
        let mut alerts: Vec<_> = alerts.collect();
        alerts.sort_by(|a, b| a.0.id.cmp(&b.0.id));
        (alerts, counts)
    }

    /// The alerts, each built when the iterator reaches it (in no particular order: the deliverer sends by id),
    /// and the match counts per rule id and mode.
    pub fn into_alerts<'r>(self, rules: &'r RuleSet) -> (impl Iterator<Item = (Alert, Merge)> + 'r, Vec<RuleCount>) {
        let mut counts: Vec<_> =
            self.counts.into_iter().map(|((rule, mode), n)| (rules.rule(rule).id.clone(), mode, n)).collect();
        counts.sort_by(|a, b| a.0.cmp(&b.0));
        // A group's alert id is unique (its rule is an event rule, never a correlation) and its ids are already
        // sorted and cut, so it goes straight to the list.
        let groups = self.groups.into_values().map(move |group| (group.into_alert(rules), Merge::Sum));
        (self.alerts.into_values().chain(groups), counts)
    }
}

/// Adds one unit's groups and counts to `planned`, and its correlation hits to the windows, with an alert for
/// every correlation whose condition now holds.
pub fn plan(rules: &RuleSet, unit: UnitAlerts, correlator: &mut correlate::Correlator, planned: &mut Planned) {
    for (rule, n) in unit.counts.into_iter().enumerate().filter(|(_, n)| *n > 0) {
        let rule = rule as u32;
        *planned.counts.entry((rule, rules.mode(rule))).or_default() += n;
    }
    merge_groups(&mut planned.groups, unit.groups);
    for alert in correlator.observe(rules, unit.correlated) {
        let index = rules.index_of(&alert.rule).expect("a correlation alert names a loaded rule");
        let mode = rules.mode(index);
        *planned.counts.entry((index, mode)).or_default() += 1;
        if mode == Mode::Live {
            planned.add(alert, Merge::Max);
        }
    }
}

fn summary(title: &str, m: &Match) -> String {
    let mut summary = format!("{title}: {} called {}", m.principal(), m.event_name());
    if let Some(ip) = m.source_ip() {
        summary.push_str(" from ");
        summary.push_str(ip);
    }
    if let Some(region) = m.region() {
        summary.push_str(" in ");
        summary.push_str(region);
    }
    if let Some(code) = m.error_code() {
        summary.push_str(" (failed: ");
        summary.push_str(code);
        summary.push(')');
    }
    summary
}
