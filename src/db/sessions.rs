//! Browser sessions ended before they expire (logout), shared by every replica.
//!
//! Sessions are sealed cookies that any replica opens without asking anyone, so a copied
//! cookie would stay good until it expires. Logout writes the session's id here (as a SHA-256
//! hash: the table says nothing about live sessions) with the session's own expiry; the
//! `oidc_login` authenticator refuses a session whose id is listed. A row is useless once its
//! session has expired, and is purged then.

use super::{Db, StoreError};

impl Db {
    /// Lists a session as ended until `expires_at` (Unix seconds). Ending it twice is fine.
    pub async fn end_session(&self, id_hash: &str, expires_at: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO ended_sessions (id_hash, expires_at) VALUES ($1, $2) \
             ON CONFLICT (id_hash) DO NOTHING",
        )
        .bind(id_hash)
        .bind(expires_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Whether a session was ended.
    pub async fn session_ended(&self, id_hash: &str) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT expires_at FROM ended_sessions WHERE id_hash = $1")
            .bind(id_hash)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.is_some())
    }

    /// Forgets ended sessions that have expired by `now`; how many.
    pub async fn purge_ended_sessions(&self, now: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM ended_sessions WHERE expires_at <= $1")
            .bind(now)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use crate::db::{Db, DbConfig};

    #[tokio::test]
    async fn ended_sessions_are_listed_until_they_expire_then_purged() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&DbConfig::sqlite_in(dir.path())).await.unwrap();
        assert!(!db.session_ended("a").await.unwrap());
        db.end_session("a", 1000).await.unwrap();
        db.end_session("a", 1000).await.unwrap();
        db.end_session("b", 2000).await.unwrap();
        assert!(db.session_ended("a").await.unwrap());
        assert!(db.session_ended("b").await.unwrap());
        assert!(!db.session_ended("c").await.unwrap());
        assert_eq!(db.purge_ended_sessions(999).await.unwrap(), 0);
        assert_eq!(db.purge_ended_sessions(1000).await.unwrap(), 1);
        assert!(!db.session_ended("a").await.unwrap());
        assert!(db.session_ended("b").await.unwrap());
    }
}
