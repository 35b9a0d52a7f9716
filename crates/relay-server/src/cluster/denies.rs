//! The deny list, cluster-wide and durable: `POST /bids/deny` and `/bids/allow` on any
//! node put `{"op":"deny"|"allow","exp":…}` under the booking's key ([`token`] of the
//! booking id) in the JetStream KV bucket [`DENIES_BUCKET`] (file storage, so it survives
//! a restart of every relay node and of NATS). Every node watches the bucket from its
//! start (the latest entry per booking first, then every change as it happens) and applies
//! each entry to its own [`relay_auth::DenyStore`]: a deny also deletes the booking's
//! waiting codes and closes its sockets on that node, within milliseconds of the put.
//!
//! A deny's entry is kept until its `exp`; a node that finds an expired one while loading
//! purges it.

use crate::cluster::subject::{token, untoken, DENIES_BUCKET};
use crate::cluster::{Cluster, NATS_TIMEOUT};
use crate::state::AppState;
use async_nats::jetstream::kv::Operation;
use futures_util::StreamExt;
use relay_common::shutdown::CancellationToken;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// What one entry of the bucket says about its booking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// `POST /bids/deny`.
    Deny,
    /// `POST /bids/allow`.
    Allow,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    op: Op,
    exp: i64,
}

/// Record `op` for `booking_id` until `exp` in the bucket; every node applies it.
pub async fn share(cluster: &Cluster, booking_id: &str, op: Op, exp: i64) -> Result<(), String> {
    if !cluster.is_connected() {
        return Err("NATS is unreachable".into());
    }
    let value = serde_json::to_vec(&Entry { op, exp }).unwrap_or_default();
    match tokio::time::timeout(
        NATS_TIMEOUT,
        cluster.denies_kv.put(token(booking_id), value.into()),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("cannot store it in {DENIES_BUCKET}: {e}")),
        Err(_) => Err(format!("storing it in {DENIES_BUCKET} timed out")),
    }
}

/// Apply the bucket to this node until shutdown; a watch that ends (NATS went away) is
/// started again, from the latest entries.
pub async fn watch(cluster: Arc<Cluster>, state: Arc<AppState>, shutdown: CancellationToken) {
    loop {
        let watched = tokio::select! {
            () = shutdown.cancelled() => return,
            w = cluster.denies_kv.watch_with_history(">") => w,
        };
        match watched {
            Ok(mut entries) => loop {
                let entry = tokio::select! {
                    () = shutdown.cancelled() => return,
                    e = entries.next() => e,
                };
                match entry {
                    Some(Ok(entry)) => apply(&cluster, &state, entry).await,
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "the deny list watch failed; watching again");
                        break;
                    }
                    None => break,
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the cluster's deny list; trying again")
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

async fn apply(cluster: &Cluster, state: &Arc<AppState>, entry: async_nats::jetstream::kv::Entry) {
    if entry.operation != Operation::Put {
        return;
    }
    let Some(booking_id) = untoken(&entry.key) else {
        return;
    };
    let Ok(Entry { op, exp }) = serde_json::from_slice::<Entry>(&entry.value) else {
        tracing::warn!(key = %entry.key, "unreadable entry in the cluster's deny list");
        return;
    };
    if exp < state.now_unix() {
        if op == Op::Deny {
            let _ = cluster.denies_kv.purge(&entry.key).await;
        }
        return;
    }
    match op {
        Op::Deny => {
            let already = state.deny.is_denied(&booking_id);
            state.deny.deny(&booking_id, exp);
            let codes = state.codes.delete_by_booking_id(&booking_id);
            let closed = state.hub.deny(&booking_id);
            if !already || closed > 0 {
                tracing::info!(booking_id = %booking_id, exp, codes_deleted = codes, connections_closed = closed, "booking denied (cluster)");
            }
        }
        Op::Allow => {
            state.deny.allow(&booking_id, exp);
            tracing::info!(booking_id = %booking_id, exp, "booking allowed (cluster)");
        }
    }
    if let Err(e) = state.save_deny_list().await {
        tracing::error!(error = %e, "cannot save the deny list");
    }
}
