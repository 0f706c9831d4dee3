//! `trailwatch serve`: the explorer, the API and `/metrics` over an existing state file, ingesting nothing.

use std::io::Write;
use std::process::ExitCode;

use trailwatch::config::ConfigErrors;

use crate::{Cli, load_config};

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (default: `http.listen`); port 0 picks a free one, printed on start.
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
}

pub fn command(cli: &Cli, args: &ServeArgs) -> anyhow::Result<ExitCode> {
    let mut config = load_config(cli)?;
    if let Some(listen) = &args.listen {
        let addr: std::net::SocketAddr = listen.parse().map_err(|_| ConfigErrors {
            source_name: "(command line)".into(),
            problems: vec![format!("`--listen`: `{listen}` is not an address such as 127.0.0.1:9898")],
        })?;
        // The rule the configuration applies to `http.listen`: pages and API beyond loopback need a token.
        if !addr.ip().is_loopback() && config.api_token.is_none() {
            return Err(ConfigErrors {
                source_name: "(command line)".into(),
                problems: vec![format!(
                    "`--listen`: `{addr}` is not a loopback address, so the pages and the API need a token: set \
                     `http.api_token` or TRAILWATCH_API_TOKEN"
                )],
            }
            .into());
        }
        config.http_listen = addr;
    }
    if !config.store_path.exists() {
        anyhow::bail!(
            "{}: no state file: apply some CloudTrail files first (`trailwatch replay <path>`)",
            config.store_path.display()
        );
    }
    trailwatch::daemon::serve_state(&config, &|addr| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "serving {} read-only on http://{addr}/", config.store_path.display());
        let _ = out.flush();
    })?;
    Ok(ExitCode::SUCCESS)
}
