//! `[[routes]]` with their `promql`, `slurm`, `identity_headers` and `rate_limit` tables,
//! `[rate_limits]` and `[authorization]`.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub name: String,
    /// Matched on whole path segments: `/prom` matches `/prom` and `/prom/x`, not `/prometheus`.
    pub path_prefix: String,
    /// Only for this `Host` (without port). Routes with a host win over routes without.
    pub host: Option<String>,
    /// Remove `path_prefix` before forwarding (default false).
    #[serde(default)]
    pub strip_prefix: bool,
    pub pool: String,
    /// `generic` (default), `slurmrestd`, `prometheus` or `accounting`.
    pub kind: Option<String>,
    /// Authenticator names, tried in order; the first that recognises the credentials decides.
    pub authenticators: Vec<String>,
    /// Pass the client's `Authorization: Bearer …` through, for upstreams that check the
    /// IdP's token themselves (default false). Basic credentials never go upstream.
    #[serde(default)]
    pub pass_bearer_token: bool,
    /// Forward the client's cookies (default false). The gateway's own never go upstream.
    #[serde(default)]
    pub forward_cookies: bool,
    /// Names of the identity headers written for this route; "" writes none. Defaults by
    /// kind: generic → X-Forwarded-User/-Groups/-Email/-Preferred-Username; prometheus and
    /// accounting (CEEMS-style backends) → X-Grafana-User; slurmrestd → none here (the Slurm
    /// step writes X-SLURM-USER-NAME and its token).
    pub identity_headers: Option<IdentityHeaders>,
    /// Per-user request budget on this route.
    pub rate_limit: Option<RateLimit>,
    /// Send the client's `Host` upstream instead of the backend's (default false).
    #[serde(default)]
    pub preserve_host: bool,
    /// Request paths (whole segments, full path as the client sends it) that are the
    /// `admin` action in policies rather than `read`/`write`.
    #[serde(default)]
    pub admin_paths: Vec<String>,
    /// PromQL enforcement on `prometheus` routes (default: `label` mode on `user`).
    pub promql: Option<Promql>,
    /// How a `slurmrestd` route tells Slurm who the user is (`[routes.slurm]`); only for
    /// that kind, and required by it.
    pub slurm: Option<SlurmRoute>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Promql {
    /// `label`: every selector gets `<label>="<user>"`; `ownership`: every selector pins job
    /// ids the accounting store says are the user's (or their projects'); `off`: users read
    /// everything.
    pub mode: String,
    /// `label` mode: the label naming a series' owner (default `user`). `ownership` mode:
    /// the label holding the job id (default `uuid`).
    pub label: Option<String>,
    /// `label` mode: whose value the label must carry: `user` (default), or `groups` (any of
    /// the caller's groups, e.g. a `project` label and project groups).
    pub value: Option<String>,
    /// `ownership` mode: metrics that belong to no job, readable without pinning ids.
    #[serde(default)]
    pub allow_metrics: Vec<String>,
}

/// `[routes.slurm]`: the Slurm step of a `kind = "slurmrestd"` route. It sends
/// `X-SLURM-USER-NAME: <user>` and `X-SLURM-USER-TOKEN: <token>`, where the token depends on
/// `token_mode`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SlurmRoute {
    /// `mint` (default): sign a short-lived HS256 token per user with Slurm's own key;
    /// `impersonate`: send one token of the SlurmUser (from `token_file`) for every user;
    /// `passthrough`: send the user's own IdP bearer token (Slurm configured with JWKS).
    pub token_mode: Option<String>,
    /// `mint`: Slurm's `jwt_hs256.key` (the `AuthAltParameters=jwt_key=` file). Root-
    /// equivalent: refused if group or others may read it.
    pub jwt_key_file: Option<String>,
    /// `impersonate`: a file holding a token of the SlurmUser (or root), e.g. written by
    /// `scontrol token username=slurm lifespan=…` from cron. Re-read every 30s, so a renewed
    /// token is picked up; refused if group or others may read it.
    pub token_file: Option<String>,
    /// `mint`: lifetime of a minted token (default 10m, 30s to 24h). A user's token is cached
    /// and replaced a quarter of its lifetime (at most 1m) before it expires.
    pub token_lifetime: Option<String>,
    /// `mint`: claim names, for Slurm versions that read others (defaults: Slurm 22.05's
    /// `sun`, `iat`, `exp`).
    pub user_claim: Option<String>,
    pub issued_at_claim: Option<String>,
    pub expires_claim: Option<String>,
    /// Gateway user name → Slurm (POSIX) user name; users not listed keep their name. A name
    /// that is not a valid POSIX user name is refused with 403.
    #[serde(default)]
    pub user_map: BTreeMap<String, String>,
    /// Treat `/slurm/v*/diag` and `/slurmdb/v*/diag` as admin paths (default false).
    #[serde(default)]
    pub admin_diag: bool,
    /// The user the pool's health check acts as (default `root`; `mint` and `impersonate`).
    pub health_user: Option<String>,
    /// Slurm users nobody may act as through the gateway, even if a directory has a user of
    /// that name or `user_map` leads there (default `["root"]`: root, like the SlurmUser, can
    /// act for anyone in Slurm).
    pub denied_users: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct IdentityHeaders {
    pub user: Option<String>,
    pub groups: Option<String>,
    pub email: Option<String>,
    pub preferred_username: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Requests allowed per `per`, sustained.
    pub requests: u32,
    /// The period (default 1s).
    pub per: Option<String>,
    /// Requests allowed at once after a quiet spell (default `requests`).
    pub burst: Option<u32>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RateLimits {
    /// Share budgets between gateway replicas through this Redis (`redis://HOST:PORT/DB`).
    /// Unset: each process keeps its own budgets in memory.
    pub redis_url: Option<String>,
    /// Give up on Redis after this long and refuse the request with 503 (default 250ms).
    pub redis_timeout: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Authorization {
    /// Directory with `schema.cedarschema` and `*.cedar` policies. Unset: the embedded
    /// defaults (admins may do anything, users may read and write, admin paths are for admins).
    pub policies_dir: Option<String>,
    /// Groups whose members are admins (`principal.admin` in policies).
    #[serde(default)]
    pub admin_groups: Vec<String>,
    /// Time zone of `context.hour` and `context.weekday`, as an offset like `+01:00`.
    pub utc_offset: Option<String>,
}
