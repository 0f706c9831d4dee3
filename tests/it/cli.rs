//! The command line as a newcomer meets it: closed pipes, usage errors, filters, help texts, the rules it lists,
//! permission reports without AWS, and missing AWS credentials.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::util::*;

/// A state replayed from the fixture set, and its path.
fn fixture_state(dir: &Path) -> String {
    fixture_dir(&dir.join("logs"));
    let state = dir.join("s.db").to_str().unwrap().to_owned();
    ok(&trailwatch(&["--state", &state, "replay", "--no-alerts", dir.join("logs").to_str().unwrap()]));
    state
}

/// A reader that has gone away (`… | head` after its lines) is the reader's choice: the command ends quietly with
/// exit code 0. The pipe's read end is closed before the command starts, so every write fails.
#[test]
fn a_closed_pipe_ends_a_command_quietly() {
    let tmp = tempfile::tempdir().unwrap();
    let state = fixture_state(tmp.path());
    for args in [
        &["report", "identities", "--format", "json"][..],
        &["report", "identities"],
        &["report", "findings", "--as-of", "2027-06-01", "--format", "json"],
        &["report", "findings", "--as-of", "2027-06-01"],
        &["report", "permissions", "--format", "json"],
        &["rules", "list"],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = bin().arg("--state").arg(&state).args(args).stdout(writer).stderr(Stdio::piped()).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("Broken pipe") && !stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

/// What the user typed wrong is a usage error (exit code 64), naming the argument.
#[test]
fn usage_errors_exit_64() {
    let tmp = tempfile::tempdir().unwrap();
    let state = fixture_state(tmp.path());
    let out = trailwatch(&["--state", &state, "alerts", "test", "nosuch"]);
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no sink named `nosuch` (configured: jsonl)"), "{out:?}");
    let out = trailwatch(&["--state", &state, "report", "policy"]);
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--principal"), "{out:?}");
}

/// `report identities --principal` shows that one identity, in either format; an unknown one is an error.
#[test]
fn report_identities_takes_one_principal() {
    let tmp = tempfile::tempdir().unwrap();
    let state = fixture_state(tmp.path());
    let all = report(Path::new(&state));
    let first = &all.as_array().unwrap()[1];
    let principal = first["principal"].as_str().unwrap();
    let one: serde_json::Value = serde_json::from_str(&ok(&trailwatch(&[
        "--state",
        &state,
        "report",
        "identities",
        "--principal",
        principal,
        "--format",
        "json",
    ])))
    .unwrap();
    assert_eq!(one, serde_json::json!([first]));
    let table = ok(&trailwatch(&["--state", &state, "report", "identities", "--principal", principal]));
    assert_eq!(table.lines().count(), 2, "{table}");
    assert!(table.lines().nth(1).unwrap().starts_with(principal), "{table}");
    let out = trailwatch(&["--state", &state, "report", "identities", "--principal", "arn:aws:iam::1:user/nobody"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("arn:aws:iam::1:user/nobody: no such principal"));
}

/// The help says what each command does, including the daemon's parts beyond /metrics and /healthz.
#[test]
fn help_texts_say_what_commands_and_flags_do() {
    let run = ok(&trailwatch(&["run", "--help"]));
    for needle in ["spool directory or from SQS", "alerts", "JSON API", "SIGTERM"] {
        assert!(run.contains(needle), "{needle} missing from:\n{run}");
    }
    let synth = ok(&trailwatch(&["synth", "--help"]));
    for needle in
        ["--out <DIR>", "The directory to write into", "--seed <SEED>", "The random seed", "--inventory <DIR>"]
    {
        assert!(synth.contains(needle), "{needle} missing from:\n{synth}");
    }
}

/// `rules list` names every rule that can raise an alert: the Sigma rules, then the behavioural and periodic ones.
#[test]
fn rules_list_shows_behavioural_and_periodic_rules() {
    let listing = ok(&trailwatch(&["rules", "list"]));
    for (id, kind) in [
        ("root-account-usage", "event"),
        ("new-region-for-identity", "behavioural"),
        ("access-key-from-many-ips", "behavioural"),
        ("sensitive-service-first-use", "behavioural"),
        ("service-enumeration", "behavioural"),
        ("instance-credentials-used-elsewhere", "behavioural"),
        ("inactive-identity", "periodic"),
        ("access-key-unused", "periodic"),
        ("unused-identity", "periodic"),
        ("unused-permissions", "periodic"),
        ("access-key-not-rotated", "periodic"),
        ("password-unused", "periodic"),
    ] {
        let line = listing.lines().find(|l| l.starts_with(&format!("{id} "))).unwrap_or_else(|| panic!("{listing}"));
        assert_eq!(line.split_whitespace().nth(2), Some(kind), "{line}");
    }
}

/// Without AWS: `synth --inventory` writes the grants of the corpus's users and roles, so `report permissions`
/// compares usage with grants; without an inventory, the report says so first.
#[test]
fn permission_reports_work_without_aws_and_say_when_there_is_no_inventory() {
    let tmp = tempfile::tempdir().unwrap();
    let (corpus, inventory) = (tmp.path().join("corpus"), tmp.path().join("inventory"));
    ok(&trailwatch(&[
        "synth",
        "--out",
        corpus.to_str().unwrap(),
        "--files",
        "4",
        "--records",
        "200",
        "--inventory",
        inventory.to_str().unwrap(),
    ]));
    let state = tmp.path().join("s.db").to_str().unwrap().to_owned();
    ok(&trailwatch(&["--state", &state, "replay", "--no-alerts", corpus.to_str().unwrap()]));

    let bare = trailwatch(&["--state", &state, "report", "permissions", "--as-of", "2026-10-02"]);
    let stderr = String::from_utf8_lossy(&bare.stderr);
    assert!(stderr.starts_with("note: no inventory is configured"), "{stderr}");

    let files: Vec<String> =
        std::fs::read_dir(&inventory).unwrap().map(|e| format!("{:?}", e.unwrap().path())).collect();
    assert!(!files.is_empty());
    let config = tmp.path().join("tw.toml");
    std::fs::write(&config, format!("[inventory]\nfiles = [{}]\n", files.join(", "))).unwrap();
    let out = trailwatch(&[
        "--config",
        config.to_str().unwrap(),
        "--state",
        &state,
        "report",
        "permissions",
        "--as-of",
        "2026-10-02",
        "--format",
        "json",
    ]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("no inventory"), "{out:?}");
    let reports: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    let in_inventory: Vec<&serde_json::Value> =
        reports.as_array().unwrap().iter().filter(|r| r["in_inventory"] == true).collect();
    assert!(in_inventory.len() > 10, "{} identities in the inventory", in_inventory.len());
    for report in in_inventory {
        let unused = report["unused_actions"].to_string();
        assert!(unused.contains("s3:DeleteBucket"), "{report}");
        assert_eq!(report["used_not_granted"], serde_json::json!([]), "{report}");
    }
}

/// The reports spell an identity's kind alike: `report permissions` as `report identities` does.
#[test]
fn reports_agree_on_kind() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("tw.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\npath = {:?}\n[alerts]\nenabled = false\n[inventory]\nfiles = [{:?}]\n",
            tmp.path().join("s.db"),
            data("permissions/account.json")
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    ok(&trailwatch(&["--config", config, "replay", data("permissions/events.json").to_str().unwrap()]));
    let identities = report(&tmp.path().join("s.db"));
    let permissions: serde_json::Value =
        serde_json::from_str(&ok(&trailwatch(&["--config", config, "report", "permissions", "--format", "json"])))
            .unwrap();
    let mut compared = 0;
    for p in permissions.as_array().unwrap() {
        if let Some(i) = identities.as_array().unwrap().iter().find(|i| i["principal"] == p["principal"]) {
            assert_eq!(i["kind"], p["kind"], "{}", p["principal"]);
            compared += 1;
        }
    }
    assert!(compared >= 3, "{compared} identities in both reports");
}

/// Without credentials anywhere in the chain, an AWS command and the SQS daemon's `/readyz` say so in one plain
/// line, not with the SDK's dump of every provider's attempt.
#[test]
fn missing_aws_credentials_are_one_plain_line() {
    const LINE: &str = "no AWS credentials found: environment, profile, web identity, container or instance metadata";
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty");
    std::fs::write(&empty, "").unwrap();
    let closed = free_port();
    let config = tmp.path().join("tw.toml");
    let port = free_port();
    std::fs::write(
        &config,
        format!(
            "[store]\npath = {:?}\n[aws]\nregion = \"us-east-1\"\nendpoint_url = \"http://127.0.0.1:{closed}\"\n\
             [intake]\nkind = \"sqs\"\n[intake.sqs]\nqueue_url = \"http://127.0.0.1:{closed}/1/q\"\n\
             [http]\nlisten = \"127.0.0.1:{port}\"\n",
            tmp.path().join("s.db")
        ),
    )
    .unwrap();
    let no_credentials = |cmd: &mut std::process::Command| {
        for var in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"] {
            cmd.env_remove(var);
        }
        cmd.env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", &empty)
            .env("AWS_SHARED_CREDENTIALS_FILE", &empty)
            .env_remove("AWS_WEB_IDENTITY_TOKEN_FILE")
            .env_remove("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
            .env_remove("AWS_CONTAINER_CREDENTIALS_FULL_URI");
    };
    let mut replay = bin();
    replay.args(["--config", config.to_str().unwrap(), "replay", "--no-alerts", "s3://bucket/AWSLogs"]);
    no_credentials(&mut replay);
    let out = replay.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim_end(), format!("trailwatch: listing s3://bucket/AWSLogs/: {LINE}"));

    let mut daemon = bin();
    daemon.args(["--config", config.to_str().unwrap(), "run"]).stdout(Stdio::null()).stderr(Stdio::null());
    no_credentials(&mut daemon);
    let mut daemon = daemon.spawn().unwrap();
    let ready = wait_for(Duration::from_secs(30), || http_get(port, "/readyz"));
    let _ = daemon.kill();
    let _ = daemon.wait();
    assert_eq!(ready, Some((503, format!("not ready: queue http://127.0.0.1:{closed}/1/q: {LINE}\n"))));
}

/// Everything in a log file is the writer's: a principal, a key id, an action that carry escape sequences, a
/// newline, a carriage return or a right-to-left override reach every table escaped (`\u{1b}`), so none can
/// rewrite the screen, the window title or a line of the report; so does an error naming an object.
#[test]
fn tables_escape_what_would_act_on_the_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    let hostile_user = "ev\u{1b}[2J\u{1b}]0;pwned\u{7}il\nroot\r\u{202e}";
    let event = serde_json::json!({ "Records": [{
        "eventVersion": "1.08",
        "userIdentity": {
            "type": "IAMUser", "principalId": "AIDAEXAMPLE",
            "arn": format!("arn:aws:iam::111122223333:user/{hostile_user}"),
            "accountId": "111122223333", "accessKeyId": "AKIA\u{1b}[31mEXAMPLE", "userName": hostile_user
        },
        "eventTime": "2026-10-01T00:05:00Z",
        "eventSource": "s3\u{9b}31m.amazonaws.com",
        "eventName": "List\u{1b}[8mBuckets",
        "awsRegion": "us-east-1",
        "sourceIPAddress": "198.51.100.7",
        "userAgent": "aws-cli/2.15.0",
        "eventID": "00000000-0000-0000-0000-000000000001",
        "eventType": "AwsApiCall",
        "recipientAccountId": "111122223333"
    }]});
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::write(
        logs.join("111122223333_CloudTrail_us-east-1_20261001T0010Z_x.json.gz"),
        gzip(event.to_string().as_bytes()),
    )
    .unwrap();
    let state = tmp.path().join("s.db").to_str().unwrap().to_owned();
    ok(&trailwatch(&["--state", &state, "replay", "--no-alerts", logs.to_str().unwrap()]));
    for args in [
        &["report", "identities"][..],
        &["report", "permissions", "--as-of", "2026-10-02"],
        &["report", "findings", "--as-of", "2027-06-01"],
    ] {
        let out = trailwatch(&[&["--state", state.as_str()][..], args].concat());
        let table = ok(&out);
        let acting: Vec<char> =
            table.chars().filter(|c| (c.is_control() && *c != '\n') || ('\u{202a}'..='\u{202e}').contains(c)).collect();
        assert_eq!(acting, Vec::<char>::new(), "{args:?}: {table:?}");
        assert!(table.contains(r"user/ev\u{1b}[2J\u{1b}]0;pwned\u{7}il\u{a}root\u{d}\u{202e}"), "{args:?}: {table}");
        // One line per identity or finding: the newline in the name started none.
        assert!(!table.lines().any(|l| l.starts_with("root")), "{args:?}: {table}");
    }
    // An error that names an object says its name escaped too.
    let missing = tmp.path().join("gone\u{1b}]0;pwned\u{7}");
    let out = trailwatch(&["--state", &state, "replay", missing.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(r"gone\u{1b}]0;pwned\u{7}"), "{stderr}");
    assert!(!stderr.chars().any(|c| c.is_control() && c != '\n'), "{stderr:?}");
}
