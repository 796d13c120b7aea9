//! The gateway's own endpoints under `/-/`: `healthz`, `ready`, `whoami`, `metrics`.

use bytes::Bytes;
use serde_json::json;

use crate::authenticate::Caller;
use crate::error::Rejection;

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
}

impl Endpoint {
    pub fn parse(path: &str) -> Result<Endpoint, Rejection> {
        match path {
            "/-/healthz" => Ok(Endpoint::Healthz),
            "/-/ready" => Ok(Endpoint::Ready),
            "/-/whoami" => Ok(Endpoint::Whoami),
            "/-/metrics" => Ok(Endpoint::Metrics),
            _ => Err(Rejection::NotFound(format!(
                "no gateway endpoint {path}; there are /-/healthz, /-/ready, /-/whoami and \
                 /-/metrics"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Healthz => "-/healthz",
            Endpoint::Ready => "-/ready",
            Endpoint::Whoami => "-/whoami",
            Endpoint::Metrics => "-/metrics",
        }
    }

    pub fn serve(self, caller: &Caller) -> Reply {
        match self {
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
            Endpoint::Metrics => Reply {
                status: 200,
                content_type: "text/plain; version=0.0.4; charset=utf-8",
                body: Bytes::from(crate::telemetry::metrics().render()),
            },
        }
    }
}
