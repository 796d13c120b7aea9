//! The checked `[routes.slurm]` section of a `slurmrestd` route: how the user is proven to
//! Slurm, and who may not be acted for. Built by `config/` validation; read by the gate and
//! by the accounting ingest, which mints tokens the same way.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

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
