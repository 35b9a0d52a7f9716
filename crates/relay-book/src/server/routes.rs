//! The router: every route of spec §5 under `/api/v1`, the OpenAPI document, `/metrics`,
//! `/healthz`, and the framework-style replies for unknown paths (404) and wrong methods
//! (405). Every request's latency is recorded by route.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;

use super::error::ApiError;
use super::metrics::RouteLabel;
use super::{activity, admin, user, AppState};

/// The API's base path.
pub const BASE_PATH: &str = "/api/v1";

/// The OpenAPI (Swagger 2.0) document of the routes as built.
pub const OPENAPI: &str = include_str!("../../openapi.json");

/// The whole application.
pub fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/login/{user_name}", post(user::login))
        .route("/users/unique", post(user::unique))
        .route("/users/status", get(user::status))
        .route("/descriptions/{description_name}", get(user::description))
        .route("/groups/{group_name}", get(user::group))
        .route("/policies/{policy_name}", get(user::policy))
        .route(
            "/slots/{slot_name}",
            get(user::availability).post(user::make_booking),
        )
        .route("/users/{user_name}/bookings", get(user::bookings))
        .route(
            "/users/{user_name}/bookings/{booking_name}",
            put(activity::get_activity).delete(user::cancel_booking),
        )
        .route("/users/{user_name}/oldbookings", get(user::old_bookings))
        .route("/users/{user_name}/groups", get(user::groups))
        .route(
            "/users/{user_name}/groups/{group_name}",
            post(user::join_group),
        )
        .route(
            "/users/{user_name}/policies/{policy_name}",
            get(user::policy_status),
        )
        .route("/admin/status", get(admin::status).put(admin::set_status))
        .route(
            "/admin/manifest",
            get(admin::export_manifest).put(admin::replace_manifest),
        )
        .route(
            "/admin/manifest/check",
            get(admin::check_manifest).post(admin::check_manifest),
        )
        .route(
            "/admin/bookings",
            get(admin::export_bookings).put(admin::replace_bookings),
        )
        .route(
            "/admin/oldbookings",
            get(admin::export_old_bookings).put(admin::replace_old_bookings),
        )
        .route("/admin/users", get(admin::users))
        .route("/admin/resources", get(admin::resources))
        .route(
            "/admin/resources/{resource_name}",
            get(admin::resource_status).put(admin::set_resource_status),
        )
        .route(
            "/admin/slots/{slot_name}",
            get(admin::slot_status).put(admin::set_slot_status),
        )
        .route("/swagger.json", get(openapi));
    Router::new()
        .nest(BASE_PATH, api)
        .route("/swagger.json", get(openapi))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .merge(crate::pages::routes())
        .fallback(unknown_path)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Record the request's latency under its route template and log it at debug.
async fn observe(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    let elapsed = started.elapsed();
    state
        .metrics
        .request_seconds
        .get_or_create(&RouteLabel {
            method: method.clone(),
            route: route.clone(),
        })
        .observe(elapsed.as_secs_f64());
    tracing::debug!(%method, %route, status = response.status().as_u16(), elapsed_ms = elapsed.as_millis() as u64, "request");
    response
}

async fn unknown_path(request: Request) -> ApiError {
    ApiError::framework(
        StatusCode::NOT_FOUND,
        404,
        format!("path {} was not found", request.uri().path()),
    )
}

async fn wrong_method(request: Request) -> ApiError {
    ApiError::framework(
        StatusCode::METHOD_NOT_ALLOWED,
        405,
        format!(
            "method {} is not allowed on {}",
            request.method(),
            request.uri().path()
        ),
    )
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

/// `/healthz`: 200 `{"database":"ok"}` after a database round trip, 503 with the error.
async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    match state.store.ping().await {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"database":"ok"}"#.to_owned(),
        )
            .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "health check: database unreachable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::CONTENT_TYPE, "application/json")],
                serde_json::json!({ "database": e.to_string() }).to_string(),
            )
                .into_response()
        }
    }
}
