//! Log file validation end to end: a trail of six hours (two log files and one signed digest an hour, each digest
//! linked to the one before), signed with the test key in `tests/data/integrity`, replayed from local files (with
//! `.signature` sidecars) and from moto's S3 (with the `signature` metadata CloudTrail sets). The untouched trail
//! validates; each tampering case raises exactly its alert, naming the objects, once.

use std::path::{Path, PathBuf};

use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::{SignatureEncoding, Signer};
use sha2::{Digest as _, Sha256};

use crate::util::*;

const BUCKET: &str = "trail-bucket";
const ACCOUNT: &str = "111122223333";
const HOURS: usize = 6;
const FINGERPRINT: &str = "e97a99ae14a55d18157976cc203bf57c";
const INTEGRITY_RULES: [&str; 6] = [
    "log-file-missing",
    "log-file-altered",
    "log-file-unlisted",
    "digest-missing",
    "digest-invalid",
    "digest-chain-ended",
];

/// One object of the trail bucket: its key, its (gzipped) bytes, and the signature CloudTrail puts in its metadata.
#[derive(Clone)]
struct Object {
    key: String,
    bytes: Vec<u8>,
    signature: Option<String>,
}

fn log_key(hour: usize, n: usize) -> String {
    trail_log_key("main", hour, n)
}

fn digest_key(hour: usize) -> String {
    trail_digest_key("main", hour)
}

/// A log file of the trail `trail`: its name does not say the trail (CloudTrail's do not); the end of the name,
/// random in CloudTrail's, keeps two trails' files apart.
fn trail_log_key(trail: &str, hour: usize, n: usize) -> String {
    format!(
        "AWSLogs/{ACCOUNT}/CloudTrail/us-east-1/2026/10/01/{ACCOUNT}_CloudTrail_us-east-1_20261001T{hour:02}{:02}Z_h{hour}n{n}{}.json.gz",
        10 + n * 20,
        if trail == "main" { String::new() } else { format!("-{trail}") }
    )
}

fn trail_digest_key(trail: &str, hour: usize) -> String {
    format!(
        "AWSLogs/{ACCOUNT}/CloudTrail-Digest/us-east-1/2026/10/01/{ACCOUNT}_CloudTrail-Digest_us-east-1_{trail}_us-east-1_20261001T{:02}0000Z.json.gz",
        hour + 1
    )
}

/// A log file's JSON: one ordinary call a few minutes before its delivery.
fn log_json(hour: usize, n: usize, what: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "Records": [{
        "eventVersion": "1.08",
        "userIdentity": {
            "type": "IAMUser", "principalId": "AIDAEXAMPLE", "arn": format!("arn:aws:iam::{ACCOUNT}:user/alice"),
            "accountId": ACCOUNT, "accessKeyId": "AKIAEXAMPLEEXAMPLE01", "userName": "alice"
        },
        "eventTime": format!("2026-10-01T{hour:02}:{:02}:00Z", 5 + n * 20),
        "eventSource": "s3.amazonaws.com",
        "eventName": what,
        "awsRegion": "us-east-1",
        "sourceIPAddress": "198.51.100.7",
        "userAgent": "aws-cli/2.15.0",
        "requestParameters": null,
        "responseElements": null,
        "eventID": format!("00000000-0000-0000-0000-{hour:06}{n:06}"),
        "readOnly": true,
        "eventType": "AwsApiCall",
        "recipientAccountId": ACCOUNT
    }]}))
    .unwrap()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn private_key(name: &str) -> rsa::pkcs1v15::SigningKey<Sha256> {
    let der = std::fs::read(data(&format!("integrity/{name}"))).unwrap();
    rsa::pkcs1v15::SigningKey::new(rsa::PrivateKey::from_pkcs8_der(&der).unwrap())
}

/// Signs a digest's JSON as CloudTrail does (the documented signing string), with `key`.
fn sign(json: &[u8], key: &rsa::pkcs1v15::SigningKey<Sha256>) -> String {
    let digest: serde_json::Value = serde_json::from_slice(json).unwrap();
    let text = |f: &str| digest[f].as_str().unwrap_or("null").to_owned();
    let signed = format!(
        "{}\n{}/{}\n{}\n{}",
        text("digestEndTime"),
        text("digestS3Bucket"),
        text("digestS3Object"),
        sha256_hex(json),
        text("previousDigestSignature")
    );
    hex::encode(key.sign(signed.as_bytes()).to_bytes())
}

fn digest_json(trail: &str, hour: usize, logs: &[(String, Vec<u8>)], previous: Option<(&str, &str)>) -> Vec<u8> {
    let time = |h: usize| format!("2026-10-01T{h:02}:00:00Z");
    serde_json::to_vec(&serde_json::json!({
        "awsAccountId": ACCOUNT,
        "digestStartTime": time(hour),
        "digestEndTime": time(hour + 1),
        "digestS3Bucket": BUCKET,
        "digestS3Object": trail_digest_key(trail, hour),
        "digestPublicKeyFingerprint": FINGERPRINT,
        "digestSignatureAlgorithm": "SHA256withRSA",
        "newestEventTime": time(hour + 1),
        "oldestEventTime": time(hour),
        "previousDigestS3Bucket": previous.map(|_| BUCKET),
        "previousDigestS3Object": previous.map(|(key, _)| key),
        "previousDigestHashValue": previous.map(|_| "00"),
        "previousDigestHashAlgorithm": previous.map(|_| "SHA-256"),
        "previousDigestSignature": previous.map(|(_, signature)| signature),
        "logFiles": logs.iter().map(|(key, json)| serde_json::json!({
            "s3Bucket": BUCKET, "s3Object": key, "hashValue": sha256_hex(json), "hashAlgorithm": "SHA-256",
            "newestEventTime": time(hour), "oldestEventTime": time(hour),
        })).collect::<Vec<_>>(),
    }))
    .unwrap()
}

/// The untouched trail, in delivery order.
fn trail() -> Vec<Object> {
    trail_named("main")
}

/// The untouched trail `name`, in delivery order.
fn trail_named(name: &str) -> Vec<Object> {
    let key = private_key("test-key.pk8.der");
    let mut objects = Vec::new();
    let mut previous: Option<(String, String)> = None;
    for hour in 0..HOURS {
        let what = if name == "main" { "ListBuckets" } else { "GetObject" };
        let logs: Vec<(String, Vec<u8>)> =
            (0..2).map(|n| (trail_log_key(name, hour, n), log_json(hour, n, what))).collect();
        for (k, json) in &logs {
            objects.push(Object { key: k.clone(), bytes: gzip(json), signature: None });
        }
        let json = digest_json(name, hour, &logs, previous.as_ref().map(|(k, s)| (k.as_str(), s.as_str())));
        let signature = sign(&json, &key);
        let digest = trail_digest_key(name, hour);
        objects.push(Object { key: digest.clone(), bytes: gzip(&json), signature: Some(signature.clone()) });
        previous = Some((digest, signature));
    }
    objects
}

/// A tampering case: what is done to the bucket, and the one alert (rule, and the object keys its summary names)
/// it must raise.
struct Case {
    name: &'static str,
    tamper: fn(&mut Vec<Object>),
    rule: &'static str,
    names: Vec<String>,
    /// Log files the report counts valid after it: listed by a trusted digest and hashing as listed.
    valid: u64,
}

fn remove(objects: &mut Vec<Object>, key: &str) -> Object {
    let at = objects.iter().position(|o| o.key == key).unwrap_or_else(|| panic!("{key} is in the trail"));
    objects.remove(at)
}

fn find<'o>(objects: &'o mut [Object], key: &str) -> &'o mut Object {
    objects.iter_mut().find(|o| o.key == key).unwrap()
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(bytes), &mut out).unwrap();
    out
}

fn renamed_digest_key() -> String {
    digest_key(2).replace("T030000Z", "T030500Z")
}

fn injected_key() -> String {
    format!(
        "AWSLogs/{ACCOUNT}/CloudTrail/us-east-1/2026/10/01/{ACCOUNT}_CloudTrail_us-east-1_20261001T0245Z_injected.json.gz"
    )
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "log deleted",
            tamper: |o| drop(remove(o, &log_key(1, 0))),
            rule: "log-file-missing",
            names: vec![log_key(1, 0), digest_key(1)],
            valid: 11,
        },
        Case {
            name: "log rewritten",
            tamper: |o| find(o, &log_key(1, 1)).bytes = gzip(&log_json(1, 1, "ListBucketsAgain")),
            rule: "log-file-altered",
            names: vec![log_key(1, 1), digest_key(1)],
            valid: 11,
        },
        Case {
            name: "log rewritten into something that is not a log file",
            tamper: |o| find(o, &log_key(4, 0)).bytes = gzip(br#"{"not": "a log file"}"#),
            rule: "log-file-altered",
            names: vec![log_key(4, 0), digest_key(4)],
            valid: 11,
        },
        Case {
            name: "log injected",
            tamper: |o| {
                let bytes = gzip(&log_json(2, 2, "ListBuckets"));
                o.push(Object { key: injected_key(), bytes, signature: None });
            },
            rule: "log-file-unlisted",
            names: vec![injected_key(), digest_key(2)],
            valid: 12,
        },
        Case {
            name: "one digest deleted",
            tamper: |o| drop(remove(o, &digest_key(2))),
            rule: "digest-missing",
            names: vec![digest_key(2), digest_key(1), digest_key(3)],
            valid: 10,
        },
        Case {
            name: "two consecutive digests deleted",
            tamper: |o| {
                remove(o, &digest_key(2));
                remove(o, &digest_key(3));
            },
            rule: "digest-missing",
            names: vec![digest_key(3), digest_key(1), digest_key(4)],
            valid: 8,
        },
        Case {
            name: "digest rewritten",
            tamper: |o| {
                let digest = find(o, &digest_key(2));
                let json = String::from_utf8(gunzip(&digest.bytes)).unwrap();
                let altered = sha256_hex(&gzip(b"another log file"));
                let listed = sha256_hex(&log_json(2, 0, "ListBuckets"));
                digest.bytes = gzip(json.replace(&listed, &altered).as_bytes());
            },
            rule: "digest-invalid",
            names: vec![digest_key(2)],
            valid: 10,
        },
        Case {
            name: "digest signed with another key",
            tamper: |o| {
                let digest = find(o, &digest_key(2));
                digest.signature = Some(sign(&gunzip(&digest.bytes), &private_key("other-key.pk8.der")));
            },
            rule: "digest-invalid",
            names: vec![digest_key(2)],
            valid: 10,
        },
        Case {
            name: "digest moved",
            tamper: |o| {
                let mut digest = remove(o, &digest_key(2));
                digest.key = renamed_digest_key();
                o.push(digest);
            },
            rule: "digest-invalid",
            names: vec![renamed_digest_key(), digest_key(2)],
            valid: 10,
        },
        Case {
            name: "digests stopping",
            tamper: |o| {
                for hour in 3..HOURS {
                    remove(o, &digest_key(hour));
                }
            },
            rule: "digest-chain-ended",
            names: vec![digest_key(2), log_key(HOURS - 1, 1)],
            valid: 6,
        },
    ]
}

/// `[integrity]` on, keys from the test key list, the state in `dir`; `extra` is appended (an `[aws]` section).
fn config(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("trailwatch.toml");
    let keys = data("integrity/public-keys.json");
    std::fs::write(
        &path,
        format!(
            "[store]\npath = {:?}\n[integrity]\nenabled = true\npublic_keys = \"file\"\npublic_key_files = [{:?}]\n{extra}",
            dir.join("state.db"),
            keys
        ),
    )
    .unwrap();
    path
}

/// The trail's objects as local files under `dir/trail`, each digest with its `.signature` sidecar when `signed`.
fn write_local(dir: &Path, objects: &[Object], signed: bool) -> PathBuf {
    let root = dir.join("trail");
    for o in objects {
        let path = root.join(&o.key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &o.bytes).unwrap();
        if let (true, Some(signature)) = (signed, &o.signature) {
            std::fs::write(format!("{}.signature", path.display()), signature).unwrap();
        }
    }
    root
}

/// The integrity alerts a state holds: (rule, summary).
fn integrity_alerts(state: &Path) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = stored_alerts(state)
        .into_iter()
        .map(|(_, body)| serde_json::from_str::<serde_json::Value>(&body).unwrap())
        .filter(|a| INTEGRITY_RULES.contains(&a["rule"].as_str().unwrap()))
        .map(|a| (a["rule"].as_str().unwrap().to_owned(), a["summary"].as_str().unwrap().to_owned()))
        .collect();
    out.sort();
    out
}

fn integrity_report(config: &Path) -> (i32, serde_json::Value) {
    let out = trailwatch(&["--config", config.to_str().unwrap(), "integrity", "report", "--format", "json"]);
    let json =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap(), json)
}

/// Checks that a replayed trail raised exactly `case`'s alert, naming its objects, and that a second replay of the
/// same objects raises nothing new.
#[track_caller]
fn assert_one_alert(case: &Case, state: &Path, replay_again: impl Fn()) {
    let alerts = integrity_alerts(state);
    assert_eq!(alerts.len(), 1, "{}: {alerts:#?}", case.name);
    let (rule, summary) = &alerts[0];
    assert_eq!(rule, case.rule, "{}: {summary}", case.name);
    for name in &case.names {
        let name = name.rsplit('/').next().unwrap();
        assert!(summary.contains(name), "{}: `{summary}` does not name {name}", case.name);
    }
    replay_again();
    assert_eq!(integrity_alerts(state), alerts, "{}: a second replay raised something new", case.name);
}

#[test]
fn local_files_an_untouched_chain_validates_signed_or_not() {
    for signed in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path(), "");
        let root = write_local(dir.path(), &trail(), signed);
        let out = ok(&trailwatch(&["--config", config.to_str().unwrap(), "replay", root.to_str().unwrap()]));
        assert!(
            out.contains("integrity: 6 digests and 12 log files checked, 0 log file and 0 digest problems"),
            "{out}"
        );
        assert_eq!(integrity_alerts(&dir.path().join("state.db")), []);
        let (code, report) = integrity_report(&config);
        assert_eq!(code, 0, "{report:#}");
        let chain = &report["chains"][0];
        let (verified, unsigned) = if signed { (6, 0) } else { (0, 6) };
        assert_eq!(
            (chain["digests_verified"].as_u64(), chain["digests_unsigned"].as_u64()),
            (Some(verified), Some(unsigned))
        );
        assert_eq!(chain["log_files_valid"], 12, "{report:#}");
        assert_eq!(
            (chain["from"].as_str(), chain["to"].as_str()),
            (Some("2026-10-01T00:00:00Z"), Some("2026-10-01T06:00:00Z"))
        );
        // With key files, nothing looks for AWS settings (a region up to instance metadata, which fails here).
        let out = bin()
            .args(["--config", config.to_str().unwrap(), "integrity", "report"])
            .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:9")
            .env_remove("AWS_REGION")
            .env_remove("AWS_DEFAULT_REGION")
            .output()
            .unwrap();
        let table = ok(&out);
        assert_eq!(String::from_utf8_lossy(&out.stderr), "", "the report logged");
        assert!(table.contains("no problems found"), "{table}");
        assert_eq!(table.contains("came without a signature"), !signed, "{table}");
    }
}

/// Two trails writing to one bucket and prefix (a second one for data events, say): their log files sit side by
/// side, each trail's digests are a chain, and the second trail's newest digest still on its way accuses none of
/// its files of having been injected.
#[test]
fn two_trails_in_one_place_validate_as_two_chains() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "");
    let mut objects = trail();
    let data_last_digest = trail_digest_key("data_events", HOURS - 1);
    objects.extend(trail_named("data_events").into_iter().filter(|o| o.key != data_last_digest));
    let root = write_local(dir.path(), &objects, true);
    ok(&trailwatch(&["--config", config.to_str().unwrap(), "replay", root.to_str().unwrap()]));
    assert_eq!(integrity_alerts(&dir.path().join("state.db")), []);
    let (code, report) = integrity_report(&config);
    assert_eq!(code, 0, "{report:#}");
    let chain = &report["chains"][0];
    assert_eq!(chain["trails"], serde_json::json!(["data_events", "main"]), "{report:#}");
    let figures =
        ["digests_verified", "log_files_valid", "log_files_pending", "log_files_unlisted"].map(|f| chain[f].clone());
    assert_eq!(figures, [12 - 1, 24 - 2, 2, 0].map(serde_json::Value::from), "{report:#}");
}

/// Whoever can write to the trail bucket decides how many objects no digest lists: a check examines
/// `max_untrusted_per_check` of them per place (oldest first) and counts the rest, so a flood of objects bounds
/// neither its memory nor its alerts; what the digests list is checked in full.
#[test]
fn a_flood_of_unlisted_files_is_counted_beyond_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "max_untrusted_per_check = 2\n");
    let mut objects = trail();
    let flood = |i: usize| injected_key().replace("T0245Z_injected", &format!("T02{}Z_flood{i}", 40 + i));
    for i in 0..5 {
        objects.push(Object { key: flood(i), bytes: gzip(&log_json(2, 2, "ListBuckets")), signature: None });
    }
    let root = write_local(dir.path(), &objects, true);
    let out = ok(&trailwatch(&["--config", config.to_str().unwrap(), "replay", root.to_str().unwrap()]));
    assert!(out.contains("2 new alerts, 3 files not examined"), "{out}");
    let alerts = integrity_alerts(&dir.path().join("state.db"));
    let named: Vec<bool> = (0..5).map(|i| alerts.iter().any(|(_, summary)| summary.contains(&flood(i)))).collect();
    assert_eq!(named, [true, true, false, false, false], "{alerts:#?}");
    assert!(alerts.iter().all(|(rule, _)| rule == "log-file-unlisted"), "{alerts:#?}");
    let (code, report) = integrity_report(&config);
    assert_eq!(code, 1, "{report:#}");
    let chain = &report["chains"][0];
    let figures = ["log_files_valid", "log_files_unlisted", "log_files_unexamined"].map(|f| chain[f].clone());
    assert_eq!(figures, [12, 2, 3].map(serde_json::Value::from), "{report:#}");
    let out = trailwatch(&["--config", config.to_str().unwrap(), "integrity", "report"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("3 log files that no digest lists and 0 invalid digests were counted but not examined"),
        "{table}"
    );
}

/// Whoever can write to the trail bucket names the objects: an injected file whose name carries an escape
/// sequence and a newline is named escaped in the report's table.
#[test]
fn the_report_table_escapes_object_names() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "");
    let mut objects = trail();
    let hostile = injected_key().replace("_injected", "_in\u{1b}]0;pwned\u{7}\nno problems found");
    let bytes = gzip(&log_json(2, 2, "ListBuckets"));
    objects.push(Object { key: hostile, bytes, signature: None });
    let root = write_local(dir.path(), &objects, true);
    ok(&trailwatch(&["--config", config.to_str().unwrap(), "replay", root.to_str().unwrap()]));
    let out = trailwatch(&["--config", config.to_str().unwrap(), "integrity", "report"]);
    assert_eq!(out.status.code(), Some(1));
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(!table.chars().any(|c| c.is_control() && c != '\n'), "{table:?}");
    assert!(table.contains(r"_in\u{1b}]0;pwned\u{7}\u{a}no problems found.json.gz"), "{table}");
    assert!(!table.lines().any(|l| l.starts_with("no problems found")), "{table}");
}

#[test]
fn local_files_each_tampering_case_raises_exactly_its_alert_once() {
    for case in cases() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path(), "");
        let mut objects = trail();
        (case.tamper)(&mut objects);
        let root = write_local(dir.path(), &objects, true);
        let replay = || ok(&trailwatch(&["--config", config.to_str().unwrap(), "replay", root.to_str().unwrap()]));
        replay();
        assert_one_alert(&case, &dir.path().join("state.db"), || drop(replay()));
        let (code, report) = integrity_report(&config);
        assert_eq!(code, 1, "{}: {report:#}", case.name);
        assert_eq!(report["findings"].as_array().unwrap().len(), 1, "{}: {report:#}", case.name);
        // The chain's figure for what was done, and the log files left untouched counted valid.
        let chain = &report["chains"][0];
        let figure = match case.rule {
            "log-file-missing" => Some("log_files_missing"),
            "log-file-altered" => Some("log_files_altered"),
            "log-file-unlisted" => Some("log_files_unlisted"),
            "digest-missing" => Some("digests_missing"),
            "digest-invalid" => Some("digests_invalid"),
            _ => None,
        };
        if let Some(figure) = figure {
            assert_eq!(chain[figure], 1, "{}: {figure} in {chain:#}", case.name);
        }
        assert_eq!(chain["log_files_valid"], case.valid, "{}: {chain:#}", case.name);
    }
}

#[test]
fn s3_each_tampering_case_raises_exactly_its_alert_once() {
    use aws_sdk_s3::primitives::ByteStream;
    let moto = crate::aws::Moto::start();
    let s3 = moto.s3();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let untouched = Case { name: "untouched", tamper: |_| {}, rule: "", names: Vec::new(), valid: 12 };
    for case in std::iter::once(untouched).chain(cases()) {
        let dir = tempfile::tempdir().unwrap();
        rt.block_on(s3.delete_bucket().bucket(BUCKET).send()).ok();
        rt.block_on(s3.create_bucket().bucket(BUCKET).send()).unwrap();
        let mut objects = trail();
        (case.tamper)(&mut objects);
        for o in &objects {
            let mut put = s3.put_object().bucket(BUCKET).key(&o.key).body(ByteStream::from(o.bytes.clone()));
            if let Some(signature) = &o.signature {
                put = put.metadata("signature", signature).metadata("signature-algorithm", "SHA256withRSA");
            }
            rt.block_on(put.send()).unwrap();
        }
        let aws = std::fs::read_to_string(moto.config(dir.path())).unwrap();
        let aws = &aws[aws.find("[aws]").unwrap()..];
        let config = config(dir.path(), aws);
        let replay = || {
            let out = crate::aws::trailwatch_aws(&[
                "--config",
                config.to_str().unwrap(),
                "replay",
                &format!("s3://{BUCKET}"),
            ]);
            ok(&out)
        };
        let out = replay();
        let state = dir.path().join("state.db");
        if case.rule.is_empty() {
            assert!(
                out.contains("integrity: 6 digests and 12 log files checked, 0 log file and 0 digest problems"),
                "{out}"
            );
            assert_eq!(integrity_alerts(&state), []);
            let (code, report) = integrity_report(&config);
            assert_eq!((code, report["chains"][0]["digests_verified"].as_u64()), (0, Some(6)), "{report:#}");
        } else {
            assert_one_alert(&case, &state, || drop(replay()));
        }
        let keys: Vec<String> = rt
            .block_on(s3.list_objects_v2().bucket(BUCKET).send())
            .unwrap()
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect();
        for key in keys {
            rt.block_on(s3.delete_object().bucket(BUCKET).key(key).send()).unwrap();
        }
    }
}

/// The daemon on a spool: digests arrive before some of the log files they list and after others, and the
/// periodic check raises the one rewritten log file, with the metrics to match.
#[test]
fn spool_daemon_checks_digests_and_log_files_as_they_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, spool, port) = spool_daemon(dir.path(), "");
    let mut objects = trail();
    find(&mut objects, &log_key(1, 1)).bytes = gzip(&log_json(1, 1, "ListBucketsAgain"));
    // The first three hours: their digests before their log files. Then the rest, in delivery order, once those
    // are applied (a check between two files of one drop may see the later ones first).
    let early = |o: &Object| match o.key.contains("CloudTrail-Digest") {
        true => o.key < digest_key(3),
        false => o.key < log_key(3, 0),
    };
    let (mut first, rest): (Vec<Object>, Vec<Object>) = objects.into_iter().partition(early);
    first.sort_by_key(|o| !o.key.contains("CloudTrail-Digest"));
    let metrics = || http_get(port, "/metrics").filter(|(status, _)| *status == 200).map(|(_, body)| body);
    wait_for(std::time::Duration::from_secs(30), metrics).expect("daemon up");
    let drop_all = |objects: &[Object]| {
        for o in objects {
            let path = spool.join(&o.key);
            if let Some(signature) = &o.signature {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(format!("{}.signature", path.display()), signature).unwrap();
            }
            drop_file(&path, &o.bytes);
        }
    };
    let applied = |n: usize| {
        wait_for(std::time::Duration::from_secs(60), || {
            let got = metric(&metrics()?, r#"trailwatch_files_total{outcome="applied"}"#)?;
            (got == n as f64).then_some(())
        })
        .unwrap_or_else(|| panic!("{n} files not applied: {:?}", metrics()))
    };
    drop_all(&first);
    applied(first.len());
    drop_all(&rest);
    applied(first.len() + rest.len());
    let state = dir.path().join("state.db");
    let body = wait_for(std::time::Duration::from_secs(60), || {
        let body = metrics()?;
        let valid = metric(&body, r#"trailwatch_integrity_log_files{outcome="valid"}"#)?;
        (valid == 11.0 && !integrity_alerts(&state).is_empty()).then_some(body)
    })
    .unwrap_or_else(|| panic!("no integrity alert: {:?}", metrics()));
    let alerts = integrity_alerts(&state);
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(alerts[0].0, "log-file-altered");
    assert!(alerts[0].1.contains(log_key(1, 1).rsplit('/').next().unwrap()), "{}", alerts[0].1);
    for (sample, want) in [
        (r#"trailwatch_integrity_digests_total{outcome="verified"}"#, 6.0),
        (r#"trailwatch_integrity_log_files_hashed_total"#, 12.0),
        (r#"trailwatch_integrity_log_files{outcome="altered"}"#, 1.0),
        (r#"trailwatch_integrity_log_files{outcome="missing"}"#, 0.0),
        (r#"trailwatch_integrity_digest_files{outcome="verified"}"#, 6.0),
        // Digests of October, read in December: the chain is stale by the clock.
        (r#"trailwatch_integrity_chains{state="stale"}"#, 1.0),
    ] {
        assert_eq!(metric(&body, sample), Some(want), "{sample}");
    }
    assert!(metric(&body, "trailwatch_integrity_newest_valid_digest_age_seconds").unwrap() > 86_400.0);
    stop(daemon);
}

/// A daemon on a spool under `dir`, checking every second, with `sections` of config after `[integrity]`: the
/// daemon, its spool and its HTTP port.
fn spool_daemon(dir: &Path, sections: &str) -> (std::process::Child, PathBuf, u16) {
    let (spool, port) = (dir.join("spool"), free_port());
    std::fs::create_dir_all(&spool).unwrap();
    let extra = format!(
        "interval_secs = 1\n{sections}[intake.spool]\ndir = {spool:?}\nscan_interval_ms = 50\nmin_file_age_ms = 0\n\
         [http]\nlisten = \"127.0.0.1:{port}\"\n"
    );
    let config = config(dir, &extra);
    let daemon = bin()
        .args(["--config", config.to_str().unwrap(), "run"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    (daemon, spool, port)
}

/// Stops a daemon with SIGTERM: it exits 0.
fn stop(mut daemon: std::process::Child) {
    std::process::Command::new("kill").args(["-TERM", &daemon.id().to_string()]).status().unwrap();
    let exit = wait_for(std::time::Duration::from_secs(30), || daemon.try_wait().unwrap()).expect("daemon exits");
    assert!(exit.success());
}

/// The AWS CLI's own digest validator (`aws cloudtrail validate-logs`' `Sha256RSADigestValidator`, from PyPI), run
/// beside trailwatch on the same digests, signatures and key list: both accept the trail's signatures and both
/// refuse each forged one. This ties trailwatch's signing string, hex signatures, DER keys and fingerprint lookup
/// to AWS's published implementation, not only to this file's signer.
#[test]
fn the_aws_cli_validator_and_trailwatch_agree_on_every_signature() {
    let dir = tempfile::tempdir().unwrap();
    let objects = trail();
    let digests: Vec<&Object> = objects.iter().filter(|o| o.signature.is_some()).collect();
    // (what, uncompressed digest, its key, signature hex, valid)
    let mut cases: Vec<(String, Vec<u8>, String, String, bool)> = digests
        .iter()
        .map(|d| (format!("{} as signed", d.key), gunzip(&d.bytes), d.key.clone(), d.signature.clone().unwrap(), true))
        .collect();
    let (json, key) = (gunzip(&digests[2].bytes), digests[2].key.clone());
    let signature = digests[2].signature.clone().unwrap();
    let rewritten = String::from_utf8(json.clone()).unwrap().replace("ListBuckets", "ListBucket");
    let hash = sha256_hex(&log_json(2, 0, "ListBuckets"));
    let rehashed = String::from_utf8(json.clone()).unwrap().replace(&hash, &hash.replace('a', "b"));
    cases.extend([
        ("a listed hash changed".into(), rehashed.into_bytes(), key.clone(), signature.clone(), false),
        (
            "a byte changed".into(),
            rewritten.replace("2026-10-01T03:00:00Z", "2026-10-01T03:00:01Z").into_bytes(),
            key.clone(),
            signature.clone(),
            false,
        ),
        (
            "signed with another key".into(),
            json.clone(),
            key.clone(),
            sign(&json, &private_key("other-key.pk8.der")),
            false,
        ),
        ("the next digest's signature".into(), json.clone(), key.clone(), digests[3].signature.clone().unwrap(), false),
        ("one bit of the signature flipped".into(), json.clone(), key.clone(), flip_last_hex_digit(&signature), false),
    ]);
    let keys_path = data("integrity/public-keys.json");
    let keys = trailwatch::integrity::PublicKeys::from_list_json(&std::fs::read(&keys_path).unwrap(), "test").unwrap();
    let mut listed = Vec::new();
    for (i, (what, json, key, signature, valid)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("digest-{i}.json"));
        std::fs::write(&path, json).unwrap();
        listed.push(serde_json::json!({ "digest": path, "bucket": BUCKET, "key": key, "signature": signature }));
        let digest = trailwatch::integrity::Digest::parse(json, BUCKET, key).unwrap();
        let verdict = trailwatch::integrity::verify(&digest, json, BUCKET, key, signature, &keys);
        assert_eq!(verdict.is_ok(), *valid, "trailwatch on {what}: {verdict:?}");
    }
    let list = dir.path().join("cases.json");
    std::fs::write(&list, serde_json::to_vec(&listed).unwrap()).unwrap();
    let script = dir.path().join("validate.py");
    std::fs::write(&script, AWS_CLI_VALIDATE).unwrap();
    let out = std::process::Command::new(aws_cli_python()).arg(&script).arg(&keys_path).arg(&list).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let verdicts: Vec<String> = String::from_utf8(out.stdout).unwrap().lines().map(str::to_owned).collect();
    let want: Vec<&str> = cases.iter().map(|c| if c.4 { "valid" } else { "invalid" }).collect();
    assert_eq!(
        verdicts,
        want,
        "the AWS CLI's verdicts, in order: {:?}",
        cases.iter().map(|c| &c.0).collect::<Vec<_>>()
    );
}

fn flip_last_hex_digit(hex: &str) -> String {
    let (head, last) = hex.split_at(hex.len() - 1);
    format!("{head}{}", if last == "0" { "1" } else { "0" })
}

/// Runs the AWS CLI's validator on each case: `valid`, or `invalid` when it raises its digest error (or the
/// fingerprint is not in the key list, as `validate-logs` reports it).
const AWS_CLI_VALIDATE: &str = r#"
import json, sys
from awscli.customizations.cloudtrail.validation import DigestError, Sha256RSADigestValidator
keys = {k["Fingerprint"]: k for k in json.load(open(sys.argv[1]))["PublicKeyList"]}
for case in json.load(open(sys.argv[2])):
    inflated = open(case["digest"], "rb").read()
    data = json.loads(inflated.decode())
    data["_signature"] = case["signature"]
    key = keys.get(data["digestPublicKeyFingerprint"])
    try:
        if key is None:
            raise DigestError("public key not found")
        Sha256RSADigestValidator().validate(case["bucket"], case["key"], key["Value"], data, inflated)
        print("valid")
    except DigestError:
        print("invalid")
"#;

/// The venv's Python with the AWS CLI (`scripts/awscli-venv`, run here when missing).
fn aws_cli_python() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let venv = std::env::var_os("TRAILWATCH_AWSCLI_VENV").map_or_else(|| root.join(".venv-awscli"), PathBuf::from);
    static ONCE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = ONCE.lock().unwrap_or_else(|e| e.into_inner());
    let status =
        std::process::Command::new(root.join("scripts/awscli-venv")).status().expect("scripts/awscli-venv runs");
    assert!(status.success(), "scripts/awscli-venv failed: the AWS CLI is the reference validator");
    venv.join("bin/python")
}

/// `public_keys = "api"`: the keys come from `cloudtrail:ListPublicKeys` through the AWS SDK, asked once per region
/// and run (cached) with the digests' time range. moto has no ListPublicKeys, so a loopback server answers the
/// JSON protocol call with the test key list, and records what it was asked.
#[test]
fn api_keys_are_fetched_once_per_region_and_verify_the_chain() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(String, String)>::new()));
    let keys: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data("integrity/public-keys.json")).unwrap()).unwrap();
    let value = keys["PublicKeyList"][0]["Value"].as_str().unwrap().to_owned();
    let body = serde_json::json!({ "PublicKeyList": [{
        "Value": value, "Fingerprint": FINGERPRINT, "ValidityStartTime": 1.7e9, "ValidityEndTime": 1.9e9,
    }]})
    .to_string();
    let recorded = std::sync::Arc::clone(&asked);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
            let (mut target, mut length) = (String::new(), 0usize);
            loop {
                let mut line = String::new();
                if std::io::BufRead::read_line(&mut reader, &mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("x-amz-target:") {
                    target = v.trim().to_owned();
                }
                if let Some(v) = lower.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut request = vec![0; length];
            std::io::Read::read_exact(&mut reader, &mut request).unwrap();
            recorded.lock().unwrap().push((target, String::from_utf8_lossy(&request).into_owned()));
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            std::io::Write::write_all(&mut stream, response.as_bytes()).unwrap();
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let aws = format!("[aws]\nregion = \"us-east-1\"\nendpoint_url = \"http://127.0.0.1:{port}\"\n");
    let config = config(dir.path(), &aws);
    let text = std::fs::read_to_string(&config).unwrap().replace("public_keys = \"file\"", "public_keys = \"api\"");
    // No key files: every key comes from the API.
    let text: String = text.lines().filter(|l| !l.starts_with("public_key_files")).map(|l| format!("{l}\n")).collect();
    std::fs::write(&config, text).unwrap();
    let root = write_local(dir.path(), &trail(), true);
    let out = crate::aws::trailwatch_aws(&["--config", config.to_str().unwrap(), "replay", root.to_str().unwrap()]);
    let out = ok(&out);
    assert!(out.contains("6 digests and 12 log files checked, 0 log file and 0 digest problems"), "{out}");
    let asked = asked.lock().unwrap().clone();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0].0, "cloudtrail_20131101.listpublickeys");
    // From a day before the first digest to settle.
    let start = serde_json::from_str::<serde_json::Value>(&asked[0].1).unwrap()["StartTime"].as_f64();
    assert_eq!(start, Some(1_790_816_400.0 - 86_400.0), "{}", asked[0].1);
    let conn = rusqlite::Connection::open(dir.path().join("state.db")).unwrap();
    let verified: i64 =
        conn.query_row("SELECT count(*) FROM integrity_digests WHERE outcome = 'verified'", [], |r| r.get(0)).unwrap();
    assert_eq!(verified, 6);
}

/// The daemon on SQS: the trail bucket's notifications name log files and digests alike; digests are fetched with
/// their `signature` metadata and verified. A log file whose notification came but whose object is gone when
/// fetched (`NoSuchKey`) is missing at once, before its hour is due; a rewritten one is altered.
#[test]
fn sqs_daemon_fetches_digests_with_their_signatures_and_reports_gone_files() {
    use aws_sdk_s3::primitives::ByteStream;
    let moto = crate::aws::Moto::start();
    let (s3, sqs) = (moto.s3(), crate::aws::sqs_client(&moto));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let queue_url = crate::aws::bucket_notifying_queue(&rt, &s3, &sqs, BUCKET);
    let mut objects = trail();
    // The last hour's file: not yet due by time, so only its being gone makes it missing.
    let gone = remove(&mut objects, &log_key(HOURS - 1, 0));
    find(&mut objects, &log_key(3, 1)).bytes = gzip(&log_json(3, 1, "ListBucketsAgain"));
    for o in &objects {
        let mut put = s3.put_object().bucket(BUCKET).key(&o.key).body(ByteStream::from(o.bytes.clone()));
        if let Some(signature) = &o.signature {
            put = put.metadata("signature", signature).metadata("signature-algorithm", "SHA256withRSA");
        }
        rt.block_on(put.send()).unwrap();
    }
    let body = serde_json::json!({ "s3Bucket": BUCKET, "s3ObjectKey": [gone.key] }).to_string();
    rt.block_on(sqs.send_message().queue_url(&queue_url).message_body(body).send()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let sqs_config = crate::aws::sqs_config(&moto, dir.path(), &queue_url, port, 30);
    let keys = data("integrity/public-keys.json");
    let mut text = std::fs::read_to_string(&sqs_config).unwrap();
    text.push_str(&format!(
        "[integrity]\nenabled = true\npublic_keys = \"file\"\npublic_key_files = [{keys:?}]\ninterval_secs = 1\n"
    ));
    std::fs::write(&sqs_config, text).unwrap();
    let daemon = crate::aws::start_daemon(&sqs_config);
    let state = dir.path().join("state.db");
    let metrics = wait_for(std::time::Duration::from_secs(90), || {
        let (_, body) = http_get(port, "/metrics")?;
        let verified = metric(&body, r#"trailwatch_integrity_digests_total{outcome="verified"}"#)?;
        (verified == 6.0 && integrity_alerts(&state).len() >= 2).then_some(body)
    })
    .unwrap_or_else(|| panic!("{:?} {:?}", integrity_alerts(&state), http_get(port, "/metrics")));
    let alerts = integrity_alerts(&state);
    let rules: Vec<&str> = alerts.iter().map(|(rule, _)| rule.as_str()).collect();
    assert_eq!(rules, ["log-file-altered", "log-file-missing"], "{alerts:#?}");
    assert!(alerts[0].1.contains(log_key(3, 1).rsplit('/').next().unwrap()), "{}", alerts[0].1);
    assert!(alerts[1].1.contains(gone.key.rsplit('/').next().unwrap()), "{}", alerts[1].1);
    assert_eq!(metric(&metrics, r#"trailwatch_files_total{outcome="applied"}"#), Some(17.0), "{metrics}");
    assert_eq!(metric(&metrics, r#"trailwatch_file_rejections_total{reason="no_such_key"}"#), Some(1.0));
    stop(daemon);
}

/// `rules.disabled` and `rules.dry_run` name the integrity rules as they name every other: a disabled one raises
/// nothing; one in dry run is stored (the explorer and the API show it) but goes to no sink.
#[test]
fn integrity_rules_can_be_disabled_or_run_dry() {
    for (setting, stored, sent) in [("disabled", 0, 0), ("dry_run", 1, 0), ("enabled", 1, 1)] {
        let dir = tempfile::tempdir().unwrap();
        let sink = dir.path().join("alerts.jsonl");
        let rules = match setting {
            "enabled" => String::new(),
            other => format!("[rules]\n{other} = [\"log-file-altered\"]\n"),
        };
        let extra = format!("{rules}[alerts]\n[[alerts.sinks]]\nname = \"jsonl\"\nkind = \"file\"\npath = {sink:?}\n");
        let config = config(dir.path(), &extra);
        let mut objects = trail();
        find(&mut objects, &log_key(1, 1)).bytes = gzip(&log_json(1, 1, "ListBucketsAgain"));
        let root = write_local(dir.path(), &objects, true);
        ok(&trailwatch(&["--config", config.to_str().unwrap(), "replay", root.to_str().unwrap()]));
        assert_eq!(integrity_alerts(&dir.path().join("state.db")).len(), stored, "{setting}");
        let lines = std::fs::read_to_string(&sink).unwrap_or_default();
        assert_eq!(lines.matches("log-file-altered").count(), sent, "{setting}: {lines}");
    }
}

/// With alerting off (`[alerts] enabled = false`) the daemon still checks: signatures are settled and the gauges
/// say what the chains hold.
#[test]
fn spool_daemon_without_alerting_still_settles_and_reports_in_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, spool, port) = spool_daemon(dir.path(), "[alerts]\nenabled = false\n");
    let root = write_local(dir.path(), &trail(), true);
    std::fs::rename(root.join("AWSLogs"), spool.join("AWSLogs")).unwrap();
    let metrics = || http_get(port, "/metrics").filter(|(status, _)| *status == 200).map(|(_, body)| body);
    let body = wait_for(std::time::Duration::from_secs(60), || {
        let body = metrics()?;
        (metric(&body, r#"trailwatch_integrity_log_files{outcome="valid"}"#)? == 12.0).then_some(body)
    })
    .unwrap_or_else(|| panic!("no integrity check: {:?}", metrics()));
    assert_eq!(metric(&body, r#"trailwatch_integrity_digests_total{outcome="verified"}"#), Some(6.0));
    assert_eq!(metric(&body, r#"trailwatch_integrity_digest_files{outcome="verified"}"#), Some(6.0));
    stop(daemon);
}
