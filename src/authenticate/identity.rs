//! [`Identity`]: who made a request, as proven by an authenticator.
//!
//! Only code in `authenticate/` can make one (the constructor is `pub(super)`); there is no
//! anonymous identity and no way to deserialize one from client input.

use serde::Serialize;

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Identity {
    user: String,
    groups: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<String>,
    /// Which authenticator kind proved it (`static`, `ldap`, `api_key`, …).
    method: &'static str,
    /// The authenticator's configured name.
    authenticator: String,
    /// A trusted service acting for `user` (e.g. `grafana`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    via: Option<String>,
}

impl Identity {
    pub(super) fn new(
        user: String,
        groups: Vec<String>,
        email: Option<String>,
        method: &'static str,
        authenticator: &str,
    ) -> Self {
        Identity {
            user,
            groups,
            email,
            method,
            authenticator: authenticator.to_string(),
            via: None,
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
    pub fn method(&self) -> &'static str {
        self.method
    }
    pub fn authenticator(&self) -> &str {
        &self.authenticator
    }
    pub fn via(&self) -> Option<&str> {
        self.via.as_deref()
    }

    /// An identity for unit tests of later steps.
    #[cfg(test)]
    pub fn for_test(user: &str, groups: &[&str]) -> Self {
        Identity::new(
            user.to_string(),
            groups.iter().map(|g| g.to_string()).collect(),
            None,
            "test",
            "test",
        )
    }
}
