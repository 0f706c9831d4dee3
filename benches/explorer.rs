//! The explorer's server time on a large state: 100,000 identities × 20 actions (2M action rows), 20,000 alerts.
//! Groups `explorer/overview`, `explorer/identities_page` (default sort, a search, sorted by denied, a filter with a later page) and
//! `explorer/identity_page` (one identity: report, activity, grants, alerts, HTML). Target: under 100 ms each, but
//! for the unused-permissions filter, which analyses every identity.

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use rustc_hash::FxHashMap;
use trailwatch::config::Synchronous;
use trailwatch::state::{ActionDelta, Delta, PrincipalDelta};
use trailwatch::store::Store;
use trailwatch::ui::query::{IdentityFilter, IdentitySort};

const IDENTITIES: usize = 100_000;
const ACTIONS_EACH: usize = 20;
const ALERTS: usize = 20_000;
/// 2026-10-01.
const END: i64 = 1_790_812_800;

fn principal(i: usize) -> String {
    let account = 100_000_000_000u64 + (i % 20) as u64;
    match i % 10 {
        0..=5 => format!("arn:aws:iam::{account}:role/app/svc-{i}"),
        _ => format!("arn:aws:iam::{account}:user/user-{i}"),
    }
}

/// Writes the state in batches of 10,000 identities, as commits would.
fn build(path: &std::path::Path) {
    let mut store = Store::open(path, Synchronous::Normal).unwrap();
    let services = ["s3", "ec2", "iam", "sts", "kms", "lambda", "dynamodb", "sqs", "sns", "logs"];
    let verbs = ["Get", "List", "Describe", "Put", "Create", "Delete", "Update", "Tag", "Start", "Stop"];
    let names: Vec<String> =
        (0..400).map(|n| format!("{}:{}Thing{}", services[n % 10], verbs[(n / 10) % 10], n / 100)).collect();
    for batch in 0..IDENTITIES / 10_000 {
        let mut delta = Delta::default();
        for i in batch * 10_000..(batch + 1) * 10_000 {
            let last_seen = END - (i as i64 * 7919 % (200 * 86_400));
            let mut actions = FxHashMap::default();
            for a in 0..ACTIONS_EACH {
                let name = &names[(i * 31 + a * 17) % names.len()];
                let denied = u64::from(a % 7 == 0);
                actions.insert(
                    name.as_str().into(),
                    ActionDelta {
                        first_used: Some(last_seen - 86_400 * 30),
                        last_used: Some(last_seen),
                        uses: 1 + (i % 50) as u64,
                        last_denied: (denied > 0).then_some(last_seen),
                        denied,
                    },
                );
            }
            let p = PrincipalDelta {
                kind: if i % 10 < 6 { "AssumedRole" } else { "IAMUser" }.into(),
                account: format!("{}", 100_000_000_000u64 + (i % 20) as u64),
                first_seen: last_seen - 86_400 * 60,
                last_seen,
                events: 20 + (i % 1000) as u64,
                errors: (i % 13) as u64,
                denied: (ACTIONS_EACH as u64).div_ceil(7),
                last_source_ip: "203.0.113.7".into(),
                last_region: "eu-west-1".into(),
                last_user_agent: "aws-cli/2.15.30 Python/3.11.8 Linux/6.1.79".into(),
                console_login: None,
                sessions: Vec::new(),
                actions,
                regions: Vec::new(),
                days: (0..10).map(|d| (last_seen.div_euclid(86_400) - d * 3, 2 + d as u64)).collect(),
            };
            delta.principals.insert(principal(i).into(), p);
        }
        store.commit(&delta, &[], 0, []).unwrap();
    }
    let conn = store.connection();
    let tx = conn.unchecked_transaction().unwrap();
    {
        let mut insert = tx
            .prepare("INSERT INTO alerts (id, rule, severity, event_time, raised_at_ms, body, principal) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")
            .unwrap();
        for n in 0..ALERTS {
            let id = format!("alert-{n:06}");
            let who = principal(n * 5 % IDENTITIES);
            let time = trailwatch::time::format_rfc3339(END - n as i64 * 60);
            let body = serde_json::json!({
                "id": id, "fingerprint": format!("fp{n}"), "rule": "unauthorized-api-calls",
                "title": "Unauthorized API calls", "severity": "medium", "principal": who,
                "account_id": "100000000000", "region": "eu-west-1", "source_ip": "203.0.113.7",
                "user_agent": "aws-cli/2", "event_ids": [format!("ev-{n}-a"), format!("ev-{n}-b")],
                "event_time": time, "first_seen": time, "count": 2,
                "summary": format!("{who} made 2 denied calls"), "details": {"error_code": "AccessDenied"}
            });
            insert
                .execute(rusqlite::params![
                    id,
                    "unauthorized-api-calls",
                    "medium",
                    END - n as i64 * 60,
                    0,
                    body.to_string(),
                    who
                ])
                .unwrap();
        }
    }
    tx.commit().unwrap();
}

fn explorer(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let started = std::time::Instant::now();
    build(&path);
    eprintln!(
        "state: {IDENTITIES} identities × {ACTIONS_EACH} actions, {ALERTS} alerts, {:.0} MB, built in {:.1} s",
        std::fs::metadata(&path).unwrap().len() as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    let store = Store::open_reader(&path).unwrap();
    let ui = trailwatch::ui::Ui {
        store_path: path.clone(),
        findings: Default::default(),
        permissions: Default::default(),
        inventory_files: Vec::new(),
        token: None,
        metrics: None,
        inventory: Default::default(),
    };
    let mut group = c.benchmark_group("explorer");
    group.sample_size(20).measurement_time(Duration::from_secs(10));
    let overview = trailwatch::ui::overview_page(&store, &ui).unwrap();
    assert!(overview.contains("Events per hour"));
    group.bench_function("overview", |b| b.iter(|| trailwatch::ui::overview_page(&store, &ui).unwrap()));
    let filters = [
        ("identities_page/default", IdentityFilter::default()),
        ("identities_page/search", IdentityFilter { search: "user-123".into(), ..Default::default() }),
        ("identities_page/by_denied", IdentityFilter { sort: IdentitySort::Denied, ..Default::default() }),
        (
            "identities_page/kind_account_page_40",
            IdentityFilter { kind: "IAMUser".into(), account: "100000000007".into(), page: 40, ..Default::default() },
        ),
        ("identities_page/has_alerts", IdentityFilter { has_alerts: true, ..Default::default() }),
    ];
    for (name, filter) in filters {
        let html = trailwatch::ui::identities_page(&store, &ui, &filter).unwrap();
        assert!(html.contains("data-principal="), "{name}: no rows");
        group.bench_function(name, |b| b.iter(|| trailwatch::ui::identities_page(&store, &ui, &filter).unwrap()));
    }
    let one = principal(4240);
    let html = trailwatch::ui::identity_page(&store, &ui, &one, "").unwrap().unwrap();
    assert_eq!(html.matches("data-action=").count(), ACTIONS_EACH);
    assert!(html.contains("data-alert-id="));
    group.bench_function("identity_page", |b| b.iter(|| trailwatch::ui::identity_page(&store, &ui, &one, "").unwrap()));
    // The one filter whose cost grows with the state: every identity's usage against the inventory (none here,
    // so every identity is analysed as seen-only).
    group.sample_size(10);
    let unused = IdentityFilter { unused_permissions: true, ..Default::default() };
    group.bench_function("identities_page/unused_permissions", |b| {
        b.iter(|| trailwatch::ui::identities_page(&store, &ui, &unused).unwrap())
    });
    group.finish();
}

criterion_group!(benches, explorer);
criterion_main!(benches);
