//! The config file as written: serde structs with `deny_unknown_fields`, nothing checked yet.
//!
//! `validate.rs` turns these into the checked [`super::Config`]. Field docs here are the
//! reference; `config/hpcgate.toml` repeats them as comments for operators.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Server {
    /// Directory for state the gateway creates (keys, databases). Relative to the config file.
    pub state_dir: Option<String>,
    /// Worker threads of the proxy service.
    pub threads: Option<usize>,
    /// Idle upstream connections kept open for reuse, across all pools.
    pub upstream_keepalive: Option<usize>,
    /// How long SIGTERM/SIGINT wait for in-flight requests before the process exits.
    pub grace_period: Option<String>,
    /// How long a client may take to send a whole request head, from its first byte.
    pub request_head_timeout: Option<String>,
    /// How long a client connection (HTTP/1.1 or HTTP/2) may wait idle for its next request.
    pub keepalive_timeout: Option<String>,
    /// Extra inbound headers to strip, on top of the built-in identity header list.
    #[serde(default)]
    pub strip_headers: Vec<String>,
}

/// The process: which user it runs as, its pid file, reload and upgrade (`[process]`).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Process {
    /// Started as root, the gateway switches to this user once its listeners are open
    /// (default `nobody`). `root` is refused unless `serve --allow-root`.
    pub user: Option<String>,
    /// Its group (default: the user's primary group).
    pub group: Option<String>,
    /// Where `serve` writes its pid, for `hpcgate reload` (default `STATE_DIR/hpcgate.pid`).
    pub pid_file: Option<String>,
    /// pingora's upgrade socket, through which a new binary (`serve --upgrade`) takes over the
    /// listeners (default `STATE_DIR/upgrade.sock`).
    pub upgrade_socket: Option<String>,
    /// How often listener certificates are checked for changes and reloaded (default 60s;
    /// `0s` turns the check off: SIGHUP still reloads them).
    pub watch_certificates: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Logging {
    /// `error`, `warn`, `info`, `debug`, `trace`, or a tracing filter; `RUST_LOG` overrides.
    pub level: Option<String>,
    /// `json` (default) or `text`.
    pub format: Option<String>,
    /// One line per request (default true).
    pub access_log: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// `IP:PORT`; IPv6 as `[::1]:8443`.
    pub address: String,
    /// PEM certificate chain. With `tls_key`, the listener speaks TLS.
    pub tls_cert: Option<String>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub tls_key: Option<String>,
    /// Offer HTTP/2 via ALPN on TLS listeners (default true).
    pub http2: Option<bool>,
    /// Plain HTTP on a non-loopback address is refused unless this is true.
    #[serde(default)]
    pub allow_plaintext: bool,
    /// PEM CA bundle: ask clients for a certificate signed by it (optional for clients;
    /// a `client_cert` authenticator maps pinned certificates to services).
    pub client_ca: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    /// `http://HOST:PORT`, `https://HOST:PORT` or `unix:/path/to.sock`.
    pub backends: Vec<String>,
    pub connect_timeout: Option<String>,
    /// Longest wait for the upstream's next bytes (response headers or body).
    pub read_timeout: Option<String>,
    pub write_timeout: Option<String>,
    /// PEM bundle of CAs for `https` backends (default: the system roots).
    pub tls_ca: Option<String>,
    /// Check `https` backends' certificates (default true).
    pub tls_verify: Option<bool>,
    /// SNI and certificate name for `https` backends (default: the backend's host).
    pub tls_server_name: Option<String>,
    /// Value of the `Authorization` header sent to this pool (e.g. a Prometheus behind basic
    /// auth). A secret: `${ENV}` is expanded; prefer `authorization_file`.
    pub authorization: Option<String>,
    /// File holding the `Authorization` value for this pool.
    pub authorization_file: Option<String>,
    /// After a failed connection, how long a backend is skipped (pools of 2+ backends).
    pub fail_timeout: Option<String>,
    /// Active health checks of every backend (`[pools.NAME.health_check]`).
    pub health_check: Option<HealthCheck>,
    /// `round_robin` (default), `least_connections`, or `retention` (TSDBs: a query goes to
    /// a backend whose retention holds its time range, least connections among those).
    pub balance: Option<String>,
    /// `retention` pools: backend (as in `backends`) → how far back it holds data, e.g.
    /// `"15d"`. A backend left out is asked (`/api/v1/status/runtimeinfo`).
    #[serde(default)]
    pub retention: BTreeMap<String, String>,
}

/// `GET path` on each backend every `interval`; a backend that does not answer 2xx within
/// `timeout` gets no requests until it does again (even the only backend of a pool: its
/// requests get 503). For pools behind `slurmrestd` routes, the check carries a Slurm token
/// for `[routes.slurm] health_user`, and `/-/status` shows the controller's ping answer.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// E.g. `/slurm/v0.0.38/ping` for slurmrestd, `/-/ready` for Prometheus.
    pub path: String,
    /// Default 5s.
    pub interval: Option<String>,
    /// Default 2s; at most `interval`.
    pub timeout: Option<String>,
}

#[allow(
    clippy::large_enum_variant,
    reason = "built once per config load; boxing would only add noise"
)]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "snake_case")]
pub enum Authenticator {
    /// No authentication: the route is public. May not be combined with other authenticators.
    None,
    /// HTTP Basic against a users file of argon2id hashes (`hpcgate hash-password`).
    Static {
        users_file: String,
        /// Realm in `WWW-Authenticate`.
        realm: Option<String>,
        /// How long a successful check is remembered (default 5m; 0s disables).
        cache_ttl: Option<String>,
        /// Failed passwords allowed per user and per client address within `failure_window`
        /// (default 10 in 5m); past that, 429 without checking.
        max_failures: Option<u32>,
        failure_window: Option<String>,
    },
    /// HTTP Basic against an LDAP directory.
    Ldap {
        /// `ldap://HOST:PORT` or `ldaps://HOST:PORT`.
        url: String,
        /// Upgrade ldap:// with StartTLS (default false).
        #[serde(default)]
        starttls: bool,
        /// PEM CA bundle for ldaps:// and StartTLS (default: the system roots).
        tls_ca: Option<String>,
        /// Service account for searches.
        bind_dn: Option<String>,
        bind_password: Option<String>,
        bind_password_file: Option<String>,
        /// Where users are searched, and how (`{user}` is replaced, escaped).
        user_base: Option<String>,
        user_filter: Option<String>,
        /// Instead of a search: the user's DN, e.g. `uid={user},ou=people,dc=example,dc=org`.
        user_dn_template: Option<String>,
        /// Attribute of the user entry whose value is the user's name at the gateway (default
        /// `uid`): `BOB` logging in is the directory's `bob`, not a new user.
        user_name_attribute: Option<String>,
        /// Attribute of the user entry listing group DNs (default `memberOf`).
        group_attribute: Option<String>,
        /// Or a group search: base, filter (`{dn}`, `{user}`), and the attribute naming a group.
        group_base: Option<String>,
        group_filter: Option<String>,
        group_name_attribute: Option<String>,
        /// Attribute holding the e-mail address (default `mail`).
        email_attribute: Option<String>,
        /// Per LDAP operation (default 5s); past it, 503.
        timeout: Option<String>,
        /// Connections kept (default 4).
        pool_size: Option<usize>,
        realm: Option<String>,
        cache_ttl: Option<String>,
        max_failures: Option<u32>,
        failure_window: Option<String>,
    },
    /// API keys from the gateway's database (`hpcgate apikey create`), sent as
    /// `Authorization: Bearer hpcg_…` or `X-API-Key: hpcg_…`.
    ApiKey {
        /// How long a looked-up key is remembered (default 500ms, at most 1s: a revocation
        /// reaches every gateway process within this time).
        cache_ttl: Option<String>,
    },
    /// A trusted service (proven by another authenticator, e.g. its API key) acting for a
    /// user named in a header: the CEEMS / Grafana pattern.
    TrustedHeader {
        /// The authenticator that proves the service (e.g. an `api_key` one).
        authenticator: String,
        /// User names (as that authenticator proves them) of the services trusted to act
        /// for users.
        services: Vec<String>,
        /// The header naming the user (default `X-Grafana-User`). It is stripped from every
        /// request, so only trusted services can set it.
        header: Option<String>,
        /// Only from these networks (CIDR); default: anywhere.
        #[serde(default)]
        source_networks: Vec<String>,
        /// Privileged users the services may nevertheless act for (default none). Refused
        /// otherwise: `root` and the Slurm users the gateway knows (every slurmrestd route's
        /// `health_user` and `denied_users`, every accounting ingest `user`), since a token
        /// of theirs acts for anyone in Slurm.
        #[serde(default)]
        allow_privileged_users: Vec<String>,
    },
    /// Services proven by a TLS client certificate (on a listener with `client_ca`), pinned
    /// by the SHA-256 fingerprint of the certificate.
    ClientCert {
        /// Service name → fingerprint, as `openssl x509 -noout -fingerprint -sha256` prints it
        /// (colons and case do not matter).
        certificates: BTreeMap<String, String>,
    },
    /// Tokens issued by this gateway at `POST /auth/token` (see `[tokens]`).
    GatewayJwt {
        /// Expected `aud` (default: `[tokens] audience`).
        audience: Option<String>,
    },
    /// `Authorization: Bearer <JWT>` issued by an OpenID Connect provider: access tokens of
    /// users, and client-credentials tokens of services.
    OidcBearer(OidcBearer),
    /// Browser login at an OpenID Connect provider (authorization code + PKCE), then a
    /// session cookie.
    OidcLogin(OidcLogin),
}

/// `type = "oidc_bearer"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcBearer {
    /// The IdP's issuer, exactly as its tokens' `iss` (discovery is read from
    /// `ISSUER/.well-known/openid-configuration`). https, or http on a loopback address.
    /// Bearer JWTs naming another issuer are left to the next authenticator.
    pub issuer: String,
    /// Accepted `aud` values: a token must name at least one (e.g. the client id or resource
    /// the IdP puts in access tokens for this gateway).
    pub audiences: Vec<String>,
    /// Accepted signature algorithms (default `["RS256"]`): RS256, RS384, RS512, PS256,
    /// PS384, PS512, ES256, ES384, EdDSA. `none` and HMAC (HS*) are never accepted: an IdP's
    /// keys are public.
    pub algorithms: Option<Vec<String>>,
    /// The claim naming the user (default `preferred_username`; e.g. `username`, `sub`,
    /// `email`). A dotted path reaches a nested claim.
    pub username_claim: Option<String>,
    /// The claim listing the user's groups: a list or one string (default `groups`; e.g.
    /// `realm_access.roles`; `""` uses none).
    pub groups_claim: Option<String>,
    /// The claim holding the e-mail address (default `email`; `""` uses none).
    pub email_claim: Option<String>,
    /// Client id → service account name. A client-credentials token (its `sub` is the client
    /// id, in `client_id` or `azp`, and it names no other user) of a client listed here is
    /// that service account; of any other client, refused. A user's token is never one, even
    /// without the user claim, and no user token may name a service account.
    #[serde(default)]
    pub service_accounts: BTreeMap<String, String>,
    /// Clock leeway for `exp` and `nbf` (default 30s, at most 5m).
    pub leeway: Option<String>,
    /// Each HTTP request to the IdP (default 5s).
    pub timeout: Option<String>,
    /// PEM CA bundle for an https IdP (default: the built-in web roots).
    pub tls_ca: Option<String>,
    /// While the IdP cannot be reached, the longest wait between discovery attempts
    /// (default 30s). Until discovery succeeds, routes using this authenticator answer 503.
    pub discovery_retry: Option<String>,
    /// A token signed by a key not yet known fetches the IdP's keys again, at most once per
    /// this interval (default 60s). Keys are also fetched again every hour.
    pub jwks_refresh_interval: Option<String>,
}

/// `type = "oidc_login"`. At most one per config: it serves `/auth/login`,
/// `/auth/callback` and `/auth/logout`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcLogin {
    /// The IdP's issuer (see `oidc_bearer`).
    pub issuer: String,
    /// This gateway's client at the IdP: a confidential client allowed the authorization
    /// code flow with PKCE (S256).
    pub client_id: String,
    /// The client's secret: `${ENV}` is expanded; prefer `client_secret_file`.
    pub client_secret: Option<String>,
    pub client_secret_file: Option<String>,
    /// This gateway's callback as registered at the IdP: `https://HOST[:PORT]/auth/callback`.
    /// Its origin is also the only one `return_to` may name.
    pub redirect_url: String,
    /// Where the IdP sends the browser after `/auth/logout` (registered at the IdP as a
    /// post-logout redirect URI). Unset: the IdP's own page.
    pub post_logout_redirect_url: Option<String>,
    /// Scopes asked for (default `["openid", "profile", "email"]`; `openid` is always added).
    pub scopes: Option<Vec<String>>,
    /// Accepted ID token signature algorithms (as for `oidc_bearer`; default `["RS256"]`).
    pub algorithms: Option<Vec<String>>,
    /// Claims of the ID token naming the user, groups and e-mail (defaults as for
    /// `oidc_bearer`).
    pub username_claim: Option<String>,
    pub groups_claim: Option<String>,
    pub email_claim: Option<String>,
    /// A session ends this long after login, whatever happens (default 8h).
    pub session_lifetime: Option<String>,
    /// ... or after this long without a request (default 1h).
    pub session_idle: Option<String>,
    /// How often a session is revalidated at the IdP with its refresh token, picking up
    /// changed groups (default 5m). A refused refresh ends the session; an IdP that cannot
    /// answer gives 503. Sessions the IdP gave no refresh token last until they expire.
    pub refresh_interval: Option<String>,
    /// File with the key that seals session cookies: 32 random bytes in base64 (`head -c 32
    /// /dev/urandom | base64`). Replicas behind one address need the same file. Unset: a key
    /// generated on first start in `state_dir/oidc-session.key` (mode 0600).
    pub session_key_file: Option<String>,
    /// As for `oidc_bearer`.
    pub timeout: Option<String>,
    pub tls_ca: Option<String>,
    pub discovery_retry: Option<String>,
    pub jwks_refresh_interval: Option<String>,
}

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
pub struct Gateway {
    /// Authenticators for `/-/whoami` (required if that endpoint is to work).
    #[serde(default)]
    pub authenticators: Vec<String>,
    /// Serve `/-/metrics` without authentication (default false: same authenticators).
    #[serde(default)]
    pub metrics_public: bool,
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

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Audit {
    /// Where audit lines go: a file path (appended), `-` for standard output, or `off`.
    pub path: Option<String>,
    /// Lines that may wait for the writer before records are dropped (default 65536).
    pub backlog: Option<usize>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Database {
    /// `sqlite://PATH` or `postgres://USER:PASSWORD@HOST:PORT/DB` (`${ENV}` expanded).
    /// Default: SQLite `hpcgate.db` in `server.state_dir`.
    pub url: Option<String>,
    /// File holding the URL (for a URL with a password).
    pub url_file: Option<String>,
    /// Connections kept (default 8).
    pub max_connections: Option<u32>,
    /// Longest wait for a connection before a request that needs the database gets 503
    /// (default 2s).
    pub timeout: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Tokens {
    /// Password authenticators (`static`, `ldap`) accepted at `POST /auth/token`.
    #[serde(default)]
    pub authenticators: Vec<String>,
    /// Lifetime of an issued token (default 1h, at most 24h).
    pub ttl: Option<String>,
    /// `iss` of issued tokens (default `hpcgate`).
    pub issuer: Option<String>,
    /// `aud` of issued tokens (default `hpcgate`).
    pub audience: Option<String>,
}

/// `[accounting]`: the built-in accounting service (CEEMS-compatible API). Present = on.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Accounting {
    /// Unix socket the gateway reaches the service on (mode 0600), relative to
    /// `server.state_dir` (default `accounting.sock`). Point a pool at it:
    /// `backends = ["unix:STATE_DIR/accounting.sock"]`.
    pub socket: Option<String>,
    /// `IP:PORT` for `hpcgate accounting serve` (the service alone, for separate replicas).
    pub listen: Option<String>,
    /// The shared secret gateways send as `Authorization: Bearer SECRET` to a service run by
    /// `hpcgate accounting serve` (required with `listen`; at least 32 characters).
    pub shared_secret: Option<String>,
    /// File holding the shared secret.
    pub shared_secret_file: Option<String>,
    /// Users who are accounting admins besides members of `[authorization] admin_groups`.
    #[serde(default)]
    pub admin_users: Vec<String>,
    /// Users (service accounts) that may push units with `POST /api/v1/units`.
    #[serde(default)]
    pub ingest_users: Vec<String>,
    /// Largest page of units a request gets (default 10000); `limit` asks for fewer.
    pub max_page_size: Option<u32>,
    /// Longest `from`..`to` window of a query (default 366d).
    pub max_query_window: Option<String>,
    /// The clusters whose units the service holds (`[accounting.clusters.ID]`).
    #[serde(default)]
    pub clusters: BTreeMap<String, AccountingCluster>,
    /// Aggregate metrics of units from Prometheus (`[accounting.metrics]`).
    pub metrics: Option<AccountingMetrics>,
}

/// `[accounting.metrics]`: on an interval, PromQL per running and recently ended unit.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountingMetrics {
    /// A `[pools.NAME]` of Prometheus (or Thanos) with http(s) backends.
    pub pool: String,
    /// Time between passes (default 5m).
    pub interval: Option<String>,
    /// Units that ended within this long are measured again (default 1h); running ones always.
    pub lookback: Option<String>,
    /// Most units per pass (default 5000), most recently ended first.
    pub max_units: Option<usize>,
    /// Query templates, each returning one number per unit, evaluated at the unit's end (now
    /// while running). `{uuid}`, `{cluster}` and `{range}` (the unit's run time, like `3600s`)
    /// are replaced. Unset = not measured.
    #[serde(default)]
    pub queries: MetricQueries,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct MetricQueries {
    /// Mean CPU usage in % of the allocation.
    pub cpu_usage: Option<String>,
    /// Mean memory usage in % of the allocation.
    pub mem_usage: Option<String>,
    /// Mean GPU usage in %.
    pub gpu_usage: Option<String>,
    /// Mean power in watts: energy (kWh) = mean power × run time; emissions = energy ×
    /// the cluster's emission_factor.
    pub power_watts: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountingCluster {
    /// `slurm` (default), `openstack` or `k8s`.
    pub manager: Option<String>,
    /// Grid emission factor in gCO2e per kWh (default 0): emissions = energy × factor.
    pub emission_factor: Option<f64>,
    /// Pull this cluster's jobs from slurmrestd's `slurmdb` endpoint.
    pub slurmrestd: Option<SlurmIngest>,
}

/// `[accounting.clusters.ID.slurmrestd]`: incremental pull of finished and running jobs.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlurmIngest {
    /// `http://HOST:PORT` of slurmrestd (with the dbv0.0.38 plugin).
    pub url: String,
    /// OpenAPI version in the path (default `v0.0.38`).
    pub api_version: Option<String>,
    /// The Slurm user whose token reads every job (an operator or the SlurmUser; default root).
    pub user: Option<String>,
    /// Slurm's `jwt_hs256.key`: tokens for `user` are minted with it.
    pub jwt_key_file: Option<String>,
    /// Or a file with a token of `user` (`scontrol token`), re-read on every pass.
    pub token_file: Option<String>,
    /// Only jobs of this Slurm cluster name (default: every job the endpoint returns).
    pub cluster_name: Option<String>,
    /// Time between passes (default 60s).
    pub interval: Option<String>,
    /// How far back the first pass reaches (default 1d).
    pub backfill: Option<String>,
    /// Units per transaction (default 1000); the watermark moves with the last one.
    pub batch_size: Option<usize>,
}

/// `[web]`: the user page at `/` (who am I, my jobs and usage, my API keys). Present = on;
/// needs the `oidc_login` authenticator (the page is for logged-in browsers).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Web {
    /// Link from each job to its Grafana dashboard: `{uuid}`, `{cluster}`, `{start_ms}`,
    /// `{end_ms}` are replaced (URL-encoded). No link when unset.
    pub grafana_url: Option<String>,
    /// Jobs per page (default 25, at most 500).
    pub page_size: Option<u32>,
    /// Where the page links for the API documentation (default `/api/v1/docs/`).
    pub docs_url: Option<String>,
}

/// The whole file. Each section is deserialized on its own so that one bad section does not
/// hide the errors of the others.
#[derive(Debug, Default)]
pub struct File {
    pub server: Server,
    pub process: Process,
    pub logging: Logging,
    pub gateway: Gateway,
    pub authorization: Authorization,
    pub audit: Audit,
    pub rate_limits: RateLimits,
    pub database: Database,
    pub tokens: Tokens,
    pub accounting: Option<Accounting>,
    pub web: Option<Web>,
    /// With each element's index in the file.
    pub listeners: Vec<(usize, Listener)>,
    pub pools: BTreeMap<String, Pool>,
    pub authenticators: BTreeMap<String, Authenticator>,
    pub routes: Vec<(usize, Route)>,
}
