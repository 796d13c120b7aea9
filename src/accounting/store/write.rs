//! Writes: units (upserted by cluster and uuid), their users, projects and memberships, the
//! usage roll-ups they touch, ingest watermarks, measured metrics, and the config's admins
//! and clusters. Each call is one transaction.

use super::{UNIT_COLUMNS, Unit};
use crate::store::{Db, StoreError, now};

/// Makes the admins from the config the `config` admins (others, from other sources, stay).
pub async fn sync_config(
    db: &Db,
    admins: &[String],
    clusters: &[(String, String, f64)],
) -> Result<(), StoreError> {
    let mut tx = db.pool().begin().await?;
    sqlx::query("DELETE FROM acct_admins WHERE source = 'config'")
        .execute(&mut *tx)
        .await?;
    for a in admins {
        sqlx::query(
            "INSERT INTO acct_admins (username, source) VALUES ($1, 'config') \
             ON CONFLICT (username) DO NOTHING",
        )
        .bind(a)
        .execute(&mut *tx)
        .await?;
    }
    for (id, manager, factor) in clusters {
        sqlx::query(
            "INSERT INTO acct_clusters (id, manager, emission_factor) VALUES ($1, $2, $3) \
             ON CONFLICT (id) DO UPDATE SET manager = excluded.manager, \
             emission_factor = excluded.emission_factor",
        )
        .bind(id)
        .bind(manager)
        .bind(*factor)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Inserts or replaces units by (cluster, uuid) in one transaction, records their users,
/// projects and memberships, and recomputes the usage roll-ups they touch. Metrics absent
/// from a unit keep their stored values (pushes of job records do not erase measured
/// metrics). Returns how many units were written.
pub async fn upsert_units(db: &Db, units: &[Unit]) -> Result<usize, StoreError> {
    upsert_units_marked(db, units, None).await
}

/// An ingest watermark: (cluster, source, value).
pub type Mark<'a> = (&'a str, &'a str, i64);

/// [`upsert_units`], moving an ingest watermark in the same transaction: after a crash,
/// either both the units and the mark are written or neither is.
pub async fn upsert_units_marked(
    db: &Db,
    units: &[Unit],
    mark: Option<Mark<'_>>,
) -> Result<usize, StoreError> {
    let mut tx = db.pool().begin().await?;
    let t = now();
    let mut touched: Vec<(&str, &str, &str)> = Vec::new();
    for u in units {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO acct_units ({UNIT_COLUMNS}, updated_at) VALUES ($1, $2, $3, $4, $5, \
             $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, \
             $23, $24) ON CONFLICT (cluster_id, uuid) DO UPDATE SET \
             resource_manager = excluded.resource_manager, name = excluded.name, \
             username = excluded.username, project = excluded.project, \
             groupname = excluded.groupname, partition_name = excluded.partition_name, \
             state = excluded.state, created_at = excluded.created_at, \
             started_at = excluded.started_at, ended_at = excluded.ended_at, \
             elapsed = excluded.elapsed, alloc_cpus = excluded.alloc_cpus, \
             alloc_mem = excluded.alloc_mem, alloc_gpus = excluded.alloc_gpus, \
             alloc_nodes = excluded.alloc_nodes, \
             cpu_usage = COALESCE(excluded.cpu_usage, acct_units.cpu_usage), \
             cpu_time = COALESCE(excluded.cpu_time, acct_units.cpu_time), \
             mem_usage = COALESCE(excluded.mem_usage, acct_units.mem_usage), \
             gpu_usage = COALESCE(excluded.gpu_usage, acct_units.gpu_usage), \
             energy_kwh = COALESCE(excluded.energy_kwh, acct_units.energy_kwh), \
             emissions_g = COALESCE(excluded.emissions_g, acct_units.emissions_g), \
             updated_at = excluded.updated_at"
        )))
        .bind(&u.cluster_id)
        .bind(&u.resource_manager)
        .bind(&u.uuid)
        .bind(&u.name)
        .bind(&u.username)
        .bind(&u.project)
        .bind(&u.groupname)
        .bind(&u.partition)
        .bind(&u.state)
        .bind(u.created_at)
        .bind(u.started_at)
        .bind(u.ended_at)
        .bind(u.elapsed)
        .bind(u.alloc_cpus)
        .bind(u.alloc_mem)
        .bind(u.alloc_gpus)
        .bind(u.alloc_nodes)
        .bind(u.cpu_usage)
        .bind(u.cpu_time)
        .bind(u.mem_usage)
        .bind(u.gpu_usage)
        .bind(u.energy_kwh)
        .bind(u.emissions_g)
        .bind(t)
        .execute(&mut *tx)
        .await?;
        let key = (
            u.cluster_id.as_str(),
            u.username.as_str(),
            u.project.as_str(),
        );
        if !touched.contains(&key) {
            touched.push(key);
        }
    }
    // A unit that moved to another user or project leaves its old roll-up stale until that
    // one is touched again; job records do not change owner in practice.
    for (cluster, user, project) in &touched {
        for (table, col) in [("acct_users", user), ("acct_projects", project)] {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO {table} (name, created_at) VALUES ($1, $2) \
                 ON CONFLICT (name) DO NOTHING"
            )))
            .bind(*col)
            .bind(t)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "INSERT INTO acct_memberships (project, username, group_admin, created_at) \
             VALUES ($1, $2, 0, $3) ON CONFLICT (project, username) DO NOTHING",
        )
        .bind(*project)
        .bind(*user)
        .bind(t)
        .execute(&mut *tx)
        .await?;
        rollup(&mut tx, cluster, user, project, t).await?;
    }
    if let Some((cluster, source, value)) = mark {
        sqlx::query(
            "INSERT INTO acct_watermarks (cluster_id, source, value, updated_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (cluster_id, source) DO UPDATE SET \
             value = excluded.value, updated_at = excluded.updated_at",
        )
        .bind(cluster)
        .bind(source)
        .bind(value)
        .bind(t)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(units.len())
}

/// Recomputes the usage roll-up of one (cluster, user, project) from its units.
async fn rollup(
    conn: &mut sqlx::AnyConnection,
    cluster: &str,
    user: &str,
    project: &str,
    t: i64,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM acct_usage WHERE cluster_id = $1 AND username = $2 AND project = $3")
        .bind(cluster)
        .bind(user)
        .bind(project)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
            "INSERT INTO acct_usage (cluster_id, username, project, resource_manager, \
             num_units, walltime, alloc_cputime, alloc_gputime, cpu_usage_weighted, cpu_weight, \
             gpu_usage_weighted, gpu_weight, energy_kwh, emissions_g, updated_at) \
             SELECT cluster_id, username, project, MAX(resource_manager), COUNT(*), \
             CAST(SUM(elapsed) AS BIGINT), CAST(SUM(elapsed * alloc_cpus) AS BIGINT), \
             CAST(SUM(elapsed * alloc_gpus) AS BIGINT), \
             CAST(COALESCE(SUM(cpu_usage * elapsed * alloc_cpus), 0) AS DOUBLE PRECISION), \
             CAST(SUM(CASE WHEN cpu_usage IS NULL THEN 0 ELSE elapsed * alloc_cpus END) AS BIGINT), \
             CAST(COALESCE(SUM(gpu_usage * elapsed * alloc_gpus), 0) AS DOUBLE PRECISION), \
             CAST(SUM(CASE WHEN gpu_usage IS NULL THEN 0 ELSE elapsed * alloc_gpus END) AS BIGINT), \
             CAST(COALESCE(SUM(energy_kwh), 0) AS DOUBLE PRECISION), \
             CAST(COALESCE(SUM(emissions_g), 0) AS DOUBLE PRECISION), $4 \
             FROM acct_units WHERE cluster_id = $1 AND username = $2 AND project = $3 \
             GROUP BY cluster_id, username, project",
        )
        .bind(cluster)
        .bind(user)
        .bind(project)
        .bind(t)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Measured metrics of one unit (`None`: not measured, keep what is stored).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Measured {
    pub cpu_usage: Option<f64>,
    pub mem_usage: Option<f64>,
    pub gpu_usage: Option<f64>,
    pub energy_kwh: Option<f64>,
    pub emissions_g: Option<f64>,
}

/// Writes measured metrics of units (and their roll-ups) in one transaction.
pub async fn set_metrics(db: &Db, updates: &[(&Unit, Measured)]) -> Result<(), StoreError> {
    let mut tx = db.pool().begin().await?;
    let t = now();
    let mut touched: Vec<(&str, &str, &str)> = Vec::new();
    for (u, m) in updates {
        sqlx::query(
            "UPDATE acct_units SET cpu_usage = COALESCE($1, cpu_usage), \
             mem_usage = COALESCE($2, mem_usage), gpu_usage = COALESCE($3, gpu_usage), \
             energy_kwh = COALESCE($4, energy_kwh), emissions_g = COALESCE($5, emissions_g), \
             updated_at = $6 WHERE cluster_id = $7 AND uuid = $8",
        )
        .bind(m.cpu_usage)
        .bind(m.mem_usage)
        .bind(m.gpu_usage)
        .bind(m.energy_kwh)
        .bind(m.emissions_g)
        .bind(t)
        .bind(&u.cluster_id)
        .bind(&u.uuid)
        .execute(&mut *tx)
        .await?;
        let key = (
            u.cluster_id.as_str(),
            u.username.as_str(),
            u.project.as_str(),
        );
        if !touched.contains(&key) {
            touched.push(key);
        }
    }
    for (cluster, user, project) in touched {
        rollup(&mut tx, cluster, user, project, t).await?;
    }
    tx.commit().await?;
    Ok(())
}
