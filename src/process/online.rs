//! `hpcgate check-config --online`: after the offline checks, can this host reach what the
//! config names? One line per target, each with a short timeout, checked concurrently:
//! upstream backends and LDAP servers (TCP connect), OpenID Connect providers (their
//! discovery document over HTTPS, with the configured CA), Redis and PostgreSQL (TCP
//! connect). It proves the network path and, for IdPs, TLS; not credentials.

use std::time::{Duration, Instant};

use crate::authenticate::config::AuthenticatorConfig;
use crate::config::Config;
use crate::proxy::upstream::config::BackendAddr;

/// One target's result.
pub struct Reach {
    pub key: String,
    pub target: String,
    pub result: Result<Duration, String>,
}

impl Reach {
    /// `FILE:KEY: reachable: TARGET (N ms)` or `FILE:KEY: unreachable: TARGET: reason`.
    pub fn line(&self, file: &str) -> String {
        match &self.result {
            Ok(d) => format!(
                "{file}:{}: reachable: {} ({} ms)",
                self.key,
                self.target,
                d.as_millis()
            ),
            Err(e) => format!("{file}:{}: unreachable: {}: {e}", self.key, self.target),
        }
    }
}

enum Probe {
    Tcp(String),
    Unix(std::path::PathBuf),
    Discovery(reqwest::Client, String),
    /// Known to fail before trying (e.g. the CA file cannot be used).
    Fail(String),
}

/// Every target of `config`, in config order.
fn targets(config: &Config) -> Vec<(String, String, Probe)> {
    let mut out = Vec::new();
    for (name, p) in &config.pools {
        for (i, b) in p.backends.iter().enumerate() {
            let probe = match b {
                BackendAddr::Tcp { addr, .. } => Probe::Tcp(addr.to_string()),
                BackendAddr::Unix(path) => Probe::Unix(path.clone()),
            };
            out.push((format!("pools.{name}.backends[{i}]"), b.to_string(), probe));
        }
    }
    for (name, a) in &config.authenticators {
        let key = format!("authenticators.{name}");
        match a {
            AuthenticatorConfig::Ldap(l) => {
                let port = if l.url.starts_with("ldaps://") {
                    636
                } else {
                    389
                };
                if let Some(hp) = host_port(&l.url, port) {
                    out.push((key, l.url.clone(), Probe::Tcp(hp)));
                }
            }
            AuthenticatorConfig::OidcBearer(crate::authenticate::oidc::BearerConfig {
                provider,
                ..
            })
            | AuthenticatorConfig::OidcLogin(crate::authenticate::oidc::LoginConfig {
                provider,
                ..
            }) => {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    provider.issuer.as_str().trim_end_matches('/')
                );
                match crate::authenticate::oidc::http_client(provider) {
                    Ok(c) => out.push((key, url.clone(), Probe::Discovery(c, url))),
                    Err(e) => out.push((key, url, Probe::Fail(e))),
                }
            }
            _ => {}
        }
    }
    if let Some(r) = &config.redis_url
        && let Some(hp) = host_port(r.expose(), 6379)
    {
        out.push(("rate_limits.redis_url".into(), hp.clone(), Probe::Tcp(hp)));
    }
    if config.uses_database() && config.database.backend != crate::db::Backend::Sqlite {
        let url = config.database.url.expose();
        if let Some(hp) = host_port(url, 5432) {
            out.push(("database.url".into(), hp.clone(), Probe::Tcp(hp)));
        }
    }
    out
}

/// `HOST:PORT` of a URL (no user, password or path: they may hold secrets).
fn host_port(url: &str, default_port: u16) -> Option<String> {
    let u = reqwest::Url::parse(url).ok()?;
    let host = u.host_str()?;
    let port = u.port().unwrap_or(default_port);
    Some(if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    })
}

async fn probe(p: Probe, timeout: Duration) -> Result<Duration, String> {
    let start = Instant::now();
    let work = async {
        match p {
            Probe::Tcp(hp) => tokio::net::TcpStream::connect(&hp)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Probe::Fail(e) => Err(e),
            Probe::Unix(path) => tokio::net::UnixStream::connect(&path)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Probe::Discovery(client, url) => {
                let r = client.get(&url).send().await.map_err(|e| {
                    let mut s = e.to_string();
                    let mut src = std::error::Error::source(&e);
                    while let Some(c) = src {
                        s.push_str(&format!(": {c}"));
                        src = c.source();
                    }
                    s
                })?;
                if !r.status().is_success() {
                    return Err(format!("HTTP {}", r.status().as_u16()));
                }
                let doc: serde_json::Value = r
                    .json()
                    .await
                    .map_err(|e| format!("not a discovery document: {e}"))?;
                if doc.get("jwks_uri").and_then(|v| v.as_str()).is_none() {
                    return Err("the discovery document has no jwks_uri".into());
                }
                Ok(())
            }
        }
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(Ok(())) => Ok(start.elapsed()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!(
            "no answer within {}",
            humantime::format_duration(timeout)
        )),
    }
}

/// Checks every target concurrently; results in config order.
pub async fn check(config: &Config, timeout: Duration) -> Vec<Reach> {
    let mut set = tokio::task::JoinSet::new();
    let list = targets(config);
    let mut out: Vec<Option<Reach>> = Vec::new();
    for (i, (key, target, p)) in list.into_iter().enumerate() {
        out.push(None);
        set.spawn(async move {
            let result = probe(p, timeout).await;
            (
                i,
                Reach {
                    key,
                    target,
                    result,
                },
            )
        });
    }
    while let Some(done) = set.join_next().await {
        if let Ok((i, r)) = done {
            out[i] = Some(r);
        }
    }
    out.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::host_port;

    #[test]
    fn host_port_drops_credentials_and_paths_and_fills_the_default_port() {
        assert_eq!(
            host_port("postgres://u:secret@db.example.org/hpcgate", 5432).as_deref(),
            Some("db.example.org:5432")
        );
        assert_eq!(
            host_port("redis://:pw@[::1]:6380/0", 6379).as_deref(),
            Some("[::1]:6380")
        );
        assert_eq!(
            host_port("ldaps://ldap.example.org", 636).as_deref(),
            Some("ldap.example.org:636")
        );
        assert_eq!(host_port("not a url", 1), None);
    }
}
