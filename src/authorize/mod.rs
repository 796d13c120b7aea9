//! The `authorize` step, and the [`Permit`] it alone can make.
//!
//! A caller of a non-public route is decided by the Cedar policies (see `cedar.rs`): no
//! permitting policy, any forbidding one, or an evaluation error means 403. Public routes
//! (authenticator `none`) are decided by the config alone.

pub mod cedar;
pub mod rate_limit;

use std::sync::Arc;

use crate::authenticate::Caller;
use crate::error::Rejection;
use crate::route::{RouteEntry, prefix_matches};
use cedar::{Action, Facts, Policies, RouteFacts, Verdict};

/// Proof that a request passed every admission step for its route.
pub struct Permit {
    route: Arc<RouteEntry>,
    caller: Caller,
    action: Action,
    /// The policy decision (None for public routes).
    verdict: Option<Verdict>,
}

impl Permit {
    pub fn route(&self) -> &Arc<RouteEntry> {
        &self.route
    }
    pub fn caller(&self) -> &Caller {
        &self.caller
    }
    pub fn action(&self) -> Action {
        self.action
    }
    pub fn verdict(&self) -> Option<&Verdict> {
        self.verdict.as_ref()
    }
}

/// A refusal by policy, with who was refused and why, for the audit log.
pub struct Denied {
    pub rejection: Rejection,
    pub action: Action,
    pub verdict: Verdict,
    pub caller: Caller,
}

/// The action a request asks for on a route: `admin` under one of its admin paths (and, on
/// slurmrestd routes, on Slurm's admin paths: see `slurm::paths`), else by method.
pub fn action_for(route: &RouteEntry, method: &http::Method, path: &str) -> Action {
    let slurm_admin = route.config.kind == crate::config::RouteKind::Slurmrestd
        && crate::slurm::paths::is_admin(
            path,
            method,
            route.config.slurm.as_ref().is_some_and(|s| s.admin_diag),
        );
    if slurm_admin
        || route
            .config
            .admin_paths
            .iter()
            .any(|p| prefix_matches(p, path))
    {
        Action::Admin
    } else {
        Action::for_method(method)
    }
}

/// Decides whether `caller` may make this request on `route`.
pub fn authorize(
    policies: &Policies,
    route: &Arc<RouteEntry>,
    caller: Caller,
    method: &http::Method,
    facts: &Facts<'_>,
) -> Result<Permit, Box<Denied>> {
    let action = action_for(route, method, facts.path);
    let id = match &caller {
        Caller::Public => {
            return Ok(Permit {
                route: route.clone(),
                caller,
                action,
                verdict: None,
            });
        }
        Caller::User(id) => id,
    };
    let scopes = id.scopes();
    if !scopes.is_empty()
        && !scopes
            .iter()
            .any(|s| *s == route.config.name || s == route.config.kind.as_str())
    {
        let rejection = Rejection::Forbidden(format!(
            "this credential of {} is limited to {}; route `{}` ({}) is not among them",
            id.user(),
            scopes.join(", "),
            route.config.name,
            route.config.kind.as_str()
        ));
        return Err(Box::new(Denied {
            rejection,
            action,
            verdict: Verdict {
                allow: false,
                policies: vec!["api-key-scope".into()],
                errors: Vec::new(),
            },
            caller,
        }));
    }
    let rf = RouteFacts {
        name: &route.config.name,
        kind: route.config.kind,
        path_prefix: &route.config.path_prefix,
    };
    let verdict = policies.decide(id, action, &rf, facts);
    if verdict.allow {
        Ok(Permit {
            route: route.clone(),
            caller,
            action,
            verdict: Some(verdict),
        })
    } else {
        if !verdict.errors.is_empty() {
            tracing::warn!(
                route = %route.config.name,
                user = id.user(),
                errors = ?verdict.errors,
                "policy evaluation failed: denied"
            );
        }
        let rejection = Rejection::Forbidden(format!(
            "{} may not {} on route `{}`",
            id.user(),
            action.as_str(),
            route.config.name
        ));
        Err(Box::new(Denied {
            rejection,
            action,
            verdict,
            caller,
        }))
    }
}
