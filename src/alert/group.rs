//! Grouping matches on the workers: each match folds into its group (rule, subject, dedup bucket) as it is found,
//! so that a noisy rule costs one group per unit, not one alert per event.

use std::collections::hash_map::Entry;

use rustc_hash::FxHashMap as HashMap;

use crate::alert::{Alert, EventIds, MAX_EVENT_IDS, bucket, from_match};
use crate::detect::ruleset::{Match, MatchScratch, MatchView, Mode, RuleSet};
use crate::time::Timestamp;

/// The matches of one event rule for one subject (principal, account) in one dedup bucket, folded: what their
/// alert will say. Folding is commutative, so units and batches can fold in any order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Group {
    count: u64,
    first_seen: Timestamp,
    /// Event ids of the group's matches but the newest (whose id `latest` holds), each followed by NUL: one
    /// allocation per group of two matches or more, none for most of a unit's groups (one match each). When 4 ×
    /// [`MAX_EVENT_IDS`] have gathered, only the smallest [`MAX_EVENT_IDS`] are kept, so the alert lists the
    /// smallest ids of all its events, whichever units they came in.
    event_ids: String,
    ids: usize,
    /// Once the gathered ids have been cut to the smallest [`MAX_EVENT_IDS`] distinct ones: the largest of them.
    /// No id at or above it can be among the alert's any more, so such an id (most, in a noisy group) is only
    /// counted, not copied.
    ceiling: Option<Box<str>>,
    /// The newest match (by time, then IP, region, agent): the alert's context.
    latest: Match,
}

impl Group {
    fn new(m: Match) -> Group {
        Group { count: 1, first_seen: m.time, event_ids: String::new(), ids: 0, ceiling: None, latest: m }
    }

    /// Adds a match; returns the one of it and the group's newest that is no longer needed.
    fn add(&mut self, m: Match) -> Match {
        self.count += 1;
        self.first_seen = self.first_seen.min(m.time);
        let older = self.keep_latest(m);
        if let Some(id) = older.event_id() {
            self.push_id(id);
        }
        older
    }

    /// Adds a match seen in place: the group's newest match is rewritten only if this one is newer.
    fn add_view(&mut self, m: &MatchView<'_>) {
        self.count += 1;
        self.first_seen = self.first_seen.min(m.time());
        if (m.time(), m.context()) > (self.latest.time, self.latest.context()) {
            // The newest's id joins the others before the newest is rewritten (its buffer reused).
            let mut latest = std::mem::take(&mut self.latest);
            if let Some(id) = latest.event_id() {
                self.push_id(id);
            }
            m.write_to(&mut latest);
            self.latest = latest;
        } else if let Some(id) = m.event_id() {
            self.push_id(id);
        }
    }

    fn push_id(&mut self, id: &str) {
        if self.ceiling.as_deref().is_some_and(|ceiling| id >= ceiling) {
            return;
        }
        if self.ids == 4 * MAX_EVENT_IDS {
            // The kept ids are an `EventIds` buffer, which has the same layout.
            let kept = EventIds::smallest(self.event_ids.split_terminator('\0'));
            self.ids = kept.iter().count();
            if self.ids == MAX_EVENT_IDS {
                self.ceiling = kept.iter().last().map(Into::into);
            }
            self.event_ids = kept.0;
        }
        self.event_ids.push_str(id);
        self.event_ids.push('\0');
        self.ids += 1;
    }

    /// The smallest [`MAX_EVENT_IDS`] distinct ids of the group's matches.
    fn smallest_ids(&self) -> EventIds {
        EventIds::smallest(self.event_ids.split_terminator('\0').chain(self.latest.event_id()))
    }

    fn merge(&mut self, other: Group) {
        self.count += other.count;
        self.first_seen = self.first_seen.min(other.first_seen);
        // The other's gathered ids as they are: picking its smallest first would sort them, and `push_id` already
        // keeps the smallest of everything pushed (it skips what its ceiling rules out and cuts when full).
        for id in other.event_ids.split_terminator('\0') {
            self.push_id(id);
        }
        let older = self.keep_latest(other.latest);
        if let Some(id) = older.event_id() {
            self.push_id(id);
        }
    }

    /// Keeps the newer of `m` and the group's newest; returns the other.
    fn keep_latest(&mut self, m: Match) -> Match {
        if (m.time, m.context()) > (self.latest.time, self.latest.context()) {
            std::mem::replace(&mut self.latest, m)
        } else {
            m
        }
    }

    pub(super) fn into_alert(self, rules: &RuleSet) -> Alert {
        let mut alert = from_match(rules, &self.latest);
        alert.count = self.count;
        alert.first_seen = self.first_seen;
        alert.event_ids = self.smallest_ids();
        alert
    }
}

/// One unit's matches as a worker hands them over: event-rule matches folded per rule, subject and bucket, match
/// counts, and the matches that feed correlations (those need the committer's windows).
///
/// Folding happens on the worker as the events are parsed, so that a noisy rule costs the alert planner one group
/// per rule, subject and bucket per unit, not one per event; nothing is hashed or formatted until the batch's
/// alerts are built.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UnitAlerts {
    /// Groups by rule index, principal, account and dedup bucket (see [`group_key`]); an absent account keys like
    /// an empty one, as in the alert id, so that one id is one group.
    pub(super) groups: HashMap<Box<[u8]>, Group>,
    /// Matches per rule index (a rule's mode is fixed, so the index says both).
    pub(super) counts: Vec<u64>,
    /// Matches with correlation hits, in event order.
    pub(super) correlated: Vec<Match>,
}

impl UnitAlerts {
    /// On a worker, as the event is parsed: counts the match and folds it into its group, writing a [`Match`]
    /// only for a group's first match and when a newer one replaces its context. A match that feeds correlations
    /// is kept whole; a dry-run rule's, or one that only feeds correlations that it has none of, is only counted.
    /// Spent matches go to `spare`, up to [`MatchScratch::MAX_SPARE`]; `key` is scratch.
    pub fn fold_view(&mut self, rules: &RuleSet, m: &MatchView<'_>, spare: &mut Vec<Match>, key: &mut Vec<u8>) {
        self.count(m.rule);
        if m.feeds_correlations() {
            self.fold_match(rules, m.to_match(spare), spare, key);
            return;
        }
        if rules.mode(m.rule) != Mode::Live || !rules.alerting(m.rule) {
            return;
        }
        group_key(key, m.rule, |k| m.push_principal(k), m.account_id(), bucket(m.time(), rules.dedup_secs(m.rule)));
        match self.groups.get_mut(key.as_slice()) {
            Some(group) => group.add_view(m),
            None => {
                self.groups.insert(key.as_slice().into(), Group::new(m.to_match(spare)));
            }
        }
    }

    /// Folds `matches` (drained) as [`UnitAlerts::fold_view`] folds the same matches seen in place.
    pub fn fold(&mut self, rules: &RuleSet, matches: &mut Vec<Match>, spare: &mut Vec<Match>) {
        let mut key = Vec::new();
        for m in matches.drain(..) {
            self.count(m.rule);
            self.fold_match(rules, m, spare, &mut key);
        }
    }

    fn count(&mut self, rule: u32) {
        let i = rule as usize;
        if self.counts.len() <= i {
            self.counts.resize(i + 1, 0);
        }
        self.counts[i] += 1;
    }

    fn fold_match(&mut self, rules: &RuleSet, m: Match, spare: &mut Vec<Match>, key: &mut Vec<u8>) {
        if rules.mode(m.rule) == Mode::Live && rules.alerting(m.rule) {
            group_key(
                key,
                m.rule,
                |k| k.extend_from_slice(m.principal().as_bytes()),
                m.account_id(),
                bucket(m.time, rules.dedup_secs(m.rule)),
            );
            let (newest, correlated) = match m.hits.is_empty() {
                true => (m, None),
                false => (m.without_hits(), Some(m)),
            };
            match self.groups.get_mut(key.as_slice()) {
                Some(group) => {
                    let done = group.add(newest);
                    if spare.len() < MatchScratch::MAX_SPARE {
                        spare.push(done);
                    }
                }
                None => {
                    self.groups.insert(key.as_slice().into(), Group::new(newest));
                }
            }
            self.correlated.extend(correlated);
        } else if !m.hits.is_empty() {
            self.correlated.push(m);
        } else if spare.len() < MatchScratch::MAX_SPARE {
            // Dry run, or a rule that only feeds correlations and has none here: only counted.
            spare.push(m);
        }
    }

    /// Adds `other`'s matches to these (as if one worker had folded both).
    pub fn merge(&mut self, other: UnitAlerts) {
        if self.counts.len() < other.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (mine, n) in self.counts.iter_mut().zip(other.counts) {
            *mine += n;
        }
        merge_groups(&mut self.groups, other.groups);
        self.correlated.extend(other.correlated);
    }

    pub fn is_empty(&self) -> bool {
        self.counts.iter().all(|&n| n == 0)
    }
}

/// Merges groups by key (commutative, as [`Group::merge`] is).
pub(super) fn merge_groups(into: &mut HashMap<Box<[u8]>, Group>, from: HashMap<Box<[u8]>, Group>) {
    for (key, group) in from {
        match into.entry(key) {
            Entry::Occupied(mut mine) => mine.get_mut().merge(group),
            Entry::Vacant(slot) => {
                slot.insert(group);
            }
        }
    }
}

/// A group's key: rule and bucket are fixed-width and principal and account end in NUL (never inside them), so the
/// key is unambiguous without formatting numbers.
fn group_key(key: &mut Vec<u8>, rule: u32, principal: impl FnOnce(&mut Vec<u8>), account: Option<&str>, bucket: i64) {
    key.clear();
    key.extend_from_slice(&rule.to_le_bytes());
    principal(key);
    key.push(0);
    key.extend_from_slice(account.unwrap_or("").as_bytes());
    key.push(0);
    key.extend_from_slice(&bucket.to_le_bytes());
}
