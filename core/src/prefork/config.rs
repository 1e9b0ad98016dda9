//! The prefork supervisor's configuration.

use core::time::Duration;

use crate::backoff::BackoffPolicy;
use crate::error::ConfigError;

/// Most workers a supervisor may be configured for; keeps every table small and bounded.
pub const WORKERS_LIMIT: u32 = 1 << 20;

/// How many workers a [`Prefork`](super::Prefork) supervisor keeps and how it watches them.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct PreforkConfig {
    /// Workers spawned at start and after a reload (seed: 5).
    pub start_workers: u32,
    /// Fewest idle (ready, not busy) workers to keep; fewer → spawn (seed: 1).
    pub min_spare: u32,
    /// Most idle workers to keep; more → stop the longest-idle ones (seed: 10; must exceed
    /// `min_spare`).
    pub max_spare: u32,
    /// Most worker processes at once, stopping ones included (seed's `max_clients`: 50).
    pub max_workers: u32,
    /// A ready worker silent for this long is stopped and replaced (seed's `timeout`: off).
    pub ack_timeout: Option<Duration>,
    /// A worker not ready this long after its spawn is stopped and replaced.
    pub boot_timeout: Duration,
    /// How often the pool size is checked and adjusted (1 s, as Apache does).
    pub maintenance_interval: Duration,
    /// Most spawns per maintenance interval. While short of spare workers the rate starts at 1
    /// and doubles every interval up to this cap (Apache and php-fpm: 32).
    pub spawn_rate_max: u32,
    /// Recycle a worker after this many requests (`None`: never).
    pub max_requests: Option<u32>,
    /// Each worker's request limit gets a random extra in `0..=max_requests_jitter`, so workers
    /// spawned together are not all recycled together.
    pub max_requests_jitter: u32,
    /// This many abnormal exits within `crash_loop_window` is a crash loop: spawning pauses for
    /// a `respawn_backoff` delay.
    pub crash_loop_threshold: u32,
    /// The window abnormal exits are counted in.
    pub crash_loop_window: Duration,
    /// Pause after each detected crash loop; grows while crash loops go on, resets once a
    /// window passes without abnormal exits.
    pub respawn_backoff: BackoffPolicy,
    /// After a polite stop, how long a worker has before it is killed.
    pub stop_grace: Duration,
}

impl Default for PreforkConfig {
    /// The seed's sizes (start 5, spare 1..10, 50 workers, no ack timeout) with a 30 s boot
    /// timeout, 1 s maintenance, 32 spawns per interval, 5 crashes in 10 s for a crash loop,
    /// respawn backoff 1 s ×2 ±20 % up to 60 s, and a 10 s stop grace.
    fn default() -> Self {
        PreforkConfig {
            start_workers: 5,
            min_spare: 1,
            max_spare: 10,
            max_workers: 50,
            ack_timeout: None,
            boot_timeout: Duration::from_secs(30),
            maintenance_interval: Duration::from_secs(1),
            spawn_rate_max: 32,
            max_requests: None,
            max_requests_jitter: 0,
            crash_loop_threshold: 5,
            crash_loop_window: Duration::from_secs(10),
            respawn_backoff: BackoffPolicy::Exponential {
                initial: Duration::from_secs(1),
                multiplier: 2.0,
                jitter: 0.2,
                max: Duration::from_secs(60),
            },
            stop_grace: Duration::from_secs(10),
        }
    }
}

impl PreforkConfig {
    /// Checks the configuration; nothing is patched silently (the seed clamps, wrongly).
    ///
    /// # Errors
    /// [`ConfigError`] if a count or duration that must be positive is zero, `max_spare` is not
    /// above `min_spare`, `start_workers` or `min_spare` exceed `max_workers`, `max_workers`
    /// exceeds [`WORKERS_LIMIT`], or the respawn backoff is invalid.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let zero = |field| Err(ConfigError::Zero { field });
        if self.max_workers == 0 {
            return zero("max_workers");
        }
        if self.max_workers > WORKERS_LIMIT {
            return Err(ConfigError::OutOfRange {
                field: "max_workers",
                expected: "at most 2^20",
            });
        }
        if self.max_spare <= self.min_spare {
            return Err(ConfigError::Conflict {
                field: "max_spare",
                other: "min_spare",
                rule: "max_spare must be greater than min_spare",
            });
        }
        if self.start_workers > self.max_workers {
            return Err(ConfigError::Conflict {
                field: "start_workers",
                other: "max_workers",
                rule: "start_workers must not exceed max_workers",
            });
        }
        if self.min_spare > self.max_workers {
            return Err(ConfigError::Conflict {
                field: "min_spare",
                other: "max_workers",
                rule: "min_spare must not exceed max_workers",
            });
        }
        if self.ack_timeout.is_some_and(|t| t.is_zero()) {
            return zero("ack_timeout");
        }
        if self.boot_timeout.is_zero() {
            return zero("boot_timeout");
        }
        if self.maintenance_interval.is_zero() {
            return zero("maintenance_interval");
        }
        if self.spawn_rate_max == 0 {
            return zero("spawn_rate_max");
        }
        if self.max_requests == Some(0) {
            return zero("max_requests");
        }
        if self.crash_loop_threshold == 0 {
            return zero("crash_loop_threshold");
        }
        if self.crash_loop_window.is_zero() {
            return zero("crash_loop_window");
        }
        if self.stop_grace.is_zero() {
            return zero("stop_grace");
        }
        self.respawn_backoff.validate()
    }
}
