//! The line codec: frames end with a terminator, and a line has a maximum length.

use alloc::vec::Vec;

use super::{DecodeError, Decoder, EncodeError, Encoder};
use crate::error::ConfigError;

/// What ends a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Terminator {
    /// `\n`.
    Lf,
    /// `\r\n` (a lone `\n` or `\r` is part of the line).
    CrLf,
    /// `\n`, with one `\r` before it dropped if present; encodes as `\r\n`. Accepts what most
    /// line protocols send in practice.
    LfOrCrLf,
}

/// Lines ending in a [`Terminator`], each at most `max_line_len` bytes (terminator not counted).
///
/// A line that grows past the maximum is a [`DecodeError::LineTooLong`] as soon as that is
/// certain, so a peer that never sends a terminator cannot make the caller buffer without bound:
/// at most `max_line_len + 2` bytes are ever pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct LineCodec {
    terminator: Terminator,
    max_line_len: usize,
}

impl Default for LineCodec {
    /// `\n` or `\r\n`, at most 8 KiB per line.
    fn default() -> Self {
        LineCodec {
            terminator: Terminator::LfOrCrLf,
            max_line_len: 8 * 1024,
        }
    }
}

impl LineCodec {
    /// A line codec.
    ///
    /// # Errors
    /// [`ConfigError::Zero`] if `max_line_len` is zero.
    pub fn new(terminator: Terminator, max_line_len: usize) -> Result<Self, ConfigError> {
        if max_line_len == 0 {
            return Err(ConfigError::Zero {
                field: "max_line_len",
            });
        }
        Ok(LineCodec {
            terminator,
            max_line_len,
        })
    }

    /// The terminator.
    #[must_use]
    pub fn terminator(&self) -> Terminator {
        self.terminator
    }

    /// The maximum line length in bytes, terminator not counted.
    #[must_use]
    pub fn max_line_len(&self) -> usize {
        self.max_line_len
    }

    /// Where the first line of `input` ends: `(content_len, consumed)`.
    fn find_line(&self, input: &[u8], seen: usize) -> Option<(usize, usize)> {
        // The first `seen` bytes held no terminator, and every terminator ends in `\n`, so only
        // newer bytes are searched; a `\r` just before the boundary is still looked back at.
        let start = seen.min(input.len());
        let mut from = start;
        while let Some(offset) = input[from..].iter().position(|&b| b == b'\n') {
            let nl = from + offset;
            let cr_before = nl > 0 && input[nl - 1] == b'\r';
            match self.terminator {
                Terminator::Lf => return Some((nl, nl + 1)),
                Terminator::LfOrCrLf if cr_before => return Some((nl - 1, nl + 1)),
                Terminator::LfOrCrLf => return Some((nl, nl + 1)),
                Terminator::CrLf if cr_before => return Some((nl - 1, nl + 1)),
                Terminator::CrLf => from = nl + 1,
            }
        }
        None
    }

    /// The longest pending input without a terminator that can still end in a valid line.
    fn max_unterminated(&self) -> usize {
        match self.terminator {
            Terminator::Lf => self.max_line_len,
            // A trailing `\r` may turn out to be part of the terminator.
            Terminator::CrLf | Terminator::LfOrCrLf => self.max_line_len.saturating_add(1),
        }
    }
}

impl Decoder for LineCodec {
    fn decode(
        &mut self,
        input: &[u8],
        seen: usize,
        frame: &mut Vec<u8>,
    ) -> Result<Option<usize>, DecodeError> {
        let too_long = DecodeError::LineTooLong {
            max_line_len: self.max_line_len,
        };
        match self.find_line(input, seen) {
            Some((content_len, _)) if content_len > self.max_line_len => Err(too_long),
            Some((content_len, consumed)) => {
                frame.extend_from_slice(&input[..content_len]);
                Ok(Some(consumed))
            }
            None if input.len() > self.max_unterminated() => Err(too_long),
            None => Ok(None),
        }
    }
}

impl Encoder for LineCodec {
    fn encode(&mut self, frame: &[u8], out: &mut Vec<u8>) -> Result<(), EncodeError> {
        if frame.len() > self.max_line_len {
            return Err(EncodeError::LineTooLong {
                max_line_len: self.max_line_len,
            });
        }
        let breaks = match self.terminator {
            Terminator::Lf | Terminator::LfOrCrLf => frame.contains(&b'\n'),
            Terminator::CrLf => frame.windows(2).any(|w| w == b"\r\n"),
        };
        if breaks {
            return Err(EncodeError::ContainsTerminator);
        }
        out.extend_from_slice(frame);
        match self.terminator {
            Terminator::Lf => out.push(b'\n'),
            Terminator::CrLf | Terminator::LfOrCrLf => out.extend_from_slice(b"\r\n"),
        }
        Ok(())
    }
}
