//! Ways units get into the store: pushed by service accounts ([`push`]) and pulled from
//! slurmrestd ([`slurm`]); and their aggregate metrics from Prometheus ([`metrics`]).

pub mod metrics;
pub mod push;
pub mod slurm;

use std::sync::Arc;

use crate::accounting::AccountingConfig;
use crate::db::Db;

/// Starts the pull loops of every configured cluster; they stop when `shutdown` fires.
pub fn spawn_all(
    db: &Db,
    cfg: &Arc<AccountingConfig>,
    shutdown: &tokio::sync::watch::Receiver<bool>,
) {
    if let Some(m) = &cfg.metrics {
        tokio::spawn(metrics::run(
            db.clone(),
            cfg.clone(),
            m.clone(),
            shutdown.clone(),
        ));
    }
    for (id, c) in &cfg.clusters {
        if let Some(s) = &c.slurmrestd {
            tokio::spawn(slurm::run(
                db.clone(),
                id.clone(),
                c.manager.clone(),
                c.emission_factor,
                s.clone(),
                shutdown.clone(),
            ));
        }
    }
}
