//! The foundation's behaviour through the real binary: what the upstream receives, how
//! every refusal looks, TLS with h1 and h2, IPv4 and IPv6, upstream failures, shutdown.

mod common;

use std::time::{Duration, Instant};

use common::*;

fn route_to(name: &str, prefix: &str, backends: &[String], extra: &str) -> String {
    let list = backends
        .iter()
        .map(|b| format!("\"{b}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "[pools.{name}]\nbackends = [{list}]\nconnect_timeout = \"1s\"\nread_timeout = \"1s\"\n\
         {extra}\n[[routes]]\nname = \"{name}\"\npath_prefix = \"{prefix}\"\npool = \"{name}\"\n\
         authenticators = [\"local\"]\n"
    )
}

async fn echo_gateway(ipv6: bool) -> (Gateway, Recorder) {
    let up = Recorder::start(Duration::ZERO).await;
    let body = route_to("echo", "/echo", &[format!("http://{}", up.addr)], "")
        + "strip_prefix = true\n\n"
        + "[pools.open]\nbackends = [\"http://"
        + &up.addr.to_string()
        + "\"]\n[[routes]]\nname = \"open\"\npath_prefix = \"/open\"\npool = \"open\"\n\
           authenticators = [\"public\"]\n";
    let gw = Gateway::start(Setup {
        body,
        ipv6,
        ..Default::default()
    })
    .await;
    (gw, up)
}

#[tokio::test]
async fn spoofed_identity_headers_never_reach_the_upstream() {
    let (gw, up) = echo_gateway(false).await;
    // Every spelling of every identity header, twice, and empty.
    let spoofed = [
        "X-Forwarded-User",
        "x-forwarded-user",
        "x_forwarded_user",
        "X_FORWARDED_USER",
        "X-Forwarded-Groups",
        "X-Forwarded-Email",
        "X-Forwarded-Preferred-Username",
        "X-Grafana-User",
        "x_grafana_user",
        "X-GRAFANA-USER",
        "X-SLURM-USER-NAME",
        "x_slurm_user_name",
        "X-SLURM-USER-TOKEN",
        "X-Remote-User",
        "Remote-User",
        "remote_user",
    ];
    let mut req = format!(
        "GET /echo/x HTTP/1.1\r\nHost: localhost\r\nAuthorization: {}\r\n",
        basic("bob", BOB_PW)
    );
    for h in spoofed {
        req.push_str(&format!("{h}: root\r\n{h}: admin\r\n{h}:\r\n"));
    }
    req.push_str("Connection: close\r\n\r\n");
    let (status, _, body) = parse_raw(&gw.raw(req.as_bytes()).await);
    assert_eq!(status, 200, "{body}");
    let seen = up.last();
    assert_eq!(seen.all("x-forwarded-user"), vec!["bob"]);
    assert_eq!(seen.all("x-forwarded-groups"), vec!["hpc-users"]);
    for h in spoofed {
        let normal = h.to_ascii_lowercase().replace('_', "-");
        for (k, v) in &seen.headers {
            let k_norm = k.to_ascii_lowercase().replace('_', "-");
            if k_norm == normal {
                assert!(
                    ((normal == "x-forwarded-user" || normal == "x-forwarded-preferred-username")
                        && v == "bob")
                        || (normal == "x-forwarded-groups" && v == "hpc-users"),
                    "spoofed {h} reached the upstream as {k}: {v}"
                );
            }
        }
    }
    assert!(
        !seen
            .headers
            .iter()
            .any(|(_, v)| v == "root" || v == "admin")
    );

    // Without credentials, the same spoofing gets 401 and never reaches the upstream.
    let before = up.requests().len();
    let resp = gw
        .client(false)
        .get(gw.url("/echo/x"))
        .header("X-Forwarded-User", "root")
        .header("x_grafana_user", "root")
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    assert!(resp.headers().contains_key("www-authenticate"));
    assert_json_error(status, &resp.text().await.unwrap(), 401, "unauthorized");
    assert_eq!(up.requests().len(), before);
}

#[tokio::test]
async fn credentials_and_forwarding_headers_are_rewritten() {
    let (gw, up) = echo_gateway(false).await;
    let resp = gw
        .client(false)
        .get(gw.url("/echo/a/b?q=1&r=x"))
        .header("authorization", basic("alice", ALICE_PW))
        .header("x-forwarded-for", "6.6.6.6")
        .header("forwarded", "for=6.6.6.6")
        .header("x-request-id", "client-chosen")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let seen = up.last();
    assert_eq!(seen.uri, "/a/b?q=1&r=x", "prefix stripped, query kept");
    assert_eq!(
        seen.one("authorization"),
        None,
        "client credentials never go upstream"
    );
    assert_eq!(seen.one("x-forwarded-user"), Some("alice"));
    assert_eq!(seen.one("x-forwarded-groups"), Some("hpc-admins,hpc-users"));
    assert_eq!(seen.one("x-forwarded-email"), Some("alice@example.org"));
    assert_eq!(seen.one("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.one("x-forwarded-proto"), Some("https"));
    assert_eq!(
        seen.one("forwarded"),
        Some(
            format!(
                "for=127.0.0.1;proto=https;host=\"localhost:{}\"",
                gw.tls_port
            )
            .as_str()
        )
    );
    assert_eq!(seen.one("x-request-id"), Some(rid.as_str()));
    assert_ne!(rid, "client-chosen");
}

#[tokio::test]
async fn refusals_are_json_with_the_right_status() {
    let (gw, up) = echo_gateway(false).await;
    let c = gw.client(false);

    // Wrong password.
    let r = c
        .get(gw.url("/echo/"))
        .header("authorization", basic("alice", "wrong"))
        .send()
        .await
        .unwrap();
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic realm=")
    );
    expect_error(r, 401, "unauthorized").await;
    // Unknown user: the same answer.
    let r = c
        .get(gw.url("/echo/"))
        .header("authorization", basic("mallory", "x"))
        .send()
        .await
        .unwrap();
    expect_error(r, 401, "unauthorized").await;

    // No route.
    let r = c
        .get(gw.url("/nowhere"))
        .header("authorization", basic("alice", ALICE_PW))
        .send()
        .await
        .unwrap();
    expect_error(r, 404, "not_found").await;
    // Prefixes match whole segments: /echoes is not /echo.
    let r = c.get(gw.url("/echoes")).send().await.unwrap();
    assert_eq!(r.status(), 404);

    // Path confusion, sent raw (clients would normalise it away).
    for path in [
        "/echo/../open/x",
        "/echo/%2e%2e/open",
        "/open/..%2fecho",
        "/open/%5c..%5cecho",
        "/open//x",
        "/open/a%00b",
    ] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        let (status, headers, body) = parse_raw(&gw.raw(req.as_bytes()).await);
        assert_eq!(status, 400, "{req:?} got {status} {headers:?} {body}");
        assert_json_error(status, &body, 400, "bad_request");
        assert!(
            headers
                .iter()
                .any(|(k, v)| k == "content-type" && v == "application/json")
        );
    }

    // Smuggling shapes. Some never reach the pipeline: pingora's HTTP/1 parser refuses them
    // itself with a 400 that has no body (it offers no hook to write one), and closes.
    for req in [
        "POST /open/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST /open/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
        "POST /open/x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n",
        "GET /open/x HTTP/1.1\r\nHost: localhost\r\nHost: evil\r\n\r\n",
        "GET http://evil.example/open/x HTTP/1.1\r\nHost: localhost\r\n\r\n",
    ] {
        let (status, headers, body) = parse_raw(&gw.raw(req.as_bytes()).await);
        assert_eq!(status, 400, "{req:?} got {status} {body}");
        if !body.is_empty() {
            assert_json_error(status, &body, 400, "bad_request");
        }
        assert!(
            headers
                .iter()
                .any(|(k, v)| k == "connection" && v == "close")
                || body.is_empty(),
            "{req:?}: an ambiguous request must end the connection: {headers:?}"
        );
    }
    assert!(
        up.requests().is_empty(),
        "nothing refused reached the upstream"
    );

    // The gateway's own endpoints take GET only.
    let r = c.post(gw.url("/-/healthz")).send().await.unwrap();
    expect_error(r, 405, "method_not_allowed").await;
}

#[tokio::test]
async fn public_routes_need_no_credentials() {
    let (gw, up) = echo_gateway(false).await;
    let r = gw
        .client(false)
        .get(gw.url("/open/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = up.last();
    assert_eq!(seen.uri, "/open/x", "no strip_prefix on this route");
    assert_eq!(seen.one("x-forwarded-user"), None);
}

#[tokio::test]
async fn http2_and_http1_over_tls_on_ipv4_and_ipv6() {
    let (gw, up) = echo_gateway(true).await;
    let v6 = gw.v6_port.unwrap();
    for h2 in [false, true] {
        let c = gw.client(h2);
        for url in [
            gw.url("/echo/v"),
            format!("https://127.0.0.1:{}/echo/v", gw.tls_port),
            format!("https://[::1]:{v6}/echo/v"),
        ] {
            let r = c
                .get(&url)
                .header("authorization", basic("alice", ALICE_PW))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{url}: {e}"));
            let want = if h2 {
                reqwest::Version::HTTP_2
            } else {
                reqwest::Version::HTTP_11
            };
            assert_eq!(r.version(), want, "{url}");
            assert_eq!(r.status(), 200, "{url}");
            assert_eq!(up.last().one("x-forwarded-user"), Some("alice"));
        }
    }
    let ips: Vec<String> = up
        .requests()
        .iter()
        .map(|s| s.one("x-forwarded-for").unwrap().to_string())
        .collect();
    assert!(ips.contains(&"127.0.0.1".to_string()));
    assert!(ips.contains(&"::1".to_string()));
}

#[tokio::test]
async fn upstream_failures_map_to_502_503_504() {
    let dead = format!("http://127.0.0.1:{}", free_port());
    let dead2 = format!("http://127.0.0.1:{}", free_port());
    let hang = format!("http://{}", hanging_backend().await);
    let up = Recorder::start(Duration::ZERO).await;
    let live = format!("http://{}", up.addr);
    let body = [
        route_to("dead", "/dead", std::slice::from_ref(&dead), ""),
        route_to("hang", "/hang", std::slice::from_ref(&hang), ""),
        route_to(
            "alldead",
            "/alldead",
            &[dead.clone(), dead2],
            "fail_timeout = \"60s\"",
        ),
        route_to(
            "failover",
            "/failover",
            &[dead, live],
            "fail_timeout = \"60s\"",
        ),
    ]
    .join("\n");
    let gw = Gateway::start(Setup {
        body,
        ipv6: false,
        ..Default::default()
    })
    .await;
    let c = gw.client(false);
    let get = |path: &str| {
        c.get(gw.url(path))
            .header("authorization", basic("alice", ALICE_PW))
            .send()
    };

    let r = get("/dead/x").await.unwrap();
    expect_error(r, 502, "bad_gateway").await;

    let start = Instant::now();
    let r = get("/hang/x").await.unwrap();
    let took = start.elapsed();
    expect_error(r, 504, "timeout").await;
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "504 after {took:?}, read_timeout is 1s"
    );

    // Both backends refuse: the first request tries both (502), then both are marked down.
    let r = get("/alldead/x")
        .await
        .unwrap_or_else(|e| panic!("{e}: {}", gw.log_text()));
    expect_error(r, 502, "bad_gateway").await;
    let r = get("/alldead/x").await.unwrap();
    expect_error(r, 503, "unavailable").await;

    // One dead, one live: every request succeeds (retried on the live one, then skipped).
    for _ in 0..6 {
        let r = get("/failover/x").await.unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(up.requests().len(), 6);

    // The failures are counted.
    let m = get("/-/metrics").await.unwrap().text().await.unwrap();
    assert!(
        m.contains("hpcgate_upstream_errors_total{kind=\"connect\",pool=\"dead\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("hpcgate_upstream_errors_total{kind=\"timeout\",pool=\"hang\"} 1"),
        "{m}"
    );
}

#[tokio::test]
async fn whoami_metrics_and_health() {
    let (gw, _up) = echo_gateway(false).await;
    let c = gw.client(false);
    let r = c
        .get(gw.url("/-/whoami"))
        .header("authorization", basic("alice", ALICE_PW))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["status"], "success");
    assert_eq!(v["data"]["user"], "alice");
    assert_eq!(
        v["data"]["groups"],
        serde_json::json!(["hpc-admins", "hpc-users"])
    );
    assert_eq!(v["data"]["method"], "static");

    let r = c.get(gw.url("/-/whoami")).send().await.unwrap();
    assert_eq!(r.status(), 401);

    for _ in 0..3 {
        c.get(gw.url("/echo/m"))
            .header("authorization", basic("bob", BOB_PW))
            .send()
            .await
            .unwrap();
    }
    // Metrics need credentials unless metrics_public.
    assert_eq!(
        c.get(gw.url("/-/metrics")).send().await.unwrap().status(),
        401
    );
    let m = c
        .get(gw.url("/-/metrics"))
        .header("authorization", basic("bob", BOB_PW))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.contains("hpcgate_requests_total{route=\"echo\",status=\"200\"} 3"),
        "{m}"
    );
    assert!(
        m.contains("hpcgate_request_duration_seconds_bucket{route=\"echo\""),
        "{m}"
    );

    let h = c.get(gw.url("/-/healthz")).send().await.unwrap();
    assert_eq!(h.status(), 200);
    let h = c.get(gw.url("/-/ready")).send().await.unwrap();
    assert_eq!(h.status(), 200);

    // One access line per request, JSON, with the request id and never the password.
    let log = gw.log_text();
    assert!(!log.contains(BOB_PW) && !log.contains(ALICE_PW));
    let access: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "access")
        .collect();
    assert!(access.len() >= 7, "{log}");
    let echo = access.iter().find(|v| v["route"] == "echo").unwrap();
    assert_eq!(echo["user"], "bob");
    assert_eq!(echo["status"], 200);
    assert_eq!(echo["request_id"].as_str().unwrap().len(), 24);
}

#[tokio::test]
async fn sigterm_finishes_in_flight_requests_then_exits() {
    let slow = Recorder::start(Duration::from_millis(1500)).await;
    let body = route_to("slow", "/slow", &[format!("http://{}", slow.addr)], "")
        .replace("read_timeout = \"1s\"", "read_timeout = \"10s\"");
    let mut gw = Gateway::start(Setup {
        body,
        ipv6: false,
        ..Default::default()
    })
    .await;
    let c = gw.client(false);
    let url = gw.url("/slow/x");
    let pending = tokio::spawn(async move {
        c.get(url)
            .header("authorization", basic("alice", ALICE_PW))
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    // Let the request reach the upstream, then ask the gateway to stop.
    let deadline = Instant::now() + Duration::from_secs(10);
    while slow.requests().is_empty() {
        assert!(
            Instant::now() < deadline,
            "request never reached the upstream"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gw.terminate();
    let status = pending.await.unwrap().expect("in-flight request completed");
    assert_eq!(status, 200);
    let took = gw
        .wait_exit(Duration::from_secs(8))
        .expect("the gateway exited well before its 10 s grace period");
    assert!(took < Duration::from_secs(5), "exit took {took:?}");
    // New connections are refused once it stopped.
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", gw.tls_port))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn https_backends_are_verified_against_the_pool_ca() {
    // The upstream is a second gateway: TLS with its own development CA, public route.
    let (inner, up) = echo_gateway(false).await;
    let inner_ca = inner.dir.path().join("ca.pem");
    let backend = format!("https://localhost:{}", inner.tls_port);
    let body = route_to(
        "trusted",
        "/trusted",
        std::slice::from_ref(&backend),
        &format!("tls_ca = \"{}\"", inner_ca.display()),
    ) + "strip_prefix = true\n"
        + &route_to("untrusted", "/untrusted", &[backend], "");
    let gw = Gateway::start(Setup {
        body,
        ipv6: false,
        ..Default::default()
    })
    .await;
    let c = gw.client(false);
    let r = c
        .get(gw.url("/trusted/open/through"))
        .header("authorization", basic("alice", ALICE_PW))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = up.last();
    assert_eq!(seen.uri, "/open/through");
    // The inner gateway strips the outer one's identity headers like any client's.
    assert_eq!(seen.one("x-forwarded-user"), None);

    // Without the CA the backend's certificate is not trusted: 502, nothing sent. This runs
    // after the trusted pool opened a verified connection to the same address, which
    // pingora would reuse across pools unless each pool has its own connection group.
    let before = up.requests().len();
    let r = c
        .get(gw.url("/untrusted/open/x"))
        .header("authorization", basic("alice", ALICE_PW))
        .send()
        .await
        .unwrap();
    expect_error(r, 502, "bad_gateway").await;
    assert_eq!(up.requests().len(), before);
}

#[tokio::test]
async fn repeated_wrong_passwords_are_throttled_for_static_users_too() {
    let (gw, _up) = echo_gateway(false).await;
    let c = gw.client(true);
    for i in 0..10 {
        let r = c
            .get(gw.url("/echo/x"))
            .header("authorization", basic("bob", &format!("guess-{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "guess {i}");
    }
    let r = c
        .get(gw.url("/echo/x"))
        .header("authorization", basic("bob", BOB_PW))
        .send()
        .await
        .unwrap();
    assert!(r.headers().contains_key("retry-after"));
    expect_error(r, 429, "too_many_requests").await;
}
