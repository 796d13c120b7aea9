//! [`Identity`]: who made a request, as proven by an authenticator.
//!
//! Only code in `authenticate/` can make one (the constructor is `pub(super)`); there is no
//! anonymous identity and no way to deserialize one from client input.
//!
//! Group names are checked here, once, whatever proved them (a users file, LDAP, an API key,
//! a token's claims): they travel in one comma-separated header, into Cedar entities and into
//! PromQL label matchers, so a name that cannot be carried intact is dropped (with a warning
//! naming the authenticator) rather than passed on to mean something else.

use std::fmt;

use serde::{Serialize, Serializer};

/// How an [`Identity`] was proven: one variant per kind of authenticator that makes
/// identities. Later steps decide on it (which bearer tokens may go upstream), so it is an
/// enum they match exhaustively: a new way of authenticating must be placed in each of those
/// decisions rather than fall into a default.
///
/// Written as the authenticator's config `type` ([`Method::as_str`]) everywhere it leaves the
/// gateway: `/-/whoami`, the access and audit logs, Cedar's `method` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// A users file (`type = "static"`).
    Static,
    /// An LDAP bind (`type = "ldap"`).
    Ldap,
    /// One of the gateway's API keys (`type = "api_key"`).
    ApiKey,
    /// A trusted service acting for a user (`type = "trusted_header"`).
    TrustedHeader,
    /// A TLS client certificate (`type = "client_cert"`).
    ClientCert,
    /// A token the gateway issued (`type = "gateway_jwt"`).
    GatewayJwt,
    /// An IdP's access token (`type = "oidc_bearer"`).
    OidcBearer,
    /// The browser session cookie set after an OIDC login (`type = "oidc_login"`).
    OidcLogin,
}

impl Method {
    /// The authenticator's config `type`, as logs, `/-/whoami` and Cedar show it.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Static => "static",
            Method::Ldap => "ldap",
            Method::ApiKey => "api_key",
            Method::TrustedHeader => "trusted_header",
            Method::ClientCert => "client_cert",
            Method::GatewayJwt => "gateway_jwt",
            Method::OidcBearer => "oidc_bearer",
            Method::OidcLogin => "oidc_login",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// As the string [`Method::as_str`] gives, so `/-/whoami` keeps its `"method": "static"`.
impl Serialize for Method {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Identity {
    user: String,
    groups: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<String>,
    /// Which authenticator kind proved it.
    method: Method,
    /// The authenticator's configured name.
    authenticator: String,
    /// A trusted service acting for `user` (e.g. `grafana`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    via: Option<String>,
    /// Route names or kinds this credential is limited to (API keys); empty: no limit.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    scopes: Vec<String>,
    /// When the credential stops being valid (Unix seconds), if it says.
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<i64>,
    /// Proven only by a cookie the browser sends by itself (the `oidc_login` session): a
    /// state-changing request must also prove it comes from the gateway's own pages.
    #[serde(skip)]
    by_cookie: bool,
}

/// Whether a group name can be carried intact: 1 to 256 bytes, no comma (the groups header is
/// comma-separated), no control character (headers, log lines and cache keys), and no
/// leading or trailing white space (the accounting service trims what it splits, so
/// ` hpc-admins` would become `hpc-admins` there).
pub fn usable_group(g: &str) -> bool {
    !g.is_empty()
        && g.len() <= 256
        && !g.contains(',')
        && !g.chars().any(char::is_control)
        && !g.starts_with(char::is_whitespace)
        && !g.ends_with(char::is_whitespace)
}

/// `groups` without the names [`usable_group`] refuses; each one dropped is logged (escaped:
/// it may hold control characters) with the authenticator that produced it.
fn usable_groups(groups: Vec<String>, method: Method, authenticator: &str) -> Vec<String> {
    groups
        .into_iter()
        .filter(|g| {
            let ok = usable_group(g);
            if !ok {
                tracing::warn!(
                    authenticator,
                    method = method.as_str(),
                    group = ?g,
                    "group name dropped: empty, too long, or holds a comma, a control \
                     character or surrounding white space"
                );
            }
            ok
        })
        .collect()
}

impl Identity {
    pub(super) fn new(
        user: String,
        groups: Vec<String>,
        email: Option<String>,
        method: Method,
        authenticator: &str,
    ) -> Self {
        let groups = usable_groups(groups, method, authenticator);
        Identity {
            user,
            groups,
            email,
            method,
            authenticator: authenticator.to_string(),
            via: None,
            scopes: Vec::new(),
            expires_at: None,
            by_cookie: false,
        }
    }

    pub(super) fn with_session_cookie(mut self) -> Self {
        self.by_cookie = true;
        self
    }

    pub(super) fn with_scopes(mut self, scopes: Vec<String>) -> Self {
        self.scopes = scopes;
        self
    }

    pub(super) fn with_expiry(mut self, expires_at: Option<i64>) -> Self {
        self.expires_at = expires_at;
        self
    }

    /// `self` (a trusted service) acting for `user`, who gets no groups of the service's:
    /// the identity records both, and keeps the service credential's scopes and expiry.
    pub(super) fn acting_for(self, user: String, authenticator: &str) -> Identity {
        Identity {
            user,
            groups: Vec::new(),
            email: None,
            method: Method::TrustedHeader,
            authenticator: authenticator.to_string(),
            via: Some(self.user),
            scopes: self.scopes,
            expires_at: self.expires_at,
            by_cookie: self.by_cookie,
        }
    }

    pub fn user(&self) -> &str {
        &self.user
    }
    pub fn groups(&self) -> &[String] {
        &self.groups
    }
    pub fn email(&self) -> Option<&str> {
        self.email.as_deref()
    }
    pub fn method(&self) -> Method {
        self.method
    }
    pub fn authenticator(&self) -> &str {
        &self.authenticator
    }
    pub fn via(&self) -> Option<&str> {
        self.via.as_deref()
    }
    pub fn scopes(&self) -> &[String] {
        &self.scopes
    }
    pub fn expires_at(&self) -> Option<i64> {
        self.expires_at
    }
    /// Whether only the browser session cookie (`oidc_login`) proved it.
    pub fn by_cookie(&self) -> bool {
        self.by_cookie
    }

    /// An identity proven by `method`, for unit tests of later steps.
    #[cfg(test)]
    pub fn for_test_by(user: &str, method: Method) -> Self {
        Identity::new(user.to_string(), Vec::new(), None, method, method.as_str())
    }

    /// An identity proven by the browser session cookie, for unit tests of later steps.
    #[cfg(test)]
    pub fn for_test_by_cookie(user: &str) -> Self {
        Identity::new(user.to_string(), Vec::new(), None, Method::OidcLogin, "sso")
            .with_session_cookie()
    }

    /// An identity limited to `scopes` (an API key's), for unit tests of later steps.
    #[cfg(test)]
    pub fn for_test_scoped(user: &str, groups: &[&str], scopes: &[&str]) -> Self {
        Identity::for_test(user, groups).with_scopes(scopes.iter().map(|s| s.to_string()).collect())
    }

    /// An identity for unit tests of later steps (groups go through the same check): a user
    /// of a users file (`static`) named `test`.
    #[cfg(test)]
    pub fn for_test(user: &str, groups: &[&str]) -> Self {
        Identity::new(
            user.to_string(),
            groups.iter().map(|g| g.to_string()).collect(),
            None,
            Method::Static,
            "test",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusable_group_names_are_dropped_wherever_an_identity_is_made() {
        let groups = [
            "hpc-users",
            "",
            "a,b",
            "x\ny",
            "tab\there",
            "del\u{7f}",
            " hpc-admins",
            "hpc-admins ",
            "Forschung Müller",
            &"g".repeat(257),
        ];
        let id = Identity::new(
            "alice".into(),
            groups.iter().map(|g| g.to_string()).collect(),
            None,
            Method::Static,
            "users",
        );
        assert_eq!(id.groups(), ["hpc-users", "Forschung Müller"]);
        assert!(usable_group(&"g".repeat(256)));
    }

    /// `/-/whoami`, the logs and Cedar policies show the method as the config's `type`: the
    /// enum must not change what they say.
    #[test]
    fn methods_read_as_the_config_types_they_were_before() {
        for (method, text) in [
            (Method::Static, "static"),
            (Method::Ldap, "ldap"),
            (Method::ApiKey, "api_key"),
            (Method::TrustedHeader, "trusted_header"),
            (Method::ClientCert, "client_cert"),
            (Method::GatewayJwt, "gateway_jwt"),
            (Method::OidcBearer, "oidc_bearer"),
            (Method::OidcLogin, "oidc_login"),
        ] {
            assert_eq!(method.as_str(), text);
            assert_eq!(method.to_string(), text);
            assert_eq!(
                serde_json::to_string(&method).unwrap(),
                format!("\"{text}\"")
            );
        }
        let id = Identity::for_test_by("alice", Method::ApiKey);
        assert_eq!(
            serde_json::to_value(&id).unwrap()["method"],
            serde_json::json!("api_key")
        );
    }
}
