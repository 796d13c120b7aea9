//! The gateway's own endpoints: `/-/healthz`, `/-/ready`, `/-/whoami`, `/-/metrics`,
//! `/-/status` (every upstream pool and its backends' health; for admins only the backends'
//! addresses and checks, others see whether each pool is up),
//! `POST /auth/token` and `/.well-known/jwks.json`.

use bytes::Bytes;
use serde_json::json;

use crate::authenticate::Caller;
use crate::error::{Rejection, Reply};
use crate::proxy::snapshot::Snapshot;

/// Which endpoint a `/-/` path names, and whether it needs a caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Healthz,
    Ready,
    Whoami,
    Metrics,
    /// Every pool with each backend's state, last check and latency (and Slurm's ping).
    Status,
    /// `POST /auth/token`: a gateway-signed JWT for Basic credentials.
    Token,
    /// `/.well-known/jwks.json`: the public keys of those tokens.
    Jwks,
}

/// Whether a path belongs to the gateway rather than to a route.
pub fn owns(path: &str) -> bool {
    path == "/-"
        || path.starts_with("/-/")
        || path == "/auth"
        || path.starts_with("/auth/")
        || path == JWKS_PATH
}

pub const JWKS_PATH: &str = "/.well-known/jwks.json";

impl Endpoint {
    pub fn parse(path: &str) -> Result<Endpoint, Rejection> {
        match path {
            "/-/healthz" => Ok(Endpoint::Healthz),
            "/-/ready" => Ok(Endpoint::Ready),
            "/-/whoami" => Ok(Endpoint::Whoami),
            "/-/metrics" => Ok(Endpoint::Metrics),
            "/-/status" => Ok(Endpoint::Status),
            "/auth/token" => Ok(Endpoint::Token),
            JWKS_PATH => Ok(Endpoint::Jwks),
            _ => Err(Rejection::NotFound(format!(
                "no gateway endpoint {path}; there are /-/healthz, /-/ready, /-/whoami, \
                 /-/metrics, /-/status, /auth/token and {JWKS_PATH}"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Healthz => "-/healthz",
            Endpoint::Ready => "-/ready",
            Endpoint::Whoami => "-/whoami",
            Endpoint::Metrics => "-/metrics",
            Endpoint::Status => "-/status",
            Endpoint::Token => "auth/token",
            Endpoint::Jwks => "jwks",
        }
    }

    /// The methods it takes besides HEAD.
    pub fn method(self) -> http::Method {
        match self {
            Endpoint::Token => http::Method::POST,
            _ => http::Method::GET,
        }
    }

    /// Whether `caller` may use this endpoint at all. A credential limited to some routes
    /// (an API key's scopes) is for those routes: of the gateway's own endpoints it reads
    /// only its own identity (`/-/whoami`) and what is public. `/-/status` and `/-/metrics`
    /// describe the whole gateway and its backends, and `/auth/token` would mint a token
    /// without the limits (a way out of them).
    pub fn admits(self, caller: &Caller) -> Result<(), Rejection> {
        let Some(id) = caller.identity() else {
            return Ok(());
        };
        let open = matches!(
            self,
            Endpoint::Whoami | Endpoint::Healthz | Endpoint::Ready | Endpoint::Jwks
        );
        if open || id.scopes().is_empty() {
            return Ok(());
        }
        Err(Rejection::Forbidden(format!(
            "this credential of {} is limited to {}; the gateway's {} is not among them: use \
             a credential without scopes (an unscoped API key, a password or a bearer token)",
            id.user(),
            id.scopes().join(", "),
            match self {
                Endpoint::Token => "/auth/token",
                Endpoint::Status => "/-/status",
                _ => "/-/metrics",
            }
        )))
    }

    pub async fn serve(self, caller: &Caller, snap: &Snapshot) -> Result<Reply, Rejection> {
        Ok(match self {
            Endpoint::Healthz => Reply::json(200, json!({"status": "success", "data": "ok"})),
            Endpoint::Ready => {
                if crate::process::shutdown::draining() {
                    Reply::json(
                        503,
                        json!({"status": "error", "errorType": "unavailable",
                               "error": "the gateway is stopping"}),
                    )
                } else {
                    Reply::json(200, json!({"status": "success", "data": "ready"}))
                }
            }
            Endpoint::Whoami => match caller {
                Caller::User(id) => Reply::json(200, json!({"status": "success", "data": id})),
                // Configuration never makes whoami public; answer as if unauthenticated.
                Caller::Public => Reply::json(
                    401,
                    json!({"status": "error", "errorType": "unauthorized",
                           "error": "authentication required"}),
                ),
            },
            Endpoint::Status => {
                // Backend addresses, health-check paths and errors, who the process runs as
                // and its config are for admins only; others see whether each pool is up.
                if caller
                    .identity()
                    .is_some_and(|id| snap.policies.is_admin(id))
                {
                    let mut v = crate::proxy::upstream::health::status(&snap.pools);
                    v["data"]["process"] = crate::process::privileges::status();
                    v["data"]["config"] = crate::process::reload_outcome::status();
                    Reply::json(200, v)
                } else {
                    Reply::json(200, crate::proxy::upstream::health::summary(&snap.pools))
                }
            }
            Endpoint::Metrics => {
                let m = crate::process::telemetry::metrics();
                crate::proxy::upstream::health::observe_backends(m, &snap.pools);
                Reply {
                    status: 200,
                    content_type: "text/plain; version=0.0.4; charset=utf-8",
                    body: Bytes::from(m.render()),
                }
            }
            Endpoint::Token => {
                let (Some(issuer), Some(id)) = (&snap.token_issuer, caller.identity()) else {
                    return Err(Rejection::NotFound("token issuing is not enabled".into()));
                };
                let body = issuer.issue(id).await?;
                tracing::info!(user = id.user(), "issued a gateway token");
                Reply::json(200, body)
            }
            Endpoint::Jwks => match &snap.signing_keys {
                Some(keys) => Reply::json(200, keys.jwks().await),
                None => return Err(Rejection::NotFound("this gateway issues no tokens".into())),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authenticate::Identity;

    /// An API key limited to one route is for that route: it may not read the gateway's
    /// status or metrics, nor swap itself for an unlimited token at /auth/token.
    #[test]
    fn scoped_credentials_reach_only_whoami_and_public_endpoints() {
        let scoped = Caller::User(Identity::for_test_scoped(
            "carol",
            &["hpc-admins"],
            &["hpc"],
        ));
        let unscoped = Caller::User(Identity::for_test("carol", &[]));
        for ep in [Endpoint::Status, Endpoint::Metrics, Endpoint::Token] {
            let r = ep.admits(&scoped).unwrap_err();
            assert_eq!(r.status(), 403, "{}", ep.name());
            assert!(r.message().contains("limited to hpc"), "{}", r.message());
            assert!(ep.admits(&unscoped).is_ok());
        }
        for ep in [
            Endpoint::Whoami,
            Endpoint::Healthz,
            Endpoint::Ready,
            Endpoint::Jwks,
        ] {
            assert!(ep.admits(&scoped).is_ok(), "{}", ep.name());
        }
        assert!(Endpoint::Status.admits(&Caller::Public).is_ok());
    }
}
