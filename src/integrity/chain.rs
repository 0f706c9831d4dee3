//! What a set of digests and log files says about a trail's integrity: each digest's listed files against the
//! files seen, the chain of digests from link to link and hour to hour, and a chain whose digests stop while its
//! log files go on. Judged by the files' own times (the newest log file seen in a chain), never the clock, so a
//! backfill of history raises nothing for a chain whose digests run to its end.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::time::Timestamp;

/// An S3 object (or a local file, with an empty bucket).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Location {
    pub bucket: String,
    pub key: String,
}

impl Location {
    /// The object's file name: how a digest's entry and a log file are matched, since CloudTrail never gives two
    /// files one name and a local copy keeps only its name.
    pub fn name(&self) -> &str {
        file_name(&self.key)
    }
}

/// The last segment of a key or path.
pub fn file_name(key: &str) -> &str {
    key.rsplit(['/', '\\']).next().unwrap_or(key)
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.bucket.is_empty() {
            true => write!(f, "{}", self.key),
            false => write!(f, "s3://{}/{}", self.bucket, self.key),
        }
    }
}

/// Where a trail's files for one account and region go: a bucket and prefix. Usually one trail's; when several
/// trails write to one place, their log files sit side by side (nothing in a log file names its trail) and each
/// trail's digests form a chain of their own ([`DigestRecord::trail`]), so a place is judged as a whole.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChainId {
    pub bucket: String,
    pub prefix: String,
    pub account: String,
    pub region: String,
}

impl ChainId {
    /// The chain a log or digest file at `bucket`/`key` belongs to: the bucket, the prefix before `AWSLogs/`
    /// (with the organization id, if any), the account and the region of CloudTrail's layout. `None` for keys
    /// outside it, and for Insights files, which digests do not list.
    ///
    /// A local file (empty bucket) belongs to the chain of the account and region its name gives, wherever it
    /// sits: copies of a trail's files keep their names, not always their directories.
    pub fn of(bucket: &str, key: &str) -> Option<ChainId> {
        if bucket.is_empty() {
            let mut parts = file_name(key).split('_');
            let (account, kind, region) = (parts.next()?, parts.next()?, parts.next()?);
            let ok = account.len() == 12
                && account.bytes().all(|b| b.is_ascii_digit())
                && matches!(kind, "CloudTrail" | "CloudTrail-Digest")
                && !region.is_empty();
            return ok.then(|| ChainId {
                bucket: String::new(),
                prefix: String::new(),
                account: account.to_owned(),
                region: region.to_owned(),
            });
        }
        let layout = crate::layout::parse_key(key)?;
        if !matches!(layout.kind, "CloudTrail" | "CloudTrail-Digest") {
            return None;
        }
        let prefix = &key[..key.find("AWSLogs/")?];
        let prefix = match layout.organization {
            Some(org) => format!("{prefix}AWSLogs/{org}/"),
            None => format!("{prefix}AWSLogs/"),
        };
        Some(ChainId {
            bucket: bucket.to_owned(),
            prefix,
            account: layout.account.to_owned(),
            region: layout.region.to_owned(),
        })
    }
}

impl DigestRecord {
    /// The trail whose chain the digest is in, from its file name (empty if the name does not give one).
    pub fn trail(&self) -> &str {
        crate::layout::cloudtrail_digest_name(self.location.name()).map_or("", |d| d.trail)
    }

    /// The record of a parsed digest found at `location`, checked as `check` says. `None` (a format problem the
    /// caller reports as `digest-invalid`) when its times do not parse or its key is outside CloudTrail's layout.
    pub fn of(digest: &super::Digest, location: Location, check: DigestCheck) -> Option<DigestRecord> {
        let chain = ChainId::of(&location.bucket, &location.key)?;
        let previous = match (&digest.previous_digest_s3_bucket, &digest.previous_digest_s3_object) {
            (Some(bucket), Some(key)) => Some(Location { bucket: bucket.clone(), key: key.clone() }),
            _ => None,
        };
        Some(DigestRecord {
            location,
            chain,
            start_time: crate::time::parse_rfc3339(&digest.digest_start_time)?,
            end_time: crate::time::parse_rfc3339(&digest.digest_end_time)?,
            previous,
            log_files: digest
                .log_files
                .iter()
                .map(|f| (Location { bucket: f.s3_bucket.clone(), key: f.s3_object.clone() }, f.hash_value.clone()))
                .collect(),
            check,
        })
    }
}

/// A digest as intake found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestRecord {
    pub location: Location,
    pub chain: ChainId,
    pub start_time: Timestamp,
    pub end_time: Timestamp,
    /// The previous digest it links to (`None` for a chain's first).
    pub previous: Option<Location>,
    /// The log files it lists, with the SHA-256 (hex) of each one's uncompressed content.
    pub log_files: Vec<(Location, String)>,
    pub check: DigestCheck,
}

/// How far a digest could be checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DigestCheck {
    /// Signature verified.
    Verified,
    /// A signature came with it and its bytes passed their checks; its key was not looked up yet. Trusted until
    /// then, so that a key fetched late raises nothing.
    Unverified,
    /// No signature to check (a local file without its sidecar): hashes and links are still used.
    Unsigned,
    /// Bad signature, unknown key, moved object or bad format: the reason. Its contents are not trusted.
    Invalid(String),
}

/// A log file as intake read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub location: Location,
    pub chain: ChainId,
    /// Its delivery time (from its name).
    pub time: Timestamp,
    /// SHA-256 (hex) of its uncompressed content.
    pub sha256: String,
}

/// What is known: digests, log files read, and objects found gone (`NoSuchKey`).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub digests: Vec<DigestRecord>,
    pub logs: Vec<LogRecord>,
    pub gone: Vec<Location>,
    /// Log files read that no digest lists, and digests that failed their checks, beyond those the snapshot was
    /// allowed to hold: counted, not examined.
    pub unexamined_logs: u64,
    pub unexamined_digests: u64,
}

impl Snapshot {
    /// The names of the log files its trusted digests list (an invalid digest's list is never used).
    pub fn listed_names(&self) -> HashSet<&str> {
        self.digests
            .iter()
            .filter(|d| !matches!(d.check, DigestCheck::Invalid(_)))
            .flat_map(|d| d.log_files.iter().map(|(l, _)| l.name()))
            .collect()
    }
}

/// One integrity problem. Its [`Finding::subject`] is stable, so the same objects give the same finding.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Finding {
    /// Listed in `digest`, never seen by the time the chain's newer files were, or gone.
    LogFileMissing { log: Location, digest: Location },
    /// Its content's hash is not what `digest` lists.
    LogFileAltered { log: Location, digest: Location, listed: String, found: String },
    /// Delivered in an hour whose digest does not list it.
    LogFileUnlisted { log: Location, digest: Location },
    /// A digest the chain needs is not there: the link `referenced_by` names, or the hours between two digests.
    DigestMissing {
        chain: ChainId,
        missing: Option<Location>,
        after: Location,
        before: Location,
        from: Timestamp,
        to: Timestamp,
    },
    /// The digest could not be trusted.
    DigestInvalid { digest: Location, reason: String },
    /// Log files keep coming after the chain's last digest, past the grace period.
    DigestChainEnded { chain: ChainId, last_digest: Location, newest_log: Location },
}

impl Finding {
    /// The rule id the alert carries.
    pub fn rule(&self) -> &'static str {
        use crate::detect::catalogue as c;
        match self {
            Finding::LogFileMissing { .. } => c::LOG_FILE_MISSING,
            Finding::LogFileAltered { .. } => c::LOG_FILE_ALTERED,
            Finding::LogFileUnlisted { .. } => c::LOG_FILE_UNLISTED,
            Finding::DigestMissing { .. } => c::DIGEST_MISSING,
            Finding::DigestInvalid { .. } => c::DIGEST_INVALID,
            Finding::DigestChainEnded { .. } => c::DIGEST_CHAIN_ENDED,
        }
    }

    /// What the finding is about, stable across replays: the rule and the object keys involved.
    pub fn subject(&self) -> String {
        match self {
            Finding::LogFileMissing { log, .. }
            | Finding::LogFileAltered { log, .. }
            | Finding::LogFileUnlisted { log, .. } => log.to_string(),
            Finding::DigestMissing { after, before, .. } => format!("{after} .. {before}"),
            Finding::DigestInvalid { digest, .. } => digest.to_string(),
            Finding::DigestChainEnded { last_digest, .. } => last_digest.to_string(),
        }
    }
}

/// How long after an hour's end its digest, and the files it lists, may still arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grace {
    pub digest_secs: i64,
}

/// Every finding the snapshot supports, sorted.
pub fn evaluate(snapshot: &Snapshot, grace: Grace) -> Vec<Finding> {
    let mut out = Vec::new();
    let logs: HashMap<&str, &LogRecord> = snapshot.logs.iter().map(|l| (l.location.name(), l)).collect();
    let gone: HashSet<&str> = snapshot.gone.iter().map(Location::name).collect();
    // The newest log file per place: the clock of every chain there.
    let mut newest: HashMap<&ChainId, &LogRecord> = HashMap::new();
    for log in &snapshot.logs {
        let entry = newest.entry(&log.chain).or_insert(log);
        if (log.time, &log.location) > (entry.time, &entry.location) {
            *entry = log;
        }
    }
    // One chain per trail and place.
    let mut chains: BTreeMap<(&ChainId, &str), Vec<&DigestRecord>> = BTreeMap::new();
    for digest in &snapshot.digests {
        if let DigestCheck::Invalid(reason) = &digest.check {
            out.push(Finding::DigestInvalid { digest: digest.location.clone(), reason: reason.clone() });
        }
        // An invalid digest still holds its place in the chain (it is there, just not trusted), so that it is
        // not also reported missing; what it lists is not used.
        chains.entry((&digest.chain, digest.trail())).or_default().push(digest);
    }
    let trusted = |d: &DigestRecord| !matches!(d.check, DigestCheck::Invalid(_));
    let digest_at: HashSet<&str> = snapshot.digests.iter().map(|d| d.location.name()).collect();
    let mut listed: HashSet<&str> = HashSet::new();
    for ((place, _trail), digests) in &mut chains {
        digests.sort_by_key(|d| (d.start_time, d.end_time, &d.location));
        let horizon = newest.get(place).map(|l| l.time);
        let due = |end: Timestamp| horizon.is_some_and(|now| end + grace.digest_secs <= now);
        for digest in digests.iter().filter(|d| trusted(d)) {
            for (log, hash) in &digest.log_files {
                listed.insert(log.name());
                match logs.get(log.name()) {
                    Some(seen) if !seen.sha256.eq_ignore_ascii_case(hash) => out.push(Finding::LogFileAltered {
                        log: log.clone(),
                        digest: digest.location.clone(),
                        listed: hash.clone(),
                        found: seen.sha256.clone(),
                    }),
                    Some(_) => {}
                    None if gone.contains(log.name()) || due(digest.end_time) => {
                        out.push(Finding::LogFileMissing { log: log.clone(), digest: digest.location.clone() })
                    }
                    None => {}
                }
            }
        }
        // Link by link, and hour by hour: two digests deleted in a row leave a link to a missing object and a
        // gap in time that no remaining link names.
        for pair in digests.windows(2) {
            let (earlier, later) = (pair[0], pair[1]);
            // An untrusted digest's link, or a link to one (moved: it is not where the link says), holds nothing
            // to check: the time gap still tells a missing hour.
            let links_trusted = trusted(earlier) && trusted(later);
            let linked_missing = later
                .previous
                .as_ref()
                .filter(|p| links_trusted && !digest_at.contains(p.name()) && p.name() != earlier.location.name());
            if later.start_time > earlier.end_time || linked_missing.is_some() {
                out.push(Finding::DigestMissing {
                    chain: (*place).clone(),
                    missing: linked_missing.cloned(),
                    after: earlier.location.clone(),
                    before: later.location.clone(),
                    from: earlier.end_time,
                    to: later.start_time,
                });
            }
        }
        if let (Some(last), Some(newest)) = (digests.last(), newest.get(place))
            && last.end_time + grace.digest_secs <= newest.time
        {
            out.push(Finding::DigestChainEnded {
                chain: (*place).clone(),
                last_digest: last.location.clone(),
                newest_log: newest.location.clone(),
            });
        }
    }
    // A file delivered within an hour that every trail writing there has a digest for, listed by none of them,
    // was put there by someone else. Until then it may be the file of a trail whose digest is still on its way,
    // or whose digests stopped (reported as ended: its files cannot be told from injected ones).
    for log in snapshot.logs.iter().filter(|l| !listed.contains(l.location.name())) {
        let mut covering = None;
        let mut every_trail_vouches = true;
        for (_, digests) in chains.iter().filter(|((place, _), _)| *place == &log.chain) {
            match digests.iter().find(|d| d.start_time <= log.time && log.time < d.end_time) {
                Some(digest) if trusted(digest) => covering = covering.or(Some(digest)),
                // A trail that began writing after the file was delivered has nothing to say about it.
                None if log.time < digests[0].start_time => {}
                _ => every_trail_vouches = false,
            }
        }
        if let Some(digest) = covering.filter(|_| every_trail_vouches) {
            out.push(Finding::LogFileUnlisted { log: log.location.clone(), digest: digest.location.clone() });
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests;
