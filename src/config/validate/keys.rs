//! Checks for the database, `[tokens]`, and the authenticators built on them: `api_key`,
//! `trusted_header`, `gateway_jwt`.

use std::collections::BTreeMap;
use std::time::Duration;

use super::Validator;
use crate::authenticate::headers::normalize_header_name;
use crate::config::{AuthenticatorConfig, Tokens, TrustedHeader, raw};
use crate::db::{Backend, DbConfig};

impl Validator {
    pub(super) fn database(&mut self, raw: raw::Database, state_dir: &std::path::Path) -> DbConfig {
        let mut cfg = DbConfig::sqlite_in(state_dir);
        if let Some(url) = self.secret("database", ("url", raw.url), ("url_file", raw.url_file)) {
            match Backend::of(url.expose()) {
                Some(backend) => {
                    cfg.backend = backend;
                    cfg.url = url;
                }
                None => self.err(
                    "database.url",
                    "must start with sqlite:// or postgres:// (the value is not shown: it may \
                     hold a password)",
                ),
            }
        }
        if let Some(n) = raw.max_connections {
            if n == 0 || n > 1000 {
                self.err("database.max_connections", "must be between 1 and 1000");
            } else {
                cfg.max_connections = n;
            }
        }
        cfg.timeout = self.duration("database.timeout", raw.timeout.as_deref(), cfg.timeout);
        cfg
    }

    pub(super) fn tokens(&mut self, raw: raw::Tokens) -> Tokens {
        let ttl = self.duration("tokens.ttl", raw.ttl.as_deref(), Duration::from_secs(3600));
        if ttl < Duration::from_secs(60) || ttl > Duration::from_secs(24 * 3600) {
            self.err("tokens.ttl", "must be between 1m and 24h");
        }
        let mut text = |key: &str, v: Option<String>| {
            let v = v.unwrap_or_else(|| "hpcgate".into());
            if v.is_empty() || v.chars().any(char::is_control) {
                self.err(format!("tokens.{key}"), "must be non-empty text");
            }
            v
        };
        Tokens {
            issuer: text("issuer", raw.issuer),
            audience: text("audience", raw.audience),
            authenticators: raw.authenticators,
            ttl,
        }
    }

    /// The authenticator types that need no other authenticator.
    pub(super) fn key_authenticator(
        &mut self,
        key: &str,
        a: raw::Authenticator,
    ) -> Option<AuthenticatorConfig> {
        Some(match a {
            raw::Authenticator::ApiKey { cache_ttl } => {
                let cache_ttl = self.duration(
                    &format!("{key}.cache_ttl"),
                    cache_ttl.as_deref(),
                    Duration::from_millis(500),
                );
                if cache_ttl > Duration::from_secs(1) {
                    self.err(
                        format!("{key}.cache_ttl"),
                        "must be at most 1s, so that a revoked key stops working within a second",
                    );
                }
                AuthenticatorConfig::ApiKey { cache_ttl }
            }
            raw::Authenticator::GatewayJwt { audience } => {
                if audience.as_deref().is_some_and(str::is_empty) {
                    self.err(format!("{key}.audience"), "must be non-empty");
                }
                AuthenticatorConfig::GatewayJwt { audience }
            }
            raw::Authenticator::TrustedHeader {
                authenticator,
                services,
                header,
                source_networks,
                allow_privileged_users,
            } => {
                for (i, u) in allow_privileged_users.iter().enumerate() {
                    if !crate::authenticate::static_users::valid_user_name(u) {
                        self.err(
                            format!("{key}.allow_privileged_users[{i}]"),
                            "not a valid user name",
                        );
                    }
                }
                if services.is_empty() {
                    self.err(
                        format!("{key}.services"),
                        "name at least one trusted service",
                    );
                }
                let header = header.unwrap_or_else(|| "X-Grafana-User".into());
                let header =
                    match http::HeaderName::from_bytes(normalize_header_name(&header).as_bytes()) {
                        Ok(h) => h,
                        Err(_) => {
                            self.err(
                                format!("{key}.header"),
                                format!("`{header}` is not a header name"),
                            );
                            return None;
                        }
                    };
                let mut nets = Vec::new();
                for (i, n) in source_networks.iter().enumerate() {
                    // A bare address is a one-address network.
                    let parsed = n
                        .parse::<ipnet::IpNet>()
                        .or_else(|_| n.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
                    match parsed {
                        Ok(net) => nets.push(net.trunc()),
                        Err(_) => self.err(
                            format!("{key}.source_networks[{i}]"),
                            format!("`{n}` is not a network like 10.0.0.0/8 or ::1/128"),
                        ),
                    }
                }
                AuthenticatorConfig::TrustedHeader(TrustedHeader {
                    authenticator,
                    services,
                    header,
                    source_networks: nets,
                    allow_privileged_users,
                })
            }
            raw::Authenticator::ClientCert { certificates } => {
                if certificates.is_empty() {
                    self.err(
                        format!("{key}.certificates"),
                        "pin at least one certificate",
                    );
                }
                let mut pinned = BTreeMap::new();
                for (service, fp) in certificates {
                    if !crate::authenticate::static_users::valid_user_name(&service) {
                        self.err(
                            format!("{key}.certificates.{service}"),
                            "the service name must be a valid user name",
                        );
                    }
                    match parse_fingerprint(&fp) {
                        Some(d) => {
                            pinned.insert(service, d);
                        }
                        None => self.err(
                            format!("{key}.certificates.{service}"),
                            "not a SHA-256 fingerprint (64 hex digits, colons allowed)",
                        ),
                    }
                }
                AuthenticatorConfig::ClientCert {
                    certificates: pinned,
                }
            }
            _ => return None,
        })
    }

    /// Checks between authenticators and `[tokens]`, once all are known.
    pub(super) fn cross_check_keys(
        &mut self,
        auths: &BTreeMap<String, AuthenticatorConfig>,
        tokens: &Tokens,
    ) {
        for (name, a) in auths {
            let AuthenticatorConfig::TrustedHeader(t) = a else {
                continue;
            };
            let key = format!("authenticators.{name}.authenticator");
            match auths.get(&t.authenticator) {
                None if self.failed_authenticators.contains(&t.authenticator) => {}
                None => self.err(key, format!("unknown authenticator `{}`", t.authenticator)),
                Some(AuthenticatorConfig::None | AuthenticatorConfig::TrustedHeader(_)) => self
                    .err(
                        key,
                        "must be an authenticator that proves the service (api_key, static, ldap, \
                     gateway_jwt), not none or another trusted_header",
                    ),
                Some(_) => {}
            }
        }
        for (i, n) in tokens.authenticators.iter().enumerate() {
            let key = format!("tokens.authenticators[{i}]");
            match auths.get(n) {
                None if self.failed_authenticators.contains(n) => {}
                None => self.err(key, format!("unknown authenticator `{n}`")),
                Some(AuthenticatorConfig::Static { .. } | AuthenticatorConfig::Ldap(_)) => {}
                Some(other) => self.err(
                    key,
                    format!(
                        "`{n}` is of type {}; tokens are issued for passwords only (static or \
                         ldap), so a token can never mint the next one",
                        other.kind()
                    ),
                ),
            }
        }
    }
}

/// `AB:CD:…` or `abcd…` (SHA-256, 32 bytes).
fn parse_fingerprint(fp: &str) -> Option<[u8; 32]> {
    let hex: String = fp.chars().filter(|c| *c != ':').collect();
    let hex = hex.strip_prefix("sha256:").unwrap_or(&hex).to_string();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}
