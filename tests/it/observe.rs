//! Operability with the real tools from Debian: `promtool` lints a live scrape of the daemon and checks and unit-
//! tests the alert rules, a real Prometheus scrapes the daemon and answers a query, and everything in `deploy/`
//! is parsed and checked against the metrics catalogue.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::util::*;

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// A tool from Debian's `prometheus` package, which `.ci/run` installs.
#[track_caller]
fn succeeds(cmd: &mut Command) -> String {
    let out = cmd.output().expect("the tool runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

/// The spool daemon with the fixture files applied; returns it and its HTTP port.
fn daemon_with_files(dir: &Path) -> (std::process::Child, u16) {
    let spool = dir.join("spool");
    let logs = spool.join("AWSLogs/111111111111/CloudTrail/us-east-1/2026/10/02");
    drop_file(&logs.join("identities.json"), &std::fs::read(data("fixtures/identities.json")).unwrap());
    drop_file(&logs.join("invalid.json"), &std::fs::read(data("fixtures/invalid.json")).unwrap());
    let port = free_port();
    let config = dir.join("tw.toml");
    std::fs::write(
        &config,
        format!(
            "[intake.spool]\ndir = {spool:?}\nscan_interval_ms = 50\nmin_file_age_ms = 0\n[store]\npath = {:?}\n\
             [http]\nlisten = \"127.0.0.1:{port}\"\n[alerts]\nenabled = false\n",
            dir.join("s.db")
        ),
    )
    .unwrap();
    let child = bin()
        .args(["--config", config.to_str().unwrap(), "run"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let applied = wait_for(Duration::from_secs(30), || {
        let (_, body) = http_get(port, "/metrics")?;
        (metric(&body, r#"trailwatch_files_total{outcome="applied"}"#)? == 1.0
            && metric(&body, r#"trailwatch_files_total{outcome="rejected"}"#)? == 1.0)
            .then_some(())
    });
    assert!(applied.is_some(), "the daemon did not apply the fixtures");
    (child, port)
}

#[test]
fn promtool_accepts_a_live_scrape_and_a_real_prometheus_queries_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut daemon, port) = daemon_with_files(tmp.path());
    // The state gauges are refreshed every 15 s; the first refresh runs at start, before the files, so wait for
    // the next one. A scrape can land while a refresh is setting the gauges one by one, so wait for the last one
    // set (the ledger) as well as the first.
    let scrape = wait_for(Duration::from_secs(40), || {
        let (_, body) = http_get(port, "/metrics")?;
        (metric(&body, "trailwatch_identities")? > 0.0 && metric(&body, "trailwatch_ledger_files")? > 0.0)
            .then_some(body)
    })
    .expect("the state gauges are refreshed");
    let mut lint = tool("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    lint.stdin.take().unwrap().write_all(scrape.as_bytes()).unwrap();
    let out = lint.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.trim().is_empty(), "promtool check metrics:\n{text}");
    for name in ["trailwatch_process_resident_memory_bytes", "trailwatch_process_threads", "trailwatch_ledger_files"] {
        assert!(metric(&scrape, name).is_some_and(|v| v > 0.0), "{name} in:\n{scrape}");
    }
    assert!(metric(&scrape, "trailwatch_process_cpu_seconds_total").is_some(), "{scrape}");

    // A real Prometheus on loopback scrapes the daemon and answers through its query API.
    let prom_port = free_port();
    let prom_config = tmp.path().join("prometheus.yml");
    std::fs::write(
        &prom_config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: trailwatch\n    static_configs:\n      - targets: [\"127.0.0.1:{port}\"]\n"
        ),
    )
    .unwrap();
    let mut prometheus = tool("prometheus")
        .args([
            &format!("--config.file={}", prom_config.display()),
            &format!("--storage.tsdb.path={}", tmp.path().join("prom-data").display()),
            &format!("--web.listen-address=127.0.0.1:{prom_port}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let answer = wait_for(Duration::from_secs(60), || {
        let (status, body) = http_get(prom_port, "/api/v1/query?query=trailwatch_records_total")?;
        let json: serde_json::Value = serde_json::from_str(&body).ok()?;
        let value = json["data"]["result"][0]["value"][1].as_str()?.to_owned();
        (status == 200).then_some((value, json["data"]["result"][0]["metric"]["job"].as_str()?.to_owned()))
    });
    let up = http_get(prom_port, "/api/v1/query?query=up").map(|(_, b)| b);
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    let _ = daemon.kill();
    let _ = daemon.wait();
    let records = metric(&scrape, "trailwatch_records_total").unwrap();
    assert_eq!(answer, Some((records.to_string(), "trailwatch".to_owned())), "up: {up:?}");
}

/// Metric names an expression uses (histogram series map back to their family).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (at, _) in expr.match_indices("trailwatch_") {
        let name: String = expr[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        let family = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(&name);
        out.insert(family.to_owned());
    }
    out
}

#[test]
fn the_alert_rules_pass_promtool_and_name_only_catalogued_metrics() {
    succeeds(tool("promtool").args(["check", "rules"]).arg(repo("deploy/prometheus/alerts.yml")));
    succeeds(tool("promtool").args(["test", "rules"]).arg(repo("deploy/prometheus/alerts_test.yml")));
    succeeds(tool("promtool").args(["check", "config"]).arg(repo("deploy/prometheus/prometheus.yml")));
    let catalogue: BTreeSet<String> =
        trailwatch::metrics::Metrics::new().catalogue().into_iter().map(|m| m.name).collect();
    let rules: serde_json::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(repo("deploy/prometheus/alerts.yml")).unwrap()).unwrap();
    let mut alerts = BTreeSet::new();
    for rule in rules["groups"][0]["rules"].as_array().unwrap() {
        alerts.insert(rule["alert"].as_str().unwrap().to_owned());
        for name in metric_names(rule["expr"].as_str().unwrap()) {
            assert!(catalogue.contains(&name), "alert {} uses {name}, which is not in the catalogue", rule["alert"]);
        }
    }
    // No files processed, lag, errors, outbox stuck, queue backlog.
    for wanted in [
        "TrailwatchNoFilesProcessed",
        "TrailwatchLagHigh",
        "TrailwatchFileErrors",
        "TrailwatchAlertOutboxStuck",
        "TrailwatchQueueBacklog",
    ] {
        assert!(alerts.contains(wanted), "{wanted} missing from {alerts:?}");
    }
}

#[test]
fn the_dashboard_charts_only_catalogued_metrics_and_every_topic() {
    let catalogue: BTreeSet<String> =
        trailwatch::metrics::Metrics::new().catalogue().into_iter().map(|m| m.name).collect();
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo("deploy/grafana/trailwatch.json")).unwrap()).unwrap();
    let mut used = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let names = metric_names(target["expr"].as_str().unwrap());
            assert!(!names.is_empty(), "panel {} queries no trailwatch metric", panel["title"]);
            for name in names {
                assert!(
                    catalogue.contains(&name),
                    "panel {} uses {name}, which is not in the catalogue",
                    panel["title"]
                );
                used.insert(name);
            }
        }
    }
    // Throughput, lag, errors by reason, SQS activity, alerts by rule and severity, identities, inactive
    // identities, outbox depth.
    for wanted in [
        "trailwatch_records_total",
        "trailwatch_event_lag_seconds",
        "trailwatch_file_rejections_total",
        "trailwatch_sqs_messages_received_total",
        "trailwatch_rule_matches_total",
        "trailwatch_alerts_raised_total",
        "trailwatch_identities",
        "trailwatch_inactive_identities",
        "trailwatch_alert_outbox_depth",
    ] {
        assert!(used.contains(wanted), "the dashboard does not chart {wanted}");
    }
}

fn yaml_docs(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| serde_json::Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .collect()
}

use serde::Deserialize;

#[test]
fn compose_manifests_dockerfile_and_their_configs_are_sound() {
    // Compose: the four services, the demo profile, state on a volume.
    let compose = &yaml_docs(&repo("deploy/docker-compose.yml"))[0];
    for service in ["trailwatch", "prometheus", "grafana", "alertmanager", "demo"] {
        assert!(compose["services"][service].is_object(), "compose has no {service}");
    }
    assert_eq!(compose["services"]["demo"]["profiles"][0], "demo");
    assert!(compose["services"]["trailwatch"]["volumes"][0].as_str().unwrap().ends_with(":/data"));
    // Published on the host's loopback only (Grafana's anonymous viewer, the API), and no default API token.
    for (name, service) in compose["services"].as_object().unwrap() {
        for port in service["ports"].as_array().into_iter().flatten() {
            assert!(port.as_str().unwrap().starts_with("127.0.0.1:"), "{name} publishes {port} beyond loopback");
        }
    }
    let token = compose["services"]["trailwatch"]["environment"]["TRAILWATCH_API_TOKEN"].as_str().unwrap();
    assert!(token.starts_with("${TRAILWATCH_API_TOKEN:?"), "the API token has a default: {token}");
    for mounted in compose["services"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|s| s["volumes"].as_array().cloned().unwrap_or_default())
    {
        let source = mounted.as_str().unwrap().split(':').next().unwrap();
        if source.starts_with("./") {
            assert!(repo("deploy").join(source).exists(), "compose mounts {source}, which does not exist");
        }
    }
    // Kubernetes: the objects, probes, resources, security context and the IRSA annotation.
    let mut docs = yaml_docs(&repo("deploy/k8s/trailwatch.yaml"));
    docs.extend(yaml_docs(&repo("deploy/k8s/servicemonitor.yaml")));
    let kind = |k: &str| docs.iter().find(|d| d["kind"] == k).unwrap_or_else(|| panic!("no {k}"));
    let pod = &kind("Deployment")["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(
        container["resources"]["limits"]["memory"].is_string() && container["resources"]["requests"]["cpu"].is_string()
    );
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(container["securityContext"]["allowPrivilegeEscalation"], false);
    assert!(kind("ServiceAccount")["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].is_string());
    assert_eq!(kind("ServiceMonitor")["spec"]["endpoints"][0]["path"], "/metrics");
    assert!(kind("Service").is_object());
    // The configurations shipped in the image and the ConfigMap are valid trailwatch configurations.
    let configmap = kind("ConfigMap")["data"]["trailwatch.toml"].as_str().unwrap().to_owned();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("k8s.toml"), configmap).unwrap();
    for config in [tmp.path().join("k8s.toml"), repo("deploy/trailwatch.toml")] {
        let out = bin()
            .args(["--config", config.to_str().unwrap(), "validate"])
            .env("TRAILWATCH_API_TOKEN", "t")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}: {}", config.display(), String::from_utf8_lossy(&out.stderr));
        // And without a token they are refused: they listen beyond loopback.
        let out = bin().args(["--config", config.to_str().unwrap(), "validate"]).output().unwrap();
        assert_eq!(out.status.code(), Some(64), "{}", config.display());
    }
    // Dockerfile: multi-stage, the dependency layer before the sources, non-root, smoke test, state volume.
    let dockerfile = std::fs::read_to_string(repo("deploy/Dockerfile")).unwrap();
    let lines: Vec<&str> = dockerfile.lines().filter(|l| !l.trim_start().starts_with('#')).collect();
    assert!(lines.iter().filter(|l| l.starts_with("FROM ")).count() >= 2, "multi-stage");
    let manifests = lines.iter().position(|l| l.starts_with("COPY Cargo.toml Cargo.lock")).expect("manifests copied");
    let sources = lines.iter().position(|l| l.starts_with("COPY src ")).expect("sources copied");
    assert!(manifests < sources, "the dependency layer comes first");
    assert!(lines.iter().any(|l| l.starts_with("USER ") && !l.contains("root") && !l.ends_with(" 0")));
    assert!(lines.iter().any(|l| l.starts_with("RUN ") && l.contains("trailwatch --version")));
    assert!(lines.iter().any(|l| l.starts_with("VOLUME ") && l.contains("/data")));
    for copied in lines.iter().filter_map(|l| l.strip_prefix("COPY ")).filter(|l| !l.starts_with("--from")) {
        let parts: Vec<&str> = copied.split_whitespace().collect();
        for source in &parts[..parts.len() - 1] {
            assert!(repo(source).exists(), "the Dockerfile copies {source}, which does not exist");
        }
    }
}
