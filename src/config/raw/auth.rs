//! `[authenticators.NAME]` (one variant per `type`, OIDC in its own structs) and `[tokens]`,
//! the gateway's own JWTs.

use std::collections::BTreeMap;

use serde::Deserialize;

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
