//! Criterion benchmarks for each stage and for end-to-end replay, on a `synth` corpus (~1.27 KB records).
//!
//! Groups: `decode/gunzip` (bytes/s of JSON out), `parse/fold` (gunzip excluded: simd-json into borrowed records and
//! folding them into a delta), `state/apply` (folding already-parsed events alone), `state/commit` (one batch's delta
//! and ledger entries into SQLite), and
//! `replay/end_to_end` with 1 and 2 worker threads (read, gunzip, parse, fold, commit), and `intake/sqs_memory`:
//! the SQS consumer over in-process queue and objects, to compare with replay. Targets are in README.md.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use trailwatch::config::Config;
use trailwatch::decode::decode_into;
use trailwatch::intake::memory::{self, MemoryObjects, MemoryQueue};
use trailwatch::metrics::Metrics;
use trailwatch::parse::Parser;
use trailwatch::pipeline::{self, Applied, BatchLimits, Limits, RunContext, Summary, Worker};
use trailwatch::state::store::{LedgerEntry, Store, Synchronous};
use trailwatch::state::{Delta, Scratch};
use trailwatch::synth::{SynthConfig, generate};

const LIMITS: Limits = Limits { max_file_bytes: 1 << 30, max_decoded_bytes: 1 << 30 };

struct Corpus {
    _dir: tempfile::TempDir,
    root: PathBuf,
    jobs: Vec<pipeline::FileJob>,
    records: u64,
    json_bytes: u64,
}

fn corpus() -> Corpus {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("corpus");
    let cfg = SynthConfig { files: 500, records_per_file: 1000, principals: 2000, seed: 3, ..SynthConfig::default() };
    let (summary, _) = generate(&root, &cfg).unwrap();
    let jobs = pipeline::discover(std::slice::from_ref(&root)).unwrap();
    eprintln!(
        "corpus: {} files, {} records, {:.1} MB of JSON, {:.0} bytes/record",
        summary.files,
        summary.records,
        summary.json_bytes as f64 / 1e6,
        summary.json_bytes as f64 / summary.records as f64
    );
    Corpus { _dir: dir, root, jobs, records: summary.records, json_bytes: summary.json_bytes }
}

fn stages(c: &mut Criterion) {
    let corpus = corpus();
    let raw = std::fs::read(corpus.jobs[0].local_path().unwrap()).unwrap();
    let mut json = Vec::new();
    decode_into(&raw, &mut json, LIMITS.max_decoded_bytes).unwrap();

    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Bytes(json.len() as u64));
    group.bench_function("gunzip", |b| {
        let mut out = Vec::new();
        b.iter(|| decode_into(&raw, &mut out, LIMITS.max_decoded_bytes).unwrap());
    });
    group.finish();

    let mut group = c.benchmark_group("parse");
    let mut worker = Worker::default();
    let records = worker.process_bytes(&json, LIMITS, &mut Delta::default()).unwrap().records;
    group.throughput(Throughput::ElementsAndBytes { elements: records, bytes: json.len() as u64 });
    group.bench_function("fold", |b| {
        b.iter_batched_ref(
            Delta::default,
            |delta| worker.process_bytes(&json, LIMITS, delta).unwrap(),
            BatchSize::SmallInput,
        );
    });
    group.finish();

    // Folding alone: the events of one file, parsed once and kept (they borrow the buffer), applied to a new delta.
    let mut buf = json.clone();
    Parser::pad(&mut buf);
    let mut events = Vec::new();
    Parser::default().parse(&mut buf, json.len(), &mut |e, _| events.push(*e)).unwrap();
    let mut group = c.benchmark_group("state");
    group.throughput(Throughput::Elements(events.len() as u64));
    let mut scratch = Scratch::default();
    group.bench_function("apply", |b| {
        b.iter_batched_ref(
            Delta::default,
            |delta| {
                for event in &events {
                    delta.apply(event, &mut scratch);
                }
            },
            BatchSize::SmallInput,
        );
    });
    group.finish();

    // One batch: 64 files folded into one delta, committed with 64 ledger entries.
    let mut delta = Delta::default();
    let mut records = 0;
    for job in &corpus.jobs[..64] {
        records += worker.process_file(job, LIMITS, &mut delta).1.unwrap().records;
    }
    let entries: Vec<LedgerEntry<'_>> =
        corpus.jobs[..64].iter().map(|j| LedgerEntry { key: &j.key, records: 1000 }).collect();
    let mut group = c.benchmark_group("state");
    group.throughput(Throughput::Elements(records));
    group.bench_function("commit", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().unwrap();
                let store = Store::open(&dir.path().join("s.db"), Synchronous::Full).unwrap();
                (dir, store)
            },
            |(dir, mut store)| {
                store.commit(&delta, &entries, 0, &Default::default()).unwrap();
                (dir, store)
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();

    let mut group = c.benchmark_group("replay");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(30))
        .throughput(Throughput::ElementsAndBytes { elements: corpus.records, bytes: corpus.json_bytes });
    eprintln!("replay: {} records per iteration, {:.1} MB of JSON", corpus.records, corpus.json_bytes as f64 / 1e6);
    for threads in [1, 2] {
        group.bench_function(format!("end_to_end/{threads}_threads"), |b| {
            b.iter_batched(
                || tempfile::tempdir().unwrap(),
                |dir| {
                    let mut store = Store::open(&dir.path().join("s.db"), Synchronous::Full).unwrap();
                    let applied = Applied::default();
                    let metrics = Metrics::new();
                    let stop = AtomicBool::new(false);
                    let ctx = RunContext {
                        threads,
                        limits: LIMITS,
                        batch: BatchLimits { max_files: 256, max_records: 500_000, max_wait: Duration::from_secs(1) },
                        metrics: &metrics,
                        stop: &stop,
                        flush_when_starved: None,
                        alerting: None,
                    };
                    let summary = pipeline::run(
                        pipeline::Jobs::Local(&corpus.jobs),
                        &ctx,
                        &mut store,
                        &applied,
                        &mut |_: &Summary| {},
                    )
                    .unwrap();
                    assert_eq!(summary.counts.records, corpus.records);
                    dir
                },
                BatchSize::PerIteration,
            );
        });
    }
    group.finish();

    // The SQS intake over in-process doubles: notifications → fetch → parse → commit → delete, same files, same
    // two workers as `replay/end_to_end/2_threads`; the difference is the intake's overhead.
    let mut objects = MemoryObjects::default();
    let mut bodies = Vec::new();
    for job in &corpus.jobs {
        let path = job.local_path().unwrap();
        let key = path.strip_prefix(&corpus.root).unwrap().to_str().unwrap().to_owned();
        objects.insert("trail", &key, std::fs::read(path).unwrap());
        bodies.push(format!(r#"{{"s3Bucket":"trail","s3ObjectKey":["{key}"]}}"#));
    }
    let objects = std::sync::Arc::new(objects);
    let mut config = Config::parse("", "bench").unwrap();
    config.threads = 2;
    let settings = memory::settings(2, 300, 2000);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut group = c.benchmark_group("intake");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(30))
        .throughput(Throughput::ElementsAndBytes { elements: corpus.records, bytes: corpus.json_bytes });
    group.bench_function("sqs_memory/2_threads", |b| {
        b.iter_batched(
            || {
                let queue = std::sync::Arc::new(MemoryQueue::default());
                for body in &bodies {
                    queue.push(body.clone());
                }
                (tempfile::tempdir().unwrap(), queue)
            },
            |(dir, queue)| {
                let mut store = Store::open(&dir.path().join("s.db"), Synchronous::Full).unwrap();
                let metrics = std::sync::Arc::new(Metrics::new());
                let objects = std::sync::Arc::clone(&objects);
                let summary =
                    memory::drain(&runtime, &queue, objects, &config, &settings, &mut store, &metrics, 0).unwrap();
                assert_eq!(summary.counts.records, corpus.records);
                dir
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

criterion_group!(benches, stages);
criterion_main!(benches);
