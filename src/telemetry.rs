//! Logs (tracing, JSON lines by default) and the gateway's own Prometheus metrics.
//!
//! Nothing here ever receives a password, token or key: log lines are built from the
//! request line, route, identity name and status only.

use std::sync::OnceLock;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use tracing_subscriber::EnvFilter;

use crate::config::Logging;

/// Installs the global subscriber. `RUST_LOG` wins over the config's level.
pub fn init_logging(cfg: &Logging) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cfg.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let result = if cfg.json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init()
    } else {
        builder.try_init()
    };
    // A second init (tests, reload) keeps the first subscriber.
    let _ = result;
}

/// The gateway's metrics, registered once per process.
pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
    pub upstream_errors: IntCounterVec,
    pub auth: IntCounterVec,
    /// Slurm tokens minted, by route.
    pub slurm_tokens: IntCounterVec,
    /// slurmrestd answers with an error status (it reports bad tokens and "permission
    /// denied" as 500), by route and status.
    pub slurm_errors: IntCounterVec,
    /// Reloads (SIGHUP), by result (`ok`, `error`).
    pub config_reloads: IntCounterVec,
    /// Certificates reloaded because their files changed, by result.
    pub certificate_reloads: IntCounterVec,
}

pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let registry = Registry::new_custom(Some("hpcgate".into()), None)
            .expect("static registry prefix is valid");
        let requests = IntCounterVec::new(
            Opts::new("requests_total", "Requests by route and response status"),
            &["route", "status"],
        )
        .expect("static metric definition");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "request_duration_seconds",
                "Time from the request's arrival to the end of its response, by route",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0,
            ]),
            &["route"],
        )
        .expect("static metric definition");
        let upstream_errors = IntCounterVec::new(
            Opts::new(
                "upstream_errors_total",
                "Failures talking to upstreams, by pool and kind (connect, timeout, other)",
            ),
            &["pool", "kind"],
        )
        .expect("static metric definition");
        let auth = IntCounterVec::new(
            Opts::new(
                "authentications_total",
                "Authentication outcomes by authenticator and result",
            ),
            &["authenticator", "result"],
        )
        .expect("static metric definition");
        let slurm_tokens = IntCounterVec::new(
            Opts::new(
                "slurm_tokens_minted_total",
                "Slurm JWTs minted for users (cache misses), by route",
            ),
            &["route"],
        )
        .expect("static metric definition");
        let slurm_errors = IntCounterVec::new(
            Opts::new(
                "slurm_errors_total",
                "slurmrestd answers of status 500 or more, passed to the client unchanged, by \
                 route and status",
            ),
            &["route", "status"],
        )
        .expect("static metric definition");
        let config_reloads = IntCounterVec::new(
            Opts::new(
                "config_reloads_total",
                "Config reloads (SIGHUP) by result: ok, or error (the old config kept serving)",
            ),
            &["result"],
        )
        .expect("static metric definition");
        let certificate_reloads = IntCounterVec::new(
            Opts::new(
                "certificate_reloads_total",
                "Listener certificates reloaded because their files changed, by result",
            ),
            &["result"],
        )
        .expect("static metric definition");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(duration.clone()),
            Box::new(upstream_errors.clone()),
            Box::new(auth.clone()),
            Box::new(slurm_tokens.clone()),
            Box::new(slurm_errors.clone()),
            Box::new(config_reloads.clone()),
            Box::new(certificate_reloads.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Metrics {
            registry,
            requests,
            duration,
            upstream_errors,
            auth,
            slurm_tokens,
            slurm_errors,
            config_reloads,
            certificate_reloads,
        }
    })
}

impl Metrics {
    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        use prometheus::Encoder;
        let mut buf = Vec::new();
        let enc = prometheus::TextEncoder::new();
        if enc.encode(&self.registry.gather(), &mut buf).is_err() {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}
