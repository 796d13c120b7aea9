//! The `authorize` step, and the [`Permit`] it alone can make.
//!
//! For now the decision is the route's authentication: a caller that passed the route's
//! authenticators (or any caller of a public route) is admitted. Cedar policies and rate
//! limits plug in here; later phases only ever see a `Permit`.

use std::sync::Arc;

use crate::authenticate::Caller;
use crate::error::Rejection;
use crate::route::RouteEntry;

/// Proof that a request passed every admission step for its route.
pub struct Permit {
    route: Arc<RouteEntry>,
    caller: Caller,
}

impl Permit {
    pub fn route(&self) -> &Arc<RouteEntry> {
        &self.route
    }
    pub fn caller(&self) -> &Caller {
        &self.caller
    }
}

/// Decides whether `caller` may use `route`.
pub fn authorize(route: &Arc<RouteEntry>, caller: Caller) -> Result<Permit, Rejection> {
    Ok(Permit {
        route: route.clone(),
        caller,
    })
}
