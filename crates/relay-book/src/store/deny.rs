//! The relay deny outbox (§4.7): cancellations of started bookings queue calls in their own
//! transaction; a worker sends them and records each attempt here, so a cancellation never
//! waits for a relay and a restart loses no call.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{DenyCall, Store, StoreError};
use crate::timefmt::Nanos;

const DENY_COLUMNS: &str =
    "id, relay_url, booking, exp, attempts, next_attempt_at, state, last_error";

fn deny_call(row: &AnyRow) -> Result<DenyCall, sqlx::Error> {
    Ok(DenyCall {
        id: row.try_get(0)?,
        relay_url: row.try_get(1)?,
        booking: row.try_get(2)?,
        exp: row.try_get(3)?,
        attempts: row.try_get(4)?,
        next_attempt_at: row.try_get(5)?,
        state: row.try_get(6)?,
        last_error: row.try_get(7)?,
    })
}

impl Store {
    /// Pending deny calls whose next attempt is due, oldest due first.
    pub async fn due_deny_calls(
        &self,
        now: Nanos,
        limit: i64,
    ) -> Result<Vec<DenyCall>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {DENY_COLUMNS} FROM deny_calls WHERE state = 'pending' \
             AND next_attempt_at <= $1 ORDER BY next_attempt_at, id LIMIT $2"
        ))
        .bind(now)
        .bind(limit)
        .fetch_all(&self.inner.pool)
        .await?;
        Ok(rows.iter().map(deny_call).collect::<Result<_, _>>()?)
    }

    /// Record an attempt: success (`error` `None`: state `ok`), or failure with the next
    /// attempt time (`retry_at` `None`: give up, state `failed`).
    pub async fn record_deny_attempt(
        &self,
        id: i64,
        error: Option<&str>,
        retry_at: Option<Nanos>,
    ) -> Result<(), StoreError> {
        let state = match (error, retry_at) {
            (None, _) => "ok",
            (Some(_), Some(_)) => "pending",
            (Some(_), None) => "failed",
        };
        let mut tx = self.write_tx().await?;
        let changed = sqlx::query(
            "UPDATE deny_calls SET attempts = attempts + 1, state = $2, last_error = $3, \
             next_attempt_at = COALESCE($4, next_attempt_at) WHERE id = $1",
        )
        .bind(id)
        .bind(state)
        .bind(error)
        .bind(retry_at.filter(|_| error.is_some()))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed == 0 {
            return Err(StoreError::NotFound(format!("deny call {id} not found")));
        }
        tx.commit().await?;
        Ok(())
    }

    /// Recent deny calls (newest first), for `/admin/status`.
    pub async fn deny_calls(&self, limit: i64) -> Result<Vec<DenyCall>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {DENY_COLUMNS} FROM deny_calls ORDER BY id DESC LIMIT $1"
        ))
        .bind(limit)
        .fetch_all(&self.inner.pool)
        .await?;
        Ok(rows.iter().map(deny_call).collect::<Result<_, _>>()?)
    }
}
