//! Reload without restart: SIGHUP (which `hpcgate reload` sends, through the pid file)
//! re-reads the config file and everything it names — policies, users files, keys,
//! certificates — checks all of it, builds a new [`Snapshot`] and swaps it in. Requests in
//! flight keep the snapshot they started with. If anything is wrong, nothing changes: the
//! running config keeps serving and the problems are logged as `FILE:KEY: reason`.
//!
//! What a reload cannot change: the listeners (addresses, TLS on or off, HTTP/2, client
//! CAs) — the sockets were opened before privileges were dropped, so a config that changes
//! them is refused as a whole (use a restart or a graceful upgrade); and settings read only
//! at start (`[process]`, `[server] threads`, `upstream_keepalive`, `state_dir`,
//! `request_head_timeout`, `keepalive_timeout`, `[logging]`), which are reported as needing
//! a restart while the rest is applied.
//!
//! Certificates are also watched: every `process.watch_certificates` the certificate and key
//! files' modification times are compared, and changed files are loaded and served to new
//! handshakes (a bad pair is logged and the old one kept).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use rustls::pki_types::CertificateDer;
use tokio::signal::unix::{SignalKind, signal};

use crate::config::Config;
use crate::process::reload_outcome;
use crate::process::tls::CertStore;
use crate::proxy::snapshot::Snapshot;
use crate::proxy::upstream::health::Target;

/// What the listeners are made of; a reload may not change it.
#[derive(Debug, PartialEq)]
struct Shape {
    address: SocketAddr,
    tls: bool,
    http2: bool,
    client_ca: Option<Vec<CertificateDer<'static>>>,
}

fn shape(config: &Config) -> Vec<Shape> {
    config
        .listeners
        .iter()
        .map(|l| Shape {
            address: l.address,
            tls: l.tls.is_some(),
            http2: l.http2,
            client_ca: l.client_ca.clone(),
        })
        .collect()
}

/// Settings read once at start, for the "needs a restart" warning.
fn start_only(config: &Config) -> Vec<(&'static str, String)> {
    vec![
        ("process", format!("{:?}", config.process)),
        ("server.threads", config.threads.to_string()),
        (
            "server.upstream_keepalive",
            config.upstream_keepalive.to_string(),
        ),
        ("server.state_dir", config.state_dir.display().to_string()),
        (
            "server.request_head_timeout",
            format!("{:?}", config.request_head_timeout),
        ),
        (
            "server.keepalive_timeout",
            format!("{:?}", config.keepalive_timeout),
        ),
        (
            "logging",
            format!("{} {}", config.logging.level, config.logging.json),
        ),
    ]
}

struct WatchedCert {
    address: SocketAddr,
    store: Arc<CertStore>,
    cert: PathBuf,
    key: PathBuf,
    /// Modification times of certificate and key when last loaded (or tried).
    seen: Option<(SystemTime, SystemTime)>,
}

struct State {
    listeners: Vec<Shape>,
    start_only: Vec<(&'static str, String)>,
    certs: Vec<WatchedCert>,
}

/// The background service that reloads on SIGHUP and watches certificates.
pub struct Reloader {
    path: PathBuf,
    shared: Arc<ArcSwap<Snapshot>>,
    targets: tokio::sync::watch::Sender<Vec<Target>>,
    watch: Option<Duration>,
    state: tokio::sync::Mutex<State>,
}

impl Reloader {
    pub fn new(
        config: &Config,
        shared: Arc<ArcSwap<Snapshot>>,
        targets: tokio::sync::watch::Sender<Vec<Target>>,
        stores: Vec<(SocketAddr, Arc<CertStore>)>,
    ) -> Reloader {
        let mut certs = Vec::new();
        for (address, store) in stores {
            if let Some(files) = config
                .listeners
                .iter()
                .find(|l| l.address == address)
                .and_then(|l| l.tls.as_ref())
            {
                certs.push(WatchedCert {
                    address,
                    store,
                    seen: mtimes(&files.cert, &files.key),
                    cert: files.cert.clone(),
                    key: files.key.clone(),
                });
            }
        }
        reload_outcome::record(Ok(()), &config.path);
        Reloader {
            path: config.path.clone(),
            shared,
            targets,
            watch: config.process.watch_certificates,
            state: tokio::sync::Mutex::new(State {
                listeners: shape(config),
                start_only: start_only(config),
                certs,
            }),
        }
    }

    /// Re-reads everything; applies it only if all of it is good.
    async fn reload(&self) {
        tracing::info!(config = %self.path.display(), "SIGHUP: reloading the config");
        let path = self.path.clone();
        let built = tokio::task::spawn_blocking(move || {
            let config = crate::config::load(&path).map_err(|e| e.to_string())?;
            let snap = crate::process::server::snapshot(&config)?;
            Ok::<_, String>((config, snap))
        })
        .await
        .unwrap_or_else(|e| Err(format!("internal: the reload task failed: {e}")));
        let mut state = self.state.lock().await;
        let (config, snap) = match built {
            Ok(b) => b,
            Err(e) => return self.refuse(e),
        };
        if shape(&config) != state.listeners {
            return self.refuse(format!(
                "{}: listeners: the listeners cannot change on reload (their sockets were \
                 opened at start); restart, or upgrade gracefully (serve --upgrade)",
                config.path.display()
            ));
        }
        let now = start_only(&config);
        for ((key, old), (_, new)) in state.start_only.iter().zip(&now) {
            if old != new {
                tracing::warn!(key, "changed, but read only at start: restart to apply it");
            }
        }
        // Certificates of the same listeners, perhaps from new files.
        for w in &mut state.certs {
            if let Some(files) = config
                .listeners
                .iter()
                .find(|l| l.address == w.address)
                .and_then(|l| l.tls.as_ref())
            {
                w.store.replace(files.loaded.clone());
                w.cert = files.cert.clone();
                w.key = files.key.clone();
                w.seen = mtimes(&w.cert, &w.key);
            }
        }
        let pools = snap.pools.clone();
        self.shared.store(Arc::new(snap));
        let _ = self.targets.send(pools);
        crate::process::telemetry::metrics()
            .config_reloads
            .with_label_values(&["ok"])
            .inc();
        reload_outcome::record(Ok(()), &config.path);
        tracing::info!(
            config = %config.path.display(),
            routes = config.routes.len(),
            pools = config.pools.len(),
            authenticators = config.authenticators.len(),
            "config reloaded: new requests use it; requests in flight finish on the old one"
        );
    }

    fn refuse(&self, error: String) {
        crate::process::telemetry::metrics()
            .config_reloads
            .with_label_values(&["error"])
            .inc();
        // One line per problem, each `FILE:KEY: reason`.
        for line in error.lines() {
            tracing::error!(problem = %line, "reload refused");
        }
        tracing::error!(
            config = %self.path.display(),
            "reload refused: the running config keeps serving"
        );
        reload_outcome::record(Err(error), &self.path);
    }

    /// Reloads the certificates whose files changed since they were last read.
    async fn check_certificates(&self) {
        let mut state = self.state.lock().await;
        for w in &mut state.certs {
            let (cert, key) = (w.cert.clone(), w.key.clone());
            let now = tokio::task::spawn_blocking(move || mtimes(&cert, &key))
                .await
                .ok()
                .flatten();
            if now.is_none() || now == w.seen {
                continue;
            }
            w.seen = now;
            let (cert, key) = (w.cert.clone(), w.key.clone());
            let loaded = tokio::task::spawn_blocking(move || {
                crate::process::tls::load_certified_key(&cert, &key)
            })
            .await
            .unwrap_or_else(|e| Err(format!("internal: {e}")));
            let m = &crate::process::telemetry::metrics().certificate_reloads;
            match loaded {
                Ok(k) => {
                    w.store.replace(Arc::new(k));
                    m.with_label_values(&["ok"]).inc();
                    tracing::info!(
                        listener = %w.address,
                        cert = %w.cert.display(),
                        "certificate changed on disk: new handshakes use it"
                    );
                }
                Err(e) => {
                    m.with_label_values(&["error"]).inc();
                    tracing::error!(
                        listener = %w.address,
                        error = %e,
                        "certificate changed on disk but cannot be used: keeping the old one"
                    );
                }
            }
        }
    }
}

fn mtimes(cert: &Path, key: &Path) -> Option<(SystemTime, SystemTime)> {
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    Some((m(cert)?, m(key)?))
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot handle SIGHUP: reload is unavailable");
                return;
            }
        };
        // Never ticks when the watch is off.
        let period = self.watch.unwrap_or(Duration::from_secs(24 * 3600));
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = hup.recv() => self.reload().await,
                _ = tick.tick() => {
                    if self.watch.is_some() {
                        self.check_certificates().await;
                    }
                }
            }
        }
    }
}

/// Writes this process's pid, for `hpcgate reload`.
pub fn write_pid_file(path: &Path) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::write(path, format!("{}\n", std::process::id()))
        .map_err(|e| format!("cannot write the pid file {}: {e}", path.display()))
}

/// `hpcgate reload`: sends SIGHUP to the gateway named by the config's pid file.
pub fn signal_running(config: &Config) -> Result<i32, String> {
    let path = &config.process.pid_file;
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the pid file {}: {e}", path.display()))?;
    let pid: i32 = text
        .trim()
        .parse()
        .map_err(|_| format!("{}: not a process id", path.display()))?;
    // A stale pid file may name some other process by now.
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if !comm.trim().starts_with("hpcgate") {
        return Err(format!(
            "{}: process {pid} is not a running hpcgate (stale pid file?)",
            path.display()
        ));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGHUP,
    )
    .map_err(|e| format!("cannot signal process {pid}: {e}"))?;
    Ok(pid)
}
