//! A worker: reads, decodes and parses one file after another, folding each event into its unit's state and
//! matching the rules on it in the same pass, within a memory budget per file.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use crate::alert::UnitAlerts;
use crate::config::Limits;
use crate::decode::{DecodeError, decode_into};
use crate::detect::ruleset::{MatchScratch, RuleSet};
use crate::integrity::chain::{self, ChainId, LogRecord};
use crate::layout::cloudtrail_digest_name;
use crate::parse::{ParseError, Parser, RecordCounts};
use crate::source::fetch::FetchError;
use crate::source::{FileJob, Location};
use crate::state::{Delta, Scratch};
use crate::store::integrity::IntegrityRows;

/// Why a file was not applied. `kind()` is the bounded metric label.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: file size {size} exceeds the cap of {cap} bytes")]
    TooLarge { path: String, size: u64, cap: u64 },
    #[error("{path}: {source}")]
    Decode { path: String, source: DecodeError },
    #[error("{path}: {source}")]
    Parse { path: String, source: ParseError },
    #[error(transparent)]
    Fetch(FetchError),
    #[error(
        "{path}: decoding and parsing it would take at least {need} bytes, over the worker's budget of {budget} \
         (pipeline.max_worker_memory_bytes)"
    )]
    OverMemoryBudget { path: String, need: u64, budget: u64 },
}

impl FileError {
    pub fn kind(&self) -> &'static str {
        match self {
            FileError::Read { .. } => "read_error",
            FileError::TooLarge { .. } => "too_large",
            FileError::Decode { source, .. } => source.kind(),
            FileError::Parse { source, .. } => source.kind(),
            FileError::Fetch(source) => source.kind(),
            FileError::OverMemoryBudget { .. } => "over_memory_budget",
        }
    }
}

/// Why bytes could not be folded into a delta, before the file's name is attached.
#[derive(Debug)]
pub enum BytesError {
    Decode(DecodeError),
    Parse(ParseError),
    /// Decoding or parsing would take the worker past its memory budget: `need` bytes at least.
    OverBudget {
        need: u64,
    },
}

/// One worker's reusable buffers: after warm-up, a file's processing allocates only for keys new to its unit.
#[derive(Default)]
pub struct Worker {
    parser: Parser,
    raw: Vec<u8>,
    json: Vec<u8>,
    scratch: Scratch,
    /// Rules evaluated on every event in the same pass; their matches are folded into the delta's alerts.
    rules: Option<Arc<RuleSet>>,
    match_scratch: MatchScratch,
    /// Log file validation is on: log files in a chain are hashed as they are decoded, digests taken in.
    integrity: bool,
    /// Set by `process_raw` for the next `process_bytes`: hash the decoded bytes into `sha256`.
    hash_next: bool,
    sha256: Option<String>,
}

/// What a worker folds events into: the state aggregate, the rule matches among the events (handed to the
/// alert planner, apart from the state), and what log file validation takes from the files.
#[derive(Debug, Default)]
pub struct Folded {
    pub delta: Delta,
    pub alerts: UnitAlerts,
    pub integrity: IntegrityRows,
}

/// Several files folded into one delta by one worker; committed as a whole, with a ledger entry per file.
///
/// Folding a few dozen files before handing them over, instead of one, means the allocations for a principal's
/// strings and maps are paid once per unit rather than once per file, and the committer merges fewer deltas.
#[derive(Default)]
pub struct Unit {
    pub folded: Folded,
    /// The unit's files with their record counts and newest event time.
    pub files: Vec<(FileJob, RecordCounts)>,
    pub counts: RecordCounts,
    pub read_bytes: u64,
    pub decoded_bytes: u64,
}

impl Unit {
    /// Nothing to commit: no file, and no integrity record (a rejected log file's hash is one).
    pub fn is_empty(&self) -> bool {
        self.files.is_empty() && self.folded.integrity.is_empty()
    }
}

/// What workers hand to the committer.
pub enum Message {
    /// Boxed: a unit is several hundred bytes, a rejection a few dozen, and a message is moved through a channel.
    Unit(Box<Unit>),
    Rejected {
        job: FileJob,
        error: FileError,
        read_bytes: u64,
    },
}

impl Worker {
    /// A worker that also evaluates `rules` on every event, folding matches by each rule's dedup window.
    pub fn with_rules(rules: Option<Arc<RuleSet>>) -> Worker {
        Worker { rules, ..Worker::default() }
    }

    /// Turns log file validation on: digests are taken in rather than rejected, and log files are hashed.
    pub fn with_integrity(mut self, on: bool) -> Worker {
        self.integrity = on;
        self
    }

    /// Decodes and parses one file's bytes, folding its events into `delta`.
    ///
    /// On error nothing was folded in: simd-json validates the whole document before the first record is visited,
    /// and a document that yields records is a log file.
    pub fn process_bytes(
        &mut self,
        input: &[u8],
        limits: Limits,
        out: &mut Folded,
    ) -> Result<RecordCounts, BytesError> {
        self.decode_and_budget(input, limits)?;
        let len = self.json.len();
        // In the decode pass: the decoded bytes are hashed while they are at hand, before parsing unescapes
        // strings in place.
        self.sha256 = std::mem::take(&mut self.hash_next).then(|| crate::integrity::sha256_hex(&self.json));
        Parser::pad(&mut self.json);
        let scratch = &mut self.scratch;
        let rules = self.rules.as_deref();
        let MatchScratch { candidates, spare, group_key } = &mut self.match_scratch;
        let mut folded = 0u64;
        let Folded { delta, alerts, .. } = out;
        let res = self.parser.parse(&mut self.json, len, &mut |event, record| {
            folded += 1;
            delta.apply(event, scratch);
            if let Some(rules) = rules {
                rules.evaluate(event, record, candidates, &mut |m| {
                    alerts.fold_view(rules, m, spare, group_key);
                });
            }
        });
        debug_assert!(res.is_ok() || folded == 0, "a rejected file folded {folded} events");
        match res {
            // simd-json's position is sometimes 0, and it has unescaped strings in place by then: serde_json says
            // where the fault is, on a fresh decode (only for files that are rejected anyway).
            Err(ParseError::InvalidJson(described)) => {
                let located = decode_into(input, &mut self.json, limits.max_decoded_bytes)
                    .ok()
                    .and_then(|_| serde_json::from_slice::<serde::de::IgnoredAny>(&self.json).err())
                    .map(|err| err.to_string());
                Err(BytesError::Parse(ParseError::InvalidJson(located.unwrap_or(described))))
            }
            res => res.map_err(BytesError::Parse),
        }
    }

    /// Decodes `input` into the JSON buffer, within the worker's memory budget: the decoded document takes its size
    /// twice (the buffer, and simd-json's string buffer), and parsing takes its tape and indexes, 28 bytes per
    /// structural position: a few per kilobyte of CloudTrail, but one per byte for `[0,0,0,…]`, which no decoded
    /// size cap alone can bound. The positions are counted before parsing when the size alone cannot rule out going
    /// over; buffers a larger file left behind are let go of first.
    fn decode_and_budget(&mut self, input: &[u8], limits: Limits) -> Result<(), BytesError> {
        let budget = usize::try_from(limits.max_worker_memory_bytes).unwrap_or(usize::MAX);
        let over = |need: usize| BytesError::OverBudget { need: need as u64 };
        // The input (the file as read, or as fetched) is held until the file is done.
        let held = input.len();
        let cap = limits.max_decoded_bytes.min((budget.saturating_sub(held) / 2) as u64);
        match decode_into(input, &mut self.json, cap) {
            Ok(_) => {}
            Err(DecodeError::TooLarge { .. }) if cap < limits.max_decoded_bytes => {
                return Err(over(held + 2 * (cap as usize + 1)));
            }
            Err(err) => return Err(BytesError::Decode(err)),
        }
        let len = self.json.len();
        let json_buffer = self.json.capacity().max(len + crate::parse::PADDING);
        let need = |parser: &Parser, structurals| held + json_buffer + parser.footprint(len, structurals);
        // At most one position per byte.
        if need(&self.parser, len) <= budget {
            return Ok(());
        }
        let structurals = crate::parse::structural_count(&self.json);
        if need(&self.parser, structurals) > budget {
            self.parser.release();
        }
        match need(&self.parser, structurals) {
            n if n > budget => Err(over(n)),
            _ => Ok(()),
        }
    }

    /// Lets go of the buffers a large file grew (over an eighth of the budget), so that what a worker holds
    /// between files stays small and the next file's budget check counts what it will use.
    fn shrink(&mut self, limits: Limits) {
        let large = usize::try_from(limits.max_worker_memory_bytes / 8).unwrap_or(usize::MAX);
        for buffer in [&mut self.raw, &mut self.json] {
            if buffer.capacity() > large {
                *buffer = Vec::new();
            }
        }
        if self.parser.retained() > large {
            self.parser.release();
        }
    }

    /// Reads, decodes and parses one local file into `out`; returns the read size with the outcome.
    pub fn process_file(
        &mut self,
        job: &FileJob,
        limits: Limits,
        out: &mut Folded,
    ) -> (u64, Result<RecordCounts, FileError>) {
        let path = || job.location.to_string();
        let Some(local) = job.local_path() else {
            return (0, Err(FileError::Read { path: path(), source: std::io::Error::other("not a local file") }));
        };
        if let Err(source) = self.read(local, limits) {
            return (0, Err(source.with_path(path())));
        }
        // A local digest's signature, when it was kept beside it (`<file>.signature`, the hex of the object's
        // `signature` metadata).
        let signature = match self.integrity && cloudtrail_digest_name(&local.to_string_lossy()).is_some() {
            true => read_signature_sidecar(local),
            false => None,
        };
        self.process_raw(job, signature.as_deref(), limits, out)
    }

    /// Decodes and parses bytes fetched elsewhere; the buffer is kept for reuse.
    /// A digest's signature comes with it, from the object's metadata.
    pub fn process_fetched(
        &mut self,
        job: &FileJob,
        bytes: Vec<u8>,
        signature: Option<&str>,
        limits: Limits,
        out: &mut Folded,
    ) -> (u64, Result<RecordCounts, FileError>) {
        self.raw = bytes;
        self.process_raw(job, signature, limits, out)
    }

    fn process_raw(
        &mut self,
        job: &FileJob,
        signature: Option<&str>,
        limits: Limits,
        out: &mut Folded,
    ) -> (u64, Result<RecordCounts, FileError>) {
        let path = || job.location.to_string();
        let read_bytes = self.raw.len() as u64;
        let key = match &job.location {
            Location::Local(path) => path.to_string_lossy(),
            Location::S3 { key, .. } => key.into(),
        };
        let delivered = crate::layout::delivery_time(&key);
        // With validation on: a digest is taken in instead, and a log file in a chain is hashed.
        let mut log_chain = None;
        if self.integrity {
            let found = match &job.location {
                Location::Local(_) => chain::Location { bucket: String::new(), key: key.into_owned() },
                Location::S3 { bucket, key } => chain::Location { bucket: bucket.clone(), key: key.clone() },
            };
            if cloudtrail_digest_name(found.name()).is_some() {
                let taken = self.take_digest(found, signature, limits, out);
                return (read_bytes, taken.map_err(|e| e.named(path(), limits)));
            }
            log_chain = ChainId::of(&found.bucket, &found.key).map(|chain| (found, chain));
        }
        self.hash_next = log_chain.is_some();
        self.sha256 = None;
        self.parser.set_plausible_times(crate::parse::plausible_event_times(delivered, crate::time::now()));
        let raw = std::mem::take(&mut self.raw);
        let res = self.process_bytes(&raw, limits, out);
        self.raw = raw;
        self.shrink(limits);
        self.hash_next = false;
        // Kept when the content decoded, also if it does not parse: a log file rewritten into something that is
        // not a log file is altered, not missing. (A rejected file's hash commits with the unit's next files.)
        if let (Some((location, chain)), Some(sha256)) = (log_chain, self.sha256.take()) {
            out.integrity.logs.push(LogRecord { location, chain, time: delivered.unwrap_or(0), sha256 });
        }
        (read_bytes, res.map_err(|err| err.named(path(), limits)))
    }

    /// Takes a digest file in: decoded within the budget, its record (and signature to check) added to `out`.
    fn take_digest(
        &mut self,
        found: chain::Location,
        signature: Option<&str>,
        limits: Limits,
        out: &mut Folded,
    ) -> Result<RecordCounts, BytesError> {
        let raw = std::mem::take(&mut self.raw);
        let decoded = self.decode_and_budget(&raw, limits);
        self.raw = raw;
        decoded?;
        let intake = crate::integrity::intake_digest(&self.json, found, signature);
        self.shrink(limits);
        match intake {
            Some(intake) => {
                out.integrity.digests.push(intake);
                Ok(RecordCounts::default())
            }
            None => Err(BytesError::Parse(ParseError::Digest)),
        }
    }

    /// The bytes decoded by the last `process_*` call.
    pub fn decoded_len(&self) -> u64 {
        self.json.len().saturating_sub(crate::parse::PADDING) as u64
    }

    fn read(&mut self, path: &Path, limits: Limits) -> Result<(), FileError> {
        let read_err = |source| FileError::Read { path: String::new(), source };
        let file = std::fs::File::open(path).map_err(read_err)?;
        let size = file.metadata().map_err(read_err)?.len();
        if size > limits.max_file_bytes {
            return Err(FileError::TooLarge { path: String::new(), size, cap: limits.max_file_bytes });
        }
        // Held while it is decoded and parsed, which take at least its size again.
        if size > limits.max_worker_memory_bytes / 2 {
            let budget = limits.max_worker_memory_bytes;
            return Err(FileError::OverMemoryBudget { path: String::new(), need: 2 * size, budget });
        }
        self.raw.clear();
        // The file may grow while we read; the cap holds regardless.
        file.take(limits.max_file_bytes + 1).read_to_end(&mut self.raw).map_err(read_err)?;
        if self.raw.len() as u64 > limits.max_file_bytes {
            return Err(FileError::TooLarge {
                path: String::new(),
                size: self.raw.len() as u64,
                cap: limits.max_file_bytes,
            });
        }
        Ok(())
    }
}

impl BytesError {
    fn named(self, path: String, limits: Limits) -> FileError {
        match self {
            BytesError::Decode(source) => FileError::Decode { path, source },
            BytesError::Parse(source) => FileError::Parse { path, source },
            BytesError::OverBudget { need } => {
                FileError::OverMemoryBudget { path, need, budget: limits.max_worker_memory_bytes }
            }
        }
    }
}

/// The hex signature kept beside a local digest file, if any (a few hundred bytes; more is not a signature).
fn read_signature_sidecar(digest: &Path) -> Option<String> {
    let mut path = digest.as_os_str().to_owned();
    path.push(".signature");
    let mut text = String::new();
    std::fs::File::open(path).ok()?.take(4096).read_to_string(&mut text).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

impl FileError {
    fn with_path(self, path: String) -> FileError {
        match self {
            FileError::Read { source, .. } => FileError::Read { path, source },
            FileError::TooLarge { size, cap, .. } => FileError::TooLarge { path, size, cap },
            FileError::Decode { source, .. } => FileError::Decode { path, source },
            FileError::Parse { source, .. } => FileError::Parse { path, source },
            FileError::Fetch(source) => FileError::Fetch(source),
            FileError::OverMemoryBudget { need, budget, .. } => FileError::OverMemoryBudget { path, need, budget },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Invalid JSON is reported where it is, by line and column of the decoded document.
    #[test]
    fn invalid_json_is_located() {
        let cases = [
            (&br#"{"Records":[{"a":1},{"b":2},,]}"#[..], "expected value at line 1 column 29"),
            (br#"{"Records":[{"a":1}, {"b" 2}]}"#, "expected `:` at line 1 column 27"),
            (
                b"{\"Records\":[{\"a\":\"x\x01y\"}]}",
                "control character (\\u0000-\\u001F) found while parsing a string at line 1 column 19",
            ),
            (
                b"{\"Records\": [\n {\"eventTime\": \"2026-10-01T00:00:00Z\" ] }",
                "expected `,` or `}` at line 2 column 39",
            ),
        ];
        let limits = Limits { max_file_bytes: 1 << 20, max_decoded_bytes: 1 << 20, max_worker_memory_bytes: 64 << 20 };
        for (json, message) in cases {
            let err = Worker::default().process_bytes(json, limits, &mut Folded::default()).unwrap_err();
            match err {
                BytesError::Parse(ParseError::InvalidJson(got)) => assert_eq!(got, message),
                other => panic!("{other:?}"),
            }
        }
    }
}
