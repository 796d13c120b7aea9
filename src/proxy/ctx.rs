//! The per-request context: where the request stands in admission, and what later
//! callbacks need to know of it. Each request holds the [`Snapshot`] it started with.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::authenticate::{Caller, SetCookies};
use crate::authorize::Permit;
use crate::authorize::cedar::Verdict;
use crate::error::Rejection;
use crate::process::shutdown::InFlight;
use crate::proxy::snapshot::Snapshot;

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
    pub(super) start: Instant,
    pub(super) request_id: String,
    pub(super) snapshot: Arc<Snapshot>,
    pub(super) admission: Admission,
    /// Backends tried so far (indexes into the route's pool).
    pub(super) tried: Vec<usize>,
    pub(super) client: Option<IpAddr>,
    /// Lower case, without port: for routing.
    pub(super) host: Option<String>,
    /// As the client sent it (Host or :authority): for X-Forwarded-Host.
    pub(super) raw_host: Option<String>,
    /// Name for logs and metrics: the route, a `-/…` endpoint, or `-` before routing.
    pub(super) label: String,
    /// Set when `fail_to_proxy` answered, for the log.
    pub(super) failure: Option<Rejection>,
    /// A route or endpoint was found: the request gets an audit line.
    pub(super) decided: bool,
    /// Who was refused by policy, for what and why (a permit carries its own verdict).
    pub(super) denial: Option<(&'static str, Verdict, Caller)>,
    /// A rewritten request body (PromQL enforcement), sent instead of the client's.
    pub(super) body_replacement: Option<bytes::Bytes>,
    /// The PromQL that went upstream, for the audit log.
    pub(super) promql: Option<String>,
    /// The oldest sample a Prometheus request reads (`retention` pools).
    pub(super) earliest: Option<f64>,
    /// A read (GET/HEAD, or a Prometheus read-API POST): retried once on another backend
    /// if its connection breaks before any answer went out.
    pub(super) read: bool,
    /// The backend this request is counted on (least connections).
    pub(super) lease: Option<crate::proxy::upstream::Lease>,
    /// Cookies authentication set (a renewed session), for whatever response goes out.
    pub(super) set_cookies: SetCookies,
    pub(super) _in_flight: InFlight,
}

impl Ctx {
    pub(super) fn new(snapshot: Arc<Snapshot>) -> Ctx {
        Ctx {
            start: Instant::now(),
            request_id: new_request_id(),
            snapshot,
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
