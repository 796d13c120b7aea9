//! The Slurm step of `kind = "slurmrestd"` routes: who the user is to Slurm, and the token
//! that proves it (`X-SLURM-USER-NAME` + `X-SLURM-USER-TOKEN`).
//!
//! slurmrestd trusts whoever holds a token, so the gateway is its authenticating proxy:
//! inbound Slurm headers were stripped by `sanitize`, and here they are written from the
//! [`Permit`] only. Three modes (`[routes.slurm] token_mode`):
//! - `mint`: an HS256 token per user, signed with Slurm's own `jwt_hs256.key` (claims `sun`,
//!   `iat`, `exp` by default), cached per user until shortly before it expires;
//! - `impersonate`: one token of the SlurmUser, re-read from a file, plus the user's name;
//! - `passthrough`: the user's own IdP bearer token, for a Slurm that checks JWKS.
//!
//! All JOSE work is jsonwebtoken's. Neither keys nor tokens are ever logged.

pub mod config;
pub mod paths;

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use pingora::http::RequestHeader;

use crate::authenticate::Caller;
use crate::authenticate::Identity;
use crate::authenticate::Method;
use crate::enforce::slurmrestd::config::{SlurmRoute, SlurmTokenMode};
use crate::error::Rejection;
use crate::secret::Secret;

pub const USER_HEADER: &str = "x-slurm-user-name";
pub const TOKEN_HEADER: &str = "x-slurm-user-token";

/// How often an impersonation token file is re-read.
const TOKEN_FILE_RELOAD: Duration = Duration::from_secs(30);

/// Slurm's HS256 key: root-equivalent. `Debug` prints `***`.
#[derive(Clone)]
pub struct JwtKey(Arc<[u8]>);

impl JwtKey {
    pub fn new(bytes: Vec<u8>) -> Self {
        JwtKey(bytes.into())
    }
}

/// A token for `user` signed with Slurm's key, with Slurm's default claim names (`sun`,
/// `iat`, `exp`): for the gateway's own calls (the accounting ingest), not for requests.
pub fn mint_token(key: &JwtKey, user: &str, lifetime_secs: i64) -> Result<String, String> {
    let now = now_secs();
    let claims = serde_json::json!({ "sun": user, "iat": now, "exp": now + lifetime_secs });
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(&key.0),
    )
    .map_err(|e| format!("cannot sign a Slurm token: {e}"))
}

impl std::fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// A user name Slurm (and `getpwnam`) can take: a letter or `_`, then letters, digits,
/// `_ . -`, at most 32 characters, optionally ending in `$`.
pub fn is_posix_name(name: &str) -> bool {
    let body = name.strip_suffix('$').unwrap_or(name);
    let mut chars = body.chars();
    !body.is_empty()
        && name.len() <= 32
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// The token in a token file: the whole content, or `scontrol token`'s `SLURM_JWT=…` line.
pub fn token_in_file(text: &str) -> &str {
    let t = text.trim();
    t.strip_prefix("SLURM_JWT=").unwrap_or(t)
}

/// The `exp` of a JWT the gateway cannot verify (it holds no key for it), only to warn
/// before it runs out. `None` if it is not a JWT; `Some(None)` if it has no `exp`.
pub fn unverified_expiry(token: &str) -> Option<Option<i64>> {
    let token = token_in_file(token);
    let mut parts = token.split('.');
    let (_, Some(unverified_payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(unverified_payload)
        .ok()?;
    let unverified_claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    Some(unverified_claims.get("exp").and_then(|v| v.as_i64()))
}

use crate::db::now as now_secs;

/// The SlurmUser's token in `impersonate` mode, as last read from its file.
struct Impersonation {
    path: std::path::PathBuf,
    current: ArcSwapOption<(Secret, Option<i64>, Instant)>,
    reloading: tokio::sync::Mutex<()>,
}

/// The Slurm step of one route, built at start (and reload).
pub struct SlurmGate {
    route: String,
    config: SlurmRoute,
    key: Option<EncodingKey>,
    /// Minted tokens per Slurm user, dropped a little before they expire.
    cache: moka::sync::Cache<String, Arc<str>>,
    impersonation: Option<Impersonation>,
}

impl SlurmGate {
    pub fn new(route: &str, config: &SlurmRoute) -> Self {
        let lifetime = config.token_lifetime;
        let margin = (lifetime / 4).min(Duration::from_secs(60));
        SlurmGate {
            route: route.to_string(),
            key: match &config.mode {
                SlurmTokenMode::Mint { key } => Some(EncodingKey::from_secret(&key.0)),
                _ => None,
            },
            cache: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(lifetime - margin)
                .build(),
            impersonation: match &config.mode {
                SlurmTokenMode::Impersonate { token_file } => Some(Impersonation {
                    path: token_file.clone(),
                    current: ArcSwapOption::empty(),
                    reloading: tokio::sync::Mutex::new(()),
                }),
                _ => None,
            },
            config: config.clone(),
        }
    }

    pub fn mode(&self) -> &'static str {
        self.config.mode.as_str()
    }

    /// The Slurm user for an identity: mapped through `user_map`, and a valid POSIX name.
    pub fn user_for<'a>(&'a self, id: &'a Identity) -> Result<&'a str, Rejection> {
        let name = self
            .config
            .user_map
            .get(id.user())
            .map(String::as_str)
            .unwrap_or(id.user());
        if self.config.denied_users.iter().any(|d| d == name) {
            Err(Rejection::Forbidden(format!(
                "the Slurm user `{name}` may not be used through the gateway"
            )))
        } else if is_posix_name(name) {
            Ok(name)
        } else {
            Err(Rejection::Forbidden(format!(
                "`{}` is not a valid POSIX user name, so Slurm cannot be told who you are; \
                 ask the operators to map it in [routes.slurm] user_map",
                id.user()
            )))
        }
    }

    /// The enforce step, in admission: refuses callers Slurm cannot be told about, and
    /// makes sure the token this request needs is at hand.
    pub async fn prepare(
        &self,
        caller: &Caller,
        headers: &http::HeaderMap,
    ) -> Result<(), Rejection> {
        let Some(id) = caller.identity() else {
            return Err(Rejection::Forbidden(
                "a slurmrestd route needs an authenticated user".into(),
            ));
        };
        self.user_for(id)?;
        match &self.config.mode {
            SlurmTokenMode::Mint { .. } => Ok(()),
            SlurmTokenMode::Passthrough => {
                if user_bearer(id, headers).is_none() {
                    return Err(Rejection::Forbidden(format!(
                        "route `{}` passes your identity provider's token to Slurm: call it \
                         with Authorization: Bearer <your IdP access token>",
                        self.route
                    )));
                }
                Ok(())
            }
            SlurmTokenMode::Impersonate { .. } => self.impersonation_token().await.map(|_| ()),
        }
    }

    /// The SlurmUser token, re-read from its file when older than [`TOKEN_FILE_RELOAD`].
    async fn impersonation_token(&self) -> Result<Arc<(Secret, Option<i64>, Instant)>, Rejection> {
        let Some(imp) = &self.impersonation else {
            return Err(Rejection::Internal(
                "no impersonation token configured".into(),
            ));
        };
        let fresh = |c: &Option<Arc<(Secret, Option<i64>, Instant)>>| {
            c.as_ref()
                .filter(|t| t.2.elapsed() < TOKEN_FILE_RELOAD)
                .cloned()
        };
        if let Some(t) = fresh(&imp.current.load_full()) {
            return check_expiry(&self.route, t);
        }
        let _guard = imp.reloading.lock().await;
        if let Some(t) = fresh(&imp.current.load_full()) {
            return check_expiry(&self.route, t);
        }
        match tokio::fs::read_to_string(&imp.path).await {
            Ok(text) if unverified_expiry(&text).is_some() => {
                let token = token_in_file(&text).to_string();
                let exp = unverified_expiry(&token).flatten();
                if let Some(exp) = exp
                    && exp - now_secs() < 600
                {
                    tracing::warn!(
                        route = %self.route,
                        file = %imp.path.display(),
                        expires_in_s = exp - now_secs(),
                        "the SlurmUser token for impersonation expires soon; renew the file"
                    );
                }
                let t = Arc::new((Secret::new(token), exp, Instant::now()));
                imp.current.store(Some(t.clone()));
                check_expiry(&self.route, t)
            }
            other => {
                let why = match other {
                    Err(e) => e.to_string(),
                    Ok(_) => "it does not hold a JWT".into(),
                };
                tracing::warn!(
                    route = %self.route,
                    file = %imp.path.display(),
                    error = %why,
                    "cannot re-read the SlurmUser token file; keeping the last token"
                );
                match imp.current.load_full() {
                    Some(old) => {
                        // Try again in TOKEN_FILE_RELOAD, not on every request.
                        let t = Arc::new((old.0.clone(), old.1, Instant::now()));
                        imp.current.store(Some(t.clone()));
                        check_expiry(&self.route, t)
                    }
                    None => Err(Rejection::Unavailable(format!(
                        "route `{}`: the gateway has no Slurm token to act with; see its log",
                        self.route
                    ))),
                }
            }
        }
    }

    /// The Slurm headers of a health check: the `health_user` (mint) or the SlurmUser token
    /// (impersonate); `None` in passthrough mode (there is no user to borrow a token from).
    pub async fn health_headers(&self) -> Result<Option<(String, String)>, String> {
        let user = self.config.health_user.clone();
        match &self.config.mode {
            SlurmTokenMode::Mint { .. } => {
                let token = self.minted(&user)?.to_string();
                Ok(Some((user, token)))
            }
            SlurmTokenMode::Impersonate { .. } => {
                let t = self
                    .impersonation_token()
                    .await
                    .map_err(|r| r.detail().to_string())?;
                Ok(Some((user, t.0.expose().to_string())))
            }
            SlurmTokenMode::Passthrough => Ok(None),
        }
    }

    /// A minted token for `user`, from the cache while it has time left.
    fn minted(&self, user: &str) -> Result<Arc<str>, String> {
        let cached = self.cache.get(user);
        crate::process::telemetry::metrics().cache_lookup("slurm_token", cached.is_some());
        if let Some(t) = cached {
            return Ok(t);
        }
        let key = self.key.as_ref().ok_or("mint mode without a key")?;
        let now = now_secs();
        let c = &self.config.claims;
        let mut claims = serde_json::Map::new();
        claims.insert(
            c.expires.clone(),
            (now + self.config.token_lifetime.as_secs() as i64).into(),
        );
        claims.insert(c.issued_at.clone(), now.into());
        claims.insert(c.user.clone(), user.into());
        let token: Arc<str> = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, key)
            .map_err(|e| format!("cannot sign a Slurm token: {e}"))?
            .into();
        self.cache.insert(user.to_string(), token.clone());
        crate::process::telemetry::metrics()
            .slurm_tokens
            .with_label_values(&[self.route.as_str()])
            .inc();
        Ok(token)
    }

    /// Writes `X-SLURM-USER-NAME` and `X-SLURM-USER-TOKEN` for the admitted caller (from the
    /// permit). `admit` ran [`SlurmGate::prepare`] before, so failures here are internal
    /// errors.
    pub fn write_headers(
        &self,
        req: &mut RequestHeader,
        caller: &Caller,
        client_headers: &http::HeaderMap,
    ) -> Result<(), String> {
        let id = caller
            .identity()
            .ok_or("a slurmrestd request without a user")?;
        self.write_headers_for(req, id, client_headers)
    }

    fn write_headers_for(
        &self,
        req: &mut RequestHeader,
        id: &Identity,
        client_headers: &http::HeaderMap,
    ) -> Result<(), String> {
        let user = self.user_for(id).map_err(|r| r.detail().to_string())?;
        let token: Arc<str> = match &self.config.mode {
            SlurmTokenMode::Mint { .. } => self.minted(user)?,
            SlurmTokenMode::Impersonate { .. } => {
                let imp = self
                    .impersonation
                    .as_ref()
                    .ok_or("impersonate mode without a token")?;
                let t = imp
                    .current
                    .load_full()
                    .ok_or("no impersonation token loaded")?;
                t.0.expose().into()
            }
            SlurmTokenMode::Passthrough => user_bearer(id, client_headers)
                .ok_or("passthrough without a bearer token")?
                .into(),
        };
        let mut token = http::HeaderValue::from_str(&token)
            .map_err(|_| "a Slurm token is not a valid header value".to_string())?;
        token.set_sensitive(true);
        req.insert_header(USER_HEADER, user)
            .map_err(|e| e.to_string())?;
        req.insert_header(TOKEN_HEADER, token)
            .map_err(|e| e.to_string())?;
        Ok(())
    }
}

fn check_expiry(
    route: &str,
    t: Arc<(Secret, Option<i64>, Instant)>,
) -> Result<Arc<(Secret, Option<i64>, Instant)>, Rejection> {
    match t.1 {
        Some(exp) if exp <= now_secs() => Err(Rejection::Unavailable(format!(
            "route `{route}`: the gateway's Slurm token has expired; the operators must renew \
             it"
        ))),
        _ => Ok(t),
    }
}

/// The caller's own bearer token, if it is one the gateway may pass on: never a credential
/// of the gateway's own (API keys, gateway tokens) or a trusted service's.
fn user_bearer<'a>(id: &Identity, headers: &'a http::HeaderMap) -> Option<&'a str> {
    // Only a token that proved this very identity: the IdP's, checked by `oidc_bearer`.
    // (Any other Bearer header beside a cookie, a key or a certificate proves nothing.)
    // Every method is named, so a new one must be placed here.
    let proven_by_bearer = match id.method() {
        Method::OidcBearer => true,
        Method::Static
        | Method::Ldap
        | Method::ApiKey
        | Method::TrustedHeader
        | Method::ClientCert
        | Method::GatewayJwt
        | Method::OidcLogin => false,
    };
    if !proven_by_bearer || id.via().is_some() {
        return None;
    }
    crate::authenticate::bearer_token(headers)
}

#[cfg(test)]
mod tests;
