//! CSRF tokens for the forms of the user page and for logout.
//!
//! A token is HMAC-SHA256 over what names one login (the IdP subject, the login time and the
//! user), under a key derived from the session key: it needs no server-side state, any
//! replica can check it, it changes with every login and is useless in another session.
//! Together with the `SameSite=Lax` session cookie, a cross-site form cannot act for a user.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;

/// The form field that carries the token.
pub const FIELD: &str = "csrf";

/// The key tokens are made with. `Debug` never shows it.
pub struct CsrfKey(hmac::Key);

impl std::fmt::Debug for CsrfKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CsrfKey(***)")
    }
}

impl CsrfKey {
    /// A key of its own, derived from the session key (which seals cookies and must not be
    /// used for anything else as is).
    pub fn derive(session_key: &[u8; 32]) -> CsrfKey {
        let parent = hmac::Key::new(hmac::HMAC_SHA256, session_key);
        let derived = hmac::sign(&parent, b"hpcgate csrf token key v1");
        CsrfKey(hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()))
    }

    /// The token of a session, named by `binding`.
    pub fn token(&self, binding: &str) -> String {
        URL_SAFE_NO_PAD.encode(hmac::sign(&self.0, binding.as_bytes()))
    }

    /// Whether `presented` is the token of `binding` (compared in constant time).
    pub fn verify(&self, binding: &str, presented: &str) -> bool {
        match URL_SAFE_NO_PAD.decode(presented) {
            Ok(tag) => hmac::verify(&self.0, binding.as_bytes(), &tag).is_ok(),
            Err(_) => false,
        }
    }
}

/// What names one login: a token made for it is refused in any other.
pub fn binding(sub: &str, created: u64, user: &str) -> String {
    // NUL cannot occur in a subject or user name, so the fields cannot run into each other.
    format!("{sub}\0{created}\0{user}")
}

/// A state-changing request a browser marked as coming from another site
/// (`Sec-Fetch-Site: cross-site`): refused whatever it carries.
pub fn cross_site(headers: &http::HeaderMap) -> bool {
    headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"))
}

/// Whether the browser proved the request comes from a page of this gateway:
/// `Sec-Fetch-Site: same-origin`, or, from a browser that sends no Fetch metadata, an `Origin`
/// equal to `own` (the gateway's origin, e.g. `https://gw.example.org:8443`). Anything else
/// is unproven: `same-site` (a sibling host may be someone else's), `cross-site`, `none`, an
/// `Origin: null`, several values, or no header at all (fail closed).
pub fn same_origin(headers: &http::HeaderMap, own: Option<&str>) -> bool {
    let mut fetch_site = headers.get_all("sec-fetch-site").iter();
    if let Some(site) = fetch_site.next() {
        return fetch_site.next().is_none() && site.as_bytes().eq_ignore_ascii_case(b"same-origin");
    }
    let mut origins = headers.get_all(http::header::ORIGIN).iter();
    match (origins.next(), origins.next(), own) {
        (Some(origin), None, Some(own)) => origin.as_bytes().eq_ignore_ascii_case(own.as_bytes()),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_accepted_only_for_its_own_session() {
        let key = CsrfKey::derive(&[7; 32]);
        let mine = binding("sub-alice", 1000, "alice");
        let t = key.token(&mine);
        assert!(key.verify(&mine, &t));
        assert_eq!(t, key.token(&mine), "stable for the whole session");
        // Another login of the same user, another user, another key: refused.
        assert!(!key.verify(&binding("sub-alice", 1001, "alice"), &t));
        assert!(!key.verify(&binding("sub-bob", 1000, "bob"), &t));
        assert!(!CsrfKey::derive(&[8; 32]).verify(&mine, &t));
        // Missing, empty, truncated, altered or not base64: refused.
        assert!(!key.verify(&mine, ""));
        assert!(!key.verify(&mine, &t[..t.len() - 2]));
        let mut altered = t.clone().into_bytes();
        altered[3] = if altered[3] == b'A' { b'B' } else { b'A' };
        assert!(!key.verify(&mine, &String::from_utf8(altered).unwrap()));
        assert!(!key.verify(&mine, "!!not base64!!"));
        // Fields cannot be shifted from one into the other.
        assert_ne!(binding("a", 1, "0b"), binding("a\u{0}1", 0, "b"));
    }

    #[test]
    fn the_key_is_not_the_session_key_and_does_not_print() {
        let session_key = [9u8; 32];
        let key = CsrfKey::derive(&session_key);
        let plain = hmac::Key::new(hmac::HMAC_SHA256, &session_key);
        let t = key.token("x");
        assert!(hmac::verify(&plain, b"x", &URL_SAFE_NO_PAD.decode(&t).unwrap()).is_err());
        assert_eq!(format!("{key:?}"), "CsrfKey(***)");
    }

    #[test]
    fn cross_site_requests_are_recognised() {
        let mut h = http::HeaderMap::new();
        assert!(!cross_site(&h));
        h.insert("sec-fetch-site", "same-origin".parse().unwrap());
        assert!(!cross_site(&h));
        h.insert("sec-fetch-site", "cross-site".parse().unwrap());
        assert!(cross_site(&h));
    }

    #[test]
    fn only_same_origin_requests_prove_they_come_from_the_gateway() {
        let own = Some("https://gw.example.org:8443");
        let with = |pairs: &[(&'static str, &str)]| {
            let mut h = http::HeaderMap::new();
            for (k, v) in pairs {
                h.append(*k, v.parse().unwrap());
            }
            h
        };
        assert!(same_origin(
            &with(&[("sec-fetch-site", "same-origin")]),
            own
        ));
        assert!(same_origin(
            &with(&[("sec-fetch-site", "Same-Origin")]),
            None
        ));
        assert!(same_origin(
            &with(&[("origin", "https://gw.example.org:8443")]),
            own
        ));
        for refused in [
            with(&[]),
            with(&[("sec-fetch-site", "same-site")]),
            with(&[("sec-fetch-site", "cross-site")]),
            with(&[("sec-fetch-site", "none")]),
            // Fetch metadata wins over a matching Origin.
            with(&[
                ("sec-fetch-site", "cross-site"),
                ("origin", "https://gw.example.org:8443"),
            ]),
            with(&[
                ("sec-fetch-site", "same-origin"),
                ("sec-fetch-site", "cross-site"),
            ]),
            with(&[("origin", "https://evil.example")]),
            with(&[("origin", "https://gw.example.org")]),
            with(&[("origin", "http://gw.example.org:8443")]),
            with(&[("origin", "https://gw.example.org:8443.evil.example")]),
            with(&[("origin", "null")]),
            with(&[
                ("origin", "https://gw.example.org:8443"),
                ("origin", "https://evil.example"),
            ]),
        ] {
            assert!(!same_origin(&refused, own), "{refused:?}");
        }
        // No own origin known: only Fetch metadata can prove it.
        assert!(!same_origin(
            &with(&[("origin", "https://gw.example.org:8443")]),
            None
        ));
    }
}
