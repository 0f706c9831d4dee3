//! The alert model: an [`Alert`] (the JSON contract), its stable id and how alerts merge within a dedup window.
//!
//! Around it: `group.rs` folds matches on the workers ([`UnitAlerts`]), `plan.rs` merges units' groups, feeds the
//! correlation windows (`correlate.rs`) and builds one alert per group when a batch is taken, `stage.rs` suppresses
//! and routes, `write.rs` is what a batch adds to the outbox, `sink.rs` sends one alert to one sink, and
//! `behaviour.rs` turns the store's facts into alerts. All but `sink.rs` are pure. An alert's `id` depends only on
//! its rule, subject and dedup bucket, never on when or where it was computed, so a resend after a crash carries
//! the same id.

pub mod behaviour;
pub mod correlate;

#[cfg(test)]
mod fold_tests;
mod group;
mod json;
mod plan;
pub mod sink;
pub mod stage;
pub mod write;

pub use group::UnitAlerts;
pub use plan::{Planned, RuleCount, from_match, plan};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::detect::rule::Severity;
use crate::time::{Timestamp, format_rfc3339};

/// At most this many CloudTrail event ids are kept on one alert; `count` keeps counting.
pub const MAX_EVENT_IDS: usize = 50;

/// One alert, as sinks receive it. The JSON shape is a contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Alert {
    /// Stable: the fingerprint and the dedup bucket.
    pub id: String,
    /// Rule, principal and account (correlations: rule and group), hashed.
    pub fingerprint: String,
    pub rule: String,
    pub title: String,
    pub severity: Severity,
    pub principal: String,
    pub account_id: Option<String>,
    pub region: Option<String>,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    /// CloudTrail `eventID`s of the events behind the alert (sorted, at most [`MAX_EVENT_IDS`]).
    pub event_ids: EventIds,
    /// The latest event's time.
    #[serde(with = "rfc3339")]
    pub event_time: Timestamp,
    /// The earliest event's time.
    #[serde(with = "rfc3339")]
    pub first_seen: Timestamp,
    pub count: u64,
    pub summary: String,
    pub details: serde_json::Value,
}

/// How a later alert with the same id folds into the stored one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merge {
    /// Event rules: every batch brings new events, so counts add up.
    Sum,
    /// Correlations (and behavioural facts): each alert describes one window, and the window with the larger
    /// measure (then the later end, as within one measurement) stands whole, its events and times included.
    Max,
}

impl Alert {
    /// Folds `other` (same id) into `self`. [`Merge::Sum`]: counts added, earliest and latest times, event ids
    /// united, and the context (ip, region, agent, summary and details) of the latest event. [`Merge::Max`]: the
    /// larger window whole. Commutative, like the state merge, so that which alert stands does not depend on the
    /// order files were read in: the summary, which names the event (or the window's size), breaks a tie.
    /// How windows compare for [`Merge::Max`], the same order in which a batch picks its best window per dedup
    /// bucket (`correlate.rs`): the measure (a `value_count`'s distinct values, a `temporal`'s rules; the count
    /// where there is none), then the later end; the count, summary and event ids only break what is left.
    fn window_order(&self) -> (u64, Timestamp, u64, &str, &str) {
        let measure = self.details.get("measure").and_then(serde_json::Value::as_u64).unwrap_or(self.count);
        (measure, self.event_time, self.count, &self.summary, &self.event_ids.0)
    }

    pub fn merge(&mut self, other: Alert, merge: Merge) {
        if merge == Merge::Max {
            // Uniting two windows' events would describe neither (and depend on which windows were measured
            // before a late file arrived): the larger stands.
            if other.window_order() > self.window_order() {
                *self = other;
            }
            return;
        }
        self.count += other.count;
        self.first_seen = self.first_seen.min(other.first_seen);
        if (other.event_time, &other.source_ip, &other.region, &other.user_agent, &other.summary)
            > (self.event_time, &self.source_ip, &self.region, &self.user_agent, &self.summary)
        {
            self.event_time = other.event_time;
            self.source_ip = other.source_ip;
            self.region = other.region;
            self.user_agent = other.user_agent;
            self.summary = other.summary;
            self.details = other.details;
        }
        self.event_ids = EventIds::smallest(self.event_ids.iter().chain(other.event_ids.iter()));
    }
}

/// An alert's event ids: sorted, distinct, at most [`MAX_EVENT_IDS`], in one buffer (each id followed by NUL)
/// rather than a `String` per id; an alert of a noisy rule lists fifty of them. A JSON array of strings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventIds(String);

impl EventIds {
    /// The smallest [`MAX_EVENT_IDS`] distinct ids of `ids`.
    pub fn smallest<'a>(ids: impl IntoIterator<Item = &'a str>) -> EventIds {
        // Each id is paired with its first eight bytes as a big-endian number, which orders ids as their bytes
        // do whenever it differs (UUIDs nearly always): selecting and sorting compare integers, not strings.
        let mut ids: Vec<(u64, &str)> = ids.into_iter().map(|id| (prefix(id), id)).collect();
        // A correlation window can hold thousands of hits: sort only the smallest few, unless duplicates (an
        // event counted by several rules) leave too few distinct ids among them.
        if ids.len() > 2 * MAX_EVENT_IDS {
            ids.select_nth_unstable(2 * MAX_EVENT_IDS);
            let mut head = ids[..2 * MAX_EVENT_IDS].to_vec();
            head.sort_unstable();
            head.dedup();
            if head.len() >= MAX_EVENT_IDS {
                return EventIds::from_sorted(head[..MAX_EVENT_IDS].iter().map(|(_, id)| *id));
            }
        }
        ids.sort_unstable();
        ids.dedup();
        ids.truncate(MAX_EVENT_IDS);
        EventIds::from_sorted(ids.iter().map(|(_, id)| *id))
    }

    /// `ids`, already sorted, distinct and cut.
    fn from_sorted<'a>(ids: impl Iterator<Item = &'a str> + Clone) -> EventIds {
        let mut buffer = String::with_capacity(ids.clone().map(|id| id.len() + 1).sum());
        for id in ids {
            buffer.push_str(id);
            buffer.push('\0');
        }
        EventIds(buffer)
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.split_terminator('\0')
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// An id's first eight bytes (zero-padded) as a big-endian number: when two ids' prefixes differ, they order as
/// the ids do, and when they are equal the ids themselves decide.
fn prefix(id: &str) -> u64 {
    let mut bytes = [0u8; 8];
    let n = id.len().min(8);
    bytes[..n].copy_from_slice(&id.as_bytes()[..n]);
    u64::from_be_bytes(bytes)
}

impl Serialize for EventIds {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> serde::Deserialize<'de> for EventIds {
    /// Reads the ids straight into one buffer (the deliverer reads every stored alert back); a list this version
    /// wrote is already sorted, distinct and cut, and anything else is made so.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<EventIds, D::Error> {
        use serde::de::{DeserializeSeed, SeqAccess, Visitor};
        struct List;
        struct Append<'b>(&'b mut String);
        impl<'de> DeserializeSeed<'de> for Append<'_> {
            type Value = ();
            fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
                d.deserialize_str(self)
            }
        }
        impl Visitor<'_> for Append<'_> {
            type Value = ();
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an event id")
            }
            fn visit_str<E: serde::de::Error>(self, id: &str) -> Result<(), E> {
                if id.contains('\0') {
                    return Err(E::custom("an event id holds NUL"));
                }
                self.0.push_str(id);
                self.0.push('\0');
                Ok(())
            }
        }
        impl<'de> Visitor<'de> for List {
            type Value = EventIds;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of event ids")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<EventIds, A::Error> {
                let mut buffer = String::new();
                while seq.next_element_seed(Append(&mut buffer))?.is_some() {}
                let read = EventIds(buffer);
                let as_written = {
                    let mut ids = read.iter();
                    let mut previous = ids.next();
                    let mut count = usize::from(previous.is_some());
                    let in_order = ids.all(|id| {
                        count += 1;
                        previous.replace(id).is_some_and(|p| p < id)
                    });
                    in_order && count <= MAX_EVENT_IDS
                };
                match as_written {
                    true => Ok(read),
                    false => Ok(EventIds::smallest(read.iter())),
                }
            }
        }
        d.deserialize_seq(List)
    }
}

mod rfc3339 {
    use serde::{Deserializer, Serializer};

    use crate::time::{Timestamp, format_rfc3339_wide, parse_rfc3339};

    pub fn serialize<S: Serializer>(ts: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        let mut text = [0; crate::time::RFC3339_LEN];
        match crate::time::write_rfc3339(*ts, &mut text) {
            Some(text) => s.serialize_str(text),
            None => s.serialize_str(&format_rfc3339_wide(*ts)),
        }
    }

    /// Parses the text in place (the deliverer reads two times per stored alert): no string is allocated.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        struct Rfc3339;
        impl serde::de::Visitor<'_> for Rfc3339 {
            type Value = Timestamp;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an RFC 3339 time")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Timestamp, E> {
                parse_rfc3339(text).ok_or_else(|| E::custom(format!("invalid time `{text}`")))
            }
        }
        d.deserialize_str(Rfc3339)
    }
}

/// Hex of the first `len` bytes of SHA-256 over `parts` separated by NUL.
pub fn digest(parts: &[&str], len: usize) -> String {
    let mut hasher = Sha256::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            hasher.update([0u8]);
        }
        hasher.update(part.as_bytes());
    }
    hex::encode(&hasher.finalize()[..len])
}

/// The dedup bucket an event time falls in.
pub fn bucket(time: Timestamp, window_secs: i64) -> i64 {
    time.div_euclid(window_secs.max(1))
}

/// What an alert that no single event raised says: a periodic finding or a behavioural fact.
pub struct Derived<'a> {
    pub rule: &'a str,
    /// What the alert is about (a principal, a key, a principal and region).
    pub subject: &'a str,
    /// What makes a later raise of the same rule and subject a new alert (a last use, a time bucket).
    pub anchor: &'a str,
    pub title: &'a str,
    pub severity: Severity,
    pub principal: String,
    pub account_id: Option<String>,
    pub time: Timestamp,
    pub summary: String,
    pub details: serde_json::Value,
}

impl Alert {
    /// The alert for `d`: fingerprint from rule and subject, id from the fingerprint and the anchor, no event
    /// context. Findings and behavioural rules share it, so their ids follow one formula.
    pub fn derived(d: Derived<'_>) -> Alert {
        let fingerprint = digest(&[d.rule, d.subject], 16);
        Alert {
            id: digest(&[&fingerprint, d.anchor], 16),
            fingerprint,
            rule: d.rule.to_owned(),
            title: d.title.to_owned(),
            severity: d.severity,
            principal: d.principal,
            account_id: d.account_id,
            region: None,
            source_ip: None,
            user_agent: None,
            event_ids: EventIds::default(),
            event_time: d.time,
            first_seen: d.time,
            count: 1,
            summary: d.summary,
            details: d.details,
        }
    }
}

/// The alert `trailwatch alerts test` sends: clearly a test, with an id unique to the second it was made.
pub fn test_alert(now: Timestamp) -> Alert {
    let fingerprint = digest(&["trailwatch-test"], 16);
    Alert {
        id: digest(&[&fingerprint, &now.to_string()], 16),
        fingerprint,
        rule: "trailwatch-test".into(),
        title: "trailwatch test alert".into(),
        severity: Severity::Informational,
        principal: "trailwatch".into(),
        account_id: None,
        region: None,
        source_ip: None,
        user_agent: None,
        event_ids: EventIds::default(),
        event_time: now,
        first_seen: now,
        count: 1,
        summary: "trailwatch test alert: delivery works".into(),
        details: serde_json::json!({"test": true}),
    }
}

/// RFC 3339 rendering for sinks that want text.
pub fn time_text(ts: Timestamp) -> String {
    format_rfc3339(ts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::ruleset::{Match, Mode, RuleSet};

    /// Stored alerts read back as written; a time is read in place, escaped or not, and a bad one is an error.
    #[test]
    fn an_alert_round_trips_through_its_json() {
        let rules = RuleSet::load(true, &[]).0;
        let root = rules.index_of("root-account-usage").unwrap();
        let fields = [Some("e1"), Some("ListUsers"), Some("arn:aws:iam::1:root"), Some("1"), None, None, None];
        let alert = from_match(&rules, &Match::new(root, 1_790_000_123, fields, &[]));
        let json = serde_json::to_string(&alert).unwrap();
        assert!(json.contains(r#""event_time":"2026-09-21T14:15:23Z""#), "{json}");
        assert_eq!(serde_json::from_str::<Alert>(&json).unwrap(), alert);
        let escaped = json.replace(r#""event_time":"2026"#, r#""event_time":"\u0032026"#);
        assert_eq!(serde_json::from_str::<Alert>(&escaped).unwrap(), alert);
        let bad = json.replace(r#""event_time":"2026-09-21"#, r#""event_time":"2026-09-31"#);
        let err = serde_json::from_str::<Alert>(&bad).unwrap_err().to_string();
        assert!(err.contains("invalid time `2026-09-31T14:15:23Z`"), "{err}");
    }

    /// Event ids read back as written, and a list this version would not write (unsorted, repeated, too long) is
    /// made into the smallest distinct ones, as `EventIds::smallest` makes them.
    #[test]
    fn event_ids_read_back_sorted_distinct_and_cut() {
        let read =
            |json: &str| serde_json::from_str::<EventIds>(json).unwrap().iter().map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(read(r#"["a","b","c"]"#), ["a", "b", "c"]);
        assert_eq!(read(r#"["c","a","b","a"]"#), ["a", "b", "c"]);
        assert_eq!(read(r#"["a\u0062"]"#), ["ab"]);
        assert!(read("[]").is_empty());
        let many: Vec<String> = (0..120).rev().map(|i| format!("e{i:03}")).collect();
        let expected: Vec<String> = (0..MAX_EVENT_IDS).map(|i| format!("e{i:03}")).collect();
        assert_eq!(read(&serde_json::to_string(&many).unwrap()), expected);
        let mut sorted = many.clone();
        sorted.sort();
        assert_eq!(read(&serde_json::to_string(&sorted).unwrap()), expected);
        assert!(serde_json::from_str::<EventIds>(r#"["a\u0000b"]"#).is_err());
        assert!(serde_json::from_str::<EventIds>(r#"[1]"#).is_err());
    }

    #[test]
    fn event_ids_are_the_smallest_distinct_ones() {
        fn naive(ids: &[String]) -> Vec<&str> {
            let mut ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            ids.sort_unstable();
            ids.dedup();
            ids.truncate(MAX_EVENT_IDS);
            ids
        }
        // (ids, times each is repeated): few; many distinct; many, each counted by three rules (too few distinct
        // among the smallest hundred, so the full sort is needed); exactly at the partition threshold.
        // Ids are also written with a shared eight-byte prefix (only the tail tells them apart), and as a mix of
        // lengths around eight bytes.
        let shapes: [fn(usize) -> String; 3] =
            [|k| format!("e{k:05}"), |k| format!("prefix00-{k:05}"), |k| "ab".repeat(k % 7) + &k.to_string()];
        for shape in shapes {
            for (n, repeats) in [(7, 1), (1000, 1), (400, 3), (101, 1), (100, 2)] {
                let ids: Vec<String> = (0..n * repeats).map(|i| shape((i % n) * 7919 % n)).collect();
                let got = EventIds::smallest(ids.iter().map(String::as_str));
                assert_eq!(got.iter().collect::<Vec<_>>(), naive(&ids), "{n} ids × {repeats}");
            }
        }
    }

    #[test]
    fn alerts_do_not_depend_on_how_matches_fall_into_units() {
        let rules = RuleSet::load(true, &[]).0;
        let root = rules.index_of("root-account-usage").unwrap();
        let m = |minute: i64, id: &str, ip: &str, name: &str| {
            let fields =
                [Some(id), Some(name), Some("arn:aws:iam::1:root"), Some("1"), Some("eu-west-1"), Some(ip), None];
            Match::new(root, 1_790_000_000 + minute * 60, fields, &[])
        };
        let matches = vec![
            m(0, "e1", "198.51.100.1", "ListUsers"),
            m(30, "e3", "198.51.100.3", "CreateUser"),
            m(30, "e2", "198.51.100.2", "GetUser"),
            m(90, "e4", "198.51.100.4", "DeleteUser"),
        ];
        let run = |units: Vec<Vec<Match>>| {
            let mut planned = Planned::default();
            let mut correlator = correlate::Correlator::default();
            for mut unit_matches in units {
                let mut unit = UnitAlerts::default();
                unit.fold(&rules, &mut unit_matches, &mut Vec::new());
                plan(&rules, unit, &mut correlator, &mut planned);
            }
            planned.finish(&rules)
        };
        let whole = run(vec![matches.clone()]);
        // Two buckets: minutes 0-30 (three events, context from the newest: the later IP at minute 30) and 90.
        let got: Vec<_> = whole
            .0
            .iter()
            .map(|(a, _)| {
                (
                    a.count,
                    a.event_ids.iter().map(str::to_owned).collect::<Vec<_>>(),
                    a.source_ip.clone().unwrap(),
                    a.details["event_name"].clone(),
                )
            })
            .collect();
        let mut expected = vec![
            (3, vec!["e1".to_owned(), "e2".into(), "e3".into()], "198.51.100.3".to_owned(), "CreateUser".into()),
            (1, vec!["e4".to_owned()], "198.51.100.4".to_owned(), "DeleteUser".into()),
        ];
        expected.sort_by_key(|e| whole.0.iter().position(|(a, _)| a.count == e.0).unwrap());
        assert_eq!(got, expected);
        assert_eq!(whole.1, [("root-account-usage".to_owned(), Mode::Live, 4)]);
        let one_each = matches.iter().rev().map(|m| vec![m.clone()]).collect();
        assert_eq!(run(one_each), whole);
        assert_eq!(run(vec![matches[2..].to_vec(), matches[..2].to_vec()]), whole);
        // More events than an alert lists: the smallest ids of all of them, however the units split them.
        let many: Vec<Match> =
            (0..500).map(|i| m(i % 40, &format!("e{:03}", (i * 7919) % 500), "198.51.100.1", "GetUser")).collect();
        let whole = run(vec![many.clone()]);
        assert_eq!(whole.0[0].0.count, 500);
        assert_eq!(
            whole.0[0].0.event_ids.iter().collect::<Vec<_>>(),
            (0..MAX_EVENT_IDS).map(|i| format!("e{i:03}")).collect::<Vec<_>>()
        );
        let reversed: Vec<Match> = many.iter().rev().cloned().collect();
        assert_eq!(run(vec![reversed[..333].to_vec(), reversed[333..].to_vec()]), whole);
        assert_eq!(run(many.chunks(7).map(<[Match]>::to_vec).collect()), whole);
    }

    /// Two events of one second from one place: whichever order they come in, in one unit, in two, or as two
    /// stored alerts merged, the alert names the same newest event in its summary and its details.
    #[test]
    fn a_tie_of_time_and_place_names_one_event_in_any_order() {
        let rules = RuleSet::load(true, &[]).0;
        let root = rules.index_of("root-account-usage").unwrap();
        let m = |id: &str, name: &str| {
            let fields = [Some(id), Some(name), Some("arn:aws:iam::1:root"), Some("1"), Some("eu-west-1"), None, None];
            Match::new(root, 1_790_000_000, fields, &[])
        };
        let (get, list) = (m("e1", "GetUser"), m("e2", "ListUsers"));
        let named = |alert: &Alert| (alert.summary.contains("called ListUsers"), alert.details["event_name"].clone());
        let expected = (true, serde_json::Value::from("ListUsers"));
        for units in [vec![vec![get.clone(), list.clone()]], vec![vec![list.clone(), get.clone()]]] {
            let mut planned = Planned::default();
            for mut unit_matches in units {
                let mut unit = UnitAlerts::default();
                unit.fold(&rules, &mut unit_matches, &mut Vec::new());
                plan(&rules, unit, &mut correlate::Correlator::default(), &mut planned);
            }
            let (alerts, _) = planned.finish(&rules);
            assert_eq!(named(&alerts[0].0), expected);
        }
        let (a, b) = (from_match(&rules, &get), from_match(&rules, &list));
        let (mut ab, mut ba) = (a.clone(), b.clone());
        ab.merge(b, Merge::Sum);
        ba.merge(a, Merge::Sum);
        assert_eq!(ab, ba);
        assert_eq!(named(&ab), expected);
    }

    /// Two measurements of one correlation's bucket (before and after a late file): the larger window stands
    /// whole, its events and times, in either order; an equal measure goes to the later window. The measure is
    /// the count for event_count, and the distinct values for value_count, even where another window has more events.
    #[test]
    fn the_larger_window_of_a_correlation_stands_whole_in_any_order() {
        let window = |count: u64, end: Timestamp, ids: &[&str]| Alert {
            count,
            event_time: end,
            first_seen: end - 600,
            summary: format!("{count} matching events"),
            event_ids: EventIds::smallest(ids.iter().copied()),
            ..Alert::derived(Derived {
                rule: "console-login-failures",
                subject: "alice",
                anchor: "0",
                title: "Repeated failed console sign-ins",
                severity: Severity::Medium,
                principal: "alice".into(),
                account_id: None,
                time: 0,
                summary: String::new(),
                details: serde_json::json!({}),
            })
        };
        // A value_count window: its measure (distinct values) is what a batch picks its best window by, so merging
        // across batches must order windows the same way, whatever their event counts.
        let measured = |count: u64, measure: u64, end: Timestamp, ids: &[&str]| Alert {
            details: serde_json::json!({ "correlation": "value_count", "measure": measure }),
            ..window(count, end, ids)
        };
        let cases = [
            (window(5, 600, &["a", "b", "c", "d", "e"]), window(6, 900, &["c", "d", "e", "f", "g", "h"])),
            (window(6, 600, &["a", "b", "c", "d", "e", "f"]), window(6, 900, &["d", "e", "f", "g", "h", "i"])),
            (
                measured(8, 3, 900, &["a", "b", "c", "d", "e", "f", "g", "h"]),
                measured(5, 4, 600, &["i", "j", "k", "l", "m"]),
            ),
        ];
        for (smaller, larger) in cases {
            let (mut one, mut other) = (smaller.clone(), larger.clone());
            one.merge(larger.clone(), Merge::Max);
            other.merge(smaller, Merge::Max);
            assert_eq!(one, larger);
            assert_eq!(other, larger);
        }
    }

    #[test]
    fn each_rule_merges_alerts_within_its_own_dedup_window() {
        let mut rules = RuleSet::load(true, &[]).0;
        let (root, tampering) =
            (rules.index_of("root-account-usage").unwrap(), rules.index_of("cloudtrail-tampering").unwrap());
        // Events at minutes 0, 30 and 90 for each rule.
        let matches: Vec<Match> = [root, tampering]
            .into_iter()
            .flat_map(|rule| {
                [0, 30, 90].map(|minute: i64| {
                    let id = format!("e{rule}-{minute}");
                    let fields = [
                        Some(id.as_str()),
                        Some("StopLogging"),
                        Some("arn:aws:iam::1:root"),
                        Some("1"),
                        None,
                        None,
                        None,
                    ];
                    Match::new(rule, 1_790_000_000 + minute * 60, fields, &[])
                })
            })
            .collect();
        let alerts_per_rule = |rules: &RuleSet| {
            let mut unit = UnitAlerts::default();
            unit.fold(rules, &mut matches.clone(), &mut Vec::new());
            let mut planned = Planned::default();
            plan(rules, unit, &mut correlate::Correlator::default(), &mut planned);
            let (alerts, _) = planned.finish(rules);
            let count = |id: &str| alerts.iter().filter(|(a, _)| a.rule == id).count();
            (count("root-account-usage"), count("cloudtrail-tampering"))
        };
        // The default window (an hour): minutes 0 and 30 share an alert, 90 has its own.
        assert_eq!(alerts_per_rule(&rules), (2, 2));
        // Ten minutes for every rule but root usage, which merges a whole day.
        let by_rule = [("root-account-usage".to_owned(), 86_400), ("no-such-rule".to_owned(), 60)].into();
        assert_eq!(rules.set_dedup_windows(600, &by_rule), ["no-such-rule"]);
        assert_eq!(alerts_per_rule(&rules), (1, 3));
    }
}
