//! API keys: random tokens shown once, stored only as a SHA-256 hash.
//!
//! A key reads `hpcg_<id><secret>`: a 16-hex-digit public id (for lookup, listing and
//! revocation) and 43 characters of base64url secret (256 random bits). Since the secret is
//! uniformly random, a plain SHA-256 is enough to store it (no password stretching needed),
//! and the comparison of hashes is constant-time.

use base64::Engine;
use sha2::{Digest, Sha256};
use sqlx::Row;

use super::{Db, StoreError, now};

pub const PREFIX: &str = "hpcg_";
const ID_LEN: usize = 16;
const SECRET_LEN: usize = 43;

/// A stored key, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyRecord {
    pub id: String,
    pub owner: String,
    pub name: String,
    pub groups: Vec<String>,
    /// Route names or kinds the key may be used on; empty = every route its owner may use.
    pub scopes: Vec<String>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

impl KeyRecord {
    /// Why this key cannot be used now, if it cannot.
    pub fn unusable(&self, now: i64) -> Option<&'static str> {
        if self.revoked_at.is_some() {
            Some("this API key has been revoked")
        } else if self.expires_at.is_some_and(|e| e <= now) {
            Some("this API key has expired")
        } else {
            None
        }
    }
}

/// A key just made: `token` is shown to its owner once and never stored.
pub struct NewKey {
    pub token: String,
    pub record: KeyRecord,
}

/// What to create.
pub struct KeyRequest<'a> {
    pub owner: &'a str,
    pub name: &'a str,
    pub groups: &'a [String],
    pub scopes: &'a [String],
    pub expires_at: Option<i64>,
}

/// Splits a presented token into (id, whole token) if it has our shape.
pub fn parse_token(token: &str) -> Option<&str> {
    let rest = token.strip_prefix(PREFIX)?;
    if rest.len() != ID_LEN + SECRET_LEN || !rest.is_ascii() {
        return None;
    }
    let (id, secret) = rest.split_at(ID_LEN);
    let id_ok = id
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
    let secret_ok = secret
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (id_ok && secret_ok).then_some(id)
}

/// The stored form of a token.
pub fn hash_token(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn random_bytes<const N: usize>() -> Result<[u8; N], StoreError> {
    let mut b = [0u8; N];
    getrandom::getrandom(&mut b)
        .map_err(|e| StoreError(format!("no randomness from the OS: {e}")))?;
    Ok(b)
}

fn record(row: &sqlx::any::AnyRow) -> Result<KeyRecord, StoreError> {
    let json_list = |col: &str| -> Result<Vec<String>, StoreError> {
        let text: String = row.try_get(col)?;
        serde_json::from_str(&text).map_err(|e| StoreError(format!("api_keys.{col}: {e}")))
    };
    Ok(KeyRecord {
        id: row.try_get("id")?,
        owner: row.try_get("owner")?,
        name: row.try_get("name")?,
        groups: json_list("groups_json")?,
        scopes: json_list("scopes_json")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        last_used_at: row.try_get("last_used_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

const COLUMNS: &str = "id, owner, name, groups_json, scopes_json, created_at, expires_at, \
                       last_used_at, revoked_at";

impl Db {
    /// Makes a key. A live key of the same owner and name is an error (revoke it first).
    pub async fn create_key(&self, req: &KeyRequest<'_>) -> Result<NewKey, StoreError> {
        let id: String = random_bytes::<8>()?
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<32>()?);
        let token = format!("{PREFIX}{id}{secret}");
        debug_assert_eq!(parse_token(&token), Some(id.as_str()));
        let record = KeyRecord {
            id: id.clone(),
            owner: req.owner.to_string(),
            name: req.name.to_string(),
            groups: req.groups.to_vec(),
            scopes: req.scopes.to_vec(),
            created_at: now(),
            expires_at: req.expires_at,
            last_used_at: None,
            revoked_at: None,
        };
        let to_json = |v: &[String]| serde_json::to_string(v).unwrap_or_else(|_| "[]".into());
        let result = sqlx::query(
            "INSERT INTO api_keys (id, owner, name, groups_json, scopes_json, secret_hash, \
             created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&record.id)
        .bind(&record.owner)
        .bind(&record.name)
        .bind(to_json(&record.groups))
        .bind(to_json(&record.scopes))
        .bind(hash_token(&token))
        .bind(record.created_at)
        .bind(record.expires_at)
        .execute(self.pool())
        .await;
        match result {
            Ok(_) => Ok(NewKey { token, record }),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(StoreError(format!(
                "{} already has a live key named `{}`; revoke it first or pick another name",
                req.owner, req.name
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// Keys, newest first; of one owner if given. Revoked keys are listed too.
    pub async fn list_keys(&self, owner: Option<&str>) -> Result<Vec<KeyRecord>, StoreError> {
        let rows =
            match owner {
                Some(o) => sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {COLUMNS} FROM api_keys WHERE owner = $1 ORDER BY created_at DESC, id"
                )))
                .bind(o)
                .fetch_all(self.pool())
                .await?,
                None => {
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "SELECT {COLUMNS} FROM api_keys ORDER BY owner, created_at DESC, id"
                    )))
                    .fetch_all(self.pool())
                    .await?
                }
            };
        rows.iter().map(record).collect()
    }

    /// A key and its stored hash, by id.
    pub async fn find_key(&self, id: &str) -> Result<Option<(KeyRecord, String)>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS}, secret_hash FROM api_keys WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        match row {
            None => Ok(None),
            Some(row) => {
                let hash: String = row.try_get("secret_hash")?;
                Ok(Some((record(&row)?, hash)))
            }
        }
    }

    /// Revokes a key (of `owner`, when given). `false`: no such live key.
    pub async fn revoke_key(&self, id: &str, owner: Option<&str>) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL \
             AND ($3 IS NULL OR owner = $3)",
        )
        .bind(now())
        .bind(id)
        .bind(owner)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records that a key was used.
    pub async fn touch_key(&self, id: &str, at: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2")
            .bind(at)
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_only_in_our_shape() {
        let t = format!("{PREFIX}0123456789abcdef{}", "A".repeat(SECRET_LEN));
        assert_eq!(parse_token(&t), Some("0123456789abcdef"));
        assert_eq!(parse_token(&t[..t.len() - 1]), None);
        assert_eq!(parse_token(&t.replace("hpcg_", "hpcx_")), None);
        assert_eq!(parse_token(&t.replace("0123", "0X23")), None);
        assert_eq!(parse_token(&format!("{t}=")), None);
    }
}
