//! The OpenAPI document, generated from the handlers (utoipa), at `/api/v1/openapi.json`, and
//! Swagger UI at `/api/v1/docs/` served from the binary (the `vendored` Swagger UI crate:
//! nothing is downloaded at build or run time).

use axum::Router;
use utoipa::OpenApi;
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
    )
)]
pub struct ApiDoc;

pub fn router() -> Router<AppState> {
    Router::new()
        .merge(SwaggerUi::new("/api/v1/docs").url("/api/v1/openapi.json", ApiDoc::openapi()))
}
