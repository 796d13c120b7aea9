//! The command line: check-config on broken configs, the reference config, gen-cert,
//! hash-password, serve refusing a bad config, and the embedded demo.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::bin;

#[test]
fn check_config_names_file_key_and_reason_for_every_broken_config() {
    let mut checked = 0;
    for entry in std::fs::read_dir("tests/configs").unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if !name.ends_with(".toml") || name.starts_with('_') {
            continue;
        }
        let rel = format!("tests/configs/{name}");
        let out = Command::new(bin())
            .args(["check-config", &rel])
            .output()
            .unwrap();
        let expected = std::fs::read_to_string(format!(
            "tests/configs/{}",
            name.replace(".toml", ".expected")
        ))
        .unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert_eq!(stdout, expected, "check-config {rel}");
        assert_eq!(out.status.code(), Some(1), "{rel} must fail");
        for line in stdout.lines() {
            let (file, rest) = line.split_once(':').unwrap();
            assert_eq!(file, rel);
            let (key, reason) = rest.split_once(": ").unwrap();
            assert!(!key.is_empty() && !reason.is_empty(), "{line}");
        }
        checked += 1;
    }
    assert!(checked >= 7, "only {checked} broken configs found");
}

#[test]
fn the_reference_config_is_valid() {
    // Laid out like the repository: config/ beside policies/.
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("config");
    std::fs::create_dir(&dir).unwrap();
    let cfg = dir.join("hpcgate.toml");
    std::fs::copy("config/hpcgate.toml", &cfg).unwrap();
    let pol = root.path().join("policies");
    std::fs::create_dir(&pol).unwrap();
    for f in ["schema.cedarschema", "default.cedar"] {
        std::fs::copy(format!("policies/{f}"), pol.join(f)).unwrap();
    }
    hpcgate::process::tls::generate_dev_certs(&dir.join("certs"), &["localhost".into()], true)
        .unwrap();
    std::fs::copy("tests/configs/_users.toml", dir.join("users.toml")).unwrap();
    std::fs::create_dir(dir.join("secrets")).unwrap();
    std::fs::write(dir.join("secrets/slurmrestd-authorization"), "Bearer abc\n").unwrap();
    std::fs::write(dir.join("secrets/ldap-bind-password"), "s3cret\n").unwrap();
    std::fs::write(dir.join("secrets/oidc-client-secret"), "s3cret\n").unwrap();
    std::fs::write(
        dir.join("secrets/oidc-session.key"),
        "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n",
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        let key = dir.join("secrets/jwt_hs256.key");
        std::fs::write(&key, [42u8; 32]).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let out = Command::new(bin())
        .arg("check-config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains(": OK (3 listeners, 4 pools, 9 authenticators")
    );
}

#[test]
fn serve_refuses_a_broken_config_with_the_reasons() {
    let out = Command::new(bin())
        .args(["serve", "--config", "tests/configs/bad-references.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing to start"), "{err}");
    assert!(
        err.contains("tests/configs/bad-references.toml:routes[0].pool: unknown pool `nope`"),
        "{err}"
    );
}

#[test]
fn gen_cert_writes_a_ca_and_a_server_certificate_with_private_keys() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("c");
    let run = |force: bool| {
        let mut cmd = Command::new(bin());
        cmd.arg("gen-cert")
            .arg("--dir")
            .arg(&d)
            .args(["--name", "gw.example.org"]);
        if force {
            cmd.arg("--force");
        }
        cmd.output().unwrap()
    };
    assert!(run(false).status.success());
    for (f, mode) in [
        ("ca.pem", 0o644),
        ("ca-key.pem", 0o600),
        ("server.pem", 0o644),
        ("server-key.pem", 0o600),
    ] {
        let m = std::fs::metadata(d.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(m, mode, "{f}");
    }
    // It loads as a listener certificate.
    hpcgate::process::tls::load_certified_key(&d.join("server.pem"), &d.join("server-key.pem"))
        .unwrap();
    // Existing files are kept unless --force.
    let again = run(false);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    assert!(run(true).status.success());
}

#[test]
fn hash_password_reads_stdin_and_prints_an_argon2id_hash() {
    use std::io::Write;
    let mut child = Command::new(bin())
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"s3cret\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout).unwrap();
    assert!(hash.starts_with("$argon2id$v=19$"), "{hash}");
    assert!(!hash.contains("s3cret"));
}

#[test]
fn every_subcommand_has_help_and_version_prints() {
    for sub in [
        "serve",
        "check-config",
        "gen-cert",
        "hash-password",
        "version",
    ] {
        let out = Command::new(bin()).args([sub, "--help"]).output().unwrap();
        assert!(out.status.success(), "{sub} --help");
        assert!(String::from_utf8_lossy(&out.stdout).contains("Usage:"));
    }
    let out = Command::new(bin()).arg("version").output().unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        format!("hpcgate {}", env!("CARGO_PKG_VERSION"))
    );
}

/// The README's first command: `hpcgate serve` with no config.
#[tokio::test]
async fn the_embedded_demo_answers_whoami_over_ipv4_and_ipv6() {
    if std::net::TcpListener::bind("127.0.0.1:8443").is_err() {
        panic!("port 8443 is taken: the demo test needs it (is a demo still running?)");
    }
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("demo.log");
    let child = Command::new(bin())
        .arg("serve")
        .current_dir(dir.path())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Stopped even when an assertion fails, so the next run finds port 8443 free.
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = KillOnDrop(child);
    let state = dir.path().join("hpcgate-demo");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("Try:")
    {
        assert!(
            Instant::now() < deadline,
            "the demo printed no instructions"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let banner = std::fs::read_to_string(&log).unwrap();
    let creds = std::fs::read_to_string(state.join("demo-credentials.txt")).unwrap();
    let mode = std::fs::metadata(state.join("demo-credentials.txt"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let alice_pw = creds
        .lines()
        .find_map(|l| l.strip_prefix("alice:"))
        .unwrap()
        .to_string();
    assert!(alice_pw.len() >= 16);
    assert!(banner.contains(&alice_pw), "the banner shows what to type");
    assert!(creds.lines().any(|l| l.starts_with("bob:")));
    for f in [
        "ca.pem",
        "server.pem",
        "server-key.pem",
        "users.toml",
        "hpcgate.toml",
    ] {
        assert!(state.join(f).exists(), "{f}");
    }

    let ca = reqwest::Certificate::from_pem(&std::fs::read(state.join("ca.pem")).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(ca)
        .tls_built_in_root_certs(false)
        .build()
        .unwrap();
    let mut urls = vec![
        "https://localhost:8443/-/whoami",
        "https://127.0.0.1:8443/-/whoami",
    ];
    if std::net::TcpListener::bind("[::1]:0").is_ok() {
        urls.push("https://[::1]:8443/-/whoami");
    }
    for url in urls {
        // The banner comes as the listeners open: allow them a moment.
        let mut tries = 0;
        let resp = loop {
            match client
                .get(url)
                .basic_auth("alice", Some(&alice_pw))
                .send()
                .await
            {
                Ok(r) => break r,
                Err(e) if tries < 50 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("{url}: {e}"),
            }
        };
        let v: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(v["data"]["user"], "alice", "{url}");
        assert!(
            v["data"]["groups"]
                .as_array()
                .unwrap()
                .contains(&"hpc-admins".into())
        );
    }
    // The built-in upstream shows what hpcgate sends it.
    let v: serde_json::Value = client
        .get("https://localhost:8443/echo/hello")
        .basic_auth("alice", Some(&alice_pw))
        .header("X-Forwarded-User", "root")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["path"], "/hello");
    assert_eq!(v["headers"]["x-forwarded-user"], "alice");
    assert!(v["headers"].get("authorization").is_none());

    // The accounting API answers with the demo's units: bob sees his and his projects'
    // (climate, with alice; genomics, his own), alice as an admin sees everything.
    let bob_pw = creds
        .lines()
        .find_map(|l| l.strip_prefix("bob:"))
        .unwrap()
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    let units = loop {
        let v: serde_json::Value = client
            .get("https://localhost:8443/api/v1/units?running")
            .basic_auth("bob", Some(&bob_pw))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let units: Vec<String> = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["uuid"].as_str().unwrap().to_string())
            .collect();
        if !units.is_empty() || Instant::now() > deadline {
            break units;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(units, ["1001", "1002", "1003", "1004", "1005"]);
    let r = client
        .get("https://localhost:8443/api/v1/usage/global/admin")
        .basic_auth("bob", Some(&bob_pw))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let v: serde_json::Value = client
        .get("https://localhost:8443/api/v1/usage/global/admin")
        .basic_auth("alice", Some(&alice_pw))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["data"].as_array().unwrap().len(), 3, "{v}");

    Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    let start = Instant::now();
    loop {
        if child.0.try_wait().unwrap().is_some() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(8),
            "demo did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Preparing the demo again keeps the credentials and the CA people already trust.
    let ca_before = std::fs::read(state.join("ca.pem")).unwrap();
    let (_, again) = hpcgate::process::demo::prepare(&state).unwrap();
    assert!(again.iter().any(|(u, p)| u == "alice" && *p == alice_pw));
    assert_eq!(std::fs::read(state.join("ca.pem")).unwrap(), ca_before);
    assert!(Path::new(&state.join("ca-key.pem")).exists());
}
