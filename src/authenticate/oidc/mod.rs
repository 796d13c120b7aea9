//! OpenID Connect: bearer JWTs from an IdP (`oidc_bearer`), and browser login with
//! authorization code + PKCE and a sealed session cookie (`oidc_login`).
//!
//! - `provider.rs`: discovery and the IdP's keys, kept fresh in the background.
//! - `claims.rs`: verified claims → [`Identity`](super::Identity) (user, groups, e-mail,
//!   service accounts).
//! - `bearer.rs`: the `oidc_bearer` authenticator.
//! - `login.rs`: the `oidc_login` authenticator (sessions, refresh); `pages.rs`: its
//!   `/auth/login`, `/auth/callback`, `/auth/logout`; `session.rs`: the sealed cookies;
//!   `view.rs`: what the user page may know of a session (expiry, CSRF token); `ended.rs`:
//!   sessions ended by logout, shared by replicas through the database.
//!
//! No JOSE or OAuth is written here: `openidconnect` does discovery, the authorization
//! request, the code exchange and ID tokens; `jsonwebtoken` verifies bearer JWTs.

mod bearer;
mod claims;
mod ended;
mod login;
mod pages;
mod provider;
mod session;
mod view;

pub use bearer::{BearerConfig, OidcBearer};
pub use claims::{ClaimPath, ClaimsConfig};
pub use login::{LoginConfig, OidcLogin};
pub use pages::{Page, PageReply};
pub use provider::{ProviderConfig, http_client};
/// The sealed cookies' codec, for the fuzz targets (`fuzz/`); the gateway itself reaches it
/// only through [`OidcLogin`].
#[doc(hidden)]
pub use session::{CookieKey, LOGIN_COOKIE, LoginState, SESSION_COOKIE, Session, cookie_values};
pub use session::{Lifetimes, read_key_file};
pub use view::SessionView;

/// A session key read from `session_key_file`. `Debug` never shows it.
#[derive(Clone)]
pub struct SessionKeyBytes(pub [u8; 32]);

impl std::fmt::Debug for SessionKeyBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// The challenge both OIDC authenticators offer in a 401.
fn bearer_challenge() -> String {
    "Bearer realm=\"hpcgate\"".to_string()
}
