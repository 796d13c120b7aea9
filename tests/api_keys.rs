//! API keys through the CLI and HTTP, on SQLite and on a real PostgreSQL
//! (tests/servers/postgres.sh): create, use (Bearer and X-API-Key), scopes, expiry, and a
//! revocation seen by a second gateway process on the same database within a second.

mod common;

use std::time::{Duration, Instant};

use common::*;

fn body(up: &Recorder, db_url: &str) -> String {
    format!(
        "[database]\nurl = \"{db_url}\"\n\n\
         [authenticators.keys]\ntype = \"api_key\"\n\n\
         [pools.up]\nbackends = [\"http://{}\"]\n\n\
         [[routes]]\nname = \"hpc\"\npath_prefix = \"/hpc\"\npool = \"up\"\n\
         authenticators = [\"local\", \"keys\"]\n\n\
         [[routes]]\nname = \"metrics\"\npath_prefix = \"/prom\"\npool = \"up\"\nkind = \"prometheus\"\n\
         authenticators = [\"keys\"]\n",
        up.addr
    )
}

/// Runs `hpcgate apikey ARGS --config <gw's config>`; stdout on success.
fn apikey(gw: &Gateway, args: &[&str]) -> Result<String, String> {
    gw.command(&[&["apikey"], args].concat())
}

async fn call(gw: &Gateway, path: &str, header: (&str, &str)) -> reqwest::Response {
    gw.client(false)
        .get(gw.url(path))
        .header(header.0, header.1)
        .send()
        .await
        .unwrap()
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

/// The whole life of a key, against two gateways sharing `db_url`.
async fn life_cycle(db_url: &str) {
    let up = Recorder::start(Duration::ZERO).await;
    let gw = Gateway::start(Setup {
        body: body(&up, db_url),
        gateway_authenticators: vec!["local".into(), "keys".into()],
        ..Default::default()
    })
    .await;
    let gw2 = Gateway::start(Setup {
        body: body(&up, db_url),
        ..Default::default()
    })
    .await;

    // Create: the key is printed once, and has our shape and 256 bits of secret.
    let key = apikey(
        &gw,
        &[
            "create",
            "--user",
            "carol",
            "--name",
            "ci",
            "--group",
            "hpc-users",
        ],
    )
    .unwrap()
    .trim()
    .to_string();
    assert!(key.starts_with("hpcg_") && key.len() == 64, "{key}");

    // Used as a Bearer token and as X-API-Key (any spelling), on both gateways.
    for g in [&gw, &gw2] {
        let r = call(g, "/hpc/a", ("authorization", &bearer(&key))).await;
        assert_eq!(r.status(), 200);
        let seen = up.last();
        assert_eq!(seen.one("x-forwarded-user"), Some("carol"));
        assert_eq!(seen.one("x-forwarded-groups"), Some("hpc-users"));
        assert_eq!(
            seen.one("authorization"),
            None,
            "the key never goes upstream"
        );
    }
    let r = call(&gw, "/hpc/b", ("X_Api_Key", &key)).await;
    assert_eq!(r.status(), 200);
    let seen = up.last();
    assert_eq!(seen.one("x-forwarded-user"), Some("carol"));
    assert!(
        seen.headers
            .iter()
            .all(|(k, v)| !k.to_ascii_lowercase().contains("api") && !v.contains(&key)),
        "the key never goes upstream: {:?}",
        seen.headers
    );
    let who: serde_json::Value = call(&gw, "/-/whoami", ("x-api-key", &key))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(who["data"]["user"], "carol");
    assert_eq!(who["data"]["method"], "api_key");
    assert_eq!(who["data"]["groups"], serde_json::json!(["hpc-users"]));

    // A wrong secret with a real id, garbage, and a JWT-looking token.
    let wrong = format!("{}{}", &key[..30], "x".repeat(34));
    for bad in [wrong.as_str(), "hpcg_nonsense", "not-a-key"] {
        let r = call(&gw, "/hpc/a", ("x-api-key", bad)).await;
        expect_error(r, 401, "unauthorized").await;
    }
    let r = call(&gw, "/hpc/a", ("authorization", &bearer(&wrong))).await;
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    expect_error(r, 401, "unauthorized").await;

    // Scopes: a key for prometheus routes only.
    let scoped = apikey(
        &gw,
        &[
            "create",
            "--user",
            "carol",
            "--name",
            "prom",
            "--scope",
            "prometheus",
        ],
    )
    .unwrap()
    .trim()
    .to_string();
    assert_eq!(
        call(&gw, "/prom/api/v1/query?query=up", ("x-api-key", &scoped))
            .await
            .status(),
        200
    );
    let r = call(&gw, "/hpc/a", ("x-api-key", &scoped)).await;
    let text = r.text().await.unwrap();
    assert!(text.contains("limited to prometheus"), "{text}");
    // Nor the gateway's own status and metrics: the key is for its routes. It may still ask
    // who it is.
    for path in ["/-/status", "/-/metrics"] {
        let r = call(&gw, path, ("x-api-key", &scoped)).await;
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        assert_json_error(status, &text, 403, "forbidden");
        assert!(text.contains("limited to prometheus"), "{path}: {text}");
    }
    let r = call(&gw, "/-/whoami", ("x-api-key", &scoped)).await;
    assert_eq!(r.status(), 200);
    // An unscoped key of a user who is no admin reads the status without backend addresses.
    let r = call(&gw, "/-/status", ("x-api-key", &key)).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("\"name\":\"up\"") && !text.contains(&up.addr.to_string()),
        "{text}"
    );
    // An unknown scope is refused at creation, naming the routes.
    let e = apikey(
        &gw,
        &[
            "create", "--user", "carol", "--name", "x", "--scope", "slurm",
        ],
    )
    .unwrap_err();
    assert!(
        e.contains("--scope `slurm`") && e.contains("hpc, metrics"),
        "{e}"
    );
    // The same live name twice is refused.
    let e = apikey(&gw, &["create", "--user", "carol", "--name", "ci"]).unwrap_err();
    assert!(e.contains("already has a live key named `ci`"), "{e}");

    // List: no secrets, last use recorded.
    let list: serde_json::Value =
        serde_json::from_str(&apikey(&gw, &["list", "--user", "carol", "--json"]).unwrap())
            .unwrap();
    let keys = list.as_array().unwrap();
    assert_eq!(keys.len(), 2);
    let listed = serde_json::to_string(&list).unwrap();
    assert!(
        !listed.contains(&key[20..]) && !listed.contains("hash"),
        "{listed}"
    );
    let ci = keys.iter().find(|k| k["name"] == "ci").unwrap();
    let id = ci["id"].as_str().unwrap().to_string();
    assert!(key.contains(&id));
    assert!(ci["last_used_at"].as_i64().is_some(), "{ci}");
    assert!(ci["expires_at"].as_i64().unwrap() > ci["created_at"].as_i64().unwrap() + 89 * 86400);

    // Revoke: both gateways refuse the key within a second of the command.
    apikey(&gw, &["revoke", &id]).unwrap();
    let revoked_at = Instant::now();
    for g in [&gw, &gw2] {
        loop {
            let r = call(g, "/hpc/a", ("authorization", &bearer(&key))).await;
            if r.status() == 401 {
                assert!(r.text().await.unwrap().contains("revoked"));
                break;
            }
            assert_eq!(r.status(), 200);
            assert!(
                revoked_at.elapsed() < Duration::from_secs(1),
                "a revoked key still works after a second"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert!(revoked_at.elapsed() < Duration::from_secs(1));
    let e = apikey(&gw, &["revoke", &id]).unwrap_err();
    assert!(e.contains("no live key"), "{e}");
    // The name is free again.
    apikey(&gw, &["create", "--user", "carol", "--name", "ci"]).unwrap();

    // Expired: written straight into the database, a minute in the past.
    let cfg = hpcgate::config::load(&gw.dir.path().join("hpcgate.toml")).unwrap();
    let db = hpcgate::db::Db::open(&cfg.database).await.unwrap();
    let old = db
        .create_key(&hpcgate::db::api_keys::KeyRequest {
            owner: "carol",
            name: "old",
            groups: &[],
            scopes: &[],
            expires_at: Some(hpcgate::db::now() - 60),
        })
        .await
        .unwrap();
    db.close().await;
    let r = call(&gw2, "/hpc/a", ("x-api-key", &old.token)).await;
    assert!(r.text().await.unwrap().contains("expired"));
}

#[tokio::test]
async fn api_keys_on_sqlite_shared_by_two_gateways() {
    let shared = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/keys.db", shared.path().display());
    life_cycle(&url).await;
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(shared.path().join("keys.db"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o077, 0, "the key database is private");
}

#[tokio::test]
async fn api_keys_on_postgresql_shared_by_two_gateways() {
    let pg = RealServer::start("postgres");
    life_cycle(pg.get("DATABASE_URL")).await;
}

#[tokio::test]
async fn database_down_means_503_and_no_key_is_trusted() {
    let pg = RealServer::start("postgres");
    let up = Recorder::start(Duration::ZERO).await;
    let url = format!("{}?connect_timeout=1", pg.get("DATABASE_URL"));
    let mut body = body(&up, &url);
    body = body.replace("[database]\n", "[database]\ntimeout = \"1s\"\n");
    let gw = Gateway::start(Setup {
        body,
        ..Default::default()
    })
    .await;
    let key = apikey(&gw, &["create", "--user", "carol", "--name", "ci"])
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(call(&gw, "/hpc/a", ("x-api-key", &key)).await.status(), 200);
    pg.stop();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let started = Instant::now();
    let r = call(&gw, "/hpc/a", ("x-api-key", &key)).await;
    expect_error(r, 503, "unavailable").await;
    assert!(started.elapsed() < Duration::from_secs(5));
    // Password users on the same route are unaffected.
    let r = gw
        .client(false)
        .get(gw.url("/hpc/a"))
        .header("authorization", basic("alice", ALICE_PW))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn grafana_acts_for_a_user_and_nobody_else_can() {
    let up = Recorder::start(Duration::ZERO).await;
    let shared = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/keys.db", shared.path().display());
    let body = format!(
        "[database]\nurl = \"{url}\"\n\n\
         [authenticators.keys]\ntype = \"api_key\"\n\n\
         [authenticators.grafana]\ntype = \"trusted_header\"\nauthenticator = \"keys\"\n\
         services = [\"grafana\"]\n\n\
         [authenticators.portal]\ntype = \"trusted_header\"\nauthenticator = \"keys\"\n\
         services = [\"portal\"]\nheader = \"X-Portal-User\"\nsource_networks = [\"10.0.0.0/8\"]\n\n\
         [pools.up]\nbackends = [\"http://{}\"]\n\n\
         [[routes]]\nname = \"tsdb\"\npath_prefix = \"/tsdb\"\npool = \"up\"\n\
         authenticators = [\"grafana\"]\nidentity_headers = {{ user = \"X-Forwarded-User\" }}\n\n\
         [[routes]]\nname = \"portal\"\npath_prefix = \"/portal\"\npool = \"up\"\n\
         authenticators = [\"portal\"]\n",
        up.addr
    );
    let gw = Gateway::start(Setup {
        body,
        gateway_authenticators: vec!["grafana".into()],
        ..Default::default()
    })
    .await;
    let grafana = apikey(
        &gw,
        &["create", "--user", "grafana", "--name", "datasource"],
    )
    .unwrap()
    .trim()
    .to_string();
    let alice = apikey(&gw, &["create", "--user", "alice", "--name", "own"])
        .unwrap()
        .trim()
        .to_string();
    let portal = apikey(&gw, &["create", "--user", "portal", "--name", "web"])
        .unwrap()
        .trim()
        .to_string();
    let send = |path: &str, key: &str, user_header: (&str, &str)| {
        gw.client(false)
            .get(gw.url(path))
            .header("x-api-key", key)
            .header(user_header.0, user_header.1)
            .send()
    };

    // Grafana's key + X-Grafana-User: bob → bob, via grafana.
    let r = send("/tsdb/api/v1/query", &grafana, ("X-Grafana-User", "bob"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = up.last();
    assert_eq!(seen.one("x-forwarded-user"), Some("bob"));
    assert_eq!(
        seen.one("x-grafana-user"),
        None,
        "the header is consumed, not passed on"
    );
    let who: serde_json::Value = send("/-/whoami", &grafana, ("x_grafana_user", "bob"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(who["data"]["user"], "bob");
    assert_eq!(who["data"]["via"], "grafana");
    assert_eq!(who["data"]["method"], "trusted_header");
    assert_eq!(who["data"]["groups"], serde_json::json!([]));
    let last = gw.last_audit("tsdb").await;
    assert_eq!(last["user"], "bob", "{last}");
    assert_eq!(last["via"], "grafana", "{last}");

    // Without the header, Grafana is itself.
    send("/tsdb/x", &grafana, ("x-other", "1")).await.unwrap();
    assert_eq!(up.last().one("x-forwarded-user"), Some("grafana"));

    // Alice's own key with the same header: ignored, she stays alice.
    let r = send("/tsdb/x", &alice, ("X-Grafana-User", "bob"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().one("x-forwarded-user"), Some("alice"));
    // No key at all: the header alone proves nothing.
    let r = gw
        .client(false)
        .get(gw.url("/tsdb/x"))
        .header("X-Grafana-User", "alice")
        .send()
        .await
        .unwrap();
    expect_error(r, 401, "unauthorized").await;
    // A bad name is refused, not passed on.
    let r = send("/tsdb/x", &grafana, ("X-Grafana-User", "bob)(uid=*"))
        .await
        .unwrap();
    expect_error(r, 400, "bad_request").await;

    // A trusted service outside its networks may not act for anyone.
    let r = send("/portal/x", &portal, ("X-Portal-User", "bob"))
        .await
        .unwrap();
    expect_error(r, 403, "forbidden").await;
}

/// A client CA and two certificates it signed: (CA PEM, grafana's PEM identity and
/// fingerprint, another service's PEM identity).
fn client_certs() -> (String, (String, String), String) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf = |cn: &str| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec![format!("{cn}.example.org")]).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let cert = p.signed_by(&key, &ca).unwrap();
        let fp =
            sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(cert.der()));
        let fp = fp
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":");
        (format!("{}{}", cert.pem(), key.serialize_pem()), fp)
    };
    let (grafana, fp) = leaf("grafana");
    let (other, _) = leaf("someone");
    (ca.pem(), (grafana, fp), other)
}

#[tokio::test]
async fn grafana_proves_itself_with_a_pinned_client_certificate() {
    let up = Recorder::start(Duration::ZERO).await;
    let (ca, (grafana, fingerprint), other) = client_certs();
    let certs = tempfile::tempdir().unwrap();
    std::fs::write(certs.path().join("clients-ca.pem"), ca).unwrap();
    let body = format!(
        "[authenticators.services]\ntype = \"client_cert\"\n\
         certificates = {{ grafana = \"{fingerprint}\" }}\n\n\
         [authenticators.grafana]\ntype = \"trusted_header\"\nauthenticator = \"services\"\n\
         services = [\"grafana\"]\nsource_networks = [\"127.0.0.1\"]\n\n\
         [pools.up]\nbackends = [\"http://{}\"]\n\n\
         [[routes]]\nname = \"tsdb\"\npath_prefix = \"/tsdb\"\npool = \"up\"\n\
         authenticators = [\"grafana\", \"local\"]\n",
        up.addr
    );
    let gw = Gateway::start(Setup {
        body,
        tls_listener_extra: format!(
            "client_ca = \"{}\"",
            certs.path().join("clients-ca.pem").display()
        ),
        ..Default::default()
    })
    .await;
    let with_cert = |pem: &str| {
        gw.client_with(
            false,
            Some(reqwest::Identity::from_pem(pem.as_bytes()).unwrap()),
        )
    };

    // Grafana's certificate + X-Grafana-User: bob → bob via grafana.
    let r = with_cert(&grafana)
        .get(gw.url("/tsdb/q"))
        .header("x-grafana-user", "bob")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().one("x-forwarded-user"), Some("bob"));
    let last = gw.last_audit("tsdb").await;
    assert_eq!(
        (last["user"].as_str(), last["via"].as_str()),
        (Some("bob"), Some("grafana"))
    );

    // Another certificate from the same CA is not pinned: the header proves nothing.
    let r = with_cert(&other)
        .get(gw.url("/tsdb/q"))
        .header("x-grafana-user", "bob")
        .send()
        .await
        .unwrap();
    expect_error(r, 401, "unauthorized").await;
    // Without a certificate the listener still serves password users.
    let r = gw
        .client(false)
        .get(gw.url("/tsdb/q"))
        .header("authorization", basic("alice", ALICE_PW))
        .header("x-grafana-user", "bob")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().one("x-forwarded-user"), Some("alice"));
}

#[tokio::test]
async fn trusted_services_cannot_act_for_root_or_the_slurm_user() {
    use std::os::unix::fs::PermissionsExt;
    let up = Recorder::start(Duration::ZERO).await;
    let shared = tempfile::tempdir().unwrap();
    let key = shared.path().join("jwt_hs256.key");
    std::fs::write(&key, [42u8; 32]).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let url = format!("sqlite://{}/keys.db", shared.path().display());
    // `slurm` is a Slurm user of this config (a slurmrestd route's denied_users); root always.
    let body = format!(
        "[database]\nurl = \"{url}\"\n\n\
         [authenticators.keys]\ntype = \"api_key\"\n\n\
         [authenticators.grafana]\ntype = \"trusted_header\"\nauthenticator = \"keys\"\n\
         services = [\"grafana\"]\n\n\
         [authenticators.ops]\ntype = \"trusted_header\"\nauthenticator = \"keys\"\n\
         services = [\"grafana\"]\nallow_privileged_users = [\"root\"]\n\n\
         [pools.up]\nbackends = [\"http://{up}\"]\n\n\
         [[routes]]\nname = \"tsdb\"\npath_prefix = \"/tsdb\"\npool = \"up\"\n\
         authenticators = [\"grafana\"]\n\n\
         [[routes]]\nname = \"ops\"\npath_prefix = \"/ops\"\npool = \"up\"\n\
         authenticators = [\"ops\"]\n\n\
         [[routes]]\nname = \"slurm\"\npath_prefix = \"/slurm\"\npool = \"up\"\n\
         kind = \"slurmrestd\"\nauthenticators = [\"local\"]\n\
         [routes.slurm]\njwt_key_file = \"{key}\"\ndenied_users = [\"root\", \"slurm\"]\n",
        up = up.addr,
        key = key.display(),
    );
    let gw = Gateway::start(Setup {
        body,
        ..Default::default()
    })
    .await;
    let grafana = apikey(
        &gw,
        &["create", "--user", "grafana", "--name", "datasource"],
    )
    .unwrap()
    .trim()
    .to_string();
    let act = |path: &'static str, user: &'static str| {
        gw.client(false)
            .get(gw.url(path))
            .header("x-api-key", &grafana)
            .header("X-Grafana-User", user)
            .send()
    };
    for user in ["root", "ROOT", "slurm"] {
        let r = act("/tsdb/x", user).await.unwrap();
        expect_error(r, 403, "forbidden").await;
    }
    assert!(up.requests().is_empty(), "nothing went upstream");
    assert_eq!(act("/tsdb/x", "bob").await.unwrap().status(), 200);
    assert_eq!(up.last().one("x-forwarded-user"), Some("bob"));
    // Allowed by name where the operator said so, and only that name.
    assert_eq!(act("/ops/x", "root").await.unwrap().status(), 200);
    assert_eq!(up.last().one("x-forwarded-user"), Some("root"));
    expect_error(act("/ops/x", "slurm").await.unwrap(), 403, "forbidden").await;
}

#[tokio::test]
async fn apikey_create_refuses_group_names_that_cannot_be_carried() {
    let up = Recorder::start(Duration::ZERO).await;
    let shared = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/keys.db", shared.path().display());
    let gw = Gateway::start(Setup {
        body: body(&up, &url),
        ..Default::default()
    })
    .await;
    for bad in ["", "a,b", " hpc-admins", "x\ty"] {
        let r = apikey(
            &gw,
            &["create", "--user", "carol", "--name", "ci", "--group", bad],
        );
        assert!(r.is_err(), "group {bad:?} was accepted");
    }
    let key = apikey(
        &gw,
        &[
            "create", "--user", "carol", "--name", "ci", "--group", "proj-c",
        ],
    )
    .unwrap()
    .trim()
    .to_string();
    let r = call(&gw, "/hpc/x", ("x-api-key", &key)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().one("x-forwarded-groups"), Some("proj-c"));
}
