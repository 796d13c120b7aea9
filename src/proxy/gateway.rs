//! The pingora `ProxyHttp` service: each callback is a few lines calling one pipeline step.
//!
//! `request_filter` runs admission (`admit.rs`: sanitize → route → authenticate → authorize
//! → enforce) and keeps the `Permit`, or writes the answer (`respond.rs`); `upstream_peer`
//! picks a backend (`upstream/`); `upstream_request_filter` rewrites (`rewrite.rs`);
//! `fail_to_proxy` answers failures (`respond.rs`); `logging` writes the access line, the
//! audit record and metrics (`observe.rs`). Each request holds the `Snapshot` it started
//! with (`ctx.rs`), so a reload never changes the rules under a request in flight.

use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};

use crate::proxy::ctx::{Admission, Ctx};
use crate::proxy::rewrite::{Downstream, rewrite};
use crate::proxy::snapshot::Snapshot;

pub struct Gateway {
    /// Shared with the reloader (`reload.rs`), which swaps it.
    snapshot: Arc<ArcSwap<Snapshot>>,
}

impl Gateway {
    pub fn new(snapshot: Snapshot) -> Self {
        Gateway::shared(Arc::new(ArcSwap::from_pointee(snapshot)))
    }

    /// A gateway whose rules someone else may swap (the reloader).
    pub fn shared(snapshot: Arc<ArcSwap<Snapshot>>) -> Self {
        Gateway { snapshot }
    }

    /// Replaces the rules for requests that start from now on.
    pub fn swap(&self, snapshot: Snapshot) {
        self.snapshot.store(Arc::new(snapshot));
    }
}

fn downstream_tls(session: &Session, snap: &Snapshot) -> bool {
    // The TLS digest is taken at the handshake. The listener's address is read from the
    // socket lazily, and is gone once the client closed it while its h2 stream was still
    // being proxied: such requests went upstream as `proto=http` (tests/smuggling.rs).
    if session.digest().is_some_and(|d| d.ssl_digest.is_some()) {
        return true;
    }
    match session.server_addr() {
        Some(PingoraAddr::Inet(a)) => snap.tls_listeners.contains(a),
        _ => false,
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::new(self.snapshot.load_full())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        ctx.client = super::admit::client_ip(session);
        let admitted = super::admit::admit(session, ctx).await;
        Ok(super::respond::answer(session, ctx, admitted).await)
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let Admission::Admitted(permit) = &ctx.admission else {
            return Error::e_explain(ErrorType::InternalError, "upstream_peer without a permit");
        };
        let pool = &permit.route().pool;
        let idx = match pool.select(&ctx.tried, ctx.earliest) {
            Ok(i) => i,
            Err(r) => {
                ctx.failure = Some(r);
                return Error::e_explain(ErrorType::HTTPStatus(503), "no healthy backend");
            }
        };
        ctx.tried.push(idx);
        // Replacing the lease of a failed attempt ends its count.
        ctx.lease = Some(pool.lease(idx));
        pool.peer(idx).map_err(|r| {
            let msg = r.detail().to_string();
            ctx.failure = Some(r);
            Error::explain(ErrorType::InternalError, msg)
        })
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let Admission::Admitted(permit) = &ctx.admission {
            let pool = &permit.route().pool;
            if let Some(&idx) = ctx.tried.last() {
                pool.mark_failed(idx);
                tracing::warn!(
                    request_id = %ctx.request_id,
                    pool = %pool.config.name,
                    backend = %pool.backend(idx),
                    error = %e,
                    "cannot connect to backend"
                );
            }
            // Nothing was sent yet, so trying another backend is safe for any method.
            if ctx.tried.len() < pool.config.backends.len() {
                e.set_retry(true);
            }
            let kind = if matches!(e.etype(), ErrorType::ConnectTimedout) {
                "connect_timeout"
            } else {
                "connect"
            };
            crate::process::telemetry::metrics()
                .upstream_errors
                .with_label_values(&[pool.config.name.as_str(), kind])
                .inc();
        }
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("peer: {peer}"));
        let Admission::Admitted(permit) = &ctx.admission else {
            e.set_retry(false);
            return e;
        };
        let pool = &permit.route().pool;
        // A fresh connection that broke: the backend is in trouble (a reused one may just
        // have been closed by the backend while idle).
        if !client_reused && let Some(&idx) = ctx.tried.last() {
            pool.mark_failed(idx);
        }
        let untouched =
            session.response_written().is_none() && !session.as_ref().retry_buffer_truncated();
        let broken = matches!(
            e.etype(),
            ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
        );
        if !untouched || !(ctx.read || session.req_header().method.is_idempotent()) {
            e.set_retry(false);
        } else if ctx.read && broken && ctx.tried.len() < 2 && pool.config.backends.len() > 1 {
            // A read that broke before any answer went out: once more, on another backend.
            tracing::warn!(
                request_id = %ctx.request_id,
                pool = %pool.config.name,
                error = %e,
                "upstream broke the connection; retrying the read on another backend"
            );
            e.set_retry(true);
        } else {
            e.retry.decide_reuse(client_reused);
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let Admission::Admitted(permit) = &ctx.admission else {
            return Error::e_explain(ErrorType::InternalError, "rewrite without a permit");
        };
        let Some(&idx) = ctx.tried.last() else {
            return Error::e_explain(ErrorType::InternalError, "rewrite without a backend");
        };
        let down = Downstream {
            client: ctx.client,
            tls: downstream_tls(session, &ctx.snapshot),
            host: ctx.raw_host.as_deref(),
            request_id: &ctx.request_id,
        };
        rewrite(upstream, permit, permit.route().pool.backend(idx), &down)?;
        if let Some(body) = &ctx.body_replacement {
            upstream.remove_header("transfer-encoding");
            upstream.insert_header("content-length", body.len().to_string())?;
        }
        Ok(())
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        // The whole body was read (and enforced) at admission; pingora replays it from its
        // retry buffer, once per upstream attempt, ending the stream: send ours instead.
        if let Some(replacement) = &ctx.body_replacement {
            *body = end_of_stream.then(|| replacement.clone());
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        resp.insert_header("x-request-id", ctx.request_id.as_str())?;
        // The upstream's cookies first: ours (a renewed session) are added after.
        crate::proxy::rewrite::response(resp, &ctx.label, &ctx.request_id);
        for c in ctx.set_cookies.take() {
            resp.append_header("set-cookie", c)?;
        }
        if let Admission::Admitted(permit) = &ctx.admission
            && permit.route().slurm.is_some()
            && resp.status.as_u16() >= 500
        {
            // slurmrestd reports a bad token and "permission denied" as 500 with errors[]:
            // the client gets Slurm's answer unchanged; operators get a line and a count.
            let status = resp.status.as_u16();
            crate::process::telemetry::metrics()
                .slurm_errors
                .with_label_values(&[ctx.label.as_str(), &status.to_string()])
                .inc();
            tracing::warn!(
                request_id = %ctx.request_id,
                route = %ctx.label,
                user = permit.caller().identity().map_or("", |id| id.user()),
                status,
                "slurmrestd answered with an error"
            );
        }
        Ok(())
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        super::respond::fail(session, e, ctx).await
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &Ctx, _error: &Error) -> bool {
        // fail_to_proxy logs every failure with the request id.
        true
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Ctx) {
        super::observe::log_request(session, ctx);
    }
}
