//! Accounting store on SQLite (WAL, the default): 1 M units of 1,000 users, then one user's
//! page of `/api/v1/units` (the store query behind it: scope, window, order, limit) and the
//! ingest rate of 100 k jobs (the upsert path of push and slurmrestd ingest, in batches of
//! 1,000 per transaction as the slurmrestd ingest writes them).
//!
//! `cargo bench --bench accounting` (set HPCGATE_BENCH_UNITS for a smaller store).
//!
//! Measured 2026-11-24 on the shared 2-core build machine (load average 4-6 from other
//! builds), release: loading 1 M units ran at 5,036 units/s (199 s); one user's page of 100
//! units had a median of 3.29 ms; 100 k new jobs took 25.7 s median (≈ 3,900 jobs/s, the store
//! growing from 1.1 M to 2 M units). Each unit costs a read of its old row (for the roll-up
//! difference) and an insert into a table with six indexes; multi-row inserts would be the
//! next step if ingest rate matters.

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use hpcgate::accounting::store::{Scope, Unit, UnitFilter, units, upsert_units};
use hpcgate::db::{Db, DbConfig};

const USERS: usize = 1_000;
const BATCH: usize = 1_000;
const NOW: i64 = 1_800_000_000;

/// Unit `i` of a store where user `i % USERS` ran one job every ~2 h for 100 days.
fn unit(i: usize, prefix: &str) -> Unit {
    let user = i % USERS;
    let ended = NOW - ((i / USERS) as i64 * 8_640) % (100 * 86_400) - (i % 3600) as i64;
    Unit {
        cluster_id: if i.is_multiple_of(2) { "c1" } else { "c2" }.into(),
        resource_manager: "slurm".into(),
        uuid: format!("{prefix}{i}"),
        name: format!("job-{i}"),
        username: format!("u{user:04}"),
        project: format!("p{:03}", user / 10),
        groupname: String::new(),
        partition: "cpu".into(),
        state: "COMPLETED".into(),
        created_at: ended - 7200,
        started_at: ended - 3600,
        ended_at: ended,
        elapsed: 3600,
        alloc_cpus: 16,
        alloc_mem: 64 << 30,
        alloc_gpus: 0,
        alloc_nodes: 1,
        cpu_usage: Some(60.0),
        cpu_time: None,
        mem_usage: None,
        gpu_usage: None,
        energy_kwh: Some(0.4),
        emissions_g: Some(20.0),
    }
}

async fn ingest(db: &Db, from: usize, n: usize, prefix: &str) {
    let mut batch = Vec::with_capacity(BATCH);
    for i in from..from + n {
        batch.push(unit(i, prefix));
        if batch.len() == BATCH {
            upsert_units(db, &batch).await.expect("ingest");
            batch.clear();
        }
    }
    if !batch.is_empty() {
        upsert_units(db, &batch).await.expect("ingest");
    }
}

fn bench(c: &mut Criterion) {
    // `cargo test --all-targets` runs this once without `--bench`, unoptimised: keep it small.
    let benching = std::env::args().any(|a| a == "--bench");
    let total: usize = std::env::var("HPCGATE_BENCH_UNITS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if benching { 1_000_000 } else { 5_000 });
    let jobs = if benching { 100_000 } else { 1_000 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let db = rt
        .block_on(Db::open(&DbConfig::sqlite_in(dir.path())))
        .expect("database");
    let started = Instant::now();
    rt.block_on(ingest(&db, 0, total, "j"));
    let took = started.elapsed();
    eprintln!(
        "loaded {total} units of {USERS} users in {:.1} s: {:.0} units/s",
        took.as_secs_f64(),
        total as f64 / took.as_secs_f64()
    );

    // A month of one user's jobs (~360 of them), first page of 100, as Grafana asks.
    let filter = UnitFilter {
        from: NOW - 30 * 86_400,
        to: NOW,
        limit: 100,
        ..Default::default()
    };
    let (page, more) = rt
        .block_on(units(&db, Scope::User("u0042"), &filter))
        .expect("page");
    assert!(!page.is_empty());
    if benching {
        assert_eq!(page.len(), 100);
        assert!(more);
    }
    c.bench_function("units page: 100 of one user's month, 1M units", |b| {
        b.iter(|| rt.block_on(units(&db, Scope::User("u0042"), &filter)))
    });

    let mut g = c.benchmark_group("ingest");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(30));
    let mut round = 0;
    g.bench_function("100k new jobs, 1000 per transaction", |b| {
        b.iter(|| {
            round += 1;
            rt.block_on(ingest(&db, 0, jobs, &format!("r{round}-")));
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
