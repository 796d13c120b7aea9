//! The browser login's cookies, and what they hold.
//!
//! Both cookies are sealed with AES-256-GCM (ring): a client can neither read nor alter them,
//! and any replica with the same key can open them, so no server-side store is needed. The
//! cookie's name is the associated data: a login cookie cannot be replayed as a session.
//! Cookies are `__Host-` prefixed (`Secure`, `Path=/`, no `Domain`), `HttpOnly` and
//! `SameSite=Lax` (sent on the IdP's top-level redirect back to the callback, not on
//! cross-site subrequests). Names start with `hpcgate`, so they never go upstream.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub const SESSION_COOKIE: &str = "__Host-hpcgate-session";
pub const LOGIN_COOKIE: &str = "__Host-hpcgate-login";
/// Browsers keep cookies up to about 4 KiB (name and value); a bigger one silently vanishes.
const MAX_COOKIE: usize = 3900;
/// A session too big for one cookie (a user in many groups, a long refresh token) is split
/// over `__Host-hpcgate-session`, `__Host-hpcgate-session-1`, `-2`, …: at most this many
/// cookies (≈ 30 KB, far below what browsers send and the gateway reads in a request head).
pub const MAX_SESSION_COOKIES: usize = 8;

/// The key that seals the cookies. `Debug` never shows it.
pub struct CookieKey(LessSafeKey);

impl std::fmt::Debug for CookieKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CookieKey(***)")
    }
}

impl CookieKey {
    pub fn new(bytes: &[u8; 32]) -> Result<CookieKey, String> {
        UnboundKey::new(&AES_256_GCM, bytes)
            .map(|k| CookieKey(LessSafeKey::new(k)))
            .map_err(|_| "unusable session key".to_string())
    }

    /// `value` as JSON, sealed under a fresh random nonce, as base64url(nonce ‖ ciphertext),
    /// for one cookie: refused if it would be more than a browser keeps.
    pub fn seal<T: Serialize>(&self, name: &str, value: &T) -> Result<String, String> {
        let sealed = self.seal_any(name, value)?;
        if sealed.len() + name.len() > MAX_COOKIE {
            return Err(format!(
                "the {name} cookie would be {} bytes, more than browsers keep",
                sealed.len()
            ));
        }
        Ok(sealed)
    }

    /// `value` sealed for cookie `name` as the `(name, value)` pairs to set: one cookie when it
    /// fits, otherwise split over `name`, `name-1`, `name-2`, … (at most
    /// [`MAX_SESSION_COOKIES`]), the first value then being `N.` and its part, N the number of
    /// parts (base64url has no `.`). [`CookieKey::open_split`] joins them again; the seal
    /// covers the whole, so a missing, stale or altered part fails to open.
    pub fn seal_split<T: Serialize>(
        &self,
        name: &str,
        value: &T,
    ) -> Result<Vec<(String, String)>, String> {
        let sealed = self.seal_any(name, value)?;
        if sealed.len() + name.len() <= MAX_COOKIE {
            return Ok(vec![(name.to_string(), sealed)]);
        }
        // Room for the longest name (`name-NN`) and the first part's `N.`.
        let room = MAX_COOKIE - name.len() - 4;
        let parts = sealed.len().div_ceil(room);
        if parts > MAX_SESSION_COOKIES {
            return Err(format!(
                "the {name} cookie would be {} bytes, more than {MAX_SESSION_COOKIES} cookies \
                 of {MAX_COOKIE} bytes hold (a user in very many groups? narrow the groups \
                 claim at the identity provider)",
                sealed.len()
            ));
        }
        Ok(sealed
            .as_bytes()
            .chunks(room)
            .enumerate()
            .map(|(i, part)| {
                // base64url is ASCII: every chunk is a whole string.
                let part = String::from_utf8_lossy(part);
                if i == 0 {
                    (name.to_string(), format!("{parts}.{part}"))
                } else {
                    (part_name(name, i), part.into_owned())
                }
            })
            .collect())
    }

    /// Every value sealed for cookie `name` in the request, whole or split by
    /// [`CookieKey::seal_split`], that opens.
    pub fn open_split<'a, T: DeserializeOwned>(
        &'a self,
        headers: &'a http::HeaderMap,
        name: &'a str,
    ) -> impl Iterator<Item = T> + 'a {
        cookie_values(headers, name)
            .filter_map(move |first| joined(headers, name, first))
            .filter_map(move |sealed| self.open(name, &sealed))
    }

    fn seal_any<T: Serialize>(&self, name: &str, value: &T) -> Result<String, String> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::getrandom(&mut nonce).map_err(|e| format!("no randomness: {e}"))?;
        let mut buf = serde_json::to_vec(value).map_err(|e| e.to_string())?;
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(name.as_bytes()),
                &mut buf,
            )
            .map_err(|_| "cannot seal a cookie".to_string())?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(URL_SAFE_NO_PAD.encode(out))
    }

    /// The value sealed in a cookie named `name`; `None` if it was altered, sealed with
    /// another key or for another cookie, or is not what we wrote.
    pub fn open<T: DeserializeOwned>(&self, name: &str, sealed: &str) -> Option<T> {
        let raw = URL_SAFE_NO_PAD.decode(sealed).ok()?;
        if raw.len() < NONCE_LEN {
            return None;
        }
        let (nonce, rest) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = rest.to_vec();
        let plain = self
            .0
            .open_in_place(nonce, Aad::from(name.as_bytes()), &mut buf)
            .ok()?;
        serde_json::from_slice(plain).ok()
    }
}

/// Reads a session key file: 32 random bytes in base64 on one line
/// (`head -c 32 /dev/urandom | base64`).
pub fn read_key_file(path: &Path) -> Result<[u8; 32], String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read session key file {}: {e}", path.display()))?;
    let bytes = STANDARD.decode(text.trim()).map_err(|_| {
        format!(
            "session key file {} must hold 32 random bytes in base64 (head -c 32 \
             /dev/urandom | base64)",
            path.display()
        )
    })?;
    bytes.try_into().map_err(|_| {
        format!(
            "session key file {} must hold exactly 32 bytes (base64 of head -c 32 /dev/urandom)",
            path.display()
        )
    })
}

/// The key in `path`, created (0600, atomically) with 32 random bytes on first start.
/// A key file others can read is refused: it would let them forge sessions.
pub fn load_or_create_key(path: &Path) -> Result<[u8; 32], String> {
    if !path.exists() {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let mut key = [0u8; 32];
        getrandom::getrandom(&mut key).map_err(|e| format!("no randomness: {e}"))?;
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| writeln!(f, "{}", STANDARD.encode(key)));
        // A hard link never replaces: if another replica made the key first, use theirs.
        let linked = written.and_then(|()| std::fs::hard_link(&tmp, path));
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => tracing::info!(path = %path.display(), "created a session key"),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("cannot create {}: {e}", path.display())),
        }
    }
    let mode = std::fs::metadata(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(format!(
            "session key file {} may be read by others (mode {:o}); chmod 600 it",
            path.display(),
            mode & 0o777
        ));
    }
    read_key_file(path)
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    crate::db::now().max(0) as u64
}

/// How long a session lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    /// From login, whatever happens.
    pub absolute: Duration,
    /// Without a request.
    pub idle: Duration,
    /// How often the session is revalidated at the IdP with its refresh token.
    pub refresh: Duration,
}

/// A logged-in browser. Sealed in [`SESSION_COOKIE`].
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq)]
pub struct Session {
    /// Random, made at login and kept by every renewal: what logout lists as ended (see
    /// `ended.rs`). A cookie sealed before sessions had ids does not open: log in again.
    pub id: String,
    /// The IdP's subject: a refresh must name the same one.
    pub sub: String,
    pub user: String,
    pub groups: Vec<String>,
    pub email: Option<String>,
    /// Login time; the absolute expiry counts from here.
    pub created: u64,
    /// The absolute expiry as it was at login: a later, longer `session_lifetime` does not
    /// lengthen the session (nor outlive its entry in the list of ended sessions).
    pub expires: u64,
    /// Last time the cookie was written; the idle expiry counts from here.
    pub seen: u64,
    /// When to revalidate with the refresh token.
    pub refresh_at: u64,
    /// The IdP's refresh token, if it gave one. Never logged.
    pub refresh_token: Option<String>,
}

/// A new session id: 128 random bits, base64url.
pub fn new_session_id() -> Result<String, String> {
    let mut id = [0u8; 16];
    getrandom::getrandom(&mut id).map_err(|e| format!("no randomness: {e}"))?;
    Ok(URL_SAFE_NO_PAD.encode(id))
}

impl Session {
    /// When the session ends at the latest (Unix seconds), however active the user is.
    pub fn ends_at(&self, l: &Lifetimes) -> u64 {
        self.created
            .saturating_add(l.absolute.as_secs())
            .min(self.expires)
    }

    pub fn expired(&self, now: u64, l: &Lifetimes) -> bool {
        now >= self.ends_at(l)
            || now >= self.seen.saturating_add(l.idle.as_secs())
            // From the future: a clock far off, or not ours.
            || self.seen > now.saturating_add(60)
    }

    /// Time to write the cookie again, so the idle clock restarts (not on every request).
    pub fn renew_due(&self, now: u64, l: &Lifetimes) -> bool {
        now >= self.seen.saturating_add((l.idle.as_secs() / 10).max(1))
    }

    pub fn refresh_due(&self, now: u64) -> bool {
        self.refresh_token.is_some() && now >= self.refresh_at
    }

    /// Seconds the cookie may live: until the absolute expiry.
    pub fn max_age(&self, now: u64, l: &Lifetimes) -> u64 {
        self.ends_at(l).saturating_sub(now)
    }
}

/// A login in progress: what the callback must find again. Sealed in [`LOGIN_COOKIE`].
#[derive(Serialize, Deserialize)]
pub struct LoginState {
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
    /// A path on this gateway (checked when the login started).
    pub return_to: String,
    pub created: u64,
}

/// How long a login may take, from the redirect to the IdP to the callback.
pub const LOGIN_TIMEOUT: u64 = 600;

/// Every `name=value` pair in the request's `Cookie` headers (HTTP/2 may split them).
fn cookie_pairs(headers: &http::HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
}

/// Every value of cookie `name` in the request.
pub fn cookie_values<'a>(
    headers: &'a http::HeaderMap,
    name: &'a str,
) -> impl Iterator<Item = &'a str> + 'a {
    cookie_pairs(headers).filter_map(move |(k, v)| (k == name).then_some(v))
}

/// The name of part `i` (from 1) of a value split over several cookies.
fn part_name(name: &str, i: usize) -> String {
    format!("{name}-{i}")
}

/// The whole sealed value whose first cookie holds `first`: `first` itself, or its part and
/// the parts in `name-1`, `name-2`, … that its `N.` prefix counts. `None` if one is missing.
fn joined(headers: &http::HeaderMap, name: &str, first: &str) -> Option<String> {
    let Some((count, part)) = first.split_once('.') else {
        return Some(first.to_string());
    };
    let count: usize = count
        .parse()
        .ok()
        .filter(|n| (2..=MAX_SESSION_COOKIES).contains(n))?;
    let mut whole = part.to_string();
    for i in 1..count {
        whole.push_str(cookie_values(headers, &part_name(name, i)).next()?);
    }
    Some(whole)
}

/// The `Set-Cookie` values that write `pairs` (from [`CookieKey::seal_split`]) for `max_age`
/// seconds, and remove the further parts of a longer value the request still carries.
pub fn set_split_cookies(
    headers: &http::HeaderMap,
    name: &str,
    pairs: &[(String, String)],
    max_age: u64,
) -> Vec<String> {
    let mut out: Vec<String> = pairs
        .iter()
        .map(|(n, v)| set_cookie(n, v, max_age))
        .collect();
    out.extend(stale_parts(headers, name, pairs.len()).map(|n| clear_cookie(&n)));
    out
}

/// The `Set-Cookie` values that remove cookie `name` and every part of it the request carries.
pub fn clear_split_cookies(headers: &http::HeaderMap, name: &str) -> Vec<String> {
    std::iter::once(clear_cookie(name))
        .chain(stale_parts(headers, name, 1).map(|n| clear_cookie(&n)))
        .collect()
}

/// Names of the request's cookies that are part `from` or later of a split `name`.
fn stale_parts<'a>(
    headers: &'a http::HeaderMap,
    name: &'a str,
    from: usize,
) -> impl Iterator<Item = String> + 'a {
    let mut seen = std::collections::BTreeSet::new();
    cookie_pairs(headers).filter_map(move |(k, _)| {
        let i: usize = k.strip_prefix(name)?.strip_prefix('-')?.parse().ok()?;
        (i >= from && seen.insert(i)).then(|| k.to_string())
    })
}

/// A `Set-Cookie` value for one of our cookies.
pub fn set_cookie(name: &str, value: &str, max_age: u64) -> String {
    format!("{name}={value}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={max_age}")
}

/// A `Set-Cookie` value that removes one of our cookies.
pub fn clear_cookie(name: &str) -> String {
    set_cookie(name, "", 0)
}

#[cfg(test)]
mod tests;
