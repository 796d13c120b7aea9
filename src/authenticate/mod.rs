//! The `authenticate` step: a route's ordered authenticators turn credentials into an
//! [`Identity`].
//!
//! Each authenticator says whether the request carries credentials it understands
//! ([`Outcome::NotMine`] lets the next one try). The first that recognises them decides: a
//! failure there is final, never passed on to the next authenticator or let through as
//! anonymous. A route whose only authenticator is of type `none` is public and has no
//! authentication step at all.

pub mod api_key;
pub mod client_cert;
pub mod config;
pub mod csrf;
pub mod gateway_jwt;
pub mod headers;
mod identity;
pub mod ldap;
pub mod oidc;
pub mod password;
pub mod static_users;
pub mod trusted_header;
pub mod verified;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine;

pub use identity::{Identity, Method, usable_group};

use crate::authenticate::config::AuthenticatorConfig;
use crate::error::Rejection;

/// What an authenticator may look at.
pub struct RequestInfo<'a> {
    pub headers: &'a http::HeaderMap,
    pub client: Option<IpAddr>,
    /// The identity headers the sanitizer removed (normalised names): only `trusted_header`
    /// reads them, and only for a proven trusted service.
    pub stripped: &'a http::HeaderMap,
    /// SHA-256 of the TLS client certificate, when the client presented one.
    pub client_cert_sha256: Option<&'a [u8]>,
    pub method: &'a http::Method,
    /// As the client sent it (a browser's login comes back to its path and query).
    pub uri: &'a http::Uri,
    /// Cookies for the response, whatever it turns out to be (a renewed session).
    pub set_cookies: &'a SetCookies,
}

/// `Set-Cookie` values an authenticator asks for, written on the request's response.
#[derive(Debug, Default)]
pub struct SetCookies(std::sync::Mutex<Vec<String>>);

impl SetCookies {
    pub fn add(&self, cookie: String) {
        if let Ok(mut v) = self.0.lock() {
            v.push(cookie);
        }
    }

    pub fn add_all(&self, cookies: impl IntoIterator<Item = String>) {
        if let Ok(mut v) = self.0.lock() {
            v.extend(cookies);
        }
    }

    pub fn take(&self) -> Vec<String> {
        self.0
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }
}

/// An authenticator's verdict on one request.
#[derive(Debug)]
pub enum Outcome {
    /// No credentials of mine here: let the next authenticator try.
    NotMine,
    /// A user name and password for a user my back end does not know: the next
    /// authenticator may know them. If none does, the chain answers exactly as for a wrong
    /// password and counts the failure ([`Authenticator::unknown_user_refused`]).
    UnknownUser,
    /// A known user with the wrong password (already counted): final, and answered exactly as
    /// an unknown user, so the answer does not tell which names exist.
    WrongPassword,
    Authenticated(Identity),
    /// My kind of credentials, and they are wrong (or my back end cannot answer): final.
    Rejected(Rejection),
}

/// One way of proving who a caller is. Later authenticators (LDAP, API keys, OIDC, …) plug
/// in by implementing this.
#[async_trait]
pub trait Authenticator: Send + Sync {
    /// The kind, as written in the config's `type` (`static`, `ldap`, …).
    fn kind(&self) -> &'static str;
    /// The `WWW-Authenticate` challenge this authenticator offers, if any.
    fn challenge(&self) -> Option<String>;
    async fn authenticate(&self, req: &RequestInfo<'_>) -> Outcome;
    /// The chain refused credentials this authenticator answered [`Outcome::UnknownUser`]
    /// to: count them for its brute-force throttle like a wrong password.
    fn unknown_user_refused(&self, _req: &RequestInfo<'_>) {}
}

/// Who is calling, once the authenticate step is done.
#[derive(Debug, Clone)]
pub enum Caller {
    /// A public route: nobody was asked to prove anything.
    Public,
    User(Identity),
}

impl Caller {
    pub fn identity(&self) -> Option<&Identity> {
        match self {
            Caller::Public => None,
            Caller::User(id) => Some(id),
        }
    }
}

/// The authentication a route (or a gateway endpoint) requires.
#[derive(Clone)]
pub enum RouteAuth {
    Public,
    Chain(Vec<Arc<dyn Authenticator>>),
}

impl RouteAuth {
    pub async fn authenticate(&self, req: &RequestInfo<'_>) -> Result<Caller, Rejection> {
        let chain = match self {
            RouteAuth::Public => return Ok(Caller::Public),
            RouteAuth::Chain(chain) => chain,
        };
        let mut unknown: Vec<&Arc<dyn Authenticator>> = Vec::new();
        for a in chain {
            match a.authenticate(req).await {
                Outcome::NotMine => continue,
                Outcome::UnknownUser => unknown.push(a),
                Outcome::WrongPassword => return Err(Self::unauthorized(chain, req)),
                Outcome::Authenticated(id) => return Ok(Caller::User(id)),
                Outcome::Rejected(r) => return Err(r),
            }
        }
        for a in unknown {
            a.unknown_user_refused(req);
        }
        Err(Self::unauthorized(chain, req))
    }

    /// The one answer to credentials nobody accepted: the same status, body and challenges
    /// for an unknown user, a wrong password, and a credential no authenticator understood.
    fn unauthorized(chain: &[Arc<dyn Authenticator>], req: &RequestInfo<'_>) -> Rejection {
        let mut challenges: Vec<String> = Vec::new();
        for c in chain.iter().filter_map(|a| a.challenge()) {
            if !challenges.contains(&c) {
                challenges.push(c);
            }
        }
        let challenge = challenges.join(", ");
        let reason = if req.headers.contains_key(http::header::AUTHORIZATION) {
            "invalid user name or password, or credentials this route does not accept"
        } else {
            "authentication required"
        };
        Rejection::Unauthorized {
            reason: reason.into(),
            challenge,
        }
    }
}

/// Every configured authenticator, built once per config.
pub struct Authenticators {
    by_name: BTreeMap<String, Option<Arc<dyn Authenticator>>>,
    /// The gateway's token signing keys, when tokens are issued or accepted.
    pub signing_keys: Option<Arc<crate::tokens::SigningKeys>>,
    /// The browser login, which also serves `/auth/…` (config allows one).
    login: Option<Arc<oidc::OidcLogin>>,
}

impl Authenticators {
    /// `db` is the gateway's database when the config uses one (API keys and the browser
    /// login need it); `privileged` are the users trusted services may not act for unless
    /// allowed by name.
    pub fn build(
        authenticators: &BTreeMap<String, AuthenticatorConfig>,
        tokens: &crate::tokens::Tokens,
        state_dir: &std::path::Path,
        db: Option<crate::db::Db>,
        privileged: &std::collections::BTreeSet<String>,
    ) -> Result<Self, String> {
        let wants_keys = !tokens.authenticators.is_empty()
            || authenticators
                .values()
                .any(|a| matches!(a, AuthenticatorConfig::GatewayJwt { .. }));
        let signing_keys = if wants_keys {
            Some(crate::tokens::SigningKeys::open(state_dir)?)
        } else {
            None
        };
        let mut by_name = BTreeMap::new();
        let mut login = None;
        // Trusted-header authenticators wrap another one: build them second.
        for (name, a) in authenticators {
            let built: Option<Arc<dyn Authenticator>> = match a {
                AuthenticatorConfig::None => None,
                AuthenticatorConfig::Static {
                    users,
                    realm,
                    cache_ttl,
                    throttle,
                    ..
                } => Some(Arc::new(static_users::StaticUsers::new(
                    name, users, realm, *cache_ttl, *throttle,
                )?)),
                AuthenticatorConfig::Ldap(cfg) => {
                    Some(Arc::new(ldap::LdapAuth::new(name, cfg.clone())?))
                }
                AuthenticatorConfig::ApiKey { cache_ttl } => {
                    let db = db.clone().ok_or("api_key without a database")?;
                    Some(Arc::new(api_key::ApiKeyAuth::new(name, db, *cache_ttl)))
                }
                AuthenticatorConfig::GatewayJwt { audience } => {
                    let keys = signing_keys.clone().ok_or("gateway_jwt without keys")?;
                    let audience = audience.as_deref().unwrap_or(&tokens.audience);
                    Some(Arc::new(gateway_jwt::GatewayJwt::new(
                        name,
                        keys,
                        &tokens.issuer,
                        audience,
                    )))
                }
                AuthenticatorConfig::ClientCert { certificates } => Some(Arc::new(
                    client_cert::ClientCertAuth::new(name, certificates.clone()),
                )),
                AuthenticatorConfig::OidcBearer(cfg) => {
                    Some(Arc::new(oidc::OidcBearer::new(name, cfg.clone())?))
                }
                AuthenticatorConfig::OidcLogin(cfg) => {
                    let db = db.clone().ok_or("oidc_login without a database")?;
                    let a = Arc::new(oidc::OidcLogin::new(name, cfg.clone(), state_dir, db)?);
                    login = Some(a.clone());
                    Some(a)
                }
                AuthenticatorConfig::TrustedHeader(_) => continue,
            };
            by_name.insert(name.clone(), built);
        }
        for (name, a) in authenticators {
            if let AuthenticatorConfig::TrustedHeader(t) = a {
                let inner = by_name
                    .get(&t.authenticator)
                    .cloned()
                    .flatten()
                    .ok_or_else(|| {
                        format!("{name}: authenticator {} not built", t.authenticator)
                    })?;
                let built: Arc<dyn Authenticator> = Arc::new(
                    trusted_header::TrustedHeaderAuth::new(name, inner, t.clone(), privileged),
                );
                by_name.insert(name.clone(), Some(built));
            }
        }
        Ok(Authenticators {
            by_name,
            signing_keys,
            login,
        })
    }

    /// The browser login, if one is configured.
    pub fn login(&self) -> Option<Arc<oidc::OidcLogin>> {
        self.login.clone()
    }

    /// The authentication for a list of names the config validated. An empty list (an
    /// endpoint nobody configured) yields `None`: that endpoint is not served.
    pub fn route_auth(&self, names: &[String]) -> Option<RouteAuth> {
        if names.is_empty() {
            return None;
        }
        let mut chain = Vec::new();
        for n in names {
            match self.by_name.get(n)? {
                None => return Some(RouteAuth::Public),
                Some(a) => chain.push(Arc::new(Measured {
                    name: n.clone(),
                    inner: a.clone(),
                }) as Arc<dyn Authenticator>),
            }
        }
        Some(RouteAuth::Chain(chain))
    }
}

/// An authenticator of a route's chain, counted and timed under its configured name
/// (`authentications_total`, `authentication_duration_seconds`). Requests it leaves to the
/// next one are not counted.
struct Measured {
    name: String,
    inner: Arc<dyn Authenticator>,
}

#[async_trait]
impl Authenticator for Measured {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn challenge(&self) -> Option<String> {
        self.inner.challenge()
    }

    async fn authenticate(&self, req: &RequestInfo<'_>) -> Outcome {
        let start = std::time::Instant::now();
        let outcome = self.inner.authenticate(req).await;
        let result = match &outcome {
            // Not decided here: the next authenticator may know the user.
            Outcome::NotMine | Outcome::UnknownUser => return outcome,
            Outcome::WrongPassword => "rejected",
            Outcome::Authenticated(_) => "ok",
            Outcome::Rejected(r) if r.status() >= 500 => "error",
            Outcome::Rejected(r) if r.status() == 429 => "throttled",
            Outcome::Rejected(_) => "rejected",
        };
        let m = crate::process::telemetry::metrics();
        m.auth
            .with_label_values(&[self.name.as_str(), result])
            .inc();
        m.auth_duration
            .with_label_values(&[self.name.as_str()])
            .observe(start.elapsed().as_secs_f64());
        outcome
    }

    fn unknown_user_refused(&self, req: &RequestInfo<'_>) {
        self.inner.unknown_user_refused(req)
    }
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive, token trimmed and
/// non-empty). Every authenticator that reads Bearer tokens starts here.
pub fn bearer_token(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// A Bearer token shaped like a JWT (three base64url parts): for the JWT authenticators,
/// which leave anything else (API keys, …) to the next one.
pub fn bearer_jwt(headers: &http::HeaderMap) -> Option<&str> {
    bearer_token(headers).filter(|t| {
        t.split('.').count() == 3
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.=".contains(&b))
    })
}

/// The `WWW-Authenticate` challenge of a Basic realm.
pub fn basic_challenge(realm: &str) -> String {
    format!("Basic realm=\"{realm}\", charset=\"UTF-8\"")
}

/// `Authorization: Basic …` as (user, password). `None` when the header is absent or of
/// another scheme; an error when it is Basic but malformed.
pub fn basic_credentials(headers: &http::HeaderMap) -> Option<Result<(String, String), Rejection>> {
    let value = headers.get(http::header::AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = match value.iter().position(|b| *b == b' ') {
        Some(i) => (&value[..i], &value[i + 1..]),
        None => (value, &b""[..]),
    };
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    let bad = || Rejection::Unauthorized {
        reason: "malformed Basic credentials".into(),
        challenge: basic_challenge("hpcgate"),
    };
    let decoded = match base64::engine::general_purpose::STANDARD.decode(rest.trim_ascii()) {
        Ok(d) => d,
        Err(_) => return Some(Err(bad())),
    };
    let Ok(text) = String::from_utf8(decoded) else {
        return Some(Err(bad()));
    };
    let Some((user, password)) = text.split_once(':') else {
        return Some(Err(bad()));
    };
    if !static_users::valid_user_name(user) || password.is_empty() {
        return Some(Err(Rejection::Unauthorized {
            reason: "invalid user name or password".into(),
            challenge: basic_challenge("hpcgate"),
        }));
    }
    Some(Ok((user.to_string(), password.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(auth: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, auth.parse().unwrap());
        h
    }

    #[test]
    fn only_jwt_shaped_bearer_tokens_are_jwts() {
        assert_eq!(bearer_jwt(&headers("Bearer a.b.c")), Some("a.b.c"));
        assert_eq!(bearer_jwt(&headers("bearer  a.b.")), Some("a.b."));
        assert_eq!(bearer_jwt(&headers("Bearer hpcg_apikey")), None);
        assert_eq!(
            bearer_token(&headers("Bearer hpcg_apikey")),
            Some("hpcg_apikey")
        );
        assert_eq!(bearer_jwt(&headers("Basic a.b.c")), None);
        assert_eq!(bearer_jwt(&headers("Bearer a.b.c d")), None);
        assert_eq!(bearer_token(&headers("Bearer ")), None);
        assert_eq!(bearer_jwt(&http::HeaderMap::new()), None);
    }

    #[test]
    fn basic_credentials_parse() {
        let b64 = base64::engine::general_purpose::STANDARD.encode("alice:pa:ss");
        let (u, p) = basic_credentials(&headers(&format!("basic {b64}")))
            .unwrap()
            .unwrap();
        assert_eq!((u.as_str(), p.as_str()), ("alice", "pa:ss"));
        assert!(basic_credentials(&headers("Bearer x")).is_none());
        assert!(basic_credentials(&http::HeaderMap::new()).is_none());
        assert!(basic_credentials(&headers("Basic !!!")).unwrap().is_err());
        let inj = base64::engine::general_purpose::STANDARD.encode("*)(uid=*:x");
        assert!(
            basic_credentials(&headers(&format!("Basic {inj}")))
                .unwrap()
                .is_err()
        );
    }
}
