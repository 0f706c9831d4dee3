//! `trailwatch replay`: local paths or an S3 listing through the pipeline once, with a progress bar and a summary.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use trailwatch::config::{Config, ConfigErrors};
use trailwatch::detect::rule::Severity;
use trailwatch::inflight::{Suspect, Trial};
use trailwatch::layout::Filters;
use trailwatch::metrics::Metrics;
use trailwatch::parse::SkipReason;
use trailwatch::pipeline::{self, RunContext, Summary};
use trailwatch::shutdown::{Shutdown, Stage};
use trailwatch::source::Source;
use trailwatch::source::backfill;
use trailwatch::store::{Applied, Store};
use trailwatch::time;

use crate::{Cli, load_config, trial};

// The arguments' doc comments are the command's help.
#[derive(clap::Args)]
pub struct ReplayArgs {
    #[arg(required = true, value_name = "PATH|s3://BUCKET[/PREFIX]")]
    pub paths: Vec<String>,
    /// Worker threads (default: `pipeline.threads`, 0 = one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Only files of this day (YYYY-MM-DD, UTC) and later, by CloudTrail's layout.
    #[arg(long, value_name = "DATE")]
    pub since: Option<String>,
    /// Only files of this day (YYYY-MM-DD, UTC) and earlier.
    #[arg(long, value_name = "DATE")]
    pub until: Option<String>,
    /// Only these accounts (repeatable).
    #[arg(long = "account", value_name = "ID")]
    pub accounts: Vec<String>,
    /// Only these regions (repeatable).
    #[arg(long = "region", value_name = "REGION")]
    pub regions: Vec<String>,
    /// Evaluate no rules and raise no alerts (quiet backfills).
    #[arg(long)]
    pub no_alerts: bool,
}

pub fn command(cli: &Cli, args: &ReplayArgs) -> anyhow::Result<ExitCode> {
    let ReplayArgs { paths, threads, since, until, accounts, regions, no_alerts } = args;
    let mut config = load_config(cli)?;
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
                problems.push(format!("`{flag}`: `{}` is not a date (YYYY-MM-DD)", value.as_deref().unwrap_or("")));
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
        digests: config.integrity.enabled,
    };
    let s3: Vec<_> = paths.iter().filter_map(|p| backfill::parse_s3_url(p)).collect();
    if !s3.is_empty() && s3.len() != paths.len() {
        problems.push("paths: give either local paths or s3:// urls, not both".to_owned());
    }
    if !problems.is_empty() {
        return Err(ConfigErrors { source_name: "(command line)".to_owned(), problems }.into());
    }
    replay(&config, paths, &s3, &filters, !no_alerts, &trial(cli))
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
        if filters.narrows() {
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
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    print_summary(&summary, started.elapsed().as_secs_f64(), config.threads);
    if config.integrity.enabled {
        check_integrity(config, &runtime, &mut store, alerting.as_deref(), &metrics)?;
    }
    runtime.shutdown_background();
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

/// What a replay with `[integrity] enabled` took in, checked: signatures settled, chains evaluated, and the
/// findings raised as alerts (when alerting is on).
fn check_integrity(
    config: &Config,
    runtime: &tokio::runtime::Runtime,
    store: &mut Store,
    alerting: Option<&trailwatch::alert::stage::Alerting>,
    metrics: &Metrics,
) -> anyhow::Result<()> {
    use trailwatch::validation::{self, KeyRing, Reach};
    let mut keys = KeyRing::from_config(&config.integrity, trailwatch::daemon::key_fetcher(runtime, config))?;
    let mut conn = store.outbox_connection()?;
    let integrity = &config.integrity;
    let (check, raised) = match alerting {
        Some(alerting) => {
            validation::check_and_raise(alerting, &mut conn, &mut keys, integrity, Reach::Everything, metrics)?
        }
        None => (validation::settle_and_check(&conn, &mut keys, integrity, Reach::Everything, metrics)?, 0),
    };
    let total = &check.total;
    let sum = |figures: &[(&str, u64)], outcomes: &[&str]| -> u64 {
        figures.iter().filter(|(outcome, _)| outcomes.contains(outcome)).map(|(_, n)| n).sum()
    };
    let unexamined = match total.log_files_unexamined + total.digests_unexamined {
        0 => String::new(),
        n => format!(", {n} files not examined (over `integrity.max_untrusted_per_check` in a place)"),
    };
    println!(
        "integrity: {} digests and {} log files checked, {} log file and {} digest problems, {raised} new \
         alerts{unexamined} (`trailwatch integrity report` for details)",
        sum(&total.digests(), &["verified", "unsigned", "unverified", "invalid"]),
        sum(&total.log_files(), &["valid", "altered", "unlisted", "pending"]),
        sum(&total.log_files(), &["altered", "missing", "unlisted"]),
        sum(&total.digests(), &["invalid", "missing"]),
    );
    Ok(())
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
