//! The sanitize step on arbitrary requests: never panics, and whatever it lets through has
//! the path its module header promises (no `.`/`..` segments, no `//`, no `\`, no control
//! bytes or `#`, nothing encoded that decodes to `/`, `\`, `.`, NUL or `%`), and carries no
//! identity header once stripped. The canonical path every later step reads (`canonicalize`)
//! passes the same checks, is its own canonical form, means the same bytes once decoded as
//! the client's path, has no `;`, and keeps the query as it was.
#![no_main]

use hpcgate::authenticate::headers::{IDENTITY_HEADERS, normalize_header_name};
use hpcgate::proxy::sanitize::{Sanitizer, canonical_path, check_path};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use pingora::http::RequestHeader;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    method: &'a [u8],
    target: &'a [u8],
    headers: Vec<(&'a [u8], &'a [u8])>,
    http2: bool,
    http10: bool,
    raw_headers: Option<&'a [u8]>,
}

/// What `check_path` promises about an accepted path (before the query).
fn assert_clean_path(path: &[u8], what: &str) {
    assert_eq!(
        path.first(),
        Some(&b'/'),
        "{what}: {path:?} does not start with /"
    );
    assert!(
        !path
            .iter()
            .any(|&b| b < 0x21 || b == 0x7f || b == b'#' || b == b'\\'),
        "{what}: control byte, space, # or \\ in {path:?}"
    );
    assert!(
        !path.windows(2).any(|w| w == b"//"),
        "{what}: // in {path:?}"
    );
    // Decoding cannot make a separator, a dot segment or a NUL: nothing decodes to them.
    let decoded: Vec<u8> = percent_encoding::percent_decode(path).collect();
    for p in [path, &decoded[..]] {
        assert!(
            !p.split(|&b| b == b'/').any(|s| s == b".." || s == b"."),
            "{what}: dot segment in {path:?} (decoded {decoded:?})"
        );
    }
    assert!(
        !decoded.contains(&b'\\') && !decoded.contains(&0),
        "{what}: {path:?}"
    );
    assert_eq!(
        decoded.iter().filter(|&&b| b == b'/').count(),
        path.iter().filter(|&&b| b == b'/').count(),
        "{what}: an encoded / survived in {path:?}"
    );
    assert!(!decoded.windows(2).any(|w| w == b"//"), "{what}: {path:?}");
}

fn path_part(target: &[u8]) -> &[u8] {
    match target.iter().position(|&b| b == b'?') {
        Some(i) => &target[..i],
        None => target,
    }
}

fn sanitizer() -> Sanitizer {
    let names: Vec<String> = IDENTITY_HEADERS.iter().map(|s| s.to_string()).collect();
    Sanitizer::new(&names)
}

fuzz_target!(|input: Input<'_>| {
    // The path check alone, on any bytes.
    if check_path(input.target).is_ok() {
        assert_clean_path(path_part(input.target), "check_path");
    }

    let Ok(mut req) = RequestHeader::build(input.method, input.target, None) else {
        return;
    };
    if input.http10 {
        req.set_version(http::Version::HTTP_10);
    }
    for (name, value) in &input.headers {
        let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(name),
            http::HeaderValue::from_bytes(value),
        ) else {
            continue;
        };
        let _ = req.append_header(n, v);
    }
    let s = sanitizer();
    if s.check(&req, input.http2, input.raw_headers).is_ok() {
        // What routing and the upstream see.
        assert_clean_path(req.uri.path().as_bytes(), "uri.path()");
        assert_ne!(req.method, http::Method::CONNECT);
        assert!(req.headers.get_all(http::header::HOST).iter().count() <= 1);
        assert!(
            req.headers
                .get_all(http::header::CONTENT_LENGTH)
                .iter()
                .count()
                <= 1
        );
        assert!(
            req.headers
                .get_all(http::header::AUTHORIZATION)
                .iter()
                .count()
                <= 1
        );
        if req.headers.contains_key(http::header::TRANSFER_ENCODING) {
            assert!(!req.headers.contains_key(http::header::CONTENT_LENGTH));
        }
        let before = req.uri.path().to_string();
        let query = req.uri.query().map(str::to_string);
        if s.canonicalize(&mut req).is_ok() {
            let after = req.uri.path().to_string();
            assert_clean_path(after.as_bytes(), "canonical path");
            assert!(
                check_path(after.as_bytes()).is_ok(),
                "{after:?} fails check_path"
            );
            assert_eq!(
                canonical_path(&after).ok().as_deref(),
                Some(after.as_str()),
                "{before:?} → {after:?} is not a fixed point"
            );
            let decoded =
                |p: &str| -> Vec<u8> { percent_encoding::percent_decode(p.as_bytes()).collect() };
            assert_eq!(decoded(&before), decoded(&after), "{before:?} → {after:?}");
            assert!(!after.contains(';') && !after.to_ascii_lowercase().contains("%3b"));
            assert_eq!(req.uri.query().map(str::to_string), query, "{before:?}");
        }
    }
    let _ = s.strip(&mut req);
    for name in req.headers.keys() {
        let n = normalize_header_name(name.as_str());
        assert!(
            !IDENTITY_HEADERS.contains(&n.as_str()),
            "identity header {name} survived strip"
        );
    }
});
