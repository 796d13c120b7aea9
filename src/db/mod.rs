//! The gateway's own database: API keys, ended browser sessions and accounting
//! (`crate::accounting`).
//!
//! One code path for both back ends through sqlx's `Any` driver: SQLite (WAL, a file in the
//! state directory) by default, PostgreSQL by URL when several replicas share state. Queries
//! use portable SQL with `$N` placeholders and integer Unix seconds for times. Migrations are
//! embedded and run once at start-up (PostgreSQL takes an advisory lock, so replicas starting
//! together do not race).

pub mod api_keys;
pub mod sessions;

use std::borrow::Cow;
use std::path::Path;
use std::time::Duration;

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use sqlx::migrate::{Migration, MigrationType, Migrator};

use crate::secret::Secret;

/// Schema changes, in order. Never edit one that has shipped: add the next.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "api keys",
        "CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        name TEXT NOT NULL,
        groups_json TEXT NOT NULL,
        scopes_json TEXT NOT NULL,
        secret_hash TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        expires_at BIGINT,
        last_used_at BIGINT,
        revoked_at BIGINT
    );
    CREATE INDEX api_keys_owner ON api_keys (owner);
    CREATE UNIQUE INDEX api_keys_live_name ON api_keys (owner, name) WHERE revoked_at IS NULL;",
    ),
    (2, "accounting", crate::accounting::schema::SCHEMA),
    (
        3,
        "ended sessions",
        "CREATE TABLE ended_sessions (
        id_hash TEXT PRIMARY KEY,
        expires_at BIGINT NOT NULL
    );
    CREATE INDEX ended_sessions_expiry ON ended_sessions (expires_at);",
    ),
];

/// A database error, said so an operator can act on it (the URL and its password are never
/// part of it).
#[derive(Debug)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError(format!("database: {e}"))
    }
}

/// Which server a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn of(url: &str) -> Option<Backend> {
        if url.starts_with("sqlite:") {
            Some(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Backend::Postgres)
        } else {
            None
        }
    }
}

/// How to reach the database, from the config.
#[derive(Debug, Clone)]
pub struct DbConfig {
    pub url: Secret,
    pub backend: Backend,
    pub max_connections: u32,
    /// Longest wait for a connection, and (SQLite) for another process's lock; past it,
    /// requests that need the database get 503.
    pub timeout: Duration,
}

impl DbConfig {
    /// The default database: SQLite in the state directory.
    pub fn sqlite_in(state_dir: &Path) -> DbConfig {
        DbConfig {
            url: Secret::new(sqlite_url(&state_dir.join("hpcgate.db"))),
            backend: Backend::Sqlite,
            max_connections: 8,
            timeout: Duration::from_secs(2),
        }
    }
}

/// `sqlite://PATH?mode=rwc` (created if missing).
pub fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}?mode=rwc", path.display())
}

/// Creates a missing SQLite file as 0600 (SQLite gives its WAL and shared-memory files the
/// same mode): it holds key hashes and who used what.
async fn create_private_file(url: &str) -> Result<(), StoreError> {
    let rest = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let path = rest.split('?').next().unwrap_or(rest);
    if path.is_empty() || path == ":memory:" {
        return Ok(());
    }
    let created = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .await;
    match created {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError(format!(
            "cannot create the database file {path}: {e}"
        ))),
    }
}

/// A pool of connections to the gateway's database.
#[derive(Clone, Debug)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
}

fn options(cfg: &DbConfig) -> AnyPoolOptions {
    sqlx::any::install_default_drivers();
    let options = AnyPoolOptions::new()
        .max_connections(cfg.max_connections)
        .min_connections(0)
        .acquire_timeout(cfg.timeout);
    if cfg.backend != Backend::Sqlite {
        return options;
    }
    // SQLite waits for a lock held by another process up to its busy timeout, 5 s in sqlx,
    // whatever `[database] timeout` says: a locked database held requests for 5 s. Wait as
    // long as the configured timeout instead (tests/faults.rs).
    let busy = format!("PRAGMA busy_timeout = {}", cfg.timeout.as_millis());
    options.after_connect(move |conn, _| {
        let busy = busy.clone();
        Box::pin(async move {
            sqlx::query(sqlx::AssertSqlSafe(busy)).execute(conn).await?;
            Ok(())
        })
    })
}

impl Db {
    /// Connects, switches SQLite to WAL and brings the schema up to date. For start-up and
    /// the CLI; the pool belongs to the runtime that calls this.
    pub async fn open(cfg: &DbConfig) -> Result<Db, StoreError> {
        if cfg.backend == Backend::Sqlite {
            create_private_file(cfg.url.expose()).await?;
        }
        let pool = options(cfg)
            .connect(cfg.url.expose())
            .await
            .map_err(|e| StoreError(format!("cannot open the database: {e}")))?;
        if cfg.backend == Backend::Sqlite {
            // WAL lets readers (other gateway processes, the CLI) work while one writes.
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await?;
        }
        let migrations = MIGRATIONS
            .iter()
            .map(|(v, d, sql)| {
                Migration::new(
                    *v,
                    Cow::Borrowed(*d),
                    MigrationType::Simple,
                    sqlx::SqlSafeStr::into_sql_str(*sql),
                    false,
                )
            })
            .collect();
        Migrator::with_migrations(migrations)
            .run(&pool)
            .await
            .map_err(|e| StoreError(format!("cannot migrate the database schema: {e}")))?;
        Ok(Db {
            pool,
            backend: cfg.backend,
        })
    }

    /// A pool that connects on first use, for the request path (after [`Db::open`] has
    /// migrated the schema at start-up).
    pub fn lazy(cfg: &DbConfig) -> Result<Db, StoreError> {
        // No idle or lifetime limits: their reaper task would need a runtime here, and
        // sqlx checks a connection before handing it out anyway.
        let pool = options(cfg)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_lazy(cfg.url.expose())
            .map_err(|e| StoreError(format!("bad database URL: {e}")))?;
        Ok(Db {
            pool,
            backend: cfg.backend,
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Now, in Unix seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The database URL a config uses, for messages: the scheme and host only.
pub fn describe_url(url: &Secret) -> String {
    let u = url.expose();
    match u.split_once("://") {
        Some((scheme, rest)) if scheme.starts_with("postgres") => {
            let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
            format!("{scheme}://{}", host.split(['?']).next().unwrap_or(host))
        }
        _ => u.split('?').next().unwrap_or(u).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Connection;

    /// Another process holding the database locked: a query gives up after the configured
    /// timeout, not after sqlx's default busy timeout of 5 s.
    #[tokio::test]
    async fn a_locked_sqlite_database_fails_within_the_configured_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = DbConfig::sqlite_in(dir.path());
        cfg.timeout = Duration::from_millis(300);
        Db::open(&cfg).await.unwrap().close().await;
        let mut lock = sqlx::SqliteConnection::connect(cfg.url.expose())
            .await
            .unwrap();
        for q in [
            "PRAGMA locking_mode = EXCLUSIVE",
            "BEGIN EXCLUSIVE",
            "CREATE TABLE held (x INTEGER)",
        ] {
            sqlx::query(q).execute(&mut lock).await.unwrap();
        }
        let db = Db::lazy(&cfg).unwrap();
        let start = std::time::Instant::now();
        let r = sqlx::query("SELECT count(*) FROM api_keys")
            .fetch_one(db.pool())
            .await;
        assert!(r.is_err(), "the database is locked");
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "took {:?}",
            start.elapsed()
        );
    }
}
