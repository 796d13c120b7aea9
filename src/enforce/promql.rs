//! PromQL enforcement in `label` mode (the prom-label-proxy idea, done on the parse tree):
//! every vector and matrix selector, wherever it sits in the expression (binary operations,
//! subqueries, function arguments, aggregations, `or` groups of matchers), gets
//! `<label>="<value>"`. A matcher on that label the user wrote is kept and ANDed with the
//! enforced one (`{user=~"$user"}` from a Grafana variable, `user!=""`), which can only
//! narrow what is read; an equality to a value that is not theirs is refused, since it could
//! only ever read nothing.
//!
//! Every query is bounded before it is parsed ([`check_bounds`]): at most
//! [`MAX_QUERY_BYTES`] and an estimated nesting depth of at most [`MAX_DEPTH`]. The parse
//! tree is walked, printed and dropped by recursion (here, in promql-parser and in `Drop`),
//! and a stack overflow aborts the whole process, which no `catch_unwind` can stop.
//!
//! Parsing and printing are promql-parser's; no text surgery on query strings.

use promql_parser::label::{MatchOp, Matcher, Matchers};
use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use promql_parser::parser::{self, AtModifier, Expr, Offset, VectorSelector};

/// Why a query was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not PromQL: 400.
    Invalid(String),
    /// Asks for series it may not see: 403.
    Forbidden(String),
}

/// The matcher every selector must carry: `label` equal to the one value (the user), or to
/// one of several (the user's groups, as `label=~"g1|g2"`).
#[derive(Debug, Clone)]
pub struct Enforced<'a> {
    pub label: &'a str,
    pub values: &'a [&'a str],
}

impl Enforced<'_> {
    fn allowed(&self) -> String {
        match self.values {
            [one] => format!("{}=\"{one}\"", self.label),
            many => format!(
                "{} equal to one of {}",
                self.label,
                many.iter()
                    .map(|v| format!("\"{v}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    /// The matcher added where the query sets none.
    fn matcher(&self) -> Result<Matcher, Refusal> {
        match self.values {
            [] => Err(Refusal::Forbidden(format!(
                "no value of `{}` is yours to read (you are in none of the groups it names)",
                self.label
            ))),
            [one] => Ok(Matcher::new(MatchOp::Equal, self.label, one)),
            many => {
                let alternation = many
                    .iter()
                    .map(|v| regex::escape(v))
                    .collect::<Vec<_>>()
                    .join("|");
                let re = regex::Regex::new(&format!("^(?:{alternation})$")).map_err(|e| {
                    Refusal::Forbidden(format!("cannot confine to your groups: {e}"))
                })?;
                Ok(Matcher::new(MatchOp::Re(re), self.label, &alternation))
            }
        }
    }
}

fn confine_matchers(m: &mut Matchers, e: &Enforced<'_>) -> Result<(), Refusal> {
    let groups: Vec<&mut Vec<Matcher>> = if m.or_matchers.is_empty() {
        vec![&mut m.matchers]
    } else {
        m.or_matchers.iter_mut().collect()
    };
    for group in groups {
        let mut present = false;
        for existing in group.iter().filter(|m| m.name == e.label) {
            // Prometheus ANDs every matcher of a selector, so the user's own matchers on the
            // label stay (they can only narrow what the enforced one allows). An equality to
            // one of the allowed values already is the enforced matcher, or narrower; an
            // equality to any other value can only read nothing, and says the user asked for
            // someone else's series: refused with the reason.
            if matches!(existing.op, MatchOp::Equal) {
                if e.values.contains(&existing.value.as_str()) {
                    present = true;
                } else {
                    return Err(Refusal::Forbidden(format!(
                        "the query asks for `{existing}`; only {} is yours to read",
                        e.allowed()
                    )));
                }
            }
        }
        if !present {
            group.push(e.matcher()?);
        }
    }
    Ok(())
}

/// A series selector of everything `e` allows (for label listings without `match[]`).
pub fn own_selector(e: &Enforced<'_>) -> Result<String, Refusal> {
    let mut vs = VectorSelector::new(None, Matchers::new(Vec::new()));
    confine_selector(&mut vs, e)?;
    Ok(vs.to_string())
}

fn confine_selector(vs: &mut VectorSelector, e: &Enforced<'_>) -> Result<(), Refusal> {
    confine_matchers(&mut vs.matchers, e)
}

/// Confines every selector in `expr`; returns how many there were.
fn confine(expr: &mut Expr, e: &Enforced<'_>) -> Result<usize, Refusal> {
    Ok(match expr {
        Expr::VectorSelector(vs) => {
            confine_selector(vs, e)?;
            1
        }
        Expr::MatrixSelector(ms) => {
            confine_selector(&mut ms.vs, e)?;
            1
        }
        Expr::Aggregate(a) => {
            let mut n = confine(&mut a.expr, e)?;
            if let Some(p) = a.param.as_mut() {
                n += confine(p, e)?;
            }
            n
        }
        Expr::Unary(u) => confine(&mut u.expr, e)?,
        Expr::Binary(b) => confine(&mut b.lhs, e)? + confine(&mut b.rhs, e)?,
        Expr::Paren(p) => confine(&mut p.expr, e)?,
        Expr::Subquery(s) => confine(&mut s.expr, e)?,
        Expr::Call(c) => {
            let mut n = 0;
            for a in c.args.args.iter_mut() {
                n += confine(a, e)?;
            }
            n
        }
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) => 0,
        // The parser never makes these; refuse rather than pass something unchecked.
        Expr::Extension(_) => {
            return Err(Refusal::Forbidden("unsupported expression".into()));
        }
    })
}

/// Longest PromQL text the gateway parses (a query, or one `match[]` selector). Grafana's
/// generated queries are a few KiB at most.
pub const MAX_QUERY_BYTES: usize = 32 * 1024;

/// Deepest nesting the gateway parses, as estimated by [`check_bounds`]: real queries stay
/// below 20; this leaves room for long `a + b + c …` chains (each operator is a level of the
/// parse tree) while a parse tree this deep is walked, printed and dropped in well under the
/// 2 MiB stack of a worker thread, even unoptimised.
pub const MAX_DEPTH: usize = 256;

/// Refuses a query too long or nested too deeply to be parsed safely, without parsing it:
/// one pass over the text that skips strings and comments and keeps, for each open
/// parenthesis, bracket or brace, how many operators stand in it. The parse tree cannot be
/// deeper than the open groups plus the operators inside them (an operator chain `a+b+c`
/// is a left-deep tree, and unary `-` nests), so that sum bounds the recursion of every walk
/// over the tree.
pub fn check_bounds(query: &str) -> Result<(), Refusal> {
    if query.len() > MAX_QUERY_BYTES {
        return Err(Refusal::Invalid(format!(
            "the query is {} bytes long; the gateway accepts at most {} KiB",
            query.len(),
            MAX_QUERY_BYTES / 1024
        )));
    }
    let depth = nesting_depth(query.as_bytes());
    if depth > MAX_DEPTH {
        return Err(Refusal::Invalid(format!(
            "the query nests too deeply (about {depth} levels of parentheses, brackets and \
             operators); the gateway accepts at most {MAX_DEPTH}"
        )));
    }
    Ok(())
}

/// The depth estimate of [`check_bounds`] (an upper bound of the parse tree's depth).
fn nesting_depth(q: &[u8]) -> usize {
    // For each open group: its kind (operators inside braces are label matchers, inside
    // brackets durations, neither nests) and the operators counted in it.
    let mut stack: Vec<(u8, usize)> = Vec::new();
    let (mut top_ops, mut depth, mut max) = (0usize, 0usize, 0usize);
    let mut i = 0;
    while i < q.len() {
        let c = q[i];
        match c {
            b'"' | b'\'' | b'`' => {
                // A string: to its closing quote (backslash escapes, but not in backticks).
                i += 1;
                while i < q.len() && q[i] != c {
                    if q[i] == b'\\' && c != b'`' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'#' => {
                while i < q.len() && q[i] != b'\n' {
                    i += 1;
                }
            }
            b'(' | b'[' | b'{' => {
                if c == b'[' {
                    // Subqueries chain without parentheses (`x[1h:][1h:]`, each a level of
                    // the tree): a bracket counts as an operator of the group it is in too.
                    count_operator(&mut stack, &mut depth, &mut top_ops);
                }
                stack.push((c, 0));
                depth += 1;
            }
            b')' | b']' | b'}' => {
                if let Some((_, ops)) = stack.pop() {
                    depth -= 1 + ops;
                }
            }
            b'+' | b'-' | b'*' | b'/' | b'%' | b'^' | b'=' | b'!' | b'<' | b'>' => {
                count_operator(&mut stack, &mut depth, &mut top_ops);
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                // A word: the set operators and `atan2` are binary operators too.
                let start = i;
                while i + 1 < q.len() && (q[i + 1].is_ascii_alphanumeric() || q[i + 1] == b'_') {
                    i += 1;
                }
                let word = &q[start..=i];
                let op = ["and", "or", "unless", "atan2"]
                    .iter()
                    .any(|w| word.eq_ignore_ascii_case(w.as_bytes()));
                if op {
                    count_operator(&mut stack, &mut depth, &mut top_ops);
                }
            }
            _ => {}
        }
        max = max.max(depth + top_ops);
        i += 1;
    }
    max
}

/// An operator of the innermost open group (none inside braces, where `=`, `!=`, `=~` are
/// label matchers, or brackets, where `-` may be part of a duration).
fn count_operator(stack: &mut [(u8, usize)], depth: &mut usize, top_ops: &mut usize) {
    match stack.last_mut() {
        Some((b'{' | b'[', _)) => {}
        Some((_, ops)) => {
            *ops += 1;
            *depth += 1;
        }
        None => *top_ops += 1,
    }
}

/// Parses a query; text that is not PromQL is [`Refusal::Invalid`], and so is text over the
/// bounds of [`check_bounds`].
///
/// promql-parser panics on some inputs (found by the `promql` fuzz target: a subquery step
/// too large for a `Duration`, `x[1h:6655555555555555555555555555566666666]`); the query
/// comes from the client, so such a panic is caught here and the query refused like any
/// other that is not PromQL. The parser holds no state across calls, so nothing is left
/// half-updated by the unwinding.
pub fn parse(query: &str) -> Result<Expr, Refusal> {
    check_bounds(query)?;
    std::panic::catch_unwind(|| parser::parse(query))
        .unwrap_or_else(|_| {
            Err("the query cannot be parsed (the PromQL parser failed on it)".into())
        })
        .map_err(Refusal::Invalid)
}

/// Confines every selector of a parsed expression.
pub fn confine_expr(expr: &mut Expr, e: &Enforced<'_>) -> Result<(), Refusal> {
    confine(expr, e).map(|_| ())
}

/// A query with every selector confined, as PromQL text.
pub fn enforce_query(query: &str, e: &Enforced<'_>) -> Result<String, Refusal> {
    let mut expr = parse(query)?;
    confine(&mut expr, e)?;
    print(&expr)
}

/// A confined expression as the PromQL text sent upstream, refused unless that text parses
/// and prints back as itself (a fixpoint; the printer sorts matchers, so the trees need not
/// be equal). promql-parser's printer and parser disagree on a few corners (`rate(x[0])`
/// prints as `[0s]`, which it then refuses to parse); such a query is refused, not passed on.
pub fn print(expr: &Expr) -> Result<String, Refusal> {
    let text = expr.to_string();
    match parse(&text) {
        Ok(again) if again.to_string() == text => Ok(text),
        _ => Err(Refusal::Invalid(format!(
            "the query cannot be passed on faithfully: it prints as `{text}`, which does \
             not read back as the same query"
        ))),
    }
}

/// The ownership mode (the CEEMS load balancer's idea, on the parse tree): every selector
/// must pin the job label with `=` or with `=~` over a plain alternation of literal ids,
/// unless its metric is in `allow` (series that belong to no job). Returns every id pinned,
/// for the caller to check against the accounting store. Every selector counts, wherever
/// it sits: `mine or other_metric` is refused, not judged by its first half.
pub fn pinned_ids(expr: &Expr, label: &str, allow: &[String]) -> Result<BTreeSet<String>, Refusal> {
    let mut ids = BTreeSet::new();
    visit_selectors(expr, &mut |vs| pin(vs, label, allow, &mut ids))?;
    Ok(ids)
}

/// [`pinned_ids`] of one `match[]` series selector.
pub fn pinned_ids_of_selector(
    selector: &str,
    label: &str,
    allow: &[String],
) -> Result<BTreeSet<String>, Refusal> {
    match parse(selector)? {
        expr @ Expr::VectorSelector(_) => pinned_ids(&expr, label, allow),
        _ => Err(Refusal::Invalid(format!(
            "match[] must be a series selector, not `{selector}`"
        ))),
    }
}

fn visit_selectors(
    expr: &Expr,
    f: &mut dyn FnMut(&VectorSelector) -> Result<(), Refusal>,
) -> Result<(), Refusal> {
    match expr {
        Expr::VectorSelector(vs) => f(vs),
        Expr::MatrixSelector(ms) => f(&ms.vs),
        Expr::Aggregate(a) => {
            visit_selectors(&a.expr, f)?;
            match &a.param {
                Some(p) => visit_selectors(p, f),
                None => Ok(()),
            }
        }
        Expr::Unary(u) => visit_selectors(&u.expr, f),
        Expr::Binary(b) => {
            visit_selectors(&b.lhs, f)?;
            visit_selectors(&b.rhs, f)
        }
        Expr::Paren(p) => visit_selectors(&p.expr, f),
        Expr::Subquery(s) => visit_selectors(&s.expr, f),
        Expr::Call(c) => c.args.args.iter().try_for_each(|a| visit_selectors(a, f)),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) => Ok(()),
        Expr::Extension(_) => Err(Refusal::Forbidden("unsupported expression".into())),
    }
}

/// A job id as it may appear in a pinning regex: characters with no meaning in RE2.
fn literal_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ':'))
}

fn pin(
    vs: &VectorSelector,
    label: &str,
    allow: &[String],
    ids: &mut BTreeSet<String>,
) -> Result<(), Refusal> {
    let groups: Vec<&Vec<Matcher>> = if vs.matchers.or_matchers.is_empty() {
        vec![&vs.matchers.matchers]
    } else {
        vs.matchers.or_matchers.iter().collect()
    };
    for group in groups {
        let mut pinned = false;
        for m in group.iter().filter(|m| m.name == label) {
            let values: Vec<&str> = match m.op {
                MatchOp::Equal => vec![m.value.as_str()],
                MatchOp::Re(_) => m.value.split('|').collect(),
                _ => {
                    return Err(Refusal::Forbidden(format!(
                        "`{m}` does not pin `{label}`: use {label}=\"<id>\" or \
                         {label}=~\"<id>|<id>\""
                    )));
                }
            };
            if !values.iter().all(|v| literal_id(v)) {
                return Err(Refusal::Forbidden(format!(
                    "`{m}` is not a list of job ids: only letters, digits, `_`, `-` and `:` \
                     separated by `|`"
                )));
            }
            ids.extend(values.into_iter().map(String::from));
            pinned = true;
        }
        if pinned {
            continue;
        }
        let metric = vs.name.as_deref().or_else(|| {
            group
                .iter()
                .find(|m| m.name == "__name__" && matches!(m.op, MatchOp::Equal))
                .map(|m| m.value.as_str())
        });
        if !metric.is_some_and(|n| allow.iter().any(|a| a == n)) {
            return Err(Refusal::Forbidden(format!(
                "`{vs}` does not pin `{label}` to your jobs: add {label}=\"<id>\" or \
                 {label}=~\"<id>|<id>\""
            )));
        }
    }
    Ok(())
}

/// Prometheus' default lookback for instant selectors.
const LOOKBACK_SECONDS: f64 = 300.0;

fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn offset_seconds(o: &Option<Offset>) -> f64 {
    match o {
        None => 0.0,
        Some(Offset::Pos(d)) => seconds(*d),
        Some(Offset::Neg(d)) => -seconds(*d),
    }
}

fn at_seconds(at: &Option<AtModifier>, start: f64, end: f64) -> Option<f64> {
    Some(match at.as_ref()? {
        AtModifier::Start => start,
        AtModifier::End => end,
        AtModifier::At(t) => match t.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(d) => seconds(d),
            Err(e) => -seconds(e.duration()),
        },
    })
}

/// The oldest sample time (Unix seconds) an expression evaluated at every step of
/// `[start, end]` reads: selectors' ranges (or the 5 min lookback), offsets, `@` and
/// subqueries included. `+inf` when it reads no series (`1 + 1`, `time()`).
pub fn earliest_read(expr: &Expr, start: f64, end: f64) -> f64 {
    match expr {
        Expr::VectorSelector(vs) => {
            at_seconds(&vs.at, start, end).unwrap_or(start)
                - offset_seconds(&vs.offset)
                - LOOKBACK_SECONDS
        }
        Expr::MatrixSelector(ms) => {
            at_seconds(&ms.vs.at, start, end).unwrap_or(start)
                - offset_seconds(&ms.vs.offset)
                - seconds(ms.range)
        }
        Expr::Subquery(sq) => {
            let at = at_seconds(&sq.at, start, end);
            let off = offset_seconds(&sq.offset);
            let inner_end = at.unwrap_or(end) - off;
            let inner_start = at.unwrap_or(start) - off - seconds(sq.range);
            earliest_read(&sq.expr, inner_start, inner_end)
        }
        Expr::Aggregate(a) => {
            let p = a
                .param
                .as_ref()
                .map_or(f64::INFINITY, |p| earliest_read(p, start, end));
            earliest_read(&a.expr, start, end).min(p)
        }
        Expr::Unary(u) => earliest_read(&u.expr, start, end),
        Expr::Paren(p) => earliest_read(&p.expr, start, end),
        Expr::Binary(b) => earliest_read(&b.lhs, start, end).min(earliest_read(&b.rhs, start, end)),
        Expr::Call(c) => c
            .args
            .args
            .iter()
            .map(|a| earliest_read(a, start, end))
            .fold(f64::INFINITY, f64::min),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) => f64::INFINITY,
        // Never made by the parser; assume it reads back to the range's start.
        Expr::Extension(_) => start - LOOKBACK_SECONDS,
    }
}

/// A `match[]` series selector, confined.
pub fn enforce_selector(selector: &str, e: &Enforced<'_>) -> Result<String, Refusal> {
    let mut expr = parse(selector)?;
    match &mut expr {
        Expr::VectorSelector(vs) => confine_selector(vs, e)?,
        _ => {
            return Err(Refusal::Invalid(format!(
                "match[] must be a series selector, not `{selector}`"
            )));
        }
    }
    print(&expr)
}

#[cfg(test)]
pub(crate) mod tests;
