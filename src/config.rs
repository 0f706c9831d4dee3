//! Configuration: TOML with serde defaults and unknown keys denied, validated into [`Config`] with every problem
//! reported at once.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::aws::AwsSettings;

/// The embedded default configuration, also the documented reference (`config/trailwatch.toml`).
pub const DEFAULT_CONFIG: &str = include_str!("../config/trailwatch.toml");

/// The configuration's sections.
const SECTIONS: &[&str] = &[
    "intake",
    "store",
    "pipeline",
    "http",
    "aws",
    "rules",
    "alerts",
    "findings",
    "behaviour",
    "permissions",
    "inventory",
    "integrity",
];

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub intake: Intake,
    pub store_path: PathBuf,
    pub synchronous: Synchronous,
    /// Worker threads; already resolved from `0` to the number of cores.
    pub threads: usize,
    pub limits: Limits,
    pub batch: BatchLimits,
    pub http_listen: SocketAddr,
    /// The bearer token the JSON API requires (`TRAILWATCH_API_TOKEN`, else `http.api_token`); `None`: open,
    /// which is allowed on a loopback address only.
    pub api_token: Option<String>,
    pub aws: AwsSettings,
    pub rules: RulesConfig,
    pub alerts: AlertsConfig,
    pub findings: crate::config::FindingsConfig,
    pub behaviour: crate::config::BehaviourConfig,
    pub permissions: PermissionsConfig,
    pub inventory: InventoryConfig,
    pub integrity: IntegrityConfig,
}

/// `[integrity]`: CloudTrail log file validation, digest by digest as they arrive.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IntegrityConfig {
    pub enabled: bool,
    /// Where the public keys that verify digest signatures come from.
    pub public_keys: PublicKeySource,
    /// With `public_keys = "file"`: outputs of `aws cloudtrail list-public-keys`.
    pub public_key_files: Vec<PathBuf>,
    /// How long after a digest's hour its log files, and the next digest, may still arrive: judged by the chain's
    /// newest log file, not the clock.
    pub digest_grace_secs: i64,
    /// How often the daemon checks the chains; 0 turns the periodic check off.
    pub interval_secs: u64,
    /// How far back (by file time) the periodic check looks.
    pub lookback_secs: i64,
    /// Per place and check, how many files nothing vouches for (invalid digests, then log files no digest lists)
    /// are examined, oldest first; the rest are counted. Bounds a check's memory and alerts whatever is written
    /// to the bucket.
    pub max_untrusted_per_check: usize,
}

impl Default for IntegrityConfig {
    fn default() -> Self {
        IntegrityConfig {
            enabled: false,
            public_keys: PublicKeySource::Api,
            public_key_files: Vec::new(),
            digest_grace_secs: 7200,
            interval_secs: 300,
            lookback_secs: 3 * 86_400,
            max_untrusted_per_check: 10_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PublicKeySource {
    /// `cloudtrail:ListPublicKeys` per region, cached, asked again for a fingerprint it does not know.
    Api,
    /// `public_key_files` only.
    File,
}

/// `[permissions]`: the window unused-access findings look back over, and what the trail records.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PermissionsConfig {
    /// Default look-back of `report permissions` and the unused-access findings.
    pub window_days: i64,
    /// The trail records data events (S3 objects, Lambda invokes, DynamoDB items): their absence means unused.
    pub data_events_logged: bool,
    /// An active access key older than this was not rotated.
    pub key_rotation_days: i64,
}

impl Default for PermissionsConfig {
    fn default() -> Self {
        PermissionsConfig { window_days: 90, data_events_logged: false, key_rotation_days: 90 }
    }
}

/// `[inventory]`: where granted permissions come from.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InventoryConfig {
    /// `aws iam get-account-authorization-details` outputs, one account per file (relative to the working
    /// directory).
    pub files: Vec<PathBuf>,
    pub iam: IamInventoryConfig,
}

/// `[inventory.iam]`: the inventory fetched from the IAM API by the daemons (and `trailwatch inventory fetch`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IamInventoryConfig {
    pub enabled: bool,
    /// How often the daemons fetch it again.
    pub refresh_secs: u64,
    /// For an organisation: one role to assume per account. Empty: the credentials' own account.
    pub assume_role_arns: Vec<String>,
}

impl Default for IamInventoryConfig {
    fn default() -> Self {
        IamInventoryConfig { enabled: false, refresh_secs: 86_400, assume_role_arns: Vec::new() }
    }
}

/// `[rules]`: which Sigma rules run, and how.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RulesConfig {
    /// Load the built-in rules (`config/rules/`).
    pub builtin: bool,
    /// Directories whose `*.yml` / `*.yaml` files (at any depth) are loaded beside the built-ins.
    pub dirs: Vec<PathBuf>,
    /// Rule ids that only count matches (metrics) and send nothing.
    pub dry_run: Vec<String>,
    /// Rule ids not evaluated at all.
    pub disabled: Vec<String>,
    /// Alerts of one rule for one subject within this window (by event time) merge into one.
    pub dedup_window_secs: i64,
    /// The same per rule id, for rules whose alerts on-call wants less (or more) often than the default.
    pub dedup_window_secs_by_rule: std::collections::BTreeMap<String, i64>,
    /// How late (in event time, behind the newest match of its group) a correlated rule's match may arrive and
    /// still count exactly; correlation windows keep this much (plus their timespan) in memory.
    pub correlation_lateness_secs: i64,
}

impl Default for RulesConfig {
    fn default() -> Self {
        RulesConfig {
            builtin: true,
            dirs: Vec::new(),
            dry_run: Vec::new(),
            disabled: Vec::new(),
            dedup_window_secs: 3600,
            dedup_window_secs_by_rule: std::collections::BTreeMap::new(),
            correlation_lateness_secs: crate::detect::ruleset::DEFAULT_CORRELATION_LATENESS_SECS,
        }
    }
}

/// `[alerts]`: where alerts go.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsConfig {
    /// Off: no rule is evaluated and nothing is raised (like `replay --no-alerts`).
    pub enabled: bool,
    pub sinks: Vec<SinkConfig>,
    pub suppress: Vec<Suppression>,
    /// Retries back off exponentially from one second up to this.
    pub max_backoff_secs: u64,
    /// How long `replay` keeps retrying failed deliveries before it exits (what is left stays in the outbox).
    pub replay_wait_secs: u64,
    /// Delivered rule alerts raised longer ago than this are deleted from the state file by the daemon (hourly);
    /// 0 keeps them for ever. Periodic findings are kept (their ids say they were raised).
    pub retention_days: u64,
    /// On SIGTERM, how long deliveries in progress may take before they are given up (they stay in the outbox
    /// and are sent after the restart).
    pub shutdown_grace_secs: u64,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            enabled: true,
            sinks: vec![SinkConfig {
                path: Some(PathBuf::from("alerts.jsonl")),
                ..SinkConfig::new("jsonl", SinkKind::File)
            }],
            suppress: Vec::new(),
            max_backoff_secs: 300,
            replay_wait_secs: 30,
            retention_days: 90,
            shutdown_grace_secs: 10,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    File,
    Stdout,
    Webhook,
    Slack,
    Pagerduty,
    Alertmanager,
}

impl SinkKind {
    /// The bounded metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            SinkKind::File => "file",
            SinkKind::Stdout => "stdout",
            SinkKind::Webhook => "webhook",
            SinkKind::Slack => "slack",
            SinkKind::Pagerduty => "pagerduty",
            SinkKind::Alertmanager => "alertmanager",
        }
    }
}

/// One `[[alerts.sinks]]` entry. Which keys apply depends on `kind` (see the reference file).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// Unique; names the sink in the outbox, so keep it stable across restarts. Defaults to the kind (`file`,
    /// `webhook`, ...) when no other sink has that kind.
    #[serde(default)]
    pub name: String,
    pub kind: SinkKind,
    /// Only alerts at least this severe.
    #[serde(default = "SinkConfig::default_min_severity")]
    pub min_severity: crate::detect::rule::Severity,
    /// Only these rule ids (Sigma wildcards allowed); empty: every rule.
    #[serde(default)]
    pub rules: Vec<String>,
    /// `file`: the JSONL file alerts are appended to.
    pub path: Option<PathBuf>,
    /// `webhook`, `slack`, `alertmanager` (its base URL), `pagerduty` (defaults to the Events API v2).
    pub url: Option<String>,
    /// `webhook`: extra request headers.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// `webhook`: the environment variable holding the HMAC-SHA256 key; the body's signature is sent as
    /// `X-Trailwatch-Signature: sha256=<hex>`.
    pub secret_env: Option<String>,
    /// `pagerduty`: the environment variable holding the integration's routing key.
    pub routing_key_env: Option<String>,
    /// HTTP request timeout.
    #[serde(default = "SinkConfig::default_timeout_ms")]
    pub timeout_ms: u64,
}

impl SinkConfig {
    pub fn new(name: &str, kind: SinkKind) -> SinkConfig {
        SinkConfig {
            name: name.to_owned(),
            kind,
            min_severity: SinkConfig::default_min_severity(),
            rules: Vec::new(),
            path: None,
            url: None,
            headers: Default::default(),
            secret_env: None,
            routing_key_env: None,
            timeout_ms: SinkConfig::default_timeout_ms(),
        }
    }

    fn default_min_severity() -> crate::detect::rule::Severity {
        crate::detect::rule::Severity::Informational
    }

    fn default_timeout_ms() -> u64 {
        10_000
    }
}

/// `[[alerts.suppress]]`: alerts matching every given key are dropped (counted, never stored).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Suppression {
    /// Rule id, Sigma wildcards allowed.
    pub rule: Option<String>,
    /// Principal ARN, Sigma wildcards allowed (`arn:aws:iam::*:role/ci-*`).
    pub principal: Option<String>,
    pub account: Option<String>,
    /// The alert's source IP lies in this CIDR.
    pub source_cidr: Option<String>,
}

#[derive(Debug, Clone)]
pub enum Intake {
    Spool(SpoolConfig),
    Sqs(SqsConfig),
}

#[derive(Debug, Clone)]
pub struct SqsConfig {
    pub queue_url: String,
    pub pollers: usize,
    pub visibility_timeout_secs: u32,
    pub wait_time_secs: u32,
    pub max_in_flight_objects: usize,
    pub shutdown_grace: Duration,
}

#[derive(Debug, Clone)]
pub struct SpoolConfig {
    pub dir: PathBuf,
    pub scan_interval: Duration,
    pub min_file_age: Duration,
}

/// Every problem found in a configuration, one per line.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration {source_name}:\n{}", .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors {
    pub source_name: String,
    pub problems: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawIntake {
    kind: IntakeKind,
    spool: RawSpool,
    sqs: RawSqs,
}

impl Default for RawIntake {
    fn default() -> Self {
        RawIntake { kind: IntakeKind::Spool, spool: RawSpool::default(), sqs: RawSqs::default() }
    }
}

#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum IntakeKind {
    Spool,
    Sqs,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawSqs {
    queue_url: String,
    pollers: usize,
    visibility_timeout_secs: u32,
    wait_time_secs: u32,
    max_in_flight_objects: usize,
    shutdown_grace_secs: u64,
}

impl Default for RawSqs {
    fn default() -> Self {
        RawSqs {
            queue_url: String::new(),
            pollers: 2,
            visibility_timeout_secs: 300,
            wait_time_secs: 20,
            max_in_flight_objects: 256,
            shutdown_grace_secs: 30,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawSpool {
    dir: PathBuf,
    scan_interval_ms: u64,
    min_file_age_ms: u64,
}

impl Default for RawSpool {
    fn default() -> Self {
        RawSpool { dir: PathBuf::from("spool"), scan_interval_ms: 1000, min_file_age_ms: 2000 }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawStore {
    path: PathBuf,
    synchronous: Synchronous,
}

impl Default for RawStore {
    fn default() -> Self {
        RawStore { path: PathBuf::from("trailwatch.db"), synchronous: Synchronous::Full }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawPipeline {
    threads: usize,
    batch_max_files: usize,
    batch_max_records: u64,
    batch_max_wait_ms: u64,
    max_file_bytes: u64,
    max_decoded_bytes: u64,
    max_worker_memory_bytes: u64,
}

impl Default for RawPipeline {
    fn default() -> Self {
        RawPipeline {
            threads: 0,
            batch_max_files: 256,
            batch_max_records: 500_000,
            batch_max_wait_ms: 1000,
            max_file_bytes: 256 << 20,
            max_decoded_bytes: 1 << 30,
            max_worker_memory_bytes: 320 << 20,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawAws {
    region: Option<String>,
    endpoint_url: Option<String>,
    s3_force_path_style: bool,
    max_concurrent_fetches: usize,
}

impl Default for RawAws {
    fn default() -> Self {
        RawAws { region: None, endpoint_url: None, s3_force_path_style: false, max_concurrent_fetches: 16 }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawHttp {
    listen: String,
    api_token: String,
}

impl Default for RawHttp {
    fn default() -> Self {
        RawHttp { listen: "127.0.0.1:9898".to_owned(), api_token: String::new() }
    }
}

/// The environment variable that supplies (and overrides) `http.api_token`.
pub const API_TOKEN_ENV: &str = "TRAILWATCH_API_TOKEN";

impl Config {
    /// Loads `path`, or the embedded default when `None`.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigErrors> {
        match path {
            None => Config::parse(DEFAULT_CONFIG, "(embedded default)"),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|err| ConfigErrors {
                    source_name: path.display().to_string(),
                    problems: vec![format!("cannot read: {}", err.to_string().to_lowercase())],
                })?;
                Config::parse(&text, &path.display().to_string())
            }
        }
    }

    /// Parses and validates TOML text. Each section is read on its own, so one bad section does not hide the
    /// problems of the others.
    pub fn parse(text: &str, source_name: &str) -> Result<Config, ConfigErrors> {
        let mut problems = Vec::new();
        let table: toml::Table = match text.parse() {
            Ok(t) => t,
            Err(err) => {
                return Err(ConfigErrors {
                    source_name: source_name.to_owned(),
                    problems: vec![syntax_error(text, &err)],
                });
            }
        };
        for key in table.keys() {
            if !SECTIONS.contains(&key.as_str()) {
                problems.push(format!("`{key}`: unknown section (expected {})", SECTIONS.join(", ")));
            }
        }
        let intake: RawIntake = section(&table, "intake", &mut problems);
        let store: RawStore = section(&table, "store", &mut problems);
        let pipeline: RawPipeline = section(&table, "pipeline", &mut problems);
        let http: RawHttp = section(&table, "http", &mut problems);
        let aws: RawAws = section(&table, "aws", &mut problems);
        let rules: RulesConfig = section(&table, "rules", &mut problems);
        let (mut alerts, left_out): (AlertsConfig, _) = section_and_left_out(&table, "alerts", &mut problems);
        // Each sink as numbered in the file, also when one before it could not be read.
        let sink_positions: Vec<usize> =
            (0..).filter(|i| !left_out.contains(&format!("alerts.sinks[{i}]"))).take(alerts.sinks.len()).collect();
        let findings: crate::config::FindingsConfig = section(&table, "findings", &mut problems);
        let behaviour: crate::config::BehaviourConfig = section(&table, "behaviour", &mut problems);
        let permissions: PermissionsConfig = section(&table, "permissions", &mut problems);
        let inventory: InventoryConfig = section(&table, "inventory", &mut problems);
        let integrity: IntegrityConfig = section(&table, "integrity", &mut problems);
        check_integrity(&integrity, &mut problems);
        if inventory.iam.enabled && !cfg!(feature = "iam") {
            problems.push("`inventory.iam.enabled`: this build has no IAM support (cargo feature `iam`)".into());
        }
        if inventory.iam.refresh_secs < 60 {
            problems.push("`inventory.iam.refresh_secs`: must be at least 60".into());
        }
        for arn in &inventory.iam.assume_role_arns {
            if !(arn.starts_with("arn:") && arn.contains(":role/")) {
                problems.push(format!("`inventory.iam.assume_role_arns`: `{arn}` is not a role ARN"));
            }
        }
        check_alerts(&rules, &mut alerts, &sink_positions, &mut problems);
        check_rule_ids(&rules, &alerts, &sink_positions, &mut problems);

        let mut check = |ok: bool, problem: &str| {
            if !ok {
                problems.push(problem.to_owned());
            }
        };
        check(permissions.window_days >= 1, "`permissions.window_days`: must be at least 1");
        check(permissions.key_rotation_days >= 1, "`permissions.key_rotation_days`: must be at least 1");
        check(behaviour.new_region_learning_days >= 0, "`behaviour.new_region_learning_days`: must be at least 0");
        check(behaviour.key_ips_window_secs >= 1, "`behaviour.key_ips_window_secs`: must be at least 1");
        check(
            behaviour.sensitive_service_learning_days >= 0,
            "`behaviour.sensitive_service_learning_days`: must be at least 0",
        );
        check(behaviour.enumeration_window_secs >= 1, "`behaviour.enumeration_window_secs`: must be at least 1");
        check(
            behaviour.instance_key_ips_window_secs >= 1,
            "`behaviour.instance_key_ips_window_secs`: must be at least 1",
        );
        check(findings.inactive_days >= 1, "`findings.inactive_days`: must be at least 1");
        check(findings.access_key_unused_days >= 1, "`findings.access_key_unused_days`: must be at least 1");
        check(!intake.spool.dir.as_os_str().is_empty(), "`intake.spool.dir`: must not be empty");
        if matches!(intake.kind, IntakeKind::Sqs) {
            check(!intake.sqs.queue_url.is_empty(), "`intake.sqs.queue_url`: required when `intake.kind` is \"sqs\"");
        }
        check((1..=64).contains(&intake.sqs.pollers), "`intake.sqs.pollers`: must be between 1 and 64");
        // SQS takes 0 to 43,200; trailwatch extends a message's visibility at half the timeout while its objects are
        // in flight, and a heartbeat under 5 s would race the extension requests themselves.
        check(
            intake.sqs.visibility_timeout_secs >= 10,
            "`intake.sqs.visibility_timeout_secs`: must be at least 10 (trailwatch extends visibility every half \
             timeout while a message's objects are in flight)",
        );
        check(
            intake.sqs.visibility_timeout_secs <= 43_200,
            "`intake.sqs.visibility_timeout_secs`: must be at most 43200 (SQS's limit)",
        );
        check(intake.sqs.wait_time_secs <= 20, "`intake.sqs.wait_time_secs`: must be at most 20 (SQS's limit)");
        check(intake.sqs.max_in_flight_objects >= 1, "`intake.sqs.max_in_flight_objects`: must be at least 1");
        check(intake.spool.scan_interval_ms >= 10, "`intake.spool.scan_interval_ms`: must be at least 10");
        check(!store.path.as_os_str().is_empty(), "`store.path`: must not be empty");
        check(pipeline.threads <= 1024, "`pipeline.threads`: must be at most 1024 (0 means one per core)");
        check(pipeline.batch_max_files >= 1, "`pipeline.batch_max_files`: must be at least 1");
        check(pipeline.batch_max_records >= 1, "`pipeline.batch_max_records`: must be at least 1");
        check(pipeline.batch_max_wait_ms >= 1, "`pipeline.batch_max_wait_ms`: must be at least 1");
        check(pipeline.max_file_bytes >= 1, "`pipeline.max_file_bytes`: must be at least 1");
        check(pipeline.max_decoded_bytes >= 1, "`pipeline.max_decoded_bytes`: must be at least 1");
        check(
            pipeline.max_worker_memory_bytes >= 16 << 20,
            "`pipeline.max_worker_memory_bytes`: must be at least 16777216 (16 MiB)",
        );
        check(
            (1..=256).contains(&aws.max_concurrent_fetches),
            "`aws.max_concurrent_fetches`: must be between 1 and 256",
        );
        check(
            aws.region.as_deref() != Some(""),
            "`aws.region`: must not be empty (leave it out to use the SDK's chain)",
        );
        if let Some(endpoint) = &aws.endpoint_url
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            problems.push(format!("`aws.endpoint_url`: `{endpoint}` is not an http:// or https:// url"));
        }
        let http_listen = match http.listen.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                problems.push(format!("`http.listen`: `{}` is not an address such as 127.0.0.1:9898", http.listen));
                None
            }
        };
        let api_token = std::env::var(API_TOKEN_ENV)
            .ok()
            .filter(|t| !t.is_empty())
            .or_else(|| Some(http.api_token.clone()).filter(|t| !t.is_empty()));
        if let Some(addr) = http_listen
            && !addr.ip().is_loopback()
            && api_token.is_none()
        {
            problems.push(format!(
                "`http.listen`: `{addr}` is not a loopback address, so the JSON API needs a token: set \
                 `http.api_token` or {API_TOKEN_ENV}"
            ));
        }
        if !problems.is_empty() {
            return Err(ConfigErrors { source_name: source_name.to_owned(), problems });
        }
        let threads = match pipeline.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        Ok(Config {
            intake: match intake.kind {
                IntakeKind::Spool => Intake::Spool(SpoolConfig {
                    dir: intake.spool.dir,
                    scan_interval: Duration::from_millis(intake.spool.scan_interval_ms),
                    min_file_age: Duration::from_millis(intake.spool.min_file_age_ms),
                }),
                IntakeKind::Sqs => Intake::Sqs(SqsConfig {
                    queue_url: intake.sqs.queue_url,
                    pollers: intake.sqs.pollers,
                    visibility_timeout_secs: intake.sqs.visibility_timeout_secs,
                    wait_time_secs: intake.sqs.wait_time_secs,
                    max_in_flight_objects: intake.sqs.max_in_flight_objects,
                    shutdown_grace: Duration::from_secs(intake.sqs.shutdown_grace_secs),
                }),
            },
            store_path: store.path,
            synchronous: store.synchronous,
            threads,
            limits: Limits {
                max_file_bytes: pipeline.max_file_bytes,
                max_decoded_bytes: pipeline.max_decoded_bytes,
                max_worker_memory_bytes: pipeline.max_worker_memory_bytes,
            },
            batch: BatchLimits {
                max_files: pipeline.batch_max_files,
                max_records: pipeline.batch_max_records,
                max_wait: Duration::from_millis(pipeline.batch_max_wait_ms),
            },
            http_listen: http_listen.expect("checked above"),
            api_token,
            aws: AwsSettings {
                region: aws.region,
                endpoint_url: aws.endpoint_url,
                s3_force_path_style: aws.s3_force_path_style,
                max_concurrent_fetches: aws.max_concurrent_fetches,
            },
            rules,
            alerts,
            findings,
            behaviour,
            permissions,
            inventory,
            integrity,
        })
    }
}

/// `positions`: each sink's position in the file.
fn check_alerts(rules: &RulesConfig, alerts: &mut AlertsConfig, positions: &[usize], problems: &mut Vec<String>) {
    if rules.dedup_window_secs < 1 {
        problems.push("`rules.dedup_window_secs`: must be at least 1".to_owned());
    }
    if rules.correlation_lateness_secs < 0 {
        problems.push("`rules.correlation_lateness_secs`: must be at least 0".to_owned());
    }
    for (id, secs) in &rules.dedup_window_secs_by_rule {
        if *secs < 1 {
            problems.push(format!("`rules.dedup_window_secs_by_rule`: `{id}`: must be at least 1"));
        }
    }
    if alerts.max_backoff_secs < 1 {
        problems.push("`alerts.max_backoff_secs`: must be at least 1".to_owned());
    }
    // A merge finds the alert it adds to by id within the rule's dedup window: pruning inside a window would
    // raise (and send) the same alert again as new.
    let widest = rules.dedup_window_secs_by_rule.values().copied().chain([rules.dedup_window_secs]).max().unwrap_or(0);
    if alerts.retention_days > 0 && (alerts.retention_days as i64).saturating_mul(86_400) < widest {
        problems.push(format!(
            "`alerts.retention_days`: {} days is shorter than the widest dedup window ({widest} s)",
            alerts.retention_days
        ));
    }
    // A sink without a name is named after its kind, unless another sink has that kind or that name.
    let kinds: Vec<SinkKind> = alerts.sinks.iter().map(|s| s.kind).collect();
    let given: Vec<String> = alerts.sinks.iter().map(|s| s.name.clone()).collect();
    for (sink, i) in alerts.sinks.iter_mut().zip(positions) {
        let kind = sink.kind.as_str();
        if sink.name.is_empty() {
            if kinds.iter().filter(|k| k.as_str() == kind).count() > 1 || given.iter().any(|n| n == kind) {
                problems.push(format!(
                    "`alerts.sinks[{i}]`: needs a `name`: more than one sink would be called \"{kind}\""
                ));
            } else {
                sink.name = kind.to_owned();
            }
        }
    }
    let mut names = std::collections::BTreeSet::new();
    for (sink, i) in alerts.sinks.iter().zip(positions) {
        let at = format!("`alerts.sinks[{i}]` ({})", sink.name);
        if !sink.name.is_empty() && !names.insert(sink.name.as_str()) {
            problems.push(format!("{at}: `name` must be unique"));
        }
        for (var, key) in [(&sink.secret_env, "secret_env"), (&sink.routing_key_env, "routing_key_env")] {
            if let Some(var) = var
                && std::env::var_os(var).is_none_or(|v| v.is_empty())
            {
                problems.push(format!("{at}: `{key}` names the environment variable {var}, which is not set"));
            }
        }
        for (name, value) in &sink.headers {
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                problems.push(format!("{at}: `headers`: `{name}` is not a valid header name"));
            }
            // The value is not shown: headers carry credentials.
            if reqwest::header::HeaderValue::from_str(value).is_err() {
                problems.push(format!("{at}: `headers`: the value of `{name}` is not a valid header value"));
            }
        }
        let url_ok = |url: &Option<String>| {
            url.as_deref().is_some_and(|u| u.starts_with("http://") || u.starts_with("https://"))
        };
        match sink.kind {
            SinkKind::File if sink.path.as_deref().is_none_or(|p| p.as_os_str().is_empty()) => {
                problems.push(format!("{at}: kind \"file\" needs `path`"));
            }
            SinkKind::Webhook | SinkKind::Slack | SinkKind::Alertmanager if !url_ok(&sink.url) => {
                problems.push(format!("{at}: kind \"{}\" needs an http:// or https:// `url`", sink.kind.as_str()));
            }
            SinkKind::Pagerduty if sink.routing_key_env.is_none() => {
                problems.push(format!("{at}: kind \"pagerduty\" needs `routing_key_env`"));
            }
            SinkKind::Pagerduty if sink.url.is_some() && !url_ok(&sink.url) => {
                problems.push(format!("{at}: `url` is not an http:// or https:// url"));
            }
            _ => {}
        }
        if sink.timeout_ms == 0 {
            problems.push(format!("{at}: `timeout_ms` must be at least 1"));
        }
    }
    for (i, s) in alerts.suppress.iter().enumerate() {
        let at = format!("`alerts.suppress[{i}]`");
        if s.rule.is_none() && s.principal.is_none() && s.account.is_none() && s.source_cidr.is_none() {
            problems.push(format!("{at}: sets no key, so it would drop every alert"));
        }
        if let Some(cidr) = &s.source_cidr
            && crate::detect::value::FieldTest::compile(&["cidr"], &[Some(cidr)]).is_err()
        {
            problems.push(format!("{at}: `source_cidr` `{cidr}` is not a CIDR"));
        }
    }
}

/// Every rule id `[rules]` and the sinks' `rules` filters name must be a rule trailwatch has: a built-in or
/// `rules.dirs` rule, a behavioural rule or a periodic finding. A misspelled id would silently leave a rule on (or
/// a sink without alerts).
fn check_rule_ids(rules: &RulesConfig, alerts: &AlertsConfig, positions: &[usize], problems: &mut Vec<String>) {
    let mut known: Vec<String> = crate::detect::ruleset::RuleSet::load(rules.builtin, &rules.dirs)
        .0
        .rules()
        .iter()
        .map(|r| r.id.clone())
        .collect();
    known.extend(crate::detect::catalogue::STATE_RULES.iter().map(|rule| rule.id.to_owned()));
    let named = rules
        .disabled
        .iter()
        .map(|id| ("rules.disabled", id))
        .chain(rules.dry_run.iter().map(|id| ("rules.dry_run", id)));
    let windowed = rules.dedup_window_secs_by_rule.keys().map(|id| ("rules.dedup_window_secs_by_rule", id));
    for (key, id) in named.chain(windowed) {
        if !known.contains(id) {
            problems.push(format!("`{key}`: `{id}` is not the id of any rule (see `trailwatch rules list`)"));
        }
    }
    for (sink, i) in alerts.sinks.iter().zip(positions) {
        for filter in &sink.rules {
            let pattern = crate::detect::pattern::Pattern::new(filter, crate::detect::pattern::Anchor::Whole, false);
            if !known.iter().any(|id| pattern.matches(id)) {
                problems.push(format!(
                    "`alerts.sinks[{i}]` ({}): `rules`: `{filter}` matches no rule id (see `trailwatch rules list`)",
                    sink.name
                ));
            }
        }
    }
}

/// Reads section `name` as a `T`, entry by entry: what reads is kept and what does not is reported, so that one bad
/// key neither hides the other problems of its section nor keeps its good values from being checked.
fn section<T: for<'de> Deserialize<'de> + Default>(table: &toml::Table, name: &str, problems: &mut Vec<String>) -> T {
    section_and_left_out(table, name, problems).0
}

fn check_integrity(integrity: &IntegrityConfig, problems: &mut Vec<String>) {
    if integrity.digest_grace_secs < 900 {
        problems.push(
            "`integrity.digest_grace_secs`: must be at least 900 (CloudTrail delivers within about 15 \
                       minutes of the hour)"
                .to_owned(),
        );
    }
    if integrity.lookback_secs < 3600 {
        problems.push("`integrity.lookback_secs`: must be at least 3600".to_owned());
    }
    if integrity.max_untrusted_per_check == 0 {
        problems.push("`integrity.max_untrusted_per_check`: must be at least 1".to_owned());
    }
    if integrity.enabled && integrity.public_keys == PublicKeySource::File && integrity.public_key_files.is_empty() {
        problems.push("`integrity.public_key_files`: required when `public_keys` is \"file\"".to_owned());
    }
    if integrity.enabled && integrity.public_keys == PublicKeySource::Api && !cfg!(feature = "iam") {
        problems
            .push("`integrity.public_keys`: \"api\" needs a build with AWS API support (cargo feature `iam`)".into());
    }
    for path in &integrity.public_key_files {
        let origin = path.display().to_string();
        match std::fs::read(path) {
            Ok(json) => {
                if let Err(err) = crate::integrity::PublicKeys::from_list_json(&json, &origin) {
                    problems.push(format!("`integrity.public_key_files`: {err}"));
                }
            }
            Err(err) => problems.push(format!(
                "`integrity.public_key_files`: {origin}: cannot read: {}",
                err.to_string().to_lowercase()
            )),
        }
    }
}

/// [`section`], and the elements of arrays of tables left out because they do not read at all (as `name.key[i]`),
/// so that later problems can give the others their positions in the file.
fn section_and_left_out<T: for<'de> Deserialize<'de> + Default>(
    table: &toml::Table,
    name: &str,
    problems: &mut Vec<String>,
) -> (T, Vec<String>) {
    let Some(value) = table.get(name) else {
        return (T::default(), Vec::new());
    };
    if let Ok(v) = value.clone().try_into::<T>() {
        return (v, Vec::new());
    }
    let toml::Value::Table(given) = value else {
        problems.push(format!("`{name}`: must be a table (`[{name}]`)"));
        return (T::default(), Vec::new());
    };
    let mut kept = Readable::<T> {
        root: toml::Value::Table(toml::Table::new()),
        left_out: Vec::new(),
        shape: std::marker::PhantomData,
    };
    kept.add_entries(&mut Vec::new(), &mut name.to_owned(), given, problems);
    (kept.root.try_into().unwrap_or_default(), kept.left_out)
}

/// A section being rebuilt from the entries that read as a `T`.
struct Readable<T> {
    root: toml::Value,
    /// Array elements that could not be read at all, as `name.key[i]`.
    left_out: Vec<String>,
    shape: std::marker::PhantomData<T>,
}

/// Where a value sits in the rebuilt section: a table's key, or an index in an array of tables.
enum Step {
    Key(String),
    Index(usize),
}

impl<T: for<'de> Deserialize<'de>> Readable<T> {
    fn at(&mut self, path: &[Step]) -> &mut toml::Value {
        let mut value = &mut self.root;
        for step in path {
            value = match (step, value) {
                (Step::Key(key), toml::Value::Table(table)) => table.get_mut(key).expect("a kept key"),
                (Step::Index(i), toml::Value::Array(items)) => &mut items[*i],
                _ => unreachable!("paths follow the rebuilt shape"),
            };
        }
        value
    }

    /// The error of reading the rebuilt section, if any.
    fn check(&self) -> Result<(), String> {
        match self.root.clone().try_into::<T>() {
            Ok(_) => Ok(()),
            Err(err) => Err(err.message().trim().replace('\n', " ")),
        }
    }

    /// Puts `value` at `key` of the table at `path`; undone (with the error) if the section no longer reads.
    fn try_put(&mut self, path: &[Step], key: &str, value: toml::Value) -> Result<(), String> {
        let toml::Value::Table(table) = self.at(path) else { unreachable!("entries go into tables") };
        table.insert(key.to_owned(), value);
        self.check().inspect_err(|_| {
            let toml::Value::Table(table) = self.at(path) else { unreachable!() };
            table.remove(key);
        })
    }

    /// Pushes `value` onto the array at `path`; undone (with the error) if the section no longer reads.
    fn try_push(&mut self, path: &[Step], value: toml::Value) -> Result<(), String> {
        let toml::Value::Array(items) = self.at(path) else { unreachable!("elements go into arrays") };
        items.push(value);
        self.check().inspect_err(|_| {
            let toml::Value::Array(items) = self.at(path) else { unreachable!() };
            items.pop();
        })
    }

    /// Adds `given`'s entries one by one into the (already readable) table at `path`; `shown` is its dotted name.
    fn add_entries(
        &mut self,
        path: &mut Vec<Step>,
        shown: &mut String,
        given: &toml::Table,
        problems: &mut Vec<String>,
    ) {
        for (key, value) in given {
            let len = shown.len();
            shown.push('.');
            shown.push_str(key);
            if let Err(err) = self.try_put(path, key, value.clone()) {
                path.push(Step::Key(key.clone()));
                match value {
                    toml::Value::Table(inner) if self.try_put(&path[..path.len() - 1], key, empty()).is_ok() => {
                        self.add_entries(path, shown, inner, problems)
                    }
                    toml::Value::Array(items)
                        if items.iter().all(toml::Value::is_table)
                            && self.try_put(&path[..path.len() - 1], key, toml::Value::Array(Vec::new())).is_ok() =>
                    {
                        self.add_elements(path, shown, items, problems)
                    }
                    _ => problems.push(format!("`{shown}`: {err}")),
                }
                path.pop();
            }
            shown.truncate(len);
        }
    }

    /// Adds the tables `items` one by one to the (empty, readable) array at `path`. An element that does not read
    /// whole is rebuilt entry by entry, starting from one entry it cannot do without (its `kind`, say).
    fn add_elements(
        &mut self,
        path: &mut Vec<Step>,
        shown: &mut String,
        items: &[toml::Value],
        problems: &mut Vec<String>,
    ) {
        let mut kept = 0;
        for (i, item) in items.iter().enumerate() {
            let len = shown.len();
            shown.push_str(&format!("[{i}]"));
            let toml::Value::Table(given) = item else { unreachable!("checked: an array of tables") };
            match self.try_push(path, item.clone()) {
                Ok(()) => kept += 1,
                Err(err) => {
                    let seed = std::iter::once(None).chain(given.keys().map(Some)).find(|seed| {
                        let table = seed.map(|k| (k.clone(), given[k].clone())).into_iter().collect();
                        self.try_push(path, toml::Value::Table(table)).is_ok()
                    });
                    match seed {
                        Some(seed) => {
                            path.push(Step::Index(kept));
                            let rest: toml::Table = given
                                .iter()
                                .filter(|(k, _)| Some(*k) != seed)
                                .map(|(k, v)| (k.clone(), v.clone()))
                                .collect();
                            self.add_entries(path, shown, &rest, problems);
                            path.pop();
                            kept += 1;
                        }
                        None => {
                            problems.push(format!("`{shown}`: {err}"));
                            self.left_out.push(shown.clone());
                        }
                    }
                }
            }
            shown.truncate(len);
        }
    }
}

fn empty() -> toml::Value {
    toml::Value::Table(toml::Table::new())
}

/// A TOML syntax error as `line L, column C: message`, without the source line it would quote: that line may hold
/// a secret (`api_token = "…"`).
fn syntax_error(text: &str, err: &toml::de::Error) -> String {
    let message = err.message().trim().replace('\n', " ");
    match err.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message,
    }
}

/// Size caps: a file larger than `max_file_bytes`, or decompressing past `max_decoded_bytes`, is rejected, and so is
/// one whose reading, decoding and parsing would take a worker past `max_worker_memory_bytes`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_file_bytes: u64,
    pub max_decoded_bytes: u64,
    pub max_worker_memory_bytes: u64,
}

/// When the committer closes a batch.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    pub max_files: usize,
    pub max_records: u64,
    pub max_wait: Duration,
}

/// How hard SQLite works to survive power loss. A process crash (`kill -9`) is safe with either.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// fsync at every commit: a committed batch survives power loss.
    Full,
    /// fsync at checkpoints only: faster; the last batches may be lost on power loss (never on a process crash).
    Normal,
}

/// `[findings]`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FindingsConfig {
    /// An identity with no event for this many days is inactive.
    pub inactive_days: i64,
    /// A long-term access key not used for this many days is unused.
    pub access_key_unused_days: i64,
    /// How often the daemon looks (0: never; `trailwatch report findings` still works).
    pub interval_secs: u64,
}

impl Default for FindingsConfig {
    fn default() -> Self {
        FindingsConfig { inactive_days: 120, access_key_unused_days: 90, interval_secs: 3600 }
    }
}

/// `[behaviour]`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BehaviourConfig {
    /// A principal's new regions alert only once it has been seen for this many days (0: `new-region-for-identity`
    /// is off).
    pub new_region_learning_days: i64,
    /// `access-key-from-many-ips` fires when a key is used from more than this many source IPs (0: off) ...
    pub key_max_source_ips: usize,
    /// ... within this window.
    pub key_ips_window_secs: i64,
    /// `sensitive-service-first-use`: the IAM service prefixes whose first successful use by a principal alerts,
    /// once the principal has been seen for `sensitive_service_learning_days` (0: off).
    pub sensitive_services: Vec<String>,
    pub sensitive_service_learning_days: i64,
    /// `service-enumeration`: a principal calls List/Describe actions of at least this many services (0: off)
    /// ...
    pub enumeration_min_services: usize,
    /// ... within this window.
    pub enumeration_window_secs: i64,
    /// `instance-credentials-used-elsewhere`: an instance's credentials (one temporary key) used from more than
    /// this many public addresses (0: off) ...
    pub instance_key_max_source_ips: usize,
    /// ... within this window.
    pub instance_key_ips_window_secs: i64,
}

impl Default for BehaviourConfig {
    fn default() -> Self {
        BehaviourConfig {
            new_region_learning_days: 14,
            key_max_source_ips: 5,
            key_ips_window_secs: 3600,
            sensitive_services: vec!["bedrock".into(), "secretsmanager".into()],
            sensitive_service_learning_days: 14,
            enumeration_min_services: 6,
            enumeration_window_secs: 600,
            instance_key_max_source_ips: 1,
            instance_key_ips_window_secs: 3600,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_file_is_the_default() {
        let config = Config::parse(DEFAULT_CONFIG, "reference").unwrap();
        let empty = Config::parse("", "empty").unwrap();
        assert_eq!(format!("{config:?}"), format!("{empty:?}"), "the reference must list the serde defaults");
        assert_eq!(config.http_listen.to_string(), "127.0.0.1:9898");
    }

    /// One problem per line, each in a section of its own kind (a key of the wrong type, a value out of range, an
    /// unknown key, an unknown rule id): every one is reported at once, and none hides another, so leaving any one
    /// line out leaves exactly the others.
    #[test]
    fn lists_every_problem_and_none_hides_another() {
        let lines = [
            ("intake", "kind = \"kafka\"", "`intake.kind`: unknown variant `kafka`"),
            ("intake.spool", "scan_interval_ms = -5", "`intake.spool.scan_interval_ms`: invalid value"),
            ("intake.spool", "colour = \"blue\"", "`intake.spool.colour`: unknown field"),
            ("intake.sqs", "visibility_timeout_secs = 5", "`intake.sqs.visibility_timeout_secs`: must be at least 10"),
            ("intake.sqs", "pollers = 0", "`intake.sqs.pollers`: must be between 1 and 64"),
            ("store", "path = \"\"", "`store.path`: must not be empty"),
            ("pipeline", "threads = \"two\"", "`pipeline.threads`: invalid type"),
            ("pipeline", "batch_max_files = 0", "`pipeline.batch_max_files`: must be at least 1"),
            ("pipeline", "batch_max_recods = 10", "`pipeline.batch_max_recods`: unknown field"),
            ("http", "listen = \"nowhere\"", "`http.listen`: `nowhere` is not an address"),
            ("findings", "inactive_days = 0", "`findings.inactive_days`: must be at least 1"),
            ("rules", "disabled = [\"no-such-rule\"]", "`rules.disabled`: `no-such-rule` is not the id of any rule"),
            ("rules", "dry_run = [\"root-acount-usage\"]", "`rules.dry_run`: `root-acount-usage` is not the id"),
            ("rules", "dedup_window_secs_by_rule = { nope = 0 }", "`rules.dedup_window_secs_by_rule`: `nope`"),
            ("alerts", "max_backoff_secs = \"5m\"", "`alerts.max_backoff_secs`: invalid type"),
            ("integrity", "public_keys = \"dns\"", "`integrity.public_keys`: unknown variant `dns`"),
            ("integrity", "digest_grace_secs = 60", "`integrity.digest_grace_secs`: must be at least 900"),
            ("integrity", "max_untrusted_per_check = 0", "`integrity.max_untrusted_per_check`: must be at least 1"),
            (
                "integrity",
                "public_key_files = [\"/no/such/keys.json\"]",
                "`integrity.public_key_files`: /no/such/keys.json: cannot read",
            ),
        ];
        let config = |skip: Option<usize>| {
            let mut text = String::new();
            let mut sections: Vec<&str> = lines.iter().map(|(section, _, _)| *section).collect();
            sections.dedup();
            for section in sections {
                text.push_str(&format!("[{section}]\n"));
                for (i, (_, line, _)) in lines.iter().enumerate().filter(|(i, l)| l.0 == section && Some(*i) != skip) {
                    let _ = i;
                    text.push_str(line);
                    text.push('\n');
                }
            }
            Config::parse(&text, "t.toml").map_or_else(|err| err.problems, |_| Vec::new())
        };
        let all = config(None);
        // `dedup_window_secs_by_rule = { nope = 0 }` is two problems: an unknown id, and a window under 1 s.
        assert_eq!(all.len(), lines.len() + 1, "{all:#?}");
        for (_, _, needle) in &lines {
            assert!(all.iter().any(|p| p.starts_with(needle)), "{needle} missing from {all:#?}");
        }
        for (i, (_, line, needle)) in lines.iter().enumerate() {
            let rest = config(Some(i));
            let expected = if line.contains("nope") { lines.len() - 1 } else { lines.len() };
            assert_eq!(rest.len(), expected, "without `{line}`: {rest:#?}");
            assert!(!rest.iter().any(|p| p.starts_with(needle)), "without `{line}`: {rest:#?}");
        }
    }

    /// Sinks: one bad key of a sink hides neither its other keys nor the other sinks.
    #[test]
    fn lists_every_problem_of_every_sink() {
        let text = r#"
            [[alerts.sinks]]
            name = "a"
            kind = "stdout"
            [[alerts.sinks]]
            name = "a"
            kind = "stdout"
            min_severity = "loud"
            [[alerts.sinks]]
            kind = "carrier-pigeon"
            [[alerts.sinks]]
            name = "hook"
            kind = "webhook"
            url = "ftp://example.com"
            secret_env = "TRAILWATCH_TEST_UNSET_SECRET"
            headers = { "bad header" = "x", "X-Token" = "bell\u0007" }
            timeout_ms = "soon"
            rules = ["nothing-*", "root-*"]
        "#;
        let problems = Config::parse(text, "t.toml").unwrap_err().problems;
        for needle in [
            "`alerts.sinks[1]` (a): `name` must be unique",
            "`alerts.sinks[1].min_severity`: unknown variant `loud`",
            "`alerts.sinks[2]`: unknown variant `carrier-pigeon`",
            "`alerts.sinks[3]` (hook): kind \"webhook\" needs an http:// or https:// `url`",
            "`alerts.sinks[3]` (hook): `secret_env` names the environment variable TRAILWATCH_TEST_UNSET_SECRET",
            "`alerts.sinks[3]` (hook): `headers`: `bad header` is not a valid header name",
            "`alerts.sinks[3]` (hook): `headers`: the value of `X-Token` is not a valid header value",
            "`alerts.sinks[3].timeout_ms`: invalid type",
            "`alerts.sinks[3]` (hook): `rules`: `nothing-*` matches no rule id",
        ] {
            assert!(problems.iter().any(|p| p.starts_with(needle)), "{needle} missing from {problems:#?}");
        }
        assert_eq!(problems.len(), 9, "{problems:#?}");
    }

    /// A sink needs a name only when two would otherwise share one: by default it is named after its kind.
    #[test]
    fn a_sink_is_named_after_its_kind_unless_that_is_ambiguous() {
        let file = "[[alerts.sinks]]\nkind = \"file\"\npath = \"a.jsonl\"\n";
        let stdout = "[[alerts.sinks]]\nkind = \"stdout\"\n";
        let named_file = "[[alerts.sinks]]\nname = \"file\"\nkind = \"stdout\"\n";
        let names = |text: &str| {
            Config::parse(text, "t.toml").map(|c| c.alerts.sinks.iter().map(|s| s.name.clone()).collect::<Vec<_>>())
        };
        assert_eq!(names(file).unwrap(), ["file"]);
        assert_eq!(names(&format!("{file}{stdout}")).unwrap(), ["file", "stdout"]);
        for ambiguous in [format!("{file}{file}"), format!("{file}{named_file}")] {
            let problems = names(&ambiguous).unwrap_err().problems;
            assert!(problems.iter().any(|p| p.contains("needs a `name`")), "{problems:?}");
        }
    }

    /// The one line a TOML syntax error points at is not quoted: it may hold a secret.
    #[test]
    fn a_syntax_error_names_its_line_without_quoting_it() {
        let err = Config::parse("[http]\napi_token = \"s3cr3t-value\n", "t.toml").unwrap_err();
        assert_eq!(err.problems.len(), 1);
        assert!(err.problems[0].starts_with("line 2, column "), "{:?}", err.problems);
        assert!(!err.to_string().contains("s3cr3t"), "{err}");
    }

    /// Retention may not cut into a dedup window (a merge would raise the alert again); 0 keeps everything.
    #[test]
    fn retention_covers_every_dedup_window() {
        let cases = [
            ("retention_days = 7", "dedup_window_secs = 3600", None),
            ("retention_days = 7", "dedup_window_secs_by_rule = { root-account-usage = 604800 }", None),
            ("retention_days = 7", "dedup_window_secs_by_rule = { root-account-usage = 604801 }", Some("(604801 s)")),
            ("retention_days = 1", "dedup_window_secs = 90000", Some("1 days is shorter")),
            ("retention_days = 0", "dedup_window_secs = 9000000", None),
        ];
        for (alerts, rules, problem) in cases {
            let got = Config::parse(&format!("[alerts]\n{alerts}\n[rules]\n{rules}\n"), "t.toml");
            match problem {
                None => assert!(got.is_ok(), "{alerts} {rules}: {:?}", got.err()),
                Some(needle) => {
                    let problems = got.unwrap_err().problems;
                    assert_eq!(problems.len(), 1, "{problems:?}");
                    assert!(problems[0].starts_with("`alerts.retention_days`") && problems[0].contains(needle));
                }
            }
        }
    }
}
