//! Caps and rate limits that keep one client from using up the relay: a global and a
//! per-booking cap on open websockets, and token-bucket rate limits (the `governor` crate)
//! on the access routes `POST /session/{id}` and `POST /shell/{id}`.
//!
//! Requests with a valid token are limited per booking, so that students behind one campus
//! NAT never throttle each other; requests that fail authentication are limited per client
//! address ([`crate::client_addr`]). A refusal is a [`Refusal`] like any other: counted
//! under its label in `relay_access_requests_total` / `relay_handshakes_total`.
//! `RELAY_LIMITS=off` ([`Limits::off`]) lifts every cap and rate here.

use crate::admission::Refusal;
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota};
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Default cap on open websockets (`RELAY_MAX_CONNECTIONS`).
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default cap on open websockets of one booking (`RELAY_MAX_CONNECTIONS_PER_BOOKING`).
pub const DEFAULT_MAX_CONNECTIONS_PER_BOOKING: usize = 64;
/// Default access rate per booking (`RELAY_RATE_PER_BOOKING`).
pub const DEFAULT_RATE_PER_BOOKING: &str = "10/s burst 20";
/// Default rate of failed authentications per client address (`RELAY_RATE_BAD_AUTH_PER_IP`).
pub const DEFAULT_RATE_BAD_AUTH_PER_IP: &str = "5/s burst 10";

/// A token bucket: `count` requests per `per`, with up to `burst` at once.
///
/// Written `<count>/<s|m|h>[ burst <n>]`, e.g. `10/s burst 20` or `600/m`; the burst
/// defaults to `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Requests replenished per period.
    pub count: NonZeroU32,
    /// The period.
    pub per: Duration,
    /// Requests allowed at once (the bucket's size).
    pub burst: NonZeroU32,
}

impl Rate {
    /// Parse a rate setting; `off` or `0` mean no limit (`None`).
    pub fn parse_setting(text: &str) -> Result<Option<Rate>, String> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("off") || text == "0" {
            return Ok(None);
        }
        text.parse().map(Some)
    }

    /// The governor quota of this rate (`count` per `per`, bursts of `burst`); the one
    /// conversion, also used by the booking server's login limit.
    pub fn quota(&self) -> Quota {
        let period = self.per / self.count.get();
        Quota::with_period(period.max(Duration::from_nanos(1)))
            .unwrap_or_else(|| Quota::per_second(self.count))
            .allow_burst(self.burst)
    }
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad =
            || format!("{text:?} is not a rate like \"10/s burst 20\" (units s, m, h; or off)");
        let mut words = text.split_whitespace();
        let (count, unit) = words
            .next()
            .and_then(|r| r.split_once('/'))
            .ok_or_else(bad)?;
        let count = count.parse::<NonZeroU32>().map_err(|_| bad())?;
        let per = match unit {
            "s" => Duration::from_secs(1),
            "m" | "min" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        let burst = match (words.next(), words.next(), words.next()) {
            (None, None, None) => count,
            (Some("burst"), Some(n), None) => n.parse::<NonZeroU32>().map_err(|_| bad())?,
            _ => return Err(bad()),
        };
        Ok(Rate { count, per, burst })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per.as_secs() {
            60 => "m",
            3600 => "h",
            _ => "s",
        };
        write!(f, "{}/{unit} burst {}", self.count, self.burst)
    }
}

/// The caps and rates of one server; every field's "no limit" is `0` or `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Open websockets on the relay port, all bookings together; protects memory and file
    /// descriptors. Past it an upgrade gets 503 `too_many_connections`. 0: no cap.
    pub max_connections: usize,
    /// Open websockets of one booking; keeps one booking (or one leaked token) from taking
    /// the whole relay. Past it an upgrade gets 503 `too_many_booking_connections`. 0: no cap.
    pub max_connections_per_booking: usize,
    /// Access requests (`POST /session`, `POST /shell`) with a valid token, per booking
    /// (tokens without a booking id share one bucket); past it 429 `rate_limited_booking`.
    pub rate_per_booking: Option<Rate>,
    /// Access requests that fail authentication, per client address (IPv6 per /64); past
    /// it 429 `rate_limited_address`. Slows down token guessing and floods of junk.
    pub rate_bad_auth_per_ip: Option<Rate>,
}

impl Limits {
    /// The documented defaults: 10,000 connections, 64 per booking, `10/s burst 20` per
    /// booking, `5/s burst 10` failed authentications per address.
    pub fn defaults() -> Self {
        Limits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_booking: DEFAULT_MAX_CONNECTIONS_PER_BOOKING,
            rate_per_booking: Rate::parse_setting(DEFAULT_RATE_PER_BOOKING).ok().flatten(),
            rate_bad_auth_per_ip: Rate::parse_setting(DEFAULT_RATE_BAD_AUTH_PER_IP)
                .ok()
                .flatten(),
        }
    }

    /// No cap and no rate limit (`RELAY_LIMITS=off`; benchmarks and local tests).
    pub fn off() -> Self {
        Limits {
            max_connections: 0,
            max_connections_per_booking: 0,
            rate_per_booking: None,
            rate_bad_auth_per_ip: None,
        }
    }
}

/// The access routes' rate limiters (one token bucket per key).
pub struct AccessRates {
    per_booking: Option<DefaultKeyedRateLimiter<String>>,
    bad_auth_per_ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

impl AccessRates {
    /// Limiters for `limits`' rates.
    pub fn new(limits: &Limits) -> Self {
        AccessRates {
            per_booking: limits
                .rate_per_booking
                .map(|r| DefaultKeyedRateLimiter::keyed(r.quota())),
            bad_auth_per_ip: limits
                .rate_bad_auth_per_ip
                .map(|r| DefaultKeyedRateLimiter::keyed(r.quota())),
        }
    }

    /// Take one request of `booking_id`'s bucket, or refuse with the time until the next.
    pub fn check_booking(&self, booking_id: &str) -> Result<(), Refusal> {
        let Some(limiter) = &self.per_booking else {
            return Ok(());
        };
        limiter
            .check_key(&booking_id.to_owned())
            .map_err(|not_until| Refusal::RateLimitedBooking {
                retry_after_secs: retry_after(not_until.wait_time_from(limiter.clock().now())),
            })
    }

    /// Count one failed authentication from `client`; refuse once its bucket is empty.
    pub fn check_bad_auth(&self, client: IpAddr) -> Result<(), Refusal> {
        let Some(limiter) = &self.bad_auth_per_ip else {
            return Ok(());
        };
        limiter
            .check_key(&address_key(client))
            .map_err(|not_until| Refusal::RateLimitedAddress {
                retry_after_secs: retry_after(not_until.wait_time_from(limiter.clock().now())),
            })
    }

    /// Forget buckets that are full again (they hold no information); bounds the memory a
    /// flood from many addresses leaves behind.
    pub fn prune(&self) -> usize {
        let mut kept = 0;
        if let Some(l) = &self.per_booking {
            l.retain_recent();
            l.shrink_to_fit();
            kept += l.len();
        }
        if let Some(l) = &self.bad_auth_per_ip {
            l.retain_recent();
            l.shrink_to_fit();
            kept += l.len();
        }
        kept
    }
}

/// `Retry-After` in whole seconds, at least 1.
fn retry_after(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

/// One bucket per IPv4 address and per IPv6 /64 (what one subscriber usually holds).
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(segments.into())
            }
        },
    }
}

/// Open-websocket counters: all together and per booking.
#[derive(Default)]
pub struct ConnectionCaps {
    max: usize,
    max_per_booking: usize,
    open: AtomicUsize,
    per_booking: Mutex<HashMap<String, usize>>,
}

impl ConnectionCaps {
    /// Caps from `limits` (0: no cap).
    pub fn new(limits: &Limits) -> Arc<Self> {
        Arc::new(ConnectionCaps {
            max: limits.max_connections,
            max_per_booking: limits.max_connections_per_booking,
            ..ConnectionCaps::default()
        })
    }

    /// Whether the global cap is reached; checked before a code is redeemed, so that a
    /// full relay does not burn the client's code.
    pub fn is_full(&self) -> bool {
        self.max > 0 && self.open.load(Ordering::Relaxed) >= self.max
    }

    /// Reserve a place for one websocket of `booking_id`, released when the [`Slot`] is
    /// dropped (the connection ended or its upgrade failed).
    pub fn admit(self: &Arc<Self>, booking_id: &str) -> Result<Slot, Refusal> {
        let max = self.max;
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (max == 0 || n < max).then_some(n + 1)
            })
            .map_err(|_| Refusal::TooManyConnections)?;
        let mut slot = Slot {
            caps: self.clone(),
            booking_id: None,
        };
        if self.max_per_booking == 0 {
            return Ok(slot);
        }
        let mut per_booking = self
            .per_booking
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let open = per_booking.entry(booking_id.to_owned()).or_insert(0);
        if *open >= self.max_per_booking {
            // `slot` gives the global place back as it drops.
            return Err(Refusal::TooManyBookingConnections);
        }
        *open += 1;
        slot.booking_id = Some(booking_id.to_owned());
        Ok(slot)
    }

    /// Open websockets counted here right now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

/// One admitted websocket's place under the caps.
pub struct Slot {
    caps: Arc<ConnectionCaps>,
    booking_id: Option<String>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.caps.open.fetch_sub(1, Ordering::AcqRel);
        if let Some(booking_id) = self.booking_id.take() {
            let mut per_booking = self
                .caps
                .per_booking
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(open) = per_booking.get_mut(&booking_id) {
                *open = open.saturating_sub(1);
                if *open == 0 {
                    per_booking.remove(&booking_id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_and_print() {
        let r: Rate = "10/s burst 20".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((r.count.get(), r.per.as_secs(), r.burst.get()), (10, 1, 20));
        assert_eq!(r.to_string(), "10/s burst 20");
        assert_eq!(
            "600/m".parse::<Rate>().map(|r| r.to_string()),
            Ok("600/m burst 600".into())
        );
        assert_eq!(Rate::parse_setting("off"), Ok(None));
        assert_eq!(Rate::parse_setting("0"), Ok(None));
        for bad in ["", "10", "10/d", "0/s", "10/s burst", "10/s burst 0", "x/s"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn caps_refuse_past_the_limit_and_free_on_drop() {
        let caps = ConnectionCaps::new(&Limits {
            max_connections: 3,
            max_connections_per_booking: 2,
            ..Limits::off()
        });
        let a1 = caps.admit("a");
        let a2 = caps.admit("a");
        assert!(a1.is_ok() && a2.is_ok());
        assert_eq!(
            caps.admit("a").err(),
            Some(Refusal::TooManyBookingConnections)
        );
        let b1 = caps.admit("b");
        assert!(b1.is_ok());
        assert_eq!(caps.admit("c").err(), Some(Refusal::TooManyConnections));
        assert!(caps.is_full());
        drop(a1);
        assert_eq!(caps.open(), 2);
        assert!(caps.admit("a").is_ok());
    }

    #[test]
    fn ipv6_addresses_share_a_bucket_per_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        let b: IpAddr = "2001:db8:1:2:bbbb::2"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(c));
        assert_eq!(retry_after(Duration::from_millis(100)), 1);
        assert_eq!(retry_after(Duration::from_millis(1100)), 2);
        assert_eq!(retry_after(Duration::ZERO), 1);
    }
}
