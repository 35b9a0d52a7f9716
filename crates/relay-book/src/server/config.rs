//! Every setting of `relay book serve`, with why it exists and the default it protects.
//! The CLI maps `BOOK_*` variables and flags onto [`Config`]; [`Config::validate`] checks
//! it once at start-up, naming the variable in each message.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use relay_server::limits::Rate;

use crate::store::{Location, StoreOptions};

/// Default `/login` rate per client address (`BOOK_LOGIN_RATE_PER_IP`): a class behind one
/// campus NAT logs in at once, a token-minting flood does not get far.
pub const DEFAULT_LOGIN_RATE: &str = "10/s burst 100";
/// Default request body limit (`BOOK_MAX_BODY_BYTES`): a large manifest or booking export
/// fits; a body meant to exhaust memory does not.
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// The booking server's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// `BOOK_BIND`: the address to listen on (default every interface).
    pub bind: IpAddr,
    /// `BOOK_PORT`: the port (default 4000; 0 = any free port).
    pub port: u16,
    /// `BOOK_AUDIENCE`: this server's external URL; incoming tokens must carry it in `aud`,
    /// and login tokens are issued for it. Required.
    pub audience: String,
    /// `BOOK_ADMIN_SECRET`: HMAC secret of booking-API tokens. Required, non-empty.
    pub admin_secret: String,
    /// `BOOK_RELAY_SECRET`: HMAC secret shared with the relays, for stream tokens and deny
    /// calls. Required, non-empty.
    pub relay_secret: String,
    /// `BOOK_ACCESS_TOKEN_TTL`: lifetime of login tokens (default 1h).
    pub access_token_ttl: Duration,
    /// `BOOK_CHECK_EVERY`: period of the grace check (default 1m).
    pub check_every: Duration,
    /// `BOOK_TIDY_EVERY`: period of pruning ended bookings (default 1h).
    pub tidy_every: Duration,
    /// `BOOK_REQUEST_TIMEOUT`: timeout of one relay deny call (default 1m).
    pub request_timeout: Duration,
    /// `BOOK_DISABLE_CANCEL_AFTER_USE`: a started booking cannot be cancelled.
    pub disable_cancel_after_use: bool,
    /// `BOOK_MIN_USERNAME_LENGTH`: shortest user name `/login` accepts (default 6).
    pub min_username_length: usize,
    /// `BOOK_DATABASE_URL`: `postgres://…` (or `sqlite://…`); when unset, SQLite in
    /// `persist_dir`.
    pub database_url: Option<String>,
    /// `BOOK_PERSIST_DIR`: where the SQLite database lives (default `/var/lib/book/`).
    pub persist_dir: PathBuf,
    /// `BOOK_LOGIN_RATE_PER_IP`: `/login` requests per client address (IPv6 per /64);
    /// past it 429. `None`: no limit.
    pub login_rate: Option<Rate>,
    /// `BOOK_TRUSTED_PROXIES`: reverse proxies whose forwarding headers name the client
    /// address (for the login rate).
    pub trusted_proxies: Vec<IpNet>,
    /// `BOOK_MAX_BODY_BYTES`: largest request body.
    pub max_body_bytes: usize,
    /// How often the deny worker looks for due retries (a cancellation also wakes it at
    /// once). Default 1 s.
    pub deny_poll_every: Duration,
    /// First retry delay of a failed deny call; doubles up to `deny_backoff_max`.
    pub deny_backoff_min: Duration,
    /// Longest retry delay of a failed deny call.
    pub deny_backoff_max: Duration,
}

impl Config {
    /// Settings with every default and the three required values.
    pub fn new(audience: &str, admin_secret: &str, relay_secret: &str) -> Config {
        Config {
            bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: 4000,
            audience: audience.to_owned(),
            admin_secret: admin_secret.to_owned(),
            relay_secret: relay_secret.to_owned(),
            access_token_ttl: Duration::from_secs(3600),
            check_every: Duration::from_secs(60),
            tidy_every: Duration::from_secs(3600),
            request_timeout: Duration::from_secs(60),
            disable_cancel_after_use: false,
            min_username_length: 6,
            database_url: None,
            persist_dir: PathBuf::from("/var/lib/book/"),
            login_rate: Rate::parse_setting(DEFAULT_LOGIN_RATE).ok().flatten(),
            trusted_proxies: Vec::new(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            deny_poll_every: Duration::from_secs(1),
            deny_backoff_min: Duration::from_secs(1),
            deny_backoff_max: Duration::from_secs(60),
        }
    }

    /// Every problem with the settings, each naming its variable.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        for (value, name) in [
            (&self.audience, "BOOK_AUDIENCE"),
            (&self.admin_secret, "BOOK_ADMIN_SECRET"),
            (&self.relay_secret, "BOOK_RELAY_SECRET"),
        ] {
            if value.trim().is_empty() {
                problems.push(format!("You must set {name}"));
            }
        }
        for (value, name) in [
            (self.access_token_ttl, "BOOK_ACCESS_TOKEN_TTL"),
            (self.check_every, "BOOK_CHECK_EVERY"),
            (self.tidy_every, "BOOK_TIDY_EVERY"),
            (self.request_timeout, "BOOK_REQUEST_TIMEOUT"),
            (self.deny_poll_every, "deny poll period"),
            (self.deny_backoff_min, "deny backoff"),
        ] {
            if value.is_zero() {
                problems.push(format!("{name} must be more than 0"));
            }
        }
        if self.deny_backoff_max < self.deny_backoff_min {
            problems.push("the deny backoff maximum must not be below its minimum".into());
        }
        if self.max_body_bytes == 0 {
            problems.push("BOOK_MAX_BODY_BYTES must be more than 0".into());
        }
        if let Some(url) = &self.database_url {
            if !(url.starts_with("postgres://")
                || url.starts_with("postgresql://")
                || url.starts_with("sqlite:"))
            {
                problems.push(format!(
                    "BOOK_DATABASE_URL must start with postgres:// (or sqlite:), not {:?}",
                    url.split(':').next().unwrap_or_default()
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// Where the store lives: `BOOK_DATABASE_URL`, else SQLite in `BOOK_PERSIST_DIR`.
    pub fn store_location(&self) -> Location {
        match &self.database_url {
            Some(url) => Location::Url(url.clone()),
            None => Location::SqliteDir(self.persist_dir.clone()),
        }
    }

    /// The store's behaviour settings.
    pub fn store_options(&self) -> StoreOptions {
        StoreOptions {
            disable_cancel_after_use: self.disable_cancel_after_use,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn empty_secrets_and_zero_periods_are_named() {
        let mut config = Config::new("https://book.example.org", "", "r");
        config.check_every = Duration::ZERO;
        config.database_url = Some("mysql://x".into());
        let problems = config.validate().unwrap_err();
        assert_eq!(
            problems,
            vec![
                "You must set BOOK_ADMIN_SECRET".to_owned(),
                "BOOK_CHECK_EVERY must be more than 0".to_owned(),
                "BOOK_DATABASE_URL must start with postgres:// (or sqlite:), not \"mysql\""
                    .to_owned(),
            ]
        );
        // A one-character secret is accepted (the reference panicked on fewer than 4).
        assert!(Config::new("a", "s", "r").validate().is_ok());
    }
}
