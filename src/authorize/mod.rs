//! The `authorize` step, and the [`Permit`] it alone can make.
//!
//! A caller of a non-public route is decided by the Cedar policies (see `cedar.rs`): no
//! permitting policy, any forbidding one, or an evaluation error means 403. Public routes
//! (authenticator `none`) are decided by the config alone. A state-changing request that only
//! the browser session cookie authenticates must also prove it comes from the gateway's own
//! pages ([`Origin`]): a cookie the browser sends by itself proves nothing about who made the
//! request (cross-site request forgery).

pub mod cedar;
pub mod rate_limit;

use std::sync::Arc;

use crate::authenticate::Caller;
use crate::error::Rejection;
use crate::proxy::route::{RouteEntry, prefix_matches};
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

/// Whether the request proved it was made by a page of this gateway (see
/// `web::csrf::same_origin`: `Sec-Fetch-Site: same-origin` or the gateway's own `Origin`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Same,
    Unproven,
}

/// Methods a browser may send cross-site without harm: they change nothing.
fn is_safe(method: &http::Method) -> bool {
    matches!(
        *method,
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
    )
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
    let slurm_admin = route.config.kind == crate::proxy::route::RouteKind::Slurmrestd
        && crate::enforce::slurmrestd::paths::is_admin(
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

/// Decides whether `caller` may make this request on `route`; `origin` is what the request
/// proved about the page that sent it.
pub fn authorize(
    policies: &Policies,
    route: &Arc<RouteEntry>,
    caller: Caller,
    method: &http::Method,
    facts: &Facts<'_>,
    origin: Origin,
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
    if id.by_cookie() && !is_safe(method) && origin != Origin::Same {
        let rejection = Rejection::Forbidden(format!(
            "a {method} to route `{}` authenticated only by the browser session cookie must come \
             from a page of this gateway (Sec-Fetch-Site: same-origin, or this gateway's \
             Origin); another site cannot act for a logged-in user. Scripts: send an API key \
             or a bearer token instead of the cookie",
            route.config.name
        ));
        return Err(Box::new(Denied {
            rejection,
            action,
            verdict: Verdict {
                allow: false,
                policies: vec!["same-origin".into()],
                errors: Vec::new(),
            },
            caller,
        }));
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authenticate::{Identity, Method};

    /// A route `/app` (any authenticator: the caller is given) and the default policies.
    fn route_and_policies() -> (tempfile::TempDir, Arc<RouteEntry>, Arc<Policies>) {
        let dir = tempfile::tempdir().unwrap();
        let text = "[server]\nstate_dir = \"state\"\n\
                    [[listeners]]\naddress = \"127.0.0.1:0\"\n\
                    [authenticators.public]\ntype = \"none\"\n\
                    [pools.app]\nbackends = [\"http://127.0.0.1:9\"]\n\
                    [[routes]]\nname = \"app\"\npath_prefix = \"/app\"\npool = \"app\"\n\
                    authenticators = [\"public\"]\n";
        let config = crate::config::parse(text, &dir.path().join("hpcgate.toml"))
            .unwrap_or_else(|e| panic!("{e}"));
        let snap = crate::process::server::snapshot(&config).unwrap();
        let route = snap.router.find(None, "/app/x").unwrap().clone();
        (dir, route, snap.policies.clone())
    }

    fn facts<'a>(method: &'a str) -> Facts<'a> {
        Facts {
            client: None,
            method,
            path: "/app/x",
            now: 1_732_433_600,
            utc_offset: 0,
        }
    }

    /// Cross-site request forgery: a page elsewhere makes the browser POST to a proxied
    /// route, and the browser adds the session cookie by itself.
    #[test]
    fn cookie_sessions_need_same_origin_proof_for_unsafe_methods() {
        let (_dir, route, policies) = route_and_policies();
        let decide = |id: Identity, method: http::Method, origin: Origin| {
            let f = facts(method.as_str());
            authorize(&policies, &route, Caller::User(id), &method, &f, origin)
        };
        for method in [
            http::Method::POST,
            http::Method::PUT,
            http::Method::PATCH,
            http::Method::DELETE,
        ] {
            let Err(denied) = decide(
                Identity::for_test_by_cookie("alice"),
                method.clone(),
                Origin::Unproven,
            ) else {
                panic!("a cross-site {method} with the session cookie passed");
            };
            assert_eq!(denied.rejection.status(), 403);
            assert!(
                denied.rejection.message().contains("Sec-Fetch-Site"),
                "{}",
                denied.rejection.message()
            );
            assert_eq!(denied.verdict.policies, ["same-origin"]);
            assert!(matches!(denied.caller, Caller::User(ref id) if id.user() == "alice"));
            // From the gateway's own pages: decided by policy as before.
            assert!(
                decide(
                    Identity::for_test_by_cookie("alice"),
                    method.clone(),
                    Origin::Same
                )
                .is_ok()
            );
            // Credentials a browser does not add by itself: unaffected.
            for by in [
                Method::ApiKey,
                Method::OidcBearer,
                Method::Static,
                Method::GatewayJwt,
            ] {
                assert!(
                    decide(
                        Identity::for_test_by("alice", by),
                        method.clone(),
                        Origin::Unproven
                    )
                    .is_ok(),
                    "{by}"
                );
            }
        }
        for method in [http::Method::GET, http::Method::HEAD, http::Method::OPTIONS] {
            assert!(
                decide(
                    Identity::for_test_by_cookie("alice"),
                    method,
                    Origin::Unproven
                )
                .is_ok()
            );
        }
    }
}
