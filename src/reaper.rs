//! Freeing large values off the thread that used them: a committed batch's delta and alerts are dropped on a
//! background thread, so that the serial committer does not spend its time in the allocator.
//!
//! The channel is bounded: a committer that outruns the reaper waits for it instead of growing memory. Values still
//! queued when the process exits are never dropped, which the OS makes free.

use std::sync::OnceLock;
use std::sync::mpsc::{SyncSender, sync_channel};

type Garbage = Box<dyn Send>;

static REAPER: OnceLock<Option<SyncSender<Garbage>>> = OnceLock::new();

/// Drops `value` on the reaper thread (or here, if that thread cannot be started).
pub fn drop_later<T: Send + 'static>(value: T) {
    let reaper = REAPER.get_or_init(|| {
        let (tx, rx) = sync_channel::<Garbage>(2);
        let spawned = std::thread::Builder::new().name("tw-reaper".into()).spawn(move || {
            for garbage in rx {
                drop(garbage);
            }
        });
        spawned.ok().map(|_| tx)
    });
    if let Some(tx) = reaper
        && let Err(unsent) = tx.send(Box::new(value))
    {
        drop(unsent.0);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Counted(Arc<AtomicUsize>);

    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn values_are_dropped_on_another_thread() {
        let dropped = Arc::new(AtomicUsize::new(0));
        for _ in 0..10 {
            super::drop_later(Counted(Arc::clone(&dropped)));
        }
        // The channel holds at most two, so after ten sends at least eight have been dropped; a marker value sent
        // last is dropped after all of them (the reaper drops in order).
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        super::drop_later(tx);
        let _ = rx.recv();
        assert_eq!(dropped.load(Ordering::SeqCst), 10);
    }
}
