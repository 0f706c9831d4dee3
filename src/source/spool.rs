//! The spool intake: scans a directory (any depth) for CloudTrail files that have not been applied yet.
//!
//! Polling, not inotify: it works the same on bind mounts, network filesystems and container volumes, and a scan of
//! a spool costs one `stat` per file. A file is offered once it is older than `min_file_age`, so a copy in progress
//! is not read half-written; a file that was rejected is not offered again until its size or time changes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::config::SpoolConfig;
use crate::pipeline::{FileError, Observer};
use crate::source::FileJob;
use crate::source::local::one_per_key_in_delivery_order;
use crate::source::local::walk;
use crate::store::Applied;

pub struct Spool {
    dir: PathBuf,
    min_file_age: Duration,
    /// Files that were offered and not applied, and when to offer them again.
    held: HashMap<PathBuf, Held>,
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
        Spool { dir: config.dir.clone(), min_file_age: config.min_file_age, held: HashMap::new() }
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
                settled && !waiting
            })
            .map(|(path, meta)| FileJob::local(path, meta.len()))
            .filter(|job| !applied.contains(&job.key))
            .collect();
        // A CloudTrail file present twice (copied, or a directory moved while being scanned) is applied once.
        Ok((one_per_key_in_delivery_order(jobs), unreadable))
    }

    /// Remembers the offered jobs that were not applied: those that could not be read (`unreadable`, see
    /// [`Unreadable`]) are tried again after a backoff (the scan interval, doubling up to five minutes), the
    /// others only once they change.
    pub fn note_unapplied(&mut self, jobs: &[FileJob], applied: &Applied, unreadable: &Unreadable, now: SystemTime) {
        for path in jobs.iter().filter(|j| !applied.contains(&j.key)).filter_map(FileJob::local_path) {
            let Ok(meta) = std::fs::metadata(path) else { continue };
            let (size, modified) = (meta.len(), meta.modified().ok());
            let held = match unreadable.0.contains(&path.to_path_buf()) {
                true => {
                    let failures = match self.held.get(path) {
                        Some(Held::Retry { failures, .. }) => failures + 1,
                        _ => 1,
                    };
                    let wait = Duration::from_secs(1 << (failures - 1).min(9)).min(MAX_RETRY);
                    Held::Retry { at: now + wait, failures, size, modified }
                }
                false => Held::UntilChanged(size, modified),
            };
            self.held.insert(path.to_owned(), held);
        }
        // Forget files that were applied or removed from the spool.
        let done: Vec<PathBuf> = jobs
            .iter()
            .filter(|j| applied.contains(&j.key))
            .filter_map(|j| j.local_path().map(PathBuf::from))
            .collect();
        self.held.retain(|path, _| path.exists() && !done.contains(path));
    }
}

/// The files of a run that could not be read (as opposed to read and found bad): what may heal and is tried again.
#[derive(Debug, Default)]
pub struct Unreadable(Vec<PathBuf>);

impl Observer for Unreadable {
    fn rejected(&mut self, job: &FileJob, error: &FileError) {
        if let (FileError::Read { .. }, Some(path)) = (error, job.local_path()) {
            self.0.push(path.to_owned());
        }
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
        let failed = Unreadable(vec![unreadable.clone()]);
        let start = SystemTime::now();
        spool.note_unapplied(&jobs, &applied, &failed, start);
        assert_eq!(offered(&spool, 0), Vec::<String>::new());
        assert_eq!(offered(&spool, 2), ["unreadable.json"], "retried after 1 s");
        let (jobs, _) = spool.scan(&applied, start + Duration::from_secs(2)).unwrap();
        spool.note_unapplied(&jobs, &applied, &failed, start + Duration::from_secs(2));
        assert_eq!(offered(&spool, 3), Vec::<String>::new(), "the second failure waits 2 s");
        assert_eq!(offered(&spool, 5), ["unreadable.json"]);
        std::fs::write(&bad, b"{\"Records\": []}").unwrap();
        assert_eq!(offered(&spool, 5), ["bad.json", "unreadable.json"], "a bad file is offered once it changed");
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
