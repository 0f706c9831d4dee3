//! The durable state: SQLite holding per-principal, per-action and per-key state plus the ledger of applied files.
//!
//! Architecture invariant: a batch's state changes and its ledger entries are written in one transaction, so after a
//! crash at any point a file is either fully applied and in the ledger, or neither. The upserts apply the same
//! commutative merge as [`Delta::merge`](crate::state::Delta::merge), which is what makes batches order-independent.
//! Strings are interned: a principal's and an action's name are stored once and referred to by integer id.

use std::collections::HashSet;
use std::path::Path;

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use rustc_hash::FxHashMap;

mod behaviour;
pub mod integrity;
pub mod outbox;

use crate::alert::behaviour::Fact;
use crate::alert::write::AlertWrite;
use crate::alert::write::WriteOutcome;
use crate::config::{BehaviourConfig, Synchronous};
use crate::state::{ActionDelta, Delta, MAX_SESSIONS, PrincipalDelta};
use crate::time::Timestamp;

/// Why the store failed. The path is part of every message.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state store {path}: {source}")]
    Sqlite { path: String, source: rusqlite::Error },
    #[error("state store {path} is in use by another trailwatch process (or another store in this one)")]
    Locked { path: String },
    #[error("state store {path}: cannot lock it: {source}")]
    Lock { path: String, source: std::io::Error },
    #[error(
        "state store {path} is damaged (sqlite's quick_check: {problems}); restore it from a backup, or move it aside \
         to start afresh"
    )]
    Damaged { path: String, problems: String },
    #[error("state store {path}: schema version {found} is newer than this trailwatch understands ({supported})")]
    SchemaTooNew { path: String, found: i64, supported: i64 },
}

/// One file's ledger identity: where it came from and which version of it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LedgerKey {
    /// `cloudtrail:<file name>` for a local file named as CloudTrail names its log files, else
    /// `file:<absolute path>`; for S3, `s3://bucket/key`.
    pub source: String,
    /// Empty for `cloudtrail:` keys; else the file's size (local files) or ETag (S3 objects).
    pub version: String,
}

impl LedgerKey {
    /// A local file's key. CloudTrail names each log file uniquely (`<account>_CloudTrail_<region>_<time>_<id>`)
    /// and never rewrites one, so such a file is known by its name alone: moved or renamed within the spool, or
    /// replayed again from a copy elsewhere, it is recognised as applied (keyed by path, it was applied again and
    /// every event counted twice). Other files are known by absolute path and size.
    pub fn local(absolute_path: &str, size: u64) -> LedgerKey {
        match crate::layout::cloudtrail_log_name(absolute_path) {
            Some(name) => LedgerKey { source: format!("cloudtrail:{name}"), version: String::new() },
            None => LedgerKey { source: format!("file:{absolute_path}"), version: size.to_string() },
        }
    }
}

/// Schema 2 keyed every local file by path: give those named as CloudTrail names log files their name key (see
/// [`LedgerKey::local`]), so that an upgraded daemon does not apply them again. Two paths of one file (already
/// counted twice) become one row.
fn migrate_local_keys_to_names(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    let rows: Vec<(String, String, i64, i64)> = {
        let mut stmt =
            tx.prepare("SELECT source, version, records, applied_at FROM ledger WHERE source LIKE 'file:%'")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    let mut insert =
        tx.prepare("INSERT OR IGNORE INTO ledger (source, version, records, applied_at) VALUES (?1, ?2, ?3, ?4)")?;
    let mut delete = tx.prepare("DELETE FROM ledger WHERE source = ?1 AND version = ?2")?;
    for (source, version, records, applied_at) in rows {
        let path = source.strip_prefix("file:").unwrap_or(&source);
        let key = LedgerKey::local(path, version.parse().unwrap_or(0));
        if key.source != source {
            insert.execute(params![key.source, key.version, records, applied_at])?;
            delete.execute(params![source, version])?;
        }
    }
    Ok(())
}

pub struct Store {
    conn: Connection,
    path: String,
    action_ids: FxHashMap<Box<str>, i64>,
    /// The alerts merged most recently, so that merging into them again does not read them back.
    recent_alerts: outbox::RecentAlerts,
    /// Copies committed WAL pages into the database on its own thread and connection (writing stores only).
    checkpointer: Option<Checkpointer>,
    /// Held for the life of a writing store: one writer per state file, so the ledger read at start stays true.
    _writer_lock: Option<WriterLock>,
    /// A batch rolled back since the caches were loaded (see [`Store::begin`]).
    rolled_back: bool,
}

/// The single-writer lock of a state file: an exclusive `flock` on the database file itself, so that every name of
/// the file (a symlink, a hard link, a relative path) meets the same lock and there is no lock file to delete.
///
/// SQLite locks the same file with POSIX record locks, which `flock` does not interfere with on Linux; but closing
/// any descriptor of the file drops every POSIX lock this process holds on it, connections' included. So the
/// descriptor is never closed: it stays in [`LOCKS`] for the process's life, and a store that ends only marks it
/// free for the next writer in this process.
struct WriterLock {
    inode: (u64, u64),
}

/// A state file this process opened for writing: its device and inode, its lock descriptor, and whether a live
/// store holds it (`None`: this process could not take the lock).
type HeldLock = ((u64, u64), std::fs::File, Option<bool>);

/// Every state file this process opened for writing.
static LOCKS: std::sync::Mutex<Vec<HeldLock>> = std::sync::Mutex::new(Vec::new());

impl WriterLock {
    fn take(path: &Path, display: &str) -> Result<WriterLock, StoreError> {
        use std::os::unix::fs::MetadataExt;
        let lock_err = |source| StoreError::Lock { path: display.to_owned(), source };
        let mut locks = LOCKS.lock().unwrap_or_else(|e| e.into_inner());
        // The file's identity without opening it: a new descriptor of a file this process already uses must not
        // be opened and closed again (see above).
        let inode = match std::fs::metadata(path) {
            Ok(meta) => Some((meta.dev(), meta.ino())),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
            Err(err) => return Err(lock_err(err)),
        };
        let at = match inode.and_then(|inode| locks.iter().position(|(i, _, _)| *i == inode)) {
            Some(at) => at,
            None => {
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(path)
                    .map_err(lock_err)?;
                let meta = file.metadata().map_err(lock_err)?;
                locks.push(((meta.dev(), meta.ino()), file, None));
                locks.len() - 1
            }
        };
        let (inode, file, held) = &mut locks[at];
        match held {
            Some(true) => return Err(StoreError::Locked { path: display.to_owned() }),
            Some(false) => {}
            None => match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => return Err(StoreError::Locked { path: display.to_owned() }),
                Err(std::fs::TryLockError::Error(source)) => return Err(lock_err(source)),
            },
        }
        *held = Some(true);
        Ok(WriterLock { inode: *inode })
    }
}

impl Drop for WriterLock {
    fn drop(&mut self) {
        let mut locks = LOCKS.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, _, held)) = locks.iter_mut().find(|(inode, _, _)| *inode == self.inode) {
            *held = Some(false);
        }
    }
}

/// Checkpoints the WAL after commits, beside the writer: a commit then only appends its pages to the WAL, and
/// copying them into the database (a checkpoint, as much work again for a large batch) overlaps the next batch
/// instead of following the commit on the committer's thread. PASSIVE checkpoints never block the writer.
/// Notifications coalesce (a channel of one), so the WAL is checkpointed at most once per commit and never falls
/// more than one pass behind the writer.
struct Checkpointer {
    committed: Option<std::sync::mpsc::SyncSender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts the thread with its own connection; `None` (the writer keeps checkpointing itself) if it cannot.
    fn start(path: &Path) -> Option<Checkpointer> {
        let conn = Connection::open(path).ok()?;
        conn.execute_batch("PRAGMA busy_timeout = 5000;").ok()?;
        let (committed, wake) = std::sync::mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("tw-checkpoint".into())
            .spawn(move || {
                for () in wake {
                    if let Err(err) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                        tracing::debug!("wal checkpoint: {err}");
                    }
                }
            })
            .ok()?;
        Some(Checkpointer { committed: Some(committed), thread: Some(thread) })
    }

    fn notify(&self) {
        if let Some(committed) = &self.committed {
            // Full: a pass is already due and will include this commit.
            let _ = committed.try_send(());
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.committed = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// 2: correlation hits are a log of rows (`correlation_log`), no longer a row per hit (`correlation_window`).
/// 3: local CloudTrail log files are keyed in the ledger by name, no longer by path (`LedgerKey::local`).
/// 4: services per principal and instance keys' addresses (behavioural rules), learnt from the stored actions.
/// 5: events per hour and per principal and day (the explorer's charts; a state from before starts them empty),
/// denied calls per principal (summed from its actions), and each alert's principal as a column.
const SCHEMA_VERSION: i64 = 6;

/// Schema 5's columns on a state from before: each principal's denied calls from its actions, each alert's
/// principal from its body. A column already there is left as it is.
fn add_explorer_columns(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    let has = |table: &str, column: &str| -> rusqlite::Result<bool> {
        tx.prepare(&format!("SELECT 1 FROM pragma_table_info('{table}') WHERE name = ?1"))?.exists([column])
    };
    if !has("principals", "denied")? {
        tx.execute_batch(
            "ALTER TABLE principals ADD COLUMN denied INTEGER NOT NULL DEFAULT 0;
             UPDATE principals SET denied =
                 (SELECT coalesce(sum(a.denied), 0) FROM actions a WHERE a.principal_id = principals.id);",
        )?;
    }
    if !has("alerts", "principal")? {
        tx.execute_batch(
            "ALTER TABLE alerts ADD COLUMN principal TEXT NOT NULL DEFAULT '';
             UPDATE alerts SET principal = coalesce(json_extract(body, '$.principal'), '') WHERE json_valid(body);",
        )?;
    }
    Ok(())
}

/// The IAM inventory as fetched from the API: one account's authorization details per row (the JSON AWS
/// returns), replaced at each refresh. Read by `report permissions` and the periodic findings beside the files.
pub const INVENTORY_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS inventory (
    account_id TEXT PRIMARY KEY,
    fetched_at INTEGER NOT NULL,
    body TEXT NOT NULL
);
";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
-- Files that killed the process when read (see src/inflight.rs): skipped like applied ones; delete a row to try
-- that file again.
CREATE TABLE IF NOT EXISTS quarantine (
    source TEXT NOT NULL,
    version TEXT NOT NULL,
    location TEXT NOT NULL,
    quarantined_at INTEGER NOT NULL,
    PRIMARY KEY (source, version)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS principals (
    id INTEGER PRIMARY KEY,
    principal TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    account_id TEXT NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    events INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    last_source_ip TEXT NOT NULL,
    last_region TEXT NOT NULL,
    last_user_agent TEXT NOT NULL,
    console_login_at INTEGER,
    console_login_mfa INTEGER,
    -- The sum of the principal's actions' `denied`.
    denied INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS action_names (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS actions (
    principal_id INTEGER NOT NULL,
    action_id INTEGER NOT NULL,
    first_used INTEGER,
    last_used INTEGER,
    uses INTEGER NOT NULL,
    last_denied INTEGER,
    denied INTEGER NOT NULL,
    PRIMARY KEY (principal_id, action_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sessions (
    principal_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    last_seen INTEGER NOT NULL,
    PRIMARY KEY (principal_id, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS access_keys (
    key_id TEXT PRIMARY KEY,
    principal TEXT NOT NULL,
    first_used INTEGER NOT NULL,
    last_used INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS access_keys_by_principal ON access_keys (principal);
CREATE TABLE IF NOT EXISTS principal_regions (
    principal_id INTEGER NOT NULL,
    region TEXT NOT NULL,
    first_seen INTEGER NOT NULL,
    PRIMARY KEY (principal_id, region)
) WITHOUT ROWID;
-- Per principal and service (IAM prefix): the first successful use (`sensitive-service-first-use`) and the last
-- List/Describe call (`service-enumeration`).
CREATE TABLE IF NOT EXISTS principal_services (
    principal_id INTEGER NOT NULL,
    service TEXT NOT NULL,
    first_used INTEGER,
    last_enumerated INTEGER,
    PRIMARY KEY (principal_id, service)
) WITHOUT ROWID;
-- Public addresses an EC2 instance's temporary key was used from (`instance-credentials-used-elsewhere`), a day.
CREATE TABLE IF NOT EXISTS instance_key_ips (
    key_id TEXT NOT NULL,
    ip TEXT NOT NULL,
    last_seen INTEGER NOT NULL,
    PRIMARY KEY (key_id, ip)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS key_ips (
    key_id TEXT NOT NULL,
    ip TEXT NOT NULL,
    last_seen INTEGER NOT NULL,
    PRIMARY KEY (key_id, ip)
) WITHOUT ROWID;
-- Events per hour (hours since the epoch) and per principal and UTC day (days since the epoch): the explorer's charts.
CREATE TABLE IF NOT EXISTS event_hours (hour INTEGER PRIMARY KEY, events INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS principal_days (
    principal_id INTEGER NOT NULL,
    day INTEGER NOT NULL,
    events INTEGER NOT NULL,
    PRIMARY KEY (principal_id, day)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ledger (
    source TEXT NOT NULL,
    version TEXT NOT NULL,
    records INTEGER NOT NULL,
    applied_at INTEGER NOT NULL,
    PRIMARY KEY (source, version)
) WITHOUT ROWID;
";

// Each `CASE` keeps the value whose ordering key wins, exactly as `Delta::merge` does: SQLite compares text bytewise
// like Rust's `str`, and row values lexicographically like Rust's tuples.
const UPSERT_PRINCIPAL: &str = "
INSERT INTO principals (principal, kind, account_id, first_seen, last_seen, events, errors,
    last_source_ip, last_region, last_user_agent, console_login_at, console_login_mfa, denied)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
ON CONFLICT (principal) DO UPDATE SET
    kind = CASE WHEN (excluded.first_seen, excluded.kind, excluded.account_id) < (first_seen, kind, account_id)
        THEN excluded.kind ELSE kind END,
    account_id = CASE WHEN (excluded.first_seen, excluded.kind, excluded.account_id) < (first_seen, kind, account_id)
        THEN excluded.account_id ELSE account_id END,
    first_seen = min(first_seen, excluded.first_seen),
    last_seen = max(last_seen, excluded.last_seen),
    events = events + excluded.events,
    errors = errors + excluded.errors,
    denied = denied + excluded.denied,
    last_source_ip = CASE WHEN (excluded.last_seen, excluded.last_source_ip, excluded.last_region, excluded.last_user_agent)
        > (last_seen, last_source_ip, last_region, last_user_agent) THEN excluded.last_source_ip ELSE last_source_ip END,
    last_region = CASE WHEN (excluded.last_seen, excluded.last_source_ip, excluded.last_region, excluded.last_user_agent)
        > (last_seen, last_source_ip, last_region, last_user_agent) THEN excluded.last_region ELSE last_region END,
    last_user_agent = CASE WHEN (excluded.last_seen, excluded.last_source_ip, excluded.last_region, excluded.last_user_agent)
        > (last_seen, last_source_ip, last_region, last_user_agent) THEN excluded.last_user_agent ELSE last_user_agent END,
    console_login_at = CASE WHEN excluded.console_login_at IS NOT NULL AND (console_login_at IS NULL
        OR (excluded.console_login_at, excluded.console_login_mfa) > (console_login_at, console_login_mfa))
        THEN excluded.console_login_at ELSE console_login_at END,
    console_login_mfa = CASE WHEN excluded.console_login_at IS NOT NULL AND (console_login_at IS NULL
        OR (excluded.console_login_at, excluded.console_login_mfa) > (console_login_at, console_login_mfa))
        THEN excluded.console_login_mfa ELSE console_login_mfa END
RETURNING id, first_seen";

const UPSERT_ACTION: &str = "
INSERT INTO actions (principal_id, action_id, first_used, last_used, uses, last_denied, denied)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
ON CONFLICT (principal_id, action_id) DO UPDATE SET
    first_used = min(coalesce(first_used, excluded.first_used), coalesce(excluded.first_used, first_used)),
    last_used = max(coalesce(last_used, excluded.last_used), coalesce(excluded.last_used, last_used)),
    uses = uses + excluded.uses,
    last_denied = max(coalesce(last_denied, excluded.last_denied), coalesce(excluded.last_denied, last_denied)),
    denied = denied + excluded.denied";

const UPSERT_SESSION: &str = "
INSERT INTO sessions (principal_id, name, last_seen) VALUES (?1, ?2, ?3)
ON CONFLICT (principal_id, name) DO UPDATE SET last_seen = max(last_seen, excluded.last_seen)";

const TRIM_SESSIONS: &str = "
DELETE FROM sessions WHERE principal_id = ?1 AND name NOT IN (
    SELECT name FROM sessions WHERE principal_id = ?1 ORDER BY last_seen DESC, name DESC LIMIT ?2)";

const UPSERT_KEY: &str = "
INSERT INTO access_keys (key_id, principal, first_used, last_used) VALUES (?1, ?2, ?3, ?4)
ON CONFLICT (key_id) DO UPDATE SET
    principal = CASE WHEN (excluded.first_used, excluded.principal) < (first_used, principal)
        THEN excluded.principal ELSE principal END,
    first_used = min(first_used, excluded.first_used),
    last_used = max(last_used, excluded.last_used)";

/// SQLite's `quick_check` (every page read once, without the costlier index cross-checks): a writer does not start
/// on a damaged file, whose corruption would otherwise surface later as failing commits, or not at all.
fn check_integrity(conn: &Connection, path: &str) -> Result<(), StoreError> {
    let started = std::time::Instant::now();
    let damaged = |problems: String| StoreError::Damaged { path: path.to_owned(), problems };
    let problems: Vec<String> = conn
        .prepare("PRAGMA quick_check(5)")
        .and_then(|mut stmt| stmt.query_map([], |r| r.get::<_, String>(0))?.collect())
        .map_err(|e| damaged(e.to_string()))?;
    if started.elapsed() > std::time::Duration::from_secs(1) {
        tracing::info!(ms = started.elapsed().as_millis() as u64, "state store {path}: checked");
    }
    match problems.as_slice() {
        [ok] if ok == "ok" => Ok(()),
        _ => Err(damaged(problems.join("; ").replace('\n', "; "))),
    }
}

/// A file to record in the ledger with the batch.
pub struct LedgerEntry<'a> {
    pub key: &'a LedgerKey,
    pub records: u64,
}

impl Store {
    /// Opens (creating if needed) the state at `path`.
    pub fn open(path: &Path, synchronous: Synchronous) -> Result<Store, StoreError> {
        let display = path.display().to_string();
        let err = |source| StoreError::Sqlite { path: display.clone(), source };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            // A missing directory surfaces as SQLite's "unable to open" below, which names the path.
            let _ = std::fs::create_dir_all(parent);
        }
        let lock = WriterLock::take(path, &display)?;
        let mut conn = Connection::open(path).map_err(err)?;
        let sync = match synchronous {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        };
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync}; PRAGMA busy_timeout = 5000;
             PRAGMA cache_size = -32768; PRAGMA temp_store = MEMORY;"
        ))
        .map_err(err)?;
        check_integrity(&conn, &display)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        conn.execute_batch(outbox::SCHEMA).map_err(err)?;
        conn.execute_batch(INVENTORY_SCHEMA).map_err(err)?;
        // Schema 6 is schema 5 and these tables, created here for an older state too.
        conn.execute_batch(integrity::SCHEMA).map_err(err)?;
        let found: Option<i64> = conn
            .query_row("SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'schema_version'", [], |r| r.get(0))
            .optional()
            .map_err(err)?;
        match found {
            Some(found) if found > SCHEMA_VERSION => {
                return Err(StoreError::SchemaTooNew { path: display, found, supported: SCHEMA_VERSION });
            }
            Some(found) if found < SCHEMA_VERSION => {
                let tx = conn.transaction().map_err(err)?;
                if found < 2 {
                    outbox::migrate_hits_to_log(&tx).map_err(err)?;
                }
                migrate_local_keys_to_names(&tx).map_err(err)?;
                if found < 4 {
                    behaviour::learn_services_from_actions(&tx).map_err(err)?;
                }
                if found < 5 {
                    add_explorer_columns(&tx).map_err(err)?;
                }
                tx.execute("UPDATE meta SET value = ?1 WHERE key = 'schema_version'", [SCHEMA_VERSION.to_string()])
                    .map_err(err)?;
                tx.commit().map_err(err)?;
            }
            Some(_) => {}
            None => {
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?1)",
                    [SCHEMA_VERSION.to_string()],
                )
                .map_err(err)?;
            }
        }
        // After the migrations, which add the column to an older state: the explorer's alerts of one identity, and
        // its filter of identities with alerts, read this index instead of every alert.
        conn.execute_batch("CREATE INDEX IF NOT EXISTS alerts_by_principal ON alerts (principal);").map_err(err)?;
        let action_ids = load_action_ids(&conn).map_err(err)?;
        let checkpointer = Checkpointer::start(path);
        if checkpointer.is_some() {
            conn.execute_batch("PRAGMA wal_autocheckpoint = 0;").map_err(err)?;
        }
        Ok(Store {
            conn,
            path: display,
            action_ids,
            recent_alerts: outbox::RecentAlerts::default(),
            checkpointer,
            _writer_lock: Some(lock),
            rolled_back: false,
        })
    }

    /// Opens an existing state read-only, alongside a running writer.
    pub fn open_reader(path: &Path) -> Result<Store, StoreError> {
        let display = path.display().to_string();
        let err = |source| StoreError::Sqlite { path: display.clone(), source };
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(err)?;
        conn.execute_batch("PRAGMA busy_timeout = 5000;").map_err(err)?;
        Ok(Store {
            conn,
            path: display,
            action_ids: FxHashMap::default(),
            recent_alerts: outbox::RecentAlerts::default(),
            checkpointer: None,
            _writer_lock: None,
            rolled_back: false,
        })
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite { path: self.path.clone(), source }
    }

    /// The correlation windows the log holds, for `rules`; a row that cannot be read is reported and left out
    /// (its hits are lost, the others still count).
    pub fn correlation_windows(
        &self,
        rules: &crate::detect::ruleset::RuleSet,
    ) -> Result<crate::alert::correlate::Correlator, StoreError> {
        let (correlator, unreadable) = crate::alert::correlate::Correlator::load(rules, &self.correlation_log()?);
        if unreadable > 0 {
            tracing::warn!(rows = unreadable, "state store {}: unreadable correlation log rows left out", self.path());
        }
        Ok(correlator)
    }

    /// The correlation log's rows, oldest first (see `alert::correlate::HitLog`).
    pub fn correlation_log(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        outbox::load_hit_log(&self.conn).map_err(|e| self.err(e))
    }

    /// A second connection to this writer's state for the alert deliverer (outbox updates only), which runs beside
    /// the committer in the same process and so under the same writer lock.
    pub fn outbox_connection(&self) -> Result<Connection, StoreError> {
        let conn = Connection::open(&self.path).map_err(|e| self.err(e))?;
        conn.execute_batch("PRAGMA busy_timeout = 10000;").map_err(|e| self.err(e))?;
        Ok(conn)
    }

    /// Every ledger key, for skipping already-applied files without a query per file.
    pub fn ledger_keys(&self) -> Result<Vec<LedgerKey>, StoreError> {
        let mut stmt = self.conn.prepare("SELECT source, version FROM ledger").map_err(|e| self.err(e))?;
        let rows =
            stmt.query_map([], |r| Ok(LedgerKey { source: r.get(0)?, version: r.get(1)? })).map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Every quarantined file's key (see `crate::inflight`).
    pub fn quarantined_keys(&self) -> Result<Vec<LedgerKey>, StoreError> {
        let mut stmt = self.conn.prepare("SELECT source, version FROM quarantine").map_err(|e| self.err(e))?;
        let rows =
            stmt.query_map([], |r| Ok(LedgerKey { source: r.get(0)?, version: r.get(1)? })).map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Quarantines a file: it is never read again until its row is deleted.
    pub fn quarantine(&self, key: &LedgerKey, location: &str, at: Timestamp) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO quarantine (source, version, location, quarantined_at) VALUES (?1, ?2, ?3, ?4)",
                params![key.source, key.version, location, at],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    pub fn ledger_len(&self) -> Result<u64, StoreError> {
        self.conn
            .query_row("SELECT count(*) FROM ledger", [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(|e| self.err(e))
    }

    /// A whole batch at once, for callers that have everything at hand (tests, benches): [`Store::begin`], the
    /// state and ledger rows, each of `alerts` in turn, then the commit.
    pub fn commit<'w>(
        &mut self,
        delta: &Delta,
        files: &[LedgerEntry<'_>],
        applied_at: Timestamp,
        alerts: impl IntoIterator<Item = &'w AlertWrite>,
    ) -> Result<WriteOutcome, StoreError> {
        let mut batch = self.begin()?;
        batch.write_state(delta, files, applied_at)?;
        let mut outcome = WriteOutcome::default();
        for write in alerts {
            outcome.new.extend(batch.write_alerts(write)?.new);
        }
        batch.commit()?;
        Ok(outcome)
    }

    /// Opens a batch's transaction: each stage's rows are written through it ([`Batch`]), and nothing is stored
    /// unless it commits.
    pub fn begin(&mut self) -> Result<Batch<'_>, StoreError> {
        if self.rolled_back {
            // The last batch rolled back, so ids interned during it may not exist, and alerts it merged were not
            // stored.
            self.action_ids = load_action_ids(&self.conn).map_err(|e| self.err(e))?;
            self.recent_alerts.clear();
            self.rolled_back = false;
        }
        let tx = self.conn.transaction().map_err(|e| StoreError::Sqlite { path: self.path.clone(), source: e })?;
        Ok(Batch {
            tx: Some(tx),
            path: &self.path,
            action_ids: &mut self.action_ids,
            recent_alerts: &mut self.recent_alerts,
            checkpointer: self.checkpointer.as_ref(),
            rolled_back: &mut self.rolled_back,
            stored: Vec::new(),
        })
    }
}

/// One batch's transaction. The committer writes the state and ledger rows, then the alerts chunk by chunk, then
/// the behavioural facts' alerts, and commits; dropped without [`Batch::commit`], it rolls everything back.
pub struct Batch<'s> {
    tx: Option<Transaction<'s>>,
    path: &'s str,
    action_ids: &'s mut FxHashMap<Box<str>, i64>,
    recent_alerts: &'s mut outbox::RecentAlerts,
    checkpointer: Option<&'s Checkpointer>,
    rolled_back: &'s mut bool,
    /// Each principal's id and first time after the upsert, in `delta.principals` order (for the behavioural
    /// facts).
    stored: Vec<(i64, i64)>,
}

impl Batch<'_> {
    fn tx(&self) -> &Transaction<'_> {
        self.tx.as_ref().expect("a batch's transaction is open until it commits")
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite { path: self.path.to_owned(), source }
    }

    /// Applies `delta` and records `files` in the ledger.
    ///
    /// A file already in the ledger must not be in `files`: the caller checks (see `pipeline`), and the ledger's
    /// primary key turns a violation into an error that rolls the whole batch back instead of counting twice.
    pub fn write_state(
        &mut self,
        delta: &Delta,
        files: &[LedgerEntry<'_>],
        applied_at: Timestamp,
    ) -> Result<(), StoreError> {
        let tx = self.tx.as_ref().expect("a batch's transaction is open until it commits");
        write_batch(tx, self.action_ids, delta, files, applied_at, &mut self.stored).map_err(|e| self.err(e))
    }

    /// Writes alerts (new ones with their outbox rows, taken ids merged) and the correlation log they carry.
    pub fn write_alerts(&mut self, write: &AlertWrite) -> Result<WriteOutcome, StoreError> {
        let tx = self.tx.as_ref().expect("a batch's transaction is open until it commits");
        outbox::write(tx, write, self.recent_alerts).map_err(|e| self.err(e))
    }

    /// Writes what the batch's files gave log file validation.
    pub fn write_integrity(&mut self, rows: &integrity::IntegrityRows) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        integrity::write(self.tx(), rows).map_err(|e| self.err(e))
    }

    /// What the state written by [`Batch::write_state`] tells about regions and key IPs the store did not know,
    /// for the behavioural rules.
    pub fn behaviour_facts(&self, delta: &Delta, config: &BehaviourConfig) -> Result<Vec<Fact>, StoreError> {
        behaviour::facts(self.tx(), delta, &self.stored, config).map_err(|e| self.err(e))
    }

    pub fn commit(mut self) -> Result<(), StoreError> {
        let tx = self.tx.take().expect("a batch commits once");
        tx.commit().map_err(|e| self.err(e))?;
        if let Some(checkpointer) = self.checkpointer {
            checkpointer.notify();
        }
        Ok(())
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        if self.tx.is_some() {
            // Rolled back with the transaction: the store reloads its caches before the next batch.
            *self.rolled_back = true;
        }
    }
}

fn load_action_ids(conn: &Connection) -> rusqlite::Result<FxHashMap<Box<str>, i64>> {
    let mut stmt = conn.prepare("SELECT id, name FROM action_names")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(1)?.into_boxed_str(), r.get::<_, i64>(0)?)))?;
    rows.collect()
}

fn write_batch(
    tx: &rusqlite::Transaction<'_>,
    action_ids: &mut FxHashMap<Box<str>, i64>,
    delta: &Delta,
    files: &[LedgerEntry<'_>],
    applied_at: Timestamp,
    stored: &mut Vec<(i64, i64)>,
) -> rusqlite::Result<()> {
    let mut upsert_principal = tx.prepare_cached(UPSERT_PRINCIPAL)?;
    let mut upsert_action = tx.prepare_cached(UPSERT_ACTION)?;
    let mut upsert_session = tx.prepare_cached(UPSERT_SESSION)?;
    let mut trim_sessions = tx.prepare_cached(TRIM_SESSIONS)?;
    let mut insert_action_name = tx.prepare_cached("INSERT INTO action_names (name) VALUES (?1) RETURNING id")?;
    let mut add_day = tx.prepare_cached(
        "INSERT INTO principal_days (principal_id, day, events) VALUES (?1, ?2, ?3)
         ON CONFLICT (principal_id, day) DO UPDATE SET events = events + excluded.events",
    )?;
    // Principals first, to learn their ids; then every child row in primary-key order, so that consecutive upserts
    // land on the same B-tree pages instead of jumping across a table larger than the page cache.
    let mut by_id: Vec<(i64, &PrincipalDelta)> = Vec::with_capacity(delta.principals.len());
    stored.clear();
    for (name, p) in &delta.principals {
        let (id, first_seen): (i64, i64) = upsert_principal.query_row(
            params![
                &**name,
                p.kind,
                p.account,
                p.first_seen,
                p.last_seen,
                p.events as i64,
                p.errors as i64,
                p.last_source_ip,
                p.last_region,
                p.last_user_agent,
                p.console_login.map(|c| c.0),
                p.console_login.map(|c| c.1),
                p.denied as i64,
            ],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        by_id.push((id, p));
        stored.push((id, first_seen));
    }
    by_id.sort_unstable_by_key(|(id, _)| *id);
    let mut actions: Vec<(i64, &ActionDelta)> = Vec::new();
    for (id, p) in by_id {
        actions.clear();
        for (action, a) in &p.actions {
            let action_id = match action_ids.get(action) {
                Some(&id) => id,
                None => {
                    let id: i64 = insert_action_name.query_row([&**action], |r| r.get(0))?;
                    action_ids.insert(action.clone(), id);
                    id
                }
            };
            actions.push((action_id, a));
        }
        actions.sort_unstable_by_key(|(action_id, _)| *action_id);
        for (action_id, a) in &actions {
            upsert_action.execute(params![
                id,
                action_id,
                a.first_used,
                a.last_used,
                a.uses as i64,
                a.last_denied,
                a.denied as i64
            ])?;
        }
        for (day, events) in &p.days {
            add_day.execute(params![id, day, *events as i64])?;
        }
        if !p.sessions.is_empty() {
            for (session, last_seen) in &p.sessions {
                upsert_session.execute(params![id, session, last_seen])?;
            }
            trim_sessions.execute(params![id, MAX_SESSIONS as i64])?;
        }
    }
    let mut add_hour = tx.prepare_cached(
        "INSERT INTO event_hours (hour, events) VALUES (?1, ?2)
         ON CONFLICT (hour) DO UPDATE SET events = events + excluded.events",
    )?;
    for (hour, events) in &delta.hours {
        add_hour.execute(params![hour, *events as i64])?;
    }
    let mut upsert_key = tx.prepare_cached(UPSERT_KEY)?;
    for (key_id, k) in &delta.access_keys {
        upsert_key.execute(params![&**key_id, k.principal, k.first_used, k.last_used])?;
    }
    let mut insert_ledger =
        tx.prepare_cached("INSERT INTO ledger (source, version, records, applied_at) VALUES (?1, ?2, ?3, ?4)")?;
    for f in files {
        insert_ledger.execute(params![f.key.source, f.key.version, f.records as i64, applied_at])?;
    }
    Ok(())
}

/// Ledger keys already applied. The store's writer lock makes this process the only writer, so the set read at
/// start plus what this process commits is the whole ledger.
///
/// Each key is held as a 128-bit digest (16 bytes instead of two strings), since a daemon accumulates one per file
/// for its whole life; two keys colliding is about as likely as 2^-64 for billions of files.
///
/// It is shared (a read lock per file, never per record) so that a fetch stage can skip an object the committer
/// has just applied: the committer adds a batch's keys before it reports the batch committed.
#[derive(Debug, Default)]
pub struct Applied(std::sync::RwLock<HashSet<u128>>);

impl Applied {
    /// The ledger, and the quarantined files (skipped alike).
    pub fn load(store: &Store) -> Result<Applied, StoreError> {
        let keys = store.ledger_keys()?.into_iter().chain(store.quarantined_keys()?);
        Ok(Applied(std::sync::RwLock::new(keys.map(|key| digest(&key)).collect())))
    }

    /// Adds a key not applied but to be skipped as if it were (a quarantined file).
    pub fn insert(&self, key: LedgerKey) {
        self.insert_all(std::iter::once(&key));
    }

    pub fn contains(&self, key: &LedgerKey) -> bool {
        // A poisoned lock only means a panic elsewhere while inserting; the set itself is still a valid set.
        self.0.read().unwrap_or_else(|e| e.into_inner()).contains(&digest(key))
    }

    pub fn len(&self) -> usize {
        self.0.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn insert_all<'k>(&self, keys: impl Iterator<Item = &'k LedgerKey>) {
        let mut set = self.0.write().unwrap_or_else(|e| e.into_inner());
        set.extend(keys.map(digest));
    }
}

/// Two independent SipHash-1-3 digests of the key: in memory only, never persisted, so the std hasher's
/// freedom to change between Rust releases does not matter.
fn digest(key: &LedgerKey) -> u128 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let half = |salt: u8| {
        let mut h = DefaultHasher::new();
        salt.hash(&mut h);
        key.hash(&mut h);
        h.finish()
    };
    (u128::from(half(0)) << 64) | u128::from(half(1))
}

#[cfg(test)]
mod planning_tests;
#[cfg(test)]
mod tests;
