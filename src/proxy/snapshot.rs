//! The rules a request runs under: everything built from one configuration, swapped whole
//! on reload, so a reload never changes the rules under a request in flight.

use std::sync::Arc;

use crate::authenticate::RouteAuth;
use crate::authenticate::oidc::OidcLogin;
use crate::authorize::cedar::Policies;
use crate::process::audit::AuditLog;
use crate::proxy::route::Router;
use crate::proxy::sanitize::Sanitizer;

/// Everything a request needs from the configuration, swapped whole on reload.
pub struct Snapshot {
    pub sanitizer: Sanitizer,
    pub router: Router,
    /// Authentication for `/-/whoami` (None: not configured, 404).
    pub whoami_auth: Option<RouteAuth>,
    /// Authentication for `/-/metrics` (None: not configured, 404).
    pub metrics_auth: Option<RouteAuth>,
    pub access_log: bool,
    pub tls_listeners: Vec<std::net::SocketAddr>,
    pub policies: Arc<Policies>,
    /// Seconds east of UTC for policy time facts.
    pub utc_offset: i64,
    pub audit: Arc<AuditLog>,
    pub rate_limits: Arc<crate::authorize::rate_limit::RateLimiters>,
    /// Authentication for `POST /auth/token` (None: tokens are not issued, 404).
    pub token_auth: Option<RouteAuth>,
    pub token_issuer: Option<Arc<crate::tokens::TokenIssuer>>,
    /// Published at `/.well-known/jwks.json` when tokens are issued or accepted.
    pub signing_keys: Option<Arc<crate::tokens::SigningKeys>>,
    /// The browser login and its `/auth/…` pages, if configured.
    pub login: Option<Arc<OidcLogin>>,
    /// Every upstream pool, for health checks and `/-/status`.
    pub pools: Vec<crate::proxy::upstream::health::Target>,
    /// The user page at `/` (`[web]`), if configured.
    pub web: Option<Arc<crate::site::web::Web>>,
}
