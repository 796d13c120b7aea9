//! Aggregate metrics from a real Prometheus (tests/servers/prometheus.sh) holding backfilled
//! series of known values: CPU usage, energy and emissions of units match the hand-computed
//! numbers, in the units and in the usage roll-ups.

mod common;

use std::fmt::Write as _;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// A Prometheus instance started after a backfill, stopped on drop.
struct Prom {
    dir: tempfile::TempDir,
    url: String,
}

fn script() -> String {
    format!("{}/tests/servers/prometheus.sh", env!("CARGO_MANIFEST_DIR"))
}

impl Prom {
    fn start_with(openmetrics: &str) -> Prom {
        let dir = tempfile::Builder::new()
            .prefix("hpcgate-prometheus-")
            .tempdir_in("/tmp")
            .unwrap();
        let file = dir.path().join("backfill.om");
        std::fs::write(&file, openmetrics).unwrap();
        for args in [
            vec![
                "backfill",
                dir.path().to_str().unwrap(),
                "acct",
                file.to_str().unwrap(),
            ],
            vec!["start", dir.path().to_str().unwrap(), "acct"],
        ] {
            let out = Command::new("bash")
                .arg(script())
                .args(&args)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "prometheus.sh {args:?} failed (tests/run installs it):\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let env = std::fs::read_to_string(dir.path().join("env")).unwrap();
        let url = env
            .lines()
            .find_map(|l| l.strip_prefix("PROM_ACCT_URL="))
            .unwrap()
            .trim_matches(['\'', '"'])
            .to_string();
        Prom { dir, url }
    }
}

impl Drop for Prom {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .args(["stop", self.dir.path().to_str().unwrap(), "acct"])
            .output();
    }
}

#[tokio::test]
async fn energy_and_emissions_from_prometheus_match_hand_computed_values() {
    let now = unix_now();
    // Two days ago, on the hour: old enough for backfilled blocks.
    let t0 = (now - 2 * 86_400) / 3600 * 3600;
    // m1 ran an hour at 250 W and 40 % CPU; m2 half an hour at 100 W and 90 % CPU.
    let mut om = String::new();
    for (metric, series) in [
        (
            "unit_power_watts",
            [("m1", 250.0, 3600), ("m2", 100.0, 1800)],
        ),
        (
            "unit_cpu_usage_percent",
            [("m1", 40.0, 3600), ("m2", 90.0, 1800)],
        ),
    ] {
        writeln!(om, "# TYPE {metric} gauge").unwrap();
        for (uuid, value, secs) in series {
            for t in (t0..=t0 + secs).step_by(60) {
                writeln!(om, "{metric}{{uuid=\"{uuid}\"}} {value} {t}").unwrap();
            }
        }
    }
    om.push_str("# EOF\n");
    let prom = Prom::start_with(&om);

    let gw = Gateway::start(Setup {
        body: format!(
            "[accounting]\ningest_users = [\"ingest\"]\n\n\
             [accounting.clusters.slurm-0]\nemission_factor = 50.0\n\n\
             [accounting.metrics]\npool = \"prom\"\ninterval = \"1s\"\nlookback = \"3d\"\n\n\
             [accounting.metrics.queries]\n\
             cpu_usage = 'avg_over_time(unit_cpu_usage_percent{{uuid=\"{{uuid}}\"}}[{{range}}])'\n\
             power_watts = 'avg_over_time(unit_power_watts{{uuid=\"{{uuid}}\"}}[{{range}}])'\n\n\
             [pools.prom]\nbackends = [\"{}\"]\n\n\
             [pools.acct]\nbackends = [\"unix:state/accounting.sock\"]\n\n\
             [[routes]]\nname = \"accounting\"\npath_prefix = \"/api/v1\"\npool = \"acct\"\n\
             kind = \"accounting\"\nauthenticators = [\"local\"]\n",
            prom.url
        ),
        extra_users: vec![("ingest".into(), vec![])],
        ..Default::default()
    })
    .await;
    let unit = |uuid: &str, secs: i64| {
        json!({
            "cluster_id": "slurm-0", "uuid": uuid, "username": "bob", "project": "physics",
            "state": "COMPLETED", "created_at": t0 - 60, "started_at": t0,
            "ended_at": t0 + secs, "allocation": { "cpus": 2 },
        })
    };
    let r = gw
        .client(false)
        .post(gw.url("/api/v1/units"))
        .header("authorization", basic("ingest", "ingest-pw"))
        .json(&json!([unit("m1", 3600), unit("m2", 1800)]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    let path = format!("/api/v1/units?from={}&to={}", t0, t0 + 7200);
    let deadline = Instant::now() + Duration::from_secs(30);
    let units = loop {
        let v: Value = gw
            .client(false)
            .get(gw.url(&path))
            .header("authorization", basic("bob", BOB_PW))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let units = v["data"].as_array().unwrap().clone();
        if units.len() == 2
            && units
                .iter()
                .all(|u| u["total_cpu_energy_usage_kwh"]["total"].is_number())
        {
            break units;
        }
        assert!(
            Instant::now() < deadline,
            "no metrics yet: {v}\n{}",
            gw.log_text()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let close = |v: &Value, want: f64| (v.as_f64().unwrap() - want).abs() < 1e-9;
    // m1: 250 W × 3600 s = 0.25 kWh; × 50 g/kWh = 12.5 g. m2: 100 W × 1800 s = 0.05 kWh, 2.5 g.
    for (u, kwh, grams, cpu) in [(&units[0], 0.25, 12.5, 40.0), (&units[1], 0.05, 2.5, 90.0)] {
        assert!(close(&u["total_cpu_energy_usage_kwh"]["total"], kwh), "{u}");
        assert!(close(&u["total_cpu_emissions_gms"]["total"], grams), "{u}");
        assert!(close(&u["avg_cpu_usage"]["global"], cpu), "{u}");
    }
    // The roll-up: 0.3 kWh, 15 g, CPU use weighted by CPU time: (40×7200 + 90×3600) / 10800.
    let v: Value = gw
        .client(false)
        .get(gw.url("/api/v1/usage/global"))
        .header("authorization", basic("bob", BOB_PW))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let row = &v["data"][0];
    assert!(
        close(&row["total_cpu_energy_usage_kwh"]["total"], 0.3),
        "{v}"
    );
    assert!(close(&row["total_cpu_emissions_gms"]["total"], 15.0), "{v}");
    let want_cpu = (40.0 * 7200.0 + 90.0 * 3600.0) / 10800.0;
    assert!(close(&row["avg_cpu_usage"]["global"], want_cpu), "{v}");
}
