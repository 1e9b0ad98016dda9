//! What the pool tells its driver and its users, and why things fail or close.

use core::fmt;
use core::net::SocketAddr;

use super::PoolKey;
use crate::id::{CheckoutId, ConnId};

/// One output of the pool. Imperative names are actions for the driver; past-tense names are
/// answers for the application.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Output<K: PoolKey> {
    /// Resolve `host` and answer with [`Pool::handle_resolved`](super::Pool::handle_resolved).
    /// At most one is in flight per host; each ends with that answer or with a
    /// [`CancelResolve`](Output::CancelResolve) for its host.
    Resolve {
        /// The host to look up.
        host: K::Host,
    },
    /// Stop resolving `host`: the pool gave up on the answer (it took longer than
    /// `connect_timeout`, or the pool shut down) and would refuse it. Dropping the lookup
    /// frees what it holds; a later [`Resolve`](Output::Resolve) for the same host is a new
    /// lookup.
    CancelResolve {
        /// The host no longer being looked up.
        host: K::Host,
    },
    /// Make connect attempt `attempt` of connection `conn`: open a connection to `addr` for
    /// `key`, and answer with [`Pool::handle_connected`](super::Pool::handle_connected) or
    /// [`Pool::handle_connect_failed`](super::Pool::handle_connect_failed), naming the attempt.
    ///
    /// A connection tries its host's addresses in turn, attempt `0` first. With
    /// [`Config::next_attempt_delay`](super::Config::next_attempt_delay) set (Happy Eyeballs,
    /// RFC 8305) several attempts of one connection may run at once: the first to connect wins
    /// and the others are cancelled. Each attempt ends with its answer, a
    /// [`CancelConnect`](Output::CancelConnect), or a [`Close`](Output::Close) of the
    /// connection.
    Connect {
        /// The connection's id.
        conn: ConnId,
        /// Which attempt of this connection: the index of `addr` in its host's addresses, in
        /// the order the pool tries them. Never repeated for one connection.
        attempt: usize,
        /// The key it belongs to (scheme, TLS name …).
        key: K,
        /// Where to connect.
        addr: SocketAddr,
    },
    /// Stop connect attempt `attempt` of `conn` and drop whatever it opened: another attempt
    /// connected first, or this one ran out of `connect_timeout` while the connection has other
    /// addresses or attempts left. The connection itself goes on; the pool would refuse this
    /// attempt's answer.
    CancelConnect {
        /// The connection.
        conn: ConnId,
        /// The attempt to stop.
        attempt: usize,
    },
    /// Close the connection (or abandon all its connect attempts) and forget it.
    Close {
        /// The connection.
        conn: ConnId,
        /// Why.
        reason: CloseReason,
    },
    /// A checkout succeeded: `conn` is leased to it until it is checked in.
    Acquired {
        /// The checkout.
        checkout: CheckoutId,
        /// The leased connection.
        conn: ConnId,
        /// Where it came from.
        from_cache: FromCache,
    },
    /// A checkout failed; this is its only answer.
    CheckoutFailed {
        /// The checkout.
        checkout: CheckoutId,
        /// The real cause.
        error: CheckoutError,
    },
    /// After [`Pool::handle_shutdown`](super::Pool::handle_shutdown): every connection is closed
    /// and every checkout answered. Emitted exactly once.
    Drained,
}

/// Where an acquired connection came from (the seed's `from_cache`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FromCache {
    /// An idle connection was available at checkout.
    Immediate,
    /// A kept-alive connection, but the checkout had to wait for another user to release it.
    Deferred,
    /// A new connection was opened for this checkout.
    Fresh,
}

/// Why a checkout failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CheckoutError {
    /// The checkout's deadline passed (while resolving, queued or connecting).
    TimedOut,
    /// Resolving the host failed; every checkout waiting on it gets the same error.
    Resolve(ResolveError),
    /// Connecting failed on every address.
    Connect(ConnectError),
    /// Too many checkouts are already waiting (`max_waiters`).
    QueueFull,
    /// The pool is shutting down.
    Shutdown,
}

/// Why a resolution failed, as the driver saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[non_exhaustive]
pub enum ResolveError {
    /// The name does not exist or has no addresses.
    NotFound,
    /// The resolver gave no answer within `connect_timeout` (or said it gave up waiting).
    TimedOut,
    /// Any other resolver failure, with the OS or resolver error code when there is one.
    Failed {
        /// The error code, if any.
        code: Option<i32>,
    },
}

/// Why a connect attempt failed, as the driver saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[non_exhaustive]
pub enum ConnectError {
    /// The peer refused (nothing listening).
    Refused,
    /// No answer within `connect_timeout`.
    TimedOut,
    /// The network or host is unreachable.
    Unreachable,
    /// The connection opened but the handshake on top of it (for example TLS) failed.
    Handshake,
    /// Any other failure, with the OS error code when there is one.
    Other {
        /// The OS error code, if any.
        code: Option<i32>,
    },
}

/// Why the pool closes a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// Idle for `idle_timeout`.
    IdleTimeout,
    /// Older than `max_lifetime`.
    MaxLifetime,
    /// Closed to make room for another key at the global cap (least recently used first).
    Evicted,
    /// Checked in as not reusable.
    Discarded,
    /// The peer closed it or sent data while it was idle.
    PeerClosed,
    /// Its last connect attempt took longer than `connect_timeout`, with no address left.
    ConnectTimedOut,
    /// The pool is shutting down.
    Shutdown,
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResolveError::NotFound => f.write_str("host not found"),
            ResolveError::TimedOut => f.write_str("resolver timed out"),
            ResolveError::Failed { code: Some(c) } => write!(f, "resolver failed (code {c})"),
            ResolveError::Failed { code: None } => f.write_str("resolver failed"),
        }
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Refused => f.write_str("connection refused"),
            ConnectError::TimedOut => f.write_str("connect timed out"),
            ConnectError::Unreachable => f.write_str("network unreachable"),
            ConnectError::Handshake => f.write_str("handshake failed"),
            ConnectError::Other { code: Some(c) } => write!(f, "connect failed (os error {c})"),
            ConnectError::Other { code: None } => f.write_str("connect failed"),
        }
    }
}

impl fmt::Display for CheckoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckoutError::TimedOut => f.write_str("checkout timed out"),
            CheckoutError::Resolve(e) => write!(f, "checkout failed: {e}"),
            CheckoutError::Connect(e) => write!(f, "checkout failed: {e}"),
            CheckoutError::QueueFull => f.write_str("checkout refused: too many waiters"),
            CheckoutError::Shutdown => f.write_str("checkout failed: pool is shutting down"),
        }
    }
}

impl core::error::Error for ResolveError {}
impl core::error::Error for ConnectError {}
impl core::error::Error for CheckoutError {}
