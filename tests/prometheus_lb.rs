//! TSDB load balancing against two real Prometheus servers (tests/servers/prometheus.sh): a
//! short-term one (retention 2 days, scraping the jobs' series and remote-writing them) and a
//! long-term one (retention ten years, with three weeks of history backfilled by promtool).
//! The gateway reads both retentions from the servers, sends a range that starts beyond the
//! short-term retention to the long-term store, keeps answering when a backend is killed,
//! and retries a read that a backend broke on another backend.

mod common;

use std::time::{Duration, Instant};

use common::*;

const DAY: i64 = 86_400;

/// bob's job now, scraped by the short-term instance every second.
const METRICS: &str = "\
# TYPE job_power_watts gauge
job_power_watts{uuid=\"2001\",user=\"bob\",project=\"p2\"} 50
job_power_watts{uuid=\"1001\",user=\"alice\",project=\"p1\"} 70
";

/// Three weeks of history, hourly, ending three days ago: in the long-term store only.
fn history(now: i64) -> String {
    let mut s = String::from("# TYPE job_power_watts gauge\n");
    let mut t = now - 21 * DAY;
    while t < now - 3 * DAY {
        s.push_str(&format!(
            "job_power_watts{{uuid=\"2001\",user=\"bob\",project=\"p2\"}} 100 {t}\n\
             job_power_watts{{uuid=\"1001\",user=\"alice\",project=\"p1\"}} 200 {t}\n"
        ));
        t += 3600;
    }
    s.push_str("# EOF\n");
    s
}

fn script() -> String {
    format!("{}/tests/servers/prometheus.sh", env!("CARGO_MANIFEST_DIR"))
}

struct Tsdbs {
    // Dropped in reverse order: the sender (short) stops before its remote-write receiver.
    long: RealServer,
    short: RealServer,
}

fn tsdbs() -> Tsdbs {
    let now = common::unix_now();
    let long = RealServer::start_prepared("prometheus", &["long"], &[], |dir| {
        let file = dir.join("history.om");
        std::fs::write(&file, history(now)).unwrap();
        let out = std::process::Command::new("bash")
            .args([script().as_str(), "backfill"])
            .arg(dir)
            .arg("long")
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "backfill failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
    let receiver = long.get("PROM_LONG_REMOTE_WRITE_URL").to_string();
    let short = RealServer::start_prepared(
        "prometheus",
        &["short"],
        &[
            ("PROM_RETENTION", "2d"),
            ("PROM_REMOTE_WRITE_URL", receiver.as_str()),
        ],
        |dir| {
            let exporter = dir.join("prometheus-short/exporter");
            std::fs::create_dir_all(&exporter).unwrap();
            std::fs::write(exporter.join("metrics"), METRICS).unwrap();
        },
    );
    Tsdbs { long, short }
}

async fn gateway(t: &Tsdbs, extra: &str) -> Gateway {
    let body = format!(
        "[pools.tsdb]\nbackends = [\"{}\", \"{}\"]\nbalance = \"retention\"\n\n\
         [pools.tsdb.health_check]\npath = \"/-/healthy\"\ninterval = \"1s\"\ntimeout = \"500ms\"\n\n\
         [[routes]]\nname = \"prometheus\"\npath_prefix = \"/prometheus\"\nstrip_prefix = true\n\
         pool = \"tsdb\"\nkind = \"prometheus\"\nauthenticators = [\"local\"]\n{extra}",
        t.short.get("PROM_SHORT_URL"),
        t.long.get("PROM_LONG_URL"),
    );
    Gateway::start(Setup {
        body,
        ..Default::default()
    })
    .await
}

async fn query(gw: &Gateway, path: &str, form: &[(&str, String)]) -> reqwest::Response {
    gw.client(true)
        .post(gw.url(&format!("/prometheus{path}")))
        .header("authorization", basic("bob", BOB_PW))
        .form(form)
        .send()
        .await
        .unwrap()
}

/// The status, JSON answer and the backend that served it (from the audit log).
async fn query_at(
    gw: &Gateway,
    path: &str,
    form: &[(&str, String)],
) -> (u16, serde_json::Value, String) {
    let r = query(gw, path, form).await;
    let status = r.status().as_u16();
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let v = r.json().await.unwrap();
    let audit = gw.audit_of(&id).await;
    (
        status,
        v,
        audit["backend"].as_str().unwrap_or("").to_string(),
    )
}

/// `(uuid, every value)` of each series of a matrix answer.
fn series(v: &serde_json::Value) -> Vec<(String, Vec<String>)> {
    v["data"]["result"]
        .as_array()
        .unwrap_or_else(|| panic!("no result: {v}"))
        .iter()
        .map(|s| {
            let values = s["values"]
                .as_array()
                .map(|vs| {
                    vs.iter()
                        .map(|p| p[1].as_str().unwrap().to_string())
                        .collect()
                })
                .unwrap_or_else(|| vec![s["value"][1].as_str().unwrap().to_string()]);
            (s["metric"]["uuid"].as_str().unwrap().to_string(), values)
        })
        .collect()
}

/// Waits until `/-/status` shows both retentions, read from the servers themselves.
async fn retentions(gw: &Gateway) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v: serde_json::Value = gw
            .client(false)
            .get(gw.url("/-/status"))
            .header("authorization", basic("alice", ALICE_PW))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let backends = v["data"]["pools"][0]["backends"]
            .as_array()
            .unwrap()
            .clone();
        let r: Vec<_> = backends
            .iter()
            .map(|b| b["retention_seconds"].clone())
            .collect();
        if r.iter().all(|x| !x.is_null()) {
            assert_eq!(v["data"]["pools"][0]["balance"], "retention");
            return r;
        }
        assert!(Instant::now() < deadline, "retentions never read: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn old_ranges_go_to_the_long_term_store_and_a_killed_backend_costs_no_query() {
    let t = tsdbs();
    let gw = gateway(&t, "").await;
    assert_eq!(
        retentions(&gw).await,
        vec![serde_json::json!(2 * DAY), serde_json::json!(3650 * DAY)]
    );
    let long = t.long.get("PROM_LONG_URL");
    let short = t.short.get("PROM_SHORT_URL");
    let now = common::unix_now();

    // A range starting ten days ago: only the long-term store holds it. bob gets his
    // backfilled history (100 W), confined to his job.
    let old = [
        ("query", "job_power_watts".to_string()),
        ("start", (now - 10 * DAY).to_string()),
        ("end", (now - 5 * DAY).to_string()),
        ("step", "3600".to_string()),
    ];
    for _ in 0..3 {
        let (status, v, backend) = query_at(&gw, "/api/v1/query_range", &old).await;
        assert_eq!(status, 200);
        let s = series(&v);
        assert_eq!(s.len(), 1, "{v}");
        assert_eq!(s[0].0, "2001");
        assert!(
            s[0].1.len() > 100 && s[0].1.iter().all(|x| x == "100"),
            "{v}"
        );
        assert_eq!(backend, long);
    }
    // The same range with RFC 3339 times, and an instant query reaching back by a range.
    let rfc3339 = |t: i64| {
        time::OffsetDateTime::from_unix_timestamp(t)
            .unwrap()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let (status, v, backend) = query_at(
        &gw,
        "/api/v1/query_range",
        &[
            ("query", "job_power_watts".to_string()),
            ("start", rfc3339(now - 10 * DAY)),
            ("end", rfc3339(now - 5 * DAY)),
            ("step", "3600".to_string()),
        ],
    )
    .await;
    assert_eq!((status, backend.as_str()), (200, long), "{v}");
    let (_, v, backend) = query_at(
        &gw,
        "/api/v1/query",
        &[("query", "max_over_time(job_power_watts[10d])".to_string())],
    )
    .await;
    assert_eq!(series(&v), vec![("2001".into(), vec!["100".into()])], "{v}");
    assert_eq!(backend, long);

    // Recent data: both hold it (the short-term instance remote-writes to the long-term
    // one, once it has started sending), and both get queries.
    let direct = format!("{long}/api/v1/query?query=job_power_watts%7Buuid%3D%222001%22%7D");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v: serde_json::Value = reqwest::get(&direct).await.unwrap().json().await.unwrap();
        if v["data"]["result"][0]["value"][1] == "50" {
            break;
        }
        assert!(Instant::now() < deadline, "remote write never arrived: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.len() < 2 {
        let (_, v, backend) = query_at(
            &gw,
            "/api/v1/query",
            &[("query", "job_power_watts".to_string())],
        )
        .await;
        if series(&v) == vec![("2001".to_string(), vec!["50".to_string()])] {
            seen.insert(backend);
        }
        assert!(
            Instant::now() < deadline,
            "recent queries never reached both: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Kill the short-term instance (SIGKILL, no goodbye) while two clients keep querying.
    let pid: i32 = std::fs::read_to_string(t.short.get("PROM_SHORT_PID_FILE"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let started = Instant::now();
    let killed_at = Duration::from_millis(1500);
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..2 {
        let client = gw.client(true);
        let url = gw.url("/prometheus/api/v1/query");
        clients.spawn(async move {
            let mut results = Vec::new();
            while started.elapsed() < Duration::from_secs(5) {
                let r = client
                    .post(&url)
                    .header("authorization", basic("bob", BOB_PW))
                    .form(&[("query", "job_power_watts")])
                    .send()
                    .await;
                let (ok, what) = match r {
                    Ok(r) => {
                        let status = r.status();
                        let text = r.text().await.unwrap_or_default();
                        (
                            status == 200 && text.contains("2001"),
                            format!("{status} {text}"),
                        )
                    }
                    Err(e) => (false, e.to_string()),
                };
                results.push((started.elapsed(), ok, what));
            }
            results
        });
    }
    tokio::time::sleep(killed_at).await;
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let mut all = Vec::new();
    while let Some(r) = clients.join_next().await {
        all.extend(r.unwrap());
    }
    let after: Vec<_> = all.iter().filter(|(at, ..)| *at > killed_at).collect();
    let failed_after_interval: Vec<_> = after
        .iter()
        .filter(|(at, ok, _)| !ok && *at > killed_at + Duration::from_secs(1))
        .collect();
    let failed: Vec<_> = all.iter().filter(|(_, ok, _)| !ok).collect();
    assert!(
        after.len() > 20,
        "too few queries after the kill: {}",
        after.len()
    );
    assert!(
        failed_after_interval.is_empty(),
        "{} of {} queries failed after one health-check interval, e.g. {:?}",
        failed_after_interval.len(),
        after.len(),
        failed_after_interval.first()
    );
    // Retries on the other backend cover the moment of the kill too.
    assert!(
        failed.is_empty(),
        "queries failed around the kill: {failed:?}"
    );
    let status: serde_json::Value = gw
        .client(false)
        .get(gw.url("/-/status"))
        .header("authorization", basic("alice", ALICE_PW))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let b = &status["data"]["pools"][0]["backends"];
    assert_eq!(b[0]["address"], short);
    assert_eq!(b[0]["state"], "down", "{status}");
    // The long-term store now answers everything, recent data included.
    let (status, _, backend) = query_at(
        &gw,
        "/api/v1/query",
        &[("query", "job_power_watts".to_string())],
    )
    .await;
    assert_eq!((status, backend.as_str()), (200, long));
}

/// A backend that reads the request and closes the connection without a word.
async fn closing_backend() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let _ = sock.read(&mut buf).await;
            drop(sock);
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn a_read_the_backend_broke_is_retried_once_elsewhere_a_write_is_not() {
    let prom = RealServer::start_with("prometheus", &["short"]);
    let (closer, seen) = closing_backend().await;
    // Round-robin pools whose first backend (picked first) breaks every connection.
    let body = format!(
        "[pools.prom]\nbackends = [\"http://{closer}\", \"{url}\"]\n\n\
         [pools.generic]\nbackends = [\"http://{closer}\", \"{url}\"]\n\n\
         [[routes]]\nname = \"prometheus\"\npath_prefix = \"/prometheus\"\nstrip_prefix = true\n\
         pool = \"prom\"\nkind = \"prometheus\"\nauthenticators = [\"local\"]\n\n\
         [[routes]]\nname = \"generic\"\npath_prefix = \"/generic\"\nstrip_prefix = true\n\
         pool = \"generic\"\nauthenticators = [\"local\"]\n",
        url = prom.get("PROM_SHORT_URL"),
    );
    let gw = Gateway::start(Setup {
        body,
        ..Default::default()
    })
    .await;
    // A Grafana-style POST query: broken on the first backend, answered by the second.
    let (status, _, backend) = query_at(&gw, "/api/v1/query", &[("query", "up".to_string())]).await;
    assert_eq!(status, 200);
    assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(backend, prom.get("PROM_SHORT_URL"));
    // The broken backend is now skipped for its fail_timeout: no more detours.
    for _ in 0..3 {
        let r = query(&gw, "/api/v1/query", &[("query", "up".to_string())]).await;
        assert_eq!(r.status(), 200);
    }
    assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 1);

    // A POST that is not a read may have had effects: never sent twice.
    let r = gw
        .client(false)
        .post(gw.url("/generic/api/v1/admin/tsdb/snapshot"))
        .header("authorization", basic("alice", ALICE_PW))
        .body("x")
        .send()
        .await
        .unwrap();
    expect_error(r, 502, "bad_gateway").await;
    assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 2);
}
