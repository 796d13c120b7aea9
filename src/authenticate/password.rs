//! What every password authenticator shares: a cache of verified credentials, and
//! brute-force protection.
//!
//! The cache is keyed by a salted SHA-256 of user and password (never the password itself)
//! and holds only successes. The throttle counts failures per user and per client address
//! in a sliding window; past the limit the request gets 429 with `Retry-After` before the
//! back end (hash check, LDAP bind) is asked at all.
//!
//! An unknown user and a wrong password get one answer (the route's 401, see
//! `RouteAuth::authenticate`) and both count for the throttle: an unknown user when no
//! authenticator of the route knows the name either. Throttle keys ignore case, so `BOB`,
//! `Bob` and `bob` share one budget (a directory matches names without case).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::{Identity, Outcome, RequestInfo, basic_credentials};
use crate::error::Rejection;

/// Why a password back end did not say yes.
#[derive(Debug, Clone)]
pub enum Refusal {
    /// The back end does not know this user: the next authenticator may.
    NoSuchUser,
    /// Known user, wrong password: counted for the throttle, answered like an unknown user.
    BadPassword,
    /// The back end could not decide (down, slow, broken); the rejection to send.
    Failed(Rejection),
}

/// Failures allowed per window, for one user or one client address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleConfig {
    pub max_failures: u32,
    pub window: Duration,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            max_failures: 10,
            window: Duration::from_secs(300),
        }
    }
}

pub struct PasswordGuard {
    /// The authenticator's name, for metrics.
    name: String,
    cache: Option<moka::future::Cache<[u8; 32], Identity>>,
    salt: [u8; 32],
    throttle: ThrottleConfig,
    /// Failure times per `u:<user>` and `ip:<addr>`.
    failures: moka::sync::Cache<String, std::sync::Arc<std::sync::Mutex<Vec<Instant>>>>,
}

impl PasswordGuard {
    pub fn new(name: &str, cache_ttl: Duration, throttle: ThrottleConfig) -> Result<Self, String> {
        let mut salt = [0u8; 32];
        getrandom::getrandom(&mut salt).map_err(|e| format!("no randomness: {e}"))?;
        Ok(PasswordGuard {
            name: name.to_string(),
            cache: (!cache_ttl.is_zero()).then(|| {
                moka::future::Cache::builder()
                    .max_capacity(100_000)
                    .time_to_live(cache_ttl)
                    .build()
            }),
            salt,
            throttle,
            failures: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(throttle.window)
                .build(),
        })
    }

    /// Every password authenticator's request: Basic credentials, then the success cache,
    /// then the throttle (before the back end is asked anything), then `check`.
    ///
    /// Requests carrying the same credentials while no success is cached share one `check`:
    /// when a busy user's entry expires, one hash or bind runs instead of one per waiting
    /// request (each argon2 check takes ~20 MiB and tens of milliseconds).
    pub async fn authenticate<F, Fut>(&self, req: &RequestInfo<'_>, check: F) -> Outcome
    where
        F: FnOnce(String, String) -> Fut,
        Fut: Future<Output = Result<Identity, Refusal>>,
    {
        let (user, password) = match basic_credentials(req.headers) {
            None => return Outcome::NotMine,
            Some(Err(r)) => return Outcome::Rejected(r),
            Some(Ok(c)) => c,
        };
        let key = self.key(&user, &password);
        if let Some(id) = self.cached(&key).await {
            return Outcome::Authenticated(id);
        }
        if let Err(r) = self.check(&user, req.client) {
            return Outcome::Rejected(r);
        }
        let counted = async {
            let checked = check(user.clone(), password).await;
            let result = match &checked {
                Ok(_) => "ok",
                Err(Refusal::NoSuchUser) => "no_such_user",
                Err(Refusal::BadPassword) => "bad_password",
                Err(Refusal::Failed(_)) => "error",
            };
            crate::process::telemetry::metrics()
                .password_checks
                .with_label_values(&[self.name.as_str(), result])
                .inc();
            checked
        };
        let checked = match &self.cache {
            Some(cache) => cache
                .try_get_with(key, counted)
                .await
                .map_err(|shared| (*shared).clone()),
            None => counted.await,
        };
        match checked {
            Ok(id) => Outcome::Authenticated(id),
            Err(Refusal::NoSuchUser) => Outcome::UnknownUser,
            Err(Refusal::BadPassword) => {
                self.failed(&user, req.client);
                Outcome::WrongPassword
            }
            Err(Refusal::Failed(r)) => Outcome::Rejected(r),
        }
    }

    /// The route refused a user this back end did not know (and nobody else did): a failure
    /// like a wrong password, so guessing names is throttled as guessing passwords is.
    pub fn unknown_user_refused(&self, req: &RequestInfo<'_>) {
        if let Some(Ok((user, _))) = basic_credentials(req.headers) {
            self.failed(&user, req.client);
        }
    }

    pub fn key(&self, user: &str, password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.salt);
        h.update((user.len() as u64).to_le_bytes());
        h.update(user.as_bytes());
        h.update(password.as_bytes());
        h.finalize().into()
    }

    async fn cached(&self, key: &[u8; 32]) -> Option<Identity> {
        let found = self.cache.as_ref()?.get(key).await;
        crate::process::telemetry::metrics().cache_lookup("password", found.is_some());
        found
    }

    fn keys(user: &str, client: Option<IpAddr>) -> Vec<String> {
        // Without case: one budget however the name is spelt.
        let mut k = vec![format!("u:{}", user.to_lowercase())];
        if let Some(ip) = client {
            k.push(format!("ip:{ip}"));
        }
        k
    }

    /// 429 if this user or this address failed too often lately.
    pub fn check(&self, user: &str, client: Option<IpAddr>) -> Result<(), Rejection> {
        let now = Instant::now();
        for k in Self::keys(user, client) {
            let Some(list) = self.failures.get(&k) else {
                continue;
            };
            let Ok(mut list) = list.lock() else { continue };
            list.retain(|t| now.duration_since(*t) < self.throttle.window);
            if list.len() as u32 >= self.throttle.max_failures {
                let oldest = list.first().copied().unwrap_or(now);
                let wait = self
                    .throttle
                    .window
                    .saturating_sub(now.duration_since(oldest));
                return Err(Rejection::TooManyRequests {
                    reason: "too many failed logins; try again later".into(),
                    retry_after: wait.as_secs().max(1),
                });
            }
        }
        Ok(())
    }

    /// Counts a failed password for this user and this address.
    pub fn failed(&self, user: &str, client: Option<IpAddr>) {
        let now = Instant::now();
        for k in Self::keys(user, client) {
            let list = self.failures.get_with(k, Default::default);
            if let Ok(mut l) = list.lock() {
                l.push(now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_throttle_per_user_and_per_address() {
        let g = PasswordGuard::new(
            "t",
            Duration::ZERO,
            ThrottleConfig {
                max_failures: 3,
                window: Duration::from_secs(60),
            },
        )
        .unwrap();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..3 {
            assert!(g.check("alice", Some(ip)).is_ok());
            g.failed("alice", Some(ip));
        }
        let r = g.check("alice", None).unwrap_err();
        assert_eq!(r.status(), 429);
        // The same address trying another user is throttled too.
        assert!(g.check("bob", Some(ip)).is_err());
        // Another user from elsewhere is not.
        assert!(g.check("bob", Some("192.0.2.2".parse().unwrap())).is_ok());
    }

    #[test]
    fn throttle_budget_is_shared_by_every_spelling_of_a_name() {
        let g = PasswordGuard::new(
            "t",
            Duration::ZERO,
            ThrottleConfig {
                max_failures: 2,
                window: Duration::from_secs(60),
            },
        )
        .unwrap();
        g.failed("bob", None);
        g.failed("BOB", None);
        assert_eq!(g.check("Bob", None).unwrap_err().status(), 429);
    }

    #[test]
    fn keys_depend_on_user_and_password() {
        let g = PasswordGuard::new("t", Duration::from_secs(1), ThrottleConfig::default()).unwrap();
        assert_ne!(g.key("a", "bc"), g.key("ab", "c"));
        assert_eq!(g.key("a", "b"), g.key("a", "b"));
    }
}
