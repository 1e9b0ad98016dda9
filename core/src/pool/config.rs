//! Pool configuration.

use core::time::Duration;

use crate::error::ConfigError;

/// Which idle connection a checkout reuses when a key has several.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Reuse {
    /// The most recently returned one: keeps a small hot set warm and lets the rest expire.
    #[default]
    Lifo,
    /// The least recently returned one: spreads use evenly over all idle connections.
    Fifo,
}

/// Limits and timeouts of a [`Pool`](super::Pool). `Config::default()` has the seed's values
/// (and RFC 8305's for `next_attempt_delay`, which the seed lacks).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Most connections (connecting, idle or leased) to one key. Seed default: 4.
    pub max_per_key: usize,
    /// Most connections in total. Seed default: 128.
    pub max_open: usize,
    /// How long a connection may sit idle before it is closed. Seed default: 15 s.
    pub idle_timeout: Duration,
    /// How long a checkout may take in all (resolve, queue and connect) unless the checkout
    /// gives its own deadline. Seed default: 120 s.
    pub request_timeout: Duration,
    /// How long one connect attempt (and one resolution) may take. An attempt that runs out
    /// goes on to the host's next address, as a failed one does; the checkout's own deadline
    /// bounds them all.
    pub connect_timeout: Duration,
    /// Happy Eyeballs (RFC 8305): how long a connect attempt runs alone before the host's next
    /// address is tried beside it. The first attempt to connect wins and the others are
    /// cancelled, so one silent address (a blackholed IPv6 route, a dead replica) costs this
    /// delay instead of a whole `connect_timeout`. The pool also alternates address families
    /// (IPv6, IPv4, IPv6 …, starting with the resolver's first). The attempts of one connection
    /// count once against the caps, though each may hold a socket until the race ends. `None`:
    /// one attempt at a time, the next starting only when one fails or times out. Default:
    /// 250 ms, the RFC's.
    pub next_attempt_delay: Option<Duration>,
    /// Connections older than this are closed instead of reused. `None`: no limit.
    pub max_lifetime: Option<Duration>,
    /// Most checkouts waiting at once, over all keys. One more fails with `QueueFull`.
    pub max_waiters: usize,
    /// Which idle connection is reused first.
    pub reuse: Reuse,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_per_key: 4,
            max_open: 128,
            idle_timeout: Duration::from_secs(15),
            request_timeout: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(30),
            next_attempt_delay: Some(Duration::from_millis(250)),
            max_lifetime: None,
            max_waiters: 65_536,
            reuse: Reuse::Lifo,
        }
    }
}

impl Config {
    /// Checks the configuration.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first field that cannot work: a zero cap or timeout, or
    /// `max_per_key` above `max_open`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let zero = |field| Err(ConfigError::Zero { field });
        if self.max_per_key == 0 {
            return zero("max_per_key");
        }
        if self.max_open == 0 {
            return zero("max_open");
        }
        if self.max_waiters == 0 {
            return zero("max_waiters");
        }
        if self.idle_timeout.is_zero() {
            return zero("idle_timeout");
        }
        if self.request_timeout.is_zero() {
            return zero("request_timeout");
        }
        if self.connect_timeout.is_zero() {
            return zero("connect_timeout");
        }
        if self.next_attempt_delay.is_some_and(|d| d.is_zero()) {
            return zero("next_attempt_delay");
        }
        if self.max_lifetime.is_some_and(|d| d.is_zero()) {
            return zero("max_lifetime");
        }
        if self.max_per_key > self.max_open {
            return Err(ConfigError::Conflict {
                field: "max_per_key",
                other: "max_open",
                rule: "a key cannot hold more connections than the whole pool",
            });
        }
        Ok(())
    }
}
