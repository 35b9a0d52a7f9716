//! Admin bulk replacement of bookings (§3.10), with the reference's defects fixed: drops are
//! reported (§7 item 9), and replacing old bookings keeps users and their groups and
//! recomputes usage from what is stored (§7 item 10).

use std::collections::BTreeMap;

use sqlx::Connection;

use super::booking::{self, make_in_tx};
use super::db;
use super::{BookingRequest, LoadedManifest, ReplaceReport, Store, StoreError};
use crate::interval::Interval;
use crate::manifest::Policy;
use crate::model::Booking;
use crate::rules;
use crate::timefmt::Nanos;

/// Who cancels the bookings a replacement replaces (the reference's text).
const REPLACER: &str = "replaceManifest";

impl Store {
    /// Replace current bookings (§3.10) and report what was dropped. Every current booking
    /// is cancelled (refunded; started ones queue deny calls), then each given booking is
    /// re-made with every rule but the group check; refusals are reported, not hidden.
    pub async fn replace_bookings(
        &self,
        bookings: Vec<Booking>,
        now: Nanos,
    ) -> Result<ReplaceReport, StoreError> {
        let backend = self.inner.backend;
        let mut tx = self.write_tx().await?;
        let loaded = self.manifest_or_empty(&mut tx).await?;
        let bookings = validated(&loaded, bookings)?;
        // Every resource first, in name order: the re-made bookings lock resources and
        // users as they go, and a concurrent booking (resource, then user) must not hold a
        // resource this transaction will want while waiting for a user it holds.
        sqlx::query(&format!(
            "SELECT name FROM resources ORDER BY name{}",
            backend.for_update()
        ))
        .execute(&mut *tx)
        .await?;
        let mut report = ReplaceReport::default();
        for stored in booking::current_bookings(&mut tx, backend).await? {
            booking::cancel_in_tx(&mut tx, &loaded, stored, REPLACER, now, true).await?;
            report.cancelled += 1;
        }
        for (name, given) in bookings {
            let request = BookingRequest {
                name: name.clone(),
                slot: given.slot,
                user: given.user,
                when: given.when,
                group_check: false,
            };
            // A savepoint per booking: a refusal (even one raised by the database) undoes
            // only that booking.
            let mut attempt = tx.tx.begin().await?;
            match make_in_tx(&mut attempt, backend, &loaded, &request, now).await {
                Ok(_) => {
                    attempt.commit().await?;
                    report.kept.push(name);
                }
                Err(StoreError::Refused(reason)) => {
                    attempt.rollback().await?;
                    report.dropped.push((name, reason));
                }
                Err(other) => return Err(other),
            }
        }
        tx.commit().await?;
        Ok(report)
    }

    /// Replace old bookings (§3.10). Users and their groups are kept (missing ones are
    /// created); usage per user and policy is recomputed from the given old bookings (charged
    /// as §3.5 says for cancelled ones) plus the full duration of current bookings. The
    /// result does not depend on the time (`_now` is kept for the caller's symmetry).
    pub async fn replace_old_bookings(
        &self,
        bookings: Vec<Booking>,
        _now: Nanos,
    ) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        let loaded = self.manifest_or_empty(&mut tx).await?;
        let bookings = validated(&loaded, bookings)?;
        sqlx::query("DELETE FROM bookings WHERE old = 1")
            .execute(&mut *tx)
            .await?;
        let mut usage: BTreeMap<(String, String), i64> = BTreeMap::new();
        for given in bookings.into_values() {
            let slot = loaded.manifest.slots.get(&given.slot);
            let resource = slot.map(|slot| slot.resource.clone()).unwrap_or_default();
            let policy = loaded
                .manifest
                .policies
                .get(&given.policy)
                .cloned()
                .unwrap_or_else(Policy::default);
            let cancelled_at = if given.cancelled {
                given.cancelled_at
            } else {
                None
            };
            let charge = rules::charged_usage(&given, &policy, cancelled_at);
            *usage
                .entry((given.user.clone(), given.policy.clone()))
                .or_default() += charge;
            db::ensure_user(&mut tx, &given.user).await?;
            db::insert_booking(&mut tx, &given, &resource, true, None).await?;
        }
        for stored in booking::current_bookings(&mut tx, self.inner.backend).await? {
            let current = stored.booking;
            db::ensure_user(&mut tx, &current.user).await?;
            *usage.entry((current.user, current.policy)).or_default() += current.when.duration();
        }
        sqlx::query("DELETE FROM user_usage")
            .execute(&mut *tx)
            .await?;
        for ((user, policy), nanos) in usage {
            sqlx::query("INSERT INTO user_usage (user_name, policy, nanos) VALUES ($1, $2, $3)")
                .bind(user)
                .bind(policy)
                .bind(nanos)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// The field check of §3.10, then the bookings by name (a later duplicate wins).
/// `malformed booking : <messages joined by ",">` when anything is missing.
fn validated(
    loaded: &LoadedManifest,
    bookings: Vec<Booking>,
) -> Result<BTreeMap<String, Booking>, StoreError> {
    let mut problems = Vec::new();
    for booking in &bookings {
        problems.extend(problems_of(loaded, booking));
    }
    if !problems.is_empty() {
        return Err(StoreError::Refused(format!(
            "malformed booking : {}",
            problems.join(",")
        )));
    }
    Ok(bookings
        .into_iter()
        .map(|booking| (booking.name.clone(), booking))
        .collect())
}

fn problems_of(loaded: &LoadedManifest, booking: &Booking) -> Vec<String> {
    if booking.name.is_empty() {
        return vec!["missing name".to_owned()];
    }
    let name = &booking.name;
    let mut problems = Vec::new();
    if booking.policy.is_empty() {
        problems.push(format!("{name} missing policy"));
    } else if !loaded.manifest.policies.contains_key(&booking.policy) {
        problems.push(format!("{name} policy {} not found", booking.policy));
    }
    if booking.slot.is_empty() {
        problems.push(format!("{name} missing slot"));
    } else if !loaded.manifest.slots.contains_key(&booking.slot) {
        problems.push(format!("{name} slot {} not found", booking.slot));
    }
    if booking.user.is_empty() {
        problems.push(format!("{name} missing user"));
    }
    if booking.when == Interval::default() {
        problems.push(format!("{name} missing when"));
    }
    problems
}
