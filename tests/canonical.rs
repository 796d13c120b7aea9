//! The gateway decides on the request the upstream reads (issue 20), through the real binary
//! in front of a recording upstream: the canonical path is what is routed, authorized and
//! forwarded; `Host` must be `host[:port]` and reaches `Forwarded` quoted; a trailing dot does
//! not escape a host-bound route; an upstream cannot set the gateway's cookies; and
//! method-override headers never reach an upstream. (Against a real Prometheus:
//! tests/prometheus.rs.)

mod common;

use std::time::Duration;

use common::*;

/// `/open` (public, prefix kept) and `/echo` (local users, `admin_paths` on `/echo/status`)
/// in front of one recording upstream.
async fn gateway() -> (Gateway, Recorder) {
    let up = Recorder::start(Duration::ZERO).await;
    let body = format!(
        "[pools.up]\nbackends = [\"http://{addr}\"]\n\n\
         [[routes]]\nname = \"open\"\npath_prefix = \"/open\"\npool = \"up\"\n\
         authenticators = [\"public\"]\n\n\
         [[routes]]\nname = \"echo\"\npath_prefix = \"/echo\"\npool = \"up\"\n\
         authenticators = [\"local\"]\nadmin_paths = [\"/echo/status\"]\n",
        addr = up.addr
    );
    let gw = Gateway::start(Setup {
        body,
        ..Default::default()
    })
    .await;
    (gw, up)
}

fn get(path: &str, host: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n")
}

#[tokio::test]
async fn encoded_letters_are_routed_authorized_and_forwarded_decoded() {
    let (gw, up) = gateway().await;
    // The public route, spelled with escapes: routed there and forwarded as the upstream
    // would read it anyway; the query is left as sent.
    let (status, _, body) = parse_raw(
        &gw.raw(get("/%6Fpen/caf%c3%a9/%7e?q=%61%3B", "localhost", "").as_bytes())
            .await,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(up.last().uri, "/open/caf%C3%A9/~?q=%61%3B");
    // admin_paths on /echo/status holds for /echo/st%61tus too: bob is not an admin.
    let before = up.requests().len();
    for path in [
        "/echo/status/flags",
        "/echo/st%61tus/flags",
        "/%65cho/%73tatus",
    ] {
        let r = gw.get_as(path, "bob", BOB_PW).await;
        expect_error(r, 403, "forbidden").await;
    }
    assert_eq!(up.requests().len(), before, "nothing reached the upstream");
    let r = gw.get_as("/echo/st%61tus/flags", "alice", ALICE_PW).await;
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().uri, "/echo/status/flags");
    let audit = gw
        .audit_of(r.headers()["x-request-id"].to_str().unwrap())
        .await;
    assert_eq!(audit["action"], "admin", "{audit}");
    assert_eq!(audit["path"], "/echo/status/flags", "{audit}");
}

#[tokio::test]
async fn paths_that_an_upstream_could_split_differently_are_refused() {
    let (gw, up) = gateway().await;
    for path in [
        "/open/a;b",
        "/open/a%3bb",
        "/open/a%3Fb",
        "/open/a%23b",
        "/open/a%25%36%31",
        "/open/a%0Ab",
    ] {
        let (status, _, body) = parse_raw(&gw.raw(get(path, "localhost", "").as_bytes()).await);
        assert_json_error(status, &body, 400, "bad_request");
    }
    assert!(up.requests().is_empty());
}

#[tokio::test]
async fn forwarded_cannot_gain_an_element_through_host() {
    let (gw, up) = gateway().await;
    for host in [
        "a\",for=6.6.6.6;proto=https;host=\"b",
        "a, for=6.6.6.6",
        "gw;proto=https",
        "gw:443\"",
    ] {
        let (status, _, body) = parse_raw(&gw.raw(get("/open/x", host, "").as_bytes()).await);
        assert_json_error(status, &body, 400, "bad_request");
    }
    assert!(up.requests().is_empty(), "refused before any upstream");
    // A legitimate host goes through, quoted in Forwarded, as sent in X-Forwarded-Host.
    let (status, _, body) = parse_raw(
        &gw.raw(get("/open/x", "gw.example:8080", "").as_bytes())
            .await,
    );
    assert_eq!(status, 200, "{body}");
    let seen = up.last();
    assert_eq!(
        seen.one("forwarded"),
        Some("for=127.0.0.1;proto=http;host=\"gw.example:8080\"")
    );
    assert_eq!(seen.one("x-forwarded-host"), Some("gw.example:8080"));
}

#[tokio::test]
async fn a_trailing_dot_does_not_escape_a_host_bound_route() {
    let up = Recorder::start(Duration::ZERO).await;
    // secret.example needs a login; every other host is public.
    let body = format!(
        "[pools.up]\nbackends = [\"http://{addr}\"]\n\n\
         [[routes]]\nname = \"secret\"\nhost = \"secret.example\"\npath_prefix = \"/\"\n\
         pool = \"up\"\nauthenticators = [\"local\"]\n\n\
         [[routes]]\nname = \"anything\"\npath_prefix = \"/\"\npool = \"up\"\n\
         authenticators = [\"public\"]\n",
        addr = up.addr
    );
    let gw = Gateway::start(Setup {
        body,
        ..Default::default()
    })
    .await;
    for host in [
        "secret.example",
        "secret.example.",
        "SECRET.Example.",
        "secret.example.:80",
    ] {
        let (status, _, body) = parse_raw(&gw.raw(get("/x", host, "").as_bytes()).await);
        assert_json_error(status, &body, 401, "unauthorized");
    }
    assert!(up.requests().is_empty());
    let (status, _, _) = parse_raw(&gw.raw(get("/x", "other.example.", "").as_bytes()).await);
    assert_eq!(status, 200);
}

#[tokio::test]
async fn method_override_headers_never_reach_the_upstream() {
    let (gw, up) = gateway().await;
    let r = gw
        .client(false)
        .get(gw.url("/echo/x"))
        .header("authorization", basic("bob", BOB_PW))
        .header("X-HTTP-Method-Override", "DELETE")
        .header("x_http_method_override", "DELETE")
        .header("X-Method-Override", "PUT")
        .header("X_METHOD_OVERRIDE", "PUT")
        .header("X-HTTP-Method", "POST")
        .header("x_Http_Method", "POST")
        .header("x-keep", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = up.last();
    assert_eq!(seen.method, "GET");
    let left: Vec<&str> = seen
        .headers
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| k.to_ascii_lowercase().replace('_', "-").contains("method"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(seen.one("x-keep"), Some("1"));
}

/// An upstream that sets the gateway's own cookies besides one of its own.
async fn cookie_setting_upstream() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(|| async {
        (
            axum::response::AppendHeaders([
                (
                    "set-cookie",
                    "__Host-hpcgate-session=planted; Path=/; Secure",
                ),
                ("set-cookie", "app=1; Path=/"),
                (
                    "set-cookie",
                    "__Host-hpcgate-session-1=planted; Path=/; Secure",
                ),
                ("set-cookie", "hpcgate-anything=x"),
                ("set-cookie", "__host-hpcgate-login=; Max-Age=0"),
            ]),
            "ok",
        )
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

#[tokio::test]
async fn an_upstream_cannot_set_the_gateway_session_cookie() {
    let addr = cookie_setting_upstream().await;
    let gw = Gateway::start(Setup {
        body: format!(
            "[pools.up]\nbackends = [\"http://{addr}\"]\n\n\
             [[routes]]\nname = \"cookies\"\npath_prefix = \"/cookies\"\npool = \"up\"\n\
             authenticators = [\"public\"]\n"
        ),
        ..Default::default()
    })
    .await;
    for h2 in [false, true] {
        let r = gw
            .client(h2)
            .get(gw.url("/cookies/x"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let cookies: Vec<&str> = r
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(cookies, ["app=1; Path=/"], "h2: {h2}");
    }
    assert_eq!(
        gw.metric("hpcgate_upstream_own_cookies_dropped_total{route=\"cookies\"}")
            .await,
        2.0
    );
    gw.wait_log("tried to set the gateway's own cookies", 2)
        .await;
}
