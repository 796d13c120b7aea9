//! What the `logging` callback counts of each request beyond route and status: the policy
//! decision, and the upstream's pool, backend and status class. (The metrics themselves are
//! registered in `process/telemetry.rs`, which knows nothing of the proxy.)

use crate::proxy::gateway::Admission;

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
