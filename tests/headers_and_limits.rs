//! What each kind of upstream is told about the caller, what it is never told, and per-user
//! rate limits (in one process, and shared by two processes through a real Redis).

mod common;

use std::time::{Duration, Instant};

use common::*;

/// Every header that could carry an identity or a credential, for "exactly these" checks.
const WATCHED: &[&str] = &[
    "x-forwarded-user",
    "x-forwarded-groups",
    "x-forwarded-email",
    "x-forwarded-preferred-username",
    "x-grafana-user",
    "x-slurm-user-name",
    "x-slurm-user-token",
    "x-remote-user",
    "x-remote-groups",
    "remote-user",
    "authorization",
    "cookie",
];

fn watched(seen: &Seen) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = seen
        .headers
        .iter()
        .filter(|(k, _)| WATCHED.contains(&k.to_ascii_lowercase().replace('_', "-").as_str()))
        .cloned()
        .collect();
    v.sort();
    v
}

/// A Slurm HS256 key file (mode 0600) in `dir`.
pub fn slurm_key(dir: &std::path::Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let key = dir.join("jwt_hs256.key");
    std::fs::write(&key, [42u8; 32]).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    key
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<_> = p
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn each_route_kind_gets_exactly_its_identity_headers() {
    let up = Recorder::start(Duration::ZERO).await;
    let keys = tempfile::tempdir().unwrap();
    let slurm = format!(
        "[routes.slurm]\njwt_key_file = \"{}\"\n",
        slurm_key(keys.path()).display()
    );
    let mut body = format!("[pools.up]\nbackends = [\"http://{}\"]\n", up.addr);
    for (name, kind, extra) in [
        ("generic", "generic", ""),
        // Identity headers are under test here, not PromQL (tests/prometheus.rs).
        ("prometheus", "prometheus", "promql = { mode = \"off\" }\n"),
        ("accounting", "accounting", ""),
        ("slurm", "slurmrestd", slurm.as_str()),
        (
            "custom",
            "generic",
            "identity_headers = { user = \"X-Remote-User\", groups = \"X-Remote-Groups\", \
             email = \"\", preferred_username = \"\" }\n",
        ),
        ("cookies", "generic", "forward_cookies = true\n"),
    ] {
        body.push_str(&format!(
            "\n[[routes]]\nname = \"{name}\"\npath_prefix = \"/{name}\"\npool = \"up\"\n\
             kind = \"{kind}\"\nauthenticators = [\"local\"]\n{extra}"
        ));
    }
    let gw = Gateway::start(Setup {
        body,
        ..Default::default()
    })
    .await;

    let expected: &[(&str, Vec<(String, String)>)] = &[
        (
            "generic",
            pairs(&[
                ("x-forwarded-user", "bob"),
                ("x-forwarded-groups", "hpc-users"),
                ("x-forwarded-preferred-username", "bob"),
            ]),
        ),
        ("prometheus", pairs(&[("x-grafana-user", "bob")])),
        ("accounting", pairs(&[("x-grafana-user", "bob")])),
        (
            "slurm",
            pairs(&[
                ("x-slurm-user-name", "bob"),
                ("x-slurm-user-token", "<minted>"),
            ]),
        ),
        (
            "custom",
            pairs(&[("x-remote-user", "bob"), ("x-remote-groups", "hpc-users")]),
        ),
        (
            "cookies",
            pairs(&[
                ("x-forwarded-user", "bob"),
                ("x-forwarded-groups", "hpc-users"),
                ("x-forwarded-preferred-username", "bob"),
                ("cookie", "theme=dark; lang=en"),
            ]),
        ),
    ];
    for (route, want) in expected {
        // Spoofs in every spelling, twice and empty, plus cookies (ours and the site's).
        let mut req = format!(
            "GET /{route}/x HTTP/1.1\r\nHost: localhost\r\nAuthorization: {}\r\n\
             Cookie: hpcgate_session=stolen; theme=dark\r\nCookie: __Host-hpcgate-csrf=x; lang=en\r\n",
            basic("bob", BOB_PW)
        );
        for h in [
            "x_grafana_user",
            "X-GRAFANA-USER",
            "X-Grafana-User",
            "X-Forwarded-User",
            "x_remote_groups",
            "X-Remote-User",
            "X-SLURM-USER-NAME",
        ] {
            req.push_str(&format!("{h}: root\r\n{h}: admin\r\n{h}: \r\n"));
        }
        req.push_str("Connection: close\r\n\r\n");
        let (status, _, text) = parse_raw(&gw.raw(req.as_bytes()).await);
        assert_eq!(status, 200, "{route}: {text}");
        let seen = up.last();
        // The Slurm token is minted per user (tests/slurm.rs checks it against Slurm).
        let got: Vec<(String, String)> = watched(&seen)
            .into_iter()
            .map(|(k, v)| match k.as_str() {
                "x-slurm-user-token" if v.starts_with("eyJ") => (k, "<minted>".into()),
                _ => (k, v),
            })
            .collect();
        assert_eq!(&got, want, "route {route}");
    }
}

#[tokio::test]
async fn bearer_tokens_pass_only_where_the_route_says_and_basic_never() {
    let up = Recorder::start(Duration::ZERO).await;
    let body = format!(
        "[pools.up]\nbackends = [\"http://{}\"]\n\
         [[routes]]\nname = \"firecrest\"\npath_prefix = \"/firecrest\"\npool = \"up\"\n\
         authenticators = [\"public\"]\npass_bearer_token = true\n\
         [[routes]]\nname = \"other\"\npath_prefix = \"/other\"\npool = \"up\"\n\
         authenticators = [\"public\"]\n",
        up.addr
    );
    let gw = Gateway::start(Setup {
        body,
        ..Default::default()
    })
    .await;
    let c = gw.client(true);
    for (path, auth, want) in [
        (
            "/firecrest/x",
            "Bearer eyJ.abc.def",
            Some("Bearer eyJ.abc.def"),
        ),
        ("/firecrest/x", &basic("bob", BOB_PW)[..], None),
        ("/other/x", "Bearer eyJ.abc.def", None),
    ] {
        let r = c
            .get(gw.url(path))
            .header("authorization", auth)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(up.last().one("authorization"), want, "{path} {auth}");
    }
}

fn limited_routes(up: &Recorder) -> String {
    format!(
        "[pools.up]\nbackends = [\"http://{}\"]\n\
         [[routes]]\nname = \"limited\"\npath_prefix = \"/limited\"\npool = \"up\"\n\
         authenticators = [\"local\"]\nrate_limit = {{ requests = 5, per = \"1s\" }}\n",
        up.addr
    )
}

#[tokio::test]
async fn the_sixth_request_in_a_second_gets_429_with_retry_after() {
    let up = Recorder::start(Duration::ZERO).await;
    let gw = Gateway::start(Setup {
        body: limited_routes(&up),
        ..Default::default()
    })
    .await;
    let c = gw.client(true);
    let get = |user: &'static str, pw: &'static str| {
        c.get(gw.url("/limited/x"))
            .header("authorization", basic(user, pw))
            .send()
    };
    let start = Instant::now();
    for i in 0..5 {
        assert_eq!(
            get("bob", BOB_PW).await.unwrap().status(),
            200,
            "request {i}"
        );
    }
    let r = get("bob", BOB_PW).await.unwrap();
    assert!(
        start.elapsed() < Duration::from_millis(200),
        "too slow to test a 1 s budget"
    );
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    expect_error(r, 429, "too_many_requests").await;
    // Another user has a budget of their own.
    assert_eq!(get("alice", ALICE_PW).await.unwrap().status(), 200);
    assert_eq!(up.requests().len(), 6);
    // The budget refills.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(get("bob", BOB_PW).await.unwrap().status(), 200);
}

#[tokio::test]
async fn two_gateways_sharing_redis_share_one_budget() {
    let redis = RealServer::start("redis");
    let url = redis.get("REDIS_URL").to_string();
    let up = Recorder::start(Duration::ZERO).await;
    let body = format!(
        "{}\n[rate_limits]\nredis_url = \"{url}\"\nredis_timeout = \"250ms\"\n",
        limited_routes(&up)
    );
    let a = Gateway::start(Setup {
        body: body.clone(),
        ..Default::default()
    })
    .await;
    let b = Gateway::start(Setup {
        body,
        ..Default::default()
    })
    .await;
    let (ca, cb) = (a.client(true), b.client(true));
    // Warm both connections (TLS, Redis) with alice, whose budget is separate.
    for (gw, c) in [(&a, &ca), (&b, &cb)] {
        let r = c
            .get(gw.url("/limited/x"))
            .header("authorization", basic("alice", ALICE_PW))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let start = Instant::now();
    let mut allowed = 0;
    let mut limited = 0;
    for i in 0..10 {
        let (gw, c) = if i % 2 == 0 { (&a, &ca) } else { (&b, &cb) };
        let r = c
            .get(gw.url("/limited/x"))
            .header("authorization", basic("bob", BOB_PW))
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            200 => allowed += 1,
            429 => limited += 1,
            s => panic!("unexpected {s}: {}", r.text().await.unwrap()),
        }
    }
    let took = start.elapsed();
    // 5 at once, refilled at 5/s: within `took`, at most 5 + 5 * took more.
    let ceiling = 5 + (5.0 * took.as_secs_f64()).floor() as usize;
    assert!(
        allowed >= 5 && allowed <= ceiling,
        "{allowed} allowed, {limited} limited in {took:?}: two gateways must share 5/s"
    );

    // Redis gone: the limited route refuses (503) rather than letting everything through.
    redis.stop();
    let r = ca
        .get(a.url("/limited/x"))
        .header("authorization", basic("alice", ALICE_PW))
        .send()
        .await
        .unwrap();
    expect_error(r, 503, "unavailable").await;
}
