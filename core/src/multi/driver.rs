//! Driver completions, timers, the output queue, and the one place connections end.

use alloc::vec::Vec;
use core::net::SocketAddr;

use super::conn::{CODECS, EOF, QUEUED};
use super::{End, Failure, Lifecycle, Multi, Operation, Output, Phase, decode_failure, rearm};
use crate::codec::Decoder;
use crate::error::UsageError;
use crate::id::ConnId;
use crate::time::Instant;

fn wrong_state(operation: &'static str, phase: Phase) -> UsageError {
    UsageError::WrongState {
        operation,
        state: phase.name(),
    }
}

impl<S> Multi<S> {
    /// The driver's connect succeeded: emits [`Output::Connected`], switches to the input
    /// timeout, and [`Output::WriteReady`] if sends were queued meanwhile.
    ///
    /// # Errors
    /// [`UsageError::UnknownConn`]; [`UsageError::WrongState`] unless connecting;
    /// [`UsageError::TimeWentBackwards`].
    pub fn handle_connected(
        &mut self,
        now: Instant,
        id: ConnId,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Result<(), UsageError> {
        let c = self.conn(now, id)?;
        if c.phase != Phase::Connecting {
            return Err(wrong_state("complete a connect", c.phase));
        }
        self.commit(now);
        let c = self.conn_mut(id);
        c.phase = Phase::Connected;
        c.since = now;
        let write = !c.pending_output().is_empty();
        self.colds
            .get_mut(id.to_raw())
            .expect("tables in lockstep")
            .remote = remote;
        self.rearm_id(id);
        self.stats.connected += 1;
        self.outputs.push_back(Output::Connected {
            conn: id,
            local,
            remote,
        });
        if write {
            self.outputs.push_back(Output::WriteReady { conn: id });
        }
        Ok(())
    }

    /// The driver's connect failed (refused, unreachable, bind failed ...): emits
    /// [`Output::ConnectFailed`] with the cause.
    ///
    /// # Errors
    /// [`UsageError::UnknownConn`]; [`UsageError::WrongState`] unless connecting;
    /// [`UsageError::TimeWentBackwards`].
    pub fn handle_connect_failed(
        &mut self,
        now: Instant,
        id: ConnId,
        failure: Failure,
    ) -> Result<(), UsageError> {
        let c = self.conn(now, id)?;
        if c.phase != Phase::Connecting {
            return Err(wrong_state("fail a connect", c.phase));
        }
        self.commit(now);
        self.end(id, End::ConnectFailed(failure));
        Ok(())
    }

    /// The driver read `bytes` (at most [`Multi::read_capacity`]). Restarts the input timeout
    /// (without touching the timer index) and queues the bytes for decoding; frames come out of
    /// [`Multi::poll_output`]. An empty slice does nothing.
    ///
    /// # Errors
    /// [`UsageError::UnknownConn`]; [`UsageError::WrongState`] while connecting or after end of
    /// file; [`UsageError::Full`] if `bytes` exceed the read capacity (nothing is taken);
    /// [`UsageError::TimeWentBackwards`].
    pub fn handle_received(
        &mut self,
        now: Instant,
        id: ConnId,
        bytes: &[u8],
    ) -> Result<(), UsageError> {
        let c = self.conn(now, id)?;
        if c.phase == Phase::Connecting {
            return Err(wrong_state("receive", c.phase));
        }
        if c.has(EOF) {
            return Err(UsageError::WrongState {
                operation: "receive",
                state: "at end of file",
            });
        }
        let limit = self.config.max_input_len;
        if bytes.len() > limit - c.pending_input().len() {
            return Err(UsageError::Full {
                what: "input buffer",
                limit,
            });
        }
        self.commit(now);
        if bytes.is_empty() {
            return Ok(());
        }
        let c = self
            .conns
            .get_mut(id.to_raw())
            .expect("connection checked just before");
        let buffers = c.buffers(&mut self.spare);
        buffers.compact_input();
        buffers.input.extend_from_slice(bytes);
        // Lazy re-arm: only the true deadline moves; the timer entry stays where it is.
        c.since = now;
        self.stats.bytes_in += bytes.len() as u64;
        self.queue_decode(id);
        Ok(())
    }

    /// The driver wrote `written` bytes from the front of the queue. Answers how many remain
    /// queued; while closing, an emptied queue ends the connection with
    /// [`Output::Disconnected`].
    ///
    /// # Errors
    /// [`UsageError::UnknownConn`]; [`UsageError::WrongState`] while connecting;
    /// [`UsageError::InvalidArgument`] if more bytes were written than were queued;
    /// [`UsageError::TimeWentBackwards`].
    pub fn handle_written(
        &mut self,
        now: Instant,
        id: ConnId,
        written: usize,
    ) -> Result<usize, UsageError> {
        let c = self.conn(now, id)?;
        if c.phase == Phase::Connecting {
            return Err(wrong_state("write", c.phase));
        }
        if written > c.pending_output().len() {
            return Err(UsageError::InvalidArgument {
                reason: "more bytes written than were queued",
            });
        }
        self.commit(now);
        let c = self
            .conns
            .get_mut(id.to_raw())
            .expect("connection checked just before");
        if let Some(buffers) = &mut c.buffers {
            buffers.consume_output(written);
        }
        c.release_buffers(&mut self.spare);
        let remaining = c.pending_output().len();
        let closing = c.phase == Phase::Closing;
        if closing && written > 0 {
            // Write progress keeps a flushing connection alive; the deadline only moves later.
            c.since = now;
        }
        self.stats.bytes_written += written as u64;
        if closing && remaining == 0 {
            self.end(id, End::Disconnected);
        }
        Ok(remaining)
    }

    /// The peer closed its side. While connected, the frames already received are delivered,
    /// then the connection ends with [`Output::Error`] (`Read`, errno 0). While closing, the
    /// flush goes on.
    ///
    /// # Errors
    /// [`UsageError::UnknownConn`]; [`UsageError::WrongState`] while connecting or if end of
    /// file was already reported; [`UsageError::TimeWentBackwards`].
    pub fn handle_eof(&mut self, now: Instant, id: ConnId) -> Result<(), UsageError> {
        let c = self.conn(now, id)?;
        if c.phase == Phase::Connecting {
            return Err(wrong_state("reach end of file", c.phase));
        }
        if c.has(EOF) {
            return Err(UsageError::WrongState {
                operation: "reach end of file",
                state: "already at end of file",
            });
        }
        self.commit(now);
        let c = self.conn_mut(id);
        c.flags |= EOF;
        if c.phase == Phase::Connected {
            if c.pending_input().is_empty() {
                self.end(id, End::Error(eof_failure()));
            } else {
                self.queue_decode(id);
            }
        }
        Ok(())
    }

    /// A read or write failed (reset, broken pipe ...): the connection ends with
    /// [`Output::Error`], or [`Output::ConnectFailed`] if it was still connecting. Received
    /// bytes not yet decoded are dropped.
    ///
    /// # Errors
    /// [`UsageError::UnknownConn`]; [`UsageError::TimeWentBackwards`].
    pub fn handle_io_error(
        &mut self,
        now: Instant,
        id: ConnId,
        failure: Failure,
    ) -> Result<(), UsageError> {
        let c = self.conn(now, id)?;
        let connecting = c.phase == Phase::Connecting;
        self.commit(now);
        self.end(
            id,
            if connecting {
                End::ConnectFailed(failure)
            } else {
                End::Error(failure)
            },
        );
        Ok(())
    }

    /// Fires every timeout due at `now`: a connection whose true deadline has passed ends with
    /// [`Output::TimedOut`]; a stale entry (its deadline moved later) is re-armed once. An
    /// earlier `now` than already seen does nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        if !self.time.advance(now) {
            return;
        }
        while let Some((at, id)) = self.timers.pop_due(now) {
            let c = self
                .conns
                .get(id.to_raw())
                .expect("timer entry for a connection that ended");
            let cold = self.colds.get_mut(id.to_raw()).expect("tables in lockstep");
            assert_eq!(cold.armed, Some(at), "timer entry and connection disagree");
            cold.armed = None;
            match cold.deadline(c) {
                Some(deadline) if deadline <= now => {
                    let phase = c.phase;
                    self.end(id, End::TimedOut(phase));
                }
                Some(_) => rearm(&mut self.timers, id, c, cold),
                None => {}
            }
        }
    }

    /// The next output: a driver action or a user event. Drain it to `None` after every call.
    /// Frames are decoded here, one per call, so codec switches apply from the next frame on.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output<S>> {
        loop {
            if let Some(out) = self.outputs.pop_front() {
                return Some(out);
            }
            let id = self.decode_queue.pop_front()?;
            self.decode_one(id);
        }
    }

    /// When [`Multi::handle_timeout`] should next be called.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_deadline()
    }

    /// Decodes at most one frame of `id`, queueing it again if more input is pending.
    fn decode_one(&mut self, id: ConnId) {
        let limit = self.config.max_input_len;
        let mut framing = self.config.framing;
        let Some(c) = self.conns.get_mut(id.to_raw()) else {
            return; // ended after it was queued
        };
        c.flags &= !QUEUED;
        let pending_len = c.pending_input().len();
        let eof_now = c.has(EOF) && c.phase == Phase::Connected;
        if pending_len == 0 {
            if eof_now {
                self.end(id, End::Error(eof_failure()));
            }
            return;
        }
        let mut frame = Vec::new();
        let mut buffers = c.buffers.take().expect("pending input lives in buffers");
        let seen = buffers.input_seen as usize;
        let codecs = if c.has(CODECS) {
            let cold = self.colds.get_mut(id.to_raw()).expect("tables in lockstep");
            cold.codecs_mut(c)
        } else {
            None
        };
        let decoded = match codecs {
            Some(codecs) => codecs
                .decoder
                .decode(buffers.pending_input(), seen, &mut frame),
            None => framing.decode(buffers.pending_input(), seen, &mut frame),
        };
        if let Ok(Some(n)) = decoded
            && n >= 1
            && n <= pending_len
        {
            buffers.consume_input(n);
        } else if let Ok(None) = decoded {
            buffers.input_seen = u32::try_from(pending_len).expect("input bounded by config");
        }
        c.buffers = Some(buffers);
        match decoded {
            Ok(Some(n)) if n >= 1 && n <= pending_len => {
                c.release_buffers(&mut self.spare);
                let more = !c.pending_input().is_empty() || eof_now;
                self.stats.frames_in += 1;
                self.outputs.push_back(Output::Input { conn: id, frame });
                if more {
                    self.queue_decode(id);
                }
            }
            Ok(Some(_)) => self.end(
                id,
                End::Error(Failure::new(
                    Operation::Decode,
                    0,
                    "input codec consumed an impossible number of bytes",
                )),
            ),
            Ok(None) => {
                if pending_len >= limit {
                    self.end(
                        id,
                        End::Error(Failure::new(
                            Operation::Decode,
                            0,
                            "input buffer full without a complete frame",
                        )),
                    );
                } else if eof_now {
                    self.end(id, End::Error(eof_failure()));
                }
            }
            Err(e) => self.end(id, End::Error(decode_failure(&e))),
        }
    }

    /// Ends a connection: the one place a connection leaves the table, so it is the one place
    /// that emits `Close` and the terminal event.
    pub(super) fn end(&mut self, id: ConnId, how: End) {
        self.conns
            .remove(id.to_raw())
            .expect("ending a connection that is not there");
        let mut cold = self.colds.remove(id.to_raw()).expect("tables in lockstep");
        self.timers.disarm(&mut cold.armed, id);
        let state = cold.state;
        self.outputs.push_back(Output::Close { conn: id });
        let event = match how {
            End::ConnectFailed(failure) => {
                self.stats.connect_failures += 1;
                Output::ConnectFailed {
                    conn: id,
                    failure,
                    state,
                }
            }
            End::Error(failure) => {
                self.stats.errors += 1;
                Output::Error {
                    conn: id,
                    failure,
                    state,
                }
            }
            End::TimedOut(phase) => {
                self.stats.timeouts += 1;
                Output::TimedOut {
                    conn: id,
                    phase,
                    state,
                }
            }
            End::Disconnected => {
                self.stats.disconnects += 1;
                Output::Disconnected { conn: id, state }
            }
        };
        self.outputs.push_back(event);
        self.check_drained();
    }

    pub(super) fn check_drained(&mut self) {
        if self.lifecycle == Lifecycle::Draining && self.conns.is_empty() {
            debug_assert!(
                self.timers.is_empty(),
                "timers left after the last connection"
            );
            self.lifecycle = Lifecycle::Drained;
            self.outputs.push_back(Output::Drained);
        }
    }
}

fn eof_failure() -> Failure {
    Failure::new(Operation::Read, 0, "connection closed by peer")
}
