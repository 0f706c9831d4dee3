//! Stage 4, parse: decoded JSON bytes → validated [`Event`]s, streamed to a callback without collecting records.
//!
//! Architecture invariant: never panics and never fails on a single record. A record of the wrong shape is skipped
//! and counted by a bounded [`SkipReason`]; only a file that is not valid JSON or not a CloudTrail log file is an
//! error ([`ParseError`]).

pub mod identity;
pub mod lenient;
pub mod record;

use std::borrow::Cow;

use crate::action::{IamActions, iam_actions};
use crate::parse::identity::{Principal, resolve};
use crate::parse::lenient::Json;
use crate::parse::record::RawRecord;
use crate::time::{Timestamp, parse_event_time};

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
    pub error_code: Option<&'r str>,
    /// `userIdentity.type` as written.
    pub identity_type: Option<&'r str>,
    pub event_type: Option<&'r str>,
    /// `eventID` and `userIdentity.arn`, read for the rules (an alert's event ids, Sigma rules on the ARN).
    pub event_id: Option<&'r str>,
    pub user_arn: Option<&'r str>,
    /// `userIdentity.accessKeyId` (any kind of key) and `userIdentity.sessionContext.sessionIssuer.type`, also
    /// read for the rules: SigmaHQ's rules test both, the latter on every assumed-role event.
    pub access_key_id: Option<&'r str>,
    pub issuer_type: Option<&'r str>,
    /// Which of the optional strings above were present as `""` (they read as `None`, as everywhere in the state).
    pub empty: EmptyStrings,
}

/// The optional strings of an [`Event`] that a record had as `""`: for the rules, where an empty string is a value
/// and Sigma's `null` means absent only.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EmptyStrings(u16);

impl EmptyStrings {
    pub const ERROR_CODE: u16 = 1 << 0;
    pub const USER_AGENT: u16 = 1 << 1;
    pub const SOURCE_IP: u16 = 1 << 2;
    pub const REGION: u16 = 1 << 3;
    pub const IDENTITY_TYPE: u16 = 1 << 4;
    pub const EVENT_TYPE: u16 = 1 << 5;
    pub const EVENT_ID: u16 = 1 << 6;
    pub const USER_ARN: u16 = 1 << 7;
    pub const ACCESS_KEY_ID: u16 = 1 << 8;
    pub const ISSUER_TYPE: u16 = 1 << 9;

    /// `value`, or `Some("")` when the field was present but empty.
    pub fn read(self, value: Option<&str>, field: u16) -> Option<&str> {
        if value.is_none() && self.0 & field != 0 { Some("") } else { value }
    }
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
    /// An `eventTime` far from when the file was delivered (or, for a file that does not say, before AWS or more
    /// than a day ahead of the clock): a year-9999 event would make its identity never inactive.
    ImplausibleEventTime,
}

impl SkipReason {
    pub const ALL: [SkipReason; 7] = [
        SkipReason::NotAnObject,
        SkipReason::MissingEventTime,
        SkipReason::InvalidEventTime,
        SkipReason::MissingEventSource,
        SkipReason::MissingEventName,
        SkipReason::NoIdentity,
        SkipReason::ImplausibleEventTime,
    ];

    pub fn kind(self) -> &'static str {
        match self {
            SkipReason::NotAnObject => "not_an_object",
            SkipReason::MissingEventTime => "missing_event_time",
            SkipReason::InvalidEventTime => "invalid_event_time",
            SkipReason::MissingEventSource => "missing_event_source",
            SkipReason::MissingEventName => "missing_event_name",
            SkipReason::NoIdentity => "no_identity",
            SkipReason::ImplausibleEventTime => "implausible_event_time",
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
    pub skipped: [u64; SkipReason::ALL.len()],
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
    /// Event times outside this range are skipped ([`SkipReason::ImplausibleEventTime`]); set per file.
    plausible: std::ops::RangeInclusive<Timestamp>,
    /// The capacities simd-json's buffers have grown to, as far as they can be known from outside: its string
    /// buffer and its structural indexes (bytes).
    string_capacity: usize,
    index_capacity: usize,
}

/// The size of simd-json's buffers when a parser is made (and after [`Parser::release`]).
const INITIAL_BUFFER: usize = 1 << 20;

impl Default for Parser {
    fn default() -> Self {
        Parser {
            buffers: simd_json::Buffers::new(INITIAL_BUFFER),
            tape: Some(simd_json::Tape::null().reset()),
            plausible: Timestamp::MIN..=Timestamp::MAX,
            // `Buffers::new` sizes its string buffer (plus padding) and its input copy (unused here) by the input
            // length, and its indexes at one per 128 bytes.
            string_capacity: 2 * INITIAL_BUFFER,
            index_capacity: INITIAL_BUFFER / 128 * 4,
        }
    }
}

/// A tape entry's size: the tape holds one per structural position.
const NODE_BYTES: usize = std::mem::size_of::<simd_json::Node<'static>>();

/// How large a `Vec` of capacity `capacity` becomes when `reserve` asks for room for `needed`: amortized growth
/// at least doubles it.
fn grown(capacity: usize, needed: usize) -> usize {
    if capacity >= needed { capacity } else { needed.max(capacity.saturating_mul(2)) }
}

/// The positions simd-json's first stage marks in a JSON document: each `{`, `}`, `[`, `]`, `:`, `,`, each string
/// and each scalar (number, `true`, `false`, `null`). It sizes the parse's tape; counted exactly, skipping strings'
/// contents (most of a CloudTrail file) with `memchr`.
pub fn structural_count(json: &[u8]) -> usize {
    let (mut count, mut at, mut in_scalar) = (0, 0, false);
    while at < json.len() {
        match json[at] {
            b'{' | b'}' | b'[' | b']' | b':' | b',' => {
                count += 1;
                in_scalar = false;
            }
            b'"' => {
                count += 1;
                in_scalar = false;
                // To the closing quote: an escaped character is skipped with its backslash.
                at += 1;
                while let Some(next) = memchr::memchr2(b'"', b'\\', &json[at..]) {
                    at += next;
                    if json[at] == b'"' {
                        break;
                    }
                    at += 2;
                }
            }
            b' ' | b'\t' | b'\n' | b'\r' => in_scalar = false,
            _ if !in_scalar => {
                count += 1;
                in_scalar = true;
            }
            _ => {}
        }
        at += 1;
    }
    count
}

/// Bytes [`Parser::parse`] needs after the document; [`Parser::pad`] adds them.
pub const PADDING: usize = simd_json::INPUT_PADDING;

impl Parser {
    /// Appends the padding [`Parser::parse`] reads past the document (SIMD loads), so it need not copy the input.
    pub fn pad(json: &mut Vec<u8>) {
        json.resize(json.len() + PADDING, b' ');
    }

    /// The bytes parsing a document of `len` bytes with `structurals` positions ([`structural_count`]) takes, with
    /// this parser's buffers as they are: its string buffer, structural indexes, tape and stack.
    pub fn footprint(&self, len: usize, structurals: usize) -> usize {
        let tape = self.tape.as_ref().map_or(0, |t| t.0.capacity());
        let strings = grown(self.string_capacity, len + PADDING);
        strings
            + self.index_bytes(len, structurals)
            + grown(tape, structurals) * NODE_BYTES
            + structurals.min(1024) * 24
    }

    /// The structural indexes' bytes after a document: room for one per eight bytes is reserved first, then each
    /// position is pushed (4 bytes), doubling the vector when it is full.
    fn index_bytes(&self, len: usize, structurals: usize) -> usize {
        let reserved = grown(self.index_capacity, len / 2);
        if structurals * 4 <= reserved { reserved } else { structurals * 8 }
    }

    /// What this parser's buffers hold on to between documents (see [`Parser::footprint`]).
    pub fn retained(&self) -> usize {
        self.footprint(0, 0)
    }

    /// Lets go of the buffers a large document grew, keeping the settings.
    pub fn release(&mut self) {
        let plausible = self.plausible.clone();
        *self = Parser { plausible, ..Parser::default() };
    }

    /// The event times the next files may hold (see [`plausible_event_times`]); any, until set.
    pub fn set_plausible_times(&mut self, times: std::ops::RangeInclusive<Timestamp>) {
        self.plausible = times;
    }

    /// Parses a `{"Records":[...]}` document in place, calling `on_event` per valid event.
    ///
    /// `json[..len]` is the document and `json[len..]` at least [`PADDING`] bytes of any content (see
    /// [`Parser::pad`]); strings are unescaped in place, so the document is overwritten.
    pub fn parse<'de>(
        &mut self,
        json: &'de mut [u8],
        len: usize,
        on_event: &mut dyn FnMut(&Event<'de>, Record<'_, 'de>),
    ) -> Result<RecordCounts, ParseError> {
        let mut tape = self.tape.take().unwrap_or_else(|| simd_json::Tape::null().reset()).reset();
        let filled = simd_json::fill_tape_padded(json, len, &mut self.buffers, &mut tape);
        let mut counts = RecordCounts::default();
        let walked = match filled {
            Err(err) => Err(ParseError::InvalidJson(describe(&err))),
            Ok(()) => walk(Json::root(&tape.0), &self.plausible, &mut counts, on_event),
        };
        self.tape = Some(tape.reset());
        self.string_capacity = grown(self.string_capacity, len + PADDING);
        self.index_capacity = self.index_bytes(len, self.buffers.structural_indexes().len());
        walked.map(|()| counts)
    }

    /// [`Parser::parse`] for a document without padding: copies it into a padded buffer first. For tests and tools.
    pub fn parse_unpadded(
        &mut self,
        json: &[u8],
        on_event: &mut dyn FnMut(&Event<'_>, Record<'_, '_>),
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
    let time = parse_event_time(time).ok_or(SkipReason::InvalidEventTime)?;
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
    let issuer = identity.session_context.get().and_then(|c| c.session_issuer.get());
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
        error_code,
        identity_type: identity.kind.get(),
        event_type: raw.event_type.get(),
        event_id: raw.event_id.get(),
        user_arn: identity.arn.get(),
        access_key_id: identity.access_key_id.get(),
        issuer_type: issuer.and_then(|i| i.kind.get()),
        empty: EmptyStrings(
            [
                (raw.error_code, EmptyStrings::ERROR_CODE),
                (raw.user_agent, EmptyStrings::USER_AGENT),
                (raw.source_ip_address, EmptyStrings::SOURCE_IP),
                (raw.aws_region, EmptyStrings::REGION),
                (identity.kind, EmptyStrings::IDENTITY_TYPE),
                (raw.event_type, EmptyStrings::EVENT_TYPE),
                (raw.event_id, EmptyStrings::EVENT_ID),
                (identity.arn, EmptyStrings::USER_ARN),
                (identity.access_key_id, EmptyStrings::ACCESS_KEY_ID),
                (issuer.map_or(Default::default(), |i| i.kind), EmptyStrings::ISSUER_TYPE),
            ]
            .iter()
            .filter(|(text, _)| text.is_empty_string())
            .fold(0, |bits, (_, bit)| bits | bit),
        ),
    }))
}

/// The earliest plausible event time: AWS's first public services (2006); CloudTrail itself started in 2013.
const EARLIEST_EVENT: Timestamp = 1_136_073_600;

/// How far before its delivery a file's event may be: CloudTrail delivers within minutes, some services' events
/// hours late, and nothing legitimately weeks late.
const MAX_LATENESS: Timestamp = 30 * 86_400;

/// How far after its delivery (or the clock) an event may be: clocks and delivery times are not exact.
const MAX_AHEAD: Timestamp = 86_400;

/// The event times a file may hold: around its delivery time (CloudTrail's file name says it), or, for a file that
/// does not say, between 2006 and a day after `now`.
pub fn plausible_event_times(delivered: Option<Timestamp>, now: Timestamp) -> std::ops::RangeInclusive<Timestamp> {
    match delivered {
        Some(at) => at - MAX_LATENESS..=at + MAX_AHEAD,
        None => EARLIEST_EVENT..=now + MAX_AHEAD,
    }
}

/// `AccessDenied*`, `*UnauthorizedOperation`, `*Unauthorized*`.
pub fn is_authorization_failure(code: &str) -> bool {
    code.starts_with("AccessDenied") || code.contains("Unauthorized")
}

/// Walks `{"Records":[...]}` on the tape, validating each record and handing events on.
fn walk<'t, 'de>(
    root: Option<Json<'t, 'de>>,
    plausible: &std::ops::RangeInclusive<Timestamp>,
    counts: &mut RecordCounts,
    on_event: &mut dyn FnMut(&Event<'de>, Record<'t, 'de>),
) -> Result<(), ParseError> {
    let entries = root.and_then(Json::entries).ok_or(ParseError::NotCloudTrail("top level is not an object"))?;
    let mut records = None;
    let mut digest = false;
    for (key, value) in entries {
        match key {
            "Records" if records.is_none() => records = Some(value),
            "logFiles" | "digestStartTime" | "digestEndTime" | "previousDigestSignature" => digest = true,
            _ => {}
        }
    }
    let records = match (records, digest) {
        (Some(records), _) => records.elements().ok_or(ParseError::NotCloudTrail("`Records` is not an array"))?,
        (None, true) => return Err(ParseError::Digest),
        (None, false) => return Err(ParseError::NotCloudTrail("no `Records` key")),
    };
    for json in records {
        counts.records += 1;
        let Some(raw) = RawRecord::read(json) else {
            counts.skipped[SkipReason::NotAnObject as usize] += 1;
            continue;
        };
        match validate(&raw) {
            Ok(Some(event)) if !plausible.contains(&event.time) => {
                counts.skipped[SkipReason::ImplausibleEventTime as usize] += 1
            }
            Ok(Some(event)) => {
                counts.events += 1;
                counts.newest = counts.newest.max(Some(event.time));
                on_event(&event, Record(json));
            }
            Ok(None) => counts.insights += 1,
            Err(reason) => counts.skipped[reason as usize] += 1,
        }
    }
    Ok(())
}

/// The whole record an event came from, for looking up any field by its dotted name (the detect stage's rules)
/// without parsing again. Valid during the event's callback only: the tape is reused for the next file.
#[derive(Debug, Clone, Copy)]
pub struct Record<'t, 'de>(Json<'t, 'de>);

impl<'t, 'de> Record<'t, 'de> {
    /// A field by dotted path (`userIdentity.type`, `requestParameters.policyArn`) as text; objects and arrays as
    /// compact JSON; `None` when absent or null.
    pub fn field(&self, path: &str) -> Option<Cow<'de, str>> {
        self.0.path(path).and_then(Json::as_text)
    }
}

#[cfg(test)]
mod tests;
