//! Cedar policies: loading and validating them (errors name file and line), and deciding a
//! request.
//!
//! The schema and the policies live in a directory (`policies/` in the repository; the same
//! files are embedded in the binary and used when no directory is configured). Every `*.cedar`
//! file directly in it is loaded; sub-directories (such as `examples/`) are not. A policy is
//! named by its `@id` annotation, or `FILE#N` (its position in the file), in the audit log;
//! the client never learns which policy decided.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use cedar_policy::{
    Authorizer, Context, Decision, Entities, Entity, EntityId, EntityTypeName, EntityUid, PolicyId,
    PolicySet, Request, RestrictedExpression, Schema, ValidationMode, Validator,
};

use crate::authenticate::Identity;
use crate::config::error::ConfigError;
use crate::proxy::route::RouteKind;

pub const EMBEDDED_SCHEMA: &str = include_str!("../../policies/schema.cedarschema");
pub const EMBEDDED_DEFAULT: &str = include_str!("../../policies/default.cedar");

/// What a request asks to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Read,
    Write,
    Admin,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Write => "write",
            Action::Admin => "admin",
        }
    }

    /// GET, HEAD and OPTIONS read; every other method writes.
    pub fn for_method(method: &http::Method) -> Action {
        if matches!(
            *method,
            http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
        ) {
            Action::Read
        } else {
            Action::Write
        }
    }
}

/// The facts of a request that policies may look at.
pub struct Facts<'a> {
    pub client: Option<IpAddr>,
    pub method: &'a str,
    /// The canonical path (see `sanitize`): what routing, `admin_paths` and the upstream read.
    pub path: &'a str,
    /// Unix seconds.
    pub now: i64,
    /// Offset of the policy time zone from UTC, in seconds.
    pub utc_offset: i64,
}

/// The route as policies see it.
pub struct RouteFacts<'a> {
    pub name: &'a str,
    pub kind: RouteKind,
    pub path_prefix: &'a str,
}

/// A decision and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub allow: bool,
    /// The policies that decided (permitting ones on allow, forbidding ones on deny).
    pub policies: Vec<String>,
    /// Evaluation errors: any of them denies (a forbid that failed must not be ignored).
    pub errors: Vec<String>,
}

pub struct Policies {
    set: PolicySet,
    authorizer: Authorizer,
    /// Parsed once: Cedar parses names with its full grammar (a lexer per call).
    names: Names,
    /// The principal and resource entities of recent decisions (building them, with Cedar's
    /// transitive closure, costs more than the decision), by everything they are made of.
    entities: moka::sync::Cache<String, std::sync::Arc<Entities>>,
    /// Whether any policy reads `context.client_ip` (the `ip` value is costly to build).
    uses_client_ip: bool,
    /// The context attributes some policy reads; `None` when a policy uses `context` as a
    /// whole (then every attribute counts).
    context_reads: Option<HashSet<String>>,
    /// Recent verdicts, by the entities' key, the action and the values of the context
    /// attributes the policies read: a decision is a pure function of those, and with the
    /// usual policies (which read no per-request attribute) one key serves every request of
    /// a user on a route.
    verdicts: moka::sync::Cache<String, Verdict>,
    /// `ip()` values by address: Cedar builds one by parsing the extension function's name
    /// with its full grammar, which costs more than the rest of a decision.
    ips: moka::sync::Cache<IpAddr, RestrictedExpression>,
    admin_groups: HashSet<String>,
    /// Where the policies came from, for the log.
    pub source: String,
}

impl std::fmt::Debug for Policies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policies")
            .field("source", &self.source)
            .field("count", &self.set.policies().count())
            .finish()
    }
}

/// The entity type names and actions every decision uses.
struct Names {
    user: EntityTypeName,
    group: EntityTypeName,
    route: EntityTypeName,
    read: EntityUid,
    write: EntityUid,
    admin: EntityUid,
}

impl Names {
    fn new() -> Result<Self, String> {
        let ty = |t: &str| EntityTypeName::from_str(t).map_err(|e| e.to_string());
        let action = ty("Action")?;
        let act = |a: &str| EntityUid::from_type_name_and_id(action.clone(), EntityId::new(a));
        Ok(Names {
            user: ty("User")?,
            group: ty("Group")?,
            route: ty("Route")?,
            read: act("read"),
            write: act("write"),
            admin: act("admin"),
        })
    }

    fn action(&self, a: Action) -> &EntityUid {
        match a {
            Action::Read => &self.read,
            Action::Write => &self.write,
            Action::Admin => &self.admin,
        }
    }
}

/// The first labelled location of a Cedar diagnostic, as a line in `text`.
fn diag_line(d: &dyn miette::Diagnostic, text: &str) -> Option<usize> {
    let label = d.labels()?.next()?;
    Some(crate::config::error::line_at(text, label.offset()))
}

fn one_line(s: impl std::fmt::Display) -> String {
    s.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The attributes of `context` the policies read (`context.x`, `context has x`), from their
/// JSON form; `None` when one uses `context` any other way (or the set cannot be shown as
/// JSON), which makes every attribute count.
fn context_reads(set: &PolicySet) -> Option<HashSet<String>> {
    fn is_context(v: &serde_json::Value) -> bool {
        v.get("Var").and_then(|x| x.as_str()) == Some("context")
    }
    fn walk(v: &serde_json::Value, out: &mut HashSet<String>) -> bool {
        match v {
            serde_json::Value::Object(map) => {
                if is_context(v) {
                    return false;
                }
                for (op, inner) in map {
                    let left = inner.get("left");
                    if matches!(op.as_str(), "." | "has") && left.is_some_and(is_context) {
                        match inner.get("attr").and_then(|a| a.as_str()) {
                            Some(attr) => {
                                out.insert(attr.to_string());
                            }
                            None => return false,
                        }
                        continue;
                    }
                    if !walk(inner, out) {
                        return false;
                    }
                }
                true
            }
            serde_json::Value::Array(items) => items.iter().all(|i| walk(i, out)),
            _ => true,
        }
    }
    let json = set.clone().to_json().ok()?;
    let mut out = HashSet::new();
    walk(&json, &mut out).then_some(out)
}

impl Policies {
    /// Loads the schema and policies from `dir` (or the embedded defaults), validating every
    /// policy against the schema. Every problem is returned, each naming file and line.
    pub fn load(dir: Option<&Path>, admin_groups: &[String]) -> Result<Policies, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let (schema_file, schema_text, files) = match dir {
            None => (
                "(embedded)/schema.cedarschema".to_string(),
                EMBEDDED_SCHEMA.to_string(),
                vec![(
                    PathBuf::from("(embedded)/default.cedar"),
                    EMBEDDED_DEFAULT.to_string(),
                )],
            ),
            Some(dir) => {
                let schema_path = dir.join("schema.cedarschema");
                let schema_text = std::fs::read_to_string(&schema_path).map_err(|e| {
                    vec![ConfigError {
                        file: schema_path.display().to_string(),
                        key: "-".into(),
                        reason: format!("cannot read the Cedar schema: {e}"),
                    }]
                })?;
                let mut files = Vec::new();
                let entries = std::fs::read_dir(dir).map_err(|e| {
                    vec![ConfigError {
                        file: dir.display().to_string(),
                        key: "-".into(),
                        reason: format!("cannot read the policies directory: {e}"),
                    }]
                })?;
                for entry in entries.flatten() {
                    let p = entry.path();
                    if p.extension().is_some_and(|e| e == "cedar") && p.is_file() {
                        match std::fs::read_to_string(&p) {
                            Ok(t) => files.push((p, t)),
                            Err(e) => errors.push(ConfigError {
                                file: p.display().to_string(),
                                key: "-".into(),
                                reason: format!("cannot read: {e}"),
                            }),
                        }
                    }
                }
                files.sort();
                if files.is_empty() {
                    errors.push(ConfigError {
                        file: dir.display().to_string(),
                        key: "-".into(),
                        reason: "no *.cedar policy file: every request would be denied".into(),
                    });
                }
                (schema_path.display().to_string(), schema_text, files)
            }
        };
        let schema = match Schema::from_cedarschema_str(&schema_text) {
            Ok((s, _warnings)) => Some(s),
            Err(e) => {
                let line = diag_line(&e, &schema_text).unwrap_or(1);
                errors.push(ConfigError {
                    file: schema_file.clone(),
                    key: format!("line {line}"),
                    reason: one_line(&e),
                });
                None
            }
        };
        let mut set = PolicySet::new();
        let mut texts: HashMap<String, (String, String)> = HashMap::new();
        for (path, text) in &files {
            let file = path.display().to_string();
            let short = path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_else(|| file.clone());
            let parsed = match PolicySet::from_str(text) {
                Ok(p) => p,
                Err(e) => {
                    for err in e.iter() {
                        let line = diag_line(err, text).unwrap_or(1);
                        errors.push(ConfigError {
                            file: file.clone(),
                            key: format!("line {line}"),
                            reason: one_line(err),
                        });
                    }
                    continue;
                }
            };
            // from_str names policies policy0, policy1, … in the order of the file.
            let mut policies: Vec<_> = parsed.policies().cloned().collect();
            policies.sort_by_key(|p| {
                p.id()
                    .to_string()
                    .trim_start_matches("policy")
                    .parse::<usize>()
                    .unwrap_or(usize::MAX)
            });
            for (i, p) in policies.into_iter().enumerate() {
                let name = match p.annotation("id") {
                    Some(id) => format!("{short}:{id}"),
                    None => format!("{short}#{}", i + 1),
                };
                texts.insert(name.clone(), (file.clone(), text.clone()));
                if let Err(e) = set.add(p.new_id(PolicyId::new(&name))) {
                    errors.push(ConfigError {
                        file: file.clone(),
                        key: name.clone(),
                        reason: one_line(e),
                    });
                }
            }
        }
        if let Some(schema) = &schema {
            let result = Validator::new(schema.clone()).validate(&set, ValidationMode::Strict);
            for e in result.validation_errors() {
                let id = e.policy_id().to_string();
                let (file, line) = match texts.get(&id) {
                    Some((file, text)) => (file.clone(), diag_line(e, text).unwrap_or(1)),
                    None => (schema_file.clone(), 1),
                };
                errors.push(ConfigError {
                    file,
                    key: format!("line {line}"),
                    reason: format!("policy {id}: {}", one_line(e)),
                });
            }
        }
        let names = Names::new().map_err(|reason| {
            vec![ConfigError {
                file: "policies".into(),
                key: "-".into(),
                reason: format!("built-in entity names: {reason}"),
            }]
        })?;
        if !errors.is_empty() {
            return Err(errors);
        }
        let context_reads = context_reads(&set);
        let uses_client_ip = context_reads
            .as_ref()
            .is_none_or(|reads| reads.contains("client_ip"));
        Ok(Policies {
            set,
            authorizer: Authorizer::new(),
            names,
            entities: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(std::time::Duration::from_secs(300))
                .build(),
            uses_client_ip,
            context_reads,
            verdicts: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(std::time::Duration::from_secs(300))
                .build(),
            ips: moka::sync::Cache::new(10_000),
            admin_groups: admin_groups.iter().cloned().collect(),
            source: dir.map_or("embedded default policies".into(), |d| {
                d.display().to_string()
            }),
        })
    }

    pub fn is_admin(&self, id: &Identity) -> bool {
        id.groups().iter().any(|g| self.admin_groups.contains(g))
    }

    /// Decides whether `id` may do `action` on `route`.
    pub fn decide(
        &self,
        id: &Identity,
        action: Action,
        route: &RouteFacts<'_>,
        facts: &Facts<'_>,
    ) -> Verdict {
        self.evaluate(id, action, route, facts, true)
            .unwrap_or_else(|e| Verdict {
                allow: false,
                policies: Vec::new(),
                errors: vec![e],
            })
    }

    /// [`decide`](Self::decide) without looking up or remembering the verdict: what a
    /// user's first request on a route costs (benches/pipeline.rs).
    #[doc(hidden)]
    pub fn decide_evaluated(
        &self,
        id: &Identity,
        action: Action,
        route: &RouteFacts<'_>,
        facts: &Facts<'_>,
    ) -> Verdict {
        self.evaluate(id, action, route, facts, false)
            .unwrap_or_else(|e| Verdict {
                allow: false,
                policies: Vec::new(),
                errors: vec![e],
            })
    }

    /// The principal (with its groups) and the route, as Cedar entities.
    fn entities_for(
        &self,
        id: &Identity,
        admin: bool,
        route: &RouteFacts<'_>,
        user: &EntityUid,
        resource: &EntityUid,
    ) -> Result<Entities, String> {
        let groups: HashSet<EntityUid> = id
            .groups()
            .iter()
            .map(|g| EntityUid::from_type_name_and_id(self.names.group.clone(), EntityId::new(g)))
            .collect();
        let user_entity = Entity::new(
            user.clone(),
            HashMap::from([
                (
                    "method".into(),
                    RestrictedExpression::new_string(id.method().as_str().into()),
                ),
                (
                    "authenticator".into(),
                    RestrictedExpression::new_string(id.authenticator().into()),
                ),
                (
                    "via".into(),
                    RestrictedExpression::new_string(id.via().unwrap_or("").into()),
                ),
                ("admin".into(), RestrictedExpression::new_bool(admin)),
            ]),
            groups.clone(),
        )
        .map_err(|e| e.to_string())?;
        let route_entity = Entity::new(
            resource.clone(),
            HashMap::from([
                (
                    "name".into(),
                    RestrictedExpression::new_string(route.name.into()),
                ),
                (
                    "kind".into(),
                    RestrictedExpression::new_string(route.kind.as_str().into()),
                ),
                (
                    "path_prefix".into(),
                    RestrictedExpression::new_string(route.path_prefix.into()),
                ),
            ]),
            HashSet::new(),
        )
        .map_err(|e| e.to_string())?;
        let mut entities = vec![user_entity, route_entity];
        for g in groups {
            entities.push(Entity::new_no_attrs(g, HashSet::new()));
        }
        Entities::from_entities(entities, None).map_err(|e| e.to_string())
    }

    fn evaluate(
        &self,
        id: &Identity,
        action: Action,
        route: &RouteFacts<'_>,
        facts: &Facts<'_>,
        remember: bool,
    ) -> Result<Verdict, String> {
        let n = &self.names;
        let uid = |ty: &EntityTypeName, name: &str| {
            EntityUid::from_type_name_and_id(ty.clone(), EntityId::new(name))
        };
        let user = uid(&n.user, id.user());
        let resource = uid(&n.route, route.name);
        let admin = self.is_admin(id);
        // Everything the two entities are made of ('\0' cannot occur in any of it).
        let key = format!(
            "{}\0{}\0{}\0{}\0{}\0{admin}\0{}\0{}\0{}",
            id.user(),
            id.groups().join("\u{1}"),
            id.method().as_str(),
            id.authenticator(),
            id.via().unwrap_or(""),
            route.name,
            route.kind.as_str(),
            route.path_prefix,
        );
        let local = facts.now + facts.utc_offset;
        let days = local.div_euclid(86_400);
        let hour = local.rem_euclid(86_400) / 3600;
        // 1970-01-01 was a Thursday (ISO weekday 4).
        let weekday = (days + 3).rem_euclid(7) + 1;
        let reads = |attr: &str| {
            self.context_reads
                .as_ref()
                .is_none_or(|reads| reads.contains(attr))
        };
        let mut verdict_key = format!("{key}\0{}", action.as_str());
        {
            use std::fmt::Write;
            for (attr, value) in [("method", facts.method), ("path", facts.path)] {
                if reads(attr) {
                    let _ = write!(verdict_key, "\0{attr}={value}");
                }
            }
            for (attr, value) in [("now", facts.now), ("hour", hour), ("weekday", weekday)] {
                if reads(attr) {
                    let _ = write!(verdict_key, "\0{attr}={value}");
                }
            }
            if self.uses_client_ip {
                let _ = write!(verdict_key, "\0client_ip={:?}", facts.client);
            }
        }
        if remember && let Some(v) = self.verdicts.get(&verdict_key) {
            return Ok(v);
        }
        let entities = match self.entities.get(&key) {
            Some(e) => e,
            None => {
                let e = std::sync::Arc::new(self.entities_for(id, admin, route, &user, &resource)?);
                self.entities.insert(key, e.clone());
                e
            }
        };
        let mut pairs = vec![
            (
                "method".to_string(),
                RestrictedExpression::new_string(facts.method.into()),
            ),
            (
                "path".to_string(),
                RestrictedExpression::new_string(facts.path.into()),
            ),
            ("now".to_string(), RestrictedExpression::new_long(facts.now)),
            ("hour".to_string(), RestrictedExpression::new_long(hour)),
            (
                "weekday".to_string(),
                RestrictedExpression::new_long(weekday),
            ),
        ];
        if self.uses_client_ip {
            let ip = facts.client.unwrap_or(IpAddr::from([0, 0, 0, 0]));
            let value = self
                .ips
                .get_with(ip, || RestrictedExpression::new_ip(ip.to_string()));
            pairs.push(("client_ip".to_string(), value));
        }
        let context = Context::from_pairs(pairs).map_err(|e| e.to_string())?;
        let request = Request::new(user, n.action(action).clone(), resource, context, None)
            .map_err(|e| e.to_string())?;
        let response = self
            .authorizer
            .is_authorized(&request, &self.set, entities.as_ref());
        let errors: Vec<String> = response.diagnostics().errors().map(one_line).collect();
        let policies: Vec<String> = response
            .diagnostics()
            .reason()
            .map(|p| p.to_string())
            .collect();
        let verdict = Verdict {
            allow: response.decision() == Decision::Allow && errors.is_empty(),
            policies,
            errors,
        };
        if remember {
            self.verdicts.insert(verdict_key, verdict.clone());
        }
        Ok(verdict)
    }
}

#[cfg(test)]
pub mod tests;
