//! Bearer JWTs already verified, so a script or Grafana sending the same token on every
//! request pays for one signature check per minute instead of one per request.
//!
//! Keyed by the SHA-256 of the whole token (never the token itself); an entry lives at most
//! [`TTL`] and never past the token's own `exp`. Only the authenticator that verified a token
//! inserts it, so a hit is that authenticator's. Each entry keeps the id of the key that
//! signed it: the gateway's own tokens are dropped as soon as their key leaves the set
//! (`gateway_jwt` checks on every hit); for an identity provider's tokens, a key the IdP
//! withdraws stops being honoured within [`TTL`].

use std::time::Duration;

use moka::sync::Cache;
use sha2::{Digest, Sha256};

use super::Identity;

/// How long a verified token is trusted without checking its signature again.
pub const TTL: Duration = Duration::from_secs(60);

pub struct Verified {
    cache: Cache<[u8; 32], (Identity, String)>,
}

fn key(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Verified {
    pub fn new() -> Self {
        Verified {
            cache: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(TTL)
                .build(),
        }
    }

    /// The identity of a token verified recently and not expired since, and the id of the
    /// key that signed it.
    pub fn get(&self, token: &str) -> Option<(Identity, String)> {
        let k = key(token);
        let hit = self.cache.get(&k)?;
        if hit
            .0
            .expires_at()
            .is_some_and(|exp| exp <= crate::db::now())
        {
            self.cache.invalidate(&k);
            return None;
        }
        Some(hit)
    }

    pub fn insert(&self, token: &str, id: &Identity, kid: &str) {
        self.cache.insert(key(token), (id.clone(), kid.to_string()));
    }
}

impl Default for Verified {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_tokens_are_not_served_from_the_cache() {
        let v = Verified::new();
        let live = Identity::for_test_by("alice", crate::authenticate::Method::GatewayJwt)
            .with_expiry(Some(crate::db::now() + 3600));
        v.insert("token-a", &live, "k1");
        let (id, kid) = v.get("token-a").unwrap();
        assert_eq!((id.user(), kid.as_str()), ("alice", "k1"));
        assert!(v.get("token-b").is_none());
        let dead = Identity::for_test_by("bob", crate::authenticate::Method::GatewayJwt)
            .with_expiry(Some(crate::db::now() - 1));
        v.insert("token-c", &dead, "k1");
        assert!(v.get("token-c").is_none());
    }
}
