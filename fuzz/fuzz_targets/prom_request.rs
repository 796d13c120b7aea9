//! Whole Prometheus requests on an enforced route: a PromQL text (wrapped in up to 255
//! levels of a nesting shape), an endpoint and a request encoding (URL, form body, multipart
//! on GET and POST, a body on GET, repeated and percent-encoded names, parameters in both
//! places, other media types, and raw URL/body/Content-Type bytes from the input).
//!
//! Properties, judged the way Prometheus reads the request (`enforce::go_form`, a model of
//! Go's `net/http`), not by the gateway's own reading:
//! - never panics, and never overflows the stack of a 1 MiB thread (a worker has 2 MiB);
//! - an accepted request never carries a body Prometheus would read as multipart;
//! - label mode: every `query` (query endpoints) and `match[]` (listing endpoints) value
//!   Prometheus reads from what goes upstream parses, and each of its selectors carries
//!   `user="alice"` and no equality on `user` to anyone else;
//! - ownership mode: each such value's selectors all pin `uuid` to ids the plan reports.
#![no_main]

#[path = "common/walk.rs"]
mod walk;

use hpcgate::enforce::go_form::form_values;
use hpcgate::enforce::prometheus::{PromqlMode, body_form, enforce};
use libfuzzer_sys::fuzz_target;
use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser;
use walk::{groups, selectors};

const FORM: &str = "application/x-www-form-urlencoded";
const ENDPOINTS: &[(&str, &str)] = &[
    ("/api/v1/query", "query"),
    ("/api/v1/query_range", "query"),
    ("/api/v1/query_exemplars", "query"),
    ("/api/v1/series", "match[]"),
    ("/api/v1/labels", "match[]"),
    ("/api/v1/label/job/values", "match[]"),
    ("/api/v1/metadata", "metric"),
];

fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Wraps `q` in `n` levels of one of the shapes that once overflowed the stack.
fn nest(q: &str, shape: u8, n: usize) -> String {
    let (open, close) = match shape % 6 {
        0 => ("(", ")"),
        1 => ("-", ""),
        2 => ("sum(", ")"),
        3 => ("", " + x"),
        4 => ("max_over_time(", "[1m:])"),
        _ => ("abs(-", ")"),
    };
    format!("{}{q}{}", open.repeat(n), close.repeat(n))
}

/// (method, URL query, Content-Type, body) for encoding `how` of parameter `name` = `q`.
fn encode(how: u8, name: &str, q: &str) -> (&'static str, String, Option<String>, Vec<u8>) {
    let e = enc(q);
    let n = enc(name);
    let multipart =
        format!("--b\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{q}\r\n--b--\r\n")
            .into_bytes();
    let form = Some(FORM.to_string());
    // Raw: the text itself is the URL query, the body, or Content-Type + body.
    let (first, rest) = q.split_once('\n').unwrap_or((q, ""));
    match how % 16 {
        0 => ("GET", format!("{n}={e}"), None, vec![]),
        1 => ("POST", String::new(), form, format!("{n}={e}").into_bytes()),
        2 => (
            "POST",
            String::new(),
            Some("multipart/form-data; boundary=b".into()),
            multipart,
        ),
        3 => (
            "GET",
            String::new(),
            Some("multipart/form-data; boundary=b".into()),
            multipart,
        ),
        4 => ("GET", String::new(), form, format!("{n}={e}").into_bytes()),
        5 => (
            "POST",
            format!("{n}=up"),
            form,
            format!("{n}={e}").into_bytes(),
        ),
        6 => (
            "GET",
            format!("{}={e}", name.replace('q', "%71").replace('m', "%6D")),
            None,
            vec![],
        ),
        7 => (
            "POST",
            format!("{n}={e}"),
            form,
            b"time=1&start=0&end=1&step=1".to_vec(),
        ),
        8 => ("GET", format!("{n}={e}&{n}=up&{n}={e}"), None, vec![]),
        9 => (
            "POST",
            String::new(),
            Some("text/plain".into()),
            format!("{n}={e}").into_bytes(),
        ),
        10 => ("POST", String::new(), None, format!("{n}={e}").into_bytes()),
        11 => ("GET", format!("{n};x={e}&{n}=up"), None, vec![]),
        12 => ("GET", q.to_string(), None, vec![]),
        13 => ("POST", String::new(), form, q.as_bytes().to_vec()),
        14 => ("POST", first.to_string(), form, rest.as_bytes().to_vec()),
        _ => (
            "POST",
            String::new(),
            Some(first.to_string()),
            rest.as_bytes().to_vec(),
        ),
    }
}

fn check(ownership: bool, rel: &str, how: u8, q: &str) {
    let Some(&(_, name)) = ENDPOINTS.iter().find(|(r, _)| *r == rel) else {
        return;
    };
    let (method, url, content_type, body) = encode(how, name, q);
    let method: http::Method = method.parse().unwrap();
    let mut headers = http::HeaderMap::new();
    if let Some(ct) = &content_type {
        match ct.parse() {
            Ok(v) => {
                headers.insert(http::header::CONTENT_TYPE, v);
            }
            Err(_) => return,
        }
    }
    let mode = if ownership {
        PromqlMode::Ownership {
            label: "uuid".into(),
            allow_metrics: vec![],
        }
    } else {
        PromqlMode::Label {
            label: "user".into(),
            from_groups: false,
        }
    };
    let Ok(form) = body_form(&method, &headers, &body) else {
        return;
    };
    let Ok(plan) = enforce(
        &mode,
        rel,
        &method,
        Some(&url),
        form,
        Some("alice"),
        &[],
        None,
    ) else {
        return;
    };
    let sent_url = plan.query.clone().unwrap_or(url);
    let sent_body = match (&plan.body, form) {
        (Some(b), _) => b.to_vec(),
        (None, Some(_)) => panic!("a form was read but not re-encoded"),
        (None, None) => body,
    };
    let read = form_values(
        method.as_str(),
        &sent_url,
        content_type.as_deref(),
        &sent_body,
    )
    .unwrap_or_else(|e| panic!("accepted a body Prometheus reads as {e:?}"));
    for (k, v) in read.iter().filter(|(k, _)| k == name && name != "metric") {
        let expr = parser::parse(v)
            .unwrap_or_else(|e| panic!("Prometheus reads {k}={v:?}, which does not parse: {e}"));
        let mut all = Vec::new();
        selectors(&expr, &mut all);
        for vs in all {
            for g in groups(vs) {
                if ownership {
                    let pins: Vec<&Matcher> = g.iter().filter(|m| m.name == "uuid").collect();
                    assert!(!pins.is_empty(), "{k}={v}: {vs} not pinned");
                    for m in pins {
                        let ids: Vec<&str> = match &m.op {
                            MatchOp::Equal => vec![m.value.as_str()],
                            MatchOp::Re(_) => m.value.split('|').collect(),
                            _ => panic!("{k}={v}: {m} accepted as a pin"),
                        };
                        for id in ids {
                            assert!(plan.ids.contains(id), "{k}={v}: id {id} not checked");
                        }
                    }
                } else {
                    let users: Vec<&Matcher> = g.iter().filter(|m| m.name == "user").collect();
                    assert!(
                        users
                            .iter()
                            .any(|m| matches!(m.op, MatchOp::Equal) && m.value == "alice"),
                        "{k}={v}: {vs} is not confined to alice"
                    );
                    assert!(
                        users
                            .iter()
                            .all(|m| !matches!(m.op, MatchOp::Equal) || m.value == "alice"),
                        "{k}={v}: {vs} names another user"
                    );
                }
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let [how, endpoint, shape, depth, rest @ ..] = data else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let q = nest(text, *shape, *depth as usize);
    let rel = ENDPOINTS[*endpoint as usize % ENDPOINTS.len()].0;
    let ownership = endpoint & 0x80 != 0;
    let how = *how;
    // A worker thread has 2 MiB of stack; check with half of that.
    std::thread::Builder::new()
        .stack_size(1024 * 1024)
        .spawn(move || check(ownership, rel, how, &q))
        .unwrap()
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e));
});
