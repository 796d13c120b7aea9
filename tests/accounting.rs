//! The accounting service through the gateway (a route of kind `accounting` to its Unix
//! socket), on SQLite and on a real PostgreSQL (tests/servers/postgres.sh): who sees which
//! units, usage and projects; group admins managing members; admins; push ingest; and 400s
//! that name the bad parameter.

mod common;

use common::*;
use serde_json::{Value, json};

/// The config body: the service on its socket, a route to it, two clusters.
fn body(database: &str) -> String {
    format!(
        "{database}\n\
         [accounting]\ningest_users = [\"ingest\"]\n\n\
         [accounting.clusters.slurm-0]\nemission_factor = 50.0\n\n\
         [accounting.clusters.slurm-1]\nmanager = \"slurm\"\n\n\
         [pools.acct]\nbackends = [\"unix:state/accounting.sock\"]\n\n\
         [[routes]]\nname = \"accounting\"\npath_prefix = \"/api/v1\"\npool = \"acct\"\n\
         kind = \"accounting\"\nauthenticators = [\"local\"]\n"
    )
}

fn users() -> Vec<(String, Vec<String>)> {
    ["carol", "dave", "erin", "ingest"]
        .iter()
        .map(|u| (u.to_string(), vec!["hpc-users".to_string()]))
        .collect()
}

fn password(user: &str) -> String {
    match user {
        "alice" => ALICE_PW.into(),
        "bob" => BOB_PW.into(),
        u => format!("{u}-pw"),
    }
}

async fn send(
    gw: &Gateway,
    method: &str,
    user: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = gw
        .client(false)
        .request(method.parse().unwrap(), gw.url(path))
        .header("authorization", basic(user, &password(user)));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or_else(|_| json!({ "text": text }));
    (status, v)
}

async fn get(gw: &Gateway, user: &str, path: &str) -> (u16, Value) {
    send(gw, "GET", user, path, None).await
}

/// `data` of a 200 answer.
async fn data(gw: &Gateway, user: &str, path: &str) -> Value {
    let (status, v) = get(gw, user, path).await;
    assert_eq!(status, 200, "{user} GET {path}: {v}");
    assert_eq!(v["status"], "success");
    v["data"].clone()
}

/// The sorted uuids of a units answer.
async fn uuids(gw: &Gateway, user: &str, path: &str) -> Vec<String> {
    let d = data(gw, user, path).await;
    let mut out: Vec<String> = d
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["uuid"].as_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

fn unit(uuid: &str, user: &str, project: &str, ended: i64) -> Value {
    let t = unix_now();
    json!({
        "cluster_id": "slurm-0", "uuid": uuid, "name": format!("job {uuid}"),
        "username": user, "project": project, "partition": "cpu", "state": "COMPLETED",
        "created_at": t - 5 * 86_400, "started_at": if ended == 0 { t - 600 } else { ended - 1000 },
        "ended_at": ended,
        "allocation": { "cpus": 4, "mem": 8_589_934_592u64, "gpus": 0, "nodes": 1 },
        "cpu_usage": 50.0, "energy_kwh": 0.25,
    })
}

/// bob: b1 (physics), b2 (chem), b3 running (physics), b4 three days ago (chem);
/// carol: c1 (physics), c2 (bio); dave: d1 (bio); erin: e1 (solo).
async fn seed(gw: &Gateway) {
    let t = unix_now();
    let units = json!([
        unit("b1", "bob", "physics", t - 3600),
        unit("b2", "bob", "chem", t - 7200),
        unit("b3", "bob", "physics", 0),
        unit("b4", "bob", "chem", t - 3 * 86_400),
        unit("c1", "carol", "physics", t - 1800),
        unit("c2", "carol", "bio", t - 1800),
        unit("d1", "dave", "bio", t - 900),
        unit("e1", "erin", "solo", t - 900),
    ]);
    let (status, v) = send(gw, "POST", "ingest", "/api/v1/units", Some(units.clone())).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["written"], 8);
    // Idempotent: the same push again changes nothing.
    let (status, _) = send(gw, "POST", "ingest", "/api/v1/units", Some(units)).await;
    assert_eq!(status, 200);
}

async fn expect_bad(gw: &Gateway, user: &str, path: &str, names: &str) {
    let (status, v) = get(gw, user, path).await;
    assert_eq!(status, 400, "GET {path}: {v}");
    assert_eq!(v["status"], "error");
    assert_eq!(v["errorType"], "bad_data");
    let msg = v["error"].as_str().unwrap();
    assert!(
        msg.contains(names),
        "GET {path}: `{msg}` should name {names}"
    );
}

async fn whole_api(database: &str) {
    let gw = Gateway::start(Setup {
        body: body(database),
        extra_users: users(),
        ..Default::default()
    })
    .await;
    let socket = gw.dir.path().join("state/accounting.sock");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&socket).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the service's socket is private");
    seed(&gw).await;

    // erin sees only hers; bob his own and his projects' (carol's physics job), not the
    // running one or last week's unless asked.
    assert_eq!(uuids(&gw, "erin", "/api/v1/units").await, ["e1"]);
    assert_eq!(uuids(&gw, "bob", "/api/v1/units").await, ["b1", "b2", "c1"]);
    assert_eq!(
        uuids(&gw, "bob", "/api/v1/units?running").await,
        ["b1", "b2", "b3", "c1"]
    );
    let (from, to) = (unix_now() - 4 * 86_400, unix_now());
    let path = format!("/api/v1/units?from={from}&to={to}&project=chem");
    assert_eq!(uuids(&gw, "bob", &path).await, ["b2", "b4"]);
    // As in CEEMS, one bound alone means a day from it.
    let path = format!("/api/v1/units?from={from}");
    assert_eq!(uuids(&gw, "bob", &path).await, ["b4"]);
    // Someone else's unit is not found by uuid either.
    assert!(uuids(&gw, "bob", "/api/v1/units?uuid=d1").await.is_empty());
    assert_eq!(uuids(&gw, "dave", "/api/v1/units?uuid=c2").await, ["c2"]);

    // The CEEMS shape: seconds in, milliseconds out; emissions from the cluster's factor.
    let d = data(&gw, "erin", "/api/v1/units").await;
    let e1 = &d[0];
    assert_eq!(e1["ended_at_ts"].as_i64().unwrap() % 1000, 0);
    assert!(e1["ended_at_ts"].as_i64().unwrap() / 1000 > unix_now() - 1000);
    assert_eq!(e1["elapsed"], "00:16:40");
    assert_eq!(e1["allocation"]["cpus"], 4);
    assert_eq!(e1["total_cpu_emissions_gms"]["total"], 12.5);
    // field selects; none valid is a 400.
    let d = data(
        &gw,
        "erin",
        "/api/v1/units?field=uuid&field=state&field=nope",
    )
    .await;
    assert_eq!(d, json!([{ "uuid": "e1", "state": "COMPLETED" }]));

    // Ownership check.
    assert_eq!(
        get(&gw, "bob", "/api/v1/units/verify?uuid=b1&uuid=c1")
            .await
            .0,
        200
    );
    let (status, v) = get(&gw, "bob", "/api/v1/units/verify?uuid=b1&uuid=d1").await;
    assert_eq!((status, v["errorType"].as_str()), (403, Some("forbidden")));
    expect_bad(&gw, "bob", "/api/v1/units/verify", "uuid").await;

    // Bad parameters: 400 naming them.
    expect_bad(&gw, "bob", "/api/v1/units?from=yesterday", "'from'").await;
    expect_bad(&gw, "bob", "/api/v1/units?to=1700000000000", "'to'").await;
    expect_bad(&gw, "bob", "/api/v1/units?field=bogus", "field").await;
    expect_bad(&gw, "bob", "/api/v1/units?user=carol", "'user'").await;
    expect_bad(&gw, "bob", "/api/v1/units?limit=0", "'limit'").await;
    expect_bad(
        &gw,
        "bob",
        "/api/v1/usage/current?from=1&to=100000000",
        "maximum query window",
    )
    .await;

    // Admins see all and filter by user; others get 403 on …/admin.
    assert_eq!(
        uuids(&gw, "alice", "/api/v1/units/admin").await,
        ["b1", "b2", "c1", "c2", "d1", "e1"]
    );
    assert_eq!(
        uuids(&gw, "alice", "/api/v1/units/admin?user=dave").await,
        ["d1"]
    );
    for path in [
        "/api/v1/units/admin",
        "/api/v1/usage/global/admin",
        "/api/v1/clusters/admin",
        "/api/v1/users/admin",
    ] {
        let (status, v) = get(&gw, "bob", path).await;
        assert_eq!(
            (status, v["errorType"].as_str()),
            (403, Some("forbidden")),
            "{path}"
        );
    }
    // Pages.
    let (status, v) = get(&gw, "alice", "/api/v1/units/admin?limit=4").await;
    assert_eq!(status, 200);
    assert_eq!(v["data"].as_array().unwrap().len(), 4);
    assert!(
        v["warnings"][0].as_str().unwrap().contains("offset=4"),
        "{v}"
    );
    assert_eq!(
        uuids(&gw, "alice", "/api/v1/units/admin?limit=4&offset=4").await,
        ["d1", "e1"]
    );

    // A client cannot claim to be someone else or an admin: the gateway writes the headers.
    let r = gw
        .client(false)
        .get(gw.url("/api/v1/units/admin"))
        .header("authorization", basic("bob", BOB_PW))
        .header("x-grafana-user", "alice")
        .header("x-hpcgate-groups", "hpc-admins")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // Usage: bob sees his and his projects' members' rows, with time-weighted means.
    let rows = data(&gw, "bob", "/api/v1/usage/current").await;
    let mut who: Vec<(String, String)> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["username"].as_str().unwrap().into(),
                r["project"].as_str().unwrap().into(),
            )
        })
        .collect();
    who.sort();
    assert_eq!(
        who,
        [
            ("bob".into(), "chem".into()),
            ("bob".into(), "physics".into()),
            ("carol".into(), "physics".into())
        ]
    );
    let global = data(
        &gw,
        "alice",
        "/api/v1/usage/global/admin?user=bob&project=chem",
    )
    .await;
    assert_eq!(global[0]["num_units"], 2, "all time: b2 and b4");
    assert_eq!(global[0]["total_time_seconds"]["alloc_cputime"], 8000);
    assert_eq!(global[0]["avg_cpu_usage"]["global"], 50.0);
    assert_eq!(global[0]["total_cpu_energy_usage_kwh"]["total"], 0.5);
    assert_eq!(global[0]["total_cpu_emissions_gms"]["total"], 25.0);
    let only = data(&gw, "bob", "/api/v1/usage/global?field=num_units").await;
    assert!(only[0].get("total_time_seconds").is_none());
    assert!(
        only[0].get("username").is_some(),
        "CEEMS always sends the tags"
    );

    // Projects and users.
    let projects = data(&gw, "bob", "/api/v1/projects").await;
    let names: Vec<&str> = projects
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["chem", "physics"]);
    assert_eq!(projects[1]["users"], json!(["bob", "carol"]));
    let me = data(&gw, "bob", "/api/v1/users").await;
    assert_eq!(me[0]["name"], "bob");
    assert_eq!(me[0]["projects"], json!(["chem", "physics"]));
    let clusters = data(&gw, "alice", "/api/v1/clusters/admin").await;
    assert_eq!(
        clusters,
        json!([{ "id": "slurm-0", "manager": "slurm" }, { "id": "slurm-1", "manager": "slurm" }])
    );

    // Group management: bob may not add members until an admin makes him a group admin.
    let add_dave = "/api/v1/projects/physics/members/dave";
    let (status, _) = send(&gw, "POST", "bob", add_dave, None).await;
    assert_eq!(status, 403);
    let (status, v) = send(
        &gw,
        "POST",
        "alice",
        "/api/v1/projects/physics/members/bob?group_admin=true",
        None,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = send(&gw, "POST", "bob", add_dave, None).await;
    assert_eq!(
        (status, v["data"]["changed"].as_bool()),
        (200, Some(true)),
        "{v}"
    );
    assert_eq!(
        uuids(&gw, "dave", "/api/v1/units").await,
        ["b1", "c1", "c2", "d1"]
    );
    let (status, _) = send(&gw, "DELETE", "bob", add_dave, None).await;
    assert_eq!(status, 200);
    assert_eq!(uuids(&gw, "dave", "/api/v1/units").await, ["c2", "d1"]);
    // A group admin cannot make others group admins, nor manage other projects.
    let (status, _) = send(
        &gw,
        "POST",
        "bob",
        "/api/v1/projects/physics/members/erin?group_admin=true",
        None,
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = send(
        &gw,
        "POST",
        "bob",
        "/api/v1/projects/bio/members/erin",
        None,
    )
    .await;
    assert_eq!(status, 403);
    let (status, v) = send(
        &gw,
        "POST",
        "alice",
        "/api/v1/projects/nope/members/erin",
        None,
    )
    .await;
    assert_eq!((status, v["errorType"].as_str()), (404, Some("not_found")));

    // Push: only service accounts; a bad record names its index and field, and nothing of
    // the push is written.
    let (status, _) = send(
        &gw,
        "POST",
        "bob",
        "/api/v1/units",
        Some(json!([unit("x1", "bob", "chem", unix_now())])),
    )
    .await;
    assert_eq!(status, 403);
    let mut bad = unit("x3", "bob", "chem", unix_now() - 10);
    bad["created_at"] = json!("yesterday");
    let push = json!([unit("x2", "bob", "chem", unix_now() - 10), bad]);
    let (status, v) = send(&gw, "POST", "ingest", "/api/v1/units", Some(push)).await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .starts_with("units[1].created_at"),
        "{v}"
    );
    let mut unknown = unit("x4", "bob", "chem", unix_now() - 10);
    unknown["cluster_id"] = json!("nowhere");
    let (status, v) = send(
        &gw,
        "POST",
        "ingest",
        "/api/v1/units",
        Some(json!([unknown])),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .starts_with("units[0].cluster_id"),
        "{v}"
    );
    assert!(uuids(&gw, "bob", "/api/v1/units?uuid=x2").await.is_empty());

    // Wrong method or path: JSON errors too.
    let (status, v) = send(&gw, "PUT", "bob", "/api/v1/units", None).await;
    assert_eq!(
        (status, v["errorType"].as_str()),
        (405, Some("method_not_allowed")),
        "{v}"
    );
    let (status, v) = get(&gw, "bob", "/api/v1/jobs").await;
    assert_eq!(
        (status, v["errorType"].as_str()),
        (404, Some("not_found")),
        "{v}"
    );

    // Concurrent pushes of the same units (replicas, retries): each unit counts once in
    // the roll-ups, and none of the pushes fails.
    let batch = json!(
        (0..20)
            .map(|i| unit(&format!("k{i}"), "erin", "conc", unix_now() - 100))
            .collect::<Vec<_>>()
    );
    let mut pushes = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let req = gw
            .client(false)
            .post(gw.url("/api/v1/units"))
            .header("authorization", basic("ingest", "ingest-pw"))
            .json(&batch);
        pushes.spawn(async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        });
    }
    while let Some(done) = pushes.join_next().await {
        let (status, body) = done.unwrap();
        assert_eq!(status, 200, "{body}");
    }
    let rows = data(
        &gw,
        "alice",
        "/api/v1/usage/global/admin?user=erin&project=conc",
    )
    .await;
    assert_eq!(rows[0]["num_units"], 20, "{rows}");

    // OpenAPI and the docs page, from the binary.
    let spec = data_raw(&gw, "/api/v1/openapi.json").await;
    assert!(spec["paths"]["/api/v1/units"]["get"].is_object(), "{spec}");
    let r = gw
        .client(false)
        .get(gw.url("/api/v1/docs/"))
        .header("authorization", basic("erin", "erin-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("swagger"));
    // Its scripts come from the binary too (no CDN): the page works offline.
    let r = gw
        .client(false)
        .get(gw.url("/api/v1/docs/swagger-ui-bundle.js"))
        .header("authorization", basic("erin", "erin-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.unwrap().len() > 100_000);
    let (status, _) = get(&gw, "erin", "/api/v1/health").await;
    assert_eq!(status, 200);
    // The gateway reused its connections to the service's socket: pingora checks a pooled
    // connection's peer name against the backend path first, and a socket bound elsewhere
    // and renamed into place failed that on every reuse, logging an error per request.
    let log = gw.log_text();
    assert!(!log.contains("FD mismatch"), "{log}");
}

async fn data_raw(gw: &Gateway, path: &str) -> Value {
    let (status, v) = get(gw, "erin", path).await;
    assert_eq!(status, 200, "{v}");
    v
}

#[tokio::test]
async fn accounting_api_on_sqlite() {
    whole_api("").await;
}

#[tokio::test]
async fn accounting_api_on_postgresql() {
    let pg = RealServer::start("postgres");
    whole_api(&format!(
        "[database]\nurl = \"{}\"\n",
        pg.get("DATABASE_URL")
    ))
    .await;
}

/// Kills a child process on drop.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_port(port: u16) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("nothing listens on {port}");
}

#[tokio::test]
async fn standalone_service_trusts_only_gateways_with_the_shared_secret() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "0123456789abcdef0123456789abcdef-test";
    std::fs::write(dir.path().join("secret"), format!("{secret}\n")).unwrap();
    let port = free_port();
    std::fs::write(
        dir.path().join("accounting.toml"),
        format!(
            "# Only [server], [database], [authorization] and [accounting] matter here.\n\
             [server]\nstate_dir = \"state\"\n\n\
             [[listeners]]\naddress = \"127.0.0.1:{}\"\n\n\
             [authorization]\nadmin_groups = [\"hpc-admins\"]\n\n\
             [accounting]\nlisten = \"127.0.0.1:{port}\"\nshared_secret_file = \"secret\"\n\
             ingest_users = [\"ingest\"]\n\n[accounting.clusters.slurm-0]\nemission_factor = 50.0\n",
            free_port()
        ),
    )
    .unwrap();
    let _service = Child(
        std::process::Command::new(bin())
            .args(["accounting", "serve", "--config"])
            .arg(dir.path().join("accounting.toml"))
            .stderr(std::fs::File::create(dir.path().join("service.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_port(port).await;
    std::fs::write(dir.path().join("bearer"), format!("Bearer {secret}\n")).unwrap();
    let gw = Gateway::start(Setup {
        body: format!(
            "[pools.acct]\nbackends = [\"http://127.0.0.1:{port}\"]\n\
             authorization_file = \"{}\"\n\n\
             [[routes]]\nname = \"accounting\"\npath_prefix = \"/api/v1\"\npool = \"acct\"\n\
             kind = \"accounting\"\nauthenticators = [\"local\"]\n",
            dir.path().join("bearer").display()
        ),
        extra_users: users(),
        ..Default::default()
    })
    .await;
    seed(&gw).await;
    assert_eq!(uuids(&gw, "erin", "/api/v1/units").await, ["e1"]);

    // Straight to the service: without the secret, the identity headers count for nothing.
    let direct = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/api/v1/units/admin");
    for auth in [
        None,
        Some("Bearer wrong"),
        Some(&format!("Bearer {secret}x")[..]),
    ] {
        let mut req = direct
            .get(&url)
            .header("x-grafana-user", "alice")
            .header("x-hpcgate-groups", "hpc-admins");
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let body = r.text().await.unwrap();
        assert_json_error(status, &body, 401, "unauthorized");
        assert!(!body.contains(secret));
    }
    let r = direct
        .get(&url)
        .header("x-grafana-user", "alice")
        .header("x-hpcgate-groups", "hpc-admins")
        .header("authorization", format!("Bearer {secret}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn database_down_means_503_not_an_empty_answer() {
    let pg = RealServer::start("postgres");
    let url = format!("{}?connect_timeout=1", pg.get("DATABASE_URL"));
    let gw = Gateway::start(Setup {
        body: body(&format!("[database]\nurl = \"{url}\"\ntimeout = \"1s\"\n")),
        extra_users: users(),
        ..Default::default()
    })
    .await;
    seed(&gw).await;
    assert_eq!(uuids(&gw, "erin", "/api/v1/units").await, ["e1"]);
    pg.stop();
    for path in [
        "/api/v1/units",
        "/api/v1/units/verify?uuid=e1",
        "/api/v1/usage/global",
    ] {
        let (status, v) = get(&gw, "erin", path).await;
        assert_eq!(
            (status, v["errorType"].as_str()),
            (503, Some("unavailable")),
            "{path}: {v}"
        );
    }
    let (status, _) = get(&gw, "erin", "/api/v1/health").await;
    assert_eq!(status, 503);
}

/// `/users/admin?role=admin` lists the admins the store knows, and nobody else: CEEMS' load
/// balancer reads it as its admin list.
async fn admin_list(database: &str) {
    let gw = Gateway::start(Setup {
        body: body(database).replace(
            "ingest_users = [\"ingest\"]",
            "ingest_users = [\"ingest\"]\nadmin_users = [\"erin\"]",
        ),
        extra_users: users(),
        ..Default::default()
    })
    .await;
    seed(&gw).await;
    let names = |rows: &Value| -> Vec<String> {
        let mut n: Vec<String> = rows
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_string())
            .collect();
        n.dedup();
        n
    };
    let everyone = data(&gw, "alice", "/api/v1/users/admin").await;
    assert!(names(&everyone).contains(&"bob".to_string()), "{everyone}");
    let admins = data(&gw, "alice", "/api/v1/users/admin?role=admin").await;
    assert_eq!(names(&admins), ["erin"], "{admins}");
    assert_eq!(admins[0]["tags"], json!(["config"]));
    // The admin from the config may ask too; `user` narrows the list.
    let again = data(&gw, "erin", "/api/v1/users/admin?role=admin&user=erin").await;
    assert_eq!(names(&again), ["erin"]);
    let none = data(&gw, "alice", "/api/v1/users/admin?role=admin&user=bob").await;
    assert_eq!(none, json!([]));
    // Rows without the role keep their shape (no tags).
    assert!(everyone[0].get("tags").is_none(), "{everyone}");
    expect_bad(&gw, "alice", "/api/v1/users/admin?role=owner", "'role'").await;
    let (status, _) = get(&gw, "bob", "/api/v1/users/admin?role=admin").await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn users_admin_role_admin_lists_admins_only_on_sqlite() {
    admin_list("").await;
}

#[tokio::test]
async fn users_admin_role_admin_lists_admins_only_on_postgresql() {
    let pg = RealServer::start("postgres");
    admin_list(&format!(
        "[database]\nurl = \"{}\"\n",
        pg.get("DATABASE_URL")
    ))
    .await;
}
