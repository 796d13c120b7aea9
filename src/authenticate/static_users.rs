//! The `static` authenticator: HTTP Basic against a TOML users file of argon2id hashes.
//!
//! Hash checks are slow on purpose, so they run on the blocking pool (at most a few at once)
//! and a success is remembered for `cache_ttl` (see `password.rs`: salted key, successes
//! only, brute-force throttle). Unknown users cost a dummy check, so timing does not tell
//! which names exist.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::password::{PasswordGuard, Refusal, ThrottleConfig};
use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use async_trait::async_trait;
use serde::Deserialize;
use tokio::sync::Semaphore;

use super::{Authenticator, Identity, Method, Outcome, RequestInfo, basic_challenge};
use crate::error::Rejection;

/// One user of a users file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticUser {
    pub name: String,
    /// PHC string from `hpcgate hash-password` (`$argon2id$…`).
    pub password_hash: String,
    #[serde(default)]
    pub groups: Vec<String>,
    pub email: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    users: Vec<StaticUser>,
}

/// Reads and checks a users file: names unique and valid, every hash an argon2id PHC string.
pub fn load_users(path: &Path) -> Result<Vec<StaticUser>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read users file {}: {e}", path.display()))?;
    let file: UsersFile = toml::from_str(&text)
        .map_err(|e| format!("users file {}: {}", path.display(), e.message()))?;
    let mut seen = std::collections::HashSet::new();
    for (i, u) in file.users.iter().enumerate() {
        if !valid_user_name(&u.name) {
            return Err(format!(
                "users file {}: users[{i}].name `{}` is not a valid user name",
                path.display(),
                u.name
            ));
        }
        if !seen.insert(&u.name) {
            return Err(format!(
                "users file {}: user `{}` appears twice",
                path.display(),
                u.name
            ));
        }
        match PasswordHash::new(&u.password_hash) {
            Ok(h) if h.algorithm.as_str() == "argon2id" => {}
            _ => {
                return Err(format!(
                    "users file {}: users[{i}].password_hash of `{}` is not an argon2id hash \
                     (make one with `hpcgate hash-password`)",
                    path.display(),
                    u.name
                ));
            }
        }
    }
    Ok(file.users)
}

/// User names: what a POSIX system or a directory would accept, and safe in a header.
pub fn valid_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-@+".contains(c))
}

/// Hashes a password with argon2id and a random salt, as a PHC string.
pub fn hash_password(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    getrandom::getrandom(&mut salt).map_err(|e| format!("no randomness: {e}"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

struct Entry {
    hash: String,
    groups: Vec<String>,
    email: Option<String>,
}

pub struct StaticUsers {
    name: String,
    realm: String,
    users: std::collections::HashMap<String, Arc<Entry>>,
    guard: PasswordGuard,
    /// Bounds concurrent hash checks so a flood of bad passwords cannot take every thread.
    checks: Semaphore,
    dummy_hash: String,
}

impl StaticUsers {
    pub fn new(
        name: &str,
        users: &[StaticUser],
        realm: &str,
        cache_ttl: Duration,
        throttle: ThrottleConfig,
    ) -> Result<Self, String> {
        Ok(StaticUsers {
            name: name.to_string(),
            realm: realm.to_string(),
            users: users
                .iter()
                .map(|u| {
                    (
                        u.name.clone(),
                        Arc::new(Entry {
                            hash: u.password_hash.clone(),
                            groups: u.groups.clone(),
                            email: u.email.clone(),
                        }),
                    )
                })
                .collect(),
            guard: PasswordGuard::new(name, cache_ttl, throttle)?,
            checks: Semaphore::new(4),
            dummy_hash: hash_password("hpcgate-dummy-password")?,
        })
    }

    async fn verify(&self, hash: String, password: String) -> Result<bool, Rejection> {
        let _permit = self
            .checks
            .acquire()
            .await
            .map_err(|_| Rejection::Internal("password check semaphore closed".into()))?;
        tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash)
                .map(|parsed| {
                    Argon2::default()
                        .verify_password(password.as_bytes(), &parsed)
                        .is_ok()
                })
                .unwrap_or(false)
        })
        .await
        .map_err(|e| Rejection::Internal(format!("password check task failed: {e}")))
    }
}

#[async_trait]
impl Authenticator for StaticUsers {
    fn kind(&self) -> &'static str {
        "static"
    }

    fn challenge(&self) -> Option<String> {
        Some(basic_challenge(&self.realm))
    }

    async fn authenticate(&self, req: &RequestInfo<'_>) -> Outcome {
        self.guard
            .authenticate(req, |user, password| async move {
                let Some(entry) = self.users.get(&user).cloned() else {
                    // Same cost as a real check, then let the next authenticator try.
                    let _ = self.verify(self.dummy_hash.clone(), password).await;
                    return Err(Refusal::NoSuchUser);
                };
                match self.verify(entry.hash.clone(), password).await {
                    Err(r) => Err(Refusal::Failed(r)),
                    Ok(false) => Err(Refusal::BadPassword),
                    Ok(true) => Ok(Identity::new(
                        user,
                        entry.groups.clone(),
                        entry.email.clone(),
                        Method::Static,
                        &self.name,
                    )),
                }
            })
            .await
    }

    fn unknown_user_refused(&self, req: &RequestInfo<'_>) {
        self.guard.unknown_user_refused(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_are_argon2id() {
        let h = hash_password("pw").unwrap();
        assert!(h.starts_with("$argon2id$"));
        let parsed = PasswordHash::new(&h).unwrap();
        assert!(Argon2::default().verify_password(b"pw", &parsed).is_ok());
        assert!(Argon2::default().verify_password(b"px", &parsed).is_err());
    }

    #[test]
    fn user_names_are_restricted() {
        assert!(valid_user_name("alice"));
        assert!(valid_user_name("a.b-c_d@x"));
        assert!(!valid_user_name(""));
        assert!(!valid_user_name("a b"));
        assert!(!valid_user_name("a\r\nx"));
        assert!(!valid_user_name("*)(uid=*"));
    }
}
