//! The accounting service: compute units (jobs), projects, users and usage, with a
//! CEEMS-compatible HTTP API (`/api/v1/…`).
//!
//! It is an axum app over the gateway's database ([`crate::db::Db`]). Inside
//! `hpcgate serve` it listens on a Unix socket (0600) that only the gateway can reach: the
//! gateway authenticates, authorizes and audits the request as for any upstream (a route of
//! kind `accounting`) and writes the caller's name (`X-Grafana-User`) and groups
//! (`X-Hpcgate-Groups`) from its permit, so the service trusts those headers there and
//! nowhere else. `hpcgate accounting serve` runs it alone on TCP for separate replicas; then
//! every request must also carry the shared secret (`Authorization: Bearer …`, compared in
//! constant time), which the gateway's pool sends (`authorization_file`).
//!
//! Admins are members of `[authorization] admin_groups` (from the groups header) and the
//! users of the `acct_admins` table (`[accounting] admin_users`).

pub mod api;
pub mod directory;
pub mod ingest;
pub mod schema;
pub mod store;

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::db::{Db, DbConfig, StoreError};
use crate::secret::Secret;

pub use store::{foreign_units, foreign_units_in};

/// `[accounting]`, checked.
#[derive(Debug, Clone)]
pub struct AccountingConfig {
    pub socket: PathBuf,
    pub listen: Option<SocketAddr>,
    pub shared_secret: Option<Secret>,
    pub admin_groups: HashSet<String>,
    pub admin_users: Vec<String>,
    pub ingest_users: HashSet<String>,
    pub max_page_size: usize,
    pub max_query_window: Duration,
    pub clusters: BTreeMap<String, ClusterConfig>,
    pub metrics: Option<ingest::metrics::MetricsConfig>,
}

#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub manager: String,
    /// gCO2e per kWh.
    pub emission_factor: f64,
    pub slurmrestd: Option<ingest::slurm::SlurmIngest>,
}

/// How callers reach the service, and so what it trusts.
#[derive(Debug, Clone)]
pub enum Trust {
    /// The gateway's Unix socket: the identity headers are the gateway's.
    Socket,
    /// TCP: the identity headers count only with this shared secret.
    SharedSecret(Secret),
}

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    pub db: Db,
    pub cfg: Arc<AccountingConfig>,
    pub trust: Trust,
}

/// Writes the config's admins and clusters to the database (at start).
pub async fn sync(db: &Db, cfg: &AccountingConfig) -> Result<(), StoreError> {
    let clusters: Vec<(String, String, f64)> = cfg
        .clusters
        .iter()
        .map(|(id, c)| (id.clone(), c.manager.clone(), c.emission_factor))
        .collect();
    store::sync_config(db, &cfg.admin_users, &clusters).await
}

/// Serves the app on a Unix socket from [`bind_private`].
pub async fn serve_unix(
    state: AppState,
    listener: std::os::unix::net::UnixListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let listener = tokio::net::UnixListener::from_std(listener)
        .map_err(|e| format!("accounting socket: {e}"))?;
    axum::serve(listener, api::app(state))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| format!("accounting service stopped: {e}"))
}

/// Serves the app on TCP (for `hpcgate accounting serve`).
pub async fn serve_tcp(
    state: AppState,
    addr: SocketAddr,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    axum::serve(listener, api::app(state))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| format!("accounting service stopped: {e}"))
}

/// Binds a Unix socket that is 0600 from its first moment, at its final path: bound under a
/// 0177 umask, so the socket is created owner-only (a plain bind and a chmod would leave it
/// open to anyone, per the umask, in between).
///
/// It used to be bound in a private directory and renamed into place, but a socket keeps
/// the name it was bound to: the gateway's connection pool compares that name (from
/// getpeername) with the backend's path before reusing a connection, so every reuse failed,
/// logging "Crit: unix FD mismatch", and each request opened a new connection. The umask is
/// the process's: a file another thread creates in the same instant is made owner-only too,
/// more private than asked, never less.
pub fn bind_private(path: &std::path::Path) -> Result<std::os::unix::net::UnixListener, String> {
    use nix::sys::stat::{Mode, umask};
    let _ = std::fs::remove_file(path);
    let old = umask(Mode::from_bits_truncate(0o177));
    let bound = std::os::unix::net::UnixListener::bind(path);
    umask(old);
    let listener = bound.map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
    Ok(listener)
}

/// `hpcgate accounting serve`: the service alone on `[accounting] listen`, until SIGTERM or
/// SIGINT.
pub fn standalone(
    config_path: &std::path::Path,
    accounting: Option<&AccountingConfig>,
    database: &DbConfig,
    state_dir: &std::path::Path,
    threads: usize,
) -> Result<(), String> {
    let cfg = accounting
        .cloned()
        .ok_or_else(|| format!("{}: has no [accounting] section", config_path.display()))?;
    let (Some(addr), Some(secret)) = (cfg.listen, cfg.shared_secret.clone()) else {
        return Err(format!(
            "{}: [accounting] needs listen and shared_secret (or shared_secret_file) to run alone",
            config_path.display()
        ));
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    runtime.block_on(async {
        if database.backend == crate::db::Backend::Sqlite {
            crate::process::tls::create_private_dir(state_dir)?;
        }
        let where_ = crate::db::describe_url(&database.url);
        let db = Db::open(database)
            .await
            .map_err(|e| format!("{}: {e} ({where_})", config_path.display()))?;
        sync(&db, &cfg).await.map_err(|e| e.to_string())?;
        let cfg = Arc::new(cfg);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        ingest::spawn_all(&db, &cfg, &stop_rx);
        let state = AppState {
            db,
            cfg,
            trust: Trust::SharedSecret(secret),
        };
        tracing::info!(address = %addr, database = %where_, "accounting service listening");
        serve_tcp(state, addr, async move {
            stop_signal().await;
            let _ = stop_tx.send(true);
        })
        .await
    })
}

/// Resolves on SIGTERM or SIGINT.
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("accounting service stopping");
}

/// The service as a pingora background service of `hpcgate serve`.
pub struct Service {
    pub db: DbConfig,
    pub cfg: Arc<AccountingConfig>,
    /// Bound before the gateway starts, so that it answers as soon as the gateway does.
    pub listener: std::sync::Mutex<Option<std::os::unix::net::UnixListener>>,
}

impl Service {
    /// Binds the socket now (so a bad path stops the start with a reason).
    pub fn new(db: DbConfig, cfg: AccountingConfig) -> Result<Service, String> {
        let listener = bind_private(&cfg.socket)?;
        Ok(Service {
            db,
            cfg: Arc::new(cfg),
            listener: std::sync::Mutex::new(Some(listener)),
        })
    }
}

impl Service {
    async fn run(&self, mut shutdown: ShutdownWatch) -> Result<(), String> {
        let db = Db::lazy(&self.db).map_err(|e| e.to_string())?;
        if let Err(e) = sync(&db, &self.cfg).await {
            // The API still serves (and says 503 while the database is away).
            tracing::error!(error = %e, "accounting: cannot write admins and clusters");
        }
        ingest::spawn_all(&db, &self.cfg, &shutdown);
        let state = AppState {
            db,
            cfg: self.cfg.clone(),
            trust: Trust::Socket,
        };
        let listener = self
            .listener
            .lock()
            .map_err(|_| "accounting socket lock poisoned".to_string())?
            .take()
            .ok_or_else(|| "the accounting service was started twice".to_string())?;
        tracing::info!(socket = %self.cfg.socket.display(), "accounting service listening");
        serve_unix(state, listener, async move {
            let _ = shutdown.changed().await;
        })
        .await
    }
}

#[async_trait]
impl BackgroundService for Service {
    async fn start(&self, shutdown: ShutdownWatch) {
        if let Err(e) = self.run(shutdown).await {
            tracing::error!(error = %e, "accounting service failed");
        }
    }
}
