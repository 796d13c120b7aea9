//! Configuration in two stages: `raw` (what the TOML says) and `validate` (a checked
//! [`Config`], or every problem at once as `FILE:KEY: reason`).
//!
//! Imports go one way: each subsystem owns its checked section (`proxy::upstream::config`,
//! `proxy::route`, `authenticate::config`, `enforce::slurmrestd::config`, `db::DbConfig`, …)
//! and `config/` imports the owners to build them. Nothing below the top of the process
//! imports `config/`, except the leaf [`error`] that owners use to report problems.
//! [`Config`] itself, with `[process]`, `[gateway]` and the listeners, is for the top of the
//! process (`process::server`, `process::reload`, the command line).
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

// For config's own use; everyone else imports `config::error`.
use error::{ConfigError, ConfigErrors, line_at};
pub use validate::{load, parse};

// The checked types each subsystem owns, imported here (not re-exported) so that validation
// can build them and `Config` can hold them.
use crate::authenticate::config::{AuthenticatorConfig, TrustedHeader};
use crate::enforce::slurmrestd::config::{SlurmClaims, SlurmRoute, SlurmTokenMode};
use crate::process::audit::AuditSink;
use crate::process::privileges::RunAs;
use crate::process::telemetry::Logging;
use crate::proxy::route::RateLimit;
use crate::proxy::route::{IdentityHeaders, Route, RouteKind};
use crate::proxy::upstream::config::{BackendAddr, Balance, HealthCheck, PoolConfig};
use crate::secret::Secret;
use crate::tokens::Tokens;

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
    pub pools: BTreeMap<String, PoolConfig>,
    pub authenticators: BTreeMap<String, AuthenticatorConfig>,
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
                    AuthenticatorConfig::ApiKey { .. } | AuthenticatorConfig::OidcLogin(_)
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

pub(crate) fn resolve_path(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}
