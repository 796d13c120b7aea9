//! Gateway-issued tokens: `POST /auth/token` with Basic credentials (static users here, LDAP
//! in tests/ldap.rs), the JWKS, the `gateway_jwt` authenticator's refusals, and key rotation
//! with `hpcgate rotate-signing-key`.

mod common;

use std::process::Command;
use std::time::Duration;

use base64::Engine;
use common::*;

fn body(up: &Recorder) -> String {
    format!(
        "[authenticators.tokens]\ntype = \"gateway_jwt\"\n\n\
         [tokens]\nauthenticators = [\"local\"]\nttl = \"10m\"\n\n\
         [pools.up]\nbackends = [\"http://{}\"]\n\n\
         [[routes]]\nname = \"hpc\"\npath_prefix = \"/hpc\"\npool = \"up\"\n\
         authenticators = [\"tokens\"]\n",
        up.addr
    )
}

async fn token(gw: &Gateway, user: &str, pw: &str) -> reqwest::Response {
    gw.client(false)
        .post(gw.url("/auth/token"))
        .header("authorization", basic(user, pw))
        .send()
        .await
        .unwrap()
}

async fn with_bearer(gw: &Gateway, t: &str) -> reqwest::Response {
    gw.client(false)
        .get(gw.url("/hpc/x"))
        .header("authorization", format!("Bearer {t}"))
        .send()
        .await
        .unwrap()
}

async fn jwks(gw: &Gateway) -> serde_json::Value {
    gw.client(false)
        .get(gw.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn b64(v: &serde_json::Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

fn part(t: &str, i: usize) -> serde_json::Value {
    let p = t.split('.').nth(i).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(p)
            .unwrap(),
    )
    .unwrap()
}

/// Signs `claims` with the gateway's own current key (read from its state directory), so
/// only the claim under test is wrong.
fn sign_with_gateway_key(gw: &Gateway, claims: &serde_json::Value) -> String {
    let dir = gw.dir.path().join("state/signing-keys");
    let kid = std::fs::read_to_string(dir.join("current")).unwrap();
    let pem = std::fs::read(dir.join(format!("{}.pem", kid.trim()))).unwrap();
    let key = jsonwebtoken::EncodingKey::from_ed_pem(&pem).unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(kid.trim().to_string());
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

#[tokio::test]
async fn tokens_are_issued_for_passwords_and_accepted_until_they_are_not() {
    let up = Recorder::start(Duration::ZERO).await;
    let gw = Gateway::start(Setup {
        body: body(&up),
        gateway_authenticators: vec!["tokens".into()],
        ..Default::default()
    })
    .await;

    // Issue.
    let r = token(&gw, "alice", ALICE_PW).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["expires_in"], 600);
    let t = v["access_token"].as_str().unwrap().to_string();
    let (header, claims) = (part(&t, 0), part(&t, 1));
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(claims["sub"], "alice");
    assert_eq!(
        claims["groups"],
        serde_json::json!(["hpc-admins", "hpc-users"])
    );
    assert_eq!(claims["iss"], "hpcgate");
    assert_eq!(claims["aud"], "hpcgate");
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        600
    );

    // The JWKS publishes the key that signed it.
    let jwks = jwks(&gw).await;
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["kid"], header["kid"]);
    assert_eq!(
        (keys[0]["kty"].as_str(), keys[0]["crv"].as_str()),
        (Some("OKP"), Some("Ed25519"))
    );
    assert!(keys[0].get("d").is_none(), "no private part");

    // It authenticates: the upstream sees alice, whoami says how.
    assert_eq!(with_bearer(&gw, &t).await.status(), 200);
    let seen = up.last();
    assert_eq!(seen.one("x-forwarded-user"), Some("alice"));
    assert_eq!(
        seen.one("authorization"),
        None,
        "the token stays at the gateway"
    );
    let who: serde_json::Value = gw
        .client(false)
        .get(gw.url("/-/whoami"))
        .header("authorization", format!("Bearer {t}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(who["data"]["method"], "gateway_jwt");
    assert_eq!(who["data"]["user"], "alice");

    // Wrong password, no credentials, GET, a token for a token: refused.
    expect_error(token(&gw, "alice", "nope").await, 401, "unauthorized").await;
    let r = gw
        .client(false)
        .post(gw.url("/auth/token"))
        .send()
        .await
        .unwrap();
    expect_error(r, 401, "unauthorized").await;
    let r = gw
        .client(false)
        .get(gw.url("/auth/token"))
        .header("authorization", basic("alice", ALICE_PW))
        .send()
        .await
        .unwrap();
    expect_error(r, 405, "method_not_allowed").await;
    let r = gw
        .client(false)
        .post(gw.url("/auth/token"))
        .header("authorization", format!("Bearer {t}"))
        .send()
        .await
        .unwrap();
    expect_error(r, 401, "unauthorized").await;

    // Tampered: sub changed, signature kept.
    let mut forged = claims.clone();
    forged["sub"] = "bob".into();
    let parts: Vec<&str> = t.split('.').collect();
    let tampered = format!("{}.{}.{}", parts[0], b64(&forged), parts[2]);
    expect_error(with_bearer(&gw, &tampered).await, 401, "unauthorized").await;
    // Signature bytes flipped.
    let mut sig = parts[2].to_string();
    let flip = if sig.starts_with('A') { "B" } else { "A" };
    sig.replace_range(0..1, flip);
    let bad_sig = format!("{}.{}.{sig}", parts[0], parts[1]);
    expect_error(with_bearer(&gw, &bad_sig).await, 401, "unauthorized").await;
    // alg: none, with our kid and no signature.
    let none_header = serde_json::json!({"alg": "none", "typ": "JWT", "kid": header["kid"]});
    let none = format!("{}.{}.", b64(&none_header), parts[1]);
    expect_error(with_bearer(&gw, &none).await, 401, "unauthorized").await;
    // HS256 keyed with our public key.
    let x = keys[0]["x"].as_str().unwrap();
    let mut hs = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hs.kid = header["kid"].as_str().map(str::to_string);
    let hmac = jsonwebtoken::encode(
        &hs,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(x.as_bytes()),
    )
    .unwrap();
    expect_error(with_bearer(&gw, &hmac).await, 401, "unauthorized").await;

    // Properly signed by our key, but expired / for another audience / another issuer.
    let now = hpcgate::db::now();
    let base = serde_json::json!({"sub": "alice", "groups": [], "iss": "hpcgate", "aud": "hpcgate",
                                  "iat": now, "nbf": now, "exp": now + 600, "jti": "t"});
    let ok = sign_with_gateway_key(&gw, &base);
    assert_eq!(
        with_bearer(&gw, &ok).await.status(),
        200,
        "the control token works"
    );
    for (field, value, says) in [
        ("exp", serde_json::json!(now - 120), "expired"),
        ("aud", serde_json::json!("grafana"), "audience"),
        ("iss", serde_json::json!("https://evil.example"), "issuer"),
    ] {
        let mut c = base.clone();
        c[field] = value;
        let r = with_bearer(&gw, &sign_with_gateway_key(&gw, &c)).await;
        assert_eq!(r.status(), 401, "{field}");
        let text = r.text().await.unwrap();
        assert!(text.contains(says), "{field}: {text}");
    }
}

#[tokio::test]
async fn rotation_keeps_old_tokens_valid_and_signs_new_ones_with_the_new_key() {
    let up = Recorder::start(Duration::ZERO).await;
    let gw = Gateway::start(Setup {
        body: body(&up),
        ..Default::default()
    })
    .await;
    let old: serde_json::Value = token(&gw, "bob", BOB_PW).await.json().await.unwrap();
    let old = old["access_token"].as_str().unwrap().to_string();
    let out = Command::new(bin())
        .args(["rotate-signing-key", "--config"])
        .arg(gw.dir.path().join("hpcgate.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The running gateway notices within a second or so.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let new: serde_json::Value = token(&gw, "bob", BOB_PW).await.json().await.unwrap();
    let new = new["access_token"].as_str().unwrap().to_string();
    assert_ne!(part(&old, 0)["kid"], part(&new, 0)["kid"]);
    assert_eq!(with_bearer(&gw, &old).await.status(), 200);
    assert_eq!(with_bearer(&gw, &new).await.status(), 200);
    let jwks = jwks(&gw).await;
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
    // Three more rotations: the first key is pruned, and its tokens stop working.
    for _ in 0..3 {
        let out = Command::new(bin())
            .args(["rotate-signing-key", "--config"])
            .arg(gw.dir.path().join("hpcgate.toml"))
            .output()
            .unwrap();
        assert!(out.status.success());
        // Distinct modification times order the keys.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    expect_error(with_bearer(&gw, &old).await, 401, "unauthorized").await;
}

#[tokio::test]
async fn the_token_endpoint_is_off_unless_configured() {
    let up = Recorder::start(Duration::ZERO).await;
    let body = format!(
        "[pools.up]\nbackends = [\"http://{}\"]\n\n\
         [[routes]]\nname = \"hpc\"\npath_prefix = \"/hpc\"\npool = \"up\"\n\
         authenticators = [\"local\"]\n",
        up.addr
    );
    let gw = Gateway::start(Setup {
        body,
        ..Default::default()
    })
    .await;
    expect_error(token(&gw, "alice", ALICE_PW).await, 404, "not_found").await;
    let r = gw
        .client(false)
        .get(gw.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    expect_error(r, 404, "not_found").await;
    assert!(!gw.dir.path().join("state/signing-keys").exists());
}
