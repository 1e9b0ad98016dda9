//! The two errors a caller can get from a machine: a bad configuration, or a misused API.
//!
//! Operational failures (refused, reset, timed out) are not errors of the API: they arrive as
//! output events carrying their cause.

use core::fmt;

use crate::id::{CheckoutId, ConnId, Token, WorkerId};
use crate::time::Instant;

/// A configuration that cannot work. Returned by every machine's `new`; nothing is patched
/// silently.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// A field that must be positive is zero.
    Zero {
        /// The field's name.
        field: &'static str,
    },
    /// A field's value is outside what it may be.
    OutOfRange {
        /// The field's name.
        field: &'static str,
        /// What the field must satisfy.
        expected: &'static str,
    },
    /// Two fields contradict each other.
    Conflict {
        /// The first field.
        field: &'static str,
        /// The field it contradicts.
        other: &'static str,
        /// The rule they break.
        rule: &'static str,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Zero { field } => {
                write!(f, "invalid config: `{field}` must be greater than zero")
            }
            ConfigError::OutOfRange { field, expected } => {
                write!(f, "invalid config: `{field}` must be {expected}")
            }
            ConfigError::Conflict { field, other, rule } => {
                write!(
                    f,
                    "invalid config: `{field}` and `{other}` conflict: {rule}"
                )
            }
        }
    }
}

impl core::error::Error for ConfigError {}

/// A call the machine refused because the caller broke the API's rules. The machine's state is
/// unchanged when this is returned.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UsageError {
    /// `now` is earlier than a time the machine was already given.
    TimeWentBackwards {
        /// The time passed in.
        now: Instant,
        /// The latest time the machine had seen.
        last: Instant,
    },
    /// No pending request has this token.
    UnknownToken(Token),
    /// A pending request already has this token.
    DuplicateToken(Token),
    /// No checkout with this id is waiting (never made, or already answered).
    UnknownCheckout(CheckoutId),
    /// No live connection has this id (never minted, or already closed).
    UnknownConn(ConnId),
    /// The connection is connecting, but has no such attempt running (never started, already
    /// answered, or cancelled: a late answer's socket should be dropped).
    UnknownAttempt {
        /// The connection.
        conn: ConnId,
        /// The attempt named.
        attempt: usize,
    },
    /// No live worker has this id.
    UnknownWorker(WorkerId),
    /// The operation does not apply in the object's current state (for example checking in a
    /// connection that is not leased).
    WrongState {
        /// What was attempted.
        operation: &'static str,
        /// The state the object is in.
        state: &'static str,
    },
    /// The machine is shutting down or shut down and takes no new work.
    ShutDown,
    /// A bounded queue or table is full.
    Full {
        /// What is full.
        what: &'static str,
        /// Its bound.
        limit: usize,
    },
    /// An argument is not acceptable (for example an empty frame where one is required).
    InvalidArgument {
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UsageError::TimeWentBackwards { now, last } => {
                write!(f, "time went backwards: got {now}, already saw {last}")
            }
            UsageError::UnknownToken(t) => write!(f, "no pending request has {t}"),
            UsageError::DuplicateToken(t) => {
                write!(f, "{t} is already in use by a pending request")
            }
            UsageError::UnknownCheckout(c) => {
                write!(f, "no waiting {c} (never made, or already answered)")
            }
            UsageError::UnknownConn(c) => write!(f, "unknown {c} (never opened or already closed)"),
            UsageError::UnknownAttempt { conn, attempt } => write!(
                f,
                "{conn} has no connect attempt {attempt} running (never started, answered or cancelled)"
            ),
            UsageError::UnknownWorker(w) => write!(f, "unknown {w}"),
            UsageError::WrongState { operation, state } => {
                write!(f, "cannot {operation}: it is {state}")
            }
            UsageError::ShutDown => {
                f.write_str("the machine is shutting down and takes no new work")
            }
            UsageError::Full { what, limit } => write!(f, "{what} is full (limit {limit})"),
            UsageError::InvalidArgument { reason } => write!(f, "invalid argument: {reason}"),
        }
    }
}

impl core::error::Error for UsageError {}
