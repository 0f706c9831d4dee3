//! In-process doubles of the queue and the object store, behind the same traits as SQS and S3: for volume tests
//! and benchmarks, where moto's SQS (tens of messages per second) would measure moto.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::SqsConfig;
use crate::source::fetch::{FetchError, Fetched, Objects};
use crate::source::sqs::{Queue, QueueError, Received};

/// Consumer settings for the in-process queue (the queue URL is only a label).
pub fn settings(pollers: usize, visibility_timeout_secs: u32, max_in_flight_objects: usize) -> SqsConfig {
    SqsConfig {
        queue_url: "memory".into(),
        pollers,
        visibility_timeout_secs,
        wait_time_secs: 1,
        max_in_flight_objects,
        shutdown_grace: Duration::from_secs(30),
    }
}

/// Resolves once every message of `queue` has been received and only `leave` remain (those the consumer must not
/// delete, such as unreadable bodies): when a test or benchmark asks the consumer to stop.
pub async fn drained(queue: Arc<MemoryQueue>, leave: usize) {
    // Waiting for "all received" too: the messages left behind may still be waiting to be received (pollers hold
    // back while objects are in flight), and a poller only handles what it took before it stopped.
    while queue.remaining() > leave || queue.unreceived() > 0 {
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

/// A queue with SQS's delivery semantics minus time: received messages stay in flight until deleted.
#[derive(Default)]
pub struct MemoryQueue {
    inner: Mutex<MemoryQueueInner>,
}

#[derive(Default)]
struct MemoryQueueInner {
    ready: VecDeque<(String, String)>,
    in_flight: HashMap<String, (String, String)>,
    next: u64,
    extensions: u64,
}

impl MemoryQueue {
    pub fn push(&self, body: String) {
        let mut inner = self.lock();
        inner.next += 1;
        let id = format!("m-{}", inner.next);
        inner.ready.push_back((id, body));
    }

    /// Messages never received yet.
    pub fn unreceived(&self) -> usize {
        self.lock().ready.len()
    }

    /// Visibility extensions asked for so far (deliveries, not calls).
    pub fn extensions(&self) -> u64 {
        self.lock().extensions
    }

    /// Messages not yet deleted, visible or in flight.
    pub fn remaining(&self) -> usize {
        let inner = self.lock();
        inner.ready.len() + inner.in_flight.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryQueueInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Queue for MemoryQueue {
    async fn receive(&self, wait_secs: i32, _visibility_secs: i32) -> Result<Vec<Received>, QueueError> {
        let batch: Vec<Received> = {
            let mut inner = self.lock();
            let n = inner.ready.len().min(10);
            let taken: Vec<(String, String)> = inner.ready.drain(..n).collect();
            taken
                .into_iter()
                .map(|(id, body)| {
                    inner.next += 1;
                    let receipt = format!("r-{}", inner.next);
                    inner.in_flight.insert(receipt.clone(), (id.clone(), body.clone()));
                    Received { message_id: id, receipt, body, sent_at_ms: None, receive_count: 1 }
                })
                .collect()
        };
        if batch.is_empty() {
            // A short stand-in for the long poll.
            tokio::time::sleep(Duration::from_millis(u64::from(wait_secs.clamp(0, 1) as u32))).await;
        }
        Ok(batch)
    }

    async fn delete(&self, receipts: &[String]) -> Result<usize, QueueError> {
        let mut inner = self.lock();
        Ok(receipts.iter().filter(|r| inner.in_flight.remove(*r).is_none()).count())
    }

    async fn extend(&self, receipts: &[String], _visibility_secs: i32) -> Result<usize, QueueError> {
        let mut inner = self.lock();
        let unknown = receipts.iter().filter(|r| !inner.in_flight.contains_key(*r)).count();
        inner.extensions += (receipts.len() - unknown) as u64;
        Ok(unknown)
    }

    async fn probe(&self) -> Result<(), QueueError> {
        Ok(())
    }
}

/// Objects held in memory; each `get` copies the bytes, as a network read would produce a fresh buffer.
#[derive(Default)]
pub struct MemoryObjects {
    objects: HashMap<(String, String), (Vec<u8>, String)>,
}

impl MemoryObjects {
    pub fn insert(&mut self, bucket: &str, key: &str, bytes: Vec<u8>) {
        let etag = format!("mem-{}-{}", self.objects.len(), bytes.len());
        self.objects.insert((bucket.to_owned(), key.to_owned()), (bytes, etag));
    }
}

impl Objects for MemoryObjects {
    async fn get(&self, bucket: &str, key: &str, max_bytes: u64) -> Result<Fetched, FetchError> {
        let names = || (bucket.to_owned(), key.to_owned());
        match self.objects.get(&names()) {
            None => {
                let (bucket, key) = names();
                Err(FetchError::NoSuchKey { bucket, key })
            }
            Some((bytes, _)) if bytes.len() as u64 > max_bytes => {
                let (bucket, key) = names();
                Err(FetchError::TooLarge { bucket, key, size: bytes.len() as u64, cap: max_bytes })
            }
            Some((bytes, etag)) => Ok(Fetched { bytes: bytes.clone(), etag: Some(etag.clone()), signature: None }),
        }
    }
}
