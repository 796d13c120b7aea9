//! The page's queries over the accounting store: the user's own jobs (filtered, paged,
//! latest first) and their usage per project and cluster, this month and all time.

use std::collections::BTreeMap;

use sqlx::Row;

use crate::accounting::directory::{usage_current, usage_global};
use crate::accounting::store::{Arg, Scope, Sql, UNIT_COLUMNS, Unit, UnitFilter, unit, unit_where};
use crate::db::{Db, StoreError};
use crate::error::Rejection;

/// The jobs table's filters, from the page's query string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    pub project: Option<String>,
    pub state: Option<String>,
    /// `YYYY-MM-DD` (UTC) as typed, and as Unix seconds (start of that day).
    pub from: Option<(String, i64)>,
    /// `YYYY-MM-DD` (UTC), and the end of that day in Unix seconds.
    pub to: Option<(String, i64)>,
    /// 1-based.
    pub page: usize,
}

/// Unix seconds at the start of a `YYYY-MM-DD` day (UTC).
pub fn day_start(s: &str) -> Option<i64> {
    let mut it = s.splitn(3, '-');
    let (y, m, d) = (it.next()?, it.next()?, it.next()?);
    if y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    let month = time::Month::try_from(m.parse::<u8>().ok()?).ok()?;
    let date = time::Date::from_calendar_date(y.parse().ok()?, month, d.parse().ok()?).ok()?;
    Some(date.midnight().assume_utc().unix_timestamp())
}

impl Filters {
    pub fn from_query(q: &[(String, String)]) -> Result<Filters, Rejection> {
        let get = |k: &str| {
            q.iter()
                .find(|(n, v)| n == k && !v.trim().is_empty())
                .map(|(_, v)| v.trim().to_string())
        };
        let day = |k: &str| -> Result<Option<(String, i64)>, Rejection> {
            match get(k) {
                None => Ok(None),
                Some(v) => match day_start(&v) {
                    Some(t) => Ok(Some((v, t))),
                    None => Err(Rejection::BadRequest(format!(
                        "`{k}` must be a date like 2026-01-31"
                    ))),
                },
            }
        };
        let page = match get("page") {
            None => 1,
            Some(p) => p
                .parse::<usize>()
                .ok()
                .filter(|p| (1..=100_000).contains(p))
                .ok_or_else(|| Rejection::BadRequest("`page` must be a page number".into()))?,
        };
        Ok(Filters {
            project: get("project"),
            state: get("state"),
            from: day("from")?,
            to: day("to")?.map(|(s, t)| (s, t + 86_399)),
            page,
        })
    }

    /// The query string of these filters on another page.
    pub fn query_for_page(&self, page: usize) -> String {
        let mut s = form_urlencoded::Serializer::new(String::new());
        if let Some(p) = &self.project {
            s.append_pair("project", p);
        }
        if let Some(st) = &self.state {
            s.append_pair("state", st);
        }
        if let Some((d, _)) = &self.from {
            s.append_pair("from", d);
        }
        if let Some((d, _)) = &self.to {
            s.append_pair("to", d);
        }
        s.append_pair("page", &page.to_string());
        s.finish()
    }
}

/// A page of jobs, and what the filters can offer.
pub struct Jobs {
    pub units: Vec<Unit>,
    pub more: bool,
    /// Projects and states of the user's jobs (for the filter lists).
    pub projects: Vec<String>,
    pub states: Vec<String>,
    /// The window shown (Unix seconds).
    pub from: i64,
    pub to: i64,
}

/// How far back the table looks without a `from`.
pub const DEFAULT_WINDOW: i64 = 30 * 86_400;

async fn distinct(db: &Db, col: &str, user: &str) -> Result<Vec<String>, StoreError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT DISTINCT {col} AS v FROM acct_units WHERE username = $1 ORDER BY v"
    )))
    .bind(user)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| r.try_get::<String, _>("v").map_err(StoreError::from))
        .collect()
}

/// The user's own jobs, latest first (running ones included).
pub async fn jobs(
    db: &Db,
    user: &str,
    f: &Filters,
    page_size: usize,
    now: i64,
) -> Result<Jobs, StoreError> {
    let to = f.to.as_ref().map_or(now, |(_, t)| *t);
    let from = f
        .from
        .as_ref()
        .map_or(to.saturating_sub(DEFAULT_WINDOW), |(_, t)| *t);
    let filter = UnitFilter {
        users: vec![user.to_string()],
        projects: f.project.iter().cloned().collect(),
        from,
        to,
        running: f.to.is_none(),
        ..Default::default()
    };
    let mut sql = Sql::new(&format!("SELECT {UNIT_COLUMNS} FROM acct_units"));
    unit_where(&mut sql, Scope::User(user), &filter);
    if let Some(state) = &f.state {
        let p = sql.text(state);
        sql.push(&format!(" AND state = {p}"));
    }
    let limit = sql.arg(Arg::Int(page_size as i64 + 1));
    let offset = sql.arg(Arg::Int(((f.page - 1) * page_size) as i64));
    sql.push(&format!(
        " ORDER BY started_at DESC, created_at DESC, cluster_id, uuid LIMIT {limit} OFFSET {offset}"
    ));
    let rows = sql.query().fetch_all(db.pool()).await?;
    let mut units = rows.iter().map(unit).collect::<Result<Vec<_>, _>>()?;
    let more = units.len() > page_size;
    units.truncate(page_size);
    Ok(Jobs {
        units,
        more,
        projects: distinct(db, "project", user).await?,
        states: distinct(db, "state", user).await?,
        from,
        to,
    })
}

/// A user's usage in one project on one cluster.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Usage {
    pub project: String,
    pub cluster: String,
    pub month_jobs: i64,
    pub all_jobs: i64,
    /// Allocated CPU hours.
    pub month_cpu_h: f64,
    pub all_cpu_h: f64,
    pub month_kwh: f64,
    pub all_kwh: f64,
    pub month_co2_g: f64,
    pub all_co2_g: f64,
}

/// Unix seconds at the start of the month (UTC) that holds `now`.
pub fn month_start(now: i64) -> i64 {
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp(now) else {
        return 0;
    };
    t.date()
        .replace_day(1)
        .map_or(0, |d| d.midnight().assume_utc().unix_timestamp())
}

/// The user's usage per project and cluster: this month (live) and all time (roll-ups).
pub async fn usage(db: &Db, user: &str, now: i64) -> Result<Vec<Usage>, StoreError> {
    let f = UnitFilter {
        users: vec![user.to_string()],
        from: month_start(now),
        to: now,
        running: true,
        ..Default::default()
    };
    let mut out: BTreeMap<(String, String), Usage> = BTreeMap::new();
    for r in usage_global(db, Scope::User(user), &f).await? {
        let u = out
            .entry((r.project.clone(), r.cluster_id.clone()))
            .or_default();
        u.all_jobs = r.num_units;
        u.all_cpu_h = r.alloc_cputime as f64 / 3600.0;
        u.all_kwh = r.energy_kwh;
        u.all_co2_g = r.emissions_g;
    }
    for r in usage_current(db, Scope::User(user), &f).await? {
        let u = out
            .entry((r.project.clone(), r.cluster_id.clone()))
            .or_default();
        u.month_jobs = r.num_units;
        u.month_cpu_h = r.alloc_cputime as f64 / 3600.0;
        u.month_kwh = r.energy_kwh;
        u.month_co2_g = r.emissions_g;
    }
    Ok(out
        .into_iter()
        .map(|((project, cluster), u)| Usage {
            project,
            cluster,
            ..u
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn filters_read_dates_as_whole_utc_days() {
        let f = Filters::from_query(&q(&[
            ("project", "physics"),
            ("state", ""),
            ("from", "2026-01-31"),
            ("to", "2026-02-01"),
        ]))
        .unwrap();
        assert_eq!(f.project.as_deref(), Some("physics"));
        assert_eq!(f.state, None, "an empty field is no filter");
        assert_eq!(f.from, Some(("2026-01-31".into(), 1_769_817_600)));
        assert_eq!(f.to, Some(("2026-02-01".into(), 1_769_990_399)));
        assert_eq!(f.page, 1);
        assert_eq!(
            f.query_for_page(3),
            "project=physics&from=2026-01-31&to=2026-02-01&page=3"
        );
        for bad in [
            "2026-13-01",
            "2026-02-30",
            "yesterday",
            "2026-1-1",
            "1769817600",
        ] {
            assert!(Filters::from_query(&q(&[("from", bad)])).is_err(), "{bad}");
        }
        assert!(Filters::from_query(&q(&[("page", "0")])).is_err());
        assert!(Filters::from_query(&q(&[("page", "x")])).is_err());
    }

    fn unit(uuid: &str, user: &str, project: &str, started: i64, ended: i64) -> Unit {
        Unit {
            cluster_id: "c1".into(),
            resource_manager: "slurm".into(),
            uuid: uuid.into(),
            name: format!("job-{uuid}"),
            username: user.into(),
            project: project.into(),
            groupname: String::new(),
            partition: "cpu".into(),
            state: if ended == 0 { "RUNNING" } else { "COMPLETED" }.into(),
            created_at: started - 10,
            started_at: started,
            ended_at: ended,
            elapsed: if ended == 0 { 0 } else { ended - started },
            alloc_cpus: 2,
            alloc_mem: 1 << 30,
            alloc_gpus: 0,
            alloc_nodes: 1,
            cpu_usage: None,
            cpu_time: None,
            mem_usage: None,
            gpu_usage: None,
            energy_kwh: Some(1.0),
            emissions_g: Some(10.0),
        }
    }

    fn uuids(j: &Jobs) -> Vec<&str> {
        j.units.iter().map(|u| u.uuid.as_str()).collect()
    }

    #[tokio::test]
    async fn jobs_are_the_users_own_latest_first_filtered_and_paged() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&crate::db::DbConfig::sqlite_in(dir.path()))
            .await
            .unwrap();
        let now = 1_795_501_200; // 2026-11-24T06:20Z
        let h = 3600;
        crate::accounting::store::upsert_units(
            &db,
            &[
                unit("a1", "alice", "physics", now - 5 * h, now - 4 * h),
                unit("a2", "alice", "physics", now - 3 * h, now - 2 * h),
                unit("a3", "alice", "chem", now - h, 0),
                // Before this month: all time only; and out of the default 30-day window.
                unit("a4", "alice", "chem", now - 60 * 86_400, now - 59 * 86_400),
                // bob shares physics with alice: his jobs are not on her page.
                unit("b1", "bob", "physics", now - 2 * h, now - h),
            ],
        )
        .await
        .unwrap();
        let f = |pairs: &[(&str, &str)]| Filters::from_query(&q(pairs)).unwrap();
        let j = jobs(&db, "alice", &f(&[]), 2, now).await.unwrap();
        assert_eq!(uuids(&j), ["a3", "a2"]);
        assert!(j.more);
        assert_eq!(j.projects, ["chem", "physics"]);
        assert_eq!(j.states, ["COMPLETED", "RUNNING"]);
        let j = jobs(&db, "alice", &f(&[("page", "2")]), 2, now)
            .await
            .unwrap();
        assert_eq!(uuids(&j), ["a1"]);
        assert!(!j.more);
        let j = jobs(&db, "alice", &f(&[("project", "chem")]), 9, now)
            .await
            .unwrap();
        assert_eq!(uuids(&j), ["a3"], "a4 ended before the default window");
        let j = jobs(
            &db,
            "alice",
            &f(&[("project", "chem"), ("from", "2026-01-01")]),
            9,
            now,
        )
        .await
        .unwrap();
        assert_eq!(uuids(&j), ["a3", "a4"]);
        let j = jobs(&db, "alice", &f(&[("state", "RUNNING")]), 9, now)
            .await
            .unwrap();
        assert_eq!(uuids(&j), ["a3"]);
        // With an end date, running jobs are not in the window.
        let j = jobs(&db, "alice", &f(&[("to", "2026-11-24")]), 9, now)
            .await
            .unwrap();
        assert_eq!(uuids(&j), ["a2", "a1"]);
        assert!(
            jobs(&db, "nobody", &f(&[]), 9, now)
                .await
                .unwrap()
                .units
                .is_empty()
        );

        let u = usage(&db, "alice", now).await.unwrap();
        let line = |p: &str| u.iter().find(|x| x.project == p).unwrap();
        assert_eq!(u.len(), 2, "alice's projects only, not bob's lines: {u:?}");
        assert_eq!(
            (line("physics").month_jobs, line("physics").all_jobs),
            (2, 2)
        );
        assert_eq!(line("physics").all_cpu_h, 4.0, "2 jobs × 1 h × 2 CPUs");
        assert_eq!((line("chem").month_jobs, line("chem").all_jobs), (1, 2));
        assert_eq!(line("chem").all_kwh, 2.0);
        assert_eq!(line("chem").month_kwh, 1.0);
    }

    #[test]
    fn the_month_starts_on_the_first_at_midnight_utc() {
        // 2026-11-24T06:20:00Z → 2026-11-01T00:00:00Z
        assert_eq!(month_start(1_795_501_200), 1_793_491_200);
        assert_eq!(month_start(1_793_491_200), 1_793_491_200);
    }
}
