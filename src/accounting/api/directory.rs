//! `/api/v1/projects`, `/api/v1/users` (+ `/admin`), `/api/v1/clusters/admin`, and group
//! management: `POST`/`DELETE /api/v1/projects/{project}/members/{user}`.

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use axum::routing::{get, post};

use super::{ApiError, Caller, Params, ok};
use crate::accounting::AppState;
use crate::accounting::directory::{self, ClusterRow, ProjectRow, UserRow};
use crate::accounting::store::Scope;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/projects", get(projects))
        .route("/api/v1/projects/admin", get(projects_admin))
        .route(
            "/api/v1/projects/{project}/members/{user}",
            post(add_member).delete(remove_member),
        )
        .route("/api/v1/users", get(users))
        .route("/api/v1/users/admin", get(users_admin))
        .route("/api/v1/clusters/admin", get(clusters))
}

/// The caller's projects, their members and group admins.
#[utoipa::path(get, path = "/api/v1/projects", params(
    ("project" = Option<Vec<String>>, Query, description = "Projects (repeatable)"),
    ("cluster_id" = Option<Vec<String>>, Query, description = "Clusters (repeatable)"),
), responses((status = 200, description = "Projects", body = [ProjectRow])))]
async fn projects(
    caller: Caller,
    State(state): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let p = Params::parse(q.as_deref());
    p.no_user()?;
    let rows = directory::projects(
        &state.db,
        Scope::User(&caller.user),
        &p.all("project"),
        &p.all("cluster_id"),
    )
    .await?;
    Ok(ok(rows))
}

/// Every project (admins).
#[utoipa::path(get, path = "/api/v1/projects/admin", responses(
    (status = 200, description = "Projects", body = [ProjectRow]),
    (status = 403, description = "Not an admin"),
))]
async fn projects_admin(
    caller: Caller,
    State(state): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let p = Params::parse(q.as_deref());
    let rows = directory::projects(
        &state.db,
        Scope::All,
        &p.all("project"),
        &p.all("cluster_id"),
    )
    .await?;
    Ok(ok(rows))
}

/// The caller and their projects.
#[utoipa::path(get, path = "/api/v1/users", params(
    ("cluster_id" = Option<Vec<String>>, Query, description = "Clusters (repeatable)"),
), responses((status = 200, description = "The caller, per cluster", body = [UserRow])))]
async fn users(
    caller: Caller,
    State(state): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let p = Params::parse(q.as_deref());
    p.no_user()?;
    let rows = directory::users(
        &state.db,
        std::slice::from_ref(&caller.user),
        &p.all("cluster_id"),
    )
    .await?;
    Ok(ok(rows))
}

/// Users (admins): all, or those named by `user`; with `role=admin`, the admins only (CEEMS'
/// load balancer reads this as its admin list, so anything else there would make every user
/// an admin of it).
#[utoipa::path(get, path = "/api/v1/users/admin", params(
    ("user" = Option<Vec<String>>, Query, description = "Users (repeatable)"),
    ("cluster_id" = Option<Vec<String>>, Query, description = "Clusters (repeatable; not with role=admin)"),
    ("role" = Option<String>, Query, description = "`admin`: only the admins the store knows, tagged with their source"),
), responses(
    (status = 200, description = "Users", body = [UserRow]),
    (status = 403, description = "Not an admin"),
))]
async fn users_admin(
    caller: Caller,
    State(state): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let p = Params::parse(q.as_deref());
    let admins_only = match p.all("role").as_slice() {
        [] => false,
        [r] if r == "admin" => true,
        _ => {
            return Err(ApiError::bad(
                "query parameter 'role': only `admin` is known",
            ));
        }
    };
    let rows = if admins_only {
        directory::admins(&state.db, &p.all("user")).await?
    } else {
        directory::users(&state.db, &p.all("user"), &p.all("cluster_id")).await?
    };
    Ok(ok(rows))
}

/// Clusters (admins).
#[utoipa::path(get, path = "/api/v1/clusters/admin", responses(
    (status = 200, description = "Clusters", body = [ClusterRow]),
    (status = 403, description = "Not an admin"),
))]
async fn clusters(caller: Caller, State(state): State<AppState>) -> Result<Response, ApiError> {
    caller.require_admin()?;
    Ok(ok(directory::clusters(&state.db).await?))
}

/// Admins, and the project's group admins, manage its members.
async fn may_manage(state: &AppState, caller: &Caller, project: &str) -> Result<(), ApiError> {
    let (found, group_admin) = directory::project_role(&state.db, project, &caller.user).await?;
    if !found {
        return Err(ApiError::NotFound(format!("no project `{project}`")));
    }
    if caller.admin || group_admin {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "only admins and group admins of `{project}` may change its members"
        )))
    }
}

fn check_name(what: &str, s: &str) -> Result<(), ApiError> {
    if s.is_empty() || s.len() > 256 || s.chars().any(|c| c.is_control() || c == ',') {
        return Err(ApiError::bad(format!(
            "{what} `{s}`: 1 to 256 characters, no commas or control characters"
        )));
    }
    Ok(())
}

/// Adds a member (`group_admin=true`, admins only, makes them a group admin).
#[utoipa::path(post, path = "/api/v1/projects/{project}/members/{user}", params(
    ("project" = String, Path), ("user" = String, Path),
    ("group_admin" = Option<bool>, Query, description = "Make the member a group admin (admins only)"),
), responses(
    (status = 200, description = "`{\"changed\": bool}`"),
    (status = 403, description = "Neither admin nor group admin of the project"),
    (status = 404, description = "No such project"),
))]
async fn add_member(
    caller: Caller,
    State(state): State<AppState>,
    Path((project, user)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    check_name("user", &user)?;
    may_manage(&state, &caller, &project).await?;
    let p = Params::parse(q.as_deref());
    let group_admin = match p.all("group_admin").as_slice() {
        [] => false,
        [v] if v == "true" => true,
        [v] if v == "false" => false,
        _ => {
            return Err(ApiError::bad(
                "query parameter 'group_admin': true or false",
            ));
        }
    };
    if group_admin {
        caller.require_admin()?;
    }
    let changed = directory::add_member(&state.db, &project, &user, group_admin).await?;
    tracing::info!(by = %caller.user, project = %project, user = %user, group_admin, "accounting: member added");
    Ok(ok(serde_json::json!({ "changed": changed })))
}

/// Removes a member.
#[utoipa::path(delete, path = "/api/v1/projects/{project}/members/{user}", params(
    ("project" = String, Path), ("user" = String, Path),
), responses(
    (status = 200, description = "`{\"changed\": bool}`"),
    (status = 403, description = "Neither admin nor group admin of the project"),
    (status = 404, description = "No such project"),
))]
async fn remove_member(
    caller: Caller,
    State(state): State<AppState>,
    Path((project, user)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    may_manage(&state, &caller, &project).await?;
    let changed = directory::remove_member(&state.db, &project, &user).await?;
    tracing::info!(by = %caller.user, project = %project, user = %user, "accounting: member removed");
    Ok(ok(serde_json::json!({ "changed": changed })))
}
