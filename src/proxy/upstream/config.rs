//! The checked `[pools.NAME]` sections: backends, timeouts, TLS, health checks and balancing.
//! Built by `config/` validation; read by the pools, their health checks and the TSDB
//! retention choice.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::secret::Secret;

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

/// One checked `[pools.NAME]`.
#[derive(Debug, Clone)]
pub struct PoolConfig {
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
