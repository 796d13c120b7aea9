//! Request paths: the raw-path checks ([`check_path`]) and the canonical form
//! ([`canonical_path`]) that every later step and the upstream read.
//!
//! The gateway decides on the path the upstream reads. Go (Prometheus) and slurmrestd
//! percent-decode the path before they route it, so `/st%61tus` is `/status` to them; a
//! decision taken on the encoded bytes would be taken on a different request. So the path is
//! rewritten once, in the sanitize step, to its canonical form ([`canonical_path`]), and routing, `admin_paths`,
//! Cedar's `context.path`, the Slurm classifier and the upstream all read those bytes:
//!
//! - an escape of a character that may stand unencoded in a path segment (RFC 3986 `pchar`
//!   but `;`: letters, digits, `-` `_` `~`, `!$&'()*+,=`, `:` and `@`) is decoded;
//! - an escape that decoded would change how the path splits or ends — `/`, `\`, `.`, `%`
//!   (double encoding), `?`, `#`, `;` — or would be a control character, is refused;
//! - every other byte (space, `"`, `<`, `{`, non-ASCII …) is percent-encoded, upper-case hex,
//!   whether it arrived raw or encoded.
//!
//! `;` is refused anywhere in the path, raw or as `%3B`: servlet containers, and some other
//! upstreams, read it as the start of path parameters and drop what follows (`/public/..;/admin`
//! is `/admin` to Tomcat), so no single reading of such a path is safe.
//!
//! Paths are case-sensitive, as they are to Go and slurmrestd: `/Status` is not `/status`,
//! and neither routes nor `admin_paths` fold case (the Slurm classifier still reads Slurm's
//! admin paths in any case, which can only make more requests `admin`).

use super::bad;
use crate::error::Rejection;

/// Checks the raw request path (before any decoding).
pub fn check_path(raw: &[u8]) -> Result<(), Rejection> {
    let path = match raw.iter().position(|&b| b == b'?') {
        Some(i) => &raw[..i],
        None => raw,
    };
    if raw.iter().any(|&b| b < 0x21 || b == 0x7f || b == b'#') {
        return Err(bad("control characters, spaces or # in the request target"));
    }
    if path.first() != Some(&b'/') {
        return Err(bad("the request path must start with /"));
    }
    if path.contains(&b'\\') {
        return Err(bad("backslash in the request path"));
    }
    if path.windows(2).any(|w| w == b"//") {
        return Err(bad("empty path segment (//) in the request path"));
    }
    // A `%` must start an escape of two hex digits (RFC 3986): IIS reads `%u002e` as `.`.
    for (i, _) in path.iter().enumerate().filter(|(_, b)| **b == b'%') {
        if !path
            .get(i + 1..i + 3)
            .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
        {
            return Err(bad("a `%` that is not an escape in the request path"));
        }
    }
    let lower = path.to_ascii_lowercase();
    // `%c0` and `%c1` only ever start overlong UTF-8 forms of ASCII (`%c0%ae` is `.`, `%c0%af`
    // is `/`), which lenient decoders still turn into that character.
    for enc in [&b"%2f"[..], b"%5c", b"%00", b"%2e", b"%25", b"%c0", b"%c1"] {
        if lower.windows(3).any(|w| w == enc) {
            return Err(bad(format!(
                "encoded {} in the request path",
                String::from_utf8_lossy(enc)
            )));
        }
    }
    // Servlet containers (Tomcat, Jetty, Spring) drop a segment's `;parameters` before they
    // resolve dot segments: to them `/public/..;/admin` is `/admin`, which we would route (and
    // authenticate) as `/public`; other upstreams keep the `;`. No reading is safe for all.
    if path.contains(&b';') || lower.windows(3).any(|w| w == b"%3b") {
        return Err(bad(
            "`;` in the request path (some upstreams read it as the start of path parameters): \
             percent-encoding it does not help; leave it out of the path",
        ));
    }
    if path
        .split(|&b| b == b'/')
        .any(|seg| seg == b".." || seg == b".")
    {
        return Err(bad("`.` or `..` segment in the request path"));
    }
    Ok(())
}

/// Whether `b` may stand unencoded in a canonical path segment: RFC 3986 `pchar` without
/// `;` (refused) and `%` (only as an escape).
pub(crate) fn is_path_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,=:@".contains(&b)
}

/// The canonical form of a request path (no query) that passed [`check_path`]: escapes of
/// path characters decoded, every other byte percent-encoded with upper-case hex, and escapes
/// that would change the path's structure if an upstream decoded them refused. See the
/// module header for why.
pub fn canonical_path(path: &str) -> Result<String, Rejection> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    fn push_escaped(out: &mut String, b: u8) {
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        out.push('%');
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 15)] as char);
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let decoded = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| bad("a `%` that is not an escape in the request path"))?;
                match decoded {
                    b'.' | b'/' | b'\\' | b'%' | b'?' | b'#' | b';' => {
                        return Err(bad(format!(
                            "encoded `{}` in the request path: an upstream that decodes the \
                             path would split it differently; send the path without it",
                            decoded as char
                        )));
                    }
                    c if c < 0x20 || c == 0x7f => {
                        return Err(bad("an encoded control character in the request path"));
                    }
                    c if is_path_char(c) => out.push(c as char),
                    c => push_escaped(&mut out, c),
                }
                i += 3;
            }
            b';' => {
                return Err(bad("`;` in the request path"));
            }
            b'\\' | b'?' | b'#' => {
                return Err(bad(format!("`{}` in the request path", b as char)));
            }
            c if c < 0x21 || c == 0x7f => {
                return Err(bad("control characters or spaces in the request path"));
            }
            b'/' => {
                out.push('/');
                i += 1;
            }
            c if is_path_char(c) => {
                out.push(c as char);
                i += 1;
            }
            c => {
                push_escaped(&mut out, c);
                i += 1;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_confusion_is_refused() {
        for p in [
            "/a/../b",
            "/a/./b",
            "/..",
            "/a/%2e%2e/b",
            "/a%2Fb",
            "/a%5cb",
            "/a\\b",
            "/a//b",
            "/a%00",
            "/a%252e",
            "x",
            "/a#b",
            "/public/..;/admin",
            "/public/..;jsessionid=x/admin",
            "/public/.;/x",
            "/public/..%3b/admin",
            "/public/..%3B/admin",
            "/public/%c0%ae%c0%ae/admin",
            "/public/..%C0%AFadmin",
            "/public/%u002e%u002e/admin",
            "/a%zz",
            "/a%2",
            "/a%",
            // `;` anywhere in the path (it was data in a segment before issue 20).
            "/a;v=1/b",
            "/a/..x;/b",
            "/a%3bb",
        ] {
            assert!(check_path(p.as_bytes()).is_err(), "{p} should be refused");
        }
        for p in [
            "/",
            "/a/b",
            "/a/b/",
            "/a?x=../..",
            "/caf%c3%a9",
            "/a?q=%zz",
            "/a?q=;",
            "/api/v1/query?query=up%7Bjob%3D%22a%22%7D",
        ] {
            assert!(check_path(p.as_bytes()).is_ok(), "{p} should pass");
        }
    }

    #[test]
    fn encoded_path_characters_are_decoded_in_the_canonical_path() {
        for (sent, canonical) in [
            ("/api/v1/st%61tus/flags", "/api/v1/status/flags"),
            ("/%70rom/api/v1/query", "/prom/api/v1/query"),
            (
                "/api/v1/%61dmin/tsdb/snapshot",
                "/api/v1/admin/tsdb/snapshot",
            ),
            ("/%41%5a%30%39%2d%5f%7e", "/AZ09-_~"),
            ("/u/alice%40example.org", "/u/alice@example.org"),
            ("/a%21%24%26%27%28%29%2A%2B%2C%3D%3A", "/a!$&'()*+,=:"),
            ("/plain/path", "/plain/path"),
            ("/", "/"),
        ] {
            assert_eq!(canonical_path(sent).unwrap(), canonical, "{sent}");
        }
    }

    #[test]
    fn other_bytes_are_escaped_in_upper_case_hex() {
        for (sent, canonical) in [
            ("/caf%c3%a9", "/caf%C3%A9"),
            ("/caf\u{e9}", "/caf%C3%A9"),
            ("/a%20b", "/a%20b"),
            ("/a%7b%7D", "/a%7B%7D"),
            ("/a{}\"|", "/a%7B%7D%22%7C"),
        ] {
            assert_eq!(canonical_path(sent).unwrap(), canonical, "{sent}");
        }
    }

    #[test]
    fn escapes_that_would_restructure_the_path_are_refused() {
        for p in [
            "/a%3Fb", "/a%3fb", "/a%23b", "/a%25", "/a%2F", "/a%5C", "/a%2E", "/a%3B", "/a;b",
            "/a%0a", "/a%0D", "/a%7F", "/a%1b",
        ] {
            let e = canonical_path(p).expect_err(p);
            assert_eq!(e.status(), 400, "{p}");
        }
    }

    /// The canonical form is a fixed point and passes the raw-path checks, so a request
    /// canonicalised once reads the same to every later step.
    #[test]
    fn the_canonical_path_is_stable_and_clean() {
        for p in [
            "/st%61tus",
            "/caf%c3%a9/\u{e9}",
            "/a%20b%7B",
            "/a{}\"|^`<>[]",
            "/u/alice%40example.org/%2a",
            "/a-b_c~d.json",
        ] {
            let once = canonical_path(p).unwrap();
            assert_eq!(canonical_path(&once).unwrap(), once, "{p}");
            assert!(check_path(once.as_bytes()).is_ok(), "{p} → {once}");
            assert!(
                once.parse::<http::uri::PathAndQuery>().is_ok(),
                "{p} → {once}"
            );
        }
    }
}
