//! "Now" for the server, injected so that tests can fix it and move it: the wall clock in
//! production, a [`ManualClock`] in tests. Every rule, token and background job reads the
//! time through one [`Clock`], so a test's fixed "now" is the same everywhere.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use crate::timefmt::{Nanos, SECOND};

/// A source of the current time in unix nanoseconds. Cheap to clone.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> Nanos + Send + Sync>);

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Clock({})", self.now())
    }
}

impl Clock {
    /// The system's wall clock.
    pub fn wall() -> Clock {
        Clock(Arc::new(relay_common::clock::unix_now_nanos))
    }

    /// A clock that asks `now`.
    pub fn from_fn(now: impl Fn() -> Nanos + Send + Sync + 'static) -> Clock {
        Clock(Arc::new(now))
    }

    /// Now, unix nanoseconds.
    pub fn now(&self) -> Nanos {
        (self.0)()
    }

    /// Now, whole unix seconds (rounded down), the unit of JWT times.
    pub fn now_secs(&self) -> i64 {
        self.now().div_euclid(SECOND)
    }
}

/// A clock that stands still until told to move (tests).
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock reading `start`.
    pub fn new(start: Nanos) -> ManualClock {
        ManualClock(Arc::new(AtomicI64::new(start)))
    }

    /// Set the time.
    pub fn set(&self, now: Nanos) {
        self.0.store(now, Ordering::SeqCst);
    }

    /// Move the time forward by `by` nanoseconds.
    pub fn advance(&self, by: i64) {
        self.0.fetch_add(by, Ordering::SeqCst);
    }

    /// The [`Clock`] that reads this one.
    pub fn clock(&self) -> Clock {
        let now = self.0.clone();
        Clock::from_fn(move || now.load(Ordering::SeqCst))
    }
}
