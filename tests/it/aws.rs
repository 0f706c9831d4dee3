//! Against a real S3 emulator: moto's server, started on a free loopback port from the venv that
//! `scripts/moto-venv` creates (the tooling creates it when it is missing), driven by the real AWS SDK.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;

use crate::util::*;

/// A running `moto_server`, stopped on drop.
pub struct Moto {
    child: Child,
    pub port: u16,
}

static VENV: Mutex<()> = Mutex::new(());

fn moto_server() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let venv = std::env::var_os("TRAILWATCH_MOTO_VENV").map_or_else(|| root.join(".venv-moto"), PathBuf::from);
    let server = venv.join("bin/moto_server");
    let _guard = VENV.lock().unwrap_or_else(|e| e.into_inner());
    if !server.exists() {
        let status = Command::new(root.join("scripts/moto-venv")).status().expect("scripts/moto-venv runs");
        assert!(status.success(), "scripts/moto-venv failed: moto is needed for the AWS tests");
    }
    server
}

impl Moto {
    pub fn start() -> Moto {
        let server = moto_server();
        let port = free_port();
        let child = Command::new(server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server starts");
        let moto = Moto { child, port };
        wait_for(Duration::from_secs(30), || http_get(port, "/moto-api/").filter(|(s, _)| *s == 200))
            .expect("moto_server answers");
        moto
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn s3(&self) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(self.endpoint())
            .credentials_provider(Credentials::new("testing", "testing", None, None, "tests"))
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    /// A trailwatch config pointing `[aws]` at this emulator, with the state in `dir`.
    pub fn config(&self, dir: &Path) -> PathBuf {
        let path = dir.join("aws.toml");
        std::fs::write(
            &path,
            format!(
                "[store]\npath = {:?}\n[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\ns3_force_path_style = true\n",
                dir.join("state.db").to_str().unwrap(),
                self.endpoint()
            ),
        )
        .unwrap();
        path
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `trailwatch` with static emulator credentials and no instance metadata lookups.
pub fn trailwatch_aws(args: &[&str]) -> std::process::Output {
    bin()
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ENDPOINT_URL")
        .output()
        .expect("trailwatch runs")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// Uploads every file under `dir` to `bucket`, keyed by its path below `dir` with `rewrite` applied.
fn upload_dir(
    rt: &tokio::runtime::Runtime,
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    dir: &Path,
    rewrite: impl Fn(&str) -> String,
) -> usize {
    let mut files = Vec::new();
    trailwatch::source::local::walk(dir, &mut files).unwrap();
    for (path, _) in &files {
        let rel = path.strip_prefix(dir).unwrap().to_str().unwrap();
        let body = ByteStream::from(std::fs::read(path).unwrap());
        rt.block_on(s3.put_object().bucket(bucket).key(rewrite(rel)).body(body).send()).unwrap();
    }
    files.len()
}

#[test]
fn s3_backfill_equals_local_replay_and_applies_each_object_once() {
    let tmp = tempfile::tempdir().unwrap();
    let want = synth(tmp.path(), 12, 150, 120, 5);
    let corpus = tmp.path().join("corpus");

    let moto = Moto::start();
    let s3 = moto.s3();
    let rt = runtime();
    rt.block_on(s3.create_bucket().bucket("trail").send()).unwrap();
    // An organisation trail under a prefix: prefix/AWSLogs/o-xxxx/<account>/CloudTrail/<region>/Y/M/D/.
    let n = upload_dir(&rt, &s3, "trail", &corpus, |rel| rel.replacen("AWSLogs/", "org/AWSLogs/o-abc123def4/", 1));
    assert_eq!(n, 12);
    // Files that must not be applied: a digest, and an object outside CloudTrail's layout.
    let digest = std::fs::read(data("fixtures/digest.json")).unwrap();
    let digest_key = "org/AWSLogs/o-abc123def4/100000000000/CloudTrail-Digest/us-east-1/2026/10/01/d.json.gz";
    rt.block_on(s3.put_object().bucket("trail").key(digest_key).body(ByteStream::from(gzip(&digest))).send()).unwrap();
    rt.block_on(s3.put_object().bucket("trail").key("org/README.txt").body(ByteStream::from_static(b"hi")).send())
        .unwrap();

    let config = moto.config(tmp.path());
    let args = ["--config", config.to_str().unwrap(), "replay", "s3://trail/org"];
    let out = ok(&trailwatch_aws(&args));
    assert!(out.contains("files: 12 applied, 0 already applied, 0 rejected"), "{out}");
    assert_same_report(&report(&tmp.path().join("state.db")), &want);
    // Again: every object is recognised by key and ETag, and nothing is fetched or counted twice.
    let out = ok(&trailwatch_aws(&args));
    assert!(out.contains("files: 0 applied, 12 already applied, 0 rejected"), "{out}");
    assert_same_report(&report(&tmp.path().join("state.db")), &want);
}

#[test]
fn s3_backfill_prunes_by_account_region_and_day() {
    let tmp = tempfile::tempdir().unwrap();
    let moto = Moto::start();
    let s3 = moto.s3();
    let rt = runtime();
    rt.block_on(s3.create_bucket().bucket("trail").send()).unwrap();
    let file = gzip(&std::fs::read(data("fixtures/identities.json")).unwrap());
    let keys = [
        ("111111111111", "us-east-1", "2026/10/01"),
        ("111111111111", "us-east-1", "2026/10/02"),
        ("111111111111", "us-east-1", "2026/10/03"),
        ("111111111111", "eu-west-1", "2026/10/02"),
        ("222222222222", "us-east-1", "2026/10/02"),
    ];
    for (i, (account, region, day)) in keys.iter().enumerate() {
        let key = format!("AWSLogs/{account}/CloudTrail/{region}/{day}/{account}_CloudTrail_{region}_{i}.json.gz");
        rt.block_on(s3.put_object().bucket("trail").key(key).body(ByteStream::from(file.clone())).send()).unwrap();
    }
    let config = moto.config(tmp.path());
    let out = ok(&trailwatch_aws(&[
        "--config",
        config.to_str().unwrap(),
        "replay",
        "s3://trail",
        "--account",
        "111111111111",
        "--region",
        "us-east-1",
        "--since",
        "2026-10-02",
        "--until",
        "2026-10-03",
    ]));
    assert!(out.contains("files: 2 applied, 0 already applied, 0 rejected"), "{out}");
    // The rest, without filters: only the three not applied yet are fetched.
    let out = ok(&trailwatch_aws(&["--config", config.to_str().unwrap(), "replay", "s3://trail"]));
    assert!(out.contains("files: 3 applied, 2 already applied, 0 rejected"), "{out}");
}

#[test]
fn s3_errors_name_the_object_and_do_not_stop_the_backfill() {
    let tmp = tempfile::tempdir().unwrap();
    let moto = Moto::start();
    let s3 = moto.s3();
    let rt = runtime();
    rt.block_on(s3.create_bucket().bucket("trail").send()).unwrap();
    let prefix = "AWSLogs/111111111111/CloudTrail/us-east-1/2026/10/01";
    let good = gzip(&std::fs::read(data("fixtures/identities.json")).unwrap());
    let put = |key: &str, body: Vec<u8>| {
        rt.block_on(s3.put_object().bucket("trail").key(format!("{prefix}/{key}")).body(ByteStream::from(body)).send())
            .unwrap();
    };
    put("good.json.gz", good.clone());
    put("truncated.json.gz", good[..good.len() / 2].to_vec());
    put("big.json.gz", vec![b' '; 4096]);
    let config = moto.config(tmp.path());
    std::fs::write(&config, std::fs::read_to_string(&config).unwrap() + "[pipeline]\nmax_file_bytes = 3000\n").unwrap();
    let output = trailwatch_aws(&["--config", config.to_str().unwrap(), "replay", "s3://trail"]);
    let out = ok(&output);
    assert!(out.contains("files: 1 applied, 0 already applied, 2 rejected"), "{out}");
    assert!(out.contains("  rejected too_large: 1") && out.contains("  rejected truncated_gzip: 1"), "{out}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("s3://trail/{prefix}/big.json.gz: object size 4096 exceeds the cap")), "{stderr}");
    // A bucket that does not exist is an error that names it.
    let out = trailwatch_aws(&["--config", config.to_str().unwrap(), "replay", "s3://no-such-bucket"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("s3://no-such-bucket/"), "{out:?}");
}

pub fn sqs_client(moto: &Moto) -> aws_sdk_sqs::Client {
    let config = aws_sdk_sqs::config::Builder::new()
        .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
        .region(aws_sdk_sqs::config::Region::new("us-east-1"))
        .endpoint_url(moto.endpoint())
        .credentials_provider(aws_sdk_sqs::config::Credentials::new("testing", "testing", None, None, "tests"))
        .build();
    aws_sdk_sqs::Client::from_conf(config)
}

/// Messages still in the queue, visible or not.
fn queue_depth(rt: &tokio::runtime::Runtime, sqs: &aws_sdk_sqs::Client, url: &str) -> u64 {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let out = rt
        .block_on(
            sqs.get_queue_attributes()
                .queue_url(url)
                .attribute_names(A::ApproximateNumberOfMessages)
                .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
                .send(),
        )
        .unwrap();
    let attrs = out.attributes().unwrap();
    [A::ApproximateNumberOfMessages, A::ApproximateNumberOfMessagesNotVisible]
        .iter()
        .map(|a| attrs.get(a).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0))
        .sum()
}

/// Creates the bucket `trail` and the queue `ct`, with the bucket's object-created events notifying the queue
/// (moto then sends S3's test event to it). Returns the queue's URL.
fn trail_notifying_queue(rt: &tokio::runtime::Runtime, s3: &aws_sdk_s3::Client, sqs: &aws_sdk_sqs::Client) -> String {
    bucket_notifying_queue(rt, s3, sqs, "trail")
}

/// Creates `bucket` and the queue `ct`, with the bucket's object-created events notifying the queue. Returns the
/// queue's URL.
pub fn bucket_notifying_queue(
    rt: &tokio::runtime::Runtime,
    s3: &aws_sdk_s3::Client,
    sqs: &aws_sdk_sqs::Client,
    bucket: &str,
) -> String {
    use aws_sdk_s3::types::{Event, NotificationConfiguration, QueueConfiguration};

    rt.block_on(s3.create_bucket().bucket(bucket).send()).unwrap();
    let queue_url = rt.block_on(sqs.create_queue().queue_name("ct").send()).unwrap().queue_url.unwrap();
    let notification = NotificationConfiguration::builder()
        .queue_configurations(
            QueueConfiguration::builder()
                .queue_arn("arn:aws:sqs:us-east-1:123456789012:ct")
                .events(Event::from("s3:ObjectCreated:*"))
                .build()
                .unwrap(),
        )
        .build();
    rt.block_on(
        s3.put_bucket_notification_configuration().bucket(bucket).notification_configuration(notification).send(),
    )
    .unwrap();
    queue_url
}

#[test]
fn sqs_daemon_drains_every_notification_shape_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    let want = synth(tmp.path(), 16, 150, 100, 9);
    let corpus = tmp.path().join("corpus");

    let moto = Moto::start();
    let (s3, sqs, rt) = (moto.s3(), sqs_client(&moto), runtime());
    let queue_url = trail_notifying_queue(&rt, &s3, &sqs);
    let uploaded = upload_dir(&rt, &s3, "trail", &corpus, str::to_owned);
    assert_eq!(uploaded, 16);
    let mut files = Vec::new();
    trailwatch::source::local::walk(&corpus, &mut files).unwrap();
    let key = |i: usize| files[i].0.strip_prefix(&corpus).unwrap().to_str().unwrap().to_owned();
    let send = |body: String| {
        rt.block_on(sqs.send_message().queue_url(&queue_url).message_body(body).send()).unwrap();
    };
    // The other shapes, naming objects already announced (they must not count twice), a missing object, a
    // validation message, and a poison body that must stay in the queue.
    let ct = serde_json::json!({"s3Bucket": "trail", "s3ObjectKey": [key(0), key(1)]}).to_string();
    send(
        serde_json::json!({"Type": "Notification", "TopicArn": "arn:aws:sns:us-east-1:123456789012:t", "Message": ct})
            .to_string(),
    );
    send(
        serde_json::json!({"version": "0", "detail-type": "Object Created", "source": "aws.s3",
            "detail": {"bucket": {"name": "trail"}, "object": {"key": key(2)}}})
        .to_string(),
    );
    send(serde_json::json!({"s3Bucket": "trail", "s3ObjectKey": "AWSLogs/111111111111/CloudTrail/us-east-1/2026/10/01/gone.json.gz"}).to_string());
    send("CloudTrail validation message.".to_owned());
    send("this is not a notification".to_owned());

    let port = free_port();
    let config = sqs_config(&moto, tmp.path(), &queue_url, port, 30);
    let mut daemon = start_daemon(&config);
    // 16 S3 events + the S3 test event + 5 sent: all but the poison body are deleted.
    let body = wait_for(Duration::from_secs(90), || {
        let (status, body) = http_get(port, "/metrics")?;
        let deleted = metric(&body, "trailwatch_sqs_messages_deleted_total")?;
        (status == 200 && deleted >= 21.0).then_some(body)
    })
    .unwrap_or_else(|| panic!("the daemon did not drain the queue: {:?}", http_get(port, "/metrics")));
    assert_eq!(metric(&body, r#"trailwatch_files_total{outcome="applied"}"#), Some(16.0), "{body}");
    assert_eq!(metric(&body, r#"trailwatch_file_rejections_total{reason="no_such_key"}"#), Some(1.0), "{body}");
    assert_eq!(metric(&body, r#"trailwatch_sqs_unreadable_messages_total{reason="not_json"}"#), Some(1.0), "{body}");
    assert_eq!(metric(&body, r#"trailwatch_sqs_ignored_total{reason="s3_test_event"}"#), Some(1.0), "{body}");
    assert_eq!(
        metric(&body, r#"trailwatch_sqs_ignored_total{reason="cloudtrail_validation_message"}"#),
        Some(1.0),
        "{body}"
    );
    assert_eq!(metric(&body, "trailwatch_sqs_messages_deleted_total"), Some(21.0), "{body}");
    assert_eq!(http_get(port, "/readyz"), Some((200, "ready\n".to_owned())), "store open and queue reachable");
    assert_eq!(metric(&body, "trailwatch_event_lag_seconds_count"), Some(16.0), "one per committed file: {body}");
    assert!(metric(&body, "trailwatch_sqs_message_lag_seconds_count").is_some_and(|n| n >= 22.0), "{body}");
    let status = std::process::Command::new("kill").args(["-TERM", &daemon.id().to_string()]).status().unwrap();
    assert!(status.success());
    let exit = wait_for(Duration::from_secs(30), || daemon.try_wait().unwrap()).expect("daemon exits after SIGTERM");
    let mut stderr = String::new();
    std::io::Read::read_to_string(daemon.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(exit.success(), "{exit:?}\n{stderr}");
    assert!(stderr.contains("cannot read notification"), "{stderr}");
    assert_same_report(&report(&tmp.path().join("state.db")), &want);
    assert_eq!(queue_depth(&rt, &sqs, &queue_url), 1, "only the poison body is left");
}

pub fn sqs_config(moto: &Moto, dir: &Path, queue_url: &str, port: u16, visibility_secs: u32) -> PathBuf {
    let config = dir.join("sqs.toml");
    std::fs::write(
        &config,
        format!(
            "[intake]\nkind = \"sqs\"\n[intake.sqs]\nqueue_url = \"{queue_url}\"\nwait_time_secs = 1\n\
             visibility_timeout_secs = {visibility_secs}\n[store]\npath = {:?}\n[pipeline]\nbatch_max_wait_ms = 50\n\
             batch_max_files = 2\n[http]\nlisten = \"127.0.0.1:{port}\"\n\
             [aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\ns3_force_path_style = true\n",
            dir.join("state.db").to_str().unwrap(),
            moto.endpoint()
        ),
    )
    .unwrap();
    config
}

pub fn start_daemon(config: &Path) -> Child {
    bin()
        .args(["--config", config.to_str().unwrap(), "run"])
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdout(Stdio::null())
        // Logged at warn only (`bin()` sets RUST_LOG), so the pipe does not fill.
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// How a running daemon is interrupted mid-stream.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Interrupt {
    Kill9,
    Sigterm,
}

/// Interrupts the SQS daemon while objects are in flight, restarts it, and checks: nothing lost, nothing counted
/// twice, no message left in the queue.
fn interrupt_mid_stream_then_restart(interrupt: Interrupt) {
    let tmp = tempfile::tempdir().unwrap();
    let want = synth(tmp.path(), 40, 100, 80, 13);
    let corpus = tmp.path().join("corpus");
    let moto = Moto::start();
    let (s3, sqs, rt) = (moto.s3(), sqs_client(&moto), runtime());
    let queue_url = trail_notifying_queue(&rt, &s3, &sqs);
    assert_eq!(upload_dir(&rt, &s3, "trail", &corpus, str::to_owned), 40);

    let port = free_port();
    // The shortest visibility timeout SQS allows, so that deliveries abandoned at the interruption come back quickly.
    let config = sqs_config(&moto, tmp.path(), &queue_url, port, 10);
    let mut daemon = start_daemon(&config);
    let applied = wait_for(Duration::from_secs(60), || {
        let (_, body) = http_get(port, "/metrics")?;
        metric(&body, r#"trailwatch_files_total{outcome="applied"}"#).filter(|&n| n >= 2.0)
    })
    .expect("the daemon applies files");
    match interrupt {
        Interrupt::Kill9 => {
            daemon.kill().unwrap(); // SIGKILL
            daemon.wait().unwrap();
        }
        Interrupt::Sigterm => {
            let status = std::process::Command::new("kill").args(["-TERM", &daemon.id().to_string()]).status().unwrap();
            assert!(status.success());
            let exit = wait_for(Duration::from_secs(40), || daemon.try_wait().unwrap()).expect("exits after SIGTERM");
            assert!(exit.success(), "SIGTERM drains and exits 0: {exit:?}");
        }
    }
    eprintln!("interrupted after {applied} of 40 files were applied");
    assert!(applied < 40.0, "the interruption must land mid-stream");

    let mut daemon = start_daemon(&config);
    let drained = wait_for(Duration::from_secs(90), || (queue_depth(&rt, &sqs, &queue_url) == 0).then_some(()));
    let status = std::process::Command::new("kill").args(["-TERM", &daemon.id().to_string()]).status().unwrap();
    assert!(status.success());
    let exit = wait_for(Duration::from_secs(30), || daemon.try_wait().unwrap()).expect("daemon exits after SIGTERM");
    assert!(exit.success(), "{exit:?}");
    assert!(drained.is_some(), "messages were left in the queue: {}", queue_depth(&rt, &sqs, &queue_url));
    let state = tmp.path().join("state.db");
    assert_same_report(&report(&state), &want);
    // The alerts as stored, bodies included, against a replay of the same files in one uninterrupted run.
    let clean = tmp.path().join("clean.db");
    ok(&trailwatch(&["--state", clean.to_str().unwrap(), "replay", corpus.to_str().unwrap()]));
    let want_alerts = stored_alerts(&clean);
    assert!(!want_alerts.is_empty(), "the corpus raises no alert to compare");
    assert_eq!(stored_alerts(&state), want_alerts);
}

#[test]
fn sqs_daemon_killed_mid_stream_then_restarted_is_exact() {
    interrupt_mid_stream_then_restart(Interrupt::Kill9);
}

#[test]
fn sqs_daemon_sigterm_mid_stream_drains_exits_0_and_a_restart_is_exact() {
    interrupt_mid_stream_then_restart(Interrupt::Sigterm);
}

/// The inventory from moto's IAM through the real SDK: users in a group, an inline policy, a boundary, a role
/// with `NotAction` and `Deny`, access keys and a console password; `inventory fetch` stores it, a replay of
/// usage events for those identities follows, and `report permissions` compares the two.
#[test]
fn iam_inventory_from_the_api_meets_replayed_usage() {
    use aws_sdk_iam::config::{BehaviorVersion, Credentials, Region};

    let moto = Moto::start();
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime();
    let iam = aws_sdk_iam::Client::from_conf(
        aws_sdk_iam::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(moto.endpoint())
            .credentials_provider(Credentials::new("testing", "testing", None, None, "tests"))
            .build(),
    );
    let doc = |statements: serde_json::Value| {
        serde_json::json!({ "Version": "2012-10-17", "Statement": statements }).to_string()
    };
    let arn = rt.block_on(async {
        let read = iam
            .create_policy()
            .policy_name("read")
            .policy_document(doc(serde_json::json!([{ "Effect": "Allow", "Action": ["s3:Get*", "s3:List*", "ec2:Describe*"], "Resource": "*" }])))
            .send()
            .await
            .unwrap();
        let read = read.policy().unwrap().arn().unwrap().to_owned();
        let admin = iam
            .create_policy()
            .policy_name("admin")
            .policy_document(doc(serde_json::json!([{ "Effect": "Allow", "Action": "*", "Resource": "*" }])))
            .send()
            .await
            .unwrap();
        let admin = admin.policy().unwrap().arn().unwrap().to_owned();
        let boundary = iam
            .create_policy()
            .policy_name("s3-only")
            .policy_document(doc(serde_json::json!([{ "Effect": "Allow", "Action": "s3:*", "Resource": "*" }])))
            .send()
            .await
            .unwrap();
        let boundary = boundary.policy().unwrap().arn().unwrap().to_owned();
        iam.create_group().group_name("devs").send().await.unwrap();
        iam.attach_group_policy().group_name("devs").policy_arn(&read).send().await.unwrap();
        let alice = iam.create_user().user_name("alice").send().await.unwrap();
        iam.add_user_to_group().group_name("devs").user_name("alice").send().await.unwrap();
        iam.put_user_policy()
            .user_name("alice")
            .policy_name("queue")
            .policy_document(doc(serde_json::json!([{ "Effect": "Allow", "Action": ["sqs:SendMessage", "iam:PassRole"], "Resource": "*" }])))
            .send()
            .await
            .unwrap();
        iam.create_access_key().user_name("alice").send().await.unwrap();
        iam.create_login_profile().user_name("alice").password("Pa55word!Pa55word!").send().await.unwrap();
        iam.create_user().user_name("bob").permissions_boundary(&boundary).send().await.unwrap();
        iam.attach_user_policy().user_name("bob").policy_arn(&admin).send().await.unwrap();
        let trust = doc(serde_json::json!([{ "Effect": "Allow", "Principal": { "Service": "ecs-tasks.amazonaws.com" }, "Action": "sts:AssumeRole" }]));
        iam.create_role().role_name("app").assume_role_policy_document(trust).send().await.unwrap();
        iam.put_role_policy()
            .role_name("app")
            .policy_name("app")
            .policy_document(doc(serde_json::json!([
                { "Effect": "Allow", "NotAction": "iam:*", "Resource": "*" },
                { "Effect": "Deny", "Action": "ec2:TerminateInstances", "Resource": "*" }
            ])))
            .send()
            .await
            .unwrap();
        alice.user().unwrap().arn().to_owned()
    });
    let account = arn.split(':').nth(4).unwrap().to_owned();
    let config = moto.config(tmp.path());
    let cfg = config.to_str().unwrap();
    let files = tmp.path().join("inventory");
    let out = trailwatch_aws(&["--config", cfg, "inventory", "fetch", "--out", files.to_str().unwrap()]);
    assert_eq!(ok(&out).trim(), format!("fetched the inventory of account {account}"));
    assert!(files.join(format!("{account}.json")).exists());
    // For an organisation: one role assumed per account (moto's STS hands out credentials for any role). An
    // account whose fetch fails (moto's account 999999999999 is empty) fails alone, named, and the exit code says so.
    let org = tmp.path().join("org.toml");
    std::fs::write(
        &org,
        format!(
            "{}[inventory.iam]\nassume_role_arns = [\"arn:aws:iam::{account}:role/app\", \"arn:aws:iam::999999999999:role/trailwatch\"]\n",
            std::fs::read_to_string(&config).unwrap()
        ),
    )
    .unwrap();
    let out = trailwatch_aws(&["--config", org.to_str().unwrap(), "inventory", "fetch"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("fetched the inventory of account {account}")), "{stdout}");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("iam (arn:aws:iam::999999999999:role/trailwatch): the authorization details hold no user"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A day of usage for them (events as CloudTrail writes them; moto writes none).
    let now = trailwatch::time::now();
    let at = trailwatch::time::format_rfc3339(now - 86_400);
    let user = |name: &str| serde_json::json!({ "type": "IAMUser", "arn": format!("arn:aws:iam::{account}:user/{name}"), "accountId": account, "userName": name, "principalId": format!("AIDA{name}") });
    let role = serde_json::json!({ "type": "AssumedRole", "arn": format!("arn:aws:sts::{account}:assumed-role/app/t"), "accountId": account, "principalId": "AROAAPP:t",
        "sessionContext": { "sessionIssuer": { "type": "Role", "arn": format!("arn:aws:iam::{account}:role/app"), "accountId": account, "userName": "app", "principalId": "AROAAPP" } } });
    let event = |i: usize, source: &str, name: &str, who: &serde_json::Value| {
        serde_json::json!({
        "eventVersion": "1.09", "eventTime": at, "eventSource": format!("{source}.amazonaws.com"), "eventName": name,
        "awsRegion": "us-east-1", "sourceIPAddress": "198.51.100.9", "userAgent": "aws-cli/2", "eventID": format!("iam-test-{i}"),
        "eventType": "AwsApiCall", "recipientAccountId": account, "userIdentity": who })
    };
    let records = vec![
        event(1, "s3", "ListBuckets", &user("alice")),
        event(2, "sqs", "SendMessage", &user("alice")),
        event(3, "ec2", "RunInstances", &role),
        event(4, "iam", "ListRoles", &role),
        event(5, "ec2", "TerminateInstances", &role),
    ];
    let events = tmp.path().join("events.json");
    std::fs::write(&events, serde_json::json!({ "Records": records }).to_string()).unwrap();
    ok(&trailwatch_aws(&["--config", cfg, "replay", events.to_str().unwrap()]));

    let report: serde_json::Value =
        serde_json::from_str(&ok(&trailwatch_aws(&["--config", cfg, "report", "permissions", "--format", "json"])))
            .unwrap();
    let of = |name: &str| {
        report
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["principal"].as_str().unwrap().ends_with(name))
            .unwrap_or_else(|| panic!("{name}: {report}"))
    };
    let patterns = |r: &serde_json::Value, field: &str| -> Vec<String> {
        r[field].as_array().unwrap().iter().map(|u| u["pattern"].as_str().unwrap().to_owned()).collect()
    };
    let strings = |r: &serde_json::Value, field: &str| -> Vec<String> {
        r[field].as_array().unwrap().iter().map(|u| u.as_str().unwrap().to_owned()).collect()
    };
    // alice: the group's policy and her inline one; s3:List* and sqs used, the rest unused or unknown.
    let alice = of(":user/alice");
    assert_eq!(strings(alice, "granted_services"), ["ec2", "iam", "s3", "sqs"]);
    assert_eq!(strings(alice, "used_services"), ["s3", "sqs"]);
    assert_eq!(strings(alice, "unused_services"), ["ec2"]);
    assert_eq!(patterns(alice, "unused_actions"), ["s3:Get*", "ec2:Describe*"]);
    assert_eq!(patterns(alice, "unknown"), ["iam:PassRole"]);
    assert_eq!(alice["console_password"], true);
    let keys = alice["access_keys"].as_array().unwrap();
    assert_eq!((keys.len(), keys[0]["status"].as_str()), (1, Some("Active")));
    // bob: `*` behind an s3-only boundary, never seen; created a moment ago in the emulator, so not unused yet...
    let bob = of(":user/bob");
    assert_eq!((bob["used_in_window"].as_bool(), bob["last_used"].is_null()), (Some(false), true));
    let unused =
        |r: &serde_json::Value| r["findings"].as_array().unwrap().iter().any(|f| f["rule"] == "unused-identity");
    assert!(!unused(bob), "{bob}");
    // ... and unused once it has existed for the whole window.
    let later = trailwatch::time::format_rfc3339(trailwatch::time::now() + 91 * 86_400);
    let report_later: serde_json::Value = serde_json::from_str(&ok(&trailwatch_aws(&[
        "--config",
        cfg,
        "report",
        "permissions",
        "--principal",
        bob["principal"].as_str().unwrap(),
        "--as-of",
        &later,
        "--format",
        "json",
    ])))
    .unwrap();
    assert!(unused(&report_later[0]), "{report_later}");
    // app: NotAction leaves IAM out, and the Deny takes TerminateInstances away.
    let app = of(":role/app");
    assert_eq!(strings(app, "used_not_granted"), ["ec2:TerminateInstances", "iam:ListRoles"]);
    assert_eq!(patterns(app, "unused_actions"), Vec::<String>::new());

    // The spool daemon with `[inventory.iam] enabled` fetches on start into its own state file.
    let daemon_dir = tmp.path().join("daemon");
    std::fs::create_dir_all(daemon_dir.join("spool")).unwrap();
    let daemon_config = daemon_dir.join("tw.toml");
    std::fs::write(
        &daemon_config,
        format!(
            "[store]\npath = {:?}\n[intake.spool]\ndir = {:?}\n[http]\nlisten = \"127.0.0.1:{}\"\n[alerts]\nenabled = false\n\
             [aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n[inventory.iam]\nenabled = true\n",
            daemon_dir.join("s.db"),
            daemon_dir.join("spool"),
            free_port(),
            moto.endpoint()
        ),
    )
    .unwrap();
    let mut daemon = start_daemon(&daemon_config);
    let dcfg = daemon_config.to_str().unwrap();
    let fetched = wait_for(Duration::from_secs(30), || {
        let out = trailwatch_aws(&[
            "--config",
            dcfg,
            "report",
            "permissions",
            "--format",
            "json",
            "--principal",
            &bob_arn(&account),
        ]);
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (report[0]["in_inventory"] == true).then_some(())
    });
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    assert!(fetched.is_some(), "the daemon did not fetch the inventory");
}

fn bob_arn(account: &str) -> String {
    format!("arn:aws:iam::{account}:user/bob")
}

/// One daemon entry point for both intake kinds, and one shutdown: on SIGTERM each finishes what it took in and
/// exits 0 within `alerts.shutdown_grace_secs` (here 1 s) of its deliveries, even with a sink that never answers,
/// whose alerts stay pending in the outbox and are named in the log.
#[test]
fn both_intakes_drain_on_sigterm_within_the_shutdown_grace() {
    let moto = Moto::start();
    let (s3, sqs, rt) = (moto.s3(), sqs_client(&moto), runtime());
    for kind in ["spool", "sqs"] {
        let tmp = tempfile::tempdir().unwrap();
        let (corpus, expected) = crate::alerts::incident_corpus(tmp.path());
        let hang = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let hang_port = hang.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in hang.incoming().flatten() {
                held.push(stream);
            }
        });
        let (port, state, sink) = (free_port(), tmp.path().join("state.db"), tmp.path().join("alerts.jsonl"));
        let intake = match kind {
            "spool" => format!("[intake.spool]\ndir = {corpus:?}\nscan_interval_ms = 50\nmin_file_age_ms = 0\n"),
            _ => {
                let queue_url = trail_notifying_queue(&rt, &s3, &sqs);
                upload_dir(&rt, &s3, "trail", &corpus, str::to_owned);
                format!(
                    "[intake]\nkind = \"sqs\"\n[intake.sqs]\nqueue_url = \"{queue_url}\"\nwait_time_secs = 1\n\
                     [aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\ns3_force_path_style = true\n",
                    moto.endpoint()
                )
            }
        };
        let config = tmp.path().join("tw.toml");
        std::fs::write(
            &config,
            format!(
                "{intake}[store]\npath = {state:?}\n[http]\nlisten = \"127.0.0.1:{port}\"\n[alerts]\nshutdown_grace_secs = 1\n\
                 [[alerts.sinks]]\nname = \"hang\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:{hang_port}/hook\"\n\
                 timeout_ms = 120000\n[[alerts.sinks]]\nname = \"jsonl\"\nkind = \"file\"\npath = {sink:?}\n"
            ),
        )
        .unwrap();
        let mut daemon = start_daemon(&config);
        let delivered =
            wait_for(Duration::from_secs(90), || (crate::alerts::jsonl(&sink).len() == expected.len()).then_some(()));
        let terminated = std::time::Instant::now();
        std::process::Command::new("kill").args(["-TERM", &daemon.id().to_string()]).status().unwrap();
        let exit = wait_for(Duration::from_secs(60), || daemon.try_wait().unwrap());
        let stopped_in = terminated.elapsed();
        let _ = daemon.kill();
        let mut log = String::new();
        std::io::Read::read_to_string(daemon.stderr.as_mut().unwrap(), &mut log).unwrap();
        assert!(delivered.is_some(), "{kind}: the file sink did not get every alert:\n{log}");
        assert!(exit.is_some_and(|e| e.success()), "{kind}: {exit:?}\n{log}");
        // The grace, plus the runtime's own 5 s for what it abandons and the time to notice the signal.
        assert!(stopped_in < Duration::from_secs(10), "{kind}: SIGTERM took {stopped_in:?} with a 1 s grace\n{log}");
        assert!(
            log.contains("delivery to sink hang still in progress at the end of the shutdown grace"),
            "{kind}: {log}"
        );
        let conn = rusqlite::Connection::open(&state).unwrap();
        let pending: i64 = conn.query_row("SELECT count(*) FROM outbox WHERE sink = 'hang'", [], |r| r.get(0)).unwrap();
        assert_eq!(pending as usize, expected.len(), "{kind}: the hanging sink's alerts stay pending");
    }
}
