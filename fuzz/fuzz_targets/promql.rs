//! PromQL enforcement on arbitrary queries. Never panics, and no query comes out broader
//! than it went in:
//! - label mode: the output parses again, and every selector (in every `or` group) carries
//!   the enforced matcher — `label="v"` for one of the allowed values, or exactly the
//!   alternation of all of them — and no other matcher on that label;
//! - ownership mode: an accepted query pins every selector that is not allowlisted to the
//!   ids returned (checked by a walker of our own), and printing it and parsing it again
//!   pins the same ids.
#![no_main]

#[path = "common/walk.rs"]
mod walk;

use std::collections::BTreeSet;

use hpcgate::enforce::promql::{
    Enforced, enforce_query, enforce_selector, parse, pinned_ids, pinned_ids_of_selector,
};
use libfuzzer_sys::fuzz_target;
use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::Expr;
use walk::{groups, selectors};

/// The input: a flags byte, a label byte, extra allowed values separated by `\n`, a NUL,
/// then the query (so that plain queries make seeds: `"\0\0\0" + query`).
struct Input<'a> {
    query: &'a str,
    ownership: bool,
    selector: bool,
    label: u8,
    values: Vec<&'a str>,
}

impl<'a> Input<'a> {
    fn from(data: &'a [u8]) -> Option<Input<'a>> {
        let (&flags, rest) = data.split_first()?;
        let (&label, rest) = rest.split_first()?;
        let nul = rest.iter().position(|&b| b == 0)?;
        let values = std::str::from_utf8(&rest[..nul]).ok()?;
        let query = std::str::from_utf8(&rest[nul + 1..]).ok()?;
        Some(Input {
            query,
            ownership: flags & 1 != 0,
            selector: flags & 2 != 0,
            label,
            values: if values.is_empty() {
                Vec::new()
            } else {
                values.split('\n').collect()
            },
        })
    }
}

const LABELS: &[&str] = &["user", "project", "uuid", "job"];

/// Every selector of `out` is confined to `values` of `label`.
fn assert_confined(query: &str, out: &str, label: &str, values: &[&str]) {
    let expr = parse(out).unwrap_or_else(|e| panic!("{query:?} → {out:?} does not parse: {e:?}"));
    let alternation = values
        .iter()
        .map(|v| regex::escape(v))
        .collect::<Vec<_>>()
        .join("|");
    let mut all = Vec::new();
    selectors(&expr, &mut all);
    for vs in all {
        for g in groups(vs) {
            let on_label: Vec<&Matcher> = g.iter().filter(|m| m.name == label).collect();
            assert!(
                !on_label.is_empty(),
                "{query:?} → {out:?}: a selector without {label}"
            );
            for m in on_label {
                let ok = match &m.op {
                    MatchOp::Equal => values.contains(&m.value.as_str()),
                    MatchOp::Re(_) => values.len() > 1 && m.value == alternation,
                    _ => false,
                };
                assert!(ok, "{query:?} → {out:?}: {m} is broader than {values:?}");
            }
        }
    }
}

fn literal_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ':'))
}

/// Every selector of `expr` pins `label` to ids in `ids`, or names an allowlisted metric.
fn assert_pinned(query: &str, expr: &Expr, label: &str, allow: &[String], ids: &BTreeSet<String>) {
    let mut all = Vec::new();
    selectors(expr, &mut all);
    for vs in all {
        for g in groups(vs) {
            let pins: Vec<&Matcher> = g.iter().filter(|m| m.name == label).collect();
            if pins.is_empty() {
                let metric = vs.name.as_deref().or_else(|| {
                    g.iter()
                        .find(|m| m.name == "__name__" && matches!(m.op, MatchOp::Equal))
                        .map(|m| m.value.as_str())
                });
                assert!(
                    metric.is_some_and(|n| allow.iter().any(|a| a == n)),
                    "{query:?}: {vs} is neither pinned nor allowlisted"
                );
                continue;
            }
            for m in pins {
                let values: Vec<&str> = match &m.op {
                    MatchOp::Equal => vec![m.value.as_str()],
                    MatchOp::Re(_) => m.value.split('|').collect(),
                    _ => panic!("{query:?}: {m} accepted as a pin"),
                };
                for v in values {
                    assert!(literal_id(v), "{query:?}: {m} pins a non-literal id");
                    assert!(ids.contains(v), "{query:?}: id {v} not reported");
                }
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::from(data) else {
        return;
    };
    let label = LABELS[input.label as usize % LABELS.len()];
    if input.ownership {
        let allow = vec!["up".to_string(), "node_load1".to_string()];
        if input.selector {
            if let Ok(ids) = pinned_ids_of_selector(input.query, label, &allow) {
                let expr = parse(input.query).expect("accepted, so it parsed");
                assert!(matches!(expr, Expr::VectorSelector(_)));
                assert_pinned(input.query, &expr, label, &allow, &ids);
            }
            return;
        }
        let Ok(expr) = parse(input.query) else {
            return;
        };
        if let Ok(ids) = pinned_ids(&expr, label, &allow) {
            assert_pinned(input.query, &expr, label, &allow, &ids);
            let printed = expr.to_string();
            let again = parse(&printed).unwrap_or_else(|e| {
                panic!("{:?} → {printed:?} does not parse: {e:?}", input.query)
            });
            let ids2 = pinned_ids(&again, label, &allow)
                .unwrap_or_else(|e| panic!("{:?} → {printed:?} refused: {e:?}", input.query));
            assert_eq!(ids, ids2, "{:?} → {printed:?}", input.query);
        }
        return;
    }
    let mut values = vec!["alice"];
    values.extend(input.values.iter().take(3));
    let e = Enforced {
        label,
        values: &values,
    };
    let out = if input.selector {
        enforce_selector(input.query, &e)
    } else {
        enforce_query(input.query, &e)
    };
    if let Ok(out) = out {
        assert_confined(input.query, &out, label, &values);
    }
});
