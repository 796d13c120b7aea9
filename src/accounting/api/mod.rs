//! The HTTP API: CEEMS' envelope, errors and query parameters, the caller extractor, and the
//! app built from one router per resource.

mod directory;
mod openapi;
mod params;
mod units;
mod usage;

use std::collections::HashSet;

use axum::Json;
use axum::Router;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::{AppState, Trust};
use crate::db::StoreError;

pub use params::Params;

/// The header with the caller's name, written by the gateway.
pub const USER_HEADER: &str = "x-grafana-user";
/// The header with the caller's groups (comma-separated), written by the gateway.
pub const GROUPS_HEADER: &str = "x-hpcgate-groups";

/// `{"status":"success","data":…}`, with `warnings` when there are any.
#[derive(Serialize)]
pub struct Envelope<T: Serialize> {
    status: &'static str,
    data: T,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
}

/// A successful answer.
pub fn ok<T: Serialize>(data: T) -> Response {
    ok_with(data, Vec::new())
}

pub fn ok_with<T: Serialize>(data: T, warnings: Vec<String>) -> Response {
    Json(Envelope {
        status: "success",
        data,
        warnings,
    })
    .into_response()
}

/// A refusal: CEEMS' `errorType` names, each with its status.
#[derive(Debug)]
pub enum ApiError {
    BadData(String),
    Unauthorized(String),
    Forbidden(String),
    NotFound(String),
    /// The database could not answer: fail closed.
    Unavailable,
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str, &str) {
        match self {
            ApiError::BadData(m) => (StatusCode::BAD_REQUEST, "bad_data", m),
            ApiError::Unauthorized(m) => (StatusCode::UNAUTHORIZED, "unauthorized", m),
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, "forbidden", m),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, "not_found", m),
            ApiError::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the accounting database is not answering; try again shortly",
            ),
        }
    }

    pub fn bad(msg: impl Into<String>) -> ApiError {
        ApiError::BadData(msg.into())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        // The cause is for the operator; the caller learns only that it is not their fault.
        tracing::error!(error = %e, "accounting: database error");
        ApiError::Unavailable
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, kind, msg) = self.parts();
        let body = serde_json::json!({
            "status": "error",
            "data": null,
            "errorType": kind,
            "error": msg,
        });
        (status, Json(body)).into_response()
    }
}

/// The authenticated caller, as the gateway said. A handler that takes a `Caller` cannot
/// run without one.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: String,
    pub admin: bool,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let user = parts
            .headers
            .get(USER_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .ok_or_else(|| {
                ApiError::Unauthorized(
                    "no user identified: reach this API through the gateway (a route of \
                     kind accounting)"
                        .into(),
                )
            })?
            .to_string();
        let groups: HashSet<&str> = parts
            .headers
            .get_all(GROUPS_HEADER)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        let cfg = &state.cfg;
        let admin = groups.iter().any(|g| cfg.admin_groups.contains(*g))
            || cfg.admin_users.contains(&user)
            || super::store::is_admin(&state.db, &user).await?;
        Ok(Caller { user, admin })
    }
}

impl Caller {
    /// 403 unless an admin (CEEMS' wording).
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.admin {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "current user does not have admin privileges".into(),
            ))
        }
    }
}

/// Over TCP, every request must carry the shared secret before its headers mean anything.
async fn check_secret(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if let Trust::SharedSecret(secret) = &state.trust {
        let presented = req
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
            .unwrap_or(b"");
        if !secret.ct_eq(presented) {
            return ApiError::Unauthorized(
                "this accounting service takes requests only from gateways that present its \
                 shared secret"
                    .into(),
            )
            .into_response();
        }
    }
    next.run(req).await
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint; see /api/v1/openapi.json".into())
}

async fn method_not_allowed(req: Request) -> Response {
    let body = serde_json::json!({
        "status": "error",
        "data": null,
        "errorType": "method_not_allowed",
        "error": format!("{} is not allowed on {}; see /api/v1/openapi.json", req.method(), req.uri().path()),
    });
    (StatusCode::METHOD_NOT_ALLOWED, Json(body)).into_response()
}

/// `GET /api/v1/health`: 200 when the database answers, 503 otherwise.
#[utoipa::path(get, path = "/api/v1/health", responses(
    (status = 200, description = "The service and its database answer", content_type = "text/plain", body = String),
    (status = 503, description = "The database does not answer (`KO`)", content_type = "text/plain", body = String),
))]
async fn health(State(state): State<AppState>) -> Response {
    match sqlx::query("SELECT 1").execute(state.db.pool()).await {
        Ok(_) => (StatusCode::OK, "hpcgate accounting is healthy").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "accounting: health check failed");
            (StatusCode::SERVICE_UNAVAILABLE, "KO").into_response()
        }
    }
}

/// The whole app.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/health", axum::routing::get(health))
        .merge(units::router())
        .merge(usage::router())
        .merge(directory::router())
        .merge(openapi::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            check_secret,
        ))
        .with_state(state)
}
