//! Alert sinks: JSONL file, stdout, generic webhook (HMAC-signed), Slack, PagerDuty Events API v2 and
//! Alertmanager's `POST /api/v2/alerts`. HTTP sinks take one alert per request; file and stdout take a pass's alerts
//! as lines in one write. Each says whether it accepted them.
//!
//! Every payload carries the alert's stable `id` (PagerDuty's `dedup_key`, Alertmanager's `trailwatch_id` label),
//! so a resend after a crash is recognisable as the same alert.

use std::io::Write;
use std::time::Duration;

use hmac::{KeyInit, Mac};
use serde_json::json;

use crate::alert::Alert;
use crate::config::{SinkConfig, SinkKind};
use crate::detect::pattern::{Anchor, Pattern};
use crate::detect::rule::Severity;

/// PagerDuty's Events API v2 endpoint, used when a `pagerduty` sink sets no `url`.
pub const PAGERDUTY_URL: &str = "https://events.pagerduty.com/v2/enqueue";

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("sink {sink}: {path}: {source}")]
    File { sink: String, path: String, source: std::io::Error },
    #[error("sink {sink}: {url}: {message}")]
    Http { sink: String, url: String, message: String },
    #[error("sink {sink}: environment variable {var} is not set")]
    MissingSecret { sink: String, var: String },
}

impl SinkError {
    /// The bounded metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            SinkError::File { .. } => "file_error",
            SinkError::Http { .. } => "http_error",
            SinkError::MissingSecret { .. } => "missing_secret",
        }
    }
}

/// A configured sink, ready to send.
pub struct Sink {
    pub config: SinkConfig,
    rules: Vec<Pattern>,
    client: Option<reqwest::Client>,
}

impl Sink {
    pub fn new(config: SinkConfig) -> Sink {
        let rules = config.rules.iter().map(|r| Pattern::new(r, Anchor::Whole, false)).collect();
        let client = match config.kind {
            SinkKind::File | SinkKind::Stdout => None,
            // Never follow a redirect: the receiver would get the alert, its signature, the custom headers and a
            // Referer with the configured URL (its token), and a 302 resends as a body-less GET.
            _ => reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_millis(config.timeout_ms))
                .user_agent(concat!("trailwatch/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| tracing::error!(sink = %config.name, "cannot build the http client: {}", describe(e)))
                .ok(),
        };
        Sink { config, rules, client }
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Whether alerts of this rule and severity go to this sink.
    pub fn routes(&self, rule: &str, severity: Severity) -> bool {
        severity >= self.config.min_severity && (self.rules.is_empty() || self.rules.iter().any(|p| p.matches(rule)))
    }

    /// Whether the sink takes many alerts in one write ([`Sink::send_lines`]): file and stdout.
    pub fn writes_lines(&self) -> bool {
        matches!(self.config.kind, SinkKind::File | SinkKind::Stdout)
    }

    /// File and stdout: every alert's JSON (as stored, see `outbox::due`) as one line, in one write, and for a file
    /// one `fsync` for all of them (an alert storm is written at disk speed, not at one sync per alert). All or
    /// none are accepted.
    pub fn send_lines(&self, alerts: &[&str]) -> Result<(), SinkError> {
        let name = &self.config.name;
        let mut lines = Vec::with_capacity(alerts.iter().map(|a| a.len() + 1).sum());
        for alert in alerts {
            lines.extend_from_slice(alert.as_bytes());
            lines.push(b'\n');
        }
        match self.config.kind {
            SinkKind::File => {
                let path = self.config.path.as_deref().expect("validated: file sinks have a path");
                let file_err =
                    |source| SinkError::File { sink: name.clone(), path: path.display().to_string(), source };
                let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(file_err)?;
                file.write_all(&lines).map_err(file_err)?;
                file.sync_data().map_err(file_err)
            }
            _ => {
                let mut out = std::io::stdout().lock();
                out.write_all(&lines).and_then(|()| out.flush()).map_err(|source| SinkError::File {
                    sink: name.clone(),
                    path: "stdout".into(),
                    source,
                })
            }
        }
    }

    pub async fn send(&self, alert: &Alert) -> Result<(), SinkError> {
        match self.config.kind {
            SinkKind::File | SinkKind::Stdout => {
                let mut json = Vec::new();
                alert.write_json(&mut json);
                self.send_lines(&[std::str::from_utf8(&json).expect("alert JSON is UTF-8")])
            }
            SinkKind::Webhook => {
                let mut body = Vec::new();
                alert.write_json(&mut body);
                let url = self.config.url.as_deref().unwrap_or_default();
                let mut request = self.post(url)?.header("content-type", "application/json");
                for (key, value) in &self.config.headers {
                    request = request.header(key, value);
                }
                if let Some(var) = &self.config.secret_env {
                    let secret = self.secret(var)?;
                    request = request.header("x-trailwatch-signature", format!("sha256={}", sign(&secret, &body)));
                }
                self.finish(url, request.header("x-trailwatch-alert-id", &alert.id).body(body)).await
            }
            SinkKind::Slack => {
                let url = self.config.url.as_deref().unwrap_or_default();
                let text = format!(
                    "*[{}] {}*\n{}\nrule `{}` · principal `{}` · account `{}` · {} event(s) · id `{}`",
                    alert.severity.as_str().to_uppercase(),
                    alert.title,
                    alert.summary,
                    alert.rule,
                    alert.principal,
                    alert.account_id.as_deref().unwrap_or("-"),
                    alert.count,
                    alert.id
                );
                self.finish(url, self.post_json(url, &json!({ "text": text }))?).await
            }
            SinkKind::Pagerduty => {
                let url = self.config.url.as_deref().unwrap_or(PAGERDUTY_URL);
                let key = self.secret(self.config.routing_key_env.as_deref().unwrap_or_default())?;
                let severity = match alert.severity {
                    Severity::Critical => "critical",
                    Severity::High => "error",
                    Severity::Medium => "warning",
                    Severity::Low | Severity::Informational => "info",
                };
                let body = json!({
                    "routing_key": key,
                    "event_action": "trigger",
                    "dedup_key": alert.id,
                    "payload": {
                        "summary": truncate(&alert.summary, 1024),
                        "source": alert.account_id.as_deref().unwrap_or("trailwatch"),
                        "severity": severity,
                        "timestamp": crate::alert::time_text(alert.first_seen),
                        "component": alert.principal,
                        "class": alert.rule,
                        "custom_details": alert,
                    },
                });
                self.finish(url, self.post_json(url, &body)?).await
            }
            SinkKind::Alertmanager => {
                let base = self.config.url.as_deref().unwrap_or_default().trim_end_matches('/');
                let url = format!("{base}/api/v2/alerts");
                self.finish(&url, self.post_json(&url, &alertmanager_payload(alert))?).await
            }
        }
    }

    /// A POST to `url`. The HTTP client is built with the sink; if that failed (no TLS roots, say), every send
    /// fails with the reason and the alert stays in the outbox, rather than the deliverer panicking.
    fn post(&self, url: &str) -> Result<reqwest::RequestBuilder, SinkError> {
        match &self.client {
            Some(client) => Ok(client.post(url)),
            None => Err(SinkError::Http {
                sink: self.config.name.clone(),
                url: redact_url(url),
                message: "the http client could not be built".into(),
            }),
        }
    }

    fn post_json(&self, url: &str, body: &serde_json::Value) -> Result<reqwest::RequestBuilder, SinkError> {
        Ok(self.post(url)?.header("content-type", "application/json").body(body.to_string()))
    }

    fn secret(&self, var: &str) -> Result<String, SinkError> {
        std::env::var(var)
            .ok()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| SinkError::MissingSecret { sink: self.config.name.clone(), var: var.to_owned() })
    }

    async fn finish(&self, url: &str, request: reqwest::RequestBuilder) -> Result<(), SinkError> {
        let http = |message: String| SinkError::Http { sink: self.config.name.clone(), url: redact_url(url), message };
        let response = request.send().await.map_err(|e| http(describe(e)))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        if status.is_redirection() {
            let location = response.headers().get(reqwest::header::LOCATION).and_then(|l| l.to_str().ok());
            return Err(http(format!(
                "status {status}: redirects are not followed (location: {})",
                location.map_or_else(|| "none".to_owned(), redact_url)
            )));
        }
        let body = response.text().await.unwrap_or_default();
        Err(http(format!("status {status}: {}", truncate(body.trim(), 200))))
    }
}

/// The alert as one Alertmanager alert: labels for routing, grouping and silences; the rest as annotations.
pub fn alertmanager_payload(alert: &Alert) -> serde_json::Value {
    let mut labels = json!({
        "alertname": alert.rule,
        "severity": alert.severity.as_str(),
        "source": "trailwatch",
        "trailwatch_id": alert.id,
        "principal": alert.principal,
    });
    if let Some(account) = &alert.account_id {
        labels["account_id"] = json!(account);
    }
    json!([{
        "labels": labels,
        "annotations": {
            "title": alert.title,
            "summary": alert.summary,
            "event_ids": alert.event_ids.iter().collect::<Vec<_>>().join(","),
            "count": alert.count.to_string(),
            "source_ip": alert.source_ip.as_deref().unwrap_or(""),
            "region": alert.region.as_deref().unwrap_or(""),
        },
        "startsAt": crate::alert::time_text(alert.first_seen),
    }])
}

/// `hex(HMAC-SHA256(secret, body))`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("hmac takes any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((at, _)) => &text[..at],
        None => text,
    }
}

/// A URL as logs and error messages may show it: scheme, host, port and the path's plain words; user info, the
/// query, the fragment and any path segment that could be a credential (anything but lowercase words and
/// versions, like a Slack webhook's `T…/B…/…` or a `/hooks/<token>`) become `*`. A webhook URL is often itself
/// the secret.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, rest) = rest.split_at(end);
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    let path_end = rest.find(['?', '#']).unwrap_or(rest.len());
    let (path, tail) = rest.split_at(path_end);
    let word = |segment: &str| {
        let version = segment.strip_prefix('v').is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        version || segment.bytes().all(|b| b.is_ascii_lowercase() || b == b'-' || b == b'_' || b == b'.')
    };
    let path: Vec<&str> = path.split('/').map(|s| if word(s) { s } else { "*" }).collect();
    let mut shown = format!("{scheme}{}{host}{}", if scheme.is_empty() { "" } else { "://" }, path.join("/"));
    if !tail.is_empty() {
        shown.push_str(if tail.starts_with('?') { "?*" } else { "#*" });
    }
    shown
}

/// reqwest's error with its causes, lowercase (`error sending request: connection refused`), without the URL
/// (which may be the credential; [`SinkError::Http`] names it redacted).
fn describe(err: reqwest::Error) -> String {
    let err = err.without_url();
    let mut text = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_hex() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    /// What a log line may show of a sink's URL: never the parts that can be credentials.
    #[test]
    fn urls_are_redacted_to_what_is_not_secret() {
        let cases = [
            (
                "https://hooks.slack.com/services/T0123ABCD/B0456EFGH/xoxbSeCrEt1234",
                "https://hooks.slack.com/services/*/*/*",
            ),
            ("https://events.pagerduty.com/v2/enqueue", "https://events.pagerduty.com/v2/enqueue"),
            ("http://alertmanager:9093/api/v2/alerts", "http://alertmanager:9093/api/v2/alerts"),
            ("https://siem.example.com/hooks/abc123?token=s3cret&x=1", "https://siem.example.com/hooks/*?*"),
            ("https://user:pa55@example.com/in#frag", "https://example.com/in#*"),
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
            ("/relative/Path", "/relative/*"),
        ];
        for (url, shown) in cases {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn routing_by_severity_and_rule() {
        let mut config = SinkConfig::new("pager", SinkKind::Stdout);
        config.min_severity = Severity::High;
        config.rules = vec!["root-*".into(), "cloudtrail-tampering".into()];
        let sink = Sink::new(config);
        assert!(sink.routes("root-account-usage", Severity::High));
        assert!(sink.routes("cloudtrail-tampering", Severity::Critical));
        assert!(!sink.routes("root-account-usage", Severity::Medium));
        assert!(!sink.routes("network-config-changed", Severity::Critical));
    }
}
