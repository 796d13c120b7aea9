//! The config file as written: serde structs with `deny_unknown_fields`, nothing checked yet.
//!
//! One file per group of sections, re-exported here so that `raw::X` names any of them.
//! `validate.rs` turns these into the checked [`super::Config`]. Field docs here are the
//! reference; `config/hpcgate.toml` repeats them as comments for operators.

use std::collections::BTreeMap;

mod accounting;
mod auth;
mod pools;
mod routes;
mod server;

pub use accounting::{
    Accounting, AccountingCluster, AccountingMetrics, MetricQueries, SlurmIngest, Web,
};
pub use auth::{Authenticator, OidcBearer, OidcLogin, Tokens};
pub use pools::{HealthCheck, Pool};
pub use routes::{
    Authorization, IdentityHeaders, Promql, RateLimit, RateLimits, Route, SlurmRoute,
};
pub use server::{Audit, Database, Gateway, Listener, Logging, Process, Server};

/// The whole file. Each section is deserialized on its own so that one bad section does not
/// hide the errors of the others.
#[derive(Debug, Default)]
pub struct File {
    pub server: Server,
    pub process: Process,
    pub logging: Logging,
    pub gateway: Gateway,
    pub authorization: Authorization,
    pub audit: Audit,
    pub rate_limits: RateLimits,
    pub database: Database,
    pub tokens: Tokens,
    pub accounting: Option<Accounting>,
    pub web: Option<Web>,
    /// With each element's index in the file.
    pub listeners: Vec<(usize, Listener)>,
    pub pools: BTreeMap<String, Pool>,
    pub authenticators: BTreeMap<String, Authenticator>,
    pub routes: Vec<(usize, Route)>,
}
