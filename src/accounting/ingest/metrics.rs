//! Aggregate metrics: on an interval, one instant PromQL query per metric and unit (running
//! ones and those that ended within the lookback), from the configured Prometheus pool.
//!
//! A template returns one number for the unit's whole run, evaluated at its end (now while it
//! runs): `{range}` is the run time, so `avg_over_time(x{uuid="{uuid}"}[{range}])` is the
//! mean. Energy is the mean power times the run time; emissions are energy times the
//! cluster's emission factor (gCO2e/kWh).

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::accounting::AccountingConfig;
use crate::accounting::store::{self, Measured, Unit};
use crate::db::{Db, now};
use crate::secret::Secret;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    CpuUsage,
    MemUsage,
    GpuUsage,
    PowerWatts,
}

/// `[accounting.metrics]`, checked.
#[derive(Debug, Clone)]
pub struct MetricsConfig {
    /// `http(s)://HOST:PORT` of each backend of the pool, tried in order.
    pub bases: Vec<String>,
    pub authorization: Option<Secret>,
    pub interval: Duration,
    pub lookback: Duration,
    pub max_units: usize,
    pub queries: Vec<(MetricKind, String)>,
}

/// Fills a template in. Label values are escaped for a PromQL string.
pub fn expand(template: &str, uuid: &str, cluster: &str, range_secs: i64) -> String {
    let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    template
        .replace("{uuid}", &esc(uuid))
        .replace("{cluster}", &esc(cluster))
        .replace("{range}", &format!("{}s", range_secs.max(1)))
}

pub async fn run(
    db: Db,
    cfg: Arc<AccountingConfig>,
    m: MetricsConfig,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let http = match reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "accounting: no HTTP client for Prometheus");
            return;
        }
    };
    loop {
        match pass(&db, &cfg, &m, &http).await {
            Ok(n) => tracing::info!(units = n, "accounting: metrics pass done"),
            Err(e) => {
                tracing::warn!(error = %e, "accounting: metrics pass failed; retrying next interval")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(m.interval) => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

/// One pass; the number of units updated.
pub async fn pass(
    db: &Db,
    cfg: &AccountingConfig,
    m: &MetricsConfig,
    http: &reqwest::Client,
) -> Result<usize, String> {
    let t = now();
    let units = store::units_to_measure(db, t - m.lookback.as_secs() as i64, m.max_units)
        .await
        .map_err(|e| e.to_string())?;
    let mut updates: Vec<(&Unit, Measured)> = Vec::new();
    for u in &units {
        let at = if u.ended_at > 0 { u.ended_at } else { t };
        let range = at - u.started_at;
        if range <= 0 {
            continue;
        }
        let mut measured = Measured::default();
        for (kind, template) in &m.queries {
            let q = expand(template, &u.uuid, &u.cluster_id, range);
            let Some(v) = query(http, m, &q, at).await? else {
                continue;
            };
            match kind {
                MetricKind::CpuUsage => measured.cpu_usage = Some(v),
                MetricKind::MemUsage => measured.mem_usage = Some(v),
                MetricKind::GpuUsage => measured.gpu_usage = Some(v),
                MetricKind::PowerWatts => {
                    let kwh = v * range as f64 / 3.6e6;
                    let factor = cfg
                        .clusters
                        .get(&u.cluster_id)
                        .map_or(0.0, |c| c.emission_factor);
                    measured.energy_kwh = Some(kwh);
                    measured.emissions_g = Some(kwh * factor);
                }
            }
        }
        if measured != Measured::default() {
            updates.push((u, measured));
        }
    }
    store::set_metrics(db, &updates)
        .await
        .map_err(|e| e.to_string())?;
    Ok(updates.len())
}

/// The single number an instant query returns at `at`; `None` when it returns nothing.
async fn query(
    http: &reqwest::Client,
    m: &MetricsConfig,
    q: &str,
    at: i64,
) -> Result<Option<f64>, String> {
    let mut last = String::from("no backend in the pool");
    for base in &m.bases {
        let mut req = http
            .get(format!("{base}/api/v1/query"))
            .query(&[("query", q), ("time", &at.to_string())]);
        if let Some(a) = &m.authorization {
            req = req.header("authorization", a.expose());
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                last = format!("{base}: {e}");
                continue;
            }
        };
        let status = resp.status();
        let body: Value = resp
            .json()
            .await
            .map_err(|e| format!("{base} answered {status} without JSON: {e}"))?;
        if body["status"] != "success" {
            return Err(format!("{base}: query `{q}` failed: {}", body["error"]));
        }
        let d = &body["data"];
        let value = match d["resultType"].as_str() {
            Some("vector") => d["result"]
                .as_array()
                .and_then(|r| r.first())
                .map(|s| &s["value"][1]),
            Some("scalar") => Some(&d["result"][1]),
            _ => None,
        };
        return Ok(value
            .and_then(|v| v.as_str())
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|v| v.is_finite()));
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_escape_label_values() {
        assert_eq!(
            expand(
                r#"avg_over_time(x{uuid="{uuid}",c="{cluster}"}[{range}])"#,
                r#"a"b"#,
                "c1",
                90
            ),
            r#"avg_over_time(x{uuid="a\"b",c="c1"}[90s])"#
        );
    }
}
