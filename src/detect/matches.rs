//! What a rule matching an event hands to the alert stage: a [`MatchView`] borrowing the event, and a [`Match`]
//! owned when it must outlive the file's buffer.

use crate::detect::ruleset::{EventFields, RuleSet, push_group_value};
use crate::time::Timestamp;

/// One rule matching the event being parsed, borrowed from it: what folding needs is read in place, and a
/// [`Match`] is written only when one must be kept.
pub struct MatchView<'a> {
    pub(super) rules: &'a RuleSet,
    pub rule: u32,
    pub(super) fields: &'a EventFields<'a, 'a, 'a>,
    pub(super) account: Option<&'a str>,
}

impl MatchView<'_> {
    pub fn time(&self) -> Timestamp {
        self.fields.event.time
    }

    pub fn event_id(&self) -> Option<&str> {
        self.fields.event.event_id
    }

    pub fn account_id(&self) -> Option<&str> {
        self.account
    }

    /// What picks the newest match of a group, after the time: source IP, region, user agent, event name, error
    /// code (as [`Match::context`] reads them back).
    pub fn context(&self) -> (Option<&str>, Option<&str>, Option<&str>, &str, Option<&str>) {
        let event = self.fields.event;
        (event.source_ip, event.region, event.user_agent, event.event_name, event.error_code)
    }

    /// Whether the match may count towards correlations (then it is written whole, with its hits; one that ends
    /// up with none is only counted).
    pub fn feeds_correlations(&self) -> bool {
        !self.rules.feeds(self.rule).is_empty()
    }

    /// Appends the canonical principal's bytes (as [`Match::principal`] holds it).
    pub fn push_principal(&self, out: &mut Vec<u8>) {
        for part in self.fields.event.principal.key.parts() {
            out.extend_from_slice(part.as_bytes());
        }
    }

    /// Makes `m` this match (its correlation hits included), reusing `m`'s buffers.
    pub fn write_to(&self, m: &mut Match) {
        let (event, fields) = (self.fields.event, self.fields);
        let feeds = self.rules.feeds(self.rule);
        // One allocation for a new match (the principal is about as long as an ARN, and so is a correlation's
        // group), none for a spare one.
        let copied =
            [event.event_id, Some(event.event_name), event.region, event.source_ip, event.user_agent, event.error_code];
        m.text.clear();
        m.text.reserve(copied.iter().flatten().map(|f| f.len()).sum::<usize>() + 96 + 128 * feeds.len());
        m.refill(self.rule, event.time, |text, ends| {
            push_field(text, &mut ends[0], event.event_id);
            push_field(text, &mut ends[1], Some(event.event_name));
            event.principal.key.write_to(text);
            ends[2] = text.len() as u32;
            push_field(text, &mut ends[3], self.account);
            push_field(text, &mut ends[4], event.region);
            push_field(text, &mut ends[5], event.source_ip);
            push_field(text, &mut ends[6], event.user_agent);
            push_field(text, &mut ends[7], event.error_code);
        });
        // The hits' value and group follow the fields in the same text: no allocation per hit. A `value_count`
        // counts values: an event without the counted field is no hit (it could never change a count).
        for &c in feeds {
            let correlation = self.rules.correlation(c).expect("feeds name correlations");
            let value = match correlation.field.as_deref() {
                Some(field) => {
                    let start = m.text.len();
                    if !push_group_value(&mut m.text, field, fields) {
                        continue;
                    }
                    Some(Span::to_end(start, &m.text))
                }
                None => None,
            };
            let start = m.text.len();
            for (i, field) in correlation.group_by.iter().enumerate() {
                if i > 0 {
                    m.text.push('\u{1f}');
                }
                push_group_value(&mut m.text, field, fields);
            }
            let group = Span::to_end(start, &m.text);
            m.hits.push(CorrelationHit { correlation: c, group, value });
        }
    }

    /// This match, owned: refilled from `spare` when one is there.
    pub fn to_match(&self, spare: &mut Vec<Match>) -> Match {
        let mut m = spare.pop().unwrap_or_default();
        self.write_to(&mut m);
        m
    }
}

/// One rule matching one event: what the alert stage needs, owned so that it outlives the file's buffer. The
/// event's text fields share one allocation (matches are made on workers; those a group no longer needs are
/// refilled there, the rest are freed after the batch that holds them commits).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Match {
    pub rule: u32,
    pub time: Timestamp,
    /// The fields, in [`Match::FIELDS`] order, one after the other.
    text: String,
    /// End of each field in `text`; `u32::MAX` for an absent field.
    ends: [u32; 8],
    /// The correlations this match counts towards, with its group.
    pub hits: Vec<CorrelationHit>,
}

impl Match {
    /// `event_id`, `event_name`, `principal`, `account_id`, `region`, `source_ip`, `user_agent`, then the
    /// `error_code` (the outcome an event rule's alert reports; correlations keep no outcome).
    pub const FIELDS: usize = 7;

    /// A match of `fields` (without an error code), counting towards `hits`: (correlation, group, value).
    pub fn new(rule: u32, time: Timestamp, fields: [Option<&str>; 7], hits: &[(u32, &str, Option<&str>)]) -> Match {
        let mut m = Match::default();
        m.refill(rule, time, |text, ends| {
            for (end, field) in ends.iter_mut().zip(fields) {
                push_field(text, end, field);
            }
        });
        for &(correlation, group, value) in hits {
            let start = m.text.len();
            m.text.push_str(group);
            let group = Span::to_end(start, &m.text);
            let value = value.map(|value| {
                let start = m.text.len();
                m.text.push_str(value);
                Span::to_end(start, &m.text)
            });
            m.hits.push(CorrelationHit { correlation, group, value });
        }
        m
    }

    /// Makes `self` a new match without hits, keeping its buffers; `write` appends the fields to the text and sets
    /// their ends.
    fn refill(&mut self, rule: u32, time: Timestamp, write: impl FnOnce(&mut String, &mut [u32; 8])) {
        self.rule = rule;
        self.time = time;
        self.hits.clear();
        self.text.clear();
        self.ends = [u32::MAX; 8];
        write(&mut self.text, &mut self.ends);
    }

    /// A copy without the correlation hits (for an alert's context, while the original feeds the windows).
    pub fn without_hits(&self) -> Match {
        let fields_end = self.ends.iter().rev().find(|e| **e != u32::MAX).map_or(0, |e| *e as usize);
        Match {
            rule: self.rule,
            time: self.time,
            text: self.text[..fields_end].to_owned(),
            ends: self.ends,
            hits: Vec::new(),
        }
    }

    /// A hit's group or value.
    pub fn span(&self, span: Span) -> &str {
        &self.text[span.start as usize..span.end as usize]
    }

    fn field(&self, i: usize) -> Option<&str> {
        let end = self.ends[i];
        if end == u32::MAX {
            return None;
        }
        let start = self.ends[..i].iter().rev().find(|e| **e != u32::MAX).map_or(0, |e| *e as usize);
        Some(&self.text[start..end as usize])
    }

    pub fn event_id(&self) -> Option<&str> {
        self.field(0)
    }

    pub fn event_name(&self) -> &str {
        self.field(1).unwrap_or_default()
    }

    pub fn principal(&self) -> &str {
        self.field(2).unwrap_or_default()
    }

    pub fn account_id(&self) -> Option<&str> {
        self.field(3)
    }

    pub fn region(&self) -> Option<&str> {
        self.field(4)
    }

    pub fn source_ip(&self) -> Option<&str> {
        self.field(5)
    }

    pub fn user_agent(&self) -> Option<&str> {
        self.field(6)
    }

    /// The event's `errorCode`: an event rule's alert on a denied or failed attempt says so.
    pub fn error_code(&self) -> Option<&str> {
        self.field(7)
    }

    /// Source IP, region, user agent, event name, error code: after the time, what picks a group's newest match.
    /// The name and outcome last, so that two events of one second from one place still pick the same one in any
    /// order, and the alert's summary and details (which name them) agree with how alerts merge (see
    /// `Alert::merge`).
    pub fn context(&self) -> (Option<&str>, Option<&str>, Option<&str>, &str, Option<&str>) {
        (self.source_ip(), self.region(), self.user_agent(), self.event_name(), self.error_code())
    }
}

/// Appends a field of a match (if present) and records its end.
fn push_field(text: &mut String, end: &mut u32, field: Option<&str>) {
    if let Some(field) = field {
        text.push_str(field);
        *end = text.len() as u32;
    }
}

/// A correlation a match counts towards, with its group-by values (joined by U+001F) and, for `value_count`, the
/// counted field's value: both in the match's text (see [`Match::span`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CorrelationHit {
    pub correlation: u32,
    pub group: Span,
    pub value: Option<Span>,
}

/// Where a piece of a match's text lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    start: u32,
    end: u32,
}

impl Span {
    /// From `start` to the end of `text`.
    fn to_end(start: usize, text: &str) -> Span {
        Span { start: start as u32, end: text.len() as u32 }
    }
}
