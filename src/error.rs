//! Every way a request can be refused, and the one place that turns a refusal into HTTP.
//!
//! A [`Rejection`] names its status code. The client sees a short JSON message in the
//! Prometheus/CEEMS envelope `{"status":"error","errorType":…,"error":…}`; the cause of an
//! internal error goes to the log only.

use bytes::Bytes;
use serde::Serialize;

/// Why the gateway refused (or could not complete) a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// 400: the request is malformed or ambiguous.
    BadRequest(String),
    /// 401: no accepted credentials; `challenge` goes into `WWW-Authenticate`.
    Unauthorized { reason: String, challenge: String },
    /// 403: authenticated, but not allowed.
    Forbidden(String),
    /// 404: no route matches.
    NotFound(String),
    /// 405: the gateway's own endpoint does not take this method.
    MethodNotAllowed(String),
    /// 413: a body the gateway must read (to enforce on it) is too large.
    TooLarge(String),
    /// 415: a body in an encoding the gateway does not read where it must (to enforce on it).
    UnsupportedMediaType(String),
    /// 429: too many attempts or requests; `retry_after` in seconds.
    TooManyRequests { reason: String, retry_after: u64 },
    /// 502: the upstream refused the connection or broke the protocol.
    BadGateway(String),
    /// 503: no healthy backend, a dependency cannot answer, or the gateway is draining.
    Unavailable(String),
    /// 504: the upstream did not answer in time.
    GatewayTimeout(String),
    /// 500: a bug or an unexpected state; the detail is logged, not shown.
    Internal(String),
    /// 302: a browser without a session is sent to log in at the identity provider.
    LoginRequired { location: String },
}

#[derive(Serialize)]
struct Body<'a> {
    status: &'static str,
    #[serde(rename = "errorType")]
    error_type: &'static str,
    error: &'a str,
}

impl Rejection {
    pub fn status(&self) -> u16 {
        match self {
            Rejection::BadRequest(_) => 400,
            Rejection::Unauthorized { .. } => 401,
            Rejection::Forbidden(_) => 403,
            Rejection::NotFound(_) => 404,
            Rejection::MethodNotAllowed(_) => 405,
            Rejection::TooLarge(_) => 413,
            Rejection::UnsupportedMediaType(_) => 415,
            Rejection::TooManyRequests { .. } => 429,
            Rejection::BadGateway(_) => 502,
            Rejection::Unavailable(_) => 503,
            Rejection::GatewayTimeout(_) => 504,
            Rejection::Internal(_) => 500,
            Rejection::LoginRequired { .. } => 302,
        }
    }

    /// The machine-readable kind, in the style of Prometheus' `errorType`.
    pub fn error_type(&self) -> &'static str {
        match self {
            Rejection::BadRequest(_) => "bad_request",
            Rejection::Unauthorized { .. } => "unauthorized",
            Rejection::Forbidden(_) => "forbidden",
            Rejection::NotFound(_) => "not_found",
            Rejection::MethodNotAllowed(_) => "method_not_allowed",
            Rejection::TooLarge(_) => "payload_too_large",
            Rejection::UnsupportedMediaType(_) => "unsupported_media_type",
            Rejection::TooManyRequests { .. } => "too_many_requests",
            Rejection::BadGateway(_) => "bad_gateway",
            Rejection::Unavailable(_) => "unavailable",
            Rejection::GatewayTimeout(_) => "timeout",
            Rejection::Internal(_) => "internal",
            Rejection::LoginRequired { .. } => "login_required",
        }
    }

    /// What the client is told. Internal details stay in the log.
    pub fn message(&self) -> &str {
        match self {
            Rejection::Internal(_) => "internal error in the gateway; see its log",
            Rejection::LoginRequired { .. } => "log in first: follow the redirect",
            Rejection::BadRequest(m)
            | Rejection::Forbidden(m)
            | Rejection::NotFound(m)
            | Rejection::MethodNotAllowed(m)
            | Rejection::TooLarge(m)
            | Rejection::UnsupportedMediaType(m)
            | Rejection::BadGateway(m)
            | Rejection::Unavailable(m)
            | Rejection::GatewayTimeout(m) => m,
            Rejection::Unauthorized { reason, .. } | Rejection::TooManyRequests { reason, .. } => {
                reason
            }
        }
    }

    /// The detail for the log line (for internal errors, the hidden cause).
    pub fn detail(&self) -> &str {
        match self {
            Rejection::Internal(cause) => cause,
            other => other.message(),
        }
    }

    /// The JSON body.
    pub fn body(&self) -> Bytes {
        let body = Body {
            status: "error",
            error_type: self.error_type(),
            error: self.message(),
        };
        // Serialising a struct of strings cannot fail.
        Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
    }

    /// Extra response headers this rejection needs.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        match self {
            Rejection::Unauthorized { challenge, .. } => {
                vec![("www-authenticate", challenge.clone())]
            }
            Rejection::TooManyRequests { retry_after, .. } => {
                vec![("retry-after", retry_after.to_string())]
            }
            Rejection::LoginRequired { location } => vec![("location", location.clone())],
            _ => Vec::new(),
        }
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status(),
            self.error_type(),
            self.detail()
        )
    }
}

/// A response the gateway writes itself (its own endpoints and pages); a refusal is a
/// [`Rejection`], written by the same code.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_hide_their_cause_from_the_client() {
        let r = Rejection::Internal("db password wrong at /etc/x".into());
        let body: serde_json::Value = serde_json::from_slice(&r.body()).unwrap();
        assert_eq!(body["status"], "error");
        assert_eq!(body["errorType"], "internal");
        assert!(!body["error"].as_str().unwrap().contains("/etc/x"));
        assert!(r.detail().contains("/etc/x"));
    }

    #[test]
    fn unauthorized_carries_its_challenge() {
        let r = Rejection::Unauthorized {
            reason: "no credentials".into(),
            challenge: "Basic realm=\"hpcgate\"".into(),
        };
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()[0].0, "www-authenticate");
    }
}
