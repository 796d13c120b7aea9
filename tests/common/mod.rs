//! Test harness: the real `hpcgate` binary with a temporary config, a recording upstream,
//! and clients that talk to it over TLS (h1, h2), plain TCP and raw bytes.
#![allow(dead_code)]

pub mod oidc;
pub mod prom;
pub mod webdriver;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::Request;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const ALICE_PW: &str = "alice-secret-pw";
pub const BOB_PW: &str = "bob-secret-pw";

/// A free TCP port on 127.0.0.1 (the kernel picks; the tiny race is acceptable in tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A free TCP port below 1024 on 127.0.0.1 (binding it needs root, as the tests run).
pub fn free_low_port() -> u16 {
    (600..1000)
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("no free port below 1024")
}

/// Makes `dir` and everything in it belong to `nobody` (uid and gid 65534), as an operator
/// gives the config to the service user.
pub fn give_to_nobody(dir: &Path) {
    std::os::unix::fs::chown(dir, Some(65534), Some(65534)).unwrap();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            give_to_nobody(&p);
        } else {
            std::os::unix::fs::chown(&p, Some(65534), Some(65534)).unwrap();
        }
    }
}

/// One request as an upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub headers: Vec<(String, String)>,
}

impl Seen {
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
    pub fn one(&self, name: &str) -> Option<&str> {
        let all = self.all(name);
        assert!(
            all.len() <= 1,
            "header {name} seen {} times: {all:?}",
            all.len()
        );
        all.first().copied()
    }
}

/// An HTTP upstream that records every request and answers 200 with a small JSON body.
/// `delay` makes it slow (for timeouts and graceful shutdown).
pub struct Recorder {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Recorder {
    pub async fn start(delay: Duration) -> Recorder {
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let s = seen.clone();
        let app = axum::Router::new().fallback(move |req: Request| {
            let s = s.clone();
            async move {
                s.lock().unwrap().push(Seen {
                    method: req.method().to_string(),
                    uri: req.uri().to_string(),
                    headers: req
                        .headers()
                        .iter()
                        .map(|(k, v)| {
                            (
                                k.to_string(),
                                String::from_utf8_lossy(v.as_bytes()).into_owned(),
                            )
                        })
                        .collect(),
                });
                tokio::time::sleep(delay).await;
                axum::Json(serde_json::json!({"upstream": "recorder", "path": req.uri().path()}))
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Recorder { addr, seen }
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn last(&self) -> Seen {
        self.requests()
            .last()
            .cloned()
            .expect("the upstream saw no request")
    }
}

/// A TCP server that accepts connections and never answers.
pub async fn hanging_backend() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    addr
}

/// A running gateway process, killed on drop.
pub struct Gateway {
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub tls_port: u16,
    pub plain_port: u16,
    pub v6_port: Option<u16>,
    pub log: PathBuf,
}

/// The parts of a test config that vary; the harness adds listeners, certs and users.
#[derive(Default)]
pub struct Setup {
    /// TOML for pools, routes and extra authenticators (`local` is always defined).
    pub body: String,
    pub ipv6: bool,
    /// A Cedar policies directory (default: the embedded policies).
    pub policies_dir: Option<PathBuf>,
    /// More users of the `local` authenticator: (name, groups); password `<name>-pw`.
    pub extra_users: Vec<(String, Vec<String>)>,
    /// `[gateway] authenticators`, for `/-/whoami` and `/-/metrics` (default: `["local"]`).
    pub gateway_authenticators: Vec<String>,
    /// More keys for the IPv4 TLS listener (e.g. `client_ca = "…"`).
    pub tls_listener_extra: String,
    /// Run as an operator would on a host: the plain listener on a port below 1024, the
    /// files owned by `nobody`, and no `--allow-root` (so the gateway switches to `nobody`).
    /// Otherwise the gateway is started with `--allow-root` and stays root (the test machine
    /// runs tests as root, and some read files only root may read).
    pub as_service_user: bool,
    /// The `[audit]` section's keys (default: `path = "audit.log"`).
    pub audit: Option<String>,
    /// More keys for the `[server]` section (e.g. `request_head_timeout = "2s"`).
    pub server: String,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_hpcgate")
}

/// Writes certs, a users file (alice: hpc-admins; bob) and the config into `dir`.
/// `@TLS_PORT@` in the body becomes the TLS listener's port (for URLs the config must name,
/// such as an OIDC redirect URL).
pub fn write_config(dir: &Path, setup: &Setup, tls_port: u16, plain_port: u16, v6: Option<u16>) {
    hpcgate::process::tls::generate_dev_certs(
        dir,
        &["localhost".into(), "127.0.0.1".into(), "::1".into()],
        true,
    )
    .unwrap();
    let users = format!(
        "[[users]]\nname = \"alice\"\npassword_hash = \"{}\"\ngroups = [\"hpc-admins\", \
         \"hpc-users\"]\nemail = \"alice@example.org\"\n\n[[users]]\nname = \"bob\"\n\
         password_hash = \"{}\"\ngroups = [\"hpc-users\"]\n",
        hpcgate::authenticate::static_users::hash_password(ALICE_PW).unwrap(),
        hpcgate::authenticate::static_users::hash_password(BOB_PW).unwrap(),
    );
    let mut users = users;
    for (name, groups) in &setup.extra_users {
        users.push_str(&format!(
            "\n[[users]]\nname = \"{name}\"\npassword_hash = \"{}\"\ngroups = {groups:?}\n",
            hpcgate::authenticate::static_users::hash_password(&format!("{name}-pw")).unwrap(),
        ));
    }
    std::fs::write(dir.join("users.toml"), users).unwrap();
    let policies = match &setup.policies_dir {
        Some(d) => format!("policies_dir = \"{}\"\n", d.display()),
        None => String::new(),
    };
    let v6_listener = match v6 {
        Some(p) => format!(
            "[[listeners]]\naddress = \"[::1]:{p}\"\ntls_cert = \"server.pem\"\n\
             tls_key = \"server-key.pem\"\n"
        ),
        None => String::new(),
    };
    let gateway_auth = if setup.gateway_authenticators.is_empty() {
        vec!["local".to_string()]
    } else {
        setup.gateway_authenticators.clone()
    };
    let config = format!(
        "[server]\nstate_dir = \"state\"\ngrace_period = \"10s\"\n{server}\n\n\
         [logging]\nlevel = \"info\"\nformat = \"json\"\n\n\
         [[listeners]]\naddress = \"127.0.0.1:{tls_port}\"\ntls_cert = \"server.pem\"\n\
         tls_key = \"server-key.pem\"\n{}\n\n\
         [[listeners]]\naddress = \"127.0.0.1:{plain_port}\"\n\n{v6_listener}\n\
         [authenticators.local]\ntype = \"static\"\nusers_file = \"users.toml\"\n\n\
         [authenticators.public]\ntype = \"none\"\n\n\
         [gateway]\nauthenticators = {gateway_auth:?}\n\n\
         [authorization]\nadmin_groups = [\"hpc-admins\"]\n{policies}\n\
         [audit]\n{}\n\n{}\n",
        setup.tls_listener_extra,
        setup.audit.as_deref().unwrap_or("path = \"audit.log\""),
        setup.body.replace("@TLS_PORT@", &tls_port.to_string()),
        server = setup.server,
    );
    std::fs::write(dir.join("hpcgate.toml"), config).unwrap();
}

impl Gateway {
    pub async fn start(setup: Setup) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let tls_port = free_port();
        let plain_port = if setup.as_service_user {
            free_low_port()
        } else {
            free_port()
        };
        let v6_port = setup.ipv6.then(|| {
            std::net::TcpListener::bind("[::1]:0")
                .expect("IPv6 loopback ([::1]) must be available for this test")
                .local_addr()
                .unwrap()
                .port()
        });
        write_config(dir.path(), &setup, tls_port, plain_port, v6_port);
        let log = dir.path().join("gateway.log");
        let mut cmd = Command::new(bin());
        cmd.args(["serve", "--config"])
            .arg(dir.path().join("hpcgate.toml"));
        if setup.as_service_user {
            give_to_nobody(dir.path());
        } else {
            cmd.arg("--allow-root");
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start hpcgate");
        let gw = Gateway {
            child: Some(child),
            dir,
            tls_port,
            plain_port,
            v6_port,
            log,
        };
        gw.wait_ready().await;
        gw
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", self.plain_port)).await
            {
                let _ = s
                    .write_all(b"GET /-/ready HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                    .await;
                let mut buf = Vec::new();
                let _ = s.read_to_end(&mut buf).await;
                if buf.starts_with(b"HTTP/1.1 200") {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "gateway did not become ready; log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The audit log's records.
    pub fn audit(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.path().join("audit.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("audit lines are JSON"))
            .collect()
    }

    /// The newest audit record of `route` (the audit writer is asynchronous: waits a little).
    pub async fn last_audit(&self, route: &str) -> serde_json::Value {
        for _ in 0..40 {
            if let Some(a) = self.audit().into_iter().rev().find(|a| a["route"] == route) {
                return a;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no audit record for route {route}");
    }

    /// The audit record of one request (by its `x-request-id`), waiting for it to be written.
    pub async fn audit_of(&self, request_id: &str) -> serde_json::Value {
        for _ in 0..40 {
            if let Some(a) = self
                .audit()
                .into_iter()
                .rev()
                .find(|a| a["request_id"] == request_id)
            {
                return a;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no audit record for request {request_id}");
    }

    /// GET `path` over HTTPS (HTTP/1.1) with Basic credentials.
    pub async fn get_as(&self, path: &str, user: &str, pw: &str) -> reqwest::Response {
        self.client(false)
            .get(self.url(path))
            .header("authorization", basic(user, pw))
            .send()
            .await
            .unwrap()
    }

    /// `/-/metrics` as alice (an admin) sees it.
    pub async fn metrics_text(&self) -> String {
        self.get_as("/-/metrics", "alice", ALICE_PW)
            .await
            .text()
            .await
            .unwrap()
    }

    /// The value of the first `/-/metrics` line starting with `name` (labels included), as
    /// alice sees it; 0 when there is none.
    pub async fn metric(&self, name: &str) -> f64 {
        self.metrics_text()
            .await
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.tls_port)
    }

    pub fn plain_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.plain_port)
    }

    /// A client that trusts the test CA; `h2`: HTTP/2 only via ALPN, else HTTP/1.1 only.
    pub fn client(&self, h2: bool) -> reqwest::Client {
        self.client_with(h2, None)
    }

    /// [`Gateway::client`], showing a TLS client certificate (PEM: certificate, then key).
    pub fn client_with(&self, h2: bool, identity: Option<reqwest::Identity>) -> reqwest::Client {
        let ca =
            reqwest::Certificate::from_pem(&std::fs::read(self.dir.path().join("ca.pem")).unwrap())
                .unwrap();
        let b = reqwest::Client::builder()
            .add_root_certificate(ca)
            .tls_built_in_root_certs(false)
            .timeout(Duration::from_secs(30));
        let b = match identity {
            Some(id) => b.identity(id),
            None => b,
        };
        let b = if h2 {
            b.http2_prior_knowledge()
        } else {
            b.http1_only()
        };
        b.build().unwrap()
    }

    /// Sends raw bytes to the plain listener and returns the raw response.
    pub async fn raw(&self, request: &[u8]) -> String {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.plain_port))
            .await
            .unwrap();
        s.write_all(request).await.unwrap();
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
    }

    /// Sends SIGHUP (reload).
    pub fn hup(&self) {
        Command::new("kill")
            .args(["-HUP", &self.pid().to_string()])
            .status()
            .unwrap();
    }

    /// The config file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("hpcgate.toml")
    }

    /// Runs `hpcgate ARGS --config <this gateway's config>`: stdout on success, stderr on
    /// failure.
    pub fn command(&self, args: &[&str]) -> Result<String, String> {
        let out = std::process::Command::new(bin())
            .args(args)
            .arg("--config")
            .arg(self.config_path())
            .output()
            .unwrap();
        if out.status.success() {
            Ok(String::from_utf8(out.stdout).unwrap())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Waits until the log holds `needle` `n` times (the gateway logs asynchronously).
    pub async fn wait_log(&self, needle: &str, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.log_text().matches(needle).count() < n {
            assert!(
                Instant::now() < deadline,
                "the log never said `{needle}` {n} time(s):\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits for the process to exit; returns how long that took.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<Duration> {
        let start = Instant::now();
        let child = self.child.as_mut().unwrap();
        while start.elapsed() < limit {
            if child.try_wait().unwrap().is_some() {
                return Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Basic credentials header value.
pub fn basic(user: &str, pw: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
    )
}

/// Parses a raw HTTP/1.1 response: (status, lower-case headers, body).
pub fn parse_raw(resp: &str) -> (u16, Vec<(String, String)>, String) {
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((resp, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

/// Asserts a JSON error envelope with the given status and errorType.
pub fn assert_json_error(status: u16, body: &str, want_status: u16, want_type: &str) {
    assert_eq!(status, want_status, "body: {body}");
    let v: serde_json::Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {body:?}"));
    assert_eq!(v["status"], "error", "{body}");
    assert_eq!(v["errorType"], want_type, "{body}");
    assert!(v["error"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
}

/// Asserts that a response is a JSON error with the given status and errorType.
pub async fn expect_error(r: reqwest::Response, want_status: u16, want_type: &str) {
    let status = r.status().as_u16();
    let body = r.text().await.unwrap();
    assert_json_error(status, &body, want_status, want_type);
}

/// A real server started by one of the scripts in `tests/servers/`, stopped on drop.
pub struct RealServer {
    script: String,
    /// Arguments after `start DIR` / `stop DIR` (e.g. a Prometheus instance's name).
    args: Vec<String>,
    pub dir: tempfile::TempDir,
    pub env: std::collections::HashMap<String, String>,
}

impl RealServer {
    /// Starts `tests/servers/<name>.sh` in a fresh directory. A server that cannot start is a
    /// test failure, never a skip: `tests/run` installs every server first.
    pub fn start(name: &str) -> RealServer {
        Self::start_full(name, &[], &[])
    }

    /// [`RealServer::start`] with extra arguments for `start` and `stop`.
    pub fn start_with(name: &str, args: &[&str]) -> RealServer {
        Self::start_full(name, args, &[])
    }

    /// `start`, with inputs for the script in its environment (e.g. a fixed port).
    pub fn start_with_env(name: &str, env: &[(&str, &str)]) -> RealServer {
        Self::start_full(name, &[], env)
    }

    fn start_full(name: &str, args: &[&str], env: &[(&str, &str)]) -> RealServer {
        Self::start_prepared(name, args, env, |_| {})
    }

    /// `start` with arguments and environment, after `prepare` ran with the server's fresh
    /// directory (e.g. a Prometheus backfill, which must happen before start).
    pub fn start_prepared(
        name: &str,
        args: &[&str],
        env: &[(&str, &str)],
        prepare: impl FnOnce(&Path),
    ) -> RealServer {
        let dir = tempfile::Builder::new()
            .prefix(&format!("hpcgate-{name}-"))
            .tempdir_in("/tmp")
            .unwrap();
        prepare(dir.path());
        let script = format!("{}/tests/servers/{name}.sh", env!("CARGO_MANIFEST_DIR"));
        let out = Command::new("bash")
            .arg(&script)
            .arg("start")
            .arg(dir.path())
            .args(args)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name} did not start (tests/run installs it; run `bash {script} install`):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let env = std::fs::read_to_string(dir.path().join("env"))
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches(['\'', '"']).to_string()))
            .collect();
        RealServer {
            script,
            args: args.iter().map(|a| a.to_string()).collect(),
            dir,
            env,
        }
    }

    pub fn get(&self, key: &str) -> &str {
        self.env
            .get(key)
            .unwrap_or_else(|| panic!("{key} not in the server's env: {:?}", self.env.keys()))
    }

    pub fn stop(&self) {
        let _ = Command::new("bash")
            .arg(&self.script)
            .arg("stop")
            .arg(self.dir.path())
            .args(&self.args)
            .output();
    }
}

impl Drop for RealServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Now, in whole Unix seconds.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}
