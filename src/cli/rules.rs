//! `trailwatch rules list|check`: the loaded rules, and a directory of rule files checked.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use trailwatch::detect::rule::RuleBody;
use trailwatch::detect::ruleset::{Mode, RuleSet};
use trailwatch::terminal::Shown;

use crate::{Cli, load_config};

pub fn list(cli: &Cli) -> anyhow::Result<ExitCode> {
    let config = load_config(cli)?;
    let (mut rules, errors) = RuleSet::load_except(config.rules.builtin, &config.rules.dirs, &config.rules.disabled);
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
            Shown(&rule.id),
            rule.level.as_str(),
            kind,
            mode,
            format!("{}s", rules.dedup_secs(i as u32)),
            Shown(&rule.title),
            Shown(&rule.origin.to_string())
        )?;
    }
    // The rules that come from the state rather than from events.
    for rule in &trailwatch::detect::catalogue::STATE_RULES {
        let (id, level, kind, title) = (rule.id, rule.level.as_str(), rule.kind, rule.title);
        writeln!(out, "{id:<40} {level:<13} {kind:<11} {:<8} {:>8}  {title}  (builtin)", "live", "-")?;
    }
    for err in &errors {
        writeln!(out, "not loaded: {}", Shown(&err.to_string()))?;
    }
    for foreign in rules.foreign_fields() {
        writeln!(out, "warning: {}", Shown(&foreign.to_string()))?;
    }
    Ok(ExitCode::SUCCESS)
}

pub fn check(dir: &Path) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(dir.is_dir(), "{} is not a directory", dir.display());
    let (rules, errors) = RuleSet::load(false, &[dir.to_path_buf()]);
    let mut out = std::io::stdout().lock();
    for err in &errors {
        writeln!(out, "{}", Shown(&err.to_string()))?;
    }
    // Such a rule loads and runs; it is most likely written for another log schema.
    for foreign in rules.foreign_fields() {
        writeln!(out, "warning: {}", Shown(&foreign.to_string()))?;
    }
    writeln!(out, "{} rules loaded, {} failed", rules.rules().len(), errors.len())?;
    Ok(if errors.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
