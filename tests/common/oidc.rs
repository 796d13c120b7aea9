//! The real OpenID Connect provider of `tests/servers/oidc.sh` (oidc-provider 8.8.1), and
//! JWT pieces for crafting what it would never issue (foreign keys, `alg: none`).

use std::process::Command;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

use super::RealServer;

pub struct Idp {
    pub server: RealServer,
    http: reqwest::Client,
}

impl Idp {
    pub fn start() -> Idp {
        Self::start_with(&[])
    }

    /// With inputs of oidc.sh (`OIDC_PORT`, `OIDC_ACCESS_TOKEN_TTL`, …).
    pub fn start_with(env: &[(&str, &str)]) -> Idp {
        Idp {
            server: RealServer::start_with_env("oidc", env),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        }
    }

    pub fn issuer(&self) -> String {
        self.server.get("OIDC_ISSUER").to_string()
    }

    /// Fills in this IdP's login form, where `browser` was sent, as `user`, and waits until
    /// the browser is back at a URL starting with `landing`; returns that URL.
    pub async fn log_in(
        &self,
        browser: &super::webdriver::Browser,
        user: &str,
        landing: &str,
    ) -> String {
        browser
            .wait_for_url(&format!("{}/interaction/", self.issuer()))
            .await;
        browser.type_into("#username", user).await;
        browser.type_into("#password", &self.password(user)).await;
        browser.click("#submit").await;
        browser.wait_for_url(landing).await
    }

    pub fn password(&self, user: &str) -> String {
        self.server
            .get(&format!("{}_PASSWORD", user.to_ascii_uppercase()))
            .to_string()
    }

    /// An access token of the confidential client itself (client credentials).
    pub async fn client_token(&self) -> String {
        let r = self
            .http
            .post(format!("{}/token", self.issuer()))
            .basic_auth(
                self.server.get("OIDC_CLIENT_ID"),
                Some(self.server.get("OIDC_CLIENT_SECRET")),
            )
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        v["access_token"].as_str().unwrap().to_string()
    }

    /// A user's tokens from a real login through the IdP's form (authorization code + PKCE),
    /// by `tests/servers/check/oidc-login.sh`.
    pub fn user_tokens(&self, user: &str) -> Value {
        let script = format!(
            "{}/tests/servers/check/oidc-login.sh",
            env!("CARGO_MANIFEST_DIR")
        );
        let out = Command::new("bash")
            .arg(script)
            .arg(self.server.dir.path().join("env"))
            .arg(user)
            .arg(self.password(user))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "login as {user} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Logs `user` in at this IdP's form for a relying party's authorization request
    /// `auth_url` (the gateway's redirect from `/auth/login`), without a browser
    /// (`tests/servers/check/oidc-login.sh` with `AUTH_URL`), and returns the URL the IdP sends
    /// the browser back to: the relying party's callback with code and state.
    pub fn authorize(&self, auth_url: &str, user: &str) -> String {
        let script = format!(
            "{}/tests/servers/check/oidc-login.sh",
            env!("CARGO_MANIFEST_DIR")
        );
        let out = Command::new("bash")
            .arg(script)
            .arg(self.server.dir.path().join("env"))
            .arg(user)
            .arg(self.password(user))
            .env("AUTH_URL", auth_url)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "login as {user} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// A new signing key signs from now on (the old ones stay published); its kid.
    pub async fn rotate_key(&self) -> String {
        let r = self
            .http
            .post(self.server.get("OIDC_ROTATE_KEY_URL"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        v["kid"].as_str().unwrap().to_string()
    }

    /// How many requests the IdP has answered on `path` (e.g. `/jwks`, `/token`).
    pub async fn count(&self, path: &str) -> u64 {
        let v: Value = self
            .http
            .get(format!("{}/test/stats", self.issuer()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v[path].as_u64().unwrap_or(0)
    }

    /// Registers the client's redirect URIs (a gateway's port is known only once it runs).
    pub async fn register(&self, redirect_uris: &[String], post_logout_redirect_uris: &[String]) {
        let r = self
            .http
            .post(format!("{}/test/client", self.issuer()))
            .json(&serde_json::json!({
                "redirect_uris": redirect_uris,
                "post_logout_redirect_uris": post_logout_redirect_uris,
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
}

/// A JWT's header and claims, read without any check (the test crafts forgeries from them).
pub fn jwt_parts(token: &str) -> (Value, Value) {
    let mut parts = token.split('.');
    let mut next =
        || serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap()).unwrap();
    (next(), next())
}

/// base64url of a JSON value, as a JWT segment.
pub fn segment(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

/// A fresh RSA private key (PEM), not the IdP's, from openssl.
pub fn foreign_rsa_key(dir: &std::path::Path) -> Vec<u8> {
    let path = dir.join("foreign-key.pem");
    let out = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "openssl genpkey failed");
    std::fs::read(path).unwrap()
}
