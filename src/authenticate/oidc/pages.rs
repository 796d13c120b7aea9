//! The gateway-owned login pages, served before routing when an `oidc_login` authenticator
//! is configured:
//!
//! - `/auth/login?return_to=PATH` sends the browser to the IdP (also what a protected route
//!   does for a browser without a session). `return_to` must be a path on this gateway, or
//!   a URL with the gateway's own origin: anything else is refused (no open redirect).
//! - `/auth/callback` checks `state` (against the sealed login cookie), the IdP's `iss`
//!   parameter when sent, exchanges the code with the PKCE verifier, verifies the ID token
//!   (signature, `iss`, `aud`, `exp`, `nonce`), writes the session cookie and redirects back.
//! - `POST /auth/logout` ends the session on every replica (its id goes into the list of
//!   ended sessions in the database; 503 and nothing cleared if that cannot be written),
//!   clears the cookies and, when the IdP supports it, sends the browser to its end-session
//!   endpoint (RP-initiated logout). With a session it needs the session's CSRF token (form
//!   field `csrf`, as the user page's Log out button sends it): a link or a cross-site form
//!   cannot log anyone out. `GET` is refused (405).

use openidconnect::core::CoreResponseType;
use openidconnect::url::{Url, form_urlencoded};
use openidconnect::{
    AuthenticationFlow, AuthorizationCode, CsrfToken, EndSessionUrl, Nonce, PkceCodeChallenge,
    PkceCodeVerifier, PostLogoutRedirectUrl, Scope,
};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use super::login::{Failure, OidcLogin, token_error};
use super::session::{
    self, LOGIN_COOKIE, LOGIN_TIMEOUT, LoginState, SESSION_COOKIE, Session, clear_cookie,
    clear_split_cookies, cookie_values, set_cookie,
};
use crate::authenticate::{Caller, Method, RequestInfo};
use crate::error::Rejection;
use crate::error::Reply;

/// A page of the login flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    Login,
    Callback,
    Logout,
}

impl Page {
    pub fn parse(path: &str) -> Option<Page> {
        match path {
            "/auth/login" => Some(Page::Login),
            "/auth/callback" => Some(Page::Callback),
            "/auth/logout" => Some(Page::Logout),
            _ => None,
        }
    }

    /// For logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Page::Login => "auth/login",
            Page::Callback => "auth/callback",
            Page::Logout => "auth/logout",
        }
    }
}

/// What a login page answers: a reply (often a redirect) and who, if anyone, it was about.
pub struct PageReply {
    pub reply: Reply,
    pub location: Option<String>,
    pub caller: Caller,
}

fn redirect(location: String, caller: Caller) -> PageReply {
    PageReply {
        reply: Reply::json(
            302,
            json!({"status": "success", "data": {"location": &location}}),
        ),
        location: Some(location),
        caller,
    }
}

/// A path on this gateway to return to after login: `raw` itself if it is a plain path, or
/// the path and query of a URL with the same origin as `callback`. `None` for anything that
/// could lead elsewhere (`//host`, `/\host`, other origins, control characters).
pub fn return_path(raw: &str, callback: &Url) -> Option<String> {
    if raw.is_empty() || raw.len() > 2048 || raw.chars().any(|c| c.is_control() || c == '\\') {
        return None;
    }
    if raw.starts_with('/') {
        return (!raw.starts_with("//")).then(|| raw.to_string());
    }
    let url = Url::parse(raw).ok()?;
    if url.origin() != callback.origin() || !url.username().is_empty() {
        return None;
    }
    let mut path = url.path().to_string();
    if let Some(q) = url.query() {
        path.push('?');
        path.push_str(q);
    }
    return_path(&path, callback)
}

fn query(req: &RequestInfo<'_>) -> Vec<(String, String)> {
    form_urlencoded::parse(req.uri.query().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

fn param<'a>(q: &'a [(String, String)], name: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn not_reachable() -> Rejection {
    Rejection::Unavailable(
        "the identity provider cannot be reached, so nobody can log in right now; try again \
         shortly"
            .into(),
    )
}

fn login_failed(f: Failure) -> Rejection {
    match f {
        Failure::Refused(why) => Rejection::Unauthorized {
            reason: format!("login refused: {why}; log in again at /auth/login"),
            challenge: super::bearer_challenge(),
        },
        Failure::Unavailable(why) => {
            tracing::warn!(error = %why, "login failed: the identity provider cannot answer");
            not_reachable()
        }
    }
}

impl OidcLogin {
    /// Starts a login that comes back to `return_to` (a checked path): sets the sealed login
    /// cookie and returns the IdP's authorization URL.
    pub(super) fn start_login(
        &self,
        return_to: String,
        req: &RequestInfo<'_>,
    ) -> Result<String, Rejection> {
        let d = self.provider.current().ok_or_else(not_reachable)?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state, nonce) = self
            .client(&d)
            .authorize_url(
                AuthenticationFlow::<CoreResponseType>::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scopes(self.cfg.scopes.iter().cloned().map(Scope::new))
            .set_pkce_challenge(challenge)
            .url();
        let login = LoginState {
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
            return_to,
            created: session::now(),
        };
        let sealed = self
            .key
            .seal(LOGIN_COOKIE, &login)
            .map_err(Rejection::Internal)?;
        req.set_cookies
            .add(set_cookie(LOGIN_COOKIE, &sealed, LOGIN_TIMEOUT));
        Ok(url.to_string())
    }

    /// Serves one of the login pages; `csrf` is the token a logout form sent.
    pub async fn serve(
        &self,
        page: Page,
        req: &RequestInfo<'_>,
        csrf: Option<&str>,
    ) -> Result<PageReply, Rejection> {
        let allowed: &[http::Method] = match page {
            Page::Login | Page::Callback => &[http::Method::GET, http::Method::HEAD],
            Page::Logout => &[http::Method::POST],
        };
        if !allowed.contains(req.method) {
            return Err(Rejection::MethodNotAllowed(format!(
                "/{} takes {}",
                page.name(),
                allowed
                    .iter()
                    .map(http::Method::as_str)
                    .collect::<Vec<_>>()
                    .join(" or ")
            )));
        }
        match page {
            Page::Login => self.login_page(req),
            Page::Callback => self.callback(req).await,
            Page::Logout => self.logout(req, csrf).await,
        }
    }

    fn login_page(&self, req: &RequestInfo<'_>) -> Result<PageReply, Rejection> {
        let q = query(req);
        let raw = param(&q, "return_to").unwrap_or("/");
        let back = return_path(raw, &self.cfg.redirect_url).ok_or_else(|| {
            Rejection::BadRequest(format!(
                "return_to must be a path on this gateway (or a URL starting with {}): it may not \
                 lead elsewhere",
                self.cfg.redirect_url.origin().ascii_serialization()
            ))
        })?;
        Ok(redirect(self.start_login(back, req)?, Caller::Public))
    }

    async fn callback(&self, req: &RequestInfo<'_>) -> Result<PageReply, Rejection> {
        let q = query(req);
        let now = session::now();
        let login = cookie_values(req.headers, LOGIN_COOKIE)
            .filter_map(|v| self.key.open::<LoginState>(LOGIN_COOKIE, v))
            .find(|l| now.saturating_sub(l.created) <= LOGIN_TIMEOUT);
        // One callback per login: the login cookie goes whatever happens next.
        req.set_cookies.add(clear_cookie(LOGIN_COOKIE));
        let Some(login) = login else {
            return Err(Rejection::BadRequest(
                "no login in progress in this browser (its login cookie is missing or older \
                 than 10 minutes); start again at /auth/login"
                    .into(),
            ));
        };
        let state = param(&q, "state").unwrap_or("");
        if !bool::from(state.as_bytes().ct_eq(login.state.as_bytes())) {
            return Err(Rejection::BadRequest(
                "the login's state does not match this browser's; start again at /auth/login"
                    .into(),
            ));
        }
        // RFC 9207: an IdP that names itself must be ours (no mix-up with another IdP).
        if let Some(iss) = param(&q, "iss")
            && iss != self.provider.issuer().as_str()
        {
            return Err(Rejection::BadRequest(
                "the login answer comes from another identity provider".into(),
            ));
        }
        if let Some(error) = param(&q, "error") {
            let error: String = error
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .take(64)
                .collect();
            return Err(login_failed(Failure::Refused(format!(
                "the identity provider answered {error}"
            ))));
        }
        let code = param(&q, "code").ok_or_else(|| {
            Rejection::BadRequest("the callback has neither a code nor an error".into())
        })?;
        let d = self.provider.current().ok_or_else(not_reachable)?;
        let response = self
            .client(&d)
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| Rejection::Internal(format!("no token endpoint: {e}")))?
            .set_pkce_verifier(PkceCodeVerifier::new(login.pkce_verifier))
            .request_async(self.provider.http())
            .await
            .map_err(|e| login_failed(token_error(e)))?;
        let token = openidconnect::TokenResponse::id_token(&response).ok_or_else(|| {
            login_failed(Failure::Refused(
                "the identity provider sent no ID token".into(),
            ))
        })?;
        let claims = self
            .verified_claims(token, Some(&Nonce::new(login.nonce)))
            .await
            .map_err(login_failed)?;
        let id = self
            .cfg
            .claims
            .identity(&claims, Method::OidcLogin, &self.name)
            .map_err(|why| login_failed(Failure::Refused(why)))?;
        let sub = claims.get("sub").and_then(Value::as_str).unwrap_or("");
        let s = Session {
            id: session::new_session_id().map_err(Rejection::Internal)?,
            sub: sub.to_string(),
            user: id.user().to_string(),
            groups: id.groups().to_vec(),
            email: id.email().map(str::to_string),
            created: now,
            expires: now.saturating_add(self.cfg.lifetimes.absolute.as_secs()),
            seen: now,
            refresh_at: now + self.cfg.lifetimes.refresh.as_secs(),
            refresh_token: openidconnect::OAuth2TokenResponse::refresh_token(&response)
                .map(|t| t.secret().clone()),
        };
        let cookies = self
            .session_cookies(&s, now, req.headers)
            .ok_or_else(|| Rejection::Internal("cannot write the session cookie".into()))?;
        req.set_cookies.add_all(cookies);
        tracing::info!(authenticator = %self.name, user = %s.user, "logged in");
        // Checked when the login started; checked again, since it decides where we send the
        // browser.
        let back = return_path(&login.return_to, &self.cfg.redirect_url)
            .unwrap_or_else(|| "/".to_string());
        Ok(redirect(back, Caller::User(id)))
    }

    async fn logout(
        &self,
        req: &RequestInfo<'_>,
        csrf: Option<&str>,
    ) -> Result<PageReply, Rejection> {
        if crate::authenticate::csrf::cross_site(req.headers) {
            return Err(Rejection::Forbidden(
                "logout from another site is refused".into(),
            ));
        }
        // Without a session there is nobody to protect: the cookies are cleared all the same.
        let caller = match self.session(req.headers, session::now()) {
            Some(s) if self.csrf_ok(&s, csrf) => {
                // Ended for every replica first: a copy of the cookie must not outlive this.
                // If that cannot be written, nothing is cleared and the user can try again.
                self.ended
                    .end(&s.id, s.ends_at(&self.cfg.lifetimes))
                    .await
                    .map_err(|_| {
                        Rejection::Unavailable(
                            "the session cannot be ended right now (the session database \
                             cannot answer); you are still logged in: try logging out again \
                             shortly"
                                .into(),
                        )
                    })?;
                tracing::info!(authenticator = %self.name, user = %s.user, "logged out");
                Caller::User(self.identity(&s))
            }
            Some(_) => {
                return Err(Rejection::Forbidden(
                    "logout needs this session's CSRF token: use the Log out button of the \
                     page at /"
                        .into(),
                ));
            }
            None => Caller::Public,
        };
        req.set_cookies
            .add_all(clear_split_cookies(req.headers, SESSION_COOKIE));
        req.set_cookies.add(clear_cookie(LOGIN_COOKIE));
        let end_session: Option<EndSessionUrl> = self.provider.current().and_then(|d| {
            d.metadata
                .additional_metadata()
                .end_session_endpoint
                .clone()
        });
        if let Some(end) = end_session {
            let mut logout = openidconnect::LogoutRequest::from(end)
                .set_client_id(openidconnect::ClientId::new(self.cfg.client_id.clone()));
            if let Some(url) = &self.cfg.post_logout_redirect_url {
                logout = logout
                    .set_post_logout_redirect_uri(PostLogoutRedirectUrl::from_url(url.clone()));
            }
            return Ok(redirect(logout.http_get_url().to_string(), caller));
        }
        Ok(match &self.cfg.post_logout_redirect_url {
            Some(url) => redirect(url.to_string(), caller),
            None => PageReply {
                reply: Reply::json(200, json!({"status": "success", "data": "logged out"})),
                location: None,
                caller,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_paths_stay_on_this_gateway() {
        let cb = Url::parse("https://gw.example.org:8443/auth/callback").unwrap();
        let ok = |raw: &str| return_path(raw, &cb);
        assert_eq!(ok("/app/x?y=1").as_deref(), Some("/app/x?y=1"));
        assert_eq!(
            ok("https://gw.example.org:8443/app?a=b").as_deref(),
            Some("/app?a=b")
        );
        for evil in [
            "https://evil.example",
            "https://evil.example/app",
            "//evil.example",
            "//evil.example/app",
            "/\\evil.example",
            "\\\\evil.example",
            "https://gw.example.org/app",
            "http://gw.example.org:8443/app",
            "https://gw.example.org:8443@evil.example/",
            "https://x@gw.example.org:8443/",
            "javascript:alert(1)",
            "app",
            "/app\r\nSet-Cookie: x=y",
            "",
        ] {
            assert_eq!(ok(evil), None, "{evil}");
        }
    }
}
