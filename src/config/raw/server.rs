//! `[server]`, `[process]`, `[logging]`, `[[listeners]]`, `[gateway]`, `[audit]` and
//! `[database]`: the process and what it serves on.

use serde::Deserialize;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Server {
    /// Directory for state the gateway creates (keys, databases). Relative to the config file.
    pub state_dir: Option<String>,
    /// Worker threads of the proxy service.
    pub threads: Option<usize>,
    /// Idle upstream connections kept open for reuse, across all pools.
    pub upstream_keepalive: Option<usize>,
    /// How long SIGTERM/SIGINT wait for in-flight requests before the process exits.
    pub grace_period: Option<String>,
    /// How long a client may take to send a whole request head, from its first byte.
    pub request_head_timeout: Option<String>,
    /// How long a client connection (HTTP/1.1 or HTTP/2) may wait idle for its next request.
    pub keepalive_timeout: Option<String>,
    /// Extra inbound headers to strip, on top of the built-in identity header list.
    #[serde(default)]
    pub strip_headers: Vec<String>,
}

/// The process: which user it runs as, its pid file, reload and upgrade (`[process]`).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Process {
    /// Started as root, the gateway switches to this user once its listeners are open
    /// (default `nobody`). `root` is refused unless `serve --allow-root`.
    pub user: Option<String>,
    /// Its group (default: the user's primary group).
    pub group: Option<String>,
    /// Where `serve` writes its pid, for `hpcgate reload` (default `STATE_DIR/hpcgate.pid`).
    pub pid_file: Option<String>,
    /// pingora's upgrade socket, through which a new binary (`serve --upgrade`) takes over the
    /// listeners (default `STATE_DIR/upgrade.sock`).
    pub upgrade_socket: Option<String>,
    /// How often listener certificates are checked for changes and reloaded (default 60s;
    /// `0s` turns the check off: SIGHUP still reloads them).
    pub watch_certificates: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Logging {
    /// `error`, `warn`, `info`, `debug`, `trace`, or a tracing filter; `RUST_LOG` overrides.
    pub level: Option<String>,
    /// `json` (default) or `text`.
    pub format: Option<String>,
    /// One line per request (default true).
    pub access_log: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// `IP:PORT`; IPv6 as `[::1]:8443`.
    pub address: String,
    /// PEM certificate chain. With `tls_key`, the listener speaks TLS.
    pub tls_cert: Option<String>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub tls_key: Option<String>,
    /// Offer HTTP/2 via ALPN on TLS listeners (default true).
    pub http2: Option<bool>,
    /// Plain HTTP on a non-loopback address is refused unless this is true.
    #[serde(default)]
    pub allow_plaintext: bool,
    /// PEM CA bundle: ask clients for a certificate signed by it (optional for clients;
    /// a `client_cert` authenticator maps pinned certificates to services).
    pub client_ca: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Gateway {
    /// Authenticators for `/-/whoami` (required if that endpoint is to work).
    #[serde(default)]
    pub authenticators: Vec<String>,
    /// Serve `/-/metrics` without authentication (default false: same authenticators).
    #[serde(default)]
    pub metrics_public: bool,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Audit {
    /// Where audit lines go: a file path (appended), `-` for standard output, or `off`.
    pub path: Option<String>,
    /// Lines that may wait for the writer before records are dropped (default 65536).
    pub backlog: Option<usize>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Database {
    /// `sqlite://PATH` or `postgres://USER:PASSWORD@HOST:PORT/DB` (`${ENV}` expanded).
    /// Default: SQLite `hpcgate.db` in `server.state_dir`.
    pub url: Option<String>,
    /// File holding the URL (for a URL with a password).
    pub url_file: Option<String>,
    /// Connections kept (default 8).
    pub max_connections: Option<u32>,
    /// Longest wait for a connection before a request that needs the database gets 503
    /// (default 2s).
    pub timeout: Option<String>,
}
