//! `run`: the spool daemon applies files that are there at start and files that appear later, serves metrics and
//! health, drains on SIGTERM, and does not apply anything twice across restarts.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use crate::util::*;

fn start(config: &Path) -> Child {
    start_logging(config, "warn")
}

/// The daemon, logging at `level` on its stderr (which [`terminate`] returns).
fn start_logging(config: &Path, level: &str) -> Child {
    bin()
        .env("RUST_LOG", level)
        .args(["--config", config.to_str().unwrap(), "run"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn metrics(port: u16) -> Option<String> {
    http_get(port, "/metrics").filter(|(status, _)| *status == 200).map(|(_, body)| body)
}

fn wait_applied(port: u16, applied: f64, rejected: f64) -> String {
    wait_for(Duration::from_secs(60), || {
        let body = metrics(port)?;
        let got = (
            metric(&body, r#"trailwatch_files_total{outcome="applied"}"#)?,
            metric(&body, r#"trailwatch_files_total{outcome="rejected"}"#)?,
        );
        (got == (applied, rejected)).then_some(body)
    })
    .unwrap_or_else(|| {
        panic!("daemon did not reach {applied} applied and {rejected} rejected files: {:?}", metrics(port))
    })
}

/// Stops the daemon with SIGTERM, checks that it exits 0, and returns its stderr.
fn terminate(mut child: Child) -> String {
    let status = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let exit = wait_for(Duration::from_secs(30), || child.try_wait().unwrap()).expect("daemon exits after SIGTERM");
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(exit.success(), "exit {exit:?}; stderr:\n{stderr}");
    stderr
}

#[test]
fn spool_daemon_applies_new_files_once_and_drains_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let logs = spool.join("AWSLogs/111111111111/CloudTrail/us-east-1/2026/10/02");
    let fixture = |name: &str| std::fs::read(data(&format!("fixtures/{name}"))).unwrap();
    drop_file(&logs.join("identities.json.gz"), &gzip(&fixture("identities.json")));
    drop_file(&logs.join("invalid.json"), &fixture("invalid.json"));
    let port = free_port();
    let config = tmp.path().join("trailwatch.toml");
    std::fs::write(
        &config,
        format!(
            "[intake.spool]\ndir = {spool:?}\nscan_interval_ms = 50\nmin_file_age_ms = 0\n\
             [store]\npath = {state:?}\n[pipeline]\nbatch_max_wait_ms = 20\n[http]\nlisten = \"127.0.0.1:{port}\"\n",
            spool = spool.to_str().unwrap(),
            state = tmp.path().join("state.db").to_str().unwrap(),
        ),
    )
    .unwrap();
    ok(&trailwatch(&["--config", config.to_str().unwrap(), "validate"]));

    let daemon = start_logging(&config, "info");
    wait_applied(port, 1.0, 1.0);
    assert_eq!(http_get(port, "/healthz").map(|(s, _)| s), Some(200));
    assert_eq!(http_get(port, "/readyz"), Some((200, "ready\n".to_owned())));
    // A file that appears while the daemon runs, in a new directory.
    drop_file(
        &spool.join("AWSLogs/111111111111/CloudTrail/us-east-1/2026/10/03/errors.json.gz"),
        &gzip(&fixture("errors.json")),
    );
    let body = wait_applied(port, 2.0, 1.0);
    assert_eq!(metric(&body, "trailwatch_records_total"), Some(28.0), "{body}");
    assert_eq!(metric(&body, r#"trailwatch_file_rejections_total{reason="invalid_json"}"#), Some(1.0), "{body}");
    assert_eq!(metric(&body, r#"trailwatch_records_skipped_total{reason="no_identity"}"#), Some(2.0), "{body}");
    // The daemon's overview counts the rejected file, which only its counters know.
    let (_, overview) = http_get(port, "/").unwrap();
    assert!(overview.contains("<dt>Files rejected since start</dt><dd>1</dd>"), "{overview}");
    // One info line per batch applied: what it held, what it raised, and how far behind its newest event is.
    let log = terminate(daemon);
    let batches: Vec<&str> = log.lines().filter(|l| l.contains("applied a batch")).collect();
    assert_eq!(batches.len(), 2, "{log}");
    for (line, records) in batches.iter().zip(["records=15", "records=13"]) {
        for needle in [" INFO ", "files=1 ", records, "alerts=", "lag_secs="] {
            assert!(line.contains(needle), "{needle} missing from {line}");
        }
    }
    let state = tmp.path().join("state.db");
    let first = report(&state);
    assert!(first.as_array().unwrap().iter().any(|i| i["principal"] == "arn:aws:iam::111111111111:user/bob"));

    // A restart finds every file already applied: nothing changes.
    let daemon = start(&config);
    let body = wait_for(Duration::from_secs(30), || metrics(port)).expect("metrics after restart");
    assert_eq!(metric(&body, r#"trailwatch_files_total{outcome="applied"}"#), Some(0.0), "{body}");
    terminate(daemon);
    assert_eq!(report(&state), first);
}

#[test]
fn a_second_writer_on_the_same_state_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = tmp.path().join("trailwatch.toml");
    std::fs::write(
        &config,
        format!(
            "[intake.spool]\ndir = {:?}\n[store]\npath = {:?}\n[http]\nlisten = \"127.0.0.1:{port}\"\n",
            tmp.path().join("spool").to_str().unwrap(),
            tmp.path().join("state.db").to_str().unwrap()
        ),
    )
    .unwrap();
    let daemon = start(&config);
    wait_for(Duration::from_secs(30), || metrics(port)).expect("daemon up");
    let out = trailwatch(&["--config", config.to_str().unwrap(), "replay", tmp.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use by another trailwatch process"), "{out:?}");
    // The lock is the file's own, whatever name reaches it, and there is no lock file to delete.
    let state = tmp.path().join("state.db");
    std::os::unix::fs::symlink(&state, tmp.path().join("symlink.db")).unwrap();
    std::fs::hard_link(&state, tmp.path().join("hardlink.db")).unwrap();
    for name in ["symlink.db", "hardlink.db"] {
        let other = tmp.path().join(name);
        let out = trailwatch(&[
            "--state",
            other.to_str().unwrap(),
            "replay",
            "--no-alerts",
            data("fixtures").to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(1), "{name}: {out:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("in use by another trailwatch process"), "{out:?}");
    }
    assert!(!tmp.path().join("state.db.lock").exists());
    // Readers are not blocked.
    ok(&trailwatch(&["--config", config.to_str().unwrap(), "report", "identities"]));
    terminate(daemon);
}

#[test]
fn a_spool_that_disappears_is_retried_not_fatal() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let port = free_port();
    let config = tmp.path().join("trailwatch.toml");
    std::fs::write(
        &config,
        format!(
            "[intake.spool]\ndir = {:?}\nscan_interval_ms = 20\nmin_file_age_ms = 0\n[store]\npath = {:?}\n\
             [http]\nlisten = \"127.0.0.1:{port}\"\n",
            spool.to_str().unwrap(),
            tmp.path().join("state.db").to_str().unwrap()
        ),
    )
    .unwrap();
    let daemon = start(&config);
    wait_for(Duration::from_secs(30), || metrics(port)).expect("daemon up");
    std::fs::remove_dir_all(&spool).unwrap();
    wait_for(Duration::from_secs(30), || {
        metric(&metrics(port)?, "trailwatch_spool_scan_failures_total").filter(|&n| n >= 2.0)
    })
    .expect("scan failures are counted while the spool is missing");
    let (status, body) = http_get(port, "/readyz").unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.starts_with("not ready: spool "), "{body}");
    assert_eq!(http_get(port, "/healthz").map(|(s, _)| s), Some(200), "alive, though not ready");
    let fixture = std::fs::read(data("fixtures/identities.json")).unwrap();
    drop_file(&spool.join("later/identities.json"), &fixture);
    wait_applied(port, 1.0, 0.0);
    terminate(daemon);
}

/// The JSON API: with a token set, nothing under `/api/` answers without it (or with a wrong one); with it, the
/// identities, one identity, findings and alerts come back in the CLI reports' shapes. `/metrics` and the health
/// endpoints stay open. A non-loopback address without a token is refused before anything starts.
#[test]
fn the_api_requires_its_token_and_metrics_and_health_do_not() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let logs = spool.join("AWSLogs/111111111111/CloudTrail/us-east-1/2026/10/02");
    drop_file(&logs.join("identities.json"), &std::fs::read(data("fixtures/identities.json")).unwrap());
    let port = free_port();
    let state = tmp.path().join("s.db");
    let config = tmp.path().join("trailwatch.toml");
    std::fs::write(
        &config,
        format!(
            "[intake.spool]\ndir = {spool:?}\nscan_interval_ms = 50\nmin_file_age_ms = 0\n\
             [store]\npath = {state:?}\n[http]\nlisten = \"127.0.0.1:{port}\"\n[alerts]\nenabled = false\n"
        ),
    )
    .unwrap();
    let token = "s3cret-token-for-tests";
    let child = bin()
        .args(["--config", config.to_str().unwrap(), "run"])
        .env("TRAILWATCH_API_TOKEN", token)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_applied(port, 1.0, 0.0);
    let bearer = format!("Authorization: Bearer {token}\r\n");
    // Open: metrics and health.
    for path in ["/metrics", "/healthz", "/readyz"] {
        assert_eq!(http_get(port, path).map(|(s, _)| s), Some(200), "{path}");
    }
    // Closed without the token, or with a wrong one, whatever the path under /api/.
    for path in ["/api/v1/identities", "/api/v1/findings", "/api/v1/alerts", "/api/v1/nothing", "/api/other"] {
        assert_eq!(http_get(port, path).map(|(s, _)| s), Some(401), "{path} without a token");
        let wrong = "Authorization: Bearer s3cret-token-for-test\r\n";
        assert_eq!(http_get_with(port, path, wrong).map(|(s, _)| s), Some(401), "{path} with a wrong token");
    }
    // With it: the same JSON as the CLI.
    let (status, body) = http_get_with(port, "/api/v1/identities", &bearer).unwrap();
    assert_eq!(status, 200);
    let api: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_same_report(&api, &report(&state));
    let first = api[0]["principal"].as_str().unwrap().to_owned();
    let (status, body) = http_get_with(port, &format!("/api/v1/identities/{first}"), &bearer).unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap(), api[0]);
    let missing = "/api/v1/identities/arn:aws:iam::111111111111:user/nobody";
    assert_eq!(http_get_with(port, missing, &bearer).map(|(s, _)| s), Some(404));
    let (status, body) = http_get_with(port, "/api/v1/findings?as_of=2030-01-01", &bearer).unwrap();
    assert_eq!(status, 200, "{body}");
    let cli = ok(&trailwatch(&[
        "--config",
        config.to_str().unwrap(),
        "report",
        "findings",
        "--as-of",
        "2030-01-01",
        "--format",
        "json",
    ]));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap(),
        serde_json::from_str::<serde_json::Value>(&cli).unwrap()
    );
    let (status, body) = http_get_with(port, "/api/v1/alerts?limit=5", &bearer).unwrap();
    assert_eq!((status, body.trim()), (200, "[]"));
    assert_eq!(http_get_with(port, "/api/v1/findings?as_of=yesterday", &bearer).map(|(s, _)| s), Some(400));
    terminate(child);

    // Listening beyond loopback without a token is a configuration error (exit 64), before anything starts.
    let exposed = tmp.path().join("exposed.toml");
    std::fs::write(&exposed, format!("[store]\npath = {state:?}\n[http]\nlisten = \"0.0.0.0:{port}\"\n")).unwrap();
    let out = trailwatch(&["--config", exposed.to_str().unwrap(), "run"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a loopback address, so the JSON API needs a token"));
    let out = bin()
        .args(["--config", exposed.to_str().unwrap(), "validate"])
        .env("TRAILWATCH_API_TOKEN", token)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A spool daemon's configuration in `dir`: the spool (`dir/spool`, created) scanned every 50 ms, files taken at
/// once, the state in `dir/state.db`, HTTP on a free port, and `extra` sections. Returns the configuration file,
/// the spool, the state and the port.
fn spool_config(dir: &Path, extra: &str) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf, u16) {
    let (spool, state, port) = (dir.join("spool"), dir.join("state.db"), free_port());
    std::fs::create_dir_all(&spool).unwrap();
    let config = dir.join("trailwatch.toml");
    std::fs::write(
        &config,
        format!(
            "[intake.spool]\ndir = {spool:?}\nscan_interval_ms = 50\nmin_file_age_ms = 0\n[store]\npath = {state:?}\n\
             [http]\nlisten = \"127.0.0.1:{port}\"\n{extra}"
        ),
    )
    .unwrap();
    (config, spool, state, port)
}

/// A commit that fails (here a trigger makes every ledger insert fail, as a full disk or a damaged file would) is
/// retried with backoff, shown by `/readyz` and the metrics, and never ends the daemon; once the store works again
/// the files are applied.
#[test]
fn a_failing_commit_is_retried_and_reported_not_a_stop() {
    let tmp = tempfile::tempdir().unwrap();
    let (config, spool, state, port) = spool_config(tmp.path(), "[pipeline]\nbatch_max_wait_ms = 20\n");
    let daemon = start_logging(&config, "info");
    wait_for(Duration::from_secs(30), || metrics(port)).expect("daemon up");
    let conn = rusqlite::Connection::open(&state).unwrap();
    conn.execute_batch("CREATE TRIGGER fail BEFORE INSERT ON ledger BEGIN SELECT RAISE(ABORT, 'disk is full'); END;")
        .unwrap();
    let fixture = std::fs::read(data("fixtures/identities.json")).unwrap();
    drop_file(&spool.join("AWSLogs/111111111111/CloudTrail/us-east-1/2026/10/02/identities.json"), &fixture);
    let failing = wait_for(Duration::from_secs(30), || {
        let body = metrics(port)?;
        (metric(&body, "trailwatch_commit_failures_total")? >= 2.0).then_some(body)
    });
    let ready = http_get(port, "/readyz");
    conn.execute_batch("DROP TRIGGER fail;").unwrap();
    let body = wait_applied(port, 1.0, 0.0);
    let ready_again = http_get(port, "/readyz");
    let log = terminate(daemon);
    assert!(failing.is_some(), "the failed commit was not retried:\n{log}");
    let (status, why) = ready.unwrap();
    assert_eq!(status, 503);
    assert!(why.contains("commits failing") && why.contains("disk is full"), "{why}");
    assert_eq!(ready_again.map(|(s, _)| s), Some(200));
    assert!(metric(&body, "trailwatch_commit_failures_total").unwrap() >= 2.0);
    assert!(log.contains("commit failed, will retry") && log.contains("committing again"), "{log}");
    assert!(!report(&state).as_array().unwrap().is_empty());
}

/// Slow clients (slowloris: headers that never end) cannot starve the daemon: past its connection limit new
/// connections are closed at once, so the pipeline keeps its file descriptors (here under a limit of 512) and goes
/// on applying files; each slow connection is dropped after the header-read timeout, and then `/metrics` answers
/// again, counting the connections it refused.
#[test]
fn slow_clients_cannot_starve_the_daemon() {
    use std::io::{Read, Write};
    let tmp = tempfile::tempdir().unwrap();
    let (config, spool, state, port) = spool_config(tmp.path(), "[pipeline]\nbatch_max_wait_ms = 20\n");
    let mut daemon = std::process::Command::new("bash")
        .args(["-c", r#"ulimit -n 512 && exec "$0" --config "$1" run"#, env!("CARGO_BIN_EXE_trailwatch")])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(30), || metrics(port)).expect("daemon up");
    let slow: Vec<std::net::TcpStream> = (0..600)
        .filter_map(|_| {
            let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
            stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n").ok()?;
            Some(stream)
        })
        .collect();
    assert_eq!(slow.len(), 600, "the kernel accepts the connections; the daemon decides what to keep");
    // The pipeline still has descriptors: a new file is applied.
    let fixture = std::fs::read(data("fixtures/identities.json")).unwrap();
    drop_file(&spool.join("AWSLogs/111111111111/CloudTrail/us-east-1/2026/10/02/identities.json"), &fixture);
    let applied = wait_for(Duration::from_secs(30), || {
        let conn = rusqlite::Connection::open(&state).ok()?;
        conn.query_row("SELECT count(*) FROM ledger", [], |r| r.get::<_, i64>(0)).ok().filter(|n| *n == 1)
    });
    // Every slow connection ends: closed on arrival past the limit, or after the header-read timeout.
    let closed = slow
        .into_iter()
        .filter(|mut stream| {
            stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            // End of stream, a reset, or an answer before the close: anything but our own timeout.
            match stream.read(&mut [0; 512]) {
                Ok(0) => true,
                Ok(_answered) => true,
                Err(err) => !matches!(err.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
            }
        })
        .count();
    let body = wait_for(Duration::from_secs(30), || metrics(port));
    let _ = daemon.kill();
    let mut stderr = String::new();
    daemon.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    let _ = daemon.wait();
    assert!(applied.is_some(), "the file was not applied while slow clients held connections:\n{stderr}");
    assert_eq!(closed, 600);
    let body = body.expect("/metrics answers once the slow clients are gone");
    let refused = metric(&body, "trailwatch_http_connections_refused_total").unwrap();
    assert!(refused >= (600 - 256) as f64, "{refused} refused");
    assert!(!stderr.contains("Too many open files") && !stderr.contains("too many open files"), "{stderr}");
}

/// A spool subdirectory the daemon cannot read is skipped at every scan: logged at most ten times a minute, and
/// counted. Run as `nobody` when the tests run as root, whom permissions do not stop.
#[test]
fn an_unreadable_directory_is_counted_not_logged_at_every_scan() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let (config, spool, _, port) = spool_config(tmp.path(), "[alerts]\nenabled = false\n");
    let locked = spool.join("locked");
    std::fs::create_dir_all(&locked).unwrap();
    std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    let root = std::process::Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
    let mut command = if root {
        let mut command = std::process::Command::new("setpriv");
        command.args(["--reuid=65534", "--regid=65534", "--clear-groups", env!("CARGO_BIN_EXE_trailwatch")]);
        command
    } else {
        std::process::Command::new(env!("CARGO_BIN_EXE_trailwatch"))
    };
    let daemon = command
        .args(["--config", config.to_str().unwrap(), "run"])
        .current_dir(tmp.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let scanned = wait_for(Duration::from_secs(30), || {
        metric(&metrics(port)?, "trailwatch_spool_unreadable_directories_total").filter(|n| *n >= 40.0)
    });
    let log = terminate(daemon);
    assert!(scanned.is_some(), "not counted at every scan:\n{log}");
    let lines = log.lines().filter(|l| l.contains("skipping unreadable directory")).count();
    assert!((1..=10).contains(&lines), "{lines} lines for 40 scans:\n{log}");
}

/// The spool daemon killed by a file (an abort under an address-space limit, as the OOM killer would) and restarted
/// by its supervisor does not die on that file again: the restart quarantines it and serves on, applying the rest.
#[test]
fn a_daemon_restarted_after_an_abort_does_not_abort_again_on_the_same_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (config, spool, state, port) = spool_config(tmp.path(), "[pipeline]\nthreads = 2\n[alerts]\nenabled = false\n");
    synth_with_a_big_file(&spool, 3);
    let start = || {
        std::process::Command::new("prlimit")
            .arg(format!("--as={}", 300 << 20))
            .arg(env!("CARGO_BIN_EXE_trailwatch"))
            .args(["--config", config.to_str().unwrap(), "run"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut first = start();
    let died = wait_for(Duration::from_secs(60), || first.try_wait().unwrap());
    assert!(died.is_some_and(|status| !status.success()), "the big file must kill the first daemon: {died:?}");
    let second = start();
    let quarantined = wait_for(Duration::from_secs(60), || {
        let body = metrics(port)?;
        let applied = metric(&body, r#"trailwatch_files_total{outcome="applied"}"#)?;
        let ledger = rusqlite::Connection::open(&state)
            .ok()?
            .query_row("SELECT (SELECT count(*) FROM ledger), (SELECT count(*) FROM quarantine)", [], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
            })
            .ok()?;
        (ledger == (3, 1)).then_some(applied)
    });
    let log = terminate(second);
    assert!(quarantined.is_some(), "the restarted daemon did not quarantine the file and apply the rest:\n{log}");
    assert_eq!(log.matches("quarantined: reading it killed the process").count(), 1, "{log}");
}
