//! `/api/v1/usage/{current,global}` (+ `/admin`): usage per user × project × cluster.
//! `current` is aggregated live from the units that ended in the window (running ones
//! included); `global` is all time, from the roll-ups.

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use axum::routing::get;
use serde::Serialize;

use super::units::select;
use super::{ApiError, Caller, Params, ok};
use crate::accounting::AppState;
use crate::accounting::directory::{self, UsageRow};
use crate::accounting::store::Scope;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/usage/{mode}", get(usage))
        .route("/api/v1/usage/{mode}/admin", get(usage_admin))
}

/// Usage of one user in one project on one cluster (CEEMS' shape).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UsageOut {
    pub cluster_id: String,
    pub resource_manager: String,
    pub num_units: i64,
    pub project: String,
    pub groupname: String,
    pub username: String,
    /// `walltime`, `alloc_cputime`, `alloc_gputime` in seconds.
    pub total_time_seconds: BTreeMap<String, i64>,
    /// `{"global": %}`, weighted by allocated CPU time.
    pub avg_cpu_usage: BTreeMap<String, f64>,
    /// `{"global": %}`, weighted by allocated GPU time.
    pub avg_gpu_usage: BTreeMap<String, f64>,
    pub total_cpu_energy_usage_kwh: BTreeMap<String, f64>,
    pub total_cpu_emissions_gms: BTreeMap<String, f64>,
}

/// Always present, whatever `field` says (as in CEEMS).
const ALWAYS: &[&str] = &[
    "cluster_id",
    "resource_manager",
    "num_units",
    "project",
    "groupname",
    "username",
];
const FIELDS: &[&str] = &[
    "cluster_id",
    "resource_manager",
    "num_units",
    "project",
    "groupname",
    "username",
    "total_time_seconds",
    "avg_cpu_usage",
    "avg_gpu_usage",
    "total_cpu_energy_usage_kwh",
    "total_cpu_emissions_gms",
];

fn mean(weighted: f64, weight: i64) -> BTreeMap<String, f64> {
    if weight > 0 {
        BTreeMap::from([("global".to_string(), weighted / weight as f64)])
    } else {
        BTreeMap::new()
    }
}

impl From<UsageRow> for UsageOut {
    fn from(r: UsageRow) -> Self {
        UsageOut {
            total_time_seconds: BTreeMap::from([
                ("walltime".to_string(), r.walltime),
                ("alloc_cputime".to_string(), r.alloc_cputime),
                ("alloc_gputime".to_string(), r.alloc_gputime),
            ]),
            avg_cpu_usage: mean(r.cpu_weighted, r.cpu_weight),
            avg_gpu_usage: mean(r.gpu_weighted, r.gpu_weight),
            total_cpu_energy_usage_kwh: BTreeMap::from([("total".to_string(), r.energy_kwh)]),
            total_cpu_emissions_gms: BTreeMap::from([("total".to_string(), r.emissions_g)]),
            cluster_id: r.cluster_id,
            resource_manager: r.resource_manager,
            num_units: r.num_units,
            project: r.project,
            groupname: r.groupname,
            username: r.username,
        }
    }
}

async fn answer(
    state: &AppState,
    mode: &str,
    scope: Scope<'_>,
    params: &Params,
    users: bool,
) -> Result<Response, ApiError> {
    let fields = params.fields(FIELDS)?;
    let f = params.unit_filter(
        crate::db::now(),
        state.cfg.max_query_window.as_secs() as i64,
        users,
    )?;
    let rows = match mode {
        "current" => directory::usage_current(&state.db, scope, &f).await?,
        "global" => directory::usage_global(&state.db, scope, &f).await?,
        other => {
            return Err(ApiError::NotFound(format!(
                "no usage mode `{other}`; use /api/v1/usage/current or /api/v1/usage/global"
            )));
        }
    };
    Ok(ok(select(
        rows.into_iter().map(UsageOut::from).collect(),
        fields.as_deref(),
        ALWAYS,
    )))
}

/// Usage of the caller and of their projects' members.
#[utoipa::path(get, path = "/api/v1/usage/{mode}", params(
    ("mode" = String, Path, description = "`current` (window, live) or `global` (all time)"),
    ("cluster_id" = Option<Vec<String>>, Query, description = "Clusters (repeatable)"),
    ("project" = Option<Vec<String>>, Query, description = "Projects (repeatable)"),
    ("from" = Option<i64>, Query, description = "Unix seconds (current)"),
    ("to" = Option<i64>, Query, description = "Unix seconds (current)"),
    ("field" = Option<Vec<String>>, Query, description = "Fields to return (repeatable)"),
), responses(
    (status = 200, description = "Usage rows", body = [UsageOut]),
    (status = 400, description = "A bad parameter"),
))]
async fn usage(
    caller: Caller,
    State(state): State<AppState>,
    Path(mode): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(q.as_deref());
    params.no_user()?;
    answer(&state, &mode, Scope::User(&caller.user), &params, false).await
}

/// Usage of everyone (admins), optionally of some users.
#[utoipa::path(get, path = "/api/v1/usage/{mode}/admin", params(
    ("mode" = String, Path, description = "`current` or `global`"),
    ("user" = Option<Vec<String>>, Query, description = "Users (repeatable)"),
), responses(
    (status = 200, description = "Usage rows", body = [UsageOut]),
    (status = 403, description = "Not an admin"),
))]
async fn usage_admin(
    caller: Caller,
    State(state): State<AppState>,
    Path(mode): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let params = Params::parse(q.as_deref());
    answer(&state, &mode, Scope::All, &params, true).await
}
