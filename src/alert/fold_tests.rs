//! Folding matches in place on the workers equals folding the matches written out.

use serde_json::json;

use crate::alert::UnitAlerts;
use crate::detect::builtin_tests::{ALICE, record, root};
use crate::detect::ruleset::{CandidateCache, RuleSet};
use crate::parse::Parser;

/// Workers fold most matches in place (`UnitAlerts::fold_view`), writing a `Match` only for a group's first and
/// newest events; the result must be what folding every match written out gives (`UnitAlerts::fold`): the same
/// groups, counts, event ids, newest context and correlation hits.
#[test]
fn folding_in_place_equals_folding_written_matches() {
    let mut rules = RuleSet::load(true, &[]).0;
    // A dry-run rule is only counted either way.
    assert!(rules.set_dry_run(&["console-login-without-mfa".to_owned()]).is_empty());
    let mut records = Vec::new();
    for i in 0..120u32 {
        // Out of time order, two hours (two dedup buckets), three source IPs, two roots and a user; events `i` and
        // `i + 60` tie on everything but their id and name (the newest context is then the first one seen).
        let minute = (i * 37) % 60;
        let time = format!("2026-10-01T{:02}:{minute:02}:00Z", 10 + i % 2);
        let id = format!("00000000-0000-0000-0000-{:012}", (i * 7919) % 1000);
        let ip = format!("198.51.100.{}", i % 3);
        let who = match i % 3 {
            0 => root(),
            1 => json!({"type": "Root", "arn": "arn:aws:iam::222222222222:root", "accountId": "222222222222"}),
            _ => json!({"type": "IAMUser", "arn": ALICE, "accountId": "111111111111", "userName": "alice"}),
        };
        let name = if i < 60 { "ListUsers" } else { "GetUser" };
        let mut overrides =
            json!({"eventTime": time, "eventID": id, "eventName": name, "sourceIPAddress": ip, "userIdentity": who});
        match i % 5 {
            // Feeds the unauthorized-api-calls correlation: kept whole.
            0 => overrides["errorCode"] = json!("AccessDenied"),
            1 => {
                overrides["eventSource"] = json!("signin.amazonaws.com");
                overrides["eventName"] = json!("ConsoleLogin");
                overrides["additionalEventData"] = json!({"MFAUsed": "No"});
                overrides["responseElements"] = json!({"ConsoleLogin": "Success"});
            }
            _ => {}
        }
        records.push(record(overrides));
    }
    let file = json!({ "Records": records }).to_string();
    let (mut in_place, mut written) = (UnitAlerts::default(), UnitAlerts::default());
    let (mut spare, mut key, mut matches) = (Vec::new(), Vec::new(), Vec::new());
    let mut candidates = CandidateCache::default();
    Parser::default()
        .parse_unpadded(file.as_bytes(), &mut |event, rec| {
            rules.evaluate(event, rec, &mut candidates, &mut |m| {
                in_place.fold_view(&rules, m, &mut spare, &mut key);
                matches.push(m.to_match(&mut Vec::new()));
            });
        })
        .unwrap();
    assert!(matches.len() > 120, "{} matches", matches.len());
    written.fold(&rules, &mut matches, &mut Vec::new());
    assert_eq!(in_place, written);
}

/// An alert on a denied or failed attempt says so: its summary ends with the error code, and its details carry
/// it; an alert on a call that went through has neither.
#[test]
fn an_attempt_alert_names_its_outcome() {
    let rules = RuleSet::load(true, &[]).0;
    let leave = |error: Option<&str>| {
        let mut overrides = json!({"eventSource": "organizations.amazonaws.com", "eventName": "LeaveOrganization"});
        if let Some(code) = error {
            overrides["errorCode"] = json!(code);
        }
        json!({ "Records": [record(overrides)] }).to_string()
    };
    for (error, summary_end) in
        [(Some("AccessDeniedException"), " (failed: AccessDeniedException)"), (None, " in eu-west-1")]
    {
        let mut alerts = Vec::new();
        Parser::default()
            .parse_unpadded(leave(error).as_bytes(), &mut |event, rec| {
                rules.evaluate(event, rec, &mut CandidateCache::default(), &mut |m| {
                    let m = m.to_match(&mut Vec::new());
                    if rules.rule(m.rule).id == "organization-left" {
                        alerts.push(crate::alert::plan::from_match(&rules, &m));
                    }
                });
            })
            .unwrap();
        let [alert] = &alerts[..] else { panic!("{alerts:?}") };
        assert!(alert.summary.ends_with(summary_end), "{}", alert.summary);
        assert_eq!(alert.details.get("error_code").and_then(|c| c.as_str()), error);
    }
}

/// A `value_count` counts values: an event without the counted field is no hit (it could never change a count,
/// and before this it counted as the value `""`), while the same event still feeds an `event_count`.
#[test]
fn an_event_without_the_counted_field_is_no_value_count_hit() {
    let rules = RuleSet::load(true, &[]).0;
    let read = |params: serde_json::Value| {
        record(json!({"eventSource": "secretsmanager.amazonaws.com", "eventName": "GetSecretValue",
                      "requestParameters": params}))
    };
    let file =
        json!({"Records": [read(json!({"secretId": "a"})), read(json!(null)), read(json!({"versionStage": "x"})),
                                  record(json!({"errorCode": "AccessDenied"}))]})
        .to_string();
    let mut unit = UnitAlerts::default();
    let (mut spare, mut key) = (Vec::new(), Vec::new());
    Parser::default()
        .parse_unpadded(file.as_bytes(), &mut |event, rec| {
            rules.evaluate(event, rec, &mut CandidateCache::default(), &mut |m| {
                unit.fold_view(&rules, m, &mut spare, &mut key);
            })
        })
        .unwrap();
    let fed: Vec<(String, usize)> =
        unit.correlated.iter().map(|m| (rules.rule(m.rule).id.clone(), m.hits.len())).collect();
    assert_eq!(fed, [("secret-value-read".to_owned(), 1), ("unauthorized-api-call".to_owned(), 1)]);
}
