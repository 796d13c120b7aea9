//! The user page's HTML. maud escapes every value it renders; nothing here builds HTML from
//! strings. Times are `<time datetime=…>` in UTC, which `page.js` shows in the browser's
//! time zone.

use maud::{DOCTYPE, Markup, html};

use super::WebConfig;
use super::chart::{Bar, bars};
use super::data::{Filters, Jobs, Usage};
use crate::accounting::store::Unit;
use crate::authenticate::Identity;
use crate::authenticate::oidc::SessionView;
use crate::db::api_keys::KeyRecord;

pub const STYLE: &str = include_str!("assets/style.css");
pub const SCRIPT: &str = include_str!("assets/page.js");

/// How long a key made on the page may last, in days (the first is the default).
pub const EXPIRY_DAYS: &[i64] = &[30, 1, 7, 90, 365];

/// A message at the top of the page.
pub enum Notice {
    Ok(String),
    Error(String),
}

/// Everything the page shows.
pub struct View<'a> {
    pub id: &'a Identity,
    pub session: Option<&'a SessionView>,
    pub cfg: &'a WebConfig,
    pub filters: &'a Filters,
    pub jobs: &'a Jobs,
    pub usage: &'a [Usage],
    pub keys: &'a [KeyRecord],
    pub admin: bool,
    pub notice: Option<Notice>,
    /// A key just made: shown this once.
    pub new_key: Option<String>,
    pub now: i64,
}

/// `<time>` for Unix seconds (UTC text, converted to local time by the script).
pub fn time(t: i64) -> Markup {
    match time::OffsetDateTime::from_unix_timestamp(t) {
        Ok(d) if t > 0 => {
            let iso = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
                d.year(),
                d.month() as u8,
                d.day(),
                d.hour(),
                d.minute(),
                d.second()
            );
            let text = format!("{} {} UTC", &iso[..10], &iso[11..16]);
            html! { time datetime=(iso) { (text) } }
        }
        _ => html! { span.none { "–" } },
    }
}

/// `1d 02:03:04`, `02:03:04`.
pub fn duration(secs: i64) -> String {
    let s = secs.max(0);
    let (d, h, m, s) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    if d > 0 {
        format!("{d}d {h:02}:{m:02}:{s:02}")
    } else {
        format!("{h:02}:{m:02}:{s:02}")
    }
}

fn num(v: Option<f64>, digits: usize) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.digits$}"),
        _ => "–".into(),
    }
}

/// A page in the gateway's style: used by the user page and the error pages.
pub fn layout(title: &str, header_extra: Markup, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="same-origin";
                title { (title) }
                link rel="stylesheet" href="/-/web/style.css";
                script src="/-/web/page.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/" { "hpcgate" }
                    (header_extra)
                }
                main id="main" { (body) }
            }
        }
    }
}

pub fn render(v: &View<'_>) -> Markup {
    let csrf = v.session.map_or("", |s| s.csrf_token.as_str());
    let header = html! {
        nav aria-label="Sections" {
            ul {
                li { a href="#jobs" { "Jobs" } }
                li { a href="#usage" { "Usage" } }
                li { a href="#keys" { "API keys" } }
                li { a href=(v.cfg.docs_url) { "API docs" } }
                @if v.admin { li { a href="/-/status" { "Status" } } }
            }
        }
        form.logout method="post" action="/auth/logout" {
            input type="hidden" name="csrf" value=(csrf);
            button type="submit" id="logout" { "Log out" }
        }
    };
    let body = html! {
        h1 { "Hello, " (v.id.user()) }
        @match &v.notice {
            Some(Notice::Ok(m)) => p.notice.ok role="status" { (m) },
            Some(Notice::Error(m)) => p.notice.error role="alert" { (m) },
            None => {},
        }
        (who(v))
        (jobs(v))
        (usage(v))
        (super::keys::section(v, csrf))
    };
    layout("hpcgate — your page", header, body)
}

fn who(v: &View<'_>) -> Markup {
    let id = v.id;
    html! {
        section aria-labelledby="who-h" {
            h2 id="who-h" { "Who you are" }
            dl.who {
                dt { "User" } dd id="who-user" { (id.user()) }
                dt { "Groups" }
                dd id="who-groups" {
                    @if id.groups().is_empty() { "none" } @else { (id.groups().join(", ")) }
                }
                @if let Some(e) = id.email() { dt { "E-mail" } dd { (e) } }
                dt { "Signed in with" } dd { (id.method().as_str()) " (" (id.authenticator()) ")" }
                @if let Some(s) = v.session {
                    dt { "Session ends" }
                    dd {
                        (time(s.ends_at as i64)) ", or after "
                        (humantime::format_duration(s.idle)) " without activity"
                    }
                }
            }
        }
    }
}

fn select(name: &str, label: &str, options: &[String], current: Option<&str>) -> Markup {
    let id = format!("f-{name}");
    html! {
        div.field {
            label for=(id) { (label) }
            select id=(id) name=(name) {
                option value="" selected[current.is_none()] { "all" }
                @for o in options {
                    option value=(o) selected[current == Some(o.as_str())] { (o) }
                }
            }
        }
    }
}

fn jobs(v: &View<'_>) -> Markup {
    let f = v.filters;
    let j = v.jobs;
    let day = |t: i64| {
        time::OffsetDateTime::from_unix_timestamp(t)
            .map(|d| format!("{:04}-{:02}-{:02}", d.year(), d.month() as u8, d.day()))
            .unwrap_or_default()
    };
    html! {
        section aria-labelledby="jobs-h" {
            h2 id="jobs" { span id="jobs-h" { "Your jobs" } }
            form.filters method="get" action="/" aria-label="Filter jobs" {
                (select("project", "Project", &j.projects, f.project.as_deref()))
                (select("state", "State", &j.states, f.state.as_deref()))
                div.field {
                    label for="f-from" { "Ended from" }
                    input id="f-from" type="date" name="from"
                        value=(f.from.as_ref().map_or(day(j.from), |(d, _)| d.clone()));
                }
                div.field {
                    label for="f-to" { "to" }
                    input id="f-to" type="date" name="to"
                        value=(f.to.as_ref().map_or(String::new(), |(d, _)| d.clone()));
                }
                div.field.actions { button type="submit" { "Apply" } a href="/#jobs" { "Reset" } }
            }
            @if j.units.is_empty() {
                p.empty { "No jobs match." }
            } @else {
                p.range id="jobs-range" {
                    "Jobs that ended between " (time(j.from)) " and " (time(j.to))
                    @if f.to.is_none() { ", and running jobs" }
                    ", latest first."
                }
                div.scroll {
                    table.jobs id="jobs-table" aria-describedby="jobs-range" {
                        caption.sr { "Your jobs" }
                        thead {
                            tr {
                                th scope="col" { "Cluster" } th scope="col" { "ID" }
                                th scope="col" { "Name" } th scope="col" { "Project" }
                                th scope="col" { "State" } th scope="col" { "Start" }
                                th scope="col" { "End" } th scope="col" { "Elapsed" }
                                th scope="col" { abbr title="allocated CPU hours" { "CPU h" } }
                                th scope="col" { "Energy (kWh)" }
                                th scope="col" { "Emissions (gCO₂e)" }
                                @if v.cfg.grafana_url.is_some() { th scope="col" { "Dashboard" } }
                            }
                        }
                        tbody {
                            @for u in &j.units { (job_row(v, u)) }
                        }
                    }
                }
                nav.pages aria-label="Pages of jobs" {
                    @if f.page > 1 {
                        a rel="prev" href={ "/?" (f.query_for_page(f.page - 1)) "#jobs" } { "← Newer" }
                    }
                    span { "Page " (f.page) }
                    @if j.more {
                        a rel="next" href={ "/?" (f.query_for_page(f.page + 1)) "#jobs" } { "Older →" }
                    }
                }
            }
        }
    }
}

fn job_row(v: &View<'_>, u: &Unit) -> Markup {
    let start = if u.started_at > 0 {
        u.started_at
    } else {
        u.created_at
    };
    let end = if u.ended_at > 0 { u.ended_at } else { v.now };
    // A running job's record may not count its time yet: so far is until now.
    let elapsed = if u.ended_at == 0 && u.started_at > 0 {
        u.elapsed.max(v.now - u.started_at)
    } else {
        u.elapsed
    };
    let cpu_h = elapsed as f64 * u.alloc_cpus as f64 / 3600.0;
    html! {
        tr data-uuid=(u.uuid) {
            td { (u.cluster_id) }
            th scope="row" { (u.uuid) }
            td { (u.name) }
            td { (u.project) }
            td { span.state { (u.state) } }
            td { (time(u.started_at)) }
            td { (time(u.ended_at)) }
            td.num { (duration(elapsed)) }
            td.num { (num(Some(cpu_h), 1)) }
            td.num { (num(u.energy_kwh, 3)) }
            td.num { (num(u.emissions_g, 1)) }
            @if let Some(g) = &v.cfg.grafana_url {
                td {
                    a href=(g.link(&u.uuid, &u.cluster_id, start * 1000, end * 1000))
                        rel="noopener noreferrer" target="_blank" {
                        "Grafana" span.sr { " dashboard of job " (u.uuid) }
                    }
                }
            }
        }
    }
}

fn usage(v: &View<'_>) -> Markup {
    let bars_of: Vec<Bar> = v
        .usage
        .iter()
        .map(|u| Bar {
            label: format!("{} on {}", u.project, u.cluster),
            current: u.month_cpu_h,
            total: u.all_cpu_h,
        })
        .collect();
    html! {
        section aria-labelledby="usage-h" {
            h2 id="usage" { span id="usage-h" { "Your usage" } }
            p { "Allocated CPU hours per project and cluster: this month (since "
                (time(super::data::month_start(v.now))) ") and all time." }
            (bars("usage-chart", "Allocated CPU hours per project and cluster", "h", &bars_of))
            @if !v.usage.is_empty() {
                div.scroll {
                    table.usage {
                        caption { "Usage this month and all time" }
                        thead {
                            tr {
                                th scope="col" { "Project" } th scope="col" { "Cluster" }
                                th scope="col" { "Jobs (month / all)" }
                                th scope="col" { "CPU h (month / all)" }
                                th scope="col" { "Energy kWh (month / all)" }
                                th scope="col" { "Emissions gCO₂e (month / all)" }
                            }
                        }
                        tbody {
                            @for u in v.usage {
                                tr {
                                    th scope="row" { (u.project) }
                                    td { (u.cluster) }
                                    td.num { (u.month_jobs) " / " (u.all_jobs) }
                                    td.num { (num(Some(u.month_cpu_h), 1)) " / " (num(Some(u.all_cpu_h), 1)) }
                                    td.num { (num(Some(u.month_kwh), 2)) " / " (num(Some(u.all_kwh), 2)) }
                                    td.num { (num(Some(u.month_co2_g), 0)) " / " (num(Some(u.all_co2_g), 0)) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_durations_read_well() {
        let t = time(1_769_817_600).into_string();
        assert_eq!(
            t,
            "<time datetime=\"2026-01-31T00:00:00Z\">2026-01-31 00:00 UTC</time>"
        );
        assert!(time(0).into_string().contains('–'));
        assert_eq!(duration(3_723), "01:02:03");
        assert_eq!(duration(90_061), "1d 01:01:01");
        assert_eq!(duration(-5), "00:00:00");
    }
}
