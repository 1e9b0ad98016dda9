//! Gauges and counters.

/// How many connections and waiters there are right now (for one key, or in total).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gauges {
    /// Connections that exist: connecting + idle + leased.
    pub open: usize,
    /// Connections kept alive, waiting to be reused.
    pub idle: usize,
    /// Connections checked out.
    pub leased: usize,
    /// Connections being resolved or connected.
    pub connecting: usize,
    /// Checkouts waiting for a connection.
    pub waiters: usize,
}

/// Totals since the pool was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Checkouts answered at once with an idle connection.
    pub immediate: u64,
    /// Checkouts answered with a connection another user released.
    pub deferred: u64,
    /// Checkouts answered with a new connection.
    pub fresh: u64,
    /// Checkouts that failed because their deadline passed.
    pub timeouts: u64,
    /// Idle connections closed to make room for another key.
    pub evictions: u64,
    /// Connections that never opened (every address failed, or a resolution failed).
    pub connect_failures: u64,
    /// Checkouts cancelled by the caller.
    pub cancellations: u64,
    /// Idle connections closed by `idle_timeout`.
    pub idle_expired: u64,
}

/// A snapshot of the pool's gauges (total) and counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Gauges over all keys.
    pub total: Gauges,
    /// Counters.
    pub counters: Counters,
}
