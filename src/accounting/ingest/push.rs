//! Push ingest: a JSON array of units checked in full before anything is written, so that a
//! bad record is refused with its index and field and nothing is half-written.

use serde::Deserialize;

use crate::accounting::AccountingConfig;
use crate::accounting::store::Unit;

/// Larger "seconds" than this are milliseconds sent by mistake (year 5138).
const MAX_SECONDS: i64 = 99_999_999_999;

/// A unit as pushed. Times are Unix seconds.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PushUnit {
    /// A cluster of `[accounting.clusters]`.
    pub cluster_id: String,
    pub uuid: String,
    #[serde(default)]
    pub name: String,
    pub username: String,
    pub project: String,
    #[serde(default)]
    pub groupname: String,
    #[serde(default)]
    pub partition: String,
    pub state: String,
    pub created_at: i64,
    #[serde(default)]
    pub started_at: i64,
    /// 0 or absent: still running.
    #[serde(default)]
    pub ended_at: i64,
    /// Seconds; default ended_at − started_at (0 while running).
    pub elapsed: Option<i64>,
    #[serde(default)]
    pub allocation: PushAllocation,
    pub cpu_usage: Option<f64>,
    pub cpu_time: Option<f64>,
    pub mem_usage: Option<f64>,
    pub gpu_usage: Option<f64>,
    pub energy_kwh: Option<f64>,
    /// Default: energy_kwh × the cluster's emission factor.
    pub emissions_g: Option<f64>,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PushAllocation {
    #[serde(default)]
    pub cpus: i64,
    /// Bytes.
    #[serde(default)]
    pub mem: i64,
    #[serde(default)]
    pub gpus: i64,
    #[serde(default)]
    pub nodes: i64,
}

fn text_ok(s: &str, max: usize) -> bool {
    s.len() <= max && !s.chars().any(char::is_control)
}

/// Checks one record; `Err((field, reason))`.
fn check(p: PushUnit, cfg: &AccountingConfig) -> Result<Unit, (&'static str, String)> {
    let Some(cluster) = cfg.clusters.get(&p.cluster_id) else {
        let known: Vec<&str> = cfg.clusters.keys().map(String::as_str).collect();
        return Err((
            "cluster_id",
            format!(
                "unknown cluster `{}`; configured: {} ([accounting.clusters.ID])",
                p.cluster_id,
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ),
        ));
    };
    for (field, value, required) in [
        ("uuid", &p.uuid, true),
        ("username", &p.username, true),
        ("project", &p.project, true),
        ("state", &p.state, true),
        ("name", &p.name, false),
        ("groupname", &p.groupname, false),
        ("partition", &p.partition, false),
    ] {
        if required && value.trim().is_empty() {
            return Err((field, "must not be empty".into()));
        }
        if !text_ok(value, 256) {
            return Err((
                field,
                "at most 256 characters, no control characters".into(),
            ));
        }
    }
    for (field, v) in [
        ("created_at", p.created_at),
        ("started_at", p.started_at),
        ("ended_at", p.ended_at),
    ] {
        if !(0..=MAX_SECONDS).contains(&v) {
            return Err((
                field,
                "expected Unix seconds (this looks like milliseconds or is negative)".into(),
            ));
        }
    }
    if p.created_at == 0 {
        return Err(("created_at", "must be set (Unix seconds)".into()));
    }
    if p.started_at != 0 && p.started_at < p.created_at {
        return Err(("started_at", "is before created_at".into()));
    }
    if p.ended_at != 0 && p.ended_at < p.started_at.max(p.created_at) {
        return Err(("ended_at", "is before started_at".into()));
    }
    let elapsed = match p.elapsed {
        Some(e) if e < 0 => return Err(("elapsed", "must be 0 or more".into())),
        Some(e) => e,
        None if p.ended_at != 0 && p.started_at != 0 => p.ended_at - p.started_at,
        None => 0,
    };
    let a = &p.allocation;
    for (field, v) in [
        ("allocation.cpus", a.cpus),
        ("allocation.mem", a.mem),
        ("allocation.gpus", a.gpus),
        ("allocation.nodes", a.nodes),
    ] {
        if v < 0 {
            return Err((field, "must be 0 or more".into()));
        }
    }
    for (field, v) in [
        ("cpu_usage", p.cpu_usage),
        ("cpu_time", p.cpu_time),
        ("mem_usage", p.mem_usage),
        ("gpu_usage", p.gpu_usage),
        ("energy_kwh", p.energy_kwh),
        ("emissions_g", p.emissions_g),
    ] {
        if v.is_some_and(|v| !v.is_finite() || v < 0.0) {
            return Err((field, "must be a finite number, 0 or more".into()));
        }
    }
    let emissions_g = p
        .emissions_g
        .or(p.energy_kwh.map(|e| e * cluster.emission_factor));
    Ok(Unit {
        resource_manager: cluster.manager.clone(),
        cluster_id: p.cluster_id,
        uuid: p.uuid,
        name: p.name,
        username: p.username,
        project: p.project,
        groupname: p.groupname,
        partition: p.partition,
        state: p.state,
        created_at: p.created_at,
        started_at: p.started_at,
        ended_at: p.ended_at,
        elapsed,
        alloc_cpus: a.cpus,
        alloc_mem: a.mem,
        alloc_gpus: a.gpus,
        alloc_nodes: a.nodes,
        cpu_usage: p.cpu_usage,
        cpu_time: p.cpu_time,
        mem_usage: p.mem_usage,
        gpu_usage: p.gpu_usage,
        energy_kwh: p.energy_kwh,
        emissions_g,
    })
}

/// Parses and checks a whole push. `Err` names the first bad record as `units[I].FIELD`.
pub fn parse(body: &[u8], cfg: &AccountingConfig) -> Result<Vec<Unit>, String> {
    let records: Vec<serde_json::Value> = serde_json::from_slice(body)
        .map_err(|e| format!("the body must be a JSON array of units: {e}"))?;
    if records.is_empty() {
        return Err("the body is an empty array: nothing to write".into());
    }
    let mut out = Vec::with_capacity(records.len());
    let mut seen = std::collections::HashSet::with_capacity(records.len());
    for (i, r) in records.into_iter().enumerate() {
        let p: PushUnit = serde_path_to_error::deserialize(r).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            if path == "." || path.is_empty() {
                format!("units[{i}]: {inner}")
            } else {
                format!("units[{i}].{path}: {inner}")
            }
        })?;
        let u = check(p, cfg).map_err(|(field, reason)| format!("units[{i}].{field}: {reason}"))?;
        if !seen.insert((u.cluster_id.clone(), u.uuid.clone())) {
            return Err(format!(
                "units[{i}].uuid: `{}` on cluster `{}` appears twice in this push",
                u.uuid, u.cluster_id
            ));
        }
        out.push(u);
    }
    Ok(out)
}
