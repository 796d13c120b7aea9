//! The `oidc_login` authenticator: browsers log in at the IdP (authorization code + PKCE
//! S256, `state`, `nonce`) and then carry a sealed session cookie (`session.rs`).
//!
//! On a route that lists it, a request with a valid session is authenticated; with none, a
//! browser (`GET`/`HEAD` with `Accept: text/html`) is sent to the IdP, and anyone else is left
//! to the next authenticator (finally a 401 with `WWW-Authenticate: Bearer`). Requests with
//! an `Authorization` header are never ours: they carry other credentials. Sessions end at
//! an absolute and an idle limit, and are revalidated with the IdP's refresh token every
//! `refresh_interval` (a refused refresh ends the session; an IdP that cannot answer is a
//! 503). The gateway-owned pages `/auth/login`, `/auth/callback` and `/auth/logout` are in
//! `pages.rs`.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use jsonwebtoken::Algorithm;
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreErrorResponseType, CoreGenderClaim, CoreJsonWebKey,
    CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm, CoreRevocableToken,
    CoreRevocationErrorResponse, CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::url::Url;
use openidconnect::{
    AdditionalClaims, ClaimsVerificationError, ClientId, ClientSecret, EmptyExtraTokenFields,
    EndpointMaybeSet, EndpointNotSet, EndpointSet, IdTokenVerifier, Nonce, OAuth2TokenResponse,
    RedirectUrl, RefreshToken, RequestTokenError, SignatureVerificationError,
    StandardErrorResponse, StandardTokenResponse,
};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::claims::ClaimsConfig;
use super::provider::{Discovered, Provider, ProviderConfig, error_chain};
use super::session::{
    self, CookieKey, Lifetimes, SESSION_COOKIE, Session, clear_split_cookies, cookie_values,
    set_split_cookies,
};
use super::{SessionKeyBytes, bearer_challenge};
use crate::authenticate::{Authenticator, Identity, Method, Outcome, RequestInfo};
use crate::error::Rejection;
use crate::secret::Secret;

/// Every claim of an ID token, beyond the standard ones openidconnect names.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct AllClaims(serde_json::Map<String, Value>);
impl AdditionalClaims for AllClaims {}

pub(super) type IdToken = openidconnect::IdToken<
    AllClaims,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
type IdTokenFields = openidconnect::IdTokenFields<
    AllClaims,
    EmptyExtraTokenFields,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
type TokenResponse = StandardTokenResponse<IdTokenFields, CoreTokenType>;
type TokenError = RequestTokenError<
    openidconnect::HttpClientError<reqwest::Error>,
    StandardErrorResponse<CoreErrorResponseType>,
>;
/// A client made from discovered metadata: authorization endpoint set, token endpoint maybe.
pub(super) type LoginClient = openidconnect::Client<
    AllClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    TokenResponse,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// A checked `oidc_login` configuration.
#[derive(Debug, Clone)]
pub struct LoginConfig {
    pub provider: ProviderConfig,
    pub client_id: String,
    pub client_secret: Secret,
    /// This gateway's `/auth/callback`, as the IdP has it registered.
    pub redirect_url: Url,
    /// Where the IdP sends the browser after logout.
    pub post_logout_redirect_url: Option<Url>,
    /// Always includes `openid`.
    pub scopes: Vec<String>,
    pub algorithms: Vec<Algorithm>,
    pub claims: ClaimsConfig,
    pub lifetimes: Lifetimes,
    /// From `session_key_file`; `None`: generated under the state directory.
    pub session_key: Option<SessionKeyBytes>,
}

/// Why a login or refresh did not give a session.
pub(super) enum Failure {
    /// The IdP (or what it sent) says no: the user has to log in again.
    Refused(String),
    /// The IdP cannot answer now: 503, try again.
    Unavailable(String),
}

impl Failure {
    pub(super) fn unavailable() -> Failure {
        Failure::Unavailable("the identity provider cannot be reached".into())
    }
}

pub(super) fn token_error(e: TokenError) -> Failure {
    match e {
        RequestTokenError::ServerResponse(r) => {
            Failure::Refused(format!("the identity provider answered {}", r.error()))
        }
        RequestTokenError::Request(e) => Failure::Unavailable(error_chain(&e)),
        // The parse error could quote the response, which holds tokens: not logged.
        RequestTokenError::Parse(..) => {
            Failure::Unavailable("the token endpoint's answer could not be read".into())
        }
        RequestTokenError::Other(why) => Failure::Unavailable(why),
    }
}

pub struct OidcLogin {
    pub(super) name: String,
    pub(super) cfg: LoginConfig,
    pub(super) provider: Provider,
    pub(super) key: CookieKey,
    /// Makes and checks the CSRF tokens of the user page and logout (`view.rs`).
    pub(super) csrf: crate::authenticate::csrf::CsrfKey,
    /// Allowed ID token algorithms, as openidconnect names them.
    algorithms: Vec<CoreJwsSigningAlgorithm>,
    /// Sessions ended by logout, shared by every replica through the database.
    pub(super) ended: super::ended::EndedSessions,
    /// This gateway's origin (`https://host:port`), from `redirect_url`.
    origin: String,
    /// Refreshes in flight or just done, by a hash of the refresh token: a page's parallel
    /// requests with the same cookie refresh once (an IdP may revoke a reused token).
    refreshes: moka::future::Cache<[u8; 32], Session>,
}

impl OidcLogin {
    /// `db` holds the list of ended sessions.
    pub fn new(
        name: &str,
        cfg: LoginConfig,
        state_dir: &Path,
        db: crate::db::Db,
    ) -> Result<Self, String> {
        let key = match &cfg.session_key {
            Some(k) => k.0,
            None => session::load_or_create_key(&state_dir.join("oidc-session.key"))?,
        };
        let algorithms = cfg
            .algorithms
            .iter()
            .map(|a| {
                serde_json::from_value(Value::String(format!("{a:?}")))
                    .map_err(|_| format!("algorithm {a:?} is not supported for ID tokens"))
            })
            .collect::<Result<_, _>>()?;
        Ok(OidcLogin {
            name: name.to_string(),
            provider: Provider::start(name, cfg.provider.clone())?,
            key: CookieKey::new(&key)?,
            csrf: crate::authenticate::csrf::CsrfKey::derive(&key),
            algorithms,
            ended: super::ended::EndedSessions::new(db),
            origin: cfg.redirect_url.origin().ascii_serialization(),
            refreshes: moka::future::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(std::time::Duration::from_secs(30))
                .build(),
            cfg,
        })
    }

    /// This gateway's origin as browsers name it in `Origin` (`https://host:port`), from
    /// `redirect_url`.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub(super) fn client(&self, d: &Discovered) -> LoginClient {
        LoginClient::from_provider_metadata(
            (*d.metadata).clone(),
            ClientId::new(self.cfg.client_id.clone()),
            Some(ClientSecret::new(
                self.cfg.client_secret.expose().to_string(),
            )),
        )
        .set_redirect_uri(RedirectUrl::from_url(self.cfg.redirect_url.clone()))
    }

    /// The verified claims of an ID token; `nonce` is checked when given (a login), not on
    /// a refresh. A key the IdP added since the last fetch is fetched once.
    pub(super) async fn verified_claims(
        &self,
        token: &IdToken,
        nonce: Option<&Nonce>,
    ) -> Result<Value, Failure> {
        let mut known = self.provider.current().ok_or_else(Failure::unavailable)?;
        let mut refreshed = false;
        loop {
            let verifier = IdTokenVerifier::new_public_client(
                ClientId::new(self.cfg.client_id.clone()),
                self.provider.issuer().clone(),
                known.metadata.jwks().clone(),
            )
            .set_allowed_algs(self.algorithms.clone());
            let verified = match nonce {
                Some(n) => token.claims(&verifier, n),
                None => token.claims(&verifier, |_: Option<&Nonce>| Ok(())),
            };
            match verified {
                Ok(claims) => {
                    return serde_json::to_value(claims)
                        .map_err(|e| Failure::Refused(format!("unreadable ID token claims: {e}")));
                }
                Err(ClaimsVerificationError::SignatureVerification(
                    SignatureVerificationError::NoMatchingKey,
                )) if !refreshed => match self.provider.refreshed(&known).await {
                    Some(newer) => {
                        known = newer;
                        refreshed = true;
                    }
                    None => return Err(Failure::Refused("no key verifies the ID token".into())),
                },
                Err(e) => return Err(Failure::Refused(format!("ID token refused: {e}"))),
            }
        }
    }

    /// The session's new state after the IdP confirmed it with the refresh token.
    async fn refresh(&self, old: &Session) -> Result<Session, Failure> {
        let Some(rt) = &old.refresh_token else {
            return Ok(old.clone());
        };
        let d = self.provider.current().ok_or_else(Failure::unavailable)?;
        let client = self.client(&d);
        let response = client
            .exchange_refresh_token(&RefreshToken::new(rt.clone()))
            .map_err(|e| Failure::Unavailable(e.to_string()))?
            .request_async(self.provider.http())
            .await
            .map_err(token_error)?;
        let mut s = old.clone();
        if let Some(token) = openidconnect::TokenResponse::id_token(&response) {
            let claims = self.verified_claims(token, None).await?;
            if claims.get("sub").and_then(Value::as_str) != Some(old.sub.as_str()) {
                return Err(Failure::Refused(
                    "the refreshed ID token names another subject".into(),
                ));
            }
            let id = self
                .cfg
                .claims
                .identity(&claims, Method::OidcLogin, &self.name)
                .map_err(Failure::Refused)?;
            s.user = id.user().to_string();
            s.groups = id.groups().to_vec();
            s.email = id.email().map(str::to_string);
        }
        if let Some(new) = response.refresh_token() {
            s.refresh_token = Some(new.secret().clone());
        }
        s.refresh_at = session::now() + self.cfg.lifetimes.refresh.as_secs();
        Ok(s)
    }

    /// `refresh`, once per refresh token however many requests ask at the same time.
    async fn refresh_once(&self, old: &Session) -> Result<Session, Arc<Failure>> {
        let rt = old.refresh_token.as_deref().unwrap_or_default();
        let key: [u8; 32] = Sha256::digest(rt.as_bytes()).into();
        self.refreshes.try_get_with(key, self.refresh(old)).await
    }

    /// The `Set-Cookie` values that hold `s` (one cookie, or several for a big session, see
    /// [`CookieKey::seal_split`]) and remove what is left of a bigger one the request carries;
    /// none if it cannot be sealed (logged).
    pub(super) fn session_cookies(
        &self,
        s: &Session,
        now: u64,
        headers: &http::HeaderMap,
    ) -> Option<Vec<String>> {
        match self.key.seal_split(SESSION_COOKIE, s) {
            Ok(pairs) => Some(set_split_cookies(
                headers,
                SESSION_COOKIE,
                &pairs,
                s.max_age(now, &self.cfg.lifetimes),
            )),
            Err(e) => {
                tracing::error!(authenticator = %self.name, user = %s.user, error = %e, "cannot write the session cookie");
                None
            }
        }
    }

    /// The session in the request's cookie, if one opens and has not expired.
    pub(super) fn session(&self, headers: &http::HeaderMap, now: u64) -> Option<Session> {
        self.key
            .open_split::<Session>(headers, SESSION_COOKIE)
            .find(|s| !s.expired(now, &self.cfg.lifetimes))
    }

    /// Who the session is; the browser sends its cookie by itself, so the identity says so
    /// (a state-changing request must also prove it comes from the gateway's pages).
    pub(super) fn identity(&self, s: &Session) -> Identity {
        Identity::new(
            s.user.clone(),
            s.groups.clone(),
            s.email.clone(),
            Method::OidcLogin,
            &self.name,
        )
        .with_session_cookie()
    }

    /// No usable session: a browser is sent to log in, an API client gets 401 if it sent a
    /// cookie that is no longer good, and otherwise the next authenticator may try.
    fn unauthenticated(&self, req: &RequestInfo<'_>, had_cookie: bool) -> Outcome {
        let browser = (req.method == http::Method::GET || req.method == http::Method::HEAD)
            && req
                .headers
                .get_all(http::header::ACCEPT)
                .iter()
                .any(|v| v.to_str().is_ok_and(|v| v.contains("text/html")));
        if browser {
            let here = req.uri.path_and_query().map_or("/", |pq| pq.as_str());
            let back = super::pages::return_path(here, &self.cfg.redirect_url)
                .unwrap_or_else(|| "/".to_string());
            return match self.start_login(back, req) {
                Ok(location) => Outcome::Rejected(Rejection::LoginRequired { location }),
                Err(r) => Outcome::Rejected(r),
            };
        }
        if had_cookie {
            return Outcome::Rejected(Rejection::Unauthorized {
                reason: "the session has expired or is not valid; log in again at /auth/login"
                    .into(),
                challenge: bearer_challenge(),
            });
        }
        Outcome::NotMine
    }
}

#[async_trait]
impl Authenticator for OidcLogin {
    fn kind(&self) -> &'static str {
        "oidc_login"
    }

    fn challenge(&self) -> Option<String> {
        Some(bearer_challenge())
    }

    async fn authenticate(&self, req: &RequestInfo<'_>) -> Outcome {
        if req.headers.contains_key(http::header::AUTHORIZATION) {
            return Outcome::NotMine;
        }
        let now = session::now();
        let had_cookie = cookie_values(req.headers, SESSION_COOKIE).next().is_some();
        let Some(mut s) = self.session(req.headers, now) else {
            if had_cookie {
                req.set_cookies
                    .add_all(clear_split_cookies(req.headers, SESSION_COOKIE));
            }
            return self.unauthenticated(req, had_cookie);
        };
        // Logged out (on any replica): the cookie was copied, or the browser kept it.
        match self.ended.is_ended(&s.id).await {
            Ok(false) => {}
            Ok(true) => {
                tracing::info!(authenticator = %self.name, user = %s.user, "a session ended by logout was presented");
                req.set_cookies
                    .add_all(clear_split_cookies(req.headers, SESSION_COOKIE));
                return self.unauthenticated(req, true);
            }
            Err(r) => return Outcome::Rejected(r),
        }
        let mut changed = false;
        if s.refresh_due(now) {
            match self.refresh_once(&s).await {
                Ok(new) => {
                    changed = new != s;
                    s = new;
                }
                Err(f) => match &*f {
                    Failure::Refused(why) => {
                        tracing::info!(authenticator = %self.name, user = %s.user, reason = %why, "session ended by the identity provider");
                        req.set_cookies
                            .add_all(clear_split_cookies(req.headers, SESSION_COOKIE));
                        return self.unauthenticated(req, true);
                    }
                    Failure::Unavailable(why) => {
                        tracing::warn!(authenticator = %self.name, error = %why, "cannot refresh a session");
                        return Outcome::Rejected(Rejection::Unavailable(
                            "the identity provider cannot confirm the session right now; try \
                             again shortly"
                                .into(),
                        ));
                    }
                },
            }
        }
        if changed || s.renew_due(now, &self.cfg.lifetimes) {
            s.seen = now;
            if let Some(c) = self.session_cookies(&s, now, req.headers) {
                req.set_cookies.add_all(c);
            }
        }
        Outcome::Authenticated(self.identity(&s))
    }
}
