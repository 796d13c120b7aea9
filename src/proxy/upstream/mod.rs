//! The `upstream` step: a route's pool picks a backend (round-robin, least connections, or
//! by retention for TSDBs), skipping backends that recently refused connections (passive
//! marking, like nginx's `fail_timeout`).
//!
//! `retention` pools (a short-term Prometheus and a long-term store) send a query to a
//! backend whose retention holds the query's time range (the earliest sample it reads,
//! worked out by `enforce::prometheus`); among those, the one with the fewest requests in
//! flight. When none holds it, the backend that holds the most answers (the best there is).
//!
//! A pool of one backend never marks it down: its errors are reported as they happen (502,
//! 504). When every backend of a larger pool is marked down, the request gets 503. Active
//! health checks (`health.rs`) take a backend out of every pool, even its only one, while
//! they find it down.
//!
//! Why this is ours and not pingora's `lb` crate (`LoadBalancer` with its selection
//! algorithms and `TcpHealthCheck`/`HttpHealthCheck`): its selections are round-robin,
//! random and consistent hashing, with no least-connections (which needs a count of
//! requests in flight per backend, our `Lease`) and nothing that can pick by a query's time
//! range (`retention`); it has no passive marking of a backend that refused a connection
//! (`fail_timeout`); and its HTTP health check sends one fixed request and judges only the
//! response head, while a slurmrestd check needs a freshly minted Slurm token on each
//! request and reads the ping's JSON body (kept for `/-/status`; Slurm 24.11 even answers a
//! refused token with 200 and says so only in the body). The peers themselves are
//! pingora's (`HttpPeer`), so connection pooling, TLS and timeouts stay the library's.

pub mod config;
pub mod health;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use std::time::Instant;

use pingora::upstreams::peer::HttpPeer;
use pingora::utils::tls::WrappedX509;

use arc_swap::ArcSwap;

use crate::error::Rejection;
use crate::proxy::upstream::config::{BackendAddr, Balance, PoolConfig};
use crate::proxy::upstream::health::BackendHealth;

pub struct Pool {
    pub config: PoolConfig,
    next: AtomicUsize,
    /// Per backend: milliseconds since `epoch` until which it is skipped.
    down_until: Vec<AtomicU64>,
    /// Per backend: the last active health check (see `health.rs`).
    health: Vec<ArcSwap<BackendHealth>>,
    /// Per backend: requests in flight (for least connections, and `/-/status`).
    active: Vec<AtomicUsize>,
    /// Per backend (`retention` pools): seconds of data it holds; 0 = not known yet.
    retention: Vec<AtomicU64>,
    epoch: Instant,
    ca: Option<Arc<[WrappedX509]>>,
    authorization: Option<http::HeaderValue>,
    /// pingora's connection-reuse key leaves out the CA a connection was verified with, so
    /// each pool gets its own group: a connection one pool trusted is never reused by
    /// another pool with different TLS settings.
    group_key: u64,
}

impl Pool {
    pub fn new(config: &PoolConfig) -> Result<Self, String> {
        let ca = match &config.tls_ca {
            None => None,
            Some(path) => Some(load_ca(path)?),
        };
        let authorization = match &config.authorization {
            None => None,
            Some(s) => {
                let mut v = http::HeaderValue::from_str(s.expose()).map_err(|_| {
                    format!("pools.{}.authorization: invalid header value", config.name)
                })?;
                v.set_sensitive(true);
                Some(v)
            }
        };
        Ok(Pool {
            down_until: config.backends.iter().map(|_| AtomicU64::new(0)).collect(),
            health: config
                .backends
                .iter()
                .map(|_| ArcSwap::from_pointee(BackendHealth::unknown()))
                .collect(),
            active: config
                .backends
                .iter()
                .map(|_| AtomicUsize::new(0))
                .collect(),
            retention: config
                .retention
                .iter()
                .map(|r| AtomicU64::new(r.map_or(0, |d| d.as_secs().max(1))))
                .chain(std::iter::repeat_with(|| AtomicU64::new(0)))
                .take(config.backends.len())
                .collect(),
            config: config.clone(),
            next: AtomicUsize::new(0),
            epoch: Instant::now(),
            ca,
            authorization,
            group_key: {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                config.name.hash(&mut h);
                h.finish()
            },
        })
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The backend for the next request: not marked down, not in `tried`, picked by the
    /// pool's `balance`. `earliest` is the oldest sample the request reads (Unix seconds;
    /// `-inf` for all history), for `retention` pools.
    pub fn select(&self, tried: &[usize], earliest: Option<f64>) -> Result<usize, Rejection> {
        let n = self.config.backends.len();
        let now = self.now_ms();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        // In round-robin order from `start`, so ties go round.
        let usable = (0..n).map(|i| (start + i) % n).filter(|&i| {
            !tried.contains(&i)
                && (n == 1 || self.down_until[i].load(Ordering::Relaxed) <= now)
                && self.health[i].load().state != "down"
        });
        let least_busy = |candidates: &mut dyn Iterator<Item = usize>| {
            candidates.min_by_key(|&i| self.active[i].load(Ordering::Relaxed))
        };
        let picked = match self.config.balance {
            Balance::RoundRobin => usable.clone().next(),
            Balance::LeastConnections => least_busy(&mut usable.clone()),
            Balance::Retention => {
                // How far back the request reads, in seconds (0: only recent data).
                let reach = earliest.map_or(0.0, |e| crate::db::now() as f64 - e);
                let holds = |i: &usize| {
                    let r = self.retention[*i].load(Ordering::Relaxed);
                    r > 0 && r as f64 >= reach
                };
                least_busy(&mut usable.clone().filter(holds)).or_else(|| {
                    // Nobody holds it all: the one that holds the most (unknown = least).
                    let longest = usable
                        .clone()
                        .map(|i| self.retention[i].load(Ordering::Relaxed))
                        .max()?;
                    least_busy(
                        &mut usable
                            .clone()
                            .filter(|&i| self.retention[i].load(Ordering::Relaxed) == longest),
                    )
                })
            }
        };
        picked.ok_or_else(|| {
            Rejection::Unavailable(format!("no healthy backend in pool `{}`", self.config.name))
        })
    }

    /// Counts a request in flight on backend `i` until the lease is dropped.
    pub fn lease(self: &Arc<Self>, i: usize) -> Lease {
        self.active[i].fetch_add(1, Ordering::Relaxed);
        Lease {
            pool: self.clone(),
            index: i,
        }
    }

    /// Requests in flight on backend `i`.
    pub fn active(&self, i: usize) -> usize {
        self.active[i].load(Ordering::Relaxed)
    }

    /// The retention backend `i` holds, if known (`retention` pools).
    pub fn retention(&self, i: usize) -> Option<Duration> {
        match self.retention.get(i)?.load(Ordering::Relaxed) {
            0 => None,
            s => Some(Duration::from_secs(s)),
        }
    }

    /// Records the retention read from backend `i` (declared ones are never overwritten).
    pub fn set_retention(&self, i: usize, d: Duration) {
        if self.config.retention.get(i).is_some_and(Option::is_none) {
            self.retention[i].store(d.as_secs().max(1), Ordering::Relaxed);
        }
    }

    /// Skips backend `i` for `fail_timeout` (only in pools of two or more).
    pub fn mark_failed(&self, i: usize) {
        if self.config.backends.len() > 1 {
            let until = self.now_ms() + self.config.fail_timeout.as_millis() as u64;
            self.down_until[i].store(until, Ordering::Relaxed);
        }
    }

    /// Whether passive marking skips backend `i` now.
    pub fn passively_down(&self, i: usize) -> bool {
        self.config.backends.len() > 1 && self.down_until[i].load(Ordering::Relaxed) > self.now_ms()
    }

    /// The last active health check of backend `i`.
    pub fn health(&self, i: usize) -> Arc<BackendHealth> {
        self.health[i].load_full()
    }

    pub fn set_health(&self, i: usize, h: BackendHealth) {
        self.health[i].store(Arc::new(h));
    }

    pub fn backend(&self, i: usize) -> &BackendAddr {
        &self.config.backends[i]
    }

    /// The `Authorization` value this pool sends upstream, if configured.
    pub fn authorization(&self) -> Option<&http::HeaderValue> {
        self.authorization.as_ref()
    }

    /// A pingora peer for backend `i`, with the pool's timeouts and TLS settings.
    pub fn peer(&self, i: usize) -> Result<Box<HttpPeer>, Rejection> {
        let mut peer = match self.backend(i) {
            BackendAddr::Tcp { addr, host, tls } => {
                let sni = if *tls {
                    self.config
                        .tls_server_name
                        .clone()
                        .unwrap_or_else(|| host.clone())
                } else {
                    String::new()
                };
                HttpPeer::new(*addr, *tls, sni)
            }
            BackendAddr::Unix(path) => {
                let p = path.to_str().ok_or_else(|| {
                    Rejection::Internal(format!("socket path {} is not UTF-8", path.display()))
                })?;
                HttpPeer::new_uds(p, false, String::new())
                    .map_err(|e| Rejection::Internal(format!("unix socket {p}: {e}")))?
            }
        };
        peer.group_key = self.group_key;
        let o = &mut peer.options;
        o.connection_timeout = Some(self.config.connect_timeout);
        o.total_connection_timeout = Some(self.config.connect_timeout);
        o.read_timeout = Some(self.config.read_timeout);
        o.write_timeout = Some(self.config.write_timeout);
        o.verify_cert = self.config.tls_verify;
        o.verify_hostname = self.config.tls_verify;
        if let Some(ca) = &self.ca {
            o.ca = Some(ca.clone());
        }
        Ok(Box::new(peer))
    }
}

/// One request in flight on one backend; dropping it ends the count.
pub struct Lease {
    pool: Arc<Pool>,
    index: usize,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.pool.active[self.index].fetch_sub(1, Ordering::Relaxed);
    }
}

fn load_ca(path: &std::path::Path) -> Result<Arc<[WrappedX509]>, String> {
    let certs = crate::process::tls::read_pem_certs(path, "CA file")?;
    let mut out = Vec::new();
    for c in certs {
        let der = c.to_vec();
        // pingora's parser panics on certificates it cannot read: turn that into an error
        // here, at start-up, rather than on a request.
        let wrapped =
            std::panic::catch_unwind(|| WrappedX509::new(der, pingora::utils::tls::parse_x509))
                .map_err(|_| {
                    format!("CA file {}: a certificate cannot be parsed", path.display())
                })?;
        out.push(wrapped);
    }
    Ok(out.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn pool(n: usize) -> Pool {
        pool_with(n, Balance::RoundRobin, vec![None; n])
    }

    fn pool_with(n: usize, balance: Balance, retention: Vec<Option<Duration>>) -> Pool {
        let backends = (0..n)
            .map(|i| BackendAddr::Tcp {
                addr: format!("127.0.0.1:{}", 9000 + i).parse().unwrap(),
                host: "127.0.0.1".into(),
                tls: false,
            })
            .collect();
        Pool::new(&PoolConfig {
            name: "p".into(),
            backends,
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
            write_timeout: Duration::from_secs(1),
            tls_ca: None,
            tls_verify: true,
            tls_server_name: None,
            authorization: None,
            fail_timeout: Duration::from_secs(60),
            health_check: None,
            balance,
            retention,
        })
        .unwrap()
    }

    #[test]
    fn round_robin_skips_failed_backends() {
        let p = pool(3);
        let picks: Vec<_> = (0..3).map(|_| p.select(&[], None).unwrap()).collect();
        assert_eq!(picks, vec![0, 1, 2]);
        p.mark_failed(1);
        let picks: Vec<_> = (0..4).map(|_| p.select(&[], None).unwrap()).collect();
        assert!(!picks.contains(&1));
        assert_eq!(p.select(&[0, 2], None).unwrap_err().status(), 503);
    }

    #[test]
    fn a_single_backend_is_never_marked_down() {
        let p = pool(1);
        p.mark_failed(0);
        assert_eq!(p.select(&[], None).unwrap(), 0);
    }

    #[test]
    fn least_connections_prefers_the_least_busy_backend() {
        let p = Arc::new(pool_with(3, Balance::LeastConnections, vec![None; 3]));
        let a = p.lease(0);
        let _b = p.lease(0);
        let _c = p.lease(1);
        assert_eq!(p.select(&[], None).unwrap(), 2);
        let _d = p.lease(2);
        let _e = p.lease(2);
        assert_eq!(p.select(&[], None).unwrap(), 1);
        drop(a);
        // 0 and 1 have one each now: both are picked, in turn.
        let picks: std::collections::BTreeSet<_> =
            (0..4).map(|_| p.select(&[], None).unwrap()).collect();
        assert_eq!(picks.into_iter().collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!(p.active(0), 1);
    }

    #[test]
    fn retention_sends_old_ranges_to_the_backend_that_holds_them() {
        let day = Duration::from_secs(86_400);
        let p = Arc::new(pool_with(
            2,
            Balance::Retention,
            vec![Some(2 * day), Some(3650 * day)],
        ));
        let now = crate::db::now() as f64;
        // A range reaching back ten days: only the long-term store holds it.
        for _ in 0..4 {
            assert_eq!(p.select(&[], Some(now - 10.0 * 86_400.0)).unwrap(), 1);
        }
        // All history (a series listing without `start`): the one that holds the most.
        assert_eq!(p.select(&[], Some(f64::NEG_INFINITY)).unwrap(), 1);
        // Recent data: either holds it, so the least busy answers.
        let _busy = p.lease(1);
        assert_eq!(p.select(&[], Some(now - 3600.0)).unwrap(), 0);
        // The long-term store is down (tried already): the short-term one answers rather
        // than nobody.
        assert_eq!(p.select(&[1], Some(now - 10.0 * 86_400.0)).unwrap(), 0);
        // A retention read from the backend never overrides a declared one.
        p.set_retention(0, 10_000 * day);
        assert_eq!(p.retention(0), Some(2 * day));
    }

    #[test]
    fn retention_unknown_until_read() {
        let day = Duration::from_secs(86_400);
        let p = pool_with(2, Balance::Retention, vec![None, None]);
        let now = crate::db::now() as f64;
        assert_eq!(p.retention(1), None);
        // Nothing known: any backend (round-robin among equals).
        assert!(p.select(&[], Some(now - 86_400.0)).is_ok());
        p.set_retention(0, 15 * day);
        p.set_retention(1, 400 * day);
        assert_eq!(p.select(&[], Some(now - 30.0 * 86_400.0)).unwrap(), 1);
        assert_eq!(p.retention(0), Some(15 * day));
    }
}
