//! `oidc_login` against a real OpenID Connect provider (tests/servers/oidc.sh) and a real
//! browser (headless Chromium through chromedriver, tests/servers/chromium.sh): login with
//! code + PKCE, landing back on the page, the session cookie, refresh, idle expiry, tampered
//! cookies, RP-initiated logout; and, without a browser (the IdP's form filled in by curl), the
//! refusals of the login pages (open redirects, forged callbacks, API clients), cross-site
//! writes with the session cookie, and a cookie replayed after logout on two replicas.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::oidc::Idp;
use common::webdriver::Browser;
use common::*;
use serde_json::Value;

const SESSION: &str = "__Host-hpcgate-session";
const LOGIN: &str = "__Host-hpcgate-login";

/// An upstream web page that shows who the gateway says the user is, and records requests.
struct App {
    addr: std::net::SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl App {
    async fn start() -> App {
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let s = seen.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let s = s.clone();
            async move {
                let headers: Vec<(String, String)> = req
                    .headers()
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                    .collect();
                let get = |n: &str| {
                    headers
                        .iter()
                        .find(|(k, _)| k == n)
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default()
                };
                let page = format!(
                    "<!DOCTYPE html><html><head><title>hpcgate test app</title></head><body>\
                     <h1>Signed in as <span id=\"user\">{}</span></h1>\
                     <p>Groups: <span id=\"groups\">{}</span></p><p>Path: {}</p></body></html>",
                    get("x-forwarded-user"),
                    get("x-forwarded-groups"),
                    req.uri()
                );
                s.lock().unwrap().push(Seen {
                    method: req.method().to_string(),
                    uri: req.uri().to_string(),
                    headers,
                });
                axum::response::Html(page)
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        App { addr, seen }
    }

    fn last(&self, name: &str) -> Option<String> {
        let seen = self.seen.lock().unwrap();
        let last = seen.last().expect("the app saw no request");
        last.one(name).map(str::to_string)
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

/// A gateway with `oidc_login` on `/app` (and on `/-/whoami`), registered at the IdP.
async fn gateway(idp: &Idp, app: &App, extra: &str) -> Gateway {
    gateway_to(idp, app.addr, extra).await
}

/// The same, with `/app` going to the upstream at `upstream`.
async fn gateway_to(idp: &Idp, upstream: std::net::SocketAddr, extra: &str) -> Gateway {
    let body = format!(
        "[authenticators.sso]\ntype = \"oidc_login\"\nissuer = \"{}\"\nclient_id = \"{}\"\n\
         client_secret = \"{}\"\nredirect_url = \"https://localhost:@TLS_PORT@/auth/callback\"\n\
         post_logout_redirect_url = \"https://localhost:@TLS_PORT@/app/bye\"\n\
         timeout = \"2s\"\ndiscovery_retry = \"1s\"\n{extra}\n[web]\n\
         [pools.app]\nbackends = [\"http://{}\"]\n\
         [[routes]]\nname = \"app\"\npath_prefix = \"/app\"\npool = \"app\"\n\
         authenticators = [\"sso\"]\nforward_cookies = true\n",
        idp.issuer(),
        idp.server.get("OIDC_CLIENT_ID"),
        idp.server.get("OIDC_CLIENT_SECRET"),
        upstream
    );
    let gw = Gateway::start(Setup {
        body,
        gateway_authenticators: vec!["sso".into()],
        ..Default::default()
    })
    .await;
    idp.register(&[gw.url("/auth/callback")], &[gw.url("/app/bye")])
        .await;
    gw
}

/// A client of the gateway that does not follow redirects.
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

fn set_cookies(r: &reqwest::Response) -> Vec<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

/// The value a `Set-Cookie` list gives cookie `name` (`Some("")` when it clears it).
fn cookie_set(cookies: &[String], name: &str) -> Option<String> {
    cookies.iter().find_map(|c| {
        let (pair, _) = c.split_once(';').unwrap_or((c, ""));
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| v.to_string())
    })
}

/// Where the test's artefacts go: `<target>/test-output/oidc/`.
fn output_dir() -> std::path::PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR")
        .unwrap_or_else(|_| format!("{}/target", env!("CARGO_MANIFEST_DIR")));
    let dir = std::path::Path::new(&target).join("test-output/oidc");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn page(gw: &Gateway, path: &str, cookie: Option<&str>, html: bool) -> reqwest::Response {
    let mut req = no_redirects(gw).get(gw.url(path));
    if let Some(c) = cookie {
        req = req.header("cookie", format!("site=kept; {SESSION}={c}"));
    }
    if html {
        req = req.header("accept", "text/html,application/xhtml+xml,*/*;q=0.8");
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn a_browser_logs_in_at_the_idp_and_lands_back_on_the_page_as_alice() {
    let idp = Idp::start();
    let chromium = RealServer::start("chromium");
    let app = App::start().await;
    let gw = gateway(
        &idp,
        &app,
        "session_idle = \"8s\"\nsession_lifetime = \"1h\"\nrefresh_interval = \"4s\"",
    )
    .await;
    let browser = Browser::start(&chromium).await;

    // A protected page sends the browser to the IdP's login form.
    browser.goto(&gw.url("/app/page?tab=jobs")).await;
    let landed = idp.log_in(&browser, "alice", &gw.url("/app/page")).await;
    let logged_in = Instant::now();
    assert_eq!(
        landed,
        gw.url("/app/page?tab=jobs"),
        "back where it started"
    );
    assert_eq!(browser.text("#user").await, "alice");
    assert_eq!(browser.text("#groups").await, "hpc-admins,hpc-users");
    let shot = output_dir().join("landed.png");
    std::fs::write(&shot, browser.screenshot().await).unwrap();
    println!("screenshot of the landed page: {}", shot.display());
    assert_eq!(app.last("x-forwarded-user").as_deref(), Some("alice"));

    // The session cookie: sealed, Secure, HttpOnly, SameSite=Lax; never sent upstream.
    let cookies = browser.cookies().await;
    let session = cookies
        .iter()
        .find(|c| c["name"] == SESSION)
        .unwrap_or_else(|| panic!("no session cookie in {cookies:?}"));
    assert_eq!(session["secure"], true);
    assert_eq!(session["httpOnly"], true);
    assert_eq!(session["sameSite"], "Lax");
    assert_eq!(session["path"], "/");
    let c1 = session["value"].as_str().unwrap().to_string();
    assert!(!c1.contains("alice"), "the cookie is encrypted");
    assert!(
        cookies.iter().all(|c| c["name"] != LOGIN),
        "the login cookie is gone after the callback"
    );

    // The same identity at /-/whoami.
    browser.goto(&gw.url("/-/whoami")).await;
    let who: Value = serde_json::from_str(&browser.text("pre").await).unwrap();
    assert_eq!(who["data"]["user"], "alice");
    assert_eq!(who["data"]["method"], "oidc_login");
    assert_eq!(who["data"]["email"], "alice@example.org");

    // The cookie works from any client; the site's own cookies go upstream, ours do not.
    let r = page(&gw, "/app/page", Some(&c1), true).await;
    assert_eq!(r.status(), 200);
    assert_eq!(app.last("cookie").as_deref(), Some("site=kept"));

    // A tampered cookie is refused: a browser is sent to log in, an API client gets 401.
    let mut bytes = c1.clone().into_bytes();
    let mid = bytes.len() / 2;
    bytes[mid] = if bytes[mid] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(bytes).unwrap();
    let before = app.count();
    let r = page(&gw, "/app/page", Some(&tampered), true).await;
    assert_eq!(r.status(), 302);
    let location = r.headers()["location"].to_str().unwrap();
    assert!(
        location.starts_with(&format!("{}/auth?", idp.issuer())),
        "{location}"
    );
    assert_eq!(cookie_set(&set_cookies(&r), SESSION).as_deref(), Some(""));
    let r = page(&gw, "/app/page", Some(&tampered), false).await;
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    expect_error(r, 401, "unauthorized").await;
    assert_eq!(app.count(), before, "nothing went upstream");

    // After refresh_interval the IdP confirms the session with the refresh token.
    tokio::time::sleep(
        (logged_in + Duration::from_millis(4300)).saturating_duration_since(Instant::now()),
    )
    .await;
    let tokens = idp.count("/token").await;
    let r = page(&gw, "/app/page", Some(&c1), true).await;
    assert_eq!(r.status(), 200);
    let c2 = cookie_set(&set_cookies(&r), SESSION).expect("a renewed session cookie");
    assert!(!c2.is_empty() && c2 != c1);
    assert_eq!(
        idp.count("/token").await,
        tokens + 1,
        "one refresh at the IdP"
    );

    // Idle expiry: the login's cookie, unused for session_idle, is refused; the renewed one
    // is not.
    tokio::time::sleep(
        (logged_in + Duration::from_millis(8300)).saturating_duration_since(Instant::now()),
    )
    .await;
    let r = page(&gw, "/app/page", Some(&c1), true).await;
    assert_eq!(
        r.status(),
        302,
        "an idle session sends the browser to log in"
    );
    let r = page(&gw, "/app/page", Some(&c1), false).await;
    expect_error(r, 401, "unauthorized").await;
    let r = page(&gw, "/app/page", Some(&c2), true).await;
    assert_eq!(r.status(), 200);

    // Logout is a POST with the session's CSRF token (the user page's Log out button): a
    // link or a forged form cannot log anyone out.
    let r = no_redirects(&gw)
        .get(gw.url("/auth/logout"))
        .header("cookie", format!("{SESSION}={c2}"))
        .send()
        .await
        .unwrap();
    expect_error(r, 405, "method_not_allowed").await;
    let logout = |csrf: &str| {
        no_redirects(&gw)
            .post(gw.url("/auth/logout"))
            .header("cookie", format!("{SESSION}={c2}"))
            .form(&[("csrf", csrf)])
            .send()
    };
    expect_error(logout("forged").await.unwrap(), 403, "forbidden").await;
    let home = page(&gw, "/", Some(&c2), true).await.text().await.unwrap();
    let at = home.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
    let csrf = &home[at..at + home[at..].find('"').unwrap()];
    // Logout clears the cookie and ends the IdP's session too (RP-initiated logout): coming
    // back to the app, the browser meets the login form again instead of being let in.
    let r = logout(csrf).await.unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(cookie_set(&set_cookies(&r), SESSION).as_deref(), Some(""));
    let location = r.headers()["location"].to_str().unwrap();
    assert!(
        location.starts_with(&format!("{}/session/end?", idp.issuer())),
        "{location}"
    );
    // The browser's own session went idle: it logs in again (at the IdP's form or through
    // its session), then logs out with the page's button.
    browser.goto(&gw.url("/")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    if browser
        .url()
        .await
        .starts_with(&format!("{}/interaction/", idp.issuer()))
    {
        browser.type_into("#username", "alice").await;
        browser.type_into("#password", &idp.password("alice")).await;
        browser.click("#submit").await;
    }
    browser.wait_for_url(&gw.url("/")).await;
    browser.wait_for("#logout").await;
    browser.click("#logout").await;
    browser
        .wait_for_url(&format!("{}/interaction/", idp.issuer()))
        .await;
    browser.text("#username").await;
    browser.goto(&gw.url("/-/healthz")).await;
    let cookies = browser.cookies().await;
    assert!(cookies.iter().all(|c| c["name"] != SESSION), "{cookies:?}");
    let audit = gw.audit();
    assert!(
        audit
            .iter()
            .any(|a| a["route"] == "auth/callback" && a["user"] == "alice"),
        "the login is in the audit log"
    );
    browser.quit().await;
}

/// A researcher in hundreds of project groups: the session no longer fits in one cookie (a
/// browser keeps about 4 KiB each). It is split over several, the browser keeps and sends them
/// all, the gateway joins them again; upstream sees every group and none of the cookies.
#[tokio::test]
async fn a_user_in_hundreds_of_groups_keeps_a_session_split_over_several_cookies() {
    let groups: Vec<String> = (0..250)
        .map(|i| format!("project-{i:04}-members"))
        .collect();
    let idp = Idp::start_with(&[("OIDC_ALICE_GROUPS", &groups.join(","))]);
    let chromium = RealServer::start("chromium");
    let app = App::start().await;
    let gw = gateway(&idp, &app, "").await;
    let browser = Browser::start(&chromium).await;

    browser.goto(&gw.url("/app/page")).await;
    idp.log_in(&browser, "alice", &gw.url("/app/page")).await;
    assert_eq!(browser.text("#user").await, "alice");
    assert_eq!(browser.text("#groups").await, groups.join(","));
    assert!(
        app.last("cookie").is_none_or(|c| !c.contains("hpcgate")),
        "no gateway cookie upstream"
    );

    let cookies = browser.cookies().await;
    let mut parts: Vec<(String, String)> = cookies
        .iter()
        .filter(|c| c["name"].as_str().is_some_and(|n| n.starts_with(SESSION)))
        .map(|c| {
            assert_eq!(c["secure"], true);
            assert_eq!(c["httpOnly"], true);
            let value = c["value"].as_str().unwrap().to_string();
            assert!(!value.contains("project-"), "the cookie is encrypted");
            (c["name"].as_str().unwrap().to_string(), value)
        })
        .collect();
    parts.sort();
    let names: Vec<&str> = parts.iter().map(|(n, _)| n.as_str()).collect();
    let want: Vec<String> = (0..parts.len())
        .map(|i| match i {
            0 => SESSION.to_string(),
            i => format!("{SESSION}-{i}"),
        })
        .collect();
    assert!(
        parts.len() >= 2,
        "250 groups take several cookies: {names:?}"
    );
    assert_eq!(names, want);
    assert!(parts.iter().all(|(n, v)| n.len() + v.len() < 4000));

    // The same identity, every group, at /-/whoami.
    browser.goto(&gw.url("/-/whoami")).await;
    let who: Value = serde_json::from_str(&browser.text("pre").await).unwrap();
    assert_eq!(who["data"]["user"], "alice");
    assert_eq!(who["data"]["groups"].as_array().unwrap().len(), 250);

    // From another client: all the parts open the session; without one of them it does not.
    let with = |parts: &[(String, String)]| {
        let line: Vec<String> = parts.iter().map(|(n, v)| format!("{n}={v}")).collect();
        no_redirects(&gw)
            .get(gw.url("/app/page"))
            .header("cookie", line.join("; "))
            .send()
    };
    assert_eq!(with(&parts).await.unwrap().status(), 200);
    let before = app.count();
    let mut missing = parts.clone();
    missing.remove(1);
    let r = with(&missing).await.unwrap();
    let cleared = set_cookies(&r);
    expect_error(r, 401, "unauthorized").await;
    assert_eq!(app.count(), before, "nothing went upstream");
    for (name, _) in &missing {
        assert_eq!(
            cookie_set(&cleared, name).as_deref(),
            Some(""),
            "every part the browser holds is removed: {cleared:?}"
        );
    }
    browser.quit().await;
}

#[tokio::test]
async fn open_redirects_forged_callbacks_and_api_clients_are_refused() {
    let idp = Idp::start();
    let app = App::start().await;
    let gw = gateway(&idp, &app, "").await;
    let client = no_redirects(&gw);
    let get = |path: &str| client.get(gw.url(path)).send();

    // return_to may only lead back to this gateway.
    for evil in [
        "https://evil.example",
        "https%3A%2F%2Fevil.example%2Fapp",
        "%2F%2Fevil.example",
        "%2F%5Cevil.example",
        "https%3A%2F%2Flocalhost%40evil.example%2F",
    ] {
        let r = get(&format!("/auth/login?return_to={evil}")).await.unwrap();
        assert!(set_cookies(&r).is_empty());
        expect_error(r, 400, "bad_request").await;
    }

    // A good one: to the IdP with code + PKCE S256, state and nonce, and a sealed login cookie.
    let r = get("/auth/login?return_to=%2Fapp%2Fx%3Fy%3D1")
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let location =
        openidconnect::url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    assert!(
        location
            .as_str()
            .starts_with(&format!("{}/auth?", idp.issuer()))
    );
    let q: std::collections::HashMap<String, String> =
        location.query_pairs().into_owned().collect();
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["client_id"], "gateway");
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["redirect_uri"], gw.url("/auth/callback"));
    assert!(q["scope"].split(' ').any(|s| s == "openid"));
    for p in ["code_challenge", "state", "nonce"] {
        assert!(q[p].len() >= 20, "{p}: {}", q[p]);
    }
    let cookies = set_cookies(&r);
    let login_cookie = cookies.iter().find(|c| c.starts_with(LOGIN)).unwrap();
    for attr in [
        "Path=/",
        "Secure",
        "HttpOnly",
        "SameSite=Lax",
        "Max-Age=600",
    ] {
        assert!(login_cookie.contains(attr), "{login_cookie}");
    }
    let login = cookie_set(&cookies, LOGIN).unwrap();
    let state = &q["state"];

    let callback = |query: String, with_cookie: bool| {
        let mut req = client.get(gw.url(&format!("/auth/callback?{query}")));
        if with_cookie {
            req = req.header("cookie", format!("{LOGIN}={login}"));
        }
        req.send()
    };
    // No login cookie (another browser), a wrong state, another issuer, an error, a code
    // the IdP never issued: each refused, and the login cookie cleared.
    let cases = [
        (
            format!("code=abc&state={state}"),
            false,
            400,
            "no login in progress",
        ),
        (
            "code=abc&state=forged".to_string(),
            true,
            400,
            "state does not match",
        ),
        (
            format!("code=abc&state={state}&iss=https%3A%2F%2Fevil.example"),
            true,
            400,
            "another identity provider",
        ),
        (
            format!("error=access_denied&state={state}"),
            true,
            401,
            "access_denied",
        ),
        (
            format!("code=never-issued&state={state}"),
            true,
            401,
            "invalid_grant",
        ),
    ];
    for (query, with_cookie, status, why) in cases {
        let r = callback(query.clone(), with_cookie).await.unwrap();
        assert_eq!(
            cookie_set(&set_cookies(&r), LOGIN).as_deref(),
            Some(""),
            "{query}"
        );
        assert!(cookie_set(&set_cookies(&r), SESSION).is_none(), "{query}");
        let code = r.status().as_u16();
        let body = r.text().await.unwrap();
        assert_json_error(
            code,
            &body,
            status,
            if status == 400 {
                "bad_request"
            } else {
                "unauthorized"
            },
        );
        assert!(body.contains(why), "{query}: {body}");
    }

    // Without a session: a browser is redirected (remembering where it was going), an API
    // client or a non-GET gets 401 asking for a bearer token (JSON; a page for a browser).
    let r = client
        .get(gw.url("/app/page"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert!(cookie_set(&set_cookies(&r), LOGIN).is_some());
    for req in [
        client.get(gw.url("/app/page")),
        client
            .get(gw.url("/app/page"))
            .header("accept", "application/json"),
        client.post(gw.url("/app/page")),
        client
            .post(gw.url("/app/page"))
            .header("accept", "text/html"),
    ] {
        let r = req.send().await.unwrap();
        assert_eq!(
            r.headers()["www-authenticate"].to_str().unwrap(),
            "Bearer realm=\"hpcgate\""
        );
        if r.headers()["content-type"] == "application/json" {
            expect_error(r, 401, "unauthorized").await;
        } else {
            assert_eq!(r.status(), 401);
            let page = r.text().await.unwrap();
            assert!(page.contains("<h1>401 Not logged in</h1>"), "{page}");
        }
    }
    assert_eq!(app.count(), 0);
}

/// A session key file in `dir` (32 random bytes in base64, mode 0600), for replicas to share.
fn session_key_file(dir: &std::path::Path) -> std::path::PathBuf {
    use base64::Engine;
    use std::os::unix::fs::OpenOptionsExt;
    let key = dir.join("session.key");
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key)
        .and_then(|mut f| {
            use std::io::Write;
            writeln!(
                f,
                "{}",
                base64::engine::general_purpose::STANDARD.encode(bytes)
            )
        })
        .unwrap();
    key
}

/// Replicas: sessions are encrypted cookies, so a gateway with the same `session_key_file`
/// accepts a session another one made; a gateway with its own key does not.
#[tokio::test]
async fn a_session_made_by_one_replica_is_good_on_another_with_the_same_key() {
    let idp = Idp::start();
    let chromium = RealServer::start("chromium");
    let app = App::start().await;
    let keys = tempfile::tempdir().unwrap();
    let key = session_key_file(keys.path());
    let shared = format!("session_key_file = \"{}\"", key.display());
    let one = gateway(&idp, &app, &shared).await;
    let two = gateway(&idp, &app, &shared).await;
    let stranger = gateway(&idp, &app, "").await;
    // The login happens on the first replica.
    idp.register(&[one.url("/auth/callback")], &[one.url("/app/bye")])
        .await;
    let browser = Browser::start(&chromium).await;
    browser.goto(&one.url("/app/page")).await;
    idp.log_in(&browser, "alice", &one.url("/app/page")).await;
    let cookies = browser.cookies().await;
    let session = cookies
        .iter()
        .find(|c| c["name"] == SESSION)
        .and_then(|c| c["value"].as_str())
        .unwrap_or_else(|| panic!("no session cookie in {cookies:?}"))
        .to_string();
    browser.quit().await;

    let r = page(&two, "/app/page", Some(&session), false).await;
    assert_eq!(r.status(), 200, "the other replica refused the session");
    assert_eq!(app.last("x-forwarded-user").as_deref(), Some("alice"));
    let r = page(&stranger, "/app/page", Some(&session), false).await;
    expect_error(r, 401, "unauthorized").await;
}

/// Logs `user` in at `gw` without a browser (the IdP's form filled in by curl): the session
/// cookie's value, as the callback set it.
async fn session_cookie(gw: &Gateway, idp: &Idp, user: &str) -> String {
    let client = no_redirects(gw);
    let r = client
        .get(gw.url("/auth/login?return_to=%2Fapp%2Fhome"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let login = cookie_set(&set_cookies(&r), LOGIN).expect("a login cookie");
    let to_idp = r.headers()["location"].to_str().unwrap().to_string();
    let callback = idp.authorize(&to_idp, user);
    assert!(
        callback.starts_with(&gw.url("/auth/callback?")),
        "{callback}"
    );
    let r = client
        .get(callback)
        .header("cookie", format!("{LOGIN}={login}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302, "{}", r.text().await.unwrap_or_default());
    cookie_set(&set_cookies(&r), SESSION)
        .filter(|c| !c.is_empty())
        .expect("a session cookie")
}

/// The CSRF token of the session `cookie`, from the Log out button of the page at `/`.
async fn csrf_token(gw: &Gateway, cookie: &str) -> String {
    let home = page(gw, "/", Some(cookie), true)
        .await
        .text()
        .await
        .unwrap();
    let at = home.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
    home[at..at + home[at..].find('"').unwrap()].to_string()
}

/// Cross-site request forgery: another site's page makes the browser POST to a proxied route,
/// and the browser adds the session cookie by itself. Without proof that the request comes
/// from the gateway's own pages it is refused, and the upstream never sees it.
#[tokio::test]
async fn a_cross_site_write_with_only_the_session_cookie_never_reaches_the_upstream() {
    let idp = Idp::start();
    let up = Recorder::start(Duration::ZERO).await;
    let gw = gateway_to(&idp, up.addr, "").await;
    let cookie = session_cookie(&gw, &idp, "alice").await;
    let client = no_redirects(&gw);
    let send = |method: reqwest::Method, headers: &[(&str, &str)]| {
        let mut req = client
            .request(method, gw.url("/app/jobs/cancel"))
            .header("cookie", format!("{SESSION}={cookie}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("job=42");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send()
    };
    let own = gw.url("");
    let refused: &[(reqwest::Method, &[(&str, &str)])] = &[
        // An old browser, or a client that says nothing.
        (reqwest::Method::POST, &[]),
        (
            reqwest::Method::POST,
            &[
                ("sec-fetch-site", "cross-site"),
                ("origin", "https://evil.example"),
            ],
        ),
        // Fetch metadata wins over an Origin that happens to match.
        (
            reqwest::Method::POST,
            &[("sec-fetch-site", "cross-site"), ("origin", own.as_str())],
        ),
        (reqwest::Method::POST, &[("origin", "https://evil.example")]),
        (reqwest::Method::POST, &[("origin", "null")]),
        (reqwest::Method::POST, &[("sec-fetch-site", "same-site")]),
        (reqwest::Method::PUT, &[("sec-fetch-site", "cross-site")]),
        (reqwest::Method::DELETE, &[("sec-fetch-site", "cross-site")]),
        (reqwest::Method::PATCH, &[]),
    ];
    for (method, headers) in refused {
        let r = send(method.clone(), headers).await.unwrap();
        let status = r.status().as_u16();
        let body = r.text().await.unwrap();
        assert_json_error(status, &body, 403, "forbidden");
        assert!(
            body.contains("Sec-Fetch-Site") && body.contains("route `app`"),
            "{method} {headers:?}: {body}"
        );
    }
    assert!(up.requests().is_empty(), "nothing went upstream");
    let denied = gw.last_audit("app").await;
    assert_eq!(denied["decision"], "deny");
    assert_eq!(denied["user"], "alice");
    assert_eq!(denied["auth"], "oidc_login");
    assert_eq!(denied["policies"], serde_json::json!(["same-origin"]));

    // From the gateway's own pages: through, as alice.
    for headers in [
        &[("sec-fetch-site", "same-origin")][..],
        &[("origin", own.as_str())][..],
    ] {
        let r = send(reqwest::Method::POST, headers).await.unwrap();
        assert_eq!(r.status(), 200, "{headers:?}");
        let seen = up.last();
        assert_eq!(seen.method, "POST");
        assert_eq!(seen.one("x-forwarded-user"), Some("alice"));
    }
    // Reading is what a link from another site does: unaffected.
    let r = client
        .get(gw.url("/app/jobs"))
        .header("cookie", format!("{SESSION}={cookie}"))
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.requests().len(), 3);
}

/// Logout ends the session on the server: the old cookie, copied before, is refused at once
/// by the gateway that logged out and within a second by another replica sharing the
/// PostgreSQL database; the database not answering refuses sessions (503) rather than
/// trusting them.
#[tokio::test]
async fn a_cookie_replayed_after_logout_is_refused_on_every_replica() {
    let pg = RealServer::start("postgres");
    let idp = Idp::start();
    let up = Recorder::start(Duration::ZERO).await;
    let keys = tempfile::tempdir().unwrap();
    let key = session_key_file(keys.path());
    let shared = format!(
        "session_key_file = \"{}\"\n[database]\nurl = \"{}?connect_timeout=1\"\ntimeout = \"1s\"\n",
        key.display(),
        pg.get("DATABASE_URL")
    );
    let two = gateway_to(&idp, up.addr, &shared).await;
    let one = gateway_to(&idp, up.addr, &shared).await;
    let get = |gw: &Gateway, cookie: &str| {
        no_redirects(gw)
            .get(gw.url("/app/x"))
            .header("cookie", format!("{SESSION}={cookie}"))
            .send()
    };

    let cookie = session_cookie(&one, &idp, "alice").await;
    for gw in [&one, &two] {
        assert_eq!(get(gw, &cookie).await.unwrap().status(), 200);
    }
    let csrf = csrf_token(&one, &cookie).await;
    let r = no_redirects(&one)
        .post(one.url("/auth/logout"))
        .header("cookie", format!("{SESSION}={cookie}"))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(cookie_set(&set_cookies(&r), SESSION).as_deref(), Some(""));
    let logged_out = Instant::now();

    // The copied cookie: refused here at once, as if it had expired.
    let r = get(&one, &cookie).await.unwrap();
    assert_eq!(cookie_set(&set_cookies(&r), SESSION).as_deref(), Some(""));
    expect_error(r, 401, "unauthorized").await;
    // And on the other replica within a second (it may have the session cached as live).
    loop {
        let r = get(&two, &cookie).await.unwrap();
        if r.status() == 401 {
            expect_error(r, 401, "unauthorized").await;
            break;
        }
        assert_eq!(r.status(), 200);
        assert!(
            logged_out.elapsed() < Duration::from_millis(1500),
            "the other replica still takes the session"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(logged_out.elapsed() < Duration::from_millis(1500));
    let r = get(&two, &cookie).await.unwrap();
    expect_error(r, 401, "unauthorized").await;
    let r = page(&two, "/app/x", Some(&cookie), true).await;
    assert_eq!(r.status(), 302, "a browser is sent to log in again");
    let seen = up.requests().len();
    for gw in [&one, &two] {
        let r = get(gw, &cookie).await.unwrap();
        assert_eq!(r.status(), 401);
    }
    assert_eq!(up.requests().len(), seen, "refused before the upstream");

    // A new login is a new session, unaffected.
    let again = session_cookie(&one, &idp, "alice").await;
    assert_ne!(again, cookie);
    assert_eq!(get(&two, &again).await.unwrap().status(), 200);

    // The database gone: no session is trusted, and logout says it could not end it (the
    // cookie is kept, so that it can be tried again).
    let csrf = csrf_token(&one, &again).await;
    pg.stop();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let started = Instant::now();
    let r = get(&two, &again).await.unwrap();
    expect_error(r, 503, "unavailable").await;
    assert!(started.elapsed() < Duration::from_secs(5));
    let r = no_redirects(&one)
        .post(one.url("/auth/logout"))
        .header("cookie", format!("{SESSION}={again}"))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert!(cookie_set(&set_cookies(&r), SESSION).is_none());
    let status = r.status().as_u16();
    let body = r.text().await.unwrap();
    assert_json_error(status, &body, 503, "unavailable");
    assert!(body.contains("try logging out again"), "{body}");
}
