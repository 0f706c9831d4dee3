//! What the explorer's pages read from the state: one page of identities under filters, the overview's counts,
//! the alerts under filters. Server-side paging: a page reads its rows and a count, never the whole table.

use rusqlite::{Connection, params_from_iter, types::Value};

use crate::alert::Alert;
use crate::time::Timestamp;

const DAY: i64 = 86_400;

/// Rows per page of identities or alerts.
pub const PAGE_ROWS: usize = 50;

/// How the identities page sorts (descending; the principal breaks ties).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IdentitySort {
    #[default]
    LastSeen,
    Events,
    Errors,
    Denied,
}

impl IdentitySort {
    pub const ALL: [(IdentitySort, &'static str, &'static str); 4] = [
        (IdentitySort::LastSeen, "last_seen", "Last seen"),
        (IdentitySort::Events, "events", "Events"),
        (IdentitySort::Errors, "errors", "Errors"),
        (IdentitySort::Denied, "denied", "Denied"),
    ];

    pub fn parse(text: &str) -> Option<IdentitySort> {
        IdentitySort::ALL.iter().find(|(_, name, _)| *name == text).map(|(sort, _, _)| *sort)
    }

    pub fn name(self) -> &'static str {
        IdentitySort::ALL.iter().find(|(sort, _, _)| *sort == self).map_or("last_seen", |(_, name, _)| name)
    }
}

/// The identities page's filters, as its URL carries them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdentityFilter {
    /// A substring of the principal, case-insensitive.
    pub search: String,
    pub kind: String,
    pub account: String,
    /// No event for at least this many days.
    pub inactive_days: Option<i64>,
    pub has_alerts: bool,
    /// Has a long-term access key not used for `access_key_unused_days`, or (by the inventory) one older than
    /// `permissions.key_rotation_days`.
    pub stale_key: bool,
    /// Holds permissions it did not use in the window (from the inventory; the page works the set out).
    pub unused_permissions: bool,
    pub sort: IdentitySort,
    /// Zero-based page number.
    pub page: usize,
}

/// One row of the identities page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityRow {
    pub principal: String,
    pub kind: String,
    pub account_id: String,
    pub last_seen: Timestamp,
    pub events: u64,
    pub errors: u64,
    pub denied: u64,
}

/// A page of identities and how many match in all.
/// `holding_unused`: with [`IdentityFilter::unused_permissions`], the principals that hold unused permissions;
/// `not_rotated`: the users whose active keys the inventory says are older than the rotation period.
pub fn identities(
    conn: &Connection,
    filter: &IdentityFilter,
    now: Timestamp,
    key_unused_days: i64,
    holding_unused: &[String],
    not_rotated: &[String],
) -> rusqlite::Result<(Vec<IdentityRow>, u64)> {
    let mut conditions = Vec::new();
    let mut values: Vec<Value> = Vec::new();
    if filter.unused_permissions {
        // One parameter however many: a JSON array, read back as rows.
        values.push(Value::Text(serde_json::to_string(holding_unused).expect("strings serialize")));
        conditions.push(format!("p.principal IN (SELECT value FROM json_each(?{}))", values.len()));
    }
    if !filter.search.is_empty() {
        // LIKE ignores ASCII case without lowering every principal; the search's own `%` and `_` are escaped.
        let escaped = filter.search.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
        values.push(Value::Text(format!("%{escaped}%")));
        conditions.push(format!("p.principal LIKE ?{} ESCAPE '\\'", values.len()));
    }
    if !filter.kind.is_empty() {
        values.push(Value::Text(filter.kind.clone()));
        conditions.push(format!("p.kind = ?{}", values.len()));
    }
    if !filter.account.is_empty() {
        values.push(Value::Text(filter.account.clone()));
        conditions.push(format!("p.account_id = ?{}", values.len()));
    }
    if let Some(days) = filter.inactive_days {
        values.push(Value::Integer(now - days * DAY));
        conditions.push(format!("p.last_seen < ?{}", values.len()));
    }
    if filter.has_alerts {
        conditions.push("p.principal IN (SELECT principal FROM alerts)".to_owned());
    }
    if filter.stale_key {
        values.push(Value::Integer(now - key_unused_days * DAY));
        values.push(Value::Text(serde_json::to_string(not_rotated).expect("strings serialize")));
        conditions.push(format!(
            "(EXISTS (SELECT 1 FROM access_keys k WHERE k.principal = p.principal AND k.key_id LIKE 'AKIA%' \
             AND k.last_used < ?{}) OR p.principal IN (SELECT value FROM json_each(?{})))",
            values.len() - 1,
            values.len()
        ));
    }
    let filter_sql = if conditions.is_empty() { String::new() } else { format!("WHERE {}", conditions.join(" AND ")) };
    let order = match filter.sort {
        IdentitySort::LastSeen => "p.last_seen",
        IdentitySort::Events => "p.events",
        IdentitySort::Errors => "p.errors",
        IdentitySort::Denied => "p.denied",
    };
    let total: i64 = conn.query_row(
        &format!("SELECT count(*) FROM principals p {filter_sql}"),
        params_from_iter(values.iter()),
        |r| r.get(0),
    )?;
    values.push(Value::Integer(PAGE_ROWS as i64));
    values.push(Value::Integer((filter.page * PAGE_ROWS) as i64));
    // A count and a top-N sort: two scans, cheaper than a window count, which keeps every row to sort them all.
    let sql = format!(
        "SELECT p.principal, p.kind, p.account_id, p.last_seen, p.events, p.errors, p.denied
         FROM principals p {filter_sql} ORDER BY {order} DESC, p.principal LIMIT ?{} OFFSET ?{}",
        values.len() - 1,
        values.len()
    );
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt
        .query_map(params_from_iter(values.iter()), |r| {
            Ok(IdentityRow {
                principal: r.get(0)?,
                kind: r.get(1)?,
                account_id: r.get(2)?,
                last_seen: r.get(3)?,
                events: r.get::<_, i64>(4)? as u64,
                errors: r.get::<_, i64>(5)? as u64,
                denied: r.get::<_, i64>(6)? as u64,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok((rows, total as u64))
}

/// The identity kinds the filter offers: CloudTrail's `userIdentity.type` values and the state's own (`Role` for
/// an assumed role keyed on its role). A fixed list: reading the distinct kinds would scan every identity.
pub const KINDS: [&str; 12] = [
    "AWSAccount",
    "AWSService",
    "AssumedRole",
    "Directory",
    "FederatedUser",
    "IAMUser",
    "IdentityCenterUser",
    "Role",
    "Root",
    "SAMLUser",
    "Unknown",
    "WebIdentityUser",
];

/// The overview's figures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overview {
    /// What the state gauges show: identities, inactive ones (as the findings count them), files applied and
    /// quarantined, the newest event.
    pub stats: crate::metrics::StateStats,
    pub active_day: u64,
    pub active_month: u64,
    pub root_identities: u64,
    /// The newest root event, if any.
    pub root_last_seen: Option<Timestamp>,
    /// Alerts by severity (name, count), most severe first.
    pub alerts_by_severity: Vec<(String, u64)>,
    /// Alerts per day for the 14 days to the newest event, oldest first (day start, count per severity in
    /// `SEVERITIES` order). Charts end at the newest event rather than now, so that a replayed history shows.
    pub alerts_per_day: Vec<(Timestamp, [u64; 5])>,
    /// Events per hour for the 7 days (168 hours) to the newest event, oldest first (hour start, events).
    pub events_per_hour: Vec<(Timestamp, u64)>,
    /// Files rejected as bad input since this process started (the state keeps applied files only); `None` when
    /// the process ingests nothing (`trailwatch serve`).
    pub files_rejected: Option<u64>,
    /// The periodic findings now, by rule (inactive identities, unused access keys), as `report findings` gives them.
    pub findings_by_rule: Vec<(&'static str, u64)>,
}

/// Severities in the order pages show them.
pub const SEVERITIES: [&str; 5] = ["critical", "high", "medium", "low", "informational"];

pub fn overview(
    conn: &Connection,
    now: Timestamp,
    findings: &crate::config::FindingsConfig,
) -> rusqlite::Result<Overview> {
    let inactive_days = findings.inactive_days;
    let since = |sql: &str, value: i64| -> rusqlite::Result<u64> {
        conn.query_row(sql, [value], |r| r.get::<_, i64>(0)).map(|n| n as u64)
    };
    let mut out = Overview {
        stats: crate::report::state_stats(conn, now, inactive_days)?,
        active_day: since("SELECT count(*) FROM principals WHERE last_seen >= ?1", now - DAY)?,
        active_month: since("SELECT count(*) FROM principals WHERE last_seen >= ?1", now - 30 * DAY)?,
        ..Overview::default()
    };
    (out.root_identities, out.root_last_seen) =
        conn.query_row("SELECT count(*), max(last_seen) FROM principals WHERE kind = 'Root'", [], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get(1)?))
        })?;
    let mut by_severity = conn.prepare("SELECT severity, count(*) FROM alerts GROUP BY severity")?;
    let counts: Vec<(String, i64)> =
        by_severity.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
    for severity in SEVERITIES {
        let n = counts.iter().find(|(s, _)| s == severity).map_or(0, |(_, n)| *n as u64);
        out.alerts_by_severity.push((severity.to_owned(), n));
    }
    out.findings_by_rule = crate::findings::counts(conn, now, findings)?;
    let end = out.stats.newest_event.unwrap_or(now);
    out.events_per_hour = events_per_hour(conn, end)?;
    let today = end - end.rem_euclid(DAY);
    let first_day = today - 13 * DAY;
    out.alerts_per_day = (0..14).map(|d| (first_day + d * DAY, [0; 5])).collect();
    let mut per_day =
        conn.prepare("SELECT event_time / 86400, severity, count(*) FROM alerts WHERE event_time >= ?1 GROUP BY 1, 2")?;
    let rows =
        per_day.query_map([first_day], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?)))?;
    for row in rows {
        let (day, severity, n) = row?;
        let at = usize::try_from(day * DAY - first_day).ok().map(|offset| offset / DAY as usize);
        let severity = SEVERITIES.iter().position(|s| *s == severity);
        if let (Some(at), Some(severity)) = (at, severity)
            && let Some((_, counts)) = out.alerts_per_day.get_mut(at)
        {
            counts[severity] += n as u64;
        }
    }
    Ok(out)
}

/// Events per hour for the 168 hours to the hour of `end`, every hour present (zero when nothing happened).
pub fn events_per_hour(conn: &Connection, end: Timestamp) -> rusqlite::Result<Vec<(Timestamp, u64)>> {
    let last = end.div_euclid(3600);
    let first = last - 167;
    let mut out: Vec<(Timestamp, u64)> = (first..=last).map(|h| (h * 3600, 0)).collect();
    let mut stmt = conn.prepare("SELECT hour, events FROM event_hours WHERE hour BETWEEN ?1 AND ?2")?;
    for row in stmt.query_map([first, last], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))? {
        let (hour, events) = row?;
        out[(hour - first) as usize].1 = events as u64;
    }
    Ok(out)
}

/// Events per UTC day of one principal for the 90 days to the day of `end`, every day present.
pub fn activity_per_day(conn: &Connection, principal: &str, end: Timestamp) -> rusqlite::Result<Vec<(Timestamp, u64)>> {
    let last = end.div_euclid(DAY);
    let first = last - 89;
    let mut out: Vec<(Timestamp, u64)> = (first..=last).map(|d| (d * DAY, 0)).collect();
    let mut stmt = conn.prepare(
        "SELECT d.day, d.events FROM principal_days d JOIN principals p ON p.id = d.principal_id
         WHERE p.principal = ?1 AND d.day BETWEEN ?2 AND ?3",
    )?;
    for row in
        stmt.query_map(rusqlite::params![principal, first, last], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?
    {
        let (day, events) = row?;
        out[(day - first) as usize].1 = events as u64;
    }
    Ok(out)
}

/// The alerts page's filters, as its URL carries them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertFilter {
    pub severity: String,
    pub rule: String,
    pub account: String,
    pub principal: String,
    pub page: usize,
}

/// A page of stored alerts, newest raised first, and how many match in all. Unreadable rows are left out (and
/// logged, as the API does).
pub fn alerts(conn: &Connection, filter: &AlertFilter) -> rusqlite::Result<(Vec<Alert>, u64)> {
    let mut conditions = Vec::new();
    let mut values: Vec<Value> = Vec::new();
    for (column, value) in [
        ("severity", &filter.severity),
        ("rule", &filter.rule),
        ("json_extract(body, '$.account_id')", &filter.account),
        ("principal", &filter.principal),
    ] {
        if !value.is_empty() {
            values.push(Value::Text(value.clone()));
            conditions.push(format!("{column} = ?{}", values.len()));
        }
    }
    let filter_sql = if conditions.is_empty() { String::new() } else { format!("WHERE {}", conditions.join(" AND ")) };
    let total: i64 =
        conn.query_row(&format!("SELECT count(*) FROM alerts {filter_sql}"), params_from_iter(values.iter()), |r| {
            r.get(0)
        })?;
    values.push(Value::Integer(PAGE_ROWS as i64));
    values.push(Value::Integer((filter.page * PAGE_ROWS) as i64));
    let sql = format!(
        "SELECT id, body FROM alerts {filter_sql} ORDER BY rowid DESC LIMIT ?{} OFFSET ?{}",
        values.len() - 1,
        values.len()
    );
    let out = crate::store::outbox::select(&sql, conn, params_from_iter(values.iter()))?;
    Ok((out, total as u64))
}

/// The rules that raised stored alerts, for the filter's choices.
pub fn alert_rules(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    conn.prepare("SELECT DISTINCT rule FROM alerts ORDER BY rule")?.query_map([], |r| r.get(0))?.collect()
}
