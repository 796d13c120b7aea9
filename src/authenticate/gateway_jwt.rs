//! The `gateway_jwt` authenticator: tokens this gateway issued at `POST /auth/token`.
//!
//! A Bearer JWT whose key id is one of our signing keys is ours, and then every check is
//! final (signature with EdDSA only — `none` and HMAC never —, `iss`, `aud`, `exp`, `nbf`).
//! Any other Bearer token is left to the next authenticator (e.g. the IdP's).

use std::sync::Arc;

use async_trait::async_trait;

use super::verified::Verified;
use super::{Authenticator, Identity, Method, Outcome, RequestInfo, bearer_jwt};
use crate::error::Rejection;
use crate::tokens::SigningKeys;

pub struct GatewayJwt {
    name: String,
    keys: Arc<SigningKeys>,
    issuer: String,
    audience: String,
    verified: Verified,
}

fn rejected(reason: String) -> Outcome {
    Outcome::Rejected(Rejection::Unauthorized {
        reason,
        challenge: "Bearer realm=\"hpcgate\", error=\"invalid_token\"".into(),
    })
}

impl GatewayJwt {
    pub fn new(name: &str, keys: Arc<SigningKeys>, issuer: &str, audience: &str) -> Self {
        GatewayJwt {
            name: name.to_string(),
            keys,
            issuer: issuer.to_string(),
            audience: audience.to_string(),
            verified: Verified::new(),
        }
    }
}

#[async_trait]
impl Authenticator for GatewayJwt {
    fn kind(&self) -> &'static str {
        "gateway_jwt"
    }

    fn challenge(&self) -> Option<String> {
        Some("Bearer realm=\"hpcgate\"".into())
    }

    async fn authenticate(&self, req: &RequestInfo<'_>) -> Outcome {
        let Some(token) = bearer_jwt(req.headers) else {
            return Outcome::NotMine;
        };
        // Seen and verified recently: still ours while its key is in the set.
        if let Some((id, kid)) = self.verified.get(token)
            && self.keys.knows(&kid).await
        {
            return Outcome::Authenticated(id);
        }
        // The header is unverified: it only says whose token this claims to be.
        let Ok(unverified_header) = jsonwebtoken::decode_header(token) else {
            return Outcome::NotMine;
        };
        let Some(kid) = unverified_header.kid else {
            return Outcome::NotMine;
        };
        if !self.keys.knows(&kid).await {
            return Outcome::NotMine;
        }
        let claims = match self.keys.verify(token, &kid, &self.issuer, &self.audience) {
            Ok(c) => c,
            Err(e) => {
                use jsonwebtoken::errors::ErrorKind::*;
                let reason = match e.kind() {
                    ExpiredSignature => "the token has expired; get a new one at /auth/token",
                    InvalidAudience => "the token is for another audience",
                    InvalidIssuer => "the token is from another issuer",
                    ImmatureSignature => "the token is not valid yet",
                    InvalidAlgorithm => "the token's algorithm is not accepted",
                    MissingRequiredClaim(_) => "the token lacks a required claim",
                    _ => "invalid token",
                };
                return rejected(reason.into());
            }
        };
        if !super::static_users::valid_user_name(&claims.sub) {
            return rejected("invalid token subject".into());
        }
        let id = Identity::new(
            claims.sub,
            claims.groups,
            claims.email,
            Method::GatewayJwt,
            &self.name,
        )
        .with_expiry(Some(claims.exp));
        self.verified.insert(token, &id, &kid);
        Outcome::Authenticated(id)
    }
}
