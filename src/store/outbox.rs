//! The alert outbox in the state store: alerts written in the same transaction as the state change that raised
//! them, one outbox row per sink they are routed to, and the log of the correlation windows' hits.
//!
//! Architecture invariant: an alert is in `alerts` (and its outbox rows exist) if and only if the batch that raised
//! it is committed, until retention deletes it (only once no outbox row is left); an outbox row is deleted only
//! after its sink accepted the alert. A crash between the two resends the alert with the same id.

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use crate::alert::Alert;
use crate::alert::correlate::{HitLog, LoggedHit};
use crate::alert::write::{AlertWrite, WriteOutcome};

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS alerts (
    id TEXT NOT NULL UNIQUE,
    rule TEXT NOT NULL,
    severity TEXT NOT NULL,
    event_time INTEGER NOT NULL,
    raised_at_ms INTEGER NOT NULL,
    body TEXT NOT NULL,
    -- The body's principal, for the explorer's filters (a merge never changes it: it is part of the id).
    principal TEXT NOT NULL DEFAULT ''
);
-- Alerts are inserted in the order they are raised, so the rowid orders them and an index on the raise time only
-- cost every insert a second b-tree write (about 10% of storing an alert). Dropped where an older version made it.
DROP INDEX IF EXISTS alerts_by_time;
CREATE TABLE IF NOT EXISTS outbox (
    alert_id TEXT NOT NULL,
    sink TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL,
    last_error TEXT,
    PRIMARY KEY (alert_id, sink)
) WITHOUT ROWID;
-- The deliverer takes the due rows oldest first, a chunk at a time: without this index every chunk scanned and
-- sorted the whole outbox, quadratic in a backlog.
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (next_attempt_ms, alert_id);
-- Each sink's deliverer takes its own due rows.
CREATE INDEX IF NOT EXISTS outbox_due_by_sink ON outbox (sink, next_attempt_ms, alert_id);
CREATE TABLE IF NOT EXISTS correlation_log (
    seq INTEGER PRIMARY KEY,
    hits BLOB NOT NULL
);
";

/// The alerts a store merged most recently, as it stored them: the next merge into one of them (a noisy rule's
/// alert, batch after batch in a daemon, whose batches are small) skips reading the stored body back and parsing
/// it (about 25k of a merge's instructions). Only merged alerts are kept: keeping every new one too saved a little more
/// for small batches but cost large ones (a replay's) a copy of every alert. Two generations of at most
/// [`RecentAlerts::GENERATION`] alerts each (a few megabytes): bounded, with no bookkeeping per entry.
///
/// It must only ever hold what the store holds: entries put during a transaction that rolls back are wrong, so
/// the store clears it then (see `Store::commit`).
#[derive(Debug, Default)]
pub struct RecentAlerts {
    current: rustc_hash::FxHashMap<String, Alert>,
    previous: rustc_hash::FxHashMap<String, Alert>,
}

impl RecentAlerts {
    pub const GENERATION: usize = 2048;

    fn take(&mut self, id: &str) -> Option<Alert> {
        self.current.remove(id).or_else(|| self.previous.remove(id))
    }

    fn put(&mut self, alert: Alert) {
        if self.current.len() >= Self::GENERATION {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(alert.id.clone(), alert);
    }

    pub fn clear(&mut self) {
        self.current.clear();
        self.previous.clear();
    }
}

/// Writes `write`'s alerts: a new id is inserted with its outbox rows, a taken one merged into the stored alert
/// (from `recent` when it is there, else read back), and `recent` keeps the merged alert.
pub fn write(tx: &Transaction<'_>, write: &AlertWrite, recent: &mut RecentAlerts) -> rusqlite::Result<WriteOutcome> {
    let mut outcome = WriteOutcome::default();
    let mut select = tx.prepare_cached("SELECT body FROM alerts WHERE id = ?1")?;
    // Most alerts are new: insert first, and read the stored one back only when the id is taken.
    let mut insert = tx.prepare_cached(
        "INSERT INTO alerts (id, rule, severity, event_time, raised_at_ms, body, principal)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (id) DO NOTHING",
    )?;
    let mut update = tx.prepare_cached("UPDATE alerts SET event_time = ?2, body = ?3 WHERE id = ?1")?;
    let mut enqueue =
        tx.prepare_cached("INSERT OR IGNORE INTO outbox (alert_id, sink, next_attempt_ms) VALUES (?1, ?2, ?3)")?;
    let mut body = Vec::with_capacity(4096);
    for (i, (alert, merge, sinks)) in write.alerts.iter().enumerate() {
        let json = match write.body(i) {
            Some(json) => json,
            None => alert_json(alert, &mut body),
        };
        let inserted = insert.execute(params![
            alert.id,
            alert.rule,
            alert.severity.as_str(),
            alert.event_time,
            write.raised_at_ms,
            json,
            alert.principal
        ])?;
        if inserted == 1 {
            for sink in sinks {
                enqueue.execute(params![alert.id, sink, write.raised_at_ms])?;
            }
            outcome.new.push(true);
            continue;
        }
        let stored = match recent.take(&alert.id) {
            Some(stored) => Some(stored),
            None => {
                let body: Option<String> = select.query_row([&alert.id], |r| r.get(0)).optional()?;
                // A stored body that cannot be read (never written by this version) is replaced by the new alert.
                body.and_then(|body| serde_json::from_str::<Alert>(&body).ok())
            }
        };
        let merged = match stored {
            Some(mut stored) => {
                stored.merge(alert.clone(), *merge);
                stored
            }
            None => alert.clone(),
        };
        update.execute(params![merged.id, merged.event_time, alert_json(&merged, &mut body)])?;
        outcome.new.push(false);
        recent.put(merged);
    }
    // One row per batch (see `correlate::HitLog`): a noisy correlation adds bytes to it, not rows.
    if write.hits.snapshot {
        tx.execute("DELETE FROM correlation_log", [])?;
    }
    if !write.hits.log.is_empty() {
        tx.prepare_cached("INSERT INTO correlation_log (hits) VALUES (?1)")?.execute([&write.hits.log])?;
    }
    Ok(outcome)
}

/// `alert` as JSON in `buffer` (reused from alert to alert: a body is about a kilobyte).
fn alert_json<'b>(alert: &Alert, buffer: &'b mut Vec<u8>) -> &'b str {
    buffer.clear();
    alert.write_json(buffer);
    std::str::from_utf8(buffer).expect("alert JSON is UTF-8")
}

/// The correlation log's rows, oldest first, to rebuild the windows at start.
pub fn load_hit_log(conn: &Connection) -> rusqlite::Result<Vec<Vec<u8>>> {
    let mut stmt = conn.prepare("SELECT hits FROM correlation_log ORDER BY seq")?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    rows.collect()
}

/// Schema 1 kept one `correlation_window` row per hit; schema 2 keeps the log. Moves the rows into one log row.
pub fn migrate_hits_to_log(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    let exists: bool = tx.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'correlation_window'",
        [],
        |r| r.get(0),
    )?;
    if !exists {
        return Ok(());
    }
    let mut log = HitLog::default();
    {
        let mut stmt = tx.prepare(
            "SELECT correlation, grp, time, rule, event_id, value, principal, account_id FROM correlation_window
             ORDER BY correlation, grp, time",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let text = |i: usize| r.get_ref(i).map(|v| v.as_str_or_null().ok().flatten());
            log.record(&LoggedHit {
                correlation: text(0)?.unwrap_or_default(),
                group: text(1)?.unwrap_or_default(),
                time: r.get(2)?,
                rule: text(3)?.unwrap_or_default(),
                event_id: text(4)?,
                value: text(5)?,
                principal: text(6)?.unwrap_or_default(),
                account: text(7)?,
                region: None,
                source_ip: None,
                user_agent: None,
            });
        }
    }
    let bytes = log.into_bytes();
    if !bytes.is_empty() {
        tx.execute("INSERT INTO correlation_log (hits) VALUES (?1)", [&bytes])?;
    }
    tx.execute_batch("DROP TABLE correlation_window;")
}

/// One alert waiting for one sink: its stored JSON, and the alert read from it unless the sink takes the JSON as
/// it is (see [`due`]).
#[derive(Debug, Clone)]
pub struct Pending {
    pub alert_id: String,
    pub rule: String,
    pub body: String,
    pub alert: Option<Alert>,
    pub sink: String,
    pub attempts: u32,
    pub raised_at_ms: i64,
}

/// What a line sink needs of a stored body: that it is one JSON object, and its id and rule. Reading only this
/// (the rest is checked and skipped), and writing the body as it is, took a delivery pass to a file sink from 328M
/// to 186M instructions for 5,753 alerts.
#[derive(serde::Deserialize)]
struct StoredHead<'a> {
    #[serde(borrow)]
    id: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    rule: std::borrow::Cow<'a, str>,
}

/// A delivery whose alert cannot be read back: a body another version wrote, a damaged row, or an outbox row whose
/// alert is gone. The deliverer must still move it on (see [`Due`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    pub alert_id: String,
    pub sink: String,
    pub reason: String,
}

/// The deliveries due now. Unreadable ones are returned beside the readable ones rather than skipped: a skipped
/// row stays due at the head of the outbox, so enough of them would hide every delivery behind them.
#[derive(Debug, Default)]
pub struct Due {
    pub pending: Vec<Pending>,
    pub unreadable: Vec<Unreadable>,
}

impl Due {
    /// Rows taken, readable or not.
    pub fn len(&self) -> usize {
        self.pending.len() + self.unreadable.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Deliveries due at `now_ms`, oldest first, at most `limit`. A row whose sink `as_written` says takes the stored
/// JSON as it is (file and stdout: the body is the alert's JSON, written by [`Alert::write_json`]) is only checked
/// to be a JSON object with an id and a rule; every other row's alert is read whole.
pub fn due(conn: &Connection, sink: &str, now_ms: i64, limit: usize, as_written: bool) -> rusqlite::Result<Due> {
    let mut stmt = conn.prepare_cached(
        "SELECT o.alert_id, a.body, o.sink, o.attempts, a.raised_at_ms FROM outbox o LEFT JOIN alerts a ON a.id = o.alert_id
         WHERE o.sink = ?3 AND o.next_attempt_ms <= ?1 ORDER BY o.next_attempt_ms, o.alert_id LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![now_ms, limit as i64, sink], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, Option<String>>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, u32>(3)?,
            r.get::<_, Option<i64>>(4)?,
        ))
    })?;
    let mut out = Due::default();
    for row in rows {
        let (alert_id, body, sink, attempts, raised_at_ms) = row?;
        let unreadable = |e: serde_json::Error| format!("unreadable alert body: {e}");
        let read = match &body {
            Some(body) if as_written => match serde_json::from_str::<StoredHead<'_>>(body) {
                Ok(head) if head.id == alert_id => Ok((head.rule.into_owned(), None)),
                Ok(head) => Err(format!("stored body is alert {}", head.id)),
                Err(e) => Err(unreadable(e)),
            },
            Some(body) => serde_json::from_str::<Alert>(body).map(|a| (a.rule.clone(), Some(a))).map_err(unreadable),
            None => Err("no alert with this id in the store".to_owned()),
        };
        match read {
            Ok((rule, alert)) => out.pending.push(Pending {
                alert_id,
                rule,
                body: body.unwrap_or_default(),
                alert,
                sink,
                attempts,
                raised_at_ms: raised_at_ms.unwrap_or(0),
            }),
            Err(reason) => out.unreadable.push(Unreadable { alert_id, sink, reason }),
        }
    }
    Ok(out)
}

/// The earliest time one of `sink`'s pending deliveries is due, if any.
pub fn next_due_ms(conn: &Connection, sink: &str) -> rusqlite::Result<Option<i64>> {
    conn.query_row("SELECT min(next_attempt_ms) FROM outbox WHERE sink = ?1", [sink], |r| r.get(0))
}

/// `sink`'s pending deliveries.
pub fn depth_of(conn: &Connection, sink: &str) -> rusqlite::Result<u64> {
    conn.query_row("SELECT count(*) FROM outbox WHERE sink = ?1", [sink], |r| r.get::<_, i64>(0)).map(|n| n as u64)
}

/// The sinks the outbox names that are not among `configured`: their deliveries wait until they are configured
/// again.
pub fn unconfigured_sinks(conn: &Connection, configured: &[&str]) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare("SELECT DISTINCT sink FROM outbox ORDER BY sink")?;
    let sinks = stmt.query_map([], |r| r.get::<_, String>(0))?.collect::<Result<Vec<_>, _>>()?;
    Ok(sinks.into_iter().filter(|s| !configured.contains(&s.as_str())).collect())
}

/// Removes a delivered (alert, sink) row. It runs once per delivery, so its statement is prepared once per
/// connection: preparing it on every call was more than half of its time when a replay delivered 23,000 alerts.
pub fn delivered(conn: &Connection, alert_id: &str, sink: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM outbox WHERE alert_id = ?1 AND sink = ?2")?
        .execute(params![alert_id, sink])
        .map(|_| ())
}

/// Records a failed attempt and when to retry (statement prepared once per connection, as for `delivered`).
pub fn failed(
    conn: &Connection,
    alert_id: &str,
    sink: &str,
    next_attempt_ms: i64,
    error: &str,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE outbox SET attempts = attempts + 1, next_attempt_ms = ?3, last_error = ?4
         WHERE alert_id = ?1 AND sink = ?2",
    )?
    .execute(params![alert_id, sink, next_attempt_ms, error])
    .map(|_| ())
}

/// Deletes alerts raised before `cutoff_ms` that no sink still has to take, except those of the rules in `keep`,
/// `chunk` rows per statement (each its own short write transaction, so that the committer never waits long);
/// returns how many it deleted.
///
/// Alerts are inserted in the order they are raised, so the candidates are the rows before the first one raised
/// at or after the cutoff: the scan reads the old rows only, not the whole table, and needs no index on the
/// raise time (which would cost every insert).
pub fn prune(conn: &Connection, cutoff_ms: i64, keep: &[&str], chunk: usize) -> rusqlite::Result<u64> {
    let keep = serde_json::to_string(keep).expect("strings serialize");
    let mut delete = conn.prepare(
        "DELETE FROM alerts WHERE rowid IN (
             SELECT rowid FROM alerts
             WHERE rowid < coalesce((SELECT rowid FROM alerts WHERE raised_at_ms >= ?1 ORDER BY rowid LIMIT 1),
                                    9223372036854775807)
               AND raised_at_ms < ?1
               AND rule NOT IN (SELECT value FROM json_each(?2))
               AND NOT EXISTS (SELECT 1 FROM outbox WHERE outbox.alert_id = alerts.id)
             LIMIT ?3)",
    )?;
    let mut deleted = 0;
    loop {
        let n = delete.execute(params![cutoff_ms, keep, chunk as i64])?;
        deleted += n as u64;
        if n < chunk {
            return Ok(deleted);
        }
    }
}

/// Outbox rows (alert × sink) not yet delivered.
pub fn depth(conn: &Connection) -> rusqlite::Result<u64> {
    conn.query_row("SELECT count(*) FROM outbox", [], |r| r.get::<_, i64>(0)).map(|n| n as u64)
}

/// The most recently raised alerts, newest first (by insertion: a merge updates an alert in place, so it keeps
/// the place of its first raise). A stored body that cannot be read (another version's, or damaged) is left out
/// of the listing and logged, so that one bad row does not fail the whole listing.
pub fn recent(conn: &Connection, limit: usize) -> rusqlite::Result<Vec<Alert>> {
    select("SELECT id, body FROM alerts ORDER BY rowid DESC LIMIT ?1", conn, [limit as i64])
}

/// The alerts a query of `id, body` rows selects, in its order; an unreadable body is logged and left out (the
/// others are still listed).
pub fn select(sql: &str, conn: &Connection, params: impl rusqlite::Params) -> rusqlite::Result<Vec<Alert>> {
    let mut stmt = conn.prepare(sql)?;
    let rows = stmt.query_map(params, |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    let mut out = Vec::new();
    for row in rows {
        let (id, body) = row?;
        match serde_json::from_str(&body) {
            Ok(alert) => out.push(alert),
            Err(e) if crate::logs::allow("alert_unreadable") => {
                tracing::warn!(alert = %id, "stored alert left out of the listing: cannot be read: {e}");
            }
            Err(_) => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{Derived, Merge};
    use crate::config::Synchronous;
    use crate::detect::rule::Severity;
    use crate::store::{LedgerEntry, LedgerKey, Store};

    /// A periodic finding's alert about `subject`.
    fn alert(subject: &str) -> Alert {
        Alert::derived(Derived { rule: "inactive-identity", title: "Inactive identity", ..derived(subject) })
    }

    fn rule_alert(rule: &'static str, subject: &str) -> Alert {
        Alert::derived(Derived { rule, ..derived(subject) })
    }

    fn derived(subject: &str) -> Derived<'_> {
        Derived {
            rule: "r",
            subject,
            anchor: "1",
            title: "t",
            severity: Severity::Low,
            principal: subject.to_owned(),
            account_id: None,
            time: 1_790_000_000,
            summary: subject.to_owned(),
            details: serde_json::json!({}),
        }
    }

    /// Retention deletes what was raised before the cutoff and delivered, in chunks; it keeps what a sink has
    /// yet to take, the periodic findings, and everything from the first row raised after the cutoff on (rows
    /// are in raise order, which a clock set back would break: such a row waits for a later cutoff).
    #[test]
    fn retention_deletes_delivered_alerts_raised_before_the_cutoff() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db"), Synchronous::Normal).unwrap();
        let conn = store.connection();
        let batch = |raised_at_ms, alerts: &[(Alert, &[&str])]| {
            let tx = conn.unchecked_transaction().unwrap();
            let mut w = AlertWrite::at(raised_at_ms);
            for (alert, sinks) in alerts {
                w.alerts.push((alert.clone(), Merge::Sum, sinks.iter().map(|s| s.to_string()).collect()));
            }
            write(&tx, &w, &mut RecentAlerts::default()).unwrap();
            tx.commit().unwrap();
        };
        let left = || -> Vec<String> {
            let mut stmt = conn.prepare("SELECT body ->> '$.principal' FROM alerts ORDER BY rowid").unwrap();
            stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
        };
        batch(1_000, &[(rule_alert("r1", "old"), &[]), (rule_alert("r1", "pending"), &["jsonl"])]);
        batch(1_500, &[(alert("finding"), &[]), (rule_alert("new-region-for-identity", "behaviour"), &[])]);
        batch(2_000, &[(rule_alert("r2", "old2"), &[]), (rule_alert("r2", "old3"), &[])]);
        batch(5_000, &[(rule_alert("r1", "new"), &[])]);
        batch(1_200, &[(rule_alert("r1", "set-back"), &[])]);
        let keep = crate::detect::catalogue::PERIODIC_RULES;
        assert_eq!(prune(conn, 3_000, &keep, 1).unwrap(), 4);
        assert_eq!(left(), ["pending", "finding", "new", "set-back"]);
        // Nothing more until the pending one is delivered.
        assert_eq!(prune(conn, 3_000, &keep, 1).unwrap(), 0);
        delivered(conn, &rule_alert("r1", "pending").id, "jsonl").unwrap();
        assert_eq!(prune(conn, 3_000, &keep, 10).unwrap(), 1);
        assert_eq!(left(), ["finding", "new", "set-back"]);
        assert_eq!(prune(conn, 6_000, &keep, 10).unwrap(), 2);
        assert_eq!(left(), ["finding"]);
    }

    /// Chunks appended keep their serialized bodies, each its own alert's; a chunk without them leaves the whole
    /// to be serialized when written.
    #[test]
    fn appended_chunks_keep_each_alerts_body() {
        let chunk = |subjects: &[&str], serialize: bool| {
            let mut w = AlertWrite::at(1);
            w.alerts.extend(subjects.iter().map(|s| (alert(s), Merge::Sum, Vec::new())));
            if serialize {
                w.serialize();
            }
            w
        };
        let mut whole = AlertWrite::at(1);
        whole.append(chunk(&["a", "b"], true));
        whole.append(chunk(&["c"], true));
        for (i, (alert, _, _)) in whole.alerts.iter().enumerate() {
            assert_eq!(whole.body(i), Some(serde_json::to_string(alert).unwrap().as_str()));
        }
        whole.append(chunk(&["d"], false));
        assert_eq!(whole.body(0), None);
        whole.append(chunk(&["e"], true));
        assert_eq!(whole.body(4), None);
    }

    /// Newest first by raise: a later batch's alerts come before an earlier one's, and an alert merged into one
    /// already raised keeps its first place. A store an older version made loses the raise-time index.
    #[test]
    fn recent_alerts_are_listed_newest_raised_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = Store::open(&path, Synchronous::Normal).unwrap();
        let batch = |raised_at_ms, subjects: &[&str]| {
            let tx = store.connection().unchecked_transaction().unwrap();
            let mut w = AlertWrite::at(raised_at_ms);
            w.alerts.extend(subjects.iter().map(|s| (alert(s), Merge::Sum, Vec::new())));
            let outcome = write(&tx, &w, &mut RecentAlerts::default()).unwrap();
            tx.commit().unwrap();
            outcome.new
        };
        assert_eq!(batch(1, &["a", "b"]), [true, true]);
        assert_eq!(batch(2, &["c", "a"]), [true, false]);
        let listed =
            |limit| recent(store.connection(), limit).unwrap().into_iter().map(|a| a.principal).collect::<Vec<_>>();
        assert_eq!(listed(10), ["c", "b", "a"]);
        assert_eq!(listed(2), ["c", "b"]);
        // A body that cannot be read is left out; the rest are still listed.
        let damaged = store.connection().execute("UPDATE alerts SET body = '{' WHERE id = ?1", [alert("b").id]);
        assert_eq!(damaged.unwrap(), 1);
        assert_eq!(listed(10), ["c", "a"]);

        store.connection().execute_batch("CREATE INDEX alerts_by_time ON alerts (raised_at_ms)").unwrap();
        drop(store);
        let store = Store::open(&path, Synchronous::Normal).unwrap();
        let left: i64 = store
            .connection()
            .query_row("SELECT count(*) FROM sqlite_master WHERE name = 'alerts_by_time'", [], |r| r.get(0))
            .unwrap();
        assert_eq!(left, 0);
    }

    /// A merge takes the stored alert from the recent ones when it is there, and the recent ones never hold what
    /// a rolled-back batch merged: the next merge then reads the stored alert again.
    #[test]
    fn a_merge_never_builds_on_an_alert_a_rolled_back_batch_merged() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("s.db"), Synchronous::Normal).unwrap();
        // A batch that raises an alert of rule `boom` fails after the alerts before it in the chunk are written.
        store
            .connection()
            .execute_batch(
                "CREATE TRIGGER boom BEFORE INSERT ON alerts WHEN NEW.rule = 'boom' BEGIN SELECT RAISE(ABORT, 'boom'); END",
            )
            .unwrap();
        let mut boom = alert("b");
        boom.rule = "boom".into();
        let mut batch = 0;
        let mut commit = |alerts: Vec<Alert>| {
            batch += 1;
            let key = LedgerKey { source: format!("file:/{batch}"), version: "1".into() };
            let mut w = AlertWrite::at(batch);
            w.alerts.extend(alerts.into_iter().map(|a| (a, Merge::Sum, Vec::new())));
            store
                .commit(&Default::default(), &[LedgerEntry { key: &key, records: 0 }], 0, [&w])
                .map(|outcome| outcome.new)
        };
        let stored_count = |store: &Store| -> u64 {
            let body: String = store.connection().query_row("SELECT body FROM alerts", [], |r| r.get(0)).unwrap();
            serde_json::from_str::<Alert>(&body).unwrap().count
        };
        assert_eq!(commit(vec![alert("a")]).unwrap(), [true]);
        assert_eq!(commit(vec![alert("a")]).unwrap(), [false]);
        assert_eq!(commit(vec![alert("a")]).unwrap(), [false]);
        assert!(commit(vec![alert("a"), boom]).is_err());
        assert_eq!(commit(vec![alert("a")]).unwrap(), [false]);
        assert_eq!(stored_count(&store), 4, "three merges into the first alert, not the rolled-back one");
    }
}
