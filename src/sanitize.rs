//! The `sanitize` step: refuse requests that different HTTP parsers could read differently,
//! and strip every identity header the client sent.
//!
//! Refused (400): CONNECT and `*` targets; more than one Content-Length, or a non-numeric one;
//! Content-Length together with Transfer-Encoding; a Transfer-Encoding other than `chunked`;
//! control bytes in header values; `Host` twice, or missing on HTTP/1.1; an absolute-form
//! target (or h2 `:authority`) that disagrees with `Host`; two `Authorization` headers; and
//! paths with `..`/`.` segments (also as `..;x`, the servlet path-parameter form), `//`, `\`,
//! control bytes, encoded `/`, `\`, `.` or NUL (also in overlong UTF-8), or a `%` that is not
//! an escape.
//!
//! Identity headers are matched case-insensitively with `_` ≡ `-`, so `X_Grafana_User` goes
//! the same way as `x-grafana-user`.

use std::collections::HashSet;

use http::header::{AUTHORIZATION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use pingora::http::RequestHeader;

use crate::config::normalize_header_name;
use crate::error::Rejection;

pub struct Sanitizer {
    strip: HashSet<String>,
}

fn bad(msg: impl Into<String>) -> Rejection {
    Rejection::BadRequest(msg.into())
}

impl Sanitizer {
    /// `strip` holds normalised header names (see [`normalize_header_name`]).
    pub fn new(strip: &[String]) -> Self {
        Sanitizer {
            strip: strip.iter().cloned().collect(),
        }
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
        if let Some(h) = &host
            && (h.is_empty() || h.contains(['/', '\\', '@', ' ']))
        {
            return Err(bad("malformed Host header"));
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
        check_path(req.uri.path().as_bytes())
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
    // authenticate) as `/public`. So `..;x` and `.;x` (`;` also as `%3b`) count as dot segments.
    if path.split(|&b| b == b'/').any(|seg| {
        let seg = without_parameters(seg);
        seg == b".." || seg == b"."
    }) {
        return Err(bad("`.` or `..` segment in the request path"));
    }
    Ok(())
}

/// A path segment without its `;parameters` (`;` literal or encoded as `%3b`).
fn without_parameters(seg: &[u8]) -> &[u8] {
    let semicolon = seg.iter().position(|&b| b == b';');
    let encoded = seg.windows(3).position(|w| w.eq_ignore_ascii_case(b"%3b"));
    match (semicolon, encoded) {
        (Some(a), Some(b)) => &seg[..a.min(b)],
        (Some(a), None) | (None, Some(a)) => &seg[..a],
        (None, None) => seg,
    }
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
        ] {
            assert!(check_path(p.as_bytes()).is_err(), "{p} should be refused");
        }
        for p in [
            "/",
            "/a/b",
            "/a/b/",
            "/a?x=../..",
            "/a;v=1/b",
            "/caf%c3%a9",
            "/a?q=%zz",
            "/a/..x;/b",
            "/api/v1/query?query=up%7Bjob%3D%22a%22%7D",
        ] {
            assert!(check_path(p.as_bytes()).is_ok(), "{p} should pass");
        }
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
