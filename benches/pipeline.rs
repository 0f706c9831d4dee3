//! Criterion benchmarks for each stage and for end-to-end replay, on a `synth` corpus (~1.27 KB records).
//!
//! Groups: `decode/gunzip` (bytes/s of JSON out), `parse/fold` (gunzip excluded: simd-json into borrowed records and
//! folding them into a delta), `state/apply` (folding already-parsed events alone), `state/commit` (one batch's delta
//! and ledger entries into SQLite), and
//! `replay/end_to_end` with 1 and 2 worker threads (read, gunzip, parse, fold, commit), and `intake/sqs_memory`:
//! the SQS consumer over in-process queue and objects, to compare with replay; `rules` replays with rule sets on, and
//! `rules_time_over_off` pairs each with rules off (see there); `integrity_time_over_off` pairs log file validation
//! on with off. Targets are in README.md.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use trailwatch::alert::stage::Alerting;
use trailwatch::config::BatchLimits;
use trailwatch::config::Config;
use trailwatch::config::Limits;
use trailwatch::config::Synchronous;
use trailwatch::decode::decode_into;
use trailwatch::detect::ruleset::RuleSet;
use trailwatch::metrics::Metrics;
use trailwatch::parse::Parser;
use trailwatch::pipeline::{self, Folded, RunContext, Summary, Worker};
use trailwatch::source::memory::{self, MemoryObjects, MemoryQueue};
use trailwatch::state::{Delta, Scratch};
use trailwatch::store::Applied;
use trailwatch::store::{LedgerEntry, Store};
use trailwatch::synth::{SynthConfig, generate};

const LIMITS: Limits = Limits { max_file_bytes: 1 << 30, max_decoded_bytes: 1 << 30, max_worker_memory_bytes: 4 << 30 };

struct Corpus {
    _dir: tempfile::TempDir,
    root: PathBuf,
    jobs: Vec<trailwatch::source::FileJob>,
    records: u64,
    json_bytes: u64,
}

fn corpus() -> Corpus {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("corpus");
    let cfg = SynthConfig { files: 500, records_per_file: 1000, principals: 2000, seed: 3, ..SynthConfig::default() };
    let (summary, _) = generate(&root, &cfg).unwrap();
    let jobs = trailwatch::source::local::discover(std::slice::from_ref(&root)).unwrap();
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
    let records = worker.process_bytes(&json, LIMITS, &mut Folded::default()).unwrap().records;
    group.throughput(Throughput::ElementsAndBytes { elements: records, bytes: json.len() as u64 });
    group.bench_function("fold", |b| {
        b.iter_batched_ref(
            Folded::default,
            |folded| worker.process_bytes(&json, LIMITS, folded).unwrap(),
            BatchSize::SmallInput,
        );
    });
    // The same with the built-in rules evaluated on every event: the detect stage's cost on the worker.
    let mut with_rules = Worker::with_rules(Some(Arc::new(RuleSet::load(true, &[]).0)));
    group.bench_function("fold_with_builtin_rules", |b| {
        b.iter_batched_ref(
            Folded::default,
            |folded| with_rules.process_bytes(&json, LIMITS, folded).unwrap(),
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
    let mut folded = Folded::default();
    let mut records = 0;
    for job in &corpus.jobs[..64] {
        records += worker.process_file(job, LIMITS, &mut folded).1.unwrap().records;
    }
    let delta = folded.delta;
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
                store.commit(&delta, &entries, 0, []).unwrap();
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
                |dir| replay(&corpus, dir, threads, None, false),
                BatchSize::PerIteration,
            );
        });
    }
    group.finish();

    // Rules on the replay path: off, the built-ins, and the built-ins plus SigmaHQ's AWS rules (a directory named by
    // TRAILWATCH_BENCH_SIGMA_DIR, e.g. a checkout's rules/cloud/aws) or, without it, a generated stand-in of the same
    // shapes and size (see `sigmahq_standin`).
    let builtin = Arc::new(RuleSet::load(true, &[]).0);
    let standin = tempfile::tempdir().unwrap();
    let sigma_dir = match std::env::var_os("TRAILWATCH_BENCH_SIGMA_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            std::fs::write(standin.path().join("standin.yml"), sigmahq_standin(140)).unwrap();
            standin.path().to_owned()
        }
    };
    let with_sigma = {
        let (set, errors) = RuleSet::load(true, std::slice::from_ref(&sigma_dir));
        eprintln!("rules: built-in + sigma: {} loaded, {} not loaded", set.rules().len(), errors.len());
        Arc::new(set)
    };
    // The same rules in dry run: every event is matched and every match counted (correlation windows included),
    // but no alert is built or written. Against `off` it is the cost of matching; against the live set, of alerting.
    let dry_run = {
        let mut set = RuleSet::load(true, std::slice::from_ref(&sigma_dir)).0;
        let ids: Vec<String> = set.rules().iter().map(|r| r.id.clone()).collect();
        assert!(set.set_dry_run(&ids).is_empty());
        Arc::new(set)
    };
    let mut group = c.benchmark_group("rules");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(30))
        .throughput(Throughput::ElementsAndBytes { elements: corpus.records, bytes: corpus.json_bytes });
    let sets = [
        ("off", None),
        ("builtin", Some(builtin)),
        ("builtin_and_sigmahq_dry_run", Some(dry_run)),
        ("builtin_and_sigmahq", Some(with_sigma)),
    ];
    for (name, rules) in &sets {
        group.bench_function(format!("replay_2_threads/{name}"), |b| {
            b.iter_batched(
                || tempfile::tempdir().unwrap(),
                |dir| replay(&corpus, dir, 2, rules.as_ref(), false),
                BatchSize::PerIteration,
            );
        });
    }
    group.finish();

    // The same sets against rules off, paired (see `paired`): the target for every rule on is at most 1.25 (25%
    // more time than rules off, i.e. 20% less throughput).
    let mut group = c.benchmark_group("rules_time_over_off");
    group.sample_size(10).sampling_mode(SamplingMode::Flat).measurement_time(Duration::from_secs(60));
    for (name, rules) in sets.iter().filter(|(_, rules)| rules.is_some()) {
        group.bench_function(format!("replay_2_threads/{name}"), |b| {
            b.iter_custom(|iters| {
                paired(iters, |on| {
                    replay(&corpus, tempfile::tempdir().unwrap(), 2, rules.as_ref().filter(|_| on), false)
                })
            });
        });
    }
    group.finish();

    // Log file validation on against off, paired the same way: each log file's decoded bytes hashed (SHA-256) in
    // the decode pass, and its hash stored with the batch. The corpus has no digests, so this is the cost every
    // log file pays.
    let mut group = c.benchmark_group("integrity_time_over_off");
    group.sample_size(10).sampling_mode(SamplingMode::Flat).measurement_time(Duration::from_secs(60));
    group.bench_function("replay_2_threads/rules_off", |b| {
        b.iter_custom(|iters| paired(iters, |on| replay(&corpus, tempfile::tempdir().unwrap(), 2, None, on)));
    });
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
                let summary = trailwatch::daemon::drain_memory_queue(
                    &runtime, &queue, objects, &config, &settings, &mut store, &metrics, 0,
                )
                .unwrap();
                assert_eq!(summary.counts.records, corpus.records);
                dir
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

/// The time of `run(true)` over that of `run(false)`, summed over `iters` pairs run one right after the other (in
/// alternating order), as seconds: "1.25 s" reads "25% more time". This machine's speed drifts by 15–20% within
/// minutes, more than the effects measured, so two separate runs compare badly; a pair shares the drift.
fn paired<T>(iters: u64, run: impl Fn(bool) -> T) -> Duration {
    let mut ratios = Duration::ZERO;
    for i in 0..iters {
        let timed = |on: bool| {
            let start = Instant::now();
            let kept = run(on);
            let took = start.elapsed();
            drop(kept);
            took.as_secs_f64()
        };
        let (off, on) = match i % 2 {
            0 => (timed(false), timed(true)),
            _ => {
                let on = timed(true);
                (timed(false), on)
            }
        };
        ratios += Duration::from_secs_f64(on / off);
    }
    ratios
}

/// One replay into a fresh store, timed as `trailwatch replay` times it: up to the last commit. The store, the
/// correlation windows and the directory are returned so that closing and freeing them (a process does it at
/// exit, a daemon never) happen after criterion stops the clock. `rules` are evaluated when given; `integrity`
/// turns log file validation on.
fn replay(
    corpus: &Corpus,
    dir: tempfile::TempDir,
    threads: usize,
    rules: Option<&Arc<RuleSet>>,
    integrity: bool,
) -> (Option<Alerting>, Store, tempfile::TempDir) {
    let mut store = Store::open(&dir.path().join("s.db"), Synchronous::Full).unwrap();
    let alerting =
        rules.map(|rules| Alerting::new(Arc::clone(rules), Vec::new(), &[], store.correlation_windows(rules).unwrap()));
    let metrics = Metrics::new();
    let ctx = RunContext {
        threads,
        limits: LIMITS,
        batch: BatchLimits { max_files: 256, max_records: 500_000, max_wait: Duration::from_secs(1) },
        metrics: &metrics,
        flush_when_starved: None,
        alerting: alerting.as_ref(),
        log_batches: false,
        on_file: None,
        on_commit: None,
        inflight: None,
        integrity,
    };
    // Made once: the sources feed the pipeline from its tasks.
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    let runtime = RUNTIME.get_or_init(|| trailwatch::daemon::runtime(2, "bench-io").unwrap());
    let applied = Arc::new(Applied::default());
    let mut source = trailwatch::source::local::LocalFiles::new(corpus.jobs.clone(), Arc::clone(&applied));
    let shutdown = trailwatch::shutdown::Shutdown::new();
    let stop = shutdown.listener(trailwatch::shutdown::Stage::Intake, "corpus");
    let summary = pipeline::run(&mut source, runtime, stop, &ctx, &mut store, &applied, &mut |_: &Summary| {}).unwrap();
    assert_eq!(summary.counts.records, corpus.records);
    (alerting, store, dir)
}

/// `n` rules in the shapes SigmaHQ's AWS CloudTrail rules take (from reading rules/cloud/aws): most name a service
/// and a few rare, security-relevant calls (indexed by `eventName`), some with a `userAgent` or
/// `requestParameters|contains` filter; about one in seven names no `eventName` and so runs on every event
/// (`eventName|startswith`, `userIdentity.arn|re`, `userAgent|contains`); a few are Sigma 1 aggregations over
/// common calls (bucket enumeration, secret harvesting, role assumption bursts).
fn sigmahq_standin(n: usize) -> String {
    const RARE: &[(&str, &str)] = &[
        ("ec2.amazonaws.com", "CreateVpcPeeringConnection"),
        ("ec2.amazonaws.com", "DisableEbsEncryptionByDefault"),
        ("ec2.amazonaws.com", "ModifyInstanceAttribute"),
        ("ec2.amazonaws.com", "ImportKeyPair"),
        ("ec2.amazonaws.com", "CreateInstanceExportTask"),
        ("ec2.amazonaws.com", "ModifySnapshotAttribute"),
        ("iam.amazonaws.com", "CreateUser"),
        ("iam.amazonaws.com", "DeleteSAMLProvider"),
        ("iam.amazonaws.com", "UpdateAssumeRolePolicy"),
        ("iam.amazonaws.com", "CreatePolicyVersion"),
        ("iam.amazonaws.com", "CreateLoginProfile"),
        ("s3.amazonaws.com", "PutBucketVersioning"),
        ("s3.amazonaws.com", "DeleteBucket"),
        ("s3.amazonaws.com", "PutBucketLogging"),
        ("secretsmanager.amazonaws.com", "BatchGetSecretValue"),
        ("ssm.amazonaws.com", "StartSession"),
        ("lambda.amazonaws.com", "UpdateFunctionConfiguration20150331v2"),
        ("lambda.amazonaws.com", "CreateFunctionUrlConfig20211031"),
        ("rds.amazonaws.com", "RestoreDBInstanceFromDBSnapshot"),
        ("rds.amazonaws.com", "ModifyDBInstance"),
        ("sts.amazonaws.com", "GetSessionToken"),
        ("signin.amazonaws.com", "GetSigninToken"),
        ("kms.amazonaws.com", "ImportKeyMaterial"),
        ("bedrock.amazonaws.com", "DeleteModelInvocationLoggingConfiguration"),
        ("route53domains.amazonaws.com", "TransferDomainToAnotherAwsAccount"),
        ("eks.amazonaws.com", "CreateCluster"),
        ("elasticfilesystem.amazonaws.com", "DeleteFileSystem"),
        ("dynamodb.amazonaws.com", "DeleteTable"),
        ("account.amazonaws.com", "EnableRegion"),
        ("guardduty.amazonaws.com", "CreateIPSet"),
    ];
    const COMMON: &[(&str, &str)] = &[
        ("s3.amazonaws.com", "ListBuckets"),
        ("secretsmanager.amazonaws.com", "GetSecretValue"),
        ("sts.amazonaws.com", "AssumeRole"),
    ];
    let mut out = String::new();
    for i in 0..n {
        let (source, name) = RARE[i % RARE.len()];
        let (_, other) = RARE[(i * 7 + 3) % RARE.len()];
        let detection = match i % 20 {
            // Rules that any event could match: they run on every record.
            0 => "    selection:\n        eventName|startswith: [Create, Delete, Put]\n    filter:\n        userAgent|contains: terraform\n    condition: selection and not filter\n".to_owned(),
            1 => format!("    selection:\n        userIdentity.arn|re: '.+:assumed-role/aws:{i}.+'\n    filter:\n        - eventSource: ssm.amazonaws.com\n        - sourceIPAddress: AWS Internal\n    condition: selection and not 1 of filter*\n"),
            2 => format!("    selection:\n        userAgent|contains: ['tool-{i}', 'scanner-{i}']\n    condition: selection\n"),
            3 => {
                let (source, name) = COMMON[i % COMMON.len()];
                format!("    selection:\n        eventSource: {source}\n        eventName: {name}\n    condition: selection | count() by userIdentity.arn > 50\n    timeframe: 5m\n")
            }
            4 | 5 => format!("    selection:\n        eventSource: {source}\n        eventName: {name}\n    filter:\n        requestParameters|contains: '\"value-{i}\"'\n    condition: selection and filter\n"),
            6..=8 => format!("    selection:\n        eventSource: {source}\n        eventName: [{name}, {other}]\n    filter_ua:\n        userAgent|contains: 'Jersey/{i}'\n    condition: selection and not 1 of filter_*\n"),
            _ => format!("    selection:\n        eventSource: {source}\n        eventName:\n            - {name}\n            - {other}\n    condition: selection\n"),
        };
        out.push_str(&format!(
            "title: Stand-in rule {i}\nid: standin-{i}\nlogsource:\n    product: aws\n    service: cloudtrail\ndetection:\n{detection}level: medium\n---\n"
        ));
    }
    out
}

criterion_group!(benches, stages);
criterion_main!(benches);
