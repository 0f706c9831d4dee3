//! The `trailwatch` binary: command-line parsing, logging setup, and mapping errors to exit codes.
//!
//! Exit codes: 0 success, 1 failure, 64 invalid configuration or usage (sysexits `EX_USAGE`).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use std::sync::Arc;

use trailwatch::config::{Config, ConfigErrors};
use trailwatch::detect::rule::{RuleBody, Severity};
use trailwatch::detect::ruleset::{Mode, RuleSet};
use trailwatch::inflight::{Suspect, Trial};
use trailwatch::layout::Filters;
use trailwatch::metrics::Metrics;
use trailwatch::parse::SkipReason;
use trailwatch::pipeline::{self, RunContext, Summary};
use trailwatch::shutdown::{Shutdown, Stage};
use trailwatch::source::Source;
use trailwatch::store::Applied;
use trailwatch::store::Store;
use trailwatch::synth::{self, SynthConfig};
use trailwatch::{daemon, report, source::backfill, time};

#[derive(Parser)]
#[command(name = "trailwatch", version, about = "Watches an AWS organisation through its CloudTrail logs")]
struct Cli {
    /// Configuration file (TOML); without it, the embedded default (config/trailwatch.toml).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// SQLite state file; overrides `store.path`.
    #[arg(long, global = true, value_name = "PATH")]
    state: Option<PathBuf>,
    /// Log lines on stderr as text or as JSON objects (one per line); levels by `RUST_LOG` (default info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: take new CloudTrail files from the spool directory or from SQS notifications (`[intake]`),
    /// apply each once to the state, raise and deliver alerts (`[alerts]`), raise the periodic findings, and serve
    /// /metrics, /healthz, /readyz and the JSON API (`[http]`) until SIGTERM or SIGINT.
    Run,
    /// Apply every CloudTrail file under the paths (local, or `s3://bucket[/prefix]`), once, using all cores.
    Replay {
        #[arg(required = true, value_name = "PATH|s3://BUCKET[/PREFIX]")]
        paths: Vec<String>,
        /// Worker threads (default: `pipeline.threads`, 0 = one per core).
        #[arg(long)]
        threads: Option<usize>,
        /// Only files of this day (YYYY-MM-DD, UTC) and later, by CloudTrail's layout.
        #[arg(long, value_name = "DATE")]
        since: Option<String>,
        /// Only files of this day (YYYY-MM-DD, UTC) and earlier.
        #[arg(long, value_name = "DATE")]
        until: Option<String>,
        /// Only these accounts (repeatable).
        #[arg(long = "account", value_name = "ID")]
        accounts: Vec<String>,
        /// Only these regions (repeatable).
        #[arg(long = "region", value_name = "REGION")]
        regions: Vec<String>,
        /// Evaluate no rules and raise no alerts (quiet backfills).
        #[arg(long)]
        no_alerts: bool,
    },
    /// The detection rules: list what is loaded, or check rule files.
    Rules {
        #[command(subcommand)]
        what: RulesCommand,
    },
    /// The inventory of granted permissions.
    Inventory {
        #[command(subcommand)]
        what: InventoryCommand,
    },
    /// Alert delivery.
    Alerts {
        #[command(subcommand)]
        what: AlertsCommand,
    },
    /// Print what trailwatch knows.
    Report {
        #[command(subcommand)]
        what: ReportCommand,
    },
    /// Check the configuration and list every problem; exit code 64 when invalid.
    Validate,
    /// Reads one file (a path or `s3://bucket/key`) as the daemons do, rules included, and applies nothing: the
    /// crash-loop guard's trial of a file that was in hand when the process died. Exit code 0 unless reading it
    /// kills the process.
    #[command(hide = true)]
    ProbeFile { location: String },
    /// Write a synthetic CloudTrail corpus in S3's layout (gzipped), for demos and tests without AWS.
    Synth {
        /// The directory to write into (`AWSLogs/<account>/CloudTrail/<region>/Y/M/D/…`); the spool works.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        #[arg(long, default_value_t = 100)]
        files: usize,
        /// Records per file.
        #[arg(long, default_value_t = 1000)]
        records: usize,
        /// The random seed: the same seed and counts write the same corpus.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Distinct identities.
        #[arg(long, default_value_t = 200)]
        principals: usize,
        /// Distinct calls each identity makes.
        #[arg(long, default_value_t = 12)]
        actions_per_principal: usize,
        /// Also write the exact `report identities --format json` this corpus must produce.
        #[arg(long, value_name = "FILE")]
        expect: Option<PathBuf>,
        /// Clean background traffic plus injected incidents, one or more per built-in rule.
        #[arg(long)]
        incidents: bool,
        /// With --incidents: write the alerts (rule, principal, event ids) a replay must raise.
        #[arg(long, value_name = "FILE", requires = "incidents")]
        expect_alerts: Option<PathBuf>,
        /// Also write an inventory of the corpus's IAM users and roles (`aws iam get-account-authorization-details`
        /// output, `<DIR>/<account>.json`), for `[inventory] files`: `report permissions` then works without AWS.
        #[arg(long, value_name = "DIR")]
        inventory: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Every rule: those `[rules]` loads (built-ins and `dirs`) with their level, mode and dedup window, then the
    /// behavioural and periodic rules; rules that could not be loaded are listed too.
    List,
    /// Loads every rule file under DIR (without the built-ins) and reports each rule that fails, with its reason.
    /// Exit code 1 when any fails.
    Check { dir: PathBuf },
}

#[derive(Subcommand)]
enum InventoryCommand {
    /// Fetches every configured account's inventory from the IAM API (`[aws]`, `[inventory.iam]
    /// assume_role_arns`) into the state file, where reports and findings read it.
    Fetch {
        /// Also write each account's inventory to `<DIR>/<account>.json` (usable as `[inventory] files`).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum AlertsCommand {
    /// Sends a test alert to the sink with this name (from `[[alerts.sinks]]`) and reports the result.
    Test { sink: String },
}

#[derive(Subcommand)]
enum ReportCommand {
    /// Per-principal state: first/last seen, actions used and denied, access keys.
    Identities {
        /// Only this principal (as the state keys it: a user or role ARN, `root:<account>`, ...).
        #[arg(long, value_name = "ARN")]
        principal: Option<String>,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Periodic findings at a reference time: inactive identities, unused access keys (`[findings]` thresholds).
    Findings {
        /// The reference time (RFC 3339 or YYYY-MM-DD); default now.
        #[arg(long, value_name = "TIME")]
        as_of: Option<String>,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Granted versus used per identity, from `[inventory]` and the state: unused services and actions, calls
    /// no policy allows, unknown (unlogged) actions, access keys and console passwords.
    Permissions {
        #[command(flatten)]
        args: PermissionsArgs,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// A least-privilege policy for one identity: exactly the actions it used in the window (JSON on stdout),
    /// and the granted statements it would remove (on stderr).
    #[command(mut_arg("principal", |arg| arg.required(true)))]
    Policy {
        #[command(flatten)]
        args: PermissionsArgs,
    },
}

#[derive(clap::Args)]
struct PermissionsArgs {
    /// Only this principal (an IAM user or role ARN as the state keys it).
    #[arg(long, value_name = "ARN")]
    principal: Option<String>,
    /// The reference time (RFC 3339 or YYYY-MM-DD); default now.
    #[arg(long, value_name = "TIME")]
    as_of: Option<String>,
    /// How far back "used" looks; default `permissions.window_days`.
    #[arg(long, value_name = "N")]
    window_days: Option<i64>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Json,
}

#[cfg(feature = "iam")]
fn inventory_fetch(cli: &Cli, out: Option<&std::path::Path>) -> anyhow::Result<ExitCode> {
    let config = load_config(cli)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let results = runtime.block_on(trailwatch::iam::fetch_all(&config.aws, &config.inventory.iam.assume_role_arns));
    if let Some(dir) = out {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for (account, body) in results.iter().flatten() {
            let path = dir.join(format!("{account}.json"));
            std::fs::write(&path, body).with_context(|| format!("writing {}", path.display()))?;
        }
    }
    let store = Store::open(&config.store_path, config.synchronous)?;
    let (stored, errors) = trailwatch::iam::store_fetched(store.connection(), results, time::now())
        .with_context(|| format!("storing the inventory in {}", store.path()))?;
    for account in &stored {
        println!("fetched the inventory of account {account}");
    }
    for err in &errors {
        eprintln!("trailwatch: {err}");
    }
    Ok(if errors.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

#[cfg(not(feature = "iam"))]
fn inventory_fetch(_: &Cli, _: Option<&std::path::Path>) -> anyhow::Result<ExitCode> {
    anyhow::bail!("this build has no IAM support (cargo feature `iam`); use `[inventory] files`")
}

/// A command-line problem, reported like a configuration problem (exit code 64).
fn usage(problem: String) -> anyhow::Error {
    ConfigErrors { source_name: "(command line)".into(), problems: vec![problem] }.into()
}

/// `--as-of`: RFC 3339 or a date; now when absent.
fn parse_as_of(text: Option<&str>) -> Result<time::Timestamp, ConfigErrors> {
    match text {
        None => Ok(time::now()),
        Some(text) => time::parse_rfc3339(text).or_else(|| time::parse_date(text)).ok_or_else(|| ConfigErrors {
            source_name: "(command line)".into(),
            problems: vec![format!("`--as-of`: `{text}` is not a time (RFC 3339) or a date (YYYY-MM-DD)")],
        }),
    }
}

/// What the permission reports say when they have no grants to compare usage with.
const NO_INVENTORY: &str = "note: no inventory is configured ([inventory] files, or [inventory.iam] and `trailwatch \
                            inventory fetch`): identities are reported with what they used only, without the grants \
                            to compare it with";

/// The permission reports `report permissions|policy` print, with the usage and settings behind them.
fn permission_reports(
    cli: &Cli,
    args: &PermissionsArgs,
) -> anyhow::Result<(
    Vec<trailwatch::permissions::analysis::PermissionReport>,
    Vec<trailwatch::permissions::analysis::Usage>,
    trailwatch::permissions::analysis::Settings,
)> {
    let config = load_config(cli)?;
    let settings = trailwatch::permissions::analysis::Settings {
        as_of: parse_as_of(args.as_of.as_deref())?,
        window_days: args.window_days.unwrap_or(config.permissions.window_days),
        data_events_logged: config.permissions.data_events_logged,
        key_rotation_days: config.permissions.key_rotation_days,
    };
    if settings.window_days < 1 {
        return Err(ConfigErrors {
            source_name: "(command line)".into(),
            problems: vec!["`--window-days`: must be at least 1".into()],
        }
        .into());
    }
    let store = match config.store_path.exists() {
        true => Some(Store::open_reader(&config.store_path)?),
        false => {
            tracing::warn!(store = %config.store_path.display(), "no state store yet: every identity is reported unused");
            None
        }
    };
    let (inventory, problems) = trailwatch::iam::load(&config.inventory.files, store.as_ref().map(Store::connection))?;
    for problem in problems {
        tracing::warn!("inventory: {problem}");
    }
    if inventory.accounts.is_empty() {
        // Said before the report, where a reader looks first.
        eprintln!("{NO_INVENTORY}");
    }
    let (usage, keys) = match &store {
        Some(store) => trailwatch::iam::usage(store.connection())
            .with_context(|| format!("reading usage from {}", store.path()))?,
        None => Default::default(),
    };
    let mut reports = trailwatch::permissions::analysis::analyse(&inventory, &usage, &keys, &settings);
    if let Some(principal) = &args.principal {
        reports.retain(|r| &r.principal == principal);
    }
    Ok((reports, usage, settings))
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return if err.use_stderr() { ExitCode::from(64) } else { ExitCode::SUCCESS };
        }
    };
    init_logging(cli.log_format);
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            // A closed pipe (`report ... | head`) is the reader's choice, not a failure.
            let broken_pipe = err.chain().any(|cause| {
                let pipe = Some(std::io::ErrorKind::BrokenPipe);
                cause.downcast_ref::<std::io::Error>().map(std::io::Error::kind) == pipe
                    || cause.downcast_ref::<serde_json::Error>().and_then(serde_json::Error::io_error_kind) == pipe
                    || cause
                        .downcast_ref::<report::ReportError>()
                        .is_some_and(|e| matches!(e, report::ReportError::Output(io) if Some(io.kind()) == pipe))
            });
            if broken_pipe {
                return ExitCode::SUCCESS;
            }
            if let Some(config) = err.downcast_ref::<ConfigErrors>() {
                eprintln!("trailwatch: {config}");
                return ExitCode::from(64);
            }
            eprintln!("trailwatch: {}", describe(&err));
            ExitCode::FAILURE
        }
    }
}

/// An error with its causes, each said once: a typed error's message often carries its cause's text already
/// (`state store s.db: database disk image is malformed`), and rusqlite's cause repeats it again behind an error
/// code.
fn describe(err: &anyhow::Error) -> String {
    let mut text = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        let last = cause.rsplit(": ").next().unwrap_or(&cause);
        if !text.contains(&cause) && !text.ends_with(last) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).init(),
    }
}

fn load_config(cli: &Cli) -> Result<Config, ConfigErrors> {
    let mut config = Config::load(cli.config.as_deref())?;
    if let Some(state) = &cli.state {
        config.store_path = state.clone();
    }
    Ok(config)
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Command::Validate => {
            load_config(&cli)?;
            let name = cli.config.as_ref().map_or("(embedded default)".to_owned(), |p| p.display().to_string());
            println!("configuration {name} is valid");
            Ok(ExitCode::SUCCESS)
        }
        Command::Run => {
            let config = load_config(&cli)?;
            daemon::run(&config, &trial(&cli))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::ProbeFile { location } => {
            let config = load_config(&cli)?;
            probe_file(&config, location)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay { paths, threads, since, until, accounts, regions, no_alerts } => {
            let mut config = load_config(&cli)?;
            if let Some(threads) = threads {
                config.threads = (*threads).max(1);
            }
            let mut problems = Vec::new();
            let mut day = |flag: &str, value: &Option<String>| {
                let parsed = value
                    .as_deref()
                    .map(|v| time::parse_date(v).or_else(|| time::parse_rfc3339(v).map(|t| t - t.rem_euclid(86_400))));
                match parsed {
                    Some(None) => {
                        problems
                            .push(format!("`{flag}`: `{}` is not a date (YYYY-MM-DD)", value.as_deref().unwrap_or("")));
                        None
                    }
                    Some(day) => day,
                    None => None,
                }
            };
            let filters = Filters {
                since: day("--since", since),
                until: day("--until", until),
                accounts: accounts.clone(),
                regions: regions.clone(),
            };
            let s3: Vec<_> = paths.iter().filter_map(|p| backfill::parse_s3_url(p)).collect();
            if !s3.is_empty() && s3.len() != paths.len() {
                problems.push("paths: give either local paths or s3:// urls, not both".to_owned());
            }
            if !problems.is_empty() {
                return Err(ConfigErrors { source_name: "(command line)".to_owned(), problems }.into());
            }
            replay(&config, paths, &s3, &filters, !no_alerts, &trial(&cli))
        }
        Command::Rules { what: RulesCommand::List } => {
            let config = load_config(&cli)?;
            let (mut rules, errors) =
                RuleSet::load_except(config.rules.builtin, &config.rules.dirs, &config.rules.disabled);
            // Validation refused ids that name no rule.
            rules.set_dry_run(&config.rules.dry_run);
            rules.set_dedup_windows(config.rules.dedup_window_secs, &config.rules.dedup_window_secs_by_rule);
            let mut out = std::io::stdout().lock();
            for (i, rule) in rules.rules().iter().enumerate() {
                let kind = match &rule.body {
                    RuleBody::Event(_) => "event",
                    RuleBody::Correlation(_) => "correlation",
                };
                let mode = match rules.mode(i as u32) {
                    Mode::Live if !rules.alerting(i as u32) => "counted",
                    Mode::Live => "live",
                    Mode::DryRun => "dry-run",
                };
                writeln!(
                    out,
                    "{:<40} {:<13} {:<11} {:<8} {:>8}  {}  ({})",
                    rule.id,
                    rule.level.as_str(),
                    kind,
                    mode,
                    format!("{}s", rules.dedup_secs(i as u32)),
                    rule.title,
                    rule.origin
                )?;
            }
            // The rules that come from the state rather than from events.
            for rule in &trailwatch::detect::catalogue::STATE_RULES {
                let (id, level, kind, title) = (rule.id, rule.level.as_str(), rule.kind, rule.title);
                writeln!(out, "{id:<40} {level:<13} {kind:<11} {:<8} {:>8}  {title}  (builtin)", "live", "-")?;
            }
            for err in &errors {
                writeln!(out, "not loaded: {err}")?;
            }
            for foreign in rules.foreign_fields() {
                writeln!(out, "warning: {foreign}")?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Rules { what: RulesCommand::Check { dir } } => {
            anyhow::ensure!(dir.is_dir(), "{} is not a directory", dir.display());
            let (rules, errors) = RuleSet::load(false, std::slice::from_ref(dir));
            let mut out = std::io::stdout().lock();
            for err in &errors {
                writeln!(out, "{err}")?;
            }
            // Such a rule loads and runs; it is most likely written for another log schema.
            for foreign in rules.foreign_fields() {
                writeln!(out, "warning: {foreign}")?;
            }
            writeln!(out, "{} rules loaded, {} failed", rules.rules().len(), errors.len())?;
            Ok(if errors.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Inventory { what: InventoryCommand::Fetch { out } } => inventory_fetch(&cli, out.as_deref()),
        Command::Alerts { what: AlertsCommand::Test { sink } } => {
            let config = load_config(&cli)?;
            let Some(sink_config) = config.alerts.sinks.iter().find(|s| &s.name == sink) else {
                let names: Vec<&str> = config.alerts.sinks.iter().map(|s| s.name.as_str()).collect();
                return Err(usage(format!("`alerts test`: no sink named `{sink}` (configured: {})", names.join(", "))));
            };
            let alert = trailwatch::alert::test_alert(time::now());
            let sink = trailwatch::alert::sink::Sink::new(sink_config.clone());
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(sink.send(&alert))?;
            writeln!(
                std::io::stdout(),
                "sent test alert {} to {} ({})",
                alert.id,
                sink.name(),
                sink.config.kind.as_str()
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Report { what: ReportCommand::Permissions { args, format } } => {
            let (reports, _, settings) = permission_reports(&cli, args)?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            match format {
                Format::Json => {
                    serde_json::to_writer_pretty(&mut out, &reports)?;
                    writeln!(out)?;
                }
                Format::Table => report::write_permissions_table(&reports, &settings, &mut out)?,
            }
            out.flush().context("writing the report")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Report { what: ReportCommand::Policy { args } } => {
            // Required by the command line parser.
            let principal = args.principal.clone().unwrap_or_default();
            let (reports, usage, settings) = permission_reports(&cli, args)?;
            let Some(report) = reports.first() else {
                anyhow::bail!("{principal}: neither the inventory nor the state knows this principal");
            };
            let usage = usage.iter().find(|u| u.principal == principal);
            let (policy, removed) = trailwatch::permissions::analysis::least_privilege(report, usage, &settings);
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            serde_json::to_writer_pretty(&mut out, &policy)?;
            writeln!(out)?;
            out.flush().context("writing the policy")?;
            for statement in removed {
                eprintln!("would remove: {statement} (allowed nothing used in the window)");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Report { what: ReportCommand::Findings { as_of, format } } => {
            let config = load_config(&cli)?;
            let as_of = parse_as_of(as_of.as_deref())?;
            anyhow::ensure!(
                config.store_path.exists(),
                "state store {} does not exist: run `trailwatch replay` or `trailwatch run` first",
                config.store_path.display()
            );
            let store = Store::open_reader(&config.store_path)?;
            let findings = trailwatch::findings::compute(store.connection(), as_of, &config.findings)
                .with_context(|| format!("reading findings from {}", store.path()))?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            match format {
                Format::Json => serde_json::to_writer_pretty(&mut out, &findings)?,
                Format::Table => {
                    writeln!(out, "{:<18} {:>5} {:<20} {:<60} principal", "rule", "days", "last used", "subject")?;
                    for f in &findings {
                        writeln!(
                            out,
                            "{:<18} {:>5} {:<20} {:<60} {}",
                            f.rule, f.days_unused, f.last_used, f.subject, f.principal
                        )?;
                    }
                }
            }
            writeln!(out)?;
            out.flush().context("writing the report")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Report { what: ReportCommand::Identities { principal, format } } => {
            let config = load_config(&cli)?;
            anyhow::ensure!(
                config.store_path.exists(),
                "state store {} does not exist: run `trailwatch replay` or `trailwatch run` first",
                config.store_path.display()
            );
            let store = Store::open_reader(&config.store_path)?;
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let only = principal.as_deref();
            if let Some(principal) = only
                && report::identity(&store, principal)?.is_none()
            {
                anyhow::bail!("{principal}: no such principal in {}", store.path());
            }
            match format {
                Format::Json => report::write_identities_json(&store, only, &mut out)?,
                Format::Table => report::write_identities_table(&store, only, &mut out)?,
            }
            out.flush().context("writing the report")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Synth {
            out,
            files,
            records,
            seed,
            principals,
            actions_per_principal,
            expect,
            incidents,
            expect_alerts,
            inventory,
        } => {
            let cfg = SynthConfig {
                files: *files,
                records_per_file: *records,
                seed: *seed,
                principals: (*principals).max(1),
                actions_per_principal: (*actions_per_principal).max(1),
                incidents: *incidents,
                ..SynthConfig::default()
            };
            let started = Instant::now();
            let (summary, expected) =
                synth::generate(out, &cfg).with_context(|| format!("writing the corpus under {}", out.display()))?;
            if let Some(path) = expect {
                let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
                serde_json::to_writer_pretty(std::io::BufWriter::new(file), &expected)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            if let Some(dir) = inventory {
                std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
                for (account, details) in synth::inventory(&expected, cfg.start) {
                    let path = dir.join(format!("{account}.json"));
                    let file = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
                    serde_json::to_writer_pretty(std::io::BufWriter::new(file), &details)
                        .with_context(|| format!("writing {}", path.display()))?;
                }
            }
            if let Some(path) = expect_alerts {
                let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
                serde_json::to_writer_pretty(std::io::BufWriter::new(file), &summary.alerts)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            eprintln!(
                "wrote {} files, {} records, {} identities: {:.1} MB gzipped, {:.1} MB of JSON ({:.0} bytes/record) in {:.1}s",
                summary.files,
                summary.records,
                expected.len(),
                summary.bytes as f64 / 1e6,
                summary.json_bytes as f64 / 1e6,
                summary.json_bytes as f64 / summary.records.max(1) as f64,
                started.elapsed().as_secs_f64()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The crash-loop guard's trial: this executable, on this configuration, in a process of its own.
fn trial(cli: &Cli) -> impl Fn(&Suspect) -> Trial {
    trailwatch::inflight::trial_in_child(cli.config.as_deref(), std::time::Duration::from_secs(600))
}

/// `probe-file`: reads one file through a worker as a run would (decode, parse, state fold, rules), keeping
/// nothing. Whether the file is applied or rejected does not matter, only that reading it ends.
fn probe_file(config: &Config, location: &str) -> anyhow::Result<()> {
    let rules = config
        .alerts
        .enabled
        .then(|| Arc::new(RuleSet::load_except(config.rules.builtin, &config.rules.dirs, &config.rules.disabled).0));
    let mut worker = pipeline::Worker::with_rules(rules);
    let mut folded = pipeline::Folded::default();
    let (_, outcome) = match backfill::parse_s3_url(location) {
        Some(url) => {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let sdk = runtime.block_on(trailwatch::aws::sdk_config(&config.aws));
            let client = trailwatch::aws::s3_client(&sdk, &config.aws);
            let fetched = runtime.block_on(trailwatch::source::fetch::get_object(
                &client,
                &url.bucket,
                &url.prefix,
                config.limits.max_file_bytes,
            ))?;
            let job = trailwatch::source::FileJob::s3(&url.bucket, &url.prefix, fetched.etag.as_deref().unwrap_or(""));
            worker.process_fetched(&job, fetched.bytes, config.limits, &mut folded)
        }
        None => {
            let job = trailwatch::source::FileJob::local(PathBuf::from(location), 0);
            worker.process_file(&job, config.limits, &mut folded)
        }
    };
    if let Err(err) = outcome {
        tracing::info!("the file is rejected: {err}");
    }
    Ok(())
}

fn replay(
    config: &Config,
    paths: &[String],
    s3: &[backfill::S3Url],
    filters: &Filters,
    alerts: bool,
    trial: &dyn Fn(&Suspect) -> Trial,
) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let mut store = Store::open(&config.store_path, config.synchronous)?;
    let applied = Arc::new(Applied::load(&store)?);
    let metrics = Arc::new(Metrics::new());
    let alerting = trailwatch::delivery::setup(config, &store, alerts)?;
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} files {msg} [{elapsed_precise}<{eta_precise}]",
            )
            .expect("valid template"),
        );
        bar
    });
    // The bar moves as workers finish each file; files already applied count once, when the run reports them.
    let on_file = || {
        if let Some(bar) = &bar {
            bar.inc(1);
        }
    };
    let mut duplicates_shown = false;
    let mut on_progress = |s: &Summary| {
        if let Some(bar) = &bar {
            if !duplicates_shown {
                bar.inc(s.files_duplicate);
                duplicates_shown = true;
            }
            bar.set_message(format!("{} records", s.counts.records));
        }
    };
    let inflight = trailwatch::inflight::guard(&config.store_path, &store, &applied, trial)?;
    let ctx = RunContext {
        alerting: alerting.as_deref(),
        on_file: Some(&on_file),
        inflight: inflight.as_ref(),
        ..RunContext::new(config, &metrics)
    };
    let runtime = trailwatch::daemon::runtime(2, "trailwatch-io")?;
    let mut source: Box<dyn Source> = if s3.is_empty() {
        let paths: Vec<PathBuf> = paths.iter().map(PathBuf::from).collect();
        let mut jobs = trailwatch::source::local::discover(&paths)?;
        if *filters != Filters::default() {
            jobs.retain(|job| job.local_path().is_some_and(|p| filters.keeps(&p.to_string_lossy())));
        }
        if let Some(bar) = &bar {
            bar.set_length(jobs.len() as u64);
        }
        Box::new(trailwatch::source::local::LocalFiles::new(jobs, Arc::clone(&applied)))
    } else {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        let listing = backfill::S3Backfill::list(
            &runtime,
            s3,
            filters,
            now,
            &config.aws,
            &applied,
            config.limits.max_file_bytes,
        )?;
        if let Some(bar) = &bar {
            bar.set_length(listing.listed());
        }
        Box::new(listing)
    };
    let shutdown = Shutdown::new();
    let stop = shutdown.listener(Stage::Intake, source.describe());
    let summary = pipeline::run(&mut *source, &runtime, stop, &ctx, &mut store, &applied, &mut on_progress)?;
    runtime.shutdown_background();
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    print_summary(&summary, started.elapsed().as_secs_f64(), config.threads);
    if let Some(alerting) = &alerting {
        // Delivered, or durably pending in the outbox for the next run or the daemon.
        let pending = trailwatch::delivery::drain(
            alerting,
            &store,
            Arc::clone(&metrics),
            std::time::Duration::from_secs(config.alerts.max_backoff_secs),
            std::time::Duration::from_secs(config.alerts.replay_wait_secs),
        )?;
        let raised: u64 =
            Severity::ALL.iter().map(|s| metrics.alerts_raised.with_label_values(&[s.as_str()]).get()).sum();
        println!(
            "alerts: {raised} raised, {} merged into earlier ones, {} suppressed, {} deliveries sent, {pending} pending",
            metrics.alerts_deduplicated.get(),
            metrics.alerts_suppressed.get(),
            ["file", "stdout", "webhook", "slack", "pagerduty", "alertmanager"]
                .iter()
                .map(|k| metrics.alerts_sent.with_label_values(&[k]).get())
                .sum::<u64>(),
        );
    }
    // The correlation windows hold every hit of the last hour or more: freeing them here kept a finished replay
    // waiting on the allocator (about 90 ms after a 500k-record replay with SigmaHQ's rules).
    trailwatch::reaper::drop_later(alerting);
    Ok(ExitCode::SUCCESS)
}

fn print_summary(s: &Summary, secs: f64, threads: usize) {
    let mut out = String::new();
    out.push_str(&format!(
        "files: {} applied, {} already applied, {} rejected\n",
        s.files_applied, s.files_duplicate, s.files_rejected
    ));
    for (reason, n) in &s.rejections {
        out.push_str(&format!("  rejected {reason}: {n}\n"));
    }
    out.push_str(&format!(
        "records: {} read, {} applied, {} insight events, {} skipped\n",
        s.counts.records,
        s.counts.events,
        s.counts.insights,
        s.counts.skipped_total()
    ));
    for reason in SkipReason::ALL {
        let n = s.counts.skipped[reason as usize];
        if n > 0 {
            out.push_str(&format!("  skipped {}: {n}\n", reason.kind()));
        }
    }
    out.push_str(&format!(
        "time: {secs:.2}s on {threads} threads, {:.0} records/s, {:.1} MB/s of JSON, peak RSS {}\n",
        s.counts.records as f64 / secs.max(1e-9),
        s.decoded_bytes as f64 / 1e6 / secs.max(1e-9),
        peak_rss().map_or("unknown".to_owned(), |kb| format!("{:.1} MB", kb as f64 / 1024.0)),
    ));
    print!("{out}");
}

/// Peak resident set size in KiB, from /proc (Linux).
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
