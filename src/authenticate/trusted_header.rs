//! The `trusted_header` authenticator: a trusted service (Grafana, a portal) acting for a
//! user named in a header — the CEEMS / Grafana pattern.
//!
//! The service proves itself through another authenticator (its API key, usually). Only if
//! that identity is one of the configured services, and the request comes from an allowed
//! network, does the header count; the identity then records both (`user=bob, via=grafana`)
//! and the user gets none of the service's groups. The header is always stripped by the
//! sanitizer, so from anyone else it has no effect: their own identity stands.
//!
//! Nobody is acted for as `root` or a Slurm user the config names (see
//! `Config::privileged_users`), compared without case, unless `allow_privileged_users` names
//! them: a Grafana that may say "I am acting for slurm" could act for anyone in Slurm.

use std::sync::Arc;

use async_trait::async_trait;

use super::{Authenticator, Outcome, RequestInfo};
use crate::authenticate::config::TrustedHeader;
use crate::error::Rejection;

pub struct TrustedHeaderAuth {
    name: String,
    inner: Arc<dyn Authenticator>,
    config: TrustedHeader,
    /// Lower-cased names nobody may be acted for as (privileged, not allowed here).
    refused: std::collections::BTreeSet<String>,
}

impl TrustedHeaderAuth {
    pub fn new(
        name: &str,
        inner: Arc<dyn Authenticator>,
        config: TrustedHeader,
        privileged: &std::collections::BTreeSet<String>,
    ) -> Self {
        let refused = privileged
            .iter()
            .filter(|p| !config.allow_privileged_users.contains(p))
            .map(|p| p.to_lowercase())
            .collect();
        TrustedHeaderAuth {
            name: name.to_string(),
            inner,
            config,
            refused,
        }
    }

    fn network_allowed(&self, req: &RequestInfo<'_>) -> bool {
        self.config.source_networks.is_empty()
            || req.client.is_some_and(|ip| {
                let ip = match ip {
                    std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, Into::into),
                    v4 => v4,
                };
                self.config.source_networks.iter().any(|n| n.contains(&ip))
            })
    }
}

#[async_trait]
impl Authenticator for TrustedHeaderAuth {
    fn kind(&self) -> &'static str {
        "trusted_header"
    }

    fn challenge(&self) -> Option<String> {
        self.inner.challenge()
    }

    fn unknown_user_refused(&self, req: &RequestInfo<'_>) {
        self.inner.unknown_user_refused(req)
    }

    async fn authenticate(&self, req: &RequestInfo<'_>) -> Outcome {
        let service = match self.inner.authenticate(req).await {
            Outcome::Authenticated(id) => id,
            other => return other,
        };
        let trusted = self.config.services.iter().any(|s| s == service.user());
        let mut named = req.stripped.get_all(&self.config.header).iter();
        let user = match (trusted, named.next()) {
            // Not a trusted service, or acting for nobody: the caller's own identity.
            (false, _) | (true, None) => return Outcome::Authenticated(service),
            (true, Some(v)) => v,
        };
        if named.next().is_some() {
            return Outcome::Rejected(Rejection::BadRequest(format!(
                "more than one {} header",
                self.config.header
            )));
        }
        if !self.network_allowed(req) {
            return Outcome::Rejected(Rejection::Forbidden(format!(
                "{} may act for users only from its configured networks",
                service.user()
            )));
        }
        let user = match user.to_str().map(str::trim) {
            Ok(u) if super::static_users::valid_user_name(u) => u.to_string(),
            _ => {
                return Outcome::Rejected(Rejection::BadRequest(format!(
                    "{} does not name a valid user",
                    self.config.header
                )));
            }
        };
        if self.refused.contains(&user.to_lowercase()) {
            tracing::warn!(
                authenticator = %self.name,
                service = %service.user(),
                user = %user,
                "a trusted service tried to act for a privileged user; refused"
            );
            return Outcome::Rejected(Rejection::Forbidden(format!(
                "{} may not act for the privileged user `{user}` (see allow_privileged_users)",
                service.user()
            )));
        }
        Outcome::Authenticated(service.acting_for(user, &self.name))
    }
}
