//! The embedded demo: `hpcgate serve` with no config.
//!
//! Creates `./hpcgate-demo/` once (development CA and server certificate, users alice and bob
//! with generated passwords, a config file to read and copy) and runs the gateway on
//! https://localhost:8443 (127.0.0.1 and ::1) in front of a small built-in upstream that
//! shows the request as it arrived, so a newcomer sees what hpcgate sends upstream.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use axum::Json;
use axum::extract::Request;
use base64::Engine;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde_json::{Map, Value, json};

use crate::authenticate::static_users::hash_password;
use crate::process::tls::{generate_dev_certs, write_file};

pub const DIR: &str = "hpcgate-demo";

/// Prepares the demo directory and returns the path of its config file.
pub fn prepare(dir: &Path) -> Result<(PathBuf, Vec<(String, String)>), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    if !dir.join("server.pem").exists() || !dir.join("ca.pem").exists() {
        generate_dev_certs(
            dir,
            &["localhost".into(), "127.0.0.1".into(), "::1".into()],
            true,
        )?;
    }
    let creds_path = dir.join("demo-credentials.txt");
    let users_path = dir.join("users.toml");
    let creds = match read_credentials(&creds_path) {
        Some(c) if users_path.exists() => c,
        _ => {
            let creds: Vec<(String, String)> = ["alice", "bob"]
                .iter()
                .map(|u| Ok((u.to_string(), random_password()?)))
                .collect::<Result<_, String>>()?;
            let mut users = String::from(
                "# Demo users (generated). Passwords are in demo-credentials.txt.\n\
                 # Make a hash of your own with: hpcgate hash-password\n",
            );
            for (user, password) in &creds {
                let groups = if user == "alice" {
                    r#"["hpc-admins", "hpc-users"]"#
                } else {
                    r#"["hpc-users"]"#
                };
                users.push_str(&format!(
                    "\n[[users]]\nname = \"{user}\"\npassword_hash = \"{}\"\ngroups = {groups}\n\
                     email = \"{user}@example.org\"\n",
                    hash_password(password)?
                ));
            }
            write_file(&users_path, users.as_bytes(), 0o600)?;
            let lines: String = creds.iter().map(|(u, p)| format!("{u}:{p}\n")).collect();
            write_file(&creds_path, lines.as_bytes(), 0o600)?;
            creds
        }
    };
    let ipv6 = std::net::TcpListener::bind("[::1]:0").is_ok();
    let config = format!(
        r#"# The embedded demo's config, written by `hpcgate serve` (no --config).
# Copy it as a start; config/hpcgate.toml documents every key.

[server]
state_dir = "."
grace_period = "5s"

[logging]
level = "info"
format = "text"

[[listeners]]
address = "127.0.0.1:8443"
tls_cert = "server.pem"
tls_key = "server-key.pem"
{ipv6_listener}
[authenticators.demo]
type = "static"
users_file = "users.toml"

# Keys made with `hpcgate apikey create --user alice --name laptop` (SQLite: hpcgate.db).
[authenticators.keys]
type = "api_key"

# Tokens from `curl -u alice:… -X POST https://localhost:8443/auth/token`.
[authenticators.tokens]
type = "gateway_jwt"

[tokens]
authenticators = ["demo"]
ttl = "1h"

[gateway]
authenticators = ["demo", "keys", "tokens"]

[authorization]
# The embedded default policies: admins may do anything, users may read and write.
admin_groups = ["hpc-admins"]

[audit]
path = "audit.log"

[pools.echo]
backends = ["unix:echo.sock"]

[[routes]]
name = "echo"
path_prefix = "/echo"
strip_prefix = true
pool = "echo"
authenticators = ["demo", "keys", "tokens"]

# The built-in accounting service (CEEMS-compatible API), with a few demo units.
[accounting]

[accounting.clusters.demo]
manager = "slurm"
emission_factor = 56.0

[pools.accounting]
backends = ["unix:accounting.sock"]

[[routes]]
name = "accounting"
path_prefix = "/api/v1"
pool = "accounting"
kind = "accounting"
authenticators = ["demo", "keys", "tokens"]
"#,
        ipv6_listener = if ipv6 {
            "\n[[listeners]]\naddress = \"[::1]:8443\"\ntls_cert = \"server.pem\"\n\
             tls_key = \"server-key.pem\"\n"
        } else {
            ""
        }
    );
    let config_path = dir.join("hpcgate.toml");
    write_file(&config_path, config.as_bytes(), 0o644)?;
    Ok((config_path, creds))
}

fn read_credentials(path: &Path) -> Option<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path).ok()?;
    let creds: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(u, p)| (u.to_string(), p.to_string()))
        .collect();
    (creds.len() == 2).then_some(creds)
}

fn random_password() -> Result<String, String> {
    let mut b = [0u8; 18];
    getrandom::getrandom(&mut b).map_err(|e| format!("no randomness: {e}"))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
}

/// What to try, printed once the demo listens.
pub fn banner(dir: &Path, creds: &[(String, String)]) -> String {
    let ca = dir.join("ca.pem");
    let (user, pw) = &creds[0];
    let (user2, pw2) = &creds[1];
    format!(
        "\nhpcgate demo is running on https://localhost:8443 (127.0.0.1 and [::1]).\n\
         Users (also in {creds}): {user} (admin) password {pw}, {user2} password {pw2}\n\n\
         Try:\n  \
         curl --cacert {ca} -u {user}:{pw} https://localhost:8443/-/whoami\n  \
         curl --cacert {ca} -u {user2}:{pw2} https://localhost:8443/echo/hello   \
         # what the upstream receives\n  \
         curl --cacert {ca} -H 'X-Forwarded-User: root' https://localhost:8443/echo/   \
         # 401: spoofing gets nowhere\n  \
         curl --cacert {ca} https://localhost:8443/-/healthz\n  \
         curl --cacert {ca} -u {user2}:{pw2} https://localhost:8443/api/v1/units   \
         # bob's jobs and his projects'\n  \
         curl --cacert {ca} -u {user}:{pw} https://localhost:8443/api/v1/usage/global/admin\n  \
         # API docs: https://localhost:8443/api/v1/docs/\n  \
         curl --cacert {ca} -u {user}:{pw} -X POST https://localhost:8443/auth/token   \
         # a 1-hour token\n  \
         hpcgate apikey create --user {user2} --name laptop   \
         # then: curl --cacert {ca} -H 'X-API-Key: hpcg_…' …\n\n\
         Config: {config}. Stop with Ctrl-C.\n",
        creds = dir.join("demo-credentials.txt").display(),
        ca = ca.display(),
        config = dir.join("hpcgate.toml").display(),
    )
}

/// The demo's upstream: answers every request with what it received, as JSON.
pub struct EchoUpstream {
    pub socket: PathBuf,
}

async fn echo(req: Request) -> Json<Value> {
    let mut headers = Map::new();
    for (k, v) in req.headers() {
        headers.insert(
            k.as_str().to_string(),
            Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()),
        );
    }
    Json(json!({
        "upstream": "hpcgate demo echo",
        "method": req.method().as_str(),
        "path": req.uri().path(),
        "query": req.uri().query(),
        "headers": headers,
    }))
}

#[async_trait]
impl BackgroundService for EchoUpstream {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let _ = std::fs::remove_file(&self.socket);
        let listener = match tokio::net::UnixListener::bind(&self.socket) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(socket = %self.socket.display(), error = %e, "demo upstream cannot listen");
                return;
            }
        };
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&self.socket, std::fs::Permissions::from_mode(0o600));
        let app = axum::Router::new().fallback(echo);
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = shutdown.changed().await;
            })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "demo upstream stopped");
        }
    }
}

/// Demo units, projects and usage for alice and bob, written once at start (relative to
/// now, so that the default 24 h window of `/api/v1/units` shows them).
pub struct AccountingSeed {
    pub db: crate::db::DbConfig,
}

/// (uuid, user, project, hours ago it ended (0: running), hours it ran, cpus, gpus, kWh).
type DemoUnit = (
    &'static str,
    &'static str,
    &'static str,
    i64,
    i64,
    i64,
    i64,
    f64,
);

const DEMO_UNITS: &[DemoUnit] = &[
    ("1001", "alice", "climate", 2, 3, 32, 0, 1.9),
    ("1002", "alice", "climate", 5, 1, 8, 1, 0.7),
    ("1003", "bob", "climate", 1, 2, 16, 0, 0.8),
    ("1004", "bob", "genomics", 3, 4, 64, 0, 4.2),
    ("1005", "bob", "genomics", 0, 1, 4, 2, 0.0),
    ("1006", "bob", "genomics", 30, 6, 128, 0, 9.5),
];

async fn seed(db: &crate::db::Db) -> Result<(), crate::db::StoreError> {
    use crate::accounting::store::Unit;
    let now = crate::db::now();
    let units: Vec<Unit> = DEMO_UNITS
        .iter()
        .map(|&(uuid, user, project, ago, hours, cpus, gpus, kwh)| {
            let ended = if ago == 0 { 0 } else { now - ago * 3600 };
            let started = if ago == 0 {
                now - hours * 3600
            } else {
                ended - hours * 3600
            };
            Unit {
                cluster_id: "demo".into(),
                resource_manager: "slurm".into(),
                uuid: uuid.into(),
                name: format!("{project}-run-{uuid}"),
                username: user.into(),
                project: project.into(),
                groupname: user.into(),
                partition: if gpus > 0 { "gpu" } else { "cpu" }.into(),
                state: if ago == 0 { "RUNNING" } else { "COMPLETED" }.into(),
                created_at: started - 120,
                started_at: started,
                ended_at: ended,
                elapsed: hours * 3600,
                alloc_cpus: cpus,
                alloc_mem: cpus * 4 * 1024 * 1024 * 1024,
                alloc_gpus: gpus,
                alloc_nodes: 1.max(cpus / 64),
                cpu_usage: Some(35.0 + (cpus % 50) as f64),
                cpu_time: None,
                mem_usage: Some(42.0),
                gpu_usage: (gpus > 0).then_some(71.0),
                energy_kwh: (kwh > 0.0).then_some(kwh),
                emissions_g: (kwh > 0.0).then_some(kwh * 56.0),
            }
        })
        .collect();
    crate::accounting::store::upsert_units(db, &units).await?;
    // bob leads genomics: he may add and remove its members.
    crate::accounting::directory::add_member(db, "genomics", "bob", true).await?;
    Ok(())
}

#[async_trait]
impl BackgroundService for AccountingSeed {
    async fn start(&self, _shutdown: ShutdownWatch) {
        let result = match crate::db::Db::lazy(&self.db) {
            Ok(db) => seed(&db).await,
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "demo: cannot write the demo accounting units");
        }
    }
}
