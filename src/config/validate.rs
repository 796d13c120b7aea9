//! From TOML text to a checked [`Config`], collecting every problem as `FILE:KEY: reason`.

use std::collections::{BTreeMap, HashSet};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;

mod accounting;
mod keys;
mod slurm;
mod web;

use super::raw;
use super::*;
use crate::authenticate::headers::{IDENTITY_HEADERS, normalize_header_name};

mod oidc;
mod process;

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
        let server = raw.server;
        let state_dir = resolve_path(
            &self.base,
            server.state_dir.as_deref().unwrap_or("hpcgate-state"),
        );
        let threads = server.threads.unwrap_or(2);
        if threads == 0 || threads > 1024 {
            self.err("server.threads", "must be between 1 and 1024");
        }
        let upstream_keepalive = server.upstream_keepalive.unwrap_or(1024);
        if upstream_keepalive > 65536 {
            self.err("server.upstream_keepalive", "must be at most 65536");
        }
        let grace_period = self.duration(
            "server.grace_period",
            server.grace_period.as_deref(),
            Duration::from_secs(10),
        );
        if grace_period > Duration::from_secs(3600) {
            self.err("server.grace_period", "must be at most 1h");
        }
        let request_head_timeout = self.duration(
            "server.request_head_timeout",
            server.request_head_timeout.as_deref(),
            Duration::from_secs(30),
        );
        let keepalive_timeout = self.duration(
            "server.keepalive_timeout",
            server.keepalive_timeout.as_deref(),
            Duration::from_secs(75),
        );
        for (key, d) in [
            ("server.request_head_timeout", request_head_timeout),
            ("server.keepalive_timeout", keepalive_timeout),
        ] {
            if d < Duration::from_secs(1) || d > Duration::from_secs(3600) {
                self.err(key, "must be between 1s and 1h");
            }
        }
        let mut strip_headers: Vec<String> =
            IDENTITY_HEADERS.iter().map(|s| s.to_string()).collect();
        for (i, h) in server.strip_headers.iter().enumerate() {
            let n = normalize_header_name(h);
            if n.is_empty() || http::HeaderName::from_bytes(n.as_bytes()).is_err() {
                self.err(
                    format!("server.strip_headers[{i}]"),
                    format!("`{h}` is not a header name"),
                );
            } else if !strip_headers.contains(&n) {
                strip_headers.push(n);
            }
        }

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
        let gateway = Gateway {
            authenticators: raw.gateway.authenticators,
            metrics_public: raw.gateway.metrics_public,
        };
        self.auth_list(
            "gateway.authenticators",
            &gateway.authenticators,
            &authenticators,
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
        let redis_url = match raw.rate_limits.redis_url.as_deref() {
            None => None,
            Some(u) => match crate::secret::expand_env(u) {
                Ok(u) if u.starts_with("redis://") || u.starts_with("rediss://") => {
                    Some(Secret::new(u))
                }
                Ok(_) => {
                    self.err(
                        "rate_limits.redis_url",
                        "must start with redis:// or rediss://",
                    );
                    None
                }
                Err(e) => {
                    self.err("rate_limits.redis_url", e);
                    None
                }
            },
        };
        let redis_timeout = self.duration(
            "rate_limits.redis_timeout",
            raw.rate_limits.redis_timeout.as_deref(),
            Duration::from_millis(250),
        );
        let audit = match raw.audit.path.as_deref() {
            None | Some("-") => AuditSink::Stdout,
            Some("off") => AuditSink::Off,
            Some(p) => AuditSink::File(resolve_path(&self.base, p)),
        };
        let audit_backlog = raw.audit.backlog.unwrap_or(65_536);
        if audit_backlog == 0 || audit_backlog > 10_000_000 {
            self.err("audit.backlog", "must be between 1 and 10000000");
        }

        Config {
            path: path.to_path_buf(),
            state_dir,
            threads,
            upstream_keepalive,
            grace_period,
            request_head_timeout,
            keepalive_timeout,
            strip_headers,
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

    fn promql(
        &mut self,
        key: &str,
        kind: RouteKind,
        raw: Option<raw::Promql>,
    ) -> crate::enforce::prometheus::config::PromqlMode {
        use crate::enforce::prometheus::config::PromqlMode;
        let Some(p) = raw else {
            return match kind {
                RouteKind::Prometheus => PromqlMode::Label {
                    label: "user".into(),
                    from_groups: false,
                },
                _ => PromqlMode::Off,
            };
        };
        if kind != RouteKind::Prometheus {
            self.err(
                format!("{key}.promql"),
                "only for routes of kind prometheus",
            );
            return PromqlMode::Off;
        }
        let label = p.label.unwrap_or_else(|| {
            if p.mode == "ownership" {
                "uuid"
            } else {
                "user"
            }
            .into()
        });
        let valid_label = label
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !label.starts_with("__");
        if !valid_label {
            self.err(
                format!("{key}.promql.label"),
                format!("`{label}` is not a Prometheus label name"),
            );
        }
        if !p.allow_metrics.is_empty() && p.mode != "ownership" {
            self.err(
                format!("{key}.promql.allow_metrics"),
                "only used with mode = \"ownership\"",
            );
        }
        for (i, m) in p.allow_metrics.iter().enumerate() {
            let valid = m
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
                && m.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
            if !valid {
                self.err(
                    format!("{key}.promql.allow_metrics[{i}]"),
                    format!("`{m}` is not a metric name (exact names only, no patterns)"),
                );
            }
        }
        let from_groups = match p.value.as_deref() {
            None | Some("user") => false,
            Some("groups") if p.mode == "label" => true,
            Some("groups") => {
                self.err(
                    format!("{key}.promql.value"),
                    "only used with mode = \"label\"",
                );
                false
            }
            Some(other) => {
                self.err(
                    format!("{key}.promql.value"),
                    format!("unknown value `{other}`; expected user or groups"),
                );
                false
            }
        };
        match p.mode.as_str() {
            "label" => PromqlMode::Label { label, from_groups },
            "ownership" => PromqlMode::Ownership {
                label,
                allow_metrics: p.allow_metrics,
            },
            "off" => PromqlMode::Off,
            other => {
                self.err(
                    format!("{key}.promql.mode"),
                    format!("unknown mode `{other}`; expected label, ownership or off"),
                );
                PromqlMode::Off
            }
        }
    }

    fn identity_headers(
        &mut self,
        key: &str,
        kind: RouteKind,
        raw: Option<raw::IdentityHeaders>,
    ) -> IdentityHeaders {
        let (user, groups, email, preferred) = match kind {
            RouteKind::Generic => (
                "x-forwarded-user",
                "x-forwarded-groups",
                "x-forwarded-email",
                "x-forwarded-preferred-username",
            ),
            RouteKind::Prometheus => ("x-grafana-user", "", "", ""),
            // The accounting service reads admin status from the groups.
            RouteKind::Accounting => ("x-grafana-user", "x-hpcgate-groups", "", ""),
            RouteKind::Slurmrestd => ("", "", "", ""),
        };
        let raw = raw.unwrap_or_default();
        let mut one = |field: &str, given: Option<String>, default: &str| {
            let name = given.unwrap_or_else(|| default.to_string());
            if name.is_empty() {
                return None;
            }
            match http::HeaderName::from_bytes(name.trim().to_ascii_lowercase().as_bytes()) {
                Ok(h) => Some(h),
                Err(_) => {
                    self.err(
                        format!("{key}.identity_headers.{field}"),
                        format!("`{name}` is not a header name"),
                    );
                    None
                }
            }
        };
        IdentityHeaders {
            user: one("user", raw.user, user),
            groups: one("groups", raw.groups, groups),
            email: one("email", raw.email, email),
            preferred_username: one("preferred_username", raw.preferred_username, preferred),
        }
    }

    fn rate_limit(&mut self, key: &str, raw: Option<raw::RateLimit>) -> Option<RateLimit> {
        let raw = raw?;
        let per = self.duration(
            &format!("{key}.rate_limit.per"),
            raw.per.as_deref(),
            Duration::from_secs(1),
        );
        let burst = raw.burst.unwrap_or(raw.requests);
        if raw.requests == 0 || burst == 0 || per.is_zero() {
            self.err(
                format!("{key}.rate_limit"),
                "requests, burst and per must be greater than 0",
            );
            return None;
        }
        Some(RateLimit {
            requests: raw.requests,
            per,
            burst,
        })
    }

    fn policies(
        &mut self,
        a: &raw::Authorization,
    ) -> std::sync::Arc<crate::authorize::cedar::Policies> {
        let dir = a
            .policies_dir
            .as_deref()
            .map(|d| resolve_path(&self.base, d));
        match crate::authorize::cedar::Policies::load(dir.as_deref(), &a.admin_groups) {
            Ok(p) => std::sync::Arc::new(p),
            Err(errors) => {
                self.errors.extend(errors);
                // Never used: the config is refused.
                std::sync::Arc::new(
                    crate::authorize::cedar::Policies::load(None, &[])
                        .expect("the embedded policies are valid"),
                )
            }
        }
    }

    fn utc_offset(&mut self, s: Option<&str>) -> i64 {
        let Some(s) = s else { return 0 };
        let parsed = (|| {
            let (sign, rest) = match s.as_bytes().first()? {
                b'+' => (1, &s[1..]),
                b'-' => (-1, &s[1..]),
                _ => return None,
            };
            let (h, m) = rest.split_once(':')?;
            let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
            (h <= 14 && m < 60 && h.to_string().len() <= 2).then_some(sign * (h * 3600 + m * 60))
        })();
        parsed.unwrap_or_else(|| {
            self.err(
                "authorization.utc_offset",
                format!("`{s}` is not an offset like +01:00 or -05:00"),
            );
            0
        })
    }

    fn logging(&mut self, l: raw::Logging) -> Logging {
        let json = match l.format.as_deref() {
            None | Some("json") => true,
            Some("text") => false,
            Some(other) => {
                self.err("logging.format", format!("`{other}` is not json or text"));
                true
            }
        };
        let level = l.level.unwrap_or_else(|| "info".into());
        if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
            self.err(
                "logging.level",
                format!("`{level}` is not a log level or filter"),
            );
        }
        Logging {
            level,
            json,
            access_log: l.access_log.unwrap_or(true),
        }
    }

    fn listeners(&mut self, raw: Vec<(usize, raw::Listener)>) -> Vec<Listener> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        if raw.is_empty() {
            self.err("listeners", "at least one [[listeners]] is required");
        }
        for (i, l) in raw {
            let key = format!("listeners[{i}]");
            let address: SocketAddr = match l.address.parse() {
                Ok(a) => a,
                Err(_) => {
                    self.err(
                        format!("{key}.address"),
                        format!("`{}` is not IP:PORT (IPv6 as [::1]:8443)", l.address),
                    );
                    continue;
                }
            };
            if !seen.insert(address) {
                self.err(
                    format!("{key}.address"),
                    format!("{address} is listed twice"),
                );
            }
            let tls = match (l.tls_cert, l.tls_key) {
                (Some(cert), Some(key_path)) => {
                    let cert = resolve_path(&self.base, &cert);
                    let key_file = resolve_path(&self.base, &key_path);
                    match crate::process::tls::load_certified_key(&cert, &key_file) {
                        Ok(loaded) => Some(TlsFiles {
                            cert,
                            key: key_file,
                            loaded: std::sync::Arc::new(loaded),
                        }),
                        Err(e) => {
                            self.err(format!("{key}.tls_cert"), e);
                            None
                        }
                    }
                }
                (Some(_), None) => {
                    self.err(
                        format!("{key}.tls_key"),
                        "tls_cert is set but tls_key is not",
                    );
                    None
                }
                (None, Some(_)) => {
                    self.err(
                        format!("{key}.tls_cert"),
                        "tls_key is set but tls_cert is not",
                    );
                    None
                }
                (None, None) => {
                    if !address.ip().is_loopback() && !l.allow_plaintext {
                        self.err(
                            format!("{key}.address"),
                            format!(
                                "plain HTTP on non-loopback address {address}: set tls_cert and \
                                 tls_key, or allow_plaintext = true if a TLS terminator is in front"
                            ),
                        );
                    }
                    None
                }
            };
            let client_ca = match (l.client_ca, &tls) {
                (None, _) => None,
                (Some(_), None) => {
                    self.err(
                        format!("{key}.client_ca"),
                        "client certificates need a TLS listener (tls_cert and tls_key)",
                    );
                    None
                }
                (Some(ca), Some(_)) => {
                    match crate::process::tls::read_pem_certs(
                        &resolve_path(&self.base, &ca),
                        "CA file",
                    ) {
                        Ok(certs) => Some(certs),
                        Err(e) => {
                            self.err(format!("{key}.client_ca"), e);
                            None
                        }
                    }
                }
            };
            out.push(Listener {
                address,
                tls,
                http2: l.http2.unwrap_or(true),
                client_ca,
            });
        }
        out
    }

    fn pool(&mut self, name: &str, p: raw::Pool) -> PoolConfig {
        let key = format!("pools.{name}");
        if p.backends.is_empty() {
            self.err(
                format!("{key}.backends"),
                "at least one backend is required",
            );
        }
        let mut backends = Vec::new();
        for (i, b) in p.backends.iter().enumerate() {
            match parse_backend(b, &self.base) {
                Ok(addr) => {
                    if backends.contains(&addr) {
                        self.err(
                            format!("{key}.backends[{i}]"),
                            format!("`{b}` is listed twice"),
                        );
                    }
                    backends.push(addr)
                }
                Err(reason) => self.err(format!("{key}.backends[{i}]"), reason),
            }
        }
        let connect_timeout = self.duration(
            &format!("{key}.connect_timeout"),
            p.connect_timeout.as_deref(),
            Duration::from_secs(5),
        );
        let read_timeout = self.duration(
            &format!("{key}.read_timeout"),
            p.read_timeout.as_deref(),
            Duration::from_secs(60),
        );
        let write_timeout = self.duration(
            &format!("{key}.write_timeout"),
            p.write_timeout.as_deref(),
            Duration::from_secs(60),
        );
        let fail_timeout = self.duration(
            &format!("{key}.fail_timeout"),
            p.fail_timeout.as_deref(),
            Duration::from_secs(10),
        );
        for (k, d) in [
            ("connect_timeout", connect_timeout),
            ("read_timeout", read_timeout),
            ("write_timeout", write_timeout),
        ] {
            if d.is_zero() {
                self.err(format!("{key}.{k}"), "must be greater than 0");
            }
        }
        let tls_ca = p.tls_ca.map(|c| resolve_path(&self.base, &c));
        if let Some(ca) = &tls_ca
            && let Err(e) = crate::process::tls::read_pem_certs(ca, "CA file")
        {
            self.err(format!("{key}.tls_ca"), e);
        }
        let authorization = self.secret(
            &key,
            ("authorization", p.authorization),
            ("authorization_file", p.authorization_file),
        );
        if let Some(a) = &authorization
            && http::HeaderValue::from_str(a.expose()).is_err()
        {
            self.err(
                format!("{key}.authorization"),
                "the value is not a valid header value (control characters?)",
            );
        }
        let balance = match p.balance.as_deref() {
            None | Some("round_robin") => Balance::RoundRobin,
            Some("least_connections") => Balance::LeastConnections,
            Some("retention") => Balance::Retention,
            Some(other) => {
                self.err(
                    format!("{key}.balance"),
                    format!(
                        "unknown balance `{other}`; use round_robin, least_connections or \
                         retention"
                    ),
                );
                Balance::RoundRobin
            }
        };
        let mut retention = vec![None; backends.len()];
        if !p.retention.is_empty() && balance != Balance::Retention {
            self.err(
                format!("{key}.retention"),
                "only used with balance = \"retention\"",
            );
        }
        for (backend, value) in &p.retention {
            let rkey = format!("{key}.retention.\"{backend}\"");
            let Some(i) = p.backends.iter().position(|b| b == backend) else {
                self.err(
                    rkey,
                    format!("`{backend}` is not one of the pool's backends"),
                );
                continue;
            };
            // Prometheus' own duration syntax (a year is 365 days), as its flags use.
            match promql_parser::util::parse_duration(value) {
                Ok(d) if !d.is_zero() => {
                    if let Some(slot) = retention.get_mut(i) {
                        *slot = Some(d);
                    }
                }
                Ok(_) => self.err(rkey, "must be greater than 0"),
                Err(e) => self.err(
                    rkey,
                    format!("`{value}` is not a Prometheus duration like 15d or 1y: {e}"),
                ),
            }
        }
        PoolConfig {
            name: name.to_string(),
            backends,
            connect_timeout,
            read_timeout,
            write_timeout,
            tls_ca,
            tls_verify: p.tls_verify.unwrap_or(true),
            tls_server_name: p.tls_server_name,
            authorization,
            fail_timeout,
            health_check: self.health_check(&key, p.health_check),
            balance,
            retention,
        }
    }

    fn authenticator(&mut self, name: &str, a: raw::Authenticator) -> Option<AuthenticatorConfig> {
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
    fn secret(
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
    fn auth_list(
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

    fn routes(
        &mut self,
        raw: Vec<(usize, raw::Route)>,
        pools: &BTreeMap<String, PoolConfig>,
        auths: &BTreeMap<String, AuthenticatorConfig>,
    ) -> Vec<Route> {
        let mut out: Vec<Route> = Vec::new();
        let mut names = HashSet::new();
        for (i, r) in raw {
            let key = format!("routes[{i}]");
            if r.name.is_empty()
                || !r
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                self.err(
                    format!("{key}.name"),
                    "must be non-empty and use only letters, digits, - _ .",
                );
            }
            if !names.insert(r.name.clone()) {
                self.err(
                    format!("{key}.name"),
                    format!("route name `{}` is used twice", r.name),
                );
            }
            let prefix = normalize_prefix(&r.path_prefix);
            match &prefix {
                Err(reason) => self.err(format!("{key}.path_prefix"), reason.clone()),
                Ok(p) if p == "/-" || p.starts_with("/-/") => self.err(
                    format!("{key}.path_prefix"),
                    "paths under /-/ are the gateway's own endpoints",
                ),
                Ok(p) if p == "/auth" || p.starts_with("/auth/") => self.err(
                    format!("{key}.path_prefix"),
                    "paths under /auth/ are the gateway's login and token endpoints",
                ),
                Ok(_) => {}
            }
            // As requests are routed: lower case, without a trailing dot.
            let host = r
                .host
                .map(|h| h.strip_suffix('.').unwrap_or(&h).to_ascii_lowercase());
            if let Some(h) = &host
                && (h.is_empty() || h.contains(['/', ' ', ':']))
            {
                self.err(
                    format!("{key}.host"),
                    "must be a host name without port or path",
                );
            }
            if !pools.contains_key(&r.pool) {
                self.err(format!("{key}.pool"), format!("unknown pool `{}`", r.pool));
            }
            let kind = match r.kind.as_deref() {
                None | Some("generic") => RouteKind::Generic,
                Some("slurmrestd") => RouteKind::Slurmrestd,
                Some("prometheus") => RouteKind::Prometheus,
                Some("accounting") => RouteKind::Accounting,
                Some(other) => {
                    self.err(
                        format!("{key}.kind"),
                        format!(
                            "unknown kind `{other}`; expected generic, slurmrestd, prometheus or \
                             accounting"
                        ),
                    );
                    RouteKind::Generic
                }
            };
            self.auth_list(
                &format!("{key}.authenticators"),
                &r.authenticators,
                auths,
                false,
            );
            let mut admin_paths = Vec::new();
            for (j, p) in r.admin_paths.iter().enumerate() {
                match normalize_prefix(p) {
                    Ok(p) => admin_paths.push(p),
                    Err(reason) => self.err(format!("{key}.admin_paths[{j}]"), reason),
                }
            }
            let promql = self.promql(&key, kind, r.promql);
            let public = r
                .authenticators
                .iter()
                .all(|n| matches!(auths.get(n), Some(AuthenticatorConfig::None)));
            if public
                && !r.authenticators.is_empty()
                && promql != crate::enforce::prometheus::config::PromqlMode::Off
            {
                self.err(
                    format!("{key}.promql"),
                    "a public route has no user to confine PromQL to: require authentication, \
                     or set promql = { mode = \"off\" } to let everyone read everything",
                );
            }
            let identity_headers = self.identity_headers(&key, kind, r.identity_headers);
            let rate_limit = self.rate_limit(&key, r.rate_limit);
            let slurm = self.slurm_route(&key, kind, r.slurm, &r.authenticators, auths);
            let Ok(path_prefix) = prefix else { continue };
            for (j, p) in admin_paths.iter().enumerate() {
                if !crate::proxy::route::prefix_matches(&path_prefix, p) {
                    self.err(
                        format!("{key}.admin_paths[{j}]"),
                        format!("`{p}` is not under the route's path_prefix `{path_prefix}`"),
                    );
                }
            }
            if let Some(other) = out
                .iter()
                .find(|o| o.path_prefix == path_prefix && o.host == host)
            {
                self.err(
                    format!("{key}.path_prefix"),
                    format!(
                        "route `{}` has the same host and path_prefix `{path_prefix}`; one of \
                         them could never match",
                        other.name
                    ),
                );
            }
            out.push(Route {
                name: r.name,
                path_prefix,
                host,
                strip_prefix: r.strip_prefix,
                pool: r.pool,
                kind,
                authenticators: r.authenticators,
                pass_bearer_token: r.pass_bearer_token,
                forward_cookies: r.forward_cookies,
                identity_headers,
                rate_limit,
                preserve_host: r.preserve_host,
                admin_paths,
                promql,
                slurm,
            });
        }
        out
    }
}

fn normalize_prefix(p: &str) -> Result<String, String> {
    if !p.starts_with('/') {
        return Err(format!("`{p}` must start with /"));
    }
    if p.contains("//")
        || p.split('/').any(|s| s == ".." || s == ".")
        || p.contains(['%', '\\', '?', '#'])
        || p.chars().any(|c| c.is_control() || c == ' ')
    {
        return Err(format!(
            "`{p}` must be a plain path (no //, . or .. segments, %, \\, ?, # or spaces)"
        ));
    }
    // Requests are matched in their canonical form (see `sanitize`), where only these
    // characters stand unencoded: a prefix with any other could never match.
    if !p
        .bytes()
        .all(|b| b == b'/' || crate::proxy::sanitize::is_path_char(b))
    {
        return Err(format!(
            "`{p}` may only hold letters, digits, / and -._~!$&'()*+,=:@ (requests are \
             matched in their canonical form, where anything else is percent-encoded, and `;` \
             is refused)"
        ));
    }
    let trimmed = p.trim_end_matches('/');
    Ok(if trimmed.is_empty() {
        "/".to_string()
    } else {
        trimmed.to_string()
    })
}

fn parse_backend(b: &str, base: &Path) -> Result<BackendAddr, String> {
    if let Some(path) = b.strip_prefix("unix:") {
        if path.is_empty() {
            return Err("unix: needs a socket path".into());
        }
        return Ok(BackendAddr::Unix(resolve_path(base, path)));
    }
    let (tls, rest) = if let Some(r) = b.strip_prefix("http://") {
        (false, r)
    } else if let Some(r) = b.strip_prefix("https://") {
        (true, r)
    } else {
        return Err(format!(
            "`{b}` must start with http://, https:// or unix: (e.g. http://127.0.0.1:9090)"
        ));
    };
    let rest = rest.trim_end_matches('/');
    if rest.contains('/') {
        return Err(format!(
            "`{b}` may not have a path; use the route's strip_prefix"
        ));
    }
    let default_port = if tls { 443 } else { 80 };
    let parse_port = |p: &str| {
        p.parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("`{b}`: port `{p}` is not a number from 1 to 65535"))
    };
    let (bare, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("`{b}`: missing ] after the IPv6 address"))?;
        match after {
            "" => (h, default_port),
            a => (
                h,
                parse_port(
                    a.strip_prefix(':')
                        .ok_or_else(|| format!("`{b}`: junk after ]"))?,
                )?,
            ),
        }
    } else if rest.matches(':').count() > 1 {
        return Err(format!(
            "`{b}`: write IPv6 addresses in brackets, e.g. http://[::1]:9090"
        ));
    } else {
        match rest.split_once(':') {
            Some((h, p)) => (h, parse_port(p)?),
            None => (rest, default_port),
        }
    };
    if bare.is_empty() {
        return Err(format!("`{b}` has no host"));
    }
    let addr = (bare, port)
        .to_socket_addrs()
        .map_err(|e| format!("`{b}`: cannot resolve {bare}: {e}"))?
        .next()
        .ok_or_else(|| format!("`{b}`: {bare} has no address"))?;
    Ok(BackendAddr::Tcp {
        addr,
        host: bare.to_string(),
        tls,
    })
}

/// An LDAP attribute description as RFC 4512 spells a name (`uid`, `sAMAccountName`).
fn ldap_attribute_name(a: &str) -> bool {
    a.starts_with(|c: char| c.is_ascii_alphabetic())
        && a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        match parse(text, Path::new("/nonexistent/t.toml")) {
            Ok(_) => Vec::new(),
            Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
        }
    }

    const MIN: &str = r#"
[[listeners]]
address = "127.0.0.1:8080"
[pools.p]
backends = ["http://127.0.0.1:9000"]
[authenticators.public]
type = "none"
[[routes]]
name = "r"
path_prefix = "/r"
pool = "p"
authenticators = ["public"]
"#;

    #[test]
    fn a_minimal_config_is_accepted() {
        assert_eq!(errors(MIN), Vec::<String>::new());
    }

    #[test]
    fn every_error_is_reported_with_file_and_key() {
        let text = format!(
            "{MIN}\n[[routes]]\nname = \"r\"\npath_prefix = \"/r/\"\npool = \"nope\"\n\
             authenticators = []\nbogus = 1\n[[routes]]\nname = \"s\"\npath_prefix = \"/s\"\n\
             pool = \"nope\"\nauthenticators = [\"ghost\"]\n"
        );
        let errs = errors(&text);
        assert!(
            errs.iter()
                .any(|e| e.starts_with("/nonexistent/t.toml:routes[1]") && e.contains("bogus")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.contains("routes[2].pool: unknown pool `nope`")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.contains("routes[2].authenticators[0]: unknown authenticator")),
            "{errs:?}"
        );
    }

    #[test]
    fn plaintext_outside_loopback_needs_consent() {
        let text = MIN.replace("127.0.0.1:8080", "0.0.0.0:8080");
        assert!(errors(&text)[0].contains("listeners[0].address: plain HTTP"));
        let text = text.replace(
            "address = \"0.0.0.0:8080\"",
            "address = \"0.0.0.0:8080\"\nallow_plaintext = true",
        );
        assert!(errors(&text).is_empty());
    }

    #[test]
    fn public_cannot_mix_with_real_authenticators() {
        let text = MIN.replace(
            "authenticators = [\"public\"]",
            "authenticators = [\"public\", \"public2\"]",
        ) + "[authenticators.public2]\ntype = \"none\"\n";
        assert!(
            errors(&text)
                .iter()
                .any(|e| e.contains("cannot be combined"))
        );
    }

    #[test]
    fn prefixes_are_normalised_and_checked() {
        assert_eq!(normalize_prefix("/a/b/").unwrap(), "/a/b");
        assert_eq!(normalize_prefix("/").unwrap(), "/");
        assert!(normalize_prefix("a").is_err());
        assert!(normalize_prefix("/a/../b").is_err());
        assert!(normalize_prefix("/a%2f").is_err());
        assert!(normalize_prefix("/a;b").is_err());
        assert!(normalize_prefix("/caf\u{e9}").is_err());
        assert!(normalize_prefix("/a\"b").is_err());
        assert_eq!(normalize_prefix("/a@b:c/").unwrap(), "/a@b:c");
    }

    #[test]
    fn backends_parse() {
        let base = Path::new("/etc/hpcgate");
        assert!(matches!(
            parse_backend("http://127.0.0.1:9090", base).unwrap(),
            BackendAddr::Tcp { tls: false, .. }
        ));
        assert!(matches!(
            parse_backend("https://[::1]:8443", base).unwrap(),
            BackendAddr::Tcp { tls: true, .. }
        ));
        assert_eq!(
            parse_backend("unix:run/a.sock", base).unwrap(),
            BackendAddr::Unix(PathBuf::from("/etc/hpcgate/run/a.sock"))
        );
        assert!(parse_backend("127.0.0.1:80", base).is_err());
        assert!(parse_backend("http://::1:80", base).is_err());
        assert!(parse_backend("http://127.0.0.1:99999", base).is_err());
        assert!(parse_backend("http://127.0.0.1:80/x", base).is_err());
    }
}
