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

const USAGE_COLUMNS: &str =
    "SELECT id, principal, kind, account_id, first_seen, last_seen, console_login_at FROM principals";
const ACTION_COLUMNS: &str =
    "SELECT a.principal_id, n.name, a.first_used, a.last_used FROM actions a JOIN action_names n ON n.id = a.action_id";
const KEY_COLUMNS: &str = "SELECT key_id, principal, first_used, last_used FROM access_keys";

/// A principal's row as its id and its [`Usage`] without actions.
fn usage_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, Usage)> {
    Ok((
        r.get(0)?,
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
}

type ActionRow = (i64, String, Option<i64>, Option<i64>);

fn action_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ActionRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

fn key_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, KeyUse)> {
    Ok((r.get(0)?, KeyUse { principal: r.get(1)?, first_used: r.get(2)?, last_used: r.get(3)? }))
}

/// Every identity's activity and every access key the state knows.
pub fn usage(conn: &Connection) -> rusqlite::Result<(Vec<Usage>, HashMap<String, KeyUse>)> {
    let mut principals = conn.prepare(&format!("{USAGE_COLUMNS} ORDER BY id"))?;
    let mut usage: Vec<Usage> = Vec::new();
    let mut ids: HashMap<i64, usize> = HashMap::new();
    for row in principals.query_map([], usage_row)? {
        let (id, u) = row?;
        ids.insert(id, usage.len());
        usage.push(u);
    }
    let mut actions = conn.prepare(ACTION_COLUMNS)?;
    for row in actions.query_map([], action_row)? {
        let (id, name, first, last) = row?;
        if let Some(&at) = ids.get(&id) {
            usage[at].actions.push((name, first, last));
        }
    }
    let keys = conn.prepare(KEY_COLUMNS)?.query_map([], key_row)?.collect::<rusqlite::Result<HashMap<_, _>>>()?;
    Ok((usage, keys))
}

/// One identity's activity (`None` if the state does not know it) and the access keys it used, read by index:
/// what [`crate::permissions::analysis::analyse_one`] needs.
pub fn usage_of(conn: &Connection, principal: &str) -> rusqlite::Result<(Option<Usage>, HashMap<String, KeyUse>)> {
    use rusqlite::OptionalExtension;
    let found = conn.query_row(&format!("{USAGE_COLUMNS} WHERE principal = ?1"), [principal], usage_row).optional()?;
    let usage = match found {
        Some((id, mut usage)) => {
            let mut actions = conn.prepare(&format!("{ACTION_COLUMNS} WHERE a.principal_id = ?1"))?;
            for row in actions.query_map([id], action_row)? {
                let (_, name, first, last) = row?;
                usage.actions.push((name, first, last));
            }
            Some(usage)
        }
        None => None,
    };
    let keys = conn
        .prepare(&format!("{KEY_COLUMNS} WHERE principal = ?1"))?
        .query_map([principal], key_row)?
        .collect::<rusqlite::Result<HashMap<_, _>>>()?;
    Ok((usage, keys))
}

/// Stores one account's fetched inventory (replacing the previous fetch of that account).
pub fn store_inventory(conn: &Connection, account_id: &str, fetched_at: i64, body: &str) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO inventory (account_id, fetched_at, body) VALUES (?1, ?2, ?3)
         ON CONFLICT (account_id) DO UPDATE SET fetched_at = excluded.fetched_at, body = excluded.body",
        rusqlite::params![account_id, fetched_at, body],
    )
    .map(|_| ())
}

/// The inventory: the files first, then the accounts fetched from the API (a fetched account replaces a file's
/// copy of the same account, being newer). Problems inside the documents come back to be logged.
pub fn load(files: &[PathBuf], conn: Option<&Connection>) -> Result<(Inventory, Vec<String>), InventoryLoadError> {
    let (mut inventory, mut problems) = load_files(files)?;
    let Some(conn) = conn else { return Ok((inventory, problems)) };
    let stored: Vec<(String, String)> = match conn
        .prepare("SELECT account_id, body FROM inventory ORDER BY account_id")
        .and_then(|mut stmt| stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
    {
        Ok(rows) => rows,
        // A state written before the inventory table existed, opened read-only.
        Err(rusqlite::Error::SqliteFailure(_, Some(message))) if message.contains("no such table") => Vec::new(),
        Err(err) => {
            problems.push(format!("stored inventory: {err}"));
            Vec::new()
        }
    };
    for (account, body) in stored {
        let origin = format!("inventory fetched for {account}");
        match AccountInventory::from_json(&body, &origin) {
            Ok(mut fetched) => {
                problems.append(&mut fetched.problems);
                inventory.insert(fetched);
            }
            Err(err) => problems.push(err.to_string()),
        }
    }
    Ok((inventory, problems))
}

#[cfg(feature = "iam")]
pub use fetch::{FetchError, fetch_account, fetch_all};

/// Fetching the inventory from the IAM API: `GetAccountAuthorizationDetails` (paginated), and per user
/// `ListAccessKeys` and `GetLoginProfile`, written out in the same JSON shape as the CLI's, so that files and
/// fetches go through one parser.
#[cfg(feature = "iam")]
mod fetch {
    use aws_sdk_iam::Client;
    use aws_sdk_iam::primitives::DateTime;
    use serde_json::{Value, json};

    use crate::aws::{AwsSettings, sdk_config};
    use crate::time::format_rfc3339;

    #[derive(Debug, thiserror::Error)]
    pub enum FetchError {
        #[error("iam {operation} ({account}): {message}")]
        Api { operation: &'static str, account: String, message: String },
        #[error(
            "iam ({account}): the authorization details hold no user, group or role, so no account to file them under"
        )]
        NoAccount { account: String },
    }

    fn api<E: std::error::Error + 'static>(operation: &'static str, account: &str) -> impl Fn(E) -> FetchError {
        move |err| FetchError::Api { operation, account: account.to_owned(), message: crate::aws::describe(&err) }
    }

    fn time(t: Option<&DateTime>) -> Value {
        t.map_or(Value::Null, |t| Value::String(format_rfc3339(t.secs())))
    }

    fn documents(list: &[aws_sdk_iam::types::PolicyDetail]) -> Value {
        list.iter().map(|p| json!({ "PolicyName": p.policy_name(), "PolicyDocument": p.policy_document() })).collect()
    }

    fn attached(list: &[aws_sdk_iam::types::AttachedPolicy]) -> Value {
        list.iter().map(|p| json!({ "PolicyName": p.policy_name(), "PolicyArn": p.policy_arn() })).collect()
    }

    fn boundary(b: Option<&aws_sdk_iam::types::AttachedPermissionsBoundary>) -> Value {
        b.map_or(
            Value::Null,
            |b| json!({ "PermissionsBoundaryType": "Policy", "PermissionsBoundaryArn": b.permissions_boundary_arn() }),
        )
    }

    /// One account's inventory as `(account id, JSON)`, with the client's credentials. `label` names the account
    /// (or the role assumed for it) in errors.
    pub async fn fetch_account(client: &Client, label: &str) -> Result<(String, String), FetchError> {
        let (mut users, mut groups, mut roles, mut policies) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut pages = client.get_account_authorization_details().into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(api("GetAccountAuthorizationDetails", label))?;
            for u in page.user_detail_list() {
                users.push(json!({
                    "UserName": u.user_name(), "Arn": u.arn(), "Path": u.path(), "CreateDate": time(u.create_date()),
                    "UserPolicyList": documents(u.user_policy_list()), "GroupList": u.group_list(),
                    "AttachedManagedPolicies": attached(u.attached_managed_policies()),
                    "PermissionsBoundary": boundary(u.permissions_boundary()),
                }));
            }
            for g in page.group_detail_list() {
                groups.push(json!({
                    "GroupName": g.group_name(), "Arn": g.arn(), "Path": g.path(),
                    "GroupPolicyList": documents(g.group_policy_list()),
                    "AttachedManagedPolicies": attached(g.attached_managed_policies()),
                }));
            }
            for r in page.role_detail_list() {
                roles.push(json!({
                    "RoleName": r.role_name(), "Arn": r.arn(), "Path": r.path(), "CreateDate": time(r.create_date()),
                    "RolePolicyList": documents(r.role_policy_list()),
                    "AttachedManagedPolicies": attached(r.attached_managed_policies()),
                    "PermissionsBoundary": boundary(r.permissions_boundary()),
                    "RoleLastUsed": r.role_last_used().map(|l| json!({ "LastUsedDate": time(l.last_used_date()), "Region": l.region() })),
                }));
            }
            for p in page.policies() {
                // Only the default version is in force.
                let versions: Vec<Value> = p
                    .policy_version_list()
                    .iter()
                    .filter(|v| v.is_default_version())
                    .map(|v| json!({ "Document": v.document(), "VersionId": v.version_id(), "IsDefaultVersion": true }))
                    .collect();
                policies.push(json!({ "PolicyName": p.policy_name(), "Arn": p.arn(), "PolicyVersionList": versions }));
            }
        }
        let account = users
            .iter()
            .chain(&roles)
            .chain(&groups)
            .find_map(|i| i["Arn"].as_str().and_then(crate::permissions::inventory::arn_account))
            .ok_or_else(|| FetchError::NoAccount { account: label.to_owned() })?
            .to_owned();
        let (mut keys, mut profiles) = (Vec::new(), Vec::new());
        for name in users.iter().filter_map(|u| u["UserName"].as_str()) {
            let mut pages = client.list_access_keys().user_name(name).into_paginator().send();
            while let Some(page) = pages.next().await {
                for k in page.map_err(api("ListAccessKeys", label))?.access_key_metadata() {
                    keys.push(json!({
                        "UserName": k.user_name(), "AccessKeyId": k.access_key_id(),
                        "Status": k.status().map(|s| s.as_str()), "CreateDate": time(k.create_date()),
                    }));
                }
            }
            match client.get_login_profile().user_name(name).send().await {
                Ok(out) => {
                    if let Some(p) = out.login_profile() {
                        profiles.push(json!({ "UserName": p.user_name(), "CreateDate": time(Some(p.create_date())) }));
                    }
                }
                Err(err) if err.as_service_error().is_some_and(|e| e.is_no_such_entity_exception()) => {}
                Err(err) => return Err(api("GetLoginProfile", label)(err)),
            }
        }
        let body = json!({
            "UserDetailList": users, "GroupDetailList": groups, "RoleDetailList": roles, "Policies": policies,
            "AccessKeyMetadata": keys, "LoginProfiles": profiles,
        });
        Ok((account, body.to_string()))
    }

    /// Every configured account: the credentials' own account when `assume_role_arns` is empty, otherwise one
    /// assumed role per account. An account that fails is reported and the others are still fetched.
    pub async fn fetch_all(
        settings: &AwsSettings,
        assume_role_arns: &[String],
    ) -> Vec<Result<(String, String), FetchError>> {
        let sdk = sdk_config(settings).await;
        if assume_role_arns.is_empty() {
            return vec![fetch_account(&Client::new(&sdk), "own account").await];
        }
        let mut out = Vec::new();
        for arn in assume_role_arns {
            let provider = aws_config::sts::AssumeRoleProvider::builder(arn)
                .session_name("trailwatch-inventory")
                .configure(&sdk)
                .build()
                .await;
            let config = aws_sdk_iam::config::Builder::from(&sdk).credentials_provider(provider).build();
            out.push(fetch_account(&Client::from_conf(config), arn).await);
        }
        out
    }
}

/// Stores what a fetch brought (each account that succeeded) and returns the accounts stored and the errors.
#[cfg(feature = "iam")]
pub fn store_fetched(
    conn: &Connection,
    results: Vec<Result<(String, String), FetchError>>,
    fetched_at: i64,
) -> rusqlite::Result<(Vec<String>, Vec<FetchError>)> {
    let (mut stored, mut errors) = (Vec::new(), Vec::new());
    for result in results {
        match result {
            Ok((account, body)) => {
                store_inventory(conn, &account, fetched_at, &body)?;
                stored.push(account);
            }
            Err(err) => errors.push(err),
        }
    }
    Ok((stored, errors))
}

/// The daemons' refresh: fetch every `refresh_secs` (the first at start) into the state file, on its own
/// connection; failures are logged and retried at the next refresh.
#[cfg(feature = "iam")]
pub fn start_refresh(
    runtime: &tokio::runtime::Runtime,
    config: &crate::config::Config,
    store: &crate::store::Store,
    stop: crate::shutdown::Listener,
) -> Result<Option<tokio::task::JoinHandle<()>>, crate::store::StoreError> {
    let iam = config.inventory.iam.clone();
    if !iam.enabled {
        return Ok(None);
    }
    let conn = std::sync::Arc::new(std::sync::Mutex::new(store.outbox_connection()?));
    let aws = config.aws.clone();
    Ok(Some(runtime.spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(iam.refresh_secs));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stop.requested() => return,
            }
            let results = fetch_all(&aws, &iam.assume_role_arns).await;
            let conn = std::sync::Arc::clone(&conn);
            let stored = tokio::task::spawn_blocking(move || {
                let conn = conn.lock().unwrap_or_else(|p| p.into_inner());
                store_fetched(&conn, results, crate::time::now())
            })
            .await;
            match stored {
                Ok(Ok((accounts, errors))) => {
                    for err in &errors {
                        tracing::error!("inventory: {err}");
                    }
                    tracing::info!(accounts = accounts.len(), failed = errors.len(), "iam inventory refreshed");
                }
                Ok(Err(err)) => tracing::error!("inventory: storing the fetch: {err}"),
                Err(err) => tracing::error!("inventory: {err}"),
            }
        }
    })))
}
