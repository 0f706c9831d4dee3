//! The edge of the permissions stage: the inventory read from `[inventory] files`, and the usage read from the
//! state store, as values for the pure `permissions` modules.

use std::collections::HashMap;
use std::path::PathBuf;

use rusqlite::Connection;

use crate::permissions::analysis::{KeyUse, Usage};
use crate::permissions::inventory::{AccountInventory, Inventory, InventoryError};

#[derive(Debug, thiserror::Error)]
pub enum InventoryLoadError {
    #[error("{path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error(transparent)]
    Parse(#[from] InventoryError),
}

/// Reads every inventory file; returns the inventory and the problems found inside the files (unreadable
/// policies), which the caller logs. A file that cannot be read or is not authorization details is an error.
pub fn load_files(files: &[PathBuf]) -> Result<(Inventory, Vec<String>), InventoryLoadError> {
    let mut inventory = Inventory::default();
    let mut problems = Vec::new();
    for path in files {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| InventoryLoadError::Read {
            path: origin.clone(),
            source: std::io::Error::new(source.kind(), source.to_string().to_lowercase()),
        })?;
        let mut account = AccountInventory::from_json(&text, &origin)?;
        problems.append(&mut account.problems);
        if inventory.account(&account.account_id).is_some() {
            problems
                .push(format!("{origin}: account {} is also in an earlier file; this one is used", account.account_id));
        }
        inventory.insert(account);
    }
    Ok((inventory, problems))
}

/// Every identity's activity and every access key the state knows.
pub fn usage(conn: &Connection) -> rusqlite::Result<(Vec<Usage>, HashMap<String, KeyUse>)> {
    let mut principals = conn.prepare(
        "SELECT id, principal, kind, account_id, first_seen, last_seen, console_login_at FROM principals ORDER BY id",
    )?;
    let mut usage: Vec<Usage> = Vec::new();
    let mut ids: HashMap<i64, usize> = HashMap::new();
    let rows = principals.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            Usage {
                principal: r.get(1)?,
                kind: r.get(2)?,
                account_id: r.get(3)?,
                first_seen: r.get(4)?,
                last_seen: r.get(5)?,
                console_login_at: r.get(6)?,
                actions: Vec::new(),
            },
        ))
    })?;
    for row in rows {
        let (id, u) = row?;
        ids.insert(id, usage.len());
        usage.push(u);
    }
    let mut actions = conn.prepare(
        "SELECT a.principal_id, n.name, a.first_used, a.last_used FROM actions a JOIN action_names n ON n.id = a.action_id",
    )?;
    let rows = actions.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get(2)?, r.get(3)?)))?;
    for row in rows {
        let (id, name, first, last) = row?;
        if let Some(&at) = ids.get(&id) {
            usage[at].actions.push((name, first, last));
        }
    }
    let mut keys = conn.prepare("SELECT key_id, principal, first_used, last_used FROM access_keys")?;
    let keys = keys
        .query_map([], |r| {
            Ok((r.get::<_, String>(0)?, KeyUse { principal: r.get(1)?, first_used: r.get(2)?, last_used: r.get(3)? }))
        })?
        .collect::<rusqlite::Result<HashMap<_, _>>>()?;
    Ok((usage, keys))
}
