//! `trailwatch integrity report`: the chains the state holds, checked on demand, as a table or JSON.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use trailwatch::config::ConfigErrors;
use trailwatch::integrity::chain::Grace;
use trailwatch::store::Store;
use trailwatch::store::integrity::Scope;
use trailwatch::terminal::{Shown, escape};
use trailwatch::validation::{self, ChainReport, KeyRing};

use crate::{Cli, Format, load_config};

// The arguments' doc comments are the command's help.
#[derive(clap::Args)]
pub struct ReportArgs {
    /// Only digests and log files of this time and later (RFC 3339, or YYYY-MM-DD for midnight UTC).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only digests and log files before this time.
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Only these accounts (repeatable).
    #[arg(long = "account", value_name = "ID")]
    pub accounts: Vec<String>,
    /// Only these regions (repeatable).
    #[arg(long = "region", value_name = "REGION")]
    pub regions: Vec<String>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

pub fn report(cli: &Cli, args: &ReportArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(cli)?;
    let mut problems = Vec::new();
    let mut time = |flag: &str, value: &Option<String>| {
        let text = value.as_deref()?;
        let parsed = trailwatch::time::parse_rfc3339(text).or_else(|| trailwatch::time::parse_date(text));
        if parsed.is_none() {
            problems.push(format!("`{flag}`: `{text}` is not a time (RFC 3339) or a date (YYYY-MM-DD)"));
        }
        parsed
    };
    let scope = Scope {
        since: time("--since", &args.since),
        until: time("--until", &args.until),
        accounts: args.accounts.clone(),
        regions: args.regions.clone(),
        max_untrusted: Some(config.integrity.max_untrusted_per_check),
    };
    if !problems.is_empty() {
        return Err(ConfigErrors { source_name: "(command line)".to_owned(), problems }.into());
    }
    anyhow::ensure!(
        config.store_path.exists(),
        "state store {} does not exist: run `trailwatch replay` or `trailwatch run` with [integrity] enabled first",
        config.store_path.display()
    );
    let store = Store::open_reader(&config.store_path)?;
    let conn = store.connection();
    // Signatures not settled yet are checked here too (in memory: the report writes nothing).
    let runtime = trailwatch::daemon::runtime(1, "trailwatch-keys")?;
    let mut keys = KeyRing::from_config(&config.integrity, trailwatch::daemon::key_fetcher(&runtime, &config))?;
    let mut settled = std::collections::HashMap::new();
    validation::verify_unverified(conn, &mut keys, |outcomes| {
        settled.extend(outcomes);
        Ok(())
    })
    .context("reading digests")?;
    let grace = Grace { digest_secs: config.integrity.digest_grace_secs };
    let check = validation::check(conn, &scope, grace, &settled, validation::Figures::PerPlace)
        .context("reading the integrity record")?;
    runtime.shutdown_background();
    let chains = &check.chains;
    let wrong = !check.findings.is_empty();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match args.format {
        Format::Json => {
            let findings: Vec<_> = check
                .findings
                .iter()
                .map(|f| {
                    let alert = validation::to_alert(f);
                    serde_json::json!({ "rule": alert.rule, "summary": alert.summary, "details": alert.details })
                })
                .collect();
            serde_json::to_writer_pretty(&mut out, &serde_json::json!({ "chains": chains, "findings": findings }))?;
            writeln!(out)?;
        }
        Format::Table => write_table(chains, &check, &mut out)?,
    }
    out.flush().context("writing the report")?;
    Ok(if wrong { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

fn write_table(chains: &[ChainReport], check: &validation::Check, out: &mut impl Write) -> std::io::Result<()> {
    if chains.is_empty() {
        writeln!(out, "no digests or log files recorded (is [integrity] enabled, and the trail's validation on?)")?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<44} {:<12} {:<14} {:>8} {:>8} {:>7} {:>7} {:>6} {:>7} {:>7} {:>8} {:>7}  covered  trails",
        "trail bucket/prefix",
        "account",
        "region",
        "verified",
        "unsigned",
        "invalid",
        "missing",
        "logs ok",
        "altered",
        "missing",
        "unlisted",
        "pending"
    )?;
    for c in chains {
        let place = match c.bucket.is_empty() {
            true => "(local files)".to_owned(),
            false => format!("s3://{}/{}", c.bucket, escape(&c.prefix)),
        };
        writeln!(
            out,
            "{:<44} {:<12} {:<14} {:>8} {:>8} {:>7} {:>7} {:>6} {:>7} {:>7} {:>8} {:>7}  {} .. {}  {}",
            place,
            Shown(&c.account),
            Shown(&c.region),
            c.digests_verified,
            c.digests_unsigned + c.digests_unverified,
            c.digests_invalid,
            c.digests_missing,
            c.log_files_valid,
            c.log_files_altered,
            c.log_files_missing,
            c.log_files_unlisted,
            c.log_files_pending,
            c.from.as_deref().unwrap_or("-"),
            c.to.as_deref().unwrap_or("-"),
            escape(&c.trails.join(",")),
        )?;
    }
    let logs: u64 = chains.iter().map(|c| c.log_files_unexamined).sum();
    let digests: u64 = chains.iter().map(|c| c.digests_unexamined).sum();
    if logs + digests > 0 {
        writeln!(
            out,
            "\n{logs} log files that no digest lists and {digests} invalid digests were counted but not examined: \
             more than `integrity.max_untrusted_per_check` in one place (a flood of objects written to the bucket?)"
        )?;
    }
    let unsigned: u64 = chains.iter().map(|c| c.digests_unsigned).sum();
    if unsigned > 0 {
        writeln!(
            out,
            "\n{unsigned} digests came without a signature (local files without `<file>.signature`): their hashes \
             and links were checked, their signatures were not"
        )?;
    }
    if check.findings.is_empty() {
        writeln!(out, "\nno problems found")?;
    } else {
        writeln!(out, "\n{} problems:", check.findings.len())?;
        for f in &check.findings {
            writeln!(out, "{:<20} {}", f.rule(), Shown(&validation::to_alert(f).summary))?;
        }
    }
    Ok(())
}
