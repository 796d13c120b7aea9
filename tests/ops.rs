//! Operations through the real binary: least privilege when started as root, reload on
//! SIGHUP (and `hpcgate reload`), certificate replacement, and the metrics about them.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn route_to(name: &str, prefix: &str, backend: &Recorder, read_timeout: &str) -> String {
    format!(
        "[pools.{name}]\nbackends = [\"http://{}\"]\nread_timeout = \"{read_timeout}\"\n\n\
         [[routes]]\nname = \"{name}\"\npath_prefix = \"{prefix}\"\npool = \"{name}\"\n\
         authenticators = [\"local\"]\n\n",
        backend.addr
    )
}

/// The `Name:\tvalue` lines of a /proc status file.
fn proc_status(path: &str) -> std::collections::HashMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

/// Replaces text in the config file (which stays owned by whoever owned it).
fn edit_config(gw: &Gateway, from: &str, to: &str) {
    let path = gw.config_path();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "config has no `{from}`");
    std::fs::write(&path, text.replace(from, to)).unwrap();
}

#[tokio::test]
async fn started_as_root_it_serves_a_low_port_as_nobody_without_capabilities() {
    assert!(
        nix_is_root(),
        "this test starts hpcgate as root; run the tests as root"
    );
    let up = Recorder::start(Duration::ZERO).await;
    let gw = Gateway::start(Setup {
        body: route_to("echo", "/echo", &up, "5s"),
        as_service_user: true,
        ..Default::default()
    })
    .await;
    assert!(gw.plain_port < 1024);
    let pid = gw.pid();
    // Every thread, not only the main one: capabilities are per thread.
    let tasks: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(tasks.len() > 1, "pingora's runtimes run threads");
    for task in
        std::iter::once(std::path::PathBuf::from(format!("/proc/{pid}"))).chain(tasks.into_iter())
    {
        let s = proc_status(&format!("{}/status", task.display()));
        assert_eq!(s["Uid"], "65534\t65534\t65534\t65534", "{task:?}");
        assert_eq!(s["Gid"], "65534\t65534\t65534\t65534", "{task:?}");
        assert_eq!(s["Groups"], "65534", "{task:?}");
        for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            assert_eq!(s[set], "0000000000000000", "{task:?} {set}");
        }
        assert_eq!(s["NoNewPrivs"], "1", "{task:?}");
    }
    // It still serves, on both listeners.
    let r = gw.get_as("/echo/x", "alice", ALICE_PW).await;
    assert_eq!(r.status(), 200);
    let raw = gw
        .raw(
            format!(
                "GET /-/whoami HTTP/1.1\r\nHost: t\r\nAuthorization: {}\r\nConnection: close\r\n\r\n",
                basic("bob", BOB_PW)
            )
            .as_bytes(),
        )
        .await;
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    // Admins see the process in /-/status; others do not.
    let st: serde_json::Value = gw
        .get_as("/-/status", "alice", ALICE_PW)
        .await
        .json()
        .await
        .unwrap();
    let p = &st["data"]["process"];
    assert_eq!(p["user"], "nobody", "{st}");
    assert_eq!(p["no_new_privs"], true);
    assert_eq!(p["capabilities"]["effective"], serde_json::json!([]));
    assert_eq!(p["capabilities"]["bounding"], serde_json::json!([]));
    let st: serde_json::Value = gw
        .get_as("/-/status", "bob", BOB_PW)
        .await
        .json()
        .await
        .unwrap();
    assert!(st["data"].get("process").is_none(), "{st}");
    // What it created as root was handed to nobody: state, and the audit log it writes.
    use std::os::unix::fs::MetadataExt;
    let state = std::fs::metadata(gw.dir.path().join("state")).unwrap();
    assert_eq!(state.uid(), 65534);
    let a = gw.last_audit("echo").await;
    assert_eq!(a["user"], "alice");
}

fn nix_is_root() -> bool {
    proc_status("/proc/self/status")["Uid"].starts_with("0\t")
}

#[test]
fn running_as_root_is_refused_without_allow_root() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup {
        body: "[process]\nuser = \"root\"\n".into(),
        ..Default::default()
    };
    write_config(dir.path(), &setup, free_port(), free_port(), None);
    let out = Command::new(bin())
        .args(["serve", "--config"])
        .arg(dir.path().join("hpcgate.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refuses to run as root") && err.contains("--allow-root"),
        "{err}"
    );
}

#[test]
fn an_unknown_process_user_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup {
        body: "[process]\nuser = \"no-such-user-here\"\n".into(),
        ..Default::default()
    };
    write_config(dir.path(), &setup, free_port(), free_port(), None);
    let out = Command::new(bin())
        .arg("check-config")
        .arg(dir.path().join("hpcgate.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("hpcgate.toml:process.user: no user `no-such-user-here`"),
        "{text}"
    );
}

#[tokio::test]
async fn reload_applies_a_new_route_and_users_file_and_refuses_a_broken_config() {
    let a = Recorder::start(Duration::ZERO).await;
    let b = Recorder::start(Duration::ZERO).await;
    let gw = Gateway::start(Setup {
        body: route_to("a", "/a", &a, "5s"),
        as_service_user: true,
        ..Default::default()
    })
    .await;
    assert_eq!(gw.get_as("/a/x", "alice", ALICE_PW).await.status(), 200);
    assert_eq!(gw.get_as("/b/x", "alice", ALICE_PW).await.status(), 404);
    assert_eq!(gw.get_as("/a/x", "carol", "carol-pw").await.status(), 401);

    // A new route and a new user, applied through `hpcgate reload` (the pid file).
    let text = std::fs::read_to_string(gw.config_path()).unwrap();
    std::fs::write(gw.config_path(), text + &route_to("b", "/b", &b, "5s")).unwrap();
    let users = gw.dir.path().join("users.toml");
    let mut u = std::fs::read_to_string(&users).unwrap();
    u.push_str(&format!(
        "\n[[users]]\nname = \"carol\"\npassword_hash = \"{}\"\ngroups = []\n",
        hpcgate::authenticate::static_users::hash_password("carol-pw").unwrap()
    ));
    std::fs::write(&users, u).unwrap();
    let out = Command::new(bin())
        .args(["reload", "--config"])
        .arg(gw.config_path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("sent SIGHUP"));
    gw.wait_log("config reloaded", 1).await;
    assert_eq!(gw.get_as("/b/x", "alice", ALICE_PW).await.status(), 200);
    assert_eq!(b.requests().len(), 1);
    assert_eq!(gw.get_as("/a/x", "carol", "carol-pw").await.status(), 200);

    // A broken config: `hpcgate reload` refuses to send it…
    edit_config(&gw, "pool = \"b\"", "pool = \"nope\"");
    let out = Command::new(bin())
        .args(["reload", "--config"])
        .arg(gw.config_path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing was sent"));
    // …and SIGHUP keeps the running config, logging file, key and reason.
    gw.hup();
    gw.wait_log("reload refused: the running config keeps serving", 1)
        .await;
    let log = gw.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("\"reload refused\""))
        .unwrap();
    assert!(
        line.contains("hpcgate.toml:routes[1].pool") && line.contains("nope"),
        "{line}"
    );
    assert_eq!(gw.get_as("/b/x", "alice", ALICE_PW).await.status(), 200);
    assert_eq!(gw.get_as("/a/x", "carol", "carol-pw").await.status(), 200);

    // Listeners cannot change on reload: refused as a whole.
    edit_config(&gw, "pool = \"nope\"", "pool = \"b\"");
    edit_config(
        &gw,
        &format!("127.0.0.1:{}", gw.plain_port),
        &format!("127.0.0.1:{}", free_port()),
    );
    gw.hup();
    gw.wait_log("reload refused: the running config keeps serving", 2)
        .await;
    assert!(gw.log_text().contains("listeners cannot change on reload"));

    let metrics = gw.metrics_text().await;
    assert!(
        metrics.contains("hpcgate_config_reloads_total{result=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("hpcgate_config_reloads_total{result=\"error\"} 2"));
}

#[tokio::test]
async fn a_request_in_flight_during_reload_finishes_on_the_old_config() {
    let slow = Recorder::start(Duration::from_millis(1500)).await;
    let gw = Gateway::start(Setup {
        body: route_to("slow", "/slow", &slow, "10s"),
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
    let deadline = Instant::now() + Duration::from_secs(10);
    while slow.requests().is_empty() {
        assert!(Instant::now() < deadline, "request never reached upstream");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The new config has no such route.
    edit_config(
        &gw,
        "path_prefix = \"/slow\"",
        "path_prefix = \"/elsewhere\"",
    );
    gw.hup();
    gw.wait_log("config reloaded", 1).await;
    assert_eq!(gw.get_as("/slow/y", "alice", ALICE_PW).await.status(), 404);
    assert_eq!(pending.await.unwrap().unwrap(), 200);
}

/// A client that trusts only the CA in `dir`.
fn client_trusting(dir: &std::path::Path) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(dir.join("ca.pem")).unwrap()).unwrap();
    reqwest::Client::builder()
        .add_root_certificate(ca)
        .tls_built_in_root_certs(false)
        .http1_only()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// Writes a certificate from a new CA over the listener's files; returns the new CA's dir.
fn replace_certificate(gw: &Gateway) -> tempfile::TempDir {
    let other = tempfile::tempdir().unwrap();
    hpcgate::process::tls::generate_dev_certs(other.path(), &["localhost".into()], true).unwrap();
    for f in ["server.pem", "server-key.pem"] {
        // Same inode, new content, as `cp` over it does (owner and mode stay).
        std::fs::write(
            gw.dir.path().join(f),
            std::fs::read(other.path().join(f)).unwrap(),
        )
        .unwrap();
    }
    other
}

#[tokio::test]
async fn a_replaced_certificate_is_served_after_sighup() {
    let gw = Gateway::start(Setup {
        body: "[process]\nwatch_certificates = \"0s\"\n".into(),
        ..Default::default()
    })
    .await;
    let other = replace_certificate(&gw);
    let new_ca = client_trusting(other.path());
    // Not watched: the old certificate is still served.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(new_ca.get(gw.url("/-/healthz")).send().await.is_err());
    gw.hup();
    gw.wait_log("config reloaded", 1).await;
    let r = new_ca.get(gw.url("/-/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_certificate_changed_on_disk_is_served_without_sighup() {
    let gw = Gateway::start(Setup {
        body: "[process]\nwatch_certificates = \"200ms\"\n".into(),
        as_service_user: true,
        ..Default::default()
    })
    .await;
    let old_ca = gw.client(false);
    assert_eq!(
        old_ca
            .get(gw.url("/-/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // mtime granularity: make sure the new files look newer.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let other = replace_certificate(&gw);
    gw.wait_log("certificate changed on disk: new handshakes use it", 1)
        .await;
    let r = client_trusting(other.path())
        .get(gw.url("/-/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A new connection (the old client may reuse its pooled one).
    assert!(
        gw.client(false)
            .get(gw.url("/-/healthz"))
            .send()
            .await
            .is_err()
    );
}

/// The value of the sample of `name` whose labels include every one of `labels`.
fn sample(metrics: &str, name: &str, labels: &[&str]) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Sends `n` requests with these credentials at once, each on its own connection; their
/// statuses.
async fn at_once(gw: &Gateway, n: usize, user: &str, pw: &str) -> Vec<u16> {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (c, url, auth) = (gw.client(false), gw.url("/echo/x"), basic(user, pw));
        tasks.spawn(async move {
            let r = c.get(url).header("authorization", auth).send().await;
            r.unwrap().status().as_u16()
        });
    }
    tasks.join_all().await
}

#[tokio::test]
async fn concurrent_logins_with_the_same_password_share_one_check() {
    // When a busy user's cached login expires, every request in flight misses the cache at
    // once: they must wait for one argon2 check (~20 MiB and tens of ms each), not run one
    // apiece. The soak saw 570 MiB of RSS appear at the five-minute cache expiry.
    let up = Recorder::start(Duration::ZERO).await;
    let gw = Gateway::start(Setup {
        body: route_to("echo", "/echo", &up, "5s"),
        ..Default::default()
    })
    .await;
    let statuses = at_once(&gw, 40, "alice", ALICE_PW).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let statuses = at_once(&gw, 8, "alice", "not-her-password").await;
    assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
    let m = gw.metrics_text().await;
    let checks = |result: &str| {
        let labels = ["authenticator=\"local\"", &format!("result=\"{result}\"")];
        sample(&m, "hpcgate_password_checks_total", &labels).unwrap_or(0.0)
    };
    // The 40 shared one check (the success is then cached: later ones are hits).
    assert_eq!(checks("ok"), 1.0, "{m}");
    // Failures are not cached; the 8 concurrent wrong ones still share (a straggler may
    // arrive after the first check ended).
    assert!((1.0..8.0).contains(&checks("bad_password")), "{m}");
    assert_eq!(
        sample(
            &m,
            "hpcgate_authentications_total",
            &["authenticator=\"local\"", "result=\"ok\""]
        ),
        Some(41.0),
        "{m}"
    );
}

#[tokio::test]
async fn metrics_cover_routes_upstreams_authenticators_caches_policies_limits_and_health() {
    let up = Recorder::start(Duration::ZERO).await;
    let body = route_to("echo", "/echo", &up, "5s")
        .replace(
            "read_timeout = \"5s\"\n",
            "read_timeout = \"5s\"\n[pools.echo.health_check]\npath = \"/\"\ninterval = \"100ms\"\ntimeout = \"100ms\"\n",
        )
        + "admin_paths = [\"/echo/admin\"]\nrate_limit = { requests = 3, per = \"1m\" }\n";
    let gw = Gateway::start(Setup {
        body,
        ..Default::default()
    })
    .await;
    let statuses = [
        gw.get_as("/echo/a", "alice", ALICE_PW).await.status(),
        gw.get_as("/echo/b", "alice", ALICE_PW).await.status(),
        gw.get_as("/echo/admin", "bob", BOB_PW).await.status(),
        gw.get_as("/echo/c", "bob", "wrong").await.status(),
        gw.get_as("/echo/d", "alice", ALICE_PW).await.status(),
        gw.get_as("/echo/e", "alice", ALICE_PW).await.status(),
    ];
    assert_eq!(statuses.map(|s| s.as_u16()), [200, 200, 403, 401, 200, 429]);
    // Let a health check run.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let m = gw.metrics_text().await;
    let has = |name: &str, labels: &[&str]| {
        sample(&m, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?} in\n{m}"))
    };
    assert_eq!(
        has(
            "hpcgate_requests_total",
            &["route=\"echo\"", "status=\"200\""]
        ),
        3.0
    );
    assert!(
        has(
            "hpcgate_request_duration_seconds_count",
            &["route=\"echo\""]
        ) >= 6.0
    );
    // Per authenticator, with latency.
    assert!(
        has(
            "hpcgate_authentications_total",
            &["authenticator=\"local\"", "result=\"ok\""]
        ) >= 4.0
    );
    assert_eq!(
        has(
            "hpcgate_authentications_total",
            &["authenticator=\"local\"", "result=\"rejected\""]
        ),
        1.0
    );
    assert!(
        has(
            "hpcgate_authentication_duration_seconds_count",
            &["authenticator=\"local\""]
        ) >= 5.0
    );
    // alice's password was checked once, then found in the cache.
    assert!(
        has(
            "hpcgate_auth_cache_lookups_total",
            &["cache=\"password\"", "result=\"hit\""]
        ) >= 3.0
    );
    assert!(
        has(
            "hpcgate_auth_cache_lookups_total",
            &["cache=\"password\"", "result=\"miss\""]
        ) >= 2.0
    );
    // Policy: bob on an admin path is denied.
    assert_eq!(
        has(
            "hpcgate_policy_decisions_total",
            &["route=\"echo\"", "decision=\"deny\""]
        ),
        1.0
    );
    assert!(
        has(
            "hpcgate_policy_decisions_total",
            &["route=\"echo\"", "decision=\"allow\""]
        ) >= 3.0
    );
    assert_eq!(has("hpcgate_rate_limited_total", &["route=\"echo\""]), 1.0);
    let backend = format!("backend=\"http://{}\"", up.addr);
    assert_eq!(
        has(
            "hpcgate_upstream_requests_total",
            &["pool=\"echo\"", &backend, "class=\"2xx\""]
        ),
        3.0
    );
    assert_eq!(
        has(
            "hpcgate_upstream_request_duration_seconds_count",
            &["pool=\"echo\""]
        ),
        3.0
    );
    assert_eq!(has("hpcgate_backend_up", &["pool=\"echo\"", &backend]), 1.0);
    // Bounded labels: never a user or a path.
    for leak in ["alice", "bob", "/echo/"] {
        assert!(!m.contains(leak), "metrics mention {leak}");
    }
}

#[tokio::test]
async fn log_level_comes_from_the_config_and_rust_log_overrides_it() {
    let dir = tempfile::tempdir().unwrap();
    let (tls, plain) = (free_port(), free_port());
    write_config(dir.path(), &Setup::default(), tls, plain, None);
    let cfg = dir.path().join("hpcgate.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, text.replace("level = \"info\"", "level = \"warn\"")).unwrap();
    let run = |rust_log: Option<&str>| {
        let mut c = Command::new(bin());
        c.args(["serve", "--allow-root", "--config"]).arg(&cfg);
        c.env_remove("RUST_LOG");
        if let Some(v) = rust_log {
            c.env("RUST_LOG", v);
        }
        let log = dir.path().join("run.log");
        let mut child = c
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        let _ = child.kill();
        let _ = child.wait();
        std::fs::read_to_string(&log).unwrap()
    };
    let quiet = run(None);
    assert!(
        !quiet.contains("\"level\":\"INFO\""),
        "level = warn still logs info:\n{quiet}"
    );
    // --allow-root is worth a warning, as JSON.
    let warn = quiet.lines().find(|l| l.contains("--allow-root")).unwrap();
    let v: serde_json::Value = serde_json::from_str(warn).unwrap();
    assert_eq!(v["level"], "WARN");
    let loud = run(Some("info"));
    assert!(loud.contains("\"level\":\"INFO\""), "{loud}");
}

#[tokio::test]
async fn check_config_online_reports_each_target() {
    let up = Recorder::start(Duration::ZERO).await;
    let dead = free_port();
    // A minimal IdP: just its discovery document.
    let idp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", idp.local_addr().unwrap());
    let doc = serde_json::json!({"issuer": issuer, "jwks_uri": format!("{issuer}/jwks")});
    let app = axum::Router::new().route(
        "/.well-known/openid-configuration",
        axum::routing::get(move || async move { axum::Json(doc) }),
    );
    tokio::spawn(async move { axum::serve(idp, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let body = format!(
        "[pools.up]\nbackends = [\"http://{}\"]\n[pools.down]\nbackends = [\"http://127.0.0.1:{dead}\"]\n\
         [authenticators.directory]\ntype = \"ldap\"\nurl = \"ldap://127.0.0.1:{dead}\"\n\
         bind_dn = \"cn=gw,dc=example,dc=org\"\nbind_password = \"x\"\nuser_base = \"ou=people,dc=example,dc=org\"\nuser_filter = \"(uid={{user}})\"\n\
         [authenticators.idp]\ntype = \"oidc_bearer\"\nissuer = \"{issuer}\"\n\
         audiences = [\"urn:hpcgate\"]\ntimeout = \"1s\"\n\
         [[routes]]\nname = \"up\"\npath_prefix = \"/up\"\npool = \"up\"\n\
         authenticators = [\"local\", \"directory\", \"idp\"]\n\
         [[routes]]\nname = \"down\"\npath_prefix = \"/down\"\npool = \"down\"\n\
         authenticators = [\"local\"]\n",
        up.addr
    );
    let setup = Setup {
        body,
        ..Default::default()
    };
    write_config(dir.path(), &setup, free_port(), free_port(), None);
    let cfg = dir.path().join("hpcgate.toml");
    let out = tokio::process::Command::new(bin())
        .args(["check-config", "--online", "--timeout", "1s"])
        .arg(&cfg)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    let f = cfg.display().to_string();
    let line = |key: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("{f}:{key}: ")))
            .unwrap_or_else(|| panic!("no line for {key}:\n{stdout}"))
            .to_string()
    };
    assert!(
        line("pools.up.backends[0]").contains(": reachable: http://127.0.0.1:"),
        "{stdout}"
    );
    assert!(line("pools.down.backends[0]").contains(": unreachable: "));
    assert!(line("authenticators.directory").contains(": unreachable: ldap://127.0.0.1:"));
    assert!(
        line("authenticators.idp").contains(": reachable: http://127.0.0.1:"),
        "{stdout}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("2 of 4 target(s) unreachable"));
}

/// Requests from `workers` clients in a loop until `stop`; returns (ok, failed, examples).
/// `fresh`: a new connection per request (no keep-alive).
fn load(
    gw: &Gateway,
    workers: usize,
    fresh: bool,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<(usize, usize, Vec<String>)> {
    let url = gw.url("/echo/load");
    let ca = reqwest::Certificate::from_pem(&std::fs::read(gw.dir.path().join("ca.pem")).unwrap())
        .unwrap();
    let clients: Vec<_> = (0..workers)
        .map(|_| {
            let b = reqwest::Client::builder()
                .add_root_certificate(ca.clone())
                .tls_built_in_root_certs(false)
                .http1_only()
                .timeout(Duration::from_secs(10));
            let b = if fresh {
                b.pool_max_idle_per_host(0)
            } else {
                b
            };
            b.build().unwrap()
        })
        .collect();
    tokio::spawn(async move {
        let mut tasks = tokio::task::JoinSet::new();
        for c in clients {
            let (url, stop) = (url.clone(), stop.clone());
            tasks.spawn(async move {
                let (mut ok, mut failed, mut examples) = (0, 0, Vec::new());
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let r = c
                        .get(&url)
                        .header("authorization", basic("alice", ALICE_PW))
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status() == 200 => ok += 1,
                        Ok(r) => {
                            failed += 1;
                            examples.push(format!("status {}", r.status()));
                        }
                        Err(e) => {
                            failed += 1;
                            examples.push(format!("{e:?}"));
                        }
                    }
                }
                (ok, failed, examples)
            });
        }
        let mut total = (0, 0, Vec::new());
        while let Some(Ok((ok, failed, ex))) = tasks.join_next().await {
            total.0 += ok;
            total.1 += failed;
            total.2.extend(ex.into_iter().take(3));
        }
        total
    })
}

#[tokio::test]
async fn five_reloads_under_load_one_broken_fail_no_request() {
    let up = Recorder::start(Duration::ZERO).await;
    let gw = Gateway::start(Setup {
        body: route_to("echo", "/echo", &up, "5s"),
        as_service_user: true,
        ..Default::default()
    })
    .await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let running = load(&gw, 8, false, stop.clone());
    let good = std::fs::read_to_string(gw.config_path()).unwrap();
    let mut applied = 0;
    for i in 1..=5 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        if i == 3 {
            std::fs::write(
                gw.config_path(),
                good.replace("pool = \"echo\"", "pool = \"gone\""),
            )
            .unwrap();
            gw.hup();
            gw.wait_log("reload refused: the running config keeps serving", 1)
                .await;
        } else {
            // Each good reload adds a route.
            let mut next = good.clone();
            for j in (1..=i).filter(|j| *j != 3) {
                next.push_str(&format!(
                    "\n[[routes]]\nname = \"r{j}\"\npath_prefix = \"/r{j}\"\npool = \"echo\"\n\
                     authenticators = [\"local\"]\n"
                ));
            }
            std::fs::write(gw.config_path(), next).unwrap();
            gw.hup();
            applied += 1;
            gw.wait_log("config reloaded", applied).await;
            assert_eq!(
                gw.get_as(&format!("/r{i}/x"), "alice", ALICE_PW)
                    .await
                    .status(),
                200
            );
        }
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed, examples) = running.await.unwrap();
    assert_eq!(failed, 0, "failed requests under reload: {examples:?}");
    assert!(ok > 50, "only {ok} requests ran");
    // The broken one was not applied: route r3 never existed.
    assert_eq!(gw.get_as("/r3/x", "alice", ALICE_PW).await.status(), 404);
    assert!(gw.log_text().contains("hpcgate.toml:routes[0].pool"));
}

async fn graceful_upgrade_under_load(as_service_user: bool) {
    let up = Recorder::start(Duration::ZERO).await;
    let gw = Gateway::start(Setup {
        body: route_to("echo", "/echo", &up, "5s"),
        as_service_user,
        ..Default::default()
    })
    .await;
    let old_pid = gw.pid();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // A new connection per request: what is shown is that the listening sockets pass to the
    // new process without refusing connections. (Keep-alive connections idle at the hand-over
    // are closed by the old process; a request sent on one at that instant fails, as with any
    // proxy's upgrade, and clients reconnect.)
    let running = load(&gw, 4, true, stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The new binary waits on the upgrade socket; the old one hands over on SIGQUIT.
    let log = gw.dir.path().join("new.log");
    let mut cmd = std::process::Command::new(bin());
    cmd.args(["serve", "--upgrade", "--config"])
        .arg(gw.config_path());
    if !as_service_user {
        cmd.arg("--allow-root");
    }
    let new = cmd
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let new = Kill(new);
    tokio::time::sleep(Duration::from_millis(300)).await;
    Command::new("kill")
        .args(["-QUIT", &old_pid.to_string()])
        .status()
        .unwrap();
    // pingora: ~5 s of accepting beside the new process, then the grace period (10 s in
    // these tests) for whatever the old one still holds.
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::path::Path::new(&format!("/proc/{old_pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{old_pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
    {
        assert!(
            Instant::now() < deadline,
            "the old gateway did not exit; new one's log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed, examples) = running.await.unwrap();
    // pingora drops connections whose request it has not read yet when the old process
    // stops accepting (pingora-proxy `handle_new_request`: "service shutting down, dropping
    // the connection"); under this load a few fresh connections can fall in that instant.
    // They end before any response (clients retry such requests), and are rare.
    assert!(
        failed * 50 <= ok,
        "{failed} of {} requests failed during the upgrade: {examples:?}\nnew log:\n{}",
        ok + failed,
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    for e in &examples {
        assert!(
            e.contains("UnexpectedEof") || e.contains("ConnectionReset"),
            "a failure other than a connection closed before the response: {e}"
        );
    }
    assert!(ok > 20);
    // The new process serves, and wrote its pid for `hpcgate reload`.
    assert_eq!(
        gw.get_as("/echo/after", "alice", ALICE_PW).await.status(),
        200
    );
    let pid: u32 = std::fs::read_to_string(gw.dir.path().join("state/hpcgate.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(pid, new.0.id());
}

#[tokio::test]
async fn graceful_upgrade_hands_listeners_to_a_new_process() {
    graceful_upgrade_under_load(false).await;
}

#[tokio::test]
async fn graceful_upgrade_works_for_a_gateway_that_dropped_to_nobody() {
    graceful_upgrade_under_load(true).await;
}

#[tokio::test]
async fn a_key_rotated_by_root_is_usable_by_a_gateway_running_as_nobody() {
    let gw = Gateway::start(Setup {
        body: "[tokens]\nauthenticators = [\"local\"]\n".into(),
        as_service_user: true,
        ..Default::default()
    })
    .await;
    let jwks = || async {
        let v: serde_json::Value = gw
            .client(false)
            .get(gw.url("/.well-known/jwks.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["keys"].as_array().unwrap().len()
    };
    assert_eq!(jwks().await, 1);
    let out = Command::new(bin())
        .args(["rotate-signing-key", "--config"])
        .arg(gw.config_path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    use std::os::unix::fs::MetadataExt;
    for e in std::fs::read_dir(gw.dir.path().join("state/signing-keys")).unwrap() {
        let m = e.unwrap().metadata().unwrap();
        assert_eq!(m.uid(), 65534, "a key file is not the service user's");
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while jwks().await < 2 {
        assert!(Instant::now() < deadline, "the new key was never published");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn a_file_only_root_can_read_stops_the_start_after_the_switch() {
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        &Setup::default(),
        free_port(),
        free_port(),
        None,
    );
    give_to_nobody(dir.path());
    // The users file stays root's: nobody cannot read it (and neither could a reload).
    let users = dir.path().join("users.toml");
    std::os::unix::fs::chown(&users, Some(0), Some(0)).unwrap();
    std::fs::set_permissions(&users, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let out = Command::new(bin())
        .args(["serve", "--config"])
        .arg(dir.path().join("hpcgate.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("after switching to user nobody")
            && err.contains("authenticators.local.users_file")
            && err.contains("Permission denied"),
        "{err}"
    );
}

#[tokio::test]
async fn the_sqlite_database_created_as_root_serves_api_keys_as_nobody() {
    let up = Recorder::start(Duration::ZERO).await;
    let body = format!(
        "[authenticators.keys]\ntype = \"api_key\"\n\n{}authenticators = [\"keys\"]\n",
        route_to("echo", "/echo", &up, "5s").replace("authenticators = [\"local\"]\n", "")
    );
    let gw = Gateway::start(Setup {
        body,
        as_service_user: true,
        ..Default::default()
    })
    .await;
    // Created as root, the database went to nobody with the state directory.
    use std::os::unix::fs::MetadataExt;
    let db = std::fs::read_dir(gw.dir.path().join("state"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "db"))
        .expect("a SQLite file in the state directory");
    assert_eq!(std::fs::metadata(&db).unwrap().uid(), 65534);
    // The CLI, run as root, writes as the state directory's owner.
    let out = Command::new(bin())
        .args([
            "apikey", "create", "--user", "alice", "--name", "t", "--json",
        ])
        .arg("--config")
        .arg(gw.config_path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let key: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let r = gw
        .client(false)
        .get(gw.url("/echo/x"))
        .header("x-api-key", key["key"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().one("x-forwarded-user"), Some("alice"));
}

#[test]
fn a_state_dir_holding_the_config_is_refused_when_it_would_be_handed_over() {
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        &Setup::default(),
        free_port(),
        free_port(),
        None,
    );
    let cfg = dir.path().join("hpcgate.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replace("state_dir = \"state\"", "state_dir = \".\""),
    )
    .unwrap();
    let out = Command::new(bin())
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("holds the config file"), "{err}");
    // Nothing was given away.
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&cfg).unwrap().uid(), 0);
}

#[tokio::test]
async fn health_checks_follow_the_pools_of_a_reloaded_config() {
    let a = Recorder::start(Duration::ZERO).await;
    let b = Recorder::start(Duration::ZERO).await;
    let checked = |name: &str, up: &Recorder| {
        route_to(name, &format!("/{name}"), up, "5s").replace(
            "read_timeout = \"5s\"\n",
            &format!(
                "read_timeout = \"5s\"\n[pools.{name}.health_check]\npath = \"/health\"\n\
                 interval = \"100ms\"\ntimeout = \"100ms\"\n"
            ),
        )
    };
    let gw = Gateway::start(Setup {
        body: checked("a", &a),
        ..Default::default()
    })
    .await;
    let text = std::fs::read_to_string(gw.config_path()).unwrap();
    std::fs::write(gw.config_path(), text + &checked("b", &b)).unwrap();
    gw.hup();
    gw.wait_log("config reloaded", 1).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !b.requests().iter().any(|r| r.uri == "/health") {
        assert!(Instant::now() < deadline, "the new pool is never checked");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let m = gw.metrics_text().await;
    let backend = format!("backend=\"http://{}\"", b.addr);
    assert_eq!(
        sample(&m, "hpcgate_backend_up", &["pool=\"b\"", &backend]),
        Some(1.0),
        "{m}"
    );
    // The old pool is still checked too.
    let before = a.requests().len();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(a.requests().len() > before);
}

/// `/-/status` tells where the backends are and how they are checked: for admins
/// (`admin_groups`) only. Others learn which pools can serve, and nothing to aim at.
#[tokio::test]
async fn status_shows_backend_addresses_and_checks_to_admins_only() {
    let up = Recorder::start(Duration::ZERO).await;
    let dead = free_port();
    let body = route_to("echo", "/echo", &up, "5s").replace(
        "read_timeout = \"5s\"\n",
        "read_timeout = \"5s\"\n[pools.echo.health_check]\npath = \"/secret-health\"\n\
         interval = \"100ms\"\ntimeout = \"100ms\"\n",
    ) + &route_to("gone", "/gone", &up, "5s")
        .replace(
            &format!("http://{}", up.addr),
            &format!("http://127.0.0.1:{dead}"),
        )
        .replace(
            "read_timeout = \"5s\"\n",
            "read_timeout = \"5s\"\n[pools.gone.health_check]\npath = \"/h\"\n\
         interval = \"100ms\"\ntimeout = \"100ms\"\n",
        );
    let gw = Gateway::start(Setup {
        body,
        ..Default::default()
    })
    .await;
    let status = |user: &'static str, pw: &'static str| {
        let gw = &gw;
        async move {
            let r = gw.get_as("/-/status", user, pw).await;
            assert_eq!(r.status(), 200);
            r.json::<serde_json::Value>().await.unwrap()
        }
    };
    // Both pools checked at least once.
    let deadline = Instant::now() + Duration::from_secs(5);
    let admin = loop {
        let v = status("alice", ALICE_PW).await;
        let states: Vec<&serde_json::Value> = v["data"]["pools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| &p["backends"][0]["state"])
            .collect();
        if states.iter().all(|s| *s != "unknown") {
            break v;
        }
        assert!(Instant::now() < deadline, "never checked: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let text = admin.to_string();
    assert!(text.contains(&up.addr.to_string()), "{text}");
    assert!(text.contains("/secret-health"), "{text}");
    assert!(admin["data"].get("process").is_some());

    let user = status("bob", BOB_PW).await;
    assert_eq!(
        user,
        serde_json::json!({"status": "success", "data": {"pools": [
            {"name": "echo", "state": "up"},
            {"name": "gone", "state": "down"},
        ]}}),
    );
}
