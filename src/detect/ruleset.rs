//! The loaded rules, compiled once into a matcher over parsed events. An event is tested only against the rules
//! that its few low-cardinality typed fields (source, name, identity type, event type, error code) do not already
//! rule out; which rules those are is worked out once per distinct combination of those fields, by evaluating
//! every rule in three-valued logic with the other fields unknown, and cached on the worker.
//!
//! Correlation rules are resolved here against the rules they count; the counting itself happens at commit time
//! (`crate::alert`), since a window spans files and workers.

use std::borrow::Cow;

use rustc_hash::FxHashMap;

use crate::detect::rule::{Correlation, Rule, RuleBody};
use crate::detect::search::{Decided, Fields};
use crate::parse::{EmptyStrings, Event, Record};

pub use crate::detect::load::{BUILTIN, LoadError, MAX_RULE_FILE_BYTES};
pub use crate::detect::matches::{CorrelationHit, Match, MatchView, Span};

/// What a rule does when it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Raises alerts.
    Live,
    /// Counts matches in metrics and sends nothing.
    DryRun,
}

#[derive(Debug, Default)]
pub struct RuleSet {
    rules: Vec<Rule>,
    modes: Vec<Mode>,
    /// Per rule: whether its own matches raise alerts (false for a rule only counted by correlations).
    alerting: Vec<bool>,
    /// Per rule: the correlations (indices into `rules`) that count its matches.
    feeds: Vec<Vec<u32>>,
    /// Per rule: its dedup window in seconds (alerts of one subject within it merge into one).
    dedup_secs: Vec<i64>,
    /// How far behind its group's newest match a correlated match may arrive and still count
    /// (`rules.correlation_lateness_secs`); `None`: [`DEFAULT_CORRELATION_LATENESS_SECS`].
    correlation_lateness: Option<i64>,
    /// Per [`MEMO_FIELDS`] field: the event rules that read that field and no other (`pentest-user-agent`,
    /// SigmaHQ's user-agent lists). Their outcome depends on its value alone, so it is remembered per value, in
    /// a table small enough to stay in cache, and they are nobody's key candidates.
    value_rules: [Box<[u32]>; 3],
    /// A bit per [`MEMO_FIELDS`] field that any event rule reads.
    memo_reads: u8,
}

/// A rule's dedup window unless the configuration says otherwise (`rules.dedup_window_secs`).
pub const DEFAULT_DEDUP_SECS: i64 = 3600;

/// The correlation lateness unless the configuration says otherwise: a day, which covers CloudTrail's delivery
/// (minutes), two readers' interleaving, and a day's files synced region by region.
pub const DEFAULT_CORRELATION_LATENESS_SECS: i64 = 86_400;

/// The typed fields an event's candidate rules are worked out from: few distinct combinations in any log, and
/// they rule out nearly every rule for nearly every event.
const KEY_FIELDS: [&str; 5] = ["eventSource", "eventName", "userIdentity.type", "eventType", "errorCode"];

/// Candidate lists kept per worker before the cache starts over (a bound on memory for odd logs; a real
/// organisation has a few thousand combinations).
const MAX_CACHED_KEYS: usize = 16_384;

/// Typed fields of the parsed event, beyond [`KEY_FIELDS`], whose values few events differ in: the outcome of the
/// candidates that read only these (SigmaHQ's user-agent lists, its assumed-role rule) is remembered per
/// combination of their values, so that most events test no rule at all.
const MEMO_FIELDS: [&str; 3] = ["userAgent", "awsRegion", "userIdentity.sessionContext.sessionIssuer.type"];

/// Remembered outcomes kept per worker before the cache starts over (user agents carry versions, so a large
/// organisation has thousands of them; each outcome costs its values and a short list).
const MAX_OUTCOMES: usize = 65_536;

/// [`MEMO_FIELDS`] values longer than this are tested every time rather than remembered (they rarely repeat and
/// would pin memory).
const MAX_MEMO_VALUE: usize = 512;

/// Per-worker scratch for matching: the candidate rules per combination of [`KEY_FIELDS`] values, spare matches
/// and the buffer alert group keys are built in.
#[derive(Debug, Default)]
pub struct MatchScratch {
    pub candidates: CandidateCache,
    /// Matches that the alert stage is done with (a group kept a newer one), refilled by the next matches so
    /// that a noisy rule reuses their buffers instead of allocating one per match.
    pub spare: Vec<Match>,
    /// Reused to build alert group keys.
    pub group_key: Vec<u8>,
}

/// The candidate rules per combination of [`KEY_FIELDS`] values, and the key being looked up.
#[derive(Debug, Default)]
pub struct CandidateCache {
    candidates: FxHashMap<Box<str>, KeyCandidates>,
    /// The event rules that events of one source and name could match, whatever their other key values: a new
    /// combination tests these (a handful) rather than every rule. Keyed like `candidates`, up to the name.
    by_name: FxHashMap<Box<str>, Box<[u32]>>,
    key: String,
    /// Per [`MEMO_FIELDS`] field, the values seen: each one's number (from 1; 0 stands for an absent field), by
    /// which a key's outcomes are remembered (a few bytes to find rather than the values again), and the field's
    /// value rules it matches. A user agent is looked up once per event here, in a table that stays in cache.
    memo_values: [FxHashMap<Box<str>, MemoValue>; 3],
    /// The value rules the event being matched matches, and its key candidates' matches when both are merged.
    value_matched: Vec<u32>,
    key_matched: Vec<u32>,
    /// Outcomes and values remembered over all of `candidates` and `memo_values` (bounded by [`MAX_OUTCOMES`]).
    outcomes: usize,
}

/// One value of a [`MEMO_FIELDS`] field, as [`CandidateCache::memo_values`] remembers it.
#[derive(Debug)]
struct MemoValue {
    id: u32,
    /// The field's value rules that this value makes match, in rule order.
    matched: Box<[u32]>,
}

impl CandidateCache {
    /// Makes `key` the cache key of `values`.
    fn set_key(&mut self, values: &[Option<&str>; 5]) {
        self.key.clear();
        for value in values {
            push_value(&mut self.key, *value);
        }
    }
}

/// Appends one value of a cache key: NUL separates the values (CloudTrail's never hold one); SOH alone stands for
/// an absent field.
fn push_value(key: &mut String, value: Option<&str>) {
    match value {
        Some(v) => key.push_str(v),
        None => key.push('\u{1}'),
    }
    key.push('\0');
}

/// The candidates for one combination of [`KEY_FIELDS`] values, split by what else they read.
#[derive(Debug)]
struct KeyCandidates {
    /// Candidates that read no field beyond the key ones but the [`MEMO_FIELDS`] in `memo_fields` (a bit per
    /// field): their outcome depends on those values alone.
    memoized: Box<[Candidate]>,
    memo_fields: u8,
    /// The rules among `memoized` that match, per combination of the `memo_fields` values (by their numbers in
    /// [`CandidateCache::memo_values`], 0 for the fields not among `memo_fields`).
    outcomes: FxHashMap<[u32; 3], Box<[u32]>>,
    /// The others, tested on every event.
    tested: Box<[Candidate]>,
}

/// An event rule that events with some key values could match, and what those values already decide of it.
#[derive(Debug)]
struct Candidate {
    rule: u32,
    /// `None`: the key values alone make the rule match; otherwise what they decide of each field test, so that
    /// only the others are tested per event (an `eventName|startswith` list, say, is settled once per name).
    decided: Option<Box<[Decided]>>,
}

impl MatchScratch {
    /// At most this many spare matches are kept.
    pub const MAX_SPARE: usize = 256;
}

impl RuleSet {
    /// Indexes compiled rules; resolves correlations. Duplicate ids and correlations over unknown rules are
    /// errors (the first rule with an id wins).
    pub fn build(rules: Vec<Rule>) -> (RuleSet, Vec<LoadError>) {
        let mut errors = Vec::new();
        let mut kept: Vec<Rule> = Vec::with_capacity(rules.len());
        for rule in rules {
            if kept.iter().any(|k| k.id == rule.id) {
                errors.push(LoadError {
                    origin: rule.origin.clone(),
                    id: Some(rule.id.clone()),
                    error: "duplicate rule id (the first one loaded is kept)".into(),
                });
                continue;
            }
            kept.push(rule);
        }
        // Correlations whose references do not all resolve to event rules are dropped, with the reason.
        let find = |kept: &[Rule], reference: &str| {
            kept.iter().position(|r| {
                matches!(r.body, RuleBody::Event(_)) && (r.id == reference || r.name.as_deref() == Some(reference))
            })
        };
        let mut resolved: Vec<Option<Vec<usize>>> = Vec::with_capacity(kept.len());
        for rule in &kept {
            resolved.push(match &rule.body {
                RuleBody::Event(_) => None,
                RuleBody::Correlation(c) => {
                    let targets: Result<Vec<usize>, &String> =
                        c.rules.iter().map(|r| find(&kept, r).ok_or(r)).collect();
                    match targets {
                        Ok(targets) => Some(targets),
                        Err(missing) => {
                            errors.push(LoadError {
                                origin: rule.origin.clone(),
                                id: Some(rule.id.clone()),
                                error: format!("correlation: no event rule with id or name `{missing}`"),
                            });
                            Some(Vec::new())
                        }
                    }
                }
            });
        }
        let mut rules = Vec::new();
        let mut targets_of = Vec::new();
        let mut renumber = vec![usize::MAX; kept.len()];
        for (i, (rule, targets)) in kept.into_iter().zip(resolved).enumerate() {
            if targets.as_ref().is_some_and(Vec::is_empty) {
                continue;
            }
            renumber[i] = rules.len();
            rules.push(rule);
            targets_of.push(targets);
        }
        let n = rules.len();
        let mut set = RuleSet {
            modes: vec![Mode::Live; n],
            alerting: vec![true; n],
            feeds: vec![Vec::new(); n],
            dedup_secs: vec![DEFAULT_DEDUP_SECS; n],
            ..RuleSet::default()
        };
        for (c, targets) in targets_of.iter().enumerate() {
            let Some(targets) = targets else { continue };
            let RuleBody::Correlation(correlation) = &rules[c].body else {
                unreachable!("targets imply a correlation")
            };
            for &t in targets {
                let t = renumber[t];
                set.feeds[t].push(c as u32);
                if !correlation.generate {
                    set.alerting[t] = false;
                }
            }
        }
        set.rules = rules;
        for (index, rule) in set.rules.iter().enumerate() {
            let RuleBody::Event(detection) = &rule.body else { continue };
            let fields = detection.fields();
            for field in &fields {
                if let Some(at) = MEMO_FIELDS.iter().position(|f| f == field) {
                    set.memo_reads |= 1 << at;
                }
            }
            if let [field] = fields[..]
                && let Some(at) = MEMO_FIELDS.iter().position(|f| *f == field)
            {
                let mut rules = std::mem::take(&mut set.value_rules[at]).into_vec();
                rules.push(index as u32);
                set.value_rules[at] = rules.into_boxed_slice();
            }
        }
        (set, errors)
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn rule(&self, index: u32) -> &Rule {
        &self.rules[index as usize]
    }

    pub fn mode(&self, index: u32) -> Mode {
        self.modes[index as usize]
    }

    /// Whether a rule's own matches raise alerts (rather than only feeding correlations).
    pub fn alerting(&self, index: u32) -> bool {
        self.alerting[index as usize]
    }

    pub fn feeds(&self, index: u32) -> &[u32] {
        &self.feeds[index as usize]
    }

    pub fn correlation(&self, index: u32) -> Option<&Correlation> {
        match &self.rules[index as usize].body {
            RuleBody::Correlation(c) => Some(c),
            RuleBody::Event(_) => None,
        }
    }

    pub fn index_of(&self, id: &str) -> Option<u32> {
        self.rules.iter().position(|r| r.id == id).map(|i| i as u32)
    }

    /// A rule's dedup window in seconds.
    pub fn dedup_secs(&self, index: u32) -> i64 {
        self.dedup_secs[index as usize]
    }

    /// Sets every rule's dedup window to `default` but those in `by_rule` (by id); returns the ids not loaded.
    pub fn set_dedup_windows<'a>(
        &mut self,
        default: i64,
        by_rule: &'a std::collections::BTreeMap<String, i64>,
    ) -> Vec<&'a str> {
        self.dedup_secs.fill(default);
        let mut unknown = Vec::new();
        for (id, &secs) in by_rule {
            match self.index_of(id) {
                Some(i) => self.dedup_secs[i as usize] = secs,
                None => unknown.push(id.as_str()),
            }
        }
        unknown
    }

    /// How late (behind the newest match of its window's group) a correlated match may arrive and still count.
    pub fn correlation_lateness_secs(&self) -> i64 {
        self.correlation_lateness.unwrap_or(DEFAULT_CORRELATION_LATENESS_SECS)
    }

    pub fn set_correlation_lateness(&mut self, secs: i64) {
        self.correlation_lateness = Some(secs);
    }

    /// Sets rules to dry run (by id); returns the ids that name no loaded rule.
    pub fn set_dry_run<'a>(&mut self, ids: &'a [String]) -> Vec<&'a str> {
        let mut unknown = Vec::new();
        for id in ids {
            match self.index_of(id) {
                Some(i) => self.modes[i as usize] = Mode::DryRun,
                None => unknown.push(id.as_str()),
            }
        }
        unknown
    }

    /// Calls `on_match` with each event rule the event matches, in rule order, testing only the candidates for
    /// the event's [`KEY_FIELDS`] values (`values`, as `fields` reads them: passed in because the parsed event has
    /// them at hand, where looking them up by name costs more than the lookup of the candidates). `memo` holds
    /// the event's [`MEMO_FIELDS`] values, likewise.
    pub fn for_each_match(
        &self,
        fields: &dyn Fields,
        values: [Option<&str>; 5],
        memo: [Option<&str>; 3],
        scratch: &mut CandidateCache,
        on_match: &mut dyn FnMut(u32),
    ) {
        // Checked on every event, not only on a new key: a daemon's keys settle, while new user agents (versions,
        // per-host suffixes) keep coming. The values' numbers go with the outcomes that use them.
        if scratch.outcomes >= MAX_OUTCOMES || scratch.candidates.len() >= MAX_CACHED_KEYS {
            scratch.candidates.clear();
            scratch.memo_values.iter_mut().for_each(FxHashMap::clear);
            scratch.outcomes = 0;
        }
        let ids = self.memo_ids(fields, memo, scratch);
        if scratch.value_matched.is_empty() {
            return self.match_key(fields, values, ids, scratch, on_match);
        }
        // Rarely (a value rule matched): the two sorted lists merged, so that rules still come in order.
        let mut key_matched = std::mem::take(&mut scratch.key_matched);
        key_matched.clear();
        self.match_key(fields, values, ids, scratch, &mut |rule| key_matched.push(rule));
        let mut key_rules = key_matched.iter().copied().peekable();
        for &rule in &scratch.value_matched {
            while let Some(earlier) = key_rules.next_if(|&k| k < rule) {
                on_match(earlier);
            }
            on_match(rule);
        }
        key_rules.for_each(&mut *on_match);
        scratch.key_matched = key_matched;
    }

    /// The numbers of the event's [`MEMO_FIELDS`] values that some rule reads (remembered on first sight; `None`
    /// for a value too long to remember), with the value rules they match left in `scratch.value_matched`.
    fn memo_ids(&self, fields: &dyn Fields, memo: [Option<&str>; 3], scratch: &mut CandidateCache) -> [Option<u32>; 3] {
        scratch.value_matched.clear();
        let mut ids = [Some(0); 3];
        for (at, value) in memo.into_iter().enumerate() {
            if self.memo_reads & (1 << at) == 0 {
                continue;
            }
            let value_rules = &self.value_rules[at];
            let Some(value) = value else {
                self.test_rules(value_rules, fields, &mut |rule| scratch.value_matched.push(rule));
                continue;
            };
            let values = &mut scratch.memo_values[at];
            if let Some(known) = values.get(value) {
                ids[at] = Some(known.id);
                scratch.value_matched.extend_from_slice(&known.matched);
                continue;
            }
            let mut matched = Vec::new();
            self.test_rules(value_rules, fields, &mut |rule| matched.push(rule));
            scratch.value_matched.extend_from_slice(&matched);
            if value.len() > MAX_MEMO_VALUE {
                ids[at] = None;
                continue;
            }
            let id = values.len() as u32 + 1;
            values.insert(value.into(), MemoValue { id, matched: matched.into_boxed_slice() });
            scratch.outcomes += 1;
            ids[at] = Some(id);
        }
        // Each field's rules are in order; several fields' lists (a rare set of rules) are sorted together.
        if self.value_rules.iter().filter(|rules| !rules.is_empty()).count() > 1 {
            scratch.value_matched.sort_unstable();
        }
        ids
    }

    /// Calls `on_match` with each key candidate rule the event matches, in rule order, testing only the candidates
    /// for the event's [`KEY_FIELDS`] values.
    fn match_key(
        &self,
        fields: &dyn Fields,
        values: [Option<&str>; 5],
        ids: [Option<u32>; 3],
        scratch: &mut CandidateCache,
        on_match: &mut dyn FnMut(u32),
    ) {
        scratch.set_key(&values);
        let CandidateCache { candidates, by_name, key, outcomes, .. } = scratch;
        if let Some(entry) = candidates.get_mut(key.as_str()) {
            self.match_candidates(entry, fields, ids, outcomes, on_match);
            return;
        }
        if by_name.len() >= MAX_CACHED_KEYS {
            by_name.clear();
        }
        // The key up to the end of the name: source and name are its first two values.
        let name_end = key.match_indices('\0').nth(1).map_or(key.len(), |(at, _)| at + 1);
        let among = match by_name.get(&key[..name_end]) {
            Some(among) => among,
            None => {
                let known = |field: &str| KEY_FIELDS[..2].iter().position(|f| *f == field).map(|i| values[i]);
                let every = 0..self.rules.len() as u32;
                let among: Box<[u32]> =
                    every.filter(|&rule| !self.is_value_rule(rule) && self.could_match(rule, &known)).collect();
                by_name.entry(key[..name_end].into()).or_insert(among)
            }
        };
        let found = self
            .candidates(among.iter().copied(), &|field| KEY_FIELDS.iter().position(|f| *f == field).map(|i| values[i]));
        let entry = candidates.entry(key.as_str().into()).or_insert(self.split(found));
        self.match_candidates(entry, fields, ids, outcomes, on_match);
    }

    /// Whether `rule` is one of the [`RuleSet::value_rules`] (matched by value, never a key candidate).
    fn is_value_rule(&self, rule: u32) -> bool {
        self.value_rules.iter().any(|rules| rules.contains(&rule))
    }

    /// Calls `on_match` with the rules among `rules` (event rules, in order) that the event matches.
    fn test_rules(&self, rules: &[u32], fields: &dyn Fields, on_match: &mut dyn FnMut(u32)) {
        for &rule in rules {
            if let RuleBody::Event(detection) = &self.rules[rule as usize].body
                && detection.matches(fields)
            {
                on_match(rule);
            }
        }
    }

    /// Splits one key's candidates into those whose outcome the [`MEMO_FIELDS`] values settle and the others.
    fn split(&self, found: Vec<Candidate>) -> KeyCandidates {
        let mut memo_fields = 0u8;
        let (memoized, tested): (Vec<Candidate>, Vec<Candidate>) = found.into_iter().partition(|candidate| {
            let RuleBody::Event(detection) = &self.rules[candidate.rule as usize].body else { return false };
            let mut bits = 0u8;
            let settled = detection.fields().into_iter().all(|field| {
                if KEY_FIELDS.contains(&field) {
                    return true;
                }
                let at = MEMO_FIELDS.iter().position(|f| *f == field);
                bits |= at.map_or(0, |at| 1 << at);
                at.is_some()
            });
            memo_fields |= if settled { bits } else { 0 };
            settled
        });
        KeyCandidates {
            memoized: memoized.into_boxed_slice(),
            memo_fields,
            outcomes: FxHashMap::default(),
            tested: tested.into_boxed_slice(),
        }
    }

    /// Calls `on_match` with the rules among `entry`'s candidates that the event matches, in rule order: the
    /// memoized ones' outcome for the event's `memo` values (worked out on first sight), the others tested.
    fn match_candidates(
        &self,
        entry: &mut KeyCandidates,
        fields: &dyn Fields,
        ids: [Option<u32>; 3],
        outcomes: &mut usize,
        on_match: &mut dyn FnMut(u32),
    ) {
        if entry.memoized.is_empty() {
            self.test_candidates(&entry.tested, fields, on_match);
            return;
        }
        let mut key = [0u32; 3];
        for (at, id) in ids.into_iter().enumerate() {
            if entry.memo_fields & (1 << at) != 0 {
                match id {
                    Some(id) => key[at] = id,
                    // Too long to remember: tested.
                    None => {
                        let mut matched = Vec::new();
                        self.test_candidates(&entry.memoized, fields, &mut |rule| matched.push(rule));
                        return self.merge_tested(&matched, &entry.tested, fields, on_match);
                    }
                }
            }
        }
        match entry.outcomes.get(&key) {
            Some(matched) => self.merge_tested(matched, &entry.tested, fields, on_match),
            None => {
                let mut matched = Vec::new();
                self.test_candidates(&entry.memoized, fields, &mut |rule| matched.push(rule));
                self.merge_tested(&matched, &entry.tested, fields, on_match);
                entry.outcomes.insert(key, matched.into_boxed_slice());
                *outcomes += 1;
            }
        }
    }

    /// Calls `on_match` with `matched` (rules in order) and the rules among `tested` the event matches, merged in
    /// rule order.
    fn merge_tested(&self, matched: &[u32], tested: &[Candidate], fields: &dyn Fields, on_match: &mut dyn FnMut(u32)) {
        let mut next = 0;
        for &rule in matched {
            let before = next + tested[next..].partition_point(|c| c.rule < rule);
            self.test_candidates(&tested[next..before], fields, on_match);
            next = before;
            on_match(rule);
        }
        self.test_candidates(&tested[next..], fields, on_match);
    }

    /// Whether event rule `rule` could match an event of which only `known` fields are known (a correlation
    /// never matches an event).
    fn could_match<'v>(&self, rule: u32, known: &dyn Fn(&str) -> Option<Option<&'v str>>) -> bool {
        match &self.rules[rule as usize].body {
            RuleBody::Event(detection) => detection.could_match(known),
            RuleBody::Correlation(_) => false,
        }
    }

    fn test_candidates(&self, candidates: &[Candidate], fields: &dyn Fields, on_match: &mut dyn FnMut(u32)) {
        for candidate in candidates {
            let matched = match (&candidate.decided, &self.rules[candidate.rule as usize].body) {
                (None, _) => true,
                (Some(decided), RuleBody::Event(detection)) => detection.matches_decided(decided, fields),
                (Some(_), RuleBody::Correlation(_)) => false,
            };
            if matched {
                on_match(candidate.rule);
            }
        }
    }

    /// The event rules `among` that could match an event of which only `known` fields are known, with what those
    /// decide. Knowing fewer fields never rules a rule out that more would keep (a test's outcome is only ever
    /// refined from unknown to true or false), so `among` may be any superset, such as what the source and name
    /// alone leave.
    fn candidates<'v>(
        &self,
        among: impl Iterator<Item = u32>,
        known: &dyn Fn(&str) -> Option<Option<&'v str>>,
    ) -> Vec<Candidate> {
        among
            .filter_map(|rule| {
                let RuleBody::Event(detection) = &self.rules[rule as usize].body else { return None };
                if !detection.could_match(known) {
                    return None;
                }
                match detection.decide(known) {
                    (Some(false), _) => None,
                    (Some(true), _) => Some(Candidate { rule, decided: None }),
                    (None, decided) => Some(Candidate { rule, decided: Some(decided) }),
                }
            })
            .collect()
    }

    /// Matches an event: `on_match` sees each match as a [`MatchView`] borrowing the event, so that the alert
    /// stage can fold a match into one it already holds without copying anything (most matches of a noisy rule do).
    pub fn evaluate(
        &self,
        event: &Event<'_>,
        record: Record<'_, '_>,
        candidates: &mut CandidateCache,
        on_match: &mut dyn FnMut(&MatchView<'_>),
    ) {
        if self.rules.is_empty() {
            return;
        }
        let fields = EventFields { event, record };
        let empty = event.empty;
        let values = [
            Some(event.event_source),
            Some(event.event_name),
            empty.read(event.identity_type, EmptyStrings::IDENTITY_TYPE),
            empty.read(event.event_type, EmptyStrings::EVENT_TYPE),
            empty.read(event.error_code, EmptyStrings::ERROR_CODE),
        ];
        let memo = [
            empty.read(event.user_agent, EmptyStrings::USER_AGENT),
            empty.read(event.region, EmptyStrings::REGION),
            empty.read(event.issuer_type, EmptyStrings::ISSUER_TYPE),
        ];
        debug_assert_eq!(values, KEY_FIELDS.map(|f| fields.get(f)).each_ref().map(|v| v.as_deref()));
        debug_assert_eq!(memo, MEMO_FIELDS.map(|f| fields.get(f)).each_ref().map(|v| v.as_deref()));
        debug_assert!(TYPED_FROM_TAPE.iter().all(|f| fields.get(f).is_none_or(|v| Some(v) == record.field(f))));
        // Looked up once per event, and only for an event that matched.
        let mut account: Option<Option<Cow<'_, str>>> = None;
        let mut on_rule = |rule| {
            let account = account.get_or_insert_with(|| match event.principal.account {
                Some(account) => Some(Cow::Borrowed(account)),
                None => record.field("recipientAccountId"),
            });
            on_match(&MatchView { rules: self, rule, fields: &fields, account: account.as_deref() });
        };
        self.for_each_match(&fields, values, memo, candidates, &mut on_rule);
    }

    /// The event rules that read fields no CloudTrail record has (by the field's top-level name), by file and id.
    pub fn foreign_fields(&self) -> Vec<ForeignFields> {
        let mut out = Vec::new();
        for rule in &self.rules {
            let RuleBody::Event(detection) = &rule.body else { continue };
            let fields: Vec<String> = detection
                .fields()
                .into_iter()
                .filter(|f| !CLOUDTRAIL_FIELDS.contains(&f.split('.').next().unwrap_or(f)))
                .map(str::to_owned)
                .collect();
            if !fields.is_empty() {
                out.push(ForeignFields { origin: rule.origin.clone(), id: rule.id.clone(), fields });
            }
        }
        out.sort_by(|a, b| (&a.origin, &a.id).cmp(&(&b.origin, &b.id)));
        out
    }

    /// The event rules `record`'s event matches, in rule order (for tests and tools; the pipeline uses
    /// [`RuleSet::evaluate`]).
    pub fn matching(&self, event: &Event<'_>, record: Record<'_, '_>, candidates: &mut CandidateCache) -> Vec<u32> {
        let mut out = Vec::new();
        self.evaluate(event, record, candidates, &mut |m| out.push(m.rule));
        out
    }
}

/// The top-level fields of a CloudTrail record (management, data, network activity and Insights events, record
/// version 1.11, with the enriched `eventContext`): a rule's test on any other field sees it absent on every event.
const CLOUDTRAIL_FIELDS: [&str; 32] = [
    "eventVersion",
    "userIdentity",
    "eventTime",
    "eventSource",
    "eventName",
    "awsRegion",
    "sourceIPAddress",
    "userAgent",
    "errorCode",
    "errorMessage",
    "requestParameters",
    "responseElements",
    "additionalEventData",
    "requestID",
    "eventID",
    "eventType",
    "apiVersion",
    "managementEvent",
    "readOnly",
    "resources",
    "recipientAccountId",
    "serviceEventDetails",
    "sharedEventID",
    "vpcEndpointId",
    "vpcEndpointAccountId",
    "eventCategory",
    "addendum",
    "sessionCredentialFromConsole",
    "edgeDeviceDetails",
    "tlsDetails",
    "insightDetails",
    "eventContext",
];

/// A rule that reads fields no CloudTrail record has: it loads and runs, but a selection that needs such a field
/// never matches (SigmaHQ has rules written for other schemas' `status` or `src_country`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignFields {
    pub origin: String,
    pub id: String,
    pub fields: Vec<String>,
}

impl std::fmt::Display for ForeignFields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let fields: Vec<String> = self.fields.iter().map(|field| format!("`{field}`")).collect();
        write!(
            f,
            "{}: rule `{}`: {} {} not in CloudTrail records: tests on {} see an absent field on every event",
            self.origin,
            self.id,
            fields.join(", "),
            if fields.len() == 1 { "is" } else { "are" },
            if fields.len() == 1 { "it" } else { "them" },
        )
    }
}

/// Typed fields of the parsed event that are not among [`KEY_FIELDS`]: debug builds check them against the tape.
const TYPED_FROM_TAPE: [&str; 4] =
    ["eventID", "userIdentity.arn", "userIdentity.accessKeyId", "userIdentity.sessionContext.sessionIssuer.type"];

/// An event's fields for rule matching: the common ones from the parsed event (no lookup on the tape), anything
/// else from the record. An empty string is a value here (Sigma's `null` means absent only), though the parsed
/// event reads it as absent for the state: [`EmptyStrings`] says which were empty.
pub(super) struct EventFields<'a, 't, 'de> {
    pub(super) event: &'a Event<'de>,
    pub(super) record: Record<'t, 'de>,
}

impl Fields for EventFields<'_, '_, '_> {
    fn get(&self, field: &str) -> Option<Cow<'_, str>> {
        let (event, empty) = (self.event, self.event.empty);
        let typed = match field {
            "eventName" => Some(event.event_name),
            "eventSource" => Some(event.event_source),
            "errorCode" => empty.read(event.error_code, EmptyStrings::ERROR_CODE),
            "userAgent" => empty.read(event.user_agent, EmptyStrings::USER_AGENT),
            "sourceIPAddress" => empty.read(event.source_ip, EmptyStrings::SOURCE_IP),
            "awsRegion" => empty.read(event.region, EmptyStrings::REGION),
            "userIdentity.type" => empty.read(event.identity_type, EmptyStrings::IDENTITY_TYPE),
            "eventType" => empty.read(event.event_type, EmptyStrings::EVENT_TYPE),
            "eventID" => empty.read(event.event_id, EmptyStrings::EVENT_ID),
            "userIdentity.arn" => empty.read(event.user_arn, EmptyStrings::USER_ARN),
            "userIdentity.accessKeyId" => empty.read(event.access_key_id, EmptyStrings::ACCESS_KEY_ID),
            "userIdentity.sessionContext.sessionIssuer.type" => {
                empty.read(event.issuer_type, EmptyStrings::ISSUER_TYPE)
            }
            _ => return self.record.field(field),
        };
        typed.map(Cow::Borrowed)
    }
}

/// Appends a group-by value: the canonical principal for `principal` (so that sessions of one role group
/// together), otherwise the event's field, nothing when absent.
/// Appends the value of a correlation's group-by or counted field; whether the event has it.
pub(super) fn push_group_value(out: &mut String, field: &str, fields: &EventFields<'_, '_, '_>) -> bool {
    if field == "principal" {
        fields.event.principal.key.write_to(out);
    } else if let Some(value) = fields.get(field) {
        out.push_str(&value);
    } else {
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_typed_fields_rule_out_what_cannot_match() {
        // Built-in candidates for events known only by source, name, identity type, event type and error code.
        let rules = RuleSet::load(true, &[]).0;
        let cases: &[([Option<&str>; 5], &[&str])] = &[
            // A read by a user: only the user-agent rule is left to look at.
            (
                [Some("s3.amazonaws.com"), Some("GetObject"), Some("IAMUser"), Some("AwsApiCall"), None],
                &["pentest-user-agent"],
            ),
            // The same read by root, and denied.
            (
                [Some("s3.amazonaws.com"), Some("GetObject"), Some("Root"), Some("AwsApiCall"), Some("AccessDenied")],
                &["root-account-usage", "unauthorized-api-call", "pentest-user-agent"],
            ),
            // A service event by root is ruled out by its event type.
            (
                [Some("s3.amazonaws.com"), Some("GetObject"), Some("Root"), Some("AwsServiceEvent"), None],
                &["pentest-user-agent"],
            ),
            (
                [Some("cloudtrail.amazonaws.com"), Some("StopLogging"), Some("AssumedRole"), Some("AwsApiCall"), None],
                &["cloudtrail-tampering", "pentest-user-agent"],
            ),
        ];
        for (values, expected) in cases {
            let known = |field: &str| KEY_FIELDS.iter().position(|f| *f == field).map(|i| values[i]);
            let every = 0..rules.rules().len() as u32;
            let got: Vec<&str> =
                rules.candidates(every, &known).iter().map(|c| rules.rule(c.rule).id.as_str()).collect();
            let mut expected = expected.to_vec();
            expected.sort_by_key(|id| rules.index_of(id).unwrap());
            assert_eq!(got, expected, "{values:?}");
        }
    }

    /// The candidates found among what the source and name alone leave are those found among every rule, for
    /// every combination of key values (and the cache, filled in any order, gives the same).
    #[test]
    fn candidates_among_the_names_rules_are_candidates_among_all() {
        let rules = RuleSet::load(true, &[]).0;
        let sources = [
            "s3.amazonaws.com",
            "iam.amazonaws.com",
            "signin.amazonaws.com",
            "cloudtrail.amazonaws.com",
            "ec2.amazonaws.com",
        ];
        let names = [
            "GetObject",
            "ConsoleLogin",
            "StopLogging",
            "CreateAccessKey",
            "AuthorizeSecurityGroupIngress",
            "PutBucketPolicy",
        ];
        let types = [None, Some("Root"), Some("IAMUser"), Some("AssumedRole"), Some("AWSService")];
        let event_types = [None, Some("AwsApiCall"), Some("AwsServiceEvent"), Some("AwsConsoleSignIn")];
        let errors = [None, Some("AccessDenied"), Some("Client.UnauthorizedOperation")];
        let mut cache = CandidateCache::default();
        let mut compared = 0;
        for source in sources {
            for name in names {
                for identity in types {
                    for event_type in event_types {
                        for error in errors {
                            let values = [Some(source), Some(name), identity, event_type, error];
                            let known = |field: &str| KEY_FIELDS.iter().position(|f| *f == field).map(|i| values[i]);
                            let of = |c: Vec<Candidate>| c.into_iter().map(|c| (c.rule, c.decided)).collect::<Vec<_>>();
                            let keyed = (0..rules.rules().len() as u32).filter(|&r| !rules.is_value_rule(r));
                            let all = of(rules.candidates(keyed, &known));
                            let no_fields = &crate::detect::search::NoFields;
                            rules.for_each_match(no_fields, values, [None; 3], &mut cache, &mut |_| {});
                            cache.set_key(&values);
                            let entry = &cache.candidates[cache.key.as_str()];
                            let mut cached: Vec<_> = (entry.memoized.iter().chain(&entry.tested))
                                .map(|c| (c.rule, c.decided.clone()))
                                .collect();
                            cached.sort_by_key(|(rule, _)| *rule);
                            assert_eq!(cached, all, "{values:?}");
                            compared += usize::from(!all.is_empty());
                        }
                    }
                }
            }
        }
        assert!(compared > 100, "{compared} combinations with candidates");
    }

    /// What the cache remembers per combination of [`MEMO_FIELDS`] values gives what testing every rule on every
    /// event gives, in rule order, whichever events come first; rules that also read other fields (directly or
    /// by `fieldref`) are tested on each event.
    #[test]
    fn remembered_outcomes_agree_with_testing_every_rule() {
        let dir = tempfile::tempdir().unwrap();
        let rules = [
            ("m-exact-agent", "sel:\n        userAgent: TruffleHog\n    condition: sel"),
            ("m-long-agent", "sel:\n        userAgent|endswith: kali\n    condition: sel"),
            ("m-any-us-region", "sel:\n        awsRegion: us-east-1\n    condition: sel"),
            (
                "m-role",
                "sel:\n        userIdentity.type: AssumedRole\n        userIdentity.sessionContext.sessionIssuer.type: Role\n    condition: sel",
            ),
            (
                "m-region",
                "sel:\n        eventName: GetObject\n        awsRegion|startswith: eu-\n    f:\n        userAgent|contains: terraform\n    condition: sel and not f",
            ),
            ("m-agent-is-region", "sel:\n        userAgent|fieldref: awsRegion\n    condition: sel"),
            (
                "t-agent-and-user",
                "sel:\n        userAgent|contains: terraform\n        requestParameters.userName: bob\n    condition: sel",
            ),
            (
                "t-own-name",
                "sel:\n        eventName: CreateAccessKey\n        userIdentity.arn|fieldref|endswith: requestParameters.userName\n    condition: sel",
            ),
        ];
        for (id, detection) in rules {
            let text = format!(
                "title: t\nid: {id}\nlogsource: {{product: aws, service: cloudtrail}}\ndetection:\n    {detection}\nlevel: low\n"
            );
            std::fs::write(dir.path().join(format!("{id}.yml")), text).unwrap();
        }
        let (rules, errors) = RuleSet::load(true, &[dir.path().to_owned()]);
        assert!(errors.is_empty(), "{errors:?}");
        // Value rules (one field of MEMO_FIELDS) are matched by value, merged in order with the key candidates.
        let value_rules: Vec<&str> = rules.value_rules.iter().flatten().map(|&r| rules.rule(r).id.as_str()).collect();
        assert_eq!(value_rules, ["pentest-user-agent", "m-exact-agent", "m-long-agent", "m-any-us-region"]);
        let long: &'static str = format!("{}kali", "x".repeat(MAX_MEMO_VALUE)).leak();
        let mut events = Vec::new();
        for name in ["GetObject", "CreateAccessKey", "ConsoleLogin"] {
            for agent in [
                None,
                Some("aws-cli/2.15"),
                Some("Terraform/1.7"),
                Some("TruffleHog"),
                Some("kali"),
                Some("eu-west-1"),
                Some(long),
            ] {
                for region in ["eu-west-1", "us-east-1"] {
                    for (identity, issuer, arn) in [
                        ("IAMUser", None, "arn:aws:iam::1:user/bob"),
                        ("AssumedRole", Some("Role"), "arn:aws:sts::1:assumed-role/r/s"),
                        ("AssumedRole", None, "arn:aws:sts::1:assumed-role/r/s"),
                        ("Root", None, "arn:aws:iam::1:root"),
                    ] {
                        for user in ["bob", "alice"] {
                            let mut fields = vec![
                                ("eventSource", "iam.amazonaws.com"),
                                ("eventName", name),
                                ("eventType", "AwsApiCall"),
                                ("awsRegion", region),
                                ("userIdentity.type", identity),
                                ("userIdentity.arn", arn),
                                ("requestParameters.userName", user),
                            ];
                            fields.extend(agent.map(|a| ("userAgent", a)));
                            fields.extend(issuer.map(|i| ("userIdentity.sessionContext.sessionIssuer.type", i)));
                            events.push(crate::detect::search::event(&fields));
                        }
                    }
                }
            }
        }
        let expected = |e: &crate::detect::search::FieldMap| -> Vec<u32> {
            (0..rules.rules().len() as u32)
                .filter(|&i| matches!(&rules.rule(i).body, RuleBody::Event(d) if d.matches(e)))
                .collect()
        };
        let mut cache = CandidateCache::default();
        // Forwards, then backwards with the cache warm, then backwards from cold: any order fills it alike.
        let orders: [Vec<usize>; 3] =
            [(0..events.len()).collect(), (0..events.len()).rev().collect(), (0..events.len()).rev().collect()];
        for (pass, order) in orders.iter().enumerate() {
            if pass == 2 {
                cache = CandidateCache::default();
            }
            for &i in order {
                let e = &events[i];
                let get = |f: &str| e.0.get(f).copied();
                let values = KEY_FIELDS.map(get);
                let memo = MEMO_FIELDS.map(get);
                let mut got = Vec::new();
                rules.for_each_match(e, values, memo, &mut cache, &mut |rule| got.push(rule));
                assert_eq!(got, expected(e), "pass {pass}: {:?}", e.0);
            }
        }
        // Both paths ran: outcomes were remembered, and some candidates were tested per event.
        assert!(cache.outcomes > 0);
        assert!(cache.candidates.values().any(|entry| !entry.tested.is_empty() && !entry.memoized.is_empty()));
        let id = |rule: &Candidate| rules.rule(rule.rule).id.as_str();
        let tested: std::collections::BTreeSet<&str> =
            cache.candidates.values().flat_map(|e| e.tested.iter().map(id)).collect();
        assert_eq!(tested.into_iter().filter(|t| t.starts_with("m-")).collect::<Vec<_>>(), Vec::<&str>::new());
    }

    /// The remembered outcomes stay bounded when the keys settle and new user agents keep coming (a daemon's
    /// case): the cache starts over rather than grow, and still gives the right matches.
    #[test]
    fn remembered_outcomes_stay_bounded_under_ever_new_agents() {
        struct Agent<'a>(&'a str);
        impl Fields for Agent<'_> {
            fn get(&self, field: &str) -> Option<Cow<'_, str>> {
                (field == "userAgent").then_some(Cow::Borrowed(self.0))
            }
        }
        let rules = RuleSet::load(true, &[]).0;
        let pentest = rules.index_of("pentest-user-agent").unwrap();
        let mut cache = CandidateCache::default();
        let values = [Some("s3.amazonaws.com"), Some("GetObject"), Some("IAMUser"), Some("AwsApiCall"), None];
        let mut most = 0;
        for i in 0..MAX_OUTCOMES + 100 {
            let agent = if i % 1000 == 7 { format!("kali-{i}") } else { format!("aws-cli/2.{i}") };
            let mut got = Vec::new();
            let memo = [Some(agent.as_str()), None, None];
            rules.for_each_match(&Agent(&agent), values, memo, &mut cache, &mut |r| got.push(r));
            assert_eq!(got, if i % 1000 == 7 { vec![pentest] } else { vec![] }, "{agent}");
            most = most.max(cache.outcomes);
        }
        assert_eq!(most, MAX_OUTCOMES);
        assert!(cache.outcomes < 200, "{} outcomes after the cache started over", cache.outcomes);
    }

    #[test]
    fn rules_on_fields_that_cloudtrail_records_lack_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let rule = |id: &str, detection: &str| {
            format!(
                "title: t\nid: {id}\nlogsource: {{product: aws, service: cloudtrail}}\ndetection:\n{detection}\nlevel: low\n"
            )
        };
        let files = [
            // SigmaHQ's shape for another schema: `status` and `src_country` are not CloudTrail fields.
            (
                "other_schema.yml",
                rule(
                    "a-other",
                    "    sel:\n        eventName: ConsoleLogin\n        status: success\n    f:\n        src_country: FR\n    condition: sel and not f",
                ),
            ),
            // Nested CloudTrail fields, and a field name in the wrong case.
            (
                "nested.yml",
                rule(
                    "b-nested",
                    "    sel:\n        userIdentity.sessionContext.sessionIssuer.type: Role\n        requestParameters.policyArn|endswith: Admin\n    condition: sel",
                ),
            ),
            ("cased.yml", rule("c-cased", "    sel:\n        EventName: ConsoleLogin\n    condition: sel")),
        ];
        for (name, text) in &files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let (rules, errors) = RuleSet::load(true, &[dir.path().to_owned()]);
        assert!(errors.is_empty(), "{errors:?}");
        let mut got: Vec<(String, Vec<String>)> =
            rules.foreign_fields().into_iter().map(|f| (f.id, f.fields)).collect();
        got.sort();
        assert_eq!(
            got,
            [
                ("a-other".to_owned(), vec!["src_country".to_owned(), "status".to_owned()]),
                ("c-cased".to_owned(), vec!["EventName".to_owned()]),
            ]
        );
        let message = rules.foreign_fields().iter().find(|f| f.id == "c-cased").unwrap().to_string();
        assert!(message.ends_with("rule `c-cased`: `EventName` is not in CloudTrail records: tests on it see an absent field on every event"), "{message}");
        // The built-in rules read CloudTrail fields only.
        assert_eq!(RuleSet::load(true, &[]).0.foreign_fields(), []);
    }

    #[test]
    fn a_match_keeps_its_fields_in_one_buffer() {
        let cases: [[Option<&str>; 7]; 3] = [
            [Some("id"), Some("GetUser"), Some("arn:p"), Some("1"), Some("eu-west-1"), Some("ip"), Some("ua")],
            [None, Some("GetUser"), Some("arn:p"), None, None, Some("ip"), None],
            [Some(""), Some(""), Some("arn:p"), Some(""), None, None, Some("ua")],
        ];
        for fields in cases {
            let m = Match::new(3, 42, fields, &[]);
            let got = [
                m.event_id(),
                Some(m.event_name()),
                Some(m.principal()),
                m.account_id(),
                m.region(),
                m.source_ip(),
                m.user_agent(),
            ];
            assert_eq!(got, fields, "{m:?}");
        }
    }
}
