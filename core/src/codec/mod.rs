//! Framing: turning a byte stream into frames and frames into bytes.
//!
//! Every codec works on caller-owned buffers and answers with counts, so it never owns or grows
//! a buffer of its own:
//!
//! * [`Decoder::decode`] looks at the front of the caller's pending input and either says "need
//!   more" (`Ok(None)`) or appends one frame to the caller's `frame` vector and says how many input
//!   bytes it consumed (`Ok(Some(consumed))`). The caller drops those bytes and calls again.
//! * [`Encoder::encode`] appends the wire form of one frame to the caller's output vector.
//!
//! Decoding does not depend on how the input was chunked: feeding one byte at a time gives the same
//! frames as one big slice (for [`RawCodec`], whose frames *are* the chunks, the concatenation of
//! the frames is what is independent of chunking). Encoding then decoding gives the frames back.
//!
//! Built in: [`LineCodec`] (lines ending in `\n`, `\r\n` or either, with a maximum line length:
//! an over-long line is a [`DecodeError`], never unbounded buffering), [`BlockCodec`] (fixed-size
//! blocks, the seed's `POE::Filter::Block` with `BlockSize`) and [`RawCodec`] (pass-through).
//! [`Framing`] is a small `Copy` choice among the three. Implement [`Decoder`] and [`Encoder`] to
//! plug in your own.
//!
//! ```
//! use moor_core::codec::{Decoder, Encoder, LineCodec, Terminator};
//!
//! let mut codec = LineCodec::new(Terminator::CrLf, 64).unwrap();
//! let mut wire = Vec::new();
//! codec.encode(b"HELO example.org", &mut wire).unwrap();
//! assert_eq!(wire, b"HELO example.org\r\n");
//!
//! // The caller owns the pending input and drops what the codec consumed.
//! let mut pending: &[u8] = &wire;
//! let mut frame = Vec::new();
//! let consumed = codec.decode(pending, 0, &mut frame).unwrap().unwrap();
//! pending = &pending[consumed..];
//! assert_eq!(frame, b"HELO example.org");
//! assert!(pending.is_empty());
//! ```

use alloc::vec::Vec;
use core::fmt;

use crate::error::ConfigError;

mod lines;
#[cfg(test)]
mod tests;

pub use lines::{LineCodec, Terminator};

/// Turns the front of a byte stream into frames.
pub trait Decoder: fmt::Debug + Send {
    /// Decodes at most one frame from the front of `input`.
    ///
    /// On `Ok(Some(consumed))` one frame was appended to `frame` and the first `consumed` bytes of
    /// `input` (`1 ..= input.len()`) belong to it; the caller drops them before the next call.
    /// On `Ok(None)` no complete frame is there yet; nothing was appended.
    ///
    /// `seen` is a hint: the first `seen` bytes of `input` were already offered to this decoder by
    /// a call that answered `Ok(None)`, so a codec may skip rescanning them. `0` is always correct.
    ///
    /// # Errors
    /// [`DecodeError`] when the input can never become a valid frame (for example a line longer
    /// than the maximum). The stream is then broken; callers close it.
    fn decode(
        &mut self,
        input: &[u8],
        seen: usize,
        frame: &mut Vec<u8>,
    ) -> Result<Option<usize>, DecodeError>;
}

/// Turns frames into bytes for the wire.
pub trait Encoder: fmt::Debug + Send {
    /// Appends the wire form of `frame` to `out`.
    ///
    /// # Errors
    /// [`EncodeError`] when `frame` cannot be encoded (for example a line that contains the
    /// terminator). `out` may then hold a partial encoding; callers truncate it back.
    fn encode(&mut self, frame: &[u8], out: &mut Vec<u8>) -> Result<(), EncodeError>;
}

/// Input that can never decode into a valid frame.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// A line is longer than the codec's maximum (terminator not counted).
    LineTooLong {
        /// The maximum line length in bytes.
        max_line_len: usize,
    },
    /// A custom codec rejected the input.
    Invalid {
        /// Why.
        reason: &'static str,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::LineTooLong { max_line_len } => {
                write!(f, "line longer than {max_line_len} bytes")
            }
            DecodeError::Invalid { reason } => write!(f, "undecodable input: {reason}"),
        }
    }
}

impl core::error::Error for DecodeError {}

/// A frame that cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    /// A line is longer than the codec's maximum.
    LineTooLong {
        /// The maximum line length in bytes.
        max_line_len: usize,
    },
    /// A line contains its own terminator, so it would decode as more than one frame.
    ContainsTerminator,
    /// A block frame's length is not a multiple of the block length.
    NotBlockMultiple {
        /// The block length in bytes.
        block_len: usize,
    },
    /// A custom codec rejected the frame.
    Invalid {
        /// Why.
        reason: &'static str,
    },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::LineTooLong { max_line_len } => {
                write!(f, "line longer than {max_line_len} bytes")
            }
            EncodeError::ContainsTerminator => f.write_str("line contains its terminator"),
            EncodeError::NotBlockMultiple { block_len } => {
                write!(f, "frame length is not a multiple of {block_len}")
            }
            EncodeError::Invalid { reason } => write!(f, "unencodable frame: {reason}"),
        }
    }
}

impl core::error::Error for EncodeError {}

/// Fixed-size blocks: every `block_len` input bytes are one frame (the seed's
/// `POE::Filter::Block` with `BlockSize`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct BlockCodec {
    block_len: usize,
}

impl BlockCodec {
    /// A codec for blocks of `block_len` bytes.
    ///
    /// # Errors
    /// [`ConfigError::Zero`] if `block_len` is zero.
    pub fn new(block_len: usize) -> Result<Self, ConfigError> {
        if block_len == 0 {
            return Err(ConfigError::Zero { field: "block_len" });
        }
        Ok(BlockCodec { block_len })
    }

    /// The block length in bytes.
    #[must_use]
    pub fn block_len(&self) -> usize {
        self.block_len
    }
}

impl Decoder for BlockCodec {
    fn decode(
        &mut self,
        input: &[u8],
        _seen: usize,
        frame: &mut Vec<u8>,
    ) -> Result<Option<usize>, DecodeError> {
        // An Arbitrary-built codec may carry 0; treat it as 1 rather than loop forever.
        let len = self.block_len.max(1);
        if input.len() < len {
            return Ok(None);
        }
        frame.extend_from_slice(&input[..len]);
        Ok(Some(len))
    }
}

impl Encoder for BlockCodec {
    /// Appends the frame as is; its length must be a multiple of the block length, so that it
    /// decodes as whole blocks.
    fn encode(&mut self, frame: &[u8], out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let len = self.block_len.max(1);
        if !frame.len().is_multiple_of(len) {
            return Err(EncodeError::NotBlockMultiple { block_len: len });
        }
        out.extend_from_slice(frame);
        Ok(())
    }
}

/// Pass-through: whatever bytes are pending form one frame; frames are written as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct RawCodec;

impl Decoder for RawCodec {
    fn decode(
        &mut self,
        input: &[u8],
        _seen: usize,
        frame: &mut Vec<u8>,
    ) -> Result<Option<usize>, DecodeError> {
        if input.is_empty() {
            return Ok(None);
        }
        frame.extend_from_slice(input);
        Ok(Some(input.len()))
    }
}

impl Encoder for RawCodec {
    fn encode(&mut self, frame: &[u8], out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.extend_from_slice(frame);
        Ok(())
    }
}

/// A choice among the built-in codecs; small and `Copy`, so a machine's config can hold one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Framing {
    /// Lines; see [`LineCodec`].
    Lines(LineCodec),
    /// Fixed-size blocks; see [`BlockCodec`].
    Blocks(BlockCodec),
    /// Pass-through; see [`RawCodec`].
    Raw(RawCodec),
}

impl Framing {
    /// The most input bytes this framing may need to hold before a frame completes, if bounded
    /// (`None` for raw, which never holds any).
    #[must_use]
    pub fn max_pending_len(&self) -> Option<usize> {
        match self {
            Framing::Lines(l) => Some(l.max_line_len().saturating_add(2)),
            Framing::Blocks(b) => Some(b.block_len()),
            Framing::Raw(_) => None,
        }
    }
}

impl Default for Framing {
    /// Lines ending in `\n` or `\r\n`, at most 8 KiB.
    fn default() -> Self {
        Framing::Lines(LineCodec::default())
    }
}

impl Decoder for Framing {
    fn decode(
        &mut self,
        input: &[u8],
        seen: usize,
        frame: &mut Vec<u8>,
    ) -> Result<Option<usize>, DecodeError> {
        match self {
            Framing::Lines(c) => c.decode(input, seen, frame),
            Framing::Blocks(c) => c.decode(input, seen, frame),
            Framing::Raw(c) => c.decode(input, seen, frame),
        }
    }
}

impl Encoder for Framing {
    fn encode(&mut self, frame: &[u8], out: &mut Vec<u8>) -> Result<(), EncodeError> {
        match self {
            Framing::Lines(c) => c.encode(frame, out),
            Framing::Blocks(c) => c.encode(frame, out),
            Framing::Raw(c) => c.encode(frame, out),
        }
    }
}
