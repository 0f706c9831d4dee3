//! Configuration: TOML with serde defaults and unknown keys denied, validated into [`Config`] with every problem
//! reported at once.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::aws::AwsSettings;
use crate::pipeline::{BatchLimits, Limits};
use crate::state::store::Synchronous;

/// The embedded default configuration, also the documented reference (`config/trailwatch.toml`).
pub const DEFAULT_CONFIG: &str = include_str!("../config/trailwatch.toml");

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
    pub aws: AwsSettings,
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
}

impl Default for RawHttp {
    fn default() -> Self {
        RawHttp { listen: "127.0.0.1:9898".to_owned() }
    }
}

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
                    problems: vec![err.to_string().trim().replace('\n', " ")],
                });
            }
        };
        for key in table.keys() {
            if !["intake", "store", "pipeline", "http", "aws"].contains(&key.as_str()) {
                problems.push(format!("`{key}`: unknown section (expected intake, store, pipeline, http, aws)"));
            }
        }
        let intake: RawIntake = section(&table, "intake", &mut problems);
        let store: RawStore = section(&table, "store", &mut problems);
        let pipeline: RawPipeline = section(&table, "pipeline", &mut problems);
        let http: RawHttp = section(&table, "http", &mut problems);
        let aws: RawAws = section(&table, "aws", &mut problems);

        let mut check = |ok: bool, problem: &str| {
            if !ok {
                problems.push(problem.to_owned());
            }
        };
        check(!intake.spool.dir.as_os_str().is_empty(), "`intake.spool.dir`: must not be empty");
        if matches!(intake.kind, IntakeKind::Sqs) {
            check(!intake.sqs.queue_url.is_empty(), "`intake.sqs.queue_url`: required when `intake.kind` is \"sqs\"");
        }
        check((1..=64).contains(&intake.sqs.pollers), "`intake.sqs.pollers`: must be between 1 and 64");
        check(
            (10..=43_200).contains(&intake.sqs.visibility_timeout_secs),
            "`intake.sqs.visibility_timeout_secs`: must be between 10 and 43200 (SQS's limit)",
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
            limits: Limits { max_file_bytes: pipeline.max_file_bytes, max_decoded_bytes: pipeline.max_decoded_bytes },
            batch: BatchLimits {
                max_files: pipeline.batch_max_files,
                max_records: pipeline.batch_max_records,
                max_wait: Duration::from_millis(pipeline.batch_max_wait_ms),
            },
            http_listen: http_listen.expect("checked above"),
            aws: AwsSettings {
                region: aws.region,
                endpoint_url: aws.endpoint_url,
                s3_force_path_style: aws.s3_force_path_style,
                max_concurrent_fetches: aws.max_concurrent_fetches,
            },
        })
    }
}

fn section<T: for<'de> Deserialize<'de> + Default>(table: &toml::Table, name: &str, problems: &mut Vec<String>) -> T {
    let Some(value) = table.get(name) else {
        return T::default();
    };
    match value.clone().try_into::<T>() {
        Ok(v) => v,
        Err(err) => {
            problems.push(format!("`{name}`: {}", err.to_string().trim().replace('\n', " ")));
            T::default()
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

    #[test]
    fn lists_every_problem() {
        let text = r#"
            [intake]
            kind = "spool"
            colour = "blue"
            [store]
            path = ""
            [pipeline]
            batch_max_files = 0
            threads = 5000
            [http]
            listen = "nowhere"
            [alerts]
            x = 1
        "#;
        let err = Config::parse(text, "t.toml").unwrap_err();
        let joined = err.problems.join("\n");
        for needle in
            ["`alerts`", "colour", "`store.path`", "`pipeline.batch_max_files`", "`pipeline.threads`", "`http.listen`"]
        {
            assert!(joined.contains(needle), "{needle} missing from:\n{joined}");
        }
        assert_eq!(err.problems.len(), 6, "{joined}");
    }

    #[test]
    fn syntax_errors_are_reported() {
        let err = Config::parse("[intake\n", "t.toml").unwrap_err();
        assert_eq!(err.problems.len(), 1);
    }
}
