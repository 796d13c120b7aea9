//! Builds the running gateway from a checked [`Config`]: the pingora server, its listeners,
//! the proxy service and background services.

use std::sync::Arc;

use pingora::listeners::TcpSocketOptions;
use pingora::listeners::tls::TlsSettings;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server};
use pingora::services::background::BackgroundService;

use crate::authenticate::Authenticators;
use crate::config::Config;
use crate::gateway::{Gateway, Snapshot};
use crate::route::{RouteEntry, Router};
use crate::sanitize::Sanitizer;
use crate::tls::CertStore;
use crate::upstream::Pool;

/// Builds everything requests need from a config. Fails (with a reason) rather than
/// half-building.
pub fn snapshot(config: &Config) -> Result<Snapshot, String> {
    let auths = Authenticators::build(config)?;
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
                .map(|s| Arc::new(crate::slurm::SlurmGate::new(&r.name, s))),
            ownership: match r.promql {
                crate::enforce::prometheus::PromqlMode::Ownership { .. } => {
                    let db = crate::store::Db::lazy(&config.database)
                        .map_err(|e| format!("route {}: database: {e}", r.name))?;
                    Some(Arc::new(crate::enforce::ownership::Ownership::new(db)))
                }
                _ => None,
            },
        }));
    }
    let targets = pools
        .values()
        .map(|pool| crate::health::Target {
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
        audit: Arc::new(crate::audit::AuditLog::open(&config.audit)?),
        rate_limits: Arc::new(crate::authorize::rate_limit::RateLimiters::new(
            &config.routes,
            config.redis_url.as_ref().map(|s| s.expose()),
            config.redis_timeout,
        )?),
        token_auth,
        token_issuer,
        signing_keys: auths.signing_keys.clone(),
        web: crate::web::Web::build(config, auths.login())?,
        login: auths.login(),
        pools: targets,
    })
}

/// The inbound headers to strip: the built-in identity headers, the configured extras, and
/// every header a route writes as identity (a client must never be able to set one).
fn strip_list(config: &Config) -> Vec<String> {
    let mut list = config.strip_headers.clone();
    for a in config.authenticators.values() {
        if let crate::config::Authenticator::TrustedHeader(t) = a {
            let n = crate::config::normalize_header_name(t.header.as_str());
            if !list.contains(&n) {
                list.push(n);
            }
        }
    }
    for r in &config.routes {
        for h in r.identity_headers.names() {
            let n = crate::config::normalize_header_name(h.as_str());
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
    if config.database.backend == crate::store::Backend::Sqlite || config.accounting.is_some() {
        crate::tls::create_private_dir(&config.state_dir)?;
    }
    let where_ = crate::config::describe_url(&config.database.url);
    let db = crate::store::Db::open(&config.database)
        .await
        .map_err(|e| format!("{}: {e} ({where_})", config.path.display()))?;
    db.close().await;
    tracing::info!(database = %where_, "database ready");
    Ok(())
}

/// Runs the gateway until it is stopped. `extra` are background services to run beside the
/// proxy (the demo's upstream, for instance).
pub fn run(
    config: Config,
    extra: Vec<Box<dyn BackgroundService + Send + Sync>>,
    on_start: impl FnOnce(),
) -> Result<(), String> {
    // rustls needs one process-wide crypto provider; pingora installs ring as well.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // pingora's runtimes are created inside `run`; this small one checks binds and brings
    // the database schema up to date before anything is served.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?
        .block_on(async {
            check_bindable(&config)?;
            prepare_database(&config).await
        })?;
    let snap = snapshot(&config)?;

    let grace = config.grace_period.as_secs().max(1);
    let conf = ServerConf {
        threads: config.threads,
        grace_period_seconds: Some(grace),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let checker = crate::health::HealthChecker {
        targets: snap.pools.clone(),
    };
    let mut svc = pingora::proxy::http_proxy_service_with_name(
        &server.configuration,
        Gateway::new(snap),
        "hpcgate",
    );
    for l in &config.listeners {
        let addr = l.address.to_string();
        let sock_opt = l.address.is_ipv6().then(|| {
            let mut o = TcpSocketOptions::default();
            o.ipv6_only = Some(true);
            o
        });
        match &l.tls {
            Some(files) => {
                let mut tls = TlsSettings::intermediate("", "")
                    .map_err(|e| format!("TLS settings for {addr}: {e}"))?;
                tls.set_cert_resolver(Arc::new(CertStore::new(files.loaded.clone())));
                if let Some(cas) = &l.client_ca {
                    tls.set_client_cert_verifier(client_verifier(cas)?);
                }
                if l.http2 {
                    tls.enable_h2();
                }
                svc.add_tls_with_settings(&addr, sock_opt, tls);
            }
            None => match sock_opt {
                Some(o) => svc.add_tcp_with_settings(&addr, o),
                None => svc.add_tcp(&addr),
            },
        }
    }
    server.add_service(svc);
    server.add_service(pingora::services::background::background_service(
        "health-checks",
        checker,
    ));
    if let Some(acct) = &config.accounting {
        if let Some(dir) = acct.socket.parent() {
            crate::tls::create_private_dir(dir)?;
        }
        server.add_service(pingora::services::background::background_service(
            "accounting",
            crate::accounting::Service::new(config.database.clone(), acct.clone())?,
        ));
    }
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
        shutdown_signal: Box::new(crate::shutdown::Signals),
    });
    Ok(())
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
