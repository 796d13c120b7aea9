//! Checks of the `oidc_bearer` and `oidc_login` authenticators. Nothing here talks to the
//! IdP: discovery happens when the gateway starts (and is retried while the IdP is down).

use std::collections::BTreeMap;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use openidconnect::IssuerUrl;
use openidconnect::url::{Host, Url};

use super::{AuthenticatorConfig, Validator, raw, resolve_path};
use crate::authenticate::oidc::{
    BearerConfig, ClaimPath, ClaimsConfig, Lifetimes, LoginConfig, ProviderConfig, SessionKeyBytes,
    read_key_file,
};
use crate::authenticate::static_users::valid_user_name;

/// Signature algorithms an IdP's public keys can verify.
const ASYMMETRIC: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

/// https, or http on a loopback address (a test or same-host IdP).
fn secure_enough(url: &Url) -> bool {
    match url.scheme() {
        "https" => true,
        "http" => match url.host() {
            Some(Host::Ipv4(ip)) => ip.is_loopback(),
            Some(Host::Ipv6(ip)) => ip.is_loopback(),
            Some(Host::Domain(d)) => d == "localhost",
            None => false,
        },
        _ => false,
    }
}

/// The parts both OIDC authenticators share.
struct Common {
    issuer: String,
    algorithms: Option<Vec<String>>,
    username_claim: Option<String>,
    groups_claim: Option<String>,
    email_claim: Option<String>,
    service_accounts: BTreeMap<String, String>,
    timeout: Option<String>,
    tls_ca: Option<String>,
    discovery_retry: Option<String>,
    jwks_refresh_interval: Option<String>,
}

impl Validator {
    /// A URL the gateway sends browsers or requests to: absolute, https (or loopback http),
    /// no fragment, no user info.
    fn oidc_url(&mut self, key: &str, value: &str) -> Option<Url> {
        let reason = match Url::parse(value) {
            Err(e) => format!("`{value}` is not a URL: {e}"),
            Ok(u) if !secure_enough(&u) => {
                format!("`{value}` must be https (http only on a loopback address)")
            }
            Ok(u) if u.fragment().is_some() || !u.username().is_empty() => {
                format!("`{value}` may not have a #fragment or user info")
            }
            Ok(u) => return Some(u),
        };
        self.err(key, reason);
        None
    }

    fn oidc_common(&mut self, key: &str, c: Common) -> (Vec<Algorithm>, ClaimsConfig) {
        let given = c.algorithms.unwrap_or_else(|| vec!["RS256".into()]);
        if given.is_empty() {
            self.err(
                format!("{key}.algorithms"),
                "at least one algorithm is required",
            );
        }
        let mut algorithms = Vec::new();
        for (i, a) in given.iter().enumerate() {
            let k = format!("{key}.algorithms[{i}]");
            match a.as_str() {
                a if ASYMMETRIC.contains(&a) => algorithms.extend(a.parse::<Algorithm>().ok()),
                a if a.eq_ignore_ascii_case("none") => {
                    self.err(k, "`none` (unsigned tokens) is never accepted")
                }
                a if a.starts_with("HS") => self.err(
                    k,
                    format!(
                        "`{a}` is never accepted: the IdP's keys are public, so anyone could \
                         sign such a token with them"
                    ),
                ),
                a => self.err(
                    k,
                    format!(
                        "unknown algorithm `{a}`; expected one of {}",
                        ASYMMETRIC.join(", ")
                    ),
                ),
            }
        }
        let mut path = |field: &str, value: Option<String>, default: &str, optional: bool| {
            let value = value.unwrap_or_else(|| default.to_string());
            if optional && value.is_empty() {
                return None;
            }
            let parsed = ClaimPath::parse(&value);
            if parsed.is_none() {
                self.err(
                    format!("{key}.{field}"),
                    format!("`{value}` is not a claim name or dotted path like realm_access.roles"),
                );
            }
            parsed
        };
        let username = path(
            "username_claim",
            c.username_claim,
            "preferred_username",
            false,
        );
        let groups = path("groups_claim", c.groups_claim, "groups", true);
        let email = path("email_claim", c.email_claim, "email", true);
        for (client, account) in &c.service_accounts {
            if client.is_empty() || !valid_user_name(account) {
                self.err(
                    format!("{key}.service_accounts.{client}"),
                    "a client id maps to a user name (letters, digits, . _ - @ +)",
                );
            }
        }
        let claims = ClaimsConfig {
            username: username.unwrap_or_else(|| ClaimPath::parse("sub").expect("valid")),
            groups,
            email,
            service_accounts: c.service_accounts,
        };
        (algorithms, claims)
    }

    fn oidc_provider(&mut self, key: &str, c: &Common) -> Option<ProviderConfig> {
        let issuer = self.oidc_url(&format!("{key}.issuer"), &c.issuer);
        if let Some(u) = &issuer
            && u.query().is_some()
        {
            self.err(format!("{key}.issuer"), "an issuer has no query");
        }
        let timeout = self.duration(
            &format!("{key}.timeout"),
            c.timeout.as_deref(),
            Duration::from_secs(5),
        );
        if timeout.is_zero() || timeout > Duration::from_secs(60) {
            self.err(format!("{key}.timeout"), "must be between 1ms and 60s");
        }
        let discovery_retry = self.duration(
            &format!("{key}.discovery_retry"),
            c.discovery_retry.as_deref(),
            Duration::from_secs(30),
        );
        let jwks_refresh_interval = self.duration(
            &format!("{key}.jwks_refresh_interval"),
            c.jwks_refresh_interval.as_deref(),
            Duration::from_secs(60),
        );
        if jwks_refresh_interval < Duration::from_secs(1) {
            self.err(
                format!("{key}.jwks_refresh_interval"),
                "must be at least 1s: every unknown key would otherwise cost a fetch",
            );
        }
        let tls_ca = c.tls_ca.as_ref().map(|p| resolve_path(&self.base, p));
        if let Some(ca) = &tls_ca
            && let Err(e) = crate::process::tls::read_pem_certs(ca, "CA file")
        {
            self.err(format!("{key}.tls_ca"), e);
        }
        Some(ProviderConfig {
            issuer: IssuerUrl::new(c.issuer.clone())
                .ok()
                .filter(|_| issuer.is_some())?,
            tls_ca,
            timeout,
            discovery_retry,
            jwks_refresh_interval,
        })
    }

    pub(super) fn oidc_bearer(
        &mut self,
        key: &str,
        r: raw::OidcBearer,
    ) -> Option<AuthenticatorConfig> {
        if r.audiences.is_empty() || r.audiences.iter().any(String::is_empty) {
            self.err(
                format!("{key}.audiences"),
                "list the `aud` values tokens for this gateway carry (at least one)",
            );
        }
        let leeway = self.duration(
            &format!("{key}.leeway"),
            r.leeway.as_deref(),
            Duration::from_secs(30),
        );
        if leeway > Duration::from_secs(300) {
            self.err(format!("{key}.leeway"), "must be at most 5m");
        }
        let common = Common {
            issuer: r.issuer,
            algorithms: r.algorithms,
            username_claim: r.username_claim,
            groups_claim: r.groups_claim,
            email_claim: r.email_claim,
            service_accounts: r.service_accounts,
            timeout: r.timeout,
            tls_ca: r.tls_ca,
            discovery_retry: r.discovery_retry,
            jwks_refresh_interval: r.jwks_refresh_interval,
        };
        let provider = self.oidc_provider(key, &common);
        let (algorithms, claims) = self.oidc_common(key, common);
        Some(AuthenticatorConfig::OidcBearer(BearerConfig {
            provider: provider?,
            audiences: r.audiences,
            algorithms,
            leeway,
            claims,
        }))
    }

    pub(super) fn oidc_login(
        &mut self,
        key: &str,
        r: raw::OidcLogin,
    ) -> Option<AuthenticatorConfig> {
        if r.client_id.is_empty() {
            self.err(format!("{key}.client_id"), "must not be empty");
        }
        if r.client_secret.is_none() && r.client_secret_file.is_none() {
            self.err(
                format!("{key}.client_secret_file"),
                "the client's secret is required (client_secret_file, or client_secret)",
            );
        }
        let client_secret = self.secret(
            key,
            ("client_secret", r.client_secret),
            ("client_secret_file", r.client_secret_file),
        );
        let redirect_url = self.oidc_url(&format!("{key}.redirect_url"), &r.redirect_url);
        if let Some(u) = &redirect_url
            && (u.path() != "/auth/callback" || u.query().is_some())
        {
            self.err(
                format!("{key}.redirect_url"),
                "must be this gateway's https://HOST[:PORT]/auth/callback",
            );
        }
        let post_logout_redirect_url = match &r.post_logout_redirect_url {
            None => None,
            Some(u) => self.oidc_url(&format!("{key}.post_logout_redirect_url"), u),
        };
        let mut scopes = r
            .scopes
            .unwrap_or_else(|| vec!["openid".into(), "profile".into(), "email".into()]);
        if !scopes.iter().any(|s| s == "openid") {
            scopes.insert(0, "openid".into());
        }
        if let Some(bad) = scopes
            .iter()
            .find(|s| s.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            self.err(
                format!("{key}.scopes"),
                format!("`{bad}` is not a scope (one word each)"),
            );
        }
        let mut duration = |field: &str, value: Option<String>, default: u64| {
            let d = self.duration(
                &format!("{key}.{field}"),
                value.as_deref(),
                Duration::from_secs(default),
            );
            if d < Duration::from_secs(1) {
                self.err(format!("{key}.{field}"), "must be at least 1s");
            }
            d
        };
        let lifetimes = Lifetimes {
            absolute: duration("session_lifetime", r.session_lifetime, 8 * 3600),
            idle: duration("session_idle", r.session_idle, 3600),
            refresh: duration("refresh_interval", r.refresh_interval, 300),
        };
        if lifetimes.idle > lifetimes.absolute {
            self.err(
                format!("{key}.session_idle"),
                "may not be longer than session_lifetime",
            );
        }
        let session_key = match &r.session_key_file {
            None => None,
            Some(p) => match read_key_file(&resolve_path(&self.base, p)) {
                Ok(k) => Some(SessionKeyBytes(k)),
                Err(e) => {
                    self.err(format!("{key}.session_key_file"), e);
                    None
                }
            },
        };
        let common = Common {
            issuer: r.issuer,
            algorithms: r.algorithms,
            username_claim: r.username_claim,
            groups_claim: r.groups_claim,
            email_claim: r.email_claim,
            service_accounts: BTreeMap::new(),
            timeout: r.timeout,
            tls_ca: r.tls_ca,
            discovery_retry: r.discovery_retry,
            jwks_refresh_interval: r.jwks_refresh_interval,
        };
        let provider = self.oidc_provider(key, &common);
        let (algorithms, claims) = self.oidc_common(key, common);
        Some(AuthenticatorConfig::OidcLogin(LoginConfig {
            provider: provider?,
            client_id: r.client_id,
            client_secret: client_secret?,
            redirect_url: redirect_url?,
            post_logout_redirect_url,
            scopes,
            algorithms,
            claims,
            lifetimes,
            session_key,
        }))
    }

    /// `/auth/callback` serves one browser login.
    pub(super) fn one_oidc_login(&mut self, auths: &BTreeMap<String, AuthenticatorConfig>) {
        let logins: Vec<&String> = auths
            .iter()
            .filter(|(_, a)| matches!(a, AuthenticatorConfig::OidcLogin(_)))
            .map(|(n, _)| n)
            .collect();
        for extra in logins.iter().skip(1) {
            self.err(
                format!("authenticators.{extra}.type"),
                format!(
                    "only one oidc_login authenticator may be configured (`{}` is one): \
                     /auth/callback serves one",
                    logins[0]
                ),
            );
        }
    }
}
