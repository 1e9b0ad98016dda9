//! Getters: no side effects, no `now`.

use core::mem::size_of;
use core::net::SocketAddr;

use super::conn::{Cold, Conn};
use super::{Lifecycle, Multi, Phase, Stats};
use crate::error::UsageError;
use crate::id::ConnId;

impl<S> Multi<S> {
    /// The queued bytes of `id` not yet written, to write straight from (no copy).
    ///
    /// # Errors
    /// [`UsageError::UnknownConn`].
    pub fn pending_write(&self, id: ConnId) -> Result<&[u8], UsageError> {
        let c = self
            .conns
            .get(id.to_raw())
            .ok_or(UsageError::UnknownConn(id))?;
        Ok(c.pending_output())
    }

    /// Copies the front of `id`'s queued bytes into `buf` and answers how many. The bytes stay
    /// queued until [`Multi::handle_written`] reports them written.
    ///
    /// # Errors
    /// [`UsageError::UnknownConn`].
    pub fn fill_write(&self, id: ConnId, buf: &mut [u8]) -> Result<usize, UsageError> {
        let pending = self.pending_write(id)?;
        let n = pending.len().min(buf.len());
        buf[..n].copy_from_slice(&pending[..n]);
        Ok(n)
    }

    /// How many bytes the driver may pass to [`Multi::handle_received`] for `id` now.
    ///
    /// # Errors
    /// [`UsageError::UnknownConn`].
    pub fn read_capacity(&self, id: ConnId) -> Result<usize, UsageError> {
        let c = self
            .conns
            .get(id.to_raw())
            .ok_or(UsageError::UnknownConn(id))?;
        Ok(self.config.max_input_len - c.pending_input().len())
    }

    /// The phase of `id`, `None` if it is not open.
    #[must_use]
    pub fn phase(&self, id: ConnId) -> Option<Phase> {
        self.conns.get(id.to_raw()).map(|c| c.phase)
    }

    /// The user state of `id` (the seed's `CHEAP`).
    #[must_use]
    pub fn state(&self, id: ConnId) -> Option<&S> {
        self.colds.get(id.to_raw()).map(|c| &c.state)
    }

    /// The user state of `id`, mutably.
    #[must_use]
    pub fn state_mut(&mut self, id: ConnId) -> Option<&mut S> {
        self.colds.get_mut(id.to_raw()).map(|c| &mut c.state)
    }

    /// The remote address of `id`: the target while connecting, the connected peer after.
    #[must_use]
    pub fn remote_addr(&self, id: ConnId) -> Option<SocketAddr> {
        self.colds.get(id.to_raw()).map(|c| c.remote)
    }

    /// Open connections, in any phase.
    #[must_use]
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// Whether no connection is open.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Whether [`Multi::shutdown_all`] was called.
    #[must_use]
    pub fn is_shutting_down(&self) -> bool {
        self.lifecycle != Lifecycle::Running
    }

    /// Entries in the timer index (at most one per connection).
    #[must_use]
    pub fn armed_timers(&self) -> usize {
        self.timers.len()
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> Stats {
        Stats {
            open: self.conns.len(),
            ..self.stats
        }
    }

    /// Size in bytes of one connection's records (the hot part every event touches plus the
    /// cold rest), user state included, frame buffers' heap memory excluded (each table adds a
    /// few bytes of slot bookkeeping per record).
    #[must_use]
    pub fn conn_record_len() -> usize {
        size_of::<Conn>() + size_of::<Cold<S>>()
    }

    /// Heap bytes held by all connections' frame buffers (capacity). O(n): for measurement.
    #[must_use]
    pub fn buffer_capacity(&self) -> usize {
        self.conns.iter().map(|(_, c)| c.buffer_capacity()).sum()
    }
}
