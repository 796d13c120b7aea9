//! The `sanitize` step: refuse requests that different HTTP parsers could read differently,
//! bring the path to the one canonical form every later step and the upstream read, and strip
//! every identity header the client sent.
//!
//! Refused (400): CONNECT and `*` targets; more than one Content-Length, or a non-numeric one;
//! Content-Length together with Transfer-Encoding; a Transfer-Encoding other than `chunked`;
//! control bytes in header values; `Host` twice, or missing on HTTP/1.1; a `Host` (or
//! `:authority`) that is not `host[:port]` (see [`check_authority`]); an absolute-form target
//! (or h2 `:authority`) that disagrees with `Host`; two `Authorization` headers; and paths with
//! `..`/`.` segments, `//`, `\`, control bytes, encoded `/`, `\`, `.` or NUL (also in overlong
//! UTF-8), or a `%` that is not an escape.
//!
//! # The canonical path
//!
//! The gateway decides on the path the upstream reads. Go (Prometheus) and slurmrestd
//! percent-decode the path before they route it, so `/st%61tus` is `/status` to them; a
//! decision taken on the encoded bytes would be taken on a different request. So the path is
//! rewritten once, here, to its canonical form ([`canonical_path`]), and routing, `admin_paths`,
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
//!
//! Identity headers are matched case-insensitively with `_` ≡ `-`, so `X_Grafana_User` goes
//! the same way as `x-grafana-user`; so are the method-override headers
//! ([`crate::config::METHOD_OVERRIDE_HEADERS`]), which are always stripped: a route's policy
//! decides on the method the upstream will act on.

use std::collections::HashSet;

use http::header::{AUTHORIZATION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use pingora::http::RequestHeader;

use crate::config::{METHOD_OVERRIDE_HEADERS, normalize_header_name};
use crate::error::Rejection;

pub struct Sanitizer {
    strip: HashSet<String>,
}

fn bad(msg: impl Into<String>) -> Rejection {
    Rejection::BadRequest(msg.into())
}

impl Sanitizer {
    /// `strip` holds normalised header names (see [`normalize_header_name`]); the
    /// method-override headers are stripped whatever it holds.
    pub fn new(strip: &[String]) -> Self {
        let mut strip: HashSet<String> = strip.iter().cloned().collect();
        strip.extend(METHOD_OVERRIDE_HEADERS.iter().map(|h| h.to_string()));
        Sanitizer { strip }
    }

    /// Refuses ambiguous requests. `http2` says how the request arrived; `raw_headers` is the
    /// HTTP/1 header block as received, when the parsed headers may have lost something.
    pub fn check(
        &self,
        req: &RequestHeader,
        http2: bool,
        raw_headers: Option<&[u8]>,
    ) -> Result<(), Rejection> {
        if req.method == http::Method::CONNECT {
            return Err(bad("CONNECT is not supported: this is not a forward proxy"));
        }
        let headers = &req.headers;
        for (name, value) in headers {
            if value
                .as_bytes()
                .iter()
                .any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f)
            {
                return Err(bad(format!("control characters in header {name}")));
            }
        }
        let lengths = headers.get_all(CONTENT_LENGTH).iter().count();
        if lengths > 1 {
            return Err(bad("more than one Content-Length header"));
        }
        if let Some(cl) = headers.get(CONTENT_LENGTH) {
            let v = cl.as_bytes();
            if v.is_empty() || !v.iter().all(u8::is_ascii_digit) || v.len() > 19 {
                return Err(bad("Content-Length must be a single decimal number"));
            }
        }
        let te: Vec<_> = headers.get_all(TRANSFER_ENCODING).iter().collect();
        if !te.is_empty() {
            if http2 {
                return Err(bad("Transfer-Encoding is not allowed in HTTP/2"));
            }
            if lengths > 0 || raw_headers.is_some_and(|raw| raw_has_header(raw, b"content-length"))
            {
                return Err(bad("both Content-Length and Transfer-Encoding"));
            }
            if te.len() != 1 || !te[0].as_bytes().eq_ignore_ascii_case(b"chunked") {
                return Err(bad("Transfer-Encoding must be exactly `chunked`"));
            }
        }
        if headers.get_all(AUTHORIZATION).iter().count() > 1 {
            return Err(bad("more than one Authorization header"));
        }
        let hosts: Vec<_> = headers.get_all(HOST).iter().collect();
        if hosts.len() > 1 {
            return Err(bad("more than one Host header"));
        }
        let host = match hosts.first() {
            Some(h) => Some(
                h.to_str()
                    .map_err(|_| bad("Host header is not ASCII"))?
                    .to_ascii_lowercase(),
            ),
            None => None,
        };
        if let Some(h) = &host {
            check_authority(h, "Host header")?;
        }
        if let Some(auth) = req.uri.authority() {
            check_authority(auth.as_str(), "request target's authority")?;
        }
        match (req.uri.authority(), &host) {
            (Some(auth), Some(h)) if !auth.as_str().eq_ignore_ascii_case(h) => {
                return Err(bad(
                    "the request target's authority does not match the Host header",
                ));
            }
            (Some(auth), _) if auth.as_str().contains('@') => {
                return Err(bad("user information in the request target"));
            }
            (None, None) if !http2 && req.version == http::Version::HTTP_11 => {
                return Err(bad("missing Host header"));
            }
            _ => {}
        }
        if !req.raw_path_is_utf8() {
            return Err(bad("the request target is not valid UTF-8"));
        }
        check_path(origin_form(req.raw_path()))?;
        // And the path routing reads, which pingora derives apart from the raw target: the
        // two must agree (found by the `sanitize` fuzz target: an empty target has the raw
        // path `/` but an empty `uri.path()`).
        check_path(req.uri.path().as_bytes())?;
        canonical_path(req.uri.path()).map(drop)
    }

    /// Replaces the request's path with its [`canonical_path`] (query, scheme and authority
    /// unchanged), so every later step and the upstream read the same bytes. Run after
    /// [`Sanitizer::check`].
    pub fn canonicalize(&self, req: &mut RequestHeader) -> Result<(), Rejection> {
        let path = canonical_path(req.uri.path())?;
        if path == req.uri.path() {
            return Ok(());
        }
        let target = match req.uri.query() {
            Some(q) => format!("{path}?{q}"),
            None => path,
        };
        let mut parts = req.uri.clone().into_parts();
        parts.path_and_query = Some(
            target
                .parse()
                .map_err(|_| bad("the request target has no unambiguous canonical form"))?,
        );
        let uri = http::Uri::from_parts(parts)
            .map_err(|_| bad("the request target has no unambiguous canonical form"))?;
        req.set_uri(uri);
        Ok(())
    }

    /// Removes every inbound identity header (and any configured extra).
    /// Removes the identity headers and returns them, under their normalised names, for the
    /// one authenticator allowed to read such a header: `trusted_header`, once the caller is
    /// proven to be a trusted service.
    pub fn strip(&self, req: &mut RequestHeader) -> http::HeaderMap {
        let mut removed = http::HeaderMap::new();
        let doomed: Vec<(http::HeaderName, http::HeaderValue)> = req
            .headers
            .iter()
            .filter(|(n, _)| self.strip.contains(&normalize_header_name(n.as_str())))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        for (name, value) in doomed {
            req.remove_header(&name);
            if let Ok(n) =
                http::HeaderName::from_bytes(normalize_header_name(name.as_str()).as_bytes())
            {
                removed.append(n, value);
            }
        }
        removed
    }
}

/// Whether a raw HTTP/1 header block has a header line named `name` (lower case).
fn raw_has_header(raw: &[u8], name: &[u8]) -> bool {
    raw.split(|&b| b == b'\n').any(|line| {
        line.iter()
            .position(|&b| b == b':')
            .is_some_and(|i| line[..i].trim_ascii().eq_ignore_ascii_case(name))
    })
}

/// The path-and-query part of a target that may be in absolute form (`http://h/p?q`).
fn origin_form(raw: &[u8]) -> &[u8] {
    let lower = |n: usize| raw.get(..n).map(<[u8]>::to_ascii_lowercase);
    let skip = if lower(7).as_deref() == Some(b"http://") {
        7
    } else if lower(8).as_deref() == Some(b"https://") {
        8
    } else {
        return raw;
    };
    match raw[skip..].iter().position(|&b| b == b'/' || b == b'?') {
        Some(i) => &raw[skip + i..],
        None => b"/",
    }
}

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

/// Checks a `Host` value or a target's authority against RFC 3986 `host[:port]`: a DNS name
/// (letters, digits, `-`, `_`, dots between labels, one trailing dot), an IPv4 address, or a
/// bracketed IPv6 literal; the port, if any, digits only. Anything else could be read as
/// another host by some parser, or carry text into `Forwarded`.
pub fn check_authority(value: &str, what: &str) -> Result<(), Rejection> {
    let refuse = || {
        bad(format!(
            "malformed {what}: expected host[:port] (a DNS name, an IPv4 address or a \
             bracketed IPv6 address, and digits for the port)"
        ))
    };
    let (host, port) = if let Some(rest) = value.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or_else(refuse)?;
        v6.parse::<std::net::Ipv6Addr>().map_err(|_| refuse())?;
        match after {
            "" => (None, None),
            p => (None, Some(p.strip_prefix(':').ok_or_else(refuse)?)),
        }
    } else {
        match value.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(value), None),
        }
    };
    if let Some(p) = port
        && (p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || p.parse::<u16>().is_err())
    {
        return Err(refuse());
    }
    if let Some(h) = host {
        let labels = h.strip_suffix('.').unwrap_or(h);
        if labels.is_empty()
            || labels.len() > 253
            || labels.split('.').any(|l| {
                l.is_empty()
                    || l.len() > 63
                    || !l
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            })
        {
            return Err(refuse());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(path: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", path.as_bytes(), None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn sanitizer() -> Sanitizer {
        Sanitizer::new(
            &crate::config::IDENTITY_HEADERS
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
        )
    }

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

    #[test]
    fn the_canonical_path_replaces_the_target_and_keeps_the_query() {
        let s = sanitizer();
        let mut r = req(
            "/p%72om/api/v1/query?query=up%7Bjob%3D%22a%22%7D&x=%61",
            &[],
        );
        s.canonicalize(&mut r).unwrap();
        assert_eq!(r.uri.path(), "/prom/api/v1/query");
        assert_eq!(r.uri.query(), Some("query=up%7Bjob%3D%22a%22%7D&x=%61"));
        assert_eq!(
            r.raw_path(),
            b"/prom/api/v1/query?query=up%7Bjob%3D%22a%22%7D&x=%61"
        );
        // h2 and absolute-form requests keep their authority (it names the host for routing).
        let mut r = req("/", &[]);
        r.set_uri("https://gw.example:8443/st%61tus?a=1".parse().unwrap());
        s.canonicalize(&mut r).unwrap();
        assert_eq!(r.uri.to_string(), "https://gw.example:8443/status?a=1");
        // A path already canonical is left as it is.
        let mut r = req("/status", &[]);
        s.canonicalize(&mut r).unwrap();
        assert_eq!(r.raw_path(), b"/status");
    }

    #[test]
    fn check_refuses_what_has_no_canonical_path() {
        let s = sanitizer();
        assert!(
            s.check(&req("/a%3Fb", &[("host", "gw")]), false, None)
                .is_err()
        );
        assert!(
            s.check(&req("/a%23", &[("host", "gw")]), false, None)
                .is_err()
        );
        assert!(
            s.check(&req("/st%61tus", &[("host", "gw")]), false, None)
                .is_ok()
        );
    }

    #[test]
    fn hosts_must_be_host_and_port() {
        for ok in [
            "gw",
            "gw.example",
            "gw.example.",
            "gw.example:8443",
            "gw-1.example_internal.org",
            "10.0.0.1",
            "10.0.0.1:80",
            "[::1]",
            "[::1]:443",
            "[2001:db8::1]",
        ] {
            assert!(check_authority(ok, "Host").is_ok(), "{ok} should pass");
        }
        for bad in [
            "",
            "a\",for=6.6.6.6;proto=https;host=\"b",
            "a,b",
            "a;b",
            "a b",
            "user@gw",
            "gw/x",
            "gw\\x",
            "gw:",
            "gw:x",
            "gw:99999",
            "gw:80:80",
            "gw..example",
            ".gw",
            "gw.example..",
            "[::1",
            "[::1]x",
            "[::1]:",
            "[fe80::1%25eth0]",
            "[gw]",
            "::1",
            "g\u{e9}w",
        ] {
            assert!(
                check_authority(bad, "Host").is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn forwarded_injection_through_host_is_refused() {
        let s = sanitizer();
        let r = req("/", &[("host", "a\",for=6.6.6.6;proto=https;host=\"b")]);
        let e = s.check(&r, false, None).expect_err("refused");
        assert_eq!(e.status(), 400);
    }

    #[test]
    fn method_override_headers_are_stripped_in_every_spelling() {
        let s = Sanitizer::new(&[]);
        let mut r = req(
            "/",
            &[
                ("X-HTTP-Method-Override", "DELETE"),
                ("x_http_method_override", "DELETE"),
                ("X-Method-Override", "PUT"),
                ("x_METHOD_override", "PUT"),
                ("X-HTTP-Method", "POST"),
                ("X_Http_Method", "POST"),
                ("accept", "*/*"),
            ],
        );
        s.strip(&mut r);
        let left: Vec<_> = r.headers.keys().map(|k| k.as_str().to_string()).collect();
        assert_eq!(left, vec!["accept"]);
    }

    /// Found by the `sanitize` fuzz target.
    #[test]
    fn an_empty_target_is_refused() {
        let r = RequestHeader::build("GET", b"", None).unwrap();
        assert!(sanitizer().check(&r, true, None).is_err());
    }

    #[test]
    fn smuggling_headers_are_refused() {
        let s = sanitizer();
        let ok = [("host", "gw")];
        assert!(s.check(&req("/", &ok), false, None).is_ok());
        let cases: &[&[(&str, &str)]] = &[
            &[
                ("host", "gw"),
                ("content-length", "5"),
                ("content-length", "5"),
            ],
            &[("host", "gw"), ("content-length", "5, 5")],
            &[
                ("host", "gw"),
                ("content-length", "5"),
                ("transfer-encoding", "chunked"),
            ],
            &[("host", "gw"), ("transfer-encoding", "chunked, identity")],
            &[("host", "gw"), ("transfer-encoding", "xchunked")],
            &[("host", "gw"), ("host", "other")],
            &[
                ("host", "gw"),
                ("authorization", "a"),
                ("authorization", "b"),
            ],
            &[],
        ];
        for c in cases {
            assert!(
                s.check(&req("/", c), false, None).is_err(),
                "{c:?} should be refused"
            );
        }
    }

    #[test]
    fn content_length_hidden_behind_transfer_encoding_is_found() {
        let s = sanitizer();
        let r = req("/", &[("host", "gw"), ("transfer-encoding", "chunked")]);
        let raw = b"Host: gw\r\nTransfer-Encoding: chunked\r\ncontent-LENGTH : 4\r\n\r\n";
        assert!(s.check(&r, false, Some(raw)).is_err());
        let raw = b"Host: gw\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(s.check(&r, false, Some(raw)).is_ok());
    }

    #[test]
    fn absolute_form_must_match_host() {
        let s = sanitizer();
        let absolute = |target: &str| {
            let mut r = req("/", &[("host", "gw")]);
            r.set_uri(target.parse().unwrap());
            r
        };
        assert!(s.check(&absolute("http://gw/x"), false, None).is_ok());
        assert!(s.check(&absolute("http://evil/x"), false, None).is_err());
        assert!(s.check(&absolute("http://user@gw/x"), false, None).is_err());
    }

    #[test]
    fn identity_headers_are_stripped_in_every_spelling() {
        let s = sanitizer();
        let mut r = req(
            "/",
            &[
                ("X-Forwarded-User", "root"),
                ("x_forwarded_user", "root"),
                ("X-GRAFANA-USER", "root"),
                ("x_Slurm_User_Name", "root"),
                ("remote_user", "root"),
                ("accept", "*/*"),
            ],
        );
        s.strip(&mut r);
        let left: Vec<_> = r.headers.keys().map(|k| k.as_str().to_string()).collect();
        assert_eq!(left, vec!["accept"]);
    }
}
