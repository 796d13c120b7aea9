//! The Prometheus HTTP API behind a `prometheus` route: which endpoints a user may call, and
//! PromQL enforcement of their parameters (`query`, `match[]`), in the URL and in POST form
//! bodies (Grafana sends POST).
//!
//! Admins (policy `admin_groups`) pass unchanged. Everyone else may call the read API only;
//! a `query` given twice (URL and body, or twice in one) is refused rather than guessed at,
//! since Prometheus and the gateway might not pick the same one; label listings without a
//! `match[]` get the user's own, so they cannot enumerate other users' values.

use bytes::Bytes;
use pingora::proxy::Session;

use super::promql::{Enforced, Refusal, enforce_query, enforce_selector};
use crate::authenticate::Caller;
use crate::authorize::Permit;
use crate::authorize::cedar::Policies;
use crate::error::Rejection;

/// Largest POST form the gateway reads to enforce (Prometheus queries are far smaller).
pub const MAX_FORM_BYTES: usize = 60 * 1024;

/// How a route confines PromQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromqlMode {
    /// Everyone reads everything (explicitly configured).
    Off,
    /// Every selector gets `<label>="<user>"`.
    Label { label: String },
}

/// What parameters of an endpoint read data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Params {
    /// `query`: one PromQL expression.
    Query,
    /// `match[]`: series selectors, required by the gateway (added if missing).
    Match,
    /// Reads no series.
    Free,
}

fn endpoint(rel: &str) -> Option<Params> {
    Some(match rel {
        "/api/v1/query"
        | "/api/v1/query_range"
        | "/api/v1/query_exemplars"
        | "/api/v1/format_query" => Params::Query,
        "/api/v1/series" | "/api/v1/labels" => Params::Match,
        "/api/v1/metadata" | "/api/v1/status/buildinfo" => Params::Free,
        _ => {
            let name = rel
                .strip_prefix("/api/v1/label/")?
                .strip_suffix("/values")?;
            if name.is_empty() || name.contains('/') {
                return None;
            }
            Params::Match
        }
    })
}

fn refusal(r: Refusal) -> Rejection {
    match r {
        Refusal::Invalid(m) => Rejection::BadRequest(format!("invalid PromQL: {m}")),
        Refusal::Forbidden(m) => Rejection::Forbidden(m),
    }
}

fn parse_form(bytes: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(bytes).into_owned().collect()
}

fn encode_form(params: &[(String, String)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish()
}

/// Rewrites the data-reading parameters of one parameter list.
fn rewrite(
    params: &mut [(String, String)],
    kind: Params,
    e: &Enforced<'_>,
) -> Result<(), Rejection> {
    for (k, v) in params.iter_mut() {
        match (kind, k.as_str()) {
            (Params::Query, "query") => *v = enforce_query(v, e).map_err(refusal)?,
            (Params::Match, "match[]") => *v = enforce_selector(v, e).map_err(refusal)?,
            _ => {}
        }
    }
    Ok(())
}

/// The request as it must go upstream.
pub struct Plan {
    /// The new query string (without `?`), when it changed.
    pub query: Option<String>,
    /// The new form body, when there was one.
    pub body: Option<Bytes>,
    /// The enforced expressions (`query`, `match[]`), for the audit log.
    pub enforced: Vec<String>,
}

/// Checks and rewrites one request. `rel` is the path below the route's prefix, `query` the
/// URL's query string, `body` the POST form (already read, at most [`MAX_FORM_BYTES`]);
/// `user` is `None` for admins.
pub fn enforce(
    mode: &PromqlMode,
    rel: &str,
    method: &http::Method,
    query: Option<&str>,
    body: Option<&[u8]>,
    user: Option<&str>,
) -> Result<Plan, Rejection> {
    let unchanged = Plan {
        query: None,
        body: None,
        enforced: Vec::new(),
    };
    let (PromqlMode::Label { label }, Some(user)) = (mode, user) else {
        return Ok(unchanged);
    };
    let Some(kind) = endpoint(rel) else {
        return Err(Rejection::Forbidden(format!(
            "{rel} is not part of the Prometheus read API open to users (query, query_range, \
             series, labels, label values, query_exemplars, metadata, format_query, buildinfo)"
        )));
    };
    if !matches!(
        *method,
        http::Method::GET | http::Method::POST | http::Method::HEAD
    ) {
        return Err(Rejection::Forbidden(format!(
            "{method} is not allowed on the Prometheus read API"
        )));
    }
    let e = Enforced { label, value: user };
    let mut url_params = parse_form(query.unwrap_or("").as_bytes());
    let mut body_params = body.map(parse_form);
    let all = || {
        url_params
            .iter()
            .chain(body_params.iter().flatten())
            .map(|(k, _)| k.as_str())
    };
    if kind == Params::Query && all().filter(|k| *k == "query").count() > 1 {
        return Err(Rejection::BadRequest(
            "`query` is given more than once; send it once".into(),
        ));
    }
    let needs_match = kind == Params::Match && !all().any(|k| k == "match[]");
    rewrite(&mut url_params, kind, &e)?;
    if let Some(b) = body_params.as_mut() {
        rewrite(b, kind, &e)?;
    }
    if needs_match {
        let own = enforce_selector(&format!("{{{label}=\"{user}\"}}"), &e).map_err(refusal)?;
        url_params.push(("match[]".into(), own));
    }
    let enforced = url_params
        .iter()
        .chain(body_params.iter().flatten())
        .filter(|(k, _)| k == "query" || k == "match[]")
        .map(|(_, v)| v.clone())
        .collect();
    Ok(Plan {
        query: Some(encode_form(&url_params)),
        body: body_params.map(|b| Bytes::from(encode_form(&b))),
        enforced,
    })
}

/// The `prometheus` route step of admission: reads a POST form (at most
/// [`MAX_FORM_BYTES`]), rewrites the URL's query in place, and returns the rewritten form
/// body (if there was one) and the PromQL sent upstream, for the audit log.
pub async fn admit(
    session: &mut Session,
    permit: &Permit,
    policies: &Policies,
    path: &str,
) -> Result<(Option<Bytes>, Option<String>), Rejection> {
    let route = &permit.route().config;
    let user = match permit.caller() {
        Caller::User(id) if policies.is_admin(id) => None,
        Caller::User(id) => Some(id.user().to_string()),
        Caller::Public if route.promql == PromqlMode::Off => None,
        Caller::Public => {
            return Err(Rejection::Forbidden(
                "this public Prometheus route has PromQL enforcement but no user to enforce;                  set promql = { mode = \"off\" } or require authentication"
                    .into(),
            ));
        }
    };
    let req = session.req_header();
    let is_form = req
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        });
    let method = req.method.clone();
    let body = if user.is_some() && method == http::Method::POST && is_form {
        session.enable_retry_buffering();
        let mut buf = Vec::new();
        loop {
            match session.read_request_body().await {
                Ok(Some(chunk)) => {
                    buf.extend_from_slice(&chunk);
                    if buf.len() > MAX_FORM_BYTES {
                        return Err(Rejection::TooLarge(format!(
                            "Prometheus form bodies are limited to {} KiB",
                            MAX_FORM_BYTES / 1024
                        )));
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    return Err(Rejection::BadRequest(
                        "the request body could not be read".into(),
                    ));
                }
            }
        }
        Some(buf)
    } else {
        None
    };
    let rel = match path.strip_prefix(route.path_prefix.as_str()) {
        Some(r) if route.path_prefix != "/" => r,
        _ => path,
    };
    let req = session.req_header();
    let plan = enforce(
        &route.promql,
        rel,
        &method,
        req.uri.query(),
        body.as_deref(),
        user.as_deref(),
    )?;
    if let Some(q) = plan.query {
        let target = if q.is_empty() {
            req.uri.path().to_string()
        } else {
            format!("{}?{q}", req.uri.path())
        };
        let uri = target
            .parse::<http::Uri>()
            .map_err(|e| Rejection::Internal(format!("rewritten Prometheus URI: {e}")))?;
        session.req_header_mut().set_uri(uri);
    }
    let promql = (!plan.enforced.is_empty()).then(|| plan.enforced.join(" ; "));
    Ok((plan.body, promql))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label() -> PromqlMode {
        PromqlMode::Label {
            label: "user".into(),
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
            let r = enforce(&label(), rel, &http::Method::GET, None, None, Some("alice"));
            assert!(matches!(r, Err(Rejection::Forbidden(_))), "{rel}");
        }
        // Admins (no user to enforce) pass unchanged.
        let r = enforce(&label(), "/federate", &http::Method::GET, None, None, None).unwrap();
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
        );
        assert!(matches!(dup, Err(Rejection::BadRequest(_))));
        let labels = enforce(
            &label(),
            "/api/v1/label/user/values",
            &http::Method::GET,
            None,
            None,
            Some("alice"),
        )
        .unwrap();
        assert_eq!(
            labels.query.as_deref(),
            Some("match%5B%5D=%7Buser%3D%22alice%22%7D")
        );
    }
}
