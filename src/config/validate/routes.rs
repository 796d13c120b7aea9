//! Checks for `[[routes]]`: names, prefixes and hosts, pools and authenticators, admin paths,
//! identity headers and rate limits (`[routes.promql]` in `promql.rs`, `[routes.slurm]` in
//! `slurm.rs`), and `[rate_limits]`.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use super::Validator;
use crate::config::{
    AuthenticatorConfig, IdentityHeaders, PoolConfig, RateLimit, Route, RouteKind, Secret, raw,
};

impl Validator {
    pub(super) fn routes(
        &mut self,
        raw: Vec<(usize, raw::Route)>,
        pools: &BTreeMap<String, PoolConfig>,
        auths: &BTreeMap<String, AuthenticatorConfig>,
    ) -> Vec<Route> {
        let mut out: Vec<Route> = Vec::new();
        let mut names = HashSet::new();
        for (i, r) in raw {
            let key = format!("routes[{i}]");
            if r.name.is_empty()
                || !r
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                self.err(
                    format!("{key}.name"),
                    "must be non-empty and use only letters, digits, - _ .",
                );
            }
            if !names.insert(r.name.clone()) {
                self.err(
                    format!("{key}.name"),
                    format!("route name `{}` is used twice", r.name),
                );
            }
            let prefix = normalize_prefix(&r.path_prefix);
            match &prefix {
                Err(reason) => self.err(format!("{key}.path_prefix"), reason.clone()),
                Ok(p) if p == "/-" || p.starts_with("/-/") => self.err(
                    format!("{key}.path_prefix"),
                    "paths under /-/ are the gateway's own endpoints",
                ),
                Ok(p) if p == "/auth" || p.starts_with("/auth/") => self.err(
                    format!("{key}.path_prefix"),
                    "paths under /auth/ are the gateway's login and token endpoints",
                ),
                Ok(_) => {}
            }
            // As requests are routed: lower case, without a trailing dot.
            let host = r
                .host
                .map(|h| h.strip_suffix('.').unwrap_or(&h).to_ascii_lowercase());
            if let Some(h) = &host
                && (h.is_empty() || h.contains(['/', ' ', ':']))
            {
                self.err(
                    format!("{key}.host"),
                    "must be a host name without port or path",
                );
            }
            if !pools.contains_key(&r.pool) {
                self.err(format!("{key}.pool"), format!("unknown pool `{}`", r.pool));
            }
            let kind = match r.kind.as_deref() {
                None | Some("generic") => RouteKind::Generic,
                Some("slurmrestd") => RouteKind::Slurmrestd,
                Some("prometheus") => RouteKind::Prometheus,
                Some("accounting") => RouteKind::Accounting,
                Some(other) => {
                    self.err(
                        format!("{key}.kind"),
                        format!(
                            "unknown kind `{other}`; expected generic, slurmrestd, prometheus or \
                             accounting"
                        ),
                    );
                    RouteKind::Generic
                }
            };
            self.auth_list(
                &format!("{key}.authenticators"),
                &r.authenticators,
                auths,
                false,
            );
            let mut admin_paths = Vec::new();
            for (j, p) in r.admin_paths.iter().enumerate() {
                match normalize_prefix(p) {
                    Ok(p) => admin_paths.push(p),
                    Err(reason) => self.err(format!("{key}.admin_paths[{j}]"), reason),
                }
            }
            let promql = self.promql(&key, kind, r.promql);
            let public = r
                .authenticators
                .iter()
                .all(|n| matches!(auths.get(n), Some(AuthenticatorConfig::None)));
            if public
                && !r.authenticators.is_empty()
                && promql != crate::enforce::prometheus::config::PromqlMode::Off
            {
                self.err(
                    format!("{key}.promql"),
                    "a public route has no user to confine PromQL to: require authentication, \
                     or set promql = { mode = \"off\" } to let everyone read everything",
                );
            }
            let identity_headers = self.identity_headers(&key, kind, r.identity_headers);
            let rate_limit = self.rate_limit(&key, r.rate_limit);
            let slurm = self.slurm_route(&key, kind, r.slurm, &r.authenticators, auths);
            let Ok(path_prefix) = prefix else { continue };
            for (j, p) in admin_paths.iter().enumerate() {
                if !crate::proxy::route::prefix_matches(&path_prefix, p) {
                    self.err(
                        format!("{key}.admin_paths[{j}]"),
                        format!("`{p}` is not under the route's path_prefix `{path_prefix}`"),
                    );
                }
            }
            if let Some(other) = out
                .iter()
                .find(|o| o.path_prefix == path_prefix && o.host == host)
            {
                self.err(
                    format!("{key}.path_prefix"),
                    format!(
                        "route `{}` has the same host and path_prefix `{path_prefix}`; one of \
                         them could never match",
                        other.name
                    ),
                );
            }
            out.push(Route {
                name: r.name,
                path_prefix,
                host,
                strip_prefix: r.strip_prefix,
                pool: r.pool,
                kind,
                authenticators: r.authenticators,
                pass_bearer_token: r.pass_bearer_token,
                forward_cookies: r.forward_cookies,
                identity_headers,
                rate_limit,
                preserve_host: r.preserve_host,
                admin_paths,
                promql,
                slurm,
            });
        }
        out
    }

    fn identity_headers(
        &mut self,
        key: &str,
        kind: RouteKind,
        raw: Option<raw::IdentityHeaders>,
    ) -> IdentityHeaders {
        let (user, groups, email, preferred) = match kind {
            RouteKind::Generic => (
                "x-forwarded-user",
                "x-forwarded-groups",
                "x-forwarded-email",
                "x-forwarded-preferred-username",
            ),
            RouteKind::Prometheus => ("x-grafana-user", "", "", ""),
            // The accounting service reads admin status from the groups.
            RouteKind::Accounting => ("x-grafana-user", "x-hpcgate-groups", "", ""),
            RouteKind::Slurmrestd => ("", "", "", ""),
        };
        let raw = raw.unwrap_or_default();
        let mut one = |field: &str, given: Option<String>, default: &str| {
            let name = given.unwrap_or_else(|| default.to_string());
            if name.is_empty() {
                return None;
            }
            match http::HeaderName::from_bytes(name.trim().to_ascii_lowercase().as_bytes()) {
                Ok(h) => Some(h),
                Err(_) => {
                    self.err(
                        format!("{key}.identity_headers.{field}"),
                        format!("`{name}` is not a header name"),
                    );
                    None
                }
            }
        };
        IdentityHeaders {
            user: one("user", raw.user, user),
            groups: one("groups", raw.groups, groups),
            email: one("email", raw.email, email),
            preferred_username: one("preferred_username", raw.preferred_username, preferred),
        }
    }

    fn rate_limit(&mut self, key: &str, raw: Option<raw::RateLimit>) -> Option<RateLimit> {
        let raw = raw?;
        let per = self.duration(
            &format!("{key}.rate_limit.per"),
            raw.per.as_deref(),
            Duration::from_secs(1),
        );
        let burst = raw.burst.unwrap_or(raw.requests);
        if raw.requests == 0 || burst == 0 || per.is_zero() {
            self.err(
                format!("{key}.rate_limit"),
                "requests, burst and per must be greater than 0",
            );
            return None;
        }
        Some(RateLimit {
            requests: raw.requests,
            per,
            burst,
        })
    }

    /// `[rate_limits]`: the Redis that shares the route limits between gateways, if any.
    pub(super) fn rate_limits(&mut self, raw: &raw::RateLimits) -> (Option<Secret>, Duration) {
        let redis_url = match raw.redis_url.as_deref() {
            None => None,
            Some(u) => match crate::secret::expand_env(u) {
                Ok(u) if u.starts_with("redis://") || u.starts_with("rediss://") => {
                    Some(Secret::new(u))
                }
                Ok(_) => {
                    self.err(
                        "rate_limits.redis_url",
                        "must start with redis:// or rediss://",
                    );
                    None
                }
                Err(e) => {
                    self.err("rate_limits.redis_url", e);
                    None
                }
            },
        };
        let redis_timeout = self.duration(
            "rate_limits.redis_timeout",
            raw.redis_timeout.as_deref(),
            Duration::from_millis(250),
        );
        (redis_url, redis_timeout)
    }
}

fn normalize_prefix(p: &str) -> Result<String, String> {
    if !p.starts_with('/') {
        return Err(format!("`{p}` must start with /"));
    }
    if p.contains("//")
        || p.split('/').any(|s| s == ".." || s == ".")
        || p.contains(['%', '\\', '?', '#'])
        || p.chars().any(|c| c.is_control() || c == ' ')
    {
        return Err(format!(
            "`{p}` must be a plain path (no //, . or .. segments, %, \\, ?, # or spaces)"
        ));
    }
    // Requests are matched in their canonical form (see `sanitize`), where only these
    // characters stand unencoded: a prefix with any other could never match.
    if !p
        .bytes()
        .all(|b| b == b'/' || crate::proxy::sanitize::is_path_char(b))
    {
        return Err(format!(
            "`{p}` may only hold letters, digits, / and -._~!$&'()*+,=:@ (requests are \
             matched in their canonical form, where anything else is percent-encoded, and `;` \
             is refused)"
        ));
    }
    let trimmed = p.trim_end_matches('/');
    Ok(if trimmed.is_empty() {
        "/".to_string()
    } else {
        trimmed.to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_normalised_and_checked() {
        assert_eq!(normalize_prefix("/a/b/").unwrap(), "/a/b");
        assert_eq!(normalize_prefix("/").unwrap(), "/");
        assert!(normalize_prefix("a").is_err());
        assert!(normalize_prefix("/a/../b").is_err());
        assert!(normalize_prefix("/a%2f").is_err());
        assert!(normalize_prefix("/a;b").is_err());
        assert!(normalize_prefix("/caf\u{e9}").is_err());
        assert!(normalize_prefix("/a\"b").is_err());
        assert_eq!(normalize_prefix("/a@b:c/").unwrap(), "/a@b:c");
    }
}
