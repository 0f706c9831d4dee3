//! `trailwatch synth`: a synthetic corpus, with its expected state, alerts and inventory when asked.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use trailwatch::synth::{self, SynthConfig};

// The arguments' doc comments are the command's help.
#[derive(clap::Args)]
pub struct SynthArgs {
    /// The directory to write into (`AWSLogs/<account>/CloudTrail/<region>/Y/M/D/…`); the spool works.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    #[arg(long, default_value_t = 100)]
    pub files: usize,
    /// Records per file.
    #[arg(long, default_value_t = 1000)]
    pub records: usize,
    /// The random seed: the same seed and counts write the same corpus.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Distinct identities.
    #[arg(long, default_value_t = 200)]
    pub principals: usize,
    /// Distinct calls each identity makes.
    #[arg(long, default_value_t = 12)]
    pub actions_per_principal: usize,
    /// Also write the exact `report identities --format json` this corpus must produce.
    #[arg(long, value_name = "FILE")]
    pub expect: Option<PathBuf>,
    /// Clean background traffic plus injected incidents, one or more per built-in rule.
    #[arg(long)]
    pub incidents: bool,
    /// With --incidents: write the alerts (rule, principal, event ids) a replay must raise.
    #[arg(long, value_name = "FILE", requires = "incidents")]
    pub expect_alerts: Option<PathBuf>,
    /// Also write an inventory of the corpus's IAM users and roles (`aws iam get-account-authorization-details`
    /// output, `<DIR>/<account>.json`), for `[inventory] files`: `report permissions` then works without AWS.
    #[arg(long, value_name = "DIR")]
    pub inventory: Option<PathBuf>,
}

pub fn command(args: &SynthArgs) -> anyhow::Result<ExitCode> {
    let SynthArgs {
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
    } = args;
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
