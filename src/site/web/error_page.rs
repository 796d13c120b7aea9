//! Refusals as a readable page for browsers (`Accept: text/html`); API clients keep the JSON
//! envelope. Only the rejection's client message is shown, never an internal cause.

use bytes::Bytes;
use maud::html;

use super::page::layout;
use crate::error::Rejection;

/// Whether the client asked for HTML (a browser navigating), not JSON.
pub fn wants_html(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/html"))
}

fn title(status: u16) -> &'static str {
    match status {
        302 => "Log in first",
        400 => "Bad request",
        401 => "Not logged in",
        403 => "Not allowed",
        404 => "Not found",
        405 => "Method not allowed",
        413 => "Too large",
        429 => "Too many requests",
        500 => "Internal error",
        502 => "Bad gateway",
        503 => "Unavailable",
        504 => "Timed out",
        _ => "Error",
    }
}

/// The page for a refusal; `request_id` lets a user quote it to the operators.
pub fn html_rejection(r: &Rejection, request_id: &str) -> Bytes {
    let status = r.status();
    let body = html! {
        div.error {
            h1 { (status) " " (title(status)) }
            p.message { (r.message()) }
            @match status {
                401 | 302 => p { a href="/auth/login" { "Log in" } " and try again." },
                403 => p { "If you think you should be allowed, ask your HPC centre, quoting the request id below." },
                429 | 502..=504 => p { "Try again in a little while." },
                _ => {},
            }
            p { a href="/" { "Go to your page" } }
            p.reqid { "Request id: " code { (request_id) } }
        }
    };
    Bytes::from(
        layout(
            &format!("{status} {} — hpcgate", title(status)),
            html! {},
            body,
        )
        .into_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browsers_get_html_and_api_clients_json() {
        let mut h = http::HeaderMap::new();
        assert!(!wants_html(&h));
        h.insert("accept", "application/json".parse().unwrap());
        assert!(!wants_html(&h));
        h.insert(
            "accept",
            "text/html,application/xhtml+xml,*/*;q=0.8".parse().unwrap(),
        );
        assert!(wants_html(&h));
    }

    #[test]
    fn the_page_escapes_and_hides_internal_causes() {
        let page = html_rejection(&Rejection::NotFound("no route for /<script>".into()), "abc");
        let page = String::from_utf8(page.to_vec()).unwrap();
        assert!(page.contains("404 Not found"));
        assert!(page.contains("no route for /&lt;script&gt;"));
        assert!(!page.contains("<script>"));
        assert!(page.contains("abc"));
        let page = html_rejection(&Rejection::Internal("secret /etc/x".into()), "r");
        assert!(!String::from_utf8(page.to_vec()).unwrap().contains("/etc/x"));
    }
}
