//! PromQL enforcement against a real Prometheus (tests/servers/prometheus.sh): alice reads
//! her jobs' series and nobody else's, on GET and POST; the escape corpus against the real
//! server; admins read everything; endpoints outside the read API are refused; promtool, a
//! client nobody here wrote, works through the gateway.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::prom::*;
use common::*;

async fn gateway(prom: &RealServer) -> Gateway {
    let body = format!(
        "[pools.prom]\nbackends = [\"{}\"]\n\n\
         [[routes]]\nname = \"prometheus\"\npath_prefix = \"/prometheus\"\nstrip_prefix = true\n\
         pool = \"prom\"\nkind = \"prometheus\"\nauthenticators = [\"local\"]\n\
         promql = {{ mode = \"label\", label = \"user\" }}\n",
        prom.get("PROM_SHORT_URL")
    );
    Gateway::start(Setup {
        body,
        ..Default::default()
    })
    .await
}

async fn get(gw: &Gateway, user: &str, pw: &str, path_and_query: &str) -> reqwest::Response {
    gw.client(false)
        .get(gw.url(&format!("/prometheus{path_and_query}")))
        .header("authorization", basic(user, pw))
        .send()
        .await
        .unwrap()
}

async fn post(
    gw: &Gateway,
    user: &str,
    pw: &str,
    path: &str,
    form: &[(&str, &str)],
) -> reqwest::Response {
    gw.client(true)
        .post(gw.url(&format!("/prometheus{path}")))
        .header("authorization", basic(user, pw))
        .form(form)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn users_read_only_their_own_series_and_admins_read_all() {
    let prom = prometheus().await;
    let gw = gateway(&prom).await;
    let bob = |s: &str| (String::from("bob"), s.to_string());
    let alice = |s: &str| (String::from("alice"), s.to_string());

    // GET: bob sees his job only, though he asked for every series.
    let v: serde_json::Value = get(&gw, "bob", BOB_PW, &q("job_cpu_seconds"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(owners(&v), vec![bob("2001")]);
    let audit = gw.last_audit("prometheus").await;
    assert_eq!(audit["promql"], "job_cpu_seconds{user=\"bob\"}", "{audit}");
    // POST form over h2, as Grafana sends it, with a query that tries `or` to reach further.
    let r = post(
        &gw,
        "bob",
        BOB_PW,
        "/api/v1/query",
        &[
            ("query", "job_cpu_seconds or job_memory_bytes"),
            ("time", ""),
        ],
    )
    .await;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    // (`or` keeps one series per label set: bob's job once.)
    assert_eq!(owners(&v), vec![bob("2001")]);
    // query_range too (times from the server's own clock).
    let now = server_time(&prom).await;
    let r = post(
        &gw,
        "bob",
        BOB_PW,
        "/api/v1/query_range",
        &[
            ("query", "sum by (user) (job_cpu_seconds)"),
            ("start", &(now - 30).to_string()),
            ("end", &(now + 2).to_string()),
            ("step", "1"),
        ],
    )
    .await;
    let v: serde_json::Value = r.json().await.unwrap();

    let users: Vec<&str> = v["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["metric"]["user"].as_str().unwrap())
        .collect();
    assert_eq!(users, vec!["bob"], "{v}");

    // Asking for another user's series is refused, in Prometheus' error format.
    let r = get(&gw, "bob", BOB_PW, &q("job_cpu_seconds{user=\"alice\"}")).await;
    expect_error(r, 403, "forbidden").await;
    // A matcher of bob's own on the label (Grafana's `user=~"$user"`, "any user") is kept,
    // ANDed with his: it cannot widen what he reads.
    let r = post(
        &gw,
        "bob",
        BOB_PW,
        "/api/v1/query",
        &[("query", "job_cpu_seconds{user=~\".*\"}")],
    )
    .await;
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(owners(&v), vec![bob("2001")], "{v}");
    // `query` twice (URL and body) is refused, not guessed at.
    let r = gw
        .client(false)
        .post(gw.url(&format!("/prometheus{}", q("up"))))
        .header("authorization", basic("bob", BOB_PW))
        .form(&[("query", "job_cpu_seconds")])
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "bad_request").await;
    // Broken PromQL is a 400 from the gateway.
    expect_error(
        get(&gw, "bob", BOB_PW, &q("sum(")).await,
        400,
        "bad_request",
    )
    .await;

    // Series, labels and label values are confined; a label listing without match[] too.
    let v: serde_json::Value = get(&gw, "bob", BOB_PW, "/api/v1/label/uuid/values")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["data"], serde_json::json!(["2001"]));
    let v: serde_json::Value = post(
        &gw,
        "bob",
        BOB_PW,
        "/api/v1/series",
        &[("match[]", "{__name__=~\"job_.*\"}")],
    )
    .await
    .json()
    .await
    .unwrap();
    assert!(
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["user"] == "bob"),
        "{v}"
    );
    assert_eq!(v["data"].as_array().unwrap().len(), 2);

    // Outside the read API: refused for users.
    let r = get(&gw, "bob", BOB_PW, "/api/v1/status/config").await;
    expect_error(r, 403, "forbidden").await;
    let r = get(&gw, "bob", BOB_PW, "/federate?match[]=up").await;
    expect_error(r, 403, "forbidden").await;

    // Expressions that read no series pass (Grafana's connection test).
    let v: serde_json::Value = get(&gw, "bob", BOB_PW, &q("1+1"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["data"]["result"][1], "2");

    // alice is an admin (hpc-admins): everything, unchanged.
    let v: serde_json::Value = get(&gw, "alice", ALICE_PW, &q("job_cpu_seconds"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(owners(&v), vec![alice("1001"), alice("1002"), bob("2001")]);
    assert_eq!(
        get(&gw, "alice", ALICE_PW, "/api/v1/status/config")
            .await
            .status(),
        200
    );
}

/// Issue 20: routing, `admin_paths` and the action are decided on the path as Prometheus
/// reads it (Go percent-decodes the path before routing), and that is the path it gets.
#[tokio::test]
async fn encoded_paths_are_decided_as_prometheus_reads_them() {
    let prom = prometheus().await;
    let url = prom.get("PROM_SHORT_URL");
    // A public catch-all beside the enforced route: what misses `/prom` lands there.
    let gw = Gateway::start(Setup {
        body: format!(
            "[pools.prom]\nbackends = [\"{url}\"]\n\n\
             [[routes]]\nname = \"prom\"\npath_prefix = \"/prom\"\nstrip_prefix = true\n\
             pool = \"prom\"\nkind = \"prometheus\"\nauthenticators = [\"local\"]\n\
             promql = {{ mode = \"label\", label = \"user\" }}\n\
             admin_paths = [\"/prom/api/v1/status\", \"/prom/api/v1/admin\"]\n\n\
             [[routes]]\nname = \"catchall\"\npath_prefix = \"/\"\npool = \"prom\"\n\
             authenticators = [\"public\"]\n"
        ),
        ..Default::default()
    })
    .await;
    let send = |method: reqwest::Method, path: &str, user: &str, pw: &str| {
        gw.client(false)
            .request(method, gw.url(path))
            .header("authorization", basic(user, pw))
            .send()
    };
    let rid = |r: &reqwest::Response| r.headers()["x-request-id"].to_str().unwrap().to_string();

    // `/%70rom/…` is `/prom/…`: the enforced route, confined to bob's series.
    let r = send(
        reqwest::Method::GET,
        &format!("/%70rom{}", q("job_cpu_seconds")),
        "bob",
        BOB_PW,
    )
    .await
    .unwrap();
    let audit = gw.audit_of(&rid(&r)).await;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(owners(&v), vec![("bob".to_string(), "2001".to_string())]);
    assert_eq!(audit["route"], "prom", "{audit}");
    assert_eq!(audit["promql"], "job_cpu_seconds{user=\"bob\"}", "{audit}");

    // admin_paths on /prom/api/v1/status holds for /st%61tus: bob is refused as `admin`.
    for path in ["/prom/api/v1/status/flags", "/prom/api/v1/st%61tus/flags"] {
        let r = send(reqwest::Method::GET, path, "bob", BOB_PW)
            .await
            .unwrap();
        let audit = gw.audit_of(&rid(&r)).await;
        expect_error(r, 403, "forbidden").await;
        assert_eq!(audit["action"], "admin", "{path}: {audit}");
        assert_eq!(audit["decision"], "deny", "{path}: {audit}");
    }
    // alice (an admin) gets Prometheus' own answer for the decoded path.
    let r = send(
        reqwest::Method::GET,
        "/prom/api/v1/st%61tus/flags",
        "alice",
        ALICE_PW,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(v["data"]["web.listen-address"].is_string(), "{v}");

    // POST …/%61dmin/tsdb/snapshot is the admin API, classified `admin`: refused for bob;
    // for alice it reaches Prometheus' admin handler (disabled on the test instance).
    let path = "/prom/api/v1/%61dmin/tsdb/snapshot";
    let r = send(reqwest::Method::POST, path, "bob", BOB_PW)
        .await
        .unwrap();
    let audit = gw.audit_of(&rid(&r)).await;
    expect_error(r, 403, "forbidden").await;
    assert_eq!(audit["action"], "admin", "{audit}");
    assert_eq!(audit["path"], "/prom/api/v1/admin/tsdb/snapshot", "{audit}");
    let r = send(reqwest::Method::POST, path, "alice", ALICE_PW)
        .await
        .unwrap();
    let audit = gw.audit_of(&rid(&r)).await;
    assert_eq!(audit["action"], "admin", "{audit}");
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("admin APIs disabled")),
        "{v}"
    );
}

/// Every `confine` query of the corpus, run by bob (the corpus is written for a user alice:
/// names swapped) against the real Prometheus, returns only bob's series; every `deny` one is
/// refused.
#[tokio::test]
async fn the_escape_corpus_against_a_real_prometheus() {
    let prom = prometheus().await;
    let gw = gateway(&prom).await;
    let corpus = std::fs::read_to_string("tests/promql_escapes.txt").unwrap();
    let mut ran = 0;
    let mut refused_by_server = 0;
    for line in corpus
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
    {
        let (want, query) = line.split_once(' ').unwrap();
        let query = query
            .replace("alice", "\u{0}")
            .replace("bob", "alice")
            .replace('\u{0}', "bob");
        let query = query.as_str();
        let r = post(&gw, "bob", BOB_PW, "/api/v1/query", &[("query", query)]).await;
        let status = r.status().as_u16();
        let v: serde_json::Value = r.json().await.unwrap();
        match want {
            "deny" => assert_eq!(status, 403, "{query}: {v}"),
            "invalid" => assert_eq!(status, 400, "{query}: {v}"),
            // Prometheus 2.42 predates `{a="1" or b="2"}`: it refuses the (confined) query.
            _ if status == 400 && v["errorType"] == "bad_data" && query.contains(" or ") => {
                refused_by_server += 1;
            }
            _ => {
                assert_eq!(status, 200, "{query}: {v}");
                let text = v.to_string();
                for other in ["1001", "1002", "\"alice\"", "p1"] {
                    assert!(!text.contains(other), "{query} leaked {other}: {v}");
                }
            }
        }
        ran += 1;
    }
    assert!(ran >= 30);
    assert!(
        refused_by_server <= 1,
        "Prometheus refused {refused_by_server} queries"
    );
}

#[tokio::test]
async fn promtool_queries_through_the_gateway() {
    let prom = prometheus().await;
    let gw = gateway(&prom).await;
    // promtool 2.42 has no auth flags: Basic credentials ride in the URL (Go's client sends
    // them), and Go trusts the gateway's CA through SSL_CERT_FILE.
    let server = format!("https://bob:{BOB_PW}@localhost:{}/prometheus", gw.tls_port);
    let ca = gw.dir.path().join("ca.pem");
    let promtool = |args: &[&str]| {
        Command::new("promtool")
            .env("SSL_CERT_FILE", &ca)
            .args(["query"])
            .args(args)
            .output()
            .expect("promtool (Debian's prometheus package) is installed by tests/run")
    };
    let out = promtool(&["instant", server.as_str(), "job_cpu_seconds"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("uuid=\"2001\""), "{text}");
    assert!(!text.contains("alice"), "{text}");
    let now = server_time(&prom).await;
    let (start, end) = ((now - 30).to_string(), (now + 2).to_string());
    let out = promtool(&[
        "range",
        "--start",
        &start,
        "--end",
        &end,
        "--step",
        "1s",
        server.as_str(),
        "job_memory_bytes",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("2001") && !text.contains("1001"), "{text}");
}

/// `ownership` mode: the accounting store (filled by a service account's push) decides which
/// job ids a user may name; a project member reads the project's jobs; every selector must
/// pin ids, so `mine or everything` is refused.
#[tokio::test]
async fn ownership_mode_checks_job_ids_against_the_accounting_store() {
    let prom = RealServer::start_with("prometheus", &["short"]);
    let file = prom.get("PROM_SHORT_METRICS_FILE").to_string();
    std::fs::write(
        format!("{file}.tmp"),
        "# TYPE job_cpu_seconds counter\n\
         job_cpu_seconds{uuid=\"b1\"} 10\n\
         job_cpu_seconds{uuid=\"c1\"} 20\n\
         job_cpu_seconds{uuid=\"d1\"} 30\n\
         # TYPE node_load gauge\n\
         node_load{node=\"n1\"} 1\n",
    )
    .unwrap();
    std::fs::rename(format!("{file}.tmp"), &file).unwrap();
    let body = format!(
        "[accounting]\ningest_users = [\"ingest\"]\n\n\
         [accounting.clusters.slurm-0]\n\n\
         [pools.acct]\nbackends = [\"unix:state/accounting.sock\"]\n\n\
         [pools.prom]\nbackends = [\"{}\"]\n\n\
         [[routes]]\nname = \"accounting\"\npath_prefix = \"/api/v1\"\npool = \"acct\"\n\
         kind = \"accounting\"\nauthenticators = [\"local\"]\n\n\
         [[routes]]\nname = \"prometheus\"\npath_prefix = \"/prometheus\"\nstrip_prefix = true\n\
         pool = \"prom\"\nkind = \"prometheus\"\nauthenticators = [\"local\"]\n\
         promql = {{ mode = \"ownership\", label = \"uuid\", allow_metrics = [\"node_load\"] }}\n",
        prom.get("PROM_SHORT_URL")
    );
    let gw = Gateway::start(Setup {
        body,
        extra_users: ["carol", "dave", "ingest"]
            .iter()
            .map(|u| (u.to_string(), vec!["hpc-users".to_string()]))
            .collect(),
        ..Default::default()
    })
    .await;
    // bob and carol share the physics project; dave's job is bio.
    let unit = |uuid: &str, user: &str, project: &str| {
        serde_json::json!({
            "cluster_id": "slurm-0", "uuid": uuid, "name": uuid, "username": user,
            "project": project, "state": "RUNNING", "created_at": unix_now() - 600,
            "started_at": unix_now() - 500, "ended_at": 0,
        })
    };
    let r = gw
        .client(false)
        .post(gw.url("/api/v1/units"))
        .header("authorization", basic("ingest", "ingest-pw"))
        .json(&serde_json::json!([
            unit("b1", "bob", "physics"),
            unit("c1", "carol", "physics"),
            unit("d1", "dave", "bio"),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    // Wait until the scrape has all three jobs.
    let deadline = Instant::now() + Duration::from_secs(20);
    let url = format!(
        "{}/api/v1/query?query=count(job_cpu_seconds)",
        prom.get("PROM_SHORT_URL")
    );
    loop {
        let v: serde_json::Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
        if v["data"]["result"][0]["value"][1] == "3" {
            break;
        }
        assert!(Instant::now() < deadline, "never scraped: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let uuids = |v: &serde_json::Value| {
        let mut u: Vec<String> = v["data"]["result"]
            .as_array()
            .unwrap_or_else(|| panic!("{v}"))
            .iter()
            .map(|s| s["metric"]["uuid"].as_str().unwrap_or("-").to_string())
            .collect();
        u.sort();
        u
    };

    // bob's own job, and carol's in their shared project, GET and POST.
    let v: serde_json::Value = get(&gw, "bob", BOB_PW, &q("job_cpu_seconds{uuid=\"b1\"}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(uuids(&v), vec!["b1"]);
    let r = post(
        &gw,
        "bob",
        BOB_PW,
        "/api/v1/query",
        &[(
            "query",
            "rate(job_cpu_seconds{uuid=~\"b1|c1\"}[1m]) or job_cpu_seconds{uuid=\"c1\"}",
        )],
    )
    .await;
    assert_eq!(r.status(), 200);
    // dave's job is not bob's: refused, naming it (and only it).
    let r = get(&gw, "bob", BOB_PW, &q("job_cpu_seconds{uuid=~\"b1|d1\"}")).await;
    assert_eq!(r.status(), 403);
    let v: serde_json::Value = r.json().await.unwrap();
    let msg = v["error"].as_str().unwrap();
    assert!(msg.contains("d1") && !msg.contains("b1"), "{msg}");
    // A selector that pins nothing, even beside one that does; an unknown id; a regex.
    for query in [
        "job_cpu_seconds{uuid=\"b1\"} or job_cpu_seconds",
        "job_cpu_seconds{uuid=\"zz9\"}",
        "job_cpu_seconds{uuid=~\"b.*\"}",
        "sum(job_cpu_seconds)",
    ] {
        let r = post(&gw, "bob", BOB_PW, "/api/v1/query", &[("query", query)]).await;
        expect_error(r, 403, "forbidden").await;
    }
    // Allowlisted series of no job, and expressions that read nothing.
    let v: serde_json::Value = get(&gw, "bob", BOB_PW, &q("node_load"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["data"]["result"][0]["value"][1], "1", "{v}");
    assert_eq!(get(&gw, "bob", BOB_PW, &q("1+1")).await.status(), 200);
    // Series and label listings need match[] that pins ids.
    let r = get(&gw, "bob", BOB_PW, "/api/v1/label/uuid/values").await;
    expect_error(r, 403, "forbidden").await;
    let v: serde_json::Value = get(
        &gw,
        "bob",
        BOB_PW,
        "/api/v1/series?match%5B%5D=%7Buuid%3D%22c1%22%7D",
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(v["data"][0]["uuid"], "c1", "{v}");
    // dave sees his own, not the physics jobs; the audit log says why.
    let r = get(&gw, "dave", "dave-pw", &q("job_cpu_seconds{uuid=\"b1\"}")).await;
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    expect_error(r, 403, "forbidden").await;
    let audit = gw.audit_of(&id).await;
    assert_eq!(audit["decision"], "deny", "{audit}");
    assert!(audit["reason"].as_str().unwrap().contains("b1"), "{audit}");
    // The admin reads everything.
    let v: serde_json::Value = get(&gw, "alice", ALICE_PW, &q("job_cpu_seconds"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(uuids(&v), vec!["b1", "c1", "d1"]);
}

/// `label` mode with `value = "groups"`: series labelled by project, users confined to the
/// projects they are members of (their groups).
#[tokio::test]
async fn label_mode_confines_to_the_callers_groups() {
    let prom = prometheus().await;
    let body = format!(
        "[pools.prom]\nbackends = [\"{}\"]\n\n\
         [[routes]]\nname = \"projects\"\npath_prefix = \"/prometheus\"\nstrip_prefix = true\n\
         pool = \"prom\"\nkind = \"prometheus\"\nauthenticators = [\"local\"]\n\
         promql = {{ mode = \"label\", label = \"project\", value = \"groups\" }}\n",
        prom.get("PROM_SHORT_URL")
    );
    let gw = Gateway::start(Setup {
        body,
        extra_users: vec![
            ("erin".into(), vec!["hpc-users".into(), "p1".into()]),
            (
                "frank".into(),
                vec!["hpc-users".into(), "p1".into(), "p2".into()],
            ),
        ],
        ..Default::default()
    })
    .await;
    let v: serde_json::Value = get(&gw, "erin", "erin-pw", &q("job_cpu_seconds"))
        .await
        .json()
        .await
        .unwrap();
    let alice = |s: &str| (String::from("alice"), s.to_string());
    assert_eq!(owners(&v), vec![alice("1001"), alice("1002")]);
    let audit = gw.last_audit("projects").await;
    // (Group names are regex-escaped: `-` becomes `\-`, which RE2 reads as `-`.)
    assert_eq!(
        audit["promql"], r#"job_cpu_seconds{project=~"hpc\\-users|p1"}"#,
        "{audit}"
    );
    // Narrowing to a project of theirs is fine; another project is refused.
    let r = get(
        &gw,
        "erin",
        "erin-pw",
        &q("job_cpu_seconds{project=\"p1\"}"),
    )
    .await;
    assert_eq!(r.status(), 200);
    let r = get(
        &gw,
        "erin",
        "erin-pw",
        &q("job_cpu_seconds{project=\"p2\"}"),
    )
    .await;
    expect_error(r, 403, "forbidden").await;
    // A member of both reads both.
    let v: serde_json::Value = get(&gw, "frank", "frank-pw", &q("job_cpu_seconds"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(owners(&v).len(), 3);
}
