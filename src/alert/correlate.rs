//! Sigma correlations (`event_count`, `value_count`, `temporal`): per rule and group, the recent matches of the
//! correlated rules in event-time order, and the windows that satisfy the condition.
//!
//! The windows live in memory on the committer and are mirrored in the store (new hits inserted and old ones
//! pruned in the batch's transaction), so a restart resumes with exactly the windows the committed files built.
//! A window is `[end − timespan, end]` for each hit `end`; a hit is checked against every window that contains it,
//! so files arriving out of order (backfills) still count.

use std::sync::Arc;

use rustc_hash::FxHashMap as HashMap;

use crate::alert::{Alert, MAX_EVENT_IDS, bucket, digest};
use crate::detect::rule::CorrelationKind;
use crate::detect::ruleset::{Match, RuleSet};
use crate::time::Timestamp;

/// One match of a correlated rule, as kept in a window (and stored, without region, IP and agent).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Hit {
    pub time: Timestamp,
    /// The correlated rule that matched (its id).
    pub rule: String,
    pub event_id: Option<String>,
    /// For `value_count`: the counted field's value.
    pub value: Option<String>,
    pub principal: String,
    pub account_id: Option<String>,
    pub region: Option<String>,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
}

/// How far behind the newest hit of a window a late hit still counts: CloudTrail delivers most files within
/// 15 minutes, and a backfill walks its layout in time order, so an hour covers both without keeping a noisy
/// group's whole day in memory.
pub const LATE_SECS: i64 = 3600;

/// A window's key: the correlation rule's id and the group-by values.
pub type WindowKey = (String, String);

/// Windows and the hits to store share keys and hits (`Arc`): a noisy correlation adds a hit per matching event.
#[derive(Debug, Default)]
pub struct Correlator {
    windows: HashMap<Arc<WindowKey>, Vec<Arc<Hit>>>,
    /// Since the last [`Correlator::take_changes`]: hits to insert, and windows pruned below a time.
    added: Vec<(Arc<WindowKey>, Arc<Hit>)>,
    pruned: Vec<(WindowKey, Timestamp)>,
}

/// What the store must write to mirror the windows.
#[derive(Debug, Default)]
pub struct Changes {
    pub added: Vec<(Arc<WindowKey>, Arc<Hit>)>,
    pub pruned: Vec<(WindowKey, Timestamp)>,
}

impl Correlator {
    /// Rebuilds windows from stored hits.
    pub fn from_hits(hits: impl IntoIterator<Item = (WindowKey, Hit)>) -> Correlator {
        let mut correlator = Correlator::default();
        for (key, hit) in hits {
            correlator.windows.entry(Arc::new(key)).or_default().push(Arc::new(hit));
        }
        for window in correlator.windows.values_mut() {
            window.sort();
        }
        correlator
    }

    pub fn take_changes(&mut self) -> Changes {
        Changes { added: std::mem::take(&mut self.added), pruned: std::mem::take(&mut self.pruned) }
    }

    /// Hits held, over all windows.
    pub fn len(&self) -> usize {
        self.windows.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds the matches' correlation hits and returns an alert for every window that now satisfies its condition.
    pub fn observe(&mut self, rules: &RuleSet, matches: &[Match], dedup_secs: i64) -> Vec<Alert> {
        // Per touched window: the earliest and latest new hit.
        let mut touched: HashMap<(u32, String), (Timestamp, Timestamp)> = HashMap::default();
        for m in matches {
            for h in &m.hits {
                let correlation = rules.rule(h.correlation);
                let key = (correlation.id.clone(), h.group.clone());
                let hit = Arc::new(Hit {
                    time: m.time,
                    rule: rules.rule(m.rule).id.clone(),
                    event_id: m.event_id().map(str::to_owned),
                    value: h.value.clone(),
                    principal: m.principal().to_owned(),
                    account_id: m.account_id().map(str::to_owned),
                    region: m.region().map(str::to_owned),
                    source_ip: m.source_ip().map(str::to_owned),
                    user_agent: m.user_agent().map(str::to_owned),
                });
                let key = match self.windows.get_key_value(&key) {
                    Some((shared, _)) => Arc::clone(shared),
                    None => Arc::new(key),
                };
                let window = self.windows.entry(Arc::clone(&key)).or_default();
                let at = window.partition_point(|x| x < &hit);
                window.insert(at, Arc::clone(&hit));
                self.added.push((key, hit));
                let span = touched.entry((h.correlation, h.group.clone())).or_insert((m.time, m.time));
                span.0 = span.0.min(m.time);
                span.1 = span.1.max(m.time);
            }
        }
        let mut alerts = Vec::new();
        let mut touched: Vec<_> = touched.into_iter().collect();
        touched.sort();
        for ((index, group), (from, to)) in touched {
            let rule = rules.rule(index);
            let correlation = rules.correlation(index).expect("hits name correlations");
            let span = correlation.timespan_secs;
            let key = (rule.id.clone(), group.clone());
            let window = &self.windows[&key];
            // Every window [end − span, end] that contains a new hit, swept in time order: `start` and `last`
            // only move forward, and value_count/temporal keep per-value counts of what is inside, so a noisy
            // group costs O(hits) per batch rather than O(hits × window).
            // The best window per dedup bucket of its end, so that which alerts exist does not depend on the order
            // files arrive in: every window that finally holds is evaluated whole when its last hit arrives.
            let alert_bucket = |time| bucket(time, dedup_secs.max(span));
            let mut best: Vec<(i64, usize, usize, u64)> = Vec::new();
            let mut inside: HashMap<&str, u32> = HashMap::default();
            let (mut start, mut last) = (0, 0);
            fn counted(kind: CorrelationKind, h: &Hit) -> Option<&str> {
                match kind {
                    CorrelationKind::EventCount => None,
                    CorrelationKind::ValueCount => h.value.as_deref(),
                    CorrelationKind::Temporal => Some(h.rule.as_str()),
                }
            }
            for end in window.partition_point(|h| h.time < from)..window.len() {
                let end_time = window[end].time;
                if end_time > to + span {
                    break;
                }
                while last < window.len() && window[last].time <= end_time {
                    if let Some(value) = counted(correlation.kind, &window[last]) {
                        *inside.entry(value).or_default() += 1;
                    }
                    last += 1;
                }
                while window[start].time < end_time - span {
                    if let Some(value) = counted(correlation.kind, &window[start])
                        && let Some(n) = inside.get_mut(value)
                    {
                        *n -= 1;
                        if *n == 0 {
                            inside.remove(value);
                        }
                    }
                    start += 1;
                }
                let measure = match correlation.kind {
                    CorrelationKind::EventCount => (last - start) as u64,
                    CorrelationKind::ValueCount | CorrelationKind::Temporal => inside.len() as u64,
                };
                let holds = match (correlation.kind, correlation.threshold) {
                    (CorrelationKind::Temporal, _) => measure as usize >= correlation.rules.len(),
                    (_, Some(threshold)) => threshold.holds(measure),
                    (_, None) => false,
                };
                if holds {
                    let b = alert_bucket(end_time);
                    match best.last_mut() {
                        Some(same) if same.0 == b => {
                            if measure >= same.3 {
                                *same = (b, start, last, measure);
                            }
                        }
                        _ => best.push((b, start, last, measure)),
                    }
                }
            }
            for (b, start, last, measure) in best {
                let hits = &window[start..last];
                let latest = hits.last().expect("a satisfied window has hits");
                // Stored hits come back without their context; the newest hit that has it speaks for the window.
                let context = hits.iter().rev().find(|h| h.source_ip.is_some() || h.region.is_some()).unwrap_or(latest);
                let fingerprint = digest(&[&rule.id, &group], 16);
                let id = digest(&[&fingerprint, &b.to_string()], 16);
                let mut event_ids: Vec<String> = hits.iter().filter_map(|h| h.event_id.clone()).collect();
                event_ids.sort_unstable();
                event_ids.dedup();
                event_ids.truncate(MAX_EVENT_IDS);
                let group_values: Vec<&str> = group.split('\u{1f}').collect();
                let summary = format!(
                    "{}: {} matching events of {} for {} within {}s",
                    rule.title,
                    hits.len(),
                    correlation.rules.join(", "),
                    group_values.join(", "),
                    span
                );
                alerts.push(Alert {
                    id,
                    fingerprint,
                    rule: rule.id.clone(),
                    title: rule.title.clone(),
                    severity: rule.level,
                    principal: latest.principal.clone(),
                    account_id: latest.account_id.clone(),
                    region: context.region.clone(),
                    source_ip: context.source_ip.clone(),
                    user_agent: context.user_agent.clone(),
                    event_ids,
                    event_time: latest.time,
                    first_seen: hits[0].time,
                    count: hits.len() as u64,
                    summary,
                    details: serde_json::json!({
                        "correlation": match correlation.kind {
                            CorrelationKind::EventCount => "event_count",
                            CorrelationKind::ValueCount => "value_count",
                            CorrelationKind::Temporal => "temporal",
                        },
                        "rules": correlation.rules,
                        "group_by": correlation.group_by.iter().zip(&group_values)
                            .map(|(f, v)| (f.clone(), serde_json::Value::from(*v)))
                            .collect::<serde_json::Map<_, _>>(),
                        "measure": measure,
                        "timespan_secs": span,
                    }),
                });
            }
            // Keep what late files may still need: two timespans, and at least LATE_SECS, behind the newest hit.
            let window = self.windows.get_mut(&key).expect("touched");
            let newest = window.last().map_or(Timestamp::MIN, |h| h.time);
            let cutoff = newest.saturating_sub((2 * span).max(LATE_SECS));
            let keep_from = window.partition_point(|h| h.time < cutoff);
            if keep_from > 0 {
                window.drain(..keep_from);
                self.pruned.push((key, cutoff));
            }
        }
        alerts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::ruleset::CorrelationHit;

    const RULES: &str = r#"
title: Denied
id: denied
logsource: {product: aws, service: cloudtrail}
detection: {selection: {errorCode: AccessDenied}, condition: selection}
---
title: Burst of denied calls
id: burst
correlation: {type: event_count, rules: denied, group-by: [principal], timespan: 10m, condition: {gte: 3}}
level: high
"#;

    fn rules() -> RuleSet {
        let rules = crate::detect::rule::load(RULES, "t.yml").into_iter().map(Result::unwrap).collect();
        RuleSet::build(rules).0
    }

    fn hit(rules: &RuleSet, principal: &str, minute: i64, id: &str) -> Match {
        let burst = rules.index_of("burst").unwrap();
        Match::new(
            rules.index_of("denied").unwrap(),
            1_790_000_000 + minute * 60,
            [Some(id), Some("ListUsers"), Some(principal), Some("1"), Some("eu-west-1"), Some("198.51.100.1"), None],
            vec![CorrelationHit { correlation: burst, group: principal.into(), value: None }],
        )
    }

    /// `(principal, count, event ids)` of the alerts, by id.
    fn summary(alerts: Vec<Alert>) -> Vec<(String, String, u64, Vec<String>)> {
        let mut out: Vec<_> = alerts.into_iter().map(|a| (a.id, a.principal, a.count, a.event_ids)).collect();
        out.sort();
        out.dedup_by(|a, b| a.0 == b.0 && a.2 <= b.2);
        out
    }

    #[test]
    fn windows_count_in_event_time_whatever_the_order_and_across_restarts() {
        let rules = rules();
        let events = [
            hit(&rules, "alice", 0, "a1"),
            hit(&rules, "alice", 4, "a2"),
            hit(&rules, "bob", 5, "b1"),
            hit(&rules, "alice", 9, "a3"),
            hit(&rules, "bob", 30, "b2"),
            hit(&rules, "bob", 45, "b3"),
            hit(&rules, "alice", 25, "a4"),
        ];
        // All at once: alice has 3 within 10 minutes, bob never does.
        let mut all = Correlator::default();
        let once = summary(all.observe(&rules, &events, 3600));
        assert_eq!(once.len(), 1, "{once:?}");
        assert_eq!(
            (once[0].1.as_str(), once[0].2, once[0].3.clone()),
            ("alice", 3, vec!["a1".into(), "a2".into(), "a3".into()])
        );
        // Reversed, one event per batch (a backfill of files out of order): the same alert, same id.
        let mut reversed = Correlator::default();
        let mut got = Vec::new();
        for e in events.iter().rev() {
            got.extend(reversed.observe(&rules, std::slice::from_ref(e), 3600));
        }
        assert_eq!(summary(got), once);
        // Half, then a restart from what the store holds, then the rest.
        let mut first = Correlator::default();
        let mut got = first.observe(&rules, &events[..2], 3600);
        let stored = first.take_changes();
        let kept: Vec<(WindowKey, Hit)> = stored
            .added
            .into_iter()
            .filter(|(k, h)| !stored.pruned.iter().any(|(pk, cut)| *pk == **k && h.time < *cut))
            .map(|(k, h)| ((*k).clone(), (*h).clone()))
            .collect();
        let mut restarted = Correlator::from_hits(kept);
        got.extend(restarted.observe(&rules, &events[2..], 3600));
        assert_eq!(summary(got), once);
    }

    /// value_count over a sliding window: values that fell out of the window stop counting, a value seen twice
    /// counts once, and the window that holds the most values is the one reported.
    #[test]
    fn value_count_counts_distinct_values_inside_each_window() {
        const VALUES: &str = r#"
title: Listed
id: listed
logsource: {product: aws, service: cloudtrail}
detection: {selection: {eventName|startswith: List}, condition: selection}
---
title: Enumeration
id: enum
correlation: {type: value_count, rules: listed, group-by: [principal], timespan: 10m, condition: {gte: 3, field: eventName}}
level: medium
"#;
        let rules: RuleSet =
            RuleSet::build(crate::detect::rule::load(VALUES, "v.yml").into_iter().map(Result::unwrap).collect()).0;
        let call = |minute: i64, name: &str| {
            Match::new(
                rules.index_of("listed").unwrap(),
                1_790_000_000 + minute * 60,
                [Some(&format!("{name}@{minute}")), Some(name), Some("carol"), Some("1"), None, None, None],
                vec![CorrelationHit {
                    correlation: rules.index_of("enum").unwrap(),
                    group: "carol".into(),
                    value: Some(name.into()),
                }],
            )
        };
        // (events as (minute, eventName), expected (count, distinct values) of the alert, if any)
        type Case<'a> = (&'a [(i64, &'a str)], Option<(u64, u64)>);
        let cases: &[Case] = &[
            (&[(0, "ListA"), (1, "ListB"), (15, "ListC")], None),
            (&[(0, "ListA"), (1, "ListA"), (2, "ListB"), (3, "ListB")], None),
            (&[(0, "ListA"), (1, "ListB"), (2, "ListC")], Some((3, 3))),
            (&[(0, "ListA"), (1, "ListB"), (20, "ListA"), (21, "ListC"), (22, "ListD")], Some((3, 3))),
            (&[(0, "ListA"), (5, "ListB"), (6, "ListB"), (9, "ListC"), (12, "ListD")], Some((4, 3))),
        ];
        for (events, expected) in cases {
            let matches: Vec<Match> = events.iter().map(|(m, n)| call(*m, n)).collect();
            let alerts = Correlator::default().observe(&rules, &matches, 3600);
            let got = alerts.iter().map(|a| (a.count, a.details["measure"].as_u64().unwrap())).max();
            assert_eq!(got, *expected, "{events:?}");
        }
    }
}
