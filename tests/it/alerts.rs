//! Detections and alerts end to end: a synth corpus with injected incidents raises exactly the expected alerts;
//! a webhook receiver that fails, then a `kill -9` between commit and delivery, lose no alert and change no id;
//! a real Alertmanager receives and lists trailwatch's alerts.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::util::*;

/// Writes a synth corpus with incidents; returns its directory and the expected alerts as
/// `(rule, principal) → event ids`.
pub(crate) fn incident_corpus(dir: &Path) -> (PathBuf, BTreeMap<(String, String), Vec<String>>) {
    let corpus = dir.join("corpus");
    let expected = dir.join("expected-alerts.json");
    ok(&trailwatch(&[
        "synth",
        "--out",
        corpus.to_str().unwrap(),
        "--files",
        "12",
        "--records",
        "400",
        "--principals",
        "120",
        "--seed",
        "7",
        "--incidents",
        "--expect-alerts",
        expected.to_str().unwrap(),
    ]));
    let list: Vec<Value> = serde_json::from_slice(&std::fs::read(expected).unwrap()).unwrap();
    let expected = list
        .iter()
        .map(|a| {
            let ids = a["event_ids"].as_array().unwrap().iter().map(|i| i.as_str().unwrap().to_owned()).collect();
            ((a["rule"].as_str().unwrap().to_owned(), a["principal"].as_str().unwrap().to_owned()), ids)
        })
        .collect();
    (corpus, expected)
}

/// The complete lines of a JSONL sink (a line still being written is left for the next read).
pub(crate) fn jsonl(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"))).collect()
}

/// A configuration under `dir` with its own state and a JSONL sink, both named by `tag`; returns the
/// configuration's path and the sink's.
fn jsonl_config(dir: &Path, tag: &str) -> (PathBuf, PathBuf) {
    let sink = dir.join(format!("alerts-{tag}.jsonl"));
    let state = dir.join(format!("state-{tag}.db"));
    let config = dir.join(format!("tw-{tag}.toml"));
    let text =
        format!("[store]\npath = {state:?}\n[[alerts.sinks]]\nname = \"jsonl\"\nkind = \"file\"\npath = {sink:?}\n");
    std::fs::write(&config, text).unwrap();
    (config, sink)
}

/// `(rule, principal) → sorted event ids` of alerts as sinks received them.
fn by_subject(alerts: &[Value]) -> BTreeMap<(String, String), Vec<String>> {
    let mut out = BTreeMap::new();
    for a in alerts {
        let mut ids: Vec<String> =
            a["event_ids"].as_array().unwrap().iter().map(|i| i.as_str().unwrap().to_owned()).collect();
        ids.sort();
        let key = (a["rule"].as_str().unwrap().to_owned(), a["principal"].as_str().unwrap().to_owned());
        assert!(out.insert(key.clone(), ids).is_none(), "two alerts for {key:?}");
    }
    out
}

#[test]
fn injected_incidents_raise_exactly_the_expected_alerts() {
    let tmp = tempfile::tempdir().unwrap();
    let (corpus, expected) = incident_corpus(tmp.path());
    let rules: BTreeSet<&str> = expected.keys().map(|(r, _)| r.as_str()).collect();
    assert_eq!(rules.len(), 48, "every built-in rule has an incident: {rules:?}");
    for threads in ["1", "2"] {
        let (config, sink) = jsonl_config(tmp.path(), threads);
        let cfg = config.to_str().unwrap();
        let out = ok(&trailwatch(&["--config", cfg, "replay", "--threads", threads, corpus.to_str().unwrap()]));
        assert!(out.contains("alerts: 48 raised"), "{out}");
        let alerts = jsonl(&sink);
        assert_eq!(by_subject(&alerts), expected, "{threads} threads");
        for a in &alerts {
            for key in ["id", "title", "severity", "account_id", "event_time"] {
                assert!(a[key].is_string(), "`{key}` in {a}");
            }
            // An event's alert has its context; a behavioural one (from the state) names no single event.
            if !a["event_ids"].as_array().unwrap().is_empty() {
                for key in ["region", "source_ip", "user_agent"] {
                    assert!(a[key].is_string(), "`{key}` in {a}");
                }
                assert_eq!(a["count"].as_u64().unwrap() as usize, a["event_ids"].as_array().unwrap().len(), "{a}");
            }
        }
        // Replaying again applies nothing and raises nothing.
        let again = ok(&trailwatch(&["--config", cfg, "replay", corpus.to_str().unwrap()]));
        assert!(again.contains("alerts: 0 raised"), "{again}");
        assert_eq!(jsonl(&sink).len(), alerts.len());
        // --no-alerts: a quiet backfill into a fresh state raises nothing.
        let quiet_state = tmp.path().join(format!("quiet-{threads}.db"));
        let quiet = ok(&trailwatch(&[
            "--config",
            cfg,
            "--state",
            quiet_state.to_str().unwrap(),
            "replay",
            "--no-alerts",
            corpus.to_str().unwrap(),
        ]));
        assert!(!quiet.contains("alerts:"), "{quiet}");
        assert_eq!(jsonl(&sink).len(), alerts.len());
    }
    // The same alerts have the same ids whichever run raised them.
    let ids = |n: &str| {
        let mut ids: Vec<String> = jsonl(&tmp.path().join(format!("alerts-{n}.jsonl")))
            .iter()
            .map(|a| a["id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(ids("1"), ids("2"));
}

/// Forty files five minutes apart, each with three failed console sign-ins by one user: only two neighbouring
/// files together reach `console-login-failures`' five within ten minutes. Two workers take alternate files into
/// their units, so each unit brings hits hours older than the other's newest; the windows must still count them
/// all, and a replay on two threads must raise exactly what one thread raises.
#[test]
fn a_threshold_counts_the_same_events_whichever_worker_read_them() {
    let tmp = tempfile::tempdir().unwrap();
    let account = "111122223333";
    let day = tmp.path().join(format!("corpus/AWSLogs/{account}/CloudTrail/us-east-1/2026/10/01"));
    std::fs::create_dir_all(&day).unwrap();
    for file in 0..40 {
        let start = file * 300;
        let records: Vec<Value> = (0..3)
            .map(|i| {
                let secs = start + i * 60;
                serde_json::json!({
                    "eventVersion": "1.08",
                    "userIdentity": {"type": "IAMUser", "principalId": "AIDAALICE", "accountId": account,
                        "arn": format!("arn:aws:iam::{account}:user/alice"), "userName": "alice"},
                    "eventTime": format!("2026-10-01T{:02}:{:02}:{:02}Z", secs / 3600, secs / 60 % 60, secs % 60),
                    "eventSource": "signin.amazonaws.com",
                    "eventName": "ConsoleLogin",
                    "awsRegion": "us-east-1",
                    "sourceIPAddress": "198.51.100.7",
                    "userAgent": "Mozilla/5.0",
                    "errorMessage": "Failed authentication",
                    "responseElements": {"ConsoleLogin": "Failure"},
                    "additionalEventData": {"MFAUsed": "No"},
                    "eventID": format!("e-{file:02}-{i}"),
                    "eventType": "AwsConsoleSignIn",
                    "recipientAccountId": account,
                })
            })
            .collect();
        let stamp = format!("20261001T{:02}{:02}Z", start / 3600, start / 60 % 60);
        let name = format!("{account}_CloudTrail_us-east-1_{stamp}_f{file:02}.json.gz");
        let body = serde_json::to_vec(&serde_json::json!({ "Records": records })).unwrap();
        std::fs::write(day.join(name), gzip(&body)).unwrap();
    }
    let corpus = tmp.path().join("corpus");
    let mut lines = Vec::new();
    for threads in ["1", "2"] {
        let (config, sink) = jsonl_config(tmp.path(), threads);
        ok(&trailwatch(&[
            "--config",
            config.to_str().unwrap(),
            "replay",
            "--threads",
            threads,
            corpus.to_str().unwrap(),
        ]));
        let mut got: Vec<String> = std::fs::read_to_string(&sink).unwrap().lines().map(str::to_owned).collect();
        got.sort();
        let bursts: Vec<Value> = got
            .iter()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|a| a["rule"] == "console-login-failures")
            .collect();
        // 00:00 to 03:17: one alert per hour (the dedup window), each for the largest ten-minute window in it.
        assert_eq!(bursts.len(), 4, "{threads} threads: {bursts:?}");
        assert!(bursts.iter().all(|a| a["count"].as_u64() >= Some(6)), "{threads} threads: {bursts:?}");
        lines.push(got);
    }
    assert_eq!(lines[0], lines[1], "two threads raise exactly what one raises");
}

#[test]
fn dry_run_rules_and_suppressions_send_nothing_but_count() {
    let tmp = tempfile::tempdir().unwrap();
    let (corpus, expected) = incident_corpus(tmp.path());
    let sink = tmp.path().join("alerts.jsonl");
    let config = tmp.path().join("tw.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\npath = {:?}\n[rules]\ndry_run = [\"network-config-changed\"]\ndisabled = [\"pentest-user-agent\"]\n\
             [[alerts.sinks]]\nname = \"jsonl\"\nkind = \"file\"\npath = {sink:?}\n\
             [[alerts.suppress]]\nrule = \"root-*\"\n[[alerts.suppress]]\nprincipal = \"*:role/incident-*\"\n",
            tmp.path().join("s.db")
        ),
    )
    .unwrap();
    let out = ok(&trailwatch(&["--config", config.to_str().unwrap(), "replay", corpus.to_str().unwrap()]));
    let got = by_subject(&jsonl(&sink));
    let want: BTreeMap<_, _> = expected
        .into_iter()
        .filter(|((rule, principal), _)| {
            !["network-config-changed", "pentest-user-agent", "root-account-usage", "root-access-key-created"]
                .contains(&rule.as_str())
                && !principal.contains(":role/incident-")
        })
        .collect();
    assert_eq!(got, want);
    // Two root alerts, the prober's burst and the harvester's four were suppressed.
    assert!(out.contains("alerts: 39 raised, 0 merged into earlier ones, 7 suppressed"), "{out}");
}

/// A webhook receiver on loopback: answers 500 while `failing`, else 200; records every request's alert id,
/// signature check and whether it was accepted.
struct Receiver {
    port: u16,
    failing: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<(String, bool, bool)>>>,
}

impl Receiver {
    fn start(secret: &'static str) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let failing = Arc::new(AtomicBool::new(true));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (f, s) = (Arc::clone(&failing), Arc::clone(&seen));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut headers = BTreeMap::new();
                let mut line = String::new();
                reader.read_line(&mut line).unwrap_or_default();
                loop {
                    line.clear();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = line.trim_end().split_once(':') {
                        headers.insert(k.to_ascii_lowercase(), v.trim().to_owned());
                    }
                }
                // A connection the killed daemon opened but never wrote a request on is not a delivery either.
                let Some(len) = headers.get("content-length").and_then(|l| l.parse::<usize>().ok()) else {
                    continue;
                };
                let mut body = vec![0; len];
                // A request cut off by the `kill -9` is not a delivery: the sender died before finishing it.
                if reader.read_exact(&mut body).is_err() {
                    continue;
                }
                let signature = headers.get("x-trailwatch-signature").cloned().unwrap_or_default();
                let valid = signature == format!("sha256={}", hmac_sha256_hex(secret.as_bytes(), &body));
                let alert: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let id = alert["id"].as_str().unwrap_or("").to_owned();
                let failing = f.load(Ordering::SeqCst);
                s.lock().unwrap().push((id, valid, !failing));
                let status = if failing { "500 Internal Server Error" } else { "200 OK" };
                let _ = write!(stream, "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            }
        });
        Receiver { port, failing, seen }
    }

    fn accepted(&self) -> BTreeSet<String> {
        self.seen.lock().unwrap().iter().filter(|(_, _, ok)| *ok).map(|(id, _, _)| id.clone()).collect()
    }
}

/// HMAC-SHA256 written out here (RFC 2104) so the test does not reuse the code it checks.
fn hmac_sha256_hex(key: &[u8], message: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(message).finalize();
    let outer = Sha256::new().chain_update(pad(0x5c)).chain_update(inner).finalize();
    outer.iter().map(|b| format!("{b:02x}")).collect()
}

fn start_daemon(config: &Path) -> Child {
    bin()
        .env("TW_HOOK_SECRET", "s3cret")
        .args(["--config", config.to_str().unwrap(), "run"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn a_crash_between_commit_and_delivery_loses_no_alert_and_keeps_its_id() {
    let tmp = tempfile::tempdir().unwrap();
    let (corpus, expected) = incident_corpus(tmp.path());
    let receiver = Receiver::start("s3cret");
    let (port, state) = (free_port(), tmp.path().join("s.db"));
    let config = tmp.path().join("tw.toml");
    std::fs::write(
        &config,
        format!(
            "[intake.spool]\ndir = {corpus:?}\nscan_interval_ms = 50\nmin_file_age_ms = 0\n[store]\npath = {state:?}\n\
             [http]\nlisten = \"127.0.0.1:{port}\"\n[alerts]\nmax_backoff_secs = 1\n\
             [[alerts.sinks]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:{}/hook\"\n\
             secret_env = \"TW_HOOK_SECRET\"\nheaders = {{ \"x-team\" = \"security\" }}\n",
            receiver.port
        ),
    )
    .unwrap();
    // The receiver fails: every alert is committed, tried, and left in the outbox.
    let mut daemon = start_daemon(&config);
    let tried = wait_for(Duration::from_secs(60), || {
        let ids: BTreeSet<String> = receiver.seen.lock().unwrap().iter().map(|(id, _, _)| id.clone()).collect();
        (ids.len() == expected.len()).then_some(ids)
    })
    .expect("every alert is tried while the receiver fails");
    // Retries come back with backoff, not once.
    wait_for(Duration::from_secs(30), || (receiver.seen.lock().unwrap().len() > expected.len()).then_some(()))
        .expect("failed deliveries are retried");
    daemon.kill().unwrap(); // SIGKILL
    daemon.wait().unwrap();
    assert!(receiver.accepted().is_empty());
    // Restarted with a working receiver: the pending alerts arrive, with the ids they had before the crash.
    receiver.failing.store(false, Ordering::SeqCst);
    let mut daemon = start_daemon(&config);
    let accepted = wait_for(Duration::from_secs(60), || {
        let accepted = receiver.accepted();
        (accepted.len() == expected.len()).then_some(accepted)
    })
    .expect("pending alerts are delivered after the restart");
    assert_eq!(accepted, tried);
    let body = wait_for(Duration::from_secs(10), || {
        let (_, body) = http_get(port, "/metrics")?;
        (metric(&body, "trailwatch_alert_outbox_depth") == Some(0.0)).then_some(body)
    })
    .expect("the outbox empties");
    assert!(metric(&body, r#"trailwatch_alerts_sent_total{sink="webhook"}"#).unwrap() >= expected.len() as f64);
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    let seen = receiver.seen.lock().unwrap();
    assert!(seen.iter().all(|(_, valid, _)| *valid), "every request is signed with the shared secret");
}

/// A real Alertmanager (Debian's `prometheus-alertmanager`) on loopback, with its own data directory.
struct Alertmanager {
    child: Child,
    port: u16,
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts Alertmanager on a free port. Should something take the port before Alertmanager binds it (a CI run once
/// lost that race, before `free_port` kept out of the ephemeral range), it exits saying so and is started again
/// on another port. Any other exit fails with Alertmanager's own log.
fn alertmanager(dir: &Path) -> Alertmanager {
    let config = dir.join("am.yml");
    std::fs::write(&config, "route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n").unwrap();
    let log = dir.join("am.log");
    for _ in 0..3 {
        let port = free_port();
        let mut child = tool("prometheus-alertmanager")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.join("am-data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("prometheus-alertmanager starts");
        let ready = wait_for(Duration::from_secs(30), || {
            if child.try_wait().unwrap().is_some() {
                return Some(false);
            }
            http_get(port, "/-/ready").filter(|(s, _)| *s == 200).map(|_| true)
        });
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        match ready {
            Some(true) => return Alertmanager { child, port },
            Some(false) if text.contains("address already in use") => continue,
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("alertmanager did not become ready on port {port}; its log:\n{text}");
            }
        }
    }
    panic!("alertmanager found its port taken three times; its last log:\n{}", std::fs::read_to_string(&log).unwrap());
}

#[test]
fn a_real_alertmanager_receives_and_lists_the_alerts() {
    let tmp = tempfile::tempdir().unwrap();
    let (corpus, expected) = incident_corpus(tmp.path());
    let am = alertmanager(tmp.path());
    let config = tmp.path().join("tw.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\npath = {:?}\n[[alerts.sinks]]\nname = \"am\"\nkind = \"alertmanager\"\nurl = \"http://127.0.0.1:{}\"\n\
             [[alerts.sinks]]\nname = \"jsonl\"\nkind = \"file\"\npath = {:?}\n",
            tmp.path().join("s.db"),
            am.port,
            tmp.path().join("alerts.jsonl")
        ),
    )
    .unwrap();
    let out = ok(&trailwatch(&["--config", config.to_str().unwrap(), "replay", corpus.to_str().unwrap()]));
    assert!(out.contains(&format!("{} deliveries sent, 0 pending", 2 * expected.len())), "{out}");
    let ours: BTreeMap<String, String> = jsonl(&tmp.path().join("alerts.jsonl"))
        .iter()
        .map(|a| (a["id"].as_str().unwrap().to_owned(), a["rule"].as_str().unwrap().to_owned()))
        .collect();
    let listed = wait_for(Duration::from_secs(10), || {
        let (status, body) = http_get(am.port, "/api/v2/alerts")?;
        let alerts: Vec<Value> = serde_json::from_str(&body).ok().filter(|_| status == 200)?;
        (alerts.len() == expected.len()).then_some(alerts)
    })
    .expect("alertmanager lists every alert");
    let theirs: BTreeMap<String, String> = listed
        .iter()
        .map(|a| {
            assert_eq!(a["status"]["state"], "active", "{a}");
            assert_eq!(a["labels"]["source"], "trailwatch");
            (
                a["labels"]["trailwatch_id"].as_str().unwrap().to_owned(),
                a["labels"]["alertname"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(theirs, ours);
}

/// Rules written in SigmaHQ's shapes (`tests/data/sigma/good`) against hand-written events, and rules trailwatch
/// cannot honour (`tests/data/sigma/broken`), each reported with its file and reason while the rest load.
#[test]
fn sigma_rules_match_as_the_specification_says_and_failures_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let good = data("sigma/good");
    let out = trailwatch(&["rules", "check", good.to_str().unwrap()]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "11 rules loaded, 0 failed\n");
    assert!(out.status.success());

    let broken = data("sigma/broken");
    let out = trailwatch(&["rules", "check", broken.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    let expected = [
        ("absence.yml", "only lower bounds are supported"),
        ("expand.yml", "unsupported modifier `expand`"),
        ("keywords.yml", "keyword searches (a bare list of values) are not supported"),
        ("lookbehind.yml", "invalid regular expression"),
        ("syntax.yml", "invalid yaml"),
        (
            "unknown_reference.yml",
            "rule `b-unknown-reference`: correlation: no event rule with id or name `nothing_here`",
        ),
        ("windash.yml", "unsupported modifier `windash`"),
        ("windows.yml", "logsource is not aws cloudtrail (product `windows`, service `security`)"),
        // A syntax error hides neither the next document nor any problem of it.
        ("several.yml", "invalid yaml"),
        (
            "several.yml",
            "missing `id`; search `other`: field `eventSource`: unsupported modifier `windash`; \
             search `sel`: field `eventName`: unsupported modifier `expand`",
        ),
    ];
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(lines.len(), expected.len() + 1, "{report}");
    for (file, reason) in expected {
        assert!(
            lines.iter().any(|l| l.contains(&format!("broken/{file}")) && l.contains(reason)),
            "{file}: `{reason}` missing from\n{report}"
        );
    }
    assert_eq!(lines.last(), Some(&"0 rules loaded, 10 failed"));

    // The configuration may not name ids that no rule has (a misspelled id would silently leave a rule on): it is
    // refused, naming each.
    let config = tmp.path().join("list.toml");
    std::fs::write(
        &config,
        "[rules]\ndry_run = [\"cloudtrail-tampering\", \"gone\"]\ndedup_window_secs = 600\n\
         dedup_window_secs_by_rule = { \"root-account-usage\" = 86400, \"nope\" = 5 }\n",
    )
    .unwrap();
    let out = trailwatch(&["rules", "list", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("`rules.dry_run`: `gone` is not the id of any rule"), "{stderr}");
    assert!(stderr.contains("`rules.dedup_window_secs_by_rule`: `nope` is not the id of any rule"), "{stderr}");

    // `rules list` shows each rule's mode and dedup window as the configuration sets them.
    std::fs::write(
        &config,
        "[rules]\ndry_run = [\"cloudtrail-tampering\"]\ndedup_window_secs = 600\n\
         dedup_window_secs_by_rule = { \"root-account-usage\" = 86400 }\n",
    )
    .unwrap();
    let out = trailwatch(&["rules", "list", "--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = |id: &str| {
        let line = listing.lines().find(|l| l.starts_with(&format!("{id} "))).unwrap_or_else(|| panic!("{listing}"));
        line.split_whitespace().take(5).collect::<Vec<_>>()
    };
    assert_eq!(line("root-account-usage"), ["root-account-usage", "high", "event", "live", "86400s"]);
    assert_eq!(line("cloudtrail-tampering"), ["cloudtrail-tampering", "high", "event", "dry-run", "600s"]);
    assert!(!listing.contains("warning:"), "{listing}");

    // A rule written for another schema (SigmaHQ has some with `status`) loads, with a warning naming the field.
    let foreign = tmp.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(
        foreign.join("status.yml"),
        "title: t\nid: t-status\nlogsource: {product: aws, service: cloudtrail}\n\
         detection:\n    sel:\n        eventName: DeleteSAMLProvider\n        status: success\n    condition: sel\n",
    )
    .unwrap();
    let out = trailwatch(&["rules", "check", foreign.to_str().unwrap()]);
    assert!(out.status.success());
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        report,
        format!(
            "warning: {}: rule `t-status`: `status` is not in CloudTrail records: tests on it see an absent field on \
             every event\n1 rules loaded, 0 failed\n",
            foreign.join("status.yml").display()
        )
    );

    // The good rules (and no built-ins) over events written to hit and miss each of them.
    let sink = tmp.path().join("alerts.jsonl");
    let config = tmp.path().join("tw.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\npath = {:?}\n[rules]\nbuiltin = false\ndirs = [{good:?}, {broken:?}]\n\
             [[alerts.sinks]]\nname = \"jsonl\"\nkind = \"file\"\npath = {sink:?}\n",
            tmp.path().join("s.db")
        ),
    )
    .unwrap();
    ok(&trailwatch(&["--config", config.to_str().unwrap(), "replay", data("sigma-events.json").to_str().unwrap()]));
    let mut got: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for alert in jsonl(&sink) {
        let mut ids: Vec<String> =
            alert["event_ids"].as_array().unwrap().iter().map(|i| i.as_str().unwrap().to_owned()).collect();
        ids.sort();
        assert!(got.insert(alert["rule"].as_str().unwrap().to_owned(), ids).is_none(), "one alert per rule here");
    }
    let want: BTreeMap<String, Vec<String>> = [
        ("t-selection-lists", &["e-peer"][..]),
        ("t-regex-null", &["e-imds"]),
        ("t-contains-all", &["e-policy"]),
        ("t-aggregation", &["e-secret-1", "e-secret-2", "e-secret-3"]),
        ("t-value-count", &["e-recon-1", "e-recon-2", "e-recon-3"]),
        ("t-user-created", &["e-create-user"]),
        ("t-admin-attached", &["e-attach"]),
        ("t-temporal", &["e-attach", "e-create-user"]),
        ("t-cidr-all", &["e-cidr", "e-cidr-v6"]),
    ]
    .into_iter()
    .map(|(rule, ids)| (rule.to_owned(), ids.iter().map(|i| (*i).to_owned()).collect()))
    .collect();
    assert_eq!(got, want);
}

/// `report findings` against the fixtures' pinned report: at a reference time, every identity (not an AWS service
/// or account) last seen before the threshold, and every access key last used before its threshold.
#[test]
fn findings_at_a_reference_time_follow_the_state() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("logs");
    fixture_dir(&logs);
    let state = tmp.path().join("s.db");
    ok(&trailwatch(&["--state", state.to_str().unwrap(), "replay", "--no-alerts", logs.to_str().unwrap()]));
    let pinned: Vec<Value> = serde_json::from_slice(&std::fs::read(data("fixtures-report.json")).unwrap()).unwrap();
    // 2026-10-01/02 plus 120 days is 2027-01-29/30; plus 90 days, 2026-12-30/31.
    for (as_of, inactive_days, key_days) in [("2027-01-30T00:00:00Z", 120, 90), ("2026-12-31T00:00:00Z", 120, 90)] {
        let as_of_ts = rfc3339_secs(as_of);
        let mut want: Vec<(String, String)> = Vec::new();
        for identity in &pinned {
            let kind = identity["kind"].as_str().unwrap();
            let last_seen = rfc3339_secs(identity["last_seen"].as_str().unwrap());
            if !["AWSService", "AWSAccount"].contains(&kind) && last_seen <= as_of_ts - inactive_days * 86_400 {
                want.push(("inactive-identity".into(), identity["principal"].as_str().unwrap().into()));
            }
            for key in identity["access_keys"].as_array().unwrap() {
                if rfc3339_secs(key["last_used"].as_str().unwrap()) <= as_of_ts - key_days * 86_400 {
                    want.push(("access-key-unused".into(), key["id"].as_str().unwrap().into()));
                }
            }
        }
        want.sort();
        let out = ok(&trailwatch(&[
            "--state",
            state.to_str().unwrap(),
            "report",
            "findings",
            "--as-of",
            as_of,
            "--format",
            "json",
        ]));
        let findings: Vec<Value> = serde_json::from_str(&out).unwrap();
        let mut got: Vec<(String, String)> = findings
            .iter()
            .map(|f| (f["rule"].as_str().unwrap().into(), f["subject"].as_str().unwrap().into()))
            .collect();
        got.sort();
        assert_eq!(got, want, "as of {as_of}");
        assert!(!want.is_empty(), "the fixtures give findings as of {as_of}");
    }
}

/// The daemon raises periodic findings once per subject, not once per tick.
#[test]
fn the_daemon_raises_each_finding_once() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    fixture_dir(&spool);
    let (port, sink) = (free_port(), tmp.path().join("alerts.jsonl"));
    let config = tmp.path().join("tw.toml");
    // The fixtures are from October 2026: with one-day thresholds every identity and key is a finding now.
    std::fs::write(
        &config,
        format!(
            "[intake.spool]\ndir = {spool:?}\nscan_interval_ms = 50\nmin_file_age_ms = 0\n[store]\npath = {:?}\n\
             [http]\nlisten = \"127.0.0.1:{port}\"\n[rules]\nbuiltin = false\n\
             [findings]\ninactive_days = 1\naccess_key_unused_days = 1\ninterval_secs = 1\n\
             [[alerts.sinks]]\nname = \"jsonl\"\nkind = \"file\"\npath = {sink:?}\n",
            tmp.path().join("s.db")
        ),
    )
    .unwrap();
    let mut daemon = bin()
        .args(["--config", config.to_str().unwrap(), "run"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // 10 identities that are not services or accounts, and 4 keys.
    let first = wait_for(Duration::from_secs(30), || {
        let alerts = jsonl(&sink);
        (alerts.len() >= 14).then_some(alerts.len())
    });
    // Three more passes raise nothing new.
    let passed = wait_for_findings_passes(port, 3.0, Duration::from_secs(30));
    let after = jsonl(&sink);
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    assert!(passed, "the findings ticker did not run three more times");
    assert_eq!(first, Some(14), "{after:?}");
    assert_eq!(after.len(), 14);
    let rules: BTreeSet<&str> = after.iter().map(|a| a["rule"].as_str().unwrap()).collect();
    assert_eq!(rules, BTreeSet::from(["access-key-unused", "inactive-identity"]));
}

fn rfc3339_secs(text: &str) -> i64 {
    trailwatch::time::parse_rfc3339(text).unwrap_or_else(|| panic!("{text} is RFC 3339"))
}

/// The behavioural rules: a region new to an identity past its learning period, and a key used from more source
/// IPs than allowed within the window; neither for an identity still learning or a key at the limit.
#[test]
fn behavioural_rules_use_the_state() {
    let tmp = tempfile::tempdir().unwrap();
    let sink = tmp.path().join("alerts.jsonl");
    let config = tmp.path().join("tw.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\npath = {:?}\n[rules]\nbuiltin = false\n[[alerts.sinks]]\nname = \"jsonl\"\nkind = \"file\"\npath = {sink:?}\n",
            tmp.path().join("s.db")
        ),
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    // alice: us-east-1 for a month, then ap-south-1; bob: a new region on his second day (still learning);
    // carol's key from 6 addresses within an hour, dave's from 5 (the limit).
    let file = data("behaviour.json");
    ok(&trailwatch(&["--config", cfg, "replay", file.to_str().unwrap()]));
    let got: Vec<(String, String, Option<String>)> = jsonl(&sink)
        .iter()
        .map(|a| {
            (
                a["rule"].as_str().unwrap().to_owned(),
                a["principal"].as_str().unwrap().to_owned(),
                a["region"].as_str().map(str::to_owned),
            )
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(
        got,
        [
            ("access-key-from-many-ips".to_owned(), "arn:aws:iam::111111111111:user/carol".to_owned(), None),
            (
                "new-region-for-identity".to_owned(),
                "arn:aws:iam::111111111111:user/alice".to_owned(),
                Some("ap-south-1".to_owned())
            ),
        ]
    );
    // A later event in a known region raises nothing; a second new region does.
    let later = tmp.path().join("later.json");
    let record = |region: &str, id: &str| {
        format!(
            r#"{{"eventTime":"2026-11-01T10:00:00Z","eventSource":"ec2.amazonaws.com","eventName":"DescribeInstances","awsRegion":"{region}","sourceIPAddress":"198.51.100.1","eventID":"{id}","userIdentity":{{"type":"IAMUser","arn":"arn:aws:iam::111111111111:user/alice","accountId":"111111111111"}}}}"#
        )
    };
    std::fs::write(&later, format!(r#"{{"Records":[{},{}]}}"#, record("ap-south-1", "l1"), record("sa-east-1", "l2")))
        .unwrap();
    ok(&trailwatch(&["--config", cfg, "replay", later.to_str().unwrap()]));
    let regions: Vec<String> = jsonl(&sink)
        .iter()
        .filter(|a| a["rule"] == "new-region-for-identity")
        .map(|a| a["region"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(regions, ["ap-south-1", "sa-east-1"]);
}

/// Retention in the daemon: delivered alerts raised more than `alerts.retention_days` ago are deleted when it
/// starts (and hourly), counted in `trailwatch_alerts_pruned_total`; the others stay.
#[test]
fn the_daemon_deletes_delivered_alerts_past_retention() {
    let tmp = tempfile::tempdir().unwrap();
    let (corpus, expected) = incident_corpus(tmp.path());
    let (config, _sink) = jsonl_config(tmp.path(), "retention");
    let out = ok(&trailwatch(&["--config", config.to_str().unwrap(), "replay", corpus.to_str().unwrap()]));
    assert!(out.contains(&format!("{} deliveries sent, 0 pending", expected.len())), "{out}");
    let state = tmp.path().join("state-retention.db");
    // The first five alerts were raised (as far as the store knows) in 1970.
    let conn = rusqlite::Connection::open(&state).unwrap();
    let aged = conn.execute(
        "UPDATE alerts SET raised_at_ms = 0 WHERE rowid IN (SELECT rowid FROM alerts ORDER BY rowid LIMIT 5)",
        [],
    );
    assert_eq!(aged.unwrap(), 5);
    let ids = |conn: &rusqlite::Connection| -> BTreeSet<String> {
        let mut stmt = conn.prepare("SELECT id FROM alerts").unwrap();
        stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    };
    let recent: BTreeSet<String> = {
        let mut stmt = conn.prepare("SELECT id FROM alerts WHERE raised_at_ms > 0").unwrap();
        stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    };
    assert_eq!(recent.len(), expected.len() - 5);
    drop(conn);
    let (port, spool) = (free_port(), tmp.path().join("empty-spool"));
    std::fs::create_dir(&spool).unwrap();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "[intake.spool]\ndir = {spool:?}\n[http]\nlisten = \"127.0.0.1:{port}\"\n[alerts]\nretention_days = 1\n\
         [findings]\ninterval_secs = 0\n"
    ));
    std::fs::write(&config, text).unwrap();
    let mut daemon = start_daemon(&config);
    let body = wait_for(Duration::from_secs(30), || {
        let (_, body) = http_get(port, "/metrics")?;
        (metric(&body, "trailwatch_alerts_pruned_total") == Some(5.0)).then_some(body)
    });
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    assert!(body.is_some(), "the daemon deleted the five aged alerts");
    let conn = rusqlite::Connection::open(&state).unwrap();
    assert_eq!(ids(&conn), recent);
}

/// A second trail delivering the same events (here, a copy of every file under other names, so other ledger
/// keys) does not make a threshold count them twice: the correlation alerts are those of one copy, with
/// the same counts and event ids.
#[test]
fn a_second_copy_of_the_logs_does_not_double_a_threshold() {
    let tmp = tempfile::tempdir().unwrap();
    let (corpus, _) = incident_corpus(tmp.path());
    let copy = tmp.path().join("second-trail");
    let copied = Command::new("cp").arg("-r").arg(&corpus).arg(&copy).status().unwrap();
    assert!(copied.success());
    // Another trail's files have other names (the same path names one file, applied once).
    fn rename_files(dir: &Path) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                rename_files(&path);
            } else {
                let name = format!("second-{}", path.file_name().unwrap().to_str().unwrap());
                std::fs::rename(&path, path.with_file_name(name)).unwrap();
            }
        }
    }
    rename_files(&copy);
    let correlated = |sink: &Path| -> BTreeMap<(String, String), (u64, Vec<Value>)> {
        jsonl(sink)
            .into_iter()
            .filter(|a| ["console-login-failures", "unauthorized-api-calls"].contains(&a["rule"].as_str().unwrap()))
            .map(|a| {
                let key = (a["rule"].as_str().unwrap().to_owned(), a["principal"].as_str().unwrap().to_owned());
                (key, (a["count"].as_u64().unwrap(), a["event_ids"].as_array().unwrap().clone()))
            })
            .collect()
    };
    let (once, once_sink) = jsonl_config(tmp.path(), "once");
    let out = ok(&trailwatch(&["--config", once.to_str().unwrap(), "replay", corpus.to_str().unwrap()]));
    let files = out.split("files: ").nth(1).and_then(|r| r.split(' ').next()).unwrap().parse::<u32>().unwrap();
    let (twice, twice_sink) = jsonl_config(tmp.path(), "twice");
    let out = ok(&trailwatch(&[
        "--config",
        twice.to_str().unwrap(),
        "replay",
        corpus.to_str().unwrap(),
        copy.to_str().unwrap(),
    ]));
    assert!(out.contains(&format!("files: {} applied", 2 * files)), "{out}");
    let want = correlated(&once_sink);
    assert_eq!(want.len(), 2, "{want:?}");
    assert_eq!(correlated(&twice_sink), want);
}

/// A sink that misbehaves delays only itself, follows no redirect, and leaks no secret into the log:
/// - `hang` accepts connections and never answers (its timeout is longer than the test waits);
/// - `moved` answers every alert with a 307 to another server, from a URL that carries a token;
/// - `jsonl`, a file, must still get every alert promptly, and SIGTERM must end the daemon within the grace.
#[test]
fn a_hanging_or_redirecting_sink_delays_only_itself_and_leaks_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (corpus, expected) = incident_corpus(tmp.path());
    let hang = TcpListener::bind("127.0.0.1:0").unwrap();
    let thief = TcpListener::bind("127.0.0.1:0").unwrap();
    let moved = TcpListener::bind("127.0.0.1:0").unwrap();
    let stolen = Arc::new(Mutex::new(0usize));
    let (thief_port, hang_port, moved_port) = [&thief, &hang, &moved].map(|l| l.local_addr().unwrap().port()).into();
    {
        let stolen = Arc::clone(&stolen);
        std::thread::spawn(move || {
            for stream in thief.incoming().flatten() {
                *stolen.lock().unwrap() += 1;
                drop(stream);
            }
        });
    }
    std::thread::spawn(move || {
        for stream in moved.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let (mut line, mut len) = (String::new(), 0);
            while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                line.clear();
            }
            let _ = reader.read_exact(&mut vec![0; len]);
            let mut stream = stream;
            let _ = write!(
                stream,
                "HTTP/1.1 307 Temporary Redirect\r\nlocation: http://127.0.0.1:{thief_port}/steal?token=LOCATIONSECRET\r\n\
                 content-length: 0\r\nconnection: close\r\n\r\n"
            );
        }
    });
    let held = Arc::new(Mutex::new(Vec::new()));
    {
        let held = Arc::clone(&held);
        std::thread::spawn(move || {
            for stream in hang.incoming().flatten() {
                held.lock().unwrap().push(stream);
            }
        });
    }
    let (port, state, sink) = (free_port(), tmp.path().join("s.db"), tmp.path().join("alerts.jsonl"));
    let config = tmp.path().join("tw.toml");
    std::fs::write(
        &config,
        format!(
            "[intake.spool]\ndir = {corpus:?}\nscan_interval_ms = 50\nmin_file_age_ms = 0\n[store]\npath = {state:?}\n\
             [http]\nlisten = \"127.0.0.1:{port}\"\n[alerts]\nshutdown_grace_secs = 1\n\
             [[alerts.sinks]]\nname = \"hang\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:{}/hook\"\ntimeout_ms = 120000\n\
             [[alerts.sinks]]\nname = \"moved\"\nkind = \"webhook\"\n\
             url = \"http://127.0.0.1:{}/hooks/PATHSECRET?token=QUERYSECRET\"\n\
             [[alerts.sinks]]\nname = \"jsonl\"\nkind = \"file\"\npath = {sink:?}\n",
            hang_port, moved_port,
        ),
    )
    .unwrap();
    let log = tmp.path().join("daemon.log");
    let mut daemon = bin()
        .env("RUST_LOG", "info")
        .args(["--config", config.to_str().unwrap(), "run"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // Every alert reaches the file while the first sink hangs on its first request.
    let delivered = wait_for(Duration::from_secs(60), || (jsonl(&sink).len() == expected.len()).then_some(()));
    // Redirects are failed deliveries: counted, kept in the outbox, never followed.
    let failures = wait_for(Duration::from_secs(30), || {
        let (_, body) = http_get(port, "/metrics")?;
        metric(&body, r#"trailwatch_alert_delivery_failures_total{sink="webhook"}"#).filter(|n| *n >= 1.0)
    });
    let terminated = std::time::Instant::now();
    std::process::Command::new("kill").args(["-TERM", &daemon.id().to_string()]).status().unwrap();
    let exit = wait_for(Duration::from_secs(30), || daemon.try_wait().unwrap());
    let stopped_in = terminated.elapsed();
    let _ = daemon.kill();
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(delivered.is_some(), "the file sink waited on the hanging one:\n{log}");
    assert!(failures.is_some(), "redirects were not failures:\n{log}");
    assert_eq!(*stolen.lock().unwrap(), 0, "a redirect was followed");
    assert!(exit.is_some_and(|e| e.success()), "{exit:?}\n{log}");
    assert!(stopped_in < Duration::from_secs(15), "SIGTERM took {stopped_in:?} with a 1 s grace");
    assert!(log.contains("redirects are not followed"), "{log}");
    for secret in ["PATHSECRET", "QUERYSECRET", "LOCATIONSECRET"] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
    let conn = rusqlite::Connection::open(&state).unwrap();
    let errors: Vec<String> = conn
        .prepare("SELECT last_error FROM outbox WHERE last_error IS NOT NULL")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(!errors.is_empty());
    assert!(errors.iter().all(|e| !e.contains("SECRET")), "{errors:?}");
    let kept: i64 = conn.query_row("SELECT count(*) FROM outbox WHERE sink = 'moved'", [], |r| r.get(0)).unwrap();
    assert_eq!(kept as usize, expected.len(), "every redirected alert stays pending");
}

/// Rule files are input too: a condition nested 16,000 levels deep (which overflowed the stack and aborted
/// start-up), 100,000 nested `[` (which YAML took a minute to refuse), a symlink to `/dev/zero`, a FIFO, an
/// oversized file and a directory symlink loop are each refused with a reason or skipped, and the good rule beside
/// them loads, both for `rules check` and for the loading the daemons do. A title or a file name carrying escape
/// sequences is listed escaped.
#[test]
fn hostile_rule_files_are_refused_not_fatal() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("rules");
    std::fs::create_dir(&dir).unwrap();
    let rule = |id: &str, condition: &str| {
        format!(
            "title: t\nid: {id}\nlogsource: {{product: aws, service: cloudtrail}}\n\
             detection:\n    sel:\n        eventName: DeleteTrail\n    condition: {condition}\n"
        )
    };
    std::fs::write(dir.join("good.yml"), rule("good", "sel")).unwrap();
    let deep = format!("'{}sel{}'", "(".repeat(16_000), ")".repeat(16_000));
    std::fs::write(dir.join("parens.yml"), rule("parens", &deep)).unwrap();
    std::fs::write(dir.join("nots.yml"), rule("nots", &format!("'{}sel'", "not ".repeat(16_000)))).unwrap();
    std::fs::write(dir.join("brackets.yml"), format!("title: {}", "[".repeat(100_000))).unwrap();
    std::fs::write(dir.join("huge.yml"), format!("{}\n{}", rule("huge", "sel"), "#".repeat(1 << 20))).unwrap();
    std::os::unix::fs::symlink("/dev/zero", dir.join("zero.yml")).unwrap();
    let fifo = dir.join("fifo.yml");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    std::os::unix::fs::symlink(&dir, dir.join("loop")).unwrap();
    let titled = rule("titled", "sel").replace("title: t", "title: \"t\\e]0;pwned\\a\\nno problems\"");
    std::fs::write(dir.join("titled.yml"), titled).unwrap();
    std::fs::write(dir.join("named\u{1b}[2J.yml"), "title: [").unwrap();

    let out = trailwatch(&["rules", "check", dir.to_str().unwrap()]);
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    for (file, reason) in [
        ("parens.yml", "nested more than 64 levels deep"),
        ("nots.yml", "nested more than 64 levels deep"),
        ("brackets.yml", "collections nested more than 64 levels deep"),
        ("huge.yml", "larger than 1048576 bytes"),
        ("zero.yml", "not a regular file"),
        ("fifo.yml", "not a regular file"),
    ] {
        assert!(report.lines().any(|l| l.contains(file) && l.contains(reason)), "{file}: {reason}\n{report}");
    }
    assert_eq!(report.lines().last(), Some("2 rules loaded, 7 failed"), "the loop adds nothing:\n{report}");
    assert!(report.contains(r"named\u{1b}[2J.yml"), "{report}");

    // The daemons' loading: the good rule beside the built-ins, the others listed as not loaded.
    let config = tmp.path().join("tw.toml");
    std::fs::write(&config, format!("[rules]\ndirs = [{dir:?}]\n")).unwrap();
    let listing = ok(&trailwatch(&["--config", config.to_str().unwrap(), "rules", "list"]));
    assert!(listing.lines().any(|l| l.starts_with("good ")), "{listing}");
    assert_eq!(listing.lines().filter(|l| l.starts_with("not loaded:")).count(), 7, "{listing}");
    assert!(listing.contains(r"t\u{1b}]0;pwned\u{7}\u{a}no problems"), "{listing}");
    for text in [&report, &listing] {
        assert!(!text.chars().any(|c| c.is_control() && c != '\n'), "{text:?}");
    }
}

/// The alerts a state holds, without what depends on when they were raised: by id, rule, count, times and events.
fn alert_facts(state: &Path) -> Vec<(String, String, u64, String, String, Vec<String>)> {
    stored_alerts(state)
        .into_iter()
        .map(|(id, body)| {
            let a: Value = serde_json::from_str(&body).unwrap();
            let ids = a["event_ids"].as_array().unwrap().iter().map(|i| i.as_str().unwrap().to_owned()).collect();
            let text = |k: &str| a[k].as_str().unwrap_or_default().to_owned();
            (id, text("rule"), a["count"].as_u64().unwrap(), text("first_seen"), text("event_time"), ids)
        })
        .collect()
}

/// Results do not depend on batch size, thread count or arrival order within the correlation lateness: replays
/// with six-file batches on two threads (which used to change `unauthorized-api-calls` counts now and then), and
/// the spool daemon fed region by region (the order `aws s3 sync` writes files in, ten hours of logs), store
/// exactly the alerts of one replay on one thread.
#[test]
fn alerts_do_not_depend_on_batches_threads_or_region_by_region_arrival() {
    let tmp = tempfile::tempdir().unwrap();
    synth(tmp.path(), 120, 1000, 200, 5);
    let corpus = tmp.path().join("corpus");
    let replay = |name: &str, pipeline: &str| {
        let state = tmp.path().join(format!("{name}.db"));
        let config = tmp.path().join(format!("{name}.toml"));
        let sink = tmp.path().join(format!("{name}.jsonl"));
        std::fs::write(
            &config,
            format!("[pipeline]\n{pipeline}\n[[alerts.sinks]]\nkind = \"file\"\npath = {sink:?}\n"),
        )
        .unwrap();
        let args = ["--config", config.to_str().unwrap(), "--state", state.to_str().unwrap(), "replay"];
        ok(&trailwatch(&[&args[..], &[corpus.to_str().unwrap()]].concat()));
        alert_facts(&state)
    };
    let want = replay("one-thread", "threads = 1");
    let bursts = want.iter().filter(|a| a.1 == "unauthorized-api-calls").count();
    assert!(bursts >= 2, "{bursts} unauthorized-api-calls alerts: the corpus must exercise correlations");
    // (The unit tests of `correlate` interleave hits deterministically; here the real workers do.)
    assert_eq!(replay("small-batches", "threads = 2\nbatch_max_files = 6"), want, "six-file batches on two threads");

    // The spool daemon, fed one region at a time, in batches of six files as a sync trickling in would make.
    let (spool, state, port) = (tmp.path().join("spool"), tmp.path().join("spool.db"), free_port());
    std::fs::create_dir_all(&spool).unwrap();
    let config = tmp.path().join("spool.toml");
    let sink = tmp.path().join("spool.jsonl");
    std::fs::write(
        &config,
        format!(
            "[intake.spool]\ndir = {spool:?}\nscan_interval_ms = 50\nmin_file_age_ms = 0\n[store]\npath = {state:?}\n\
             [pipeline]\nbatch_max_files = 6\n[http]\nlisten = \"127.0.0.1:{port}\"\n\
             [[alerts.sinks]]\nkind = \"file\"\npath = {sink:?}\n"
        ),
    )
    .unwrap();
    let mut files = Vec::new();
    trailwatch::source::local::walk(&corpus, &mut files).unwrap();
    let region = |path: &Path| {
        path.to_str().unwrap().split("/CloudTrail/").nth(1).unwrap().split('/').next().unwrap().to_owned()
    };
    let mut regions: Vec<String> = files.iter().map(|(p, _)| region(p)).collect();
    regions.sort();
    regions.dedup();
    assert!(regions.len() >= 4, "{regions:?}");
    let mut daemon = bin()
        .args(["--config", config.to_str().unwrap(), "run"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut applied = 0;
    for r in &regions {
        for (path, _) in files.iter().filter(|(p, _)| &region(p) == r) {
            drop_file(&spool.join(path.strip_prefix(&corpus).unwrap()), &std::fs::read(path).unwrap());
            applied += 1;
        }
        let done = wait_for(Duration::from_secs(60), || {
            let (_, body) = http_get(port, "/metrics")?;
            (metric(&body, r#"trailwatch_files_total{outcome="applied"}"#)? == applied as f64).then_some(())
        });
        assert!(done.is_some(), "region {r} was not applied");
    }
    std::process::Command::new("kill").args(["-TERM", &daemon.id().to_string()]).status().unwrap();
    let exit = wait_for(Duration::from_secs(30), || daemon.try_wait().unwrap());
    let _ = daemon.kill();
    assert!(exit.is_some_and(|e| e.success()));
    assert_eq!(alert_facts(&state), want, "region by region through the spool");
}

/// The attack-behaviour rules over the state, each with a case that fires and cases that must not:
/// `sensitive-service-first-use` (a first successful call after the learning period; not a denied one, not one
/// within the learning period, not a service used before), `service-enumeration` (six services listed within ten
/// minutes, identity services among them; not five, not six spread over an hour, not six without iam or sts) and
/// `instance-credentials-used-elsewhere` (an instance's key from a second public address; not from a private
/// one, not a non-instance session's key). A second replay of more of the same raises nothing new.
#[test]
fn attack_behaviour_rules_use_the_state() {
    let tmp = tempfile::tempdir().unwrap();
    let (config, sink) = jsonl_config(tmp.path(), "behaviour");
    std::fs::write(&config, std::fs::read_to_string(&config).unwrap() + "[rules]\nbuiltin = false\n").unwrap();
    let cfg = config.to_str().unwrap();
    let account = "111111111111";
    let user = |name: &str| {
        serde_json::json!({"type": "IAMUser", "arn": format!("arn:aws:iam::{account}:user/{name}"),
                           "accountId": account, "userName": name})
    };
    let session = |role: &str, session: &str, key: &str| {
        serde_json::json!({"type": "AssumedRole", "accountId": account, "accessKeyId": key,
            "arn": format!("arn:aws:sts::{account}:assumed-role/{role}/{session}"),
            "sessionContext": {"sessionIssuer": {"type": "Role", "arn": format!("arn:aws:iam::{account}:role/{role}"),
                                                 "accountId": account, "userName": role}}})
    };
    let mut n = 0;
    let mut event = |day: i64, secs: i64, who: Value, call: &str, ip: &str, error: Option<&str>| {
        n += 1;
        let (source, name) = call.split_once(' ').unwrap();
        let time = 1_790_000_000 + day * 86_400 + secs;
        let mut record = serde_json::json!({"eventVersion": "1.09", "userIdentity": who,
            "eventTime": trailwatch::time::format_rfc3339(time), "eventSource": format!("{source}.amazonaws.com"),
            "eventName": name, "awsRegion": "us-east-1", "sourceIPAddress": ip, "eventID": format!("b-{n}"),
            "eventType": "AwsApiCall", "recipientAccountId": account});
        if let Some(code) = error {
            record["errorCode"] = code.into();
        }
        record
    };
    let six = [
        "sts GetCallerIdentity",
        "iam ListUsers",
        "s3 ListBuckets",
        "ec2 DescribeInstances",
        "cloudtrail DescribeTrails",
        "guardduty ListDetectors",
    ];
    let no_identity = [
        "rds DescribeDBInstances",
        "ecs ListClusters",
        "s3 ListBuckets",
        "ec2 DescribeInstances",
        "cloudtrail DescribeTrails",
        "guardduty ListDetectors",
    ];
    let mut records = Vec::new();
    for name in ["eve", "frank", "gina"] {
        records.push(event(0, 0, user(name), "sts GetCallerIdentity", "198.51.100.5", None));
    }
    // eve: Secrets Manager on day 20 (alert), Bedrock denied (none); frank: Secrets Manager on day 0 and day 20
    // (none); gina: Secrets Manager on day 3, still learning (none).
    records.push(event(20, 0, user("eve"), "secretsmanager GetSecretValue", "198.51.100.5", None));
    records.push(event(20, 60, user("eve"), "bedrock InvokeModel", "198.51.100.5", Some("AccessDeniedException")));
    records.push(event(0, 60, user("frank"), "secretsmanager GetSecretValue", "198.51.100.5", None));
    records.push(event(20, 0, user("frank"), "secretsmanager GetSecretValue", "198.51.100.5", None));
    records.push(event(3, 0, user("gina"), "secretsmanager GetSecretValue", "198.51.100.5", None));
    // harry: six services in five minutes (alert); ivan: five; judy: six over an hour; kim: six, none of them iam
    // or sts.
    for (who, spacing, calls) in
        [("harry", 60, &six[..]), ("ivan", 60, &six[..5]), ("judy", 700, &six[..]), ("kim", 60, &no_identity[..])]
    {
        for (i, call) in calls.iter().enumerate() {
            records.push(event(1, i as i64 * spacing, user(who), call, "198.51.100.5", None));
        }
    }
    // Instance credentials: ASIAONE from the instance's address and a stranger's (alert); ASIATWO from the
    // instance's and a private (VPC endpoint) address; ASIATHREE, a CI session's, from two addresses.
    let instance = |key: &str| session("web", "i-0123456789abcdef0", key);
    records.push(event(1, 0, instance("ASIAONE"), "s3 GetObject", "203.0.113.10", None));
    records.push(event(1, 30, instance("ASIAONE"), "ec2 DescribeInstances", "198.51.100.99", None));
    records.push(event(1, 0, instance("ASIATWO"), "s3 GetObject", "203.0.113.10", None));
    records.push(event(1, 30, instance("ASIATWO"), "s3 GetObject", "10.0.3.7", None));
    records.push(event(1, 0, session("ci", "build-7", "ASIATHREE"), "s3 GetObject", "203.0.113.20", None));
    records.push(event(1, 30, session("ci", "build-7", "ASIATHREE"), "s3 GetObject", "198.51.100.20", None));
    let file = tmp.path().join("behaviour.json");
    std::fs::write(&file, serde_json::json!({ "Records": records }).to_string()).unwrap();
    ok(&trailwatch(&["--config", cfg, "replay", file.to_str().unwrap()]));
    let got: BTreeSet<(String, String)> = jsonl(&sink)
        .iter()
        .map(|a| (a["rule"].as_str().unwrap().to_owned(), a["principal"].as_str().unwrap().to_owned()))
        .collect();
    let arn = |kind: &str, name: &str| format!("arn:aws:iam::{account}:{kind}/{name}");
    let want: BTreeSet<(String, String)> = [
        ("sensitive-service-first-use".to_owned(), arn("user", "eve")),
        ("service-enumeration".to_owned(), arn("user", "harry")),
        ("instance-credentials-used-elsewhere".to_owned(), arn("role", "web")),
    ]
    .into_iter()
    .collect();
    assert_eq!(got, want);
    let alerts = jsonl(&sink);
    let elsewhere = alerts.iter().find(|a| a["rule"] == "instance-credentials-used-elsewhere").unwrap();
    assert_eq!(elsewhere["details"]["source_ips"], serde_json::json!(["198.51.100.99", "203.0.113.10"]));
    assert_eq!(elsewhere["details"]["instance"], "i-0123456789abcdef0");
    let sweep = alerts.iter().find(|a| a["rule"] == "service-enumeration").unwrap();
    assert_eq!(sweep["details"]["services"].as_array().unwrap().len(), 6, "{sweep}");
    // More of the same later (eve's second secret, harry's sweep again in the same window) raises nothing.
    let later = tmp.path().join("later.json");
    let again = vec![
        event(21, 0, user("eve"), "secretsmanager GetSecretValue", "198.51.100.5", None),
        event(1, 400, user("harry"), "iam ListRoles", "198.51.100.5", None),
    ];
    std::fs::write(&later, serde_json::json!({ "Records": again }).to_string()).unwrap();
    ok(&trailwatch(&["--config", cfg, "replay", later.to_str().unwrap()]));
    assert_eq!(jsonl(&sink).len(), alerts.len());
}
