//! Request smuggling and path confusion, sent as raw bytes (HTTP/1.1 over TCP, HTTP/2 frames
//! over TLS) to the real gateway, in front of a raw TCP upstream that records every byte.
//!
//! Each case either is refused with a 4xx, or reaches the upstream as exactly one
//! unambiguous request (one request line, no leftover bytes, never Transfer-Encoding with
//! Content-Length), authenticated as the gateway decided: the smuggled request (to
//! `/admin/smuggled`) never reaches the upstream, and identity headers come only from the
//! gateway. Adding a case is one line in a table.

mod common;
#[path = "smuggling/h2raw.rs"]
mod h2raw;
#[path = "smuggling/upstream.rs"]
mod upstream;

use std::time::Duration;

use common::*;
use h2raw::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use upstream::*;

/// What a case must produce.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Want {
    /// The gateway's own refusal: this status with a JSON error body; the upstream sees nothing.
    Json(u16),
    /// pingora refuses it before any gateway callback runs: a bare status without a body
    /// (pingora 0.9's `read_request`/`validate_request` and its CONNECT check answer 400 or
    /// 405 themselves and offer no hook to write one); the upstream sees nothing.
    Bare(u16),
    /// Exactly one request reaches the upstream, on this path, as `user` (None: public).
    Pass(&'static str, Option<&'static str>),
}

const SMUGGLED: &str = "GET /admin/smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n";

fn basic_alice() -> String {
    basic("alice", ALICE_PW)
}

/// The HTTP/1.1 corpus: (name, raw request, expected outcome). `@ALICE@` becomes alice's
/// Basic credentials; `@SMUGGLED@` a whole unauthenticated request to the protected route.
#[rustfmt::skip]
const H1_CASES: &[(&str, &str, Want)] = &[
    // Baselines.
    ("plain public GET", "GET /public/x HTTP/1.1\r\nHost: localhost\r\n\r\n", Want::Pass("/public/x", None)),
    ("authenticated admin GET", "GET /admin/x HTTP/1.1\r\nHost: localhost\r\nAuthorization: @ALICE@\r\n\r\n", Want::Pass("/admin/x", Some("alice"))),
    ("admin without credentials", "GET /admin/x HTTP/1.1\r\nHost: localhost\r\n\r\n", Want::Json(401)),
    ("chunked body", "POST /public/x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", Want::Pass("/public/x", None)),
    // CL.TE and TE.CL: both framings, in either order.
    ("CL.TE", "POST /public/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 54\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n@SMUGGLED@", Want::Json(400)),
    ("TE.CL", "POST /public/x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n31\r\n@SMUGGLED@\r\n0\r\n\r\n", Want::Json(400)),
    ("TE.CL, CL spelled oddly", "POST /public/x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\ncontent-LENGTH: 3\r\n\r\n31\r\n@SMUGGLED@\r\n0\r\n\r\n", Want::Json(400)),
    // TE.TE: obfuscated Transfer-Encoding, with a Content-Length the other reading would use.
    ("TE with space before colon", "POST /public/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 54\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n@SMUGGLED@", Want::Bare(400)),
    ("TE xchunked", "POST /public/x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n@SMUGGLED@", Want::Bare(400)),
    ("TE chunked, identity", "POST /public/x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n@SMUGGLED@", Want::Bare(400)),
    ("TE identity, chunked", "POST /public/x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n@SMUGGLED@", Want::Json(400)),
    ("TE with a tab", "POST /public/x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding:\tchunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", Want::Pass("/public/x", None)),
    ("TE upper case", "POST /public/x HTTP/1.1\r\nHost: localhost\r\nTRANSFER-ENCODING: CHUNKED\r\n\r\n3\r\nabc\r\n0\r\n\r\n", Want::Pass("/public/x", None)),
    ("TE twice", "POST /public/x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n@SMUGGLED@", Want::Json(400)),
    ("TE chunked then identity", "POST /public/x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nTransfer-encoding: identity\r\n\r\n0\r\n\r\n@SMUGGLED@", Want::Bare(400)),
    ("TE with a vertical tab", "POST /public/x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding:\x0bchunked\r\nContent-Length: 54\r\n\r\n0\r\n\r\n@SMUGGLED@", Want::Bare(400)),
    ("TE on HTTP/1.0", "POST /public/x HTTP/1.0\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n@SMUGGLED@", Want::Bare(400)),
    // Content-Length: duplicated, comma-joined, signed, hex.
    ("CL twice, equal", "POST /public/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", Want::Json(400)),
    ("CL twice, different", "POST /public/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nContent-Length: 49\r\n\r\n@SMUGGLED@", Want::Bare(400)),
    ("CL comma-joined, equal", "POST /public/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3, 3\r\n\r\nabc", Want::Json(400)),
    ("CL comma-joined, different", "POST /public/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0, 49\r\n\r\n@SMUGGLED@", Want::Bare(400)),
    ("CL with a plus sign", "POST /public/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: +3\r\n\r\nabc", Want::Bare(400)),
    ("CL in hex", "POST /public/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0x3\r\n\r\nabc", Want::Bare(400)),
    // obs-fold: a continuation line, hiding a TE or an identity header.
    ("obs-fold", "GET /public/x HTTP/1.1\r\nHost: localhost\r\nX-Note: a\r\n b\r\n\r\n", Want::Bare(400)),
    ("obs-fold hiding TE", "POST /public/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 54\r\nX-Note: a\r\n Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n@SMUGGLED@", Want::Bare(400)),
    ("obs-fold hiding an identity header", "GET /public/x HTTP/1.1\r\nHost: localhost\r\nX-Note: a\r\n\tX-Forwarded-User: root\r\n\r\n", Want::Bare(400)),
    // Bare LF line endings: read as line ends, sent on with CRLF.
    ("bare LF everywhere", "GET /public/x HTTP/1.1\nHost: localhost\n\n", Want::Pass("/public/x", None)),
    ("bare LF splitting TE and CL", "POST /public/x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\nContent-Length: 54\r\n\r\n0\r\n\r\n@SMUGGLED@", Want::Json(400)),
    ("bare CR in a value", "GET /public/x HTTP/1.1\r\nHost: localhost\r\nX-Note: a\rX-Forwarded-User: root\r\n\r\n", Want::Bare(400)),
    // Control bytes in names and values.
    ("NUL in a value", "GET /public/x HTTP/1.1\r\nHost: localhost\r\nX-Note: a\0b\r\n\r\n", Want::Bare(400)),
    ("NUL in a name", "GET /public/x HTTP/1.1\r\nHost: localhost\r\nX-No\0te: a\r\n\r\n", Want::Bare(400)),
    ("SOH in a value", "GET /public/x HTTP/1.1\r\nHost: localhost\r\nX-Note: a\x01b\r\n\r\n", Want::Bare(400)),
    ("DEL in a value", "GET /public/x HTTP/1.1\r\nHost: localhost\r\nX-Note: a\x7fb\r\n\r\n", Want::Bare(400)),
    ("ESC in a name", "GET /public/x HTTP/1.1\r\nHost: localhost\r\nX-\x1bNote: a\r\n\r\n", Want::Bare(400)),
    ("space in a name", "GET /public/x HTTP/1.1\r\nHost: localhost\r\nX Forwarded-User: root\r\n\r\n", Want::Bare(400)),
    ("underscore spoof of an identity header", "GET /public/x HTTP/1.1\r\nHost: localhost\r\nX_Forwarded_User: root\r\nx-forwarded-user: root\r\n\r\n", Want::Pass("/public/x", None)),
    // Host: twice, absent, odd.
    ("Host twice", "GET /public/x HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\n\r\n", Want::Bare(400)),
    ("Host twice, equal", "GET /public/x HTTP/1.1\r\nHost: localhost\r\nHost: localhost\r\n\r\n", Want::Bare(400)),
    ("Host absent on HTTP/1.1", "GET /public/x HTTP/1.1\r\nUser-Agent: t\r\n\r\n", Want::Json(400)),
    ("Host absent on HTTP/1.0", "GET /public/x HTTP/1.0\r\n\r\n", Want::Pass("/public/x", None)),
    ("Host with userinfo", "GET /public/x HTTP/1.1\r\nHost: alice@localhost\r\n\r\n", Want::Bare(400)),
    ("Host empty", "GET /public/x HTTP/1.1\r\nHost: \r\n\r\n", Want::Json(400)),
    // Absolute-form targets.
    ("absolute form, other host", "GET http://evil.example/public/x HTTP/1.1\r\nHost: localhost\r\n\r\n", Want::Bare(400)),
    ("absolute form, same host", "GET http://localhost/public/x HTTP/1.1\r\nHost: localhost\r\n\r\n", Want::Pass("/public/x", None)),
    ("absolute form to the protected route", "GET http://localhost/admin/x HTTP/1.1\r\nHost: localhost\r\n\r\n", Want::Json(401)),
    ("absolute form with userinfo", "GET http://alice@localhost/public/x HTTP/1.1\r\nHost: localhost\r\n\r\n", Want::Bare(400)),
    ("absolute form without Host", "GET http://localhost/public/x HTTP/1.1\r\n\r\n", Want::Json(400)),
    ("CONNECT", "CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n", Want::Bare(405)),
    ("asterisk form", "OPTIONS * HTTP/1.1\r\nHost: localhost\r\n\r\n", Want::Json(400)),
    // Path confusion: public prefix, protected target.
    ("dot-dot", "GET /public/../admin/x HTTP/1.1\r\nHost: localhost\r\n\r\n", Want::Json(400)),
    ("dot segment", "GET /public/./x HTTP/1.1\r\nHost: localhost\r\n\r\n", Want::Json(400)),
    ("encoded dot-dot", "GET /public/%2e%2e/admin/x HTTP/1.1\r\nHost: localhost\r\n\r\n", Want::Json(400)),
    ("encoded dot-dot, upper case", "GET /public/%2E%2E/admin/x HTTP/1.1\r\nHost: localhost\r\n\r\n", Want::Json(400)),
    ("half-encoded dot-dot", "GET /public/.%2e/admin/x HTTP/1.1\r\nHost: localhost\r\n\r\n", Want::Json(400)),
    ("double-encoded dot-dot", "GET /public/%252e%252e/admin/x HTTP/1.1\r\nHost: localhost\r\n\r\n", Want::Json(400)),
    ("encoded slash", "GET /public/..%2fadmin/x HTTP/1.1\r\nHost: localhost\r\n\r\n", Want::Json(400)),
    ("encoded backslash", "GET /public/..%5cadmin/x HTTP/1.1\r\nHost: localhost\r\n\r\n", Want::Json(400)),
    ("backslash", "GET /public\\..\\admin/x HTTP/1.1\r\nHost: localhost\r\n\r\n", Want::Json(400)),
    ("double slash", "GET //admin/x HTTP/1.1\r\nHost: localhost\r\n\r\n", Want::Json(400)),
    ("double slash inside", "GET /public//x HTTP/1.1\r\nHost: localhost\r\n\r\n", Want::Json(400)),
    ("path parameter dot-dot", "GET /public/..;/admin/x HTTP/1.1\r\nHost: localhost\r\n\r\n", Want::Json(400)),
    ("path parameter dot-dot with a value", "GET /public/..;jsessionid=1/admin/x HTTP/1.1\r\nHost: localhost\r\n\r\n", Want::Json(400)),
    ("path parameter dot", "GET /public/.;/x HTTP/1.1\r\nHost: localhost\r\n\r\n", Want::Json(400)),
    // (404 before issue 20; `;` is now refused anywhere in the path.)
    ("path parameter on the protected prefix", "GET /admin;x=1/x HTTP/1.1\r\nHost: localhost\r\n\r\n", Want::Json(400)),
    ("encoded semicolon dot-dot", "GET /public/..%3b/admin/x HTTP/1.1\r\nHost: localhost\r\n\r\n", Want::Json(400)),
    ("overlong UTF-8 dot-dot", "GET /public/%c0%ae%c0%ae/admin/x HTTP/1.1\r\nHost: localhost\r\n\r\n", Want::Json(400)),
    ("overlong UTF-8 slash", "GET /public/..%c0%afadmin/x HTTP/1.1\r\nHost: localhost\r\n\r\n", Want::Json(400)),
    ("IIS %u dot-dot", "GET /public/%u002e%u002e/admin/x HTTP/1.1\r\nHost: localhost\r\n\r\n", Want::Json(400)),
    ("bad percent escape", "GET /public/%zz HTTP/1.1\r\nHost: localhost\r\n\r\n", Want::Json(400)),
    ("upper-case protected prefix", "GET /ADMIN/x HTTP/1.1\r\nHost: localhost\r\n\r\n", Want::Json(404)),
    // (Forwarded as sent before issue 20; the canonical path spells escapes in upper case.)
    ("UTF-8 in the path is data", "GET /public/caf%c3%a9 HTTP/1.1\r\nHost: localhost\r\n\r\n", Want::Pass("/public/caf%C3%A9", None)),
    // The canonical path (issue 20): decided on, and forwarded, as the upstream will read it.
    ("encoded letters in the protected prefix", "GET /%61dmin/x HTTP/1.1\r\nHost: localhost\r\n\r\n", Want::Json(401)),
    ("encoded letters, authenticated", "GET /%61dm%69n/%78 HTTP/1.1\r\nHost: localhost\r\nAuthorization: @ALICE@\r\n\r\n", Want::Pass("/admin/x", Some("alice"))),
    ("encoded question mark", "GET /public/a%3Fb HTTP/1.1\r\nHost: localhost\r\n\r\n", Want::Json(400)),
    ("encoded hash", "GET /public/a%23/../../admin HTTP/1.1\r\nHost: localhost\r\n\r\n", Want::Json(400)),
    ("encoded CR LF", "GET /public/a%0d%0aX:%20y HTTP/1.1\r\nHost: localhost\r\n\r\n", Want::Json(400)),
    ("escapes in upper case", "GET /public/a%7b%7d HTTP/1.1\r\nHost: localhost\r\n\r\n", Want::Pass("/public/a%7B%7D", None)),
    // Host must be host[:port].
    ("Host that adds a Forwarded element", "GET /public/x HTTP/1.1\r\nHost: a\",for=6.6.6.6;proto=https;host=\"b\r\n\r\n", Want::Json(400)),
    ("Host with a comma", "GET /public/x HTTP/1.1\r\nHost: localhost,evil\r\n\r\n", Want::Json(400)),
    ("Host with a word for a port", "GET /public/x HTTP/1.1\r\nHost: localhost:x\r\n\r\n", Want::Json(400)),
    ("encoded NUL", "GET /public/x%00.json HTTP/1.1\r\nHost: localhost\r\n\r\n", Want::Json(400)),
    // The fragment never leaves the gateway: routed (and forwarded) as the path before it.
    ("fragment", "GET /public/x#/../../admin HTTP/1.1\r\nHost: localhost\r\n\r\n", Want::Pass("/public/x", None)),
    ("dot-dot in the query is data", "GET /public/x?next=../admin HTTP/1.1\r\nHost: localhost\r\n\r\n", Want::Pass("/public/x?next=../admin", None)),
    ("relative target", "GET public/x HTTP/1.1\r\nHost: localhost\r\n\r\n", Want::Json(400)),
    // Pipelining: the second request is a request of its own and goes through auth.
    // Chunked bodies: the framing inside the body is parsed, and sent on re-framed.
    ("chunk extension", "POST /public/x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n0\r\n\r\n", Want::Pass("/public/x", None)),
    ("chunk size overflow", "POST /public/x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff1\r\nabc\r\n0\r\n\r\n@SMUGGLED@", Want::Json(400)),
    ("chunk size with 0x", "POST /public/x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n@SMUGGLED@", Want::Json(400)),
    ("chunk longer than its size", "POST /public/x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nabc\r\n0\r\n\r\n@SMUGGLED@", Want::Json(400)),
    ("bare LF in chunk framing", "POST /public/x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\n0\n\n@SMUGGLED@", Want::Json(400)),
    // Trailers are not sent on (the upstream sees `0\r\n\r\n`), nor is what follows.
    ("trailer carrying a Content-Length", "POST /public/x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nContent-Length: 49\r\n\r\n@SMUGGLED@", Want::Pass("/public/x", None)),
    // Identity spoofs next to real credentials: the gateway's identity, only.
    ("authenticated, with spoofed identity headers", "GET /admin/x HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-User: root\r\nX_Forwarded_User: root\r\nAuthorization: @ALICE@\r\nx-forwarded-user: admin\r\n\r\n", Want::Pass("/admin/x", Some("alice"))),
    ("two Authorization headers", "GET /admin/x HTTP/1.1\r\nHost: localhost\r\nAuthorization: @ALICE@\r\nAuthorization: Basic Ym9iOng=\r\n\r\n", Want::Json(400)),
    // h2c: the plain listener speaks HTTP/1.1 only; an upgrade to h2c must not reach an
    // upstream, which could answer 101 and take every later request on the tunnel unchecked
    // (pingora 0.9 passes on WebSocket upgrades only, and drops h2c's Upgrade and
    // HTTP2-Settings). A WebSocket upgrade goes through admission first.
    ("h2c prior knowledge on the plain listener", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", Want::Bare(400)),
    ("h2c upgrade, Connection not naming it", "GET /public/x HTTP/1.1\r\nHost: localhost\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n", Want::Pass("/public/x", None)),
    ("websocket upgrade", "GET /public/x HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", Want::Pass("/public/x", None)),
    ("h2c upgrade", "GET /public/x HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n", Want::Pass("/public/x", None)),
    ("GET with a Content-Length body", "GET /public/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\r\nhello", Want::Pass("/public/x", None)),
    ("Content-Length with leading zeros", "POST /public/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 003\r\n\r\nabc", Want::Pass("/public/x", None)),
    ("Content-Length, negative", "POST /public/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: -1\r\n\r\n@SMUGGLED@", Want::Bare(400)),
    ("Content-Length, huge", "POST /public/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 99999999999999999999\r\n\r\n@SMUGGLED@", Want::Bare(400)),
    ("pipelined smuggle attempt", "GET /public/x HTTP/1.1\r\nHost: localhost\r\n\r\n@SMUGGLED@", Want::Pass("/public/x", None)),
];

fn render(raw: &str) -> Vec<u8> {
    raw.replace("@ALICE@", &basic_alice())
        .replace("@SMUGGLED@", SMUGGLED)
        .into_bytes()
}

/// A parsed HTTP/1.1 response: status, lower-case headers, body.
type Response = (u16, Vec<(String, String)>, String);

/// Sends `req` on a fresh connection; returns every response read until the gateway closes
/// the connection or stays quiet for a moment.
async fn exchange(port: u16, req: &[u8]) -> Vec<Response> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(req).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        // A response comes quickly; a quiet connection has said everything.
        match tokio::time::timeout(Duration::from_millis(400), s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    split_responses(&buf)
}

/// Splits a byte stream of HTTP/1.1 responses (Content-Length framed, as ours are).
fn split_responses(mut buf: &[u8]) -> Vec<Response> {
    let mut out = Vec::new();
    while let Some(end) = find(buf, b"\r\n\r\n") {
        let (status, headers, _) = parse_raw(&String::from_utf8_lossy(&buf[..end + 4]));
        let len = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0usize)
            .min(buf.len() - end - 4);
        let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned();
        out.push((status, headers, body));
        buf = &buf[end + 4 + len..];
    }
    out
}

/// Checks what the upstream saw: every request framed unambiguously, nothing left over,
/// the smuggled request nowhere, identity headers only as the gateway wrote them.
fn check_upstream(name: &str, seen: &[Framed], garbage: &[String], pending: usize) {
    assert!(
        garbage.is_empty(),
        "{name}: the upstream could not frame: {garbage:?}"
    );
    assert_eq!(
        pending, 0,
        "{name}: bytes left over at the upstream (a smuggled fragment)"
    );
    for r in seen {
        let line = r.request_line();
        assert!(
            !line.contains("/admin/smuggled"),
            "{name}: the smuggled request reached the upstream: {seen:#?}"
        );
        assert!(
            r.headers("content-length").is_empty() || r.headers("transfer-encoding").is_empty(),
            "{name}: the upstream got both Content-Length and Transfer-Encoding: {}",
            r.head
        );
        assert!(
            r.headers("host").len() == 1,
            "{name}: one Host upstream: {}",
            r.head
        );
        assert!(
            r.headers("upgrade")
                .iter()
                .all(|u| !u.to_ascii_lowercase().contains("h2c"))
                && r.headers("http2-settings").is_empty(),
            "{name}: an h2c upgrade reached the upstream: {}",
            r.head
        );
        let users = r.headers("x-forwarded-user");
        assert!(
            r.head
                .split("\r\n")
                .all(|l| !l.to_ascii_lowercase().starts_with("x_forwarded")),
            "{name}: an identity header spelled with _ reached the upstream: {}",
            r.head
        );
        if line.contains(" /admin") {
            assert_eq!(
                users,
                vec!["alice"],
                "{name}: protected request without the gateway's identity: {}",
                r.head
            );
        } else {
            assert!(
                users.is_empty(),
                "{name}: a public request carries a user: {}",
                r.head
            );
        }
        // The body framed upstream must not itself hold a request for the upstream to find.
        assert!(
            find(&r.body, b" HTTP/1.1\r\n").is_none(),
            "{name}: a request rode in the body: {:?}",
            String::from_utf8_lossy(&r.body)
        );
    }
}

/// Sends one case and checks the answer and what the upstream saw; the failure, if any.
async fn run_case(
    gw: &Gateway,
    up: &RawUpstream,
    name: &str,
    req: &[u8],
    want: Want,
) -> Option<String> {
    let responses = exchange(gw.plain_port, req).await;
    let (seen, garbage, pending) = up.take().await;
    check_upstream(name, &seen, &garbage, pending);
    let Some((status, headers, body)) = responses.first() else {
        return Some(format!("{name}: no response at all"));
    };
    let ok = match want {
        Want::Json(code) => {
            let json = serde_json::from_str::<serde_json::Value>(body).ok();
            let ok = *status == code
                && json.as_ref().is_some_and(|j| j["status"] == "error")
                && seen.is_empty();
            // A refused ambiguous request ends the connection: nothing after it is read.
            let closed = code != 400
                || headers
                    .iter()
                    .any(|(k, v)| k == "connection" && v == "close");
            ok && closed && responses.len() == 1
        }
        Want::Bare(code) => {
            *status == code && body.is_empty() && seen.is_empty() && responses.len() == 1
        }
        Want::Pass(path, user) => {
            seen.len() == 1
                && *status == 200
                && seen[0].request_line().split(' ').nth(1) == Some(path)
                && seen[0]
                    .headers("x-forwarded-user")
                    .first()
                    .map(String::as_str)
                    == user
        }
    };
    // pingora (pipelining off, its default) answers the first request, drops the bytes
    // after it and closes: a pipelined request is neither answered nor forwarded.
    if !ok || responses.len() != 1 {
        return Some(format!(
            "{name}: want {want:?}, got {:?} upstream saw {:?}",
            responses
                .iter()
                .map(|(s, _, b)| format!("{s} {b}"))
                .collect::<Vec<_>>(),
            seen.iter().map(|r| r.head.clone()).collect::<Vec<_>>()
        ));
    }
    None
}

fn gateway_body(up: &RawUpstream) -> String {
    format!(
        "[pools.raw]\nbackends = [\"http://{}\"]\nconnect_timeout = \"1s\"\nread_timeout = \"2s\"\n\n\
         [[routes]]\nname = \"public\"\npath_prefix = \"/public\"\npool = \"raw\"\n\
         authenticators = [\"public\"]\n\n\
         [[routes]]\nname = \"admin\"\npath_prefix = \"/admin\"\npool = \"raw\"\n\
         authenticators = [\"local\"]\n",
        up.addr
    )
}

#[tokio::test]
async fn http1_smuggling_and_path_confusion_corpus() {
    let up = RawUpstream::start().await;
    let gw = Gateway::start(Setup {
        body: gateway_body(&up),
        ..Default::default()
    })
    .await;
    let mut failures = Vec::new();
    for (name, raw, want) in H1_CASES {
        failures.extend(run_case(&gw, &up, name, &render(raw), *want).await);
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(!gw.log_text().contains("panicked"), "{}", gw.log_text());
}

/// Over-long request lines and headers: refused (by pingora's header-size limit, bare) or
/// forwarded whole as one request, never cut into two.
#[tokio::test]
async fn over_long_targets_and_headers() {
    let up = RawUpstream::start().await;
    let gw = Gateway::start(Setup {
        body: gateway_body(&up),
        ..Default::default()
    })
    .await;
    let target = |n: usize| {
        format!(
            "GET /public/{} HTTP/1.1\r\nHost: localhost\r\n\r\n",
            "a".repeat(n)
        )
    };
    let header = |n: usize| {
        format!(
            "GET /public/x HTTP/1.1\r\nHost: localhost\r\nX-Note: {}\r\n\r\n",
            "a".repeat(n)
        )
    };
    // `Want::Pass` names a path for the whole test run.
    let long_path: &'static str = format!("/public/{}", "a".repeat(60 << 10)).leak();
    let mut failures = Vec::new();
    #[rustfmt::skip]
    let cases = [
        // The http crate's URI limit (64 KiB) and pingora's request head limit (1 MiB) and
        // header count limit refuse these before the pipeline runs.
        ("60 KiB target", target(60 << 10), Want::Pass(long_path, None)),
        ("64 KiB target", target(64 << 10), Want::Bare(400)),
        ("2 MiB target", target(2 << 20), Want::Bare(400)),
        ("64 KiB header", header(64 << 10), Want::Pass("/public/x", None)),
        ("2 MiB header", header(2 << 20), Want::Bare(400)),
        ("1000 headers", format!("GET /public/x HTTP/1.1\r\nHost: localhost\r\n{}\r\n", "X-N: a\r\n".repeat(1000)), Want::Bare(400)),
    ];
    for (name, req, want) in cases {
        failures.extend(run_case(&gw, &up, name, req.as_bytes(), want).await);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(!gw.log_text().contains("panicked"), "{}", gw.log_text());
}

/// What an h2 case must produce.
#[derive(Debug, Clone, Copy)]
enum H2Want {
    /// The stream (or connection) is reset by pingora's h2 layer as malformed (RFC 9113
    /// §8.1.1): PROTOCOL_ERROR, nothing upstream. No gateway callback runs, so no JSON.
    Reset,
    /// The gateway refuses with this status and a JSON error.
    Json(u16),
    /// pingora's h2 layer answers this status itself, without a body (its authority check
    /// runs before any gateway callback); nothing upstream.
    Bare(u16),
    /// One HTTP/1.1 request upstream, on this path, as this user.
    Pass(&'static str, Option<&'static str>),
}

#[tokio::test]
async fn http2_pseudo_header_and_connection_header_abuse() {
    let up = RawUpstream::start().await;
    let gw = Gateway::start(Setup {
        body: gateway_body(&up),
        ..Default::default()
    })
    .await;
    let authority = format!("localhost:{}", gw.tls_port);
    let alice = basic_alice();
    let base = |path: &str| -> Vec<(&'static str, String)> {
        vec![
            (":method", "GET".into()),
            (":scheme", "https".into()),
            (":authority", authority.clone()),
            (":path", path.into()),
        ]
    };
    let with = |path: &str, extra: &[(&'static str, &str)]| {
        let mut f = base(path);
        f.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        f
    };
    let post = |extra: &[(&'static str, &str)]| {
        let mut f = with("/public/x", extra);
        f[0].1 = "POST".into();
        f
    };
    let smuggle_body = format!("0\r\n\r\n{SMUGGLED}");
    type Case<'a> = (
        &'a str,
        Vec<(&'static str, String)>,
        Option<&'a [u8]>,
        H2Want,
    );
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        ("baseline", base("/public/x"), None, H2Want::Pass("/public/x", None)),
        ("authenticated", with("/admin/x", &[("authorization", &alice)]), None, H2Want::Pass("/admin/x", Some("alice"))),
        ("no credentials", base("/admin/x"), None, H2Want::Json(401)),
        ("duplicate :path", with("/public/x", &[]).into_iter().chain([(":path", "/admin/x".to_string())]).collect(), None, H2Want::Reset),
        ("missing :path", base("/public/x").into_iter().filter(|(k, _)| *k != ":path").collect(), None, H2Want::Reset),
        ("empty :path", base(""), None, H2Want::Reset),
        ("duplicate :method", with("/public/x", &[]).into_iter().chain([(":method", "DELETE".to_string())]).collect(), None, H2Want::Reset),
        ("unknown pseudo-header", with("/public/x", &[(":user", "root")]), None, H2Want::Reset),
        ("pseudo-header after a regular one", { let mut f = base("/public/x"); f.insert(3, ("x-note", "a".into())); f }, None, H2Want::Reset),
        (":authority and host disagree", with("/admin/x", &[("host", "evil.example")]), None, H2Want::Bare(400)),
        (":authority and host agree", with("/public/x", &[("host", &authority)]), None, H2Want::Pass("/public/x", None)),
        (":authority with userinfo", { let mut f = base("/public/x"); f[2].1 = format!("alice@{authority}"); f }, None, H2Want::Bare(400)),
        ("upper-case header name", with("/public/x", &[("X-Forwarded-User", "root")]), None, H2Want::Reset),
        ("transfer-encoding with a smuggled body", post(&[("transfer-encoding", "chunked")]), Some(smuggle_body.as_bytes()), H2Want::Reset),
        ("connection header", with("/public/x", &[("connection", "keep-alive")]), None, H2Want::Reset),
        ("keep-alive header", with("/public/x", &[("keep-alive", "timeout=5")]), None, H2Want::Reset),
        ("upgrade header", with("/public/x", &[("upgrade", "h2c")]), None, H2Want::Reset),
        ("te: trailers is allowed", with("/public/x", &[("te", "trailers")]), None, H2Want::Pass("/public/x", None)),
        ("te: gzip", with("/public/x", &[("te", "gzip")]), None, H2Want::Reset),
        ("content-length shorter than the data", post(&[("content-length", "5")]), Some(smuggle_body.as_bytes()), H2Want::Reset),
        ("content-length longer than the data", post(&[("content-length", "100")]), Some(b"abc"), H2Want::Reset),
        ("no :authority, host only", base("/public/x").into_iter().filter(|(k, _)| *k != ":authority").chain([("host", authority.clone())]).collect(), None, H2Want::Pass("/public/x", None)),
        ("CONNECT", vec![(":method", "CONNECT".into()), (":authority", "evil.example:443".into())], None, H2Want::Bare(405)),
        ("OPTIONS *", { let mut f = base("*"); f[0].1 = "OPTIONS".into(); f }, None, H2Want::Json(400)),
        ("CRLF in a value", with("/public/x", &[("x-note", "a\r\nx-forwarded-user: root")]), None, H2Want::Reset),
        ("NUL in a value", with("/public/x", &[("x-note", "a\0b")]), None, H2Want::Reset),
        ("colon in a name", with("/public/x", &[("x-forwarded-user:root", "a")]), None, H2Want::Reset),
        ("space in :method", { let mut f = base("/public/x"); f[0].1 = "GET /admin/x HTTP/1.1\r\n".into(); f }, None, H2Want::Reset),
        ("request line in :path", base("/public/x HTTP/1.1\r\nHost: x\r\n\r\nGET /admin/smuggled"), None, H2Want::Reset),
        ("dot-dot in :path", base("/public/../admin/x"), None, H2Want::Json(400)),
        ("path parameter in :path", base("/public/..;/admin/x"), None, H2Want::Json(400)),
        ("underscore identity header", with("/public/x", &[("x_forwarded_user", "root")]), None, H2Want::Pass("/public/x", None)),
    ];
    let mut failures = Vec::new();
    for (name, fields, body, want) in &cases {
        let answer = h2_exchange(&gw, fields, *body).await;
        let (seen, garbage, pending) = up.take().await;
        let truncated = up.take_truncated();
        if !truncated.is_empty() {
            eprintln!("{name}: aborted upstream: {truncated:?}");
        }
        check_upstream(name, &seen, &garbage, pending);
        let ok = match (want, &answer) {
            (H2Want::Reset, H2Answer::Reset(1)) => seen.is_empty(),
            (H2Want::Json(code), H2Answer::Response { status, body }) => {
                let json: Option<serde_json::Value> = serde_json::from_str(body).ok();
                *status == Some(*code)
                    && json.is_some_and(|j| j["status"] == "error")
                    && seen.is_empty()
            }
            (H2Want::Bare(code), H2Answer::Response { status, body }) => {
                *status == Some(*code) && body.is_empty() && seen.is_empty()
            }
            (H2Want::Pass(path, user), H2Answer::Response { status, .. }) => {
                *status == Some(200)
                    && seen.len() == 1
                    && seen[0].request_line() == format!("GET {path} HTTP/1.1")
                    && seen[0]
                        .headers("x-forwarded-user")
                        .first()
                        .map(String::as_str)
                        == *user
            }
            _ => false,
        };
        if !ok {
            failures.push(format!(
                "{name}: want {want:?}, got {answer:?}; upstream saw {:?}",
                seen.iter().map(|r| r.head.clone()).collect::<Vec<_>>()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(!gw.log_text().contains("panicked"), "{}", gw.log_text());
}

/// An h2 request whose client is gone by the time it is proxied (its stream was reset, the
/// connection closed) is still described to the upstream as https: the gateway used to read
/// the listener's address from the socket, lazily, and found nothing once it was closed.
#[tokio::test]
async fn abandoned_http2_requests_still_say_https() {
    let up = RawUpstream::start().await;
    let gw = Gateway::start(Setup {
        body: gateway_body(&up),
        ..Default::default()
    })
    .await;
    let fields = vec![
        (":method", "POST".to_string()),
        (":scheme", "https".into()),
        (":authority", format!("localhost:{}", gw.tls_port)),
        (":path", "/public/x".into()),
        ("content-length", "100".into()),
    ];
    let mut heads = Vec::new();
    for _ in 0..20 {
        h2_exchange(&gw, &fields, Some(b"abc")).await;
        let (seen, _, _) = up.take().await;
        heads.extend(seen.into_iter().map(|r| r.head));
        heads.extend(up.take_truncated());
    }
    assert!(!heads.is_empty(), "the requests reached the upstream");
    // And plain HTTP still says so.
    exchange(
        gw.plain_port,
        b"GET /public/x HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .await;
    let (seen, _, _) = up.take().await;
    assert_eq!(seen.len(), 1);
    assert!(
        seen[0].head.contains("x-forwarded-proto: http\r\n"),
        "{}",
        seen[0].head
    );
    for h in &heads {
        assert!(
            h.contains("x-forwarded-proto: https\r\n") && h.contains("proto=https;"),
            "an h2-over-TLS request described as plain HTTP:\n{h}"
        );
    }
}

/// HTTP/2 rapid reset (CVE-2023-44487): one connection opens and cancels 2 000 streams. The
/// gateway stays up, serves others meanwhile, and holds no more descriptors or threads once
/// the connection is gone; the upstream sees only whole requests.
#[tokio::test]
async fn http2_rapid_reset_leaks_nothing() {
    let up = RawUpstream::start().await;
    let gw = Gateway::start(Setup {
        body: gateway_body(&up),
        ..Default::default()
    })
    .await;
    let pid = gw.pid();
    let count = |what: &str| {
        std::fs::read_dir(format!("/proc/{pid}/{what}"))
            .unwrap()
            .count()
    };
    let fields = vec![
        (":method", "GET".to_string()),
        (":scheme", "https".into()),
        (":authority", format!("localhost:{}", gw.tls_port)),
        (":path", "/public/x".into()),
    ];
    assert!(matches!(
        h2_exchange(&gw, &fields, None).await,
        H2Answer::Response {
            status: Some(200),
            ..
        }
    ));
    up.take().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (fd0, th0) = (count("fd"), count("task"));

    let mut s = h2_connect(&gw).await;
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(h2_frame(4, 0, 0, &[]));
    let block = hpack_block(&fields);
    for i in 0..2000u32 {
        let stream = 2 * i + 1;
        out.extend(h2_frame(1, 4 | 1, stream, &block));
        out.extend(h2_frame(3, 0, stream, &8u32.to_be_bytes())); // RST_STREAM CANCEL
    }
    // The gateway may stop reading (GOAWAY) before all of it is written.
    let _ = s.write_all(&out).await;
    let mut goaway = None;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    'read: loop {
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => break,
        }
        while buf.len() >= 9 {
            let len = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]) as usize;
            if buf.len() < 9 + len {
                break;
            }
            if buf[3] == 7 && len >= 8 {
                goaway = Some(u32::from_be_bytes(buf[13..17].try_into().unwrap()));
                break 'read;
            }
            buf.drain(..9 + len);
        }
    }
    // Meanwhile (and after), others are served.
    assert!(matches!(
        h2_exchange(&gw, &fields, None).await,
        H2Answer::Response {
            status: Some(200),
            ..
        }
    ));
    drop(s);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (seen, garbage, pending) = up.take().await;
    check_upstream("rapid reset", &seen, &garbage, pending);
    let (fd1, th1) = (count("fd"), count("task"));
    eprintln!(
        "rapid reset: GOAWAY {goaway:?}; upstream saw {} request(s); fds {fd0} -> {fd1}; \
         threads {th0} -> {th1}",
        seen.len()
    );
    // The h2 layer cuts the connection off (GOAWAY ENHANCE_YOUR_CALM) after a few resets,
    // before the cancelled streams turn into upstream requests.
    assert_eq!(goaway, Some(11), "GOAWAY ENHANCE_YOUR_CALM");
    assert!(
        seen.len() < 50,
        "{} cancelled requests went upstream",
        seen.len()
    );
    assert!(fd1 <= fd0 + 8, "fds {fd0} -> {fd1}");
    assert!(th1 <= th0 + 4, "threads {th0} -> {th1}");
    assert!(!gw.log_text().contains("panicked"), "{}", gw.log_text());
}
