//! The OpenAPI document, generated from the handlers (utoipa), at `/api/v1/openapi.json`, and
//! Swagger UI at `/api/v1/docs/` served from the binary (the `vendored` Swagger UI crate:
//! nothing is downloaded at build or run time).

use axum::Router;
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::{ContentBuilder, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::SwaggerUi;

use crate::accounting::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "hpcgate accounting API",
        description = "Compute units, projects, users and usage; compatible with the CEEMS API \
                       server. Reached through the gateway, which authenticates the caller. \
                       Every answer is wrapped as {\"status\":\"success\",\"data\":…, \
                       \"warnings\":[…]} (the bodies below are `data`); every refusal is \
                       {\"status\":\"error\",\"data\":null,\"errorType\":…,\"error\":…}. \
                       `from`/`to` are Unix seconds; `*_ts` fields are milliseconds."
    ),
    paths(
        super::health,
        super::units::units,
        super::units::units_admin,
        super::units::verify,
        super::units::push,
        super::usage::usage,
        super::usage::usage_admin,
        super::directory::projects,
        super::directory::projects_admin,
        super::directory::users,
        super::directory::users_admin,
        super::directory::clusters,
        super::directory::add_member,
        super::directory::remove_member,
    ),
    modifiers(&Envelopes)
)]
pub struct ApiDoc;

/// What the handlers' annotations leave implicit, written once for every operation, so
/// that the document says what a client really gets (schemathesis checks it against the
/// service: tests/accounting_schemathesis.rs):
/// - a JSON success is the envelope `{"status":"success","data":…,"warnings":[…]}` around
///   the annotated body;
/// - a refusal is `{"status":"error","errorType":…,"error":…}` (`data: null` from the
///   service, absent from the gateway);
/// - the gateway in front may refuse any request: 400 (an ambiguous request), 401, 403
///   (policy), 429 (rate limit), 502/503/504 (the service cannot be reached); and an
///   operation with path parameters answers 404 for what does not exist.
struct Envelopes;

/// Statuses the gateway may answer for any operation.
const GATEWAY_STATUSES: &[(&str, &str)] = &[
    (
        "400",
        "A malformed request or a bad parameter (named in `error`)",
    ),
    ("401", "No or wrong credentials (from the gateway)"),
    ("403", "Not allowed (the gateway's policy, or the service)"),
    ("429", "Rate limit (from the gateway)"),
    ("502", "The service cannot be reached (from the gateway)"),
    ("503", "The service or its database is not answering"),
    (
        "504",
        "The service did not answer in time (from the gateway)",
    ),
];

fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

fn error_schema() -> Schema {
    ObjectBuilder::new()
        .property("status", string().enum_values(Some(["error"])))
        .required("status")
        .property("errorType", string())
        .required("errorType")
        .property("error", string())
        .required("error")
        .property("data", ObjectBuilder::new().schema_type(Type::Null))
        .into()
}

fn envelope(data: Option<RefOr<Schema>>) -> Schema {
    let mut b = ObjectBuilder::new()
        .property("status", string().enum_values(Some(["success"])))
        .required("status");
    b = match data {
        Some(d) => b.property("data", d),
        // Not annotated: any JSON value (`null` for /units/verify).
        None => b.property(
            "data",
            ObjectBuilder::new().schema_type(SchemaType::AnyValue),
        ),
    };
    b.required("data")
        .property("warnings", ArrayBuilder::new().items(string()))
        .into()
}

fn json_content(schema: Schema) -> utoipa::openapi::Content {
    ContentBuilder::new().schema(Some(schema)).build()
}

fn amend(path: &str, op: &mut Operation) {
    let responses = &mut op.responses.responses;
    for (status, response) in responses.iter_mut() {
        let RefOr::T(r) = response else { continue };
        if status.starts_with('2') {
            if r.content.is_empty() {
                r.content
                    .insert("application/json".into(), json_content(envelope(None)));
            } else if let Some(c) = r.content.get_mut("application/json") {
                c.schema = Some(envelope(c.schema.take()).into());
            }
        } else if r.content.is_empty() {
            r.content
                .insert("application/json".into(), json_content(error_schema()));
        }
    }
    let mut extra: Vec<(&str, &str)> = GATEWAY_STATUSES.to_vec();
    if path.contains('{') {
        extra.push(("404", "No such resource"));
    }
    for (status, description) in extra {
        responses.entry(status.to_string()).or_insert_with(|| {
            ResponseBuilder::new()
                .description(description)
                .content("application/json", json_content(error_schema()))
                .into()
        });
    }
}

impl Modify for Envelopes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            for op in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                amend(path, op);
            }
        }
    }
}

pub fn router() -> Router<AppState> {
    Router::new()
        .merge(SwaggerUi::new("/api/v1/docs").url("/api/v1/openapi.json", ApiDoc::openapi()))
}
