//! What the multi engine tells its driver and its user.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::net::SocketAddr;

use crate::id::ConnId;

/// The phase a connection is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Phase {
    /// The driver is connecting; the connect timeout applies.
    Connecting,
    /// Connected; the input timeout applies.
    Connected,
    /// `shutdown` was called: no new sends, the queue is flushing, then the connection closes.
    /// The input timeout applies, restarted by input and by write progress, so a peer that stops
    /// reading cannot hold the connection forever.
    Closing,
}

impl Phase {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Phase::Connecting => "connecting",
            Phase::Connected => "connected",
            Phase::Closing => "closing",
        }
    }
}

/// The operation that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[non_exhaustive]
pub enum Operation {
    /// Binding the local address.
    Bind,
    /// Connecting.
    Connect,
    /// Reading (also a peer's end of file).
    Read,
    /// Writing.
    Write,
    /// Decoding received bytes into frames.
    Decode,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operation::Bind => "bind",
            Operation::Connect => "connect",
            Operation::Read => "read",
            Operation::Write => "write",
            Operation::Decode => "decode",
        })
    }
}

/// An operational failure with its real cause (the seed's `ARG0..ARG2`: operation, `$!` number,
/// `$!` text).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Failure {
    /// What failed.
    pub operation: Operation,
    /// The OS error number (`errno`), or 0 when the failure is not an OS error (end of file,
    /// decode error).
    pub errno: i32,
    /// A human-readable description.
    pub text: String,
}

impl Failure {
    /// A failure with its parts.
    #[must_use]
    pub fn new(operation: Operation, errno: i32, text: impl Into<String>) -> Failure {
        Failure {
            operation,
            errno,
            text: text.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed: {}", self.operation, self.text)?;
        if self.errno != 0 {
            write!(f, " (errno {})", self.errno)?;
        }
        Ok(())
    }
}

/// One output of the engine: an action for the driver (imperative name) or an event for the
/// user (past-tense name).
///
/// Every connection gets exactly one terminal event: [`Output::ConnectFailed`],
/// [`Output::Error`], [`Output::TimedOut`] or [`Output::Disconnected`]. It hands the user state
/// back and comes right after the connection's [`Output::Close`]; nothing about the connection
/// follows it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Output<S> {
    /// Driver: open a TCP connection to `remote`, bound to `bind` if given.
    Connect {
        /// The connection.
        conn: ConnId,
        /// The address to connect to.
        remote: SocketAddr,
        /// The local address (and port, 0 for any) to bind first.
        bind: Option<SocketAddr>,
    },
    /// Driver: bytes are queued for `conn`. Write them (see [`Multi::pending_write`] and
    /// [`Multi::fill_write`]) and report each write with [`Multi::handle_written`] until it
    /// answers 0 remaining; the next `WriteReady` comes when the queue fills again.
    ///
    /// [`Multi::pending_write`]: super::Multi::pending_write
    /// [`Multi::fill_write`]: super::Multi::fill_write
    /// [`Multi::handle_written`]: super::Multi::handle_written
    WriteReady {
        /// The connection.
        conn: ConnId,
    },
    /// Driver: close the socket (or abandon the attempt) and forget `conn`. Exactly one per
    /// connection, always right before its terminal event.
    Close {
        /// The connection.
        conn: ConnId,
    },
    /// User: the connection is up (the seed's `SuccessEvent`).
    Connected {
        /// The connection.
        conn: ConnId,
        /// The local address.
        local: SocketAddr,
        /// The remote address.
        remote: SocketAddr,
    },
    /// User, terminal: the connection could not be made (the seed's `FailureEvent`).
    ConnectFailed {
        /// The connection.
        conn: ConnId,
        /// Why.
        failure: Failure,
        /// The user state given to `connect`.
        state: S,
    },
    /// User: one decoded frame (the seed's `InputEvent`).
    Input {
        /// The connection.
        conn: ConnId,
        /// The frame, as the input codec produced it.
        frame: Vec<u8>,
    },
    /// User, terminal: a connected connection ended unexpectedly: read or write error, the peer's
    /// end of file (`Read`, errno 0), or undecodable input (the seed's `ErrorEvent`).
    Error {
        /// The connection.
        conn: ConnId,
        /// Why.
        failure: Failure,
        /// The user state.
        state: S,
    },
    /// User, terminal: the timeout of `phase` expired (the seed's `TimeoutEvent`).
    TimedOut {
        /// The connection.
        conn: ConnId,
        /// The phase whose timeout expired.
        phase: Phase,
        /// The user state.
        state: S,
    },
    /// User, terminal: the connection ended because the user asked (`shutdown` or
    /// `shutdown_all`), after flushing its queue; a pending connect is cancelled instead.
    Disconnected {
        /// The connection.
        conn: ConnId,
        /// The user state.
        state: S,
    },
    /// User: after `shutdown_all`, every connection has ended. Emitted once.
    Drained,
}

impl<S> Output<S> {
    /// The connection this output is about, if any.
    #[must_use]
    pub fn conn(&self) -> Option<ConnId> {
        match self {
            Output::Connect { conn, .. }
            | Output::WriteReady { conn }
            | Output::Close { conn }
            | Output::Connected { conn, .. }
            | Output::ConnectFailed { conn, .. }
            | Output::Input { conn, .. }
            | Output::Error { conn, .. }
            | Output::TimedOut { conn, .. }
            | Output::Disconnected { conn, .. } => Some(*conn),
            Output::Drained => None,
        }
    }

    /// Whether this is a connection's terminal event.
    #[must_use]
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Output::ConnectFailed { .. }
                | Output::Error { .. }
                | Output::TimedOut { .. }
                | Output::Disconnected { .. }
        )
    }
}

/// Counters since the engine was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections currently open (any phase).
    pub open: usize,
    /// `connect` calls accepted.
    pub connects: u64,
    /// Connections that reached `Connected`.
    pub connected: u64,
    /// `ConnectFailed` events.
    pub connect_failures: u64,
    /// `Error` events.
    pub errors: u64,
    /// `TimedOut` events.
    pub timeouts: u64,
    /// `Disconnected` events.
    pub disconnects: u64,
    /// Frames delivered as `Input`.
    pub frames_in: u64,
    /// Bytes received from the driver.
    pub bytes_in: u64,
    /// Encoded bytes queued by `send`.
    pub bytes_queued: u64,
    /// Bytes the driver reported written.
    pub bytes_written: u64,
}
