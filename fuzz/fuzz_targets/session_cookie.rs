//! The OIDC session cookie on arbitrary input: any `Cookie` header opens to nothing (an
//! error, never a panic), and a sealed session altered in any way no longer opens. Sessions
//! with any field values sealed and opened again must not trip the expiry arithmetic.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use hpcgate::authenticate::oidc::{
    CookieKey, LOGIN_COOKIE, Lifetimes, LoginState, SESSION_COOKIE, Session, cookie_values,
};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    /// A whole `Cookie` header value.
    cookie: &'a [u8],
    /// Edits to a genuine sealed session: (position, xor mask), and a cut.
    flips: Vec<(u16, u8)>,
    cut: Option<u16>,
    /// A session's fields (any values the IdP and the clock might produce).
    sub: String,
    groups: Vec<String>,
    created: u64,
    expires: u64,
    seen: u64,
    refresh_at: u64,
    now: u64,
    lifetimes: (u64, u64, u64),
}

fn key() -> &'static CookieKey {
    static KEY: OnceLock<CookieKey> = OnceLock::new();
    KEY.get_or_init(|| CookieKey::new(&[7u8; 32]).expect("a usable key"))
}

fuzz_target!(|input: Input<'_>| {
    let k = key();
    let lifetimes = Lifetimes {
        absolute: Duration::from_secs(input.lifetimes.0),
        idle: Duration::from_secs(input.lifetimes.1),
        refresh: Duration::from_secs(input.lifetimes.2),
    };

    // 1. Arbitrary cookies: the forger has no key, so nothing opens.
    if let Ok(v) = http::HeaderValue::from_bytes(input.cookie) {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::COOKIE, v);
        for value in cookie_values(&headers, SESSION_COOKIE) {
            assert!(k.open::<Session>(SESSION_COOKIE, value).is_none());
        }
        for value in cookie_values(&headers, LOGIN_COOKIE) {
            assert!(k.open::<LoginState>(LOGIN_COOKIE, value).is_none());
        }
    }
    if let Ok(text) = std::str::from_utf8(input.cookie) {
        assert!(k.open::<Session>(SESSION_COOKIE, text).is_none());
    }

    // 2. A genuine session, sealed, then altered.
    let session = Session {
        id: "AAAAAAAAAAAAAAAAAAAAAA".into(),
        sub: input.sub.clone(),
        user: "alice".into(),
        groups: input.groups.clone(),
        email: None,
        created: input.created,
        expires: input.expires,
        seen: input.seen,
        refresh_at: input.refresh_at,
        refresh_token: Some("r".into()),
    };
    let Ok(sealed) = k.seal(SESSION_COOKIE, &session) else {
        return; // too big for a cookie: refused at sealing, fine
    };
    let opened: Session = k
        .open(SESSION_COOKIE, &sealed)
        .expect("a sealed session opens");
    assert!(opened == session);
    assert!(k.open::<Session>(LOGIN_COOKIE, &sealed).is_none());
    let _ = opened.expired(input.now, &lifetimes);
    let _ = opened.renew_due(input.now, &lifetimes);
    let _ = opened.refresh_due(input.now);
    let _ = opened.max_age(input.now, &lifetimes);

    let mut altered = sealed.clone().into_bytes();
    for (pos, mask) in &input.flips {
        let i = *pos as usize % altered.len();
        altered[i] ^= mask;
    }
    if let Some(cut) = input.cut {
        altered.truncate(cut as usize % (altered.len() + 1));
    }
    if let Ok(text) = String::from_utf8(altered)
        && text != sealed
    {
        assert!(
            k.open::<Session>(SESSION_COOKIE, &text).is_none(),
            "an altered cookie opened: {text:?}"
        );
    }
});
