//! The crash-loop guard: which files the workers had in hand when the process died, so that one file that kills
//! the process (an abort, the kernel's OOM killer, a bug) does not kill it again at every restart.
//!
//! Each worker writes the file it starts into its own slot beside the state file (`<state>.inflight/worker-<n>`;
//! one small write per file, never synced: a process crash does not lose the page cache), and empties the slot
//! when it stops. At the next start, before anything else, the files left in slots and not in the ledger are the
//! suspects, and each is read once on trial in a separate process (`trailwatch probe-file`, the same code on the
//! same configuration, applying nothing). A suspect that kills its trial is the culprit: it is quarantined (kept
//! in the state's `quarantine` table and skipped from then on, as an applied file is), and the daemon does not die
//! on it again. The files that happened to be in the other workers' hands survive their trials and are applied as
//! usual.

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::source::FileJob;
use crate::source::Location;
use crate::store::LedgerKey;

/// The slots of a state file's workers.
pub struct InFlight {
    dir: PathBuf,
}

/// A file that was in a worker's hands when the process died.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Suspect {
    pub source: String,
    pub version: String,
    /// A local path, or `s3://bucket/key`.
    pub location: String,
}

impl Suspect {
    pub fn key(&self) -> LedgerKey {
        LedgerKey { source: self.source.clone(), version: self.version.clone() }
    }

    /// The file as a job again.
    pub fn job(&self) -> FileJob {
        let location = match self.location.strip_prefix("s3://").and_then(|rest| rest.split_once('/')) {
            Some((bucket, key)) => Location::S3 { bucket: bucket.to_owned(), key: key.to_owned() },
            None => Location::Local(PathBuf::from(&self.location)),
        };
        FileJob { key: self.key(), location }
    }
}

impl InFlight {
    /// The slots beside `state` (created if missing).
    pub fn open(state: &Path) -> std::io::Result<InFlight> {
        let mut dir = state.as_os_str().to_owned();
        dir.push(".inflight");
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir)?;
        Ok(InFlight { dir })
    }

    /// What the slots hold, emptying them: the files in hand when the last process using this state died (none
    /// after a clean stop). A slot that cannot be read says nothing.
    pub fn take_suspects(&self) -> std::io::Result<Vec<Suspect>> {
        let mut suspects = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let Ok(text) = std::fs::read_to_string(&path) else { continue };
            if let Some(suspect) = text.lines().next().and_then(|line| serde_json::from_str::<Suspect>(line).ok()) {
                suspects.push(suspect);
            }
            std::fs::File::create(&path)?;
        }
        suspects.sort_by(|a, b| (&a.source, &a.version).cmp(&(&b.source, &b.version)));
        suspects.dedup_by(|a, b| a.key() == b.key());
        Ok(suspects)
    }

    /// Worker `n`'s slot.
    pub fn slot(&self, n: usize) -> std::io::Result<Slot> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(self.dir.join(format!("worker-{n}")))?;
        Ok(Slot { file, line: Vec::with_capacity(256) })
    }
}

/// One worker's record of the file in its hands.
pub struct Slot {
    file: std::fs::File,
    line: Vec<u8>,
}

impl Slot {
    /// Records `job` as in hand (one write, over the previous record: readers take the first line).
    pub fn start(&mut self, job: &FileJob) {
        let suspect = Suspect {
            source: job.key.source.clone(),
            version: job.key.version.clone(),
            location: job.location.to_string(),
        };
        self.line.clear();
        // A string in JSON has no raw newline, so the record is the first line whatever was there before.
        if serde_json::to_writer(&mut self.line, &suspect).is_ok() && self.line.write_all(b"\n").is_ok() {
            // Best effort: a slot that cannot be written only weakens the guard.
            let _ = self.file.write_all_at(&self.line, 0);
        }
    }
}

impl Drop for Slot {
    /// A worker that stops (its run ended, or it is unwinding from a panic the run reports) has nothing in hand.
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
    }
}

/// How a suspect's trial read ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trial {
    /// Read (applied or found bad, either way) without dying.
    Survived,
    /// The trial process died reading it (how: `signal 6`, `exit code 134`).
    Died(String),
    /// The trial could not be run; the suspect is left to be read as usual.
    NotRun(String),
}

/// Before anything else runs: each file a crash left in a worker's hands and not in the ledger is tried in a
/// separate process (`trial`), and one that kills its trial is quarantined and added to `applied`, so that nothing
/// reads it again. Returns how many were quarantined.
pub fn recover(
    inflight: &InFlight,
    store: &crate::store::Store,
    applied: &crate::store::Applied,
    trial: &dyn Fn(&Suspect) -> Trial,
) -> Result<u64, crate::store::StoreError> {
    let suspects = match inflight.take_suspects() {
        Ok(suspects) => suspects,
        Err(err) => {
            tracing::warn!("the crash-loop guard's slots cannot be read: {}", err.to_string().to_lowercase());
            return Ok(0);
        }
    };
    let mut quarantined = 0;
    for suspect in suspects.iter().filter(|s| !applied.contains(&s.key())) {
        tracing::warn!(file = %suspect.location, "this file was being read when the process last stopped: trying it apart first");
        match trial(suspect) {
            Trial::Survived => tracing::info!(file = %suspect.location, "read apart without harm; it is read as usual"),
            Trial::NotRun(why) => {
                tracing::warn!(file = %suspect.location, "could not try it apart ({why}); it is read as usual")
            }
            Trial::Died(how) => {
                store.quarantine(&suspect.key(), &suspect.location, crate::time::now())?;
                applied.insert(suspect.key());
                quarantined += 1;
                tracing::error!(
                    file = %suspect.location,
                    "quarantined: reading it killed the process ({how}); it is skipped from now on \
                     (delete its row from the state's quarantine table to try it again)"
                );
            }
        }
    }
    Ok(quarantined)
}

/// The crash-loop guard for a writer of the state at `state_path`: the files a crash left in hand are tried (and
/// a culprit quarantined), then the workers record theirs in the slots returned. Without its slots (a read-only
/// directory, say) a run is unguarded, and says so.
pub fn guard(
    state_path: &Path,
    store: &crate::store::Store,
    applied: &crate::store::Applied,
    trial: &dyn Fn(&Suspect) -> Trial,
) -> Result<Option<InFlight>, crate::store::StoreError> {
    match InFlight::open(state_path) {
        Ok(inflight) => {
            recover(&inflight, store, applied, trial)?;
            Ok(Some(inflight))
        }
        Err(err) => {
            tracing::warn!("no crash-loop guard: {}", err.to_string().to_lowercase());
            Ok(None)
        }
    }
}

/// Runs a trial as `trailwatch [--config FILE] probe-file LOCATION`: this same executable and configuration, in a
/// process of its own, given `timeout` (a trial that takes longer is stopped and counts as not run).
pub fn trial_in_child(config: Option<&Path>, timeout: std::time::Duration) -> impl Fn(&Suspect) -> Trial {
    let config = config.map(Path::to_owned);
    move |suspect: &Suspect| {
        let exe = match std::env::current_exe() {
            Ok(exe) => exe,
            Err(err) => return Trial::NotRun(format!("no executable: {err}")),
        };
        let mut command = std::process::Command::new(exe);
        if let Some(config) = &config {
            command.arg("--config").arg(config);
        }
        command
            .args(["probe-file", &suspect.location])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(err) => return Trial::NotRun(format!("cannot start it: {err}")),
        };
        let deadline = std::time::Instant::now() + timeout;
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => return Trial::Survived,
                Ok(Some(status)) => {
                    use std::os::unix::process::ExitStatusExt;
                    return match (status.signal(), status.code()) {
                        // An abort, the OOM killer, a segmentation fault.
                        (Some(signal), _) => Trial::Died(format!("signal {signal}")),
                        // Rust's exit code for a panic that reached the top.
                        (None, Some(101)) => Trial::Died("a panic".into()),
                        // A refused configuration, an object that could not be fetched: nothing about the file.
                        (None, code) => Trial::NotRun(format!("the trial exited with code {}", code.unwrap_or(-1))),
                    };
                }
                Ok(None) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Trial::NotRun(format!("still running after {} s", timeout.as_secs()));
                }
                Err(err) => return Trial::NotRun(err.to_string()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Slots left behind name their files once; a slot emptied by its worker names none; a job survives the round
    /// trip, local or S3, with its key.
    #[test]
    fn slots_left_behind_are_the_suspects() {
        let dir = tempfile::tempdir().unwrap();
        let inflight = InFlight::open(&dir.path().join("s.db")).unwrap();
        let local = FileJob::local(dir.path().join("a\nb.json"), 3);
        let s3 = FileJob::s3("trail", "AWSLogs/1/CloudTrail/x.json.gz", "etag");
        let mut first = inflight.slot(0).unwrap();
        first.start(&FileJob::local(dir.path().join("a-much-longer-name-written-first.json"), 9));
        first.start(&local);
        let mut second = inflight.slot(1).unwrap();
        second.start(&s3);
        let mut third = inflight.slot(2).unwrap();
        third.start(&FileJob::local(dir.path().join("done.json"), 1));
        drop(third);
        // The process dies here: `first` and `second` are never dropped.
        std::mem::forget((first, second));
        let suspects = inflight.take_suspects().unwrap();
        let jobs: Vec<FileJob> = suspects.iter().map(Suspect::job).collect();
        let mut want = vec![local, s3];
        want.sort_by(|a, b| a.key.cmp(&b.key));
        assert_eq!(jobs, want);
        assert_eq!(inflight.take_suspects().unwrap(), Vec::new(), "taken once");
    }

    /// A suspect that kills its trial is quarantined and skipped from then on (also by a later process); one that
    /// survives, or whose trial could not run, is left to be read; one already applied is not tried at all.
    #[test]
    fn a_suspect_that_kills_its_trial_is_quarantined() {
        use crate::config::Synchronous;
        use crate::store::Applied;
        use crate::store::Store;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("s.db");
        let store = Store::open(&state, Synchronous::Normal).unwrap();
        let inflight = InFlight::open(&state).unwrap();
        let jobs: Vec<FileJob> =
            ["poison", "innocent", "untried", "applied"].iter().map(|n| FileJob::s3("b", n, "e")).collect();
        for (n, job) in jobs.iter().enumerate() {
            let mut slot = inflight.slot(n).unwrap();
            slot.start(job);
            std::mem::forget(slot);
        }
        let applied = Applied::default();
        applied.insert(jobs[3].key.clone());
        let tried = std::cell::RefCell::new(Vec::new());
        let trial = |suspect: &Suspect| {
            tried.borrow_mut().push(suspect.location.clone());
            match suspect.location.as_str() {
                "s3://b/poison" => Trial::Died("signal 6".into()),
                "s3://b/innocent" => Trial::Survived,
                _ => Trial::NotRun("timeout".into()),
            }
        };
        assert_eq!(recover(&inflight, &store, &applied, &trial).unwrap(), 1);
        assert_eq!(tried.into_inner(), ["s3://b/innocent", "s3://b/poison", "s3://b/untried"]);
        let skipped: Vec<bool> = jobs.iter().map(|j| applied.contains(&j.key)).collect();
        assert_eq!(skipped, [true, false, false, true]);
        assert_eq!(store.quarantined_keys().unwrap(), [jobs[0].key.clone()]);
        drop(store);
        let store = Store::open(&state, Synchronous::Normal).unwrap();
        assert!(Applied::load(&store).unwrap().contains(&jobs[0].key), "skipped by the next process too");
    }
}
