//! Sigma correlations (`event_count`, `value_count`, `temporal`): per rule and group, the recent matches of the
//! correlated rules in event-time order, and the windows that satisfy the condition.
//!
//! The windows live in memory on the alert planner thread. The store keeps a log of their hits ([`HitLog`]: one row per
//! batch, written in the batch's transaction, compacted into a snapshot of the live windows when the log has grown
//! to several times their size), so a restart resumes with exactly the windows the committed files built: loading
//! prunes each window as the last batch that touched it did.
//! A window is `[end − timespan, end]` for each hit `end`; a hit is checked against every window that contains it,
//! so files arriving out of order (backfills) still count.

use std::cmp::Ordering;
use std::sync::Arc;

use rustc_hash::FxHashMap as HashMap;

use crate::alert::{Alert, EventIds, bucket, digest};
use crate::detect::rule::CorrelationKind;
use crate::detect::ruleset::{Match, RuleSet, Span};
use crate::time::Timestamp;

/// One match of a correlated rule, as kept in a window. The match's text fields are shared by every correlation
/// it feeds; a hit loaded from the store has no event name (nor a region, IP or agent if a version 1 row held it).
#[derive(Debug, Clone)]
pub struct Hit {
    pub time: Timestamp,
    /// The correlated event rule (an index into the rule set).
    pub rule: u32,
    /// For `value_count`: the counted field's value, in the source's text.
    value: Option<Span>,
    pub source: Arc<Match>,
    /// Added since the windows were last written to the log.
    fresh: bool,
}

impl Hit {
    /// For `value_count`: the counted field's value.
    pub fn value(&self) -> Option<&str> {
        self.value.map(|value| self.source.span(value))
    }

    /// A total order, so that windows (and the alerts they raise) do not depend on arrival order.
    fn order(&self, other: &Hit) -> Ordering {
        // The time decides nearly every comparison: the match's text fields are read only on a tie.
        self.time.cmp(&other.time).then_with(|| {
            let (a, b) = (&self.source, &other.source);
            (a.event_id(), self.rule, self.value(), a.principal(), a.account_id()).cmp(&(
                b.event_id(),
                other.rule,
                other.value(),
                b.principal(),
                b.account_id(),
            ))
        })
    }
}

/// What a window keeps behind its newest hit: whatever a hit arriving up to `lateness` behind that newest one can
/// share a window with. Such a hit is evaluated with every window that holds it, [time − span, time] to
/// [time, time + span], and those start no earlier than `newest − lateness − span`. So, whatever the batches, the
/// threads and the order files arrive in, a window counts the same hits as long as each arrives within the
/// lateness of its group's newest; only memory grows with the lateness.
fn keep_secs(span: i64, lateness: i64) -> i64 {
    span.saturating_add(lateness)
}

#[derive(Debug, Default)]
struct Window {
    /// In [`Hit::order`].
    hits: Vec<Hit>,
    /// The earliest and latest hit added since the window was last measured.
    touched: Option<(Timestamp, Timestamp)>,
    /// Whether hits were added since the last batch was taken: the window is pruned then, relative to its newest.
    added: bool,
}

impl Window {
    /// Adds `hit` in order; whether it is the first since the window was last measured. A hit the window already
    /// holds (the same event, by its id, for the same rule and group: two trails delivering one event, or a file
    /// and a copy of it under another key) is not added again, so that a threshold counts events, not deliveries.
    fn add(&mut self, hit: Hit) -> bool {
        let time = hit.time;
        // Hits nearly always arrive in order: one comparison with the newest instead of a binary search.
        match self.hits.last().map(|last| last.order(&hit)) {
            Some(Ordering::Less) | None => self.hits.push(hit),
            Some(_) => {
                let at = self.hits.partition_point(|x| x.order(&hit) == Ordering::Less);
                let again = self.hits.get(at).is_some_and(|x| x.order(&hit) == Ordering::Equal);
                if again && hit.source.event_id().is_some() {
                    return false;
                }
                self.hits.insert(at, hit);
            }
        }
        self.added = true;
        match &mut self.touched {
            Some(span) => {
                *span = (span.0.min(time), span.1.max(time));
                false
            }
            None => {
                self.touched = Some((time, time));
                true
            }
        }
    }
}

/// Windows by correlation (rule index) and group-by values (joined by U+001F).
#[derive(Debug, Default)]
pub struct Correlator {
    windows: HashMap<u32, HashMap<Box<str>, Window>>,
    /// Hits added since the last [`Correlator::take_changes`], encoded for the store.
    log: HitLog,
    /// Hits in the store's log (what a restart would read before pruning).
    logged: usize,
    /// Rows in the store's log.
    rows: usize,
}

/// Log rows after which the next batch writes a snapshot instead: a trickle of hits (one row per small batch)
/// would otherwise leave a daemon's log with a row per commit.
const MAX_LOG_ROWS: usize = 1024;

/// What the store must write to mirror the windows: a log row, replacing every earlier row when `snapshot`.
#[derive(Debug, Default)]
pub struct Changes {
    pub log: Vec<u8>,
    pub snapshot: bool,
}

impl Correlator {
    /// Rebuilds the windows from the store's log rows (oldest first); hits of correlations or rules no longer
    /// loaded are dropped. Returns the number of rows that could not be read (skipped).
    pub fn load(rules: &RuleSet, rows: &[Vec<u8>]) -> (Correlator, usize) {
        let mut correlator = Correlator::default();
        let mut unreadable = 0;
        correlator.rows = rows.len();
        // Row by row (a row is one batch's hits, or a snapshot of the windows), pruned after each as the batch
        // that wrote it was pruned when it was taken.
        for row in rows {
            let mut hits = Vec::new();
            if HitLog::decode(row, &mut |h| hits.push(h)).is_none() {
                unreadable += 1;
                continue;
            }
            correlator.logged += hits.len();
            for h in hits {
                let (Some(correlation), Some(rule)) = (rules.index_of(h.correlation), rules.index_of(h.rule)) else {
                    continue;
                };
                if rules.correlation(correlation).is_none() {
                    continue;
                }
                let fields = [h.event_id, None, Some(h.principal), h.account, h.region, h.source_ip, h.user_agent];
                // The hit's value goes in the source's text; its group is the window's key, not needed there.
                let mut source = Match::new(rule, h.time, fields, &[(correlation, "", h.value)]);
                let value = source.hits.pop().and_then(|hit| hit.value);
                let hit = Hit { time: h.time, rule, value, source: Arc::new(source), fresh: false };
                let window = correlator.windows.entry(correlation).or_default().entry(h.group.into()).or_default();
                window.added = true;
                window.hits.push(hit);
            }
            for window in correlator.windows.values_mut().flat_map(|groups| groups.values_mut()) {
                if window.added {
                    window.hits.sort_by(Hit::order);
                    // As `Window::add` does: one event (by id) counts once; hits without an id never merge.
                    window.hits.dedup_by(|a, b| a.order(b) == Ordering::Equal && a.source.event_id().is_some());
                }
            }
            correlator.prune_batch(rules);
        }
        (correlator, unreadable)
    }

    /// The log row for the hits added since the last call; a snapshot of the live windows instead once the
    /// store's log holds several times as many hits as the windows do (so a restart reads O(live hits)), or
    /// [`MAX_LOG_ROWS`] rows.
    pub fn take_changes(&mut self, rules: &RuleSet) -> Changes {
        self.prune_batch(rules);
        let added = self.log.hits;
        let log = std::mem::take(&mut self.log);
        let live = self.len();
        let rows = self.rows + usize::from(added > 0);
        if self.logged + added <= 2 * live + 100_000 && rows <= MAX_LOG_ROWS {
            self.logged += added;
            self.rows = rows;
            return Changes { log: log.bytes, snapshot: false };
        }
        let mut snapshot = HitLog::default();
        let mut indices: Vec<_> = self.windows.keys().copied().collect();
        indices.sort_unstable();
        for index in indices {
            let id = &rules.rule(index).id;
            let mut groups: Vec<_> = self.windows[&index].iter().collect();
            groups.sort_by(|a, b| a.0.cmp(b.0));
            for (group, window) in groups {
                for hit in &window.hits {
                    snapshot.push(id, group, hit, &rules.rule(hit.rule).id);
                }
            }
        }
        self.logged = snapshot.hits;
        self.rows = usize::from(snapshot.hits > 0);
        Changes { log: snapshot.bytes, snapshot: true }
    }

    /// Drops, from each window the batch added hits to, what no hit arriving within the lateness can need: hits
    /// more than [`keep_secs`] behind the window's newest. Relative to the group's own newest hit, not to a global
    /// clock, so that a replay taking accounts one after the other, or units that two workers hand over out of
    /// order, prune nothing a group still needs.
    fn prune_batch(&mut self, rules: &RuleSet) {
        let lateness = rules.correlation_lateness_secs();
        for (&index, groups) in &mut self.windows {
            let span = rules.correlation(index).expect("windows are correlations").timespan_secs;
            groups.retain(|_, window| {
                if std::mem::take(&mut window.added)
                    && let Some(newest) = window.hits.last().map(|h| h.time)
                {
                    let keep_from = window.hits.partition_point(|h| h.time < newest - keep_secs(span, lateness));
                    window.hits.drain(..keep_from);
                }
                !window.hits.is_empty()
            });
        }
    }

    /// Hits held, over all windows.
    pub fn len(&self) -> usize {
        self.windows.values().flat_map(|groups| groups.values()).map(|w| w.hits.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds the matches' correlation hits and returns an alert for every window that now satisfies its condition.
    pub fn observe(&mut self, rules: &RuleSet, matches: Vec<Match>) -> Vec<Alert> {
        let mut touched: Vec<(u32, Box<str>)> = Vec::new();
        for mut m in matches {
            let correlations = std::mem::take(&mut m.hits);
            let source = Arc::new(m);
            for h in correlations {
                let hit = Hit {
                    time: source.time,
                    rule: source.rule,
                    value: h.value,
                    source: Arc::clone(&source),
                    fresh: true,
                };
                let group = source.span(h.group);
                let groups = self.windows.entry(h.correlation).or_default();
                // One lookup of the group for a window that exists (nearly every hit after a window's first).
                let first_touch = match groups.get_mut(group) {
                    Some(window) => window.add(hit),
                    None => groups.entry(group.into()).or_default().add(hit),
                };
                if first_touch {
                    touched.push((h.correlation, group.into()));
                }
            }
        }
        touched.sort_unstable();
        let mut alerts = Vec::new();
        for (index, group) in touched {
            let rule = rules.rule(index);
            let correlation = rules.correlation(index).expect("hits name correlations");
            let span = correlation.timespan_secs;
            let window = self.windows.get_mut(&index).and_then(|g| g.get_mut(&group)).expect("touched");
            let (from, to) = window.touched.take().expect("touched");
            // The log gets the new hits window by window, so that a window's correlation, group, rule and
            // principal are written once per run of hits rather than once per hit.
            let first_new = window.hits.partition_point(|h| h.time < from);
            for hit in window.hits[first_new..].iter_mut().take_while(|h| h.time <= to).filter(|h| h.fresh) {
                hit.fresh = false;
                self.log.push(&rule.id, &group, hit, &rules.rule(hit.rule).id);
            }
            let hits = &window.hits;
            // Every window [end − span, end] that contains a new hit, swept in time order: `start` and `last`
            // only move forward, and value_count/temporal keep per-value counts of what is inside, so a noisy
            // group costs O(hits) per batch rather than O(hits × window).
            // The best window per dedup bucket of its end, so that which alerts exist does not depend on the order
            // files arrive in: every window that finally holds is evaluated whole when its last hit arrives.
            let alert_bucket = |time| bucket(time, rules.dedup_secs(index).max(span));
            let mut best: Vec<(i64, usize, usize, u64)> = Vec::new();
            let mut inside: HashMap<&str, u32> = HashMap::default();
            // The sweep starts one span before the first window's end: a window keeps hours of hits behind it
            // (for late files), and walking them in from the start cost every touch of a noisy group.
            let first_end = hits.partition_point(|h| h.time < from);
            let first_start =
                hits.get(first_end).map_or(first_end, |h| hits.partition_point(|x| x.time < h.time - span));
            let (mut start, mut last) = (first_start, first_start);
            fn counted<'a>(kind: CorrelationKind, rules: &'a RuleSet, h: &'a Hit) -> Option<&'a str> {
                match kind {
                    CorrelationKind::EventCount => None,
                    CorrelationKind::ValueCount => h.value(),
                    CorrelationKind::Temporal => Some(rules.rule(h.rule).id.as_str()),
                }
            }
            let counted = |h| counted(correlation.kind, rules, h);
            for end in first_end..hits.len() {
                let end_time = hits[end].time;
                if end_time > to + span {
                    break;
                }
                while last < hits.len() && hits[last].time <= end_time {
                    if let Some(value) = counted(&hits[last]) {
                        *inside.entry(value).or_default() += 1;
                    }
                    last += 1;
                }
                while hits[start].time < end_time - span {
                    if let Some(value) = counted(&hits[start])
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
                let hits = &hits[start..last];
                let latest = &hits.last().expect("a satisfied window has hits").source;
                // Hits from version 1 log rows have no context; the newest hit that has it speaks for the window.
                let context = hits
                    .iter()
                    .rev()
                    .map(|h| &h.source)
                    .find(|s| s.source_ip().is_some() || s.region().is_some())
                    .unwrap_or(latest);
                let fingerprint = digest(&[&rule.id, &group], 16);
                let id = digest(&[&fingerprint, &b.to_string()], 16);
                let event_ids = EventIds::smallest(hits.iter().filter_map(|h| h.source.event_id()));
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
                    principal: latest.principal().to_owned(),
                    account_id: latest.account_id().map(str::to_owned),
                    region: context.region().map(str::to_owned),
                    source_ip: context.source_ip().map(str::to_owned),
                    user_agent: context.user_agent().map(str::to_owned),
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
        }
        alerts
    }
}

/// The store's form of correlation hits: records of (correlation id, group, time, rule id, event id, value,
/// principal, account, region, source IP, user agent), after a version byte. A string is its length (u32,
/// little-endian) and bytes; `NONE` stands for an absent one, and `SAME - k` for the k-th most recently used
/// distinct value of the same field in the row (k = 0: the last one, as hits of one correlation, group and principal
/// come together; an actor's few addresses and agents recur), which keeps a noisy correlation's row small without
/// an index.
#[derive(Debug, Default)]
pub struct HitLog {
    bytes: Vec<u8>,
    /// Per field, where its most recently used distinct values lie in `bytes`, most recent first.
    recent: [[Option<(usize, usize)>; RECENT_VALUES]; LOG_FIELDS],
    hits: usize,
}

/// One decoded record, borrowed from the row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedHit<'a> {
    pub correlation: &'a str,
    pub group: &'a str,
    pub time: Timestamp,
    pub rule: &'a str,
    pub event_id: Option<&'a str>,
    pub value: Option<&'a str>,
    pub principal: &'a str,
    pub account: Option<&'a str>,
    /// The event's context, which the alert of the window the hit ends names (`None` in version 1 rows).
    pub region: Option<&'a str>,
    pub source_ip: Option<&'a str>,
    pub user_agent: Option<&'a str>,
}

/// Version 2 added the hit's region, source IP and user agent: a correlation alert names the newest hit's, and a
/// restart that read hits without them named an older hit's instead (after a `kill -9`, 4 of 23,264 alerts of a
/// replay differed from an uninterrupted one in region and agent).
const LOG_VERSION: u8 = 2;
/// The string fields of a record: correlation, group, rule, event id, value, principal, account, region, source
/// IP, user agent (the time is written between group and rule).
const LOG_FIELDS: usize = 10;
const NONE: u32 = u32::MAX;
/// The previous record's value; `SAME - k` the k-th most recent distinct one (version 2).
const SAME: u32 = u32::MAX - 1;
/// Distinct values per field that a record can refer back to.
const RECENT_VALUES: usize = 8;

/// Moves the `k`-th most recent value to the front (the last one used, nearly always, stays where it is).
fn use_recent<T: Copy>(recent: &mut [T; RECENT_VALUES], k: usize) {
    if k > 0 {
        let value = recent[k];
        recent.copy_within(..k, 1);
        recent[0] = value;
    }
}

impl HitLog {
    fn push(&mut self, correlation: &str, group: &str, hit: &Hit, rule: &str) {
        let s = &hit.source;
        self.record(&LoggedHit {
            correlation,
            group,
            time: hit.time,
            rule,
            event_id: s.event_id(),
            value: hit.value(),
            principal: s.principal(),
            account: s.account_id(),
            region: s.region(),
            source_ip: s.source_ip(),
            user_agent: s.user_agent(),
        });
    }

    pub fn record(&mut self, h: &LoggedHit<'_>) {
        if self.bytes.is_empty() {
            self.bytes.push(LOG_VERSION);
        }
        let fields = [
            Some(h.correlation),
            Some(h.group),
            Some(h.rule),
            h.event_id,
            h.value,
            Some(h.principal),
            h.account,
            h.region,
            h.source_ip,
            h.user_agent,
        ];
        for (i, field) in fields.into_iter().enumerate() {
            if i == 2 {
                self.bytes.extend_from_slice(&h.time.to_le_bytes());
            }
            let Some(text) = field else {
                self.bytes.extend_from_slice(&NONE.to_le_bytes());
                continue;
            };
            let recent = &mut self.recent[i];
            let bytes = &self.bytes;
            let found = recent.iter().position(|r| r.is_some_and(|(at, len)| &bytes[at..at + len] == text.as_bytes()));
            match found {
                Some(k) => {
                    self.bytes.extend_from_slice(&(SAME - k as u32).to_le_bytes());
                    use_recent(recent, k);
                }
                None => {
                    self.bytes.extend_from_slice(&(text.len() as u32).to_le_bytes());
                    recent.copy_within(..RECENT_VALUES - 1, 1);
                    recent[0] = Some((self.bytes.len(), text.len()));
                    self.bytes.extend_from_slice(text.as_bytes());
                }
            }
        }
        self.hits += 1;
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// Calls `each` with every record of `row`; `None` if the row is not a log row this version can read.
    pub fn decode<'a>(row: &'a [u8], each: &mut dyn FnMut(LoggedHit<'a>)) -> Option<()> {
        let (&version, mut rest) = row.split_first()?;
        // Version 1 rows (written before the context was logged) end each record at the account.
        let len = match version {
            1 => 7,
            LOG_VERSION => LOG_FIELDS,
            _ => return None,
        };
        let mut recent: [[Option<&'a str>; RECENT_VALUES]; LOG_FIELDS] = [[None; RECENT_VALUES]; LOG_FIELDS];
        while !rest.is_empty() {
            let mut fields: [Option<&'a str>; LOG_FIELDS] = [None; LOG_FIELDS];
            let mut time = 0;
            for (i, field) in fields[..len].iter_mut().enumerate() {
                if i == 2 {
                    let (bytes, tail) = rest.split_first_chunk::<8>()?;
                    time = i64::from_le_bytes(*bytes);
                    rest = tail;
                }
                let (marker, tail) = rest.split_first_chunk::<4>()?;
                rest = tail;
                let recent = &mut recent[i];
                *field = match u32::from_le_bytes(*marker) {
                    NONE => {
                        // Version 1 marked only the previous record's value, which an absent one cleared.
                        if version == 1 {
                            recent[0] = None;
                        }
                        None
                    }
                    marker if marker > SAME - RECENT_VALUES as u32 => {
                        let k = (SAME - marker) as usize;
                        if version == 1 && k > 0 {
                            return None;
                        }
                        let text = recent[k]?;
                        use_recent(recent, k);
                        Some(text)
                    }
                    len => {
                        let (text, tail) = rest.split_at_checked(len as usize)?;
                        rest = tail;
                        let text = std::str::from_utf8(text).ok()?;
                        recent.copy_within(..RECENT_VALUES - 1, 1);
                        recent[0] = Some(text);
                        Some(text)
                    }
                };
            }
            let [correlation, group, rule, event_id, value, principal, account, region, source_ip, user_agent] = fields;
            each(LoggedHit {
                correlation: correlation?,
                group: group?,
                time,
                rule: rule?,
                event_id,
                value,
                principal: principal?,
                account,
                region,
                source_ip,
                user_agent,
            });
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            &[(burst, principal, None)],
        )
    }

    /// `m`'s hits as [`Match::new`] takes them.
    fn hits_of(m: &Match) -> Vec<(u32, &str, Option<&str>)> {
        m.hits.iter().map(|h| (h.correlation, m.span(h.group), h.value.map(|v| m.span(v)))).collect()
    }

    /// `(principal, count, event ids)` of the alerts, by id.
    fn summary(alerts: Vec<Alert>) -> Vec<(String, String, u64, Vec<String>)> {
        let mut out: Vec<_> = alerts
            .into_iter()
            .map(|a| (a.id, a.principal, a.count, a.event_ids.iter().map(str::to_owned).collect()))
            .collect();
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
        let once = summary(all.observe(&rules, events.to_vec()));
        assert_eq!(once.len(), 1, "{once:?}");
        assert_eq!(
            (once[0].1.as_str(), once[0].2, once[0].3.clone()),
            ("alice", 3, vec!["a1".into(), "a2".into(), "a3".into()])
        );
        // Reversed, one event per batch (a backfill of files out of order): the same alert, same id.
        let mut reversed = Correlator::default();
        let mut got = Vec::new();
        for e in events.iter().rev() {
            got.extend(reversed.observe(&rules, vec![e.clone()]));
        }
        assert_eq!(summary(got), once);
        // Half, then a restart from what the store holds, then the rest; and the same from a snapshot of the
        // windows instead of the log.
        for snapshot in [false, true] {
            let mut first = Correlator::default();
            let mut got = first.observe(&rules, events[..2].to_vec());
            if snapshot {
                first.logged = 1_000_000;
            }
            let changes = first.take_changes(&rules);
            assert_eq!(changes.snapshot, snapshot);
            let (mut restarted, unreadable) = Correlator::load(&rules, &[changes.log]);
            assert_eq!((unreadable, restarted.len()), (0, 2));
            got.extend(restarted.observe(&rules, events[2..].to_vec()));
            assert_eq!(summary(got), once, "snapshot: {snapshot}");
        }
    }

    /// The same events delivered twice (two trails, or a file and a copy of it), in the same unit or later,
    /// before or after a restart, count once: two of alice's events seen twice each do not make the three the
    /// rule needs, and the alert a third event raises names each event once. Events without an id are never
    /// taken for one another.
    #[test]
    fn an_event_delivered_twice_counts_once() {
        let rules = rules();
        let twice = [hit(&rules, "alice", 0, "a1"), hit(&rules, "alice", 4, "a2")];
        let mut windows = Correlator::default();
        assert!(windows.observe(&rules, [twice.clone(), twice.clone()].concat()).is_empty());
        assert!(windows.observe(&rules, twice.to_vec()).is_empty());
        assert_eq!(windows.len(), 2);
        // Across a restart from the log too.
        let (mut windows, _) = Correlator::load(&rules, &[windows.take_changes(&rules).log]);
        assert!(windows.observe(&rules, twice.to_vec()).is_empty());
        let alerts =
            summary(windows.observe(&rules, vec![hit(&rules, "alice", 6, "a3"), hit(&rules, "alice", 6, "a3")]));
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        assert_eq!((alerts[0].2, alerts[0].3.clone()), (3, vec!["a1".into(), "a2".into(), "a3".into()]));
        // Without event ids, three hits of one minute are three events.
        let no_id = |minute| {
            let m = hit(&rules, "bob", minute, "x");
            let fields =
                [None, Some("ListUsers"), Some("bob"), Some("1"), Some("eu-west-1"), Some("198.51.100.1"), None];
            Match::new(m.rule, m.time, fields, &hits_of(&m))
        };
        let alerts = summary(Correlator::default().observe(&rules, vec![no_id(1), no_id(1), no_id(1)]));
        assert_eq!(alerts.iter().map(|a| (a.1.as_str(), a.2)).collect::<Vec<_>>(), [("bob", 3)]);
        // Nor across a restart: two of them logged, read back, and a third.
        let mut first = Correlator::default();
        assert!(first.observe(&rules, vec![no_id(1), no_id(1)]).is_empty());
        let (mut restarted, _) = Correlator::load(&rules, &[first.take_changes(&rules).log]);
        assert_eq!(restarted.len(), 2);
        assert_eq!(summary(restarted.observe(&rules, vec![no_id(1)])).len(), 1);
    }

    #[test]
    fn a_restart_prunes_windows_as_the_last_batch_did() {
        // alice's burst, then one hit two hours later, an hour's lateness: the early hits fall out of memory, and a
        // restart from the log (which still holds them) must not bring them back.
        let mut rules = rules();
        rules.set_correlation_lateness(3600);
        let mut live = Correlator::default();
        let mut rows = Vec::new();
        for batch in
            [vec![hit(&rules, "alice", 0, "a1"), hit(&rules, "alice", 1, "a2")], vec![hit(&rules, "alice", 120, "a3")]]
        {
            live.observe(&rules, batch);
            rows.push(live.take_changes(&rules).log);
        }
        assert_eq!(live.len(), 1);
        let (mut restarted, _) = Correlator::load(&rules, &rows);
        assert_eq!(restarted.len(), 1);
        // A late hit at minute 2 counts with what each still holds: nothing from minute 0 or 1.
        let late = || vec![hit(&rules, "alice", 2, "a4"), hit(&rules, "alice", 3, "a5")];
        assert_eq!(summary(live.observe(&rules, late())), summary(restarted.observe(&rules, late())));
    }

    /// The alerts a sequence of batches leaves stored: each batch observed, then taken (and pruned), every alert
    /// merged into the one with its id as the store does (`Merge::Max`). With `restart_at`, the correlator is
    /// rebuilt from the log rows before that batch, as a restarted daemon is.
    fn stored(rules: &RuleSet, batches: &[Vec<Match>], restart_at: Option<usize>) -> Vec<(String, u64, Vec<String>)> {
        let mut windows = Correlator::default();
        let mut rows = Vec::new();
        let mut alerts: std::collections::BTreeMap<String, Alert> = Default::default();
        for (i, batch) in batches.iter().enumerate() {
            if restart_at == Some(i) {
                windows = Correlator::load(rules, &rows).0;
            }
            for alert in windows.observe(rules, batch.clone()) {
                match alerts.get_mut(&alert.id) {
                    Some(stored) => stored.merge(alert, crate::alert::Merge::Max),
                    None => {
                        alerts.insert(alert.id.clone(), alert);
                    }
                }
            }
            let changes = windows.take_changes(rules);
            if changes.snapshot {
                rows.clear();
            }
            rows.push(changes.log);
        }
        alerts.into_values().map(|a| (a.id, a.count, a.event_ids.iter().map(str::to_owned).collect())).collect()
    }

    /// Three principals' denied calls over ten hours in four regions, read as a replay would (in time order, in one
    /// batch or in small ones), as two workers interleave them (blocks swapped), region by region (as `aws s3
    /// sync` lays them into a spool), and with a restart half-way: with the default lateness (a day), the same
    /// alerts with the same counts and events every time. With an hour's lateness, region by region loses some.
    #[test]
    fn alerts_do_not_depend_on_batches_workers_or_arrival_order_within_the_lateness() {
        let rules = rules();
        let mut seed = 7u64;
        let mut next = |n: u64| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        // (region, minute, match) in time order.
        let mut hits: Vec<(u64, i64, Match)> = (0..600)
            .map(|i| {
                let (principal, minute, region) =
                    (["alice", "bob", "carol"][next(3) as usize], next(600) as i64, next(4));
                (region, minute, hit(&rules, principal, minute, &format!("e{i:03}")))
            })
            .collect();
        hits.sort_by_key(|(_, minute, m)| (*minute, m.event_id().unwrap().to_owned()));
        let in_time: Vec<Match> = hits.iter().map(|(_, _, m)| m.clone()).collect();
        let mut by_region = hits.clone();
        by_region.sort_by_key(|(region, minute, _)| (*region, *minute));
        let by_region: Vec<Match> = by_region.into_iter().map(|(_, _, m)| m).collect();
        let mut interleaved: Vec<Match> = Vec::new();
        for pair in in_time.chunks(80) {
            let (a, b) = pair.split_at(pair.len() / 2);
            interleaved.extend(b.iter().chain(a).cloned());
        }
        let batches = |matches: &[Match], size: usize| -> Vec<Vec<Match>> {
            matches.chunks(size).map(<[Match]>::to_vec).collect()
        };
        let want = stored(&rules, &batches(&in_time, in_time.len()), None);
        assert!(want.len() > 10, "{} alerts", want.len());
        for (name, batches, restart) in [
            ("time order, 7 a batch", batches(&in_time, 7), None),
            ("interleaved, 40 a batch", batches(&interleaved, 40), None),
            ("region by region, 5 a batch", batches(&by_region, 5), None),
            ("region by region, restarted", batches(&by_region, 5), Some(60)),
        ] {
            assert_eq!(stored(&rules, &batches, restart), want, "{name}");
        }
        let mut short = rules;
        short.set_correlation_lateness(3600);
        assert_ne!(stored(&short, &batches(&by_region, 5), None), want, "an hour is not enough region by region");
    }

    #[test]
    fn a_trickle_of_hits_is_compacted_by_row_count() {
        // One hit per batch (a daemon's SQS trickle): after MAX_LOG_ROWS rows the next batch writes a snapshot,
        // and the store's rows (as a store would hold them) load into the same windows.
        let rules = rules();
        let mut live = Correlator::default();
        let mut stored: Vec<Vec<u8>> = Vec::new();
        for i in 0..=MAX_LOG_ROWS as i64 {
            live.observe(&rules, vec![hit(&rules, &format!("p{}", i % 7), i / 20, &format!("e{i}"))]);
            let changes = live.take_changes(&rules);
            assert_eq!(changes.snapshot, i == MAX_LOG_ROWS as i64, "batch {i}");
            if changes.snapshot {
                stored.clear();
            }
            stored.push(changes.log);
        }
        assert_eq!(stored.len(), 1);
        let (restarted, unreadable) = Correlator::load(&rules, &stored);
        assert_eq!((unreadable, restarted.len(), restarted.rows), (0, live.len(), 1));
    }

    #[test]
    fn the_log_reads_back_what_was_written() {
        let records = [
            LoggedHit {
                correlation: "burst",
                group: "alice",
                time: -5,
                rule: "denied",
                event_id: Some("e1"),
                value: None,
                principal: "arn:aws:iam::1:user/alice",
                account: Some("1"),
                region: Some("eu-west-1"),
                source_ip: Some("198.51.100.1"),
                user_agent: Some("aws-cli/2"),
            },
            // Same correlation, group and principal (written as markers); an absent account; the same region and
            // agent (markers) from another address.
            LoggedHit {
                correlation: "burst",
                group: "alice",
                time: 1_790_000_000,
                rule: "denied",
                event_id: None,
                value: Some("ListUsers"),
                principal: "arn:aws:iam::1:user/alice",
                account: None,
                region: Some("eu-west-1"),
                source_ip: Some("203.0.113.9"),
                user_agent: Some("aws-cli/2"),
            },
            LoggedHit {
                correlation: "enum",
                group: "",
                time: 7,
                rule: "listed",
                event_id: Some("é"),
                value: Some(""),
                principal: "bob",
                account: Some("1"),
                region: None,
                source_ip: None,
                user_agent: None,
            },
        ];
        let mut records = records.to_vec();
        // alice again from her first address: a reference two values back, not the address written again.
        records.push(LoggedHit { time: 8, source_ip: Some("198.51.100.1"), ..records[0].clone() });
        let bytes = round_trip(&records);
        assert_eq!(bytes.windows(12).filter(|w| *w == b"198.51.100.1").count(), 1);
        // Truncated, or of an unknown version: unreadable, never misread.
        for bad in [&bytes[..bytes.len() - 1], &[9u8, 0][..], &[][..]] {
            assert_eq!(HitLog::decode(bad, &mut |_| {}), None, "{bad:?}");
        }
        // A version 1 row (no context) as the previous release wrote it: read without a context.
        fn put(row: &mut Vec<u8>, text: Option<&str>) {
            match text {
                Some(text) => {
                    row.extend_from_slice(&(text.len() as u32).to_le_bytes());
                    row.extend_from_slice(text.as_bytes());
                }
                None => row.extend_from_slice(&NONE.to_le_bytes()),
            }
        }
        let mut v1 = vec![1u8];
        put(&mut v1, Some("burst"));
        put(&mut v1, Some("alice"));
        v1.extend_from_slice(&(-5i64).to_le_bytes());
        for text in [Some("denied"), Some("e1"), None, Some("arn:aws:iam::1:user/alice"), Some("1")] {
            put(&mut v1, text);
        }
        let mut back = Vec::new();
        assert_eq!(HitLog::decode(&v1, &mut |h| back.push(h)), Some(()));
        let without_context = LoggedHit { region: None, source_ip: None, user_agent: None, ..records[0].clone() };
        assert_eq!(back, [without_context]);
    }

    /// Records drawn from a few values per field (absent ones included), so that every back-reference distance,
    /// and values falling out of the recent ones, occur: they read back as written.
    #[test]
    fn the_log_reads_back_any_mix_of_recurring_values() {
        let values: Vec<String> = (0..12).map(|i| format!("v{i}")).collect();
        let mut seed = 7u64;
        let mut pick = |absent: bool| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let i = (seed >> 33) as usize % (values.len() + usize::from(absent));
            values.get(i).map(String::as_str)
        };
        let records: Vec<LoggedHit<'_>> = (0..2_000)
            .map(|t| LoggedHit {
                correlation: pick(false).unwrap(),
                group: pick(false).unwrap(),
                time: t,
                rule: pick(false).unwrap(),
                event_id: pick(true),
                value: pick(true),
                principal: pick(false).unwrap(),
                account: pick(true),
                region: pick(true),
                source_ip: pick(true),
                user_agent: pick(true),
            })
            .collect();
        round_trip(&records);
    }

    /// Writes `records` as one log row, checks that it reads back the same, and returns the row.
    fn round_trip(records: &[LoggedHit<'_>]) -> Vec<u8> {
        let mut log = HitLog::default();
        records.iter().for_each(|r| log.record(r));
        let bytes = log.into_bytes();
        let mut back = Vec::new();
        assert_eq!(HitLog::decode(&bytes, &mut |h| back.push(h)), Some(()));
        assert_eq!(back, records);
        bytes
    }

    /// A correlation alert names the newest hit's region, address and agent, also when that hit was read back from
    /// the store after a restart and a late file brings an older one.
    #[test]
    fn a_restart_names_the_same_context_as_an_uninterrupted_run() {
        let rules = rules();
        let at = |minute: i64, id: &str, region: &str, ip: &str| {
            let m = hit(&rules, "alice", minute, id);
            let fields = [Some(id), Some("ListUsers"), Some("alice"), Some("1"), Some(region), Some(ip), None];
            Match::new(m.rule, m.time, fields, &hits_of(&m))
        };
        let (a1, a2, a3) = (
            at(0, "a1", "eu-west-1", "198.51.100.1"),
            at(4, "a2", "us-east-1", "203.0.113.2"),
            at(9, "a3", "ap-south-1", "192.0.2.3"),
        );
        let context = |alerts: Vec<Alert>| {
            let mut out: Vec<_> =
                alerts.into_iter().map(|a| (a.id, a.count, a.region, a.source_ip, a.user_agent)).collect();
            out.sort();
            out
        };
        let once = context(Correlator::default().observe(&rules, vec![a1.clone(), a2.clone(), a3.clone()]));
        assert_eq!(once.len(), 1);
        assert_eq!((once[0].2.as_deref(), once[0].3.as_deref()), (Some("ap-south-1"), Some("192.0.2.3")));
        // The first and newest hits are committed; after a restart the middle one arrives late.
        let mut first = Correlator::default();
        assert!(first.observe(&rules, vec![a1, a3]).is_empty());
        let (mut restarted, unreadable) = Correlator::load(&rules, &[first.take_changes(&rules).log]);
        assert_eq!(unreadable, 0);
        assert_eq!(context(restarted.observe(&rules, vec![a2])), once);
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
                &[(rules.index_of("enum").unwrap(), "carol", Some(name))],
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
            let alerts = Correlator::default().observe(&rules, matches);
            let got = alerts.iter().map(|a| (a.count, a.details["measure"].as_u64().unwrap())).max();
            assert_eq!(got, *expected, "{events:?}");
        }
    }
}
