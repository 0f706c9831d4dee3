//! `trailwatch inventory fetch`: the IAM inventory from the API into the state (and files).

use std::process::ExitCode;

#[cfg(feature = "iam")]
use anyhow::Context;
#[cfg(feature = "iam")]
use trailwatch::store::Store;
#[cfg(feature = "iam")]
use trailwatch::time;

use crate::Cli;
#[cfg(feature = "iam")]
use crate::load_config;

#[cfg(feature = "iam")]
pub fn fetch(cli: &Cli, out: Option<&std::path::Path>) -> anyhow::Result<ExitCode> {
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
pub fn fetch(_: &Cli, _: Option<&std::path::Path>) -> anyhow::Result<ExitCode> {
    anyhow::bail!("this build has no IAM support (cargo feature `iam`); use `[inventory] files`")
}
