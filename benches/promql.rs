//! PromQL enforcement cost, for ten queries of the kind Grafana's job dashboards send:
//! `label` mode (parse, confine every selector, print) and `ownership` mode (parse, collect
//! the pinned job ids, work out the time range read, for retention pools). Target (issues
//! 8 and 11): median ≤ 20 µs per query.
//!
//! `cargo bench --bench promql`

use criterion::{Criterion, criterion_group, criterion_main};
use hpcgate::enforce::promql::{Enforced, earliest_read, enforce_query, parse, pinned_ids};

const QUERIES: &[&str] = &[
    "up",
    "rate(ceems_compute_unit_cpu_user_seconds_total{uuid=\"1481508\"}[2m])",
    "sum by (uuid) (rate(ceems_compute_unit_cpu_system_seconds_total{uuid=~\"1481508|1481509\"}[5m]))",
    "ceems_compute_unit_memory_used_bytes{uuid=\"1481508\"} / ceems_compute_unit_memory_total_bytes{uuid=\"1481508\"} * 100",
    "avg_over_time(DCGM_FI_DEV_GPU_UTIL{uuid=\"1481508\"}[$__rate_interval])",
    "sum(irate(ceems_ipmi_dcmi_current_watts_total[1m])) by (hostname)",
    "histogram_quantile(0.95, sum by (le) (rate(slurm_job_duration_seconds_bucket{project=\"p1\"}[10m])))",
    "topk(10, sum by (uuid) (rate(ceems_compute_unit_cpu_user_seconds_total[5m])))",
    "max_over_time(ceems_compute_unit_memory_used_bytes{uuid=\"1481508\"}[1h:1m] offset 1d)",
    "label_replace(ceems_compute_unit_gpu_index_flag{uuid=\"1481508\"}, \"gpu\", \"$1\", \"index\", \"(.*)\") or vector(0)",
];

fn bench(c: &mut Criterion) {
    let e = Enforced {
        label: "user",
        values: &["alice"],
    };
    // `$__rate_interval` is Grafana's; it substitutes it before sending.
    let queries: Vec<String> = QUERIES
        .iter()
        .map(|q| q.replace("$__rate_interval", "2m"))
        .collect();
    for q in &queries {
        enforce_query(q, &e).expect("every benchmark query is valid");
    }
    c.bench_function("promql_enforce_10_grafana_queries", |b| {
        b.iter(|| {
            for q in &queries {
                std::hint::black_box(enforce_query(std::hint::black_box(q), &e).ok());
            }
        })
    });
}

fn ownership(c: &mut Criterion) {
    let allow: Vec<String> = ["up", "ceems_ipmi_dcmi_current_watts_total"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let queries: Vec<String> = QUERIES
        .iter()
        .map(|q| q.replace("$__rate_interval", "2m"))
        .collect();
    c.bench_function("promql_ownership_10_grafana_queries", |b| {
        b.iter(|| {
            for q in &queries {
                let expr = parse(std::hint::black_box(q)).expect("valid");
                std::hint::black_box(pinned_ids(&expr, "uuid", &allow).ok());
                std::hint::black_box(earliest_read(&expr, 1_732_430_000.0, 1_732_433_600.0));
            }
        })
    });
}

criterion_group!(benches, bench, ownership);
criterion_main!(benches);
