//! The spool intake: scans a directory (any depth) for CloudTrail files that have not been applied yet.
//!
//! Polling, not inotify: it works the same on bind mounts, network filesystems and container volumes, and a scan of
//! a spool costs one `stat` per file. A file is offered once it is older than `min_file_age`, so a copy in progress
//! is not read half-written; a file that was rejected is not offered again until its size or time changes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::config::SpoolConfig;
use crate::pipeline::{Applied, FileJob, one_per_key_in_delivery_order, walk};

pub struct Spool {
    dir: PathBuf,
    min_file_age: Duration,
    /// Files that were offered and not applied, with the size and time they had then.
    rejected: HashMap<PathBuf, (u64, Option<SystemTime>)>,
}

impl Spool {
    pub fn new(config: &SpoolConfig) -> Spool {
        Spool { dir: config.dir.clone(), min_file_age: config.min_file_age, rejected: HashMap::new() }
    }

    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Files ready to apply, sorted by path.
    pub fn scan(&self, applied: &Applied, now: SystemTime) -> std::io::Result<Vec<FileJob>> {
        let mut found = Vec::new();
        walk(&self.dir, &mut found)?;
        let jobs: Vec<FileJob> = found
            .into_iter()
            .filter(|(path, meta)| {
                let modified = meta.modified().ok();
                let settled = modified.is_none_or(|m| now.duration_since(m).unwrap_or_default() >= self.min_file_age);
                settled && self.rejected.get(path) != Some(&(meta.len(), modified))
            })
            .map(|(path, meta)| FileJob::local(path, meta.len()))
            .filter(|job| !applied.contains(&job.key))
            .collect();
        // A CloudTrail file present twice (copied, or a directory moved while being scanned) is applied once.
        Ok(one_per_key_in_delivery_order(jobs))
    }

    /// Remembers the offered jobs that were not applied, so they are not read again while unchanged.
    pub fn note_unapplied(&mut self, jobs: &[FileJob], applied: &Applied) {
        for path in jobs.iter().filter(|j| !applied.contains(&j.key)).filter_map(FileJob::local_path) {
            if let Ok(meta) = std::fs::metadata(path) {
                self.rejected.insert(path.to_owned(), (meta.len(), meta.modified().ok()));
            }
        }
        // Forget files that were removed from the spool.
        self.rejected.retain(|path, _| path.exists());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let jobs = Spool::new(&config).scan(&Applied::default(), SystemTime::now()).unwrap();
        let mut sources: Vec<&str> = jobs.iter().map(|j| j.key.source.as_str()).collect();
        sources.sort_unstable();
        assert_eq!(sources.len(), 3, "{sources:?}");
        assert_eq!(sources[0], format!("cloudtrail:{name}"));
        assert!(sources[1..].iter().all(|s| s.starts_with("file:") && s.ends_with("/fixture.json")), "{sources:?}");
    }
}
