//! `trailwatch run`, and the crash-loop guard's hidden `probe-file` trial.

use std::path::PathBuf;
use std::sync::Arc;

use trailwatch::config::Config;
use trailwatch::detect::ruleset::RuleSet;
use trailwatch::pipeline;
use trailwatch::source::backfill;

/// `probe-file`: reads one file through a worker as a run would (decode, parse, state fold, rules), keeping
/// nothing. Whether the file is applied or rejected does not matter, only that reading it ends.
pub fn probe_file(config: &Config, location: &str) -> anyhow::Result<()> {
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
            worker.process_fetched(&job, fetched.bytes, fetched.signature.as_deref(), config.limits, &mut folded)
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
