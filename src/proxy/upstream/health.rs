//! Active health checks of upstream backends (`[pools.NAME.health_check]`), and the view of
//! every pool that `/-/status` shows (FirecREST's "health checker" idea).
//!
//! One task per checked pool, in a pingora background service: every `interval` it sends
//! `GET path` to each backend at once; 2xx within `timeout` is up, anything else down. A
//! backend that is down gets no requests until a check finds it up again (a pool with none
//! left answers 503). For pools behind slurmrestd routes the check carries a Slurm token of
//! the route's `health_user`, and the controller's `pings` answer is kept for `/-/status`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde::Serialize;
use serde_json::{Value, json};

use crate::enforce::slurmrestd::SlurmGate;
use crate::proxy::upstream::Pool;
use crate::proxy::upstream::config::{BackendAddr, Balance, HealthCheck};

/// A pool, with the Slurm step of a slurmrestd route in front of it (for the check's token).
#[derive(Clone)]
pub struct Target {
    pub pool: Arc<Pool>,
    pub slurm: Option<Arc<SlurmGate>>,
}

/// The last check of one backend.
#[derive(Debug, Clone, Serialize)]
pub struct BackendHealth {
    /// `unknown` (not checked yet), `up` or `down`.
    pub state: &'static str,
    pub last_check: Option<String>,
    pub latency_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// slurmrestd's `pings` (the controller's answer), for Slurm pools.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slurm_ping: Option<Value>,
}

impl BackendHealth {
    pub fn unknown() -> Self {
        BackendHealth {
            state: "unknown",
            last_check: None,
            latency_ms: None,
            error: None,
            slurm_ping: None,
        }
    }
}

/// Runs the checks of every pool that has them until shutdown; a reload sends new targets
/// through `targets`, and the checks start over on them.
pub struct HealthChecker {
    pub targets: tokio::sync::watch::Receiver<Vec<Target>>,
}

#[async_trait]
impl BackgroundService for HealthChecker {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut targets = self.targets.clone();
        loop {
            let mut tasks = tokio::task::JoinSet::new();
            for t in targets.borrow_and_update().iter() {
                if let Some(hc) = t.pool.config.health_check.clone() {
                    tasks.spawn(run(t.clone(), hc));
                }
                let c = &t.pool.config;
                if c.balance == Balance::Retention && c.retention.iter().any(Option::is_none) {
                    tasks.spawn(read_retentions(t.pool.clone()));
                }
            }
            tokio::select! {
                _ = shutdown.changed() => return,
                changed = targets.changed() => {
                    if changed.is_err() {
                        // The reloader is gone: keep checking these targets until shutdown.
                        let _ = shutdown.changed().await;
                        return;
                    }
                    tasks.abort_all();
                }
            }
        }
    }
}

fn client_for(
    pool: &Pool,
    backend: &BackendAddr,
    timeout: Duration,
) -> Result<(reqwest::Client, String), String> {
    let BackendAddr::Tcp { addr, host, tls } = backend else {
        return Err("unix: backends are not health-checked".into());
    };
    let c = &pool.config;
    let mut b = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(c.connect_timeout))
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(0);
    // The name the pool uses for SNI and certificates, pinned to the backend's address.
    let name = match (tls, &c.tls_server_name) {
        (true, Some(n)) => n.clone(),
        _ => host.clone(),
    };
    if name.parse::<std::net::IpAddr>().is_err() {
        b = b.resolve(&name, *addr);
    }
    if *tls {
        if let Some(ca) = &c.tls_ca {
            let pem = std::fs::read(ca).map_err(|e| format!("CA file {}: {e}", ca.display()))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("CA file {}: {e}", ca.display()))?
            {
                b = b.add_root_certificate(cert);
            }
        }
        if !c.tls_verify {
            b = b.danger_accept_invalid_certs(true);
        }
    }
    let host_part = if name.contains(':') {
        format!("[{name}]")
    } else {
        name
    };
    let base = format!(
        "{}://{host_part}:{}",
        if *tls { "https" } else { "http" },
        addr.port()
    );
    Ok((b.build().map_err(|e| e.to_string())?, base))
}

async fn run(t: Target, hc: HealthCheck) {
    // Clients are built once (reading a CA file is blocking, but this is start-up, on the
    // background runtime, never a request path).
    let clients: Vec<Result<(reqwest::Client, String), String>> = t
        .pool
        .config
        .backends
        .iter()
        .map(|b| client_for(&t.pool, b, hc.timeout))
        .collect();
    let clients = Arc::new(clients);
    let mut tick = tokio::time::interval(hc.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let mut round = tokio::task::JoinSet::new();
        for i in 0..t.pool.config.backends.len() {
            let (t, hc, clients) = (t.clone(), hc.clone(), clients.clone());
            round.spawn(async move {
                let h = match &clients[i] {
                    Ok((client, base)) => check(&t, &hc, client, base).await,
                    Err(e) => BackendHealth {
                        error: Some(e.clone()),
                        ..BackendHealth::unknown()
                    },
                };
                let before = t.pool.health(i).state;
                if before != h.state && h.state != "unknown" {
                    if h.state == "down" {
                        tracing::warn!(
                            pool = %t.pool.config.name,
                            backend = %t.pool.backend(i),
                            error = h.error.as_deref().unwrap_or(""),
                            "health check failed: backend down"
                        );
                    } else {
                        tracing::info!(
                            pool = %t.pool.config.name,
                            backend = %t.pool.backend(i),
                            "health check passed: backend up"
                        );
                    }
                }
                t.pool.set_health(i, h);
            });
        }
        while round.join_next().await.is_some() {}
    }
}

/// How often a `retention` pool asks its backends how far back they hold data.
const RETENTION_REFRESH: Duration = Duration::from_secs(60);

/// Reads the retention of every backend of a `retention` pool that does not declare one
/// (Prometheus' `/api/v1/status/runtimeinfo`, `storageRetention` such as `15d` or
/// `15d or 1GiB`), now and then every minute (a backend may come up later, or be
/// reconfigured).
async fn read_retentions(pool: Arc<Pool>) {
    let timeout = pool.config.connect_timeout.max(Duration::from_secs(5));
    let clients: Vec<_> = pool
        .config
        .backends
        .iter()
        .map(|b| client_for(&pool, b, timeout))
        .collect();
    let mut tick = tokio::time::interval(RETENTION_REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Until every backend has answered once, ask again soon.
        let mut missing = false;
        for (i, c) in clients.iter().enumerate() {
            if pool.config.retention.get(i).is_some_and(Option::is_some) {
                continue;
            }
            let read = match c {
                Ok((client, base)) => read_retention(&pool, client, base).await,
                Err(e) => Err(e.clone()),
            };
            match read {
                Ok(d) => {
                    if pool.retention(i) != Some(d) {
                        tracing::info!(
                            pool = %pool.config.name,
                            backend = %pool.backend(i),
                            retention = %humantime::format_duration(d),
                            "backend retention read"
                        );
                    }
                    pool.set_retention(i, d);
                }
                Err(e) => {
                    missing |= pool.retention(i).is_none();
                    tracing::warn!(
                        pool = %pool.config.name,
                        backend = %pool.backend(i),
                        error = %e,
                        "cannot read the backend's retention; it gets only queries no \
                         backend of known retention holds (declare it in the pool's `retention`)"
                    );
                }
            }
        }
        if missing {
            tokio::time::sleep(Duration::from_secs(2)).await;
        } else {
            tick.tick().await;
        }
    }
}

async fn read_retention(
    pool: &Pool,
    client: &reqwest::Client,
    base: &str,
) -> Result<Duration, String> {
    let mut req = client.get(format!("{base}/api/v1/status/runtimeinfo"));
    if let Some(auth) = pool.authorization() {
        req = req.header(http::header::AUTHORIZATION, auth.clone());
    }
    let r = req.send().await.map_err(|e| e.to_string())?;
    if !r.status().is_success() {
        return Err(format!("runtimeinfo: HTTP {}", r.status().as_u16()));
    }
    let v: Value = r.json().await.map_err(|e| format!("runtimeinfo: {e}"))?;
    let text = v["data"]["storageRetention"]
        .as_str()
        .ok_or("runtimeinfo has no data.storageRetention")?;
    parse_retention(text)
}

/// Prometheus' `storageRetention`: `15d`, `1y2w`, `15d or 1GiB`, or a size alone.
fn parse_retention(text: &str) -> Result<Duration, String> {
    text.split(" or ")
        .find_map(|part| promql_parser::util::parse_duration(part.trim()).ok())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("storageRetention `{text}` has no time limit"))
}

async fn check(
    t: &Target,
    hc: &HealthCheck,
    client: &reqwest::Client,
    base: &str,
) -> BackendHealth {
    let mut req = client.get(format!("{base}{}", hc.path));
    if let Some(auth) = t.pool.authorization() {
        req = req.header(http::header::AUTHORIZATION, auth.clone());
    }
    if let Some(slurm) = &t.slurm {
        match slurm.health_headers().await {
            Ok(Some((user, token))) => {
                req = req
                    .header(crate::enforce::slurmrestd::USER_HEADER, user)
                    .header(crate::enforce::slurmrestd::TOKEN_HEADER, token);
            }
            Ok(None) => {}
            Err(e) => {
                return BackendHealth {
                    error: Some(format!("no Slurm token for the check: {e}")),
                    ..BackendHealth::unknown()
                };
            }
        }
    }
    let start = Instant::now();
    let result = req.send().await;
    let latency = start.elapsed().as_secs_f64() * 1000.0;
    let now = Some(crate::process::audit::now_rfc3339());
    match result {
        Ok(r) if r.status().is_success() => {
            let slurm_ping = match &t.slurm {
                Some(_) => r
                    .json::<Value>()
                    .await
                    .ok()
                    .map(|v| v.get("pings").cloned().unwrap_or(json!(null))),
                None => None,
            };
            BackendHealth {
                state: "up",
                last_check: now,
                latency_ms: Some(latency),
                error: None,
                slurm_ping,
            }
        }
        Ok(r) => BackendHealth {
            state: "down",
            last_check: now,
            latency_ms: Some(latency),
            error: Some(format!("HTTP {}", r.status().as_u16())),
            slurm_ping: None,
        },
        Err(e) => BackendHealth {
            state: "down",
            last_check: now,
            latency_ms: None,
            error: Some(if e.is_timeout() {
                format!("no answer within {:?}", hc.timeout)
            } else if e.is_connect() {
                "cannot connect".to_string()
            } else {
                e.to_string()
            }),
            slurm_ping: None,
        },
    }
}

/// A backend's state: from its last check, or (no active checks) from passive marking.
fn state(p: &Pool, i: usize) -> &'static str {
    if p.config.health_check.is_none() {
        if p.passively_down(i) { "down" } else { "up" }
    } else {
        p.health(i).state
    }
}

/// Every pool as `/-/status` shows it to callers who are not admins: its name, and whether it
/// can serve (`up`: a backend is up; `down`: every backend is down; `unknown`: not checked
/// yet). Backend addresses, health-check paths and errors tell an attacker where to go next.
pub fn summary(targets: &[Target]) -> Value {
    let pools: Vec<Value> = targets
        .iter()
        .map(|t| {
            let p = &t.pool;
            let states: Vec<&str> = (0..p.config.backends.len()).map(|i| state(p, i)).collect();
            let pool_state = if states.contains(&"up") {
                "up"
            } else if states.iter().all(|s| *s == "down") {
                "down"
            } else {
                "unknown"
            };
            json!({"name": p.config.name, "state": pool_state})
        })
        .collect();
    json!({"status": "success", "data": {"pools": pools}})
}

/// Every pool as `/-/status` shows it to admins.
pub fn status(targets: &[Target]) -> Value {
    let pools: Vec<Value> = targets
        .iter()
        .map(|t| {
            let p = &t.pool;
            let backends: Vec<Value> = (0..p.config.backends.len())
                .map(|i| {
                    let mut v = serde_json::to_value(p.health(i)).unwrap_or(json!({}));
                    // No active checks: what passive marking knows.
                    v["state"] = json!(state(p, i));
                    v["address"] = json!(p.backend(i).to_string());
                    v["in_flight"] = json!(p.active(i));
                    if p.config.balance == Balance::Retention {
                        v["retention_seconds"] = json!(p.retention(i).map(|d| d.as_secs()));
                    }
                    v
                })
                .collect();
            json!({
                "name": p.config.name,
                // Behind a slurmrestd route: its checks carry a Slurm token.
                "slurmrestd": t.slurm.is_some(),
                "balance": match p.config.balance {
                    Balance::RoundRobin => "round_robin",
                    Balance::LeastConnections => "least_connections",
                    Balance::Retention => "retention",
                },
                "health_check": p.config.health_check.as_ref().map(|h| json!({
                    "path": h.path,
                    "interval_seconds": h.interval.as_secs_f64(),
                    "timeout_seconds": h.timeout.as_secs_f64(),
                })),
                "backends": backends,
            })
        })
        .collect();
    json!({"status": "success", "data": {"pools": pools}})
}

/// Sets `backend_up` from the pools of the running config (dropping pools a reload
/// removed), just before a scrape.
pub fn observe_backends(m: &crate::process::telemetry::Metrics, targets: &[Target]) {
    m.backend_up.reset();
    for t in targets {
        let p = &t.pool;
        for i in 0..p.config.backends.len() {
            let up = if p.config.health_check.is_none() {
                i64::from(!p.passively_down(i))
            } else {
                match p.health(i).state {
                    "up" => 1,
                    "down" => 0,
                    _ => -1,
                }
            };
            m.backend_up
                .with_label_values(&[p.config.name.as_str(), &p.backend(i).to_string()])
                .set(up);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_retention_strings() {
        let day = 86_400;
        assert_eq!(parse_retention("15d").unwrap().as_secs(), 15 * day);
        assert_eq!(
            parse_retention("3650d or 1GiB").unwrap().as_secs(),
            3650 * day
        );
        assert_eq!(parse_retention("1w2d").unwrap().as_secs(), 9 * day);
        assert!(parse_retention("512MiB").is_err());
        // Prometheus' year is 365 days.
        assert_eq!(parse_retention("10y").unwrap().as_secs(), 3650 * day);
    }
}
