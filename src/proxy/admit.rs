//! Admission: sanitize → route → authenticate → authorize → enforce, one `?` per step, for
//! one request. The outcome is a [`Permit`] to proxy, or the gateway's own endpoint or page
//! to answer, or a [`Rejection`].

use std::net::IpAddr;

use pingora::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora::proxy::Session;

use super::ctx::Ctx;
use crate::authenticate::oidc::{Page, PageReply};
use crate::authenticate::{Caller, RequestInfo, RouteAuth};
use crate::authorize::cedar::{Facts, Verdict};
use crate::authorize::{Origin, Permit, authorize};
use crate::error::Rejection;
use crate::proxy::route::raw_host;
use crate::proxy::route::request_host;
use crate::site::ops::Endpoint;

/// What admission decided.
pub(super) enum Admitted {
    Proxy(Permit),
    Endpoint(Endpoint, Caller),
    Page(PageReply),
}

/// The client's address (none for Unix sockets).
pub(super) fn client_ip(session: &Session) -> Option<IpAddr> {
    match session.client_addr()? {
        PingoraAddr::Inet(a) => Some(a.ip()),
        _ => None,
    }
}

/// sanitize → route → authenticate → authorize, one `?` per step.
pub(super) async fn admit(session: &mut Session, ctx: &mut Ctx) -> Result<Admitted, Rejection> {
    let snap = ctx.snapshot.clone();
    let http2 = session.is_http2();
    // pingora drops Content-Length when Transfer-Encoding is present; the raw header block
    // still shows whether the client sent both.
    let raw_headers = match (http2, session.as_http1()) {
        (false, Some(h1))
            if session
                .req_header()
                .headers
                .contains_key("transfer-encoding") =>
        {
            Some(h1.get_headers_raw_bytes())
        }
        _ => None,
    };
    snap.sanitizer
        .check(session.req_header(), http2, raw_headers.as_deref())?;
    snap.sanitizer.canonicalize(session.req_header_mut())?;
    let stripped = snap.sanitizer.strip(session.req_header_mut());
    let client_cert = session
        .digest()
        .and_then(|d| d.ssl_digest.clone())
        .filter(|s| s.cert_digest.len() == 32);
    ctx.host = request_host(session.req_header());
    ctx.raw_host = raw_host(session.req_header());
    let path = session.req_header().uri.path().to_string();
    // The user page's forms and logout: read here, while the session may still be borrowed
    // mutably (authentication borrows its headers).
    let form = if crate::site::web::reads_form(&path, &session.req_header().method) {
        crate::site::web::read_form(session).await?
    } else {
        Vec::new()
    };
    let info = RequestInfo {
        headers: &session.req_header().headers,
        client: ctx.client,
        stripped: &stripped,
        client_cert_sha256: client_cert.as_ref().map(|s| s.cert_digest.as_slice()),
        method: &session.req_header().method,
        uri: &session.req_header().uri,
        set_cookies: &ctx.set_cookies,
    };

    // The browser login's pages (/auth/login, /auth/callback, /auth/logout), when configured.
    if let Some(login) = &snap.login
        && let Some(page) = Page::parse(&path)
    {
        ctx.label = page.name().to_string();
        ctx.decided = true;
        let csrf = crate::site::web::field(&form, crate::authenticate::csrf::FIELD);
        return Ok(Admitted::Page(login.serve(page, &info, csrf).await?));
    }

    // The user page (`/`) and its assets and forms (`/-/web/…`), when configured.
    if let Some(web) = &snap.web
        && let Some(page) = crate::site::web::Page::parse(&path)
    {
        ctx.label = page.name().to_string();
        ctx.decided = !page.is_asset();
        return Ok(Admitted::Page(web.serve(page, &info, &form).await?));
    }

    if crate::site::ops::owns(&path) {
        let ep = Endpoint::parse(&path)?;
        ctx.label = ep.name().to_string();
        // Probes are not decisions about anyone: they stay out of the audit log.
        ctx.decided = matches!(
            ep,
            Endpoint::Whoami | Endpoint::Metrics | Endpoint::Token | Endpoint::Status
        );
        let method = &session.req_header().method;
        let wanted = ep.method();
        if method != wanted && !(wanted == http::Method::GET && method == http::Method::HEAD) {
            return Err(Rejection::MethodNotAllowed(format!(
                "{} takes {wanted}",
                ep.name()
            )));
        }
        let auth = match ep {
            Endpoint::Healthz | Endpoint::Ready | Endpoint::Jwks => Some(&RouteAuth::Public),
            Endpoint::Whoami | Endpoint::Status => snap.whoami_auth.as_ref(),
            Endpoint::Metrics => snap.metrics_auth.as_ref(),
            Endpoint::Token => snap.token_auth.as_ref(),
        };
        let auth = auth.ok_or_else(|| {
            Rejection::NotFound(match ep {
                Endpoint::Token => {
                    "/auth/token is not enabled: set [tokens] authenticators in the config".into()
                }
                _ => format!(
                    "{} is not enabled: set [gateway] authenticators in the config",
                    ep.name()
                ),
            })
        })?;
        let caller = auth.authenticate(&info).await?;
        if let Err(r) = ep.admits(&caller) {
            let verdict = Verdict {
                allow: false,
                policies: vec!["api-key-scope".into()],
                errors: Vec::new(),
            };
            ctx.denial = Some(("read", verdict, caller));
            return Err(r);
        }
        return Ok(Admitted::Endpoint(ep, caller));
    }

    let route = snap
        .router
        .find(ctx.host.as_deref(), &path)
        .ok_or_else(|| Rejection::NotFound(format!("no route for {path}")))?
        .clone();
    ctx.label = route.config.name.clone();
    ctx.decided = true;
    let caller = route.auth.authenticate(&info).await?;
    let facts = Facts {
        client: ctx.client,
        method: session.req_header().method.as_str(),
        path: &path,
        now: crate::db::now(),
        utc_offset: snap.utc_offset,
    };
    let own_origin = snap.login.as_ref().map(|l| l.origin());
    let origin =
        if crate::authenticate::csrf::same_origin(&session.req_header().headers, own_origin) {
            Origin::Same
        } else {
            Origin::Unproven
        };
    match authorize(
        &snap.policies,
        &route,
        caller,
        &session.req_header().method,
        &facts,
        origin,
    ) {
        Ok(permit) => {
            ctx.read = matches!(
                session.req_header().method,
                http::Method::GET | http::Method::HEAD
            );
            let key = crate::authorize::rate_limit::key_for(permit.caller(), ctx.client);
            snap.rate_limits.check(&route.config, &key).await?;
            if route.config.kind == crate::proxy::route::RouteKind::Prometheus {
                let a = crate::enforce::prometheus::admit(session, &permit, &snap.policies, &path)
                    .await?;
                ctx.body_replacement = a.body;
                ctx.promql = a.promql;
                ctx.earliest = a.earliest;
                ctx.read = a.read_api;
            }
            // Enforce, per route kind.
            if let Some(slurm) = &route.slurm
                && let Err(r) = slurm
                    .prepare(permit.caller(), &session.req_header().headers)
                    .await
            {
                // Policy allowed it (the verdict says so); the audit line still names who
                // was refused, and the reason is the Slurm step's.
                let verdict = permit.verdict().cloned().unwrap_or(Verdict {
                    allow: true,
                    policies: Vec::new(),
                    errors: Vec::new(),
                });
                ctx.denial = Some((permit.action().as_str(), verdict, permit.caller().clone()));
                return Err(r);
            }
            Ok(Admitted::Proxy(permit))
        }
        Err(denied) => {
            let denied = *denied;
            ctx.denial = Some((denied.action.as_str(), denied.verdict, denied.caller));
            Err(denied.rejection)
        }
    }
}
