//! The gateway decides on the request Prometheus reads (issue: a multipart body read any
//! user's series; a nested query aborted the process). Against a real Prometheus, the oracle
//! is its answer: bob's request, however it is encoded, returns none of alice's series, or
//! is refused. In `label` and `ownership` mode, over HTTP/1.1 and HTTP/2, by bob himself and
//! through Grafana acting for him.

mod common;

use std::time::Duration;

use common::prom::*;
use common::*;

/// The caller's request as a test sends it: method, path below the route, URL query,
/// Content-Type, body.
struct Req<'a> {
    method: reqwest::Method,
    path: &'a str,
    query: String,
    content_type: Option<&'a str>,
    body: Vec<u8>,
}

const FORM: &str = "application/x-www-form-urlencoded";
const MULTIPART: &str = "multipart/form-data; boundary=XyZ";

fn multipart(name: &str, value: &str) -> Vec<u8> {
    format!(
        "--XyZ\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n--XyZ--\r\n"
    )
    .into_bytes()
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// How a caller proves who they are: bob's password, or Grafana's with `X-Grafana-User: bob`.
#[derive(Clone, Copy, Debug)]
enum As {
    Bob,
    GrafanaForBob,
}

async fn send(gw: &Gateway, route: &str, who: As, h2: bool, req: &Req<'_>) -> reqwest::Response {
    let url = if req.query.is_empty() {
        gw.url(&format!("/{route}{}", req.path))
    } else {
        gw.url(&format!("/{route}{}?{}", req.path, req.query))
    };
    let mut b = gw.client(h2).request(req.method.clone(), url);
    b = match who {
        As::Bob => b.header("authorization", basic("bob", BOB_PW)),
        As::GrafanaForBob => b
            .header("authorization", basic("grafana", "grafana-pw"))
            .header("x-grafana-user", "bob"),
    };
    if let Some(ct) = req.content_type {
        b = b.header("content-type", ct);
    }
    if !req.body.is_empty() {
        b = b.body(req.body.clone());
    }
    b.send().await.unwrap()
}

/// A gateway with three Prometheus routes on the same real server: `label` mode for bob
/// (`/prometheus`), the same through Grafana (`/grafana`), and `ownership` mode (`/owned`),
/// with bob's job 2001 and alice's 1001 and 1002 in the accounting store.
async fn gateway(prom: &RealServer) -> Gateway {
    let url = prom.get("PROM_SHORT_URL");
    let body = format!(
        "[accounting]\ningest_users = [\"ingest\"]\n\n\
         [accounting.clusters.slurm-0]\n\n\
         [authenticators.grafana]\ntype = \"trusted_header\"\nauthenticator = \"local\"\n\
         services = [\"grafana\"]\nsource_networks = [\"127.0.0.1\"]\n\n\
         [pools.acct]\nbackends = [\"unix:state/accounting.sock\"]\n\n\
         [pools.prom]\nbackends = [\"{url}\"]\n\n\
         [[routes]]\nname = \"accounting\"\npath_prefix = \"/api/v1\"\npool = \"acct\"\n\
         kind = \"accounting\"\nauthenticators = [\"local\"]\n\n\
         [[routes]]\nname = \"prometheus\"\npath_prefix = \"/prometheus\"\nstrip_prefix = true\n\
         pool = \"prom\"\nkind = \"prometheus\"\nauthenticators = [\"local\"]\n\
         promql = {{ mode = \"label\", label = \"user\" }}\n\n\
         [[routes]]\nname = \"grafana\"\npath_prefix = \"/grafana\"\nstrip_prefix = true\n\
         pool = \"prom\"\nkind = \"prometheus\"\nauthenticators = [\"grafana\"]\n\
         promql = {{ mode = \"label\", label = \"user\" }}\n\n\
         [[routes]]\nname = \"owned\"\npath_prefix = \"/owned\"\nstrip_prefix = true\n\
         pool = \"prom\"\nkind = \"prometheus\"\nauthenticators = [\"local\"]\n\
         promql = {{ mode = \"ownership\", label = \"uuid\" }}\n"
    );
    let gw = Gateway::start(Setup {
        body,
        extra_users: vec![
            ("grafana".into(), vec!["services".into()]),
            ("ingest".into(), vec!["services".into()]),
        ],
        ..Default::default()
    })
    .await;
    let unit = |uuid: &str, user: &str| {
        serde_json::json!({
            "cluster_id": "slurm-0", "uuid": uuid, "name": uuid, "username": user,
            "project": format!("{user}-p"), "state": "RUNNING",
            "created_at": unix_now() - 600, "started_at": unix_now() - 500, "ended_at": 0,
        })
    };
    let r = gw
        .client(false)
        .post(gw.url("/api/v1/units"))
        .header("authorization", basic("ingest", "ingest-pw"))
        .json(&serde_json::json!([
            unit("1001", "alice"),
            unit("1002", "alice"),
            unit("2001", "bob")
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    gw
}

/// alice's data in an answer: her user name, her jobs, her project.
fn leaks_alice(text: &str) -> bool {
    ["\"alice\"", "1001", "1002", "\"p1\""]
        .iter()
        .any(|s| text.contains(s))
}

/// The hole this guards, shown on the real server: Prometheus reads a multipart body's
/// `query` on GET as on POST. Through the gateway such a body is refused (415) on every
/// enforced route, endpoint, method, protocol and caller — it was passed through unread and
/// returned alice's series to bob.
#[tokio::test]
async fn multipart_bodies_never_read_another_users_series() {
    let prom = prometheus().await;
    let direct = reqwest::Client::new()
        .get(format!("{}/api/v1/query", prom.get("PROM_SHORT_URL")))
        .header("content-type", MULTIPART)
        .body(multipart("query", "job_cpu_seconds"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        leaks_alice(&direct),
        "Prometheus itself no longer reads multipart GET bodies; the oracle is gone: {direct}"
    );
    let gw = gateway(&prom).await;
    for (route, who) in [
        ("prometheus", As::Bob),
        ("grafana", As::GrafanaForBob),
        ("owned", As::Bob),
    ] {
        for h2 in [false, true] {
            for method in [reqwest::Method::GET, reqwest::Method::POST] {
                for (path, name, value) in [
                    ("/api/v1/query", "query", "job_cpu_seconds"),
                    ("/api/v1/query_range", "query", "job_cpu_seconds"),
                    ("/api/v1/series", "match[]", "{__name__=~\"job_.*\"}"),
                    ("/api/v1/labels", "match[]", "{__name__=~\"job_.*\"}"),
                    ("/api/v1/label/uuid/values", "match[]", "job_cpu_seconds"),
                ] {
                    let req = Req {
                        method: method.clone(),
                        path,
                        query: String::new(),
                        content_type: Some(MULTIPART),
                        body: multipart(name, value),
                    };
                    let r = send(&gw, route, who, h2, &req).await;
                    let status = r.status().as_u16();
                    let text = r.text().await.unwrap();
                    let at = format!("{route} {method} {path} h2={h2} {who:?}");
                    assert!(!leaks_alice(&text), "{at}: {text}");
                    assert_json_error(status, &text, 415, "unsupported_media_type");
                    assert!(text.contains("multipart/form-data"), "{at}: {text}");
                }
            }
        }
    }
    // The gateway answers the same caller's form POST as before.
    let req = Req {
        method: reqwest::Method::POST,
        path: "/api/v1/query",
        query: String::new(),
        content_type: Some(FORM),
        body: b"query=job_cpu_seconds".to_vec(),
    };
    let v: serde_json::Value = send(&gw, "grafana", As::GrafanaForBob, true, &req)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(owners(&v), vec![("bob".into(), "2001".into())]);
}

/// Bodies the gateway does not parse itself are refused where it enforces: on GET, in an
/// unknown or missing media type, in another charset. Admins are not enforced on: theirs
/// pass unchanged.
#[tokio::test]
async fn bodies_the_gateway_does_not_parse_are_refused() {
    let prom = prometheus().await;
    let gw = gateway(&prom).await;
    let body = b"query=job_cpu_seconds".to_vec();
    for (method, ct, status, kind) in [
        (reqwest::Method::GET, Some(FORM), 400, "bad_request"),
        (reqwest::Method::GET, Some("text/plain"), 400, "bad_request"),
        (
            reqwest::Method::POST,
            Some("text/plain"),
            415,
            "unsupported_media_type",
        ),
        (
            reqwest::Method::POST,
            Some("application/json"),
            415,
            "unsupported_media_type",
        ),
        (reqwest::Method::POST, None, 415, "unsupported_media_type"),
        (
            reqwest::Method::POST,
            Some("application/x-www-form-urlencoded; charset=iso-8859-1"),
            415,
            "unsupported_media_type",
        ),
    ] {
        for route in ["prometheus", "owned"] {
            let req = Req {
                method: method.clone(),
                path: "/api/v1/query",
                query: String::new(),
                content_type: ct,
                body: body.clone(),
            };
            let r = send(&gw, route, As::Bob, false, &req).await;
            let (got, text) = (r.status().as_u16(), r.text().await.unwrap());
            assert!(!leaks_alice(&text), "{method} {ct:?}: {text}");
            assert_json_error(got, &text, status, kind);
        }
    }
    // A form in UTF-8, said or not, is read and confined.
    for ct in [FORM, "application/x-www-form-urlencoded; charset=UTF-8"] {
        let req = Req {
            method: reqwest::Method::POST,
            path: "/api/v1/query",
            query: String::new(),
            content_type: Some(ct),
            body: body.clone(),
        };
        let v: serde_json::Value = send(&gw, "prometheus", As::Bob, false, &req)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(owners(&v), vec![("bob".into(), "2001".into())], "{ct}");
    }
    // alice (an admin) is not enforced on, so her multipart request goes as it is.
    let r = gw
        .client(false)
        .get(gw.url("/prometheus/api/v1/query"))
        .header("authorization", basic("alice", ALICE_PW))
        .header("content-type", MULTIPART)
        .body(multipart("query", "count(job_cpu_seconds)"))
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["data"]["result"][0]["value"][1], "3", "{v}");
}

/// The escape corpus (tests/promql_escapes.txt, written for alice: run here as bob with the
/// names swapped) in every encoding the gateway accepts, against the real Prometheus: each
/// answer holds none of alice's data. The encodings: the URL, a percent-encoded name, the
/// form body over HTTP/2, parameters split between URL and body, `match[]` twice.
#[tokio::test]
async fn every_encoding_of_the_escape_corpus_reads_only_the_callers_series() {
    let prom = prometheus().await;
    let gw = gateway(&prom).await;
    let now = server_time(&prom).await;
    let corpus = std::fs::read_to_string("tests/promql_escapes.txt").unwrap();
    let (mut answered, mut refused) = (0, 0);
    for line in corpus
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
    {
        let query = line
            .split_once(' ')
            .unwrap()
            .1
            .replace("alice", "\u{0}")
            .replace("bob", "alice")
            .replace('\u{0}', "bob");
        let e = enc(&query);
        let range = format!("start={}&end={}&step=5", now - 30, now);
        let cases = [
            (
                reqwest::Method::GET,
                "/api/v1/query",
                format!("query={e}"),
                None,
                String::new(),
            ),
            (
                reqwest::Method::GET,
                "/api/v1/query",
                format!("%71uery={e}"),
                None,
                String::new(),
            ),
            (
                reqwest::Method::POST,
                "/api/v1/query",
                String::new(),
                Some(FORM),
                format!("query={e}"),
            ),
            (
                reqwest::Method::POST,
                "/api/v1/query_range",
                format!("query={e}"),
                Some(FORM),
                range,
            ),
            (
                reqwest::Method::GET,
                "/api/v1/series",
                format!("match[]={e}&match%5B%5D=job_cpu_seconds"),
                None,
                String::new(),
            ),
        ];
        for (method, path, url_query, ct, body) in cases {
            let req = Req {
                method: method.clone(),
                path,
                query: url_query.clone(),
                content_type: ct,
                body: body.into_bytes(),
            };
            let r = send(&gw, "prometheus", As::Bob, ct.is_some(), &req).await;
            let status = r.status().as_u16();
            let text = r.text().await.unwrap();
            assert!(
                !leaks_alice(&text),
                "{method} {path}?{url_query} ({query}) leaked alice's data: {text}"
            );
            if status == 200 {
                answered += 1;
            } else {
                refused += 1;
            }
        }
    }
    assert!(
        answered > 100 && refused > 20,
        "{answered} answered, {refused} refused"
    );
}

/// Regression: a ~14 KB query of nested parentheses (or unary minus signs, or nested
/// `sum(`) overflowed the stack of the enforcement code and aborted the process, taking every
/// route down. Sent by GET, POST and through Grafana, each is a 400 naming the limit, and the
/// same gateway process goes on answering (a deeply nested JSON push too).
#[tokio::test]
async fn nested_queries_are_refused_and_the_gateway_keeps_answering() {
    let prom = prometheus().await;
    let gw = gateway(&prom).await;
    let pid = gw.pid();
    let nested = [
        format!("{}job_cpu_seconds{}", "(".repeat(7000), ")".repeat(7000)),
        format!("{}job_cpu_seconds", "-".repeat(14_000)),
        format!("{}job_cpu_seconds{}", "sum(".repeat(3000), ")".repeat(3000)),
        format!("job_cpu_seconds{}", " + job_cpu_seconds".repeat(1500)),
    ];
    for query in &nested {
        for (route, who, method, h2) in [
            ("prometheus", As::Bob, reqwest::Method::GET, false),
            ("prometheus", As::Bob, reqwest::Method::POST, true),
            ("owned", As::Bob, reqwest::Method::POST, false),
            ("grafana", As::GrafanaForBob, reqwest::Method::POST, false),
        ] {
            let req = if method == reqwest::Method::GET {
                Req {
                    method: method.clone(),
                    path: "/api/v1/query",
                    query: format!("query={}", enc(query)),
                    content_type: None,
                    body: Vec::new(),
                }
            } else {
                Req {
                    method: method.clone(),
                    path: "/api/v1/query",
                    query: String::new(),
                    content_type: Some(FORM),
                    body: format!("query={}", enc(query)).into_bytes(),
                }
            };
            let r = send(&gw, route, who, h2, &req).await;
            let (status, text) = (r.status().as_u16(), r.text().await.unwrap());
            assert_json_error(status, &text, 400, "bad_request");
            assert!(
                text.contains("nests too deeply") || text.contains("KiB"),
                "{route} {method}: {text}"
            );
        }
        // As a series selector too.
        let r = send(
            &gw,
            "prometheus",
            As::Bob,
            false,
            &Req {
                method: reqwest::Method::GET,
                path: "/api/v1/series",
                query: format!("match[]={}", enc(query)),
                content_type: None,
                body: Vec::new(),
            },
        )
        .await;
        assert_eq!(r.status(), 400);
    }
    // Other walks over client data are bounded too: JSON (pushed units, token claims) by
    // serde_json's depth limit of 128.
    let r = gw
        .client(false)
        .post(gw.url("/api/v1/units"))
        .header("authorization", basic("ingest", "ingest-pw"))
        .header("content-type", "application/json")
        .body(format!("{}{}", "[".repeat(50_000), "]".repeat(50_000)))
        .send()
        .await
        .unwrap();
    let (status, text) = (r.status().as_u16(), r.text().await.unwrap());
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("recursion limit"), "{text}");
    // Still the same process, still answering, still enforcing.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(gw.pid(), pid);
    let r = gw
        .client(false)
        .get(gw.url("/-/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = send(
        &gw,
        "prometheus",
        As::Bob,
        false,
        &Req {
            method: reqwest::Method::GET,
            path: "/api/v1/query",
            query: format!("query={}", enc("sum by (user) (((job_cpu_seconds)))")),
            content_type: None,
            body: Vec::new(),
        },
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(v["data"]["result"][0]["metric"]["user"], "bob", "{v}");
    assert!(!gw.log_text().contains("overflow"), "{}", gw.log_text());
}
