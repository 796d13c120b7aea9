//! Query parameters as CEEMS reads them: repeatable, values of one name OR-ed; `from`/`to`
//! in Unix seconds with a 24 h default window.

use super::ApiError;
use crate::accounting::store::UnitFilter;

/// The query string's pairs, in order. Unknown names are ignored (Grafana adds its own).
#[derive(Debug, Default)]
pub struct Params(Vec<(String, String)>);

const DAY: i64 = 86_400;

impl Params {
    pub fn parse(query: Option<&str>) -> Params {
        Params(
            form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// Every non-empty value of `name`.
    pub fn all(&self, name: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (k, v) in &self.0 {
            let v = v.trim();
            if k == name && !v.is_empty() && !out.iter().any(|o| o == v) {
                out.push(v.to_string());
            }
        }
        out
    }

    pub fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(k, _)| k == name)
    }

    /// One integer; a repeated or malformed one is a 400 naming it.
    pub fn int(&self, name: &str, what: &str) -> Result<Option<i64>, ApiError> {
        let values = self.all(name);
        match values.as_slice() {
            [] => Ok(None),
            [v] => v.parse::<i64>().map(Some).map_err(|_| {
                ApiError::bad(format!("query parameter '{name}': malformed {what} `{v}`"))
            }),
            _ => Err(ApiError::bad(format!(
                "query parameter '{name}': give it once, not {} times",
                values.len()
            ))),
        }
    }

    /// `from`/`to` (Unix seconds): both absent = the last 24 h; one absent = 24 h from or to
    /// the other. Milliseconds are refused with a hint, since CEEMS' `*_ts` fields are
    /// milliseconds and the mix-up is easy.
    pub fn window(&self, now: i64, max: i64) -> Result<(i64, i64), ApiError> {
        let from = self.int("from", "timestamp")?;
        let to = self.int("to", "timestamp")?;
        for (name, v) in [("from", from), ("to", to)] {
            if v.is_some_and(|v| !(0..100_000_000_000).contains(&v)) {
                return Err(ApiError::bad(format!(
                    "query parameter '{name}': expected Unix seconds (this looks like \
                     milliseconds or is negative)"
                )));
            }
        }
        let (from, to) = match (from, to) {
            (None, None) => (now - DAY, now),
            (Some(f), None) => (f, f + DAY),
            (None, Some(t)) => (t - DAY, t),
            (Some(f), Some(t)) => (f, t),
        };
        if to < from {
            return Err(ApiError::bad(
                "query parameter 'to': must not be before 'from'",
            ));
        }
        if to - from > max {
            return Err(ApiError::bad(format!(
                "maximum query window exceeded: 'from' to 'to' may span at most {} days",
                max / DAY
            )));
        }
        Ok((from, to))
    }

    /// `limit` (1..=max, default max) and `offset` (default 0).
    pub fn page(&self, max: usize) -> Result<(usize, usize), ApiError> {
        let limit = match self.int("limit", "number")? {
            None => max,
            Some(n) if n >= 1 && n as u64 <= max as u64 => n as usize,
            Some(_) => {
                return Err(ApiError::bad(format!(
                    "query parameter 'limit': must be between 1 and {max}"
                )));
            }
        };
        let offset = match self.int("offset", "number")? {
            None => 0,
            Some(n) if n >= 0 => n as usize,
            Some(_) => return Err(ApiError::bad("query parameter 'offset': must be 0 or more")),
        };
        Ok((limit, offset))
    }

    /// Refuses `user` where it has no meaning (on endpoints that are not `…/admin`).
    pub fn no_user(&self) -> Result<(), ApiError> {
        if self.has("user") {
            return Err(ApiError::bad(
                "query parameter 'user': only the …/admin endpoints filter by user",
            ));
        }
        Ok(())
    }

    /// The filter of a units or usage query.
    pub fn unit_filter(
        &self,
        now: i64,
        max_window: i64,
        users: bool,
    ) -> Result<UnitFilter, ApiError> {
        let (from, to) = self.window(now, max_window)?;
        Ok(UnitFilter {
            clusters: self.all("cluster_id"),
            uuids: self.all("uuid"),
            projects: self.all("project"),
            users: if users { self.all("user") } else { Vec::new() },
            from,
            to,
            running: self.has("running"),
            limit: usize::MAX / 2,
            offset: 0,
        })
    }

    /// The `field` values that are in `valid`; `Ok(None)` when none were asked for, 400 when
    /// some were but none is valid (CEEMS drops unknown ones silently otherwise).
    pub fn fields(&self, valid: &[&str]) -> Result<Option<Vec<String>>, ApiError> {
        let asked = self.all("field");
        if asked.is_empty() {
            return Ok(None);
        }
        let kept: Vec<String> = asked
            .into_iter()
            .filter(|f| valid.contains(&f.as_str()))
            .collect();
        if kept.is_empty() {
            return Err(ApiError::bad(format!(
                "invalid query fields: query parameter 'field' must name one of {}",
                valid.join(", ")
            )));
        }
        Ok(Some(kept))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_defaults_to_the_last_day_and_refuses_milliseconds() {
        let p = Params::parse(None);
        assert_eq!(
            p.window(1_000_000, 10 * DAY).unwrap(),
            (1_000_000 - DAY, 1_000_000)
        );
        let p = Params::parse(Some("from=100"));
        assert_eq!(p.window(0, 10 * DAY).unwrap(), (100, 100 + DAY));
        let p = Params::parse(Some("from=1700000000000"));
        assert!(matches!(p.window(0, DAY), Err(ApiError::BadData(m)) if m.contains("'from'")));
        let p = Params::parse(Some("to=abc"));
        assert!(matches!(p.window(0, DAY), Err(ApiError::BadData(m)) if m.contains("'to'")));
        let p = Params::parse(Some("from=0&to=864000"));
        assert!(matches!(p.window(0, DAY), Err(ApiError::BadData(m)) if m.contains("maximum")));
    }

    #[test]
    fn fields_keep_the_valid_ones_and_refuse_none_valid() {
        let valid = ["uuid", "name"];
        let p = Params::parse(Some("field=uuid&field=bogus"));
        assert_eq!(p.fields(&valid).unwrap(), Some(vec!["uuid".to_string()]));
        let p = Params::parse(Some("field=bogus"));
        assert!(p.fields(&valid).is_err());
        assert_eq!(Params::parse(None).fields(&valid).unwrap(), None);
    }
}
