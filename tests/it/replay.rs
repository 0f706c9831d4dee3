//! `replay`: exact state from fixtures and synth corpora, idempotence, crash safety, and real-world files.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::util::*;

/// The fixture set's report is pinned in `tests/data/fixtures-report.json`; set `TRAILWATCH_UPDATE_SNAPSHOTS=1` to
/// rewrite it after an intended change, and review the diff.
#[test]
fn fixtures_replay_to_the_pinned_report() {
    let tmp = tempfile::tempdir().unwrap();
    fixture_dir(&tmp.path().join("in"));
    let state = tmp.path().join("state.db");
    let out = ok(&trailwatch(&["--state", state.to_str().unwrap(), "replay", tmp.path().join("in").to_str().unwrap()]));
    for line in [
        "files: 4 applied, 0 already applied, 4 rejected",
        "  rejected digest_file: 1",
        "  rejected invalid_json: 1",
        "  rejected not_cloudtrail: 1",
        "  rejected truncated_gzip: 1",
        "records: 30 read, 22 applied, 2 insight events, 6 skipped",
        "  skipped not_an_object: 1",
        "  skipped invalid_event_time: 1",
        "  skipped missing_event_source: 1",
        "  skipped missing_event_name: 1",
        "  skipped no_identity: 2",
    ] {
        assert!(out.lines().any(|l| l == line), "missing {line:?} in:\n{out}");
    }
    let got = report(&state);
    let snapshot = data("fixtures-report.json");
    if std::env::var_os("TRAILWATCH_UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&snapshot, serde_json::to_string_pretty(&got).unwrap() + "\n").unwrap();
    }
    let want: serde_json::Value = serde_json::from_slice(&std::fs::read(&snapshot).unwrap()).unwrap();
    assert_same_report(&got, &want);
}

#[test]
fn replaying_twice_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    fixture_dir(&input);
    let state = tmp.path().join("state.db");
    let args = ["--state", state.to_str().unwrap(), "replay", input.to_str().unwrap()];
    ok(&trailwatch(&args));
    let first = report(&state);
    let out = ok(&trailwatch(&args));
    assert!(out.contains("files: 0 applied, 4 already applied, 4 rejected"), "{out}");
    assert_eq!(report(&state), first);
    // The same files named again by another path (a file and its directory) are still applied once.
    let one = input.join("AWSLogs/111111111111/CloudTrail/us-east-1/2026/10/02/identities.json");
    let out = ok(&trailwatch(&[
        "--state",
        state.to_str().unwrap(),
        "replay",
        one.to_str().unwrap(),
        input.to_str().unwrap(),
    ]));
    assert!(out.contains("files: 0 applied, 4 already applied"), "{out}");
    assert_eq!(report(&state), first);
}

/// CloudTrail log files are known by name: the same corpus moved elsewhere (a spool reorganised, a second copy of a
/// bucket) is recognised as applied, and a directory holding two copies of a file applies it once.
#[test]
fn a_cloudtrail_file_moved_or_copied_is_applied_once() {
    let tmp = tempfile::tempdir().unwrap();
    let want = synth(tmp.path(), 6, 50, 20, 11);
    let state = tmp.path().join("state.db");
    let replay = |dir: &Path| ok(&trailwatch(&["--state", state.to_str().unwrap(), "replay", dir.to_str().unwrap()]));
    let first = tmp.path().join("first");
    std::fs::create_dir(&first).unwrap();
    std::fs::rename(tmp.path().join("corpus"), first.join("corpus")).unwrap();
    let out = replay(&first);
    assert!(out.contains("files: 6 applied, 0 already applied, 0 rejected"), "{out}");
    assert_same_report(&report(&state), &want);
    // Moved, and a copy of one file beside it under another directory.
    let moved = tmp.path().join("moved");
    std::fs::rename(&first, &moved).unwrap();
    let one = pipeline_files(&moved).remove(0);
    std::fs::create_dir(moved.join("copy")).unwrap();
    std::fs::copy(&one, moved.join("copy").join(one.file_name().unwrap())).unwrap();
    let out = replay(&moved);
    assert!(out.contains("files: 0 applied, 6 already applied, 0 rejected"), "{out}");
    assert_same_report(&report(&state), &want);
    // Into a fresh state: the two copies are one file.
    std::fs::remove_file(&state).unwrap();
    let out = replay(&moved);
    assert!(out.contains("files: 6 applied, 0 already applied, 0 rejected"), "{out}");
    assert_same_report(&report(&state), &want);
}

/// Every `.json.gz` under `dir`, sorted.
fn pipeline_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.to_string_lossy().ends_with(".json.gz") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The synth generator knows what it generated; the replayed state must equal it field for field.
#[test]
fn synth_corpus_replays_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let want = synth(tmp.path(), 24, 400, 150, 42);
    for threads in ["1", "2"] {
        let state = tmp.path().join(format!("state-{threads}.db"));
        let corpus = tmp.path().join("corpus");
        let out = ok(&trailwatch(&[
            "--state",
            state.to_str().unwrap(),
            "replay",
            corpus.to_str().unwrap(),
            "--threads",
            threads,
        ]));
        assert!(out.contains("files: 24 applied, 0 already applied, 0 rejected"), "{out}");
        assert_same_report(&report(&state), &want);
    }
}

fn ledger_len(state: &Path) -> Option<i64> {
    let conn = rusqlite::Connection::open_with_flags(state, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).ok()?;
    conn.query_row("SELECT count(*) FROM ledger", [], |r| r.get(0)).ok()
}

/// `kill -9` at several points of a replay, then a full rerun: the state equals an uninterrupted run's.
#[test]
fn kill_9_during_replay_then_rerun_equals_a_clean_run() {
    let tmp = tempfile::tempdir().unwrap();
    let want = synth(tmp.path(), 120, 250, 300, 7);
    let corpus = tmp.path().join("corpus");
    // Small batches so that there are many commits to land between.
    let config = tmp.path().join("small-batches.toml");
    std::fs::write(&config, "[pipeline]\nbatch_max_files = 2\nthreads = 2\n").unwrap();
    let state = tmp.path().join("state.db");
    let args =
        ["--config", config.to_str().unwrap(), "--state", state.to_str().unwrap(), "replay", corpus.to_str().unwrap()];
    let mut kills = 0;
    let mut seen = 0;
    for _ in 0..4 {
        let mut child = bin().args(args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        let progressed = wait_for(Duration::from_secs(60), || {
            if child.try_wait().unwrap().is_some() {
                return Some(false);
            }
            ledger_len(&state).filter(|&n| n > seen).map(|_| true)
        });
        match progressed {
            Some(true) if child.try_wait().unwrap().is_none() => {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                kills += 1;
                seen = ledger_len(&state).unwrap_or(seen);
            }
            _ => {
                child.wait().unwrap();
                break;
            }
        }
    }
    eprintln!("kill -9 landed {kills} times; {seen} of 120 files were committed before the last one");
    assert!(kills >= 1, "no kill landed mid-replay: the corpus is too small for this machine");
    assert!(seen < 120, "the kills must land before the end");
    let out = ok(&trailwatch(&args));
    assert!(out.contains("0 rejected"), "{out}");
    assert_same_report(&report(&state), &want);
    // The alerts too, as stored (counts, event ids, and the region, address and agent each names), against an
    // uninterrupted run with the same batches and threads.
    let clean = tmp.path().join("clean.db");
    ok(&trailwatch(&[
        "--config",
        config.to_str().unwrap(),
        "--state",
        clean.to_str().unwrap(),
        "replay",
        corpus.to_str().unwrap(),
    ]));
    let want_alerts = stored_alerts(&clean);
    assert!(want_alerts.len() > 10, "{} alerts: too few to compare", want_alerts.len());
    assert_eq!(stored_alerts(&state), want_alerts);
}

/// Real third-party CloudTrail files (../shared/corpus): every valid file applies, the invalid one is reported,
/// and the run goes on.
#[test]
fn shared_corpus_replays() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus");
    assert!(corpus.is_dir(), "{} is missing: CI lays shared/ beside the clone", corpus.display());
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state.db");
    let output = trailwatch(&["--state", state.to_str().unwrap(), "replay", corpus.to_str().unwrap()]);
    let out = ok(&output);
    assert!(out.contains("files: 75 applied, 0 already applied, 1 rejected"), "{out}");
    assert!(out.contains("  rejected invalid_json: 1"), "{out}");
    assert!(out.contains("5 insight events"), "{out}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("SerializerTestFileBadJsonFormat.json: invalid json"), "{stderr}");
    let identities = report(&state);
    let principals: Vec<&str> =
        identities.as_array().unwrap().iter().map(|i| i["principal"].as_str().unwrap()).collect();
    assert!(principals.contains(&"arn:aws:iam::123837392027:user/bert-jan"), "{principals:?}");
    assert!(principals.contains(&"arn:aws:iam::111122223333:root"), "{principals:?}");
    // No principal per role session.
    assert!(principals.iter().all(|p| !p.contains(":assumed-role/")), "{principals:?}");
}

/// A FIFO (or a device) named on the command line would block a worker for ever: it is refused before anything is
/// read.
#[test]
fn replay_refuses_what_is_not_a_regular_file() {
    let tmp = tempfile::tempdir().unwrap();
    let fifo = tmp.path().join("logs.json");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let state = tmp.path().join("s.db");
    let mut replay = bin()
        .args(["--state", state.to_str().unwrap(), "replay", "--no-alerts", fifo.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let exit = wait_for(Duration::from_secs(30), || replay.try_wait().unwrap());
    let _ = replay.kill();
    let mut stderr = String::new();
    std::io::Read::read_to_string(replay.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(exit.and_then(|e| e.code()), Some(1), "{stderr}");
    assert!(stderr.contains("logs.json: not a regular file or a directory"), "{stderr}");
}

/// A damaged state file is found on open by a writer (SQLite's quick_check) and named with what is wrong, instead of
/// failing commits later or not at all; a reader's error says each cause once.
#[test]
fn a_damaged_state_is_refused_with_what_is_wrong() {
    let tmp = tempfile::tempdir().unwrap();
    synth(tmp.path(), 10, 300, 100, 4);
    let state = tmp.path().join("s.db");
    let corpus = tmp.path().join("corpus");
    ok(&trailwatch(&["--state", state.to_str().unwrap(), "replay", "--no-alerts", corpus.to_str().unwrap()]));
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut file = std::fs::OpenOptions::new().write(true).open(&state).unwrap();
        let pages = std::fs::metadata(&state).unwrap().len() / 4096;
        assert!(pages > 20, "{pages} pages");
        // Every third page's b-tree header and first cells: what a torn write or a bad disk leaves. The first pages
        // (the schema) are spared: without them SQLite cannot even read which tables there are.
        for page in (4..pages).step_by(3) {
            file.seek(SeekFrom::Start(page * 4096 + 10)).unwrap();
            file.write_all(&[0xA5; 200]).unwrap();
        }
    }
    let out = trailwatch(&["--state", state.to_str().unwrap(), "replay", "--no-alerts", corpus.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is damaged (sqlite's quick_check: *** in database main ***; "), "{stderr}");
    assert!(stderr.contains("restore it from a backup, or move it aside"), "{stderr}");
    let out = trailwatch(&["--state", state.to_str().unwrap(), "report", "identities"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.matches("malformed").count(), 1, "each cause once: {stderr}");
    assert!(!stderr.contains("Error code"), "{stderr}");
}

/// Memory is bounded by configuration, not by what a file contains: a tiny-value flood (a few kilobytes of gzip
/// whose parse would take a tape entry per byte), deep nesting, a huge string and a gzip bomb are each rejected as
/// over the worker's budget, and the replay's peak stays within the budgets of its workers plus the rest.
#[test]
fn hostile_files_cannot_take_memory_past_the_worker_budget() {
    const BUDGET: u64 = 64 << 20;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hostile");
    std::fs::create_dir(&dir).unwrap();
    let write = |name: &str, json: Vec<u8>| std::fs::write(dir.join(name), gzip(&json)).unwrap();
    let flood = [&b"{\"Records\":[0"[..], &b",0".repeat(8 << 20), b"]}"].concat();
    write("flood.json.gz", flood);
    write("nested.json.gz", [&b"{\"Records\":"[..], &b"[".repeat(16 << 20), &b"]".repeat(16 << 20), b"}"].concat());
    write("string.json.gz", [&b"{\"Records\":[\""[..], &b"a".repeat(48 << 20), b"\"]}"].concat());
    write("bomb.json.gz", vec![b' '; 256 << 20]);
    let config = tmp.path().join("tw.toml");
    std::fs::write(&config, format!("[pipeline]\nthreads = 2\nmax_worker_memory_bytes = {BUDGET}\n")).unwrap();
    let state = tmp.path().join("s.db");
    let out = ok(&trailwatch(&[
        "--config",
        config.to_str().unwrap(),
        "--state",
        state.to_str().unwrap(),
        "replay",
        "--no-alerts",
        dir.to_str().unwrap(),
    ]));
    assert!(
        out.contains("files: 0 applied, 0 already applied, 4 rejected\n  rejected over_memory_budget: 4\n"),
        "{out}"
    );
    let peak_mb: f64 = out
        .lines()
        .find_map(|l| l.split("peak RSS ").nth(1))
        .and_then(|p| p.trim_end_matches(" MB").parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    assert!(peak_mb < ((2 * BUDGET) >> 20) as f64 + 150.0, "peak RSS {peak_mb} MB:\n{out}");
}

/// A file that kills the process (here: allocation fails under an address-space limit, and Rust aborts, as the
/// kernel's OOM killer or a bug would end it) does not kill it again after a restart: the restart tries the files
/// that were in hand apart, quarantines the one that kills its trial, applies the others, and later runs skip it.
#[test]
fn a_file_that_kills_the_process_is_quarantined_not_a_crash_loop() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("corpus");
    synth_with_a_big_file(&corpus, 4);
    let state = tmp.path().join("s.db");
    let replay = || {
        std::process::Command::new("prlimit")
            .arg(format!("--as={}", 300 << 20))
            .arg(env!("CARGO_BIN_EXE_trailwatch"))
            .args(["--state", state.to_str().unwrap(), "replay", "--no-alerts", "--threads", "2"])
            .arg(&corpus)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    let first = replay();
    assert!(!first.status.success(), "the big file must kill the first run: {first:?}");
    let second = replay();
    let (stdout, stderr) = (String::from_utf8_lossy(&second.stdout), String::from_utf8_lossy(&second.stderr));
    assert!(second.status.success(), "the restart died again:\n{stdout}\n{stderr}");
    assert_eq!(stderr.matches("quarantined: reading it killed the process").count(), 1, "{stderr}");
    // The small files were applied by the first run or this one; the big one counts as done.
    let files = |summary: &str| -> u64 {
        let line = summary.lines().find(|l| l.starts_with("files: ")).unwrap_or_default();
        line.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse::<u64>().ok()).take(2).sum()
    };
    assert_eq!(files(&stdout), 5, "{stdout}");
    assert!(!report(&state).as_array().unwrap().is_empty());
    let third = replay();
    let (stdout, stderr) = (String::from_utf8_lossy(&third.stdout), String::from_utf8_lossy(&third.stderr));
    assert!(third.status.success() && stdout.contains("files: 0 applied, 5 already applied"), "{stdout}");
    assert!(!stderr.contains("trying it apart"), "nothing left in hand after a clean run: {stderr}");
}
