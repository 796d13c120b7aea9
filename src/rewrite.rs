//! The `rewrite` step: the request as the upstream sees it.
//!
//! Identity headers were stripped on the way in (`sanitize`); here they are written only
//! from the [`Permit`]. The client's `Authorization` is removed unless the route forwards it;
//! `X-Forwarded-For`/`-Proto`/`-Host` and `Forwarded` are replaced, never appended to, since
//! the client's values cannot be trusted.

use std::net::IpAddr;

use pingora::http::RequestHeader;
use pingora::prelude::*;

use crate::authorize::Permit;
use crate::config::BackendAddr;
use crate::route;

/// Facts about the downstream connection the rewrite needs.
pub struct Downstream<'a> {
    pub client: Option<IpAddr>,
    pub tls: bool,
    pub host: Option<&'a str>,
    pub request_id: &'a str,
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

    // Credentials: the client's never go upstream unless the route says so.
    if !route.forward_authorization {
        req.remove_header("authorization");
    }
    if let Some(auth) = entry.pool.authorization() {
        req.insert_header("authorization", auth.clone())?;
    }

    // Identity, from the permit only.
    if let Some(id) = permit.caller().identity() {
        set(req, "x-forwarded-user", id.user())?;
        if !id.groups().is_empty() {
            set(req, "x-forwarded-groups", &id.groups().join(","))?;
        }
        if let Some(email) = id.email() {
            set(req, "x-forwarded-email", email)?;
        }
    }

    // Where the request came from.
    let proto = if down.tls { "https" } else { "http" };
    match down.client {
        Some(ip) => {
            set(req, "x-forwarded-for", &ip.to_string())?;
            let node = match ip {
                IpAddr::V4(v4) => v4.to_string(),
                IpAddr::V6(v6) => format!("\"[{v6}]\""),
            };
            let mut fwd = format!("for={node};proto={proto}");
            if let Some(h) = down.host {
                fwd.push_str(&format!(";host=\"{h}\""));
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
