//! The multi engine: one sans-IO state machine driving many outgoing TCP connections (the
//! seed's `POE::Component::Client::TCPMulti`, done better).
//!
//! Each connection has a [`ConnId`] that never changes (the seed's id changes during connect),
//! user state of type `S` given to [`Multi::connect`] and handed back in its terminal event, a
//! connect timeout while connecting and an input timeout once connected (both changeable at run
//! time with [`Multi::set_timeout`], zero or `None` disables), input and output framing
//! switchable at run time ([`Multi::set_framing`], [`Multi::set_decoder`],
//! [`Multi::set_encoder`]), and a send queue with a byte bound.
//!
//! The seed's `Initialize` event needs no counterpart: the code right after `connect` returns
//! runs before anything happens on the wire, and may already set the connection's codecs and
//! timeouts or queue sends.
//!
//! # Driving it
//!
//! The driver owns the sockets. It drains [`Multi::poll_output`] to `None` after every call,
//! performs the actions (`Connect`, `WriteReady`, `Close`), hands the user events to the
//! application, and feeds completions back: [`Multi::handle_connected`],
//! [`Multi::handle_connect_failed`], [`Multi::handle_received`], [`Multi::handle_written`],
//! [`Multi::handle_eof`], [`Multi::handle_io_error`], and [`Multi::handle_timeout`] when
//! [`Multi::poll_timeout`] is due. Completions are also data ([`Input`], fed with
//! [`Multi::handle_input`]), so a run recorded as `Vec<(Instant, Input)>` replays exactly.
//!
//! **Writing without a second copy.** `send` encodes the frame once into the connection's queue.
//! On [`Output::WriteReady`] the driver borrows the queued bytes with [`Multi::pending_write`]
//! (and writes straight from that slice), or copies them into its own buffer with
//! [`Multi::fill_write`]; either way it then reports how many bytes the socket took with
//! [`Multi::handle_written`], which answers how many remain. Bytes stay queued until reported
//! written, so a short write loses nothing. The next `WriteReady` comes when the queue goes from
//! empty to non-empty again.
//!
//! **Reading with back-pressure.** The driver reads at most [`Multi::read_capacity`] bytes and
//! passes them to [`Multi::handle_received`]. Frames are decoded lazily, one per
//! [`Multi::poll_output`] call, so a codec switched while handling an `Input` applies to the very
//! next frame (the seed's `filter` switch in an `InputEvent`), and the engine never holds more
//! than `max_input_len` received bytes per connection. After the outputs are drained, every
//! complete frame has been delivered and the capacity is positive again.
//!
//! **Bounds.** `max_connections`, `max_send_queue_len` bytes queued per connection (over it,
//! `send` fails and queues nothing), `max_input_len` received bytes held per connection (a frame
//! that cannot complete within it is an `Error`, never unbounded buffering). The output queue
//! holds only what the calls since the last drain produced: at most three outputs per call
//! (`shutdown_all`: two per connection), since frames are decoded on demand.
//!
//! **Exactly one terminal event per connection**: `ConnectFailed`, `Error`, `TimedOut` or
//! `Disconnected`, right after the connection's one `Close`. After it, the id is unknown.
//!
//! **Cost.** Every call is O(1) or O(log n) in the number of connections (`shutdown_all` is
//! O(n) once). Each connection keeps at most one entry in the shared [`Timers`] index and re-arms
//! it lazily: an input timeout pushed back by every read costs no index operation per read, only
//! one re-arm when the stale entry fires.
//!
//! ```
//! use moor_core::Instant;
//! use moor_core::multi::{Config, ConnectOptions, Multi, Output};
//!
//! let mut engine: Multi<&str> = Multi::new(Config::default(), 0).unwrap();
//! let now = Instant::ZERO;
//! let remote = "127.0.0.1:7".parse().unwrap();
//! let local = "127.0.0.1:40000".parse().unwrap();
//! let id = engine.connect(now, ConnectOptions::new(remote), "echo").unwrap();
//! engine.send(now, id, b"hello").unwrap(); // queued until connected
//!
//! let mut socket = Vec::new(); // stands in for the TCP socket; the peer echoes
//! let mut buf = [0u8; 4096];
//! let mut ended = None;
//! for _round in 0..8 {
//!     while let Some(out) = engine.poll_output() {
//!         match out {
//!             Output::Connect { conn, .. } => {
//!                 engine.handle_connected(now, conn, local, remote).unwrap();
//!             }
//!             Output::WriteReady { conn } => loop {
//!                 let n = engine.fill_write(conn, &mut buf).unwrap();
//!                 socket.extend_from_slice(&buf[..n]); // socket.write(&buf[..n])
//!                 if engine.handle_written(now, conn, n).unwrap() == 0 {
//!                     break;
//!                 }
//!             },
//!             Output::Input { conn, frame } => {
//!                 assert_eq!(frame, b"hello");
//!                 engine.shutdown(now, conn).unwrap(); // nothing queued: closes now
//!             }
//!             Output::Connected { conn, .. } => println!("{conn} is up"),
//!             Output::Close { .. } => {} // drop the socket
//!             Output::Disconnected { state, .. } => ended = Some(state),
//!             other => panic!("unexpected {other:?}"),
//!         }
//!     }
//!     if ended.is_some() {
//!         break;
//!     }
//!     // The socket became readable: read at most `read_capacity` bytes.
//!     let n = socket.len().min(engine.read_capacity(id).unwrap());
//!     engine.handle_received(now, id, &socket[..n]).unwrap();
//!     socket.drain(..n);
//!     if engine.poll_timeout().is_some_and(|at| at <= now) {
//!         engine.handle_timeout(now);
//!     }
//! }
//! assert_eq!(ended, Some("echo"));
//! assert!(engine.is_empty());
//! ```

use alloc::collections::VecDeque;
use alloc::string::ToString;
use alloc::vec::Vec;
use core::net::SocketAddr;
use core::time::Duration;

use crate::codec::{DecodeError, EncodeError, Encoder};
use crate::error::{ConfigError, UsageError};
use crate::id::ConnId;
use crate::slab::Slab;
use crate::time::{Instant, TimeGuard};
use crate::timer::Timers;

mod config;
mod conn;
mod input;
mod output;
#[cfg(test)]
mod tests;

pub use config::Config;
pub use input::Input;
pub use output::{Failure, Operation, Output, Phase, Stats};

use conn::{CODECS, Cold, Conn, Nanos, QUEUED, Spare};

/// What to connect to, and this connection's own timeouts (the seed's `connect` arguments).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct ConnectOptions {
    /// The remote address and port.
    pub remote: SocketAddr,
    /// The local address and port to bind first (port 0: any); `None` lets the OS choose.
    pub bind: Option<SocketAddr>,
    /// This connection's connect timeout: `None` uses the engine's, `Some(ZERO)` disables.
    pub connect_timeout: Option<Duration>,
    /// This connection's input timeout: `None` uses the engine's, `Some(ZERO)` disables.
    pub input_timeout: Option<Duration>,
}

impl ConnectOptions {
    /// Connect to `remote` with the engine's defaults.
    #[must_use]
    pub fn new(remote: SocketAddr) -> Self {
        ConnectOptions {
            remote,
            bind: None,
            connect_timeout: None,
            input_timeout: None,
        }
    }

    /// Bind to `local` (port 0: any) before connecting.
    #[must_use]
    pub fn bind(mut self, local: SocketAddr) -> Self {
        self.bind = Some(local);
        self
    }

    /// This connection's connect timeout (`ZERO` disables).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// This connection's input timeout (`ZERO` disables).
    #[must_use]
    pub fn input_timeout(mut self, timeout: Duration) -> Self {
        self.input_timeout = Some(timeout);
        self
    }
}

/// How a connection ends; each maps to one terminal event.
enum End {
    ConnectFailed(Failure),
    Error(Failure),
    TimedOut(Phase),
    Disconnected,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lifecycle {
    Running,
    /// `shutdown_all` was called; `Drained` comes when the last connection ends.
    Draining,
    Drained,
}

/// The multi-connection engine, generic over the per-connection user state `S`.
#[derive(Debug)]
pub struct Multi<S> {
    config: Config,
    /// The hot per-connection records.
    conns: Slab<Conn>,
    /// The rest of each connection, inserted and removed in lockstep with `conns` so a key
    /// names the same connection in both.
    colds: Slab<Cold<S>>,
    timers: Timers<ConnId>,
    outputs: VecDeque<Output<S>>,
    /// Connections with received bytes to decode (each at most once, flagged `QUEUED`; an entry
    /// may outlive its connection and is then skipped).
    decode_queue: VecDeque<ConnId>,
    /// Emptied frame buffers kept for reuse.
    spare: Spare,
    time: TimeGuard,
    lifecycle: Lifecycle,
    stats: Stats,
}

impl<S> Multi<S> {
    /// A new engine with no connections.
    ///
    /// The engine draws no randomness; `seed` is taken for the shape every moor machine shares.
    ///
    /// # Errors
    /// [`ConfigError`] if a limit is zero or out of range, or the framing's largest frame in
    /// progress does not fit in `max_input_len`.
    pub fn new(config: Config, seed: u64) -> Result<Self, ConfigError> {
        let _ = seed;
        config.validate()?;
        Ok(Multi {
            config,
            conns: Slab::default(),
            colds: Slab::default(),
            timers: Timers::new(),
            outputs: VecDeque::new(),
            decode_queue: VecDeque::new(),
            spare: Spare::default(),
            time: TimeGuard::default(),
            lifecycle: Lifecycle::Running,
            stats: Stats::default(),
        })
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Checks `now` and looks up `id` without changing anything; the caller commits the time
    /// with `self.time.advance(now)` once every check has passed.
    fn conn(&self, now: Instant, id: ConnId) -> Result<&Conn, UsageError> {
        self.time.peek(now)?;
        self.conns
            .get(id.to_raw())
            .ok_or(UsageError::UnknownConn(id))
    }

    fn conn_mut(&mut self, id: ConnId) -> &mut Conn {
        self.conns
            .get_mut(id.to_raw())
            .expect("connection checked just before")
    }

    fn cold_mut(&mut self, id: ConnId) -> &mut Cold<S> {
        self.colds
            .get_mut(id.to_raw())
            .expect("connection checked just before")
    }

    fn commit(&mut self, now: Instant) {
        let advanced = self.time.advance(now);
        debug_assert!(advanced, "time checked just before");
    }

    /// Starts a connection: emits [`Output::Connect`] and arms the connect timeout.
    ///
    /// # Errors
    /// [`UsageError::ShutDown`] after [`Multi::shutdown_all`]; [`UsageError::Full`] at
    /// `max_connections`; [`UsageError::TimeWentBackwards`].
    pub fn connect(
        &mut self,
        now: Instant,
        options: ConnectOptions,
        state: S,
    ) -> Result<ConnId, UsageError> {
        self.time.peek(now)?;
        if self.lifecycle != Lifecycle::Running {
            return Err(UsageError::ShutDown);
        }
        if self.conns.len() >= self.config.max_connections {
            return Err(UsageError::Full {
                what: "connections",
                limit: self.config.max_connections,
            });
        }
        self.commit(now);
        let connect_timeout = options.connect_timeout.or(self.config.connect_timeout);
        let input_timeout = options.input_timeout.or(self.config.input_timeout);
        let conn = Conn {
            buffers: None,
            since: now,
            phase: Phase::Connecting,
            flags: 0,
        };
        let cold = Cold {
            state,
            remote: options.remote,
            armed: None,
            connect_timeout: Nanos::from_timeout(connect_timeout),
            input_timeout: Nanos::from_timeout(input_timeout),
            codecs: None,
        };
        let key = self.conns.insert(conn);
        let cold_key = self.colds.insert(cold);
        assert_eq!(key, cold_key, "connection tables out of lockstep");
        let id = ConnId::from_raw(key);
        self.rearm_id(id);
        self.stats.connects += 1;
        self.outputs.push_back(Output::Connect {
            conn: id,
            remote: options.remote,
            bind: options.bind,
        });
        Ok(id)
    }

    /// Encodes `frame` with the connection's output codec and queues it. Allowed while
    /// connecting (flushed once connected).
    ///
    /// # Errors
    /// [`UsageError::UnknownConn`]; [`UsageError::WrongState`] once `shutdown` was called;
    /// [`UsageError::InvalidArgument`] if the codec cannot encode `frame`; [`UsageError::Full`]
    /// if the queue would exceed `max_send_queue_len` bytes. Nothing is queued on error.
    pub fn send(&mut self, now: Instant, id: ConnId, frame: &[u8]) -> Result<(), UsageError> {
        let c = self.conn(now, id)?;
        if c.phase == Phase::Closing {
            return Err(UsageError::WrongState {
                operation: "send",
                state: Phase::Closing.name(),
            });
        }
        let limit = self.config.max_send_queue_len;
        let mut framing = self.config.framing;
        let c = self
            .conns
            .get_mut(id.to_raw())
            .expect("connection checked just before");
        let was_empty = c.pending_output().is_empty();
        let mut buffers = c.buffers.take().unwrap_or_else(|| self.spare.take());
        buffers.compact_output();
        let old_len = buffers.output.len();
        let codecs = if c.has(CODECS) {
            let cold = self.colds.get_mut(id.to_raw()).expect("tables in lockstep");
            cold.codecs_mut(c)
        } else {
            None
        };
        let encoded = match codecs {
            Some(codecs) => codecs.encoder.encode(frame, &mut buffers.output),
            None => framing.encode(frame, &mut buffers.output),
        };
        let refused = match encoded {
            Err(e) => Some(UsageError::InvalidArgument {
                reason: encode_reason(&e),
            }),
            Ok(()) if buffers.pending_output().len() > limit => Some(UsageError::Full {
                what: "send queue",
                limit,
            }),
            Ok(()) => None,
        };
        let added = buffers.output.len() - old_len;
        c.buffers = Some(buffers);
        if let Some(err) = refused {
            let buffers = c.buffers.as_mut().expect("just put back");
            buffers.output.truncate(old_len);
            c.release_buffers(&mut self.spare);
            return Err(err);
        }
        let notify = was_empty && added > 0 && c.phase == Phase::Connected;
        self.commit(now);
        self.stats.bytes_queued += added as u64;
        if notify {
            self.outputs.push_back(Output::WriteReady { conn: id });
        }
        Ok(())
    }

    /// Ends a connection gracefully (the seed's `shutdown`): no new sends, the queue flushes,
    /// then [`Output::Close`] and [`Output::Disconnected`]. A pending connect is cancelled at
    /// once. Calling it again while closing does nothing.
    ///
    /// # Errors
    /// [`UsageError::UnknownConn`]; [`UsageError::TimeWentBackwards`].
    pub fn shutdown(&mut self, now: Instant, id: ConnId) -> Result<(), UsageError> {
        self.conn(now, id)?;
        self.commit(now);
        self.shutdown_one(now, id);
        Ok(())
    }

    fn shutdown_one(&mut self, now: Instant, id: ConnId) {
        let c = self.conn_mut(id);
        match c.phase {
            Phase::Closing => {}
            Phase::Connected if !c.pending_output().is_empty() => {
                c.phase = Phase::Closing;
                c.since = now;
                self.rearm_id(id);
            }
            Phase::Connecting | Phase::Connected => self.end(id, End::Disconnected),
        }
    }

    /// Shuts every connection down (the seed's `die`): pending connects are cancelled, connected
    /// ones flush and close; new `connect` calls are refused from now on. [`Output::Drained`]
    /// follows the last terminal event. O(n) once; calling it again does nothing.
    ///
    /// # Errors
    /// [`UsageError::TimeWentBackwards`].
    pub fn shutdown_all(&mut self, now: Instant) -> Result<(), UsageError> {
        self.time.peek(now)?;
        self.commit(now);
        if self.lifecycle != Lifecycle::Running {
            return Ok(());
        }
        self.lifecycle = Lifecycle::Draining;
        let ids: Vec<ConnId> = self
            .conns
            .iter()
            .map(|(key, _)| ConnId::from_raw(key))
            .collect();
        for id in ids {
            self.shutdown_one(now, id);
        }
        self.check_drained();
        Ok(())
    }

    fn decoder_changed(&mut self, id: ConnId) {
        let c = self.conn_mut(id);
        if let Some(buffers) = &mut c.buffers {
            buffers.input_seen = 0;
        }
        if !c.pending_input().is_empty() {
            self.queue_decode(id);
        }
    }

    fn rearm_id(&mut self, id: ConnId) {
        let c = self
            .conns
            .get(id.to_raw())
            .expect("connection checked just before");
        let cold = self.colds.get_mut(id.to_raw()).expect("tables in lockstep");
        rearm(&mut self.timers, id, c, cold);
    }

    fn queue_decode(&mut self, id: ConnId) {
        let c = self.conn_mut(id);
        if !c.has(QUEUED) {
            c.flags |= QUEUED;
            self.decode_queue.push_back(id);
        }
    }
}

mod driver;
mod query;
mod settings;

/// Arms `id`'s timer entry at its true deadline if that is earlier than where it is armed.
/// A later deadline leaves the entry alone: it fires early once and re-arms (lazy re-arm).
fn rearm<S>(timers: &mut Timers<ConnId>, id: ConnId, c: &Conn, cold: &mut Cold<S>) {
    if let Some(due) = cold.deadline(c) {
        timers.rearm_lazily(&mut cold.armed, due, id);
    }
}

fn encode_reason(e: &EncodeError) -> &'static str {
    match e {
        EncodeError::LineTooLong { .. } => "line longer than the output codec's maximum",
        EncodeError::ContainsTerminator => "line contains the output codec's terminator",
        EncodeError::NotBlockMultiple { .. } => {
            "frame length is not a multiple of the output codec's block length"
        }
        EncodeError::Invalid { reason } => reason,
    }
}

fn decode_failure(e: &DecodeError) -> Failure {
    Failure::new(Operation::Decode, 0, e.to_string())
}
