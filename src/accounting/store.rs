//! Accounting queries over the gateway's [`Db`]: portable SQL (`$N` placeholders) that runs
//! on SQLite and PostgreSQL alike, built with [`Sql`] so that every value is bound, never
//! spliced into the text.

use sqlx::Row;
use sqlx::any::{AnyArguments, AnyRow};

use crate::db::{Db, StoreError};

/// One compute unit (a job), as stored. Times are Unix seconds; 0 means "not yet".
#[derive(Debug, Clone, PartialEq)]
pub struct Unit {
    pub cluster_id: String,
    pub resource_manager: String,
    pub uuid: String,
    pub name: String,
    pub username: String,
    pub project: String,
    pub groupname: String,
    pub partition: String,
    pub state: String,
    pub created_at: i64,
    pub started_at: i64,
    pub ended_at: i64,
    /// Seconds of wall time.
    pub elapsed: i64,
    pub alloc_cpus: i64,
    /// Bytes.
    pub alloc_mem: i64,
    pub alloc_gpus: i64,
    pub alloc_nodes: i64,
    /// Mean CPU usage, % of the allocation.
    pub cpu_usage: Option<f64>,
    /// CPU seconds used.
    pub cpu_time: Option<f64>,
    /// Mean memory usage, % of the allocation.
    pub mem_usage: Option<f64>,
    /// Mean GPU usage, %.
    pub gpu_usage: Option<f64>,
    pub energy_kwh: Option<f64>,
    /// gCO2e.
    pub emissions_g: Option<f64>,
}

pub(crate) const UNIT_COLUMNS: &str = "cluster_id, resource_manager, uuid, name, username, project, \
    groupname, partition_name, state, created_at, started_at, ended_at, elapsed, alloc_cpus, \
    alloc_mem, alloc_gpus, alloc_nodes, cpu_usage, cpu_time, mem_usage, gpu_usage, energy_kwh, \
    emissions_g";

pub(crate) fn unit(row: &AnyRow) -> Result<Unit, StoreError> {
    Ok(Unit {
        cluster_id: row.try_get("cluster_id")?,
        resource_manager: row.try_get("resource_manager")?,
        uuid: row.try_get("uuid")?,
        name: row.try_get("name")?,
        username: row.try_get("username")?,
        project: row.try_get("project")?,
        groupname: row.try_get("groupname")?,
        partition: row.try_get("partition_name")?,
        state: row.try_get("state")?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        ended_at: row.try_get("ended_at")?,
        elapsed: row.try_get("elapsed")?,
        alloc_cpus: row.try_get("alloc_cpus")?,
        alloc_mem: row.try_get("alloc_mem")?,
        alloc_gpus: row.try_get("alloc_gpus")?,
        alloc_nodes: row.try_get("alloc_nodes")?,
        cpu_usage: row.try_get("cpu_usage")?,
        cpu_time: row.try_get("cpu_time")?,
        mem_usage: row.try_get("mem_usage")?,
        gpu_usage: row.try_get("gpu_usage")?,
        energy_kwh: row.try_get("energy_kwh")?,
        emissions_g: row.try_get("emissions_g")?,
    })
}

/// A bound value.
#[derive(Debug, Clone)]
pub(crate) enum Arg {
    Text(String),
    Int(i64),
}

/// SQL text with its bound values, numbered `$1…` in order.
#[derive(Debug, Default)]
pub(crate) struct Sql {
    pub text: String,
    args: Vec<Arg>,
}

impl Sql {
    pub fn new(text: &str) -> Sql {
        Sql {
            text: text.to_string(),
            args: Vec::new(),
        }
    }

    pub fn push(&mut self, text: &str) -> &mut Sql {
        self.text.push_str(text);
        self
    }

    /// Binds a value and returns its placeholder.
    pub fn arg(&mut self, a: Arg) -> String {
        self.args.push(a);
        format!("${}", self.args.len())
    }

    pub fn text(&mut self, s: &str) -> String {
        self.arg(Arg::Text(s.to_string()))
    }

    /// ` AND col IN ($i, …)` (nothing for an empty list).
    pub fn and_in(&mut self, col: &str, values: &[String]) -> &mut Sql {
        if values.is_empty() {
            return self;
        }
        let list: Vec<String> = values.iter().map(|v| self.text(v)).collect();
        self.text
            .push_str(&format!(" AND {col} IN ({})", list.join(", ")));
        self
    }

    pub fn query(&self) -> sqlx::query::Query<'_, sqlx::Any, AnyArguments> {
        let mut q = sqlx::query(sqlx::AssertSqlSafe(self.text.clone()));
        for a in &self.args {
            q = match a {
                Arg::Text(s) => q.bind(s.clone()),
                Arg::Int(i) => q.bind(*i),
            };
        }
        q
    }
}

/// Who is asking, as far as row visibility goes.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// Everything.
    All,
    /// The user's own rows and those of the projects they are a member of.
    User(&'a str),
}

impl Scope<'_> {
    /// ` AND (username = … OR project IN (their projects))`.
    pub(crate) fn restrict(&self, sql: &mut Sql) {
        if let Scope::User(u) = self {
            let p = sql.text(u);
            sql.push(&format!(
                " AND (username = {p} OR project IN \
                 (SELECT m.project FROM acct_memberships m WHERE m.username = {p}))"
            ));
        }
    }
}

/// The filters of a units query (CEEMS semantics: values of one parameter are OR-ed,
/// parameters are AND-ed).
#[derive(Debug, Clone, Default)]
pub struct UnitFilter {
    pub clusters: Vec<String>,
    pub uuids: Vec<String>,
    pub projects: Vec<String>,
    pub users: Vec<String>,
    /// Ended within `[from, to]` (Unix seconds); ignored when `uuids` is set.
    pub from: i64,
    pub to: i64,
    /// Also units that have not ended.
    pub running: bool,
    pub limit: usize,
    pub offset: usize,
}

/// Builds `WHERE …` for units (and usage over units).
pub(crate) fn unit_where(sql: &mut Sql, scope: Scope<'_>, f: &UnitFilter) {
    sql.push(" WHERE 1 = 1");
    scope.restrict(sql);
    sql.and_in("cluster_id", &f.clusters)
        .and_in("project", &f.projects)
        .and_in("username", &f.users);
    if f.uuids.is_empty() {
        let from = sql.arg(Arg::Int(f.from));
        let to = sql.arg(Arg::Int(f.to));
        let running = if f.running { " OR ended_at = 0" } else { "" };
        sql.push(&format!(
            " AND ((ended_at >= {from} AND ended_at <= {to}){running})"
        ));
    } else {
        sql.and_in("uuid", &f.uuids);
    }
}

/// A page of units ordered by cluster and uuid, and whether more follow.
pub async fn units(
    db: &Db,
    scope: Scope<'_>,
    f: &UnitFilter,
) -> Result<(Vec<Unit>, bool), StoreError> {
    let mut sql = Sql::new(&format!("SELECT {UNIT_COLUMNS} FROM acct_units"));
    unit_where(&mut sql, scope, f);
    let limit = sql.arg(Arg::Int(f.limit as i64 + 1));
    let offset = sql.arg(Arg::Int(f.offset as i64));
    sql.push(&format!(
        " ORDER BY cluster_id, uuid LIMIT {limit} OFFSET {offset}"
    ));
    let rows = sql.query().fetch_all(db.pool()).await?;
    let mut out = rows.iter().map(unit).collect::<Result<Vec<_>, _>>()?;
    let more = out.len() > f.limit;
    out.truncate(f.limit);
    Ok((out, more))
}

/// Which of `uuids` do NOT belong to `user`: the unit is neither theirs nor of a project they
/// are a member of. One query. Fail closed: an unknown uuid is foreign, and so is a uuid that
/// names units on several clusters unless every one of them is the user's. Duplicates in the
/// input are answered once; the answer keeps the input's order.
pub async fn foreign_units(
    db: &Db,
    user: &str,
    uuids: &[String],
) -> Result<Vec<String>, StoreError> {
    foreign_units_in(db, user, &[], uuids).await
}

/// [`foreign_units`] limited to units of `clusters` (all clusters when empty).
pub async fn foreign_units_in(
    db: &Db,
    user: &str,
    clusters: &[String],
    uuids: &[String],
) -> Result<Vec<String>, StoreError> {
    let mut unique: Vec<&String> = Vec::with_capacity(uuids.len());
    for u in uuids {
        if !unique.contains(&u) {
            unique.push(u);
        }
    }
    if unique.is_empty() {
        return Ok(Vec::new());
    }
    if unique.len() > 10_000 {
        return Err(StoreError(
            "at most 10000 uuids can be checked at once".into(),
        ));
    }
    let mut sql = Sql::new("SELECT q.u, q.i FROM (");
    for (i, u) in unique.iter().enumerate() {
        if i > 0 {
            sql.push(" UNION ALL ");
        }
        let p = sql.text(u);
        let n = sql.arg(Arg::Int(i as i64));
        sql.push(&format!(
            "SELECT CAST({p} AS TEXT) AS u, CAST({n} AS BIGINT) AS i"
        ));
    }
    let me = sql.text(user);
    let c = if clusters.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = clusters.iter().map(|c| sql.text(c)).collect();
        format!(" AND x.cluster_id IN ({})", list.join(", "))
    };
    sql.push(&format!(
        ") q WHERE NOT EXISTS (SELECT 1 FROM acct_units x WHERE x.uuid = q.u{c}) \
         OR EXISTS (SELECT 1 FROM acct_units x WHERE x.uuid = q.u{c} AND x.username <> {me} \
         AND x.project NOT IN (SELECT m.project FROM acct_memberships m WHERE m.username = {me})) \
         ORDER BY q.i"
    ));
    let rows = sql.query().fetch_all(db.pool()).await?;
    rows.iter()
        .map(|r| r.try_get::<String, _>("u").map_err(StoreError::from))
        .collect()
}

/// Whether `user` is in the admins table.
pub async fn is_admin(db: &Db, user: &str) -> Result<bool, StoreError> {
    let row = sqlx::query("SELECT COUNT(*) AS n FROM acct_admins WHERE username = $1")
        .bind(user)
        .fetch_one(db.pool())
        .await?;
    Ok(row.try_get::<i64, _>("n")? > 0)
}

/// Units to measure: running ones (started) and those that ended since `since`; at most
/// `limit`, most recently ended first.
pub async fn units_to_measure(db: &Db, since: i64, limit: usize) -> Result<Vec<Unit>, StoreError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {UNIT_COLUMNS} FROM acct_units WHERE started_at > 0 AND \
         (ended_at = 0 OR ended_at >= $1) ORDER BY ended_at = 0 DESC, ended_at DESC LIMIT $2"
    )))
    .bind(since)
    .bind(limit as i64)
    .fetch_all(db.pool())
    .await?;
    rows.iter().map(unit).collect()
}

mod write;
pub use write::{Mark, Measured, set_metrics, sync_config, upsert_units, upsert_units_marked};

#[cfg(test)]
#[path = "store/tests.rs"]
mod tests;
