//! Pull ingest from slurmrestd's `slurmdb` jobs endpoint, one loop per cluster.
//!
//! Each pass asks for the jobs active at or after the watermark (`start_time=uts<W>`, sacct
//! semantics: a job running at W is returned until a pass after it ended), upserts them by
//! (cluster, uuid) in batches, and moves the watermark to the pass's start time in the last
//! batch's transaction. A crash in the middle leaves the watermark where it was, so the next
//! pass fetches the same jobs again and the upsert makes that harmless: no unit is lost and
//! none is written twice.

use std::time::Duration;

use serde_json::Value;

use crate::accounting::directory;
use crate::accounting::store::{self, Unit};
use crate::db::{Db, now};
use crate::enforce::slurmrestd::config::SlurmTokenMode;

/// The watermark's source name.
pub const SOURCE: &str = "slurmdb";

/// `[accounting.clusters.ID.slurmrestd]`, checked.
#[derive(Debug, Clone)]
pub struct SlurmIngest {
    pub url: String,
    pub api_version: String,
    pub user: String,
    /// `Mint` or `Impersonate` (a token file).
    pub token: SlurmTokenMode,
    pub cluster_name: Option<String>,
    pub interval: Duration,
    pub backfill: Duration,
    pub batch_size: usize,
}

/// The pass loop, until `shutdown` turns true.
pub async fn run(
    db: Db,
    cluster: String,
    manager: String,
    emission_factor: f64,
    cfg: SlurmIngest,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let http = match reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(cluster = %cluster, error = %e, "accounting: no HTTP client for slurmrestd");
            return;
        }
    };
    let src = Source {
        db,
        http,
        cluster,
        manager,
        emission_factor,
        cfg,
    };
    loop {
        match src.pass().await {
            Ok(n) => {
                tracing::debug!(cluster = %src.cluster, units = n, "accounting: slurm pass done")
            }
            Err(e) => {
                tracing::warn!(cluster = %src.cluster, error = %e, "accounting: slurm pass failed; retrying next interval")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(src.cfg.interval) => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

struct Source {
    db: Db,
    http: reqwest::Client,
    cluster: String,
    manager: String,
    emission_factor: f64,
    cfg: SlurmIngest,
}

impl Source {
    async fn token(&self) -> Result<String, String> {
        match &self.cfg.token {
            SlurmTokenMode::Mint { key } => {
                crate::enforce::slurmrestd::mint_token(key, &self.cfg.user, 600)
            }
            SlurmTokenMode::Impersonate { token_file } => tokio::fs::read_to_string(token_file)
                .await
                .map(|t| crate::enforce::slurmrestd::token_in_file(&t).to_string())
                .map_err(|e| format!("cannot read {}: {e}", token_file.display())),
            SlurmTokenMode::Passthrough => Err("no token for the ingest".into()),
        }
    }

    /// One pass; the number of units written.
    async fn pass(&self) -> Result<usize, String> {
        let started = now();
        let mark = match directory::watermark(&self.db, &self.cluster, SOURCE)
            .await
            .map_err(|e| e.to_string())?
        {
            0 => started - self.cfg.backfill.as_secs() as i64,
            w => w,
        };
        let url = format!(
            "{}/slurmdb/{}/jobs?start_time=uts{mark}",
            self.cfg.url, self.cfg.api_version
        );
        let token = self.token().await?;
        let resp = self
            .http
            .get(&url)
            .header(crate::enforce::slurmrestd::USER_HEADER, &self.cfg.user)
            .header(crate::enforce::slurmrestd::TOKEN_HEADER, token)
            .send()
            .await
            .map_err(|e| format!("slurmrestd at {}: {e}", self.cfg.url))?;
        let status = resp.status();
        let body: Value = resp
            .json()
            .await
            .map_err(|e| format!("slurmrestd answered {status} without JSON: {e}"))?;
        if let Some(errors) = body["errors"].as_array().filter(|e| !e.is_empty()) {
            return Err(format!(
                "slurmrestd answered {status} with errors: {}",
                Value::Array(errors.clone())
            ));
        }
        if !status.is_success() {
            return Err(format!("slurmrestd answered {status}"));
        }
        let units = parse_jobs(
            &body,
            &self.cluster,
            &self.manager,
            self.emission_factor,
            self.cfg.cluster_name.as_deref(),
        )?;
        let batches: Vec<&[Unit]> = if units.is_empty() {
            vec![&[]]
        } else {
            units.chunks(self.cfg.batch_size).collect()
        };
        let n = batches.len();
        let mut total = 0;
        for (i, batch) in batches.into_iter().enumerate() {
            let last = i + 1 == n;
            let mark = last.then_some((self.cluster.as_str(), SOURCE, started));
            total += store::upsert_units_marked(&self.db, batch, mark)
                .await
                .map_err(|e| e.to_string())?;
            tracing::info!(
                cluster = %self.cluster,
                batch = i + 1,
                batches = n,
                units = batch.len(),
                total,
                "accounting: slurm ingest batch written"
            );
        }
        Ok(total)
    }
}

fn tres(job: &Value, kind: &str, name: Option<&str>) -> i64 {
    job["tres"]["allocated"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["type"] == kind)
        .filter(|t| match name {
            None => true,
            Some(n) => t["name"]
                .as_str()
                .is_some_and(|s| s == n || s.starts_with(&format!("{n}:"))),
        })
        .filter_map(|t| t["count"].as_i64())
        .sum()
}

/// Maps a slurmdb v0.0.38 `jobs` answer to units. A job without an id or user is an error
/// (the answer is not what we expect; nothing is written).
pub fn parse_jobs(
    body: &Value,
    cluster: &str,
    manager: &str,
    emission_factor: f64,
    only: Option<&str>,
) -> Result<Vec<Unit>, String> {
    let jobs = body["jobs"]
        .as_array()
        .ok_or("slurmrestd's answer has no `jobs` list")?;
    let mut out = Vec::with_capacity(jobs.len());
    for (i, j) in jobs.iter().enumerate() {
        if let Some(only) = only
            && j["cluster"].as_str() != Some(only)
        {
            continue;
        }
        let id = j["job_id"]
            .as_i64()
            .ok_or_else(|| format!("jobs[{i}].job_id missing"))?;
        let user = j["user"]
            .as_str()
            .filter(|u| !u.is_empty())
            .ok_or_else(|| format!("jobs[{i}].user missing"))?;
        let t = &j["time"];
        let secs = |k: &str| t[k].as_i64().unwrap_or(0).max(0);
        let (start, end) = (secs("start"), secs("end"));
        let cpu_time = t["total"]["seconds"]
            .as_f64()
            .map(|s| s + t["total"]["microseconds"].as_f64().unwrap_or(0.0) / 1e6);
        let elapsed = secs("elapsed");
        let cpus = tres(j, "cpu", None);
        let energy_joules = tres(j, "energy", None);
        let energy_kwh = (energy_joules > 0).then(|| energy_joules as f64 / 3.6e6);
        out.push(Unit {
            cluster_id: cluster.to_string(),
            resource_manager: manager.to_string(),
            uuid: id.to_string(),
            name: j["name"].as_str().unwrap_or("").to_string(),
            username: user.to_string(),
            project: j["account"].as_str().unwrap_or("").to_string(),
            groupname: j["group"].as_str().unwrap_or("").to_string(),
            partition: j["partition"].as_str().unwrap_or("").to_string(),
            state: j["state"]["current"]
                .as_str()
                .unwrap_or("UNKNOWN")
                .to_string(),
            created_at: secs("submission"),
            started_at: start,
            ended_at: end,
            elapsed,
            alloc_cpus: cpus,
            // slurmdbd counts memory in MiB.
            alloc_mem: tres(j, "mem", None) * 1024 * 1024,
            alloc_gpus: tres(j, "gres", Some("gpu")),
            alloc_nodes: tres(j, "node", None).max(j["allocation_nodes"].as_i64().unwrap_or(0)),
            // Mean CPU use as a share of the allocation, when Slurm measured CPU time.
            cpu_usage: cpu_time
                .filter(|_| elapsed > 0 && cpus > 0)
                .map(|c| 100.0 * c / (elapsed * cpus) as f64),
            cpu_time,
            mem_usage: None,
            gpu_usage: None,
            energy_kwh,
            emissions_g: energy_kwh.map(|e| e * emission_factor),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A slurmdb v0.0.38 answer recorded from the test cluster (tests/servers/slurm.sh).
    const RECORDED: &str = include_str!("../../../tests/fixtures/slurmdb-v0.0.38-jobs.json");

    #[test]
    fn recorded_slurmdb_jobs_map_to_units() {
        let body: Value = serde_json::from_str(RECORDED).unwrap();
        let units = parse_jobs(&body, "c1", "slurm", 50.0, None).unwrap();
        assert_eq!(units.len(), body["jobs"].as_array().unwrap().len());
        let u = &units[0];
        assert_eq!(u.uuid, "1");
        assert_eq!(u.username, "root");
        assert_eq!(u.project, "hpc");
        assert_eq!(u.partition, "debug");
        assert_eq!(u.state, "COMPLETED");
        assert_eq!(u.alloc_cpus, 1);
        assert_eq!(u.alloc_mem, 100 * 1024 * 1024);
        assert_eq!(u.alloc_nodes, 1);
        assert!(u.ended_at >= u.started_at && u.started_at >= u.created_at);
        assert!(
            parse_jobs(&body, "c1", "slurm", 0.0, Some("elsewhere"))
                .unwrap()
                .is_empty()
        );
    }
}
