//! The `sanitize` step: refuse requests that different HTTP parsers could read differently,
//! bring the path to the one canonical form every later step and the upstream read, and strip
//! every identity header the client sent.
//!
//! Refused (400): CONNECT and `*` targets; more than one Content-Length, or a non-numeric one;
//! Content-Length together with Transfer-Encoding; a Transfer-Encoding other than `chunked`;
//! control bytes in header values; `Host` twice, or missing on HTTP/1.1; a `Host` (or
//! `:authority`) that is not `host[:port]` (see [`check_authority`]); an absolute-form target
//! (or h2 `:authority`) that disagrees with `Host`; two `Authorization` headers; and paths with
//! `..`/`.` segments, `;`, `//`, `\`, control bytes, encoded `/`, `\`, `.`, `%`, `?`, `#`, `;`
//! or control characters (also in overlong UTF-8), or a `%` that is not an escape.
//!
//! The path is then rewritten to its canonical form: see [`path`] for the rules and why.
//!
//! Identity headers are matched case-insensitively with `_` ≡ `-`, so `X_Grafana_User` goes
//! the same way as `x-grafana-user`; so are the method-override headers
//! ([`crate::authenticate::headers::METHOD_OVERRIDE_HEADERS`]), which are always stripped: a route's policy
//! decides on the method the upstream will act on.

use std::collections::HashSet;

use http::header::{AUTHORIZATION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use pingora::http::RequestHeader;

use crate::authenticate::headers::{METHOD_OVERRIDE_HEADERS, normalize_header_name};
use crate::error::Rejection;

mod host;
pub mod path;

pub use host::check_authority;
pub(crate) use path::is_path_char;
pub use path::{canonical_path, check_path};

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
            &crate::authenticate::headers::IDENTITY_HEADERS
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
        )
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
