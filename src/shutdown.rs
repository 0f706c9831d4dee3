//! The one shutdown: a signal every task watches, in stages, and completion known when the tasks' handles drop.
//!
//! As in mini-redis, each task holds a [`Listener`] for as long as it runs: it watches the signal through it, and
//! dropping it (the task ending) is how the owner of the [`Shutdown`] learns that the task is done, with no
//! polling. The signal is one value that only goes up, through the [`Stage`]s in the order they are declared, so
//! that the order in which a daemon stops is written once: [`Shutdown::finish`] raises it to a stage and waits for
//! that stage's listeners.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What stops, in this order: each stage is asked to stop once the stages before it have finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// Sources stop taking input; the pipeline finishes the files in hand and commits them.
    Intake = 1,
    /// Deliverers finish the pass in progress; what is left stays pending in the outbox.
    Delivery = 2,
    /// Periodic tasks (findings, retention, gauges, the log summary, inventory refresh).
    Background = 3,
    /// The HTTP listener, last, so that `/metrics` and `/readyz` answer while the rest drains.
    Serving = 4,
}

/// Owned by whoever runs the tasks (the daemon, replay): hands out listeners, raises the signal, and waits.
pub struct Shutdown {
    signal: Arc<tokio::sync::watch::Sender<u8>>,
    live: Arc<Live>,
}

/// The listeners alive, by stage, with a name to report one that does not finish in time.
#[derive(Default)]
struct Live {
    listeners: Mutex<Listeners>,
    changed: tokio::sync::Notify,
}

#[derive(Default)]
struct Listeners {
    last_id: u64,
    alive: BTreeMap<u64, (Stage, String)>,
}

impl Live {
    fn listeners(&self) -> std::sync::MutexGuard<'_, Listeners> {
        self.listeners.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn register(self: &Arc<Live>, stage: Stage, name: String) -> Token {
        let mut listeners = self.listeners();
        listeners.last_id += 1;
        let id = listeners.last_id;
        listeners.alive.insert(id, (stage, name));
        Token { id, live: Arc::clone(self) }
    }
}

/// A task's view of the shutdown: whether its stage has been asked to stop, and, by being dropped, that it has.
pub struct Listener {
    signal: tokio::sync::watch::Receiver<u8>,
    stage: Stage,
    /// Held, not read: dropping it tells the [`Shutdown`] this task has finished.
    _token: Token,
}

/// Removes its listener from [`Live`] when dropped.
struct Token {
    id: u64,
    live: Arc<Live>,
}

/// Asks for the shutdown from anywhere (a signal handler, a test): the first stage, [`Stage::Intake`], starts.
#[derive(Clone)]
pub struct Trigger(Arc<tokio::sync::watch::Sender<u8>>);

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::new()
    }
}

impl Shutdown {
    pub fn new() -> Shutdown {
        Shutdown { signal: Arc::new(tokio::sync::watch::Sender::new(0)), live: Arc::default() }
    }

    /// A listener for a task of `stage`; `name` says what the task is, should it outlive its grace.
    pub fn listener(&self, stage: Stage, name: impl Into<String>) -> Listener {
        Listener { signal: self.signal.subscribe(), stage, _token: self.live.register(stage, name.into()) }
    }

    pub fn trigger(&self) -> Trigger {
        Trigger(Arc::clone(&self.signal))
    }

    /// Whether the shutdown has been asked for.
    pub fn is_requested(&self) -> bool {
        *self.signal.borrow() >= Stage::Intake as u8
    }

    /// Resolves once the shutdown has been asked for.
    pub async fn requested(&self) {
        let mut signal = self.signal.subscribe();
        let _ = signal.wait_for(|s| *s >= Stage::Intake as u8).await;
    }

    /// Asks `stage` (and any stage before it still running) to stop, and waits until its listeners are gone, for
    /// at most `grace`; returns the names of those still running then (their tasks are left to the runtime's
    /// shutdown).
    pub async fn finish(&self, stage: Stage, grace: Duration) -> Vec<String> {
        self.signal.send_modify(|s| *s = (*s).max(stage as u8));
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let changed = self.live.changed.notified();
            let left: Vec<String> = self
                .live
                .listeners()
                .alive
                .values()
                .filter(|(s, _)| *s <= stage)
                .map(|(_, name)| name.clone())
                .collect();
            if left.is_empty() {
                return left;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return left;
            }
        }
    }
}

impl Trigger {
    pub fn request(&self) {
        self.0.send_modify(|s| *s = (*s).max(Stage::Intake as u8));
    }
}

impl Listener {
    /// Whether this listener's stage has been asked to stop.
    pub fn is_requested(&self) -> bool {
        *self.signal.borrow() >= self.stage as u8
    }

    /// Resolves once this listener's stage has been asked to stop.
    pub async fn requested(&self) {
        let mut signal = self.signal.clone();
        let stage = self.stage as u8;
        let _ = signal.wait_for(|s| *s >= stage).await;
    }
}

impl Drop for Token {
    fn drop(&mut self) {
        self.live.listeners().alive.remove(&self.id);
        self.live.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stages stop in order: a later stage's tasks keep running while an earlier stage finishes, and a stage is
    /// finished exactly when its listeners have been dropped.
    #[test]
    fn stages_stop_in_order_and_finish_when_their_listeners_drop() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let shutdown = Shutdown::new();
        let intake = shutdown.listener(Stage::Intake, "intake");
        let serving = shutdown.listener(Stage::Serving, "http");
        assert!(!intake.is_requested() && !shutdown.is_requested());
        shutdown.trigger().request();
        assert!(intake.is_requested() && !serving.is_requested() && shutdown.is_requested());
        let fetch = shutdown.listener(Stage::Intake, "fetch");
        drop(intake);
        // Another task of the stage still runs: the stage is not finished, and says who is left.
        let left = runtime.block_on(shutdown.finish(Stage::Intake, Duration::from_millis(20)));
        assert_eq!(left, ["fetch"]);
        assert!(!serving.is_requested());
        let waiting = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            drop(fetch);
        });
        let left = runtime.block_on(shutdown.finish(Stage::Intake, Duration::from_secs(60)));
        assert!(left.is_empty());
        waiting.join().unwrap();
        // A later stage is asked only when finished; its listener sees it.
        assert!(!serving.is_requested());
        let http = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(serving.requested());
        });
        let left = runtime.block_on(shutdown.finish(Stage::Serving, Duration::from_secs(60)));
        assert!(left.is_empty(), "{left:?}");
        http.join().unwrap();
    }
}
