//! Writes: units (upserted by cluster and uuid), their users, projects and memberships, the
//! usage roll-ups they touch (kept by adding each write's difference, so a write costs the
//! same whatever the history: the old row is read by its key, never the user's other units),
//! ingest watermarks, measured metrics, and the config's admins
//! and clusters. Each call is one transaction.

use std::collections::HashMap;

use super::{UNIT_COLUMNS, Unit, unit};
use crate::db::{Backend, Db, StoreError, now};

/// Makes the admins from the config the `config` admins (others, from other sources, stay).
pub async fn sync_config(
    db: &Db,
    admins: &[String],
    clusters: &[(String, String, f64)],
) -> Result<(), StoreError> {
    let mut tx = begin_write(db).await?;
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

/// Begins a write transaction that runs alone among accounting writes, so that the
/// read-old-row-then-add-difference of the roll-ups cannot interleave with another writer
/// (replicas on PostgreSQL, concurrent pushes): SQLite takes its write lock at `BEGIN
/// IMMEDIATE` (instead of failing to upgrade a read lock later); PostgreSQL takes a
/// transaction-scoped advisory lock.
async fn begin_write(db: &Db) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
    match db.backend() {
        Backend::Sqlite => Ok(db.pool().begin_with("BEGIN IMMEDIATE").await?),
        Backend::Postgres => {
            let mut tx = db.pool().begin().await?;
            // Any fixed key: "accounting writes".
            sqlx::query("SELECT pg_advisory_xact_lock(7271001) IS NULL AS x")
                .fetch_one(&mut *tx)
                .await?;
            Ok(tx)
        }
    }
}

/// A unit's share of its (cluster, user, project) roll-up.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Share {
    num_units: i64,
    walltime: i64,
    alloc_cputime: i64,
    alloc_gputime: i64,
    cpu_weighted: f64,
    cpu_weight: i64,
    gpu_weighted: f64,
    gpu_weight: i64,
    energy_kwh: f64,
    emissions_g: f64,
}

impl Share {
    fn of(u: &Unit) -> Share {
        let cputime = u.elapsed * u.alloc_cpus;
        let gputime = u.elapsed * u.alloc_gpus;
        Share {
            num_units: 1,
            walltime: u.elapsed,
            alloc_cputime: cputime,
            alloc_gputime: gputime,
            cpu_weighted: u.cpu_usage.map_or(0.0, |c| c * cputime as f64),
            cpu_weight: if u.cpu_usage.is_some() { cputime } else { 0 },
            gpu_weighted: u.gpu_usage.map_or(0.0, |g| g * gputime as f64),
            gpu_weight: if u.gpu_usage.is_some() { gputime } else { 0 },
            energy_kwh: u.energy_kwh.unwrap_or(0.0),
            emissions_g: u.emissions_g.unwrap_or(0.0),
        }
    }

    fn add(&mut self, o: &Share, sign: i64) {
        self.num_units += sign * o.num_units;
        self.walltime += sign * o.walltime;
        self.alloc_cputime += sign * o.alloc_cputime;
        self.alloc_gputime += sign * o.alloc_gputime;
        self.cpu_weighted += sign as f64 * o.cpu_weighted;
        self.cpu_weight += sign * o.cpu_weight;
        self.gpu_weighted += sign as f64 * o.gpu_weighted;
        self.gpu_weight += sign * o.gpu_weight;
        self.energy_kwh += sign as f64 * o.energy_kwh;
        self.emissions_g += sign as f64 * o.emissions_g;
    }
}

/// Roll-up differences of one transaction, by (cluster, user, project), with the manager.
#[derive(Default)]
struct Deltas(HashMap<(String, String, String), (String, Share)>);

impl Deltas {
    fn add(&mut self, u: &Unit, sign: i64) {
        let e = self
            .0
            .entry((u.cluster_id.clone(), u.username.clone(), u.project.clone()))
            .or_insert_with(|| (u.resource_manager.clone(), Share::default()));
        e.1.add(&Share::of(u), sign);
    }

    /// Adds the differences to the roll-ups; rows left without units go.
    async fn apply(self, conn: &mut sqlx::AnyConnection, t: i64) -> Result<(), StoreError> {
        for ((cluster, user, project), (manager, d)) in self.0 {
            if d == Share::default() {
                continue;
            }
            sqlx::query(
                "INSERT INTO acct_usage (cluster_id, username, project, resource_manager, \
                 num_units, walltime, alloc_cputime, alloc_gputime, cpu_usage_weighted, \
                 cpu_weight, gpu_usage_weighted, gpu_weight, energy_kwh, emissions_g, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
                 ON CONFLICT (cluster_id, username, project) DO UPDATE SET \
                 resource_manager = excluded.resource_manager, \
                 num_units = acct_usage.num_units + excluded.num_units, \
                 walltime = acct_usage.walltime + excluded.walltime, \
                 alloc_cputime = acct_usage.alloc_cputime + excluded.alloc_cputime, \
                 alloc_gputime = acct_usage.alloc_gputime + excluded.alloc_gputime, \
                 cpu_usage_weighted = acct_usage.cpu_usage_weighted + excluded.cpu_usage_weighted, \
                 cpu_weight = acct_usage.cpu_weight + excluded.cpu_weight, \
                 gpu_usage_weighted = acct_usage.gpu_usage_weighted + excluded.gpu_usage_weighted, \
                 gpu_weight = acct_usage.gpu_weight + excluded.gpu_weight, \
                 energy_kwh = acct_usage.energy_kwh + excluded.energy_kwh, \
                 emissions_g = acct_usage.emissions_g + excluded.emissions_g, \
                 updated_at = excluded.updated_at",
            )
            .bind(&cluster)
            .bind(&user)
            .bind(&project)
            .bind(&manager)
            .bind(d.num_units)
            .bind(d.walltime)
            .bind(d.alloc_cputime)
            .bind(d.alloc_gputime)
            .bind(d.cpu_weighted)
            .bind(d.cpu_weight)
            .bind(d.gpu_weighted)
            .bind(d.gpu_weight)
            .bind(d.energy_kwh)
            .bind(d.emissions_g)
            .bind(t)
            .execute(&mut *conn)
            .await?;
            if d.num_units < 0 {
                sqlx::query(
                    "DELETE FROM acct_usage WHERE cluster_id = $1 AND username = $2 \
                     AND project = $3 AND num_units <= 0",
                )
                .bind(&cluster)
                .bind(&user)
                .bind(&project)
                .execute(&mut *conn)
                .await?;
            }
        }
        Ok(())
    }
}

/// The stored unit with this key, if any.
async fn stored(
    conn: &mut sqlx::AnyConnection,
    cluster: &str,
    uuid: &str,
) -> Result<Option<Unit>, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {UNIT_COLUMNS} FROM acct_units WHERE cluster_id = $1 AND uuid = $2"
    )))
    .bind(cluster)
    .bind(uuid)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(unit).transpose()
}

/// Inserts or replaces units by (cluster, uuid) in one transaction, records their users,
/// projects and memberships, and updates the usage roll-ups. Metrics absent from a unit keep
/// their stored values (pushes of job records do not erase measured metrics). Returns how
/// many units were written.
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
    let mut tx = begin_write(db).await?;
    let t = now();
    let mut deltas = Deltas::default();
    let mut members: std::collections::HashSet<(&str, &str)> = Default::default();
    for u in units {
        let mut new = u.clone();
        if let Some(old) = stored(&mut tx, &u.cluster_id, &u.uuid).await? {
            new.cpu_usage = new.cpu_usage.or(old.cpu_usage);
            new.cpu_time = new.cpu_time.or(old.cpu_time);
            new.mem_usage = new.mem_usage.or(old.mem_usage);
            new.gpu_usage = new.gpu_usage.or(old.gpu_usage);
            new.energy_kwh = new.energy_kwh.or(old.energy_kwh);
            new.emissions_g = new.emissions_g.or(old.emissions_g);
            deltas.add(&old, -1);
        }
        deltas.add(&new, 1);
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
             alloc_nodes = excluded.alloc_nodes, cpu_usage = excluded.cpu_usage, \
             cpu_time = excluded.cpu_time, mem_usage = excluded.mem_usage, \
             gpu_usage = excluded.gpu_usage, energy_kwh = excluded.energy_kwh, \
             emissions_g = excluded.emissions_g, updated_at = excluded.updated_at"
        )))
        .bind(&new.cluster_id)
        .bind(&new.resource_manager)
        .bind(&new.uuid)
        .bind(&new.name)
        .bind(&new.username)
        .bind(&new.project)
        .bind(&new.groupname)
        .bind(&new.partition)
        .bind(&new.state)
        .bind(new.created_at)
        .bind(new.started_at)
        .bind(new.ended_at)
        .bind(new.elapsed)
        .bind(new.alloc_cpus)
        .bind(new.alloc_mem)
        .bind(new.alloc_gpus)
        .bind(new.alloc_nodes)
        .bind(new.cpu_usage)
        .bind(new.cpu_time)
        .bind(new.mem_usage)
        .bind(new.gpu_usage)
        .bind(new.energy_kwh)
        .bind(new.emissions_g)
        .bind(t)
        .execute(&mut *tx)
        .await?;
        members.insert((u.username.as_str(), u.project.as_str()));
    }
    for (user, project) in members {
        for (table, name) in [("acct_users", user), ("acct_projects", project)] {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO {table} (name, created_at) VALUES ($1, $2) \
                 ON CONFLICT (name) DO NOTHING"
            )))
            .bind(name)
            .bind(t)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "INSERT INTO acct_memberships (project, username, group_admin, created_at) \
             VALUES ($1, $2, 0, $3) ON CONFLICT (project, username) DO NOTHING",
        )
        .bind(project)
        .bind(user)
        .bind(t)
        .execute(&mut *tx)
        .await?;
    }
    deltas.apply(&mut tx, t).await?;
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
    let mut tx = begin_write(db).await?;
    let t = now();
    let mut deltas = Deltas::default();
    for (u, m) in updates {
        let Some(old) = stored(&mut tx, &u.cluster_id, &u.uuid).await? else {
            continue;
        };
        let mut new = old.clone();
        new.cpu_usage = m.cpu_usage.or(old.cpu_usage);
        new.mem_usage = m.mem_usage.or(old.mem_usage);
        new.gpu_usage = m.gpu_usage.or(old.gpu_usage);
        new.energy_kwh = m.energy_kwh.or(old.energy_kwh);
        new.emissions_g = m.emissions_g.or(old.emissions_g);
        deltas.add(&old, -1);
        deltas.add(&new, 1);
        sqlx::query(
            "UPDATE acct_units SET cpu_usage = $1, mem_usage = $2, gpu_usage = $3, \
             energy_kwh = $4, emissions_g = $5, updated_at = $6 \
             WHERE cluster_id = $7 AND uuid = $8",
        )
        .bind(new.cpu_usage)
        .bind(new.mem_usage)
        .bind(new.gpu_usage)
        .bind(new.energy_kwh)
        .bind(new.emissions_g)
        .bind(t)
        .bind(&u.cluster_id)
        .bind(&u.uuid)
        .execute(&mut *tx)
        .await?;
    }
    deltas.apply(&mut tx, t).await?;
    tx.commit().await?;
    Ok(())
}
