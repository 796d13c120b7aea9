//! Checks for `[authenticators.NAME]` (static users and LDAP here; keys, trusted headers,
//! client certificates and gateway JWTs in `keys.rs`; OIDC in `oidc.rs`), the secrets and
//! throttles they share, the lists of authenticator names, and `[gateway]`.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use super::Validator;
use crate::config::{AuthenticatorConfig, Gateway, Listener, Secret, raw, resolve_path};

impl Validator {
    pub(super) fn authenticator(
        &mut self,
        name: &str,
        a: raw::Authenticator,
    ) -> Option<AuthenticatorConfig> {
        let built = self.build_authenticator(name, a);
        if built.is_none() {
            self.failed_authenticators.insert(name.to_string());
        }
        built
    }

    fn build_authenticator(
        &mut self,
        name: &str,
        a: raw::Authenticator,
    ) -> Option<AuthenticatorConfig> {
        let key = format!("authenticators.{name}");
        Some(match a {
            raw::Authenticator::None => AuthenticatorConfig::None,
            a @ (raw::Authenticator::ApiKey { .. }
            | raw::Authenticator::TrustedHeader { .. }
            | raw::Authenticator::ClientCert { .. }
            | raw::Authenticator::GatewayJwt { .. }) => return self.key_authenticator(&key, a),
            raw::Authenticator::Static {
                users_file,
                realm,
                cache_ttl,
                max_failures,
                failure_window,
            } => {
                let users_file = resolve_path(&self.base, &users_file);
                let users = match crate::authenticate::static_users::load_users(&users_file) {
                    Ok(u) => u,
                    Err(e) => {
                        self.err(format!("{key}.users_file"), e);
                        return None;
                    }
                };
                let cache_ttl = self.duration(
                    &format!("{key}.cache_ttl"),
                    cache_ttl.as_deref(),
                    Duration::from_secs(300),
                );
                let realm = self.realm(&key, realm);
                let throttle = self.throttle(&key, max_failures, failure_window);
                AuthenticatorConfig::Static {
                    users_file,
                    users,
                    realm,
                    cache_ttl,
                    throttle,
                }
            }
            raw::Authenticator::Ldap {
                url,
                starttls,
                tls_ca,
                bind_dn,
                bind_password,
                bind_password_file,
                user_base,
                user_filter,
                user_dn_template,
                user_name_attribute,
                group_attribute,
                group_base,
                group_filter,
                group_name_attribute,
                email_attribute,
                timeout,
                pool_size,
                realm,
                cache_ttl,
                max_failures,
                failure_window,
            } => {
                use crate::authenticate::ldap::{GroupLookup, LdapConfig, UserLookup};
                if !(url.starts_with("ldap://") || url.starts_with("ldaps://")) {
                    self.err(
                        format!("{key}.url"),
                        format!("`{url}` must start with ldap:// or ldaps://"),
                    );
                }
                if starttls && url.starts_with("ldaps://") {
                    self.err(
                        format!("{key}.starttls"),
                        "StartTLS is for ldap:// URLs; ldaps:// is TLS already",
                    );
                }
                let tls_ca = tls_ca.map(|c| resolve_path(&self.base, &c));
                if let Some(ca) = &tls_ca
                    && let Err(e) = crate::process::tls::read_pem_certs(ca, "CA file")
                {
                    self.err(format!("{key}.tls_ca"), e);
                }
                let bind_password = self.secret(
                    &key,
                    ("bind_password", bind_password),
                    ("bind_password_file", bind_password_file),
                );
                if bind_dn.is_some() != bind_password.is_some() {
                    self.err(
                        format!("{key}.bind_dn"),
                        "bind_dn and a bind password go together",
                    );
                }
                let user = match (user_dn_template, user_base) {
                    (Some(t), None) if t.contains("{user}") => UserLookup::Template(t),
                    (Some(_), None) => {
                        self.err(format!("{key}.user_dn_template"), "must contain {user}");
                        return None;
                    }
                    (None, Some(base)) => {
                        let filter = user_filter.unwrap_or_else(|| "(uid={user})".into());
                        if !filter.contains("{user}") {
                            self.err(format!("{key}.user_filter"), "must contain {user}");
                        }
                        if bind_dn.is_none() {
                            self.err(
                                format!("{key}.bind_dn"),
                                "a user search needs a service account (bind_dn)",
                            );
                        }
                        UserLookup::Search { base, filter }
                    }
                    _ => {
                        self.err(
                            format!("{key}.user_base"),
                            "set user_base (search) or user_dn_template, exactly one",
                        );
                        return None;
                    }
                };
                let name_attribute = user_name_attribute.unwrap_or_else(|| "uid".into());
                if !ldap_attribute_name(&name_attribute) {
                    self.err(
                        format!("{key}.user_name_attribute"),
                        "an attribute name: a letter, then letters, digits and `-`",
                    );
                }
                let groups = match (group_base, group_filter) {
                    (Some(base), filter) => GroupLookup::Search {
                        base,
                        filter: filter.unwrap_or_else(|| "(member={dn})".into()),
                        name_attribute: group_name_attribute.unwrap_or_else(|| "cn".into()),
                    },
                    (None, Some(_)) => {
                        self.err(format!("{key}.group_filter"), "needs group_base");
                        return None;
                    }
                    (None, None) => {
                        GroupLookup::Attribute(group_attribute.unwrap_or_else(|| "memberOf".into()))
                    }
                };
                let timeout = self.duration(
                    &format!("{key}.timeout"),
                    timeout.as_deref(),
                    Duration::from_secs(5),
                );
                let cache_ttl = self.duration(
                    &format!("{key}.cache_ttl"),
                    cache_ttl.as_deref(),
                    Duration::from_secs(300),
                );
                let realm = self.realm(&key, realm);
                let throttle = self.throttle(&key, max_failures, failure_window);
                AuthenticatorConfig::Ldap(LdapConfig {
                    url,
                    starttls,
                    tls_ca,
                    bind_dn,
                    bind_password,
                    user,
                    groups,
                    name_attribute,
                    email_attribute: Some(email_attribute.unwrap_or_else(|| "mail".into())),
                    timeout,
                    pool_size: pool_size.unwrap_or(4).clamp(1, 64),
                    cache_ttl,
                    throttle,
                    realm,
                })
            }
            raw::Authenticator::OidcBearer(raw) => self.oidc_bearer(&key, raw)?,
            raw::Authenticator::OidcLogin(raw) => self.oidc_login(&key, raw)?,
        })
    }

    /// A secret given inline (with `${ENV}` references) or as a file, not both.
    pub(super) fn secret(
        &mut self,
        key: &str,
        (inline_name, inline): (&str, Option<String>),
        (file_name, file): (&str, Option<String>),
    ) -> Option<Secret> {
        let (field, value) = match (inline, file) {
            (None, None) => return None,
            (Some(_), Some(_)) => {
                self.err(
                    format!("{key}.{inline_name}"),
                    format!("set {inline_name} or {file_name}, not both"),
                );
                return None;
            }
            (Some(v), None) => (inline_name, crate::secret::expand_env(&v)),
            (None, Some(f)) => (
                file_name,
                crate::secret::read_secret_file(&resolve_path(&self.base, &f)),
            ),
        };
        match value {
            Ok(s) => Some(Secret::new(s)),
            Err(e) => {
                self.err(format!("{key}.{field}"), e);
                None
            }
        }
    }

    fn realm(&mut self, key: &str, realm: Option<String>) -> String {
        let realm = realm.unwrap_or_else(|| "hpcgate".into());
        if realm.contains('"') || realm.chars().any(|c| c.is_control()) {
            self.err(
                format!("{key}.realm"),
                "may not contain quotes or control characters",
            );
        }
        realm
    }

    fn throttle(
        &mut self,
        key: &str,
        max_failures: Option<u32>,
        window: Option<String>,
    ) -> crate::authenticate::password::ThrottleConfig {
        let d = crate::authenticate::password::ThrottleConfig::default();
        let window = self.duration(
            &format!("{key}.failure_window"),
            window.as_deref(),
            d.window,
        );
        let max_failures = max_failures.unwrap_or(d.max_failures);
        if max_failures == 0 {
            self.err(format!("{key}.max_failures"), "must be at least 1");
        }
        crate::authenticate::password::ThrottleConfig {
            max_failures,
            window,
        }
    }

    /// Checks a list of authenticator names. `may_be_empty` for optional endpoints.
    pub(super) fn auth_list(
        &mut self,
        key: &str,
        names: &[String],
        known: &BTreeMap<String, AuthenticatorConfig>,
        may_be_empty: bool,
    ) {
        if names.is_empty() && !may_be_empty {
            self.err(
                key,
                "at least one authenticator is required (use an authenticator of type \"none\" \
                 for a public route)",
            );
        }
        let mut seen = HashSet::new();
        for (i, n) in names.iter().enumerate() {
            if !seen.insert(n) {
                self.err(format!("{key}[{i}]"), format!("`{n}` is listed twice"));
            }
            match known.get(n) {
                // Reported already where it is defined.
                None if self.failed_authenticators.contains(n) => {}
                None => self.err(
                    format!("{key}[{i}]"),
                    format!("unknown authenticator `{n}`"),
                ),
                Some(AuthenticatorConfig::None) if names.len() > 1 => self.err(
                    format!("{key}[{i}]"),
                    format!(
                        "`{n}` is of type none (public) and cannot be combined with other \
                         authenticators: failed credentials would pass as anonymous"
                    ),
                ),
                Some(_) => {}
            }
        }
    }

    /// `[gateway]`: who may call `/-/whoami` (and `/-/metrics`, unless it is public).
    pub(super) fn gateway(
        &mut self,
        raw: raw::Gateway,
        authenticators: &BTreeMap<String, AuthenticatorConfig>,
    ) -> Gateway {
        let gateway = Gateway {
            authenticators: raw.authenticators,
            metrics_public: raw.metrics_public,
        };
        self.auth_list(
            "gateway.authenticators",
            &gateway.authenticators,
            authenticators,
            true,
        );
        for (i, n) in gateway.authenticators.iter().enumerate() {
            if matches!(authenticators.get(n), Some(AuthenticatorConfig::None)) {
                self.err(
                    format!("gateway.authenticators[{i}]"),
                    "/-/whoami needs an authenticator that proves who the caller is, not none",
                );
            }
        }
        gateway
    }

    /// A `client_cert` authenticator needs a listener that asks for client certificates.
    pub(super) fn client_cert_listener(
        &mut self,
        listeners: &[Listener],
        authenticators: &BTreeMap<String, AuthenticatorConfig>,
    ) {
        if !listeners.iter().any(|l| l.client_ca.is_some())
            && let Some((name, _)) = authenticators
                .iter()
                .find(|(_, a)| matches!(a, AuthenticatorConfig::ClientCert { .. }))
        {
            self.err(
                format!("authenticators.{name}"),
                "client_cert needs a listener with client_ca, or no client ever shows a certificate",
            );
        }
    }
}

/// An LDAP attribute description as RFC 4512 spells a name (`uid`, `sAMAccountName`).
fn ldap_attribute_name(a: &str) -> bool {
    a.starts_with(|c: char| c.is_ascii_alphabetic())
        && a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}
