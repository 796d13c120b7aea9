//! Store tests on a fresh SQLite file (the integration tests run the same queries on
//! PostgreSQL through the gateway).

use super::*;
use crate::db::{Db, DbConfig};

pub(crate) async fn fresh() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&DbConfig::sqlite_in(dir.path())).await.unwrap();
    (dir, db)
}

pub(crate) fn unit(cluster: &str, uuid: &str, user: &str, project: &str, ended: i64) -> Unit {
    Unit {
        cluster_id: cluster.into(),
        resource_manager: "slurm".into(),
        uuid: uuid.into(),
        name: format!("job-{uuid}"),
        username: user.into(),
        project: project.into(),
        groupname: String::new(),
        partition: "cpu".into(),
        state: "COMPLETED".into(),
        created_at: ended - 200,
        started_at: ended - 100,
        ended_at: ended,
        elapsed: 100,
        alloc_cpus: 4,
        alloc_mem: 1 << 30,
        alloc_gpus: 0,
        alloc_nodes: 1,
        cpu_usage: Some(50.0),
        cpu_time: None,
        mem_usage: None,
        gpu_usage: None,
        energy_kwh: Some(0.5),
        emissions_g: Some(25.0),
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn foreign_units_are_those_neither_mine_nor_my_projects() {
    let (_d, db) = fresh().await;
    upsert_units(
        &db,
        &[
            unit("c1", "1", "alice", "physics", 1000),
            unit("c1", "2", "bob", "physics", 1000),
            unit("c1", "3", "carol", "chemistry", 1000),
            // The same job id on another cluster, of someone else: ambiguous, so foreign.
            unit("c1", "4", "alice", "physics", 1000),
            unit("c2", "4", "carol", "chemistry", 1000),
        ],
    )
    .await
    .unwrap();
    // alice is in physics (by her own unit): bob's physics job is hers to see.
    let asked = strings(&["3", "1", "2", "nope", "1", "4"]);
    assert_eq!(
        foreign_units(&db, "alice", &asked).await.unwrap(),
        strings(&["3", "nope", "4"])
    );
    // carol owns 3, and 4 on c2, but not 4 on c1.
    assert_eq!(
        foreign_units(&db, "carol", &strings(&["3", "4"]))
            .await
            .unwrap(),
        strings(&["4"])
    );
    assert_eq!(
        foreign_units_in(&db, "carol", &strings(&["c2"]), &strings(&["3", "4"]))
            .await
            .unwrap(),
        strings(&["3"])
    );
    assert!(foreign_units(&db, "alice", &[]).await.unwrap().is_empty());
    // A name that looks like SQL is only a value.
    assert_eq!(
        foreign_units(&db, "x' OR '1'='1", &strings(&["1"]))
            .await
            .unwrap(),
        strings(&["1"])
    );
}

#[tokio::test]
async fn upsert_is_idempotent_and_keeps_measured_metrics() {
    let (_d, db) = fresh().await;
    let u = unit("c1", "7", "alice", "physics", 5000);
    upsert_units(&db, &[u.clone(), unit("c1", "8", "alice", "physics", 5000)])
        .await
        .unwrap();
    let mut again = u.clone();
    again.state = "FAILED".into();
    again.energy_kwh = None;
    upsert_units(&db, &[again]).await.unwrap();
    let f = UnitFilter {
        from: 0,
        to: 10_000,
        limit: 100,
        ..Default::default()
    };
    let (rows, more) = units(&db, Scope::User("alice"), &f).await.unwrap();
    assert!(!more);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].state, "FAILED");
    assert_eq!(
        rows[0].energy_kwh,
        Some(0.5),
        "a push without energy keeps it"
    );
    let usage = crate::accounting::directory::usage_global(&db, Scope::All, &f)
        .await
        .unwrap();
    assert_eq!(usage.len(), 1);
    assert_eq!(usage[0].num_units, 2);
    assert_eq!(usage[0].alloc_cputime, 800);
    assert!((usage[0].energy_kwh - 1.0).abs() < 1e-9);
}

async fn usage(db: &Db) -> Vec<(String, i64, i64, f64)> {
    let all = UnitFilter {
        from: 0,
        to: i64::MAX / 2,
        limit: 100,
        ..Default::default()
    };
    crate::accounting::directory::usage_global(db, Scope::All, &all)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.project, r.num_units, r.alloc_cputime, r.energy_kwh))
        .collect()
}

#[tokio::test]
async fn roll_ups_follow_rewrites_moves_and_measurements() {
    let (_d, db) = fresh().await;
    let a = unit("c1", "1", "alice", "physics", 1000);
    let b = unit("c1", "2", "alice", "physics", 1000);
    upsert_units(&db, &[a.clone(), b.clone()]).await.unwrap();
    // Written again: no change.
    upsert_units(&db, std::slice::from_ref(&a)).await.unwrap();
    assert_eq!(usage(&db).await, [("physics".into(), 2, 800, 1.0)]);
    // Moved to another project: one roll-up loses it, the other gains it.
    let mut moved = b.clone();
    moved.project = "chemistry".into();
    upsert_units(&db, &[moved]).await.unwrap();
    assert_eq!(
        usage(&db).await,
        [
            ("chemistry".into(), 1, 400, 0.5),
            ("physics".into(), 1, 400, 0.5)
        ]
    );
    // Measured energy replaces what was there.
    set_metrics(
        &db,
        &[(
            &a,
            Measured {
                energy_kwh: Some(2.0),
                ..Default::default()
            },
        )],
    )
    .await
    .unwrap();
    assert_eq!(
        usage(&db).await,
        [
            ("chemistry".into(), 1, 400, 0.5),
            ("physics".into(), 1, 400, 2.0)
        ]
    );
}
