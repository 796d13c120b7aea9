//! From verified token claims to an [`Identity`]: which claim names the user, which the
//! groups (a list, or a nested path such as `realm_access.roles`), which the e-mail, and
//! which client tokens are service accounts.
//!
//! Everything here takes claims that a signature check has already accepted; nothing reads
//! a token itself.

use std::collections::BTreeMap;

use serde_json::Value;

use super::super::{Identity, Method};
use crate::authenticate::static_users::valid_user_name;

/// A claim named by a dotted path: `groups`, `realm_access.roles`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimPath(Vec<String>);

impl ClaimPath {
    /// `None` when a segment is empty (`a..b`, `.a`, ``).
    pub fn parse(path: &str) -> Option<ClaimPath> {
        let segments: Vec<String> = path.split('.').map(str::to_string).collect();
        (!segments.iter().any(String::is_empty)).then_some(ClaimPath(segments))
    }

    fn find<'a>(&self, claims: &'a Value) -> Option<&'a Value> {
        self.0.iter().try_fold(claims, |v, segment| v.get(segment))
    }

    /// The claim as one string (`None` if absent or not a string).
    pub fn string<'a>(&self, claims: &'a Value) -> Option<&'a str> {
        self.find(claims)?.as_str()
    }

    /// The claim as a list of strings: a JSON list (non-strings skipped) or one string.
    pub fn strings<'a>(&self, claims: &'a Value) -> Vec<&'a str> {
        match self.find(claims) {
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
            Some(Value::String(s)) => vec![s.as_str()],
            _ => Vec::new(),
        }
    }

    pub fn is_sub(&self) -> bool {
        self.0.len() == 1 && self.0[0] == "sub"
    }
}

impl std::fmt::Display for ClaimPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join("."))
    }
}

/// Which claims make the identity.
#[derive(Debug, Clone)]
pub struct ClaimsConfig {
    pub username: ClaimPath,
    /// `None`: the token's groups are not used.
    pub groups: Option<ClaimPath>,
    pub email: Option<ClaimPath>,
    /// Client id → service account name, for client-credentials tokens.
    pub service_accounts: BTreeMap<String, String>,
}

impl ClaimsConfig {
    /// The identity verified `claims` name, or why they name none (a message for the client).
    pub fn identity(
        &self,
        claims: &Value,
        method: Method,
        authenticator: &str,
    ) -> Result<Identity, String> {
        let client = ["client_id", "azp"]
            .iter()
            .find_map(|c| claims.get(c).and_then(Value::as_str));
        let subject = claims.get("sub").and_then(Value::as_str);
        let user = self.username.string(claims);
        // A client's own token (client credentials) has the client as its subject (RFC 9068
        // §2.2) and names no other user. A user's token that merely lacks the user-name
        // claim is not one: it names nobody, whichever client obtained it.
        let client_token = match (client, subject) {
            (Some(c), Some(s)) => s == c && (user.is_none() || user == Some(c)),
            _ => false,
        };
        let user = match (client_token, client) {
            (true, Some(c)) => match self.service_accounts.get(c) {
                Some(account) => account.clone(),
                None => {
                    return Err(format!(
                        "the token names no user (claim `{}`) and its client is not a \
                         configured service account",
                        self.username
                    ));
                }
            },
            _ => match user {
                // A service account's name is only ever its client's own token.
                Some(u) if self.service_accounts.values().any(|a| a == u) => {
                    return Err(format!(
                        "the token's user (claim `{}`) is a service account, which only its \
                         client's own tokens can be",
                        self.username
                    ));
                }
                Some(u) if valid_user_name(u) => u.to_string(),
                Some(_) => {
                    return Err(format!(
                        "the token's user name (claim `{}`) has characters the gateway does \
                         not accept",
                        self.username
                    ));
                }
                None => {
                    return Err(format!(
                        "the token names no user (claim `{}` is missing)",
                        self.username
                    ));
                }
            },
        };
        let mut groups: Vec<String> = match &self.groups {
            None => Vec::new(),
            // Names that cannot be carried are dropped by `Identity::new`.
            Some(path) => path
                .strings(claims)
                .into_iter()
                .map(str::to_string)
                .collect(),
        };
        groups.sort();
        groups.dedup();
        let email = self
            .email
            .as_ref()
            .and_then(|p| p.string(claims))
            .filter(|e| !e.is_empty() && e.len() <= 256 && !e.chars().any(char::is_control))
            .map(str::to_string);
        Ok(Identity::new(user, groups, email, method, authenticator))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn config(username: &str, groups: &str) -> ClaimsConfig {
        ClaimsConfig {
            username: ClaimPath::parse(username).unwrap(),
            groups: ClaimPath::parse(groups),
            email: ClaimPath::parse("email"),
            service_accounts: [("ceems-ingest".to_string(), "svc-ceems".to_string())].into(),
        }
    }

    #[test]
    fn paths_reach_nested_claims_and_reject_empty_segments() {
        let c = json!({"realm_access": {"roles": ["hpc-users", 7, "hpc-admins"]}, "g": "one"});
        let p = ClaimPath::parse("realm_access.roles").unwrap();
        assert_eq!(p.strings(&c), vec!["hpc-users", "hpc-admins"]);
        assert_eq!(ClaimPath::parse("g").unwrap().strings(&c), vec!["one"]);
        assert!(
            ClaimPath::parse("missing.x")
                .unwrap()
                .strings(&c)
                .is_empty()
        );
        for bad in ["", ".a", "a..b", "a."] {
            assert!(ClaimPath::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn users_come_from_the_configured_claim() {
        let claims = json!({"sub": "f:123", "preferred_username": "alice", "username": "al",
            "email": "alice@example.org", "groups": ["b", "a", "a", "x,y", "c\n"],
            "client_id": "portal"});
        let id = config("preferred_username", "groups")
            .identity(&claims, Method::OidcBearer, "idp")
            .unwrap();
        assert_eq!(id.user(), "alice");
        assert_eq!(id.groups(), ["a", "b"]);
        assert_eq!(id.email(), Some("alice@example.org"));
        let id = config("username", "groups")
            .identity(&claims, Method::OidcBearer, "idp")
            .unwrap();
        assert_eq!(id.user(), "al");
        // `f:123` has a character user names may not have.
        assert!(
            config("sub", "groups")
                .identity(&claims, Method::OidcBearer, "i")
                .is_err()
        );
        assert!(
            config("nickname", "groups")
                .identity(&claims, Method::OidcBearer, "i")
                .is_err()
        );
    }

    #[test]
    fn client_tokens_map_to_service_accounts_and_nothing_else() {
        let cc = json!({"sub": "ceems-ingest", "client_id": "ceems-ingest"});
        let id = config("preferred_username", "groups")
            .identity(&cc, Method::OidcBearer, "idp")
            .unwrap();
        assert_eq!(id.user(), "svc-ceems");
        // With `sub` as the user claim, the client's own subject is still the client.
        let id = config("sub", "groups")
            .identity(&cc, Method::OidcBearer, "i")
            .unwrap();
        assert_eq!(id.user(), "svc-ceems");
        // A user's token obtained through that client stays the user's.
        let user = json!({"sub": "bob", "preferred_username": "bob", "azp": "ceems-ingest"});
        let id = config("preferred_username", "groups")
            .identity(&user, Method::OidcBearer, "i")
            .unwrap();
        assert_eq!(id.user(), "bob");
        // An unlisted client gets nothing.
        let other = json!({"sub": "other", "client_id": "other"});
        let err = config("preferred_username", "groups")
            .identity(&other, Method::OidcBearer, "i")
            .unwrap_err();
        assert!(err.contains("service account"), "{err}");
    }

    #[test]
    fn a_user_token_without_the_user_claim_is_no_service_account() {
        // Obtained through the service account's client, but its subject is a user.
        let user = json!({"sub": "bob", "azp": "ceems-ingest", "client_id": "ceems-ingest"});
        let err = config("preferred_username", "groups")
            .identity(&user, Method::OidcBearer, "i")
            .unwrap_err();
        assert!(err.contains("names no user"), "{err}");
        // No subject at all: nobody.
        let bare = json!({"client_id": "ceems-ingest"});
        assert!(
            config("preferred_username", "groups")
                .identity(&bare, Method::OidcBearer, "i")
                .is_err()
        );
        // The client's own token names the client as subject and no other user.
        let own = json!({"sub": "ceems-ingest", "client_id": "ceems-ingest",
            "preferred_username": "alice"});
        let id = config("preferred_username", "groups")
            .identity(&own, Method::OidcBearer, "i")
            .unwrap();
        assert_eq!(id.user(), "alice", "a user named by the token is that user");
    }

    #[test]
    fn a_user_token_cannot_name_a_service_account() {
        let user = json!({"sub": "u-1", "preferred_username": "svc-ceems", "azp": "portal"});
        let err = config("preferred_username", "groups")
            .identity(&user, Method::OidcBearer, "i")
            .unwrap_err();
        assert!(err.contains("service account"), "{err}");
    }
}
