//! The per-request steps of the pipeline, built from a real config by the same code the
//! gateway runs (`server::snapshot`): sanitize + route, each authenticator's hot path with a
//! warm cache (API key, gateway JWT, static Basic), one EdDSA verification without the cache,
//! a Cedar decision (remembered, as for every request after a user's first on a route, and
//! evaluated, with the shipped example policies and a new client address each time), and
//! the identity-header rewrite. Targets (issue 11): Cedar decision ≤ 10 µs (median).
//!
//! `cargo bench --bench pipeline`

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{Criterion, criterion_group, criterion_main};
use hpcgate::authenticate::{Caller, RequestInfo, SetCookies};
use hpcgate::authorize::cedar::{Action, Facts, RouteFacts};
use hpcgate::authorize::{Origin, authorize};
use hpcgate::proxy::rewrite::{Downstream, rewrite};
use pingora::http::RequestHeader;

const PASSWORD: &str = "bench-password-1";

struct Setup {
    _dir: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
    snap: hpcgate::proxy::snapshot::Snapshot,
    api_key: String,
    jwt: String,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let hash = hpcgate::authenticate::static_users::hash_password(PASSWORD).unwrap();
    std::fs::write(
        d.join("users.toml"),
        format!("[[users]]\nname = \"alice\"\npassword_hash = \"{hash}\"\ngroups = [\"hpc-users\", \"physics\"]\n"),
    )
    .unwrap();
    let config_text = r#"
[server]
state_dir = "state"

[[listeners]]
address = "127.0.0.1:18080"

[authenticators.local]
type = "static"
users_file = "users.toml"

[authenticators.keys]
type = "api_key"

[authenticators.tokens]
type = "gateway_jwt"

[tokens]
authenticators = ["local"]

[audit]
path = "off"

[pools.prom]
backends = ["http://127.0.0.1:9090"]

[[routes]]
name = "prometheus"
path_prefix = "/prometheus"
strip_prefix = true
pool = "prom"
authenticators = ["keys", "tokens", "local"]

[[routes]]
name = "slurm"
path_prefix = "/slurm"
pool = "prom"
authenticators = ["keys"]

[[routes]]
name = "accounting"
path_prefix = "/api/v1"
pool = "prom"
authenticators = ["keys"]
"#;
    let path = d.join("hpcgate.toml");
    std::fs::write(&path, config_text).unwrap();
    let config = hpcgate::config::parse(config_text, &path).expect("the bench config is valid");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    std::fs::create_dir_all(d.join("state")).unwrap();
    let api_key = rt.block_on(async {
        let db = hpcgate::db::Db::open(&config.database).await.unwrap();
        let key = db
            .create_key(&hpcgate::db::api_keys::KeyRequest {
                owner: "alice",
                name: "bench",
                groups: &[],
                scopes: &[],
                expires_at: None,
            })
            .await
            .unwrap()
            .token;
        db.close().await;
        key
    });
    let snap = hpcgate::process::server::snapshot(&config).expect("the bench snapshot builds");
    let jwt = rt.block_on(async {
        let route = snap.router.find(None, "/prometheus/x").unwrap();
        let headers = headers(&format!("Basic {}", basic()));
        let Caller::User(id) = authenticate(route, &headers).await else {
            panic!("alice is a user")
        };
        let issuer = snap.token_issuer.as_ref().expect("tokens are issued");
        let v = issuer.issue(&id).await.unwrap();
        v["access_token"].as_str().unwrap().to_string()
    });
    Setup {
        _dir: dir,
        rt,
        snap,
        api_key,
        jwt,
    }
}

fn basic() -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("alice:{PASSWORD}"))
}

/// What Grafana sends with a query, plus the credentials.
fn headers(authorization: &str) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    h.insert("host", "gw.example.org".parse().unwrap());
    h.insert("user-agent", "Grafana/11.2.0".parse().unwrap());
    h.insert(
        "accept",
        "application/json, text/plain, */*".parse().unwrap(),
    );
    h.insert("accept-encoding", "gzip".parse().unwrap());
    h.insert("x-grafana-org-id", "1".parse().unwrap());
    h.insert("x-dashboard-uid", "ceems-job".parse().unwrap());
    if authorization.starts_with("hpcg_") {
        h.insert("x-api-key", authorization.parse().unwrap());
    } else {
        h.insert("authorization", authorization.parse().unwrap());
    }
    h
}

fn request(headers: &http::HeaderMap) -> RequestHeader {
    let mut req = RequestHeader::build(
        "GET",
        b"/prometheus/api/v1/query_range?query=rate(ceems_compute_unit_cpu_user_seconds_total%7Buuid%3D%221481508%22%7D%5B2m%5D)&start=1732430000&end=1732433600&step=15",
        None,
    )
    .unwrap();
    for (k, v) in headers {
        req.append_header(k.clone(), v.clone()).unwrap();
    }
    req
}

async fn authenticate(
    route: &hpcgate::proxy::route::RouteEntry,
    headers: &http::HeaderMap,
) -> Caller {
    let stripped = http::HeaderMap::new();
    let cookies = SetCookies::default();
    let uri: http::Uri = "/prometheus/api/v1/query".parse().unwrap();
    let info = RequestInfo {
        headers,
        client: Some(IpAddr::from([127, 0, 0, 1])),
        stripped: &stripped,
        client_cert_sha256: None,
        method: &http::Method::GET,
        uri: &uri,
        set_cookies: &cookies,
    };
    route.auth.authenticate(&info).await.expect("authenticated")
}

fn bench(c: &mut Criterion) {
    let s = setup();
    let snap = &s.snap;

    let h = headers(&format!("Bearer {}", s.jwt));
    let req = request(&h);
    c.bench_function("sanitize_and_route", |b| {
        b.iter(|| {
            snap.sanitizer.check(black_box(&req), false, None).unwrap();
            let mut r = req.clone();
            black_box(snap.sanitizer.strip(&mut r));
            black_box(snap.router.find(Some("gw.example.org"), r.uri.path()))
        })
    });

    let route = snap.router.find(None, "/prometheus/api").unwrap().clone();
    for (name, cred) in [
        ("auth_api_key_warm", s.api_key.clone()),
        ("auth_gateway_jwt_warm", format!("Bearer {}", s.jwt)),
        ("auth_static_basic_warm", format!("Basic {}", basic())),
    ] {
        let h = headers(&cred);
        // Warm the caches.
        s.rt.block_on(authenticate(&route, &h));
        c.bench_function(name, |b| {
            b.iter(|| s.rt.block_on(authenticate(&route, black_box(&h))))
        });
    }

    let keys = snap.signing_keys.clone().expect("signing keys");
    let kid = jsonwebtoken::decode_header(&s.jwt).unwrap().kid.unwrap();
    c.bench_function("gateway_jwt_verify_uncached", |b| {
        b.iter(|| {
            keys.verify(black_box(&s.jwt), &kid, "hpcgate", "hpcgate")
                .unwrap()
        })
    });

    let h = headers(&format!("Bearer {}", s.jwt));
    let caller = s.rt.block_on(authenticate(&route, &h));
    let facts = Facts {
        client: Some(IpAddr::from([127, 0, 0, 1])),
        method: "GET",
        path: "/prometheus/api/v1/query_range",
        now: 1_732_433_600,
        utc_offset: 0,
    };
    c.bench_function("cedar_decision", |b| {
        b.iter(|| {
            authorize(
                &snap.policies,
                &route,
                black_box(caller.clone()),
                &http::Method::GET,
                &facts,
                Origin::Unproven,
            )
            .map_err(|_| ())
            .unwrap()
        })
    });

    // A decision Cedar evaluates (a user's first request on a route, from an address): the
    // shipped examples read the client address and the time; sixteen client addresses.
    let examples = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    for f in ["schema.cedarschema", "default.cedar"] {
        std::fs::copy(root.join(f), examples.path().join(f)).unwrap();
    }
    for e in std::fs::read_dir(root.join("examples")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, examples.path().join(p.file_name().unwrap())).unwrap();
    }
    let policies =
        hpcgate::authorize::cedar::Policies::load(Some(examples.path()), &["hpc-admins".into()])
            .unwrap();
    let Caller::User(id) = &caller else {
        panic!("the bench caller is a user")
    };
    let rf = RouteFacts {
        name: &route.config.name,
        kind: route.config.kind,
        path_prefix: &route.config.path_prefix,
    };
    let mut n: u8 = 0;
    c.bench_function("cedar_decision_evaluated", |b| {
        b.iter(|| {
            n = (n + 1) % 16;
            let facts = Facts {
                client: Some(IpAddr::from([10, 0, 0, n])),
                ..facts
            };
            policies.decide_evaluated(id, Action::Read, &rf, black_box(&facts))
        })
    });

    let permit = authorize(
        &snap.policies,
        &route,
        caller.clone(),
        &http::Method::GET,
        &facts,
        Origin::Unproven,
    )
    .map_err(|_| ())
    .unwrap();
    let backend = route.pool.backend(0).clone();
    let down = Downstream {
        client: Some(IpAddr::from([192, 0, 2, 7])),
        tls: true,
        host: Some("gw.example.org"),
        request_id: "0123456789abcdef01234567",
    };
    c.bench_function("header_rewrite", |b| {
        b.iter(|| {
            let mut r = req.clone();
            rewrite(&mut r, &permit, &backend, &down).unwrap();
            black_box(r)
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
