//! `PUT /users/{user_name}/bookings/{booking_name}` (spec §3.8, §4.6): start a booking and
//! hand out its activity: the slot's description, the resource's config URL, one relay
//! stream (with its signed token) per stream of the resource, and the UI set's UIs.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;

use super::auth::require_user;
use super::error::ApiError;
use super::wire::{uis_described, Activity, ActivityStream};
use super::AppState;
use crate::manifest::{Manifest, Stream};
use crate::model::Booking;
use crate::store::StoreError;
use crate::timefmt::SECOND;
use crate::tokens::{self, StreamClaims};

/// The activity route. As in the reference, a token without a booking scope and a
/// subject mismatch are 404 here (401 on the other routes); the lock is 401. A booking of
/// another user is 404 `not found` (§7 item 6 fixed).
pub async fn get_activity(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((user, booking)): Path<(String, String)>,
) -> Result<Json<Activity>, ApiError> {
    let caller = require_user(&state, &headers, true).await.map_err(|e| {
        if e.message.starts_with("store locked") || e.numeric_code.is_some() {
            e
        } else {
            ApiError::not_found(e.message)
        }
    })?;
    caller
        .require_subject(&user, || {
            format!(
                "user_name in path {user} does not match subject {} in token",
                caller.sub()
            )
        })
        .map_err(|e| ApiError::not_found(e.message))?;
    let now = state.clock.now();
    let started = state
        .store
        .start_activity(&user, &booking, now)
        .await
        .map_err(|e| match e {
            StoreError::NotFound(m) | StoreError::Refused(m) => ApiError::not_found(m),
            other => other.into(),
        })?;
    let manifest = state.store.manifest().await?;
    let activity = build_activity(
        &manifest.manifest,
        &started,
        &user,
        state.config.relay_secret.as_bytes(),
        state.clock.now_secs(),
    )?;
    tracing::info!(booking = %booking, %user, streams = activity.streams.len(), "activity issued");
    Ok(Json(activity))
}

/// The relay topic of stream `key` of a resource whose topic stub is `topic_stub`:
/// `<topic_stub>-<key>` (what the rig behind the resource must connect to).
pub fn stream_topic(topic_stub: &str, key: &str) -> String {
    format!("{topic_stub}-{key}")
}

/// Where a token for `topic` on `stream` is POSTed to get a websocket URI:
/// `<url>/<connection_type>/<topic>`.
pub fn stream_session_url(stream: &Stream, topic: &str) -> String {
    format!("{}/{}/{topic}", stream.url, stream.connection_type)
}

/// The activity of `booking` for `user` (the path user, the tokens' `sub`), with stream
/// tokens signed by `relay_secret` at `now_secs`.
pub fn build_activity(
    manifest: &Manifest,
    booking: &Booking,
    user: &str,
    relay_secret: &[u8],
    now_secs: i64,
) -> Result<Activity, ApiError> {
    let missing = |what: &str, name: &str| {
        ApiError::handler(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{what} {name} not found"),
        )
    };
    let slot = manifest
        .slots
        .get(&booking.slot)
        .ok_or_else(|| missing("slot", &booking.slot))?;
    let resource = manifest
        .resources
        .get(&slot.resource)
        .ok_or_else(|| missing("resource", &slot.resource))?;
    let description = manifest
        .descriptions
        .get(&slot.description)
        .cloned()
        .unwrap_or_default();
    let exp = booking.when.end.div_euclid(SECOND);
    let mut streams = Vec::new();
    for key in resource.streams.iter().flatten() {
        let stream = manifest
            .streams
            .get(key)
            .ok_or_else(|| missing("stream", key))?;
        let topic = stream_topic(&resource.topic_stub, key);
        let scopes = stream.scopes.clone().unwrap_or_default();
        let claims = StreamClaims {
            booking_id: booking.name.clone(),
            topic: topic.clone(),
            prefix: stream.connection_type.clone(),
            scopes: scopes.clone(),
            sub: user.to_owned(),
            aud: vec![stream.url.clone()],
            exp,
            nbf: now_secs - 1,
            iat: now_secs - 1,
        };
        let token =
            tokens::sign(&claims, relay_secret).map_err(|e| ApiError::internal(e.to_string()))?;
        streams.push(ActivityStream {
            audience: stream.url.clone(),
            connection_type: stream.connection_type.clone(),
            for_: stream.for_.clone(),
            scopes,
            token,
            url: stream_session_url(stream, &topic),
            topic,
        });
    }
    Ok(Activity {
        config: resource.config_url.clone(),
        description,
        exp,
        nbf: booking.when.start.div_euclid(SECOND),
        streams,
        uis: uis_described(manifest, &slot.ui_set),
    })
}
