//! The HTTP edge: `/metrics` (Prometheus text), `/healthz` (alive), `/readyz` (store open, intake reachable), the
//! read-only JSON API under `/api/v1/` (identities, findings, recent alerts; the CLI reports' shapes), and the
//! explorer's pages (`crate::ui`).
//!
//! The API and the pages require the token when one is configured (config validation refuses a non-loopback
//! address without one): `Authorization: Bearer <token>`, or the explorer's session cookie; `/metrics` and the
//! health endpoints never do, so probes and Prometheus need no secret. The token is compared in constant time and
//! never logged. Every response carries the explorer's security headers.

use std::future::Future;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::Uri;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::metrics::Metrics;
use crate::store::Store;
use crate::ui::Ui;

/// Checks whether the daemon can do its work; `Err` says what is wrong.
pub type Readiness = crate::source::Probe;

/// What the JSON API reads: what the pages read.
pub type Api = Ui;

/// At most this many connections are served at once; one more is closed as soon as it is accepted (and counted),
/// so that idle or slow clients cannot take the file descriptors the pipeline and the store need.
pub const MAX_CONNECTIONS: usize = 256;

/// A client must send each request's headers within this, also while a kept-alive connection waits for its next
/// request: a slow or silent client (slowloris) is disconnected.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// No connection lives longer than this, however busy; clients reconnect.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(300);

/// Serves until `shutdown` resolves, then lets the requests in progress finish for a moment.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    ready: Readiness,
    api: Api,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let token = api.token.clone();
    let ui = api.clone();
    let sign_in = crate::ui::sign_in_router(api.token.clone());
    let connections_refused = metrics.http_connections_refused.clone();
    let api_routes = Router::new()
        .route("/api/v1/identities", get(identities))
        .route("/api/v1/identities/{*principal}", get(identity))
        .route("/api/v1/findings", get(findings))
        .route("/api/v1/alerts", get(alerts))
        // Unknown API paths answer after the token check too: without it, nothing says what exists.
        .route("/api/{*rest}", get(|| async { (StatusCode::NOT_FOUND, "no such endpoint\n") }))
        .with_state(Arc::new(api))
        .layer(axum::middleware::from_fn(move |request: Request, next: Next| {
            let token = token.clone();
            async move { authorize(token.as_deref(), request, next).await }
        }));
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = Arc::clone(&metrics);
                async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], metrics.render()) }
            }),
        )
        .route("/healthz", get(|| async { "ok\n".into_response() }))
        .route(
            "/readyz",
            get(move || {
                let check = ready();
                async move {
                    match check.await {
                        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
                        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")),
                    }
                }
            }),
        )
        .merge(api_routes)
        .merge(crate::ui::router(ui))
        .merge(sign_in)
        .fallback(|| async { (StatusCode::NOT_FOUND, "no such endpoint\n") })
        .layer(axum::middleware::from_fn(crate::ui::security_headers));
    serve_connections(listener, app, &connections_refused, shutdown).await;
    Ok(())
}

/// The accept loop: each connection on its own task, with a header-read timeout, a lifetime, and a slot among
/// [`MAX_CONNECTIONS`].
async fn serve_connections(
    listener: tokio::net::TcpListener,
    app: Router,
    refused: &prometheus::IntCounter,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut connections = tokio::task::JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of file descriptors, say: wait a moment instead of spinning on the error.
                Err(err) => {
                    if crate::logs::allow("http_accept_failed") {
                        tracing::warn!("http: cannot accept a connection: {}", err.to_string().to_lowercase());
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            refused.inc();
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        connections.spawn(async move {
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
            let connection = http.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, connection).await;
            drop(slot);
        });
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    // Requests in progress get a moment to finish; idle connections are closed.
    let _ =
        tokio::time::timeout(Duration::from_secs(2), async { while connections.join_next().await.is_some() {} }).await;
    connections.abort_all();
}

/// Lets a request through when no token is configured, or when it carries the token (bearer or session cookie).
async fn authorize(token: Option<&str>, request: Request, next: Next) -> Response {
    if let Some(token) = token
        && !crate::ui::authorized(token, request.headers())
    {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "a bearer token is required (Authorization: Bearer <token>)\n",
        )
            .into_response();
    }
    next.run(request).await
}

/// Answers with `f`'s value as JSON, read from the state off the async threads; `None` is a 404, an error a 500
/// with the reason (a store path, not a secret).
async fn read<T: serde::Serialize + Send + 'static>(
    api: &Api,
    f: impl FnOnce(&Store) -> Result<Option<T>, String> + Send + 'static,
) -> Response {
    match crate::ui::read_state(&api.store_path, f).await {
        Ok(Some(value)) => match serde_json::to_string(&value) {
            Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
            Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{err}\n")).into_response(),
        },
        Ok(None) => (StatusCode::NOT_FOUND, "not found\n").into_response(),
        Err(err) => {
            tracing::warn!("api: {err}");
            (StatusCode::INTERNAL_SERVER_ERROR, format!("{err}\n")).into_response()
        }
    }
}

async fn identities(State(api): State<Arc<Api>>) -> Response {
    read(&api, |store| {
        let mut out = Vec::new();
        crate::report::for_each_identity(store, |identity| {
            out.push(identity);
            Ok(())
        })
        .map_err(|e| e.to_string())?;
        Ok(Some(out))
    })
    .await
}

async fn identity(State(api): State<Arc<Api>>, Path(principal): Path<String>) -> Response {
    read(&api, move |store| crate::report::identity(store, &principal).map_err(|e| e.to_string())).await
}

/// A query-string parameter, percent-decoded; `None` when absent.
fn param(uri: &Uri, name: &str) -> Option<String> {
    crate::ui::params(uri).into_iter().find(|(key, _)| key == name).map(|(_, value)| value)
}

async fn findings(State(api): State<Arc<Api>>, uri: Uri) -> Response {
    let as_of = match param(&uri, "as_of").as_deref() {
        None => crate::time::now(),
        Some(text) => match crate::time::parse_rfc3339(text).or_else(|| crate::time::parse_date(text)) {
            Some(t) => t,
            None => return (StatusCode::BAD_REQUEST, "as_of: not a time (RFC 3339) or a date\n").into_response(),
        },
    };
    let config = api.findings.clone();
    read(&api, move |store| {
        crate::findings::compute(store.connection(), as_of, &config).map(Some).map_err(|e| e.to_string())
    })
    .await
}

async fn alerts(State(api): State<Arc<Api>>, uri: Uri) -> Response {
    let limit = match param(&uri, "limit").map(|l| l.parse::<usize>()) {
        None => 100,
        Some(Ok(n)) => n.clamp(1, 1000),
        Some(Err(_)) => return (StatusCode::BAD_REQUEST, "limit: not a number\n").into_response(),
    };
    read(&api, move |store| {
        crate::store::outbox::recent(store.connection(), limit).map(Some).map_err(|e| e.to_string())
    })
    .await
}
