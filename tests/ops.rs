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

async fn get(gw: &Gateway, path: &str, user: &str, pw: &str) -> reqwest::Response {
    gw.client(false)
        .get(gw.url(path))
        .header("authorization", basic(user, pw))
        .send()
        .await
        .unwrap()
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
    let r = get(&gw, "/echo/x", "alice", ALICE_PW).await;
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
    let st: serde_json::Value = get(&gw, "/-/status", "alice", ALICE_PW)
        .await
        .json()
        .await
        .unwrap();
    let p = &st["data"]["process"];
    assert_eq!(p["user"], "nobody", "{st}");
    assert_eq!(p["no_new_privs"], true);
    assert_eq!(p["capabilities"]["effective"], serde_json::json!([]));
    assert_eq!(p["capabilities"]["bounding"], serde_json::json!([]));
    let st: serde_json::Value = get(&gw, "/-/status", "bob", BOB_PW)
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
    assert_eq!(get(&gw, "/a/x", "alice", ALICE_PW).await.status(), 200);
    assert_eq!(get(&gw, "/b/x", "alice", ALICE_PW).await.status(), 404);
    assert_eq!(get(&gw, "/a/x", "carol", "carol-pw").await.status(), 401);

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
    assert_eq!(get(&gw, "/b/x", "alice", ALICE_PW).await.status(), 200);
    assert_eq!(b.requests().len(), 1);
    assert_eq!(get(&gw, "/a/x", "carol", "carol-pw").await.status(), 200);

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
    assert_eq!(get(&gw, "/b/x", "alice", ALICE_PW).await.status(), 200);
    assert_eq!(get(&gw, "/a/x", "carol", "carol-pw").await.status(), 200);

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

    let metrics = get(&gw, "/-/metrics", "alice", ALICE_PW)
        .await
        .text()
        .await
        .unwrap();
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
    assert_eq!(get(&gw, "/slow/y", "alice", ALICE_PW).await.status(), 404);
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
    hpcgate::tls::generate_dev_certs(other.path(), &["localhost".into()], true).unwrap();
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
