//! Log file validation at the edge: settles digest signatures with the public keys (files, or
//! `cloudtrail:ListPublicKeys`), evaluates the chains the store holds, raises what it finds as alerts whose ids
//! are stable per subject, and sums it up per chain for `trailwatch integrity report` and the metrics.

use std::collections::{HashMap, HashSet};

use rusqlite::Connection;
use serde::Serialize;

use crate::alert::{Alert, Derived};
use crate::config::{IntegrityConfig, PublicKeySource};
use crate::detect::catalogue::state_rule;
use crate::integrity::chain::{self, ChainId, DigestCheck, Finding, Grace, Location, Snapshot};
use crate::integrity::{IntegrityError, PendingSignature, PublicKey, PublicKeys};
use crate::metrics::Metrics;
use crate::store::integrity::{self as rows, Scope};
use crate::time::{Timestamp, format_rfc3339};

/// Fetches a region's public keys (`cloudtrail:ListPublicKeys`) valid from `since` to now: the AWS API, or a
/// test's.
pub trait KeyFetcher: Send {
    fn fetch(&mut self, region: &str, since: Timestamp) -> Result<PublicKeys, String>;
}

/// `ListPublicKeys` through the AWS SDK, one client per region, called from a blocking thread.
#[cfg(feature = "iam")]
pub struct ApiKeys {
    sdk: aws_config::SdkConfig,
    runtime: tokio::runtime::Handle,
}

#[cfg(feature = "iam")]
impl ApiKeys {
    pub fn new(sdk: aws_config::SdkConfig, runtime: tokio::runtime::Handle) -> ApiKeys {
        ApiKeys { sdk, runtime }
    }
}

#[cfg(feature = "iam")]
impl KeyFetcher for ApiKeys {
    fn fetch(&mut self, region: &str, since: Timestamp) -> Result<PublicKeys, String> {
        use aws_sdk_cloudtrail::primitives::DateTime;
        let config = aws_sdk_cloudtrail::config::Builder::from(&self.sdk)
            .region(aws_config::Region::new(region.to_owned()))
            .build();
        let client = aws_sdk_cloudtrail::Client::from_conf(config);
        let mut keys = PublicKeys::default();
        let mut token: Option<String> = None;
        loop {
            let call = client.list_public_keys().start_time(DateTime::from_secs(since)).set_next_token(token.take());
            let page = self.runtime.block_on(call.send()).map_err(|err| crate::aws::describe(&err))?;
            for entry in page.public_key_list() {
                let (Some(value), Some(fingerprint)) = (entry.value(), entry.fingerprint()) else { continue };
                keys.push(PublicKey::from_der(value.as_ref(), fingerprint)?);
            }
            match page.next_token() {
                Some(next) if !next.is_empty() => token = Some(next.to_owned()),
                _ => return Ok(keys),
            }
        }
    }
}

/// The public keys digests are checked with: the files', and with `public_keys = "api"` those fetched per region,
/// fetched again when a digest names a fingerprint the region's list does not have (CloudTrail rotates keys), but
/// only when the list may not know it yet: anyone can write digests naming fingerprints of their own.
pub struct KeyRing {
    files: PublicKeys,
    fetcher: Option<Box<dyn KeyFetcher>>,
    fetched: HashMap<String, FetchedKeys>,
}

/// A region's keys as `ListPublicKeys` gave them: those valid from `since` to `at` (the clock when fetched).
struct FetchedKeys {
    keys: PublicKeys,
    since: Timestamp,
    at: Timestamp,
}

/// What a digest's fingerprint finds.
enum Lookup<'a> {
    Found(&'a PublicKey),
    /// No key of the files', nor of a list fetched after the digest was delivered: it was not signed by CloudTrail.
    Unknown,
    /// Too recent for the region's list, which was fetched too lately to fetch again: the next pass decides.
    Wait,
}

/// CloudTrail delivers a digest within about an hour of its end; a key list fetched later knows its key.
const KEY_LIST_COVERS_AFTER_SECS: i64 = 3600;
/// A region's key list is fetched again at most this often for a digest it cannot tell yet.
const KEY_LIST_REFETCH_SECS: i64 = 300;
/// 2015-01-01: before CloudTrail signed any digest (log file validation came in November 2015). A list from here
/// holds every key; a digest that claims to be older was not signed by CloudTrail.
const DIGESTS_BEGAN: Timestamp = 1_420_070_400;

impl KeyRing {
    /// The keys `config` names: its files, read now (config validation read them once already).
    pub fn from_config(
        config: &IntegrityConfig,
        fetcher: Option<Box<dyn KeyFetcher>>,
    ) -> Result<KeyRing, IntegrityError> {
        let mut files = PublicKeys::default();
        for path in &config.public_key_files {
            let origin = path.display().to_string();
            let json = std::fs::read(path).map_err(|err| IntegrityError::Keys {
                origin: origin.clone(),
                reason: format!("cannot read: {}", err.to_string().to_lowercase()),
            })?;
            files.extend(PublicKeys::from_list_json(&json, &origin)?);
        }
        let fetcher = match config.public_keys {
            PublicKeySource::Api => fetcher,
            PublicKeySource::File => None,
        };
        Ok(KeyRing { files, fetcher, fetched: HashMap::new() })
    }

    /// The key with `fingerprint` for a digest of `region` that ended at `at`, fetching the region's keys when its
    /// list is missing, starts after the digest, or is older than the digest's delivery and may be fetched again.
    fn find(&mut self, fingerprint: &str, region: &str, at: Timestamp, now: Timestamp) -> Result<Lookup<'_>, String> {
        if self.files.get(fingerprint).is_some() {
            return Ok(self.files.get(fingerprint).map_or(Lookup::Unknown, Lookup::Found));
        }
        let Some(fetcher) = &mut self.fetcher else { return Ok(Lookup::Unknown) };
        // A day before the digest: keys are listed by their validity, which may have ended since.
        let since = at - 86_400;
        let covers = |f: &FetchedKeys| f.since <= since && at + KEY_LIST_COVERS_AFTER_SECS <= f.at;
        // The first list starts a day before the first digest; one for an older digest goes back to the start, so
        // that digests claiming ever older times cost one list, not one each.
        let fetch_since = match self.fetched.get(region) {
            None => Some(since),
            Some(f) if f.keys.get(fingerprint).is_some() || covers(f) => None,
            Some(f) if f.since > since => Some(DIGESTS_BEGAN),
            Some(f) => (now - f.at >= KEY_LIST_REFETCH_SECS).then_some(f.since),
        };
        if let Some(since) = fetch_since {
            let keys = fetcher.fetch(region, since)?;
            self.fetched.insert(region.to_owned(), FetchedKeys { keys, since, at: now });
        }
        let fetched = &self.fetched[region];
        Ok(match fetched.keys.get(fingerprint) {
            Some(key) => Lookup::Found(key),
            None if covers(fetched) => Lookup::Unknown,
            None => Lookup::Wait,
        })
    }
}

/// Digests waiting for their key are read this many at a time: a flood of forged digests (each with a signature
/// to check) is never held at once.
const PENDING_PAGE: usize = 512;

/// Checks the signatures of the digests that wait for their key and gives `each` the outcomes a page at a time,
/// by digest name; a key list that cannot be fetched leaves its digests out (logged), to wait for the next pass.
/// Returns how many were checked.
pub fn verify_unverified(
    conn: &Connection,
    keys: &mut KeyRing,
    mut each: impl FnMut(Vec<(String, DigestCheck)>) -> rusqlite::Result<()>,
) -> rusqlite::Result<u64> {
    let mut checked = 0;
    // A region whose keys could not be fetched is not asked again in this pass: its other digests wait too.
    let mut unreachable: HashSet<String> = HashSet::new();
    let mut after = String::new();
    loop {
        let page = rows::unverified(conn, &after, PENDING_PAGE)?;
        let Some((last, ..)) = page.last() else { return Ok(checked) };
        after = last.clone();
        let outcomes: Vec<(String, DigestCheck)> = page
            .into_iter()
            .filter_map(|(name, region, end_time, pending)| {
                verify_one(keys, &mut unreachable, &region, end_time, &pending).map(|check| (name, check))
            })
            .collect();
        checked += outcomes.len() as u64;
        each(outcomes)?;
    }
}

/// One pending signature checked, or `None` when it waits for the next pass: its region's keys cannot be
/// fetched, or it is too recent for their list.
fn verify_one(
    keys: &mut KeyRing,
    unreachable: &mut HashSet<String>,
    region: &str,
    end_time: Timestamp,
    pending: &PendingSignature,
) -> Option<DigestCheck> {
    if unreachable.contains(region) {
        return None;
    }
    let now = crate::time::now();
    // CloudTrail signs a digest when it delivers it: one that claims to end later than now, or before digests
    // existed, was not.
    if end_time > now + KEY_LIST_COVERS_AFTER_SECS {
        return Some(DigestCheck::Invalid(format!("{}: ends in the future", pending.found)));
    }
    if end_time < DIGESTS_BEGAN + 86_400 {
        return Some(DigestCheck::Invalid(format!("{}: ends before CloudTrail signed digests", pending.found)));
    }
    let key = match keys.find(&pending.fingerprint, region, end_time, now) {
        Ok(Lookup::Found(key)) => Some(key),
        Ok(Lookup::Unknown) => None,
        Ok(Lookup::Wait) => return None,
        Err(err) => {
            tracing::warn!("cloudtrail public keys for {region}: {err}; its digests wait for the next check");
            unreachable.insert(region.to_owned());
            return None;
        }
    };
    let checked = match key {
        Some(key) => pending.verify_with(key),
        None => Err(IntegrityError::UnknownKey {
            bucket: pending.found.bucket.clone(),
            key: pending.found.key.clone(),
            fingerprint: pending.fingerprint.clone(),
        }),
    };
    Some(checked.map_or_else(|err| DigestCheck::Invalid(err.to_string()), |()| DigestCheck::Verified))
}

/// Checks the signatures of the digests that wait for their key and records each outcome. Returns how many were
/// settled.
pub fn settle(conn: &Connection, keys: &mut KeyRing, metrics: Option<&Metrics>) -> rusqlite::Result<u64> {
    verify_unverified(conn, keys, |outcomes| {
        // A page in one transaction: one commit, not hundreds (the committer waits for each).
        let tx = conn.unchecked_transaction()?;
        for (name, check) in &outcomes {
            rows::settle(&tx, name, check)?;
            if let Some(metrics) = metrics {
                let outcome = if *check == DigestCheck::Verified { "verified" } else { "invalid" };
                metrics.integrity_digests.with_label_values(&[outcome]).inc();
            }
        }
        tx.commit()
    })
}

/// What the store's records within a scope show: the figures summed over places (and each place's, when asked
/// for), and every finding.
#[derive(Debug, Default)]
pub struct Check {
    /// Each place's figures with [`Figures::PerPlace`]; empty otherwise.
    pub chains: Vec<ChainReport>,
    pub total: ChainReport,
    pub findings: Vec<Finding>,
}

/// Which figures a check keeps: a report lists every place, the daemon needs only the sums (places are as many as
/// the prefixes anyone writes to the bucket).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Figures {
    PerPlace,
    Total,
}

/// Evaluates the places within `scope`, one at a time (each read on its own, so that memory holds one place's
/// records, not an organisation's), with the signature outcomes in `settled` (by digest name) in place of those
/// the store holds.
pub fn check(
    conn: &Connection,
    scope: &Scope,
    grace: Grace,
    settled: &HashMap<String, DigestCheck>,
    figures: Figures,
) -> rusqlite::Result<Check> {
    let mut out = Check::default();
    rows::for_each_place(conn, scope, |place| {
        let mut snapshot = rows::snapshot(conn, scope, &place)?;
        if snapshot.digests.is_empty() && snapshot.logs.is_empty() {
            return Ok(());
        }
        for digest in &mut snapshot.digests {
            if let Some(check) = settled.get(digest.location.name()) {
                digest.check = check.clone();
            }
        }
        if snapshot.unexamined_logs + snapshot.unexamined_digests > 0 {
            tracing::warn!(
                place = %format_args!("{}/{}", place.bucket, place.prefix),
                account = %place.account,
                region = %place.region,
                log_files = snapshot.unexamined_logs,
                digests = snapshot.unexamined_digests,
                max = scope.max_untrusted.unwrap_or(usize::MAX),
                "invalid digests and log files no digest lists were counted, not examined: more than \
                 integrity.max_untrusted_per_check"
            );
        }
        let findings = chain::evaluate(&snapshot, grace);
        let report = chain_report(&place, &snapshot, &findings);
        out.total.add(&report);
        if figures == Figures::PerPlace {
            out.chains.push(report);
        }
        out.findings.extend(findings);
        Ok(())
    })?;
    out.chains.sort_by(|a, b| {
        (&a.bucket, &a.prefix, &a.account, &a.region).cmp(&(&b.bucket, &b.prefix, &b.account, &b.region))
    });
    Ok(out)
}

/// The alert for a finding: rule and subject make its fingerprint, and its id (no time bucket), so the same objects
/// raise it once however often they are checked or replayed.
pub fn to_alert(finding: &Finding) -> Alert {
    let rule = finding.rule();
    let (title, severity) = state_rule(rule);
    let subject = finding.subject();
    let account = |l: &Location| ChainId::of(&l.bucket, &l.key).map(|c| c.account);
    let log_time = |l: &Location| crate::layout::delivery_time(&l.key).unwrap_or(0);
    let (account_id, time, summary, details) = match finding {
        Finding::LogFileMissing { log, digest } => (
            account(log),
            log_time(log),
            format!("{title}: {log} is listed in the digest {digest} but is not there"),
            serde_json::json!({ "log_file": log.to_string(), "digest": digest.to_string() }),
        ),
        Finding::LogFileAltered { log, digest, listed, found } => (
            account(log),
            log_time(log),
            format!("{title}: {log} does not hash to what the digest {digest} lists"),
            serde_json::json!({
                "log_file": log.to_string(), "digest": digest.to_string(), "listed_sha256": listed, "found_sha256": found,
            }),
        ),
        Finding::LogFileUnlisted { log, digest } => (
            account(log),
            log_time(log),
            format!("{title}: {log} was delivered within the hour of the digest {digest}, which does not list it"),
            serde_json::json!({ "log_file": log.to_string(), "digest": digest.to_string() }),
        ),
        Finding::DigestMissing { chain, missing, after, before, from, to } => (
            Some(chain.account.clone()),
            *to,
            match missing {
                Some(missing) => format!("{title}: {missing} (between {after} and {before}) is not there"),
                None => format!(
                    "{title}: no digest from {} to {} between {after} and {before}",
                    format_rfc3339(*from),
                    format_rfc3339(*to)
                ),
            },
            serde_json::json!({
                "missing_digest": missing.as_ref().map(Location::to_string),
                "after": after.to_string(), "before": before.to_string(),
                "from": format_rfc3339(*from), "to": format_rfc3339(*to),
                "region": chain.region,
            }),
        ),
        Finding::DigestInvalid { digest, reason } => (
            account(digest),
            crate::layout::cloudtrail_digest_name(digest.name()).map_or(0, |d| d.end),
            format!("{title}: {reason}"),
            serde_json::json!({ "digest": digest.to_string(), "reason": reason }),
        ),
        Finding::DigestChainEnded { chain, last_digest, newest_log } => (
            Some(chain.account.clone()),
            log_time(newest_log),
            format!("{title}: log files go on (newest {newest_log}) but the last digest is {last_digest}"),
            serde_json::json!({
                "last_digest": last_digest.to_string(), "newest_log_file": newest_log.to_string(), "region": chain.region,
            }),
        ),
    };
    let anchor = match finding {
        // Altered again, differently: a new alert.
        Finding::LogFileAltered { found, .. } => found.as_str(),
        _ => "",
    };
    Alert::derived(Derived {
        rule,
        subject: &subject,
        anchor,
        title,
        severity,
        principal: String::new(),
        account_id,
        time,
        summary,
        details,
    })
}

/// One chain's figures, as `integrity report` prints them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ChainReport {
    pub bucket: String,
    pub prefix: String,
    pub account: String,
    pub region: String,
    /// The trails whose digests are there (one, unless several trails write to one place), by name.
    pub trails: Vec<String>,
    pub digests_verified: u64,
    /// Taken without a signature to check (local files without their `.signature`): hashes and links only.
    pub digests_unsigned: u64,
    /// With a signature whose key was not looked up yet.
    pub digests_unverified: u64,
    pub digests_invalid: u64,
    pub digests_missing: u64,
    /// Invalid, and beyond `integrity.max_untrusted_per_check`: counted, not examined.
    pub digests_unexamined: u64,
    pub log_files_valid: u64,
    pub log_files_altered: u64,
    pub log_files_missing: u64,
    pub log_files_unlisted: u64,
    /// Read, but no digest lists them yet (within the grace period, or their digest is outside the scope).
    pub log_files_pending: u64,
    /// Read, listed by no digest, and beyond `integrity.max_untrusted_per_check`: counted, not examined.
    pub log_files_unexamined: u64,
    /// The time the chain's digests cover: the first one's start and the last one's end.
    pub from: Option<String>,
    pub to: Option<String>,
}

/// One chain's figures, from its snapshot and the findings on it.
fn chain_report(chain: &ChainId, snapshot: &Snapshot, findings: &[Finding]) -> ChainReport {
    let mut r = ChainReport {
        bucket: chain.bucket.clone(),
        prefix: chain.prefix.clone(),
        account: chain.account.clone(),
        region: chain.region.clone(),
        log_files_unexamined: snapshot.unexamined_logs,
        digests_unexamined: snapshot.unexamined_digests,
        ..ChainReport::default()
    };
    for d in &snapshot.digests {
        match d.check {
            DigestCheck::Verified => r.digests_verified += 1,
            DigestCheck::Unsigned => r.digests_unsigned += 1,
            DigestCheck::Unverified => r.digests_unverified += 1,
            DigestCheck::Invalid(_) => r.digests_invalid += 1,
        }
    }
    let trails: std::collections::BTreeSet<&str> = snapshot.digests.iter().map(|d| d.trail()).collect();
    r.trails = trails.into_iter().map(str::to_owned).collect();
    r.from = snapshot.digests.iter().map(|d| d.start_time).min().map(format_rfc3339);
    r.to = snapshot.digests.iter().map(|d| d.end_time).max().map(format_rfc3339);
    // Each log file read counts once, by the worst found about it; a missing one was never read.
    let (mut altered, mut unlisted) = (HashSet::new(), HashSet::new());
    for f in findings {
        match f {
            Finding::LogFileAltered { log, .. } => {
                altered.insert(log.name());
            }
            Finding::LogFileUnlisted { log, .. } => {
                unlisted.insert(log.name());
            }
            Finding::LogFileMissing { .. } => r.log_files_missing += 1,
            Finding::DigestMissing { .. } => r.digests_missing += 1,
            Finding::DigestInvalid { .. } | Finding::DigestChainEnded { .. } => {}
        }
    }
    let listed = snapshot.listed_names();
    for log in &snapshot.logs {
        let name = log.location.name();
        if altered.contains(name) {
            r.log_files_altered += 1;
        } else if unlisted.contains(name) {
            r.log_files_unlisted += 1;
        } else if listed.contains(name) {
            r.log_files_valid += 1;
        } else {
            r.log_files_pending += 1;
        }
    }
    r
}

/// How far a check looks: the daemon's periodic pass looks back `integrity.lookback_secs` from the newest log file
/// read (file time, not the clock); a replay checks everything, since it may have taken in years.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    Recent,
    Everything,
}

/// Settles signatures, checks the chains within `reach` (setting the gauges), and raises the findings as alerts.
/// Returns the check and how many alerts were new.
pub fn check_and_raise(
    alerting: &crate::alert::stage::Alerting,
    conn: &mut Connection,
    keys: &mut KeyRing,
    config: &IntegrityConfig,
    reach: Reach,
    metrics: &Metrics,
) -> rusqlite::Result<(Check, u64)> {
    let check = settle_and_check(conn, keys, config, reach, metrics)?;
    let alerts = check.findings.iter().map(to_alert).collect();
    let raised = crate::findings::raise_through(alerting, conn, alerts, metrics)?;
    Ok((check, raised))
}

/// Settles signatures and checks the chains within `reach`, setting the gauges.
pub fn settle_and_check(
    conn: &Connection,
    keys: &mut KeyRing,
    config: &IntegrityConfig,
    reach: Reach,
    metrics: &Metrics,
) -> rusqlite::Result<Check> {
    settle(conn, keys, Some(metrics))?;
    let scope = match reach {
        Reach::Recent => {
            let newest = rows::newest_log_time(conn)?;
            Scope { since: newest.map(|t| t - config.lookback_secs), ..Scope::default() }
        }
        Reach::Everything => Scope::default(),
    };
    let scope = Scope { max_untrusted: Some(config.max_untrusted_per_check), ..scope };
    let grace = Grace { digest_secs: config.digest_grace_secs };
    let check = check(conn, &scope, grace, &HashMap::new(), Figures::Total)?;
    set_gauges(conn, &check, config, metrics)?;
    metrics.integrity_checks.inc();
    Ok(check)
}

fn set_gauges(conn: &Connection, check: &Check, config: &IntegrityConfig, metrics: &Metrics) -> rusqlite::Result<()> {
    let total = &check.total;
    for (outcome, n) in total.digests() {
        metrics.integrity_digest_files.with_label_values(&[outcome]).set(n as i64);
    }
    for (outcome, n) in total.log_files() {
        metrics.integrity_log_files.with_label_values(&[outcome]).set(n as i64);
    }
    let now = crate::time::now();
    let ages: Vec<i64> = rows::newest_valid(conn)?.into_iter().map(|end| (now - end).max(0)).collect();
    let stale = ages.iter().filter(|age| **age > config.digest_grace_secs).count();
    metrics.integrity_chains.with_label_values(&["current"]).set((ages.len() - stale) as i64);
    metrics.integrity_chains.with_label_values(&["stale"]).set(stale as i64);
    metrics.integrity_newest_valid_digest_age.set(ages.iter().copied().max().unwrap_or(0));
    Ok(())
}

impl ChainReport {
    /// Adds another place's figures to these (the place's name and times are left as they are).
    pub fn add(&mut self, r: &ChainReport) {
        self.digests_verified += r.digests_verified;
        self.digests_unsigned += r.digests_unsigned;
        self.digests_unverified += r.digests_unverified;
        self.digests_invalid += r.digests_invalid;
        self.digests_missing += r.digests_missing;
        self.log_files_valid += r.log_files_valid;
        self.log_files_altered += r.log_files_altered;
        self.log_files_missing += r.log_files_missing;
        self.log_files_unlisted += r.log_files_unlisted;
        self.log_files_pending += r.log_files_pending;
        self.log_files_unexamined += r.log_files_unexamined;
        self.digests_unexamined += r.digests_unexamined;
    }

    /// Digests by outcome, as the metrics label them (`missing` ones were not found).
    pub fn digests(&self) -> [(&'static str, u64); 6] {
        [
            ("verified", self.digests_verified),
            ("unsigned", self.digests_unsigned),
            ("unverified", self.digests_unverified),
            ("invalid", self.digests_invalid),
            ("missing", self.digests_missing),
            ("unexamined", self.digests_unexamined),
        ]
    }

    /// Log files by outcome, as the metrics label them (`missing` ones were never read).
    pub fn log_files(&self) -> [(&'static str, u64); 6] {
        [
            ("valid", self.log_files_valid),
            ("altered", self.log_files_altered),
            ("missing", self.log_files_missing),
            ("unlisted", self.log_files_unlisted),
            ("pending", self.log_files_pending),
            ("unexamined", self.log_files_unexamined),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::integrity::TestDigest;

    /// Fetches nothing: counts the calls, fails them all.
    struct Unreachable(std::sync::Arc<std::sync::atomic::AtomicUsize>);

    impl KeyFetcher for Unreachable {
        fn fetch(&mut self, _region: &str, _since: Timestamp) -> Result<PublicKeys, String> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Err("connection refused".to_owned())
        }
    }

    /// Digests waiting for their key are read a page at a time (a flood of forged ones is never held at once),
    /// and every page is settled: here, two pages and one more, none signed with a key the files know.
    #[test]
    fn waiting_digests_are_settled_page_by_page() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(&dir.path().join("s.db"), crate::config::Synchronous::Normal).unwrap();
        let conn = store.connection();
        let waiting = 2 * PENDING_PAGE + 1;
        for i in 0..waiting {
            let name = format!("d{i:05}");
            TestDigest { name: &name, outcome: "unverified", fingerprint: "forged", ..TestDigest::default() }
                .insert(conn);
        }
        let keys = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/integrity/public-keys.json");
        let config = IntegrityConfig {
            enabled: true,
            public_keys: crate::config::PublicKeySource::File,
            public_key_files: vec![keys],
            ..IntegrityConfig::default()
        };
        let mut keys = KeyRing::from_config(&config, None).unwrap();
        assert_eq!(settle(conn, &mut keys, None).unwrap(), waiting as u64);
        let outcomes: Vec<(String, i64)> = conn
            .prepare("SELECT outcome, count(*) FROM integrity_digests GROUP BY outcome")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(outcomes, [("invalid".to_owned(), waiting as i64)]);
    }

    /// Lists the test key for every region, counting the calls.
    struct Listing(std::sync::Arc<std::sync::atomic::AtomicUsize>);

    impl KeyFetcher for Listing {
        fn fetch(&mut self, _region: &str, _since: Timestamp) -> Result<PublicKeys, String> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/integrity/public-keys.json");
            PublicKeys::from_list_json(&std::fs::read(path).unwrap(), "test").map_err(|e| e.to_string())
        }
    }

    /// Anyone can write digests naming fingerprints of their own: each used to cost a ListPublicKeys call. A list
    /// fetched after a digest was delivered knows its key, so a pass settles them all with a list from a day before
    /// the first and one more back to when digests began (for ever older claims); a digest too recent for the list
    /// waits, and one that claims to end in the future, or before digests existed, is invalid.
    #[test]
    fn forged_fingerprints_cost_one_key_list_per_region_and_pass() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(&dir.path().join("s.db"), crate::config::Synchronous::Normal).unwrap();
        let conn = store.connection();
        let now = crate::time::now();
        let insert = |name: &str, end: Timestamp, fingerprint: &str| {
            TestDigest { name, end, outcome: "unverified", fingerprint, ..TestDigest::default() }.insert(conn);
        };
        for i in 0..50 {
            insert(&format!("old{i:02}"), 1_790_816_400, &format!("forged{i:02}"));
        }
        for i in 0..10 {
            insert(&format!("back{i:02}"), 1_790_816_400 - i * 40 * 86_400, &format!("forged-back{i:02}"));
        }
        insert("recent", now - 60, "forged-recent");
        insert("future", now + 30 * 86_400, "forged-future");
        insert("ancient", 3600, "forged-ancient");
        let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let config = IntegrityConfig { enabled: true, ..IntegrityConfig::default() };
        let mut keys = KeyRing::from_config(&config, Some(Box::new(Listing(calls.clone())))).unwrap();
        assert_eq!(settle(conn, &mut keys, None).unwrap(), 62);
        assert_eq!(calls.load(std::sync::atomic::Ordering::Relaxed), 2);
        let outcome = |name: &str| -> String {
            conn.query_row("SELECT outcome FROM integrity_digests WHERE name = ?1", [name], |r| r.get(0)).unwrap()
        };
        assert_eq!((outcome("old00"), outcome("old49")), ("invalid".into(), "invalid".into()));
        assert_eq!((outcome("back09"), outcome("ancient")), ("invalid".into(), "invalid".into()));
        assert_eq!((outcome("recent"), outcome("future")), ("unverified".into(), "invalid".into()));
    }

    /// When ListPublicKeys cannot be reached, a pass asks once per region, not once per digest (each call may
    /// take the SDK's retries), and every digest waits for the next pass.
    #[test]
    fn an_unreachable_key_list_is_asked_once_per_region_and_pass() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(&dir.path().join("s.db"), crate::config::Synchronous::Normal).unwrap();
        let conn = store.connection();
        for (i, region) in ["us-east-1", "us-east-1", "us-east-1", "eu-west-1"].into_iter().enumerate() {
            let name = format!("d{i}");
            TestDigest { name: &name, region, outcome: "unverified", ..TestDigest::default() }.insert(conn);
        }
        let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let config = IntegrityConfig { enabled: true, ..IntegrityConfig::default() };
        let mut keys = KeyRing::from_config(&config, Some(Box::new(Unreachable(calls.clone())))).unwrap();
        for pass in 1..=2 {
            assert_eq!(verify_unverified(conn, &mut keys, |_| Ok(())).unwrap(), 0);
            assert_eq!(calls.load(std::sync::atomic::Ordering::Relaxed), 2 * pass, "pass {pass}");
        }
    }
}
