//! The public and user routes (spec §5.1) except the activity (see [`super::activity`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use governor::clock::Clock as _;
use serde::Serialize;

use super::auth::{require_user, Caller};
use super::error::ApiError;
use super::query::QueryParams;
use super::wire::{self, AccessToken, StoreStatusUser, UserName};
use super::AppState;
use crate::interval::{page, Interval};
use crate::manifest::Manifest;
use crate::store::{BookingRequest, StoreError};
use crate::timefmt::SECOND;
use crate::tokens;

type Shared = State<Arc<AppState>>;

/// The check of routes with `{user_name}` in the path: a user or admin token (the lock
/// applies), whose subject is `user` unless it is an admin's.
async fn path_user(state: &AppState, headers: &HeaderMap, user: &str) -> Result<Caller, ApiError> {
    let caller = require_user(state, headers, true).await?;
    caller.require_subject(user, || {
        format!(
            "user_name in path {user} does not match subject {} in token",
            caller.sub()
        )
    })?;
    Ok(caller)
}

/// The routes that look one thing up in the manifest by name: a user or admin token (the
/// lock applies), then what `find` finds as JSON, or 404 `not found`.
async fn manifest_lookup<T: Serialize>(
    state: &AppState,
    headers: &HeaderMap,
    find: impl FnOnce(&Manifest) -> Option<T>,
) -> Result<Response, ApiError> {
    require_user(state, headers, true).await?;
    let manifest = state.store.manifest().await?;
    let found = find(&manifest.manifest).ok_or_else(|| ApiError::not_found("not found"))?;
    Ok(Json(found).into_response())
}

/// `POST /login/{user_name}`: a login token for any name of at least
/// `BOOK_MIN_USERNAME_LENGTH` characters, rate-limited per client address.
pub async fn login(
    State(state): Shared,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(user_name): Path<String>,
) -> Result<Json<AccessToken>, ApiError> {
    if let Some(limiter) = &state.login_rate {
        let client =
            relay_server::client_addr::client_ip(peer, &headers, &state.config.trusted_proxies);
        let key = match client {
            std::net::IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                std::net::IpAddr::V6(segments.into())
            }
            other => other.to_canonical(),
        };
        if let Err(not_until) = limiter.check_key(&key) {
            let wait = not_until.wait_time_from(limiter.clock().now());
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            tracing::warn!(client = %client, "login rate limit reached");
            return Err(ApiError::handler(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "too many logins from this address; try again in {}s",
                    secs.max(1)
                ),
            )
            .retry_after(secs.max(1)));
        }
    }
    let min = state.config.min_username_length;
    if user_name.chars().count() < min {
        return Err(ApiError::not_found(format!(
            "user name must be {min} or more alphanumeric characters"
        )));
    }
    let ttl = i64::try_from(state.config.access_token_ttl.as_secs()).unwrap_or(i64::MAX / 4);
    let claims = tokens::login_claims(
        &user_name,
        &state.config.audience,
        ttl,
        state.clock.now_secs(),
    );
    let token = tokens::sign(&claims, state.config.admin_secret.as_bytes())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(AccessToken {
        aud: state.config.audience.clone(),
        exp: claims.exp,
        iat: claims.iat,
        nbf: claims.nbf,
        scopes: claims.scopes,
        sub: claims.sub,
        token,
    }))
}

/// `POST /users/unique`: a fresh xid user name.
pub async fn unique() -> Json<UserName> {
    Json(UserName {
        user_name: super::unique::next(),
    })
}

/// `GET /users/status`: the lock and message (not locked out).
pub async fn status(
    State(state): Shared,
    headers: HeaderMap,
) -> Result<Json<StoreStatusUser>, ApiError> {
    require_user(&state, &headers, false).await?;
    let lock = state.store.lock_state().await?;
    Ok(Json(StoreStatusUser::new(&lock, state.clock.now())))
}

/// `GET /descriptions/{description_name}` (404 `not found`; the reference said 500).
pub async fn description(
    State(state): Shared,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    manifest_lookup(&state, &headers, |manifest| {
        manifest.descriptions.get(&name).cloned()
    })
    .await
}

/// `GET /groups/{group_name}` (404 `not found`).
pub async fn group(
    State(state): Shared,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    manifest_lookup(&state, &headers, |manifest| {
        wire::group_with_policies(manifest, &name)
    })
    .await
}

/// `GET /policies/{policy_name}` (404 `not found`).
pub async fn policy(
    State(state): Shared,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    manifest_lookup(&state, &headers, |manifest| {
        wire::policy_described(manifest, &name)
    })
    .await
}

/// `GET /slots/{slot_name}?offset=&limit=`: the free gaps, paginated with bounds.
pub async fn availability(
    State(state): Shared,
    headers: HeaderMap,
    Path(slot): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Vec<Interval>>, ApiError> {
    require_user(&state, &headers, true).await?;
    let query = QueryParams(query);
    let offset = query.count("offset")?.unwrap_or(0);
    let limit = query.count("limit")?;
    let gaps = state
        .store
        .availability(&slot, state.clock.now())
        .await
        .map_err(|e| {
            let message = format!("error getting availability from store: {e}");
            match e {
                StoreError::NotFound(_) | StoreError::NoManifest => ApiError::not_found(message),
                StoreError::Refused(_) => ApiError::internal(message),
                other => ApiError::from(other),
            }
        })?;
    Ok(Json(page(&gaps, offset, limit)))
}

/// `POST /slots/{slot_name}?user_name=&from=&to=`: book; 204 on success, 404
/// `could not make the booking because <rule>` when refused.
pub async fn make_booking(
    State(state): Shared,
    headers: HeaderMap,
    Path(slot): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<StatusCode, ApiError> {
    let caller = require_user(&state, &headers, true).await?;
    let query = QueryParams(query);
    let user = query.required("user_name")?.to_owned();
    let from = query.time("from")?;
    let to = query.time("to")?;
    caller.require_subject(&user, || {
        "user_name in query does not match subject in token".to_owned()
    })?;
    let request = BookingRequest {
        name: uuid::Uuid::new_v4().to_string(),
        slot: slot.clone(),
        user: user.clone(),
        when: Interval {
            start: from,
            end: to,
        },
        group_check: true,
    };
    match state.store.make_booking(request, state.clock.now()).await {
        Ok(booking) => {
            state.metrics.bookings_made.inc();
            tracing::info!(booking = %booking.name, %slot, %user, start = from / SECOND, end = to / SECOND, "booking made");
            Ok(StatusCode::NO_CONTENT)
        }
        Err(StoreError::Refused(message) | StoreError::NotFound(message)) => {
            state.metrics.refused(&message);
            tracing::info!(%slot, %user, reason = %message, "booking refused");
            Err(ApiError::not_found(format!(
                "could not make the booking because {message}"
            )))
        }
        Err(StoreError::NoManifest) => {
            state.metrics.refused("slot not found");
            Err(ApiError::not_found(format!(
                "could not make the booking because slot {slot} not found"
            )))
        }
        Err(other) => Err(other.into()),
    }
}

/// `GET /users/{user_name}/bookings`.
pub async fn bookings(
    State(state): Shared,
    headers: HeaderMap,
    Path(user): Path<String>,
) -> Result<Response, ApiError> {
    path_user(&state, &headers, &user).await?;
    let bookings = state
        .store
        .bookings_of(&user, state.clock.now())
        .await
        .map_err(|e| match e {
            StoreError::NotFound(m) => {
                ApiError::not_found(format!("error retrieving bookings for user {user}: {m}"))
            }
            other => other.into(),
        })?;
    Ok(Json(bookings).into_response())
}

/// `GET /users/{user_name}/oldbookings`.
pub async fn old_bookings(
    State(state): Shared,
    headers: HeaderMap,
    Path(user): Path<String>,
) -> Result<Response, ApiError> {
    path_user(&state, &headers, &user).await?;
    let bookings = state
        .store
        .old_bookings_of(&user, state.clock.now())
        .await?;
    Ok(Json(bookings).into_response())
}

/// `DELETE /users/{user_name}/bookings/{booking_name}`: 404 `cancelled` on success (the
/// reference's code); 404 `not found` for a booking that is not this user's.
pub async fn cancel_booking(
    State(state): Shared,
    headers: HeaderMap,
    Path((user, booking)): Path<(String, String)>,
) -> Result<ApiError, ApiError> {
    let caller = path_user(&state, &headers, &user).await?;
    let by = caller.cancelled_by();
    let cancelled = state
        .store
        .cancel_booking(&user, &booking, &by, state.clock.now())
        .await
        .map_err(|e| match e {
            StoreError::NotFound(m) => ApiError::not_found(m),
            StoreError::Refused(m) => ApiError::internal(m),
            other => other.into(),
        })?;
    let who = if caller.is_admin() { "admin" } else { "user" };
    state.metrics.cancelled(who, 1);
    tracing::info!(booking = %booking, %user, by = %by, deny_calls = cancelled.deny_calls.len(), "booking cancelled");
    if !cancelled.deny_calls.is_empty() {
        state.deny_wake.notify_one();
    }
    Ok(ApiError::not_found("cancelled"))
}

/// `GET /users/{user_name}/groups`: `{group: {description}}`; a joined group that left
/// the manifest is skipped (the reference answered 500, §7 item 22).
pub async fn groups(
    State(state): Shared,
    headers: HeaderMap,
    Path(user): Path<String>,
) -> Result<Response, ApiError> {
    path_user(&state, &headers, &user).await?;
    let names = state.store.user_groups(&user).await?;
    let manifest = state.store.manifest().await?;
    let groups: std::collections::BTreeMap<_, _> = names
        .iter()
        .filter_map(|g| Some((g.clone(), wire::group_described(&manifest.manifest, g)?)))
        .collect();
    Ok(Json(groups).into_response())
}

/// `POST /users/{user_name}/groups/{group_name}`: join; 204, 404 `group <g> not found`.
pub async fn join_group(
    State(state): Shared,
    headers: HeaderMap,
    Path((user, group)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    path_user(&state, &headers, &user).await?;
    let known = state
        .read_manifest(|manifest| manifest.groups.contains_key(&group))
        .await?;
    if !known {
        return Err(ApiError::not_found(format!("group {group} not found")));
    }
    state.store.join_group(&user, &group).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /users/{user_name}/policies/{policy_name}`: the user's standing.
pub async fn policy_status(
    State(state): Shared,
    headers: HeaderMap,
    Path((user, policy)): Path<(String, String)>,
) -> Result<Json<wire::PolicyStatus>, ApiError> {
    path_user(&state, &headers, &user).await?;
    let status = state
        .store
        .policy_status(&user, &policy, state.clock.now())
        .await?;
    Ok(Json(wire::PolicyStatus::from(&status)))
}
