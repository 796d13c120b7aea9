//! Builds the running gateway from a checked [`Config`]: the pingora server, its listeners,
//! the proxy service and background services.

use std::sync::Arc;

use pingora::listeners::tls::TlsSettings;
use pingora::listeners::{
    DEFAULT_L4_WRITE_BUFFER_SIZE, L4BufferSettings, ListenerConfig, TcpSocketOptions,
};
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server};
use pingora::services::background::BackgroundService;

use crate::authenticate::Authenticators;
use crate::config::Config;
use crate::process::tls::CertStore;
use crate::proxy::gateway::Gateway;
use crate::proxy::route::{RouteEntry, Router};
use crate::proxy::sanitize::Sanitizer;
use crate::proxy::snapshot::Snapshot;
use crate::proxy::upstream::Pool;

/// Each client connection's transport buffers. Pingora's default puts a 64 KiB read buffer
/// in front of every accepted socket; the HTTP layer reads request heads into its own
/// buffer anyway, so that one only costs memory (most of the ~60 KiB each held keep-alive
/// connection took) and a copy of every byte. Writes keep the small default buffer, which
/// joins a response's head and body into one send.
const L4_BUFFERS: L4BufferSettings = L4BufferSettings {
    read: Some(0),
    write: Some(DEFAULT_L4_WRITE_BUFFER_SIZE),
};

/// Builds everything requests need from a config. Fails (with a reason) rather than
/// half-building.
pub fn snapshot(config: &Config) -> Result<Snapshot, String> {
    let db = if config.uses_database() {
        Some(crate::db::Db::lazy(&config.database).map_err(|e| e.to_string())?)
    } else {
        None
    };
    let auths = Authenticators::build(
        &config.authenticators,
        &config.tokens,
        &config.state_dir,
        db,
        &config.privileged_users(),
    )?;
    let mut pools = std::collections::BTreeMap::new();
    for (name, p) in &config.pools {
        pools.insert(name.clone(), Arc::new(Pool::new(p)?));
    }
    let mut routes = Vec::new();
    for r in &config.routes {
        let auth = auths
            .route_auth(&r.authenticators)
            .ok_or_else(|| format!("route {}: authenticators not built", r.name))?;
        let pool = pools
            .get(&r.pool)
            .ok_or_else(|| format!("route {}: pool {} not built", r.name, r.pool))?
            .clone();
        routes.push(Arc::new(RouteEntry {
            config: r.clone(),
            auth,
            pool,
            slurm: r
                .slurm
                .as_ref()
                .map(|s| Arc::new(crate::enforce::slurmrestd::SlurmGate::new(&r.name, s))),
            ownership: match r.promql {
                crate::enforce::prometheus::config::PromqlMode::Ownership { .. } => {
                    let db = crate::db::Db::lazy(&config.database)
                        .map_err(|e| format!("route {}: database: {e}", r.name))?;
                    Some(Arc::new(crate::enforce::ownership::Ownership::new(db)))
                }
                _ => None,
            },
        }));
    }
    let targets = pools
        .values()
        .map(|pool| crate::proxy::upstream::health::Target {
            pool: pool.clone(),
            // A slurmrestd route in front of the pool lends the check its Slurm token.
            slurm: routes
                .iter()
                .find(|r| Arc::ptr_eq(&r.pool, pool) && r.slurm.is_some())
                .and_then(|r| r.slurm.clone()),
        })
        .collect();
    let whoami_auth = auths.route_auth(&config.gateway.authenticators);
    let token_auth = auths.route_auth(&config.tokens.authenticators);
    let token_issuer = match (&token_auth, &auths.signing_keys) {
        (Some(_), Some(keys)) => Some(Arc::new(crate::tokens::TokenIssuer {
            keys: keys.clone(),
            config: config.tokens.clone(),
        })),
        _ => None,
    };
    let metrics_auth = if config.gateway.metrics_public {
        Some(crate::authenticate::RouteAuth::Public)
    } else {
        whoami_auth.clone()
    };
    Ok(Snapshot {
        sanitizer: Sanitizer::new(&strip_list(config)),
        router: Router::new(routes),
        whoami_auth,
        metrics_auth,
        access_log: config.logging.access_log,
        tls_listeners: config
            .listeners
            .iter()
            .filter(|l| l.tls.is_some())
            .map(|l| l.address)
            .collect(),
        policies: config.policies.clone(),
        utc_offset: config.utc_offset,
        audit: Arc::new(crate::process::audit::AuditLog::open(
            &config.audit,
            config.audit_backlog,
        )?),
        rate_limits: Arc::new(crate::authorize::rate_limit::RateLimiters::new(
            &config.routes,
            config.redis_url.as_ref().map(|s| s.expose()),
            config.redis_timeout,
        )?),
        token_auth,
        token_issuer,
        signing_keys: auths.signing_keys.clone(),
        web: crate::site::web::Web::build(config.web.as_ref(), &config.database, auths.login())?,
        login: auths.login(),
        pools: targets,
    })
}

/// The inbound headers to strip: the built-in identity headers, the configured extras, and
/// every header a route writes as identity (a client must never be able to set one).
fn strip_list(config: &Config) -> Vec<String> {
    let mut list = config.strip_headers.clone();
    for a in config.authenticators.values() {
        if let crate::authenticate::config::AuthenticatorConfig::TrustedHeader(t) = a {
            let n = crate::authenticate::headers::normalize_header_name(t.header.as_str());
            if !list.contains(&n) {
                list.push(n);
            }
        }
    }
    for r in &config.routes {
        for h in r.identity_headers.names() {
            let n = crate::authenticate::headers::normalize_header_name(h.as_str());
            if !list.contains(&n) {
                list.push(n);
            }
        }
    }
    list
}

/// Checks that every listener address can be bound now, for a clear error instead of a
/// failure inside pingora's start-up.
fn check_bindable(config: &Config) -> Result<(), String> {
    for l in &config.listeners {
        let sock = match l.address {
            std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
            std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
        };
        let bound = sock.and_then(|s| {
            s.set_reuseaddr(true)?;
            s.bind(l.address)
        });
        if let Err(e) = bound {
            return Err(format!(
                "{}: cannot listen on {}: {e}",
                config.path.display(),
                l.address
            ));
        }
    }
    Ok(())
}

/// Creates the SQLite file's directory and migrates the schema, when the config uses the
/// database. A database that cannot be reached stops the start: better than a gateway whose
/// every API-key request fails.
async fn prepare_database(config: &Config) -> Result<(), String> {
    if !config.uses_database() {
        return Ok(());
    }
    if config.database.backend == crate::db::Backend::Sqlite || config.accounting.is_some() {
        crate::process::tls::create_private_dir(&config.state_dir)?;
    }
    let where_ = crate::db::describe_url(&config.database.url);
    let db = crate::db::Db::open(&config.database)
        .await
        .map_err(|e| format!("{}: {e} ({where_})", config.path.display()))?;
    db.close().await;
    tracing::info!(database = %where_, "database ready");
    Ok(())
}

/// How `serve` was started.
#[derive(Debug, Clone, Copy)]
pub struct StartOptions {
    pub root: crate::process::privileges::RootPolicy,
    /// Take the listeners over from a running gateway (pingora's graceful upgrade).
    pub upgrade: bool,
}

/// Runs the gateway until it is stopped. `extra` are background services to run beside the
/// proxy (the demo's upstream, for instance).
///
/// Order matters: as root, open the database, listeners and audit log, write the pid file;
/// then drop privileges while the process has a single thread; then build the snapshot (as
/// the unprivileged user, as every reload will) and start pingora's runtimes.
pub fn run(
    config: Config,
    extra: Vec<Box<dyn BackgroundService + Send + Sync>>,
    opts: StartOptions,
    on_start: impl FnOnce(),
) -> Result<(), String> {
    // rustls needs one process-wide crypto provider; pingora installs ring as well.
    let _ = rustls::crypto::ring::default_provider().install_default();
    crate::process::tls::create_private_dir(&config.state_dir)?;
    // pingora's runtimes are created inside `run`; this small one brings the database schema
    // up to date before anything is served. It is dropped (with its threads) right after.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?
        .block_on(prepare_database(&config))?;

    // Listeners are opened here (not by pingora) when privileges are about to be dropped, and
    // handed to pingora like an old process hands them over in a graceful upgrade.
    let prebind = !opts.upgrade && crate::process::privileges::will_drop(opts.root);
    let listeners = if prebind {
        Some(bind_listeners(&config)?)
    } else {
        if !opts.upgrade {
            check_bindable(&config)?;
        }
        None
    };
    let grace = config.grace_period.as_secs().max(1);
    let conf = ServerConf {
        threads: config.threads,
        upstream_keepalive_pool_size: config.upstream_keepalive,
        grace_period_seconds: Some(grace),
        graceful_shutdown_timeout_seconds: Some(1),
        upgrade_sock: config.process.upgrade_socket.display().to_string(),
        ..ServerConf::default()
    };
    let opt = pingora::server::configuration::Opt {
        upgrade: opts.upgrade || prebind,
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(Some(opt), conf);
    match listeners {
        Some(l) => hand_to_pingora(&mut server, l, &config.process.upgrade_socket)?,
        None => server.bootstrap(),
    }
    crate::process::reload::write_pid_file(&config.process.pid_file)?;
    let mut owned = vec![
        config.state_dir.as_path(),
        config.process.pid_file.as_path(),
    ];
    if let crate::process::audit::AuditSink::File(p) = &config.audit {
        crate::process::audit::create(p)?;
        owned.push(p.as_path());
    }
    let was_root = nix::unistd::Uid::effective().is_root();
    if was_root && opts.root == crate::process::privileges::RootPolicy::Switch {
        refuse_config_in_state_dir(&config)?;
    }
    crate::process::privileges::drop_to(&config.process.user, opts.root, &owned)?;
    // Read everything again as the user the gateway now is, as every reload will: a file
    // only root can read stops the start here instead of failing the first reload.
    let reread;
    let current = if was_root && !nix::unistd::Uid::effective().is_root() {
        reread = crate::config::load(&config.path).map_err(|e| {
            format!(
                "after switching to user {}, the config no longer loads (everything the \
                 gateway reads must be readable by [process] user):\n{e}",
                config.process.user.name
            )
        })?;
        &reread
    } else {
        &config
    };
    let snap = snapshot(current)?;
    let (targets_tx, targets_rx) = tokio::sync::watch::channel(snap.pools.clone());
    let checker = crate::proxy::upstream::health::HealthChecker {
        targets: targets_rx,
    };
    let shared = Arc::new(arc_swap::ArcSwap::from_pointee(snap));
    // The proxy, with the request-head and keep-alive deadlines pingora does not keep (HTTP/1
    // in `deadlines`; an idle HTTP/2 connection is closed by pingora's own idle timeout).
    let mut proxy =
        pingora::proxy::http_proxy(&server.configuration, Gateway::shared(shared.clone()));
    let mut options = pingora::apps::HttpServerOptions::default();
    options.h2_idle_timeout = Some(config.keepalive_timeout);
    proxy.server_options = Some(options);
    let mut svc = pingora::services::listening::Service::new(
        "hpcgate".to_string(),
        crate::process::deadlines::Deadlines::new(
            proxy,
            config.request_head_timeout,
            config.keepalive_timeout,
        ),
    );
    let mut certs = Vec::new();
    for l in &config.listeners {
        let addr = l.address.to_string();
        let sock_opt = l.address.is_ipv6().then(|| {
            let mut o = TcpSocketOptions::default();
            o.ipv6_only = Some(true);
            o
        });
        let mut endpoint = ListenerConfig::tcp(addr.clone()).l4_buffer(L4_BUFFERS);
        if let Some(o) = sock_opt {
            endpoint = endpoint.tcp_socket_options(o);
        }
        if let Some(files) = &l.tls {
            let mut tls = TlsSettings::intermediate("", "")
                .map_err(|e| format!("TLS settings for {addr}: {e}"))?;
            let store = Arc::new(CertStore::new(files.loaded.clone()));
            certs.push((l.address, store.clone()));
            tls.set_cert_resolver(store);
            if let Some(cas) = &l.client_ca {
                tls.set_client_cert_verifier(client_verifier(cas)?);
            }
            if l.http2 {
                tls.enable_h2();
            }
            endpoint = endpoint.tls(tls);
        }
        svc.add_listener(endpoint);
    }
    server.add_service(svc);
    server.add_service(pingora::services::background::background_service(
        "health-checks",
        checker,
    ));
    if let Some(acct) = &config.accounting {
        if let Some(dir) = acct.socket.parent() {
            crate::process::tls::create_private_dir(dir)?;
        }
        server.add_service(pingora::services::background::background_service(
            "accounting",
            crate::accounting::Service::new(config.database.clone(), acct.clone())?,
        ));
    }
    server.add_service(pingora::services::background::background_service(
        "reload",
        crate::process::reload::Reloader::new(&config, shared, targets_tx, certs),
    ));
    for (i, b) in extra.into_iter().enumerate() {
        server.add_service(pingora::services::background::background_service(
            &format!("background-{i}"),
            Boxed(b),
        ));
    }
    for l in &config.listeners {
        tracing::info!(
            address = %l.address,
            tls = l.tls.is_some(),
            http2 = l.tls.is_some() && l.http2,
            "listening"
        );
    }
    on_start();
    server.run(RunArgs {
        shutdown_signal: Box::new(crate::process::shutdown::Signals),
    });
    Ok(())
}

/// The state directory is handed to the service user at start; a config (with its secrets)
/// inside it would be handed over too.
fn refuse_config_in_state_dir(config: &Config) -> Result<(), String> {
    let (Ok(file), Ok(state)) = (
        std::fs::canonicalize(&config.path),
        std::fs::canonicalize(&config.state_dir),
    ) else {
        return Ok(());
    };
    if file.starts_with(&state) {
        return Err(format!(
            "{}: server.state_dir {} holds the config file; it is given to [process] user at \
             start, so keep the config (and its secrets) outside it",
            config.path.display(),
            config.state_dir.display()
        ));
    }
    Ok(())
}

/// Opens every listener now (ports below 1024 need root or CAP_NET_BIND_SERVICE), with the
/// options pingora would set: SO_REUSEADDR, IPV6_V6ONLY for IPv6, a long backlog.
fn bind_listeners(config: &Config) -> Result<Vec<(String, std::net::TcpListener)>, String> {
    let mut out = Vec::new();
    for l in &config.listeners {
        use socket2::{Domain, Socket, Type};
        let listener =
            Socket::new(Domain::for_address(l.address), Type::STREAM, None).and_then(|s| {
                s.set_reuse_address(true)?;
                if l.address.is_ipv6() {
                    s.set_only_v6(true)?;
                }
                s.bind(&l.address.into())?;
                s.listen(65535)?;
                // pingora's tokio listeners expect a non-blocking socket.
                s.set_nonblocking(true)?;
                Ok(std::net::TcpListener::from(s))
            });
        let listener = listener.map_err(|e| {
            format!(
                "{}: cannot listen on {}: {e}",
                config.path.display(),
                l.address
            )
        })?;
        out.push((l.address.to_string(), listener));
    }
    Ok(out)
}

/// Hands opened listeners to pingora through its upgrade socket, from a short-lived thread,
/// as an old process would in a graceful upgrade.
fn hand_to_pingora(
    server: &mut Server,
    listeners: Vec<(String, std::net::TcpListener)>,
    sock: &std::path::Path,
) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let path = sock.display().to_string();
    let sender = std::thread::spawn(move || {
        let mut fds = pingora::server::Fds::new();
        for (addr, l) in &listeners {
            fds.add(addr.clone(), l.as_raw_fd());
        }
        let sent = fds.send_to_sock(path.as_str());
        // The receiver holds its own copies now; ours close here.
        drop(listeners);
        sent
    });
    server.bootstrap();
    match sender.join() {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!(
            "cannot hand the listeners over through {}: {e}",
            sock.display()
        )),
        Err(_) => Err("internal: the listener hand-over thread panicked".into()),
    }
}

/// Asks clients for a certificate from these CAs; clients without one are let in (to be
/// authenticated some other way), clients with a bad one are refused in the handshake.
fn client_verifier(
    cas: &[rustls::pki_types::CertificateDer<'static>],
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        roots
            .add(ca.clone())
            .map_err(|e| format!("client_ca: {e}"))?;
    }
    rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| format!("client_ca: {e}"))
}

/// A boxed background service (pingora wants a concrete type).
struct Boxed(Box<dyn BackgroundService + Send + Sync>);

#[async_trait::async_trait]
impl BackgroundService for Boxed {
    async fn start(&self, shutdown: pingora::server::ShutdownWatch) {
        self.0.start(shutdown).await
    }
}
