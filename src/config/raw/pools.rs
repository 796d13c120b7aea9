//! `[pools.NAME]`: the backends a route forwards to, and their health check.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    /// `http://HOST:PORT`, `https://HOST:PORT` or `unix:/path/to.sock`.
    pub backends: Vec<String>,
    pub connect_timeout: Option<String>,
    /// Longest wait for the upstream's next bytes (response headers or body).
    pub read_timeout: Option<String>,
    pub write_timeout: Option<String>,
    /// PEM bundle of CAs for `https` backends (default: the system roots).
    pub tls_ca: Option<String>,
    /// Check `https` backends' certificates (default true).
    pub tls_verify: Option<bool>,
    /// SNI and certificate name for `https` backends (default: the backend's host).
    pub tls_server_name: Option<String>,
    /// Value of the `Authorization` header sent to this pool (e.g. a Prometheus behind basic
    /// auth). A secret: `${ENV}` is expanded; prefer `authorization_file`.
    pub authorization: Option<String>,
    /// File holding the `Authorization` value for this pool.
    pub authorization_file: Option<String>,
    /// After a failed connection, how long a backend is skipped (pools of 2+ backends).
    pub fail_timeout: Option<String>,
    /// Active health checks of every backend (`[pools.NAME.health_check]`).
    pub health_check: Option<HealthCheck>,
    /// `round_robin` (default), `least_connections`, or `retention` (TSDBs: a query goes to
    /// a backend whose retention holds its time range, least connections among those).
    pub balance: Option<String>,
    /// `retention` pools: backend (as in `backends`) → how far back it holds data, e.g.
    /// `"15d"`. A backend left out is asked (`/api/v1/status/runtimeinfo`).
    #[serde(default)]
    pub retention: BTreeMap<String, String>,
}

/// `GET path` on each backend every `interval`; a backend that does not answer 2xx within
/// `timeout` gets no requests until it does again (even the only backend of a pool: its
/// requests get 503). For pools behind `slurmrestd` routes, the check carries a Slurm token
/// for `[routes.slurm] health_user`, and `/-/status` shows the controller's ping answer.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// E.g. `/slurm/v0.0.38/ping` for slurmrestd, `/-/ready` for Prometheus.
    pub path: String,
    /// Default 5s.
    pub interval: Option<String>,
    /// Default 2s; at most `interval`.
    pub timeout: Option<String>,
}
