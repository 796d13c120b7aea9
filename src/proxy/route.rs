//! The `route` step: the longest path prefix (on whole segments) among routes for the
//! request's host, then among routes for any host. Owns the checked `[[routes]]` type
//! ([`Route`]) that `config/` validation builds.

use std::sync::Arc;

use crate::authenticate::RouteAuth;
use crate::enforce::slurmrestd::config::SlurmRoute;
use crate::proxy::upstream::Pool;

/// A route with what it needs at request time.
pub struct RouteEntry {
    pub config: Route,
    pub auth: RouteAuth,
    pub pool: Arc<Pool>,
    /// The Slurm step (`slurmrestd` routes only).
    pub slurm: Option<Arc<crate::enforce::slurmrestd::SlurmGate>>,
    /// The job-ownership check (`prometheus` routes in `ownership` mode only).
    pub ownership: Option<Arc<crate::enforce::ownership::Ownership>>,
}

pub struct Router {
    /// Host-specific routes first, then by descending prefix length: the first match wins.
    routes: Vec<Arc<RouteEntry>>,
}

impl Router {
    pub fn new(mut routes: Vec<Arc<RouteEntry>>) -> Self {
        routes.sort_by(|a, b| {
            b.config
                .host
                .is_some()
                .cmp(&a.config.host.is_some())
                .then(b.config.path_prefix.len().cmp(&a.config.path_prefix.len()))
        });
        Router { routes }
    }

    /// `host` is lower case without port.
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<&Arc<RouteEntry>> {
        self.routes.iter().find(|r| {
            r.config.host.as_deref().is_none_or(|h| Some(h) == host)
                && prefix_matches(&r.config.path_prefix, path)
        })
    }
}

/// `/a` matches `/a`, `/a/` and `/a/b`, not `/ab`.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    prefix == "/"
        || (path.starts_with(prefix)
            && matches!(path.as_bytes().get(prefix.len()), None | Some(b'/')))
}

/// The path sent upstream when the route strips its prefix (always starting with `/`).
pub fn strip_prefix<'a>(prefix: &str, path: &'a str) -> &'a str {
    if prefix == "/" {
        return path;
    }
    match &path[prefix.len()..] {
        "" => "/",
        rest => rest,
    }
}

/// The host as the client sent it: the target's authority, else the `Host` header.
pub fn raw_host(req: &pingora::http::RequestHeader) -> Option<String> {
    req.uri
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            req.headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
}

/// The host a request is for: the target's authority (absolute form, h2) or `Host`,
/// lower case, without port and without a trailing dot (`secret.example.` is the same host
/// as `secret.example` to DNS, so it must not miss a route bound to it).
pub fn request_host(req: &pingora::http::RequestHeader) -> Option<String> {
    Some(host_for_routing(&raw_host(req)?))
}

/// `raw` (`host[:port]`, checked by the sanitizer) as routes name hosts.
pub fn host_for_routing(raw: &str) -> String {
    let host = if let Some(v6) = raw.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        raw.split(':').next().unwrap_or_default()
    };
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

/// What a route fronts, which decides its enforcement step (`kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    Generic,
    Slurmrestd,
    Prometheus,
    Accounting,
}

impl RouteKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RouteKind::Generic => "generic",
            RouteKind::Slurmrestd => "slurmrestd",
            RouteKind::Prometheus => "prometheus",
            RouteKind::Accounting => "accounting",
        }
    }
}

/// One checked `[[routes]]` entry.
#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    /// Without a trailing `/` (except the root route `/`).
    pub path_prefix: String,
    pub host: Option<String>,
    pub strip_prefix: bool,
    pub pool: String,
    pub kind: RouteKind,
    pub authenticators: Vec<String>,
    pub pass_bearer_token: bool,
    pub forward_cookies: bool,
    pub identity_headers: IdentityHeaders,
    pub rate_limit: Option<RateLimit>,
    pub preserve_host: bool,
    /// Normalised like `path_prefix`.
    pub admin_paths: Vec<String>,
    pub promql: crate::enforce::prometheus::config::PromqlMode,
    /// Set exactly for `kind = "slurmrestd"` routes.
    pub slurm: Option<SlurmRoute>,
}

/// Header names (lower case) the rewrite step writes for a route; `None` writes nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityHeaders {
    pub user: Option<http::HeaderName>,
    pub groups: Option<http::HeaderName>,
    pub email: Option<http::HeaderName>,
    pub preferred_username: Option<http::HeaderName>,
}

impl IdentityHeaders {
    pub fn names(&self) -> impl Iterator<Item = &http::HeaderName> {
        [
            &self.user,
            &self.groups,
            &self.email,
            &self.preferred_username,
        ]
        .into_iter()
        .flatten()
    }
}

/// A per-user budget: `burst` at once, refilled at `requests` per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub requests: u32,
    pub per: std::time::Duration,
    pub burst: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_whole_segments() {
        assert!(prefix_matches("/a", "/a"));
        assert!(prefix_matches("/a", "/a/"));
        assert!(prefix_matches("/a", "/a/b"));
        assert!(!prefix_matches("/a", "/ab"));
        assert!(prefix_matches("/", "/anything"));
    }

    #[test]
    fn hosts_route_without_port_case_or_trailing_dot() {
        assert_eq!(host_for_routing("Secret.Example."), "secret.example");
        assert_eq!(host_for_routing("secret.example.:8443"), "secret.example");
        assert_eq!(host_for_routing("secret.example"), "secret.example");
        assert_eq!(host_for_routing("[::1]:443"), "::1");
        assert_eq!(host_for_routing("10.0.0.1:80"), "10.0.0.1");
    }

    #[test]
    fn stripping_keeps_a_leading_slash() {
        assert_eq!(strip_prefix("/prom", "/prom"), "/");
        assert_eq!(strip_prefix("/prom", "/prom/api/v1"), "/api/v1");
        assert_eq!(strip_prefix("/", "/x"), "/x");
    }
}
