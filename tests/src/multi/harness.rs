//! The simulated network and the driver: peers with seeded latency, and the loop that feeds
//! the engine their completions at their exact times while the model checks every output.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use moor_core::multi::{Config, ConnectOptions, Failure, Multi, Operation, Output, Phase};
use moor_core::{ConnId, Instant, Rng, UsageError};

use super::model::{Model, ModelConn, enabled};
use super::{Behaviour, Op, line};

#[derive(Debug, Clone)]
enum NetEvent {
    ConnectResult(ConnId, bool),
    Data(ConnId, Vec<u8>),
    Eof(ConnId),
    Reset(ConnId),
    Writable(ConnId),
}

impl NetEvent {
    fn conn(&self) -> ConnId {
        match self {
            NetEvent::ConnectResult(c, _)
            | NetEvent::Data(c, _)
            | NetEvent::Eof(c)
            | NetEvent::Reset(c)
            | NetEvent::Writable(c) => *c,
        }
    }
}

/// The simulated socket and its peer.
#[derive(Debug)]
struct Sock {
    behaviour: Behaviour,
    connected: bool,
    /// A write sequence is under way (between `WriteReady` and an emptied queue).
    writing: bool,
    /// The peer has closed its side.
    peer_eof: bool,
    /// Bytes the peer received and has not parsed into lines yet.
    peer_rx: Vec<u8>,
    /// Bytes delivered by the network, waiting for read capacity.
    rx: VecDeque<u8>,
    /// Time of the last event scheduled for this socket, so delivery stays in order.
    last_at: Instant,
}

/// Most loop iterations one `Advance` may take; more means the engine is livelocked.
const MAX_ITERATIONS: usize = 200_000;

/// The engine, the simulated network and the model, stepped together.
pub struct Harness {
    /// The engine under test.
    pub engine: Multi<u64>,
    /// Simulated time.
    pub now: Instant,
    /// The reference model.
    pub model: Model,
    /// Every output, in order, for determinism checks.
    pub trace: Vec<String>,
    config: Config,
    rng: Rng,
    socks: BTreeMap<ConnId, Sock>,
    events: BTreeMap<(Instant, u64), NetEvent>,
    event_seq: u64,
    opened: Vec<ConnId>,
    serial: u64,
}

fn peer_addr(serial: u64) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 10_000 + (serial % 50_000) as u16))
}

impl Harness {
    /// A harness with the given engine config and network seed.
    ///
    /// # Panics
    /// If the config is invalid.
    #[must_use]
    pub fn new(config: Config, seed: u64) -> Harness {
        Harness {
            engine: Multi::new(config.clone(), seed).expect("valid config"),
            now: Instant::ZERO,
            model: Model::default(),
            trace: Vec::new(),
            config,
            rng: Rng::new(seed),
            socks: BTreeMap::new(),
            events: BTreeMap::new(),
            event_seq: 0,
            opened: Vec::new(),
            serial: 0,
        }
    }

    fn latency(&mut self) -> Duration {
        Duration::from_millis(1 + self.rng.below(20))
    }

    fn schedule(&mut self, delay: Duration, ev: NetEvent) {
        let id = ev.conn();
        let mut at = self.now + delay;
        if let Some(s) = self.socks.get_mut(&id) {
            // Per-connection FIFO, as TCP delivers.
            at = at.max(s.last_at);
            s.last_at = at;
        }
        self.event_seq += 1;
        self.events.insert((at, self.event_seq), ev);
    }

    fn pick(&self, index: u8) -> Option<ConnId> {
        (!self.opened.is_empty()).then(|| self.opened[usize::from(index) % self.opened.len()])
    }

    /// Applies one op, then checks the model.
    ///
    /// # Panics
    /// On any contract violation.
    pub fn step(&mut self, op: &Op) {
        match *op {
            Op::Connect {
                behaviour,
                connect_timeout_ms,
                input_timeout_ms,
            } => self.connect(behaviour, connect_timeout_ms, input_timeout_ms),
            Op::Send { conn, len } => {
                if let Some(id) = self.pick(conn) {
                    self.send(id, len);
                }
            }
            Op::Shutdown { conn } => {
                if let Some(id) = self.pick(conn) {
                    self.shutdown(id);
                }
            }
            Op::ShutdownAll => {
                self.engine.shutdown_all(self.now).unwrap();
                self.model.shutting_down = true;
                let ids: Vec<ConnId> = self.model.live.keys().copied().collect();
                for id in ids {
                    self.model_shutdown(id);
                }
            }
            Op::SetTimeout { conn, ms } => {
                if let Some(id) = self.pick(conn) {
                    self.set_timeout(id, ms);
                }
            }
            Op::PeerEof { conn } => {
                if let Some(id) = self.pick(conn)
                    && let Some(s) = self.socks.get_mut(&id)
                    && s.connected
                    && !s.peer_eof
                {
                    s.peer_eof = true;
                    let lat = self.latency();
                    self.schedule(lat, NetEvent::Eof(id));
                }
            }
            Op::Reset { conn } => {
                if let Some(id) = self.pick(conn)
                    && self.socks.get(&id).is_some_and(|s| s.connected)
                {
                    let lat = self.latency();
                    self.schedule(lat, NetEvent::Reset(id));
                }
            }
            Op::Advance { ms } => self.advance(Duration::from_millis(u64::from(ms))),
        }
        self.drain();
        self.model.check_quiescent(self.now);
    }

    fn connect(&mut self, behaviour: Behaviour, ct: Option<u16>, it: Option<u16>) {
        self.serial += 1;
        let serial = self.serial;
        let mut opts = ConnectOptions::new(peer_addr(serial));
        let ms = |v: u16| Duration::from_millis(u64::from(v));
        opts.connect_timeout = ct.map(ms);
        opts.input_timeout = it.map(ms);
        let result = self.engine.connect(self.now, opts.clone(), serial);
        if self.model.shutting_down {
            assert_eq!(result, Err(UsageError::ShutDown));
            return;
        }
        if self.model.live.len() >= self.config.max_connections {
            assert!(matches!(result, Err(UsageError::Full { .. })), "{result:?}");
            return;
        }
        let id = result.expect("connect within bounds");
        self.opened.push(id);
        self.model.live.insert(
            id,
            ModelConn {
                serial,
                phase: Phase::Connecting,
                connect_timeout: enabled(opts.connect_timeout.or(self.config.connect_timeout)),
                input_timeout: enabled(opts.input_timeout.or(self.config.input_timeout)),
                since: self.now,
                queued: Vec::new(),
                written: 0,
                expected_input: VecDeque::new(),
                eof: false,
                closed: false,
            },
        );
        self.socks.insert(
            id,
            Sock {
                behaviour,
                connected: false,
                writing: false,
                peer_eof: false,
                peer_rx: Vec::new(),
                rx: VecDeque::new(),
                last_at: self.now,
            },
        );
        match behaviour {
            Behaviour::Blackhole => {}
            Behaviour::Refuse => {
                let lat = self.latency();
                self.schedule(lat, NetEvent::ConnectResult(id, false));
            }
            _ => {
                let lat = self.latency();
                self.schedule(lat, NetEvent::ConnectResult(id, true));
            }
        }
    }

    fn send(&mut self, id: ConnId, len: u8) {
        let frame = line(self.serial + u64::from(len), len % 130);
        let result = self.engine.send(self.now, id, &frame);
        let Some(c) = self.model.live.get_mut(&id) else {
            assert_eq!(result, Err(UsageError::UnknownConn(id)));
            return;
        };
        if c.phase == Phase::Closing || self.model.shutdown_requested.contains(&id) {
            assert!(
                matches!(result, Err(UsageError::WrongState { .. })),
                "{result:?}"
            );
            return;
        }
        if frame.len() > 120 {
            assert!(
                matches!(result, Err(UsageError::InvalidArgument { .. })),
                "{result:?}"
            );
            return;
        }
        let encoded = frame.len() + 2;
        if c.pending() + encoded > self.config.max_send_queue_len {
            assert!(matches!(result, Err(UsageError::Full { .. })), "{result:?}");
            return;
        }
        result.expect("send within bounds");
        c.queued.extend_from_slice(&frame);
        c.queued.extend_from_slice(b"\r\n");
    }

    fn model_shutdown(&mut self, id: ConnId) {
        let Some(c) = self.model.live.get_mut(&id) else {
            return;
        };
        self.model.shutdown_requested.insert(id);
        if c.phase == Phase::Connected && c.pending() > 0 {
            c.phase = Phase::Closing;
            c.since = self.now;
        }
    }

    fn shutdown(&mut self, id: ConnId) {
        let result = self.engine.shutdown(self.now, id);
        if self.model.live.contains_key(&id) {
            result.expect("shutdown of a live connection");
            self.model_shutdown(id);
        } else {
            assert_eq!(result, Err(UsageError::UnknownConn(id)));
        }
    }

    fn set_timeout(&mut self, id: ConnId, ms: Option<u16>) {
        let timeout = ms.map(|v| Duration::from_millis(u64::from(v)));
        let result = self.engine.set_timeout(self.now, id, timeout);
        let Some(c) = self.model.live.get_mut(&id) else {
            assert_eq!(result, Err(UsageError::UnknownConn(id)));
            return;
        };
        result.expect("set_timeout of a live connection");
        match c.phase {
            Phase::Connecting => c.connect_timeout = enabled(timeout),
            _ => c.input_timeout = enabled(timeout),
        }
        c.since = self.now;
    }

    /// Drains the engine's outputs, acting on driver actions and checking every one.
    fn drain(&mut self) {
        while let Some(out) = self.engine.poll_output() {
            self.trace.push(format!("{:?} {out:?}", self.now));
            self.model.observe(self.now, &out);
            match out {
                Output::Connect { .. } => {}
                Output::WriteReady { conn } => {
                    let s = self.socks.get_mut(&conn).expect("socket for WriteReady");
                    assert!(!s.writing, "WriteReady while a write sequence is under way");
                    s.writing = true;
                    let lat = self.latency();
                    self.schedule(lat, NetEvent::Writable(conn));
                }
                Output::Close { conn } => {
                    assert!(self.socks.remove(&conn).is_some(), "Close twice");
                }
                _ => {}
            }
        }
    }

    /// Lets `by` pass, handling every network event and timer at its exact time.
    ///
    /// # Panics
    /// On a contract violation, or if the engine livelocks.
    pub fn advance(&mut self, by: Duration) {
        let target = self.now + by;
        for _ in 0..MAX_ITERATIONS {
            let next_event = self.events.keys().next().map(|&(at, _)| at);
            let next = match (next_event, self.engine.poll_timeout()) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => a.or(b).unwrap_or(Instant::MAX),
            };
            if next > target {
                self.now = target;
                return;
            }
            self.now = self.now.max(next);
            while let Some((&key, _)) = self.events.first_key_value() {
                if key.0 > self.now {
                    break;
                }
                let ev = self.events.remove(&key).expect("just seen");
                self.deliver(ev);
                self.drain();
            }
            self.engine.handle_timeout(self.now);
            self.drain();
            self.model.check_quiescent(self.now);
        }
        panic!("advance did not finish in {MAX_ITERATIONS} iterations");
    }

    fn deliver(&mut self, ev: NetEvent) {
        let id = ev.conn();
        let now = self.now;
        let Some(sock) = self.socks.get_mut(&id) else {
            return; // closed meanwhile
        };
        match ev {
            NetEvent::ConnectResult(_, true) => {
                sock.connected = true;
                let local = SocketAddr::from(([127, 0, 0, 1], 40_000));
                let remote = self.engine.remote_addr(id).expect("live");
                self.engine
                    .handle_connected(now, id, local, remote)
                    .unwrap();
                if let Behaviour::ResetAfter { after_ms } = sock.behaviour {
                    self.schedule(
                        Duration::from_millis(u64::from(after_ms)),
                        NetEvent::Reset(id),
                    );
                }
            }
            NetEvent::ConnectResult(_, false) => {
                let failure = Failure::new(Operation::Connect, 111, "Connection refused");
                self.engine.handle_connect_failed(now, id, failure).unwrap();
            }
            NetEvent::Data(_, bytes) => {
                sock.rx.extend(bytes);
                self.read(id);
            }
            NetEvent::Eof(_) => {
                self.read(id);
                if self.socks.contains_key(&id) {
                    self.engine.handle_eof(now, id).unwrap();
                    if let Some(c) = self.model.live.get_mut(&id) {
                        c.eof = true;
                    }
                }
            }
            NetEvent::Reset(_) => {
                let failure = Failure::new(Operation::Read, 104, "Connection reset by peer");
                self.engine.handle_io_error(now, id, failure).unwrap();
            }
            NetEvent::Writable(_) => self.write(id),
        }
    }

    /// Feeds received bytes to the engine, never more than its read capacity.
    fn read(&mut self, id: ConnId) {
        for _ in 0..MAX_ITERATIONS {
            let Some(sock) = self.socks.get_mut(&id) else {
                return;
            };
            if sock.rx.is_empty() {
                return;
            }
            let cap = self.engine.read_capacity(id).unwrap();
            assert!(cap > 0, "no read capacity after draining");
            let n = cap.min(sock.rx.len());
            let bytes: Vec<u8> = sock.rx.drain(..n).collect();
            self.engine.handle_received(self.now, id, &bytes).unwrap();
            let c = self.model.live.get_mut(&id).expect("model conn");
            c.since = self.now;
            self.drain();
        }
        panic!("read did not finish");
    }

    /// Writes what the peer will take now, as a slow or fast reader.
    fn write(&mut self, id: ConnId) {
        let now = self.now;
        let Some(sock) = self.socks.get_mut(&id) else {
            return;
        };
        let (chunk, delay) = match sock.behaviour {
            Behaviour::SlowReader { chunk, delay_ms } => {
                (usize::from(chunk.max(1)), u64::from(delay_ms.max(1)))
            }
            _ => (4096, 1),
        };
        let pending = self.engine.pending_write(id).unwrap();
        let n = chunk.min(pending.len());
        let bytes = pending[..n].to_vec();
        let remaining = self.engine.handle_written(now, id, n).unwrap();
        // The model: what arrives is exactly the next bytes queued, in order.
        if let Some(c) = self.model.live.get_mut(&id) {
            assert!(c.written + n <= c.queued.len(), "wrote more than queued");
            assert_eq!(
                &c.queued[c.written..c.written + n],
                &bytes[..],
                "bytes arrived out of order"
            );
            c.written += n;
            assert_eq!(remaining, c.pending());
            if c.phase == Phase::Closing && n > 0 {
                c.since = now;
            }
        }
        let Some(sock) = self.socks.get_mut(&id) else {
            return; // the flush finished and the connection closed
        };
        sock.peer_rx.extend_from_slice(&bytes);
        let echo = matches!(
            sock.behaviour,
            Behaviour::Echo | Behaviour::SlowReader { .. } | Behaviour::ResetAfter { .. }
        ) && !sock.peer_eof;
        let mut lines = Vec::new();
        while let Some(pos) = sock.peer_rx.windows(2).position(|w| w == b"\r\n") {
            let l: Vec<u8> = sock.peer_rx.drain(..pos + 2).take(pos).collect();
            lines.push(l);
        }
        if remaining > 0 {
            self.schedule(Duration::from_millis(delay), NetEvent::Writable(id));
        } else {
            self.socks.get_mut(&id).expect("live").writing = false;
        }
        if echo {
            for l in lines {
                let mut wire = l.clone();
                wire.push(b'\n');
                let lat = self.latency();
                self.schedule(lat, NetEvent::Data(id, wire));
                self.model
                    .live
                    .get_mut(&id)
                    .expect("model conn")
                    .expected_input
                    .push_back(l);
            }
        }
    }

    /// Shuts everything down, lets time pass until the engine drains, and checks that nothing is
    /// left.
    ///
    /// # Panics
    /// If it never drains, or anything is left.
    pub fn finish(&mut self) {
        self.step(&Op::ShutdownAll);
        for _ in 0..1_000 {
            if self.model.drained {
                break;
            }
            self.advance(Duration::from_secs(1));
        }
        assert!(self.model.drained, "shutdown_all never drained");
        assert!(self.engine.is_empty(), "connections left after Drained");
        assert_eq!(self.engine.armed_timers(), 0, "timers left after Drained");
        assert_eq!(self.engine.poll_timeout(), None);
        assert!(self.model.live.is_empty());
        assert!(self.socks.is_empty(), "sockets left open after Drained");
        assert!(self.engine.poll_output().is_none());
        assert_eq!(self.engine.stats().open, 0);
    }
}
