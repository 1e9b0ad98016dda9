//! The pool's inputs as data, so a recorded `Vec<(Instant, Input<K>)>` replays a run exactly.

use alloc::vec::Vec;
use core::net::IpAddr;

use super::{ConnectError, Pool, PoolKey, ResolveError};
use crate::error::UsageError;
use crate::id::{CheckoutId, ConnId};
use crate::time::Instant;

/// One input to a [`Pool`]: what each `handle_*` call takes, as a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input<K: PoolKey> {
    /// [`Pool::handle_checkout`]. The pool names the checkout: ids are minted in order, so a
    /// replay of the same inputs names every checkout the same way.
    Checkout {
        /// The key.
        key: K,
        /// The optional deadline.
        deadline: Option<Instant>,
    },
    /// [`Pool::handle_cancel`].
    Cancel(CheckoutId),
    /// [`Pool::handle_checkin`].
    Checkin {
        /// The connection.
        conn: ConnId,
        /// Whether it may be reused.
        reusable: bool,
    },
    /// [`Pool::handle_resolved`].
    Resolved {
        /// The host.
        host: K::Host,
        /// Its addresses, or why there are none.
        result: Result<Vec<IpAddr>, ResolveError>,
    },
    /// [`Pool::handle_connected`].
    Connected {
        /// The connection.
        conn: ConnId,
        /// The attempt that connected.
        attempt: usize,
    },
    /// [`Pool::handle_connect_failed`].
    ConnectFailed {
        /// The connection.
        conn: ConnId,
        /// The attempt that failed.
        attempt: usize,
        /// Why.
        cause: ConnectError,
    },
    /// [`Pool::handle_idle_closed`].
    IdleClosed(ConnId),
    /// [`Pool::handle_shutdown`].
    Shutdown,
    /// [`Pool::handle_timeout`].
    Timeout,
}

impl<K: PoolKey> Pool<K> {
    /// Applies one recorded input. A checkout's id comes back in its answer
    /// ([`Output::Acquired`](super::Output::Acquired) or
    /// [`Output::CheckoutFailed`](super::Output::CheckoutFailed)).
    ///
    /// # Errors
    /// Whatever the matching `handle_*` call returns.
    pub fn handle(&mut self, now: Instant, input: Input<K>) -> Result<(), UsageError> {
        match input {
            Input::Checkout { key, deadline } => {
                self.handle_checkout(now, &key, deadline).map(drop)
            }
            Input::Cancel(checkout) => self.handle_cancel(now, checkout),
            Input::Checkin { conn, reusable } => self.handle_checkin(now, conn, reusable),
            Input::Resolved { host, result } => {
                self.handle_resolved(now, &host, result.as_deref().map_err(|e| *e))
            }
            Input::Connected { conn, attempt } => self.handle_connected(now, conn, attempt),
            Input::ConnectFailed {
                conn,
                attempt,
                cause,
            } => self.handle_connect_failed(now, conn, attempt, cause),
            Input::IdleClosed(conn) => self.handle_idle_closed(now, conn),
            Input::Shutdown => self.handle_shutdown(now),
            Input::Timeout => {
                self.handle_timeout(now);
                Ok(())
            }
        }
    }
}
