//! Store tests: schema migrations, ledger keys, and durability of committed pages.

use crate::state::tests::{delta_of, record};
use crate::store::integrity::TestDigest;

#[test]
fn a_schema_1_store_moves_its_correlation_hits_into_the_log() {
    use crate::alert::correlate::HitLog;
    use crate::config::Synchronous;
    use crate::store::Store;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    drop(Store::open(&path, Synchronous::Normal).unwrap());
    // What schema 1 left behind: a row per hit.
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "CREATE TABLE correlation_window (correlation TEXT NOT NULL, grp TEXT NOT NULL, time INTEGER NOT NULL,
             rule TEXT NOT NULL, event_id TEXT, value TEXT, principal TEXT NOT NULL, account_id TEXT);
         INSERT INTO correlation_window VALUES ('burst', 'alice', 60, 'denied', 'e2', NULL, 'alice', '1');
         INSERT INTO correlation_window VALUES ('burst', 'alice', 0, 'denied', 'e1', NULL, 'alice', '1');
         INSERT INTO correlation_window VALUES ('enum', 'bob', 5, 'listed', NULL, 'ListUsers', 'bob', NULL);
         UPDATE meta SET value = '1' WHERE key = 'schema_version';",
    )
    .unwrap();
    drop(conn);
    let store = Store::open(&path, Synchronous::Normal).unwrap();
    let rows = store.correlation_log().unwrap();
    let mut hits = Vec::new();
    for row in &rows {
        HitLog::decode(row, &mut |h| {
            hits.push((h.correlation.to_owned(), h.time, h.event_id.map(str::to_owned), h.value.map(str::to_owned)))
        })
        .unwrap();
    }
    assert_eq!(
        hits,
        [
            ("burst".into(), 0, Some("e1".into()), None),
            ("burst".into(), 60, Some("e2".into()), None),
            ("enum".into(), 5, None, Some("ListUsers".into())),
        ]
    );
    let conn = store.connection();
    let left: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master WHERE name = 'correlation_window'", [], |r| r.get(0))
        .unwrap();
    let version: String =
        conn.query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| r.get(0)).unwrap();
    assert_eq!((left, version.as_str()), (0, "6"));
}

#[test]
fn cloudtrail_log_files_are_known_by_name_and_other_files_by_path() {
    use crate::layout::cloudtrail_log_name;
    use crate::store::LedgerKey;
    let named = [
        "/spool/AWSLogs/111122223333/CloudTrail/us-east-1/2026/10/01/111122223333_CloudTrail_us-east-1_20261001T0005Z_GwlTYz0jE1Oe1BMm.json.gz",
        "/x/111122223333_CloudTrail-Insight_eu-west-1_20261001T2355Z_a1.json.gz",
        "/x/111122223333_CloudTrail_us-gov-west-1_20261001T0005Z_Z.json",
    ];
    for path in named {
        let key = LedgerKey::local(path, 10);
        assert_eq!(key.source, format!("cloudtrail:{}", path.rsplit('/').next().unwrap()), "{path}");
        assert_eq!(key, LedgerKey::local(&path.replace("/x/", "/elsewhere/"), 11), "same name, same key: {path}");
    }
    let unnamed = [
        "/x/fixture.json",
        "/x/111122223333_CloudTrail-Digest_us-east-1_20261001T0005Z_a1.json.gz",
        "/x/11112222333_CloudTrail_us-east-1_20261001T0005Z_a1.json.gz",
        "/x/111122223333_CloudTrail_us-east-1_20261001T0005_a1.json.gz",
        "/x/111122223333_CloudTrail_us-east-1_20261001T0005Z_.json.gz",
        "/x/111122223333_CloudTrail_us-east-1_20261001T0005Z_a1_b2.json.gz",
        "/x/111122223333_CloudTrail_us_gov_20261001T0005Z_a1.json.gz",
        "/x/111122223333_CloudTrail_us-east-1_20261001T0005Z_a-1.json.gz",
        "/x/111122223333_CloudTrail_us-east-1_20261001T0005Z_a1.txt",
    ];
    for path in unnamed {
        assert_eq!(cloudtrail_log_name(path), None, "{path}");
        assert_eq!(LedgerKey::local(path, 10), LedgerKey { source: format!("file:{path}"), version: "10".into() });
    }
}

/// A schema 2 ledger keyed local files by path: opening it gives CloudTrail log files their name keys (one row
/// for two paths of one file), leaves other files' rows as they were, and a replay then applies none of them.
#[test]
fn a_schema_2_ledger_knows_its_cloudtrail_files_by_name() {
    use crate::config::Synchronous;
    use crate::store::{LedgerKey, Store};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    drop(Store::open(&path, Synchronous::Normal).unwrap());
    let name = "111122223333_CloudTrail_us-east-1_20261001T0005Z_GwlTYz0jE1Oe1BMm.json.gz";
    let conn = rusqlite::Connection::open(&path).unwrap();
    for (source, version) in
        [(format!("file:/a/{name}"), "120"), (format!("file:/b/{name}"), "120"), ("file:/a/fixture.json".into(), "7")]
    {
        conn.execute(
            "INSERT INTO ledger (source, version, records, applied_at) VALUES (?1, ?2, 3, 0)",
            [&source, version],
        )
        .unwrap();
    }
    conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'", []).unwrap();
    drop(conn);
    let store = Store::open(&path, Synchronous::Normal).unwrap();
    let mut keys = store.ledger_keys().unwrap();
    keys.sort();
    assert_eq!(
        keys,
        [
            LedgerKey::local(&format!("/c/{name}"), 0),
            LedgerKey { source: "file:/a/fixture.json".into(), version: "7".into() }
        ]
    );
}

#[test]
fn committed_pages_reach_the_database_file_without_waiting_for_close() {
    use crate::config::Synchronous;
    use crate::store::{LedgerEntry, LedgerKey, Store};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let mut store = Store::open(&path, Synchronous::Full).unwrap();
    let before = std::fs::metadata(&path).unwrap().len();
    // A few hundred kilobytes of state: far below SQLite's own checkpoint threshold (1,000 pages), so only the
    // background checkpointer can move them from the WAL into the database file while the store is open.
    let records: Vec<String> =
        (0..3000).map(|i| record("2026-10-01T00:00:00Z", "s", &format!("Describe{i}"), None, "198.51.100.1")).collect();
    let delta = delta_of(&format!(r#"{{"Records":[{}]}}"#, records.join(",")));
    let key = LedgerKey { source: "file:/f.json".into(), version: "1".into() };
    store.commit(&delta, &[LedgerEntry { key: &key, records: 3000 }], 0, []).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let grown = loop {
        let now = std::fs::metadata(&path).unwrap().len();
        if now > before + 100_000 || std::time::Instant::now() > deadline {
            break now;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    assert!(grown > before + 100_000, "database file {before} → {grown} bytes");
}

/// A state written before `principal_services` existed learns each identity's services from its stored actions
/// when it is opened: a service used then is no first use after, and a later first use still is.
#[test]
fn a_schema_3_store_learns_services_from_its_actions() {
    use crate::config::{BehaviourConfig, Synchronous};
    use crate::store::{LedgerEntry, LedgerKey, Store};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let call = |time: &str, source: &str, name: &str| {
        format!(
            r#"{{"eventTime":"{time}","eventSource":"{source}.amazonaws.com","eventName":"{name}","sourceIPAddress":"198.51.100.1","userIdentity":{{"type":"IAMUser","arn":"arn:aws:iam::1:user/eve","accountId":"1"}}}}"#
        )
    };
    let file = |records: &[String]| delta_of(&format!(r#"{{"Records":[{}]}}"#, records.join(",")));
    let old = file(&[
        call("2026-09-01T00:00:00Z", "secretsmanager", "GetSecretValue"),
        call("2026-09-01T00:01:00Z", "iam", "ListUsers"),
    ]);
    let mut store = Store::open(&path, Synchronous::Normal).unwrap();
    let key = LedgerKey { source: "file:/old.json".into(), version: "1".into() };
    store.commit(&old, &[LedgerEntry { key: &key, records: 2 }], 0, []).unwrap();
    // What schema 3 left behind: the actions, no services.
    store
        .connection()
        .execute_batch("DELETE FROM principal_services; UPDATE meta SET value = '3' WHERE key = 'schema_version';")
        .unwrap();
    drop(store);
    let mut store = Store::open(&path, Synchronous::Normal).unwrap();
    let services: Vec<(String, Option<i64>, Option<i64>)> = store
        .connection()
        .prepare("SELECT service, first_used, last_enumerated FROM principal_services ORDER BY service")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let (used, listed) = (1_788_220_800, 1_788_220_860);
    assert_eq!(services, [("iam".into(), Some(listed), Some(listed)), ("secretsmanager".into(), Some(used), None)]);
    // Three weeks on: Secrets Manager again (no first use), Bedrock for the first time (a first use).
    let later = file(&[
        call("2026-09-22T00:00:00Z", "secretsmanager", "GetSecretValue"),
        call("2026-09-22T00:01:00Z", "bedrock", "InvokeModel"),
    ]);
    let mut batch = store.begin().unwrap();
    let key = LedgerKey { source: "file:/later.json".into(), version: "1".into() };
    batch.write_state(&later, &[LedgerEntry { key: &key, records: 2 }], 0).unwrap();
    let facts = batch.behaviour_facts(&later, &BehaviourConfig::default()).unwrap();
    let first_uses: Vec<String> = facts
        .iter()
        .filter_map(|f| match f {
            crate::alert::behaviour::Fact::SensitiveFirstUse { service, .. } => Some(service.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(first_uses, ["bedrock"]);
}

/// A schema-4 state gains each principal's denied calls (summed from its actions) and each alert's principal
/// (read from its body), and new commits add to them.
#[test]
fn a_schema_4_store_sums_denied_calls_and_names_alert_principals() {
    use crate::config::Synchronous;
    use crate::store::{LedgerEntry, LedgerKey, Store};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let call = |time: &str, name: &str, error: &str| {
        format!(
            r#"{{"eventTime":"{time}","eventSource":"iam.amazonaws.com","eventName":"{name}","errorCode":"{error}","sourceIPAddress":"198.51.100.1","userIdentity":{{"type":"IAMUser","arn":"arn:aws:iam::1:user/eve","accountId":"1"}}}}"#
        )
    };
    let file = |records: &[String]| delta_of(&format!(r#"{{"Records":[{}]}}"#, records.join(",")));
    let denied_twice = file(&[
        call("2026-09-01T00:00:00Z", "ListUsers", "AccessDenied"),
        call("2026-09-01T00:01:00Z", "ListRoles", "AccessDenied"),
        call("2026-09-01T00:02:00Z", "ListRoles", ""),
    ]);
    let mut store = Store::open(&path, Synchronous::Normal).unwrap();
    let key = LedgerKey { source: "file:/old.json".into(), version: "1".into() };
    store.commit(&denied_twice, &[LedgerEntry { key: &key, records: 3 }], 0, []).unwrap();
    // What schema 4 left behind: no such columns.
    store
        .connection()
        .execute_batch(
            r#"ALTER TABLE principals DROP COLUMN denied;
               DROP INDEX alerts_by_principal;
               ALTER TABLE alerts DROP COLUMN principal;
               INSERT INTO alerts (id, rule, severity, event_time, raised_at_ms, body)
                   VALUES ('a1', 'r', 'high', 0, 0, '{"principal":"arn:aws:iam::1:user/eve"}'),
                          ('a2', 'r', 'high', 0, 0, '{not json');
               UPDATE meta SET value = '4' WHERE key = 'schema_version';"#,
        )
        .unwrap();
    drop(store);
    let mut store = Store::open(&path, Synchronous::Normal).unwrap();
    let denied = |store: &Store| -> i64 {
        store.connection().query_row("SELECT denied FROM principals", [], |r| r.get(0)).unwrap()
    };
    assert_eq!(denied(&store), 2);
    let principals: Vec<String> = store
        .connection()
        .prepare("SELECT principal FROM alerts ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(principals, ["arn:aws:iam::1:user/eve", ""]);
    let key = LedgerKey { source: "file:/new.json".into(), version: "1".into() };
    let once_more = file(&[call("2026-09-02T00:00:00Z", "ListUsers", "AccessDenied")]);
    store.commit(&once_more, &[LedgerEntry { key: &key, records: 1 }], 0, []).unwrap();
    assert_eq!(denied(&store), 3);
}

/// A snapshot holds what a check can use and no more: an invalid digest's list (anyone can write a digest listing
/// a million entries) is left in the store, and beyond `max_untrusted` invalid digests, then log files no digest
/// lists, are counted.
#[test]
fn an_integrity_snapshot_holds_what_a_check_can_use() {
    use crate::integrity::chain::ChainId;
    use crate::store::integrity::{Scope, snapshot};
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::Store::open(&dir.path().join("s.db"), crate::config::Synchronous::Normal).unwrap();
    let conn = store.connection();
    let digests =
        [("good", "verified", 2), ("forged", "invalid", 3), ("forged2", "invalid", 0), ("forged3", "invalid", 0)];
    for (digest, outcome, listed) in digests {
        TestDigest { name: digest, outcome, ..TestDigest::default() }.insert(conn);
        for n in 0..listed {
            let log = format!("{digest}-{n}");
            conn.execute("INSERT INTO integrity_listed VALUES (?1, ?2, 'b', ?2, 'h')", rusqlite::params![digest, log])
                .unwrap();
        }
    }
    // The two files the good digest lists, then five that only the forged one does, in delivery order.
    for (time, log) in [(10, "good-0"), (20, "good-1"), (30, "forged-0"), (40, "forged-1"), (50, "forged-2")]
        .into_iter()
        .chain((60..62).map(|t| (t, "extra")))
    {
        let log = if log == "extra" { format!("extra-{time}") } else { log.to_owned() };
        conn.execute(
            "INSERT INTO integrity_logs VALUES (?1, 'b', ?1, 'b', 'AWSLogs/', '111122223333', 'us-east-1', ?2, 'h')",
            rusqlite::params![log, time],
        )
        .unwrap();
    }
    let chain = ChainId {
        bucket: "b".into(),
        prefix: "AWSLogs/".into(),
        account: "111122223333".into(),
        region: "us-east-1".into(),
    };
    let lists = |s: &crate::integrity::chain::Snapshot| {
        let mut lists: Vec<_> = s.digests.iter().map(|d| (d.location.key.clone(), d.log_files.len())).collect();
        lists.sort();
        lists
    };
    let logs =
        |s: &crate::integrity::chain::Snapshot| s.logs.iter().map(|l| l.location.key.clone()).collect::<Vec<_>>();
    let all = snapshot(conn, &Scope::default(), &chain).unwrap();
    let forged = |n: usize| ["forged", "forged2", "forged3"][..n].iter().map(|d| (d.to_string(), 0));
    let good = || std::iter::once(("good".to_owned(), 2));
    assert_eq!(lists(&all), forged(3).chain(good()).collect::<Vec<_>>());
    assert_eq!((logs(&all).len(), all.unexamined_logs, all.unexamined_digests), (7, 0, 0));
    // Two places for what nothing vouches for: the two oldest invalid digests (by end time, then name) take them.
    let capped = |max| snapshot(conn, &Scope { max_untrusted: Some(max), ..Scope::default() }, &chain).unwrap();
    let two = capped(2);
    assert_eq!(lists(&two), forged(2).chain(good()).collect::<Vec<_>>());
    assert_eq!(logs(&two), ["good-0", "good-1"]);
    assert_eq!((two.unexamined_digests, two.unexamined_logs), (1, 5));
    let five = capped(5);
    assert_eq!(logs(&five), ["good-0", "good-1", "forged-0", "forged-1"]);
    assert_eq!((five.unexamined_digests, five.unexamined_logs), (0, 3));
}

/// Every place is visited once, whether it holds log files, digests or both, and only those of the scope's
/// accounts and regions.
#[test]
fn integrity_places_are_each_visited_once() {
    use crate::store::integrity::{Scope, for_each_place};
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::Store::open(&dir.path().join("s.db"), crate::config::Synchronous::Normal).unwrap();
    let conn = store.connection();
    let places = [("logs/", true, false), ("both/", true, true), ("digests/", false, true), ("other/", true, true)];
    for (n, (prefix, logs, digests)) in places.into_iter().enumerate() {
        let account = if prefix == "other/" { "444455556666" } else { "111122223333" };
        for i in 0..2 {
            let name = format!("{n}-{i}");
            if logs {
                conn.execute(
                    "INSERT INTO integrity_logs VALUES (?1, 'b', ?1, 'b', ?2, ?3, 'us-east-1', 0, 'h')",
                    rusqlite::params![name, prefix, account],
                )
                .unwrap();
            }
            if digests {
                TestDigest { name: &format!("d{name}"), prefix, account, ..TestDigest::default() }.insert(conn);
            }
        }
    }
    let visited = |scope: &Scope| {
        let mut seen = Vec::new();
        for_each_place(conn, scope, |place| {
            seen.push(place.prefix);
            Ok(())
        })
        .unwrap();
        seen.sort();
        seen
    };
    assert_eq!(visited(&Scope::default()), ["both/", "digests/", "logs/", "other/"]);
    let one_account = Scope { accounts: vec!["111122223333".into()], ..Scope::default() };
    assert_eq!(visited(&one_account), ["both/", "digests/", "logs/"]);
}

/// Anyone can write digests listing 80,000 entries each: an invalid digest's list is not kept, neither when intake
/// finds it invalid nor when its signature is settled so; a settled digest's signature is dropped too.
#[test]
fn an_invalid_digest_leaves_no_list_behind() {
    use crate::integrity::chain::{ChainId, DigestCheck, DigestRecord, Location};
    use crate::integrity::{DigestIntake, PendingSignature};
    use crate::store::integrity::{IntegrityRows, settle, write};
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::Store::open(&dir.path().join("s.db"), crate::config::Synchronous::Normal).unwrap();
    let conn = store.connection();
    let at = |key: &str| Location { bucket: "b".into(), key: key.into() };
    let digest = |name: &str, check: DigestCheck| DigestIntake {
        record: DigestRecord {
            location: at(name),
            chain: ChainId {
                bucket: "b".into(),
                prefix: "AWSLogs/".into(),
                account: "111122223333".into(),
                region: "us-east-1".into(),
            },
            start_time: 1_790_812_800,
            end_time: 1_790_816_400,
            previous: None,
            log_files: (0..3).map(|n| (at(&format!("{name}-log{n}")), "h".to_owned())).collect(),
            check,
        },
        pending: Some(PendingSignature {
            found: at(name),
            fingerprint: "f".into(),
            signed: "signed".into(),
            signature: "00".into(),
        }),
    };
    let rows = IntegrityRows {
        digests: vec![
            digest("moved", DigestCheck::Invalid("found elsewhere".into())),
            digest("forged", DigestCheck::Unverified),
            digest("real", DigestCheck::Unverified),
        ],
        ..IntegrityRows::default()
    };
    let tx = conn.unchecked_transaction().unwrap();
    write(&tx, &rows).unwrap();
    tx.commit().unwrap();
    settle(conn, "forged", &DigestCheck::Invalid("the signature does not verify".into())).unwrap();
    settle(conn, "real", &DigestCheck::Verified).unwrap();
    let listed: Vec<(String, i64)> = conn
        .prepare("SELECT digest, count(*) FROM integrity_listed GROUP BY digest")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert_eq!(listed, [("real".to_owned(), 3)]);
    let signatures: i64 = conn.query_row("SELECT count(signature) FROM integrity_digests", [], |r| r.get(0)).unwrap();
    assert_eq!(signatures, 0);
}

/// Objects found gone are read for what the digests list, by name: any number of others (written, then deleted
/// before the fetch) is never scanned.
#[test]
fn gone_objects_are_looked_up_by_what_digests_list() {
    use crate::integrity::chain::ChainId;
    use crate::store::integrity::{Scope, snapshot};
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::Store::open(&dir.path().join("s.db"), crate::config::Synchronous::Normal).unwrap();
    let conn = store.connection();
    TestDigest::default().insert(conn);
    let key = |tag: &str| {
        format!(
            "AWSLogs/111122223333/CloudTrail/us-east-1/2026/10/01/111122223333_CloudTrail_us-east-1_20261001T0010Z_{tag}.json.gz"
        )
    };
    let name = |tag: &str| crate::integrity::chain::file_name(&key(tag)).to_owned();
    conn.execute("INSERT INTO integrity_listed VALUES ('d', ?1, 'b', ?2, 'h')", [name("listed"), key("listed")])
        .unwrap();
    for tag in ["listed", "stray1", "stray2"] {
        conn.execute("INSERT INTO integrity_gone VALUES (?1, 'b', ?2)", [name(tag), key(tag)]).unwrap();
    }
    let place = ChainId {
        bucket: "b".into(),
        prefix: "AWSLogs/".into(),
        account: "111122223333".into(),
        region: "us-east-1".into(),
    };
    let got = snapshot(conn, &Scope::default(), &place).unwrap();
    assert_eq!(got.gone.iter().map(|g| g.key.clone()).collect::<Vec<_>>(), [key("listed")]);
}
