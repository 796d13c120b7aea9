//! The pingora `ProxyHttp` service: each callback is a few lines calling one pipeline step.
//!
//! `request_filter` runs [`admit`] (sanitize → route → authenticate → authorize) and either
//! stores the [`Permit`] or writes the refusal; `upstream_peer` picks a backend;
//! `upstream_request_filter` rewrites; `logging` writes the access line and metrics.
//! Each request holds the [`Snapshot`] it started with, so a reload never changes the rules
//! under a request in flight.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};

use crate::authenticate::oidc::{OidcLogin, Page, PageReply};
use crate::authenticate::{Caller, RequestInfo, RouteAuth, SetCookies};
use crate::authorize::cedar::{Facts, Policies, Verdict};
use crate::authorize::{Origin, Permit, authorize};
use crate::error::Rejection;
use crate::error::Reply;
use crate::process::audit::{AuditLog, Record, now_rfc3339};
use crate::process::shutdown::InFlight;
use crate::proxy::rewrite::{Downstream, rewrite};
use crate::proxy::route::{Router, raw_host, request_host};
use crate::proxy::sanitize::Sanitizer;
use crate::site::ops::Endpoint;

/// Everything a request needs from the configuration, swapped whole on reload.
pub struct Snapshot {
    pub sanitizer: Sanitizer,
    pub router: Router,
    /// Authentication for `/-/whoami` (None: not configured, 404).
    pub whoami_auth: Option<RouteAuth>,
    /// Authentication for `/-/metrics` (None: not configured, 404).
    pub metrics_auth: Option<RouteAuth>,
    pub access_log: bool,
    pub tls_listeners: Vec<std::net::SocketAddr>,
    pub policies: Arc<Policies>,
    /// Seconds east of UTC for policy time facts.
    pub utc_offset: i64,
    pub audit: Arc<AuditLog>,
    pub rate_limits: Arc<crate::authorize::rate_limit::RateLimiters>,
    /// Authentication for `POST /auth/token` (None: tokens are not issued, 404).
    pub token_auth: Option<RouteAuth>,
    pub token_issuer: Option<Arc<crate::tokens::TokenIssuer>>,
    /// Published at `/.well-known/jwks.json` when tokens are issued or accepted.
    pub signing_keys: Option<Arc<crate::tokens::SigningKeys>>,
    /// The browser login and its `/auth/…` pages, if configured.
    pub login: Option<Arc<OidcLogin>>,
    /// Every upstream pool, for health checks and `/-/status`.
    pub pools: Vec<crate::proxy::upstream::health::Target>,
    /// The user page at `/` (`[web]`), if configured.
    pub web: Option<Arc<crate::site::web::Web>>,
}

pub struct Gateway {
    /// Shared with the reloader (`reload.rs`), which swaps it.
    snapshot: Arc<ArcSwap<Snapshot>>,
}

/// Where a request stands in admission. Reading a permit from anything but `Admitted` is an
/// internal error: the request fails closed.
pub enum Admission {
    Pending,
    Admitted(Permit),
    Rejected(Rejection),
    /// A gateway endpoint answered, for this caller.
    Served(Caller),
}

pub struct Ctx {
    start: Instant,
    request_id: String,
    snapshot: Arc<Snapshot>,
    admission: Admission,
    /// Backends tried so far (indexes into the route's pool).
    tried: Vec<usize>,
    client: Option<IpAddr>,
    /// Lower case, without port: for routing.
    host: Option<String>,
    /// As the client sent it (Host or :authority): for X-Forwarded-Host.
    raw_host: Option<String>,
    /// Name for logs and metrics: the route, a `-/…` endpoint, or `-` before routing.
    label: String,
    /// Set when `fail_to_proxy` answered, for the log.
    failure: Option<Rejection>,
    /// A route or endpoint was found: the request gets an audit line.
    decided: bool,
    /// Who was refused by policy, for what and why (a permit carries its own verdict).
    denial: Option<(&'static str, Verdict, Caller)>,
    /// A rewritten request body (PromQL enforcement), sent instead of the client's.
    body_replacement: Option<bytes::Bytes>,
    /// The PromQL that went upstream, for the audit log.
    promql: Option<String>,
    /// The oldest sample a Prometheus request reads (`retention` pools).
    earliest: Option<f64>,
    /// A read (GET/HEAD, or a Prometheus read-API POST): retried once on another backend
    /// if its connection breaks before any answer went out.
    read: bool,
    /// The backend this request is counted on (least connections).
    lease: Option<crate::proxy::upstream::Lease>,
    /// Cookies authentication set (a renewed session), for whatever response goes out.
    set_cookies: SetCookies,
    _in_flight: InFlight,
}

enum Admitted {
    Proxy(Permit),
    Endpoint(Endpoint, Caller),
    Page(PageReply),
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

fn client_ip(session: &Session) -> Option<IpAddr> {
    match session.client_addr()? {
        PingoraAddr::Inet(a) => Some(a.ip()),
        _ => None,
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

/// sanitize → route → authenticate → authorize, one `?` per step.
async fn admit(session: &mut Session, ctx: &mut Ctx) -> Result<Admitted, Rejection> {
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

async fn write_reply(session: &mut Session, ctx: &Ctx, reply: Reply, extra: &[(&str, String)]) {
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

async fn write_rejection(session: &mut Session, ctx: &Ctx, r: &Rejection) {
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

/// A random request id (96 bits, hex).
fn new_request_id() -> String {
    use std::cell::Cell;
    // 96 bits: a random 32-bit prefix per thread, then a 64-bit counter that starts at a
    // random value, passed through splitmix64 (a bijection, so no repeats within a thread).
    // Unique and unguessable enough for correlating logs, and no system call per request
    // (an id is not a secret).
    thread_local! {
        static STATE: Cell<(u32, u64)> = Cell::new({
            let mut b = [0u8; 12];
            if getrandom::getrandom(&mut b).is_err() {
                // The kernel's RNG does not fail in practice; fall back to the clock.
                let t = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_nanos();
                b.copy_from_slice(&t.to_le_bytes()[..12]);
            }
            let (prefix, counter) = b.split_at(4);
            (
                u32::from_le_bytes(prefix.try_into().unwrap_or_default()),
                u64::from_le_bytes(counter.try_into().unwrap_or_default()),
            )
        });
    }
    let (prefix, counter) = STATE.with(|s| {
        let (p, c) = s.get();
        s.set((p, c.wrapping_add(1)));
        (p, c)
    });
    let mut z = counter.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    format!("{prefix:08x}{z:016x}")
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

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            start: Instant::now(),
            request_id: new_request_id(),
            snapshot: self.snapshot.load_full(),
            admission: Admission::Pending,
            tried: Vec::new(),
            client: None,
            host: None,
            raw_host: None,
            label: "-".into(),
            failure: None,
            decided: false,
            denial: None,
            body_replacement: None,
            promql: None,
            earliest: None,
            read: false,
            lease: None,
            set_cookies: SetCookies::default(),
            _in_flight: InFlight::start(),
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        ctx.client = client_ip(session);
        match admit(session, ctx).await {
            Ok(Admitted::Proxy(permit)) => {
                ctx.admission = Admission::Admitted(permit);
                Ok(false)
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
                Ok(true)
            }
            Ok(Admitted::Page(page)) => {
                let extra: Vec<(&str, String)> =
                    page.location.map(|l| ("location", l)).into_iter().collect();
                write_reply(session, ctx, page.reply, &extra).await;
                ctx.admission = Admission::Served(page.caller);
                Ok(true)
            }
            Err(r) => {
                if r.status() == 400 {
                    // An ambiguous request may have left bytes we did not read as intended.
                    session.set_keepalive(None);
                }
                write_rejection(session, ctx, &r).await;
                ctx.admission = Admission::Rejected(r);
                Ok(true)
            }
        }
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

    fn suppress_error_log(&self, _session: &Session, _ctx: &Ctx, _error: &Error) -> bool {
        // fail_to_proxy logs every failure with the request id.
        true
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Ctx) {
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .or_else(|| ctx.failure.as_ref().map(Rejection::status))
            .unwrap_or(0);
        let elapsed = ctx.start.elapsed();
        let m = crate::process::telemetry::metrics();
        m.requests
            .with_label_values(&[ctx.label.as_str(), &status.to_string()])
            .inc();
        m.duration
            .with_label_values(&[ctx.label.as_str()])
            .observe(elapsed.as_secs_f64());
        let req = session.req_header();
        let caller = match (&ctx.admission, &ctx.denial) {
            (Admission::Admitted(p), _) => Some(p.caller()),
            (Admission::Served(c), _) => Some(c),
            (_, Some((_, _, c))) => Some(c),
            _ => None,
        };
        let (user, via, method) = match caller {
            Some(Caller::User(id)) => (id.user(), id.via().unwrap_or(""), id.method()),
            Some(Caller::Public) => ("", "", "public"),
            None => ("", "", ""),
        };
        let backend = match (&ctx.admission, ctx.tried.last()) {
            (Admission::Admitted(p), Some(&i)) => p.route().pool.backend(i).to_string(),
            _ => String::new(),
        };
        super::observe::observe_request(
            &ctx.admission,
            ctx.denial.as_ref().map(|(_, v, _)| v.allow),
            &ctx.label,
            &backend,
            ctx.failure.is_some(),
            status,
            elapsed,
        );
        let reason = match &ctx.admission {
            Admission::Rejected(r) => r.detail().to_string(),
            _ => ctx
                .failure
                .as_ref()
                .map(|r| r.detail().to_string())
                .unwrap_or_default(),
        };
        if ctx.decided {
            let (decision, action, policies): (&str, &str, &[String]) = match &ctx.admission {
                Admission::Admitted(p) => (
                    "allow",
                    p.action().as_str(),
                    p.verdict().map_or(&[][..], |v| &v.policies[..]),
                ),
                Admission::Served(_) => ("allow", "read", &[]),
                _ => match &ctx.denial {
                    Some((action, v, _)) => ("deny", action, &v.policies[..]),
                    None => ("deny", "", &[]),
                },
            };
            let reason = match (&ctx.admission, &ctx.denial) {
                (Admission::Admitted(p), _) if p.verdict().is_none() => "public route".to_string(),
                (Admission::Admitted(_), _) | (Admission::Served(_), _) => reason.clone(),
                // Allowed by policy, refused by a later step (the Slurm step).
                (_, Some((_, v, _))) if v.allow => reason.clone(),
                (_, Some((_, v, _))) if !v.errors.is_empty() => {
                    format!("policy evaluation error: {}", v.errors.join("; "))
                }
                (_, Some((_, v, _))) if v.policies.is_empty() => "no policy permits".to_string(),
                (_, Some(_)) => "forbidden by policy".to_string(),
                _ => reason.clone(),
            };
            ctx.snapshot.audit.write(&Record {
                time: now_rfc3339(),
                request_id: &ctx.request_id,
                client: ctx.client.map(|c| c.to_string()).unwrap_or_default(),
                user,
                via,
                auth: method,
                route: &ctx.label,
                action,
                method: req.method.as_str(),
                path: req.uri.path(),
                decision,
                reason,
                policies,
                backend: backend.clone(),
                status,
                latency_ms: elapsed.as_secs_f64() * 1000.0,
                promql: ctx.promql.as_deref(),
            });
        }
        if !ctx.snapshot.access_log {
            return;
        }
        tracing::info!(
            target: "access",
            request_id = %ctx.request_id,
            client = %ctx.client.map(|c| c.to_string()).unwrap_or_default(),
            method = %req.method,
            // The path only: query strings can carry tokens.
            path = %req.uri.path(),
            version = ?req.version,
            route = %ctx.label,
            user,
            via,
            auth = method,
            backend,
            status,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            reason,
            "request"
        );
    }
}
