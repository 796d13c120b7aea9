//! The user page at `/` in a real browser (headless Chromium through chromedriver) logged in
//! as alice at a real OpenID Connect provider: her jobs (pushed through the accounting
//! service's ingest) and not bob's, her usage, an API key created in the page and used from
//! a script, then revoked in the page and refused; forged cross-site forms and logout links
//! refused; errors as HTML for browsers and JSON for API clients. Screenshots at laptop and
//! phone widths go to `<target>/test-output/web/`.

mod common;

use std::time::{Duration, Instant};

use common::oidc::Idp;
use common::webdriver::Browser;
use common::*;
use serde_json::{Value, json};

const SESSION: &str = "__Host-hpcgate-session";

async fn gateway(idp: &Idp, up: &Recorder) -> Gateway {
    let body = format!(
        "[authenticators.sso]\ntype = \"oidc_login\"\nissuer = \"{}\"\nclient_id = \"{}\"\n\
         client_secret = \"{}\"\nredirect_url = \"https://localhost:@TLS_PORT@/auth/callback\"\n\
         timeout = \"2s\"\ndiscovery_retry = \"1s\"\n\n\
         [authenticators.keys]\ntype = \"api_key\"\n\n\
         [accounting]\ningest_users = [\"ingest\"]\n\n\
         [accounting.clusters.slurm-0]\nemission_factor = 200.0\n\n\
         [web]\ngrafana_url = \"https://grafana.example.org/d/job?var-uuid={{uuid}}&from={{start_ms}}&to={{end_ms}}\"\n\
         page_size = 3\n\n\
         [pools.acct]\nbackends = [\"unix:state/accounting.sock\"]\n\n\
         [pools.up]\nbackends = [\"http://{}\"]\n\n\
         [[routes]]\nname = \"accounting\"\npath_prefix = \"/api/v1\"\npool = \"acct\"\n\
         kind = \"accounting\"\nauthenticators = [\"local\"]\n\n\
         [[routes]]\nname = \"hpc\"\npath_prefix = \"/hpc\"\npool = \"up\"\n\
         authenticators = [\"local\", \"keys\"]\n\n\
         [pools.down]\nbackends = [\"http://127.0.0.1:{}\"]\n\n\
         [[routes]]\nname = \"down\"\npath_prefix = \"/down\"\npool = \"down\"\n\
         authenticators = [\"public\"]\n",
        idp.issuer(),
        idp.server.get("OIDC_CLIENT_ID"),
        idp.server.get("OIDC_CLIENT_SECRET"),
        up.addr,
        free_port()
    );
    let gw = Gateway::start(Setup {
        body,
        extra_users: vec![("ingest".into(), vec!["services".into()])],
        gateway_authenticators: vec!["sso".into()],
        ..Default::default()
    })
    .await;
    idp.register(&[gw.url("/auth/callback")], &[]).await;
    gw
}

/// alice: four jobs in two projects (one running); bob: two jobs of his own.
async fn seed(gw: &Gateway) {
    let t = unix_now();
    let unit = |uuid: &str, user: &str, project: &str, ended: i64, state: &str| {
        json!({
            "cluster_id": "slurm-0", "uuid": uuid, "name": format!("{user}-sim-{uuid}"),
            "username": user, "project": project, "partition": "cpu", "state": state,
            "created_at": t - 5 * 86_400, "started_at": if ended == 0 { t - 600 } else { ended - 7200 },
            "ended_at": ended,
            "allocation": { "cpus": 8, "mem": 8_589_934_592u64, "gpus": 0, "nodes": 1 },
            "cpu_usage": 80.0, "energy_kwh": 1.5,
        })
    };
    let units = json!([
        unit("1001", "alice", "physics", t - 3600, "COMPLETED"),
        unit("1002", "alice", "physics", t - 7200, "FAILED"),
        unit("1003", "alice", "chem", t - 2 * 86_400, "COMPLETED"),
        unit("1004", "alice", "chem", 0, "RUNNING"),
        unit("2001", "bob", "bio", t - 1800, "COMPLETED"),
        unit("2002", "bob", "physics", t - 900, "COMPLETED"),
    ]);
    let r = gw
        .client(false)
        .post(gw.url("/api/v1/units"))
        .header("authorization", basic("ingest", "ingest-pw"))
        .json(&units)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

fn output_dir() -> std::path::PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR")
        .unwrap_or_else(|_| format!("{}/target", env!("CARGO_MANIFEST_DIR")));
    let dir = std::path::Path::new(&target).join("test-output/web");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn no_redirects(gw: &Gateway) -> reqwest::Client {
    let ca = std::fs::read(gw.dir.path().join("ca.pem")).unwrap();
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .tls_built_in_root_certs(false)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// The value of the first `name="csrf" value="…"` in a page.
fn csrf_in(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
    page[at..at + page[at..].find('"').unwrap()].to_string()
}

async fn screenshot(browser: &Browser, width: u32, name: &str) -> std::path::PathBuf {
    browser.set_window_size(width, 2200).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let shot = output_dir().join(name);
    std::fs::write(&shot, browser.screenshot().await).unwrap();
    println!("screenshot at {width} px: {}", shot.display());
    shot
}

/// A protected route with a key: the status.
async fn with_key(gw: &Gateway, key: &str) -> u16 {
    gw.client(false)
        .get(gw.url("/hpc/jobs"))
        .header("authorization", format!("Bearer {key}"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn alice_sees_her_jobs_and_usage_and_manages_her_keys_in_a_real_browser() {
    let idp = Idp::start();
    // A browser in another time zone than the server's UTC: the page shows its local times.
    let chromium = RealServer::start_with_env("chromium", &[("TZ", "Asia/Tokyo")]);
    let up = Recorder::start(Duration::ZERO).await;
    let gw = gateway(&idp, &up).await;
    seed(&gw).await;
    let browser = Browser::start(&chromium).await;

    // Without a session, the page sends the browser to log in, and back.
    browser.goto(&gw.url("/")).await;
    idp.log_in(&browser, "alice", &gw.url("/")).await;
    assert_eq!(browser.text("#who-user").await, "alice");
    assert_eq!(browser.text("#who-groups").await, "hpc-admins, hpc-users");
    // An admin gets the link to /-/status.
    browser.wait_for("nav a[href=\"/-/status\"]").await;

    // Her latest jobs, three to a page; not bob's.
    let table = browser.text("#jobs-table").await;
    for mine in ["1004", "1001", "1002"] {
        assert!(table.contains(mine), "{mine} in {table}");
    }
    for theirs in ["2001", "2002", "bob"] {
        assert!(!table.contains(theirs), "{theirs} in {table}");
    }
    assert!(
        table.contains("RUNNING") && table.contains("physics"),
        "{table}"
    );
    assert!(
        table.contains("16.0"),
        "8 CPUs × 2 h = 16 CPU hours: {table}"
    );
    // The page's script ran (under its Content-Security-Policy): times are in the browser's
    // time zone, the UTC text kept as their title.
    let utc = browser
        .property("tr[data-uuid=\"1001\"] time", "title")
        .await;
    assert!(utc.ends_with(" UTC"), "{utc}");
    let local = browser.text("tr[data-uuid=\"1001\"] time").await;
    assert!(
        !local.ends_with("UTC") && local.contains("GMT+9"),
        "{local}"
    );
    let grafana = browser.property("tr[data-uuid=\"1001\"] a", "href").await;
    assert!(
        grafana.starts_with("https://grafana.example.org/d/job?var-uuid=1001&from="),
        "{grafana}"
    );
    // The next page has the oldest; a project filter narrows.
    browser.click("a[rel=next]").await;
    browser.wait_for_url(&gw.url("/?")).await;
    let table = browser.text("#jobs-table").await;
    assert!(table.contains("1003") && !table.contains("1001"), "{table}");
    browser.goto(&gw.url("/?project=chem")).await;
    let table = browser.text("#jobs-table").await;
    assert!(table.contains("1003") && table.contains("1004") && !table.contains("1001"));
    browser.goto(&gw.url("/?state=FAILED")).await;
    let table = browser.text("#jobs-table").await;
    assert!(table.contains("1002") && !table.contains("1001"), "{table}");

    // Usage per project: the chart and its table.
    browser.goto(&gw.url("/")).await;
    let chart = browser.property("#usage-chart title", "textContent").await;
    assert!(chart.contains("CPU hours"), "{chart}");
    let usage = browser.text("table.usage").await;
    assert!(usage.contains("physics") && usage.contains("chem") && !usage.contains("bio"));

    let laptop = screenshot(&browser, 1280, "page-1280.png").await;
    let phone = screenshot(&browser, 390, "page-390.png").await;
    assert!(std::fs::metadata(&laptop).unwrap().len() > 10_000);
    assert!(std::fs::metadata(&phone).unwrap().len() > 10_000);
    browser.set_window_size(1280, 1000).await;

    // A key made in the page: shown once, works from a script.
    browser.type_into("#key-name", "laptop scripts").await;
    browser.click("#create-key").await;
    browser.wait_for("#new-key").await;
    let key = browser.text("#new-key").await;
    assert!(key.starts_with("hpcg_") && key.len() == 64, "{key}");
    // The copy button's script runs (the clipboard itself may be refused when headless).
    browser.click("#copy-key").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while browser.text("#copy-status").await.is_empty() {
        assert!(Instant::now() < deadline, "the copy button did nothing");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    screenshot(&browser, 1280, "new-key-1280.png").await;
    browser.set_window_size(1280, 1000).await;
    assert_eq!(with_key(&gw, &key).await, 200);
    assert_eq!(up.last().one("x-forwarded-user"), Some("alice"));
    browser.goto(&gw.url("/")).await;
    let keys = browser.text("#keys-table").await;
    assert!(
        keys.contains("laptop scripts") && keys.contains("active"),
        "{keys}"
    );
    let page_src = browser.property("html", "outerHTML").await;
    assert!(!page_src.contains(&key), "the key is never shown again");

    // The forms refuse anything that did not come from the page.
    let cookies = browser.cookies().await;
    let session = cookies
        .iter()
        .find(|c| c["name"] == SESSION)
        .and_then(|c| c["value"].as_str())
        .expect("a session cookie")
        .to_string();
    let client = no_redirects(&gw);
    let post = |path: &str, form: Vec<(&str, String)>, cross: bool| {
        let mut req = client
            .post(gw.url(path))
            .header("cookie", format!("{SESSION}={session}"))
            .form(&form);
        if cross {
            req = req.header("sec-fetch-site", "cross-site");
        }
        req.send()
    };
    let id = key[5..21].to_string();
    for (form, cross) in [
        (vec![("id", id.clone())], false),
        (vec![("id", id.clone()), ("csrf", "forged".into())], false),
    ] {
        let r = post("/-/web/keys/revoke", form, cross).await.unwrap();
        expect_error(r, 403, "forbidden").await;
    }
    let r = post(
        "/-/web/keys",
        vec![("name", "evil".into()), ("expires_days", "30".into())],
        false,
    )
    .await
    .unwrap();
    expect_error(r, 403, "forbidden").await;
    // Even with the right token, a request the browser marks cross-site is refused.
    let html = client
        .get(gw.url("/"))
        .header("cookie", format!("{SESSION}={session}"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(html.headers()["cache-control"], "no-store");
    assert!(
        html.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("script-src 'self'")
    );
    let token = csrf_in(&html.text().await.unwrap());
    let r = post(
        "/-/web/keys/revoke",
        vec![("id", id.clone()), ("csrf", token.clone())],
        true,
    )
    .await
    .unwrap();
    expect_error(r, 403, "forbidden").await;
    // A token of this session does not work in another user's session, nor without one.
    let r = client
        .post(gw.url("/-/web/keys/revoke"))
        .form(&[("id", id.as_str()), ("csrf", token.as_str())])
        .send()
        .await
        .unwrap();
    expect_error(r, 401, "unauthorized").await;
    // Logout is a POST with the token: a link (GET) or a forged form cannot log alice out.
    let r = client
        .get(gw.url("/auth/logout"))
        .header("cookie", format!("{SESSION}={session}"))
        .send()
        .await
        .unwrap();
    expect_error(r, 405, "method_not_allowed").await;
    let r = post("/auth/logout", vec![], false).await.unwrap();
    expect_error(r, 403, "forbidden").await;
    let r = post("/auth/logout", vec![("csrf", token.clone())], true)
        .await
        .unwrap();
    expect_error(r, 403, "forbidden").await;
    assert_eq!(with_key(&gw, &key).await, 200, "the key still works");
    let keys = browser.text("#keys-table").await;
    assert!(keys.contains("active"), "{keys}");

    // Revoked in the page: refused from then on (API key lookups are cached up to 1 s).
    browser
        .click(&format!("tr[data-key=\"{id}\"] button"))
        .await;
    browser.wait_for_url(&gw.url("/?done=revoked")).await;
    assert!(browser.text(".notice").await.contains("revoked"));
    assert!(browser.text("#keys-table").await.contains("revoked"));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = with_key(&gw, &key).await;
        if status == 401 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a revoked key still gets {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The page's Log out button ends the session.
    browser.click("#logout").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    browser.goto(&gw.url("/-/healthz")).await;
    let cookies = browser.cookies().await;
    assert!(cookies.iter().all(|c| c["name"] != SESSION), "{cookies:?}");
    let audit = gw.audit();
    assert!(
        audit
            .iter()
            .any(|a| a["route"] == "-/web/keys" && a["user"] == "alice"),
        "key creation is in the audit log"
    );
    browser.quit().await;
}

#[tokio::test]
async fn api_clients_get_json_and_browsers_get_html_errors() {
    let idp = Idp::start();
    let up = Recorder::start(Duration::ZERO).await;
    let gw = gateway(&idp, &up).await;
    let client = no_redirects(&gw);

    // The page is for browser sessions: a script with Basic credentials is pointed elsewhere.
    let r = client
        .get(gw.url("/"))
        .header("authorization", basic("alice", ALICE_PW))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"].as_str().unwrap().contains("/-/whoami"), "{v}");
    // A browser without a session is sent to log in.
    let r = client
        .get(gw.url("/"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert!(
        r.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with(&idp.issuer())
    );

    // Errors: a page for browsers, JSON for API clients.
    for (path, auth, status) in [
        ("/nowhere", None, 404),
        ("/down/x", None, 502),
        ("/hpc/x", None, 401),
        ("/hpc/x", Some(basic("alice", "wrong")), 401),
    ] {
        let mut req = client
            .get(gw.url(path))
            .header("accept", "text/html,*/*;q=0.8");
        if let Some(a) = &auth {
            req = req.header("authorization", a);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), status, "{path}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html"),
            "{path}"
        );
        let page = r.text().await.unwrap();
        assert!(page.starts_with("<!DOCTYPE html>"), "{page}");
        assert!(page.contains(&format!("<h1>{status} ")), "{page}");
        let mut req = client.get(gw.url(path));
        if let Some(a) = &auth {
            req = req.header("authorization", a);
        }
        let r = req.send().await.unwrap();
        let kind = match status {
            404 => "not_found",
            502 => "bad_gateway",
            _ => "unauthorized",
        };
        expect_error(r, status, kind).await;
    }
    // The assets are public and embedded.
    let r = client.get(gw.url("/-/web/style.css")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
}
