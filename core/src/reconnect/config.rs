//! The reconnecting link's configuration.

use core::time::Duration;

use crate::backoff::BackoffPolicy;
use crate::error::ConfigError;

/// How a [`Reconnect`](super::Reconnect) link connects, waits and buffers.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct ReconnectConfig {
    /// How long one attempt may take before it is abandoned (seed: 30 s; gRPC's minimum: 20 s).
    /// Under an [`BackoffPolicy::Exponential`] policy an attempt gets
    /// `max(connect_timeout, next backoff delay)`, as gRPC does, so a slow peer is not cut off
    /// sooner than the client would wait anyway.
    pub connect_timeout: Duration,
    /// Delay between attempts.
    pub backoff: BackoffPolicy,
    /// How long a connection must stay up before the backoff (and the attempt count) resets.
    /// A peer that accepts and drops at once never resets it, so it cannot cause a hot loop.
    pub stable_period: Duration,
    /// Give up after this many attempts without a stable connection (`None`: never).
    pub max_attempts: Option<u32>,
    /// Messages held while disconnected; one more is refused. Zero: sends are refused unless
    /// connected.
    pub outbox_capacity: usize,
    /// Subscribers at most.
    pub max_subscribers: usize,
}

impl ReconnectConfig {
    /// The seed's behaviour: 30 s connect timeout, a fixed 2 s `reconnect_after`.
    #[must_use]
    pub fn seed() -> ReconnectConfig {
        ReconnectConfig {
            connect_timeout: Duration::from_secs(30),
            backoff: BackoffPolicy::seed_fixed(),
            ..ReconnectConfig::default()
        }
    }

    /// Checks the configuration.
    ///
    /// # Errors
    /// [`ConfigError`] if a timeout or period is zero, `max_attempts` is `Some(0)`,
    /// `max_subscribers` is zero, or the backoff policy is invalid.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.connect_timeout.is_zero() {
            return Err(ConfigError::Zero {
                field: "connect_timeout",
            });
        }
        if self.connect_timeout > crate::backoff::MAX_DELAY {
            return Err(ConfigError::OutOfRange {
                field: "connect_timeout",
                expected: "at most one year",
            });
        }
        if self.stable_period.is_zero() {
            return Err(ConfigError::Zero {
                field: "stable_period",
            });
        }
        if self.max_attempts == Some(0) {
            return Err(ConfigError::Zero {
                field: "max_attempts",
            });
        }
        if self.max_subscribers == 0 {
            return Err(ConfigError::Zero {
                field: "max_subscribers",
            });
        }
        self.backoff.validate()
    }
}

impl Default for ReconnectConfig {
    /// gRPC's policy (1 s, ×1.6, ±20 %, 120 s cap; 20 s minimum connect timeout), a 10 s stable
    /// period, no attempt limit, 1024 queued messages, 1024 subscribers.
    fn default() -> Self {
        ReconnectConfig {
            connect_timeout: Duration::from_secs(20),
            backoff: BackoffPolicy::grpc(),
            stable_period: Duration::from_secs(10),
            max_attempts: None,
            outbox_capacity: 1024,
            max_subscribers: 1024,
        }
    }
}
