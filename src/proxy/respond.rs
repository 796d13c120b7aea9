//! What the gateway writes itself: its answer to admission (a refusal, or one of its own
//! endpoints or pages), and the refusal when proxying failed.

use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, Session};

use super::admit::Admitted;
use super::ctx::{Admission, Ctx};
use crate::error::{Rejection, Reply};

/// Writes the answer for what admission decided; true when the request is answered here
/// (it does not go upstream).
pub(super) async fn answer(
    session: &mut Session,
    ctx: &mut Ctx,
    admitted: Result<Admitted, Rejection>,
) -> bool {
    match admitted {
        Ok(Admitted::Proxy(permit)) => {
            ctx.admission = Admission::Admitted(permit);
            false
        }
        Ok(Admitted::Endpoint(ep, caller)) => {
            let snap = ctx.snapshot.clone();
            match ep.serve(&caller, &snap).await {
                Ok(reply) => {
                    write_reply(session, ctx, reply, &[]).await;
                    ctx.admission = Admission::Served(caller);
                }
                Err(r) => {
                    write_rejection(session, ctx, &r).await;
                    ctx.admission = Admission::Rejected(r);
                }
            }
            true
        }
        Ok(Admitted::Page(page)) => {
            let extra: Vec<(&str, String)> =
                page.location.map(|l| ("location", l)).into_iter().collect();
            write_reply(session, ctx, page.reply, &extra).await;
            ctx.admission = Admission::Served(page.caller);
            true
        }
        Err(r) => {
            if r.status() == 400 {
                // An ambiguous request may have left bytes we did not read as intended.
                session.set_keepalive(None);
            }
            write_rejection(session, ctx, &r).await;
            ctx.admission = Admission::Rejected(r);
            true
        }
    }
}

pub(super) async fn write_reply(
    session: &mut Session,
    ctx: &Ctx,
    reply: Reply,
    extra: &[(&str, String)],
) {
    let mut resp = match ResponseHeader::build(reply.status, Some(4)) {
        Ok(r) => r,
        Err(_) => return,
    };
    let _ = resp.insert_header("content-type", reply.content_type);
    let _ = resp.insert_header("content-length", reply.body.len().to_string());
    let _ = resp.insert_header("cache-control", "no-store");
    let _ = resp.insert_header("x-request-id", ctx.request_id.as_str());
    if reply.content_type.starts_with("text/html") {
        // Our pages load only our own style sheet and script, and are never framed.
        let _ = resp.insert_header(
            "content-security-policy",
            "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; \
             base-uri 'none'; frame-ancestors 'none'",
        );
        let _ = resp.insert_header("x-content-type-options", "nosniff");
        let _ = resp.insert_header("referrer-policy", "same-origin");
    }
    for (k, v) in extra {
        let _ = resp.append_header(k.to_string(), v.as_str());
    }
    for c in ctx.set_cookies.take() {
        let _ = resp.append_header("set-cookie", c);
    }
    let head_only = session.req_header().method == http::Method::HEAD;
    if session
        .write_response_header(Box::new(resp), head_only)
        .await
        .is_ok()
        && !head_only
    {
        let _ = session.write_response_body(Some(reply.body), true).await;
    }
}

pub(super) async fn write_rejection(session: &mut Session, ctx: &Ctx, r: &Rejection) {
    // Browsers get a readable page; API clients the JSON envelope.
    let reply = if crate::site::web::wants_html(&session.req_header().headers) {
        Reply {
            status: r.status(),
            content_type: "text/html; charset=utf-8",
            body: crate::site::web::html_rejection(r, &ctx.request_id),
        }
    } else {
        Reply {
            status: r.status(),
            content_type: "application/json",
            body: r.body(),
        }
    };
    let extra: Vec<(&str, String)> = r.headers();
    write_reply(session, ctx, reply, &extra).await;
}

pub(super) async fn fail(session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
    let rejection = match ctx.failure.take() {
        Some(r) => r,
        None => match e.esource() {
            ErrorSource::Downstream => {
                if matches!(
                    e.etype(),
                    ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed
                ) {
                    // The client is gone: nobody to answer.
                    return FailToProxy {
                        error_code: 0,
                        can_reuse_downstream: false,
                    };
                }
                Rejection::BadRequest("the request could not be read".into())
            }
            ErrorSource::Upstream => upstream_failure(e),
            _ => match e.etype() {
                ErrorType::HTTPStatus(503) => upstream_failure(e),
                _ => Rejection::Internal(e.to_string()),
            },
        },
    };
    if e.esource() == &ErrorSource::Upstream
        && !matches!(
            e.etype(),
            ErrorType::ConnectTimedout | ErrorType::ConnectRefused
        )
        && let Admission::Admitted(permit) = &ctx.admission
    {
        let kind = if rejection.status() == 504 {
            "timeout"
        } else {
            "other"
        };
        crate::process::telemetry::metrics()
            .upstream_errors
            .with_label_values(&[permit.route().pool.config.name.as_str(), kind])
            .inc();
    }
    let code = rejection.status();
    if session.response_written().is_none() {
        // The connection is not reused after a failure (the request body may be unread):
        // say so, or the client would send its next request into a closing socket.
        session.set_keepalive(None);
        write_rejection(session, ctx, &rejection).await;
    }
    tracing::warn!(
        request_id = %ctx.request_id,
        route = %ctx.label,
        status = code,
        error = %e,
        "request failed"
    );
    ctx.failure = Some(rejection);
    FailToProxy {
        error_code: code,
        can_reuse_downstream: false,
    }
}

fn upstream_failure(e: &Error) -> Rejection {
    use ErrorType::*;
    match e.etype() {
        ConnectTimedout => Rejection::GatewayTimeout("connecting to the upstream timed out".into()),
        ReadTimedout | WriteTimedout => {
            Rejection::GatewayTimeout("the upstream did not answer in time".into())
        }
        HTTPStatus(code) if *code == 503 => Rejection::Unavailable("no healthy backend".into()),
        ConnectRefused | ConnectNoRoute | ConnectError | SocketError | BindError
        | TLSHandshakeFailure | InvalidCert | ConnectionClosed | ReadError | WriteError
        | ConnectProxyFailure => {
            Rejection::BadGateway("the upstream refused the connection or broke it".into())
        }
        _ => Rejection::BadGateway("the upstream's answer could not be used".into()),
    }
}
