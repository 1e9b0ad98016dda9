//! Driver completions as data, so a run can be recorded as `Vec<(Instant, Input)>` and replayed.

use alloc::vec::Vec;
use core::net::SocketAddr;

use super::{Failure, Multi};
use crate::error::UsageError;
use crate::id::ConnId;
use crate::time::Instant;

/// One driver completion; [`Multi::handle_input`] dispatches it to the matching `handle_*`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[non_exhaustive]
pub enum Input {
    /// See [`Multi::handle_connected`].
    Connected {
        /// The connection.
        conn: ConnId,
        /// The local address.
        local: SocketAddr,
        /// The remote address.
        remote: SocketAddr,
    },
    /// See [`Multi::handle_connect_failed`].
    ConnectFailed {
        /// The connection.
        conn: ConnId,
        /// Why.
        failure: Failure,
    },
    /// See [`Multi::handle_received`].
    Received {
        /// The connection.
        conn: ConnId,
        /// The bytes read.
        bytes: Vec<u8>,
    },
    /// See [`Multi::handle_written`].
    Written {
        /// The connection.
        conn: ConnId,
        /// Bytes written.
        len: usize,
    },
    /// See [`Multi::handle_eof`].
    Eof {
        /// The connection.
        conn: ConnId,
    },
    /// See [`Multi::handle_io_error`].
    IoError {
        /// The connection.
        conn: ConnId,
        /// Why.
        failure: Failure,
    },
}

impl<S> Multi<S> {
    /// Feeds one recorded driver completion.
    ///
    /// # Errors
    /// Whatever the matching `handle_*` method returns.
    pub fn handle_input(&mut self, now: Instant, input: Input) -> Result<(), UsageError> {
        match input {
            Input::Connected {
                conn,
                local,
                remote,
            } => self.handle_connected(now, conn, local, remote),
            Input::ConnectFailed { conn, failure } => {
                self.handle_connect_failed(now, conn, failure)
            }
            Input::Received { conn, bytes } => self.handle_received(now, conn, &bytes),
            Input::Written { conn, len } => self.handle_written(now, conn, len).map(|_| ()),
            Input::Eof { conn } => self.handle_eof(now, conn),
            Input::IoError { conn, failure } => self.handle_io_error(now, conn, failure),
        }
    }
}
