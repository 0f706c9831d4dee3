//! `report permissions` and `report policy` over `tests/data/permissions`: an account's authorization details
//! (a user with a group and an URL-encoded inline policy, an admin user behind a boundary, a role with
//! `NotAction`, `Deny` and a data-event grant, a role last used a year ago) and a day of usage, including a
//! deleted user. `expected.json` was checked by hand against both files; each finding kind is named below.

use std::collections::BTreeSet;
use std::path::Path;

use trailwatch::permissions::policy::PolicyDocument;

use crate::util::{data, ok, trailwatch};

const ALICE: &str = "arn:aws:iam::111122223333:user/alice";
const APP: &str = "arn:aws:iam::111122223333:role/service/app";

/// A config with the fixture inventory and a state replayed from the fixture events.
fn replayed(dir: &Path, extra: &str) -> String {
    let config = dir.join("tw.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\npath = {:?}\n[alerts]\nenabled = false\n[inventory]\nfiles = [{:?}]\n{extra}",
            dir.join("s.db"),
            data("permissions/account.json")
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap().to_owned();
    ok(&trailwatch(&["--config", &config, "replay", data("permissions/events.json").to_str().unwrap()]));
    config
}

fn report(config: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["--config", config, "report", "permissions", "--as-of", "2026-10-01", "--format", "json"];
    args.extend_from_slice(extra);
    serde_json::from_str(&ok(&trailwatch(&args))).expect("the report is JSON")
}

fn of<'a>(report: &'a serde_json::Value, principal: &str) -> &'a serde_json::Value {
    report.as_array().unwrap().iter().find(|r| r["principal"] == principal).unwrap_or_else(|| panic!("{principal}"))
}

#[test]
fn every_finding_kind_is_reported_as_checked_by_hand() {
    let tmp = tempfile::tempdir().unwrap();
    let config = replayed(tmp.path(), "");
    let got = report(&config, &[]);
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data("permissions/expected.json")).unwrap()).unwrap();
    assert_eq!(got, want, "got:\n{}", serde_json::to_string_pretty(&got).unwrap());

    // The kinds, one by one, as the table shows them.
    let table = ok(&trailwatch(&["--config", &config, "report", "permissions", "--as-of", "2026-10-01"]));
    for line in [
        // unused services and actions (group policy; `s3:Get*` also covers data events)
        "  unused services    cloudwatch",
        "  unused action      cloudwatch:GetMetricData  in arn:aws:iam::111122223333:policy/dev-read Read",
        "  unused action      s3:Get*  in arn:aws:iam::111122223333:policy/dev-read Read  (data-event part unknown)",
        // used but not granted: an unconditional Deny, NotAction leaving IAM out, and a deleted user
        "  used, not granted  ec2:TerminateInstances",
        "  used, not granted  iam:ListRoles",
        "  used, not granted  sqs:ListQueues",
        // unknown, not unused
        "  unknown            lambda:InvokeFunction  in alice:deploy (inline) #0  (data_event)",
        "  unknown            iam:PassRole  in alice:deploy (inline) #0  (not_logged)",
        "  unknown            dynamodb:GetItem  in arn:aws:iam::111122223333:policy/app-data #0  (data_event)",
        // unused identities: never seen, and last used (by IAM's record) before the window
        "  finding            unused-identity: user arn:aws:iam::111122223333:user/bob not used in 90 days (never used)",
        "  finding            unused-identity: role arn:aws:iam::111122223333:role/old-role not used in 90 days (last used 2025-12-01T08:00:00Z)",
        // keys and passwords
        "  finding            access-key-unused: access key AKIABOB000000000001 of arn:aws:iam::111122223333:user/bob unused in 90 days (never used)",
        "  finding            access-key-not-rotated: access key AKIAALICEOLD0000001 of arn:aws:iam::111122223333:user/alice is 264 days old (rotate every 90 days)",
        "  finding            password-unused: arn:aws:iam::111122223333:user/bob has a console password and no console login in 90 days (last: never)",
        "  finding            unused-permissions: arn:aws:iam::111122223333:user/alice has 2 unused action pattern(s) and 1 unused service(s) in 90 days",
        "  deny not applied   app:app (inline) KeepLogs (has a condition or a narrower resource)",
    ] {
        assert!(table.lines().any(|l| l == line), "missing `{line}` in:\n{table}");
    }
    // A new key not yet a window old, and alice's recent console login, raise nothing.
    assert!(!table.contains("AKIAALICENEW0000002 of"), "{table}");
    assert!(!table.contains("password-unused: arn:aws:iam::111122223333:user/alice"), "{table}");
}

#[test]
fn the_window_and_the_data_event_setting_change_what_is_unused() {
    let tmp = tempfile::tempdir().unwrap();
    // alice's GetMetricData call was in March: inside a 300-day window, outside the default 90.
    let config = replayed(tmp.path(), "[permissions]\ndata_events_logged = true\n");
    let wide = report(&config, &["--window-days", "300", "--principal", ALICE]);
    assert_eq!(wide.as_array().unwrap().len(), 1);
    let alice = of(&wide, ALICE);
    assert_eq!(alice["unused_services"], serde_json::json!([]));
    assert!(alice["used_services"].as_array().unwrap().contains(&"cloudwatch".into()));
    // With data events recorded, an unused data-event grant is unused, not unknown; PassRole stays unknown.
    let narrow = report(&config, &[]);
    let alice = of(&narrow, ALICE);
    let unused: Vec<&str> =
        alice["unused_actions"].as_array().unwrap().iter().map(|u| u["pattern"].as_str().unwrap()).collect();
    assert!(unused.contains(&"lambda:InvokeFunction"), "{unused:?}");
    let unknown: Vec<&str> =
        alice["unknown"].as_array().unwrap().iter().map(|u| u["pattern"].as_str().unwrap()).collect();
    assert_eq!(unknown, ["iam:PassRole"]);
}

#[test]
fn the_suggested_policy_allows_exactly_what_was_used() {
    let tmp = tempfile::tempdir().unwrap();
    let config = replayed(tmp.path(), "");
    let report = report(&config, &[]);
    for principal in [ALICE, APP] {
        let out =
            trailwatch(&["--config", &config, "report", "policy", "--principal", principal, "--as-of", "2026-10-01"]);
        let text = ok(&out);
        // Valid IAM policy JSON, read back by trailwatch's own policy parser.
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(doc["Version"], "2012-10-17");
        let policy = PolicyDocument::parse(&text).unwrap();
        let actions: BTreeSet<String> = doc["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["Action"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_owned()))
            .collect();
        // Every successful call in the window, and nothing else (no wildcards).
        let used: &[&str] = match principal {
            ALICE => &["ec2:DescribeInstances", "lambda:UpdateFunctionCode", "s3:ListAllMyBuckets"],
            _ => &["dynamodb:DescribeTable", "ec2:TerminateInstances", "iam:ListRoles", "sqs:SendMessage"],
        };
        let used: BTreeSet<String> = used.iter().map(|a| (*a).to_owned()).collect();
        assert_eq!(actions, used, "{principal}");
        for action in &used {
            assert!(policy.statements.iter().any(|s| s.actions.matches(action)), "{principal}: {action}");
        }
        assert!(!policy.statements.iter().any(|s| s.actions.matches("iam:CreateUser")), "{principal}");
        let services: Vec<&str> =
            of(&report, principal)["used_services"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
        assert_eq!(policy.statements.len(), services.len(), "one statement per used service");
    }
    // Refusals name what is wrong.
    let out = trailwatch(&["--config", &config, "report", "policy", "--as-of", "2026-10-01"]);
    assert_eq!(out.status.code(), Some(64));
    let out =
        trailwatch(&["--config", &config, "report", "policy", "--principal", "arn:aws:iam::111122223333:user/nobody"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("neither the inventory nor the state knows this principal"));
}

/// The daemon raises the permission findings through the alert sinks, each once however many ticks pass: the
/// same findings `report permissions` lists at that time, with their subjects.
#[test]
fn the_daemon_raises_each_permission_finding_once() {
    use std::process::Stdio;
    use std::time::Duration;

    use crate::util::{bin, free_port, wait_for};

    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    std::fs::copy(data("permissions/events.json"), spool.join("events.json")).unwrap();
    let (port, sink) = (free_port(), tmp.path().join("alerts.jsonl"));
    let config = tmp.path().join("tw.toml");
    // State findings off in effect (thresholds of centuries): only permission findings are raised.
    std::fs::write(
        &config,
        format!(
            "[intake.spool]\ndir = {spool:?}\nscan_interval_ms = 50\nmin_file_age_ms = 0\n[store]\npath = {:?}\n\
             [http]\nlisten = \"127.0.0.1:{port}\"\n[rules]\nbuiltin = false\n\
             [findings]\ninactive_days = 100000\naccess_key_unused_days = 100000\ninterval_secs = 1\n\
             [inventory]\nfiles = [{:?}]\n\
             [[alerts.sinks]]\nname = \"jsonl\"\nkind = \"file\"\npath = {sink:?}\n",
            tmp.path().join("s.db"),
            data("permissions/account.json")
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let mut daemon =
        bin().args(["--config", config, "run"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let read = || -> Vec<(String, String)> {
        std::fs::read_to_string(&sink)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .map(|a| (a["rule"].as_str().unwrap().to_owned(), a["details"]["subject"].as_str().unwrap().to_owned()))
            .collect()
    };
    // The events are applied (alice's calls are in the state) before the findings stop changing.
    let applied = wait_for(Duration::from_secs(30), || {
        let out = trailwatch(&["--config", config, "report", "identities", "--format", "json"]);
        (out.status.success() && String::from_utf8_lossy(&out.stdout).contains("user/alice")).then_some(())
    });
    assert!(applied.is_some(), "the spool file was not applied");
    // Three more passes after that: every finding is there, none twice.
    let passed = crate::util::wait_for_findings_passes(port, 3.0, Duration::from_secs(30));
    let raised = read();
    let report: serde_json::Value =
        serde_json::from_str(&ok(&trailwatch(&["--config", config, "report", "permissions", "--format", "json"])))
            .unwrap();
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    assert!(passed, "the findings ticker did not run three more times");
    let mut want: Vec<(String, String)> = report
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["findings"].as_array().unwrap().iter())
        .map(|f| (f["rule"].as_str().unwrap().to_owned(), f["subject"].as_str().unwrap().to_owned()))
        .collect();
    want.sort();
    let mut got = raised.clone();
    got.sort();
    // Raised before the events were applied, an identity may have been unused then and used now; it is raised
    // once either way. Every finding of now is raised exactly once.
    for finding in &want {
        assert_eq!(got.iter().filter(|g| *g == finding).count(), 1, "{finding:?} in {got:?}");
    }
    assert!(want.iter().any(|(rule, _)| rule == "unused-identity"), "{want:?}");
    assert!(want.iter().any(|(rule, _)| rule == "password-unused"), "{want:?}");
}

/// One principal's report (read by index, analysed alone) is exactly its entry in the whole report, for every
/// identity of the fixture, and its policy is the same either way.
#[test]
fn one_principal_s_report_is_its_entry_in_the_whole_one() {
    let tmp = tempfile::tempdir().unwrap();
    let config = replayed(tmp.path(), "");
    let all = report(&config, &[]);
    let all = all.as_array().unwrap();
    assert!(all.len() > 3);
    for entry in all {
        let principal = entry["principal"].as_str().unwrap();
        let one = report(&config, &["--principal", principal]);
        assert_eq!(one.as_array().unwrap(), std::slice::from_ref(entry), "{principal}");
    }
    assert_eq!(report(&config, &["--principal", "arn:aws:iam::111122223333:user/nobody"]), serde_json::json!([]));
}
