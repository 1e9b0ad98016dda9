//! One connection's state inside the engine, kept small: the engine may hold 100,000 of them.
//!
//! A connection is split in two records under the same key, in two tables kept in lockstep. The
//! hot one ([`Conn`]) holds only what every event reads and is 32 bytes with its slot's
//! generation: at 100,000 connections visited in random order the first touch of a record misses
//! the caches, and 3.2 MB of hot records stay in the last-level cache where 6.4 MB or more do
//! not. Everything else (user state, remote address, timeouts, timer position, switched codecs)
//! is in [`Cold`], read only on connect, when a timer is set or fires, at the end, and by
//! getters. The frame buffers live behind one pointer ([`Buffers`]), absent while idle and
//! recycled through the engine's spare list, so the buffers a busy connection gets are warm.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::net::SocketAddr;
use core::time::Duration;

use super::output::Phase;
use crate::codec::{Decoder, Encoder};
use crate::time::Instant;

/// A timeout stored as nanoseconds, 0 meaning disabled (8 bytes instead of 16 for
/// `Option<Duration>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Nanos(u64);

impl Nanos {
    pub(crate) fn from_timeout(timeout: Option<Duration>) -> Nanos {
        Nanos(timeout.map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)))
    }

    pub(crate) fn to_timeout(self) -> Option<Duration> {
        (self.0 != 0).then(|| Duration::from_nanos(self.0))
    }

    fn deadline_from(self, since: Instant) -> Option<Instant> {
        if self.0 == 0 {
            return None;
        }
        let at = since.saturating_add(Duration::from_nanos(self.0));
        // A deadline that saturates to the end of time is "never".
        (at != Instant::MAX).then_some(at)
    }
}

/// Codecs a connection switched to; absent while it uses the engine's default framing.
#[derive(Debug)]
pub(crate) struct Codecs {
    pub(crate) decoder: Box<dyn Decoder>,
    pub(crate) encoder: Box<dyn Encoder>,
}

/// The rarely read part of a connection, in a second table kept in lockstep with the hot one
/// (same keys): touched on connect, when a timer fires or is set, on a codec switch, by getters,
/// and by the codec paths only when [`CODECS`] is set.
#[derive(Debug)]
pub(crate) struct Cold<S> {
    pub(crate) state: S,
    pub(crate) remote: SocketAddr,
    /// Where this connection's one entry in the timer index is, if anywhere. It may be earlier
    /// than the true deadline (lazy re-arm), never later.
    pub(crate) armed: Option<Instant>,
    pub(crate) connect_timeout: Nanos,
    pub(crate) input_timeout: Nanos,
    pub(crate) codecs: Option<Box<Codecs>>,
}

impl<S> Cold<S> {
    /// The true deadline of the current phase, if its timeout is enabled.
    pub(crate) fn deadline(&self, hot: &Conn) -> Option<Instant> {
        match hot.phase {
            Phase::Connecting => self.connect_timeout.deadline_from(hot.since),
            Phase::Connected | Phase::Closing => self.input_timeout.deadline_from(hot.since),
        }
    }

    /// The switched codecs, if `hot` says there are any.
    pub(crate) fn codecs_mut(&mut self, hot: &Conn) -> Option<&mut Codecs> {
        if hot.has(CODECS) {
            self.codecs.as_deref_mut()
        } else {
            None
        }
    }
}

/// A connection's frame buffers, with consumed-head offsets: dropping consumed bytes is an
/// offset bump with an occasional compaction.
#[derive(Debug, Default)]
pub(crate) struct Buffers {
    pub(crate) input: Vec<u8>,
    pub(crate) output: Vec<u8>,
    /// Offset of the first unconsumed byte in `input`.
    pub(crate) input_head: u32,
    /// Bytes after `input_head` the decoder already answered "need more" for.
    pub(crate) input_seen: u32,
    /// Offset of the first unwritten byte in `output`.
    pub(crate) output_head: u32,
}

impl Buffers {
    /// Received bytes not yet decoded.
    pub(crate) fn pending_input(&self) -> &[u8] {
        &self.input[self.input_head as usize..]
    }

    /// Encoded bytes not yet written.
    pub(crate) fn pending_output(&self) -> &[u8] {
        &self.output[self.output_head as usize..]
    }

    /// Drops `n` decoded bytes from the front of the input.
    pub(crate) fn consume_input(&mut self, n: usize) {
        let head = self.input_head as usize + n;
        assert!(head <= self.input.len(), "consumed past the input");
        if head == self.input.len() {
            // Cleared, not freed: an idle pair of buffers goes to the engine's spare list.
            self.input.clear();
            self.input_head = 0;
        } else {
            self.input_head = u32::try_from(head).expect("input bounded by config");
        }
        self.input_seen = 0;
    }

    /// Moves pending input to the front so appends do not grow the buffer without bound; copies
    /// only a partial frame, which the framing bounds.
    pub(crate) fn compact_input(&mut self) {
        if self.input_head > 0 {
            self.input.drain(..self.input_head as usize);
            self.input_head = 0;
        }
    }

    /// Drops `n` written bytes from the front of the output.
    pub(crate) fn consume_output(&mut self, n: usize) {
        let head = self.output_head as usize + n;
        assert!(head <= self.output.len(), "wrote past the output");
        if head == self.output.len() {
            self.output.clear();
            self.output_head = 0;
        } else {
            self.output_head = u32::try_from(head).expect("output bounded by config");
        }
    }

    /// Compacts the output when at least half of it is already written: amortised O(1) per byte.
    pub(crate) fn compact_output(&mut self) {
        let head = self.output_head as usize;
        if head > 0 && head * 2 >= self.output.len() {
            self.output.drain(..head);
            self.output_head = 0;
        }
    }

    /// Whether both buffers hold nothing pending, so the pair can go back to the spare list.
    fn is_idle(&self) -> bool {
        self.input.is_empty() && self.output.is_empty()
    }

    /// Heap bytes held (capacities plus the pair itself).
    pub(crate) fn capacity(&self) -> usize {
        core::mem::size_of::<Buffers>() + self.input.capacity() + self.output.capacity()
    }
}

/// Flag bits in [`Conn::flags`].
pub(crate) const EOF: u8 = 1;
/// The connection's id is in the engine's decode queue.
pub(crate) const QUEUED: u8 = 2;
/// The connection switched codecs: they are in [`Cold::codecs`].
pub(crate) const CODECS: u8 = 4;

/// The per-connection record every event touches, nothing else: with the table's slot
/// bookkeeping it is 32 bytes, so 100,000 of them (3.2 MB) stay in the last-level cache where a
/// 64-byte record does not. The rest of a connection is in [`Cold`].
#[derive(Debug)]
pub(crate) struct Conn {
    /// Frame buffers, `None` while both are empty.
    pub(crate) buffers: Option<Box<Buffers>>,
    /// Start of the current phase's timeout: when connecting started, or the latest input (and,
    /// while closing, the latest write progress).
    pub(crate) since: Instant,
    pub(crate) phase: Phase,
    pub(crate) flags: u8,
}

/// An empty slice for a connection without buffers.
const NOTHING: &[u8] = &[];

impl Conn {
    pub(crate) fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// Received bytes not yet decoded.
    pub(crate) fn pending_input(&self) -> &[u8] {
        self.buffers.as_ref().map_or(NOTHING, |b| b.pending_input())
    }

    /// Encoded bytes not yet written.
    pub(crate) fn pending_output(&self) -> &[u8] {
        self.buffers
            .as_ref()
            .map_or(NOTHING, |b| b.pending_output())
    }

    /// The connection's buffers, taking a spare pair (or allocating one) if it has none.
    pub(crate) fn buffers(&mut self, spare: &mut Spare) -> &mut Buffers {
        self.buffers.get_or_insert_with(|| spare.take())
    }

    /// Hands the buffers back to the spare list once both are empty, so an idle connection
    /// holds none.
    pub(crate) fn release_buffers(&mut self, spare: &mut Spare) {
        if self.buffers.as_ref().is_some_and(|b| b.is_idle())
            && let Some(buffers) = self.buffers.take()
        {
            spare.recycle(buffers);
        }
    }

    /// Heap bytes held by this connection's buffers (capacity, not length).
    pub(crate) fn buffer_capacity(&self) -> usize {
        self.buffers.as_ref().map_or(0, |b| b.capacity())
    }
}

/// Most spare buffer pairs the engine keeps.
pub(crate) const SPARE_BUFFERS: usize = 64;
/// Largest buffer capacity worth keeping as a spare; a pair with a larger one is freed.
pub(crate) const SPARE_BUFFER_CAPACITY: usize = 16 * 1024;

/// Emptied pairs of frame buffers kept for reuse (at most [`SPARE_BUFFERS`], each buffer at
/// most [`SPARE_BUFFER_CAPACITY`]): an idle connection holds none, and a busy one gets a
/// recently used, cache-warm pair without a trip to the allocator.
#[derive(Debug, Default)]
pub(crate) struct Spare {
    /// Boxed so handing a pair to a connection moves one pointer, and the record stays small.
    #[allow(clippy::vec_box)]
    list: Vec<Box<Buffers>>,
}

impl Spare {
    /// A spare pair, or a new empty one.
    pub(crate) fn take(&mut self) -> Box<Buffers> {
        self.list.pop().unwrap_or_default()
    }

    /// Keeps an emptied pair as a spare if there is room and neither buffer is too big; frees
    /// it otherwise.
    pub(crate) fn recycle(&mut self, buffers: Box<Buffers>) {
        debug_assert!(buffers.is_idle(), "recycling buffers with pending bytes");
        if self.list.len() < SPARE_BUFFERS
            && buffers.input.capacity() <= SPARE_BUFFER_CAPACITY
            && buffers.output.capacity() <= SPARE_BUFFER_CAPACITY
        {
            self.list.push(buffers);
        }
    }

    /// Pairs kept.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }
}
