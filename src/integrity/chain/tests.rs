//! Each tampering case against an untouched chain of six hourly digests, two log files an hour: exactly its
//! finding, naming the objects.

use super::*;

const HOUR: i64 = 3600;
const T0: i64 = 1_790_812_800; // 2026-10-01T00:00:00Z
const GRACE: Grace = Grace { digest_secs: 2 * HOUR };

fn chain() -> ChainId {
    ChainId {
        bucket: "trail".into(),
        prefix: String::new(),
        account: "111122223333".into(),
        region: "us-east-1".into(),
    }
}

fn at(key: String) -> Location {
    Location { bucket: "trail".into(), key }
}

/// A log file delivered at `hour`:`minute`, its name ending in `tag` (random in CloudTrail's names).
fn log_named(hour: i64, minute: usize, tag: &str) -> Location {
    at(format!(
        "AWSLogs/111122223333/CloudTrail/us-east-1/2026/10/01/111122223333_CloudTrail_us-east-1_20261001T{hour:02}{minute:02}Z_{tag}.json.gz"
    ))
}

/// The digest of `trail` for `hour`, delivered `at` (MMSS) past the next hour.
fn digest_named(trail: &str, hour: i64, at_mmss: &str) -> Location {
    at(format!(
        "AWSLogs/111122223333/CloudTrail-Digest/us-east-1/2026/10/01/111122223333_CloudTrail-Digest_us-east-1_{trail}_us-east-1_20261001T{:02}{at_mmss}Z.json.gz",
        hour + 1
    ))
}

fn log_at(hour: i64, n: usize) -> Location {
    log_named(hour, 10 + n * 20, &n.to_string())
}

fn digest_at(hour: i64) -> Location {
    digest_named("main", hour, "0000")
}

fn content(hour: i64, n: usize) -> String {
    format!("hash-{hour}-{n}")
}

/// Hours 0..6: a digest for each (linked to the one before), two log files each, all read.
fn untouched() -> Snapshot {
    let mut s = Snapshot::default();
    for hour in 0..6 {
        let logs: Vec<(Location, String)> = (0..2).map(|n| (log_at(hour, n), content(hour, n))).collect();
        for (log, hash) in &logs {
            let time = T0 + hour * HOUR + 600 + (log.key.len() as i64 % 2) * 60;
            s.logs.push(LogRecord { location: log.clone(), chain: chain(), time, sha256: hash.clone() });
        }
        s.digests.push(DigestRecord {
            location: digest_at(hour),
            chain: chain(),
            start_time: T0 + hour * HOUR,
            end_time: T0 + (hour + 1) * HOUR,
            previous: (hour > 0).then(|| digest_at(hour - 1)),
            log_files: logs,
            check: DigestCheck::Verified,
        });
    }
    s
}

fn without_digests(mut s: Snapshot, hours: &[i64]) -> Snapshot {
    s.digests.retain(|d| !hours.iter().any(|h| d.location == digest_at(*h)));
    s
}

#[test]
fn an_untouched_chain_validates() {
    assert_eq!(evaluate(&untouched(), GRACE), []);
    // Unsigned digests (local files without a signature) still check hashes and links.
    let mut unsigned = untouched();
    unsigned.digests.iter_mut().for_each(|d| d.check = DigestCheck::Unsigned);
    assert_eq!(evaluate(&unsigned, GRACE), []);
}

#[test]
fn each_tampering_case_raises_exactly_its_finding() {
    let digest = |hour| digest_at(hour);
    let cases: Vec<(&str, Snapshot, Vec<Finding>)> = vec![
        (
            "log deleted (gone from the bucket)",
            {
                let mut s = untouched();
                s.logs.retain(|l| l.location != log_at(2, 1));
                s.gone.push(log_at(2, 1));
                s
            },
            vec![Finding::LogFileMissing { log: log_at(2, 1), digest: digest(2) }],
        ),
        (
            "log never delivered, and the chain's files went on past the grace",
            {
                let mut s = untouched();
                s.logs.retain(|l| l.location != log_at(1, 0));
                s
            },
            vec![Finding::LogFileMissing { log: log_at(1, 0), digest: digest(1) }],
        ),
        (
            "log rewritten",
            {
                let mut s = untouched();
                s.logs.iter_mut().filter(|l| l.location == log_at(3, 0)).for_each(|l| l.sha256 = "rewritten".into());
                s
            },
            vec![Finding::LogFileAltered {
                log: log_at(3, 0),
                digest: digest(3),
                listed: content(3, 0),
                found: "rewritten".into(),
            }],
        ),
        (
            "log injected",
            {
                let mut s = untouched();
                s.logs.push(LogRecord {
                    location: log_at(2, 9),
                    chain: chain(),
                    time: T0 + 2 * HOUR + 1800,
                    sha256: "x".into(),
                });
                s
            },
            vec![Finding::LogFileUnlisted { log: log_at(2, 9), digest: digest(2) }],
        ),
        (
            "one digest deleted",
            without_digests(untouched(), &[2]),
            vec![Finding::DigestMissing {
                chain: chain(),
                missing: Some(digest(2)),
                after: digest(1),
                before: digest(3),
                from: T0 + 2 * HOUR,
                to: T0 + 3 * HOUR,
            }],
        ),
        (
            "two consecutive digests deleted",
            without_digests(untouched(), &[2, 3]),
            vec![Finding::DigestMissing {
                chain: chain(),
                missing: Some(digest(3)),
                after: digest(1),
                before: digest(4),
                from: T0 + 2 * HOUR,
                to: T0 + 4 * HOUR,
            }],
        ),
        (
            "digest rewritten (its signature no longer verifies)",
            {
                let mut s = untouched();
                s.digests[2].check = DigestCheck::Invalid("the signature does not verify".into());
                s
            },
            vec![Finding::DigestInvalid { digest: digest(2), reason: "the signature does not verify".into() }],
        ),
        (
            "digest signed with another key",
            {
                let mut s = untouched();
                s.digests[4].check = DigestCheck::Invalid("no public key with fingerprint f".into());
                s
            },
            vec![Finding::DigestInvalid { digest: digest(4), reason: "no public key with fingerprint f".into() }],
        ),
        (
            "digests stopping while log files go on",
            {
                let mut s = without_digests(untouched(), &[4, 5]);
                // What the removed digests listed is simply not listed now: no digest covers those hours.
                s.logs.push(LogRecord {
                    location: log_at(7, 0),
                    chain: chain(),
                    time: T0 + 7 * HOUR + 600,
                    sha256: "y".into(),
                });
                s
            },
            vec![Finding::DigestChainEnded { chain: chain(), last_digest: digest(3), newest_log: log_at(7, 0) }],
        ),
    ];
    for (case, snapshot, want) in cases {
        assert_eq!(evaluate(&snapshot, GRACE), want, "{case}");
    }
}

/// What may still arrive is not reported: the newest hour's listed files before the grace has passed, the
/// last digests of a backfill that ends with them, and a first digest linking to one before the window.
#[test]
fn what_may_still_arrive_is_not_reported() {
    // The last hour's file not read yet: its digest ended less than the grace before the newest file.
    let mut late = untouched();
    late.logs.retain(|l| l.location != log_at(5, 1));
    assert_eq!(evaluate(&late, GRACE), []);
    // A backfill of hours 2..6 only: the first digest links to hour 1, outside the window.
    let mut window = untouched();
    window.digests.retain(|d| d.start_time >= T0 + 2 * HOUR);
    window.logs.retain(|l| l.time >= T0 + 2 * HOUR);
    assert_eq!(evaluate(&window, GRACE), []);
    // A moved digest is invalid where it was found; the finding names it, and the chain keeps its place.
    let mut moved = untouched();
    moved.digests[1].check = DigestCheck::Invalid("found elsewhere".into());
    let got = evaluate(&moved, GRACE);
    assert_eq!(got.iter().map(Finding::rule).collect::<Vec<_>>(), ["digest-invalid"]);
    assert_eq!(got[0].subject(), digest_at(1).to_string());
}

/// The trail in a digest's name.
fn digest_trail(name: &str) -> Option<&str> {
    crate::layout::cloudtrail_digest_name(name).map(|d| d.trail)
}

/// Chains come from CloudTrail's layout: a digest and the log files it lists share one; another region, account,
/// prefix or bucket is another chain, and Insights files are in none.
#[test]
fn chains_are_read_from_the_layout() {
    let log = "logs/AWSLogs/o-abc123/111122223333/CloudTrail/eu-west-1/2026/10/01/111122223333_CloudTrail_eu-west-1_20261001T0010Z_a.json.gz";
    let digest = "logs/AWSLogs/o-abc123/111122223333/CloudTrail-Digest/eu-west-1/2026/10/01/111122223333_CloudTrail-Digest_eu-west-1_org_us-east-1_20261001T010000Z.json.gz";
    let chain = ChainId::of("trail", log).unwrap();
    assert_eq!(chain, ChainId::of("trail", digest).unwrap());
    assert_eq!(chain.prefix, "logs/AWSLogs/o-abc123/");
    assert_eq!((chain.account.as_str(), chain.region.as_str()), ("111122223333", "eu-west-1"));
    for other in [
        ChainId::of("other-bucket", log),
        ChainId::of("trail", &log.replace("logs/", "other/")),
        ChainId::of("trail", &log.replace("eu-west-1", "us-east-1")),
        ChainId::of("trail", &log.replace("o-abc123/", "")),
    ] {
        assert_ne!(other.unwrap(), chain);
    }
    assert_eq!(ChainId::of("trail", &log.replace("/CloudTrail/", "/CloudTrail-Insight/")), None);
    assert_eq!(ChainId::of("trail", "elsewhere/file.json.gz"), None);
    // The trail is in a digest's name only; a trail's name may hold underscores.
    assert_eq!(digest_trail(file_name(digest)), Some("org"));
    let underscored = "111122223333_CloudTrail-Digest_eu-west-1_data_events_2_us-east-1_20261001T010000Z.json.gz";
    assert_eq!(digest_trail(underscored), Some("data_events_2"));
    assert_eq!(digest_trail(file_name(log)), None);
    assert_eq!(digest_trail("111122223333_CloudTrail-Digest_eu-west-1_20261001T010000Z.json.gz"), None);
}

/// From digest JSON as CloudTrail writes it to findings: two linked digests, their files, one rewritten.
#[test]
fn parsed_digests_feed_the_chain() {
    let key = |hour: u32| {
        format!(
            "AWSLogs/111122223333/CloudTrail-Digest/us-east-1/2026/10/01/111122223333_CloudTrail-Digest_us-east-1_main_us-east-1_20261001T{hour:02}3000Z.json.gz"
        )
    };
    let log = |hour: u32| {
        format!(
            "AWSLogs/111122223333/CloudTrail/us-east-1/2026/10/01/111122223333_CloudTrail_us-east-1_20261001T{hour:02}05Z_x.json.gz"
        )
    };
    let json = |hour: u32, previous: Option<String>| {
        serde_json::json!({
            "awsAccountId": "111122223333",
            "digestStartTime": format!("2026-10-01T{:02}:30:00Z", hour - 1),
            "digestEndTime": format!("2026-10-01T{hour:02}:30:00Z"),
            "digestS3Bucket": "trail", "digestS3Object": key(hour),
            "digestPublicKeyFingerprint": "f", "digestSignatureAlgorithm": "SHA256withRSA",
            "previousDigestS3Bucket": previous.as_ref().map(|_| "trail"), "previousDigestS3Object": previous,
            "previousDigestSignature": null,
            "logFiles": [{"s3Bucket": "trail", "s3Object": log(hour), "hashValue": format!("h{hour}"), "hashAlgorithm": "SHA-256"}]
        })
        .to_string()
    };
    let mut snapshot = Snapshot::default();
    for (hour, previous) in [(1, None), (2, Some(key(1)))] {
        let text = json(hour, previous);
        let digest = super::super::Digest::parse(text.as_bytes(), "trail", &key(hour)).unwrap();
        let location = Location { bucket: "trail".into(), key: key(hour) };
        snapshot.digests.push(DigestRecord::of(&digest, location, DigestCheck::Unsigned).unwrap());
        let time = crate::layout::delivery_time(&log(hour)).unwrap();
        let sha256 = if hour == 2 { "changed".to_owned() } else { format!("h{hour}") };
        let location = Location { bucket: "trail".into(), key: log(hour) };
        snapshot.logs.push(LogRecord { chain: ChainId::of("trail", &log(hour)).unwrap(), location, time, sha256 });
    }
    let got = evaluate(&snapshot, GRACE);
    assert_eq!(got.iter().map(Finding::rule).collect::<Vec<_>>(), ["log-file-altered"]);
    assert_eq!(got[0].subject(), format!("s3://trail/{}", log(2)));
}

/// A second trail ("data", for data events, say) writing to the same bucket and prefix: its log files sit beside
/// the first trail's and carry no trail name; its digests carry it, and cover hours offset by 91 seconds.
fn data_log_at(hour: i64, n: usize) -> Location {
    log_named(hour, 15 + n * 20, &format!("d{n}"))
}

fn data_digest_at(hour: i64) -> Location {
    digest_named("data_events", hour, "0131")
}

/// `untouched` with the data trail's hours 0..6 beside it.
fn two_trails() -> Snapshot {
    let mut s = untouched();
    for hour in 0..6 {
        let logs: Vec<(Location, String)> =
            (0..2).map(|n| (data_log_at(hour, n), format!("data-{hour}-{n}"))).collect();
        for (n, (log, hash)) in logs.iter().enumerate() {
            let time = T0 + hour * HOUR + 900 + n as i64 * 1200;
            s.logs.push(LogRecord { location: log.clone(), chain: chain(), time, sha256: hash.clone() });
        }
        s.digests.push(DigestRecord {
            location: data_digest_at(hour),
            chain: chain(),
            start_time: T0 + hour * HOUR + 91,
            end_time: T0 + (hour + 1) * HOUR + 91,
            previous: (hour > 0).then(|| data_digest_at(hour - 1)),
            log_files: logs,
            check: DigestCheck::Verified,
        });
    }
    s
}

/// Each trail's digests are a chain of their own, and a log file is judged unlisted only once every trail
/// writing there has a digest for its hour: one trail's digest arriving first accuses nothing.
#[test]
fn two_trails_in_one_place_are_two_chains() {
    assert_eq!(evaluate(&two_trails(), GRACE), []);
    let data_trail_late = {
        let mut s = two_trails();
        s.digests.retain(|d| d.location != data_digest_at(5));
        s
    };
    assert_eq!(evaluate(&data_trail_late, GRACE), [], "the data trail's last digest is still on its way");
    let data_validation_off = {
        let mut s = two_trails();
        s.digests.retain(|d| !(3..6).any(|h| d.location == data_digest_at(h)));
        s
    };
    assert_eq!(
        evaluate(&data_validation_off, GRACE),
        [Finding::DigestChainEnded { chain: chain(), last_digest: data_digest_at(2), newest_log: data_log_at(5, 1) }]
    );
    let data_digest_deleted = {
        let mut s = two_trails();
        s.digests.retain(|d| d.location != data_digest_at(2));
        s
    };
    assert_eq!(
        evaluate(&data_digest_deleted, GRACE),
        [Finding::DigestMissing {
            chain: chain(),
            missing: Some(data_digest_at(2)),
            after: data_digest_at(1),
            before: data_digest_at(3),
            from: T0 + 2 * HOUR + 91,
            to: T0 + 3 * HOUR + 91,
        }]
    );
    let injected = {
        let mut s = two_trails();
        let location = data_log_at(3, 7);
        s.logs.push(LogRecord { location, chain: chain(), time: T0 + 3 * HOUR + 1500, sha256: "x".into() });
        s
    };
    assert_eq!(
        evaluate(&injected, GRACE),
        [Finding::LogFileUnlisted { log: data_log_at(3, 7), digest: data_digest_at(3) }]
    );
}
