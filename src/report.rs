//! `report identities`: the state as the JSON contract (and a table for people).
//!
//! The JSON shape is a contract that later issues and users' scripts rely on; change it only by adding fields.

use std::io::Write;

use rusqlite::params;
use serde::{Deserialize, Serialize};

use crate::store::{Store, StoreError};
use crate::terminal::{Shown, escape};
use crate::time::{Timestamp, format_rfc3339};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityReport {
    pub principal: String,
    pub kind: String,
    pub account_id: Option<String>,
    pub first_seen: String,
    pub last_seen: String,
    pub events: u64,
    pub errors: u64,
    pub last_source_ip: Option<String>,
    pub last_region: Option<String>,
    pub last_user_agent: Option<String>,
    /// The latest successful console sign-in.
    pub last_console_login: Option<ConsoleLoginReport>,
    /// Most recent session names of an assumed role, newest first (at most 10).
    pub recent_sessions: Vec<String>,
    pub actions: Vec<ActionReport>,
    pub access_keys: Vec<AccessKeyReport>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleLoginReport {
    pub time: String,
    pub mfa_used: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionReport {
    pub action: String,
    pub first_used: Option<String>,
    pub last_used: Option<String>,
    pub count: u64,
    pub last_denied: Option<String>,
    pub denied: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessKeyReport {
    pub id: String,
    pub first_used: String,
    pub last_used: String,
}

fn time(ts: Timestamp) -> String {
    format_rfc3339(ts)
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// Visits every identity in principal order, reading one at a time so memory stays flat however large the state.
pub fn for_each_identity(
    store: &Store,
    visit: impl FnMut(IdentityReport) -> std::io::Result<()>,
) -> Result<(), ReportError> {
    visit_identities(store, None, visit)
}

/// One identity, by principal, read with an index lookup.
pub fn identity(store: &Store, principal: &str) -> Result<Option<IdentityReport>, ReportError> {
    let mut found = None;
    visit_identities(store, Some(principal), |identity| {
        found = Some(identity);
        Ok(())
    })?;
    Ok(found)
}

fn visit_identities(
    store: &Store,
    only: Option<&str>,
    mut visit: impl FnMut(IdentityReport) -> std::io::Result<()>,
) -> Result<(), ReportError> {
    let conn = store.connection();
    let sql_err = |source| ReportError::Store(StoreError::Sqlite { path: store.path().to_owned(), source });
    const COLUMNS: &str = "SELECT id, principal, kind, account_id, first_seen, last_seen, events, errors,
        last_source_ip, last_region, last_user_agent, console_login_at, console_login_mfa FROM principals";
    // Two statements, not `?1 IS NULL OR principal = ?1`: SQLite plans that as a full scan.
    let sql = match only {
        Some(_) => format!("{COLUMNS} WHERE principal = ?1"),
        None => format!("{COLUMNS} ORDER BY principal"),
    };
    let mut principals = conn.prepare(&sql).map_err(sql_err)?;
    let mut actions = conn
        .prepare(
            "SELECT n.name, a.first_used, a.last_used, a.uses, a.last_denied, a.denied
             FROM actions a JOIN action_names n ON n.id = a.action_id WHERE a.principal_id = ?1 ORDER BY n.name",
        )
        .map_err(sql_err)?;
    let mut sessions = conn
        .prepare("SELECT name FROM sessions WHERE principal_id = ?1 ORDER BY last_seen DESC, name DESC")
        .map_err(sql_err)?;
    let mut keys = conn
        .prepare("SELECT key_id, first_used, last_used FROM access_keys WHERE principal = ?1 ORDER BY key_id")
        .map_err(sql_err)?;
    let mut rows = match only {
        Some(principal) => principals.query([principal]),
        None => principals.query([]),
    }
    .map_err(sql_err)?;
    while let Some(row) = rows.next().map_err(sql_err)? {
        let id: i64 = row.get(0).map_err(sql_err)?;
        let principal: String = row.get(1).map_err(sql_err)?;
        let console_at: Option<Timestamp> = row.get(11).map_err(sql_err)?;
        let console_mfa: Option<bool> = row.get(12).map_err(sql_err)?;
        let report = IdentityReport {
            kind: row.get(2).map_err(sql_err)?,
            account_id: non_empty(row.get(3).map_err(sql_err)?),
            first_seen: time(row.get(4).map_err(sql_err)?),
            last_seen: time(row.get(5).map_err(sql_err)?),
            events: row.get::<_, i64>(6).map_err(sql_err)? as u64,
            errors: row.get::<_, i64>(7).map_err(sql_err)? as u64,
            last_source_ip: non_empty(row.get(8).map_err(sql_err)?),
            last_region: non_empty(row.get(9).map_err(sql_err)?),
            last_user_agent: non_empty(row.get(10).map_err(sql_err)?),
            last_console_login: console_at
                .map(|t| ConsoleLoginReport { time: time(t), mfa_used: console_mfa.unwrap_or(false) }),
            recent_sessions: sessions
                .query_map(params![id], |r| r.get(0))
                .and_then(|rows| rows.collect())
                .map_err(sql_err)?,
            actions: actions
                .query_map(params![id], |r| {
                    Ok(ActionReport {
                        action: r.get(0)?,
                        first_used: r.get::<_, Option<Timestamp>>(1)?.map(time),
                        last_used: r.get::<_, Option<Timestamp>>(2)?.map(time),
                        count: r.get::<_, i64>(3)? as u64,
                        last_denied: r.get::<_, Option<Timestamp>>(4)?.map(time),
                        denied: r.get::<_, i64>(5)? as u64,
                    })
                })
                .and_then(|rows| rows.collect())
                .map_err(sql_err)?,
            access_keys: keys
                .query_map(params![principal], |r| {
                    Ok(AccessKeyReport { id: r.get(0)?, first_used: time(r.get(1)?), last_used: time(r.get(2)?) })
                })
                .and_then(|rows| rows.collect())
                .map_err(sql_err)?,
            principal,
        };
        visit(report).map_err(ReportError::Output)?;
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("writing the report: {0}")]
    Output(std::io::Error),
}

/// Writes the identities as one JSON array, one identity per element, streamed.
/// Writes the identities (or only `only`) as the JSON contract: an array, one identity at a time.
pub fn write_identities_json(store: &Store, only: Option<&str>, out: &mut dyn Write) -> Result<(), ReportError> {
    let mut first = true;
    out.write_all(b"[").map_err(ReportError::Output)?;
    visit_identities(store, only, |identity| {
        out.write_all(if first { b"\n" } else { b",\n" })?;
        first = false;
        serde_json::to_writer_pretty(&mut *out, &identity).map_err(std::io::Error::from)
    })?;
    out.write_all(if first { b"]\n" } else { b"\n]\n" }).map_err(ReportError::Output)
}

/// Writes the identities as an aligned table: one line per principal.
pub fn write_identities_table(store: &Store, only: Option<&str>, out: &mut dyn Write) -> Result<(), ReportError> {
    writeln!(
        out,
        "{:<64} {:<18} {:<12} {:<20} {:>9} {:>7} {:>7} {:>6}",
        "PRINCIPAL", "KIND", "ACCOUNT", "LAST SEEN", "EVENTS", "ERRORS", "ACTIONS", "KEYS"
    )
    .map_err(ReportError::Output)?;
    visit_identities(store, only, |i| {
        writeln!(
            out,
            "{:<64} {:<18} {:<12} {:<20} {:>9} {:>7} {:>7} {:>6}",
            Shown(&i.principal),
            Shown(&i.kind),
            Shown(i.account_id.as_deref().unwrap_or("-")),
            i.last_seen,
            i.events,
            i.errors,
            i.actions.len(),
            i.access_keys.len()
        )
    })
}

/// `report permissions --format table`: one block per identity, each finding on its own line, so a person can
/// check it against the inventory and the events by hand.
pub fn write_permissions_table(
    reports: &[crate::permissions::analysis::PermissionReport],
    settings: &crate::permissions::analysis::Settings,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    writeln!(
        out,
        "# as of {}, window {} days; actions only: resources and conditions are not evaluated{}",
        format_rfc3339(settings.as_of),
        settings.window_days,
        if settings.data_events_logged { "" } else { "; data events are not recorded, so their actions are unknown" }
    )?;
    for r in reports {
        writeln!(out)?;
        let seen = match (&r.last_used, r.used_in_window) {
            (None, _) => "never seen".to_owned(),
            (Some(t), true) => format!("last used {t} (in the window)"),
            (Some(t), false) => format!("last used {t} (not in the window)"),
        };
        let inventory = if r.in_inventory { "" } else { ", not in the inventory" };
        writeln!(out, "{}  {}{inventory}  {seen}", Shown(&r.principal), Shown(&r.kind))?;
        let list = |items: &[String]| match items.is_empty() {
            true => "-".to_owned(),
            false => items.iter().map(|i| escape(i)).collect::<Vec<_>>().join(", "),
        };
        if r.in_inventory {
            writeln!(out, "  granted services   {}", list(&r.granted_services))?;
        }
        writeln!(out, "  used services      {}", list(&r.used_services))?;
        if r.in_inventory {
            writeln!(out, "  unused services    {}", list(&r.unused_services))?;
        }
        for u in &r.unused_actions {
            let mut notes = Vec::new();
            if u.data_events {
                notes.push("data-event part unknown");
            }
            if u.outside_boundary {
                notes.push("outside the boundary");
            }
            let notes = if notes.is_empty() { String::new() } else { format!("  ({})", notes.join(", ")) };
            let (pattern, policy, statement) = (Shown(&u.pattern), Shown(&u.policy), Shown(&u.statement));
            writeln!(out, "  unused action      {pattern}  in {policy} {statement}{notes}")?;
        }
        for a in &r.used_not_granted {
            writeln!(out, "  used, not granted  {}", Shown(a))?;
        }
        for u in &r.unknown {
            let (pattern, policy, statement) = (Shown(&u.pattern), Shown(&u.policy), Shown(&u.statement));
            writeln!(out, "  unknown            {pattern}  in {policy} {statement}  ({})", u.reason)?;
        }
        for k in &r.access_keys {
            writeln!(
                out,
                "  access key         {} {} created {} last used {}",
                Shown(&k.id),
                Shown(&k.status),
                Shown(k.created.as_deref().unwrap_or("-")),
                Shown(k.last_used.as_deref().unwrap_or("never"))
            )?;
        }
        if r.console_password {
            writeln!(
                out,
                "  console password   last console login {}",
                Shown(r.last_console_login.as_deref().unwrap_or("never"))
            )?;
        }
        for f in &r.findings {
            writeln!(out, "  finding            {}: {}", f.rule, Shown(&f.summary))?;
        }
        for m in &r.missing_policies {
            let m = Shown(m);
            writeln!(out, "  missing policy     {m} (attached, not in the inventory: its grants are not counted)")?;
        }
        for d in &r.unevaluated_denies {
            let d = Shown(d);
            writeln!(out, "  deny not applied   {d} (has a condition or a narrower resource)")?;
        }
    }
    Ok(())
}

/// The state's size for the state gauges: identities, principal-action pairs, identities inactive for
/// `inactive_days` at `now`, keys, ledger files and the newest event. All read from one snapshot, so a commit
/// landing between two counts cannot give principals without their ledger rows.
pub fn state_stats(
    conn: &rusqlite::Connection,
    now: Timestamp,
    inactive_days: i64,
) -> rusqlite::Result<crate::metrics::StateStats> {
    let snapshot = conn.unchecked_transaction()?;
    let count = |sql: &str| snapshot.query_row(sql, [], |r| r.get::<_, i64>(0));
    let conn = &*snapshot;
    Ok(crate::metrics::StateStats {
        identities: count("SELECT count(*) FROM principals")?,
        principal_actions: count("SELECT count(*) FROM actions")?,
        inactive_identities: conn.query_row(
            "SELECT count(*) FROM principals WHERE last_seen <= ?1 AND kind NOT IN ('AWSService', 'AWSAccount')",
            [now - inactive_days * 86_400],
            |r| r.get(0),
        )?,
        access_keys: count("SELECT count(*) FROM access_keys")?,
        ledger_files: count("SELECT count(*) FROM ledger")?,
        quarantined_files: count("SELECT count(*) FROM quarantine")?,
        newest_event: conn.query_row("SELECT max(last_seen) FROM principals", [], |r| r.get(0))?,
    })
}

/// The daemons' refresh of the state gauges: every `every` on a reader connection of its own, so the committer
/// never waits for it.
pub fn start_state_gauges(
    runtime: &tokio::runtime::Runtime,
    store_path: std::path::PathBuf,
    inactive_days: i64,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
    every: std::time::Duration,
    stop: crate::shutdown::Listener,
) -> tokio::task::JoinHandle<()> {
    runtime.spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stop.requested() => return,
            }
            let (path, metrics) = (store_path.clone(), std::sync::Arc::clone(&metrics));
            let done = tokio::task::spawn_blocking(move || {
                let store = Store::open_reader(&path).map_err(|e| e.to_string())?;
                let stats =
                    state_stats(store.connection(), crate::time::now(), inactive_days).map_err(|e| e.to_string())?;
                metrics.set_state(&stats);
                Ok::<(), String>(())
            })
            .await;
            if let Ok(Err(err)) = done {
                tracing::warn!("state gauges: {err}");
            }
        }
    })
}
