//! From TOML text to a checked [`Config`], collecting every problem as `FILE:KEY: reason`.
//!
//! `Validator::check` calls one method per section, in the order the errors are reported;
//! the sections' checks are in the files of `validate/`.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;

mod accounting;
mod authenticators;
mod keys;
mod oidc;
mod policies;
mod pools;
mod process;
mod promql;
mod routes;
mod server;
mod slurm;
#[cfg(test)]
mod tests;
mod web;

use super::raw;
use super::*;

/// Reads and checks a config file.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: file.clone(),
            key: "-".into(),
            reason: format!("cannot read config file: {e}"),
        }])
    })?;
    parse(&text, path)
}

/// Checks config text; `path` names the file in errors and anchors relative paths.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigErrors> {
    let mut v = Validator {
        file: path.display().to_string(),
        base: path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(".")),
        errors: Vec::new(),
        syntax_error: false,
        failed_authenticators: HashSet::new(),
    };
    let raw = v.sections(text);
    if !v.errors.is_empty() && v.syntax_error {
        return Err(ConfigErrors(v.errors));
    }
    let config = v.check(raw, path);
    if v.errors.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors(v.errors))
    }
}

struct Validator {
    file: String,
    base: PathBuf,
    errors: Vec<ConfigError>,
    /// The TOML did not parse: nothing else can be checked.
    syntax_error: bool,
    /// Authenticators that exist but failed their own checks (already reported), so that
    /// references to them are not reported again as unknown.
    failed_authenticators: HashSet<String>,
}

const SECTIONS: &[&str] = &[
    "server",
    "process",
    "logging",
    "gateway",
    "listeners",
    "pools",
    "authenticators",
    "routes",
    "authorization",
    "audit",
    "rate_limits",
    "database",
    "tokens",
    "accounting",
    "web",
];

impl Validator {
    fn err(&mut self, key: impl Into<String>, reason: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.clone(),
            key: key.into(),
            reason: reason.into(),
        });
    }

    /// Parses the TOML and deserializes each section (and each list element) on its own, so
    /// that every unknown key or wrong type is reported, not just the first.
    fn sections(&mut self, text: &str) -> raw::File {
        let mut out = raw::File::default();
        let table: toml::Table = match toml::from_str(text) {
            Ok(t) => t,
            Err(e) => {
                let line = e.span().map(|s| line_at(text, s.start));
                let key = line.map_or("-".to_string(), |l| format!("line {l}"));
                self.err(key, format!("TOML syntax: {}", e.message().trim()));
                self.syntax_error = true;
                return out;
            }
        };
        for (key, value) in table {
            match key.as_str() {
                "server" => out.server = self.section(&key, value).unwrap_or_default(),
                "process" => out.process = self.section(&key, value).unwrap_or_default(),
                "logging" => out.logging = self.section(&key, value).unwrap_or_default(),
                "gateway" => out.gateway = self.section(&key, value).unwrap_or_default(),
                "authorization" => {
                    out.authorization = self.section(&key, value).unwrap_or_default()
                }
                "audit" => out.audit = self.section(&key, value).unwrap_or_default(),
                "rate_limits" => out.rate_limits = self.section(&key, value).unwrap_or_default(),
                "database" => out.database = self.section(&key, value).unwrap_or_default(),
                "tokens" => out.tokens = self.section(&key, value).unwrap_or_default(),
                "accounting" => {
                    out.accounting = Some(self.section(&key, value).unwrap_or_default())
                }
                // A section that does not parse was reported; no more noise about it.
                "web" => out.web = self.section(&key, value),
                "listeners" => out.listeners = self.list(&key, value),
                "routes" => out.routes = self.list(&key, value),
                "pools" => out.pools = self.map(&key, value),
                "authenticators" => {
                    if let toml::Value::Table(t) = &value {
                        self.failed_authenticators.extend(t.keys().cloned());
                    }
                    out.authenticators = self.map(&key, value);
                    for name in out.authenticators.keys() {
                        self.failed_authenticators.remove(name);
                    }
                }
                _ => self.err(
                    key.clone(),
                    format!("unknown section; expected one of {}", SECTIONS.join(", ")),
                ),
            }
        }
        out
    }

    fn section<T: DeserializeOwned>(&mut self, key: &str, value: toml::Value) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(t) => Some(t),
            Err(e) => {
                let path = e.path().to_string();
                let full = if path == "." || path.is_empty() {
                    key.to_string()
                } else {
                    format!("{key}.{path}")
                };
                let reason = e.into_inner().to_string();
                let reason = reason.split_whitespace().collect::<Vec<_>>().join(" ");
                self.err(full, reason);
                None
            }
        }
    }

    /// Each element with its index in the file, so later errors name the right element.
    fn list<T: DeserializeOwned>(&mut self, key: &str, value: toml::Value) -> Vec<(usize, T)> {
        match value {
            toml::Value::Array(items) => items
                .into_iter()
                .enumerate()
                .filter_map(|(i, item)| self.section(&format!("{key}[{i}]"), item).map(|t| (i, t)))
                .collect(),
            _ => {
                self.err(key, format!("must be a list of tables ([[{key}]])"));
                Vec::new()
            }
        }
    }

    fn map<T: DeserializeOwned>(&mut self, key: &str, value: toml::Value) -> BTreeMap<String, T> {
        match value {
            toml::Value::Table(t) => t
                .into_iter()
                .filter_map(|(name, item)| {
                    self.section(&format!("{key}.{name}"), item)
                        .map(|v| (name, v))
                })
                .collect(),
            _ => {
                self.err(
                    key,
                    format!("must be a table of named entries ([{key}.NAME])"),
                );
                BTreeMap::new()
            }
        }
    }

    fn duration(&mut self, key: &str, value: Option<&str>, default: Duration) -> Duration {
        match value {
            None => default,
            Some(s) => match humantime::parse_duration(s) {
                Ok(d) => d,
                Err(e) => {
                    self.err(
                        key,
                        format!("`{s}` is not a duration like 5s, 2m or 1h: {e}"),
                    );
                    default
                }
            },
        }
    }

    fn check(&mut self, raw: raw::File, path: &Path) -> Config {
        let server = self.server(raw.server);
        let state_dir = server.state_dir;
        let process = self.process(raw.process, &state_dir);
        let logging = self.logging(raw.logging);
        let listeners = self.listeners(raw.listeners);
        let pools = raw
            .pools
            .into_iter()
            .map(|(name, p)| {
                let pool = self.pool(&name, p);
                (name, pool)
            })
            .collect::<BTreeMap<_, _>>();
        let authenticators = raw
            .authenticators
            .into_iter()
            .filter_map(|(name, a)| self.authenticator(&name, a).map(|a| (name, a)))
            .collect::<BTreeMap<_, _>>();
        self.one_oidc_login(&authenticators);
        let gateway = self.gateway(raw.gateway, &authenticators);
        self.client_cert_listener(&listeners, &authenticators);
        let routes = self.routes(raw.routes, &pools, &authenticators);
        let database = self.database(raw.database, &state_dir);
        let tokens = self.tokens(raw.tokens);
        let accounting = raw
            .accounting
            .map(|a| self.accounting(a, &state_dir, &raw.authorization.admin_groups, &pools));
        let web = raw
            .web
            .map(|w| self.web(w, &authenticators, &routes, &raw.authorization.admin_groups));
        self.cross_check_keys(&authenticators, &tokens);
        let policies = self.policies(&raw.authorization);
        let utc_offset = self.utc_offset(raw.authorization.utc_offset.as_deref());
        let (redis_url, redis_timeout) = self.rate_limits(&raw.rate_limits);
        let (audit, audit_backlog) = self.audit(&raw.audit);

        Config {
            path: path.to_path_buf(),
            state_dir,
            threads: server.threads,
            upstream_keepalive: server.upstream_keepalive,
            grace_period: server.grace_period,
            request_head_timeout: server.request_head_timeout,
            keepalive_timeout: server.keepalive_timeout,
            strip_headers: server.strip_headers,
            process,
            logging,
            gateway,
            listeners,
            pools,
            authenticators,
            routes,
            policies,
            utc_offset,
            audit,
            audit_backlog,
            redis_url,
            redis_timeout,
            database,
            tokens,
            accounting,
            web,
        }
    }
}
