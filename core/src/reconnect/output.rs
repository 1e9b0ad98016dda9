//! What the reconnecting link tells its driver and its application: the state, the outputs and
//! the reasons for each change.

use core::fmt;

use crate::error::UsageError;
use crate::id::{AttemptId, Token};
use crate::time::Instant;

/// The link's state: exactly one at a time, observable through
/// [`Reconnect::state`](super::Reconnect::state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not started yet.
    Idle,
    /// An attempt is in flight.
    Connecting {
        /// The attempt.
        attempt: AttemptId,
        /// Its number since the last stable connection (1 for the first).
        number: u32,
        /// When it is abandoned.
        deadline: Instant,
    },
    /// The connection is up.
    Connected {
        /// The attempt that made it.
        attempt: AttemptId,
        /// Since when.
        since: Instant,
    },
    /// Waiting before the next attempt.
    Backoff {
        /// When the next attempt starts.
        until: Instant,
    },
    /// Stopped by the application; [`Reconnect::handle_start`](super::Reconnect::handle_start)
    /// starts it again.
    Stopped,
    /// Gave up after `max_attempts` attempts without a stable connection; `handle_start` starts
    /// it again.
    GaveUp {
        /// Attempts made.
        attempts: u32,
    },
}

impl State {
    /// A short name for messages.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            State::Idle => "idle",
            State::Connecting { .. } => "connecting",
            State::Connected { .. } => "connected",
            State::Backoff { .. } => "backing off",
            State::Stopped => "stopped",
            State::GaveUp { .. } => "given up",
        }
    }
}

/// Why a connection attempt failed or a connection ended: reported by the driver, echoed in
/// events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[non_exhaustive]
pub enum Cause {
    /// The peer refused the connection.
    Refused,
    /// The peer reset the connection.
    Reset,
    /// The peer closed the connection.
    Closed,
    /// The name did not resolve.
    Dns,
    /// The network or host is unreachable.
    Unreachable,
    /// TLS or another handshake failed.
    Handshake,
    /// Some other I/O error, with the OS error code if there is one.
    Io(i32),
}

/// Why the state changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// The application started the link.
    Started,
    /// The attempt succeeded.
    ConnectSucceeded,
    /// The attempt failed.
    ConnectFailed(Cause),
    /// The attempt took longer than its connect timeout.
    ConnectTimedOut,
    /// The connection was lost.
    ConnectionLost(Cause),
    /// The backoff delay elapsed.
    BackoffElapsed,
    /// The application stopped the link.
    StopRequested,
    /// The attempt limit was reached.
    MaxAttemptsReached,
}

/// One output: an action for the driver (imperative) or an event for the application
/// (past tense). `M` is the application's message type.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Output<M> {
    /// Action: start connecting; report the result with this attempt id.
    Connect {
        /// The attempt.
        attempt: AttemptId,
    },
    /// Action: abandon this attempt or close its connection. A result the driver still reports
    /// for it is ignored.
    Close {
        /// The attempt.
        attempt: AttemptId,
    },
    /// Action: write this message on the connection of this attempt.
    Send {
        /// The connected attempt.
        attempt: AttemptId,
        /// The message.
        message: M,
    },
    /// Event: the state changed.
    StateChanged {
        /// The state before.
        from: State,
        /// The state now.
        to: State,
        /// Why.
        reason: Reason,
    },
    /// Event for one subscriber: the connection is up.
    Connected {
        /// The subscriber.
        subscriber: Token,
        /// The connected attempt.
        attempt: AttemptId,
    },
    /// Event for one subscriber that was told [`Output::Connected`]: the connection is down.
    Disconnected {
        /// The subscriber.
        subscriber: Token,
    },
    /// Event: a queued message will not be sent because the link stopped or gave up; it is
    /// handed back, never dropped silently.
    Undelivered {
        /// The message.
        message: M,
    },
}

/// How an accepted driver report was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// It changed the link.
    Yes,
    /// It was for an attempt the link has already abandoned: nothing changed. The driver should
    /// drop whatever that attempt left behind.
    Stale,
}

/// How [`Reconnect::handle_send`](super::Reconnect::handle_send) took a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Handed to the driver at once as [`Output::Send`].
    Now,
    /// Queued in the outbox, to be sent in order on reconnect.
    Queued,
}

/// A refused send: the error and the message, given back to the sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendError<M> {
    /// Why it was refused.
    pub error: UsageError,
    /// The message.
    pub message: M,
}

impl<M> fmt::Display for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "message not sent: {}", self.error)
    }
}

impl<M: fmt::Debug> core::error::Error for SendError<M> {}

impl<M> From<SendError<M>> for UsageError {
    fn from(e: SendError<M>) -> UsageError {
        e.error
    }
}

/// Counters of a link's life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Attempts started.
    pub attempts: u64,
    /// Attempts that connected.
    pub connects: u64,
    /// Attempts that failed.
    pub connect_failures: u64,
    /// Attempts that timed out.
    pub connect_timeouts: u64,
    /// Connections lost.
    pub disconnects: u64,
    /// Messages handed to the driver.
    pub messages_sent: u64,
    /// Messages queued while disconnected.
    pub messages_queued: u64,
    /// Messages refused because the outbox was full.
    pub messages_refused: u64,
    /// Messages handed back as [`Output::Undelivered`].
    pub messages_undelivered: u64,
    /// Reports for abandoned attempts that were ignored.
    pub stale_reports: u64,
}
