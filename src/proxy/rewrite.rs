//! The `rewrite` step: the request as the upstream sees it.
//!
//! Identity headers were stripped on the way in (`sanitize`); here they are written only
//! from the [`Permit`]. The client's `Authorization` is removed unless the route forwards it;
//! `X-Forwarded-For`/`-Proto`/`-Host` and `Forwarded` are replaced, never appended to, since
//! the client's values cannot be trusted. Values written into `Forwarded` are quoted-strings
//! (RFC 7239 §4), so nothing a client sent can start a second element or parameter.
//!
//! On the way back, [`drop_own_set_cookies`] removes any `Set-Cookie` of an upstream for a
//! cookie named like the gateway's own: an upstream must not be able to plant or clear a
//! session.

use std::net::IpAddr;

use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;

use crate::authenticate::Method;
use crate::authenticate::api_key::API_KEY_HEADER;
use crate::authorize::Permit;
use crate::proxy::route;
use crate::proxy::upstream::config::BackendAddr;

/// Facts about the downstream connection the rewrite needs.
pub struct Downstream<'a> {
    pub client: Option<IpAddr>,
    pub tls: bool,
    pub host: Option<&'a str>,
    pub request_id: &'a str,
}

/// Cookies named like these belong to the gateway and never go upstream.
pub const OWN_COOKIE_PREFIXES: &[&str] = &["hpcgate", "__Host-hpcgate", "__Secure-hpcgate"];

/// Whether a cookie name is one of the gateway's own. Compared without case: browsers read
/// the `__Host-`/`__Secure-` prefixes without case, and nothing of ours differs only in case.
fn is_own_cookie(name: &str) -> bool {
    OWN_COOKIE_PREFIXES.iter().any(|p| {
        name.get(..p.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(p))
    })
}

/// The name a `Set-Cookie` value sets. A value without `=` sets a cookie with an empty name
/// whose value browsers send back bare (`Cookie: __Host-hpcgate-session`), which reads like
/// a name: that text counts as the name here.
fn set_cookie_name(value: &[u8]) -> String {
    let pair = value.split(|&b| b == b';').next().unwrap_or_default();
    let name = match pair.iter().position(|&b| b == b'=') {
        Some(i) => &pair[..i],
        None => pair,
    };
    String::from_utf8_lossy(name.trim_ascii()).into_owned()
}

/// Removes an upstream's `Set-Cookie` headers for the gateway's own cookies and returns how
/// many there were (the rest are kept, in order).
pub fn drop_own_set_cookies(resp: &mut ResponseHeader) -> usize {
    let all: Vec<http::HeaderValue> = resp
        .headers
        .get_all(http::header::SET_COOKIE)
        .iter()
        .cloned()
        .collect();
    let kept: Vec<_> = all
        .iter()
        .filter(|v| !is_own_cookie(&set_cookie_name(v.as_bytes())))
        .cloned()
        .collect();
    let dropped = all.len() - kept.len();
    if dropped > 0 {
        resp.remove_header(&http::header::SET_COOKIE);
        for v in kept {
            // Re-adding values that were already headers cannot fail.
            let _ = resp.append_header(http::header::SET_COOKIE, v);
        }
    }
    dropped
}

/// The response as the client sees it: an upstream's `Set-Cookie` for one of the gateway's
/// own cookies is removed, counted and logged (once per response) with the route and request.
pub fn response(resp: &mut ResponseHeader, route: &str, request_id: &str) {
    let dropped = drop_own_set_cookies(resp);
    if dropped > 0 {
        crate::process::telemetry::metrics()
            .upstream_own_cookies
            .with_label_values(&[route])
            .inc();
        tracing::warn!(
            request_id,
            route,
            dropped,
            "the upstream tried to set the gateway's own cookies; removed"
        );
    }
}

/// `s` as an RFC 7230 quoted-string: `"` and `\` escaped, so it cannot end early.
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Removes the gateway's own cookies, or every cookie unless `forward` is set.
fn filter_cookies(req: &mut RequestHeader, forward: bool) -> Result<()> {
    if !forward {
        req.remove_header("cookie");
        return Ok(());
    }
    let kept: Vec<String> = req
        .headers
        .get_all(http::header::COOKIE)
        .iter()
        .flat_map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .split(';')
                .map(|c| c.trim().to_string())
                .collect::<Vec<_>>()
        })
        .filter(|c| {
            let name = c.split('=').next().unwrap_or("");
            !c.is_empty() && !is_own_cookie(name.trim())
        })
        .collect();
    req.remove_header("cookie");
    if !kept.is_empty() {
        req.insert_header("cookie", kept.join("; "))?;
    }
    Ok(())
}

fn set(req: &mut RequestHeader, name: &'static str, value: &str) -> Result<()> {
    req.insert_header(name, value)
}

pub fn rewrite(
    req: &mut RequestHeader,
    permit: &Permit,
    backend: &BackendAddr,
    down: &Downstream<'_>,
) -> Result<()> {
    let entry = permit.route();
    let route = &entry.config;

    // Path: strip the prefix if asked; always send origin form.
    let pq = req
        .uri
        .path_and_query()
        .map(|pq| pq.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let (path, query) = match pq.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (pq, None),
    };
    let path = if route.strip_prefix {
        route::strip_prefix(&route.path_prefix, &path).to_string()
    } else {
        path
    };
    let target = match query {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    let uri = target
        .parse::<http::Uri>()
        .map_err(|e| Error::explain(ErrorType::InternalError, format!("rewritten path: {e}")))?;
    req.set_uri(uri);

    // Host.
    if !route.preserve_host || down.host.is_none() {
        let host = match backend {
            BackendAddr::Tcp { host, addr, .. } => {
                if host.contains(':') {
                    format!("[{host}]:{}", addr.port())
                } else {
                    format!("{host}:{}", addr.port())
                }
            }
            BackendAddr::Unix(_) => "localhost".to_string(),
        };
        set(req, "host", &host)?;
    }

    // Slurm: the user's name and the token that proves it (before the client's credentials
    // go: passthrough forwards the client's bearer token as the Slurm token).
    if let Some(slurm) = &entry.slurm {
        let client = req.headers.clone();
        slurm
            .write_headers(req, permit.caller(), &client)
            .map_err(|e| Error::explain(ErrorType::InternalError, e))?;
    }

    // Credentials: Basic never goes upstream; a bearer token only where the route says so,
    // and never one of the gateway's own (API keys, gateway tokens, a trusted service's).
    let ours = permit
        .caller()
        .identity()
        .is_some_and(|id| gateways_own_credential(id.method()) || id.via().is_some());
    let bearer = route.pass_bearer_token
        && !ours
        && req
            .headers
            .get(http::header::AUTHORIZATION)
            .is_some_and(|v| {
                v.as_bytes()
                    .get(..7)
                    .is_some_and(|p| p.eq_ignore_ascii_case(b"bearer "))
            });
    if !bearer {
        req.remove_header("authorization");
    }
    let api_keys: Vec<http::HeaderName> = req
        .headers
        .keys()
        .filter(|n| crate::authenticate::headers::header_is(n.as_str(), API_KEY_HEADER))
        .cloned()
        .collect();
    for n in api_keys {
        req.remove_header(&n);
    }
    if let Some(auth) = entry.pool.authorization() {
        req.insert_header("authorization", auth.clone())?;
    }
    filter_cookies(req, route.forward_cookies)?;

    // Identity, from the permit only, under the names this route's upstream trusts.
    if let Some(id) = permit.caller().identity() {
        let h = &route.identity_headers;
        if let Some(name) = &h.user {
            req.insert_header(name.clone(), id.user())?;
        }
        if let Some(name) = &h.preferred_username {
            req.insert_header(name.clone(), id.user())?;
        }
        if let (Some(name), false) = (&h.groups, id.groups().is_empty()) {
            req.insert_header(name.clone(), id.groups().join(","))?;
        }
        if let (Some(name), Some(email)) = (&h.email, id.email()) {
            req.insert_header(name.clone(), email)?;
        }
    }

    // Where the request came from.
    let proto = if down.tls { "https" } else { "http" };
    match down.client {
        Some(ip) => {
            set(req, "x-forwarded-for", &ip.to_string())?;
            let node = match ip {
                IpAddr::V4(v4) => v4.to_string(),
                IpAddr::V6(v6) => quoted(&format!("[{v6}]")),
            };
            let mut fwd = format!("for={node};proto={proto}");
            if let Some(h) = down.host {
                // The sanitizer allows only `host[:port]` here; quoting is the second lock.
                fwd.push_str(&format!(";host={}", quoted(h)));
            }
            set(req, "forwarded", &fwd)?;
        }
        None => {
            req.remove_header("x-forwarded-for");
            req.remove_header("forwarded");
        }
    }
    set(req, "x-forwarded-proto", proto)?;
    match down.host {
        Some(h) => set(req, "x-forwarded-host", h)?,
        None => {
            req.remove_header("x-forwarded-host");
        }
    }
    set(req, "x-request-id", down.request_id)?;
    Ok(())
}

/// Whether `method` proves a caller with a credential of the gateway's own (an API key, a
/// gateway token, a trusted service's), which never goes upstream. Every method is named, so
/// a new one must be placed here rather than fall into a default.
fn gateways_own_credential(method: Method) -> bool {
    match method {
        Method::ApiKey | Method::GatewayJwt | Method::TrustedHeader => true,
        Method::Static
        | Method::Ldap
        | Method::ClientCert
        | Method::OidcBearer
        | Method::OidcLogin => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_values_cannot_end_their_quoted_string() {
        assert_eq!(quoted("gw.example:443"), "\"gw.example:443\"");
        assert_eq!(
            quoted("a\",for=6.6.6.6;host=\"b"),
            "\"a\\\",for=6.6.6.6;host=\\\"b\""
        );
        assert_eq!(quoted("a\\"), "\"a\\\\\"");
    }

    #[test]
    fn upstream_set_cookies_for_our_cookie_names_are_dropped() {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        for c in [
            "__Host-hpcgate-session=evil; Path=/; Secure",
            "app=1; Path=/",
            "__Host-hpcgate-session-1=evil",
            "__host-HPCGATE-login=x",
            " hpcgate-anything =x",
            "__Secure-hpcgate-x=1",
            "__Host-hpcgate-session",
            "other=2",
        ] {
            resp.append_header("set-cookie", c).unwrap();
        }
        assert_eq!(drop_own_set_cookies(&mut resp), 6);
        let left: Vec<_> = resp
            .headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(left, ["app=1; Path=/", "other=2"]);
    }

    #[test]
    fn responses_without_our_cookies_are_left_alone() {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.append_header("set-cookie", "a=1").unwrap();
        resp.append_header("set-cookie", "hpc=2").unwrap();
        assert_eq!(drop_own_set_cookies(&mut resp), 0);
        assert_eq!(resp.headers.get_all("set-cookie").iter().count(), 2);
    }
}
