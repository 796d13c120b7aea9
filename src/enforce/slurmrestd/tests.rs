//! Unit tests of the Slurm step (the real Slurm is in tests/slurm.rs).

use super::*;
use crate::authenticate::Method;
use crate::enforce::slurmrestd::config::SlurmClaims;

fn gate(mode: SlurmTokenMode, user_claim: &str) -> SlurmGate {
    SlurmGate::new(
        "slurm",
        &SlurmRoute {
            mode,
            token_lifetime: Duration::from_secs(300),
            claims: SlurmClaims {
                user: user_claim.into(),
                issued_at: "iat".into(),
                expires: "exp".into(),
            },
            user_map: [("alice.smith".to_string(), "alice".to_string())].into(),
            admin_diag: false,
            health_user: "root".into(),
            denied_users: vec!["root".into()],
        },
    )
}

fn headers(g: &SlurmGate, id: &Identity, auth: Option<&str>) -> (String, String) {
    let mut client = http::HeaderMap::new();
    if let Some(a) = auth {
        client.insert("authorization", a.parse().unwrap());
    }
    let mut req = RequestHeader::build("GET", b"/slurm/v0.0.38/ping", None).unwrap();
    g.write_headers_for(&mut req, id, &client).unwrap();
    let h = |n: &str| req.headers.get(n).unwrap().to_str().unwrap().to_string();
    (h(USER_HEADER), h(TOKEN_HEADER))
}

#[test]
fn minted_tokens_carry_slurms_claims_and_are_cached_per_user() {
    let key = b"0123456789abcdef0123456789abcdef";
    let g = gate(
        SlurmTokenMode::Mint {
            key: JwtKey::new(key.to_vec()),
        },
        "sun",
    );
    let alice = Identity::for_test("alice.smith", &[]);
    let (user, token) = headers(&g, &alice, None);
    assert_eq!(user, "alice");
    let mut v = jsonwebtoken::Validation::new(Algorithm::HS256);
    v.set_required_spec_claims(&["exp", "iat", "sun"]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(
        &token,
        &jsonwebtoken::DecodingKey::from_secret(key),
        &v,
    )
    .unwrap()
    .claims;
    assert_eq!(claims["sun"], "alice");
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        300
    );
    // The same token until shortly before it expires; another user gets another.
    assert_eq!(headers(&g, &alice, None).1, token);
    let bob = headers(&g, &Identity::for_test("bob", &[]), None);
    assert_eq!(bob.0, "bob");
    assert_ne!(bob.1, token);
    // Newer Slurm: other claim names.
    let g = gate(
        SlurmTokenMode::Mint {
            key: JwtKey::new(key.to_vec()),
        },
        "username",
    );
    let (_, token) = headers(&g, &alice, None);
    let payload = token.split('.').nth(1).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["username"], "alice");
    assert!(claims.get("sun").is_none());
}

#[test]
fn passthrough_sends_the_callers_bearer_token_as_the_slurm_token() {
    let g = gate(SlurmTokenMode::Passthrough, "sun");
    let id = Identity::for_test_by("bob", Method::OidcBearer);
    let (user, token) = headers(&g, &id, Some("Bearer eyJidp.token.sig"));
    assert_eq!((user.as_str(), token.as_str()), ("bob", "eyJidp.token.sig"));
    // A Bearer header beside a cookie, a password or an API key proved nothing: refused.
    for method in [
        Method::OidcLogin,
        Method::Static,
        Method::ApiKey,
        Method::ClientCert,
    ] {
        let other = Caller::User(Identity::for_test_by("bob", method));
        let mut h = http::HeaderMap::new();
        h.insert("authorization", "Bearer eyJidp.token.sig".parse().unwrap());
        let r = block_on(g.prepare(&other, &h));
        assert!(matches!(r, Err(Rejection::Forbidden(_))), "{method}");
    }
}

/// Runs a future to completion on a small runtime (the test is synchronous).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

fn jwt_with_exp(exp: i64) -> String {
    let enc = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    format!(
        "{}.{}.c2ln",
        enc(r#"{"alg":"HS256","typ":"JWT"}"#),
        enc(&format!(r#"{{"exp":{exp},"sun":"root"}}"#))
    )
}

#[tokio::test]
async fn impersonation_uses_the_files_token_and_refuses_an_expired_one() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    let good = jwt_with_exp(now_secs() + 3600);
    std::fs::write(&file, format!("SLURM_JWT={good}\n")).unwrap();
    let g = gate(
        SlurmTokenMode::Impersonate {
            token_file: file.clone(),
        },
        "sun",
    );
    let alice = Caller::User(Identity::for_test("alice", &[]));
    g.prepare(&alice, &http::HeaderMap::new()).await.unwrap();
    let id = Identity::for_test("alice", &[]);
    assert_eq!(headers(&g, &id, None), ("alice".into(), good));
    assert_eq!(
        g.health_headers().await.unwrap().unwrap().0,
        "root",
        "checks act as health_user"
    );

    // An expired token (re-read after TOKEN_FILE_RELOAD): 503, never a pass.
    let g = gate(
        SlurmTokenMode::Impersonate {
            token_file: file.clone(),
        },
        "sun",
    );
    std::fs::write(&file, jwt_with_exp(now_secs() - 1)).unwrap();
    let r = g
        .prepare(&alice, &http::HeaderMap::new())
        .await
        .unwrap_err();
    assert_eq!(r.status(), 503);
    // A missing file and no token yet: 503 as well.
    std::fs::remove_file(&file).unwrap();
    let g = gate(SlurmTokenMode::Impersonate { token_file: file }, "sun");
    let r = g
        .prepare(&alice, &http::HeaderMap::new())
        .await
        .unwrap_err();
    assert_eq!(r.status(), 503);
}

#[test]
fn names_slurm_cannot_take_are_refused() {
    let g = gate(SlurmTokenMode::Passthrough, "sun");
    let r = g
        .user_for(&Identity::for_test("bob smith", &[]))
        .unwrap_err();
    assert_eq!(r.status(), 403);
    // root (say, a directory user of that name) is never acted as.
    let r = g.user_for(&Identity::for_test("root", &[])).unwrap_err();
    assert_eq!(r.status(), 403);
}

#[test]
fn posix_names() {
    for ok in ["alice", "_svc", "a.b-c_d", "host$", "Bob1"] {
        assert!(is_posix_name(ok), "{ok}");
    }
    for bad in [
        "",
        "1abc",
        "-x",
        "a b",
        "alice@example.org",
        "ro ot",
        "é",
        &"a".repeat(33),
    ] {
        assert!(!is_posix_name(bad), "{bad}");
    }
}

#[test]
fn token_files_and_unverified_expiry() {
    let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"exp":42}"#);
    let t = format!("SLURM_JWT=aGVhZA.{claims}.c2ln\n");
    assert_eq!(token_in_file(&t), format!("aGVhZA.{claims}.c2ln"));
    assert_eq!(unverified_expiry(&t), Some(Some(42)));
    assert_eq!(unverified_expiry("not a token"), None);
}
