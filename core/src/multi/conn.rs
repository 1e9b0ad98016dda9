//! One connection's state inside the engine, kept small: the engine may hold 100,000 of them.

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

/// Codecs a connection switched to; absent while it uses the engine's default framing, so the
/// common case costs one pointer.
#[derive(Debug)]
pub(crate) struct Codecs {
    pub(crate) decoder: Box<dyn Decoder>,
    pub(crate) encoder: Box<dyn Encoder>,
}

/// Flag bits in [`Conn::flags`].
pub(crate) const EOF: u8 = 1;
/// The connection's id is in the engine's decode queue.
pub(crate) const QUEUED: u8 = 2;

/// The per-connection record.
///
/// The buffers are `Vec`s with a consumed-head offset: empty `Vec`s allocate nothing, and
/// dropping consumed bytes is an offset bump with an occasional compaction.
#[derive(Debug)]
pub(crate) struct Conn<S> {
    pub(crate) state: S,
    pub(crate) remote: SocketAddr,
    pub(crate) phase: Phase,
    pub(crate) flags: u8,
    /// Offset of the first unconsumed byte in `input`.
    pub(crate) input_head: u32,
    /// Bytes after `input_head` the decoder already answered "need more" for.
    pub(crate) input_seen: u32,
    /// Offset of the first unwritten byte in `output`.
    pub(crate) output_head: u32,
    pub(crate) connect_timeout: Nanos,
    pub(crate) input_timeout: Nanos,
    /// Start of the current phase's timeout: when connecting started, or the latest input (and,
    /// while closing, the latest write progress).
    pub(crate) since: Instant,
    /// Where this connection's one entry in the timer index is, `Instant::MAX` if none. It may be
    /// earlier than the true deadline (lazy re-arm), never later.
    pub(crate) armed: Instant,
    pub(crate) input: Vec<u8>,
    pub(crate) output: Vec<u8>,
    pub(crate) codecs: Option<Box<Codecs>>,
}

impl<S> Conn<S> {
    /// The true deadline of the current phase, if its timeout is enabled.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Connecting => self.connect_timeout.deadline_from(self.since),
            Phase::Connected | Phase::Closing => self.input_timeout.deadline_from(self.since),
        }
    }

    pub(crate) fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

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
            // Cleared, not freed: the engine moves the empty buffer to its spare list.
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

    /// Takes the input buffer if it is empty but allocated, to recycle it.
    pub(crate) fn take_empty_input(&mut self) -> Option<Vec<u8>> {
        (self.input.is_empty() && self.input.capacity() > 0)
            .then(|| core::mem::take(&mut self.input))
    }

    /// Takes the output buffer if it is empty but allocated, to recycle it.
    pub(crate) fn take_empty_output(&mut self) -> Option<Vec<u8>> {
        (self.output.is_empty() && self.output.capacity() > 0)
            .then(|| core::mem::take(&mut self.output))
    }

    /// Heap bytes held by this connection's buffers (capacity, not length).
    pub(crate) fn buffer_capacity(&self) -> usize {
        self.input.capacity() + self.output.capacity()
    }
}
