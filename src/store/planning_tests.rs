//! The alert planner's chunks, written by the store: together they are the batch's alerts.

use std::sync::Arc;

use crate::alert::UnitAlerts;
use crate::alert::stage::Alerting;
use crate::alert::write::AlertWrite;
use crate::config::Synchronous;
use crate::detect::ruleset::Match;
use crate::detect::ruleset::RuleSet;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::store::{LedgerEntry, LedgerKey};

/// Root used by `n` accounts, and a denied call (event id `denied`) feeding a correlation: `n` event-rule
/// groups and a hit.
fn planned(alerting: &Alerting, n: usize, denied: &str) {
    let rules = &alerting.rules;
    let root = rules.index_of("root-account-usage").unwrap();
    let mut matches: Vec<Match> = (0..n)
        .map(|i| {
            let (id, account) = (format!("e{i:03}"), format!("{:012}", 100 + i));
            let principal = format!("arn:aws:iam::{account}:root");
            let fields = [Some(&*id), Some("ListUsers"), Some(&*principal), Some(&*account), None, None, None];
            Match::new(root, 1_790_000_000 + i as i64, fields, &[])
        })
        .collect();
    let (rule, burst) = (rules.index_of("unauthorized-api-call").unwrap(), rules.index_of("unauthorized-api-calls"));
    let hit = (burst.unwrap(), "arn:aws:iam::1:user/u", None);
    let fields = [Some(denied), Some("GetUser"), Some("arn:aws:iam::1:user/u"), Some("1"), None, None, None];
    matches.push(Match::new(rule, 1_790_000_000, fields, &[hit]));
    let mut unit = UnitAlerts::default();
    unit.fold(rules, &mut matches, &mut Vec::new());
    alerting.observe(unit);
}

/// The planner hands a batch's alerts over in chunks; together they are the batch's alerts, the last chunk
/// (and only it) is marked and carries the correlation log, and the store writes every chunk.
#[test]
fn a_batch_taken_in_chunks_is_the_batch_taken_whole() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("s.db"), Synchronous::Normal).unwrap();
    let rules = Arc::new(RuleSet::load(true, &[]).0);
    let alerting =
        |store: &Store| Alerting::new(Arc::clone(&rules), Vec::new(), &[], store.correlation_windows(&rules).unwrap());
    let metrics = Metrics::new();
    let (whole, chunked) = (alerting(&store), alerting(&store));
    planned(&whole, 10, "d1");
    planned(&chunked, 10, "d1");
    let mut expected: Vec<String> = whole.take_write(7, &metrics).alerts.iter().map(|a| a.0.id.clone()).collect();
    expected.sort();
    assert_eq!(expected.len(), 10);

    let mut chunks = Vec::new();
    chunked.take_write_in_chunks(7, &metrics, 3, &mut |chunk, last| {
        chunks.push((chunk, last));
        true
    });
    let sizes: Vec<(usize, bool, bool)> =
        chunks.iter().map(|(c, last)| (c.alerts.len(), *last, c.hits.log.is_empty())).collect();
    // The denied call's hit is logged with the last chunk.
    assert_eq!(sizes, [(3, false, true), (3, false, true), (3, false, true), (1, true, false)]);

    // The store writes each chunk as the source hands it over, and returns them together. (Another denied
    // call: the same one again would be the same event, which a window counts once.)
    planned(&chunked, 10, "d2");
    let mut chunks = Vec::new();
    chunked.take_write_in_chunks(8, &metrics, 4, &mut |chunk, _| {
        chunks.push(chunk);
        true
    });
    let key = LedgerKey { source: "file:/f.json".into(), version: "1".into() };
    let outcome = store.commit(&Default::default(), &[LedgerEntry { key: &key, records: 0 }], 0, &chunks).unwrap();
    let mut written = AlertWrite::default();
    for chunk in chunks {
        written.append(chunk);
    }
    let mut got: Vec<String> = written.alerts.iter().map(|a| a.0.id.clone()).collect();
    got.sort();
    assert_eq!(got, expected);
    assert_eq!(outcome.new, [true; 10]);
    // The planner serialized each chunk's alerts; each stored body is its own alert's.
    for (alert, _, _) in &written.alerts {
        let body: String =
            store.connection().query_row("SELECT body FROM alerts WHERE id = ?1", [&alert.id], |r| r.get(0)).unwrap();
        assert_eq!(body, serde_json::to_string(alert).unwrap());
    }
    assert!(!written.hits.log.is_empty(), "the last chunk's correlation log is kept");
}
