//! Tokens this gateway issues (`POST /auth/token`) and the keys that sign them.
//!
//! Keys are Ed25519 (JWS `EdDSA`), generated on first start as PKCS#8 PEM files (0600) in
//! `STATE_DIR/signing-keys/`, named by key id; the file `current` names the one that signs.
//! `hpcgate rotate-signing-key` adds a key and makes it current; the previous two stay
//! published at `/.well-known/jwks.json` and accepted, so tokens signed before a rotation
//! keep working until they expire. A running gateway notices a rotation within a second.
//! All JOSE work is jsonwebtoken's; this module only manages files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::signature::KeyPair;
use rustls::pki_types::PrivatePkcs8KeyDer;
use rustls::pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};

use crate::error::Rejection;

/// Previous keys kept (and accepted) after a rotation.
const KEEP_PREVIOUS: usize = 2;
/// Leeway for `exp`, `nbf` and `iat` between replicas' clocks.
const LEEWAY_SECS: u64 = 30;
const CURRENT: &str = "current";

/// The claims of a gateway token.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    pub iss: String,
    pub aud: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: String,
}

struct KeySet {
    current: Option<(String, EncodingKey)>,
    verify: HashMap<String, DecodingKey>,
    jwks: serde_json::Value,
    /// Modification time of `current` when this set was read.
    stamp: Option<SystemTime>,
}

/// The signing keys in a state directory, re-read when `current` changes.
pub struct SigningKeys {
    dir: PathBuf,
    set: ArcSwap<KeySet>,
    last_check: Mutex<Instant>,
}

fn keys_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("signing-keys")
}

fn random_kid() -> Result<String, String> {
    let mut b = [0u8; 9];
    getrandom::getrandom(&mut b).map_err(|e| format!("no randomness from the OS: {e}"))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
}

fn valid_kid(kid: &str) -> bool {
    !kid.is_empty()
        && kid.len() <= 64
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Makes a new key and makes it current; keeps the newest [`KEEP_PREVIOUS`] others.
/// Returns the new key id.
pub fn rotate(state_dir: &Path) -> Result<String, String> {
    let dir = keys_dir(state_dir);
    crate::process::tls::create_private_dir(&dir)?;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
        .map_err(|e| format!("cannot generate an Ed25519 key: {e}"))?;
    let kid = random_kid()?;
    crate::process::tls::write_file(
        &dir.join(format!("{kid}.pem")),
        key.serialize_pem().as_bytes(),
        0o600,
    )?;
    let tmp = dir.join(format!("{CURRENT}.tmp"));
    crate::process::tls::write_file(&tmp, kid.as_bytes(), 0o600)?;
    std::fs::rename(&tmp, dir.join(CURRENT))
        .map_err(|e| format!("cannot write {}: {e}", dir.join(CURRENT).display()))?;
    // Prune the oldest keys beyond the ones kept.
    let mut others: Vec<(SystemTime, PathBuf)> = std::fs::read_dir(&dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "pem")
                && p.file_stem().is_some_and(|s| s != kid.as_str())
        })
        .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
        .collect();
    others.sort_by_key(|o| std::cmp::Reverse(o.0));
    for (_, p) in others.into_iter().skip(KEEP_PREVIOUS) {
        std::fs::remove_file(&p).map_err(|e| format!("cannot remove {}: {e}", p.display()))?;
    }
    Ok(kid)
}

/// Makes the first key if there is none yet.
pub fn ensure(state_dir: &Path) -> Result<(), String> {
    if keys_dir(state_dir).join(CURRENT).exists() {
        return Ok(());
    }
    rotate(state_dir).map(|_| ())
}

fn load(dir: &Path) -> Result<KeySet, String> {
    let current_path = dir.join(CURRENT);
    let stamp = current_path.metadata().and_then(|m| m.modified()).ok();
    let current_kid = std::fs::read_to_string(&current_path)
        .map_err(|e| format!("cannot read {}: {e}", current_path.display()))?
        .trim()
        .to_string();
    let mut verify = HashMap::new();
    let mut jwks = Vec::new();
    let mut current = None;
    for entry in
        std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?
    {
        let path = entry
            .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
            .path();
        let Some(kid) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".pem"))
            .filter(|k| valid_kid(k))
        else {
            continue;
        };
        let what = || format!("signing key {}", path.display());
        let der =
            PrivatePkcs8KeyDer::from_pem_file(&path).map_err(|e| format!("{}: {e}", what()))?;
        let der = der.secret_pkcs8_der();
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map_err(|_| format!("{}: not an Ed25519 PKCS#8 key", what()))?;
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(pair.public_key());
        verify.insert(
            kid.to_string(),
            DecodingKey::from_ed_components(&x).map_err(|e| format!("{}: {e}", what()))?,
        );
        jwks.push(serde_json::json!({
            "kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig"
        }));
        if kid == current_kid {
            current = Some((kid.to_string(), EncodingKey::from_ed_der(der)));
        }
    }
    if current.is_none() {
        return Err(format!(
            "{} names key `{current_kid}`, which is not in {}",
            current_path.display(),
            dir.display()
        ));
    }
    jwks.sort_by(|a, b| a["kid"].as_str().cmp(&b["kid"].as_str()));
    Ok(KeySet {
        current,
        verify,
        jwks: serde_json::json!({ "keys": jwks }),
        stamp,
    })
}

impl SigningKeys {
    /// Reads the keys, making the first one if needed. At start-up (blocking file I/O).
    pub fn open(state_dir: &Path) -> Result<Arc<SigningKeys>, String> {
        ensure(state_dir)?;
        let dir = keys_dir(state_dir);
        let set = load(&dir)?;
        Ok(Arc::new(SigningKeys {
            dir,
            set: ArcSwap::from_pointee(set),
            last_check: Mutex::new(Instant::now()),
        }))
    }

    /// Re-reads the keys if `current` changed; checks at most once a second. A failed read
    /// keeps the keys it had (and says so in the log).
    async fn refresh(&self) {
        {
            let Ok(mut last) = self.last_check.lock() else {
                return;
            };
            if last.elapsed() < Duration::from_secs(1) {
                return;
            }
            *last = Instant::now();
        }
        let stamp = tokio::fs::metadata(self.dir.join(CURRENT))
            .await
            .and_then(|m| m.modified())
            .ok();
        if stamp.is_none() || stamp == self.set.load().stamp {
            return;
        }
        let dir = self.dir.clone();
        match tokio::task::spawn_blocking(move || load(&dir)).await {
            Ok(Ok(set)) => {
                tracing::info!(dir = %self.dir.display(), "signing keys reloaded");
                self.set.store(Arc::new(set));
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot reload signing keys; keeping the old ones")
            }
            Err(e) => tracing::error!(error = %e, "signing key reload failed"),
        }
    }

    pub async fn jwks(&self) -> serde_json::Value {
        self.refresh().await;
        self.set.load().jwks.clone()
    }

    /// Signs claims with the current key.
    pub async fn sign(&self, claims: &Claims) -> Result<String, Rejection> {
        self.refresh().await;
        let set = self.set.load();
        let Some((kid, key)) = &set.current else {
            return Err(Rejection::Unavailable("no signing key".into()));
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.clone());
        jsonwebtoken::encode(&header, claims, key)
            .map_err(|e| Rejection::Internal(format!("cannot sign a token: {e}")))
    }

    /// Whether `kid` is one of ours (after a refresh).
    pub async fn knows(&self, kid: &str) -> bool {
        self.refresh().await;
        self.set.load().verify.contains_key(kid)
    }

    /// Verifies a token of ours: signature (EdDSA only), `iss`, `aud`, `exp`, `nbf`.
    pub fn verify(
        &self,
        token: &str,
        kid: &str,
        issuer: &str,
        audience: &str,
    ) -> Result<Claims, jsonwebtoken::errors::Error> {
        let set = self.set.load();
        let key = set
            .verify
            .get(kid)
            .ok_or(jsonwebtoken::errors::ErrorKind::InvalidToken)?;
        let mut v = Validation::new(Algorithm::EdDSA);
        v.leeway = LEEWAY_SECS;
        v.validate_nbf = true;
        v.set_issuer(&[issuer]);
        v.set_audience(&[audience]);
        v.set_required_spec_claims(&["exp", "iat", "nbf", "iss", "aud", "sub"]);
        jsonwebtoken::decode::<Claims>(token, key, &v).map(|d| d.claims)
    }
}

/// Issues tokens for callers of `POST /auth/token`.
pub struct TokenIssuer {
    pub keys: Arc<SigningKeys>,
    pub config: Tokens,
}

impl TokenIssuer {
    /// A token for `id`, as the JSON body of the endpoint's answer.
    pub async fn issue(
        &self,
        id: &crate::authenticate::Identity,
    ) -> Result<serde_json::Value, Rejection> {
        let now = crate::db::now();
        let ttl = self.config.ttl.as_secs() as i64;
        let claims = Claims {
            sub: id.user().to_string(),
            groups: id.groups().to_vec(),
            email: id.email().map(str::to_string),
            iss: self.config.issuer.clone(),
            aud: self.config.audience.clone(),
            iat: now,
            nbf: now,
            exp: now + ttl,
            jti: random_kid().map_err(Rejection::Internal)?,
        };
        let token = self.keys.sign(&claims).await?;
        Ok(serde_json::json!({
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": ttl,
            "expires_at": claims.exp,
        }))
    }
}

/// Tokens this gateway issues at `POST /auth/token`.
#[derive(Debug, Clone)]
pub struct Tokens {
    /// Empty: the endpoint is off.
    pub authenticators: Vec<String>,
    pub ttl: Duration,
    pub issuer: String,
    pub audience: String,
}
