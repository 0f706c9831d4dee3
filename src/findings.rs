//! Periodic findings from the state, relative to a reference time: identities with no activity for
//! `findings.inactive_days` (`inactive-identity`) and long-term access keys unused for
//! `findings.access_key_unused_days` (`access-key-unused`).
//!
//! Each finding becomes an alert whose id is derived from the rule, the subject and the subject's last use, so a
//! finding is raised once per inactivity episode: the daemon's next tick finds the same id and raises nothing,
//! and only fresh activity followed by a new lapse raises it again.
//!
//! With an inventory (`[inventory] files`), the permission findings are raised on the same schedule and in the
//! same way (see [`permission_alert`] for what makes each one's id).

use rusqlite::{Connection, params};
use serde::Serialize;

use crate::alert::{Alert, Derived};
use crate::config::FindingsConfig;
use crate::detect::rule::Severity;
use crate::time::{Timestamp, format_rfc3339};

use crate::detect::catalogue::state_rule;
pub use crate::detect::catalogue::{ACCESS_KEY_UNUSED, INACTIVE_IDENTITY};

/// One finding. The JSON shape is what `report findings --format json` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub rule: &'static str,
    /// The principal, or the access key id.
    pub subject: String,
    pub principal: String,
    pub account_id: Option<String>,
    pub kind: String,
    pub last_used: String,
    pub days_unused: i64,
}

/// The principals `inactive-identity` finds (`?1`: the time before which the last event lies).
const INACTIVE: &str = "last_seen <= ?1 AND kind NOT IN ('AWSService', 'AWSAccount')";
/// The keys `access-key-unused` finds (`k`: `access_keys`; `?1` likewise).
const KEY_UNUSED: &str = "k.last_used <= ?1";

/// How many findings [`compute`] would give, by rule, without building them (the explorer's overview).
pub fn counts(
    conn: &Connection,
    as_of: Timestamp,
    config: &FindingsConfig,
) -> rusqlite::Result<Vec<(&'static str, u64)>> {
    let day = 86_400;
    let count = |sql: String, before: Timestamp| conn.query_row(&sql, [before], |r| r.get::<_, i64>(0));
    let inactive =
        count(format!("SELECT count(*) FROM principals WHERE {INACTIVE}"), as_of - config.inactive_days * day)?;
    let keys = count(
        format!("SELECT count(*) FROM access_keys k WHERE {KEY_UNUSED}"),
        as_of - config.access_key_unused_days * day,
    )?;
    Ok([(INACTIVE_IDENTITY, inactive), (ACCESS_KEY_UNUSED, keys)]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(rule, n)| (rule, n as u64))
        .collect())
}

/// Every finding at `as_of`, sorted by rule and subject. AWS services and accounts are not identities one could
/// remove, so they are left out of `inactive-identity`.
pub fn compute(conn: &Connection, as_of: Timestamp, config: &FindingsConfig) -> rusqlite::Result<Vec<Finding>> {
    let mut out = Vec::new();
    let day = 86_400;
    let mut stmt = conn.prepare(&format!(
        "SELECT principal, kind, account_id, last_seen FROM principals WHERE {INACTIVE} ORDER BY principal"
    ))?;
    let rows = stmt.query_map([as_of - config.inactive_days * day], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, i64>(3)?))
    })?;
    for row in rows {
        let (principal, kind, account, last_seen) = row?;
        out.push(Finding {
            rule: INACTIVE_IDENTITY,
            subject: principal.clone(),
            principal,
            account_id: Some(account).filter(|a| !a.is_empty()),
            kind,
            last_used: format_rfc3339(last_seen),
            days_unused: (as_of - last_seen) / day,
        });
    }
    let mut stmt = conn.prepare(&format!(
        "SELECT k.key_id, k.principal, coalesce(p.account_id, ''), coalesce(p.kind, ''), k.last_used
         FROM access_keys k LEFT JOIN principals p ON p.principal = k.principal
         WHERE {KEY_UNUSED} ORDER BY k.key_id"
    ))?;
    let rows = stmt.query_map([as_of - config.access_key_unused_days * day], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, i64>(4)?,
        ))
    })?;
    for row in rows {
        let (key, principal, account, kind, last_used) = row?;
        out.push(Finding {
            rule: ACCESS_KEY_UNUSED,
            subject: key,
            principal,
            account_id: Some(account).filter(|a| !a.is_empty()),
            kind,
            last_used: format_rfc3339(last_used),
            days_unused: (as_of - last_used) / day,
        });
    }
    Ok(out)
}

/// The alert for a finding: its id depends on the rule, the subject and the last use only.
pub fn to_alert(finding: &Finding, as_of: Timestamp) -> Alert {
    let (title, severity) = state_rule(finding.rule);
    let what = "has not been used";
    Alert::derived(Derived {
        rule: finding.rule,
        subject: &finding.subject,
        anchor: &finding.last_used,
        title,
        severity,
        principal: finding.principal.clone(),
        account_id: finding.account_id.clone(),
        time: crate::time::parse_rfc3339(&finding.last_used).unwrap_or(as_of),
        summary: format!(
            "{title}: {} {what} for {} days (last used {})",
            finding.subject, finding.days_unused, finding.last_used
        ),
        details: serde_json::json!({
            "subject": finding.subject,
            "kind": finding.kind,
            "days_unused": finding.days_unused,
            "as_of": format_rfc3339(as_of),
        }),
    })
}

/// What the periodic findings look at: the state thresholds, and the inventory with the permission settings.
#[derive(Debug, Clone, Default)]
pub struct PeriodicConfig {
    pub findings: FindingsConfig,
    pub permissions: crate::config::PermissionsConfig,
    pub inventory: crate::config::InventoryConfig,
}

/// The alert for a permission finding. Its id is the rule, the subject and what the finding is about, so each
/// is raised once: `unused-identity` and `access-key-unused` until the subject is used again (its last use, or
/// `never`; the same id as the state's `access-key-unused` for a key both know), `password-unused` until the next
/// console login, `access-key-not-rotated` once per key (a rotated key is a new key), and `unused-permissions`
/// once per window-long period.
pub fn permission_alert(
    finding: &crate::permissions::analysis::PermissionFinding,
    report: &crate::permissions::analysis::PermissionReport,
    settings: &crate::permissions::analysis::Settings,
) -> Alert {
    use crate::permissions::analysis::{
        ACCESS_KEY_NOT_ROTATED, ACCESS_KEY_UNUSED, PASSWORD_UNUSED, UNUSED_IDENTITY, UNUSED_PERMISSIONS,
    };
    let key = report.access_keys.iter().find(|k| k.id == finding.subject);
    let never = || "never".to_owned();
    let anchor = match finding.rule {
        UNUSED_IDENTITY => report.last_used.clone().unwrap_or_else(never),
        UNUSED_PERMISSIONS => {
            let period = settings.as_of.div_euclid(settings.window_days.max(1) * 86_400);
            format!("period-{period}")
        }
        ACCESS_KEY_UNUSED => key.and_then(|k| k.last_used.clone()).unwrap_or_else(never),
        ACCESS_KEY_NOT_ROTATED => key.and_then(|k| k.created.clone()).unwrap_or_else(never),
        PASSWORD_UNUSED => report.last_console_login.clone().unwrap_or_else(never),
        other => other.to_owned(),
    };
    let (title, severity) = state_rule(finding.rule);
    Alert::derived(Derived {
        rule: finding.rule,
        subject: &finding.subject,
        anchor: &anchor,
        title,
        severity,
        principal: report.principal.clone(),
        account_id: report.account_id.clone(),
        time: report.last_used.as_deref().and_then(crate::time::parse_rfc3339).unwrap_or(settings.as_of),
        summary: format!("{title}: {}", finding.summary),
        details: serde_json::json!({
            "subject": finding.subject,
            "kind": report.kind,
            "window_days": settings.window_days,
            "as_of": format_rfc3339(settings.as_of),
            "unused_services": report.unused_services,
            "unused_actions": report.unused_actions.iter().map(|u| &u.pattern).collect::<Vec<_>>(),
        }),
    })
}

/// The permission findings at `as_of` as alerts; none without an inventory. An inventory that cannot be read
/// is logged and skipped, so the state's findings still go out.
fn permission_alerts(conn: &Connection, as_of: Timestamp, config: &PeriodicConfig) -> rusqlite::Result<Vec<Alert>> {
    let (inventory, problems) = match crate::iam::load(&config.inventory.files, Some(conn)) {
        Ok(loaded) => loaded,
        Err(err) => {
            tracing::error!("inventory: {err}; permission findings skipped");
            return Ok(Vec::new());
        }
    };
    for problem in problems {
        tracing::warn!("inventory: {problem}");
    }
    if inventory.accounts.is_empty() {
        return Ok(Vec::new());
    }
    let settings = crate::permissions::analysis::Settings {
        as_of,
        window_days: config.permissions.window_days,
        data_events_logged: config.permissions.data_events_logged,
        key_rotation_days: config.permissions.key_rotation_days,
    };
    let (usage, keys) = crate::iam::usage(conn)?;
    let reports = crate::permissions::analysis::analyse(&inventory, &usage, &keys, &settings);
    Ok(reports.iter().flat_map(|r| r.findings.iter().map(|f| permission_alert(f, r, &settings))).collect())
}

/// Raises the findings at `as_of` as alerts (one transaction): `route` gives the sinks of an alert, or `None`
/// when a suppression drops it. Returns the severities of the alerts that were new.
pub fn raise(
    conn: &mut Connection,
    as_of: Timestamp,
    config: &PeriodicConfig,
    route: &dyn Fn(&Alert) -> Option<Vec<String>>,
    raised_at_ms: i64,
) -> rusqlite::Result<Vec<Severity>> {
    let alerts = periodic_alerts(conn, as_of, config)?;
    insert(conn, alerts, route, raised_at_ms)
}

/// The periodic findings at `as_of` as alerts: the state's, then the permission findings.
fn periodic_alerts(conn: &Connection, as_of: Timestamp, config: &PeriodicConfig) -> rusqlite::Result<Vec<Alert>> {
    let mut alerts: Vec<Alert> = compute(conn, as_of, &config.findings)?.iter().map(|f| to_alert(f, as_of)).collect();
    alerts.extend(permission_alerts(conn, as_of, config)?);
    Ok(alerts)
}

/// Stores alerts raised outside a batch (one transaction), each once: `route` gives its sinks, or `None` when a
/// suppression drops it. Returns the severities of the alerts that were new.
pub fn insert(
    conn: &mut Connection,
    alerts: Vec<Alert>,
    route: &dyn Fn(&Alert) -> Option<Vec<String>>,
    raised_at_ms: i64,
) -> rusqlite::Result<Vec<Severity>> {
    let tx = conn.transaction()?;
    let mut new = Vec::new();
    {
        let mut insert = tx.prepare_cached(
            "INSERT OR IGNORE INTO alerts (id, rule, severity, event_time, raised_at_ms, body, principal)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        let mut enqueue =
            tx.prepare_cached("INSERT OR IGNORE INTO outbox (alert_id, sink, next_attempt_ms) VALUES (?1, ?2, ?3)")?;
        for alert in alerts {
            let Some(sinks) = route(&alert) else { continue };
            let body = serde_json::to_string(&alert).expect("alerts serialize");
            let inserted = insert.execute(params![
                alert.id,
                alert.rule,
                alert.severity.as_str(),
                alert.event_time,
                raised_at_ms,
                body,
                alert.principal
            ])?;
            if inserted == 1 {
                new.push(alert.severity);
                for sink in sinks {
                    enqueue.execute(params![alert.id, sink, raised_at_ms])?;
                }
            }
        }
    }
    tx.commit()?;
    Ok(new)
}

/// Raises the periodic findings at `as_of` through `alerting` (suppressions and routing as for rule alerts), and
/// wakes the deliverers when any is new; returns how many were new.
pub fn raise_periodic(
    alerting: &crate::alert::stage::Alerting,
    conn: &mut Connection,
    as_of: Timestamp,
    config: &PeriodicConfig,
    metrics: &crate::metrics::Metrics,
) -> rusqlite::Result<u64> {
    let alerts = periodic_alerts(conn, as_of, config)?;
    let new = raise_through(alerting, conn, alerts, metrics)?;
    metrics.findings_runs.inc();
    Ok(new)
}

/// Raises alerts found outside a batch through `alerting` (suppressions and routing as for rule alerts), and
/// wakes the deliverers when any is new; returns how many were new.
pub fn raise_through(
    alerting: &crate::alert::stage::Alerting,
    conn: &mut Connection,
    alerts: Vec<Alert>,
    metrics: &crate::metrics::Metrics,
) -> rusqlite::Result<u64> {
    let route = |alert: &Alert| {
        let sinks = alerting.route(alert);
        if sinks.is_none() {
            metrics.alerts_suppressed.inc();
        }
        sinks
    };
    let alerts = alerts.into_iter().filter(|a| alerting.raises(&a.rule)).collect();
    let new = insert(conn, alerts, &route, crate::time::now_ms())?;
    for severity in &new {
        metrics.alerts_raised.with_label_values(&[severity.as_str()]).inc();
    }
    if !new.is_empty() {
        alerting.wake.send_modify(|n| *n = n.wrapping_add(1));
    }
    Ok(new.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{LedgerEntry, LedgerKey, Store};

    /// The overview's counts are what the findings themselves add up to, rule by rule, at several times.
    #[test]
    fn counts_agree_with_the_findings() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("s.db"), crate::config::Synchronous::Normal).unwrap();
        let event = |time: &str, kind: &str, arn: &str, key: &str| {
            format!(
                r#"{{"eventTime":"{time}","eventSource":"iam.amazonaws.com","eventName":"ListUsers","sourceIPAddress":"198.51.100.1","userIdentity":{{"type":"{kind}","arn":"{arn}","accountId":"1","accessKeyId":"{key}"}}}}"#
            )
        };
        let records = [
            event("2026-01-01T00:00:00Z", "IAMUser", "arn:aws:iam::1:user/old", "AKIAOLDOLDOLDOLDOLD1"),
            event("2026-06-01T00:00:00Z", "IAMUser", "arn:aws:iam::1:user/mid", "AKIAMIDMIDMIDMIDMID1"),
            event("2026-09-30T00:00:00Z", "IAMUser", "arn:aws:iam::1:user/new", "AKIANEWNEWNEWNEWNEW1"),
        ];
        let delta = crate::state::tests::delta_of(&format!(r#"{{"Records":[{}]}}"#, records.join(",")));
        let key = LedgerKey { source: "file:/f.json".into(), version: "1".into() };
        store.commit(&delta, &[LedgerEntry { key: &key, records: 3 }], 0, []).unwrap();
        let config = FindingsConfig::default();
        for as_of in ["2026-10-01", "2027-01-01", "2027-06-01", "2028-01-01"] {
            let as_of = crate::time::parse_date(as_of).unwrap();
            let mut want: Vec<(&str, u64)> = Vec::new();
            for finding in compute(store.connection(), as_of, &config).unwrap() {
                match want.iter_mut().find(|(rule, _)| *rule == finding.rule) {
                    Some((_, n)) => *n += 1,
                    None => want.push((finding.rule, 1)),
                }
            }
            assert_eq!(counts(store.connection(), as_of, &config).unwrap(), want, "as of {as_of}");
        }
    }
}
