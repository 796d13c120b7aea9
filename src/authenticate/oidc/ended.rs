//! Ended sessions (logout), as the `oidc_login` authenticator checks them: the shared list in
//! the gateway's database (`crate::db::sessions`), each answer cached for at most a second,
//! so that a logout on one replica holds on every replica within that time. The database not
//! answering is a 503: a session is never accepted without asking it.

use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::db::Db;
use crate::error::Rejection;

/// How long an answer of the database is trusted.
const CACHE_TTL: Duration = Duration::from_secs(1);

pub(super) struct EndedSessions {
    db: Db,
    /// Whether a session (by the hash of its id) was ended.
    cache: moka::future::Cache<String, bool>,
}

/// What the database keeps of a session id: its SHA-256, in hex.
fn hash(id: &str) -> String {
    Sha256::digest(id.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn unavailable(e: impl std::fmt::Display) -> Rejection {
    tracing::warn!(error = %e, "the list of ended sessions cannot be read or written");
    Rejection::Unavailable(
        "the session database cannot answer, so the session cannot be checked; try again \
         shortly"
            .into(),
    )
}

impl EndedSessions {
    pub(super) fn new(db: Db) -> Self {
        EndedSessions {
            db,
            cache: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(CACHE_TTL)
                .build(),
        }
    }

    /// Whether the session `id` was ended (on any replica, a second ago at the latest).
    pub(super) async fn is_ended(&self, id: &str) -> Result<bool, Rejection> {
        let key = hash(id);
        crate::process::telemetry::metrics()
            .cache_lookup("ended_sessions", self.cache.contains_key(&key));
        let db = self.db.clone();
        self.cache
            .try_get_with(key.clone(), async move { db.session_ended(&key).await })
            .await
            .map_err(unavailable)
    }

    /// Ends the session `id`, which would expire at `expires_at`; expired entries are purged.
    pub(super) async fn end(&self, id: &str, expires_at: u64) -> Result<(), Rejection> {
        let key = hash(id);
        let expires_at = i64::try_from(expires_at).unwrap_or(i64::MAX);
        self.db
            .end_session(&key, expires_at)
            .await
            .map_err(unavailable)?;
        self.cache.insert(key, true).await;
        // Housekeeping: the logout itself is done whatever happens here.
        match self.db.purge_ended_sessions(crate::db::now()).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(purged = n, "expired ended sessions forgotten"),
            Err(e) => tracing::warn!(error = %e, "cannot purge expired ended sessions"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::DbConfig;

    #[tokio::test]
    async fn an_ended_session_is_refused_and_the_database_down_is_503() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = DbConfig::sqlite_in(dir.path());
        Db::open(&cfg).await.unwrap().close().await;
        let ended = EndedSessions::new(Db::lazy(&cfg).unwrap());
        assert!(!ended.is_ended("s1").await.unwrap());
        ended.end("s1", u64::MAX).await.unwrap();
        assert!(
            ended.is_ended("s1").await.unwrap(),
            "at once on this replica"
        );
        assert!(!ended.is_ended("s2").await.unwrap());

        // Another replica on the same database, which had the session cached as live: it
        // sees the logout within a second.
        let other = EndedSessions::new(Db::lazy(&cfg).unwrap());
        assert!(!other.is_ended("s2").await.unwrap());
        ended.end("s2", u64::MAX).await.unwrap();
        tokio::time::sleep(CACHE_TTL + Duration::from_millis(100)).await;
        assert!(other.is_ended("s2").await.unwrap());

        // The database gone: no answer is a refusal, not a pass.
        let gone = DbConfig {
            url: crate::secret::Secret::new(format!(
                "sqlite://{}/missing/db?mode=ro",
                dir.path().display()
            )),
            ..cfg
        };
        let down = EndedSessions::new(Db::lazy(&gone).unwrap());
        let r = down.is_ended("s3").await.unwrap_err();
        assert_eq!(r.status(), 503);
        assert!(down.end("s3", u64::MAX).await.is_err());
    }
}
