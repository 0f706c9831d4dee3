//! Stage 4, parse: decoded JSON bytes → validated [`Event`]s, streamed to a callback without collecting records.
//!
//! Architecture invariant: never panics and never fails on a single record. A record of the wrong shape is skipped
//! and counted by a bounded [`SkipReason`]; only a file that is not valid JSON or not a CloudTrail log file is an
//! error ([`ParseError`]).

pub mod identity;
pub mod lenient;
pub mod record;

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::action::{IamActions, iam_actions};
use crate::parse::identity::{Principal, resolve};
use crate::parse::lenient::Obj;
use crate::parse::record::RawRecord;
use crate::time::{Timestamp, parse_rfc3339};

/// One CloudTrail record, validated and resolved to its principal and IAM actions. Borrows from the file buffer,
/// so it can be kept for as long as the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event<'r> {
    pub time: Timestamp,
    pub event_source: &'r str,
    pub event_name: &'r str,
    pub principal: Principal<'r>,
    pub outcome: Outcome,
    /// For a `ConsoleLogin`: whether it succeeded and whether MFA was used.
    pub console_login: Option<ConsoleLogin>,
    /// A long-term access key (`AKIA…`); temporary keys are not tracked.
    pub access_key: Option<&'r str>,
    pub source_ip: Option<&'r str>,
    pub region: Option<&'r str>,
    pub user_agent: Option<&'r str>,
    pub actions: IamActions<'r>,
    /// Whether the record has an `errorCode` (of any kind).
    pub has_error_code: bool,
}

/// How a call ended, as far as permissions go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// No error, or an error raised after authorization passed (throttling, missing resource): the permission was used.
    Used,
    /// An authorization failure: a denied attempt.
    Denied,
    /// A failed console sign-in, which has no IAM action.
    FailedSignIn,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsoleLogin {
    pub success: bool,
    pub mfa_used: bool,
}

impl Event<'_> {
    /// An `errorCode`, or a `ConsoleLogin` whose response is `Failure`.
    pub fn is_error(&self) -> bool {
        self.has_error_code || self.outcome == Outcome::FailedSignIn
    }
}

/// Why a record was skipped. Bounded: these are metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    NotAnObject,
    MissingEventTime,
    InvalidEventTime,
    MissingEventSource,
    MissingEventName,
    NoIdentity,
}

impl SkipReason {
    pub const ALL: [SkipReason; 6] = [
        SkipReason::NotAnObject,
        SkipReason::MissingEventTime,
        SkipReason::InvalidEventTime,
        SkipReason::MissingEventSource,
        SkipReason::MissingEventName,
        SkipReason::NoIdentity,
    ];

    pub fn kind(self) -> &'static str {
        match self {
            SkipReason::NotAnObject => "not_an_object",
            SkipReason::MissingEventTime => "missing_event_time",
            SkipReason::InvalidEventTime => "invalid_event_time",
            SkipReason::MissingEventSource => "missing_event_source",
            SkipReason::MissingEventName => "missing_event_name",
            SkipReason::NoIdentity => "no_identity",
        }
    }
}

/// Per-file record counts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RecordCounts {
    /// Every element of `Records`.
    pub records: u64,
    /// Records handed on as events.
    pub events: u64,
    /// Insight events: counted, never attributed to an identity.
    pub insights: u64,
    /// Skipped records, indexed like [`SkipReason::ALL`].
    pub skipped: [u64; 6],
    /// The latest `eventTime` among the events: how far behind real time the file is.
    pub newest: Option<Timestamp>,
}

impl RecordCounts {
    pub fn skipped_total(&self) -> u64 {
        self.skipped.iter().sum()
    }

    pub fn add(&mut self, other: &RecordCounts) {
        self.records += other.records;
        self.events += other.events;
        self.insights += other.insights;
        for (a, b) in self.skipped.iter_mut().zip(other.skipped) {
            *a += b;
        }
        self.newest = self.newest.max(other.newest);
    }
}

/// Why a whole file was rejected. `kind()` is the bounded metric label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("invalid json: {0}")]
    InvalidJson(String),
    #[error("not a cloudtrail log file: a cloudtrail digest file")]
    Digest,
    #[error("not a cloudtrail log file: {0}")]
    NotCloudTrail(&'static str),
}

impl ParseError {
    pub fn kind(&self) -> &'static str {
        match self {
            ParseError::InvalidJson(_) => "invalid_json",
            ParseError::Digest => "digest_file",
            ParseError::NotCloudTrail(_) => "not_cloudtrail",
        }
    }
}

/// Reusable parser scratch space, one per worker thread: simd-json's buffers and its tape keep their allocations
/// from file to file.
pub struct Parser {
    buffers: simd_json::Buffers,
    tape: Option<simd_json::Tape<'static>>,
}

impl Default for Parser {
    fn default() -> Self {
        Parser { buffers: simd_json::Buffers::new(1 << 20), tape: Some(simd_json::Tape::null().reset()) }
    }
}

/// Bytes [`Parser::parse`] needs after the document; [`Parser::pad`] adds them.
pub const PADDING: usize = simd_json::INPUT_PADDING;

impl Parser {
    /// Appends the padding [`Parser::parse`] reads past the document (SIMD loads), so it need not copy the input.
    pub fn pad(json: &mut Vec<u8>) {
        json.resize(json.len() + PADDING, b' ');
    }

    /// Parses a `{"Records":[...]}` document in place, calling `on_event` per valid event.
    ///
    /// `json[..len]` is the document and `json[len..]` at least [`PADDING`] bytes of any content (see
    /// [`Parser::pad`]); strings are unescaped in place, so the document is overwritten.
    pub fn parse<'de>(
        &mut self,
        json: &'de mut [u8],
        len: usize,
        on_event: &mut dyn FnMut(&Event<'de>),
    ) -> Result<RecordCounts, ParseError> {
        let mut tape = self.tape.take().unwrap_or_else(|| simd_json::Tape::null().reset()).reset();
        let filled = simd_json::fill_tape_padded(json, len, &mut self.buffers, &mut tape);
        if let Err(err) = filled {
            self.tape = Some(tape.reset());
            return Err(ParseError::InvalidJson(describe(&err)));
        }
        let mut de = simd_json::Deserializer::from_tape(tape);
        let mut counts = RecordCounts::default();
        let shape = FileSeed { counts: &mut counts, on_event }.deserialize(&mut de);
        self.tape = Some(de.into_tape().reset());
        match shape.map_err(|err| ParseError::InvalidJson(describe(&err)))? {
            FileShape::LogFile => Ok(counts),
            FileShape::NotAnObject => Err(ParseError::NotCloudTrail("top level is not an object")),
            FileShape::RecordsNotArray => Err(ParseError::NotCloudTrail("`Records` is not an array")),
            FileShape::Digest => Err(ParseError::Digest),
            FileShape::NoRecords => Err(ParseError::NotCloudTrail("no `Records` key")),
        }
    }

    /// [`Parser::parse`] for a document without padding: copies it into a padded buffer first. For tests and tools.
    pub fn parse_unpadded(
        &mut self,
        json: &[u8],
        on_event: &mut dyn FnMut(&Event<'_>),
    ) -> Result<RecordCounts, ParseError> {
        let mut buf = json.to_vec();
        Parser::pad(&mut buf);
        self.parse(&mut buf, json.len(), on_event)
    }
}

/// `ExpectedObjectKey at character 1293` → `expected object key at byte 1293`.
fn describe(err: &simd_json::Error) -> String {
    let kind = format!("{:?}", err.error());
    // Variants with data print as `Name(..)`; the name says enough.
    let name = kind.split(['(', ' ', '{']).next().unwrap_or(&kind);
    let mut words = String::with_capacity(name.len() + 8);
    for (i, c) in name.char_indices() {
        if c.is_ascii_uppercase() && i > 0 {
            words.push(' ');
        }
        words.push(c.to_ascii_lowercase());
    }
    format!("{words} at byte {}", err.index())
}

/// Turns a raw record into an event, or says why it is skipped. `None` inside `Ok` means an Insight event.
pub fn validate<'a>(raw: &RawRecord<'a>) -> Result<Option<Event<'a>>, SkipReason> {
    if raw.event_type.get() == Some("AwsCloudTrailInsight") {
        return Ok(None);
    }
    let time = raw.event_time.get().ok_or(SkipReason::MissingEventTime)?;
    let time = parse_rfc3339(time).ok_or(SkipReason::InvalidEventTime)?;
    let event_source = raw.event_source.get().ok_or(SkipReason::MissingEventSource)?;
    let event_name = raw.event_name.get().ok_or(SkipReason::MissingEventName)?;
    let identity = raw.user_identity.get().ok_or(SkipReason::NoIdentity)?;
    let principal = resolve(identity, raw.recipient_account_id.get()).ok_or(SkipReason::NoIdentity)?;
    let error_code = raw.error_code.get();
    let console_login = (event_name == "ConsoleLogin").then(|| ConsoleLogin {
        success: raw.response_elements.get().and_then(|r| r.console_login.get()) == Some("Success")
            && error_code.is_none(),
        mfa_used: raw.additional_event_data.get().and_then(|a| a.mfa_used.get()) == Some("Yes"),
    });
    let outcome = match (error_code, console_login) {
        (Some(code), _) if is_authorization_failure(code) => Outcome::Denied,
        (_, Some(login)) if !login.success => Outcome::FailedSignIn,
        _ => Outcome::Used,
    };
    // Service events are AWS acting on its own schedule; they say nothing about what an identity may do.
    let actions = if raw.event_type.get() == Some("AwsServiceEvent") {
        [None, None]
    } else {
        iam_actions(event_source, event_name)
    };
    let access_key = identity.access_key_id.get().filter(|k| k.starts_with("AKIA"));
    Ok(Some(Event {
        time,
        event_source,
        event_name,
        principal,
        outcome,
        console_login,
        access_key,
        source_ip: raw.source_ip_address.get(),
        region: raw.aws_region.get(),
        user_agent: raw.user_agent.get(),
        actions,
        has_error_code: error_code.is_some(),
    }))
}

/// `AccessDenied*`, `*UnauthorizedOperation`, `*Unauthorized*`.
pub fn is_authorization_failure(code: &str) -> bool {
    code.starts_with("AccessDenied") || code.contains("Unauthorized")
}

enum FileShape {
    LogFile,
    NotAnObject,
    RecordsNotArray,
    Digest,
    NoRecords,
}

struct FileSeed<'s, 'f, 'de> {
    counts: &'s mut RecordCounts,
    on_event: &'s mut (dyn FnMut(&Event<'de>) + 'f),
}

impl<'de> DeserializeSeed<'de> for FileSeed<'_, '_, 'de> {
    type Value = FileShape;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<FileShape, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FileSeed<'_, '_, 'de> {
    type Value = FileShape;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a CloudTrail log file")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FileShape, A::Error> {
        let mut records = None;
        let mut digest = false;
        while let Some(key) = map.next_key::<&'de str>()? {
            match key {
                "Records" if records.is_none() => {
                    let seed = RecordsSeed { counts: &mut *self.counts, on_event: &mut *self.on_event };
                    records = Some(map.next_value_seed(seed)?);
                }
                "logFiles" | "digestStartTime" | "digestEndTime" | "previousDigestSignature" => {
                    digest = true;
                    map.next_value::<IgnoredAny>()?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(match (records, digest) {
            (Some(true), _) => FileShape::LogFile,
            (Some(false), _) => FileShape::RecordsNotArray,
            (None, true) => FileShape::Digest,
            (None, false) => FileShape::NoRecords,
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<FileShape, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(FileShape::NotAnObject)
    }

    fn visit_borrowed_str<E: de::Error>(self, _: &'de str) -> Result<FileShape, E> {
        Ok(FileShape::NotAnObject)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<FileShape, E> {
        Ok(FileShape::NotAnObject)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<FileShape, E> {
        Ok(FileShape::NotAnObject)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<FileShape, E> {
        Ok(FileShape::NotAnObject)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<FileShape, E> {
        Ok(FileShape::NotAnObject)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<FileShape, E> {
        Ok(FileShape::NotAnObject)
    }
    fn visit_unit<E: de::Error>(self) -> Result<FileShape, E> {
        Ok(FileShape::NotAnObject)
    }
}

/// Streams the `Records` array; its value says whether it was an array at all.
struct RecordsSeed<'s, 'f, 'de> {
    counts: &'s mut RecordCounts,
    on_event: &'s mut (dyn FnMut(&Event<'de>) + 'f),
}

impl<'de> DeserializeSeed<'de> for RecordsSeed<'_, '_, 'de> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for RecordsSeed<'_, '_, 'de> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of records")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while let Some(raw) = seq.next_element::<Obj<RawRecord<'de>>>()? {
            self.counts.records += 1;
            let Some(raw) = raw.get() else {
                self.counts.skipped[SkipReason::NotAnObject as usize] += 1;
                continue;
            };
            match validate(raw) {
                Ok(Some(event)) => {
                    self.counts.events += 1;
                    self.counts.newest = self.counts.newest.max(Some(event.time));
                    (self.on_event)(&event);
                }
                Ok(None) => self.counts.insights += 1,
                Err(reason) => self.counts.skipped[reason as usize] += 1,
            }
        }
        Ok(true)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(false)
    }
    fn visit_borrowed_str<E: de::Error>(self, _: &'de str) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
}

#[cfg(test)]
mod tests;
