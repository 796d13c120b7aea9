//! The gateway-JWT path on arbitrary Bearer tokens: header parsing, key lookup and
//! verification return an error or "not mine", never panic, and never authenticate a token
//! this gateway did not sign. A genuine token altered in any way is refused.
#![no_main]

use std::sync::{Arc, OnceLock};

use hpcgate::authenticate::gateway_jwt::GatewayJwt;
use hpcgate::authenticate::{
    Authenticator, Outcome, RequestInfo, SetCookies, bearer_jwt, bearer_token,
};
use hpcgate::tokens::{Claims, SigningKeys};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    /// The whole `Authorization` header value.
    authorization: &'a [u8],
    /// Edits to a genuine token: (position, xor mask), and a cut.
    flips: Vec<(u16, u8)>,
    cut: Option<u16>,
}

const ISSUER: &str = "https://gw.test";
const AUDIENCE: &str = "hpcgate";

struct World {
    rt: tokio::runtime::Runtime,
    keys: Arc<SigningKeys>,
    auth: GatewayJwt,
    genuine: String,
    _dir: tempfile::TempDir,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let keys = SigningKeys::open(dir.path()).expect("signing keys");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs() as i64;
        let claims = Claims {
            sub: "alice".into(),
            groups: vec!["hpc".into()],
            email: None,
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            iat: now,
            nbf: now,
            exp: now + 365 * 86_400,
            jti: "fuzz".into(),
        };
        let genuine = rt.block_on(keys.sign(&claims)).expect("a signed token");
        let auth = GatewayJwt::new("jwt", keys.clone(), ISSUER, AUDIENCE);
        World {
            rt,
            keys,
            auth,
            genuine,
            _dir: dir,
        }
    })
}

fn authenticate(w: &World, authorization: &[u8]) -> Option<Outcome> {
    let value = http::HeaderValue::from_bytes(authorization).ok()?;
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::AUTHORIZATION, value);
    let _ = bearer_token(&headers);
    let _ = bearer_jwt(&headers);
    let stripped = http::HeaderMap::new();
    let uri = http::Uri::from_static("/");
    let cookies = SetCookies::default();
    let req = RequestInfo {
        headers: &headers,
        client: None,
        stripped: &stripped,
        client_cert_sha256: None,
        method: &http::Method::GET,
        uri: &uri,
        set_cookies: &cookies,
    };
    Some(w.rt.block_on(w.auth.authenticate(&req)))
}

fuzz_target!(|input: Input<'_>| {
    let w = world();

    // 1. Any header value: never a forged identity.
    if let Some(out) = authenticate(w, input.authorization) {
        assert!(
            !matches!(out, Outcome::Authenticated(_)),
            "authenticated {:?}",
            String::from_utf8_lossy(input.authorization)
        );
    }
    if let Ok(token) = std::str::from_utf8(input.authorization) {
        let _ = jsonwebtoken::decode_header(token);
        if let Ok(h) = jsonwebtoken::decode_header(token)
            && let Some(kid) = h.kid
        {
            assert!(w.keys.verify(token, &kid, ISSUER, AUDIENCE).is_err());
        }
    }

    // 2. The genuine token, altered.
    let mut altered = w.genuine.clone().into_bytes();
    for (pos, mask) in &input.flips {
        let i = *pos as usize % altered.len();
        altered[i] ^= mask;
    }
    if let Some(cut) = input.cut {
        altered.truncate(cut as usize % (altered.len() + 1));
    }
    if altered == w.genuine.as_bytes() {
        return;
    }
    let mut header = b"Bearer ".to_vec();
    header.extend_from_slice(&altered);
    if let Some(out) = authenticate(w, &header) {
        assert!(
            !matches!(out, Outcome::Authenticated(_)),
            "an altered token was accepted: {:?}",
            String::from_utf8_lossy(&altered)
        );
    }
});
