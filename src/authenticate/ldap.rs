//! The `ldap` authenticator: HTTP Basic → find the user's DN (service bind + search, or a DN
//! template) → bind as the user → groups from `memberOf` or a group search.
//!
//! User input is escaped in filters (RFC 4515) and DNs (RFC 4514), and user names are
//! restricted before any of that. Connections are pooled (a few, reused). Successes are
//! cached and failures throttled (`password.rs`). A directory that cannot answer within the
//! timeout is a 503: never a 200, never anonymous, never "wrong password".
//!
//! The identity carries the directory's spelling of the name (`name_attribute`, `uid` by
//! default), not what was typed: a directory matches `BOB` to `bob`, and `BOB` must not be a
//! second user for policy, rate limits, PromQL enforcement or accounting. A user the search
//! does not find costs a bind all the same (to a DN that cannot exist), so the number of
//! round trips does not tell which names exist.

use std::time::Duration;

use async_trait::async_trait;
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, Scope, SearchEntry};
use tokio::sync::{Mutex, Semaphore};

use super::password::{PasswordGuard, Refusal, ThrottleConfig};
use super::{Authenticator, Identity, Method, Outcome, RequestInfo, basic_challenge};
use crate::error::Rejection;
use crate::secret::Secret;

/// How the user's DN is found.
#[derive(Debug, Clone)]
pub enum UserLookup {
    /// Service bind, then search `base` with `filter` (`{user}` is replaced, escaped).
    Search { base: String, filter: String },
    /// `uid={user},ou=people,…` (`{user}` is replaced, DN-escaped); no service bind needed
    /// unless groups are searched.
    Template(String),
}

/// Where groups come from.
#[derive(Debug, Clone)]
pub enum GroupLookup {
    /// An attribute of the user entry holding group DNs (`memberOf`); the group name is the
    /// value of the DN's first RDN (`cn=hpc-admins,…` → `hpc-admins`).
    Attribute(String),
    /// Search `base` with `filter` (`{dn}` and `{user}` replaced, escaped); the name is the
    /// `name_attribute` (default `cn`) of each entry found.
    Search {
        base: String,
        filter: String,
        name_attribute: String,
    },
}

#[derive(Debug, Clone)]
pub struct LdapConfig {
    pub url: String,
    pub starttls: bool,
    /// PEM CA bundle for ldaps:// and StartTLS (default: the system roots).
    pub tls_ca: Option<std::path::PathBuf>,
    pub bind_dn: Option<String>,
    pub bind_password: Option<Secret>,
    pub user: UserLookup,
    pub groups: GroupLookup,
    /// The attribute of the user entry holding the user's name as the gateway uses it.
    pub name_attribute: String,
    pub email_attribute: Option<String>,
    pub timeout: Duration,
    pub pool_size: usize,
    pub cache_ttl: Duration,
    pub throttle: ThrottleConfig,
    pub realm: String,
}

pub struct LdapAuth {
    name: String,
    cfg: LdapConfig,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    guard: PasswordGuard,
    /// Idle connections, and a bound on how many are in use.
    idle: Mutex<Vec<Ldap>>,
    slots: Semaphore,
}

/// Why a lookup failed, before it becomes an HTTP answer.
enum Failure {
    /// The user does not exist in the directory.
    NoSuchUser,
    /// Wrong password (LDAP result 49).
    BadPassword,
    /// The directory could not answer (down, slow, protocol error, misconfigured bind).
    Unavailable(String),
}

fn unavailable(e: impl std::fmt::Display) -> Failure {
    Failure::Unavailable(e.to_string())
}

/// The value of a DN's first RDN: `cn=hpc-admins,ou=groups,…` → `hpc-admins`, with RFC 4514
/// escapes undone (`cn=a\,b,…` → `a,b`, which `Identity` then drops). `None` for a
/// multi-valued RDN (`cn=a+uid=b`) or anything unparsable: no guessing at group names.
fn first_rdn_value(dn: &str) -> Option<String> {
    let (_, rest) = dn.split_once('=')?;
    let mut value: Vec<u8> = Vec::new();
    let mut bytes = rest.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b',' => break,
            b'+' => return None,
            b'\\' => {
                let first = bytes.next()?;
                let hex = |c: u8| (c as char).to_digit(16);
                match hex(first) {
                    Some(high) => {
                        let low = hex(bytes.next()?)?;
                        value.push((high * 16 + low) as u8);
                    }
                    None => value.push(first),
                }
            }
            _ => value.push(b),
        }
    }
    let v = String::from_utf8(value).ok()?;
    (!v.is_empty()).then_some(v)
}

/// The directory's name for the user who typed `typed`: the entry's `name_attribute` value
/// equal to it without case, else its only value. `None` when the entry has none, or several
/// of which none is the typed name (ambiguous), or one that is not a valid user name.
fn canonical_name(
    attrs: &std::collections::HashMap<String, Vec<String>>,
    name_attribute: &str,
    typed: &str,
) -> Option<String> {
    let values = attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name_attribute))
        .map(|(_, v)| v.as_slice())
        .unwrap_or_default();
    let name = match values.iter().find(|v| v.eq_ignore_ascii_case(typed)) {
        Some(v) => v,
        None if values.len() == 1 => &values[0],
        None => return None,
    };
    super::static_users::valid_user_name(name).then(|| name.clone())
}

impl LdapAuth {
    pub fn new(name: &str, cfg: LdapConfig) -> Result<Self, String> {
        let tls = match &cfg.tls_ca {
            None => None,
            Some(path) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in crate::process::tls::read_pem_certs(path, "LDAP CA file")? {
                    roots
                        .add(c)
                        .map_err(|e| format!("LDAP CA file {}: {e}", path.display()))?;
                }
                Some(std::sync::Arc::new(
                    rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                        rustls::crypto::ring::default_provider(),
                    ))
                    .with_safe_default_protocol_versions()
                    .map_err(|e| e.to_string())?
                    .with_root_certificates(roots)
                    .with_no_client_auth(),
                ))
            }
        };
        Ok(LdapAuth {
            name: name.to_string(),
            guard: PasswordGuard::new(name, cfg.cache_ttl, cfg.throttle)?,
            slots: Semaphore::new(cfg.pool_size.max(1)),
            idle: Mutex::new(Vec::new()),
            tls,
            cfg,
        })
    }

    async fn connect(&self) -> Result<Ldap, Failure> {
        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(self.cfg.timeout)
            .set_starttls(self.cfg.starttls);
        if let Some(tls) = &self.tls {
            settings = settings.set_config(tls.clone());
        }
        let (conn, ldap) = LdapConnAsync::with_settings(settings, &self.cfg.url)
            .await
            .map_err(unavailable)?;
        ldap3::drive!(conn);
        Ok(ldap)
    }

    /// A pooled connection (or a new one), bound as the service account if there is one.
    async fn service_conn(&self) -> Result<Ldap, Failure> {
        let pooled = self.idle.lock().await.pop();
        let mut ldap = match pooled {
            Some(mut l) => {
                if l.is_closed() {
                    self.connect().await?
                } else {
                    l
                }
            }
            None => self.connect().await?,
        };
        if let (Some(dn), Some(pw)) = (&self.cfg.bind_dn, &self.cfg.bind_password) {
            ldap.with_timeout(self.cfg.timeout)
                .simple_bind(dn, pw.expose())
                .await
                .map_err(unavailable)?
                .success()
                .map_err(|e| unavailable(format!("service bind refused: {e}")))?;
        }
        Ok(ldap)
    }

    async fn release(&self, ldap: Ldap) {
        let mut idle = self.idle.lock().await;
        if idle.len() < self.cfg.pool_size {
            idle.push(ldap);
        }
    }

    async fn lookup(&self, user: &str, password: &str) -> Result<Identity, Failure> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| unavailable("pool closed"))?;
        let mut ldap = self.service_conn().await?;
        let t = self.cfg.timeout;
        let mut wanted: Vec<String> = vec![self.cfg.name_attribute.clone()];
        if let GroupLookup::Attribute(a) = &self.cfg.groups {
            wanted.push(a.clone());
        }
        if let Some(a) = &self.cfg.email_attribute {
            wanted.push(a.clone());
        }
        let (dn, mut attrs) = match &self.cfg.user {
            UserLookup::Template(tpl) => (tpl.replace("{user}", &ldap3::dn_escape(user)), None),
            UserLookup::Search { base, filter } => {
                let filter = filter.replace("{user}", &ldap3::ldap_escape(user));
                let (entries, _) = ldap
                    .with_timeout(t)
                    .search(base, Scope::Subtree, &filter, wanted.clone())
                    .await
                    .map_err(unavailable)?
                    .success()
                    .map_err(unavailable)?;
                match entries.len() {
                    0 => {
                        // As many round trips as for a user who exists: a bind that fails
                        // (no entry has this DN; the typed password is not sent), whatever
                        // its answer.
                        let nobody = format!("cn=hpcgate-no-such-user,{base}");
                        let _ = ldap
                            .with_timeout(t)
                            .simple_bind(&nobody, "hpcgate-no-such-user")
                            .await;
                        self.release(ldap).await;
                        return Err(Failure::NoSuchUser);
                    }
                    1 => {}
                    n => {
                        return Err(unavailable(format!(
                            "user filter matched {n} entries for one user name"
                        )));
                    }
                }
                let e =
                    SearchEntry::construct(entries.into_iter().next().ok_or(Failure::NoSuchUser)?);
                (e.dn, Some(e.attrs))
            }
        };
        // The password check: a bind as the user (an empty password would be an anonymous
        // bind, which basic_credentials already refuses).
        let bound = ldap
            .with_timeout(t)
            .simple_bind(&dn, password)
            .await
            .map_err(unavailable)?;
        match bound.rc {
            0 => {}
            49 => {
                self.release(ldap).await;
                return Err(Failure::BadPassword);
            }
            32 => return Err(Failure::NoSuchUser),
            rc => {
                return Err(unavailable(format!(
                    "bind as user answered {rc}: {}",
                    bound.text
                )));
            }
        }
        // Read the entry as the user when the DN came from a template.
        if attrs.is_none() {
            let (entries, _) = ldap
                .with_timeout(t)
                .search(&dn, Scope::Base, "(objectClass=*)", wanted.clone())
                .await
                .map_err(unavailable)?
                .success()
                .map_err(unavailable)?;
            attrs = entries
                .into_iter()
                .next()
                .map(|e| SearchEntry::construct(e).attrs);
        }
        let attrs = attrs.unwrap_or_default();
        let Some(name) = canonical_name(&attrs, &self.cfg.name_attribute, user) else {
            return Err(unavailable(format!(
                "the entry of user {dn} has no single usable `{}` value to name the user by",
                self.cfg.name_attribute
            )));
        };
        let mut groups: Vec<String> = match &self.cfg.groups {
            GroupLookup::Attribute(a) => attrs
                .get(a)
                .into_iter()
                .flatten()
                .filter_map(|dn| first_rdn_value(dn))
                .collect(),
            GroupLookup::Search {
                base,
                filter,
                name_attribute,
            } => {
                // Group searches run as the service account (users may not read groups).
                if let (Some(sdn), Some(pw)) = (&self.cfg.bind_dn, &self.cfg.bind_password) {
                    ldap.with_timeout(t)
                        .simple_bind(sdn, pw.expose())
                        .await
                        .map_err(unavailable)?
                        .success()
                        .map_err(unavailable)?;
                }
                let filter = filter
                    .replace("{dn}", &ldap3::ldap_escape(&dn))
                    .replace("{user}", &ldap3::ldap_escape(&name));
                let (entries, _) = ldap
                    .with_timeout(t)
                    .search(base, Scope::Subtree, &filter, vec![name_attribute.clone()])
                    .await
                    .map_err(unavailable)?
                    .success()
                    .map_err(unavailable)?;
                entries
                    .into_iter()
                    .filter_map(|e| {
                        SearchEntry::construct(e)
                            .attrs
                            .get(name_attribute)
                            .and_then(|v| v.first().cloned())
                    })
                    .collect()
            }
        };
        groups.sort();
        groups.dedup();
        let email = self
            .cfg
            .email_attribute
            .as_ref()
            .and_then(|a| attrs.get(a))
            .and_then(|v| v.first().cloned());
        self.release(ldap).await;
        Ok(Identity::new(name, groups, email, Method::Ldap, &self.name))
    }
}

#[async_trait]
impl Authenticator for LdapAuth {
    fn kind(&self) -> &'static str {
        "ldap"
    }

    fn challenge(&self) -> Option<String> {
        Some(basic_challenge(&self.cfg.realm))
    }

    async fn authenticate(&self, req: &RequestInfo<'_>) -> Outcome {
        self.guard
            .authenticate(req, |user, password| async move {
                // One deadline for the whole exchange: a directory that accepts the connection
                // and never answers must not hold the request.
                let result =
                    tokio::time::timeout(self.cfg.timeout * 3, self.lookup(&user, &password))
                        .await
                        .unwrap_or_else(|_| Err(unavailable("timed out")));
                result.map_err(|failure| match failure {
                    Failure::NoSuchUser => Refusal::NoSuchUser,
                    Failure::BadPassword => Refusal::BadPassword,
                    Failure::Unavailable(why) => {
                        tracing::error!(authenticator = %self.name, error = %why, "LDAP cannot answer");
                        Refusal::Failed(Rejection::Unavailable(
                            "the directory cannot answer right now; try again shortly".into(),
                        ))
                    }
                })
            })
            .await
    }

    fn unknown_user_refused(&self, req: &RequestInfo<'_>) {
        self.guard.unknown_user_refused(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names_come_from_the_first_rdn() {
        assert_eq!(
            first_rdn_value("cn=hpc-admins,ou=groups,dc=example,dc=org").as_deref(),
            Some("hpc-admins")
        );
        assert_eq!(first_rdn_value("garbage"), None);
    }

    #[test]
    fn group_rdns_are_unescaped_and_multi_valued_ones_refused() {
        assert_eq!(
            first_rdn_value("cn=a\\,b,ou=groups").as_deref(),
            Some("a,b")
        );
        assert_eq!(first_rdn_value("cn=a\\2Cb,ou=x").as_deref(), Some("a,b"));
        assert_eq!(
            first_rdn_value("cn=M\\C3\\BCller,ou=x").as_deref(),
            Some("Müller")
        );
        assert_eq!(first_rdn_value("cn=a+uid=b,ou=x"), None);
        assert_eq!(first_rdn_value("cn=,ou=x"), None);
        assert_eq!(first_rdn_value("cn=a\\"), None);
    }

    #[test]
    fn the_directory_spelling_of_the_name_is_the_identity() {
        let attrs = |v: &[&str]| {
            [("uid".to_string(), v.iter().map(|s| s.to_string()).collect())]
                .into_iter()
                .collect::<std::collections::HashMap<_, _>>()
        };
        assert_eq!(
            canonical_name(&attrs(&["bob"]), "uid", "BOB").as_deref(),
            Some("bob")
        );
        assert_eq!(
            canonical_name(&attrs(&["bob"]), "UID", "bob@example.org").as_deref(),
            Some("bob")
        );
        assert_eq!(
            canonical_name(&attrs(&["robert", "bob"]), "uid", "Bob").as_deref(),
            Some("bob")
        );
        // Several names, none typed: which one is meant cannot be told.
        assert_eq!(canonical_name(&attrs(&["robert", "bob"]), "uid", "x"), None);
        assert_eq!(canonical_name(&attrs(&[]), "uid", "bob"), None);
        assert_eq!(canonical_name(&attrs(&["b o b"]), "uid", "bob"), None);
    }

    #[test]
    fn user_input_is_escaped_in_filters_and_dns() {
        assert_eq!(ldap3::ldap_escape("*)(uid=*"), "\\2a\\29\\28uid=\\2a");
        assert_eq!(ldap3::dn_escape("a,b"), "a\\2cb");
    }
}
