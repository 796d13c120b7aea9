//! OpenID Connect: bearer JWTs from an IdP (`oidc_bearer`), and browser login with
//! authorization code + PKCE and a sealed session cookie (`oidc_login`).
//!
//! - `provider.rs`: discovery and the IdP's keys, kept fresh in the background.
//! - `claims.rs`: verified claims → [`Identity`](super::Identity) (user, groups, e-mail,
//!   service accounts).
//! - `bearer.rs`: the `oidc_bearer` authenticator.
//! - `login.rs`: the `oidc_login` authenticator (sessions, refresh); `pages.rs`: its
//!   `/auth/login`, `/auth/callback`, `/auth/logout`; `session.rs`: the sealed cookies.
//!
//! No JOSE or OAuth is written here: `openidconnect` does discovery, the authorization
//! request, the code exchange and ID tokens; `jsonwebtoken` verifies bearer JWTs.

mod bearer;
mod claims;
mod login;
mod pages;
mod provider;
mod session;

pub use bearer::{BearerConfig, OidcBearer};
pub use claims::{ClaimPath, ClaimsConfig};
pub use login::{LoginConfig, OidcLogin};
pub use pages::{Page, PageReply};
pub use provider::ProviderConfig;
pub use session::{Lifetimes, read_key_file};

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

/// The token of `Authorization: Bearer <token>`, if the header is of that scheme and the
/// token has only the characters a JWT can have.
fn bearer_token(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer")
        && token.split('.').count() == 3
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.=".contains(&b)))
    .then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_jwt_shaped_bearer_tokens_are_ours() {
        let h = |v: &str| {
            let mut h = http::HeaderMap::new();
            h.insert(http::header::AUTHORIZATION, v.parse().unwrap());
            h
        };
        assert_eq!(bearer_token(&h("Bearer a.b.c")), Some("a.b.c"));
        assert_eq!(bearer_token(&h("bearer  a.b.")), Some("a.b."));
        assert_eq!(bearer_token(&h("Bearer hpcg_apikey")), None);
        assert_eq!(bearer_token(&h("Basic a.b.c")), None);
        assert_eq!(bearer_token(&h("Bearer a.b.c d")), None);
        assert_eq!(bearer_token(&http::HeaderMap::new()), None);
    }
}
