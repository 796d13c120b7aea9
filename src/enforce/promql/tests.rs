//! Unit tests of PromQL enforcement: the escape corpus, matchers kept and ANDed, the nesting
//! bound, ownership pins, time ranges.

use super::*;

const ALICE: Enforced<'static> = Enforced {
    label: "user",
    values: &["alice"],
};

/// Every selector of the output carries user="alice", and no equality on `user` names
/// anyone else (other matchers on `user` only narrow it). Also used by the request-level
/// tests of `prometheus.rs`.
pub(crate) fn all_confined(out: &str) -> bool {
    fn walk(expr: &Expr, ok: &mut bool, n: &mut usize) {
        let check = |vs: &VectorSelector, ok: &mut bool, n: &mut usize| {
            *n += 1;
            let groups: Vec<&Vec<Matcher>> = if vs.matchers.or_matchers.is_empty() {
                vec![&vs.matchers.matchers]
            } else {
                vs.matchers.or_matchers.iter().collect()
            };
            for g in groups {
                // user="alice" is there; other matchers on `user` only narrow it, and
                // no equality names anyone else.
                let users: Vec<&Matcher> = g.iter().filter(|m| m.name == "user").collect();
                *ok &= users
                    .iter()
                    .any(|m| matches!(m.op, MatchOp::Equal) && m.value == "alice")
                    && users
                        .iter()
                        .all(|m| !matches!(m.op, MatchOp::Equal) || m.value == "alice");
            }
        };
        match expr {
            Expr::VectorSelector(vs) => check(vs, ok, n),
            Expr::MatrixSelector(ms) => check(&ms.vs, ok, n),
            Expr::Aggregate(a) => {
                walk(&a.expr, ok, n);
                if let Some(p) = &a.param {
                    walk(p, ok, n);
                }
            }
            Expr::Unary(u) => walk(&u.expr, ok, n),
            Expr::Binary(b) => {
                walk(&b.lhs, ok, n);
                walk(&b.rhs, ok, n);
            }
            Expr::Paren(p) => walk(&p.expr, ok, n),
            Expr::Subquery(s) => walk(&s.expr, ok, n),
            Expr::Call(c) => c.args.args.iter().for_each(|a| walk(a, ok, n)),
            _ => {}
        }
    }
    let expr = parser::parse(out).expect("the output parses");
    let (mut ok, mut n) = (true, 0);
    walk(&expr, &mut ok, &mut n);
    ok
}

/// The escape corpus: every query is refused or comes out confined.
#[test]
fn escape_corpus_is_denied_or_confined() {
    let text = include_str!("../../../tests/promql_escapes.txt");
    let mut checked = 0;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (want, query) = line.split_once(' ').unwrap();
        let got = enforce_query(query, &ALICE);
        match (want, &got) {
            ("deny", Err(Refusal::Forbidden(_))) => {}
            ("invalid", Err(Refusal::Invalid(_))) => {}
            ("confine", Ok(out)) => assert!(all_confined(out), "{query} → {out}"),
            _ => panic!("{query}: wanted {want}, got {got:?}"),
        }
        checked += 1;
    }
    assert!(checked >= 30, "only {checked} queries in the corpus");
}

#[test]
fn selectors_get_the_matcher_and_queries_keep_their_meaning() {
    assert_eq!(
        enforce_query("rate(cpu_seconds{job=\"x\"}[5m])", &ALICE).unwrap(),
        "rate(cpu_seconds{job=\"x\",user=\"alice\"}[5m])"
    );
    assert_eq!(enforce_query("1 + 1", &ALICE).unwrap(), "1 + 1");
    assert_eq!(
        enforce_selector("up", &ALICE).unwrap(),
        "up{user=\"alice\"}"
    );
    assert!(matches!(
        enforce_selector("sum(up)", &ALICE),
        Err(Refusal::Invalid(_))
    ));
}

/// Found by the `promql` fuzz target: promql-parser panics on a subquery step too large
/// for a `Duration`; the query is refused, the worker does not die.
#[test]
fn a_query_the_parser_panics_on_is_refused() {
    let q = "max_over_time(cpu[1h:6655555555555555555555555555566666666]5m)";
    assert!(matches!(parse(q), Err(Refusal::Invalid(_))));
    assert!(matches!(enforce_query(q, &ALICE), Err(Refusal::Invalid(_))));
    assert!(matches!(
        pinned_ids_of_selector("cpu[1h:6655555555555555555555555555566666666]", "uuid", &[]),
        Err(Refusal::Invalid(_))
    ));
}

/// Found by the `promql` fuzz target: `[0]` parses, prints as `[0s]`, which does not
/// parse. Such a query is refused rather than sent upstream as something else.
#[test]
fn a_query_that_does_not_print_back_is_refused() {
    assert!(matches!(
        enforce_query("rate(cpu_seconds_total[0])", &ALICE),
        Err(Refusal::Invalid(_))
    ));
    let mut expr = parse("rate(cpu[0])").unwrap();
    confine_expr(&mut expr, &ALICE).unwrap();
    assert!(matches!(print(&expr), Err(Refusal::Invalid(_))));
    // Everything the escape corpus confines still prints back.
    assert!(print(&parse("sum by (job) (rate(up{a=~\"x|y\"}[5m] offset 1h))").unwrap()).is_ok());
}

#[test]
fn earliest_read_covers_ranges_offsets_at_and_subqueries() {
    let at = |q: &str, start: f64, end: f64| earliest_read(&parse(q).unwrap(), start, end);
    let t = 1_000_000.0;
    assert_eq!(at("up", t, t), t - 300.0);
    assert_eq!(at("rate(up[1h])", t, t), t - 3600.0);
    assert_eq!(at("rate(up[1h] offset 1d)", t, t), t - 3600.0 - 86_400.0);
    assert_eq!(at("up offset -5m", t, t), t);
    assert_eq!(at("up @ 100", t, t), 100.0 - 300.0);
    assert_eq!(at("up @ start()", t - 50.0, t), t - 350.0);
    // A subquery reads its range before each step, and its selectors' ranges before that.
    assert_eq!(
        at("max_over_time(rate(up[5m])[1d:1m])", t, t),
        t - 86_400.0 - 300.0
    );
    // The oldest of every branch: `or` cannot hide a far-reaching side.
    assert_eq!(at("up or rate(down[30d])", t, t), t - 30.0 * 86_400.0);
    // Range queries read from their start.
    assert_eq!(at("rate(up[5m])", t - 7200.0, t), t - 7200.0 - 300.0);
    // Nothing read at all.
    assert!(at("1 + time()", t, t).is_infinite());
}

#[test]
fn ownership_mode_collects_pinned_ids_and_refuses_the_rest() {
    let allow = vec!["up".to_string()];
    let ids = |q: &str| pinned_ids(&parse(q).unwrap(), "uuid", &allow);
    let got: Vec<String> = ids("rate(cpu{uuid=\"1001\"}[5m]) / on(uuid) mem{uuid=~\"1001|1002\"}")
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(got, vec!["1001", "1002"]);
    // No selector: nothing to check (Grafana's connection test).
    assert!(ids("1+1").unwrap().is_empty());
    // Allowlisted series that belong to no job.
    assert!(ids("up").unwrap().is_empty());
    for q in [
        // CEEMS LB's regex extraction lets the second half through.
        "cpu{uuid=\"1001\"} or other_metric",
        "cpu{uuid=~\".*\"}",
        "cpu{uuid=~\"1001|.*\"}",
        "cpu{uuid=~\"100.\"}",
        "cpu{uuid=~\"1001|\"}",
        "cpu{uuid=\"\"}",
        "cpu{uuid!=\"1001\"}",
        "cpu{uuid!~\"1001\"}",
        "{__name__=~\".+\"}",
        "max_over_time(cpu{uuid=\"1001\"}[1h:1m]) + absent(nope)",
        "label_replace(cpu, \"uuid\", \"1001\", \"\", \"\")",
        "cpu{uuid=\"1001\" or user=\"bob\"}",
        "{__name__=~\"up|cpu\"}",
    ] {
        assert!(
            matches!(ids(q), Err(Refusal::Forbidden(_))),
            "{q}: {:?}",
            ids(q)
        );
    }
    assert!(pinned_ids_of_selector("{uuid=\"9\"}", "uuid", &allow).is_ok());
    assert!(matches!(
        pinned_ids_of_selector("sum(x)", "uuid", &allow),
        Err(Refusal::Invalid(_))
    ));
}

#[test]
fn group_values_confine_to_any_of_the_users_groups() {
    let e = Enforced {
        label: "project",
        values: &["physics", "chem.lab"],
    };
    assert_eq!(
        enforce_query("sum(cpu)", &e).unwrap(),
        "sum(cpu{project=~\"physics|chem\\\\.lab\"})"
    );
    // Narrowing to one of them is fine; another value is refused.
    assert_eq!(
        enforce_query("cpu{project=\"physics\"}", &e).unwrap(),
        "cpu{project=\"physics\"}"
    );
    assert!(matches!(
        enforce_query("cpu{project=\"bio\"}", &e),
        Err(Refusal::Forbidden(_))
    ));
    // Regexes and negations are the user's own narrowing: kept, ANDed with the groups.
    assert_eq!(
        enforce_query("cpu{project=~\"phys.*\"}", &e).unwrap(),
        "cpu{project=~\"phys.*\",project=~\"physics|chem\\\\.lab\"}"
    );
    assert_eq!(
        own_selector(&e).unwrap(),
        "{project=~\"physics|chem\\\\.lab\"}"
    );
    assert_eq!(own_selector(&ALICE).unwrap(), "{user=\"alice\"}");
    // No groups: nothing to read.
    let none = Enforced {
        label: "project",
        values: &[],
    };
    assert!(matches!(
        enforce_query("cpu", &none),
        Err(Refusal::Forbidden(_))
    ));
}

/// prom-label-proxy's users write these (Grafana template variables, "any user" filters):
/// kept and ANDed with the enforced matcher, which the output always carries.
#[test]
fn a_users_own_matchers_on_the_label_are_kept_and_anded() {
    for (q, want) in [
        (
            "cpu{user=~\"alice\"}",
            "cpu{user=\"alice\",user=~\"alice\"}",
        ),
        ("cpu{user!=\"\"}", "cpu{user!=\"\",user=\"alice\"}"),
        (
            "sum(cpu{user=~\"alice|bob\"})",
            "sum(cpu{user=\"alice\",user=~\"alice|bob\"})",
        ),
        ("cpu{user=\"alice\"}", "cpu{user=\"alice\"}"),
    ] {
        let out = enforce_query(q, &ALICE).unwrap();
        assert_eq!(out, want, "{q}");
        assert!(all_confined(&out), "{q} → {out}");
    }
    assert!(matches!(
        enforce_query("cpu{user=\"bob\"}", &ALICE),
        Err(Refusal::Forbidden(_))
    ));
}

/// Regression: ~14 KB of nested parentheses (or unary minus signs, or nested `sum(`)
/// overflowed the worker's stack in label mode and aborted the process. Each shape is
/// refused before parsing, with a 400 that names the limit; at the limit, parsing,
/// confining, printing and dropping fit in a quarter of a worker's stack.
#[test]
fn deep_nesting_is_refused_before_it_can_overflow_the_stack() {
    let deep = |open: &str, leaf: &str, close: &str, n: usize| {
        format!("{}{leaf}{}", open.repeat(n), close.repeat(n))
    };
    for q in [
        deep("(", "up", ")", 7000),
        deep("-", "up", "", 14_000),
        deep("sum(", "up", ")", 3000),
        deep("", "up", " + up", 2000),
        deep("", "up", "[1m:]", 2000),
        deep("abs(-", "up", ")", 2000),
    ] {
        match enforce_query(&q, &ALICE) {
            Err(Refusal::Invalid(m)) => assert!(
                m.contains("nests too deeply") || m.contains("at most"),
                "{m}"
            ),
            other => panic!("{}…: {other:?}", &q[..20]),
        }
        assert!(matches!(
            pinned_ids_of_selector(&q, "uuid", &[]),
            Err(Refusal::Invalid(_))
        ));
    }
    let long = format!("up{{a=\"{}\"}}", "x".repeat(MAX_QUERY_BYTES));
    assert!(matches!(parse(&long), Err(Refusal::Invalid(m)) if m.contains("KiB")));
    // Strings and comments do not count; real queries are far below the limit.
    assert!(check_bounds("up{a=\"((((((((((((\"} # ))))((((((").is_ok());
    assert!(nesting_depth(b"sum by (job) (rate(x[5m])) / on(job) count(y)") < 10);
    // Just under the limit, in every shape, on a thread with 512 KiB of stack (a
    // worker's is 2 MiB): everything the gateway does with a query fits.
    let shapes: Vec<String> = vec![
        deep("(", "up", ")", MAX_DEPTH - 1),
        deep("-", "up", "", MAX_DEPTH - 2),
        deep("", "up", " + up", MAX_DEPTH - 1),
        deep("sum(", "up", ")", MAX_DEPTH - 1),
        deep("max_over_time(", "up", "[1m:])", MAX_DEPTH / 3),
    ];
    for q in shapes {
        let depth = nesting_depth(q.as_bytes());
        assert!(check_bounds(&q).is_ok(), "{}… depth {depth}", &q[..12]);
        std::thread::Builder::new()
            .stack_size(512 * 1024)
            .spawn(move || {
                let out = enforce_query(&q, &ALICE);
                let expr = parse(&q).unwrap();
                let _ = pinned_ids(&expr, "uuid", &[]);
                let _ = earliest_read(&expr, 0.0, 1.0);
                out.map(|_| ())
            })
            .unwrap()
            .join()
            .expect("no stack overflow")
            .ok();
    }
}
