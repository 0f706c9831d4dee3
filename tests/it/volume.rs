//! Volume through the SQS consumer on the in-process queue and object store (moto's SQS handles only tens of
//! messages per second): every object announced twice in different shapes, missing objects and poison bodies.

use std::sync::Arc;
use std::time::Duration;

use trailwatch::config::Config;
use trailwatch::config::Synchronous;
use trailwatch::metrics::Metrics;
use trailwatch::source::memory::{self, MemoryObjects, MemoryQueue};
use trailwatch::store::Store;

use crate::util::*;

#[test]
fn in_process_volume_applies_each_object_once_and_deletes_all_but_poison() {
    // 64 objects in flight keeps every stage busy; with 1, the pollers hold back until each object is done, so the
    // poison at the queue's tail is received only after the last object is deleted.
    for max_in_flight_objects in [64, 1] {
        volume(max_in_flight_objects);
    }
}

fn volume(max_in_flight_objects: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let want = synth(tmp.path(), 300, 40, 150, 21);
    let corpus = tmp.path().join("corpus");

    let mut files = Vec::new();
    trailwatch::source::local::walk(&corpus, &mut files).unwrap();
    let mut objects = MemoryObjects::default();
    let queue = Arc::new(MemoryQueue::default());
    for (path, _) in &files {
        let key = path.strip_prefix(&corpus).unwrap().to_str().unwrap().to_owned();
        objects.insert("trail", &key, std::fs::read(path).unwrap());
        let s3_event = serde_json::json!({"Records": [{"eventVersion": "2.1", "eventName": "ObjectCreated:Put",
            "s3": {"bucket": {"name": "trail"}, "object": {"key": key.replace(' ', "+")}}}]});
        queue.push(s3_event.to_string());
        let cloudtrail = serde_json::json!({"s3Bucket": "trail", "s3ObjectKey": [key]}).to_string();
        queue.push(serde_json::json!({"Type": "Notification", "TopicArn": "t", "Message": cloudtrail}).to_string());
    }
    for i in 0..20 {
        queue.push(
            serde_json::json!({"s3Bucket": "trail", "s3ObjectKey": format!("AWSLogs/gone-{i}.json.gz")}).to_string(),
        );
    }
    const POISON: usize = 10;
    for i in 0..POISON {
        queue.push(format!("poison {i}"));
    }
    assert_eq!(queue.remaining(), 2 * 300 + 20 + POISON);

    let mut config = Config::parse("[pipeline]\nthreads = 2\nbatch_max_files = 32\n", "volume").unwrap();
    config.threads = 2;
    let settings = memory::settings(3, 300, max_in_flight_objects);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let state = tmp.path().join("state.db");
    let mut store = Store::open(&state, Synchronous::Normal).unwrap();
    let metrics = Arc::new(Metrics::new());
    // Poison bodies are never deleted: done when only they are left.
    let summary = trailwatch::daemon::drain_memory_queue(
        &runtime,
        &queue,
        Arc::new(objects),
        &config,
        &settings,
        &mut store,
        &metrics,
        POISON,
    )
    .unwrap();
    drop(store);
    assert_eq!(summary.files_applied, 300);
    assert_eq!(summary.rejections.get("no_such_key"), Some(&20));
    assert_eq!(queue.remaining(), POISON);
    let exposition = metrics.render();
    assert_eq!(metric(&exposition, "trailwatch_sqs_messages_deleted_total"), Some((2 * 300 + 20) as f64));
    assert_eq!(
        metric(&exposition, r#"trailwatch_sqs_unreadable_messages_total{reason="not_json"}"#),
        Some(POISON as f64),
        "with {max_in_flight_objects} objects in flight"
    );
    assert_same_report(&report(&state), &want);
}

/// An object source that takes its time, to keep a delivery in flight.
struct Slow(MemoryObjects, Duration);

impl trailwatch::source::fetch::Objects for Slow {
    async fn get(
        &self,
        bucket: &str,
        key: &str,
        max: u64,
    ) -> Result<trailwatch::source::fetch::Fetched, trailwatch::source::fetch::FetchError> {
        tokio::time::sleep(self.1).await;
        self.0.get(bucket, key, max).await
    }
}

/// A delivery whose object is still being fetched past half the visibility timeout is kept invisible.
#[test]
fn in_flight_deliveries_are_kept_invisible() {
    let tmp = tempfile::tempdir().unwrap();
    let want = synth(tmp.path(), 1, 20, 10, 3);
    let corpus = tmp.path().join("corpus");
    let mut files = Vec::new();
    trailwatch::source::local::walk(&corpus, &mut files).unwrap();
    let key = files[0].0.strip_prefix(&corpus).unwrap().to_str().unwrap().to_owned();
    let mut objects = MemoryObjects::default();
    objects.insert("trail", &key, std::fs::read(&files[0].0).unwrap());
    let queue = Arc::new(MemoryQueue::default());
    queue.push(serde_json::json!({"s3Bucket": "trail", "s3ObjectKey": [key]}).to_string());

    let config = Config::parse("[pipeline]\nthreads = 1\n", "heartbeat").unwrap();
    // The shortest timeout SQS allows: the heartbeat runs every 5 s; the fetch takes 6 s.
    let settings = memory::settings(1, 10, 8);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let state = tmp.path().join("state.db");
    let mut store = Store::open(&state, Synchronous::Normal).unwrap();
    let metrics = Arc::new(Metrics::new());
    let slow = Slow(objects, Duration::from_secs(6));
    trailwatch::daemon::drain_memory_queue(&runtime, &queue, slow, &config, &settings, &mut store, &metrics, 0)
        .unwrap();
    drop(store);
    assert_eq!(queue.extensions(), 1, "one heartbeat while the 6 s fetch was in flight");
    assert_eq!(metric(&metrics.render(), "trailwatch_sqs_visibility_extensions_total"), Some(1.0));
    assert_same_report(&report(&state), &want);
}

/// A commit that fails ends the consumer's run with the error at once (the daemon then retries it), instead of
/// waiting for a shutdown that may never come, and deletes none of the failed batch's messages.
#[test]
fn a_failing_commit_ends_the_run_and_deletes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    synth(tmp.path(), 4, 20, 10, 3);
    let corpus = tmp.path().join("corpus");
    let mut files = Vec::new();
    trailwatch::source::local::walk(&corpus, &mut files).unwrap();
    let mut objects = MemoryObjects::default();
    let queue = Arc::new(MemoryQueue::default());
    for (path, _) in &files {
        let key = path.strip_prefix(&corpus).unwrap().to_str().unwrap().to_owned();
        objects.insert("trail", &key, std::fs::read(path).unwrap());
        queue.push(serde_json::json!({"s3Bucket": "trail", "s3ObjectKey": [key]}).to_string());
    }
    let config = Config::parse("[pipeline]\nthreads = 2\n", "failing").unwrap();
    let settings = memory::settings(1, 300, 8);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut store = Store::open(&tmp.path().join("state.db"), Synchronous::Normal).unwrap();
    store
        .connection()
        .execute_batch("CREATE TRIGGER fail BEFORE INSERT ON ledger BEGIN SELECT RAISE(ABORT, 'disk is full'); END;")
        .unwrap();
    let metrics = Arc::new(Metrics::new());
    // Drained "when the queue is empty", which never happens: only the failed commit can end the run.
    let err =
        trailwatch::daemon::drain_memory_queue(&runtime, &queue, objects, &config, &settings, &mut store, &metrics, 0)
            .unwrap_err();
    assert!(err.to_string().contains("disk is full"), "{err}");
    assert_eq!(queue.remaining(), files.len(), "no message of the failed batch was deleted");
}
