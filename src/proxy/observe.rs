//! The `logging` callback: the access line, the audit record, and the metrics of each
//! request (the policy decision; the upstream's pool, backend and status class). The
//! metrics themselves are registered in `process/telemetry.rs`, which knows nothing of the
//! proxy.

use pingora::proxy::Session;

use crate::authenticate::Caller;
use crate::error::Rejection;
use crate::process::audit::{Record, now_rfc3339};
use crate::proxy::ctx::{Admission, Ctx};

/// The per-request metrics beyond route and status: the policy decision (from the permit's
/// verdict, or `denied_by_policy` when policy refused), and the upstream's pool, backend
/// and status class when the request went upstream.
pub(super) fn observe_request(
    admission: &Admission,
    denied_by_policy: Option<bool>,
    route: &str,
    backend: &str,
    failed: bool,
    status: u16,
    elapsed: std::time::Duration,
) {
    let m = crate::process::telemetry::metrics();
    let decision = match (admission, denied_by_policy) {
        (Admission::Admitted(p), _) => p.verdict().map(|_| "allow"),
        (_, Some(allowed)) => Some(if allowed { "allow" } else { "deny" }),
        _ => None,
    };
    if let Some(d) = decision {
        m.policy_decisions.with_label_values(&[route, d]).inc();
    }
    if let Admission::Admitted(p) = admission
        && !backend.is_empty()
    {
        let pool = p.route().pool.config.name.as_str();
        let class = match status {
            _ if failed => "error",
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            500..=599 => "5xx",
            _ => "error",
        };
        m.upstream_requests
            .with_label_values(&[pool, backend, class])
            .inc();
        m.upstream_duration
            .with_label_values(&[pool])
            .observe(elapsed.as_secs_f64());
    }
}

/// Writes the access line and the audit record, and counts the request.
pub(super) fn log_request(session: &mut Session, ctx: &mut Ctx) {
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
        Some(Caller::User(id)) => (id.user(), id.via().unwrap_or(""), id.method().as_str()),
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
