//! What the user page may know of a browser's session: when it ends, and its CSRF token
//! (`crate::authenticate::csrf`). Nothing here authenticates: the page has run the `oidc_login`
//! authenticator first.

use super::login::OidcLogin;
use super::session::{self, Session};

/// A session as the user page shows it.
#[derive(Debug, Clone)]
pub struct SessionView {
    /// The token the page's forms carry.
    pub csrf_token: String,
    /// When the session ends at the latest (Unix seconds), however active the user is.
    pub ends_at: u64,
    /// How long it lasts without a request.
    pub idle: std::time::Duration,
}

fn binding(s: &Session) -> String {
    crate::authenticate::csrf::binding(&s.sub, s.created, &s.user)
}

impl OidcLogin {
    /// The session in the request's cookie, if it is valid.
    pub fn session_view(&self, headers: &http::HeaderMap) -> Option<SessionView> {
        let s = self.session(headers, session::now())?;
        Some(SessionView {
            csrf_token: self.csrf.token(&binding(&s)),
            ends_at: s.ends_at(&self.cfg.lifetimes),
            idle: self.cfg.lifetimes.idle,
        })
    }

    /// Whether the request has a valid session and `presented` is its CSRF token.
    pub fn csrf_valid(&self, headers: &http::HeaderMap, presented: Option<&str>) -> bool {
        self.session(headers, session::now())
            .is_some_and(|s| self.csrf_ok(&s, presented))
    }

    pub(super) fn csrf_ok(&self, s: &Session, presented: Option<&str>) -> bool {
        presented.is_some_and(|p| self.csrf.verify(&binding(s), p))
    }
}
