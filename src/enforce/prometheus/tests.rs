//! Unit tests of the Prometheus gate: endpoints, rewriting, time ranges, bodies, and the
//! escape corpus in every request encoding.

use super::*;

fn label() -> PromqlMode {
    PromqlMode::Label {
        label: "user".into(),
        from_groups: false,
    }
}

#[test]
fn endpoints_outside_the_read_api_are_refused() {
    for rel in [
        "/api/v1/admin/tsdb/delete_series",
        "/federate",
        "/api/v1/write",
        "/api/v1/label//values",
    ] {
        let r = enforce(
            &label(),
            rel,
            &http::Method::GET,
            None,
            None,
            Some("alice"),
            &[],
            None,
        );
        assert!(matches!(r, Err(Rejection::Forbidden(_))), "{rel}");
    }
    // Admins (no user to enforce) pass unchanged.
    let r = enforce(
        &label(),
        "/federate",
        &http::Method::GET,
        None,
        None,
        None,
        &[],
        None,
    )
    .unwrap();
    assert!(r.query.is_none());
}

#[test]
fn url_and_body_are_rewritten_and_duplicates_refused() {
    let p = enforce(
        &label(),
        "/api/v1/query",
        &http::Method::POST,
        Some("time=1"),
        Some(b"query=up&step=15"),
        Some("alice"),
        &[],
        None,
    )
    .unwrap();
    assert_eq!(p.query.as_deref(), Some("time=1"));
    assert_eq!(
        p.body.as_deref(),
        Some(&b"query=up%7Buser%3D%22alice%22%7D&step=15"[..])
    );
    let dup = enforce(
        &label(),
        "/api/v1/query",
        &http::Method::POST,
        Some("query=up"),
        Some(b"query=down"),
        Some("alice"),
        &[],
        None,
    );
    assert!(matches!(dup, Err(Rejection::BadRequest(_))));
    let labels = enforce(
        &label(),
        "/api/v1/label/user/values",
        &http::Method::GET,
        None,
        None,
        Some("alice"),
        &[],
        None,
    )
    .unwrap();
    assert_eq!(
        labels.query.as_deref(),
        Some("match%5B%5D=%7Buser%3D%22alice%22%7D")
    );
}

#[test]
fn the_time_range_read_is_worked_out_for_retention_pools() {
    let now = 1_000_000.0;
    let plan = |rel: &str, q: &str, body: Option<&[u8]>, user: Option<&str>| {
        enforce(
            &label(),
            rel,
            &http::Method::POST,
            Some(q),
            body,
            user,
            &[],
            Some(now),
        )
        .unwrap()
        .earliest
    };
    // Instant query at `time` (default now), back by its longest range.
    assert_eq!(
        plan(
            "/api/v1/query",
            "query=rate(up%5B1h%5D)&time=500000",
            None,
            None
        ),
        Some(500_000.0 - 3600.0)
    );
    assert_eq!(
        plan("/api/v1/query", "query=up", None, Some("alice")),
        Some(now - 300.0)
    );
    // A range query in the form body (Grafana), RFC 3339 start.
    assert_eq!(
        plan(
            "/api/v1/query_range",
            "",
            Some(b"query=up&start=1970-01-02T00:00:00Z&end=900000&step=60"),
            None
        ),
        Some(86_400.0 - 300.0)
    );
    // Listings without `start` read all history; `1+1` reads nothing.
    assert_eq!(
        plan("/api/v1/labels", "", None, None),
        Some(f64::NEG_INFINITY)
    );
    assert_eq!(
        plan("/api/v1/series", "match[]=up&start=123", None, None),
        Some(123.0)
    );
    assert_eq!(plan("/api/v1/query", "query=1%2B1", None, None), None);
    // Not asked (not a retention pool): nothing worked out.
    let p = enforce(
        &label(),
        "/api/v1/query",
        &http::Method::GET,
        Some("query=up"),
        None,
        None,
        &[],
        None,
    )
    .unwrap();
    assert_eq!(p.earliest, None);
}

fn headers(content_type: Option<&str>) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    if let Some(c) = content_type {
        h.insert(http::header::CONTENT_TYPE, c.parse().unwrap());
    }
    h
}

const FORM: &str = "application/x-www-form-urlencoded";

#[test]
fn only_bodies_the_gateway_parses_are_accepted() {
    let form = |m: http::Method, ct: Option<&str>, body: &[u8]| {
        body_form(&m, &headers(ct), body).map(|f| f.is_some())
    };
    let status = |r: Result<bool, Rejection>| r.unwrap_err().status();
    assert_eq!(form(http::Method::POST, Some(FORM), b"query=up"), Ok(true));
    assert_eq!(
        form(
            http::Method::POST,
            Some("Application/X-WWW-Form-Urlencoded; charset=UTF-8"),
            b"q=1"
        ),
        Ok(true)
    );
    assert_eq!(form(http::Method::GET, None, b""), Ok(false));
    assert_eq!(form(http::Method::POST, Some("text/plain"), b""), Ok(false));
    // Multipart: on any method, with or without a body.
    for m in [http::Method::GET, http::Method::POST] {
        assert_eq!(
            status(form(
                m.clone(),
                Some("multipart/form-data; boundary=x"),
                b"--x"
            )),
            415
        );
        assert_eq!(
            status(form(m, Some("Multipart/Mixed; boundary=x"), b"")),
            415
        );
    }
    // A body on GET or HEAD, whatever its type.
    assert_eq!(
        status(form(http::Method::GET, Some(FORM), b"query=up")),
        400
    );
    assert_eq!(status(form(http::Method::HEAD, None, b"x")), 400);
    // Other media types, none, unreadable ones, other charsets, other parameters.
    for ct in [
        Some("text/plain"),
        Some("application/json"),
        None,
        Some("form"),
        Some("application/x-www-form-urlencodedx"),
        Some("application/x-www-form-urlencoded; charset=latin1"),
        Some("application/x-www-form-urlencoded; charset=utf-16"),
        Some("application/x-www-form-urlencoded; boundary=x"),
    ] {
        assert_eq!(
            status(form(http::Method::POST, ct, b"query=up")),
            415,
            "{ct:?}"
        );
    }
    let mut two = headers(Some(FORM));
    two.append(http::header::CONTENT_TYPE, "text/plain".parse().unwrap());
    assert_eq!(
        body_form(&http::Method::POST, &two, b"query=up")
            .unwrap_err()
            .status(),
        400
    );
}

/// Every `query` and `match[]` Prometheus would read from what goes upstream (the
/// rewritten URL and body, or the client's where nothing was rewritten), read the way Go
/// reads it, is confined to alice.
fn forwarded_is_confined(
    rel: &str,
    method: &http::Method,
    query: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<(), Rejection> {
    let form = body_form(method, &headers(content_type), body)?;
    let plan = enforce(
        &label(),
        rel,
        method,
        Some(query),
        form,
        Some("alice"),
        &[],
        None,
    )?;
    let url = plan.query.unwrap_or_else(|| query.to_string());
    let sent: Vec<u8> = match (&plan.body, form) {
        (Some(b), _) => b.to_vec(),
        (None, Some(_)) => panic!("a form was read but not re-encoded"),
        (None, None) => body.to_vec(),
    };
    let read = crate::enforce::go_form::form_values(method.as_str(), &url, content_type, &sent)
        .unwrap_or_else(|e| {
            panic!("{rel}?{query}: forwarded a body Prometheus reads unmodelled: {e:?}")
        });
    for (k, v) in read {
        if k == "query" || k == "match[]" {
            assert!(
                crate::enforce::promql::tests::all_confined(&v),
                "{method} {rel}?{query} body {:?}: Prometheus reads {k}={v}",
                String::from_utf8_lossy(body)
            );
        }
    }
    Ok(())
}

/// One request: endpoint, method, URL query, Content-Type, body.
type Case<'a> = (&'a str, &'a http::Method, String, Option<&'a str>, Vec<u8>);

/// The escape corpus × every way of encoding a request: each is refused, or what goes
/// upstream is confined as Prometheus reads it (the multipart hole, GET bodies, encoded
/// and repeated names, parameters in both places).
#[test]
fn every_encoding_of_the_escape_corpus_is_refused_or_confined() {
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let corpus = include_str!("../../../tests/promql_escapes.txt");
    let (mut accepted, mut refused) = (0, 0);
    for line in corpus
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
    {
        let q = line.split_once(' ').unwrap().1;
        let e = enc(q);
        let multipart = format!(
            "--b\r\nContent-Disposition: form-data; name=\"query\"\r\n\r\n{q}\r\n--b--\r\n"
        );
        let get = http::Method::GET;
        let post = http::Method::POST;
        let cases: Vec<Case> = vec![
            ("/api/v1/query", &get, format!("query={e}"), None, vec![]),
            (
                "/api/v1/query",
                &post,
                String::new(),
                Some(FORM),
                format!("query={e}").into(),
            ),
            (
                "/api/v1/query",
                &post,
                String::new(),
                Some("multipart/form-data; boundary=b"),
                multipart.clone().into(),
            ),
            (
                "/api/v1/query",
                &get,
                String::new(),
                Some("multipart/form-data; boundary=b"),
                multipart.into(),
            ),
            (
                "/api/v1/query",
                &get,
                String::new(),
                Some(FORM),
                format!("query={e}").into(),
            ),
            (
                "/api/v1/query",
                &post,
                "query=up".into(),
                Some(FORM),
                format!("query={e}").into(),
            ),
            ("/api/v1/query", &get, format!("%71uery={e}"), None, vec![]),
            (
                "/api/v1/query",
                &get,
                format!("query=up&query={e}"),
                None,
                vec![],
            ),
            (
                "/api/v1/query",
                &get,
                format!("query;x={e}&query=up"),
                None,
                vec![],
            ),
            (
                "/api/v1/query",
                &post,
                String::new(),
                Some("text/plain"),
                format!("query={e}").into(),
            ),
            (
                "/api/v1/query",
                &post,
                String::new(),
                None,
                format!("query={e}").into(),
            ),
            (
                "/api/v1/query_range",
                &post,
                format!("query={e}"),
                Some(FORM),
                b"start=1&end=2&step=1".to_vec(),
            ),
            (
                "/api/v1/series",
                &get,
                format!("match[]={e}&match%5B%5D={e}"),
                None,
                vec![],
            ),
            (
                "/api/v1/labels",
                &post,
                format!("match[]={e}"),
                Some(FORM),
                format!("match[]={e}").into(),
            ),
            (
                "/api/v1/label/job/values",
                &post,
                String::new(),
                Some("multipart/form-data; boundary=b"),
                b"--b--".to_vec(),
            ),
            ("/api/v1/labels", &get, String::new(), None, vec![]),
        ];
        for (rel, method, query, ct, body) in cases {
            match forwarded_is_confined(rel, method, &query, ct, &body) {
                Ok(()) => accepted += 1,
                Err(_) => refused += 1,
            }
        }
    }
    assert!(
        accepted > 100 && refused > 100,
        "{accepted} accepted, {refused} refused"
    );
}
