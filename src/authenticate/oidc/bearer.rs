//! The `oidc_bearer` authenticator: `Authorization: Bearer <JWT>` issued by one IdP, such as
//! the access tokens scripts get from Keycloak, and client-credentials tokens of services.
//!
//! A JWT whose (unverified) `iss` names another issuer is not ours: the next authenticator
//! may own it (gateway-issued tokens, another IdP). For ours, every check must pass: the
//! header's `alg` is in the allowlist (never `none`, never HMAC: an IdP's keys are public), a
//! published key with that `kid` and algorithm verifies the signature, `iss` is the issuer,
//! `aud` names a configured audience, and `exp`/`nbf` hold within the leeway. Claims are read
//! only from the verified token. A token signed by a key we do not know triggers one key
//! refresh (rate-limited in `provider.rs`). Until the IdP's keys are known: 503.

use std::time::Duration;

use async_trait::async_trait;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::Value;

use super::bearer_challenge;
use super::claims::ClaimsConfig;
use super::provider::{Provider, ProviderConfig};
use crate::authenticate::bearer_jwt;
use crate::authenticate::verified::Verified;
use crate::authenticate::{Authenticator, Method, Outcome, RequestInfo};
use crate::error::Rejection;

/// A checked `oidc_bearer` configuration.
#[derive(Debug, Clone)]
pub struct BearerConfig {
    pub provider: ProviderConfig,
    /// `aud` must name at least one of these.
    pub audiences: Vec<String>,
    /// Asymmetric algorithms only (validation refuses the rest).
    pub algorithms: Vec<Algorithm>,
    pub leeway: Duration,
    pub claims: ClaimsConfig,
}

pub struct OidcBearer {
    name: String,
    cfg: BearerConfig,
    provider: Provider,
    verified: Verified,
}

/// The part of an unverified token used only to decide whether it is ours.
#[derive(serde::Deserialize)]
struct UnverifiedIssuer {
    iss: Option<String>,
}

fn invalid(reason: impl Into<String>) -> Rejection {
    Rejection::Unauthorized {
        reason: reason.into(),
        challenge: format!("{}, error=\"invalid_token\"", bearer_challenge()),
    }
}

fn keys_unknown() -> Rejection {
    Rejection::Unavailable(
        "the identity provider's signing keys are not known (it cannot be reached); try again \
         shortly"
            .into(),
    )
}

fn why(e: &jsonwebtoken::errors::Error) -> String {
    match e.kind() {
        ErrorKind::ExpiredSignature => "the token has expired".into(),
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".into(),
        ErrorKind::InvalidAudience => "the token is not meant for this gateway (aud)".into(),
        ErrorKind::InvalidIssuer => "the token is from another issuer (iss)".into(),
        ErrorKind::InvalidSignature => "the token's signature does not verify".into(),
        ErrorKind::MissingRequiredClaim(c) => format!("the token has no `{c}` claim"),
        _ => "the token is malformed".into(),
    }
}

impl OidcBearer {
    pub fn new(name: &str, cfg: BearerConfig) -> Result<Self, String> {
        Ok(OidcBearer {
            name: name.to_string(),
            provider: Provider::start(name, cfg.provider.clone())?,
            cfg,
            verified: Verified::new(),
        })
    }

    /// The verified claims of a token that names our issuer.
    async fn verify(&self, token: &str) -> Result<Value, Rejection> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| {
            invalid(
                "the token's header cannot be read or names an algorithm the gateway does not \
                 accept (never `none`)",
            )
        })?;
        if !self.cfg.algorithms.contains(&header.alg) {
            return Err(invalid(format!(
                "tokens signed with {:?} are not accepted here",
                header.alg
            )));
        }
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[self.provider.issuer().as_str()]);
        validation.set_audience(&self.cfg.audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = self.cfg.leeway.as_secs();

        let mut known = self.provider.current().ok_or_else(keys_unknown)?;
        let mut refreshed = false;
        loop {
            let mut last = None;
            for key in known.candidates(header.kid.as_deref(), header.alg) {
                match jsonwebtoken::decode::<Value>(token, &key.key, &validation) {
                    Ok(data) => return Ok(data.claims),
                    Err(e) => last = Some(e),
                }
            }
            if let Some(e) = last {
                return Err(invalid(why(&e)));
            }
            // No key of ours could have signed it: perhaps the IdP rotated its keys.
            if !refreshed && let Some(newer) = self.provider.refreshed(&known).await {
                known = newer;
                refreshed = true;
                continue;
            }
            if known.refresh_failed {
                return Err(keys_unknown());
            }
            return Err(invalid(
                "the token is signed by a key the identity provider does not publish",
            ));
        }
    }
}

#[async_trait]
impl Authenticator for OidcBearer {
    fn kind(&self) -> &'static str {
        "oidc_bearer"
    }

    fn challenge(&self) -> Option<String> {
        Some(bearer_challenge())
    }

    async fn authenticate(&self, req: &RequestInfo<'_>) -> Outcome {
        let Some(token) = bearer_jwt(req.headers) else {
            return Outcome::NotMine;
        };
        if let Some((id, _)) = self.verified.get(token) {
            return Outcome::Authenticated(id);
        }
        // Only to route the token: nothing else is read before the signature is checked.
        let unverified = jsonwebtoken::dangerous::insecure_decode_claims::<UnverifiedIssuer>(token)
            .ok()
            .and_then(|c| c.iss);
        if unverified.as_deref() != Some(self.provider.issuer().as_str()) {
            return Outcome::NotMine;
        }
        let claims = match self.verify(token).await {
            Ok(c) => c,
            Err(r) => return Outcome::Rejected(r),
        };
        match self
            .cfg
            .claims
            .identity(&claims, Method::OidcBearer, &self.name)
        {
            Ok(id) => {
                let id = id.with_expiry(claims.get("exp").and_then(Value::as_i64));
                self.verified.insert(token, &id, "");
                Outcome::Authenticated(id)
            }
            Err(reason) => Outcome::Rejected(invalid(reason)),
        }
    }
}
