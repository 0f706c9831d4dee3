//! The `trailwatch` binary: command-line parsing, logging setup, and mapping errors to exit codes.
//!
//! Exit codes: 0 success, 1 failure, 64 invalid configuration or usage (sysexits `EX_USAGE`).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

mod cli;

use trailwatch::config::{Config, ConfigErrors};
use trailwatch::inflight::{Suspect, Trial};
use trailwatch::{daemon, report};

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
    Replay(cli::replay::ReplayArgs),
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
    Synth(cli::synth::SynthArgs),
    /// Serve the identity explorer (pages at `/`), the JSON API and /metrics over an existing state file, reading
    /// only (`replay` then `serve` works on a laptop), until SIGTERM or SIGINT.
    Serve(cli::serve::ServeArgs),
    /// CloudTrail log file validation, from the digests and log files taken in (`[integrity] enabled`).
    Integrity {
        #[command(subcommand)]
        what: IntegrityCommand,
    },
}

#[derive(Subcommand)]
enum IntegrityCommand {
    /// Per chain (trail bucket and prefix, account, region): digests verified, unsigned, invalid and missing, log
    /// files valid, altered, missing and unlisted, the time covered, then every problem with the objects it
    /// names. Exit code 1 when anything is wrong.
    Report(cli::integrity::ReportArgs),
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

/// A command-line problem, reported like a configuration problem (exit code 64).
fn usage(problem: String) -> anyhow::Error {
    ConfigErrors { source_name: "(command line)".into(), problems: vec![problem] }.into()
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
            // Errors may name objects from a listing or a notification: keys are anyone's text.
            eprintln!("trailwatch: {}", trailwatch::terminal::Shown(&describe(&err)));
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
            cli::run::probe_file(&load_config(&cli)?, location)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay(args) => cli::replay::command(&cli, args),
        Command::Rules { what: RulesCommand::List } => cli::rules::list(&cli),
        Command::Rules { what: RulesCommand::Check { dir } } => cli::rules::check(dir),
        Command::Inventory { what: InventoryCommand::Fetch { out } } => cli::inventory::fetch(&cli, out.as_deref()),
        Command::Alerts { what: AlertsCommand::Test { sink } } => cli::alerts::test(&cli, sink),
        Command::Integrity { what: IntegrityCommand::Report(args) } => cli::integrity::report(&cli, args),
        Command::Report { what: ReportCommand::Identities { principal, format } } => {
            cli::report::identities(&cli, principal.as_deref(), *format)
        }
        Command::Report { what: ReportCommand::Findings { as_of, format } } => {
            cli::report::findings(&cli, as_of.as_deref(), *format)
        }
        Command::Report { what: ReportCommand::Permissions { args, format } } => {
            cli::report::permissions(&cli, args, *format)
        }
        Command::Report { what: ReportCommand::Policy { args } } => cli::report::policy(&cli, args),
        Command::Synth(args) => cli::synth::command(args),
        Command::Serve(args) => cli::serve::command(&cli, args),
    }
}

/// The crash-loop guard's trial: this executable, on this configuration, in a process of its own.
fn trial(cli: &Cli) -> impl Fn(&Suspect) -> Trial {
    trailwatch::inflight::trial_in_child(cli.config.as_deref(), std::time::Duration::from_secs(600))
}
