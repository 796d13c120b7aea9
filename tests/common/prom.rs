//! A real Prometheus (tests/servers/prometheus.sh) that has scraped two users' job series,
//! and helpers to read its answers: shared by the PromQL enforcement tests.

use std::time::{Duration, Instant};

use super::RealServer;

/// Series for two users' jobs, scraped by the instance every second.
pub const METRICS: &str = "\
# TYPE job_cpu_seconds counter
job_cpu_seconds{uuid=\"1001\",user=\"alice\",project=\"p1\"} 10
job_cpu_seconds{uuid=\"1002\",user=\"alice\",project=\"p1\"} 20
job_cpu_seconds{uuid=\"2001\",user=\"bob\",project=\"p2\"} 30
# TYPE job_memory_bytes gauge
job_memory_bytes{uuid=\"1001\",user=\"alice\",project=\"p1\"} 1000
job_memory_bytes{uuid=\"2001\",user=\"bob\",project=\"p2\"} 2000
";

pub async fn prometheus() -> RealServer {
    let prom = RealServer::start_with("prometheus", &["short"]);
    let file = prom.get("PROM_SHORT_METRICS_FILE").to_string();
    std::fs::write(format!("{file}.tmp"), METRICS).unwrap();
    std::fs::rename(format!("{file}.tmp"), &file).unwrap();
    // Wait until the series are scraped.
    let url = format!(
        "{}/api/v1/query?query=count(job_cpu_seconds)",
        prom.get("PROM_SHORT_URL")
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v: serde_json::Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
        if v["data"]["result"][0]["value"][1] == "3" {
            break prom;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never scraped the test series: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Prometheus' own `time()`, in whole seconds.
pub async fn server_time(prom: &RealServer) -> i64 {
    let v: serde_json::Value = reqwest::get(format!(
        "{}/api/v1/query?query=time()",
        prom.get("PROM_SHORT_URL")
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let t: f64 = v["data"]["result"][1].as_str().unwrap().parse().unwrap();
    t as i64
}

/// `(user, uuid)` of every series in a query answer.
pub fn owners(v: &serde_json::Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = v["data"]["result"]
        .as_array()
        .unwrap_or_else(|| panic!("no result: {v}"))
        .iter()
        .map(|s| {
            (
                s["metric"]["user"].as_str().unwrap_or("-").to_string(),
                s["metric"]["uuid"].as_str().unwrap_or("-").to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

/// `/api/v1/query?query=…`, the query percent-encoded.
pub fn q(query: &str) -> String {
    format!(
        "/api/v1/query?query={}",
        percent_encoding::utf8_percent_encode(query, percent_encoding::NON_ALPHANUMERIC)
    )
}
