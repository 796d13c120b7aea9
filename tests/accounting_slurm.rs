//! Pull ingest from a real Slurm 22.05 (tests/servers/slurm.sh): jobs submitted with sbatch
//! appear as units with Slurm's fields; the gateway is killed with SIGKILL in the middle of
//! ingest passes and restarted on the same state, and in the end every job is there once.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn slurm_cmd(slurm: &RealServer, args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .env("SLURM_CONF", slurm.get("SLURM_CONF"))
        .current_dir(slurm.get("SLURM_WORK_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn body(slurm: &RealServer) -> String {
    format!(
        "[accounting]\n\n\
         [accounting.clusters.hpc]\nemission_factor = 50.0\n\n\
         [accounting.clusters.hpc.slurmrestd]\nurl = \"{}\"\nuser = \"root\"\n\
         jwt_key_file = \"{}\"\ninterval = \"1s\"\nbackfill = \"1h\"\nbatch_size = 1\n\n\
         [pools.acct]\nbackends = [\"unix:state/accounting.sock\"]\n\n\
         [[routes]]\nname = \"accounting\"\npath_prefix = \"/api/v1\"\npool = \"acct\"\n\
         kind = \"accounting\"\nauthenticators = [\"local\"]\n",
        slurm.get("SLURMRESTD_URL"),
        slurm.get("SLURM_JWT_KEY"),
    )
}

/// Every unit alice (an admin) sees, running ones included.
async fn all_units(gw: &Gateway) -> Vec<Value> {
    let r = gw
        .client(false)
        .get(gw.url("/api/v1/units/admin?running"))
        .header("authorization", basic("alice", ALICE_PW))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    v["data"].as_array().unwrap().clone()
}

/// Restarts the gateway's process on the same directory (state, database, ports).
async fn restart(gw: &mut Gateway) {
    let child = Command::new(bin())
        .args(["serve", "--allow-root", "--config"])
        .arg(gw.dir.path().join("hpcgate.toml"))
        .stdout(Stdio::null())
        .stderr(
            std::fs::OpenOptions::new()
                .append(true)
                .open(&gw.log)
                .unwrap(),
        )
        .spawn()
        .unwrap();
    gw.child = Some(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while reqwest::get(gw.plain_url("/-/ready"))
        .await
        .map(|r| r.status().as_u16())
        .ok()
        != Some(200)
    {
        assert!(
            Instant::now() < deadline,
            "gateway did not restart:\n{}",
            gw.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn batch_lines(gw: &Gateway) -> usize {
    gw.log_text()
        .lines()
        .filter(|l| l.contains("slurm ingest batch written"))
        .count()
}

#[tokio::test]
async fn slurm_jobs_are_ingested_once_across_kill_9() {
    let slurm = RealServer::start("slurm");
    // Jobs of two users: alice's and bob's, in Slurm account hpc.
    let mut ids = Vec::new();
    for (i, user) in [
        "alice", "bob", "alice", "bob", "alice", "bob", "alice", "bob",
    ]
    .iter()
    .enumerate()
    {
        let out = slurm_cmd(
            &slurm,
            &[
                "sbatch",
                "--parsable",
                &format!("--uid={user}"),
                &format!("--gid={user}"),
                "-A",
                "hpc",
                "-p",
                "debug",
                "-J",
                &format!("acct-{i}"),
                "-o",
                "/dev/null",
                "--wrap",
                "true",
            ],
        );
        ids.push(out.split(';').next().unwrap().to_string());
    }
    // Wait until slurmdbd has them all finished.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = slurm_cmd(&slurm, &["sacct", "-n", "-X", "-P", "-o", "JobID,State"]);
        let done = ids
            .iter()
            .filter(|id| out.lines().any(|l| l == format!("{id}|COMPLETED")))
            .count();
        if done == ids.len() {
            break;
        }
        assert!(Instant::now() < deadline, "jobs did not complete: {out}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    let mut gw = Gateway::start(Setup {
        body: body(&slurm),
        ..Default::default()
    })
    .await;
    // Kill -9 as soon as a pass has written its first batch (of 8), three times over.
    let mut killed_mid_pass = 0;
    for round in 0..3 {
        let before = batch_lines(&gw);
        let deadline = Instant::now() + Duration::from_secs(30);
        while batch_lines(&gw) == before {
            assert!(
                Instant::now() < deadline,
                "no ingest batch:\n{}",
                gw.log_text()
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let mut child = gw.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        let written = batch_lines(&gw) - before;
        if written < ids.len() {
            killed_mid_pass += 1;
        }
        eprintln!("round {round}: killed after {written} batch(es) of this pass");
        restart(&mut gw).await;
    }
    // Let passes run to the end, then every job is there, once, with Slurm's fields.
    let deadline = Instant::now() + Duration::from_secs(30);
    let units = loop {
        let units = all_units(&gw).await;
        if units.len() >= ids.len() {
            break units;
        }
        assert!(
            Instant::now() < deadline,
            "units: {units:?}\n{}",
            gw.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut got: Vec<&str> = units.iter().map(|u| u["uuid"].as_str().unwrap()).collect();
    got.sort();
    let mut want: Vec<&str> = ids.iter().map(String::as_str).collect();
    want.sort();
    assert_eq!(got, want, "every job once, no other");
    for u in &units {
        let i: usize = u["name"].as_str().unwrap()["acct-".len()..]
            .parse()
            .unwrap();
        let user = if i.is_multiple_of(2) { "alice" } else { "bob" };
        assert_eq!(u["username"], user, "{u}");
        assert_eq!(u["project"], "hpc");
        assert_eq!(u["cluster_id"], "hpc");
        assert_eq!(u["state"], "COMPLETED");
        assert_eq!(u["tags"]["partition"], "debug");
        assert!(u["allocation"]["cpus"].as_i64().unwrap() >= 1);
        assert!(u["ended_at_ts"].as_i64().unwrap() >= u["started_at_ts"].as_i64().unwrap());
    }
    // bob sees his jobs and, as a member of account hpc, alice's too.
    let r = gw
        .client(false)
        .get(gw.url("/api/v1/usage/global"))
        .header("authorization", basic("bob", BOB_PW))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    let total: i64 = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["num_units"].as_i64().unwrap())
        .sum();
    assert_eq!(total, ids.len() as i64, "{v}");
    eprintln!("killed in the middle of a pass {killed_mid_pass} time(s) out of 3");
}
