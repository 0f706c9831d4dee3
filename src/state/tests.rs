//! State tests: folding is exact, and merging deltas gives the same result in any order and grouping.

use super::*;
use crate::parse::Parser;

fn delta_of(json: &str) -> Delta {
    let mut delta = Delta::default();
    let mut scratch = Scratch::default();
    Parser::default().parse_unpadded(json.as_bytes(), &mut |e, _| delta.apply(e, &mut scratch)).unwrap();
    delta
}

fn record(time: &str, arn_session: &str, name: &str, error: Option<&str>, ip: &str) -> String {
    let error = error.map(|e| format!(r#","errorCode":"{e}""#)).unwrap_or_default();
    format!(
        r#"{{"eventTime":"{time}","eventSource":"ec2.amazonaws.com","eventName":"{name}","sourceIPAddress":"{ip}","userIdentity":{{"type":"AssumedRole","arn":"arn:aws:sts::1:assumed-role/R/{arn_session}","accessKeyId":"ASIA1","sessionContext":{{"sessionIssuer":{{"type":"Role","arn":"arn:aws:iam::1:role/R"}}}}}}{error}}}"#
    )
}

#[test]
fn folds_uses_denials_and_sessions() {
    let records = [
        record("2026-10-01T12:00:05Z", "s1", "RunInstances", None, "10.0.0.2"),
        record("2026-10-01T12:00:01Z", "s2", "RunInstances", Some("ThrottlingException"), "10.0.0.1"),
        record("2026-10-01T12:00:09Z", "s3", "RunInstances", Some("AccessDenied"), "10.0.0.9"),
        record("2026-10-01T12:00:09Z", "s3", "DescribeInstances", Some("Client.UnauthorizedOperation"), "10.0.0.3"),
    ];
    let delta = delta_of(&format!(r#"{{"Records":[{}]}}"#, records.join(",")));
    let p = &delta.principals["arn:aws:iam::1:role/R"];
    assert_eq!((p.kind.as_str(), p.account.as_str(), p.events, p.errors), ("Role", "1", 4, 3));
    assert_eq!(p.last_source_ip, "10.0.0.9", "ties on time go to the larger value");
    let run = p.actions["ec2:RunInstances"];
    let t = |s| crate::time::parse_rfc3339(s).unwrap();
    assert_eq!(
        run,
        ActionDelta {
            first_used: Some(t("2026-10-01T12:00:01Z")),
            last_used: Some(t("2026-10-01T12:00:05Z")),
            uses: 2,
            last_denied: Some(t("2026-10-01T12:00:09Z")),
            denied: 1
        }
    );
    let describe = p.actions["ec2:DescribeInstances"];
    assert_eq!((describe.first_used, describe.uses, describe.denied), (None, 0, 1));
    let mut sessions = p.sessions.clone();
    sessions.sort();
    assert_eq!(sessions.iter().map(|s| s.0.as_str()).collect::<Vec<_>>(), ["s1", "s2", "s3"]);
    assert!(delta.access_keys.is_empty(), "temporary keys are not tracked");
}

#[test]
fn sessions_are_bounded_to_the_most_recent() {
    let records: Vec<String> = (0..25)
        .map(|i| {
            record(&format!("2026-10-01T12:00:{:02}Z", i), &format!("s{i:02}"), "DescribeInstances", None, "1.1.1.1")
        })
        .collect();
    let delta = delta_of(&format!(r#"{{"Records":[{}]}}"#, records.join(",")));
    let mut names: Vec<&str> =
        delta.principals["arn:aws:iam::1:role/R"].sessions.iter().map(|s| s.0.as_str()).collect();
    names.sort();
    assert_eq!(names, ["s15", "s16", "s17", "s18", "s19", "s20", "s21", "s22", "s23", "s24"]);
}

/// Merging per-record deltas in shuffled orders and groupings always equals folding all records at once.
#[test]
fn merge_is_order_independent() {
    let mut records = Vec::new();
    let users = ["a", "b", "c"];
    for i in 0..60u32 {
        let user = users[(i % 3) as usize];
        let second = (i * 7) % 13;
        let ip = ["9.9.9.9", "1.1.1.1", "5.5.5.5"][(i % 5 % 3) as usize];
        let error = match i % 6 {
            0 => r#","errorCode":"AccessDenied""#,
            1 => r#","errorCode":"NoSuchKey""#,
            _ => "",
        };
        let key = ["AKIAONE", "AKIATWO"][(i % 2) as usize];
        let login = if i % 9 == 0 {
            format!(
                r#","responseElements":{{"ConsoleLogin":"Success"}},"additionalEventData":{{"MFAUsed":"{}"}}"#,
                ["Yes", "No"][(i % 2) as usize]
            )
        } else {
            String::new()
        };
        let name = if i % 9 == 0 { "ConsoleLogin" } else { ["GetObject", "PutObject", "HeadObject"][(i % 3) as usize] };
        let source = if i % 9 == 0 { "signin.amazonaws.com" } else { "s3.amazonaws.com" };
        records.push(format!(
            r#"{{"eventTime":"2026-10-01T12:00:{second:02}Z","eventSource":"{source}","eventName":"{name}","sourceIPAddress":"{ip}","userIdentity":{{"type":"IAMUser","arn":"arn:aws:iam::1:user/{user}","accessKeyId":"{key}"}}{error}{login}}}"#
        ));
    }
    let whole = delta_of(&format!(r#"{{"Records":[{}]}}"#, records.join(",")));
    let mut state = 0x1234_5678u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..50 {
        let mut order: Vec<usize> = (0..records.len()).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, (next() % (i as u64 + 1)) as usize);
        }
        let mut parts: Vec<Delta> = Vec::new();
        let mut at = 0;
        while at < order.len() {
            let n = 1 + (next() % 7) as usize;
            let chunk: Vec<&str> = order[at..(at + n).min(order.len())].iter().map(|&i| records[i].as_str()).collect();
            parts.push(delta_of(&format!(r#"{{"Records":[{}]}}"#, chunk.join(","))));
            at += n;
        }
        let mut merged = Delta::default();
        while let Some(part) = parts.pop() {
            if next() % 2 == 0 {
                merged.merge(part);
            } else {
                let mut other = part;
                other.merge(merged);
                merged = other;
            }
        }
        for p in merged.principals.values_mut() {
            p.sessions.sort();
        }
        assert_eq!(merged, whole);
    }
}

#[test]
fn a_schema_1_store_moves_its_correlation_hits_into_the_log() {
    use crate::alert::correlate::HitLog;
    use crate::state::store::{Store, Synchronous};
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
    assert_eq!((left, version.as_str()), (0, "3"));
}

#[test]
fn cloudtrail_log_files_are_known_by_name_and_other_files_by_path() {
    use crate::intake::layout::cloudtrail_log_name;
    use crate::state::store::LedgerKey;
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
    use crate::state::store::{LedgerKey, Store, Synchronous};
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
    use crate::state::store::{LedgerEntry, LedgerKey, Store, Synchronous};
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
    store.commit(&delta, &[LedgerEntry { key: &key, records: 3000 }], 0, || None, None).unwrap();
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
