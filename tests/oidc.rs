//! `oidc_bearer` against a real OpenID Connect provider (tests/servers/oidc.sh): service
//! accounts from client credentials, users' access tokens, forged and misdirected tokens,
//! key rotation, an IdP that is down at start, and (in-process fakes, for what the real IdP
//! cannot do) a JWKS endpoint that hangs or answers garbage.

mod common;

use std::time::{Duration, Instant};

use common::oidc::{Idp, foreign_rsa_key, jwt_parts, segment};
use common::*;
use serde_json::{Value, json};

/// An `oidc_bearer` authenticator `name` for `issuer`, with `extra` keys.
fn bearer(name: &str, issuer: &str, extra: &str) -> String {
    format!(
        "[authenticators.{name}]\ntype = \"oidc_bearer\"\nissuer = \"{issuer}\"\n\
         audiences = [\"urn:hpcgate\"]\ntimeout = \"1s\"\ndiscovery_retry = \"1s\"\n{extra}\n"
    )
}

/// A route `/<name>` to `up` using the authenticators listed.
fn route(name: &str, up: &Recorder, authenticators: &[&str]) -> String {
    format!(
        "[pools.{name}]\nbackends = [\"http://{}\"]\n\
         [[routes]]\nname = \"{name}\"\npath_prefix = \"/{name}\"\npool = \"{name}\"\n\
         authenticators = {authenticators:?}\n",
        up.addr
    )
}

async fn get(gw: &Gateway, path: &str, token: &str) -> reqwest::Response {
    gw.client(false)
        .get(gw.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// A 401 JSON error that asks for a bearer token, with a reason containing `why`.
async fn refused(r: reqwest::Response, why: &str) {
    let challenge = r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(challenge.starts_with("Bearer"), "{challenge}");
    let status = r.status().as_u16();
    let body = r.text().await.unwrap();
    assert_json_error(status, &body, 401, "unauthorized");
    assert!(body.contains(why), "expected `{why}` in {body}");
}

#[tokio::test]
async fn client_credentials_are_service_accounts_and_user_tokens_are_users() {
    let idp = Idp::start();
    let up = Recorder::start(Duration::ZERO).await;
    let body = bearer(
        "idp",
        &idp.issuer(),
        "service_accounts = { gateway = \"svc-gateway\" }",
    ) + &bearer("strict", &idp.issuer(), "")
        + &route("hpc", &up, &["idp"])
        + &route("users-only", &up, &["strict"]);
    let gw = Gateway::start(Setup {
        body,
        gateway_authenticators: vec!["idp".into()],
        ..Default::default()
    })
    .await;

    let service = idp.client_token().await;
    let r = get(&gw, "/hpc/jobs", &service).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let seen = up.last();
    assert_eq!(seen.one("x-forwarded-user"), Some("svc-gateway"));
    assert_eq!(
        seen.one("authorization"),
        None,
        "the token stays at the gateway"
    );

    let alice = idp.user_tokens("alice");
    let token = alice["access_token"].as_str().unwrap();
    assert_eq!(get(&gw, "/hpc/jobs", token).await.status(), 200);
    let seen = up.last();
    assert_eq!(seen.one("x-forwarded-user"), Some("alice"));
    assert_eq!(seen.one("x-forwarded-groups"), Some("hpc-admins,hpc-users"));
    assert_eq!(seen.one("x-forwarded-email"), Some("alice@example.org"));

    // /-/whoami shows the same identity as for any other authenticator.
    let who: Value = get(&gw, "/-/whoami", token).await.json().await.unwrap();
    assert_eq!(who["data"]["user"], "alice");
    assert_eq!(who["data"]["method"], "oidc_bearer");
    assert_eq!(who["data"]["authenticator"], "idp");
    assert_eq!(who["data"]["groups"], json!(["hpc-admins", "hpc-users"]));
    let who: Value = get(&gw, "/-/whoami", &service).await.json().await.unwrap();
    assert_eq!(who["data"]["user"], "svc-gateway");

    // Where the client is no configured service account, its own token names nobody.
    refused(
        get(&gw, "/users-only/x", &service).await,
        "not a configured service account",
    )
    .await;
    assert_eq!(get(&gw, "/users-only/x", token).await.status(), 200);
    // The audit log says who and how.
    let audit = gw.audit();
    assert!(
        audit
            .iter()
            .any(|a| a["user"] == "svc-gateway" && a["auth"] == "oidc_bearer"),
        "{audit:?}"
    );
}

#[tokio::test]
async fn forged_expired_and_misdirected_tokens_are_refused() {
    let idp = Idp::start();
    let other_idp = Idp::start();
    let up = Recorder::start(Duration::ZERO).await;
    let body = bearer(
        "idp",
        &idp.issuer(),
        "service_accounts = { gateway = \"svc\" }",
    ) + &bearer(
        "elsewhere",
        &idp.issuer(),
        "audiences = [\"urn:another-service\"]\nservice_accounts = { gateway = \"svc\" }",
    )
    .replace("audiences = [\"urn:hpcgate\"]\n", "")
        + &route("hpc", &up, &["idp"])
        + &route("other", &up, &["elsewhere"]);
    let gw = Gateway::start(Setup {
        body,
        ..Default::default()
    })
    .await;
    let good = idp.client_token().await;
    assert_eq!(get(&gw, "/hpc/x", &good).await.status(), 200);
    let (header, claims) = jwt_parts(&good);

    // Wrong audience: the same real token on a route whose authenticator wants another aud.
    refused(
        get(&gw, "/other/x", &good).await,
        "not meant for this gateway",
    )
    .await;

    // Wrong issuer: a real token from another IdP is nobody's here.
    let foreign = other_idp.client_token().await;
    refused(get(&gw, "/hpc/x", &foreign).await, "does not accept").await;

    // Re-signed with a key that is not the IdP's, under the IdP's kid.
    let pem = foreign_rsa_key(gw.dir.path());
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    h.kid = header["kid"].as_str().map(str::to_string);
    let resigned = jsonwebtoken::encode(
        &h,
        &claims,
        &jsonwebtoken::EncodingKey::from_rsa_pem(&pem).unwrap(),
    )
    .unwrap();
    refused(
        get(&gw, "/hpc/x", &resigned).await,
        "signature does not verify",
    )
    .await;

    // The same under a kid the IdP never published: one refresh, then refused.
    h.kid = Some("nobody-knows-this-kid".into());
    let unknown = jsonwebtoken::encode(
        &h,
        &claims,
        &jsonwebtoken::EncodingKey::from_rsa_pem(&pem).unwrap(),
    )
    .unwrap();
    refused(get(&gw, "/hpc/x", &unknown).await, "does not publish").await;

    // alg: none, with the real claims and no signature.
    let none = format!(
        "{}.{}.",
        segment(&json!({"alg": "none", "typ": "JWT", "kid": header["kid"]})),
        segment(&claims)
    );
    refused(get(&gw, "/hpc/x", &none).await, "never `none`").await;

    // HS256 keyed with the IdP's RSA public key (its modulus, as published in the JWKS).
    let jwks: Value = reqwest::get(idp.server.get("OIDC_JWKS_URL"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let n = jwks["keys"][0]["n"].as_str().unwrap();
    for secret in [
        n.as_bytes().to_vec(),
        jwks["keys"][0].to_string().into_bytes(),
    ] {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        h.kid = header["kid"].as_str().map(str::to_string);
        let hs = jsonwebtoken::encode(
            &h,
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(&secret),
        )
        .unwrap();
        refused(get(&gw, "/hpc/x", &hs).await, "HS256").await;
    }

    // Altered claims under the real signature.
    let mut altered = claims.clone();
    altered["sub"] = json!("root");
    let parts: Vec<&str> = good.split('.').collect();
    let tampered = format!("{}.{}.{}", parts[0], segment(&altered), parts[2]);
    refused(
        get(&gw, "/hpc/x", &tampered).await,
        "signature does not verify",
    )
    .await;

    assert_eq!(up.requests().len(), 1, "only the good token went upstream");
    // No token, good or bad, reaches the logs.
    let logs = gw.log_text() + &std::fs::read_to_string(gw.dir.path().join("audit.log")).unwrap();
    for t in [&good, &foreign, &resigned, &unknown, &tampered] {
        let signature = t.rsplit('.').next().unwrap();
        assert!(
            !logs.contains(signature),
            "a token's signature is in the logs"
        );
        assert!(
            !logs.contains(t.split('.').nth(1).unwrap()),
            "a token's claims are in the logs"
        );
    }
}

#[tokio::test]
async fn expired_tokens_are_refused() {
    let idp = Idp::start_with(&[("OIDC_ACCESS_TOKEN_TTL", "2")]);
    let up = Recorder::start(Duration::ZERO).await;
    let body = bearer(
        "idp",
        &idp.issuer(),
        "leeway = \"0s\"\nservice_accounts = { gateway = \"svc\" }",
    ) + &route("hpc", &up, &["idp"]);
    let gw = Gateway::start(Setup {
        body,
        ..Default::default()
    })
    .await;
    let token = idp.client_token().await;
    assert_eq!(get(&gw, "/hpc/x", &token).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(3200)).await;
    refused(get(&gw, "/hpc/x", &token).await, "expired").await;
    assert_eq!(up.requests().len(), 1);
}

#[tokio::test]
async fn key_rotation_is_followed_with_at_most_one_fetch_per_interval() {
    let idp = Idp::start();
    let up = Recorder::start(Duration::ZERO).await;
    let body = bearer(
        "idp",
        &idp.issuer(),
        "jwks_refresh_interval = \"3s\"\nalgorithms = [\"RS256\", \"ES256\"]\n\
         service_accounts = { gateway = \"svc\" }",
    ) + &route("hpc", &up, &["idp"]);
    let gw = Gateway::start(Setup {
        body,
        ..Default::default()
    })
    .await;
    let old = idp.client_token().await;
    assert_eq!(get(&gw, "/hpc/x", &old).await.status(), 200);
    let fetched_at_start = idp.count("/jwks").await;
    // Tokens naming keys nobody published (ES256: quick to sign in a debug build), signed
    // now so that sending them takes no time.
    let (_, claims) = jwt_parts(&old);
    let pem = rcgen::KeyPair::generate().unwrap().serialize_pem();
    let key = jsonwebtoken::EncodingKey::from_ec_pem(pem.as_bytes()).unwrap();
    let unknown: Vec<String> = (0..21)
        .map(|i| {
            let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
            h.kid = Some(format!("unknown-{i}"));
            jsonwebtoken::encode(&h, &claims, &key).unwrap()
        })
        .collect();
    // The first fetch was at discovery; let the refresh interval pass.
    tokio::time::sleep(Duration::from_millis(3100)).await;

    let kid = idp.rotate_key().await;
    let new = idp.client_token().await;
    assert_eq!(jwt_parts(&new).0["kid"], kid.as_str());
    let r = get(&gw, "/hpc/x", &new).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(idp.count("/jwks").await, fetched_at_start + 1);
    // Old keys stay published, and stay trusted.
    assert_eq!(get(&gw, "/hpc/x", &old).await.status(), 200);

    // A flood of tokens naming unknown keys: refused, and no more fetches this interval.
    for t in &unknown[..20] {
        refused(get(&gw, "/hpc/x", t).await, "does not publish").await;
    }
    assert_eq!(
        idp.count("/jwks").await,
        fetched_at_start + 1,
        "unknown kids within the interval fetch nothing"
    );
    // The next interval allows one fetch again.
    tokio::time::sleep(Duration::from_millis(3100)).await;
    refused(get(&gw, "/hpc/x", &unknown[20]).await, "does not publish").await;
    assert_eq!(idp.count("/jwks").await, fetched_at_start + 2);
}

#[tokio::test]
async fn an_idp_down_at_start_means_503_until_it_is_up() {
    let port = free_port();
    let issuer = format!("http://127.0.0.1:{port}");
    let up = Recorder::start(Duration::ZERO).await;
    let body = bearer("idp", &issuer, "service_accounts = { gateway = \"svc\" }")
        + &route("hpc", &up, &["idp"]);
    let gw = Gateway::start(Setup {
        body,
        ..Default::default()
    })
    .await; // started, and ready, without its IdP
    let unverifiable = format!(
        "{}.{}.sig",
        segment(&json!({"alg": "RS256", "kid": "k"})),
        segment(&json!({"iss": issuer, "aud": "urn:hpcgate", "exp": 4_000_000_000u64}))
    );
    for _ in 0..2 {
        expect_error(get(&gw, "/hpc/x", &unverifiable).await, 503, "unavailable").await;
    }
    assert!(
        gw.log_text()
            .contains("cannot discover the identity provider")
    );

    let port = port.to_string();
    let idp = Idp::start_with(&[("OIDC_PORT", port.as_str())]);
    assert_eq!(idp.issuer(), issuer);
    let token = idp.client_token().await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = get(&gw, "/hpc/x", &token).await;
        if r.status() == 200 {
            break;
        }
        assert_eq!(r.status(), 503, "until discovery works: 503, nothing else");
        assert!(Instant::now() < deadline, "the gateway never found its IdP");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(up.last().one("x-forwarded-user"), Some("svc"));
}

/// A fake IdP whose discovery works but whose keys cannot be had: `jwks` is a URL that
/// hangs or answers garbage.
async fn fake_idp(jwks: Option<&str>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let jwks_uri = match jwks {
        Some(u) => u.to_string(),
        None => format!("{issuer}/jwks"),
    };
    let doc = json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/auth"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": jwks_uri,
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    });
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            axum::routing::get(move || async move { axum::Json(doc) }),
        )
        .route(
            "/jwks",
            axum::routing::get(|| async {
                ([("content-type", "application/json")], "{\"keys\": 7")
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    issuer
}

#[tokio::test]
async fn a_jwks_that_hangs_or_is_garbage_means_503_and_the_gateway_stays_up() {
    let silent = hanging_backend().await;
    let hanging = fake_idp(Some(&format!("http://{silent}/jwks"))).await;
    let garbage = fake_idp(None).await;
    let up = Recorder::start(Duration::ZERO).await;
    let body = bearer("hanging", &hanging, "")
        + &bearer("garbage", &garbage, "")
        + &route("a", &up, &["hanging"])
        + &route("b", &up, &["garbage"]);
    let gw = Gateway::start(Setup {
        body,
        ..Default::default()
    })
    .await;
    for (path, issuer) in [("/a/x", &hanging), ("/b/x", &garbage)] {
        let token = format!(
            "{}.{}.sig",
            segment(&json!({"alg": "RS256", "kid": "k"})),
            segment(&json!({"iss": issuer, "aud": "urn:hpcgate", "exp": 4_000_000_000u64}))
        );
        for _ in 0..3 {
            let start = Instant::now();
            expect_error(get(&gw, path, &token).await, 503, "unavailable").await;
            assert!(
                start.elapsed() < Duration::from_secs(2),
                "{:?}",
                start.elapsed()
            );
        }
    }
    let r = gw
        .client(false)
        .get(gw.url("/-/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(up.requests().is_empty());
}

#[tokio::test]
async fn a_user_token_without_the_user_claim_is_not_the_clients_service_account() {
    let idp = Idp::start();
    let up = Recorder::start(Duration::ZERO).await;
    // The IdP's user access tokens have no `nickname`: with it as the user claim, alice's
    // token (obtained through the service account's own client) names nobody.
    let body = bearer(
        "idp",
        &idp.issuer(),
        "username_claim = \"nickname\"\nservice_accounts = { gateway = \"svc-gateway\" }",
    ) + &bearer(
        "taken",
        &idp.issuer(),
        "service_accounts = { gateway = \"svc-gateway\", portal = \"alice\" }",
    ) + &route("hpc", &up, &["idp"])
        + &route("taken", &up, &["taken"]);
    let gw = Gateway::start(Setup {
        body,
        ..Default::default()
    })
    .await;
    let service = idp.client_token().await;
    let r = get(&gw, "/hpc/x", &service).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(up.last().one("x-forwarded-user"), Some("svc-gateway"));

    let alice = idp.user_tokens("alice");
    let token = alice["access_token"].as_str().unwrap();
    refused(get(&gw, "/hpc/x", token).await, "names no user").await;
    // Nor may a user's token take a service account's name.
    refused(get(&gw, "/taken/x", token).await, "service account").await;
    assert_eq!(
        up.requests().len(),
        1,
        "only the service's request went upstream"
    );
}
