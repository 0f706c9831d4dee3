//! State tests: folding is exact, and merging deltas gives the same result in any order and grouping.

use super::*;
use crate::parse::Parser;

pub(crate) fn delta_of(json: &str) -> Delta {
    let mut delta = Delta::default();
    let mut scratch = Scratch::default();
    Parser::default().parse_unpadded(json.as_bytes(), &mut |e, _| delta.apply(e, &mut scratch)).unwrap();
    delta
}

pub(crate) fn record(time: &str, arn_session: &str, name: &str, error: Option<&str>, ip: &str) -> String {
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

/// Instance credentials: which session names are instance ids, and which source addresses are public.
#[test]
fn instance_sessions_and_public_addresses() {
    use crate::state::{is_instance_id, is_public_address};
    for (session, want) in [
        ("i-0123456789abcdef0", true),
        ("i-0123abcd", true),
        ("i-0123456789ABCDEF0", false),
        ("i-0123456789abcdef", false),
        ("ci-build", false),
    ] {
        assert_eq!(is_instance_id(session), want, "{session}");
    }
    for (ip, want) in [
        ("203.0.113.10", true),
        ("2001:db8::1", true),
        ("10.0.3.7", false),
        ("172.16.0.1", false),
        ("192.168.1.1", false),
        ("100.64.0.1", false),
        ("169.254.169.254", false),
        ("127.0.0.1", false),
        ("fd00::1", false),
        ("fe80::1", false),
        ("::1", false),
        ("ec2.amazonaws.com", false),
    ] {
        assert_eq!(is_public_address(ip), want, "{ip}");
    }
}
