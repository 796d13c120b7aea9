//! Logs (tracing, JSON lines by default) and the gateway's own Prometheus metrics.
//!
//! Nothing here ever receives a password, token or key: log lines are built from the
//! request line, route, identity name and status only.

use std::sync::OnceLock;

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
};
use tracing_subscriber::EnvFilter;

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
    /// Upstream responses that tried to set one of the gateway's own cookies (the
    /// `Set-Cookie` was removed), by route.
    pub upstream_own_cookies: IntCounterVec,
    /// Reloads (SIGHUP), by result (`ok`, `error`).
    pub config_reloads: IntCounterVec,
    /// Certificates reloaded because their files changed, by result.
    pub certificate_reloads: IntCounterVec,
    /// Time an authenticator took to decide, by authenticator (requests it did not handle
    /// are not counted).
    pub auth_duration: HistogramVec,
    /// Credential cache lookups, by cache (`password`, `api_key`, `slurm_token`) and result
    /// (`hit`, `miss`).
    pub auth_cache: IntCounterVec,
    /// Password checks the back end ran (argon2 hash or LDAP bind), by authenticator and
    /// result (`ok`, `no_such_user`, `bad_password`, `error`): cache hits and requests that
    /// shared another's check are not counted.
    pub password_checks: IntCounterVec,
    /// Policy decisions, by route and decision (`allow`, `deny`).
    pub policy_decisions: IntCounterVec,
    /// Requests refused by a route's rate limit, by route.
    pub rate_limited: IntCounterVec,
    /// Requests that reached an upstream, by pool, backend and status class (`2xx`, …,
    /// `error` when no response came).
    pub upstream_requests: IntCounterVec,
    /// Time of requests that went upstream, by pool.
    pub upstream_duration: HistogramVec,
    /// Audit records dropped because the writer fell `[audit] backlog` lines behind.
    pub audit_dropped: IntCounter,
    /// Client connections closed by a deadline, by reason (`request_head`: the head was not
    /// complete within `[server] request_head_timeout`, answered 408; `keepalive`: idle for
    /// `[server] keepalive_timeout` between requests).
    pub connections_timed_out: IntCounterVec,
    /// 1 while a backend is up, 0 while down, -1 before its first check (set at scrape).
    pub backend_up: IntGaugeVec,
}

/// Latency buckets, from half a millisecond to half a minute.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition")
}

fn histogram(name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    HistogramVec::new(
        HistogramOpts::new(name, help).buckets(BUCKETS.to_vec()),
        labels,
    )
    .expect("static metric definition")
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
        let upstream_own_cookies = IntCounterVec::new(
            Opts::new(
                "upstream_own_cookies_dropped_total",
                "Upstream responses whose Set-Cookie for one of the gateway's own cookie names \
                 was removed, by route",
            ),
            &["route"],
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
        let auth_duration = histogram(
            "authentication_duration_seconds",
            "Time an authenticator took to accept or refuse credentials, by authenticator",
            &["authenticator"],
        );
        let auth_cache = counter(
            "auth_cache_lookups_total",
            "Credential cache lookups by cache (password, api_key, slurm_token, \
             ended_sessions) and result (hit, miss)",
            &["cache", "result"],
        );
        let password_checks = counter(
            "password_checks_total",
            "Password checks run by the back end (argon2 hash, LDAP bind), by authenticator and \
             result (ok, no_such_user, bad_password, error); cache hits and requests sharing a \
             concurrent check are not counted",
            &["authenticator", "result"],
        );
        let policy_decisions = counter(
            "policy_decisions_total",
            "Authorization decisions by route and decision (allow, deny)",
            &["route", "decision"],
        );
        let rate_limited = counter(
            "rate_limited_total",
            "Requests refused by a route's rate limit, by route",
            &["route"],
        );
        let upstream_requests = counter(
            "upstream_requests_total",
            "Requests that went upstream, by pool, backend and status class (2xx..5xx, or \
             error when no response came)",
            &["pool", "backend", "class"],
        );
        let upstream_duration = histogram(
            "upstream_request_duration_seconds",
            "Time of requests that went upstream, from arrival to the end of the response, by \
             pool",
            &["pool"],
        );
        let audit_dropped = IntCounter::new(
            "audit_records_dropped_total",
            "Audit records dropped because the audit log's writer was [audit] backlog lines \
             behind (a stalled or full disk)",
        )
        .expect("static metric definition");
        let connections_timed_out = counter(
            "connections_timed_out_total",
            "Client connections closed by a deadline: request_head (the head was not complete \
             within [server] request_head_timeout; answered 408) or keepalive (idle for [server] \
             keepalive_timeout between requests)",
            &["reason"],
        );
        let backend_up = IntGaugeVec::new(
            Opts::new(
                "backend_up",
                "Health of each backend: 1 up, 0 down, -1 not checked yet",
            ),
            &["pool", "backend"],
        )
        .expect("static metric definition");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(duration.clone()),
            Box::new(upstream_errors.clone()),
            Box::new(auth.clone()),
            Box::new(slurm_tokens.clone()),
            Box::new(slurm_errors.clone()),
            Box::new(upstream_own_cookies.clone()),
            Box::new(config_reloads.clone()),
            Box::new(certificate_reloads.clone()),
            Box::new(auth_duration.clone()),
            Box::new(auth_cache.clone()),
            Box::new(password_checks.clone()),
            Box::new(policy_decisions.clone()),
            Box::new(rate_limited.clone()),
            Box::new(upstream_requests.clone()),
            Box::new(upstream_duration.clone()),
            Box::new(backend_up.clone()),
            Box::new(audit_dropped.clone()),
            Box::new(connections_timed_out.clone()),
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
            upstream_own_cookies,
            config_reloads,
            certificate_reloads,
            auth_duration,
            auth_cache,
            password_checks,
            policy_decisions,
            rate_limited,
            upstream_requests,
            upstream_duration,
            backend_up,
            audit_dropped,
            connections_timed_out,
        }
    })
}

impl Metrics {
    /// Counts one credential cache lookup.
    pub fn cache_lookup(&self, cache: &str, hit: bool) {
        self.auth_cache
            .with_label_values(&[cache, if hit { "hit" } else { "miss" }])
            .inc();
    }

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

/// `[logging]`: the log level and format, and whether each request is logged.
#[derive(Debug, Clone)]
pub struct Logging {
    pub level: String,
    pub json: bool,
    pub access_log: bool,
}
