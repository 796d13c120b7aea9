//! The `api_key` authenticator: keys from the gateway's database, sent as
//! `Authorization: Bearer hpcg_…` or `X-API-Key: hpcg_…`.
//!
//! Lookups are cached for at most a second (positive and negative alike), so that a
//! revocation written by `hpcgate apikey revoke` — or by another replica sharing the
//! database — takes effect everywhere within that time. The database not answering is a 503:
//! a key is never accepted without asking it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use subtle::ConstantTimeEq;

use super::{Authenticator, Identity, Method, Outcome, RequestInfo};
use crate::authenticate::headers::header_is;
use crate::db::api_keys::{KeyRecord, PREFIX, hash_token, parse_token};
use crate::db::{Db, now};
use crate::error::Rejection;

/// How often `last_used_at` is written for one key, at most.
const TOUCH_EVERY: i64 = 60;

/// The header scripts may use instead of `Authorization`.
pub const API_KEY_HEADER: &str = "x-api-key";

type Lookup = Option<Arc<(KeyRecord, String)>>;

pub struct ApiKeyAuth {
    name: String,
    db: Db,
    cache: moka::future::Cache<String, Lookup>,
    /// Last `last_used_at` written per key id, to write it once a minute at most.
    touched: moka::sync::Cache<String, i64>,
}

fn challenge() -> String {
    "Bearer realm=\"hpcgate\"".into()
}

fn unauthorized(reason: &str) -> Outcome {
    Outcome::Rejected(Rejection::Unauthorized {
        reason: reason.into(),
        challenge: format!("{}, error=\"invalid_token\"", challenge()),
    })
}

/// The presented key: from `X-API-Key` (any spelling, `_` ≡ `-`) or a Bearer token that
/// looks like ours. `None`: not an API-key request.
fn presented(headers: &http::HeaderMap) -> Option<Result<&str, &'static str>> {
    let mut keys = headers
        .iter()
        .filter(|(n, _)| header_is(n.as_str(), API_KEY_HEADER))
        .map(|(_, v)| v);
    if let Some(v) = keys.next() {
        if keys.next().is_some() {
            return Some(Err("more than one X-API-Key header"));
        }
        return Some(v.to_str().map(str::trim).map_err(|_| "malformed API key"));
    }
    super::bearer_token(headers)
        .filter(|t| t.starts_with(PREFIX))
        .map(Ok)
}

impl ApiKeyAuth {
    pub fn new(name: &str, db: Db, cache_ttl: Duration) -> Self {
        ApiKeyAuth {
            name: name.to_string(),
            db,
            cache: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(cache_ttl.max(Duration::from_millis(1)))
                .build(),
            touched: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(TOUCH_EVERY as u64 * 2))
                .build(),
        }
    }

    async fn lookup(&self, id: &str) -> Result<Lookup, Rejection> {
        let db = self.db.clone();
        let key = id.to_string();
        // Hit or miss, for the metrics; the lookup below fills a miss (once per key).
        crate::process::telemetry::metrics().cache_lookup("api_key", self.cache.contains_key(id));
        self.cache
            .try_get_with(key.clone(), async move {
                db.find_key(&key).await.map(|found| found.map(Arc::new))
            })
            .await
            .map_err(|e| {
                tracing::warn!(authenticator = %self.name, error = %e, "API key lookup failed");
                Rejection::Unavailable("the API key database cannot answer; try again".into())
            })
    }

    fn touch(&self, id: &str, at: i64) {
        if self
            .touched
            .get(id)
            .is_some_and(|last| at - last < TOUCH_EVERY)
        {
            return;
        }
        self.touched.insert(id.to_string(), at);
        let (db, id, name) = (self.db.clone(), id.to_string(), self.name.clone());
        tokio::spawn(async move {
            if let Err(e) = db.touch_key(&id, at).await {
                tracing::warn!(authenticator = %name, key_id = %id, error = %e,
                               "cannot record API key use");
            }
        });
    }
}

#[async_trait]
impl Authenticator for ApiKeyAuth {
    fn kind(&self) -> &'static str {
        "api_key"
    }

    fn challenge(&self) -> Option<String> {
        Some(challenge())
    }

    async fn authenticate(&self, req: &RequestInfo<'_>) -> Outcome {
        let token = match presented(req.headers) {
            None => return Outcome::NotMine,
            Some(Err(reason)) => return unauthorized(reason),
            Some(Ok(t)) => t,
        };
        let Some(id) = parse_token(token) else {
            return unauthorized("malformed API key");
        };
        let found = match self.lookup(id).await {
            Ok(f) => f,
            Err(r) => return Outcome::Rejected(r),
        };
        let presented_hash = hash_token(token);
        // Compare against a dummy for unknown ids too, so timing says nothing.
        let (record, stored) = match &found {
            Some(f) => (Some(&f.0), f.1.as_bytes()),
            None => (None, &[0u8; 64][..]),
        };
        let matches: bool = presented_hash.as_bytes().ct_eq(stored).into();
        let Some(record) = record.filter(|_| matches) else {
            return unauthorized("unknown API key");
        };
        let now = now();
        if let Some(reason) = record.unusable(now) {
            return unauthorized(reason);
        }
        self.touch(&record.id, now);
        Outcome::Authenticated(
            Identity::new(
                record.owner.clone(),
                record.groups.clone(),
                None,
                Method::ApiKey,
                &self.name,
            )
            .with_scopes(record.scopes.clone())
            .with_expiry(record.expires_at),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presented_keys() {
        let mut h = http::HeaderMap::new();
        assert!(presented(&h).is_none());
        h.insert("authorization", "Bearer eyJhbGciOi".parse().unwrap());
        assert!(presented(&h).is_none(), "a JWT is somebody else's");
        h.insert("authorization", "bearer hpcg_abc".parse().unwrap());
        assert_eq!(presented(&h), Some(Ok("hpcg_abc")));
        h.insert("x_api_key", "hpcg_x".parse().unwrap());
        assert_eq!(
            presented(&h),
            Some(Ok("hpcg_x")),
            "X_API_KEY counts as X-API-Key"
        );
        h.append("X-Api-Key", "hpcg_y".parse().unwrap());
        assert!(matches!(presented(&h), Some(Err(_))));
    }
}
