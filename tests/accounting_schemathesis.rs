//! The accounting API against its own OpenAPI document, by schemathesis (property-based API
//! testing, installed by tests/servers/schemathesis.sh): through the gateway, as a normal user
//! and as an admin, every operation gets generated requests, and every answer must be no
//! server error, have a status the document declares and a body that matches its schema.
//! A spec that does not describe what the service answers fails here as surely as a 500.

mod common;

use std::process::Command;

use common::*;
use serde_json::json;

fn schemathesis() -> String {
    let script = format!(
        "{}/tests/servers/schemathesis.sh",
        env!("CARGO_MANIFEST_DIR")
    );
    let out = Command::new("bash")
        .arg(&script)
        .arg("path")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "schemathesis is missing (tests/run installs it; run `bash {script} install`): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn unit(uuid: &str, user: &str, project: &str) -> serde_json::Value {
    let t = unix_now();
    json!({
        "cluster_id": "slurm-0", "uuid": uuid, "name": format!("job {uuid}"),
        "username": user, "project": project, "partition": "cpu", "state": "COMPLETED",
        "created_at": t - 7200, "started_at": t - 3600, "ended_at": t - 600,
        "allocation": { "cpus": 4, "mem": 8_589_934_592u64, "gpus": 0, "nodes": 1 },
        "cpu_usage": 50.0, "energy_kwh": 0.25,
    })
}

/// Runs schemathesis as `user` over the whole document; returns its output on failure.
fn run(bin: &str, gw: &Gateway, spec: &std::path::Path, user: &str, pw: &str) {
    let report = gw.dir.path().join(format!("schemathesis-{user}"));
    let out = Command::new(bin)
        .arg("run")
        .arg(spec)
        .args(["--url", &gw.plain_url("")])
        .args(["--auth", &format!("{user}:{pw}")])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,response_schema_conformance",
        ])
        .args(["--max-examples", "30", "--seed", "1", "--workers", "1"])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--request-timeout", "10", "--report", "har"])
        .arg("--report-dir")
        .arg(&report)
        // Its cache (`.schemathesis/`) goes to the test's directory, not the repository.
        .current_dir(gw.dir.path())
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        // Every request and answer, for the diagnosis (kept if HPCGATE_KEEP_HAR names a path).
        if let Ok(keep) = std::env::var("HPCGATE_KEEP_HAR") {
            let _ = Command::new("cp").arg("-r").arg(&report).arg(keep).status();
        }
        panic!(
            "schemathesis found problems as {user}:\n{text}\ngateway log:\n{}",
            gw.log_text()
        );
    }
    // Not vacuous: it ran requests against every operation of the document.
    assert!(
        text.contains("passed") && !text.contains("No operations"),
        "schemathesis ran nothing as {user}:\n{text}"
    );
}

#[tokio::test]
async fn accounting_api_matches_its_openapi_document() {
    let bin = schemathesis();
    let gw = Gateway::start(Setup {
        body: "[accounting]\ningest_users = [\"ingest\"]\n\n\
               [accounting.clusters.slurm-0]\n\n\
               [pools.acct]\nbackends = [\"unix:state/accounting.sock\"]\n\n\
               [[routes]]\nname = \"accounting\"\npath_prefix = \"/api/v1\"\npool = \"acct\"\n\
               kind = \"accounting\"\nauthenticators = [\"local\"]\n"
            .into(),
        extra_users: vec![("ingest".into(), vec!["hpc-users".into()])],
        ..Default::default()
    })
    .await;
    let client = gw.client(false);
    // Some data, so that answers have bodies to check.
    let r = client
        .post(gw.url("/api/v1/units"))
        .header("authorization", basic("ingest", "ingest-pw"))
        .json(&json!([
            unit("b1", "bob", "physics"),
            unit("b2", "bob", "chem"),
            unit("a1", "alice", "physics")
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    // The document as the gateway serves it.
    let r = client
        .get(gw.url("/api/v1/openapi.json"))
        .header("authorization", basic("bob", BOB_PW))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let spec = gw.dir.path().join("openapi.json");
    std::fs::write(&spec, r.bytes().await.unwrap()).unwrap();

    // Blocking is fine here: the gateway and the service are other processes.
    run(&bin, &gw, &spec, "bob", BOB_PW);
    run(&bin, &gw, &spec, "alice", ALICE_PW);
}
