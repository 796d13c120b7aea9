//! The Prometheus HTTP API behind a `prometheus` route: which endpoints a user may call, and
//! PromQL enforcement of their parameters (`query`, `match[]`), in the URL and in POST form
//! bodies (Grafana sends POST).
//!
//! Admins (policy `admin_groups`) pass unchanged. Everyone else may call the read API only;
//! a `query` given twice (URL and body, or twice in one) is refused rather than guessed at,
//! since Prometheus and the gateway might not pick the same one; label listings without a
//! `match[]` get the user's own, so they cannot enumerate other users' values.
//!
//! The gateway decides on the request Prometheus will read. Prometheus (Go's `net/http`,
//! see [`super::go_form`]) reads the URL's query, a POST form body, and a multipart body on
//! *any* method. So where it enforces, the gateway reads the whole body and accepts exactly
//! what it parses and rewrites itself ([`body_form`]): no body, or a POST body of
//! `application/x-www-form-urlencoded` (UTF-8). Every other body is refused — multipart
//! (415), any body on GET or HEAD (400), another or a missing media type (415), another
//! charset (415) — and both the URL's query and the form go upstream re-encoded from the
//! gateway's own parse, so no parameter is forwarded unread.

pub mod config;

pub use config::PromqlMode;

use std::collections::BTreeSet;

use bytes::Bytes;
use pingora::proxy::Session;

use super::promql::{
    Enforced, Refusal, confine_expr, earliest_read, enforce_selector, own_selector, parse,
    pinned_ids, pinned_ids_of_selector, print,
};
use crate::authenticate::Caller;
use crate::authorize::Permit;
use crate::authorize::cedar::Policies;
use crate::error::Rejection;
use crate::proxy::upstream::config::Balance;

/// Largest POST form the gateway reads to enforce (Prometheus queries are far smaller).
pub const MAX_FORM_BYTES: usize = 60 * 1024;

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

/// The first value of `key`, body before URL (as Prometheus' `FormValue` reads them).
fn param<'p>(
    url: &'p [(String, String)],
    body: Option<&'p [(String, String)]>,
    key: &str,
) -> Option<&'p str> {
    body.into_iter()
        .flatten()
        .chain(url.iter())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// A Prometheus time parameter: Unix seconds (with fraction) or RFC 3339.
fn parse_time(s: &str) -> Option<f64> {
    if let Ok(t) = s.parse::<f64>() {
        return t.is_finite().then_some(t);
    }
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    Some(t.unix_timestamp_nanos() as f64 / 1e9)
}

/// The time range a request reads: `(start, end)` for query parameters, and for selector
/// listings the oldest time itself (all history without `start`).
enum Range {
    Eval(f64, f64),
    Since(f64),
    Nothing,
}

fn range_of(
    rel: &str,
    kind: Params,
    url: &[(String, String)],
    body: Option<&[(String, String)]>,
    now: f64,
) -> Range {
    let get = |k| {
        param(url, body, k)
            .filter(|v| !v.is_empty())
            .and_then(parse_time)
    };
    match (kind, rel) {
        (Params::Query, "/api/v1/query") => {
            let t = get("time").unwrap_or(now);
            Range::Eval(t, t)
        }
        (Params::Query, "/api/v1/format_query") | (Params::Free, _) => Range::Nothing,
        (Params::Query, _) => Range::Eval(
            get("start").unwrap_or(f64::NEG_INFINITY),
            get("end").unwrap_or(now),
        ),
        (Params::Match, _) => Range::Since(get("start").unwrap_or(f64::NEG_INFINITY)),
    }
}

/// How a user's request is confined.
enum Rule<'a> {
    /// `label` mode: add the user's matcher.
    Confine(Enforced<'a>),
    /// `ownership` mode: collect the pinned job ids.
    Pin { label: &'a str, allow: &'a [String] },
}

/// Applies the rule (if any) to the data-reading parameters of one parameter list: rewrites
/// them (`label`) or collects their job ids into `ids` (`ownership`). Returns the oldest
/// sample time their queries read (when `range` is given).
fn rewrite(
    params: &mut [(String, String)],
    kind: Params,
    rule: Option<&Rule<'_>>,
    range: &Range,
    ids: &mut BTreeSet<String>,
) -> Result<f64, Rejection> {
    let mut earliest = f64::INFINITY;
    for (k, v) in params.iter_mut() {
        match (kind, k.as_str()) {
            (Params::Query, "query") => {
                let mut expr = match parse(v) {
                    Ok(x) => x,
                    // Not PromQL: Prometheus will say so, unless we must enforce.
                    Err(r) if rule.is_some() => return Err(refusal(r)),
                    Err(_) => continue,
                };
                if let Range::Eval(start, end) = range {
                    earliest = earliest.min(earliest_read(&expr, *start, *end));
                }
                match rule {
                    Some(Rule::Confine(e)) => {
                        confine_expr(&mut expr, e).map_err(refusal)?;
                        *v = print(&expr).map_err(refusal)?;
                    }
                    Some(Rule::Pin { label, allow }) => {
                        ids.extend(pinned_ids(&expr, label, allow).map_err(refusal)?);
                    }
                    None => {}
                }
            }
            (Params::Match, "match[]") => match rule {
                Some(Rule::Confine(e)) => *v = enforce_selector(v, e).map_err(refusal)?,
                Some(Rule::Pin { label, allow }) => {
                    ids.extend(pinned_ids_of_selector(v, label, allow).map_err(refusal)?);
                }
                None => {}
            },
            _ => {}
        }
    }
    Ok(earliest)
}

/// The request as it must go upstream.
pub struct Plan {
    /// The new query string (without `?`), when it changed.
    pub query: Option<String>,
    /// The new form body, when it changed.
    pub body: Option<Bytes>,
    /// The enforced expressions (`query`, `match[]`), for the audit log.
    pub enforced: Vec<String>,
    /// The oldest sample the request reads (Unix seconds; `-inf` for all history), when it
    /// reads any and the caller asked (`retention` pools).
    pub earliest: Option<f64>,
    /// `ownership` mode: the job ids the request pins, to check against the accounting
    /// store before it goes upstream.
    pub ids: BTreeSet<String>,
}

/// Checks and rewrites one request. `rel` is the path below the route's prefix, `query` the
/// URL's query string, `body` the POST form (already read, at most [`MAX_FORM_BYTES`]);
/// `user` is `None` for admins; `groups` are the caller's. With `now`, the plan says how far
/// back the request reads.
pub fn enforce(
    mode: &PromqlMode,
    rel: &str,
    method: &http::Method,
    query: Option<&str>,
    body: Option<&[u8]>,
    user: Option<&str>,
    groups: &[String],
    now: Option<f64>,
) -> Result<Plan, Rejection> {
    let mut plan = Plan {
        query: None,
        body: None,
        enforced: Vec::new(),
        earliest: None,
        ids: BTreeSet::new(),
    };
    let one;
    let values: Vec<&str>;
    let rule = match (mode, user) {
        (PromqlMode::Label { label, from_groups }, Some(user)) => {
            values = if *from_groups {
                groups.iter().map(String::as_str).collect()
            } else {
                one = [user];
                one.to_vec()
            };
            Some(Rule::Confine(Enforced {
                label,
                values: &values,
            }))
        }
        (
            PromqlMode::Ownership {
                label,
                allow_metrics,
            },
            Some(_),
        ) => Some(Rule::Pin {
            label,
            allow: allow_metrics,
        }),
        _ => None,
    };
    if rule.is_none() && now.is_none() {
        return Ok(plan);
    }
    let kind = endpoint(rel);
    if rule.is_some() {
        if kind.is_none() {
            return Err(Rejection::Forbidden(format!(
                "{rel} is not part of the Prometheus read API open to users (query, \
                 query_range, series, labels, label values, query_exemplars, metadata, \
                 format_query, buildinfo)"
            )));
        }
        if !matches!(
            *method,
            http::Method::GET | http::Method::POST | http::Method::HEAD
        ) {
            return Err(Rejection::Forbidden(format!(
                "{method} is not allowed on the Prometheus read API"
            )));
        }
    }
    // Admins on other endpoints (admin API, federate): unchanged, any backend.
    let Some(kind) = kind else {
        return Ok(plan);
    };
    let mut url_params = parse_form(query.unwrap_or("").as_bytes());
    let mut body_params = body.map(parse_form);
    let range = match now {
        Some(now) => range_of(rel, kind, &url_params, body_params.as_deref(), now),
        None => Range::Nothing,
    };
    let all = || {
        url_params
            .iter()
            .chain(body_params.iter().flatten())
            .map(|(k, _)| k.as_str())
    };
    if rule.is_some() && kind == Params::Query && all().filter(|k| *k == "query").count() > 1 {
        return Err(Rejection::BadRequest(
            "`query` is given more than once; send it once".into(),
        ));
    }
    let needs_match = kind == Params::Match && !all().any(|k| k == "match[]");
    let rule = rule.as_ref();
    let mut ids = BTreeSet::new();
    let mut earliest = rewrite(&mut url_params, kind, rule, &range, &mut ids)?;
    if let Some(b) = body_params.as_mut() {
        earliest = earliest.min(rewrite(b, kind, rule, &range, &mut ids)?);
    }
    plan.earliest = match range {
        // (+inf: the queries read no series.)
        Range::Eval(..) if earliest != f64::INFINITY => Some(earliest),
        Range::Since(t) => Some(t),
        _ => None,
    };
    match rule {
        None => return Ok(plan),
        Some(Rule::Confine(e)) if needs_match => {
            let own = own_selector(e).map_err(refusal)?;
            url_params.push(("match[]".into(), own));
        }
        Some(Rule::Pin { label, .. }) if needs_match => {
            return Err(Rejection::Forbidden(format!(
                "label and series listings need a match[] that pins your jobs' {label}s \
                 (e.g. match[]={{{label}=~\"<id>|<id>\"}})"
            )));
        }
        Some(Rule::Pin { .. }) => plan.ids = ids,
        Some(Rule::Confine(_)) => {}
    }
    plan.enforced = url_params
        .iter()
        .chain(body_params.iter().flatten())
        .filter(|(k, _)| k == "query" || k == "match[]")
        .map(|(_, v)| v.clone())
        .collect();
    plan.query = Some(encode_form(&url_params));
    plan.body = body_params.map(|b| Bytes::from(encode_form(&b)));
    Ok(plan)
}

/// The body of a request whose parameters are enforced, as the gateway reads it: `None`
/// when there is none, the form when it is one the gateway parses (`application/x-www-
/// form-urlencoded` on POST, UTF-8), else refused: Prometheus would read parameters from it
/// that the gateway did not (multipart on any method, GET bodies under other parsers).
pub fn body_form<'b>(
    method: &http::Method,
    headers: &http::HeaderMap,
    body: &'b [u8],
) -> Result<Option<&'b [u8]>, Rejection> {
    let types: Vec<&http::HeaderValue> =
        headers.get_all(http::header::CONTENT_TYPE).iter().collect();
    if types.len() > 1 {
        return Err(Rejection::BadRequest(
            "more than one Content-Type header".into(),
        ));
    }
    let content_type =
        match types.first() {
            Some(v) => Some(v.to_str().map_err(|_| {
                Rejection::BadRequest("the Content-Type header is not ASCII".into())
            })?),
            None => None,
        };
    let media = content_type.map(|c| (c, super::go_form::media_type(c)));
    const HOW: &str = "send the parameters in the URL, or POST them as \
                       application/x-www-form-urlencoded (UTF-8), as Grafana does";
    if let Some((_, Some(m))) = &media
        && m.starts_with("multipart/")
    {
        return Err(Rejection::UnsupportedMediaType(format!(
            "{m} bodies are not accepted on this route: Prometheus would read parameters \
             from them that the gateway does not enforce; {HOW}"
        )));
    }
    if body.is_empty() {
        return Ok(None);
    }
    if *method != http::Method::POST {
        return Err(Rejection::BadRequest(format!(
            "a {method} request with a body is not accepted on this route (Prometheus \
             could read parameters from it that the gateway does not enforce); {HOW}"
        )));
    }
    match media {
        Some((raw, Some(m))) if m == "application/x-www-form-urlencoded" => {
            for param in raw.split(';').skip(1) {
                let (name, value) = param.split_once('=').unwrap_or((param, ""));
                let value = value.trim().trim_matches('"');
                let utf8 = ["utf-8", "utf8", "us-ascii"]
                    .iter()
                    .any(|c| value.eq_ignore_ascii_case(c));
                if !name.trim().eq_ignore_ascii_case("charset") || !utf8 {
                    return Err(Rejection::UnsupportedMediaType(format!(
                        "Content-Type parameter `{}` is not accepted: form bodies are read \
                         as UTF-8 only (charset=utf-8)",
                        param.trim()
                    )));
                }
            }
            Ok(Some(body))
        }
        Some((_, Some(m))) => Err(Rejection::UnsupportedMediaType(format!(
            "{m} bodies are not accepted on this route; {HOW}"
        ))),
        Some((_, None)) => Err(Rejection::UnsupportedMediaType(format!(
            "the Content-Type header cannot be read; {HOW}"
        ))),
        None => Err(Rejection::UnsupportedMediaType(format!(
            "a body without a Content-Type is not accepted on this route; {HOW}"
        ))),
    }
}

/// What admission decided for a `prometheus` route's request.
pub struct Admitted {
    /// The rewritten form body, sent instead of the client's.
    pub body: Option<Bytes>,
    /// The PromQL sent upstream, for the audit log.
    pub promql: Option<String>,
    /// The oldest sample it reads (`retention` pools pick a backend by it).
    pub earliest: Option<f64>,
    /// A call of the read API (GET or POST): safe to send to another backend again.
    pub read_api: bool,
}

/// The whole request body, at most [`MAX_FORM_BYTES`], kept for pingora to replay.
async fn read_body(session: &mut Session) -> Result<Vec<u8>, Rejection> {
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
            Ok(None) => return Ok(buf),
            Err(_) => {
                return Err(Rejection::BadRequest(
                    "the request body could not be read".into(),
                ));
            }
        }
    }
}

/// The `prometheus` route step of admission: reads the body where it matters (at most
/// [`MAX_FORM_BYTES`]), rewrites the URL's query in place, and says what else changes.
pub async fn admit(
    session: &mut Session,
    permit: &Permit,
    policies: &Policies,
    path: &str,
) -> Result<Admitted, Rejection> {
    let route = &permit.route().config;
    let (user, groups) = match permit.caller() {
        Caller::User(id) if policies.is_admin(id) => (None, &[][..]),
        Caller::User(id) => (Some(id.user().to_string()), id.groups()),
        Caller::Public if route.promql == PromqlMode::Off => (None, &[][..]),
        Caller::Public => {
            return Err(Rejection::Forbidden(
                "this public Prometheus route has PromQL enforcement but no user to enforce; \
                 set promql = { mode = \"off\" } or require authentication"
                    .into(),
            ));
        }
    };
    // Retention pools pick a backend by the time range, for admins too.
    let now =
        (permit.route().pool.config.balance == Balance::Retention).then(|| crate::db::now() as f64);
    let method = session.req_header().method.clone();
    let enforcing = user.is_some() && route.promql != PromqlMode::Off;
    let rel = match path.strip_prefix(route.path_prefix.as_str()) {
        Some(r) if route.path_prefix != "/" => r,
        _ => path,
    };
    // Where it enforces, the gateway reads every body (to refuse what it does not parse);
    // else only a form it may take the time range from.
    let read_api = endpoint(rel).is_some();
    let reads_body = (enforcing && read_api)
        || (now.is_some()
            && method == http::Method::POST
            && is_form(&session.req_header().headers));
    let body = if reads_body {
        Some(read_body(session).await?)
    } else {
        None
    };
    let req = session.req_header();
    let form = match &body {
        Some(b) if enforcing => body_form(&method, &req.headers, b)?,
        Some(b) => Some(b.as_slice()),
        None => None,
    };
    let plan = enforce(
        &route.promql,
        rel,
        &method,
        req.uri.query(),
        form,
        user.as_deref(),
        groups,
        now,
    )?;
    if !plan.ids.is_empty() {
        // Every id the request names must be the user's (or of their projects).
        let (Some(check), Some(user)) = (&permit.route().ownership, user.as_deref()) else {
            return Err(Rejection::Internal(
                "ownership mode without its check".into(),
            ));
        };
        check.check(user, &plan.ids).await?;
    }
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
    Ok(Admitted {
        body: plan.body,
        promql: (!plan.enforced.is_empty()).then(|| plan.enforced.join(" ; ")),
        earliest: plan.earliest,
        read_api,
    })
}

/// A form body by its media type (for the time range only: nothing is enforced on it).
fn is_form(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(super::go_form::media_type)
        .is_some_and(|m| m == "application/x-www-form-urlencoded")
}

#[cfg(test)]
mod tests;
