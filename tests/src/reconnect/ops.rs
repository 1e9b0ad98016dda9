//! The scenario vocabulary: steps and configuration profiles.

use std::time::Duration;

use arbitrary::Arbitrary;
use moor_core::reconnect::ReconnectConfig;

/// One step of a scenario: an application command, a peer behaviour, a fault or a time jump.
#[derive(Debug, Clone, PartialEq, Eq, Arbitrary)]
pub enum Op {
    /// Application: start the link.
    Start,
    /// Application: stop the link.
    Stop,
    /// Application: subscribe (token = n % 8).
    Subscribe(u8),
    /// Application: unsubscribe (token = n % 8).
    Unsubscribe(u8),
    /// Application: send the next numbered message.
    Send,
    /// Time passes: `n * 100` ms, firing every due timer on the way.
    Advance(u16),
    /// Peer: the in-flight attempt connects.
    Accept,
    /// Peer: the in-flight attempt is refused.
    Refuse,
    /// Peer: the connection drops (or, while connecting, the attempt fails).
    Drop,
    /// Peer: accepts and drops at once.
    Flap,
    /// Fault: a late report for an old attempt.
    Stale(u8),
    /// Fault: a report for an attempt id never issued.
    Bogus,
    /// Fault: an input with a `now` earlier than the last one.
    Backwards,
}

/// Which configuration a scenario runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Arbitrary)]
pub enum Profile {
    /// The seed's: 30 s timeout, fixed 2 s.
    Seed,
    /// The default: gRPC backoff, 10 s stable period.
    Grpc,
    /// Tight: small outbox, attempt limit, short stable period.
    Tight,
}

impl Profile {
    /// The configuration.
    #[must_use]
    pub fn config(self) -> ReconnectConfig {
        match self {
            Profile::Seed => ReconnectConfig {
                outbox_capacity: 16,
                max_subscribers: 8,
                ..ReconnectConfig::seed()
            },
            Profile::Grpc => ReconnectConfig {
                outbox_capacity: 16,
                max_subscribers: 8,
                ..ReconnectConfig::default()
            },
            Profile::Tight => ReconnectConfig {
                outbox_capacity: 3,
                max_subscribers: 4,
                max_attempts: Some(4),
                stable_period: Duration::from_secs(3),
                ..ReconnectConfig::default()
            },
        }
    }
}
