//! Users, projects, memberships, clusters and usage roll-ups: the small tables beside units.

use std::collections::BTreeMap;

use sqlx::Row;

use super::store::{Arg, Scope, Sql, UnitFilter};
use crate::db::{Db, StoreError, now};

/// One row of `/users`: a user on a cluster and their projects.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct UserRow {
    pub cluster_id: String,
    pub resource_manager: String,
    pub name: String,
    pub projects: Vec<String>,
    /// Admin rows (`role=admin`): where the admin comes from (`config`, …), as CEEMS' tags.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// One row of `/projects`: a project on a cluster, its members and group admins.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct ProjectRow {
    pub cluster_id: String,
    pub resource_manager: String,
    pub name: String,
    pub users: Vec<String>,
    /// Members who may add and remove members (an hpcgate extension).
    pub group_admins: Vec<String>,
}

/// A cluster (`/clusters/admin`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct ClusterRow {
    pub id: String,
    pub manager: String,
}

/// Usage of one user in one project on one cluster.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UsageRow {
    pub cluster_id: String,
    pub resource_manager: String,
    pub username: String,
    pub project: String,
    pub groupname: String,
    pub num_units: i64,
    pub walltime: i64,
    pub alloc_cputime: i64,
    pub alloc_gputime: i64,
    /// Σ usage × weight, and Σ weight, for the time-weighted means.
    pub cpu_weighted: f64,
    pub cpu_weight: i64,
    pub gpu_weighted: f64,
    pub gpu_weight: i64,
    pub energy_kwh: f64,
    pub emissions_g: f64,
}

fn usage_row(r: &sqlx::any::AnyRow) -> Result<UsageRow, StoreError> {
    Ok(UsageRow {
        cluster_id: r.try_get("cluster_id")?,
        resource_manager: r.try_get("resource_manager")?,
        username: r.try_get("username")?,
        project: r.try_get("project")?,
        groupname: r.try_get("groupname")?,
        num_units: r.try_get("num_units")?,
        walltime: r.try_get("walltime")?,
        alloc_cputime: r.try_get("alloc_cputime")?,
        alloc_gputime: r.try_get("alloc_gputime")?,
        cpu_weighted: r.try_get("cpu_usage_weighted")?,
        cpu_weight: r.try_get("cpu_weight")?,
        gpu_weighted: r.try_get("gpu_usage_weighted")?,
        gpu_weight: r.try_get("gpu_weight")?,
        energy_kwh: r.try_get("energy_kwh")?,
        emissions_g: r.try_get("emissions_g")?,
    })
}

/// Usage aggregated live from the units that ended in the window (and running ones).
pub async fn usage_current(
    db: &Db,
    scope: Scope<'_>,
    f: &UnitFilter,
) -> Result<Vec<UsageRow>, StoreError> {
    let mut sql = Sql::new(
        "SELECT cluster_id, MAX(resource_manager) AS resource_manager, username, project, \
         MAX(groupname) AS groupname, COUNT(*) AS num_units, \
         CAST(SUM(elapsed) AS BIGINT) AS walltime, \
         CAST(SUM(elapsed * alloc_cpus) AS BIGINT) AS alloc_cputime, \
         CAST(SUM(elapsed * alloc_gpus) AS BIGINT) AS alloc_gputime, \
         CAST(COALESCE(SUM(cpu_usage * elapsed * alloc_cpus), 0) AS DOUBLE PRECISION) AS cpu_usage_weighted, \
         CAST(SUM(CASE WHEN cpu_usage IS NULL THEN 0 ELSE elapsed * alloc_cpus END) AS BIGINT) AS cpu_weight, \
         CAST(COALESCE(SUM(gpu_usage * elapsed * alloc_gpus), 0) AS DOUBLE PRECISION) AS gpu_usage_weighted, \
         CAST(SUM(CASE WHEN gpu_usage IS NULL THEN 0 ELSE elapsed * alloc_gpus END) AS BIGINT) AS gpu_weight, \
         CAST(COALESCE(SUM(energy_kwh), 0) AS DOUBLE PRECISION) AS energy_kwh, \
         CAST(COALESCE(SUM(emissions_g), 0) AS DOUBLE PRECISION) AS emissions_g \
         FROM acct_units",
    );
    super::store::unit_where(&mut sql, scope, f);
    sql.push(" GROUP BY cluster_id, username, project ORDER BY cluster_id, username, project");
    let rows = sql.query().fetch_all(db.pool()).await?;
    rows.iter().map(usage_row).collect()
}

/// Usage of all time, from the roll-up table.
pub async fn usage_global(
    db: &Db,
    scope: Scope<'_>,
    f: &UnitFilter,
) -> Result<Vec<UsageRow>, StoreError> {
    let mut sql = Sql::new(
        "SELECT cluster_id, resource_manager, username, project, '' AS groupname, num_units, \
         walltime, alloc_cputime, alloc_gputime, cpu_usage_weighted, cpu_weight, \
         gpu_usage_weighted, gpu_weight, energy_kwh, emissions_g FROM acct_usage WHERE 1 = 1",
    );
    scope.restrict(&mut sql);
    sql.and_in("cluster_id", &f.clusters)
        .and_in("project", &f.projects)
        .and_in("username", &f.users)
        .push(" ORDER BY cluster_id, username, project");
    let rows = sql.query().fetch_all(db.pool()).await?;
    rows.iter().map(usage_row).collect()
}

/// Distinct (cluster, manager) pairs a user or project has usage on, from the roll-ups.
async fn clusters_of(
    db: &Db,
    col: &str,
    names: &[String],
) -> Result<BTreeMap<String, Vec<(String, String)>>, StoreError> {
    let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    if names.is_empty() {
        return Ok(out);
    }
    let mut sql = Sql::new(&format!(
        "SELECT DISTINCT {col} AS who, cluster_id, resource_manager FROM acct_usage WHERE 1 = 1"
    ));
    sql.and_in(col, names).push(" ORDER BY who, cluster_id");
    for r in sql.query().fetch_all(db.pool()).await? {
        out.entry(r.try_get("who")?)
            .or_default()
            .push((r.try_get("cluster_id")?, r.try_get("resource_manager")?));
    }
    Ok(out)
}

/// Memberships of these users (or of these projects), as (project, user, group admin).
async fn memberships(
    db: &Db,
    col: &str,
    names: &[String],
) -> Result<Vec<(String, String, bool)>, StoreError> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let mut sql =
        Sql::new("SELECT project, username, group_admin FROM acct_memberships WHERE 1 = 1");
    sql.and_in(col, names).push(" ORDER BY project, username");
    sql.query()
        .fetch_all(db.pool())
        .await?
        .iter()
        .map(|r| {
            Ok((
                r.try_get("project")?,
                r.try_get("username")?,
                r.try_get::<i64, _>("group_admin")? != 0,
            ))
        })
        .collect()
}

/// Names from `table` (`acct_users` or `acct_projects`), all or those in `only`.
async fn names(db: &Db, table: &str, only: &[String]) -> Result<Vec<String>, StoreError> {
    let mut sql = Sql::new(&format!("SELECT name FROM {table} WHERE 1 = 1"));
    sql.and_in("name", only).push(" ORDER BY name");
    sql.query()
        .fetch_all(db.pool())
        .await?
        .iter()
        .map(|r| r.try_get("name").map_err(StoreError::from))
        .collect()
}

/// One row per user and cluster they have usage on (a user without any: one row with an
/// empty cluster). `users` empty = every user.
pub async fn users(
    db: &Db,
    users: &[String],
    clusters: &[String],
) -> Result<Vec<UserRow>, StoreError> {
    let names = names(db, "acct_users", users).await?;
    let on = clusters_of(db, "username", &names).await?;
    let mut projects: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (p, u, _) in memberships(db, "username", &names).await? {
        projects.entry(u).or_default().push(p);
    }
    let mut out = Vec::new();
    for name in names {
        let ps = projects.remove(&name).unwrap_or_default();
        let cs = on
            .get(&name)
            .cloned()
            .unwrap_or_else(|| vec![Default::default()]);
        for (cluster_id, resource_manager) in cs {
            if clusters.is_empty() || clusters.contains(&cluster_id) {
                out.push(UserRow {
                    cluster_id,
                    resource_manager,
                    name: name.clone(),
                    projects: ps.clone(),
                    tags: Vec::new(),
                });
            }
        }
    }
    Ok(out)
}

/// The admins the store knows (`acct_admins`: `[accounting] admin_users` and the like), all or
/// those in `only`: one row each, with no cluster, their projects, and their source as the
/// tag. Members of `admin_groups` are admins by the groups header of each request and cannot
/// be listed here.
pub async fn admins(db: &Db, only: &[String]) -> Result<Vec<UserRow>, StoreError> {
    let mut sql = Sql::new("SELECT username AS name, source FROM acct_admins WHERE 1 = 1");
    sql.and_in("username", only).push(" ORDER BY username");
    let rows = sql.query().fetch_all(db.pool()).await?;
    let mut admins: Vec<(String, String)> = Vec::new();
    for r in &rows {
        admins.push((r.try_get("name")?, r.try_get("source")?));
    }
    let names: Vec<String> = admins.iter().map(|(n, _)| n.clone()).collect();
    let mut projects: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (p, u, _) in memberships(db, "username", &names).await? {
        projects.entry(u).or_default().push(p);
    }
    Ok(admins
        .into_iter()
        .map(|(name, source)| UserRow {
            cluster_id: String::new(),
            resource_manager: String::new(),
            projects: projects.remove(&name).unwrap_or_default(),
            name,
            tags: vec![source],
        })
        .collect())
}

/// One row per project and cluster (see [`users`]). `scope` restricts to the user's
/// projects; `only` to named ones.
pub async fn projects(
    db: &Db,
    scope: Scope<'_>,
    only: &[String],
    clusters: &[String],
) -> Result<Vec<ProjectRow>, StoreError> {
    let mut names = names(db, "acct_projects", only).await?;
    if let Scope::User(u) = scope {
        let mine: Vec<String> = memberships(db, "username", &[u.to_string()])
            .await?
            .into_iter()
            .map(|(p, _, _)| p)
            .collect();
        names.retain(|n| mine.contains(n));
    }
    let on = clusters_of(db, "project", &names).await?;
    let mut members: BTreeMap<String, (Vec<String>, Vec<String>)> = BTreeMap::new();
    for (p, u, admin) in memberships(db, "project", &names).await? {
        let e = members.entry(p).or_default();
        if admin {
            e.1.push(u.clone());
        }
        e.0.push(u);
    }
    let mut out = Vec::new();
    for name in names {
        let (users, group_admins) = members.remove(&name).unwrap_or_default();
        let cs = on
            .get(&name)
            .cloned()
            .unwrap_or_else(|| vec![Default::default()]);
        for (cluster_id, resource_manager) in cs {
            if clusters.is_empty() || clusters.contains(&cluster_id) {
                out.push(ProjectRow {
                    cluster_id,
                    resource_manager,
                    name: name.clone(),
                    users: users.clone(),
                    group_admins: group_admins.clone(),
                });
            }
        }
    }
    Ok(out)
}

/// Configured clusters and those units came from.
pub async fn clusters(db: &Db) -> Result<Vec<ClusterRow>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, manager FROM acct_clusters UNION \
         SELECT DISTINCT cluster_id AS id, resource_manager AS manager FROM acct_usage \
         ORDER BY id",
    )
    .fetch_all(db.pool())
    .await?;
    let mut out: Vec<ClusterRow> = Vec::new();
    for r in rows {
        let row = ClusterRow {
            id: r.try_get("id")?,
            manager: r.try_get("manager")?,
        };
        if !out.iter().any(|c| c.id == row.id) {
            out.push(row);
        }
    }
    Ok(out)
}

/// Whether the project exists, and whether `user` is one of its group admins.
pub async fn project_role(db: &Db, project: &str, user: &str) -> Result<(bool, bool), StoreError> {
    let mut sql = Sql::new("SELECT (SELECT COUNT(*) FROM acct_projects WHERE name = ");
    let p = sql.text(project);
    let u = sql.arg(Arg::Text(user.to_string()));
    sql.push(&format!(
        "{p}) AS found, (SELECT COUNT(*) FROM acct_memberships WHERE project = {p} AND \
         username = {u} AND group_admin <> 0) AS admin"
    ));
    let r = sql.query().fetch_one(db.pool()).await?;
    Ok((
        r.try_get::<i64, _>("found")? > 0,
        r.try_get::<i64, _>("admin")? > 0,
    ))
}

/// Adds `user` to `project` (or changes their group-admin flag). True if anything changed.
pub async fn add_member(
    db: &Db,
    project: &str,
    user: &str,
    group_admin: bool,
) -> Result<bool, StoreError> {
    let mut tx = db.pool().begin().await?;
    let t = now();
    sqlx::query(
        "INSERT INTO acct_users (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
    )
    .bind(user)
    .bind(t)
    .execute(&mut *tx)
    .await?;
    let done = sqlx::query(
        "INSERT INTO acct_memberships (project, username, group_admin, created_at) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (project, username) DO UPDATE SET \
         group_admin = excluded.group_admin WHERE acct_memberships.group_admin <> excluded.group_admin",
    )
    .bind(project)
    .bind(user)
    .bind(i64::from(group_admin))
    .bind(t)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(done.rows_affected() > 0)
}

/// Removes `user` from `project`. True if they were a member.
pub async fn remove_member(db: &Db, project: &str, user: &str) -> Result<bool, StoreError> {
    let done = sqlx::query("DELETE FROM acct_memberships WHERE project = $1 AND username = $2")
        .bind(project)
        .bind(user)
        .execute(db.pool())
        .await?;
    Ok(done.rows_affected() > 0)
}

/// The last value of an ingest watermark (0 if none).
pub async fn watermark(db: &Db, cluster: &str, source: &str) -> Result<i64, StoreError> {
    let row =
        sqlx::query("SELECT value FROM acct_watermarks WHERE cluster_id = $1 AND source = $2")
            .bind(cluster)
            .bind(source)
            .fetch_optional(db.pool())
            .await?;
    Ok(match row {
        Some(r) => r.try_get("value")?,
        None => 0,
    })
}
