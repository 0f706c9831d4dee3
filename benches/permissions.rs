//! The permissions stage at organisation scale: reading an inventory of 5,000 roles with 20 policies each
//! (`inventory/parse_5000_roles`), and a findings run (`analyse`) over 5,000 identities × 20 used actions =
//! 100,000 principal-action pairs (`analysis/findings_100k_pairs`). The memory each takes is printed once, outside
//! criterion's loop, from a counting allocator: the heap's peak above what was live before, and what stays live.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use trailwatch::permissions::analysis::{Settings, Usage, analyse};
use trailwatch::permissions::inventory::{AccountInventory, Inventory};

const ROLES: usize = 5_000;
const POLICIES_PER_ROLE: usize = 20;
const ACTIONS_PER_ROLE: usize = 20;
const SERVICES: &[&str] = &["s3", "ec2", "iam", "sqs", "sns", "dynamodb", "lambda", "kms", "logs", "cloudwatch"];
const VERBS: &[&str] = &["Get", "List", "Describe", "Put", "Create", "Delete", "Update", "Tag"];
const NOUNS: &[&str] =
    &["Bucket", "Instance", "Role", "Queue", "Topic", "Table", "Function", "Key", "LogGroup", "Alarm"];

/// An action name from a number.
fn action(n: usize) -> String {
    format!("{}:{}{}", SERVICES[n % SERVICES.len()], VERBS[(n / 10) % VERBS.len()], NOUNS[(n / 80) % NOUNS.len()])
}

/// A policy document of four statements: exact actions, a wildcard, a `NotAction` now and then, and a scoped
/// Deny, as real customer policies mix them.
fn document(seed: usize) -> serde_json::Value {
    let exact: Vec<String> = (0..6).map(|i| action(seed * 7 + i * 13)).collect();
    let service = SERVICES[seed % SERVICES.len()];
    let mut statements = vec![
        serde_json::json!({ "Sid": "Exact", "Effect": "Allow", "Action": exact, "Resource": "*" }),
        serde_json::json!({ "Sid": "Read", "Effect": "Allow", "Action": [format!("{service}:Get*"), format!("{service}:List*")], "Resource": "*" }),
        serde_json::json!({ "Effect": "Deny", "Action": format!("{service}:Delete*"), "Resource": format!("arn:aws:{service}:::prod-{seed}") }),
    ];
    if seed.is_multiple_of(50) {
        statements
            .push(serde_json::json!({ "Effect": "Allow", "NotAction": ["iam:*", "organizations:*"], "Resource": "*" }));
    }
    serde_json::json!({ "Version": "2012-10-17", "Statement": statements })
}

/// One account: `ROLES` roles, each with 15 managed policies from a pool of 1,000 and 5 inline ones.
fn inventory_json() -> String {
    let account = "111122223333";
    let policies: Vec<serde_json::Value> = (0..1_000)
        .map(|p| {
            serde_json::json!({
                "PolicyName": format!("pool-{p}"), "Arn": format!("arn:aws:iam::{account}:policy/pool-{p}"),
                "PolicyVersionList": [{ "Document": document(p), "VersionId": "v1", "IsDefaultVersion": true }],
            })
        })
        .collect();
    let roles: Vec<serde_json::Value> = (0..ROLES)
        .map(|r| {
            let attached: Vec<serde_json::Value> = (0..POLICIES_PER_ROLE - 5)
                .map(|i| {
                    let p = (r * 31 + i * 17) % 1_000;
                    serde_json::json!({ "PolicyName": format!("pool-{p}"), "PolicyArn": format!("arn:aws:iam::{account}:policy/pool-{p}") })
                })
                .collect();
            // Inline documents come URL-encoded from IAM.
            let inline: Vec<serde_json::Value> = (0..5)
                .map(|i| {
                    let text = document(r * 5 + i).to_string();
                    let encoded: String = text
                        .bytes()
                        .map(|b| match b {
                            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
                            _ => format!("%{b:02X}"),
                        })
                        .collect();
                    serde_json::json!({ "PolicyName": format!("inline-{i}"), "PolicyDocument": encoded })
                })
                .collect();
            serde_json::json!({
                "RoleName": format!("role-{r}"), "Arn": format!("arn:aws:iam::{account}:role/app/role-{r}"),
                "RolePolicyList": inline, "AttachedManagedPolicies": attached,
            })
        })
        .collect();
    serde_json::json!({ "RoleDetailList": roles, "Policies": policies }).to_string()
}

/// What each role used: `ACTIONS_PER_ROLE` actions, last in the window.
fn usage() -> Vec<Usage> {
    (0..ROLES)
        .map(|r| Usage {
            principal: format!("arn:aws:iam::111122223333:role/app/role-{r}"),
            kind: "Role".into(),
            account_id: "111122223333".into(),
            first_seen: 1_000,
            last_seen: 2_000,
            actions: (0..ACTIONS_PER_ROLE).map(|i| (action(r * 3 + i * 11), Some(1_000), Some(2_000))).collect(),
            ..Usage::default()
        })
        .collect()
}

/// The system allocator, counting live bytes and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            if new_size >= layout.size() {
                let live = LIVE.fetch_add(new_size - layout.size(), Ordering::Relaxed) + new_size - layout.size();
                PEAK.fetch_max(live, Ordering::Relaxed);
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns its result with (peak heap above the start, heap still live at the end above the start),
/// in MB.
fn measure<T>(f: impl FnOnce() -> T) -> (T, f64, f64) {
    let start = LIVE.load(Ordering::Relaxed);
    PEAK.store(start, Ordering::Relaxed);
    let out = f();
    let mb = |bytes: usize| bytes.saturating_sub(start) as f64 / 1e6;
    (out, mb(PEAK.load(Ordering::Relaxed)), mb(LIVE.load(Ordering::Relaxed)))
}

fn permissions(c: &mut Criterion) {
    let text = inventory_json();
    let (account, peak, kept) = measure(|| AccountInventory::from_json(&text, "bench").unwrap());
    eprintln!(
        "inventory: {} roles x {} policies ({} managed), {:.1} MB of JSON; heap peak {peak:.0} MB while reading, {kept:.0} MB kept",
        account.roles.len(),
        POLICIES_PER_ROLE,
        account.policies.len(),
        text.len() as f64 / 1e6,
    );
    let mut group = c.benchmark_group("inventory");
    group.sample_size(10).measurement_time(Duration::from_secs(20)).throughput(Throughput::Bytes(text.len() as u64));
    group.bench_function("parse_5000_roles", |b| b.iter(|| AccountInventory::from_json(&text, "bench").unwrap()));
    group.finish();

    let mut inventory = Inventory::default();
    inventory.insert(account);
    let usage = usage();
    let settings = Settings { as_of: 3_000, window_days: 90, data_events_logged: false, key_rotation_days: 90 };
    let keys = HashMap::new();
    let (reports, peak, kept) = measure(|| analyse(&inventory, &usage, &keys, &settings));
    let unused: usize = reports.iter().map(|r| r.unused_actions.len()).sum();
    let findings: usize = reports.iter().map(|r| r.findings.len()).sum();
    eprintln!(
        "findings: {} identities, {} principal-action pairs, {unused} unused patterns, {findings} findings; heap peak {peak:.0} MB, {kept:.0} MB in the reports",
        reports.len(),
        ROLES * ACTIONS_PER_ROLE,
    );
    drop(reports);
    let mut group = c.benchmark_group("analysis");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20))
        .throughput(Throughput::Elements((ROLES * ACTIONS_PER_ROLE) as u64));
    group.bench_function("findings_100k_pairs", |b| b.iter(|| analyse(&inventory, &usage, &keys, &settings)));
    group.finish();
}

criterion_group!(benches, permissions);
criterion_main!(benches);
