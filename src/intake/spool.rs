//! The spool intake: scans a directory (any depth) for CloudTrail files that have not been applied yet.
//!
//! Polling, not inotify: it works the same on bind mounts, network filesystems and container volumes, and a scan of
//! a spool costs one `stat` per file. A file is offered once it is older than `min_file_age`, so a copy in progress
//! is not read half-written; a file that was rejected is not offered again until its size or time changes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::config::SpoolConfig;
use crate::intake::layout::delivery_order;
use crate::pipeline::{Applied, FileJob, walk};

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
        let mut jobs: Vec<FileJob> = found
            .into_iter()
            .filter(|(path, meta)| {
                let modified = meta.modified().ok();
                let settled = modified.is_none_or(|m| now.duration_since(m).unwrap_or_default() >= self.min_file_age);
                settled && self.rejected.get(path) != Some(&(meta.len(), modified))
            })
            .map(|(path, meta)| FileJob::local(path, meta.len()))
            .filter(|job| !applied.contains(&job.key))
            .collect();
        jobs.sort_by(|a, b| delivery_order(&a.key.source).cmp(&delivery_order(&b.key.source)));
        Ok(jobs)
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
