//! How Prometheus reads a request's parameters: Go's `net/http` (`r.FormValue`, and
//! `r.Form["match[]"]` after `r.ParseMultipartForm`), written down as a model.
//!
//! The gateway enforces PromQL only on encodings it parses itself and refuses the rest
//! (`prometheus::body_form`); this model of the upstream's own reading is what the tests and
//! the `prom_request` fuzz target judge a forwarded request by. What it follows, from Go's
//! `net/http/request.go` and `net/url/url.go`:
//! - the URL's query is always read; pairs split on `&` only; a pair containing `;` is
//!   skipped (Go 1.17+); a pair whose name or value has a bad `%` escape is skipped; `+` is
//!   a space;
//! - a body is read as a form only for POST, PUT and PATCH with the media type
//!   `application/x-www-form-urlencoded` (parameters such as `charset` ignored; a missing
//!   Content-Type counts as `application/octet-stream`, an unparsable one reads nothing);
//!   its values come before the URL's for the same name;
//! - a `multipart/form-data` body is read for **every** method, GET included.

/// Why the model cannot say what Go reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unread {
    /// The body is multipart, which Go parses (for any method) and this model does not.
    Multipart,
}

/// The media type of a Content-Type value, lower case, without parameters, as Go's
/// `mime.ParseMediaType` gives it; `None` when Go could not parse it.
pub fn media_type(content_type: &str) -> Option<String> {
    let essence = content_type.split(';').next()?.trim().to_ascii_lowercase();
    let (kind, sub) = essence.split_once('/')?;
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?=".contains(&b))
    };
    (token(kind) && token(sub)).then_some(essence)
}

fn unhex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Go's `url.QueryUnescape`: `+` is a space; a `%` not followed by two hex digits fails.
fn query_unescape(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hi = unhex(*b.get(i + 1)?)?;
                let lo = unhex(*b.get(i + 2)?)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// Go's `url.ParseQuery`, keeping every pair it keeps, in order.
pub fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty() && !pair.contains(';'))
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Some((query_unescape(k)?, query_unescape(v)?))
        })
        .collect()
}

/// Every form value Prometheus reads from a request, body values first (as `r.Form` holds
/// them after `ParseForm`), then the URL's.
pub fn form_values(
    method: &str,
    query: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Vec<(String, String)>, Unread> {
    let media = media_type(content_type.unwrap_or("application/octet-stream"));
    if media.as_deref() == Some("multipart/form-data") {
        return Err(Unread::Multipart);
    }
    let mut values = Vec::new();
    if matches!(method, "POST" | "PUT" | "PATCH")
        && media.as_deref() == Some("application/x-www-form-urlencoded")
    {
        values = parse_query(&String::from_utf8_lossy(body));
    }
    values.extend(parse_query(query));
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_as_go_does() {
        assert_eq!(
            parse_query("a=1&%71uery=x+y&bad=%zz&semi;colon=1&&b"),
            vec![
                ("a".into(), "1".into()),
                ("query".into(), "x y".into()),
                ("b".into(), "".into())
            ]
        );
        let v = form_values(
            "POST",
            "query=url",
            Some("Application/X-WWW-Form-Urlencoded; charset=latin1"),
            b"query=body",
        )
        .unwrap();
        assert_eq!(v[0].1, "body");
        assert_eq!(v[1].1, "url");
        // A GET body is not read as a form; a multipart one is, on any method.
        assert_eq!(
            form_values(
                "GET",
                "",
                Some("application/x-www-form-urlencoded"),
                b"query=x"
            ),
            Ok(vec![])
        );
        assert_eq!(
            form_values("GET", "", Some("multipart/form-data; boundary=x"), b""),
            Err(Unread::Multipart)
        );
        assert_eq!(
            media_type("text/plain; charset=utf-8").as_deref(),
            Some("text/plain")
        );
        assert_eq!(media_type("bad type"), None);
    }
}
