//! The identity explorer: `replay` then `serve`, the pages over HTTP (headers, escaping, paging, sign-in) and in a
//! real browser (Debian's Chromium through chromedriver).

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use crate::browser::Driver;
use trailwatch::ui::html::url_encode as encode;

use crate::util::{bin, free_port, http_get, http_get_with, http_response, ok, trailwatch, wait_for};

/// The assumed role whose session name and user agent carry markup: its events must show as text.
const HOSTILE_ROLE: &str = "arn:aws:iam::111111111111:role/webapp";
const HOSTILE_SESSION: &str = "\"><img src=x onerror=window.__xss=2>";
const HOSTILE_AGENT: &str = "kali <script>window.__xss=1</script>";

/// A synth corpus with its incidents, plus one event of the hostile role, replayed into `dir/state.db`.
fn replayed_state(dir: &Path) -> std::path::PathBuf {
    let corpus = dir.join("corpus");
    ok(&trailwatch(&["synth", "--out", corpus.to_str().unwrap(), "--files", "12", "--records", "300", "--incidents"]));
    let event = serde_json::json!({"Records": [{
        "eventVersion": "1.08",
        "userIdentity": {
            "type": "AssumedRole",
            "principalId": "AROAEXAMPLEHOSTILE:s",
            "arn": format!("arn:aws:sts::111111111111:assumed-role/webapp/{HOSTILE_SESSION}"),
            "accountId": "111111111111",
            "accessKeyId": "ASIAEXAMPLEHOSTILE01",
            "sessionContext": {"sessionIssuer": {"type": "Role", "principalId": "AROAEXAMPLEHOSTILE",
                "arn": HOSTILE_ROLE, "accountId": "111111111111", "userName": "webapp"}}
        },
        "eventTime": "2026-10-01T00:30:00Z",
        "eventSource": "s3.amazonaws.com",
        "eventName": "ListBuckets",
        "awsRegion": "us-east-1",
        "sourceIPAddress": "203.0.113.9",
        "userAgent": HOSTILE_AGENT,
        "eventID": "hostile-event-1",
        "eventType": "AwsApiCall",
        "recipientAccountId": "111111111111"
    }]});
    let day = corpus.join("AWSLogs/111111111111/CloudTrail/us-east-1/2026/10/01");
    std::fs::create_dir_all(&day).unwrap();
    std::fs::write(day.join("111111111111_CloudTrail_us-east-1_20261001T0030Z_hostile.json"), event.to_string())
        .unwrap();
    let state = dir.join("state.db");
    ok(&trailwatch(&["replay", "--state", state.to_str().unwrap(), corpus.to_str().unwrap()]));
    state
}

/// `trailwatch serve` on a free loopback port, killed on drop.
struct Served {
    port: u16,
    child: Child,
}

impl Served {
    fn start(state: &Path, token: Option<&str>) -> Served {
        let port = free_port();
        let mut cmd = bin();
        cmd.args(["serve", "--state", state.to_str().unwrap(), "--listen", &format!("127.0.0.1:{port}")]);
        if let Some(token) = token {
            cmd.env("TRAILWATCH_API_TOKEN", token);
        }
        let child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("trailwatch serve starts");
        let served = Served { port, child };
        let up = wait_for(Duration::from_secs(20), || http_get(port, "/healthz").filter(|(s, _)| *s == 200));
        assert!(up.is_some(), "trailwatch serve did not answer on {port}");
        served
    }

    fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every page answers with the security headers, shows the hostile values escaped, and links what it lists.
#[test]
fn pages_over_http_are_escaped_and_guarded() {
    let dir = tempfile::tempdir().unwrap();
    let state = replayed_state(dir.path());
    let served = Served::start(&state, None);
    let hostile = format!("/identities/{}", encode(HOSTILE_ROLE));
    for path in
        ["/", "/identities", "/identities?q=webapp&sort=events", hostile.as_str(), "/alerts", "/assets/style.css"]
    {
        let response = http_response(served.port, path, "").unwrap();
        let head = response.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{path}: {head}");
        for header in [
            "content-security-policy: default-src 'none'; style-src 'self'",
            "x-frame-options: deny",
            "x-content-type-options: nosniff",
        ] {
            assert!(head.contains(header), "{path}: no `{header}` in\n{head}");
        }
    }
    // `serve` ingests nothing, so it has no rejected files to count, and says so.
    let (_, overview) = http_get(served.port, "/").unwrap();
    assert!(overview.contains("<dt>Files rejected since start</dt><dd>– (this process ingests nothing)</dd>"));
    let (status, page) = http_get(served.port, &hostile).unwrap();
    assert_eq!(status, 200);
    for raw in [HOSTILE_AGENT, HOSTILE_SESSION, "<script", "<img"] {
        assert!(!page.contains(raw), "`{raw}` reached the page unescaped");
    }
    assert!(page.contains("kali &lt;script&gt;window.__xss=1&lt;/script&gt;"), "the agent is shown as text");
    assert!(page.contains("&quot;&gt;&lt;img src=x onerror=window.__xss=2&gt;"), "the session is shown as text");
    // The role's alert (its agent names Kali) lists the event, escaped like the rest.
    let (_, alerts) = http_get(served.port, &format!("/alerts?principal={}", encode(HOSTILE_ROLE))).unwrap();
    assert!(alerts.contains("data-alert-id=") && alerts.contains("hostile-event-1"), "{alerts}");
    assert!(!alerts.contains("<script"), "alerts page: unescaped markup");
    // An unknown identity is a 404 page, the name escaped too.
    let (status, missing) = http_get(served.port, &format!("/identities/{}", encode("<b>nobody"))).unwrap();
    assert_eq!(status, 404);
    assert!(missing.contains("&lt;b&gt;nobody") && !missing.contains("<b>nobody"));
    // Paging: 50 rows a page, the next link keeps the filters.
    let (_, first) = http_get(served.port, "/identities?sort=events").unwrap();
    assert_eq!(first.matches("data-principal=").count(), 50);
    assert!(first.contains("href=\"/identities?sort=events&amp;page=1\""), "no next link keeping the sort");
}

/// With a token, pages redirect to the sign-in form and the API refuses; the form's cookie opens both.
#[test]
fn a_token_guards_pages_and_api() {
    let dir = tempfile::tempdir().unwrap();
    let state = replayed_state(dir.path());
    let served = Served::start(&state, Some("s3cret-token"));
    let response = http_response(served.port, "/identities", "").unwrap();
    assert!(response.starts_with("HTTP/1.1 303"), "{response}");
    assert!(response.to_ascii_lowercase().contains("location: /signin"), "{response}");
    assert_eq!(http_get(served.port, "/api/v1/alerts").unwrap().0, 401);
    assert_eq!(http_get(served.port, "/healthz").unwrap().0, 200);
    assert_eq!(http_get(served.port, "/signin").unwrap().0, 200);
    assert_eq!(http_get_with(served.port, "/identities", "Authorization: Bearer s3cret-token\r\n").unwrap().0, 200);
    assert_eq!(http_get_with(served.port, "/identities", "Cookie: trailwatch_session=forged\r\n").unwrap().0, 303);
}

/// The acceptance path in Chromium: overview, search, an identity whose actions are `report identities`' ones,
/// its policy downloaded, hostile values that run nothing, no asset from another origin, then a token's sign-in.
#[test]
fn the_explorer_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let state = replayed_state(dir.path());
    let served = Served::start(&state, None);
    let origin = served.origin();
    let downloads = dir.path().join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    let driver = Driver::start();
    let browser = driver.session(&downloads);

    browser.goto(&format!("{origin}/"));
    assert_eq!(browser.title(), "Overview · trailwatch");
    let report: serde_json::Value = serde_json::from_str(&ok(&trailwatch(&[
        "report",
        "identities",
        "--state",
        state.to_str().unwrap(),
        "--format",
        "json",
    ])))
    .unwrap();
    let identities = report.as_array().unwrap();
    let card = browser.text(&browser.find(".card .value"));
    assert_eq!(card, identities.len().to_string(), "the identities card counts the state's identities");

    // Search by a substring of a principal, through the form.
    browser.goto(&format!("{origin}/identities"));
    let search = browser.find("input[name=q]");
    browser.type_text(&search, "user-1");
    browser.click(&browser.find("form.filters button[type=submit]"));
    let searched = wait_for(Duration::from_secs(10), || Some(browser.url()).filter(|url| url.contains("q=user-1")));
    assert!(searched.is_some(), "the filter is in the URL: {}", browser.url());
    let rows = browser.find_all("tr[data-principal]");
    assert!(!rows.is_empty());
    let principals: Vec<String> = rows.iter().map(|r| browser.attribute(r, "data-principal").unwrap()).collect();
    assert!(principals.iter().all(|p| p.contains("user-1")), "{principals:?}");

    // Open the first one: its actions are the report's.
    let principal = principals[0].clone();
    browser.click(&browser.find(&format!("tr[data-principal=\"{principal}\"] a")));
    let page = format!("{origin}/identities/{}", encode(&principal));
    assert_eq!(
        wait_for(Duration::from_secs(10), || Some(browser.url()).filter(|url| *url == page)),
        Some(page.clone())
    );
    let shown: Vec<String> =
        browser.find_all("tr[data-action]").iter().map(|r| browser.attribute(r, "data-action").unwrap()).collect();
    let reported = identities.iter().find(|i| i["principal"] == principal.as_str()).unwrap();
    let want: Vec<String> =
        reported["actions"].as_array().unwrap().iter().map(|a| a["action"].as_str().unwrap().to_owned()).collect();
    assert!(!want.is_empty());
    assert_eq!(shown, want);

    // Download its least-privilege policy: `report policy`'s JSON.
    browser.click(&browser.find("#download-policy"));
    let file = downloads.join("least-privilege-policy.json");
    let downloaded = wait_for(Duration::from_secs(20), || std::fs::read_to_string(&file).ok());
    let downloaded: serde_json::Value = serde_json::from_str(&downloaded.expect("the policy was downloaded")).unwrap();
    let policy = ok(&trailwatch(&["report", "policy", "--state", state.to_str().unwrap(), "--principal", &principal]));
    assert_eq!(downloaded, serde_json::from_str::<serde_json::Value>(&policy).unwrap());

    // The hostile role: its values are text, nothing ran, no element came from them.
    browser.goto(&format!("{origin}/identities/{}", encode(HOSTILE_ROLE)));
    let body = browser.text(&browser.find("main"));
    assert!(body.contains(HOSTILE_AGENT), "the agent shows as text");
    assert!(body.contains(HOSTILE_SESSION), "the session shows as text");
    assert_eq!(browser.execute("return typeof window.__xss"), "undefined");
    assert_eq!(browser.execute("return document.querySelectorAll('main img, main script').length"), 0);
    browser.goto(&format!("{origin}/alerts"));
    assert!(!browser.find_all("tr[data-alert-id]").is_empty());
    assert_eq!(browser.execute("return typeof window.__xss"), "undefined");

    // Every resource any page loaded came from this origin.
    for path in ["/", "/identities", "/alerts"] {
        browser.goto(&format!("{origin}{path}"));
        let loaded = browser.execute("return performance.getEntriesByType('resource').map(e => e.name)");
        let loaded: Vec<&str> = loaded.as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        assert!(loaded.iter().all(|url| url.starts_with(&origin)), "{path}: {loaded:?}");
        assert!(loaded.iter().any(|url| url.ends_with("/assets/style.css")), "{path}: {loaded:?}");
    }
    drop(browser);

    // With a token: the page asks for it, and works after signing in.
    let guarded = Served::start(&state, Some("s3cret-token"));
    let browser = driver.session(&downloads);
    browser.goto(&format!("{}/identities", guarded.origin()));
    assert_eq!(browser.url(), format!("{}/signin", guarded.origin()));
    browser.type_text(&browser.find("input[name=token]"), "wrong");
    browser.click(&browser.find("form.signin button"));
    let refused = wait_for(Duration::from_secs(10), || Some(()).filter(|()| !browser.find_all(".error").is_empty()));
    assert!(refused.is_some(), "a wrong token is said so");
    assert!(browser.find_all("tr[data-principal]").is_empty());
    browser.type_text(&browser.find("input[name=token]"), "s3cret-token");
    browser.click(&browser.find("form.signin button"));
    // The click may return before the redirect after the post is followed.
    let home = format!("{}/", guarded.origin());
    let arrived = wait_for(Duration::from_secs(10), || Some(browser.url()).filter(|url| *url == home));
    assert_eq!(arrived, Some(home), "signed in, the browser lands on the overview");
    browser.goto(&format!("{}/identities", guarded.origin()));
    assert_eq!(browser.find_all("tr[data-principal]").len(), 50);
}

/// With an inventory, an identity's page shows granted versus used per service and each unused grant with its
/// policy, as `report permissions` has them, and its inventory keys' creation and status.
#[test]
fn an_identity_page_shows_its_grants_against_its_use() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tw.toml");
    let state = dir.path().join("s.db");
    std::fs::write(
        &config,
        format!(
            "[store]\npath = {state:?}\n[alerts]\nenabled = false\n[inventory]\nfiles = [{:?}]\n",
            crate::util::data("permissions/account.json")
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    ok(&trailwatch(&["--config", config, "replay", crate::util::data("permissions/events.json").to_str().unwrap()]));
    let alice = "arn:aws:iam::111122223333:user/alice";
    let report: serde_json::Value = serde_json::from_str(&ok(&trailwatch(&[
        "--config",
        config,
        "report",
        "permissions",
        "--principal",
        alice,
        "--format",
        "json",
    ])))
    .unwrap();
    let report = &report[0];
    let port = free_port();
    let mut child = bin()
        .args(["--config", config, "serve", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let page = wait_for(Duration::from_secs(20), || {
        http_get(port, &format!("/identities/{}", encode(alice))).filter(|(s, _)| *s == 200)
    });
    // The filter lists exactly the identities the state knows that the report finds holding unused services or
    // actions (identities only in the inventory, never seen, are not in the identities list).
    let seen: serde_json::Value =
        serde_json::from_str(&ok(&trailwatch(&["--config", config, "report", "identities", "--format", "json"])))
            .unwrap();
    let seen: Vec<&str> = seen.as_array().unwrap().iter().map(|i| i["principal"].as_str().unwrap()).collect();
    let everyone: serde_json::Value =
        serde_json::from_str(&ok(&trailwatch(&["--config", config, "report", "permissions", "--format", "json"])))
            .unwrap();
    let mut holding: Vec<&str> = everyone
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            !r["unused_services"].as_array().unwrap().is_empty() || !r["unused_actions"].as_array().unwrap().is_empty()
        })
        .map(|r| r["principal"].as_str().unwrap())
        .filter(|p| seen.contains(p))
        .collect();
    holding.sort();
    let (_, filtered) = http_get(port, "/identities?unused=1").unwrap();
    // Keys unused or not rotated: the seen identities with either key finding in the report.
    let mut stale: Vec<&str> = everyone
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["findings"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["rule"] == "access-key-not-rotated" || f["rule"] == "access-key-unused")
        })
        .map(|r| r["principal"].as_str().unwrap())
        .filter(|p| seen.contains(p))
        .collect();
    stale.sort();
    let (_, stale_page) = http_get(port, "/identities?stale_key=1").unwrap();
    let mut stale_listed: Vec<&str> =
        stale_page.split("data-principal=\"").skip(1).map(|s| s.split('"').next().unwrap()).collect();
    stale_listed.sort();
    assert!(!stale.is_empty(), "the fixture has a key finding");
    assert_eq!(stale_listed, stale);
    let _ = child.kill();
    let _ = child.wait();
    let mut listed: Vec<&str> =
        filtered.split("data-principal=\"").skip(1).map(|s| s.split('"').next().unwrap()).collect();
    listed.sort();
    assert!(
        holding.contains(&alice) && holding.len() < seen.len(),
        "the filter keeps some and not others: {holding:?}"
    );
    assert_eq!(listed, holding);
    let (_, page) = page.expect("the identity page");
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_owned()).collect()
    };
    let mut services = strings(&report["granted_services"]);
    services.extend(strings(&report["used_services"]));
    services.sort();
    services.dedup();
    let shown: Vec<&str> = page.split("data-service=\"").skip(1).map(|s| s.split('"').next().unwrap()).collect();
    assert_eq!(shown, services);
    let unused = report["unused_actions"].as_array().unwrap();
    assert!(!unused.is_empty());
    for grant in unused {
        let row = format!(
            "<td>{}</td><td>{}</td><td>{}</td>",
            grant["pattern"].as_str().unwrap(),
            grant["policy"].as_str().unwrap(),
            grant["statement"].as_str().unwrap()
        );
        assert!(page.contains(&row), "no row {row}");
    }
    for key in report["access_keys"].as_array().unwrap() {
        assert!(page.contains(&format!("<td>{}</td>", key["id"].as_str().unwrap())), "{key}");
        assert!(page.contains(&format!("<td>{}</td>", key["status"].as_str().unwrap())), "{key}");
    }
}
