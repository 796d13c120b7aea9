//! `/api/v1/units` (+ `/admin`, `/verify`): compute units in CEEMS' JSON shape, and the push
//! ingest of service accounts (`POST /api/v1/units`).

use std::collections::BTreeMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, RawQuery, State};
use axum::response::Response;
use axum::routing::get;
use serde::Serialize;

use super::{ApiError, Caller, Params, ok, ok_with};
use crate::accounting::AppState;
use crate::accounting::store::{self, Scope, Unit};

/// The largest push body (about 100 000 job records).
const MAX_PUSH_BYTES: usize = 128 * 1024 * 1024;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/units", get(units).post(push))
        .route("/api/v1/units/admin", get(units_admin))
        .route("/api/v1/units/verify", get(verify))
        .layer(DefaultBodyLimit::max(MAX_PUSH_BYTES))
}

/// Resources allocated to a unit.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Allocation {
    pub cpus: i64,
    /// Bytes.
    pub mem: i64,
    pub gpus: i64,
    pub nodes: i64,
}

/// Time totals of a unit (seconds; `alloc_*` are weighted by the allocation).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TimeSeconds {
    pub walltime: i64,
    pub alloc_cputime: i64,
    pub alloc_gputime: i64,
}

/// A compute unit as CEEMS returns it: `*_at` are local-time strings, `*_ts` milliseconds.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UnitOut {
    pub cluster_id: String,
    pub resource_manager: String,
    pub uuid: String,
    pub name: String,
    pub project: String,
    pub groupname: String,
    pub username: String,
    pub created_at: String,
    pub started_at: String,
    pub ended_at: String,
    pub created_at_ts: i64,
    pub started_at_ts: i64,
    pub ended_at_ts: i64,
    /// `HH:MM:SS` (more hours when needed).
    pub elapsed: String,
    pub state: String,
    pub allocation: Allocation,
    pub total_time_seconds: TimeSeconds,
    /// `{"global": percent}` when measured.
    pub avg_cpu_usage: BTreeMap<String, f64>,
    pub avg_cpu_mem_usage: BTreeMap<String, f64>,
    /// `{"total": kWh}`.
    pub total_cpu_energy_usage_kwh: BTreeMap<String, f64>,
    /// `{"total": gCO2e}`.
    pub total_cpu_emissions_gms: BTreeMap<String, f64>,
    pub avg_gpu_usage: BTreeMap<String, f64>,
    /// `{"partition": …}`.
    pub tags: BTreeMap<String, String>,
}

/// The names `field` may take.
pub const UNIT_FIELDS: &[&str] = &[
    "cluster_id",
    "resource_manager",
    "uuid",
    "name",
    "project",
    "groupname",
    "username",
    "created_at",
    "started_at",
    "ended_at",
    "created_at_ts",
    "started_at_ts",
    "ended_at_ts",
    "elapsed",
    "state",
    "allocation",
    "total_time_seconds",
    "avg_cpu_usage",
    "avg_cpu_mem_usage",
    "total_cpu_energy_usage_kwh",
    "total_cpu_emissions_gms",
    "avg_gpu_usage",
    "tags",
];

/// `2024-01-31T12:00:00+0000`, or `Unknown` for 0.
pub fn time_string(t: i64) -> String {
    if t <= 0 {
        return "Unknown".into();
    }
    match time::OffsetDateTime::from_unix_timestamp(t) {
        Ok(d) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}+0000",
            d.year(),
            u8::from(d.month()),
            d.day(),
            d.hour(),
            d.minute(),
            d.second()
        ),
        Err(_) => "Unknown".into(),
    }
}

pub fn elapsed_string(s: i64) -> String {
    let s = s.max(0);
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

fn metric(key: &str, v: Option<f64>) -> BTreeMap<String, f64> {
    v.map(|v| BTreeMap::from([(key.to_string(), v)]))
        .unwrap_or_default()
}

impl From<Unit> for UnitOut {
    fn from(u: Unit) -> Self {
        UnitOut {
            created_at: time_string(u.created_at),
            started_at: time_string(u.started_at),
            ended_at: time_string(u.ended_at),
            created_at_ts: u.created_at * 1000,
            started_at_ts: u.started_at * 1000,
            ended_at_ts: u.ended_at * 1000,
            elapsed: elapsed_string(u.elapsed),
            allocation: Allocation {
                cpus: u.alloc_cpus,
                mem: u.alloc_mem,
                gpus: u.alloc_gpus,
                nodes: u.alloc_nodes,
            },
            total_time_seconds: TimeSeconds {
                walltime: u.elapsed,
                alloc_cputime: u.elapsed * u.alloc_cpus,
                alloc_gputime: u.elapsed * u.alloc_gpus,
            },
            avg_cpu_usage: metric("global", u.cpu_usage),
            avg_cpu_mem_usage: metric("global", u.mem_usage),
            total_cpu_energy_usage_kwh: metric("total", u.energy_kwh),
            total_cpu_emissions_gms: metric("total", u.emissions_g),
            avg_gpu_usage: metric("global", u.gpu_usage),
            tags: if u.partition.is_empty() {
                BTreeMap::new()
            } else {
                BTreeMap::from([("partition".to_string(), u.partition)])
            },
            cluster_id: u.cluster_id,
            resource_manager: u.resource_manager,
            uuid: u.uuid,
            name: u.name,
            project: u.project,
            groupname: u.groupname,
            username: u.username,
            state: u.state,
        }
    }
}

/// Serializes rows keeping only `fields` (all when `None`).
pub fn select<T: Serialize>(
    rows: Vec<T>,
    fields: Option<&[String]>,
    always: &[&str],
) -> Vec<serde_json::Value> {
    rows.into_iter()
        .filter_map(|r| serde_json::to_value(r).ok())
        .map(|mut v| {
            if let (Some(fields), Some(obj)) = (fields, v.as_object_mut()) {
                obj.retain(|k, _| always.contains(&k.as_str()) || fields.iter().any(|f| f == k));
            }
            v
        })
        .collect()
}

async fn list(
    state: &AppState,
    scope: Scope<'_>,
    params: &Params,
    users: bool,
) -> Result<Response, ApiError> {
    let cfg = &state.cfg;
    let fields = params.fields(UNIT_FIELDS)?;
    let mut f = params.unit_filter(
        crate::db::now(),
        cfg.max_query_window.as_secs() as i64,
        users,
    )?;
    let (limit, offset) = params.page(cfg.max_page_size)?;
    f.limit = limit;
    f.offset = offset;
    let (rows, more) = store::units(&state.db, scope, &f).await?;
    let n = rows.len();
    let data = select(
        rows.into_iter().map(UnitOut::from).collect(),
        fields.as_deref(),
        &[],
    );
    let warnings = if more {
        vec![format!(
            "more units match: this page has {n}; ask again with offset={}",
            offset + n
        )]
    } else {
        Vec::new()
    };
    Ok(ok_with(data, warnings))
}

/// The caller's units and those of their projects.
#[utoipa::path(get, path = "/api/v1/units", params(
    ("cluster_id" = Option<Vec<String>>, Query, description = "Clusters (repeatable)"),
    ("uuid" = Option<Vec<String>>, Query, description = "Unit ids (repeatable); skips the time window"),
    ("project" = Option<Vec<String>>, Query, description = "Projects (repeatable)"),
    ("running" = Option<bool>, Query, description = "Present: also units that have not ended"),
    ("from" = Option<i64>, Query, description = "Unix seconds; units that ended from then (default: to − 24 h)"),
    ("to" = Option<i64>, Query, description = "Unix seconds; units that ended until then (default: now)"),
    ("field" = Option<Vec<String>>, Query, description = "Fields to return (repeatable)"),
    ("limit" = Option<usize>, Query, description = "Page size (at most max_page_size)"),
    ("offset" = Option<usize>, Query, description = "Units to skip"),
), responses(
    (status = 200, description = "Units, ordered by cluster_id and uuid", body = [UnitOut]),
    (status = 400, description = "A bad parameter, named in `error`"),
    (status = 401, description = "No user"),
    (status = 503, description = "The database does not answer"),
))]
async fn units(
    caller: Caller,
    State(state): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(q.as_deref());
    params.no_user()?;
    list(&state, Scope::User(&caller.user), &params, false).await
}

/// Every unit (admins), optionally of some users (`user`, repeatable).
#[utoipa::path(get, path = "/api/v1/units/admin", params(
    ("user" = Option<Vec<String>>, Query, description = "Users (repeatable)"),
), responses(
    (status = 200, description = "Units", body = [UnitOut]),
    (status = 403, description = "Not an admin"),
))]
async fn units_admin(
    caller: Caller,
    State(state): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let params = Params::parse(q.as_deref());
    list(&state, Scope::All, &params, true).await
}

/// 200 if the caller owns every `uuid` (theirs or their projects'), 403 otherwise.
#[utoipa::path(get, path = "/api/v1/units/verify", params(
    ("uuid" = Vec<String>, Query, description = "Unit ids (repeatable, required)"),
    ("cluster_id" = Option<Vec<String>>, Query, description = "Clusters (repeatable)"),
), responses(
    (status = 200, description = "Every unit is the caller's"),
    (status = 400, description = "No uuid"),
    (status = 403, description = "Some unit is not the caller's"),
))]
async fn verify(
    caller: Caller,
    State(state): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(q.as_deref());
    let uuids = params.all("uuid");
    if uuids.is_empty() {
        return Err(ApiError::bad(
            "uuids missing in the request: give query parameter 'uuid'",
        ));
    }
    if uuids.len() > 10_000 {
        return Err(ApiError::bad(
            "query parameter 'uuid': at most 10000 at once",
        ));
    }
    // Admins may look at any unit (CEEMS' load balancer lets them through too).
    if caller.admin {
        return Ok(ok(serde_json::Value::Null));
    }
    let foreign =
        store::foreign_units_in(&state.db, &caller.user, &params.all("cluster_id"), &uuids).await?;
    if foreign.is_empty() {
        Ok(ok(serde_json::Value::Null))
    } else {
        Err(ApiError::Forbidden(
            "user do not have permissions on uuids".into(),
        ))
    }
}

/// Upserts units by (cluster_id, uuid): for the service accounts of `ingest_users` and
/// admins. All or nothing: a bad record is a 400 naming its index and field.
#[utoipa::path(post, path = "/api/v1/units",
    request_body(content = [crate::accounting::ingest::push::PushUnit], description = "Units (a JSON array)"),
    responses(
        (status = 200, description = "Written: `{\"written\": N}`"),
        (status = 400, description = "A bad record: `units[I].FIELD: reason`"),
        (status = 403, description = "Not an ingest user or admin"),
    ))]
async fn push(
    caller: Caller,
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Response, ApiError> {
    if !caller.admin && !state.cfg.ingest_users.contains(&caller.user) {
        return Err(ApiError::Forbidden(format!(
            "{} may not push units: add them to [accounting] ingest_users",
            caller.user
        )));
    }
    let units =
        crate::accounting::ingest::push::parse(&body, &state.cfg).map_err(ApiError::BadData)?;
    let written = store::upsert_units(&state.db, &units).await?;
    tracing::info!(user = %caller.user, units = written, "accounting: units pushed");
    Ok(ok(serde_json::json!({ "written": written })))
}
