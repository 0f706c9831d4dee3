//! The identity explorer: read-only HTML pages over the state (overview, identities, one identity, alerts and
//! findings), served beside the API by the daemon and by `trailwatch serve`.
//!
//! Pages are rendered on the server and hold no script: filters are GET forms (their state is the URL), charts
//! are inline SVG styled by the one embedded stylesheet. Every response carries a Content-Security-Policy that
//! allows nothing but this origin's stylesheet and images, `X-Frame-Options: DENY` and `nosniff`. With an API
//! token configured, pages need either the bearer header or the session cookie that `/signin` sets (an HMAC of
//! the token, `HttpOnly`, `SameSite=Strict`); without either only the sign-in form answers.

pub mod html;
pub mod pages;
pub mod query;

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hmac::{KeyInit, Mac};

use crate::permissions::inventory::Inventory;
use crate::store::Store;

/// What the pages read and how they are guarded.
#[derive(Clone)]
pub struct Ui {
    pub store_path: PathBuf,
    pub findings: crate::config::FindingsConfig,
    pub permissions: crate::config::PermissionsConfig,
    pub inventory_files: Vec<PathBuf>,
    pub token: Option<String>,
    /// The process's counters, for what the state does not keep (files rejected since start); `None` in tests.
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
    pub inventory: InventoryCache,
}

/// The inventory the pages read, parsed once and kept until a file or the fetched accounts change: an identity
/// page must not parse every account's authorization details on each view (125 ms for 5,000 roles).
#[derive(Clone, Default)]
pub struct InventoryCache(Arc<std::sync::Mutex<Option<CachedInventory>>>);

/// The inventory last parsed, with what it was parsed from.
type CachedInventory = (InventoryStamp, Arc<Inventory>);

/// What says the inventory changed: each file's length and modification time, and the fetched accounts' count
/// and newest fetch.
type InventoryStamp = (Vec<Option<(u64, std::time::SystemTime)>>, i64, Option<i64>);

impl InventoryCache {
    /// The inventory from `files` and the state's fetched accounts, parsed again only when they changed.
    pub fn get(&self, files: &[PathBuf], conn: &rusqlite::Connection) -> Result<Arc<Inventory>, String> {
        let on_disk = files.iter().map(|f| std::fs::metadata(f).ok().and_then(|m| Some((m.len(), m.modified().ok()?))));
        let (count, newest) = conn
            .query_row("SELECT count(*), max(fetched_at) FROM inventory", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(|e| e.to_string())?;
        let stamp: InventoryStamp = (on_disk.collect(), count, newest);
        let mut cached = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((seen, inventory)) = cached.as_ref()
            && *seen == stamp
        {
            return Ok(Arc::clone(inventory));
        }
        let (inventory, _) = crate::iam::load(files, Some(conn)).map_err(|e| e.to_string())?;
        let inventory = Arc::new(inventory);
        *cached = Some((stamp, Arc::clone(&inventory)));
        Ok(inventory)
    }
}

impl Ui {
    /// What a configuration gives the pages (and the API, which reads the same).
    pub fn of(config: &crate::config::Config) -> Ui {
        Ui {
            store_path: config.store_path.clone(),
            findings: config.findings.clone(),
            permissions: config.permissions.clone(),
            inventory_files: config.inventory.files.clone(),
            token: config.api_token.clone(),
            metrics: None,
            inventory: InventoryCache::default(),
        }
    }
}

/// The stylesheet, the one asset.
const STYLE: &str = include_str!("style.css");

/// Nothing runs; only this origin's stylesheet and images load; forms post only here; no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
                                           frame-ancestors 'none'; base-uri 'none'";

/// The session cookie's name.
const COOKIE: &str = "trailwatch_session";

/// The pages and the sign-in routes, guarded by the token when one is set.
pub fn router(ui: Ui) -> Router {
    let token = ui.token.clone();
    let pages = Router::new()
        .route("/", get(overview))
        .route("/identities", get(identities))
        .route("/identities/{*principal}", get(identity))
        .route("/alerts", get(alerts))
        .route("/policy/{*principal}", get(policy))
        .with_state(Arc::new(ui))
        .layer(axum::middleware::from_fn(move |request: Request, next: Next| {
            let token = token.clone();
            async move {
                match token {
                    Some(token) if !authorized(&token, request.headers()) => {
                        (StatusCode::SEE_OTHER, [(header::LOCATION, "/signin")]).into_response()
                    }
                    _ => next.run(request).await,
                }
            }
        }));
    Router::new()
        .route("/assets/style.css", get(|| async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE) }))
        .merge(pages)
}

/// The sign-in routes, given the token (they answer 404 without one: there is nothing to sign in to).
pub fn sign_in_router(token: Option<String>) -> Router {
    let Some(token) = token else { return Router::new() };
    let token = Arc::new(token);
    Router::new().route(
        "/signin",
        get(|| async { html(StatusCode::OK, pages::sign_in(false)) }).post(move |body: String| {
            let token = Arc::clone(&token);
            async move { sign_in(&token, &body) }
        }),
    )
}

/// Checks a posted token; a match gets the session cookie and goes to the overview.
fn sign_in(token: &str, body: &str) -> Response {
    let given = body
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
        .and_then(crate::permissions::policy::percent_decode)
        .unwrap_or_default();
    if !constant_time_eq(given.as_bytes(), token.as_bytes()) {
        return html(StatusCode::UNAUTHORIZED, pages::sign_in(true));
    }
    let cookie = format!("{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict", session_value(token));
    let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// The session cookie's value: an HMAC of a fixed text under the token, so the cookie is not the token itself
/// and changing the token signs every browser out.
fn session_value(token: &str) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(token.as_bytes()).expect("HMAC takes any key length");
    mac.update(b"trailwatch ui session v1");
    hex::encode(mac.finalize().into_bytes())
}

/// Whether a request carries the token: `Authorization: Bearer <token>` or the session cookie.
pub fn authorized(token: &str, headers: &HeaderMap) -> bool {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .is_some_and(|given| constant_time_eq(given.as_bytes(), token.as_bytes()));
    bearer || {
        let expected = session_value(token);
        headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).any(|cookies| {
            cookies
                .split(';')
                .filter_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
                .any(|value| constant_time_eq(value.as_bytes(), expected.as_bytes()))
        })
    }
}

/// The token of an `Authorization: Bearer <token>` value; the scheme's case does not matter (RFC 7235).
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim_start())
}

/// Equal length and bytes, in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Adds the security headers to every response.
pub async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

fn html(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

/// Runs `f` on a reader of the state file, off the async threads (the API's handlers use it too). Errors are the
/// reason as text: a store path and SQLite's message, never a secret.
pub async fn read_state<T: Send + 'static>(
    path: &std::path::Path,
    f: impl FnOnce(&Store) -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || f(&Store::open_reader(&path).map_err(|e| e.to_string())?))
        .await
        .unwrap_or_else(|e| Err(e.to_string()))
}

/// Renders a page from the store; a store error is a 500 page naming the store.
async fn render(ui: &Ui, f: impl FnOnce(&Store, &Ui) -> Result<Response, String> + Send + 'static) -> Response {
    let reading = ui.clone();
    read_state(&ui.store_path, move |store| f(store, &reading)).await.unwrap_or_else(|err| {
        tracing::warn!("ui: {err}");
        html(StatusCode::INTERNAL_SERVER_ERROR, pages::message("Error", &format!("the state cannot be read: {err}")))
    })
}

/// The query string's parameters, percent-decoded (`+` is a space, as forms send it).
pub fn params(uri: &Uri) -> Vec<(String, String)> {
    let Some(query) = uri.query() else { return Vec::new() };
    query
        .split('&')
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = crate::permissions::policy::percent_decode;
            Some((decode(key)?, decode(value)?))
        })
        .collect()
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> &'a str {
    params.iter().find(|(k, _)| k == name).map_or("", |(_, v)| v.trim())
}

async fn overview(State(ui): State<Arc<Ui>>) -> Response {
    render(&ui, |store, ui| Ok(html(StatusCode::OK, overview_page(store, ui)?))).await
}

/// The overview as HTML (the handler's work, for the bench too).
pub fn overview_page(store: &Store, ui: &Ui) -> Result<String, String> {
    let now = crate::time::now();
    let mut overview = query::overview(store.connection(), now, &ui.findings).map_err(|e| e.to_string())?;
    overview.files_rejected = ui.metrics.as_ref().map(|m| m.files.with_label_values(&["rejected"]).get());
    Ok(pages::overview(&overview, now, ui.findings.inactive_days))
}

/// The identities filter a URL asks for; bad numbers are ignored rather than refused (a hand-edited link).
pub fn identity_filter(uri: &Uri) -> query::IdentityFilter {
    let params = params(uri);
    let get = |name| param(&params, name).to_owned();
    query::IdentityFilter {
        search: get("q"),
        kind: get("kind"),
        account: get("account"),
        inactive_days: param(&params, "inactive_days").parse().ok().filter(|d| *d >= 0),
        has_alerts: param(&params, "has_alerts") == "1",
        stale_key: param(&params, "stale_key") == "1",
        unused_permissions: param(&params, "unused") == "1",
        sort: query::IdentitySort::parse(param(&params, "sort")).unwrap_or_default(),
        page: param(&params, "page").parse().unwrap_or(0).min(1_000_000),
    }
}

async fn identities(State(ui): State<Arc<Ui>>, uri: Uri) -> Response {
    let filter = identity_filter(&uri);
    render(&ui, move |store, ui| Ok(html(StatusCode::OK, identities_page(store, ui, &filter)?))).await
}

/// The identities page as HTML (the handler's work, for the bench too).
pub fn identities_page(store: &Store, ui: &Ui, filter: &query::IdentityFilter) -> Result<String, String> {
    let conn = store.connection();
    let now = crate::time::now();
    let holding_unused = match filter.unused_permissions {
        true => holding_unused_permissions(store, ui)?,
        false => Vec::new(),
    };
    let not_rotated = match filter.stale_key {
        true => keys_not_rotated(store, ui, now)?,
        false => Vec::new(),
    };
    let days = ui.findings.access_key_unused_days;
    let (rows, total) =
        query::identities(conn, filter, now, days, &holding_unused, &not_rotated).map_err(|e| e.to_string())?;
    Ok(pages::identities(&rows, total, filter))
}

/// The identities that hold permissions they did not use in the window, as `report permissions` finds them (the
/// inventory against every identity's usage: the cost of this filter grows with the state, the others' do not).
fn holding_unused_permissions(store: &Store, ui: &Ui) -> Result<Vec<String>, String> {
    let settings = permission_settings(ui);
    let inventory = ui.inventory.get(&ui.inventory_files, store.connection())?;
    let (usage, keys) = crate::iam::usage(store.connection()).map_err(|e| e.to_string())?;
    let reports = crate::permissions::analysis::analyse(&inventory, &usage, &keys, &settings);
    Ok(reports
        .into_iter()
        .filter(|r| !r.unused_services.is_empty() || !r.unused_actions.is_empty())
        .map(|r| r.principal)
        .collect())
}

/// The users with an active access key older than the rotation period, by the inventory (which alone knows when
/// a key was created): cheap, no usage is read.
fn keys_not_rotated(store: &Store, ui: &Ui, now: crate::time::Timestamp) -> Result<Vec<String>, String> {
    let inventory = ui.inventory.get(&ui.inventory_files, store.connection())?;
    let before = now - ui.permissions.key_rotation_days * 86_400;
    let mut users = Vec::new();
    for account in inventory.accounts.values() {
        for key in account.access_keys.iter().filter(|k| k.status == "Active" && k.created.is_some_and(|c| c < before))
        {
            users.extend(account.users.iter().filter(|u| u.name == key.user).map(|u| u.arn.clone()));
        }
    }
    Ok(users)
}

fn permission_settings(ui: &Ui) -> crate::permissions::analysis::Settings {
    crate::permissions::analysis::Settings {
        as_of: crate::time::now(),
        window_days: ui.permissions.window_days,
        data_events_logged: ui.permissions.data_events_logged,
        key_rotation_days: ui.permissions.key_rotation_days,
    }
}

/// One identity's page as HTML, `None` for a principal the state does not know.
pub fn identity_page(store: &Store, ui: &Ui, principal: &str, action_filter: &str) -> Result<Option<String>, String> {
    let Some(report) = crate::report::identity(store, principal).map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let conn = store.connection();
    let last_seen = crate::time::parse_rfc3339(&report.last_seen).unwrap_or_else(crate::time::now);
    let activity = query::activity_per_day(conn, principal, last_seen).map_err(|e| e.to_string())?;
    let filter = query::AlertFilter { principal: principal.to_owned(), ..Default::default() };
    let (alerts, _) = query::alerts(conn, &filter).map_err(|e| e.to_string())?;
    let permissions = permission_report(store, ui, principal)?;
    let granted = permissions.as_ref().map(|p| &p.report).filter(|r| r.in_inventory);
    Ok(Some(pages::identity(&report, &activity, granted, &alerts, action_filter)))
}

/// An identity's permissions: the inventory against its usage, as `report permissions` gives them.
struct Permissions {
    report: crate::permissions::analysis::PermissionReport,
    usage: Option<crate::permissions::analysis::Usage>,
    settings: crate::permissions::analysis::Settings,
}

/// `None` for an identity neither the inventory nor the state knows. Reads the inventory (files, then what the
/// daemon fetched) and this identity's usage only.
fn permission_report(store: &Store, ui: &Ui, principal: &str) -> Result<Option<Permissions>, String> {
    let settings = permission_settings(ui);
    let inventory = ui.inventory.get(&ui.inventory_files, store.connection())?;
    let (usage, keys) = crate::iam::usage_of(store.connection(), principal).map_err(|e| e.to_string())?;
    let report = crate::permissions::analysis::analyse_one(&inventory, principal, usage.as_ref(), &keys, &settings);
    Ok(report.map(|report| Permissions { report, usage, settings }))
}

async fn identity(State(ui): State<Arc<Ui>>, Path(principal): Path<String>, uri: Uri) -> Response {
    let action = param(&params(&uri), "action").to_owned();
    render(&ui, move |store, ui| {
        Ok(match identity_page(store, ui, &principal, &action)? {
            Some(page) => html(StatusCode::OK, page),
            None => html(
                StatusCode::NOT_FOUND,
                pages::message("Not found", &format!("{principal}: no such identity in the state")),
            ),
        })
    })
    .await
}

async fn alerts(State(ui): State<Arc<Ui>>, uri: Uri) -> Response {
    let params = params(&uri);
    let filter = query::AlertFilter {
        severity: param(&params, "severity").to_owned(),
        rule: param(&params, "rule").to_owned(),
        account: param(&params, "account").to_owned(),
        principal: param(&params, "principal").to_owned(),
        page: param(&params, "page").parse().unwrap_or(0).min(1_000_000),
    };
    render(&ui, move |store, _| {
        let conn = store.connection();
        let (alerts, total) = query::alerts(conn, &filter).map_err(|e| e.to_string())?;
        let rules = query::alert_rules(conn).map_err(|e| e.to_string())?;
        Ok(html(StatusCode::OK, pages::alerts(&alerts, total, &filter, &rules)))
    })
    .await
}

/// `report policy`'s JSON for one principal, as a download.
async fn policy(State(ui): State<Arc<Ui>>, Path(principal): Path<String>) -> Response {
    render(&ui, move |store, ui| {
        let Some(Permissions { report, usage, settings }) = permission_report(store, ui, &principal)? else {
            return Ok(html(
                StatusCode::NOT_FOUND,
                pages::message("Not found", &format!("{principal}: no such identity")),
            ));
        };
        let (policy, _) = crate::permissions::analysis::least_privilege(&report, usage.as_ref(), &settings);
        let body = serde_json::to_string_pretty(&policy).map_err(|e| e.to_string())? + "\n";
        Ok((
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CONTENT_DISPOSITION, "attachment; filename=\"least-privilege-policy.json\""),
            ],
            body,
        )
            .into_response())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scheme is case-insensitive and may be followed by more than one space (RFC 7235); nothing else is a
    /// bearer token.
    #[test]
    fn bearer_tokens_are_read_as_rfc_7235_says() {
        let cases = [
            ("Bearer abc", Some("abc")),
            ("bearer abc", Some("abc")),
            ("BEARER abc", Some("abc")),
            ("Bearer   abc", Some("abc")),
            (" Bearer abc ", Some("abc")),
            ("Basic abc", None),
            ("Bearerabc", None),
            ("abc", None),
        ];
        for (header, token) in cases {
            assert_eq!(bearer_token(header), token, "{header:?}");
        }
    }

    /// The inventory is parsed once, and again when a file changes or the daemon stores a fetched account.
    #[test]
    fn the_inventory_is_parsed_again_only_when_it_changed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("account.json");
        let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/permissions/account.json");
        let text = std::fs::read_to_string(fixture).unwrap();
        std::fs::write(&file, &text).unwrap();
        let store = Store::open(&dir.path().join("s.db"), crate::config::Synchronous::Normal).unwrap();
        let cache = InventoryCache::default();
        let files = [file.clone()];
        let first = cache.get(&files, store.connection()).unwrap();
        assert_eq!(first.accounts.len(), 1);
        assert!(Arc::ptr_eq(&first, &cache.get(&files, store.connection()).unwrap()), "unchanged: not parsed again");
        std::fs::write(&file, format!("{text}\n")).unwrap();
        let edited = cache.get(&files, store.connection()).unwrap();
        assert!(!Arc::ptr_eq(&first, &edited), "a changed file is read again");
        crate::iam::store_inventory(store.connection(), "444455556666", 1, &text).unwrap();
        assert!(!Arc::ptr_eq(&edited, &cache.get(&files, store.connection()).unwrap()), "a fetched account too");
    }

    /// The session cookie opens the pages for the configured token only, and the bearer header does too.
    #[test]
    fn the_session_cookie_is_the_token_s_hmac() {
        let headers = |name: header::HeaderName, value: &str| {
            let mut map = HeaderMap::new();
            map.insert(name, HeaderValue::from_str(value).unwrap());
            map
        };
        let cookie = format!("a=b; {COOKIE}={}", session_value("t0ken"));
        assert!(authorized("t0ken", &headers(header::COOKIE, &cookie)));
        assert!(!authorized("other", &headers(header::COOKIE, &cookie)));
        assert!(!authorized("t0ken", &headers(header::COOKIE, &format!("{COOKIE}=t0ken"))));
        assert!(authorized("t0ken", &headers(header::AUTHORIZATION, "Bearer t0ken")));
        assert!(!authorized("t0ken", &HeaderMap::new()));
    }
}
