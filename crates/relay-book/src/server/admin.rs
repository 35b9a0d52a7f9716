//! The admin routes (spec §5.2): status and lock, manifest check/replace/export, bookings
//! and old bookings export/replace, users, resources and slot availability.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;

use super::auth::require_admin;
use super::error::ApiError;
use super::query::QueryParams;
use super::wire::{DenyCallStatus, Dropped, ResourceStatus, StoreStatusAdmin, UserExport};
use super::AppState;
use crate::manifest::{Manifest, ManifestError};
use crate::model::{Booking, ResourceState};
use crate::store::StoreError;

type Shared = State<Arc<AppState>>;

/// How many recent deny calls `/admin/status` shows.
const DENY_CALLS_SHOWN: i64 = 20;

/// A JSON body, or 400 `parsing body failed, because …` (code 400, framework style).
fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::framework(
            StatusCode::BAD_REQUEST,
            400,
            format!("parsing body failed, because {e}"),
        )
    })
}

/// The admin status, with the recent deny calls when there are any.
async fn admin_status(state: &AppState) -> Result<StoreStatusAdmin, ApiError> {
    let counts = state.store.counts().await?;
    let lock = state.store.lock_state().await?;
    let mut status = StoreStatusAdmin::new(&counts, &lock, state.clock.now());
    status.deny_calls = state
        .store
        .deny_calls(DENY_CALLS_SHOWN)
        .await?
        .iter()
        .map(DenyCallStatus::from)
        .collect();
    Ok(status)
}

/// `GET /admin/status`.
pub async fn status(
    State(state): Shared,
    headers: HeaderMap,
) -> Result<Json<StoreStatusAdmin>, ApiError> {
    require_admin(&state, &headers)?;
    Ok(Json(admin_status(&state).await?))
}

/// `PUT /admin/status?lock=&msg=`: lock or unlock; the message only when given.
pub async fn set_status(
    State(state): Shared,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<StoreStatusAdmin>, ApiError> {
    require_admin(&state, &headers)?;
    let query = QueryParams(query);
    let lock = query.bool("lock")?;
    let message = query.0.get("msg").map(String::as_str);
    state.store.set_lock(lock, message).await?;
    tracing::info!(locked = lock, message = ?message, "lock set");
    Ok(Json(admin_status(&state).await?))
}

/// `GET /admin/manifest`: the manifest as loaded (empty before the first replace).
pub async fn export_manifest(
    State(state): Shared,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    require_admin(&state, &headers)?;
    let export = state
        .read_manifest(|manifest| Json(manifest).into_response())
        .await?;
    Ok(export)
}

/// A failed check as one line: the category and every message (the reference sent only
/// the category).
fn check_failure(error: &ManifestError) -> String {
    format!("{}: {}", error.category, error.messages.join(","))
}

/// `PUT /admin/manifest`: check, replace, and report bookings cancelled because their slot
/// disappeared (`cancelled_bookings`, only when there are any).
pub async fn replace_manifest(
    State(state): Shared,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Json<StoreStatusAdmin>, ApiError> {
    require_admin(&state, &headers)?;
    let manifest: Manifest = body(&bytes)?;
    manifest
        .check()
        .map_err(|e| ApiError::internal(check_failure(&e)))?;
    let report = state
        .store
        .replace_manifest(manifest, state.clock.now())
        .await?;
    state
        .metrics
        .cancelled("replace", report.cancelled.len() as u64);
    if !report.cancelled.is_empty() {
        // Started bookings among them queued deny calls.
        state.deny_wake.notify_one();
    }
    tracing::info!(cancelled = ?report.cancelled, "manifest replaced");
    let mut status = admin_status(&state).await?;
    status.cancelled_bookings = report.cancelled;
    Ok(Json(status))
}

/// `GET|POST /admin/manifest/check`: 204 when valid, else 500 with the messages joined by
/// `,`. POST is accepted too, because proxies may strip a GET body.
pub async fn check_manifest(
    State(state): Shared,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<StatusCode, ApiError> {
    require_admin(&state, &headers)?;
    let manifest: Manifest = body(&bytes)?;
    manifest
        .check()
        .map_err(|e| ApiError::internal(e.messages.join(",")))?;
    Ok(StatusCode::NO_CONTENT)
}

/// A booking replacement the store refused: 500 with the store's message, as the
/// reference answered.
fn replace_refused(error: StoreError) -> ApiError {
    match error {
        StoreError::Refused(m) | StoreError::NotFound(m) => ApiError::internal(m),
        other => other.into(),
    }
}

/// `GET /admin/bookings`.
pub async fn export_bookings(
    State(state): Shared,
    headers: HeaderMap,
) -> Result<Json<Vec<Booking>>, ApiError> {
    require_admin(&state, &headers)?;
    Ok(Json(state.store.all_bookings().await?))
}

/// `PUT /admin/bookings`: replace the current bookings; 200 with the status, and the
/// bookings the rules refused under `dropped` (the reference dropped them silently).
pub async fn replace_bookings(
    State(state): Shared,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Json<StoreStatusAdmin>, ApiError> {
    require_admin(&state, &headers)?;
    let bookings: Vec<Booking> = body(&bytes)?;
    // Every current booking is cancelled and re-made (§3.10).
    let report = state
        .store
        .replace_bookings(bookings, state.clock.now())
        .await
        .map_err(replace_refused)?;
    state.metrics.cancelled("replace", report.cancelled);
    // Started bookings cancelled by the replacement queued deny calls.
    state.deny_wake.notify_one();
    tracing::info!(kept = report.kept.len(), dropped = ?report.dropped, "bookings replaced");
    let mut status = admin_status(&state).await?;
    status.dropped = report
        .dropped
        .into_iter()
        .map(|(name, reason)| Dropped { name, reason })
        .collect();
    Ok(Json(status))
}

/// `GET /admin/oldbookings`.
pub async fn export_old_bookings(
    State(state): Shared,
    headers: HeaderMap,
) -> Result<Json<Vec<Booking>>, ApiError> {
    require_admin(&state, &headers)?;
    Ok(Json(state.store.all_old_bookings().await?))
}

/// `PUT /admin/oldbookings`.
pub async fn replace_old_bookings(
    State(state): Shared,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Json<StoreStatusAdmin>, ApiError> {
    require_admin(&state, &headers)?;
    let bookings: Vec<Booking> = body(&bytes)?;
    state
        .store
        .replace_old_bookings(bookings, state.clock.now())
        .await
        .map_err(replace_refused)?;
    Ok(Json(admin_status(&state).await?))
}

/// `GET /admin/users`: `{user: User}`.
pub async fn users(
    State(state): Shared,
    headers: HeaderMap,
) -> Result<Json<BTreeMap<String, UserExport>>, ApiError> {
    require_admin(&state, &headers)?;
    let users = state.store.users().await?;
    Ok(Json(
        users
            .iter()
            .map(|(name, user)| (name.clone(), UserExport::from(user)))
            .collect(),
    ))
}

/// `GET /admin/resources`: the manifest's resources (`{}` before a manifest).
pub async fn resources(State(state): Shared, headers: HeaderMap) -> Result<Response, ApiError> {
    require_admin(&state, &headers)?;
    let resources = state
        .read_manifest(|manifest| Json(&manifest.resources).into_response())
        .await?;
    Ok(resources)
}

/// The resource a slot books, or 404 `slot <s> not found`.
async fn resource_of_slot(state: &AppState, slot: &str) -> Result<String, ApiError> {
    state
        .read_manifest(|manifest| manifest.slots.get(slot).map(|s| s.resource.clone()))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("slot {slot} not found")))
}

/// `available` and `reason`, both required.
fn availability_query(query: HashMap<String, String>) -> Result<ResourceState, ApiError> {
    let query = QueryParams(query);
    let available = query.bool("available")?;
    let reason = query
        .0
        .get("reason")
        .cloned()
        .ok_or_else(|| ApiError::query_required("reason"))?;
    Ok(ResourceState { available, reason })
}

async fn read_status(state: &AppState, resource: &str) -> Result<Json<ResourceStatus>, ApiError> {
    let current = state.store.resource_state(resource).await?;
    Ok(Json(ResourceStatus::from(&current)))
}

async fn write_status(
    state: &AppState,
    resource: &str,
    query: HashMap<String, String>,
) -> Result<StatusCode, ApiError> {
    let wanted = availability_query(query)?;
    tracing::info!(%resource, available = wanted.available, reason = %wanted.reason, "resource availability set");
    state.store.set_resource_state(resource, wanted).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /admin/resources/{resource_name}`.
pub async fn resource_status(
    State(state): Shared,
    headers: HeaderMap,
    Path(resource): Path<String>,
) -> Result<Json<ResourceStatus>, ApiError> {
    require_admin(&state, &headers)?;
    read_status(&state, &resource).await
}

/// `PUT /admin/resources/{resource_name}?available=&reason=`: 204.
pub async fn set_resource_status(
    State(state): Shared,
    headers: HeaderMap,
    Path(resource): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<StatusCode, ApiError> {
    require_admin(&state, &headers)?;
    write_status(&state, &resource, query).await
}

/// `GET /admin/slots/{slot_name}`: the slot's resource's status.
pub async fn slot_status(
    State(state): Shared,
    headers: HeaderMap,
    Path(slot): Path<String>,
) -> Result<Json<ResourceStatus>, ApiError> {
    require_admin(&state, &headers)?;
    let resource = resource_of_slot(&state, &slot).await?;
    read_status(&state, &resource).await
}

/// `PUT /admin/slots/{slot_name}?available=&reason=`: sets the slot's resource; 204.
pub async fn set_slot_status(
    State(state): Shared,
    headers: HeaderMap,
    Path(slot): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<StatusCode, ApiError> {
    require_admin(&state, &headers)?;
    let resource = resource_of_slot(&state, &slot).await?;
    write_status(&state, &resource, query).await
}
