//! The checked `[authenticators.NAME]` sections, one variant per `type`. Built by `config/`
//! validation; [`crate::authenticate::Authenticators::build`] turns each into a running
//! authenticator.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::authenticate::static_users::StaticUser;

/// One checked `[authenticators.NAME]`, by `type`.
#[allow(
    clippy::large_enum_variant,
    reason = "built once per config load; boxing would only add noise"
)]
#[derive(Debug, Clone)]
pub enum AuthenticatorConfig {
    None,
    Static {
        users_file: PathBuf,
        users: Vec<StaticUser>,
        realm: String,
        cache_ttl: Duration,
        throttle: crate::authenticate::password::ThrottleConfig,
    },
    Ldap(crate::authenticate::ldap::LdapConfig),
    ApiKey {
        cache_ttl: Duration,
    },
    TrustedHeader(TrustedHeader),
    /// Service name → SHA-256 of its certificate (DER).
    ClientCert {
        certificates: BTreeMap<String, [u8; 32]>,
    },
    GatewayJwt {
        /// `None`: `[tokens] audience`.
        audience: Option<String>,
    },
    OidcBearer(crate::authenticate::oidc::BearerConfig),
    OidcLogin(crate::authenticate::oidc::LoginConfig),
}

impl AuthenticatorConfig {
    /// The `type` as written in the config.
    pub fn kind(&self) -> &'static str {
        match self {
            AuthenticatorConfig::None => "none",
            AuthenticatorConfig::Static { .. } => "static",
            AuthenticatorConfig::Ldap(_) => "ldap",
            AuthenticatorConfig::ApiKey { .. } => "api_key",
            AuthenticatorConfig::TrustedHeader(_) => "trusted_header",
            AuthenticatorConfig::ClientCert { .. } => "client_cert",
            AuthenticatorConfig::GatewayJwt { .. } => "gateway_jwt",
            AuthenticatorConfig::OidcBearer(_) => "oidc_bearer",
            AuthenticatorConfig::OidcLogin(_) => "oidc_login",
        }
    }
}

/// A trusted service acting for users (`type = "trusted_header"`).
#[derive(Debug, Clone)]
pub struct TrustedHeader {
    pub authenticator: String,
    pub services: Vec<String>,
    pub header: http::HeaderName,
    /// Empty: from anywhere.
    pub source_networks: Vec<ipnet::IpNet>,
    /// Privileged users (`Config::privileged_users`) the services may act for all the same.
    pub allow_privileged_users: Vec<String>,
}
