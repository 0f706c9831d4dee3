//! Test helpers: the binary under test, fixture layouts, gzip, a tiny HTTP client and bounded polling.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use flate2::Compression;
use flate2::write::GzEncoder;

/// The binary, run from a scratch directory so that relative defaults (the `alerts.jsonl` sink) land there and
/// not in the source tree. Tests pass absolute paths.
pub fn bin() -> Command {
    let scratch = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cwd");
    std::fs::create_dir_all(&scratch).expect("scratch directory");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_trailwatch"));
    cmd.env("RUST_LOG", "warn").env_remove("TRAILWATCH_API_TOKEN").current_dir(scratch);
    cmd
}

/// A tool from Debian the tests run on loopback (`prometheus`, `promtool`, `prometheus-alertmanager`), which
/// `scripts/debian-tools` installs the first time a test needs one.
pub fn tool(name: &str) -> Command {
    static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    let found =
        || Command::new("sh").args(["-c", &format!("command -v {name}")]).output().is_ok_and(|o| o.status.success());
    if !found() {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/debian-tools");
        let status = Command::new(script).status().expect("scripts/debian-tools runs");
        assert!(status.success() && found(), "{name} is needed: scripts/debian-tools could not install it");
    }
    Command::new(name)
}

/// Runs `trailwatch` with `args` and returns its output; panics with both streams if it could not start.
pub fn trailwatch(args: &[&str]) -> Output {
    bin().args(args).output().expect("trailwatch runs")
}

#[track_caller]
pub fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(rel)
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// A gzip stream of `parts` members, split at arbitrary byte offsets (as concatenated uploads produce).
pub fn gzip_members(bytes: &[u8], parts: usize) -> Vec<u8> {
    let chunk = bytes.len().div_ceil(parts);
    bytes.chunks(chunk).flat_map(gzip).collect()
}

/// The `report identities --format json` of a state file.
pub fn report(state: &Path) -> serde_json::Value {
    let out = ok(&trailwatch(&["--state", state.to_str().unwrap(), "report", "identities", "--format", "json"]));
    serde_json::from_str(&out).expect("report is JSON")
}

/// Asserts two reports are equal, naming the first principal that differs.
#[track_caller]
pub fn assert_same_report(got: &serde_json::Value, want: &serde_json::Value) {
    let (g, w) = (got.as_array().unwrap(), want.as_array().unwrap());
    for (a, b) in g.iter().zip(w) {
        assert_eq!(a, b, "first differing identity");
    }
    assert_eq!(g.len(), w.len(), "number of identities");
}

/// Writes `bytes` to `path` via a hidden temporary name and a rename, as a careful producer would.
pub fn drop_file(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let tmp = path.with_file_name(format!(".{}.tmp", path.file_name().unwrap().to_string_lossy()));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Polls `check` until it returns `Some`, for at most `limit`.
pub fn wait_for<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the daemon listening on `port` has completed `passes` more periodic findings passes than when
/// called (`trailwatch_findings_runs_total`); false if that takes longer than `limit`.
pub fn wait_for_findings_passes(port: u16, passes: f64, limit: Duration) -> bool {
    let runs = || http_get(port, "/metrics").and_then(|(_, body)| metric(&body, "trailwatch_findings_runs_total"));
    let Some(start) = wait_for(limit, runs) else { return false };
    wait_for(limit, || runs().filter(|n| *n >= start + passes)).is_some()
}

/// A loopback port for a server a test starts: bindable a moment ago, never handed to two tests of one run, and
/// outside the kernel's ephemeral range (Linux: 32768–60999), which outgoing connections draw their ports from. A
/// port from `bind(:0)` lies in that range, so another test's client could take it before the server bound it
/// (a CI run lost a real Alertmanager's port that way).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    const FIRST: u16 = 20_000;
    const PORTS: u16 = 12_000;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    // Runs on one machine at the same time start at different places.
    let start = (std::process::id() % 600) as u16 * 20;
    for _ in 0..PORTS {
        let port = FIRST + (start + NEXT.fetch_add(1, Ordering::Relaxed) % PORTS) % PORTS;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {FIRST}..{}", FIRST + PORTS);
}

/// `GET path` over HTTP/1.1; returns the status code and body.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    http_get_with(port, path, "")
}

/// `GET path` with extra header lines (each ending in `\r\n`).
pub fn http_get_with(port: u16, path: &str, headers: &str) -> Option<(u16, String)> {
    let response = http_response(port, path, headers)?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let chunked = head.lines().any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding: chunked"));
    Some((status, if chunked { dechunk(body)? } else { body.to_owned() }))
}

/// The whole response to `GET path`, status line and headers included.
pub fn http_response(port: u16, path: &str, headers: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}Connection: close\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

/// A `Transfer-Encoding: chunked` body (Go servers use it for larger responses).
pub fn dechunk(mut rest: &str) -> Option<String> {
    let mut body = String::new();
    loop {
        let (size, tail) = rest.split_once("\r\n")?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            return Some(body);
        }
        body.push_str(tail.get(..size)?);
        rest = tail.get(size + 2..)?;
    }
}

/// The value of one sample in a Prometheus text exposition, e.g. `trailwatch_files_total{outcome="applied"}`.
pub fn metric(exposition: &str, sample: &str) -> Option<f64> {
    exposition
        .lines()
        .find_map(|line| line.strip_prefix(sample).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

/// Lays out the fixture set as a replay directory: plain, gzipped, multi-member and truncated files.
pub fn fixture_dir(dir: &Path) {
    let read = |name: &str| std::fs::read(data(&format!("fixtures/{name}"))).unwrap();
    let logs = dir.join("AWSLogs/111111111111/CloudTrail/us-east-1/2026/10/02");
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::write(logs.join("identities.json"), read("identities.json")).unwrap();
    std::fs::write(logs.join("errors.json.gz"), gzip_members(&read("errors.json"), 3)).unwrap();
    std::fs::write(logs.join("insights.json.gz"), gzip(&read("insights.json"))).unwrap();
    std::fs::write(logs.join("empty.json"), read("empty.json")).unwrap();
    let truncated = gzip(&read("identities.json"));
    std::fs::write(logs.join("truncated.json.gz"), &truncated[..truncated.len() / 2]).unwrap();
    std::fs::write(logs.join("invalid.json"), read("invalid.json")).unwrap();
    std::fs::write(logs.join("not-cloudtrail.json"), read("not-cloudtrail.json")).unwrap();
    let digests = dir.join("AWSLogs/111111111111/CloudTrail-Digest/us-east-1/2026/10/02");
    std::fs::create_dir_all(&digests).unwrap();
    std::fs::write(digests.join("digest.json.gz"), gzip(&read("digest.json"))).unwrap();
    // Neither `.json` nor `.gz`: not a candidate inside a directory.
    std::fs::write(dir.join("README.txt"), b"not a log").unwrap();
}

/// Writes a synth corpus to `dir/corpus` and returns the report it must produce.
pub fn synth(dir: &Path, files: usize, records: usize, principals: usize, seed: u64) -> serde_json::Value {
    let expect = dir.join("expected.json");
    ok(&trailwatch(&[
        "synth",
        "--out",
        dir.join("corpus").to_str().unwrap(),
        "--files",
        &files.to_string(),
        "--records",
        &records.to_string(),
        "--principals",
        &principals.to_string(),
        "--seed",
        &seed.to_string(),
        "--expect",
        expect.to_str().unwrap(),
    ]));
    serde_json::from_slice(&std::fs::read(expect).unwrap()).unwrap()
}

/// Small synth files and one of 40,000 records (50 MB of JSON) under `out`: the big one fits a worker's memory
/// budget but not a 300 MB address-space limit, which makes it a file that kills the process.
pub fn synth_with_a_big_file(out: &Path, small_files: usize) {
    for (files, records, seed) in [(small_files, 200, 1), (1, 40_000, 2)] {
        let (files, records, seed) = (files.to_string(), records.to_string(), seed.to_string());
        let out = out.to_str().unwrap();
        ok(&trailwatch(&["synth", "--out", out, "--files", &files, "--records", &records, "--seed", &seed]));
    }
}

/// The alerts a state holds, by id, with their stored bodies.
pub fn stored_alerts(state: &Path) -> Vec<(String, String)> {
    let conn = rusqlite::Connection::open_with_flags(state, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let mut stmt = conn.prepare("SELECT id, body FROM alerts ORDER BY id").unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
}
