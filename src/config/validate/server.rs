//! Checks for `[server]`, `[logging]` and `[[listeners]]` (addresses, TLS certificates and the
//! client CAs).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::Validator;
use crate::authenticate::headers::{IDENTITY_HEADERS, normalize_header_name};
use crate::config::{Listener, Logging, TlsFiles, raw, resolve_path};

/// `[server]` checked: its fields go into [`crate::config::Config`] as they are.
pub(super) struct ServerSection {
    pub(super) state_dir: PathBuf,
    pub(super) threads: usize,
    pub(super) upstream_keepalive: usize,
    pub(super) grace_period: Duration,
    pub(super) request_head_timeout: Duration,
    pub(super) keepalive_timeout: Duration,
    pub(super) strip_headers: Vec<String>,
}

impl Validator {
    /// `[server]`: threads, timeouts and the inbound headers stripped besides the identity ones.
    pub(super) fn server(&mut self, server: raw::Server) -> ServerSection {
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
        ServerSection {
            state_dir,
            threads,
            upstream_keepalive,
            grace_period,
            request_head_timeout,
            keepalive_timeout,
            strip_headers,
        }
    }

    pub(super) fn logging(&mut self, l: raw::Logging) -> Logging {
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

    pub(super) fn listeners(&mut self, raw: Vec<(usize, raw::Listener)>) -> Vec<Listener> {
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
}
