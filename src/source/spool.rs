//! The spool source: scans a directory (any depth) for CloudTrail files that have not been applied yet.
//!
//! Polling, not inotify: it works the same on bind mounts, network filesystems and container volumes, and a scan of
//! a spool costs one `stat` per file. A file is offered once it is older than `min_file_age`, so a copy in progress
//! is not read half-written; a file that was rejected is not offered again until its size or time changes.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::config::SpoolConfig;
use crate::events::{InternalEvent, SpoolScanFailed};
use crate::metrics::Metrics;
use crate::shutdown::Listener;
use crate::source::local::{one_per_key_in_delivery_order, walk};
use crate::source::{Feed, Feedback, FileJob, Input, Probe, Source, Started};
use crate::store::Applied;

pub struct Spool {
    dir: PathBuf,
    min_file_age: Duration,
    /// Files that were offered and not applied, and when to offer them again.
    held: HashMap<PathBuf, Held>,
    /// Files fed to the pipeline and not yet committed or rejected: not offered twice.
    offered: HashSet<PathBuf>,
}

/// Why a file that was not applied waits.
#[derive(Debug, Clone, PartialEq)]
enum Held {
    /// Its bytes were bad: until its size or time changes.
    UntilChanged(u64, Option<SystemTime>),
    /// It could not be read (permissions, too many open files): read again at `at`, or as soon as it changes.
    Retry { at: SystemTime, failures: u32, size: u64, modified: Option<SystemTime> },
}

/// The longest wait before a file that could not be read is tried again.
const MAX_RETRY: Duration = Duration::from_secs(300);

impl Spool {
    pub fn new(config: &SpoolConfig) -> Spool {
        Spool {
            dir: config.dir.clone(),
            min_file_age: config.min_file_age,
            held: HashMap::new(),
            offered: HashSet::new(),
        }
    }

    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Files ready to apply, in the order to take them, and how many directories could not be read.
    pub fn scan(&self, applied: &Applied, now: SystemTime) -> std::io::Result<(Vec<FileJob>, u64)> {
        let mut found = Vec::new();
        let unreadable = walk(&self.dir, &mut found)?;
        let jobs: Vec<FileJob> = found
            .into_iter()
            .filter(|(path, meta)| {
                let modified = meta.modified().ok();
                let settled = modified.is_none_or(|m| now.duration_since(m).unwrap_or_default() >= self.min_file_age);
                let waiting = match self.held.get(path) {
                    None => false,
                    Some(Held::UntilChanged(size, time)) => (*size, *time) == (meta.len(), modified),
                    Some(Held::Retry { at, size, modified: time, .. }) => {
                        now < *at && (*size, *time) == (meta.len(), modified)
                    }
                };
                settled && !waiting && !self.offered.contains(path)
            })
            .map(|(path, meta)| FileJob::local(path, meta.len()))
            .filter(|job| !applied.contains(&job.key))
            .collect();
        // A CloudTrail file present twice (copied, or a directory moved while being scanned) is applied once.
        Ok((one_per_key_in_delivery_order(jobs), unreadable))
    }

    /// Records that `jobs` are in the pipeline's hands: later scans leave them out until their outcome is known.
    pub fn offer(&mut self, jobs: &[FileJob]) {
        self.offered.extend(jobs.iter().filter_map(|j| j.local_path().map(PathBuf::from)));
    }

    /// A file fed to the pipeline was committed: forgotten.
    pub fn applied(&mut self, job: &FileJob) {
        if let Some(path) = job.local_path() {
            self.offered.remove(path);
            self.held.remove(path);
        }
    }

    /// A file fed to the pipeline was rejected: if it could not be read (`may_heal`: permissions, too many open
    /// files) it is offered again after a backoff (1 s, doubling up to five minutes); if its bytes were bad, only
    /// once it changes.
    pub fn rejected(&mut self, job: &FileJob, may_heal: bool, now: SystemTime) {
        let Some(path) = job.local_path() else { return };
        self.offered.remove(path);
        let Ok(meta) = std::fs::metadata(path) else {
            self.held.remove(path);
            return;
        };
        let (size, modified) = (meta.len(), meta.modified().ok());
        let held = if may_heal {
            let failures = match self.held.get(path) {
                Some(Held::Retry { failures, .. }) => failures + 1,
                _ => 1,
            };
            let wait = Duration::from_secs(1 << (failures - 1).min(9)).min(MAX_RETRY);
            Held::Retry { at: now + wait, failures, size, modified }
        } else {
            Held::UntilChanged(size, modified)
        };
        self.held.insert(path.to_owned(), held);
    }

    /// A new run starts: nothing is in the pipeline's hands any more (a failed commit ended the last one), and
    /// files removed from the spool are forgotten.
    fn restart(&mut self) {
        self.offered.clear();
        self.forget_removed();
    }

    /// Forgets the files held back that are no longer in the spool, so that a daemon that sees many bad files come
    /// and go does not keep an entry for each.
    fn forget_removed(&mut self) {
        self.held.retain(|path, _| path.exists());
    }
}

/// `run` on a spool directory: scans every `scan_interval` and feeds what is new.
pub struct SpoolSource {
    spool: Arc<Mutex<Spool>>,
    applied: Arc<Applied>,
    scan_interval: Duration,
    metrics: Arc<Metrics>,
}

impl SpoolSource {
    pub fn new(config: &SpoolConfig, applied: Arc<Applied>, metrics: Arc<Metrics>) -> SpoolSource {
        SpoolSource {
            spool: Arc::new(Mutex::new(Spool::new(config))),
            applied,
            scan_interval: config.scan_interval,
            metrics,
        }
    }
}

/// The spool is plain data updated in short critical sections; a panic elsewhere does not corrupt it.
fn lock(spool: &Mutex<Spool>) -> std::sync::MutexGuard<'_, Spool> {
    spool.lock().unwrap_or_else(|e| e.into_inner())
}

impl Source for SpoolSource {
    fn start(&mut self, runtime: &tokio::runtime::Runtime, feed: Feed, stop: Listener) -> Started {
        lock(&self.spool).restart();
        let failed = Arc::new(AtomicBool::new(false));
        let (spool, applied, interval, metrics) =
            (Arc::clone(&self.spool), Arc::clone(&self.applied), self.scan_interval, Arc::clone(&self.metrics));
        let feeding = Arc::clone(&failed);
        let done = runtime.spawn(async move {
            // A failing scan (spool unmounted, permissions) is logged when it starts and when it ends, and retried.
            let mut scan_error: Option<String> = None;
            while !stop.is_requested() && !feeding.load(Ordering::SeqCst) {
                let scanning = Arc::clone(&spool);
                let applied = Arc::clone(&applied);
                let scanned = tokio::task::spawn_blocking(move || {
                    let mut spool = lock(&scanning);
                    spool.forget_removed();
                    spool.scan(&applied, SystemTime::now())
                })
                .await;
                match scanned {
                    Ok(Ok((jobs, unreadable_dirs))) => {
                        metrics.spool_unreadable_dirs.inc_by(unreadable_dirs);
                        if let Some(err) = scan_error.take() {
                            tracing::info!("spool {} is readable again (was: {err})", lock(&spool).dir().display());
                        }
                        lock(&spool).offer(&jobs);
                        for job in jobs {
                            if feed.send(Input { job, bytes: None, signature: None }).await.is_err() {
                                return;
                            }
                        }
                    }
                    Ok(Err(err)) => {
                        let err = err.to_string();
                        SpoolScanFailed { error: &err, previous: scan_error.as_deref() }.emit(&metrics);
                        scan_error = Some(err);
                    }
                    Err(err) => tracing::error!("spool scan: {err}"),
                }
                tokio::select! {
                    () = tokio::time::sleep(interval) => {}
                    () = stop.requested() => {}
                }
            }
        });
        Started {
            feedback: Box::new(SpoolFeedback { spool: Arc::clone(&self.spool), failed }),
            duplicates: 0,
            files: None,
            done,
        }
    }

    fn probe(&self) -> Probe {
        let dir = lock(&self.spool).dir().to_owned();
        Arc::new(move || {
            let dir = dir.clone();
            Box::pin(async move {
                tokio::task::spawn_blocking(move || {
                    std::fs::read_dir(&dir)
                        .map(|_| ())
                        .map_err(|e| format!("spool {}: {}", dir.display(), e.to_string().to_lowercase()))
                })
                .await
                .unwrap_or_else(|e| Err(e.to_string()))
            })
        })
    }

    fn describe(&self) -> String {
        format!("spool {}", lock(&self.spool).dir().display())
    }
}

/// The committer's view: what was committed is forgotten, what was rejected waits (see [`Spool::rejected`]).
struct SpoolFeedback {
    spool: Arc<Mutex<Spool>>,
    failed: Arc<AtomicBool>,
}

impl Feedback for SpoolFeedback {
    fn committed(&mut self, files: &[FileJob]) {
        let mut spool = lock(&self.spool);
        for job in files {
            spool.applied(job);
        }
    }

    fn rejected(&mut self, job: &FileJob, _reason: &'static str, may_heal: bool) {
        lock(&self.spool).rejected(job, may_heal, SystemTime::now());
    }

    fn commit_failed(&mut self) {
        self.failed.store(true, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file that could not be read (EACCES, EMFILE: it may heal, and `chmod` changes neither size nor time) is
    /// offered again after a backoff that doubles; a file whose bytes were bad waits until it changes.
    #[test]
    fn unreadable_files_are_retried_with_backoff_bad_ones_when_changed() {
        let dir = tempfile::tempdir().unwrap();
        let (unreadable, bad) = (dir.path().join("unreadable.json"), dir.path().join("bad.json"));
        std::fs::write(&unreadable, b"{}").unwrap();
        std::fs::write(&bad, b"not json").unwrap();
        let config =
            SpoolConfig { dir: dir.path().to_owned(), scan_interval: Duration::ZERO, min_file_age: Duration::ZERO };
        let mut spool = Spool::new(&config);
        let applied = Applied::default();
        let offered = |spool: &Spool, at: u64| -> Vec<String> {
            let now = SystemTime::now() + Duration::from_secs(at);
            let (jobs, _) = spool.scan(&applied, now).unwrap();
            let mut names: Vec<String> = jobs
                .iter()
                .map(|j| j.local_path().unwrap().file_name().unwrap().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        };
        let (jobs, _) = spool.scan(&applied, SystemTime::now()).unwrap();
        let start = SystemTime::now();
        let outcomes = |spool: &mut Spool, jobs: &[FileJob], at: SystemTime| {
            spool.offer(jobs);
            for job in jobs {
                spool.rejected(job, job.local_path() == Some(unreadable.as_path()), at);
            }
        };
        outcomes(&mut spool, &jobs, start);
        assert_eq!(offered(&spool, 0), Vec::<String>::new());
        assert_eq!(offered(&spool, 2), ["unreadable.json"], "retried after 1 s");
        let (jobs, _) = spool.scan(&applied, start + Duration::from_secs(2)).unwrap();
        outcomes(&mut spool, &jobs, start + Duration::from_secs(2));
        assert_eq!(offered(&spool, 3), Vec::<String>::new(), "the second failure waits 2 s");
        assert_eq!(offered(&spool, 5), ["unreadable.json"]);
        std::fs::write(&bad, b"{\"Records\": []}").unwrap();
        assert_eq!(offered(&spool, 5), ["bad.json", "unreadable.json"], "a bad file is offered once it changed");
    }

    /// A file held back (rejected) and then removed from the spool is forgotten by the next scan.
    #[test]
    fn held_files_removed_from_the_spool_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, b"not json").unwrap();
        let config =
            SpoolConfig { dir: dir.path().to_owned(), scan_interval: Duration::ZERO, min_file_age: Duration::ZERO };
        let mut spool = Spool::new(&config);
        let (jobs, _) = spool.scan(&Applied::default(), SystemTime::now()).unwrap();
        spool.offer(&jobs);
        spool.rejected(&jobs[0], false, SystemTime::now());
        assert_eq!(spool.held.len(), 1);
        std::fs::remove_file(&bad).unwrap();
        spool.forget_removed();
        assert!(spool.held.is_empty() && spool.offered.is_empty());
    }

    /// Two copies of one CloudTrail log file (a directory copied into the spool beside the original) are one job;
    /// other files are jobs by path, copies included.
    #[test]
    fn a_scan_offers_each_cloudtrail_file_once() {
        let dir = tempfile::tempdir().unwrap();
        let name = "111122223333_CloudTrail_us-east-1_20261001T0005Z_GwlTYz0jE1Oe1BMm.json.gz";
        for sub in ["a", "b"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
            std::fs::write(dir.path().join(sub).join(name), b"x").unwrap();
            std::fs::write(dir.path().join(sub).join("fixture.json"), b"x").unwrap();
        }
        let config =
            SpoolConfig { dir: dir.path().to_owned(), scan_interval: Duration::ZERO, min_file_age: Duration::ZERO };
        let (jobs, _) = Spool::new(&config).scan(&Applied::default(), SystemTime::now()).unwrap();
        let mut sources: Vec<&str> = jobs.iter().map(|j| j.key.source.as_str()).collect();
        sources.sort_unstable();
        assert_eq!(sources.len(), 3, "{sources:?}");
        assert_eq!(sources[0], format!("cloudtrail:{name}"));
        assert!(sources[1..].iter().all(|s| s.starts_with("file:") && s.ends_with("/fixture.json")), "{sources:?}");
    }
}
