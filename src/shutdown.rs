//! The stop signal that tasks wait on.

use std::sync::Arc;

/// A stop signal that any number of tasks can wait on.
#[derive(Clone)]
pub struct Stop(Arc<tokio::sync::watch::Sender<bool>>, tokio::sync::watch::Receiver<bool>);

impl Stop {
    pub fn new() -> Stop {
        let (tx, rx) = tokio::sync::watch::channel(false);
        Stop(Arc::new(tx), rx)
    }

    pub fn stop(&self) {
        let _ = self.0.send(true);
    }

    pub fn is_stopped(&self) -> bool {
        *self.1.borrow()
    }

    pub async fn wait(&self) {
        let mut rx = self.1.clone();
        let _ = rx.wait_for(|stopped| *stopped).await;
    }
}

impl Default for Stop {
    fn default() -> Self {
        Stop::new()
    }
}
