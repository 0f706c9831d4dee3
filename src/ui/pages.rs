//! The explorer's pages as HTML: overview, identities, one identity, alerts and findings, sign-in. Each takes
//! what [`super::query`] and the reports read and writes it through [`Page`], which escapes every value.

use std::fmt::Write;

use super::html::{Page, esc, url_encode};
use super::query::{self, AlertFilter, IdentityFilter, IdentityRow, IdentitySort, Overview, PAGE_ROWS, SEVERITIES};
use crate::alert::Alert;
use crate::permissions::analysis::PermissionReport;
use crate::report::IdentityReport;
use crate::time::{Timestamp, format_rfc3339};

/// A time as the reports show it, or a dash.
fn when(ts: Option<Timestamp>) -> String {
    ts.map_or_else(|| "–".to_owned(), format_rfc3339)
}

pub fn overview(o: &Overview, now: Timestamp, inactive_days: i64) -> String {
    let mut page = Page::new("Overview", "/");
    page.raw("<section class=\"cards\">");
    let cards: [(&str, String, String); 6] = [
        ("Identities", o.stats.identities.to_string(), "/identities".into()),
        ("Active in 24 h", o.active_day.to_string(), "/identities?sort=last_seen".into()),
        ("Active in 30 days", o.active_month.to_string(), "/identities?sort=last_seen".into()),
        ("Inactive", o.stats.inactive_identities.to_string(), format!("/identities?inactive_days={inactive_days}")),
        ("Root identities", o.root_identities.to_string(), "/identities?kind=Root".into()),
        ("Alerts", o.alerts_by_severity.iter().map(|(_, n)| n).sum::<u64>().to_string(), "/alerts".into()),
    ];
    for (label, value, href) in cards {
        let _ = write!(
            page.out,
            "<a class=\"card\" href=\"{}\"><span class=\"label\">{label}</span><span class=\"value\">{value}</span></a>",
            esc(&href)
        );
    }
    page.raw("</section><section><h2>Ingestion</h2><dl>");
    let _ = write!(
        page.out,
        "<dt>Newest event</dt><dd>{}</dd><dt>Lag</dt><dd>{}</dd><dt>Root last active</dt><dd>{}</dd>\
         <dt>Files applied</dt><dd>{}</dd><dt>Files rejected since start</dt><dd>{}</dd>\
         <dt>Files quarantined</dt><dd>{}</dd><dt>Inactive after</dt><dd>{} days</dd>",
        when(o.stats.newest_event),
        o.stats.newest_event.map_or_else(|| "–".to_owned(), |t| lag(now - t)),
        when(o.root_last_seen),
        o.stats.ledger_files,
        o.files_rejected.map_or_else(|| "– (this process ingests nothing)".to_owned(), |n| n.to_string()),
        o.stats.quarantined_files,
        inactive_days
    );
    page.raw("</dl></section><section><h2>Alerts by severity</h2><ul class=\"severities\">");
    for (severity, n) in &o.alerts_by_severity {
        let _ = write!(
            page.out,
            "<li><a class=\"sev sev-{s}\" href=\"/alerts?severity={s}\">{s}</a> <span class=\"value\">{n}</span></li>",
            s = esc(severity)
        );
    }
    page.raw("</ul><h2>Findings now</h2><ul class=\"severities\">");
    if o.findings_by_rule.is_empty() {
        page.raw("<li>none</li>");
    }
    for (rule, n) in &o.findings_by_rule {
        let _ =
            write!(page.out, "<li><a href=\"/alerts?rule={rule}\">{rule}</a> <span class=\"value\">{n}</span></li>");
    }
    page.raw("</ul><h2>Alerts per day, the 14 days to the newest event</h2>");
    alerts_chart(&mut page, &o.alerts_per_day);
    page.raw("</section><section><h2>Events per hour, the 7 days to the newest event</h2>");
    bars(&mut page, "events per hour", &o.events_per_hour, 24, |t| format_rfc3339(t)[5..10].to_owned());
    page.raw("</section>");
    page.finish()
}

/// A duration in seconds as days, hours or minutes.
fn lag(secs: i64) -> String {
    match secs {
        s if s >= 2 * 86_400 => format!("{} days", s / 86_400),
        s if s >= 3600 => format!("{} h", s / 3600),
        s => format!("{} min", s.max(0) / 60),
    }
}

/// Stacked bars, one per day, coloured by severity through CSS classes (so that light and dark themes both read).
fn alerts_chart(page: &mut Page, days: &[(Timestamp, [u64; 5])]) {
    let max = days.iter().map(|(_, c)| c.iter().sum::<u64>()).max().unwrap_or(0).max(1);
    let (width, height, bar) = (14 * 40, 160, 28);
    let _ = write!(
        page.out,
        "<svg class=\"chart\" viewBox=\"0 0 {width} {}\" role=\"img\" aria-label=\"alerts per day\">",
        height + 20
    );
    for (i, (day, counts)) in days.iter().enumerate() {
        let x = i * 40 + 6;
        let mut y = height as f64;
        for (severity, n) in SEVERITIES.iter().zip(counts) {
            if *n == 0 {
                continue;
            }
            let h = *n as f64 / max as f64 * height as f64;
            y -= h;
            let _ = write!(
                page.out,
                "<rect class=\"sev-{severity}\" x=\"{x}\" y=\"{y:.1}\" width=\"{bar}\" height=\"{h:.1}\"><title>{} {severity}: {n}</title></rect>",
                &format_rfc3339(*day)[..10]
            );
        }
        let _ = write!(
            page.out,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            x + bar / 2,
            height + 14,
            &format_rfc3339(*day)[8..10]
        );
    }
    page.raw("</svg>");
}

/// A bar per point of `series` (time, count), labelled every `label_every` bars with `label` of its time; each
/// bar's tooltip gives its time and count.
fn bars(
    page: &mut Page,
    name: &str,
    series: &[(Timestamp, u64)],
    label_every: usize,
    label: impl Fn(Timestamp) -> String,
) {
    let max = series.iter().map(|(_, n)| *n).max().unwrap_or(0).max(1);
    let height = 140.0;
    let step = 640.0 / series.len().max(1) as f64;
    let _ = write!(
        page.out,
        "<svg class=\"chart bars\" viewBox=\"0 0 640 {}\" role=\"img\" aria-label=\"{name}\">",
        height + 20.0
    );
    for (i, (at, n)) in series.iter().enumerate() {
        let x = i as f64 * step;
        if *n > 0 {
            let h = (*n as f64 / max as f64 * height).max(1.0);
            let _ = write!(
                page.out,
                "<rect class=\"bar\" x=\"{x:.2}\" y=\"{:.1}\" width=\"{:.2}\" height=\"{h:.1}\"><title>{}: {n}</title></rect>",
                height - h,
                (step * 0.85).max(0.5),
                format_rfc3339(*at)
            );
        }
        if i % label_every == 0 {
            let _ = write!(page.out, "<text x=\"{x:.1}\" y=\"{}\">{}</text>", height + 14.0, esc(&label(*at)));
        }
    }
    let _ = write!(page.out, "<text class=\"max\" x=\"2\" y=\"10\">max {max}</text></svg>");
}

/// The query string of `filter` with `change` applied, for links that keep the other filters.
fn identities_href(filter: &IdentityFilter, change: impl FnOnce(&mut IdentityFilter)) -> String {
    let mut f = filter.clone();
    change(&mut f);
    let mut parts = Vec::new();
    for (name, value) in [("q", &f.search), ("kind", &f.kind), ("account", &f.account)] {
        if !value.is_empty() {
            parts.push(format!("{name}={}", url_encode(value)));
        }
    }
    if let Some(days) = f.inactive_days {
        parts.push(format!("inactive_days={days}"));
    }
    if f.has_alerts {
        parts.push("has_alerts=1".into());
    }
    if f.stale_key {
        parts.push("stale_key=1".into());
    }
    if f.unused_permissions {
        parts.push("unused=1".into());
    }
    if f.sort != IdentitySort::default() {
        parts.push(format!("sort={}", f.sort.name()));
    }
    if f.page > 0 {
        parts.push(format!("page={}", f.page));
    }
    href("/identities", &parts)
}

/// `path` with `parts` (`name=value`, values already encoded) as its query string.
fn href(path: &str, parts: &[String]) -> String {
    if parts.is_empty() { path.to_owned() } else { format!("{path}?{}", parts.join("&")) }
}

/// A `<select>` of `choices` (escaped) named `name`, with `current` selected and an empty "any" entry.
fn select(page: &mut Page, name: &str, label: &str, choices: &[String], current: &str) {
    let _ = write!(page.out, "<label>{label} <select name=\"{name}\"><option value=\"\">any</option>");
    for choice in choices {
        let selected = if choice == current { " selected" } else { "" };
        let _ = write!(page.out, "<option value=\"{c}\"{selected}>{c}</option>", c = esc(choice));
    }
    page.raw("</select></label>");
}

pub fn identities(rows: &[IdentityRow], total: u64, filter: &IdentityFilter) -> String {
    let mut page = Page::new("Identities", "/identities");
    // A GET form: the filters land in the URL, so a filtered view is a link to share.
    let _ = write!(
        page.out,
        "<form class=\"filters\" method=\"get\" action=\"/identities\">\
         <label>Principal contains <input type=\"search\" name=\"q\" value=\"{}\"></label>",
        esc(&filter.search)
    );
    let mut kinds: Vec<String> = query::KINDS.iter().map(|k| (*k).to_owned()).collect();
    if !filter.kind.is_empty() && !kinds.contains(&filter.kind) {
        kinds.push(filter.kind.clone());
    }
    select(&mut page, "kind", "Kind", &kinds, &filter.kind);
    let _ = write!(
        page.out,
        "<label>Account <input name=\"account\" inputmode=\"numeric\" size=\"14\" value=\"{}\"></label>",
        esc(&filter.account)
    );
    let _ = write!(
        page.out,
        "<label>Inactive for days <input type=\"number\" min=\"0\" name=\"inactive_days\" value=\"{}\"></label>",
        filter.inactive_days.map(|d| d.to_string()).unwrap_or_default()
    );
    for (name, label, on) in [
        ("has_alerts", "Has alerts", filter.has_alerts),
        ("stale_key", "Has a key unused or not rotated", filter.stale_key),
        ("unused", "Has unused permissions (inventory)", filter.unused_permissions),
    ] {
        let checked = if on { " checked" } else { "" };
        let _ =
            write!(page.out, "<label><input type=\"checkbox\" name=\"{name}\" value=\"1\"{checked}> {label}</label>");
    }
    page.raw("<label>Sort <select name=\"sort\">");
    for (sort, name, label) in IdentitySort::ALL {
        let selected = if sort == filter.sort { " selected" } else { "" };
        let _ = write!(page.out, "<option value=\"{name}\"{selected}>{label}</option>");
    }
    page.raw("</select></label><button type=\"submit\">Apply</button></form>");
    let first = filter.page * PAGE_ROWS;
    let _ = write!(
        page.out,
        "<p class=\"count\" id=\"identity-count\">{} identities{}</p>",
        total,
        if total > 0 { format!(", {}–{} shown", first + 1, first + rows.len()) } else { String::new() }
    );
    page.table_head("identities", &["Principal", "Kind", "Account", "Last seen", "Events", "Errors", "Denied"]);
    for row in rows {
        let _ = write!(page.out, "<tr data-principal=\"{}\">", esc(&row.principal));
        page.link_cell(&format!("/identities/{}", url_encode(&row.principal)), &row.principal);
        page.cell(&row.kind);
        page.cell(&row.account_id);
        page.cell(&format_rfc3339(row.last_seen));
        page.number(row.events);
        page.number(row.errors);
        page.number(row.denied);
        page.raw("</tr>");
    }
    page.raw("</tbody></table>");
    pager(&mut page, filter.page, total, |p| identities_href(filter, |f| f.page = p));
    page.finish()
}

/// Previous and next links.
fn pager(page: &mut Page, current: usize, total: u64, href: impl Fn(usize) -> String) {
    page.raw("<nav class=\"pager\">");
    if current > 0 {
        let _ = write!(page.out, "<a rel=\"prev\" href=\"{}\">← previous</a>", esc(&href(current - 1)));
    }
    if ((current + 1) * PAGE_ROWS) < total as usize {
        let _ = write!(page.out, "<a rel=\"next\" href=\"{}\">next →</a>", esc(&href(current + 1)));
    }
    page.raw("</nav>");
}

pub fn identity(
    report: &IdentityReport,
    activity: &[(Timestamp, u64)],
    permissions: Option<&PermissionReport>,
    alerts: &[Alert],
    action_filter: &str,
) -> String {
    let mut page = Page::new(&report.principal, "/identities");
    page.raw("<dl class=\"facts\">");
    let login = report
        .last_console_login
        .as_ref()
        .map(|l| format!("{} ({})", l.time, if l.mfa_used { "MFA" } else { "no MFA" }));
    let facts: [(&str, Option<String>); 9] = [
        ("Kind", Some(report.kind.clone())),
        ("Account", report.account_id.clone()),
        ("First seen", Some(report.first_seen.clone())),
        ("Last seen", Some(report.last_seen.clone())),
        ("Events / errors", Some(format!("{} / {}", report.events, report.errors))),
        ("Last console sign-in", login),
        ("Last source IP", report.last_source_ip.clone()),
        ("Last region", report.last_region.clone()),
        ("Last user agent", report.last_user_agent.clone()),
    ];
    for (label, value) in facts {
        let _ = write!(page.out, "<dt>{label}</dt><dd>{}</dd>", esc(value.as_deref().unwrap_or("–")));
    }
    page.raw("</dl>");
    let _ = write!(
        page.out,
        "<p><a class=\"button\" id=\"download-policy\" href=\"/policy/{}\" download>Download least-privilege policy (JSON)</a></p>",
        url_encode(&report.principal)
    );
    page.raw("<h2>Activity per day, the 90 days to its last event</h2>");
    bars(&mut page, "events per day", activity, 15, |t| format_rfc3339(t)[..10].to_owned());
    page.raw("<h2>Actions</h2>");
    let _ = write!(
        page.out,
        "<form class=\"filters\" method=\"get\"><label>Action contains <input type=\"search\" name=\"action\" value=\"{}\"></label>\
         <button type=\"submit\">Filter</button></form>",
        esc(action_filter)
    );
    page.table_head("actions", &["Action", "First used", "Last used", "Uses", "Last denied", "Denied"]);
    let needle = action_filter.to_lowercase();
    for action in report.actions.iter().filter(|a| needle.is_empty() || a.action.to_lowercase().contains(&needle)) {
        let _ = write!(page.out, "<tr data-action=\"{}\">", esc(&action.action));
        page.cell(&action.action);
        page.cell(action.first_used.as_deref().unwrap_or("–"));
        page.cell(action.last_used.as_deref().unwrap_or("–"));
        page.number(action.count);
        page.cell(action.last_denied.as_deref().unwrap_or("–"));
        page.number(action.denied);
        page.raw("</tr>");
    }
    page.raw("</tbody></table>");
    granted_versus_used(&mut page, permissions);
    page.raw("<h2>Access keys</h2>");
    page.table_head("keys", &["Key", "Created", "First used", "Last used", "Status"]);
    // Creation and status come from the inventory; CloudTrail shows only use.
    let inventory_key = |id: &str| permissions.and_then(|p| p.access_keys.iter().find(|k| k.id == id));
    for key in &report.access_keys {
        let known = inventory_key(&key.id);
        page.raw("<tr>");
        page.cell(&key.id);
        page.cell(known.and_then(|k| k.created.as_deref()).unwrap_or("–"));
        page.cell(&key.first_used);
        page.cell(&key.last_used);
        page.cell(known.map_or("not in the inventory", |k| k.status.as_str()));
        page.raw("</tr>");
    }
    for key in permissions.into_iter().flat_map(|p| &p.access_keys) {
        if report.access_keys.iter().any(|k| k.id == key.id) {
            continue;
        }
        page.raw("<tr>");
        page.cell(&key.id);
        page.cell(key.created.as_deref().unwrap_or("–"));
        page.cell("never seen");
        page.cell(key.last_used.as_deref().unwrap_or("–"));
        page.cell(&key.status);
        page.raw("</tr>");
    }
    page.raw("</tbody></table><h2>Recent role sessions</h2><ul class=\"sessions\">");
    for session in &report.recent_sessions {
        page.raw("<li>");
        page.text(session);
        page.raw("</li>");
    }
    page.raw("</ul><h2>Alerts and findings</h2>");
    alert_table(&mut page, alerts);
    page.finish()
}

/// Granted versus used per service, the unused grants with the policy and statement that grant them, and the
/// permission findings; without an inventory, a line saying the grants are unknown.
fn granted_versus_used(page: &mut Page, permissions: Option<&PermissionReport>) {
    page.raw("<h2>Granted versus used</h2>");
    let Some(p) = permissions else {
        page.raw(
            "<p class=\"note\">The inventory does not have this identity (or there is none: <code>[inventory]</code> \
             files or <code>[inventory.iam]</code>), so its grants are unknown.</p>",
        );
        return;
    };
    page.table_head("services", &["Service", "Granted", "Used in the window"]);
    let mut services: Vec<&String> = p.granted_services.iter().chain(&p.used_services).collect();
    services.sort();
    services.dedup();
    for service in services {
        let _ = write!(page.out, "<tr data-service=\"{}\">", esc(service));
        page.cell(service);
        page.cell(if p.granted_services.contains(service) { "yes" } else { "no" });
        page.cell(if p.used_services.contains(service) { "yes" } else { "no" });
        page.raw("</tr>");
    }
    page.raw("</tbody></table><h3>Unused grants</h3>");
    page.table_head("unused", &["Pattern", "Policy", "Statement"]);
    for unused in &p.unused_actions {
        page.raw("<tr>");
        page.cell(&unused.pattern);
        page.cell(&unused.policy);
        page.cell(&unused.statement);
        page.raw("</tr>");
    }
    page.raw("</tbody></table>");
    page.list("Used, but no identity policy allows it", p.used_not_granted.iter().map(String::as_str));
    let findings: Vec<String> = p.findings.iter().map(|f| format!("{}: {}", f.rule, f.summary)).collect();
    page.list("Permission findings", findings.iter().map(String::as_str));
}

fn alert_table(page: &mut Page, alerts: &[Alert]) {
    page.table_head("alerts", &["Raised for", "Severity", "Rule", "Principal", "Summary", "Count", "Events"]);
    for alert in alerts {
        let _ = write!(page.out, "<tr data-alert-id=\"{}\">", esc(&alert.id));
        page.cell(&format_rfc3339(alert.event_time));
        let _ = write!(page.out, "<td><span class=\"sev sev-{s}\">{s}</span></td>", s = alert.severity.as_str());
        page.link_cell(&format!("/alerts?rule={}", url_encode(&alert.rule)), &alert.rule);
        page.link_cell(&format!("/identities/{}", url_encode(&alert.principal)), &alert.principal);
        page.raw("<td>");
        page.text(&alert.summary);
        if !alert.details.is_null() {
            page.raw("<details><summary>details</summary><pre>");
            page.text(&serde_json::to_string_pretty(&alert.details).unwrap_or_default());
            page.raw("</pre></details>");
        }
        page.raw("</td>");
        page.number(alert.count);
        page.raw("<td><ul class=\"event-ids\">");
        for id in alert.event_ids.iter() {
            page.raw("<li>");
            page.text(id);
            page.raw("</li>");
        }
        page.raw("</ul></td></tr>");
    }
    page.raw("</tbody></table>");
}

fn alerts_href(filter: &AlertFilter, page: usize) -> String {
    let mut parts = Vec::new();
    for (name, value) in [
        ("severity", &filter.severity),
        ("rule", &filter.rule),
        ("account", &filter.account),
        ("principal", &filter.principal),
    ] {
        if !value.is_empty() {
            parts.push(format!("{name}={}", url_encode(value)));
        }
    }
    if page > 0 {
        parts.push(format!("page={page}"));
    }
    href("/alerts", &parts)
}

pub fn alerts(alerts: &[Alert], total: u64, filter: &AlertFilter, rules: &[String]) -> String {
    let mut page = Page::new("Alerts and findings", "/alerts");
    page.raw("<form class=\"filters\" method=\"get\" action=\"/alerts\">");
    let severities: Vec<String> = SEVERITIES.iter().map(|s| (*s).to_owned()).collect();
    select(&mut page, "severity", "Severity", &severities, &filter.severity);
    select(&mut page, "rule", "Rule", rules, &filter.rule);
    let _ = write!(
        page.out,
        "<label>Account <input name=\"account\" value=\"{}\"></label><label>Principal <input name=\"principal\" value=\"{}\"></label>\
         <button type=\"submit\">Apply</button></form>",
        esc(&filter.account),
        esc(&filter.principal)
    );
    let _ = write!(page.out, "<p class=\"count\" id=\"alert-count\">{total} alerts</p>");
    alert_table(&mut page, alerts);
    pager(&mut page, filter.page, total, |p| alerts_href(filter, p));
    page.finish()
}

/// The sign-in form; `failed` after a wrong token.
pub fn sign_in(failed: bool) -> String {
    let mut page = Page::new("Sign in", "");
    if failed {
        page.raw("<p class=\"error\" role=\"alert\">That token is not the configured one.</p>");
    }
    page.raw(
        "<form class=\"signin\" method=\"post\" action=\"/signin\"><label>API token \
         <input type=\"password\" name=\"token\" autocomplete=\"current-password\" required></label>\
         <button type=\"submit\">Sign in</button></form>",
    );
    page.finish()
}

/// A page titled `title` that says `what` (an unknown identity, an unreadable state), escaped like everything else.
pub fn message(title: &str, what: &str) -> String {
    let mut page = Page::new(title, "");
    page.raw("<p>");
    page.text(what);
    page.raw("</p>");
    page.finish()
}
