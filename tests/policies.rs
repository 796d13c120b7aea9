//! The policy table of `tests/policy_cases.csv`, end to end: real users authenticate, the
//! shipped default and example policies decide, and the upstream sees only what was allowed.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

struct Case {
    user: String,
    groups: Vec<String>,
    route: String,
    kind: String,
    action: String,
    client: String,
    allow: bool,
}

fn cases() -> Vec<Case> {
    std::fs::read_to_string("tests/policy_cases.csv")
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            Case {
                user: f[0].into(),
                groups: f[1]
                    .split(';')
                    .filter(|g| !g.is_empty())
                    .map(Into::into)
                    .collect(),
                route: f[2].into(),
                kind: f[3].into(),
                action: f[4].into(),
                client: f[7].into(),
                allow: f[8] == "allow",
            }
        })
        .collect()
}

fn policies_with_examples(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(
        "policies/schema.cedarschema",
        dir.join("schema.cedarschema"),
    )
    .unwrap();
    std::fs::copy("policies/default.cedar", dir.join("default.cedar")).unwrap();
    for e in std::fs::read_dir("policies/examples").unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
    }
}

#[tokio::test]
async fn the_policy_table_holds_through_the_proxy() {
    let up = Recorder::start(Duration::ZERO).await;
    let pol = tempfile::tempdir().unwrap();
    policies_with_examples(pol.path());
    let cases = cases();

    let mut routes = std::collections::BTreeMap::new();
    let mut users = std::collections::BTreeMap::new();
    for c in &cases {
        routes.insert(c.route.clone(), c.kind.clone());
        if c.user != "alice" && c.user != "bob" {
            users.insert(c.user.clone(), c.groups.clone());
        }
    }
    let mut body = format!("[pools.up]\nbackends = [\"http://{}\"]\n", up.addr);
    let key = pol.path().join("jwt_hs256.key");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(&key, [42u8; 32]).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    for (name, kind) in &routes {
        body.push_str(&format!(
            "\n[[routes]]\nname = \"{name}\"\npath_prefix = \"/{name}\"\npool = \"up\"\n\
             kind = \"{kind}\"\nauthenticators = [\"local\"]\nadmin_paths = [\"/{name}/admin\"]\n"
        ));
        // Policies are under test here, not PromQL (tests/prometheus.rs).
        if kind == "prometheus" {
            body.push_str("promql = { mode = \"off\" }\n");
        }
        if kind == "slurmrestd" {
            body.push_str(&format!(
                "[routes.slurm]\njwt_key_file = \"{}\"\n",
                key.display()
            ));
        }
    }
    let gw = Gateway::start(Setup {
        body,
        policies_dir: Some(pol.path().to_path_buf()),
        extra_users: users.into_iter().collect(),
        ..Default::default()
    })
    .await;
    let client = gw.client(false);

    let mut ran = 0;
    for c in &cases {
        // Slurm writes are decided by the office-hours example, i.e. by the clock: the unit
        // test pins the time. Requests here come from 127.0.0.1, so cases that need the
        // controller network (10.1.0.0/16) cannot be reproduced.
        if (c.kind == "slurmrestd" && c.action == "write") || c.client.starts_with("10.") {
            continue;
        }
        let pw = match c.user.as_str() {
            "alice" => ALICE_PW.to_string(),
            "bob" => BOB_PW.to_string(),
            u => format!("{u}-pw"),
        };
        let (method, path) = match c.action.as_str() {
            "read" => (reqwest::Method::GET, format!("/{}/x", c.route)),
            "write" => (reqwest::Method::POST, format!("/{}/x", c.route)),
            _ => (reqwest::Method::GET, format!("/{}/admin/x", c.route)),
        };
        let before = up.requests().len();
        let r = client
            .request(method, gw.url(&path))
            .header("authorization", basic(&c.user, &pw))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        if c.allow {
            assert_eq!(status, 200, "{} {} {}: {text}", c.user, c.action, c.route);
            assert_eq!(up.requests().len(), before + 1);
            let header = match c.kind.as_str() {
                "generic" => Some("x-forwarded-user"),
                "prometheus" | "accounting" => Some("x-grafana-user"),
                "slurmrestd" => Some("x-slurm-user-name"),
                _ => None,
            };
            if let Some(h) = header {
                assert_eq!(
                    up.last().one(h),
                    Some(c.user.as_str()),
                    "{} on {}",
                    c.user,
                    c.route
                );
            }
        } else {
            assert_json_error(status, &text, 403, "forbidden");
            assert!(
                text.contains(&format!("`{}`", c.route)),
                "names the route: {text}"
            );
            assert!(!text.contains(".cedar"), "never names the policy: {text}");
            assert_eq!(
                up.requests().len(),
                before,
                "denied requests never go upstream"
            );
        }
        ran += 1;
    }
    assert!(ran >= 15, "only {ran} cases ran end to end");

    // Every decision is in the audit log, with the policy that made it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let audit = gw.audit();
    assert_eq!(audit.len(), ran, "{audit:#?}");
    let denied = audit
        .iter()
        .find(|r| r["user"] == "bob" && r["route"] == "slurm-admin")
        .unwrap();
    assert_eq!(denied["decision"], "deny");
    assert_eq!(denied["auth"], "static");
    assert_eq!(denied["status"], 403);
    assert_eq!(
        denied["policies"],
        serde_json::json!(["admins-only-route.cedar:slurm-admin-is-for-admins"])
    );
    let allowed = audit
        .iter()
        .find(|r| r["user"] == "bob" && r["route"] == "echo" && r["action"] == "read")
        .unwrap();
    assert_eq!(allowed["decision"], "allow");
    assert_eq!(
        allowed["policies"],
        serde_json::json!(["default.cedar:users-read-write"])
    );
    assert_eq!(allowed["status"], 200);
    assert!(
        allowed["backend"]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1:")
    );
    for r in &audit {
        assert!(
            !r["user"].as_str().unwrap().is_empty(),
            "every decision names its user: {r}"
        );
        for field in ["time", "request_id", "auth", "method", "path", "latency_ms"] {
            assert!(!r[field].is_null(), "{field} missing in {r}");
        }
    }
    let raw = std::fs::read_to_string(gw.dir.path().join("audit.log")).unwrap();
    assert!(!raw.contains(BOB_PW) && !raw.contains("Basic "));
}

#[test]
fn a_policy_syntax_error_is_refused_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let pol = dir.path().join("policies");
    policies_with_examples(&pol);
    std::fs::write(
        pol.join("local.cedar"),
        "// our own rules\n\npermit (principal, action, resource)\nwhen { principal.admin ;\n",
    )
    .unwrap();
    write_config(
        dir.path(),
        &Setup {
            body: "[pools.p]\nbackends = [\"http://127.0.0.1:9\"]\n".into(),
            policies_dir: Some(pol.clone()),
            ..Default::default()
        },
        free_port(),
        free_port(),
        None,
    );
    let cfg = dir.path().join("hpcgate.toml");
    let check = std::process::Command::new(bin())
        .arg("check-config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(1));
    let out = String::from_utf8_lossy(&check.stdout);
    let want = format!("{}:line 4:", pol.join("local.cedar").display());
    assert!(out.contains(&want), "{out}");

    let serve = std::process::Command::new(bin())
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!serve.status.success(), "serve must refuse to start");
    assert!(String::from_utf8_lossy(&serve.stderr).contains(&want));
}
