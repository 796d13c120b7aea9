//! Dependencies that fail in ways a real server will not: an IdP (discovery or keys) that
//! accepts and never answers, a JWKS that is garbage or huge, an LDAP server that never answers, a locked
//! SQLite database, upstreams that stall or close mid-body, and slow-loris clients.
//!
//! Each fault gets a burst of requests. Every request must get its documented status (JSON
//! body) within its configured timeout; the gateway must not panic, must keep serving a
//! healthy route during and after the burst, and must hold no more file descriptors or
//! threads after the burst settles than before it (counted in `/proc/<pid>`, since the
//! gateway exposes no task counts).

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

#[path = "smuggling/h2raw.rs"]
#[allow(dead_code)]
mod h2raw;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Requests per burst.
const BURST: usize = 50;
/// File descriptors and threads the gateway may hold more after a burst settles (a lazily
/// opened database connection, a log file being rotated, a worker thread starting late).
const FD_SLACK: usize = 8;
const THREAD_SLACK: usize = 4;

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .count()
}

/// One raw HTTP/1.1 request on a fresh connection (`Connection: close`): status, body,
/// whether the body was complete (as long as Content-Length said), and the time taken.
struct Answer {
    status: u16,
    body: String,
    complete: bool,
    took: Duration,
}

async fn send(port: u16, path: &str, extra: &str) -> Answer {
    let start = Instant::now();
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{extra}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (status, headers, body) = parse_raw(&text);
    let complete = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .is_some_and(|n| body.len() == n);
    Answer {
        status,
        body,
        complete,
        took: start.elapsed(),
    }
}

/// A raw upstream that reads a request head and then does `act` with the socket; sockets
/// it does not close are held open until the test ends.
async fn faulty_upstream(act: &'static [u8], close: bool) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = Arc::new(std::sync::Mutex::new(Vec::new()));
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let held = held.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = sock.write_all(act).await;
                if !close {
                    held.lock().unwrap().push(sock);
                }
            });
        }
    });
    addr
}

/// A fake IdP: discovery works, `/jwks` answers `jwks` (shared, so a huge one is built once);
/// or the discovery document names `jwks_uri` elsewhere.
async fn fake_idp(jwks: bytes::Bytes, jwks_uri: Option<String>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let doc = serde_json::json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/auth"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": jwks_uri.unwrap_or_else(|| format!("{issuer}/jwks")),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    });
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            axum::routing::get(move || async move { axum::Json(doc) }),
        )
        .route(
            "/jwks",
            axum::routing::get(move || {
                let jwks = jwks.clone();
                async move { ([("content-type", "application/json")], jwks) }
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    issuer
}

/// ~50 MB of JWKS: 100 000 Ed25519 keys with long key ids.
fn huge_jwks() -> bytes::Bytes {
    let mut s = String::from("{\"keys\":[");
    for i in 0..100_000 {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!(
            "{{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"use\":\"sig\",\"alg\":\"EdDSA\",\
             \"kid\":\"{i:06}{}\",\"x\":\"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\"}}",
            "k".repeat(400)
        ));
    }
    s.push_str("]}");
    bytes::Bytes::from(s)
}

fn oidc(name: &str, issuer: &str) -> String {
    format!(
        "[authenticators.{name}]\ntype = \"oidc_bearer\"\nissuer = \"{issuer}\"\n\
         audiences = [\"urn:hpcgate\"]\ntimeout = \"1s\"\ndiscovery_retry = \"1s\"\n\n"
    )
}

fn pool(name: &str, addr: SocketAddr) -> String {
    format!(
        "[pools.{name}]\nbackends = [\"http://{addr}\"]\nconnect_timeout = \"1s\"\n\
         read_timeout = \"1s\"\nwrite_timeout = \"1s\"\n\n"
    )
}

fn route(name: &str, pool: &str, auth: &str) -> String {
    format!(
        "[[routes]]\nname = \"{name}\"\npath_prefix = \"/{name}\"\npool = \"{pool}\"\n\
         authenticators = [\"{auth}\"]\n\n"
    )
}

/// An unsigned token naming `issuer`: the gateway must look at the IdP's keys to refuse it.
fn token_for(issuer: &str) -> String {
    use base64::Engine;
    let seg = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    format!(
        "Authorization: Bearer {}.{}.c2ln\r\n",
        seg(serde_json::json!({"alg": "RS256", "kid": "k"})),
        seg(serde_json::json!({"iss": issuer, "aud": "urn:hpcgate", "exp": 4_000_000_000u64}))
    )
}

/// What a fault's requests must get.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// This status, a JSON error of this type, within this long.
    Json(u16, &'static str, Duration),
    /// The upstream's 200 head went out; then the connection ends, the body short of its
    /// Content-Length, within this long.
    Truncated(Duration),
}

struct Fault {
    name: &'static str,
    path: &'static str,
    headers: String,
    want: Want,
}

#[tokio::test]
async fn faults_get_their_status_in_time_and_leak_nothing() {
    let ok = Recorder::start(Duration::ZERO).await;
    let silent = hanging_backend().await;
    let stall_head =
        faulty_upstream(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n", false).await;
    let stall_body = faulty_upstream(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\n0123456789",
        false,
    )
    .await;
    let short = faulty_upstream(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\n0123456789",
        true,
    )
    .await;
    let idp_hang = format!("http://{silent}");
    let idp_jwks_hang = fake_idp(bytes::Bytes::new(), Some(format!("http://{silent}/jwks"))).await;
    let idp_bad = fake_idp(bytes::Bytes::from_static(b"{\"keys\": 7"), None).await;
    let idp_huge = fake_idp(huge_jwks(), None).await;
    let db_dir = tempfile::tempdir().unwrap();
    let db = db_dir.path().join("keys.db");

    let mut body = format!(
        "[database]\nurl = \"sqlite://{}?mode=rwc\"\ntimeout = \"1s\"\n\n\
         [authenticators.keys]\ntype = \"api_key\"\n\n\
         [authenticators.ldap_hang]\ntype = \"ldap\"\nurl = \"ldap://{silent}\"\n\
         bind_dn = \"cn=gateway,dc=example,dc=org\"\nbind_password = \"x\"\n\
         user_base = \"ou=people,dc=example,dc=org\"\n\
         user_filter = \"(uid={{user}})\"\ntimeout = \"1s\"\n\n",
        db.display()
    );
    body += &oidc("idp_hang", &idp_hang);
    body += &oidc("idp_jwks_hang", &idp_jwks_hang);
    body += &oidc("idp_bad", &idp_bad);
    body += &oidc("idp_huge", &idp_huge);
    body += &pool("ok", ok.addr);
    body += &pool("stall_head", stall_head);
    body += &pool("stall_body", stall_body);
    body += &pool("short", short);
    body += &pool("silent", silent);
    body += &pool(
        "refused",
        format!("127.0.0.1:{}", free_port()).parse().unwrap(),
    );
    for (name, pool, auth) in [
        ("ok", "ok", "public"),
        ("stall-head", "stall_head", "public"),
        ("stall-body", "stall_body", "public"),
        ("short", "short", "public"),
        ("silent", "silent", "public"),
        ("refused", "refused", "public"),
        ("idp-hang", "ok", "idp_hang"),
        ("idp-jwks-hang", "ok", "idp_jwks_hang"),
        ("idp-bad", "ok", "idp_bad"),
        ("idp-huge", "ok", "idp_huge"),
        ("ldap", "ok", "ldap_hang"),
        ("keys", "ok", "keys"),
    ] {
        body += &route(name, pool, auth);
    }
    let gw = Gateway::start(Setup {
        body,
        ..Default::default()
    })
    .await;
    let pid = gw.pid();

    // An API key, then the database locked by another process's exclusive transaction.
    let key = gw
        .command(&["apikey", "create", "--user", "carol", "--name", "ci"])
        .unwrap()
        .trim()
        .to_string();
    let _lock = lock_sqlite(&db).await;

    // Deadlines: the configured timeouts (1 s everywhere) plus scheduling slack. LDAP's
    // is three timeouts for the whole exchange, as ldap.rs documents (bind, search, bind);
    // a locked database's is the pool wait plus SQLite's busy timeout, both `timeout`.
    let ms = Duration::from_millis;
    let fault = |name, path, headers: String, want| Fault {
        name,
        path,
        headers,
        want,
    };
    #[rustfmt::skip]
    let faults = [
        fault("upstream accepts and never answers", "/silent/x", String::new(), Want::Json(504, "timeout", ms(2000))),
        fault("upstream refuses the connection", "/refused/x", String::new(), Want::Json(502, "bad_gateway", ms(1000))),
        fault("upstream sends part of its head, then stalls", "/stall-head/x", String::new(), Want::Json(504, "timeout", ms(2000))),
        fault("upstream sends its head, then stalls in the body", "/stall-body/x", String::new(), Want::Truncated(ms(2000))),
        fault("upstream closes mid-body", "/short/x", String::new(), Want::Truncated(ms(1000))),
        fault("IdP accepts and never answers", "/idp-hang/x", token_for(&idp_hang), Want::Json(503, "unavailable", ms(1000))),
        fault("JWKS endpoint accepts and never answers", "/idp-jwks-hang/x", token_for(&idp_jwks_hang), Want::Json(503, "unavailable", ms(1000))),
        fault("JWKS is malformed", "/idp-bad/x", token_for(&idp_bad), Want::Json(503, "unavailable", ms(1000))),
        fault("JWKS is huge", "/idp-huge/x", token_for(&idp_huge), Want::Json(503, "unavailable", ms(1000))),
        fault("LDAP accepts and never answers", "/ldap/x", format!("Authorization: {}\r\n", basic("alice", "pw")), Want::Json(503, "unavailable", ms(3500))),
        fault("SQLite database locked", "/keys/x", format!("X-API-Key: {key}\r\n"), Want::Json(503, "unavailable", ms(2500))),
    ];

    // Warm up: each route once (lazy pools, caches), then the baseline.
    for f in &faults {
        send(gw.plain_port, f.path, &f.headers).await;
    }
    assert_eq!(send(gw.plain_port, "/ok/x", "").await.status, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (fd0, th0) = (fds(pid), threads(pid));
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for f in &faults {
        let burst: Vec<_> = (0..BURST)
            .map(|_| {
                let (path, headers) = (f.path, f.headers.clone());
                let port = gw.plain_port;
                tokio::spawn(async move { send(port, path, &headers).await })
            })
            .collect();
        // The healthy route answers while the burst is in flight.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let during = send(gw.plain_port, "/ok/x", "").await;
        if during.status != 200 || during.took > ms(1000) {
            failures.push(format!(
                "{}: healthy route during the burst: {} in {:?}",
                f.name, during.status, during.took
            ));
        }
        let mut peak_fds = fds(pid);
        let mut slowest = Duration::ZERO;
        for h in burst {
            let a = h.await.unwrap();
            peak_fds = peak_fds.max(fds(pid));
            slowest = slowest.max(a.took);
            let ok = match f.want {
                Want::Json(status, kind, within) => {
                    let j: Option<serde_json::Value> = serde_json::from_str(&a.body).ok();
                    a.status == status
                        && j.is_some_and(|j| j["status"] == "error" && j["errorType"] == kind)
                        && a.took <= within
                }
                Want::Truncated(within) => a.status == 200 && !a.complete && a.took <= within,
            };
            if !ok {
                failures.push(format!(
                    "{}: want {:?}, got {} {:?} (complete: {}) in {:?}",
                    f.name, f.want, a.status, a.body, a.complete, a.took
                ));
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let (fd1, th1) = (fds(pid), threads(pid));
        report.push(format!(
            "{}: slowest {slowest:?}; fds {fd0} -> peak {peak_fds} -> {fd1}; threads {th0} -> {th1}",
            f.name
        ));
        if fd1 > fd0 + FD_SLACK || th1 > th0 + THREAD_SLACK {
            failures.push(format!(
                "{}: leak: fds {fd0} -> {fd1}, threads {th0} -> {th1}",
                f.name
            ));
        }
    }
    eprintln!("{}", report.join("\n"));
    assert_eq!(
        send(gw.plain_port, "/ok/x", "").await.status,
        200,
        "healthy after all faults"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let log = gw.log_text();
    assert!(!log.contains("panicked"), "{log}");
    // The huge key set was refused for its size, not for its content.
    assert!(log.contains("larger than 1048576 bytes"), "{log}");
}

/// Holds an exclusive lock on a SQLite database (another process's long write transaction,
/// in exclusive locking mode, so WAL readers are shut out as well) until dropped.
async fn lock_sqlite(path: &std::path::Path) -> sqlx::SqliteConnection {
    use sqlx::Connection;
    let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    for q in [
        "PRAGMA locking_mode = EXCLUSIVE",
        "BEGIN EXCLUSIVE",
        "CREATE TABLE IF NOT EXISTS fault_lock (x INTEGER)",
        "INSERT INTO fault_lock VALUES (1)",
    ] {
        sqlx::query(q).execute(&mut c).await.unwrap();
    }
    c
}

/// Slow-loris: many clients sending their request heads a byte every half second. Each gets
/// a JSON 408 once `request_head_timeout` (2 s here) has passed since its first byte, and its
/// connection is closed: every descriptor comes back without the clients giving up. The
/// healthy route keeps answering meanwhile, and a slow body after a complete head is not cut.
#[tokio::test]
async fn slow_loris_clients_get_408_at_the_head_deadline_and_let_go() {
    let ok = Recorder::start(Duration::ZERO).await;
    let echo = echo_upstream().await;
    let gw = Gateway::start(Setup {
        body: pool("ok", ok.addr)
            + &route("ok", "ok", "public")
            + &pool("echo", echo)
            + &route("echo", "echo", "public"),
        server: "request_head_timeout = \"2s\"".into(),
        ..Default::default()
    })
    .await;
    let pid = gw.pid();
    assert_eq!(send(gw.plain_port, "/ok/x", "").await.status, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (fd0, th0) = (fds(pid), threads(pid));
    let mut lorises = Vec::new();
    for _ in 0..BURST {
        let port = gw.plain_port;
        lorises.push(tokio::spawn(async move {
            let s = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap();
            let started = Instant::now();
            let (mut rd, mut wr) = s.into_split();
            // 60 bytes at two a second: half a minute, if nobody stopped it.
            let head = b"GET /ok/x HTTP/1.1\r\nHost: localhost\r\nX-Slow: aaaaaaaaaaaaaaaaaaaa";
            let trickle = async {
                for b in head.iter() {
                    if wr.write_all(&[*b]).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                std::future::pending::<()>().await;
            };
            let mut answer = Vec::new();
            tokio::select! {
                _ = rd.read_to_end(&mut answer) => {}
                _ = trickle => {}
                _ = tokio::time::sleep(Duration::from_secs(20)) => {}
            }
            (
                String::from_utf8_lossy(&answer).into_owned(),
                started.elapsed(),
            )
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let during = fds(pid);
    assert!(
        during >= fd0 + BURST,
        "the slow clients are connected: {fd0} -> {during}"
    );
    let a = send(gw.plain_port, "/ok/x", "").await;
    assert_eq!(a.status, 200);
    assert!(a.took < Duration::from_secs(1), "{:?}", a.took);

    for l in lorises {
        let (answer, took) = l.await.unwrap();
        let (status, _, body) = parse_raw(&answer);
        assert_eq!(status, 408, "{answer:?} after {took:?}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["errorType"], "request_timeout", "{body}");
        assert!(v["error"].as_str().unwrap().contains("2s"), "{body}");
        assert!(
            took >= Duration::from_millis(1900) && took < Duration::from_secs(6),
            "cut off after {took:?}"
        );
    }
    // A body slower than the head deadline is not under it: the upstream gets all of it.
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", gw.plain_port))
        .await
        .unwrap();
    s.write_all(
        b"POST /echo/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 8\r\n\
          Connection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let started = Instant::now();
    for b in b"12345678" {
        tokio::time::sleep(Duration::from_millis(400)).await;
        s.write_all(&[*b]).await.unwrap();
    }
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (status, _, body) = parse_raw(&answer);
    assert_eq!((status, body.as_str()), (200, "12345678"), "{answer}");
    assert!(started.elapsed() > Duration::from_secs(3));

    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (fd1, th1) = (fds(pid), threads(pid));
    eprintln!("slow loris: fds {fd0} -> {during} -> {fd1}; threads {th0} -> {th1}");
    assert!(fd1 <= fd0 + FD_SLACK, "fds {fd0} -> {fd1}");
    assert!(th1 <= th0 + THREAD_SLACK, "threads {th0} -> {th1}");
    assert_eq!(
        gw.metric("hpcgate_connections_timed_out_total{reason=\"request_head\"}")
            .await,
        BURST as f64
    );
    let log = gw.log_text();
    assert!(!log.contains("panicked"), "{log}");
}

/// An HTTP/1.1 connection left idle after a response is closed after `keepalive_timeout`;
/// one in use is not. An idle HTTP/2 connection is closed too.
#[tokio::test]
async fn idle_keep_alive_connections_are_closed_after_keepalive_timeout() {
    let ok = Recorder::start(Duration::ZERO).await;
    let gw = Gateway::start(Setup {
        body: pool("ok", ok.addr) + &route("ok", "ok", "public"),
        server: "keepalive_timeout = \"2s\"".into(),
        ..Default::default()
    })
    .await;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", gw.plain_port))
        .await
        .unwrap();
    // Three requests a second apart on one connection: each within the idle limit.
    for _ in 0..3 {
        s.write_all(b"GET /ok/x HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let answer = read_one_response(&mut s).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // Then idle: closed by the gateway after about 2 s (one of which has passed).
    let idle = Instant::now();
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest))
        .await
        .expect("the gateway closes an idle connection")
        .unwrap_or(0);
    assert_eq!(
        n,
        0,
        "nothing more is sent: {:?}",
        String::from_utf8_lossy(&rest)
    );
    let took = idle.elapsed() + Duration::from_secs(1);
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(5),
        "closed after {took:?} idle"
    );
    assert_eq!(
        gw.metric("hpcgate_connections_timed_out_total{reason=\"keepalive\"}")
            .await,
        1.0
    );

    // HTTP/2: the preface and SETTINGS, then nothing.
    let mut s = h2raw::h2_connect(&gw).await;
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(h2raw::h2_frame(4, 0, 0, &[]));
    s.write_all(&out).await.unwrap();
    let idle = Instant::now();
    let mut frames = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut frames))
        .await
        .expect("the gateway closes an idle h2 connection");
    let took = idle.elapsed();
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(5),
        "h2 closed after {took:?} idle"
    );
    // pingora 0.9 closes it without a GOAWAY: nothing was in flight, a client reconnects.
    assert!(!frames.is_empty(), "the gateway's SETTINGS came first");
}

/// Reads one response with a Content-Length body from a kept-alive connection.
async fn read_one_response(s: &mut tokio::net::TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .expect("a response")
            .unwrap();
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let (_, headers, body) = parse_raw(&text);
            let len = headers
                .iter()
                .find(|(k, _)| k == "content-length")
                .and_then(|(_, v)| v.parse::<usize>().ok())
                .expect("a Content-Length");
            if text.len() >= end + 4 + len {
                assert_eq!(body.len(), len);
                return text;
            }
        }
    }
}

/// An upstream that answers every request with its body (read whole first).
async fn echo_upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(|body: String| async move { body });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// The API key database removed under a running gateway (before its lazy pool connected):
/// keys are refused with 503, never let through and never called unknown (401); other
/// routes keep working.
#[tokio::test]
async fn a_removed_key_database_means_503() {
    let ok = Recorder::start(Duration::ZERO).await;
    let db_dir = tempfile::tempdir().unwrap();
    let db = db_dir.path().join("keys.db");
    let gw = Gateway::start(Setup {
        body: format!(
            "[database]\nurl = \"sqlite://{}?mode=rwc\"\ntimeout = \"1s\"\n\n\
             [authenticators.keys]\ntype = \"api_key\"\n\n",
            db.display()
        ) + &pool("ok", ok.addr)
            + &route("ok", "ok", "public")
            + &route("keys", "ok", "keys"),
        ..Default::default()
    })
    .await;
    let key = gw
        .command(&["apikey", "create", "--user", "carol", "--name", "ci"])
        .unwrap()
        .trim()
        .to_string();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    for _ in 0..3 {
        let a = send(gw.plain_port, "/keys/x", &format!("X-API-Key: {key}\r\n")).await;
        assert_eq!(a.status, 503, "{}", a.body);
        let j: serde_json::Value = serde_json::from_str(&a.body).unwrap();
        assert_eq!(j["errorType"], "unavailable");
        assert!(a.took < Duration::from_millis(2500), "{:?}", a.took);
    }
    assert_eq!(send(gw.plain_port, "/ok/x", "").await.status, 200);
    assert!(ok.requests().iter().all(|r| !r.uri.starts_with("/keys")));
    let log = gw.log_text();
    assert!(!log.contains("panicked"), "{log}");
}

/// An audit log whose disk stalls (here a FIFO that is open but never read: once the pipe is
/// full, the writer blocks): requests keep being served; past `[audit] backlog` lines the
/// records are dropped, counted and reported once, not held in memory; when the disk comes
/// back, records are written again.
#[tokio::test]
async fn a_stalled_audit_log_drops_records_instead_of_holding_them() {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let ok = Recorder::start(Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("audit.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    // Open for reading first, so that the gateway's open for writing does not block.
    let mut reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    let gw = Gateway::start(Setup {
        body: pool("ok", ok.addr) + &route("ok", "ok", "public"),
        audit: Some(format!("path = \"{}\"\nbacklog = 20", fifo.display())),
        ..Default::default()
    })
    .await;
    let c = gw.client(false);
    // Records are ~300 bytes: the 64 KiB pipe takes ~200, the backlog 20, the rest is dropped.
    const SENT: usize = 600;
    for i in 0..SENT {
        let r = c.get(gw.url(&format!("/ok/{i}"))).send().await.unwrap();
        assert_eq!(r.status(), 200, "request {i}");
    }
    let dropped = gw.metric("hpcgate_audit_records_dropped_total ").await;
    assert!(
        (100.0..SENT as f64).contains(&dropped),
        "dropped {dropped} of {SENT}"
    );
    let log = gw.log_text();
    assert_eq!(
        log.matches("audit records are being dropped").count(),
        1,
        "reported once per episode: {log}"
    );
    // The disk comes back: drain the pipe until the writer has caught up.
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    let drain = |reader: &mut std::fs::File, seen: &mut Vec<u8>, buf: &mut [u8]| loop {
        match reader.read(buf) {
            Ok(0) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(_) => break, // WouldBlock: nothing more right now
        }
    };
    for _ in 0..20 {
        drain(&mut reader, &mut seen, &mut buf);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = c.get(gw.url("/ok/after")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        drain(&mut reader, &mut seen, &mut buf);
        if String::from_utf8_lossy(&seen).contains("\"/ok/after\"") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the record of /ok/after never came"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = String::from_utf8_lossy(&seen);
    let written = text.lines().filter(|l| l.contains("\"/ok/")).count();
    assert!(
        written < SENT,
        "{written} records written, {dropped} dropped"
    );
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("whole JSON lines");
        assert_eq!(v["decision"], "allow");
    }
    let log = gw.log_text();
    assert!(
        log.contains("the audit log is being written again"),
        "{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
}
