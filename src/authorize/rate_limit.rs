//! Rate limits: a GCRA budget per user (or, on public routes, per client address) per route.
//!
//! In memory by default (`governor`); with `[rate_limits] redis_url`, one budget shared by
//! every gateway replica, kept in Redis by an atomic Lua script, so two replicas together
//! allow the configured rate, not twice it. Redis that cannot answer in time refuses the
//! request (503): a limit that silently stops limiting is no limit.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::error::Rejection;
use crate::proxy::route::{RateLimit, Route};

/// GCRA in Redis. KEYS[1]: the budget's key. ARGV: emission interval T and burst tolerance
/// (burst - 1) * T, in microseconds. Returns 0 when allowed, else microseconds to wait.
/// Redis' own clock is used, so replicas with skewed clocks still agree.
const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local wait = tat - now - tolerance
if wait > 0 then return wait end
local new_tat = tat + interval
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return 0
"#;

struct Shared {
    client: redis::Client,
    /// Made on first use, inside the proxy's runtime (the connection manager keeps a task on
    /// the runtime that made it, and reconnects by itself after Redis restarts).
    conn: tokio::sync::OnceCell<redis::aio::ConnectionManager>,
    script: redis::Script,
    timeout: Duration,
}

pub struct RateLimiters {
    local: HashMap<String, DefaultKeyedRateLimiter<String>>,
    shared: Option<Shared>,
    checks: AtomicU64,
}

fn quota(l: &RateLimit) -> Option<Quota> {
    let interval = l.per / l.requests;
    Some(Quota::with_period(interval)?.allow_burst(NonZeroU32::new(l.burst)?))
}

impl RateLimiters {
    /// Budgets for every route that has a rate limit.
    pub fn new(
        routes: &[Route],
        redis_url: Option<&str>,
        timeout: Duration,
    ) -> Result<Self, String> {
        let mut local = HashMap::new();
        for r in routes {
            if let Some(l) = &r.rate_limit {
                let q = quota(l).ok_or_else(|| format!("route {}: invalid rate limit", r.name))?;
                local.insert(r.name.clone(), RateLimiter::keyed(q));
            }
        }
        let shared = match redis_url {
            None => None,
            Some(url) => {
                let client = redis::Client::open(url)
                    .map_err(|e| format!("rate_limits.redis_url: {}", e.category()))?;
                Some(Shared {
                    client,
                    conn: tokio::sync::OnceCell::new(),
                    script: redis::Script::new(GCRA),
                    timeout,
                })
            }
        };
        Ok(RateLimiters {
            local,
            shared,
            checks: AtomicU64::new(0),
        })
    }

    /// Spends one request of `key`'s budget on `route`, or says how long to wait.
    pub async fn check(&self, route: &Route, key: &str) -> Result<(), Rejection> {
        let Some(limit) = &route.rate_limit else {
            return Ok(());
        };
        let wait = match &self.shared {
            Some(shared) => self.check_shared(shared, route, limit, key).await?,
            None => self.check_local(route, key),
        };
        match wait {
            None => Ok(()),
            Some(w) => Err({
                crate::process::telemetry::metrics()
                    .rate_limited
                    .with_label_values(&[route.name.as_str()])
                    .inc();
                Rejection::TooManyRequests {
                    reason: format!(
                        "rate limit of {} requests per {} on route `{}` reached",
                        limit.requests,
                        humantime::format_duration(limit.per),
                        route.name
                    ),
                    retry_after: w.as_secs_f64().ceil().max(1.0) as u64,
                }
            }),
        }
    }

    fn check_local(&self, route: &Route, key: &str) -> Option<Duration> {
        let limiter = self.local.get(&route.name)?;
        // Forget idle keys now and then, so the map does not grow without bound.
        if self.checks.fetch_add(1, Ordering::Relaxed) % 4096 == 4095 {
            limiter.retain_recent();
        }
        match limiter.check_key(&key.to_string()) {
            Ok(()) => None,
            Err(not_until) => Some(not_until.wait_time_from(DefaultClock::default().now())),
        }
    }

    async fn check_shared(
        &self,
        shared: &Shared,
        route: &Route,
        limit: &RateLimit,
        key: &str,
    ) -> Result<Option<Duration>, Rejection> {
        let interval = (limit.per / limit.requests).as_micros() as u64;
        let tolerance = interval * u64::from(limit.burst - 1);
        let redis_key = format!("hpcgate:rl:{}:{}", route.name, key);
        let unavailable = || {
            Rejection::Unavailable("the rate-limit store cannot answer; try again shortly".into())
        };
        let connect = shared
            .conn
            .get_or_try_init(|| redis::aio::ConnectionManager::new(shared.client.clone()));
        let mut conn = match tokio::time::timeout(shared.timeout * 4, connect).await {
            Ok(Ok(c)) => c.clone(),
            Ok(Err(e)) => {
                tracing::error!(error = %e.category(), "cannot reach the rate-limit store; refusing");
                return Err(unavailable());
            }
            Err(_) => {
                tracing::error!("connecting to the rate-limit store timed out; refusing");
                return Err(unavailable());
            }
        };
        let mut call = shared.script.key(redis_key);
        call.arg(interval).arg(tolerance);
        let answer: Result<Result<u64, _>, _> =
            tokio::time::timeout(shared.timeout, call.invoke_async(&mut conn)).await;
        match answer {
            Ok(Ok(0)) => Ok(None),
            Ok(Ok(wait_us)) => Ok(Some(Duration::from_micros(wait_us))),
            Ok(Err(e)) => {
                tracing::error!(error = %e.category(), "rate limit store failed; refusing");
                Err(unavailable())
            }
            Err(_) => {
                tracing::error!("rate limit store timed out; refusing");
                Err(unavailable())
            }
        }
    }
}

/// The budget key of a request: the user, or the client address on public routes.
pub fn key_for(caller: &crate::authenticate::Caller, client: Option<std::net::IpAddr>) -> String {
    match caller.identity() {
        Some(id) => format!("u:{}", id.user()),
        None => format!("ip:{}", client.map(|c| c.to_string()).unwrap_or_default()),
    }
}
