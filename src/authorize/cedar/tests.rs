//! The shipped policies decided case by case. `tests/policies.rs` runs the same table
//! through the proxy.

use super::*;

use Action::*;
use RouteKind::*;
const ADMIN: &[&str] = &["hpc-admins"];
const USER: &[&str] = &["hpc-users"];

/// One row of `tests/policy_cases.csv`.
pub struct Case {
    pub user: String,
    pub groups: Vec<String>,
    pub route: String,
    pub kind: RouteKind,
    pub action: Action,
    pub weekday: i64,
    pub hour: i64,
    pub client: String,
    pub allow: bool,
}

pub fn cases() -> Vec<Case> {
    include_str!("../../../tests/policy_cases.csv")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            assert_eq!(f.len(), 9, "{l}");
            Case {
                user: f[0].into(),
                groups: f[1]
                    .split(';')
                    .filter(|g| !g.is_empty())
                    .map(Into::into)
                    .collect(),
                route: f[2].into(),
                kind: match f[3] {
                    "generic" => Generic,
                    "slurmrestd" => Slurmrestd,
                    "prometheus" => Prometheus,
                    "accounting" => Accounting,
                    k => panic!("kind {k}"),
                },
                action: match f[4] {
                    "read" => Read,
                    "write" => Write,
                    "admin" => Admin,
                    a => panic!("action {a}"),
                },
                weekday: f[5].parse().unwrap(),
                hour: f[6].parse().unwrap(),
                client: f[7].into(),
                allow: f[8] == "allow",
            }
        })
        .collect()
}

/// A directory with the schema, the default policies and every example.
pub fn shipped_with_examples() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    std::fs::copy(
        root.join("schema.cedarschema"),
        dir.path().join("schema.cedarschema"),
    )
    .unwrap();
    std::fs::copy(root.join("default.cedar"), dir.path().join("default.cedar")).unwrap();
    for e in std::fs::read_dir(root.join("examples")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
    }
    dir
}

/// Unix time of weekday `wd` (1 = Monday) at `hour`:00 UTC, in the week of 2026-11-23.
fn at(wd: i64, hour: i64) -> i64 {
    // 2026-11-23 00:00 UTC is a Monday.
    1_795_392_000 + (wd - 1) * 86_400 + hour * 3600
}

#[test]
fn the_reference_monday_is_a_monday() {
    // 1970-01-05 was the first Monday after the epoch.
    assert_eq!((at(1, 0) / 86_400 - 4).rem_euclid(7), 0);
}

#[test]
fn shipped_policies_decide_every_case() {
    let dir = shipped_with_examples();
    let p = Policies::load(Some(dir.path()), &["hpc-admins".into()]).unwrap();
    let cases = cases();
    assert!(cases.len() >= 20);
    for (i, c) in cases.iter().enumerate() {
        let groups: Vec<&str> = c.groups.iter().map(String::as_str).collect();
        let id = Identity::for_test(&c.user, &groups);
        let v = p.decide(
            &id,
            c.action,
            &RouteFacts {
                name: &c.route,
                kind: c.kind,
                path_prefix: "/x",
            },
            &Facts {
                client: Some(c.client.parse().unwrap()),
                method: "GET",
                path: "/x",
                now: at(c.weekday, c.hour),
                utc_offset: 0,
            },
        );
        assert_eq!(
            v.allow, c.allow,
            "case {i}: {} {:?} {}: {v:?}",
            c.user, c.action, c.route
        );
        assert!(v.errors.is_empty(), "case {i}: {v:?}");
    }
}

#[test]
fn the_time_zone_moves_office_hours() {
    let dir = shipped_with_examples();
    let p = Policies::load(Some(dir.path()), &[]).unwrap();
    let bob = Identity::for_test("bob", USER);
    let decide = |offset: i64| {
        p.decide(
            &bob,
            Write,
            &RouteFacts {
                name: "slurm",
                kind: Slurmrestd,
                path_prefix: "/slurm",
            },
            &Facts {
                client: None,
                method: "POST",
                path: "/slurm",
                now: at(1, 6),
                utc_offset: offset,
            },
        )
        .allow
    };
    assert!(!decide(0), "06:00 UTC is outside office hours");
    assert!(decide(3 * 3600), "09:00 at UTC+3 is inside");
}

#[test]
fn denials_name_the_forbidding_policy_and_permits_the_permitting_one() {
    let dir = shipped_with_examples();
    let p = Policies::load(Some(dir.path()), &["hpc-admins".into()]).unwrap();
    let facts = Facts {
        client: None,
        method: "GET",
        path: "/x",
        now: at(1, 10),
        utc_offset: 0,
    };
    let route = |name| RouteFacts {
        name,
        kind: Generic,
        path_prefix: "/x",
    };
    let v = p.decide(
        &Identity::for_test("bob", USER),
        Read,
        &route("slurm-admin"),
        &facts,
    );
    assert_eq!(
        v.policies,
        vec!["admins-only-route.cedar:slurm-admin-is-for-admins"]
    );
    let v = p.decide(
        &Identity::for_test("bob", USER),
        Read,
        &route("echo"),
        &facts,
    );
    assert_eq!(v.policies, vec!["default.cedar:users-read-write"]);
}

#[test]
fn embedded_defaults_keep_admin_actions_for_admins() {
    let p = Policies::load(None, &["hpc-admins".into()]).unwrap();
    let facts = Facts {
        client: None,
        method: "POST",
        path: "/x",
        now: 0,
        utc_offset: 0,
    };
    let route = RouteFacts {
        name: "r",
        kind: Generic,
        path_prefix: "/x",
    };
    assert!(
        p.decide(&Identity::for_test("alice", ADMIN), Admin, &route, &facts)
            .allow
    );
    assert!(
        !p.decide(&Identity::for_test("bob", USER), Admin, &route, &facts)
            .allow
    );
    assert!(
        p.decide(&Identity::for_test("bob", USER), Write, &route, &facts)
            .allow
    );
}

#[test]
fn broken_policies_are_reported_with_file_and_line() {
    let dir = shipped_with_examples();
    std::fs::write(
        dir.path().join("zz-broken.cedar"),
        "// fine\n@id(\"ok\")\npermit(principal, action, resource);\n\npermit(principal action);\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("zz-unknown-attr.cedar"),
        "\n\npermit(principal, action, resource)\nwhen { principal.shoe_size > 3 };\n",
    )
    .unwrap();
    let errors = Policies::load(Some(dir.path()), &[]).unwrap_err();
    let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    assert!(
        text.iter().any(|e| e.contains("zz-broken.cedar:line 5:")),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|e| e.contains("zz-unknown-attr.cedar:line 4:") && e.contains("shoe_size")),
        "{text:?}"
    );
}

#[test]
fn the_context_attributes_policies_read_are_found() {
    let p = Policies::load(Some(shipped_with_examples().path()), &[]).unwrap();
    let reads = p.context_reads.clone().unwrap();
    let mut reads: Vec<_> = reads.into_iter().collect();
    reads.sort();
    assert_eq!(reads, ["client_ip", "hour", "weekday"]);
    let p = Policies::load(None, &[]).unwrap();
    assert_eq!(
        p.context_reads,
        Some(HashSet::new()),
        "the defaults read none"
    );
    assert!(!p.uses_client_ip);
}

#[test]
fn remembered_verdicts_still_follow_every_attribute_a_policy_reads() {
    let with_schema = || {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("schema.cedarschema"), EMBEDDED_SCHEMA).unwrap();
        dir
    };
    let dir = with_schema();
    std::fs::write(
        dir.path().join("p.cedar"),
        r#"@id("all") permit (principal, action, resource);
@id("no-admin-path") forbid (principal, action, resource)
when { context.path like "/admin*" || context.method == "DELETE" };
"#,
    )
    .unwrap();
    let p = Policies::load(Some(dir.path()), &[]).unwrap();
    let mut reads: Vec<_> = p.context_reads.clone().unwrap().into_iter().collect();
    reads.sort();
    assert_eq!(reads, ["method", "path"]);
    let bob = Identity::for_test("bob", USER);
    let route = RouteFacts {
        name: "slurm",
        kind: Slurmrestd,
        path_prefix: "/",
    };
    let decide = |method: &str, path: &str| {
        p.decide(
            &bob,
            Read,
            &route,
            &Facts {
                client: None,
                method,
                path,
                now: at(1, 10),
                utc_offset: 0,
            },
        )
        .allow
    };
    // Twice each: the second answer comes from the verdict cache.
    for _ in 0..2 {
        assert!(decide("GET", "/jobs"));
        assert!(!decide("GET", "/admin/x"));
        assert!(!decide("DELETE", "/jobs"));
        assert!(decide("GET", "/jobs/admin"));
    }
    // Another user, another entity: not mixed up with bob's verdicts.
    let admin_only = with_schema();
    std::fs::write(
        admin_only.path().join("p.cedar"),
        "permit (principal, action, resource) when { principal.admin };\n",
    )
    .unwrap();
    let p = Policies::load(Some(admin_only.path()), &["hpc-admins".into()]).unwrap();
    let f = Facts {
        client: None,
        method: "GET",
        path: "/",
        now: at(1, 10),
        utc_offset: 0,
    };
    let alice = Identity::for_test("alice", &["hpc-admins"]);
    for _ in 0..2 {
        assert!(p.decide(&alice, Read, &route, &f).allow);
        assert!(!p.decide(&bob, Read, &route, &f).allow);
    }
}
