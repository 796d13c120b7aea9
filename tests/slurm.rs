//! The slurmrestd front door against a real one-node Slurm 22.05 cluster
//! (tests/servers/slurm.sh): users authenticated by the gateway submit, list and cancel jobs
//! through it, Slurm decides whose jobs they are, and nothing unauthenticated reaches
//! slurmrestd (counted in slurmrestd's own log, which has a line per request it receives);
//! the three token modes; health checks with Slurm's `ping` and `/-/status` while slurmrestd
//! is killed and restarted.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const V: &str = "v0.0.38";

/// A gateway in front of the cluster: route `/hpcgate` (the cluster's name, stripped) with
/// the given `[routes.slurm]` lines.
fn body(slurm: &RealServer, route_slurm: &str) -> String {
    body_with_pool(slurm, route_slurm, &[], "")
}

/// `body` with more backends in the pool and more lines in its table.
fn body_with_pool(
    slurm: &RealServer,
    route_slurm: &str,
    more_backends: &[&str],
    pool_extra: &str,
) -> String {
    let mut backends = vec![slurm.get("SLURMRESTD_URL")];
    backends.extend_from_slice(more_backends);
    format!(
        "[pools.slurm]\nbackends = {backends:?}\n{pool_extra}\n\
         [[routes]]\nname = \"hpcgate\"\npath_prefix = \"/hpcgate\"\nstrip_prefix = true\n\
         pool = \"slurm\"\nkind = \"slurmrestd\"\nauthenticators = [\"local\"]\n\n\
         [routes.slurm]\n{route_slurm}\n"
    )
}

/// A cluster of its own. Starts are one at a time: six clusters (MariaDB, slurmdbd,
/// slurmctld…) starting at once on two cores made mariadb-install-db fail.
fn start_slurm() -> RealServer {
    static STARTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = STARTING.lock().unwrap_or_else(|e| e.into_inner());
    RealServer::start("slurm")
}

/// A Slurm command with this cluster's config (never without: see SERVERS.md).
fn slurm_cmd(slurm: &RealServer, args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .env("SLURM_CONF", slurm.get("SLURM_CONF"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Polls a Slurm command until its output satisfies `ok`.
fn wait_for(slurm: &RealServer, args: &[&str], ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = slurm_cmd(slurm, args);
        if ok(&out) {
            return out;
        }
        assert!(Instant::now() < deadline, "{args:?} still says {out:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn restd_log(slurm: &RealServer) -> String {
    std::fs::read_to_string(format!("{}/slurmrestd.log", slurm.get("SLURM_LOG_DIR"))).unwrap()
}

fn job_body(slurm: &RealServer, name: &str, script: &str) -> serde_json::Value {
    serde_json::json!({
        "job": {
            "name": name,
            "current_working_directory": slurm.get("SLURM_WORK_DIR"),
            "environment": {"PATH": "/usr/bin:/bin"},
            "standard_output": format!("{}/{name}-%j.out", slurm.get("SLURM_WORK_DIR")),
        },
        "script": format!("#!/bin/bash\n{script}\n"),
    })
}

async fn submit(gw: &Gateway, prefix: &str, user: &str, pw: &str, body: &serde_json::Value) -> u64 {
    let r = gw
        .client(false)
        .post(gw.url(&format!("{prefix}/slurm/{V}/job/submit")))
        .header("authorization", basic(user, pw))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{v}");
    v["job_id"]
        .as_u64()
        .unwrap_or_else(|| panic!("no job_id: {v}"))
}

/// An HS256 token over Slurm's key, as slurm-jwt.py makes it: for asking slurmrestd directly.
fn direct_token(slurm: &RealServer, user: &str) -> String {
    let key = std::fs::read(slurm.get("SLURM_JWT_KEY")).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({"sun": user, "iat": now, "exp": now + 300}),
        &jsonwebtoken::EncodingKey::from_secret(&key),
    )
    .unwrap()
}

#[tokio::test]
async fn mint_alice_submits_bob_cannot_cancel_and_slurms_answer_reaches_him_unchanged() {
    let slurm = start_slurm();
    let gw = Gateway::start(Setup {
        body: body(
            &slurm,
            &format!(
                "jwt_key_file = \"{}\"\ntoken_lifetime = \"5m\"",
                slurm.get("SLURM_JWT_KEY")
            ),
        ),
        ..Default::default()
    })
    .await;
    let c = gw.client(false);

    // alice submits; Slurm runs it as alice.
    let id = submit(
        &gw,
        "/hpcgate",
        "alice",
        ALICE_PW,
        &job_body(&slurm, "long", "sleep 60"),
    )
    .await;
    let sid = id.to_string();
    assert_eq!(
        slurm_cmd(&slurm, &["squeue", "-h", "-j", &sid, "-o", "%u"]),
        "alice"
    );

    // bob lists jobs: Slurm (PrivateData=jobs) shows him none of alice's.
    let r = c
        .get(gw.url(&format!("/hpcgate/slurm/{V}/jobs")))
        .header("authorization", basic("bob", BOB_PW))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    let ids: Vec<u64> = v["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|j| j["job_id"].as_u64())
        .collect();
    assert!(!ids.contains(&id), "bob sees alice's job: {v}");
    // alice sees hers.
    let v: serde_json::Value = c
        .get(gw.url(&format!("/hpcgate/slurm/{V}/job/{id}")))
        .header("authorization", basic("alice", ALICE_PW))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["jobs"][0]["user_name"], "alice", "{v}");

    // bob cancels alice's job: Slurm refuses (HTTP 500 + errors[]), and bob gets exactly
    // what slurmrestd says to bob directly.
    let r = c
        .delete(gw.url(&format!("/hpcgate/slurm/{V}/job/{id}")))
        .header("authorization", basic("bob", BOB_PW))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let through = r.text().await.unwrap();
    let direct = reqwest::Client::new()
        .delete(format!(
            "{}/slurm/{V}/job/{id}",
            slurm.get("SLURMRESTD_URL")
        ))
        .header("x-slurm-user-name", "bob")
        .header("x-slurm-user-token", direct_token(&slurm, "bob"))
        .send()
        .await
        .unwrap();
    assert_eq!(status, direct.status().as_u16());
    assert_eq!(status, 500, "{through}");
    assert_eq!(through, direct.text().await.unwrap());
    let v: serde_json::Value = serde_json::from_str(&through).unwrap();
    assert!(
        v["errors"][0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("denied")),
        "{v}"
    );
    assert_eq!(
        slurm_cmd(&slurm, &["squeue", "-h", "-j", &sid, "-o", "%u"]),
        "alice"
    );
    // ...and the gateway logged and counted it.
    assert_eq!(
        gw.metric("hpcgate_slurm_errors_total{route=\"hpcgate\",status=\"500\"}")
            .await,
        1.0
    );
    assert!(gw.log_text().contains("slurmrestd answered with an error"));

    // alice cancels her own job; accounting records it as hers.
    let r = c
        .delete(gw.url(&format!("/hpcgate/slurm/{V}/job/{id}")))
        .header("authorization", basic("alice", ALICE_PW))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    wait_for(
        &slurm,
        &["sacct", "-n", "-X", "-P", "-j", &sid, "-o", "User,State"],
        |o| o.starts_with("alice|CANCELLED"),
    );

    // A short job runs to completion, and slurmdbd's view through the gateway shows it as
    // alice's.
    let id2 = submit(
        &gw,
        "/hpcgate",
        "alice",
        ALICE_PW,
        &job_body(&slurm, "short", "id -un"),
    )
    .await;
    let sid2 = id2.to_string();
    wait_for(
        &slurm,
        &["sacct", "-n", "-X", "-P", "-j", &sid2, "-o", "User,State"],
        |o| o == "alice|COMPLETED",
    );
    // (slurmdbd's REST view lags sacct by a second or two.)
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let v: serde_json::Value = c
            .get(gw.url(&format!("/hpcgate/slurmdb/{V}/jobs?start_time=now-1hours")))
            .header("authorization", basic("alice", ALICE_PW))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let job = v["jobs"]
            .as_array()
            .and_then(|jobs| jobs.iter().find(|j| j["job_id"].as_u64() == Some(id2)));
        if let Some(job) = job {
            assert_eq!(job["user"], "alice");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "job {id2} not in slurmdb jobs: {v}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // One token per user, reused for every request until shortly before it expires.
    assert_eq!(
        gw.metric("hpcgate_slurm_tokens_minted_total{route=\"hpcgate\"}")
            .await,
        2.0
    );
    // Tokens and the key never reach the log.
    let log = gw.log_text();
    assert!(!log.contains("eyJ"), "a token in the log");
    assert!(!log.to_lowercase().contains("x-slurm-user-token"));
}

#[tokio::test]
async fn unauthenticated_and_spoofed_requests_never_reach_slurmrestd() {
    let slurm = start_slurm();
    let mut setup = Setup {
        body: body(
            &slurm,
            &format!(
                "jwt_key_file = \"{}\"\nuser_map = {{ \"hpc-bob\" = \"bob\" }}",
                slurm.get("SLURM_JWT_KEY")
            ),
        ),
        ..Default::default()
    };
    setup.extra_users = vec![
        ("hpc-bob".into(), vec!["hpc-users".into()]),
        ("carol@example.org".into(), vec!["hpc-users".into()]),
        ("root".into(), vec!["hpc-users".into()]),
    ];
    let gw = Gateway::start(setup).await;
    let c = gw.client(false);
    let ping = gw.url(&format!("/hpcgate/slurm/{V}/ping"));
    let before = restd_log(&slurm);

    // No credentials, or wrong ones, with Slurm headers of our own: 401, and slurmrestd
    // never hears of it.
    let forged = direct_token(&slurm, "root");
    for auth in [
        None,
        Some(basic("bob", "wrong")),
        Some(format!("Bearer {forged}")),
    ] {
        let mut req = c
            .get(&ping)
            .header("X-SLURM-USER-NAME", "root")
            .header("x_slurm_user_token", forged.as_str());
        if let Some(a) = &auth {
            req = req.header("authorization", a);
        }
        expect_error(req.send().await.unwrap(), 401, "unauthorized").await;
    }
    // A non-admin's reconfigure: 403 from the gateway's policy.
    for path in [
        format!("/hpcgate/slurm/{V}/reconfigure"),
        format!("/hpcgate/slurm/{V}/reconfigur%65"),
    ] {
        let r = c
            .get(gw.url(&path))
            .header("authorization", basic("bob", BOB_PW))
            .send()
            .await
            .unwrap();
        expect_error(r, 403, "forbidden").await;
    }
    // A name Slurm cannot take: 403 with a reason.
    let r = c
        .get(&ping)
        .header(
            "authorization",
            basic("carol@example.org", "carol@example.org-pw"),
        )
        .send()
        .await
        .unwrap();
    expect_error(r, 403, "forbidden").await;
    // The audit line is written after the response: wait for it.
    let mut rec = None;
    for _ in 0..40 {
        rec = gw
            .audit()
            .into_iter()
            .rfind(|r| r["user"] == "carol@example.org");
        if rec.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let rec = rec.expect("an audit line for carol");
    assert_eq!(rec["decision"], "deny");
    assert!(rec["reason"].as_str().unwrap().contains("POSIX"), "{rec}");
    // A gateway user named root is never root to Slurm (denied_users).
    let r = c
        .get(&ping)
        .header("authorization", basic("root", "root-pw"))
        .send()
        .await
        .unwrap();
    expect_error(r, 403, "forbidden").await;
    assert_eq!(
        restd_log(&slurm),
        before,
        "slurmrestd saw a refused request"
    );

    // bob, authenticated, spoofing root: the spoof is stripped and Slurm hears "bob".
    let r = c
        .get(&ping)
        .header("authorization", basic("bob", BOB_PW))
        .header("X-SLURM-USER-NAME", "root")
        .header("X-SLURM-USER-TOKEN", forged.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    // A mapped user: hpc-bob is bob to Slurm.
    let r = c
        .get(&ping)
        .header("authorization", basic("hpc-bob", "hpc-bob-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let log = restd_log(&slurm);
    let new = &log[before.len()..];
    assert_eq!(new.matches("attempting user_name bob ").count(), 2, "{new}");
    assert!(!new.contains("user_name root"), "{new}");
    assert!(!new.contains("user_name hpc-bob"), "{new}");
}

#[tokio::test]
async fn impersonate_acts_for_the_user_with_the_slurm_users_token_and_passthrough_wants_a_bearer() {
    let slurm = start_slurm();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("slurm-token");
    // scontrol's own output (SLURM_JWT=…) is accepted as the file's content.
    let token = slurm_cmd(
        &slurm,
        &["scontrol", "token", "username=root", "lifespan=600"],
    );
    assert!(token.starts_with("SLURM_JWT="));
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(&token_file)
            .unwrap();
        writeln!(f, "{token}").unwrap();
    }
    let mut body = body(
        &slurm,
        &format!(
            "token_mode = \"impersonate\"\ntoken_file = \"{}\"",
            token_file.display()
        ),
    );
    body.push_str(
        "\n[[routes]]\nname = \"idp\"\npath_prefix = \"/idp\"\nstrip_prefix = true\n\
         pool = \"slurm\"\nkind = \"slurmrestd\"\nauthenticators = [\"local\"]\n\
         [routes.slurm]\ntoken_mode = \"passthrough\"\n",
    );
    let gw = Gateway::start(Setup {
        body,
        ..Default::default()
    })
    .await;

    let id = submit(
        &gw,
        "/hpcgate",
        "alice",
        ALICE_PW,
        &job_body(&slurm, "imp", "sleep 30"),
    )
    .await;
    assert_eq!(
        slurm_cmd(&slurm, &["squeue", "-h", "-j", &id.to_string(), "-o", "%u"]),
        "alice"
    );
    // bob acts as bob, not as the SlurmUser: he cannot cancel alice's job.
    let r = gw
        .client(false)
        .delete(gw.url(&format!("/hpcgate/slurm/{V}/job/{id}")))
        .header("authorization", basic("bob", BOB_PW))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    assert_eq!(
        slurm_cmd(&slurm, &["squeue", "-h", "-j", &id.to_string(), "-o", "%u"]),
        "alice"
    );

    // Passthrough forwards an identity provider's bearer token; a Basic caller has none.
    let r = gw
        .client(false)
        .get(gw.url(&format!("/idp/slurm/{V}/ping")))
        .header("authorization", basic("bob", BOB_PW))
        .send()
        .await
        .unwrap();
    expect_error(r, 403, "forbidden").await;
}

#[test]
fn a_slurm_key_that_others_can_read_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("jwt_hs256.key");
    std::fs::write(&key, [7u8; 32]).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let cfg = dir.path().join("hpcgate.toml");
    std::fs::write(
        &cfg,
        "[[listeners]]\naddress = \"127.0.0.1:8080\"\n\
         [authenticators.local]\ntype = \"api_key\"\n\
         [pools.slurm]\nbackends = [\"http://127.0.0.1:6820\"]\n\
         [[routes]]\nname = \"slurm\"\npath_prefix = \"/slurm\"\npool = \"slurm\"\n\
         kind = \"slurmrestd\"\nauthenticators = [\"local\"]\n\
         [routes.slurm]\njwt_key_file = \"jwt_hs256.key\"\n",
    )
    .unwrap();
    for cmd in ["check-config", "serve"] {
        let mut c = Command::new(bin());
        c.arg(cmd);
        if cmd == "serve" {
            c.arg("--config");
        }
        let out = c.arg(&cfg).output().unwrap();
        assert!(!out.status.success(), "{cmd} accepted a readable key");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains("routes[0].slurm.jwt_key_file") && text.contains("mode 0640"),
            "{cmd}: {text}"
        );
    }
    // 0600 is accepted.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = Command::new(bin())
        .arg("check-config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// The pool's backends in `/-/status`, as an admin sees them (others see no addresses,
/// checks or errors).
async fn status_of_all(gw: &Gateway) -> Vec<serde_json::Value> {
    let r = gw.get_as("/-/status", "alice", ALICE_PW).await;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    v["data"]["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "slurm")
        .unwrap()["backends"]
        .as_array()
        .unwrap()
        .clone()
}

/// The first backend (the real slurmrestd) in `/-/status`.
async fn status_of(gw: &Gateway) -> serde_json::Value {
    status_of_all(gw).await[0].clone()
}

async fn wait_state(gw: &Gateway, state: &str, within: Duration) -> serde_json::Value {
    let deadline = Instant::now() + within;
    loop {
        let b = status_of(gw).await;
        if b["state"] == state {
            return b;
        }
        assert!(
            Instant::now() < deadline,
            "not {state} within {within:?}: {b}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_killed_slurmrestd_is_down_within_one_check_gets_503_and_comes_back() {
    let slurm = start_slurm();
    // An HA pair whose second member never came up.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let gw = Gateway::start(Setup {
        body: body_with_pool(
            &slurm,
            &format!("jwt_key_file = \"{}\"", slurm.get("SLURM_JWT_KEY")),
            &[dead.as_str()],
            &format!(
                "[pools.slurm.health_check]\npath = \"/slurm/{V}/ping\"\ninterval = \"1s\"\n\
                 timeout = \"500ms\"\n"
            ),
        ),
        ..Default::default()
    })
    .await;
    let ping = gw.url(&format!("/hpcgate/slurm/{V}/ping"));
    let get_ping = || {
        gw.client(false)
            .get(&ping)
            .header("authorization", basic("bob", BOB_PW))
            .send()
    };

    // Up, with the controller's own ping answer.
    let b = wait_state(&gw, "up", Duration::from_secs(5)).await;
    assert_eq!(b["address"], slurm.get("SLURMRESTD_URL"));
    assert_eq!(b["slurm_ping"][0]["ping"], "UP", "{b}");
    assert!(
        b["latency_ms"].as_f64().is_some() && b["last_check"].is_string(),
        "{b}"
    );
    let all = status_of_all(&gw).await;
    assert_eq!(all[1]["address"], dead.as_str());
    assert_eq!(all[1]["state"], "down", "{all:?}");
    // Every request goes to the member that is up.
    for _ in 0..4 {
        assert_eq!(get_ping().await.unwrap().status(), 200);
    }

    // Killed: down within one interval (+ the check's timeout), and requests get 503 JSON.
    let pid_file = slurm.get("SLURMRESTD_PID_FILE").to_string();
    let pid = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .to_string();
    assert!(Command::new("kill").arg(&pid).status().unwrap().success());
    let killed = Instant::now();
    let b = wait_state(&gw, "down", Duration::from_millis(2500)).await;
    assert!(b["error"].is_string(), "{b}");
    eprintln!("down after {:?}", killed.elapsed());
    expect_error(get_ping().await.unwrap(), 503, "unavailable").await;

    // Restarted (as slurm.sh starts it): up again, and requests pass.
    let port = slurm.get("SLURMRESTD_PORT");
    let log = format!("{}/slurmrestd.log", slurm.get("SLURM_LOG_DIR"));
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "SLURM_JWT=daemon setsid slurmrestd -u slurmrest -a rest_auth/jwt \
             -s {} 127.0.0.1:{port} </dev/null >>{log} 2>&1 & echo $! > {pid_file}",
            slurm.get("SLURMRESTD_PLUGINS")
        ))
        .env("SLURM_CONF", slurm.get("SLURM_CONF"))
        .status()
        .unwrap();
    assert!(out.success());
    wait_state(&gw, "up", Duration::from_secs(5)).await;
    assert_eq!(get_ping().await.unwrap().status(), 200);
}

#[tokio::test]
async fn every_openapi_version_and_yaml_bodies_pass_through_unchanged() {
    let slurm = start_slurm();
    let gw = Gateway::start(Setup {
        body: body(
            &slurm,
            &format!("jwt_key_file = \"{}\"", slurm.get("SLURM_JWT_KEY")),
        ),
        ..Default::default()
    })
    .await;
    let c = gw.client(false);
    let direct = reqwest::Client::new();
    let token = direct_token(&slurm, "alice");

    // Every version slurmrestd was started with, both APIs, same answer as asked directly.
    let plugins = slurm.get("SLURMRESTD_PLUGINS");
    let mut checked = 0;
    for plugin in plugins.split(',') {
        let version = plugin.trim_start_matches("openapi/");
        let path = match version.strip_prefix("db") {
            Some(v) => format!("/slurmdb/{v}/jobs"),
            None => format!("/slurm/{version}/ping"),
        };
        let through = c
            .get(gw.url(&format!("/hpcgate{path}")))
            .header("authorization", basic("alice", ALICE_PW))
            .send()
            .await
            .unwrap();
        assert_eq!(through.status(), 200, "{path}");
        let asked = direct
            .get(format!("{}{path}", slurm.get("SLURMRESTD_URL")))
            .header("x-slurm-user-name", "alice")
            .header("x-slurm-user-token", token.as_str())
            .send()
            .await
            .unwrap();
        assert_eq!(asked.status(), 200, "{path}");
        let through: serde_json::Value = through.json().await.unwrap();
        let asked: serde_json::Value = asked.json().await.unwrap();
        // Ping answers carry a latency that differs between two asks.
        let strip = |mut v: serde_json::Value| {
            if let Some(pings) = v["pings"].as_array_mut() {
                for p in pings {
                    p.as_object_mut().map(|o| o.remove("latency"));
                }
            }
            v
        };
        assert_eq!(strip(through), strip(asked), "{path}");
        checked += 1;
    }
    assert_eq!(checked, 6, "{plugins}");

    // A YAML job, and a YAML answer.
    let yaml = format!(
        "job:\n  name: yamljob\n  current_working_directory: {}\n  environment:\n    \
         PATH: /usr/bin:/bin\nscript: \"#!/bin/bash\\nsleep 10\\n\"\n",
        slurm.get("SLURM_WORK_DIR")
    );
    let r = c
        .post(gw.url(&format!("/hpcgate/slurm/{V}/job/submit")))
        .header("authorization", basic("alice", ALICE_PW))
        .header("content-type", "application/x-yaml")
        .header("accept", "application/x-yaml")
        .body(yaml.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "application/x-yaml"
    );
    let text = r.text().await.unwrap();
    let id = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("!!str job_id: !!int "))
        .unwrap_or_else(|| panic!("no job_id in {text}"));
    // slurmctld's view of the job as the YAML described it. (sacct is not asked: with YAML
    // jobs, 22.05's accounting sometimes records the name `allocation` instead, whichever
    // way the job came in.)
    let queued = |id: &str| slurm_cmd(&slurm, &["squeue", "-h", "-j", id, "-o", "%u %j"]);
    assert_eq!(queued(id), "alice yamljob");
    // The same YAML sent directly makes the same job.
    let text = direct
        .post(format!(
            "{}/slurm/{V}/job/submit",
            slurm.get("SLURMRESTD_URL")
        ))
        .header("x-slurm-user-name", "alice")
        .header("x-slurm-user-token", token.as_str())
        .header("content-type", "application/x-yaml")
        .header("accept", "application/x-yaml")
        .body(yaml)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let id = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("!!str job_id: !!int "))
        .unwrap_or_else(|| panic!("no job_id in {text}"));
    assert_eq!(queued(id), "alice yamljob");
}
