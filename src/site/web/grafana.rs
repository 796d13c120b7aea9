//! The link from a job to its Grafana dashboard, from `[web] grafana_url`: a URL with
//! `{uuid}`, `{cluster}`, `{start_ms}` and `{end_ms}` placeholders. Values are
//! percent-encoded, so a job's uuid or cluster name cannot change the link's shape.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

const PLACEHOLDERS: &[&str] = &["uuid", "cluster", "start_ms", "end_ms"];

/// Everything but RFC 3986's unreserved characters is encoded.
const VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A piece of a template: literal text or a placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(&'static str),
}

/// A checked `grafana_url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrafanaTemplate(Vec<Part>);

impl GrafanaTemplate {
    /// Checks the template: an `http(s)://` URL whose `{…}` are all known placeholders.
    pub fn parse(t: &str) -> Result<GrafanaTemplate, String> {
        if !(t.starts_with("https://") || t.starts_with("http://")) {
            return Err("must be an http:// or https:// URL".into());
        }
        if t.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err("may not hold spaces or control characters".into());
        }
        let mut parts = Vec::new();
        let mut rest = t;
        while let Some(open) = rest.find(['{', '}']) {
            if rest[open..].starts_with('}') {
                return Err("has a `}` without its `{`".into());
            }
            let close = rest[open..].find('}').ok_or("has a `{` without its `}`")? + open;
            let name = &rest[open + 1..close];
            let var = PLACEHOLDERS.iter().find(|p| **p == name).ok_or_else(|| {
                format!(
                    "unknown placeholder `{{{name}}}`; use {}",
                    PLACEHOLDERS
                        .iter()
                        .map(|p| format!("{{{p}}}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            parts.push(Part::Var(var));
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        let tpl = GrafanaTemplate(parts);
        openidconnect::url::Url::parse(&tpl.link("u", "c", 0, 0))
            .map_err(|e| format!("is not a URL: {e}"))?;
        Ok(tpl)
    }

    /// The link for one job (times in Unix milliseconds).
    pub fn link(&self, uuid: &str, cluster: &str, start_ms: i64, end_ms: i64) -> String {
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Var("uuid") => out.extend(utf8_percent_encode(uuid, VALUE)),
                Part::Var("cluster") => out.extend(utf8_percent_encode(cluster, VALUE)),
                Part::Var("start_ms") => out.push_str(&start_ms.to_string()),
                Part::Var(_) => out.push_str(&end_ms.to_string()),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_replaced_and_values_encoded() {
        let t = GrafanaTemplate::parse(
            "https://grafana.example.org/d/job?var-uuid={uuid}&var-c={cluster}&from={start_ms}&to={end_ms}",
        )
        .unwrap();
        assert_eq!(
            t.link("123", "slurm-0", 1_700_000_000_000, 1_700_000_360_000),
            "https://grafana.example.org/d/job?var-uuid=123&var-c=slurm-0&from=1700000000000&to=1700000360000"
        );
        // A hostile uuid cannot add parameters or leave the query.
        assert_eq!(
            t.link("1&x=2#/../\"<", "a b", 0, 1),
            "https://grafana.example.org/d/job?var-uuid=1%26x%3D2%23%2F..%2F%22%3C&var-c=a%20b&from=0&to=1"
        );
        // Placeholders may repeat, or be absent.
        let t = GrafanaTemplate::parse("http://g/{uuid}/{uuid}").unwrap();
        assert_eq!(t.link("x", "c", 0, 0), "http://g/x/x");
        let t = GrafanaTemplate::parse("https://g/d/job").unwrap();
        assert_eq!(t.link("x", "c", 0, 0), "https://g/d/job");
    }

    #[test]
    fn bad_templates_are_refused_with_a_reason() {
        for (t, why) in [
            ("grafana.example.org/d/{uuid}", "http"),
            ("javascript:alert(1)//{uuid}", "http"),
            ("https://g/d?u={user}", "unknown placeholder `{user}`"),
            ("https://g/d?u={uuid", "without its `}`"),
            ("https://g/d?u=uuid}", "without its `{`"),
            ("https://g/d?u={uuid} x", "spaces"),
            ("https://", "not a URL"),
        ] {
            let e = GrafanaTemplate::parse(t).unwrap_err();
            assert!(e.contains(why), "{t}: {e}");
        }
    }
}
