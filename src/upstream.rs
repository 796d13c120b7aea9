//! The `upstream` step: a route's pool picks a backend, round-robin, skipping backends that
//! recently refused connections (passive marking, like nginx's `fail_timeout`).
//!
//! A pool of one backend never marks it down: its errors are reported as they happen (502,
//! 504). When every backend of a larger pool is marked down, the request gets 503. Active
//! health checks (`health.rs`) take a backend out of every pool, even its only one, while
//! they find it down.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use pingora::upstreams::peer::HttpPeer;
use pingora::utils::tls::WrappedX509;

use arc_swap::ArcSwap;

use crate::config::{self, BackendAddr};
use crate::error::Rejection;
use crate::health::BackendHealth;

pub struct Pool {
    pub config: config::Pool,
    next: AtomicUsize,
    /// Per backend: milliseconds since `epoch` until which it is skipped.
    down_until: Vec<AtomicU64>,
    /// Per backend: the last active health check (see `health.rs`).
    health: Vec<ArcSwap<BackendHealth>>,
    epoch: Instant,
    ca: Option<Arc<[WrappedX509]>>,
    authorization: Option<http::HeaderValue>,
    /// pingora's connection-reuse key leaves out the CA a connection was verified with, so
    /// each pool gets its own group: a connection one pool trusted is never reused by
    /// another pool with different TLS settings.
    group_key: u64,
}

impl Pool {
    pub fn new(config: &config::Pool) -> Result<Self, String> {
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

    /// The next backend in turn that is not marked down and not in `tried`.
    pub fn select(&self, tried: &[usize]) -> Result<usize, Rejection> {
        let n = self.config.backends.len();
        let now = self.now_ms();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| (start + i) % n)
            .find(|&i| {
                !tried.contains(&i)
                    && (n == 1 || self.down_until[i].load(Ordering::Relaxed) <= now)
                    && self.health[i].load().state != "down"
            })
            .ok_or_else(|| {
                Rejection::Unavailable(format!("no healthy backend in pool `{}`", self.config.name))
            })
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

fn load_ca(path: &std::path::Path) -> Result<Arc<[WrappedX509]>, String> {
    let certs = crate::tls::read_pem_certs(path, "CA file")?;
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
        let backends = (0..n)
            .map(|i| BackendAddr::Tcp {
                addr: format!("127.0.0.1:{}", 9000 + i).parse().unwrap(),
                host: "127.0.0.1".into(),
                tls: false,
            })
            .collect();
        Pool::new(&config::Pool {
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
        })
        .unwrap()
    }

    #[test]
    fn round_robin_skips_failed_backends() {
        let p = pool(3);
        let picks: Vec<_> = (0..3).map(|_| p.select(&[]).unwrap()).collect();
        assert_eq!(picks, vec![0, 1, 2]);
        p.mark_failed(1);
        let picks: Vec<_> = (0..4).map(|_| p.select(&[]).unwrap()).collect();
        assert!(!picks.contains(&1));
        assert_eq!(p.select(&[0, 2]).unwrap_err().status(), 503);
    }

    #[test]
    fn a_single_backend_is_never_marked_down() {
        let p = pool(1);
        p.mark_failed(0);
        assert_eq!(p.select(&[]).unwrap(), 0);
    }
}
