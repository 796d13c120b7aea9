//! The gateway's own endpoints: `/-/healthz`, `/-/ready`, `/-/whoami`, `/-/metrics`,
//! `/-/status` (every upstream pool and its backends' health),
//! `POST /auth/token` and `/.well-known/jwks.json`.

use bytes::Bytes;
use serde_json::json;

use crate::authenticate::Caller;
use crate::error::Rejection;
use crate::gateway::Snapshot;

/// A response the gateway writes itself.
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Bytes,
}

impl Reply {
    pub fn json(status: u16, value: serde_json::Value) -> Self {
        Reply {
            status,
            content_type: "application/json",
            body: Bytes::from(value.to_string()),
        }
    }
}

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

    pub async fn serve(self, caller: &Caller, snap: &Snapshot) -> Result<Reply, Rejection> {
        Ok(match self {
            Endpoint::Healthz => Reply::json(200, json!({"status": "success", "data": "ok"})),
            Endpoint::Ready => {
                if crate::shutdown::draining() {
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
                let mut v = crate::health::status(&snap.pools);
                // Who the process runs as, and its config, are for admins only.
                if caller
                    .identity()
                    .is_some_and(|id| snap.policies.is_admin(id))
                {
                    v["data"]["process"] = crate::privileges::status();
                    v["data"]["config"] = crate::reload::status();
                }
                Reply::json(200, v)
            }
            Endpoint::Metrics => {
                let m = crate::telemetry::metrics();
                m.observe_backends(&snap.pools);
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
