//! Configuration in two stages: `raw` (what the TOML says) and `validate` (a checked
//! [`Config`], or every problem at once as `FILE:KEY: reason`).
//!
//! Config text is never echoed in an error: it may hold secrets.

pub mod error;
pub mod raw;
mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use error::{ConfigError, ConfigErrors, line_at};
pub use validate::{describe_url, load, parse};

use crate::authenticate::static_users::StaticUser;
use crate::secret::Secret;

/// A checked configuration: every reference resolved, every file readable.
#[derive(Debug)]
pub struct Config {
    pub path: PathBuf,
    pub state_dir: PathBuf,
    pub threads: usize,
    /// Idle upstream connections kept for reuse, all pools together.
    pub upstream_keepalive: usize,
    pub grace_period: Duration,
    /// A client's whole request head, from its first byte (slow-loris clients get a 408).
    pub request_head_timeout: Duration,
    /// An idle client connection (HTTP/1.1 or HTTP/2) between two requests.
    pub keepalive_timeout: Duration,
    /// Normalised (lower case, `_` → `-`) names of inbound headers to strip.
    pub strip_headers: Vec<String>,
    pub process: Process,
    pub logging: Logging,
    pub gateway: Gateway,
    pub listeners: Vec<Listener>,
    pub pools: BTreeMap<String, Pool>,
    pub authenticators: BTreeMap<String, Authenticator>,
    pub routes: Vec<Route>,
    pub policies: std::sync::Arc<crate::authorize::cedar::Policies>,
    /// Seconds east of UTC for policy time facts.
    pub utc_offset: i64,
    pub audit: AuditSink,
    /// Audit lines that may wait for the writer.
    pub audit_backlog: usize,
    pub redis_url: Option<Secret>,
    pub redis_timeout: Duration,
    pub database: crate::db::DbConfig,
    pub tokens: Tokens,
    /// `[accounting]`, if the service is on.
    pub accounting: Option<crate::accounting::AccountingConfig>,
    /// `[web]`, if the user page is on.
    pub web: Option<crate::site::web::WebConfig>,
}

impl Config {
    /// Users nobody may be acted for as, unless a `trusted_header` allows them by name: `root`
    /// and the Slurm users this config names (each slurmrestd route's `health_user` and
    /// `denied_users`, each accounting ingest `user`). A token of theirs acts for anyone in
    /// Slurm, and the accounting ingest reads every job as them.
    pub fn privileged_users(&self) -> std::collections::BTreeSet<String> {
        let mut users: std::collections::BTreeSet<String> = ["root".to_string()].into();
        for slurm in self.routes.iter().filter_map(|r| r.slurm.as_ref()) {
            users.insert(slurm.health_user.clone());
            users.extend(slurm.denied_users.iter().cloned());
        }
        if let Some(a) = &self.accounting {
            users.extend(
                a.clusters
                    .values()
                    .filter_map(|c| c.slurmrestd.as_ref())
                    .map(|s| s.user.clone()),
            );
        }
        users
    }

    /// Whether anything in this config needs the database (the browser login keeps the
    /// sessions ended by logout there).
    pub fn uses_database(&self) -> bool {
        self.accounting.is_some()
            || self.web.is_some()
            || self.authenticators.values().any(|a| {
                matches!(
                    a,
                    Authenticator::ApiKey { .. } | Authenticator::OidcLogin(_)
                )
            })
    }
}

/// `[process]`: who the gateway runs as and how it is reloaded and upgraded.
#[derive(Debug, Clone)]
pub struct Process {
    /// The user to switch to when started as root.
    pub user: RunAs,
    pub pid_file: PathBuf,
    pub upgrade_socket: PathBuf,
    /// None: certificates are reloaded only on SIGHUP.
    pub watch_certificates: Option<Duration>,
}

/// A user and group, resolved when the config is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// Where audit lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditSink {
    Off,
    Stdout,
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub struct Logging {
    pub level: String,
    pub json: bool,
    pub access_log: bool,
}

#[derive(Debug, Clone)]
pub struct Gateway {
    pub authenticators: Vec<String>,
    pub metrics_public: bool,
}

#[derive(Debug, Clone)]
pub struct Listener {
    pub address: SocketAddr,
    pub tls: Option<TlsFiles>,
    pub http2: bool,
    /// CAs whose client certificates the listener asks for (optional for clients).
    pub client_ca: Option<Vec<rustls::pki_types::CertificateDer<'static>>>,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Loaded and checked at validation, so a bad certificate is a config error, not a panic.
    pub loaded: Arc<rustls::sign::CertifiedKey>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendAddr {
    Tcp {
        addr: SocketAddr,
        /// The host as written (for SNI and `Host`).
        host: String,
        tls: bool,
    },
    Unix(PathBuf),
}

impl std::fmt::Display for BackendAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackendAddr::Tcp { addr, tls, .. } => {
                write!(f, "{}://{addr}", if *tls { "https" } else { "http" })
            }
            BackendAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Pool {
    pub name: String,
    pub backends: Vec<BackendAddr>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    pub tls_ca: Option<PathBuf>,
    pub tls_verify: bool,
    pub tls_server_name: Option<String>,
    pub authorization: Option<Secret>,
    pub fail_timeout: Duration,
    pub health_check: Option<HealthCheck>,
    pub balance: Balance,
    /// Per backend (`retention` pools): the declared retention; `None` is read from the
    /// backend.
    pub retention: Vec<Option<Duration>>,
}

/// How a pool picks a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
    LeastConnections,
    /// TSDBs: among the backends whose retention holds the query's time range, the least
    /// busy; when none does, the one that holds the most.
    Retention,
}

/// Active health checks of a pool's backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// Starts with `/`; may carry a query.
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
}

#[allow(
    clippy::large_enum_variant,
    reason = "built once per config load; boxing would only add noise"
)]
#[derive(Debug, Clone)]
pub enum Authenticator {
    None,
    Static {
        users_file: PathBuf,
        users: Vec<StaticUser>,
        realm: String,
        cache_ttl: Duration,
        throttle: crate::authenticate::password::ThrottleConfig,
    },
    Ldap(crate::authenticate::ldap::LdapConfig),
    ApiKey {
        cache_ttl: Duration,
    },
    TrustedHeader(TrustedHeader),
    /// Service name → SHA-256 of its certificate (DER).
    ClientCert {
        certificates: BTreeMap<String, [u8; 32]>,
    },
    GatewayJwt {
        /// `None`: `[tokens] audience`.
        audience: Option<String>,
    },
    OidcBearer(crate::authenticate::oidc::BearerConfig),
    OidcLogin(crate::authenticate::oidc::LoginConfig),
}

impl Authenticator {
    /// The `type` as written in the config.
    pub fn kind(&self) -> &'static str {
        match self {
            Authenticator::None => "none",
            Authenticator::Static { .. } => "static",
            Authenticator::Ldap(_) => "ldap",
            Authenticator::ApiKey { .. } => "api_key",
            Authenticator::TrustedHeader(_) => "trusted_header",
            Authenticator::ClientCert { .. } => "client_cert",
            Authenticator::GatewayJwt { .. } => "gateway_jwt",
            Authenticator::OidcBearer(_) => "oidc_bearer",
            Authenticator::OidcLogin(_) => "oidc_login",
        }
    }
}

/// A trusted service acting for users (`type = "trusted_header"`).
#[derive(Debug, Clone)]
pub struct TrustedHeader {
    pub authenticator: String,
    pub services: Vec<String>,
    pub header: http::HeaderName,
    /// Empty: from anywhere.
    pub source_networks: Vec<ipnet::IpNet>,
    /// Privileged users ([`Config::privileged_users`]) the services may act for all the same.
    pub allow_privileged_users: Vec<String>,
}

/// Tokens this gateway issues at `POST /auth/token`.
#[derive(Debug, Clone)]
pub struct Tokens {
    /// Empty: the endpoint is off.
    pub authenticators: Vec<String>,
    pub ttl: Duration,
    pub issuer: String,
    pub audience: String,
}

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
    pub promql: crate::enforce::prometheus::PromqlMode,
    /// Set exactly for `kind = "slurmrestd"` routes.
    pub slurm: Option<SlurmRoute>,
}

/// The Slurm step of a `slurmrestd` route (`[routes.slurm]`).
#[derive(Debug, Clone)]
pub struct SlurmRoute {
    pub mode: SlurmTokenMode,
    /// Lifetime of minted tokens.
    pub token_lifetime: Duration,
    pub claims: SlurmClaims,
    /// Gateway user → Slurm user; every value is a valid POSIX name.
    pub user_map: BTreeMap<String, String>,
    pub admin_diag: bool,
    /// The Slurm user of health checks.
    pub health_user: String,
    /// Slurm users nobody may act as (403).
    pub denied_users: Vec<String>,
}

/// How the user is proven to Slurm.
#[derive(Debug, Clone)]
pub enum SlurmTokenMode {
    /// Sign a token per user with Slurm's HS256 key (read and permission-checked here).
    Mint {
        key: crate::enforce::slurmrestd::JwtKey,
    },
    /// One token of the SlurmUser, re-read from this file.
    Impersonate { token_file: PathBuf },
    /// The user's own IdP bearer token.
    Passthrough,
}

impl SlurmTokenMode {
    pub fn as_str(&self) -> &'static str {
        match self {
            SlurmTokenMode::Mint { .. } => "mint",
            SlurmTokenMode::Impersonate { .. } => "impersonate",
            SlurmTokenMode::Passthrough => "passthrough",
        }
    }
}

/// Claim names of minted tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlurmClaims {
    pub user: String,
    pub issued_at: String,
    pub expires: String,
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
    pub per: Duration,
    pub burst: u32,
}

pub(crate) fn resolve_path(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}
