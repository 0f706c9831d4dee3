//! `trailwatch alerts test`: one test alert sent to one configured sink.

use std::io::Write;
use std::process::ExitCode;

use trailwatch::time;

use crate::{Cli, load_config, usage};

pub fn test(cli: &Cli, sink: &str) -> anyhow::Result<ExitCode> {
    let config = load_config(cli)?;
    let Some(sink_config) = config.alerts.sinks.iter().find(|s| s.name == sink) else {
        let names: Vec<&str> = config.alerts.sinks.iter().map(|s| s.name.as_str()).collect();
        return Err(usage(format!("`alerts test`: no sink named `{sink}` (configured: {})", names.join(", "))));
    };
    let alert = trailwatch::alert::test_alert(time::now());
    let sink = trailwatch::alert::sink::Sink::new(sink_config.clone());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(sink.send(&alert))?;
    writeln!(std::io::stdout(), "sent test alert {} to {} ({})", alert.id, sink.name(), sink.config.kind.as_str())?;
    Ok(ExitCode::SUCCESS)
}
