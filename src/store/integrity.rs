//! The integrity tables: each digest as intake took it (with its signature until a key settles it), the log files
//! each lists with their hashes, each log file read with its hash, and objects found gone. Written in the batch's
//! transaction with the files' ledger entries, read back as a [`Snapshot`] for `integrity::chain::evaluate`.

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use crate::integrity::chain::{ChainId, DigestCheck, DigestRecord, Location, LogRecord, Snapshot};
use crate::integrity::{DigestIntake, PendingSignature};
use crate::time::Timestamp;

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS integrity_digests (
    name TEXT PRIMARY KEY,
    bucket TEXT NOT NULL,
    key TEXT NOT NULL,
    chain_bucket TEXT NOT NULL,
    chain_prefix TEXT NOT NULL,
    account TEXT NOT NULL,
    region TEXT NOT NULL,
    start_time INTEGER NOT NULL,
    end_time INTEGER NOT NULL,
    previous_bucket TEXT,
    previous_key TEXT,
    -- verified | unverified | unsigned | invalid
    outcome TEXT NOT NULL,
    reason TEXT,
    fingerprint TEXT,
    signed TEXT,
    signature TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS integrity_digests_by_chain
    ON integrity_digests (account, region, chain_bucket, chain_prefix, end_time);
CREATE TABLE IF NOT EXISTS integrity_listed (
    digest TEXT NOT NULL,
    name TEXT NOT NULL,
    bucket TEXT NOT NULL,
    key TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    PRIMARY KEY (digest, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS integrity_logs (
    name TEXT PRIMARY KEY,
    bucket TEXT NOT NULL,
    key TEXT NOT NULL,
    chain_bucket TEXT NOT NULL,
    chain_prefix TEXT NOT NULL,
    account TEXT NOT NULL,
    region TEXT NOT NULL,
    time INTEGER NOT NULL,
    sha256 TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS integrity_logs_by_chain ON integrity_logs (account, region, chain_bucket, chain_prefix, time);
CREATE TABLE IF NOT EXISTS integrity_gone (
    name TEXT PRIMARY KEY,
    bucket TEXT NOT NULL,
    key TEXT NOT NULL
) WITHOUT ROWID;
";

/// What one batch's files gave integrity: digests taken in, log files hashed, objects found gone.
#[derive(Debug, Default)]
pub struct IntegrityRows {
    pub digests: Vec<DigestIntake>,
    pub logs: Vec<LogRecord>,
    pub gone: Vec<Location>,
}

impl IntegrityRows {
    pub fn is_empty(&self) -> bool {
        self.digests.is_empty() && self.logs.is_empty() && self.gone.is_empty()
    }

    pub fn append(&mut self, other: IntegrityRows) {
        self.digests.extend(other.digests);
        self.logs.extend(other.logs);
        self.gone.extend(other.gone);
    }
}

fn outcome(check: &DigestCheck) -> (&'static str, Option<&str>) {
    match check {
        DigestCheck::Verified => ("verified", None),
        DigestCheck::Unverified => ("unverified", None),
        DigestCheck::Unsigned => ("unsigned", None),
        DigestCheck::Invalid(reason) => ("invalid", Some(reason)),
    }
}

/// Writes a batch's rows. A file read again (a new version of the object) replaces what was stored for its name:
/// the newest content is what is checked.
pub fn write(tx: &Transaction<'_>, rows: &IntegrityRows) -> rusqlite::Result<()> {
    let mut digest = tx.prepare_cached(
        "INSERT OR REPLACE INTO integrity_digests (name, bucket, key, chain_bucket, chain_prefix, account, region,
             start_time, end_time, previous_bucket, previous_key, outcome, reason, fingerprint, signed, signature)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
    )?;
    let mut forget_listed = tx.prepare_cached("DELETE FROM integrity_listed WHERE digest = ?1")?;
    let mut listed = tx.prepare_cached(
        "INSERT OR REPLACE INTO integrity_listed (digest, name, bucket, key, sha256) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for DigestIntake { record: d, pending } in &rows.digests {
        let invalid = matches!(d.check, DigestCheck::Invalid(_));
        // Nothing is left to check on an invalid digest: no signature kept, and (below) no list.
        let pending = pending.as_ref().filter(|_| !invalid);
        let (outcome, reason) = outcome(&d.check);
        let name = d.location.name();
        digest.execute(params![
            name,
            d.location.bucket,
            d.location.key,
            d.chain.bucket,
            d.chain.prefix,
            d.chain.account,
            d.chain.region,
            d.start_time,
            d.end_time,
            d.previous.as_ref().map(|p| &p.bucket),
            d.previous.as_ref().map(|p| &p.key),
            outcome,
            reason,
            pending.map(|p| &p.fingerprint),
            pending.map(|p| &p.signed),
            pending.map(|p| &p.signature),
        ])?;
        forget_listed.execute([name])?;
        // What an invalid digest lists is never used: anyone can write digests listing 80,000 entries each.
        if invalid {
            continue;
        }
        for (log, hash) in &d.log_files {
            listed.execute(params![name, log.name(), log.bucket, log.key, hash])?;
        }
    }
    let mut log = tx.prepare_cached(
        "INSERT OR REPLACE INTO integrity_logs (name, bucket, key, chain_bucket, chain_prefix, account, region, time,
             sha256) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    for l in &rows.logs {
        let c = &l.chain;
        log.execute(params![
            l.location.name(),
            l.location.bucket,
            l.location.key,
            c.bucket,
            c.prefix,
            c.account,
            c.region,
            l.time,
            l.sha256
        ])?;
    }
    let mut gone =
        tx.prepare_cached("INSERT OR REPLACE INTO integrity_gone (name, bucket, key) VALUES (?1, ?2, ?3)")?;
    for g in &rows.gone {
        gone.execute(params![g.name(), g.bucket, g.key])?;
    }
    Ok(())
}

/// The digests whose signature waits for its key: name, region, end time and signature.
pub fn unverified(
    conn: &Connection,
    after: &str,
    limit: usize,
) -> rusqlite::Result<Vec<(String, String, Timestamp, PendingSignature)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT name, region, end_time, bucket, key, fingerprint, signed, signature FROM integrity_digests
         WHERE outcome = 'unverified' AND name > ?1 ORDER BY name LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![after, limit as i64], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Timestamp>(2)?,
            PendingSignature {
                found: Location { bucket: r.get(3)?, key: r.get(4)? },
                fingerprint: r.get::<_, Option<String>>(5)?.unwrap_or_default(),
                signed: r.get::<_, Option<String>>(6)?.unwrap_or_default(),
                signature: r.get::<_, Option<String>>(7)?.unwrap_or_default(),
            },
        ))
    })?;
    rows.collect()
}

/// The delivery time of the newest log file read: the record's own clock.
pub fn newest_log_time(conn: &Connection) -> rusqlite::Result<Option<Timestamp>> {
    conn.query_row("SELECT max(time) FROM integrity_logs", [], |r| r.get(0))
}

/// Records how a digest's signature check came out (`Verified` or `Invalid`). The signature is no longer needed,
/// and an invalid digest's list never is.
pub fn settle(conn: &Connection, name: &str, check: &DigestCheck) -> rusqlite::Result<()> {
    let (outcome, reason) = outcome(check);
    let settled = conn.execute(
        "UPDATE integrity_digests SET outcome = ?2, reason = ?3, signed = NULL, signature = NULL
         WHERE name = ?1 AND outcome = 'unverified'",
        params![name, outcome, reason],
    )?;
    if settled > 0 && matches!(check, DigestCheck::Invalid(_)) {
        conn.execute("DELETE FROM integrity_listed WHERE digest = ?1", [name])?;
    }
    Ok(())
}

/// Which part of the record a snapshot holds: files of `[since, until)` (by digest end time and log time), of
/// these accounts and regions (empty: all).
#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    pub accounts: Vec<String>,
    pub regions: Vec<String>,
    /// At most this many files nothing vouches for, oldest first (`None`: all): invalid digests, then log files
    /// that no other digest lists. The rest are only counted ([`Snapshot::unexamined_digests`],
    /// [`Snapshot::unexamined_logs`]). Valid digests, and the files they list, are bounded by what AWS delivers.
    pub max_untrusted: Option<usize>,
}

/// Log files delivered before a digest's start may still be listed by it: a day of them is read before `since`.
const LOG_MARGIN_SECS: i64 = 86_400;

/// Calls `each` with every place (bucket, prefix, account, region) the integrity tables hold, of the accounts and
/// regions `scope` names: those with log files, then those with digests only, each in index order. Streamed, not
/// collected: anyone who can write to a bucket makes a place of every prefix.
pub fn for_each_place(
    conn: &Connection,
    scope: &Scope,
    mut each: impl FnMut(ChainId) -> rusqlite::Result<()>,
) -> rusqlite::Result<()> {
    // DISTINCT over an index's leading columns is read off the index, with no temporary table (which would be in
    // memory: the store sets temp_store = MEMORY).
    const WITH_LOGS: &str = "SELECT DISTINCT account, region, chain_bucket, chain_prefix FROM integrity_logs";
    const DIGESTS_ONLY: &str = "SELECT DISTINCT account, region, chain_bucket, chain_prefix FROM integrity_digests d
         WHERE NOT EXISTS (SELECT 1 FROM integrity_logs l WHERE l.account = d.account AND l.region = d.region
                           AND l.chain_bucket = d.chain_bucket AND l.chain_prefix = d.chain_prefix)";
    let keep = |c: &ChainId| {
        (scope.accounts.is_empty() || scope.accounts.contains(&c.account))
            && (scope.regions.is_empty() || scope.regions.contains(&c.region))
    };
    for sql in [WITH_LOGS, DIGESTS_ONLY] {
        let mut stmt = conn.prepare(sql)?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let place = ChainId { account: r.get(0)?, region: r.get(1)?, bucket: r.get(2)?, prefix: r.get(3)? };
            if keep(&place) {
                each(place)?;
            }
        }
    }
    Ok(())
}

/// Reads what the integrity tables hold for `chain` within `scope`'s times.
pub fn snapshot(conn: &Connection, scope: &Scope, chain: &ChainId) -> rusqlite::Result<Snapshot> {
    let since = scope.since.unwrap_or(i64::MIN);
    let until = scope.until.unwrap_or(i64::MAX);
    let ChainId { bucket, prefix, account, region } = chain;
    let mut out = Snapshot::default();
    let mut listed_of = conn.prepare_cached("SELECT bucket, key, sha256 FROM integrity_listed WHERE digest = ?1")?;
    let mut stmt = conn.prepare_cached(
        "SELECT name, bucket, key, start_time, end_time, previous_bucket, previous_key, outcome, reason
         FROM integrity_digests
         WHERE account = ?1 AND region = ?2 AND chain_bucket = ?3 AND chain_prefix = ?4
           AND end_time > ?5 AND start_time < ?6
         ORDER BY end_time, name",
    )?;
    // Whoever can write to the bucket decides how many digests fail their checks and how many files no digest
    // lists: those are held up to the cap, the rest streamed past and counted, so that a flood of objects cannot
    // exhaust memory or raise an alert each.
    let mut untrusted_room = scope.max_untrusted.unwrap_or(usize::MAX);
    let mut rows = stmt.query(params![account, region, bucket, prefix, since, until])?;
    while let Some(r) = rows.next()? {
        let name: String = r.get(0)?;
        let check = match r.get::<_, String>(7)?.as_str() {
            "verified" => DigestCheck::Verified,
            "unverified" => DigestCheck::Unverified,
            "unsigned" => DigestCheck::Unsigned,
            _ if untrusted_room == 0 => {
                out.unexamined_digests += 1;
                continue;
            }
            _ => {
                untrusted_room -= 1;
                DigestCheck::Invalid(r.get::<_, Option<String>>(8)?.unwrap_or_default())
            }
        };
        let previous = match (r.get::<_, Option<String>>(5)?, r.get::<_, Option<String>>(6)?) {
            (Some(bucket), Some(key)) => Some(Location { bucket, key }),
            _ => None,
        };
        // What an invalid digest lists is never used, and anyone can write one listing a million entries.
        let log_files = match check {
            DigestCheck::Invalid(_) => Vec::new(),
            _ => listed_of
                .query_map([&name], |l| Ok((Location { bucket: l.get(0)?, key: l.get(1)? }, l.get::<_, String>(2)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?,
        };
        out.digests.push(DigestRecord {
            location: Location { bucket: r.get(1)?, key: r.get(2)? },
            chain: chain.clone(),
            start_time: r.get(3)?,
            end_time: r.get(4)?,
            previous,
            log_files,
            check,
        });
    }
    let listed = out.listed_names();
    let (mut logs, mut unexamined) = (Vec::new(), 0);
    let mut stmt = conn.prepare_cached(
        "SELECT bucket, key, time, sha256 FROM integrity_logs
         WHERE account = ?1 AND region = ?2 AND chain_bucket = ?3 AND chain_prefix = ?4 AND time >= ?5 AND time < ?6
         ORDER BY time, name",
    )?;
    let mut rows =
        stmt.query(params![account, region, bucket, prefix, since.saturating_sub(LOG_MARGIN_SECS), until])?;
    while let Some(r) = rows.next()? {
        let key = r.get_ref(1)?.as_str()?;
        if !listed.contains(crate::integrity::chain::file_name(key)) {
            if untrusted_room == 0 {
                unexamined += 1;
                continue;
            }
            untrusted_room -= 1;
        }
        logs.push(LogRecord {
            location: Location { bucket: r.get(0)?, key: r.get(1)? },
            chain: chain.clone(),
            time: r.get(2)?,
            sha256: r.get(3)?,
        });
    }
    // Objects a notification named that were gone when fetched: only those a digest lists say anything, and
    // anyone can make many (written, then deleted before the fetch), so they are looked up by name, not scanned.
    let mut gone = Vec::new();
    let mut stmt = conn.prepare_cached("SELECT bucket, key FROM integrity_gone WHERE name = ?1")?;
    for name in &listed {
        let found = stmt.query_row([name], |r| Ok(Location { bucket: r.get(0)?, key: r.get(1)? })).optional()?;
        gone.extend(found);
    }
    (out.logs, out.unexamined_logs, out.gone) = (logs, unexamined, gone);
    Ok(out)
}

/// The end time of the newest digest verified (or, unsigned, taken) per chain.
pub fn newest_valid(conn: &Connection) -> rusqlite::Result<Vec<Timestamp>> {
    let mut stmt = conn.prepare(
        "SELECT max(end_time) FROM integrity_digests WHERE outcome IN ('verified', 'unsigned')
         GROUP BY chain_bucket, chain_prefix, account, region",
    )?;
    stmt.query_map([], |r| r.get(0))?.collect()
}

/// A digest row as tests write it: `name` (also its key) in bucket `b`, at `prefix` of `account` and `region`,
/// covering the hour before `end`; an `unverified` one waits with `fingerprint` and a signature to check.
#[cfg(test)]
pub(crate) struct TestDigest<'a> {
    pub name: &'a str,
    pub prefix: &'a str,
    pub account: &'a str,
    pub region: &'a str,
    pub end: Timestamp,
    pub outcome: &'a str,
    pub fingerprint: &'a str,
}

#[cfg(test)]
impl Default for TestDigest<'_> {
    fn default() -> Self {
        TestDigest {
            name: "d",
            prefix: "AWSLogs/",
            account: "111122223333",
            region: "us-east-1",
            end: 1_790_816_400,
            outcome: "verified",
            fingerprint: "fp",
        }
    }
}

#[cfg(test)]
impl TestDigest<'_> {
    pub(crate) fn insert(&self, conn: &Connection) {
        let waits = self.outcome == "unverified";
        conn.execute(
            "INSERT INTO integrity_digests VALUES (?1, 'b', ?1, 'b', ?2, ?3, ?4, ?5, ?6, NULL, NULL, ?7, NULL, ?8, ?9,
                 ?10)",
            params![
                self.name,
                self.prefix,
                self.account,
                self.region,
                self.end - 3600,
                self.end,
                self.outcome,
                waits.then_some(self.fingerprint),
                waits.then_some("signed"),
                waits.then_some("00"),
            ],
        )
        .unwrap();
    }
}
