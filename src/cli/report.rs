//! `trailwatch report identities|findings|permissions|policy`: the state read back as tables or JSON contracts.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use trailwatch::config::ConfigErrors;
use trailwatch::store::Store;
use trailwatch::terminal::Shown;
use trailwatch::{report, time};

use crate::{Cli, Format, PermissionsArgs, load_config};

/// The state file, read-only; that it does not exist yet is an error saying how to make it.
fn existing_state(config: &trailwatch::config::Config) -> anyhow::Result<Store> {
    anyhow::ensure!(
        config.store_path.exists(),
        "state store {} does not exist: run `trailwatch replay` or `trailwatch run` first",
        config.store_path.display()
    );
    Ok(Store::open_reader(&config.store_path)?)
}

pub fn identities(cli: &Cli, principal: Option<&str>, format: Format) -> anyhow::Result<ExitCode> {
    let config = load_config(cli)?;
    let store = existing_state(&config)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let only = principal;
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

pub fn findings(cli: &Cli, as_of: Option<&str>, format: Format) -> anyhow::Result<ExitCode> {
    let config = load_config(cli)?;
    let as_of = parse_as_of(as_of)?;
    let store = existing_state(&config)?;
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
                    f.rule,
                    f.days_unused,
                    f.last_used,
                    Shown(&f.subject),
                    Shown(&f.principal)
                )?;
            }
        }
    }
    writeln!(out)?;
    out.flush().context("writing the report")?;
    Ok(ExitCode::SUCCESS)
}

pub fn permissions(cli: &Cli, args: &PermissionsArgs, format: Format) -> anyhow::Result<ExitCode> {
    let (reports, _, settings) = permission_reports(cli, args)?;
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

pub fn policy(cli: &Cli, args: &PermissionsArgs) -> anyhow::Result<ExitCode> {
    // Required by the command line parser.
    let principal = args.principal.clone().unwrap_or_default();
    let (reports, usage, settings) = permission_reports(cli, args)?;
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
    // One principal: its usage and keys by index, and only its report (the whole state's usage is millions of
    // rows in a large organisation).
    if let Some(principal) = &args.principal {
        let (usage, keys) = match &store {
            Some(store) => trailwatch::iam::usage_of(store.connection(), principal)
                .with_context(|| format!("reading usage from {}", store.path()))?,
            None => Default::default(),
        };
        let report =
            trailwatch::permissions::analysis::analyse_one(&inventory, principal, usage.as_ref(), &keys, &settings);
        return Ok((report.into_iter().collect(), usage.into_iter().collect(), settings));
    }
    let (usage, keys) = match &store {
        Some(store) => trailwatch::iam::usage(store.connection())
            .with_context(|| format!("reading usage from {}", store.path()))?,
        None => Default::default(),
    };
    let reports = trailwatch::permissions::analysis::analyse(&inventory, &usage, &keys, &settings);
    Ok((reports, usage, settings))
}
