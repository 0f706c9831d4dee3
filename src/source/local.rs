//! Local paths as a source: the files under directories and paths, listed once, in delivery order.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::layout::delivery_order;
use crate::shutdown::Listener;
use crate::source::{Feed, FileJob, Input, NoFeedback, Probe, Source, Started, always_ready};
use crate::store::Applied;

/// `replay PATH…`: files listed once, fed in delivery order; those already applied are skipped unread.
pub struct LocalFiles {
    jobs: Vec<FileJob>,
    listed: usize,
    applied: Arc<Applied>,
}

impl LocalFiles {
    pub fn new(jobs: Vec<FileJob>, applied: Arc<Applied>) -> LocalFiles {
        LocalFiles { listed: jobs.len(), jobs, applied }
    }
}

impl Source for LocalFiles {
    fn start(&mut self, runtime: &tokio::runtime::Runtime, feed: Feed, stop: Listener) -> Started {
        let total = self.jobs.len();
        // `discover` lists each file once, so after this filter no job can be applied twice in a run.
        let pending: Vec<FileJob> =
            std::mem::take(&mut self.jobs).into_iter().filter(|j| !self.applied.contains(&j.key)).collect();
        let (duplicates, files) = ((total - pending.len()) as u64, pending.len());
        let done = runtime.spawn(async move {
            for job in pending {
                if stop.is_requested() || feed.send(Input { job, bytes: None, signature: None }).await.is_err() {
                    return;
                }
            }
        });
        Started { feedback: Box::new(NoFeedback), duplicates, files: Some(files), done }
    }

    /// Paths cost nothing to hold: the whole listing may wait (up to a bound), so that no worker waits for the
    /// feeding task to be scheduled.
    fn input_capacity(&self, threads: usize) -> usize {
        (threads * 2).max(self.jobs.len().min(4096)).max(1)
    }

    fn probe(&self) -> Probe {
        always_ready()
    }

    fn describe(&self) -> String {
        format!("{} local files", self.listed)
    }
}

/// Lists the files under `paths` (recursively), sorted, as ledger-keyed jobs.
///
/// Inside directories only `*.json` and `*.gz` files are taken (CloudTrail writes `.json.gz`), skipping hidden and
/// partial (`.tmp`, `.part`) files, so licences and READMEs next to logs are not reported as bad files. A file named
/// explicitly is always taken: its format is decided by its bytes.
pub fn discover(paths: &[PathBuf]) -> Result<Vec<FileJob>, std::io::Error> {
    let mut files = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|e| {
            std::io::Error::new(e.kind(), format!("{}: {}", path.display(), e.to_string().to_lowercase()))
        })?;
        if meta.is_dir() {
            walk(path, &mut files)?;
        } else if meta.is_file() {
            files.push((path.clone(), meta));
        } else {
            // A FIFO or a device would block a worker or never end.
            let problem = format!("{}: not a regular file or a directory", path.display());
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, problem));
        }
    }
    Ok(one_per_key_in_delivery_order(files.into_iter().map(|(path, meta)| FileJob::local(path, meta.len())).collect()))
}

/// `jobs` with one job per ledger key (a file named twice, or a CloudTrail file present under two paths: one batch
/// must never hold a key twice, or the ledger's primary key refuses it), in the order a run takes them
/// ([`delivery_order`]).
pub fn one_per_key_in_delivery_order(mut jobs: Vec<FileJob>) -> Vec<FileJob> {
    jobs.sort_by(|a, b| a.key.cmp(&b.key));
    jobs.dedup_by(|a, b| a.key == b.key);
    jobs.sort_by(|a, b| delivery_order(&a.key.source).cmp(&delivery_order(&b.key.source)));
    jobs
}

/// Whether a name inside a scanned directory looks like a log file that is complete.
pub fn is_candidate_name(name: &str) -> bool {
    !name.starts_with('.')
        && !name.ends_with(".tmp")
        && !name.ends_with(".part")
        && (name.ends_with(".json") || name.ends_with(".gz"))
}

/// Collects candidate files under `dir`, at any depth, with their metadata; returns how many directories below it
/// could not be read.
///
/// Only an unreadable `dir` itself is an error; an unreadable directory below it is skipped (logged, rate-limited:
/// a spool is scanned every second), so one bad subdirectory does not hide the rest of the tree.
pub fn walk(dir: &Path, out: &mut Vec<(PathBuf, std::fs::Metadata)>) -> Result<u64, std::io::Error> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {}", dir.display(), e.to_string().to_lowercase())))?;
    let mut unreadable = 0;
    walk_entries(entries, out, &mut unreadable);
    Ok(unreadable)
}

fn walk_entries(entries: std::fs::ReadDir, out: &mut Vec<(PathBuf, std::fs::Metadata)>, unreadable: &mut u64) {
    for entry in entries {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let Ok(meta) = entry.metadata() else { continue };
        let path = entry.path();
        if meta.is_dir() {
            if name.starts_with('.') {
                continue;
            }
            match std::fs::read_dir(&path) {
                Ok(sub) => walk_entries(sub, out, unreadable),
                Err(err) => {
                    *unreadable += 1;
                    if crate::logs::allow("unreadable_directory") {
                        tracing::warn!(
                            "skipping unreadable directory {}: {}",
                            path.display(),
                            err.to_string().to_lowercase()
                        );
                    }
                }
            }
        } else if meta.is_file() && is_candidate_name(&name) {
            out.push((path, meta));
        }
    }
}
