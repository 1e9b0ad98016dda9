//! The reference model of the multi engine: what each connection should be doing, derived from
//! the calls the harness made, and the invariants every output must satisfy.

use std::collections::BTreeMap;
use std::time::Duration;

use moor_core::multi::{Output, Phase};
use moor_core::{ConnId, Instant};

/// What the model knows about one connection.
#[derive(Debug, Clone)]
pub struct ModelConn {
    /// The user state given to `connect` (a serial number), expected back in the terminal event.
    pub serial: u64,
    /// The phase the engine should be in.
    pub phase: Phase,
    /// The connect timeout in force (`None`: disabled).
    pub connect_timeout: Option<Duration>,
    /// The input timeout in force (`None`: disabled).
    pub input_timeout: Option<Duration>,
    /// Start of the current phase's timeout.
    pub since: Instant,
    /// Every encoded byte ever queued by `send`, in order.
    pub queued: Vec<u8>,
    /// How many of those the driver reported written.
    pub written: usize,
    /// Frames the peer sent that the engine has not delivered yet, in order.
    pub expected_input: std::collections::VecDeque<Vec<u8>>,
    /// The driver reported end of file.
    pub eof: bool,
    /// The last output for this connection was its `Close`.
    pub closed: bool,
}

impl ModelConn {
    /// The model's deadline for the current phase.
    #[must_use]
    pub fn deadline(&self) -> Option<Instant> {
        let timeout = match self.phase {
            Phase::Connecting => self.connect_timeout,
            _ => self.input_timeout,
        }?;
        let at = self.since + timeout;
        (at != Instant::MAX).then_some(at)
    }

    /// Bytes queued and not yet written.
    #[must_use]
    pub fn pending(&self) -> usize {
        self.queued.len() - self.written
    }
}

/// Normalises a timeout as the engine does: zero means disabled.
#[must_use]
pub fn enabled(t: Option<Duration>) -> Option<Duration> {
    t.filter(|d| !d.is_zero())
}

/// The model: live connections, the ones that ended, and shutdown progress.
#[derive(Debug, Default)]
pub struct Model {
    /// Connections that have not had their terminal event.
    pub live: BTreeMap<ConnId, ModelConn>,
    /// Connections that had their terminal event, with its name.
    pub ended: BTreeMap<ConnId, &'static str>,
    /// `shutdown_all` was called.
    pub shutting_down: bool,
    /// `Drained` was seen.
    pub drained: bool,
    /// Connections whose user asked for `shutdown`.
    pub shutdown_requested: std::collections::BTreeSet<ConnId>,
}

impl Model {
    /// Checks one output against the model at time `now` and updates the model.
    ///
    /// # Panics
    /// On any violation of the engine's contract.
    pub fn observe(&mut self, now: Instant, out: &Output<u64>) {
        let Some(id) = out.conn() else {
            assert!(matches!(out, Output::Drained), "{out:?}");
            assert!(self.shutting_down, "Drained without shutdown_all");
            assert!(!self.drained, "Drained twice");
            assert!(self.live.is_empty(), "Drained with live connections");
            self.drained = true;
            return;
        };
        assert!(
            !self.ended.contains_key(&id),
            "{out:?} after the terminal event {:?}",
            self.ended[&id]
        );
        let c = self
            .live
            .get_mut(&id)
            .unwrap_or_else(|| panic!("{out:?} for a connection never opened"));
        if out.is_terminal() {
            assert!(c.closed, "terminal {out:?} not right after Close");
        } else {
            assert!(!c.closed, "{out:?} after Close");
        }
        match out {
            Output::Connect { .. } => assert_eq!(c.phase, Phase::Connecting),
            Output::WriteReady { .. } => {
                assert_ne!(c.phase, Phase::Connecting, "WriteReady while connecting");
                assert!(c.pending() > 0, "WriteReady with nothing queued");
            }
            Output::Close { .. } => c.closed = true,
            Output::Connected { .. } => {
                assert_eq!(c.phase, Phase::Connecting, "Connected twice");
                c.phase = Phase::Connected;
                c.since = now;
            }
            Output::Input { frame, .. } => {
                let want = c
                    .expected_input
                    .pop_front()
                    .unwrap_or_else(|| panic!("{id:?}: unexpected input {frame:?}"));
                assert_eq!(&want, frame, "{id:?}: input out of order");
            }
            Output::ConnectFailed { state, .. } => {
                assert_eq!(c.phase, Phase::Connecting, "ConnectFailed after connecting");
                assert_eq!(*state, c.serial);
            }
            Output::Error { state, .. } => {
                assert_ne!(c.phase, Phase::Connecting, "Error while connecting");
                assert_eq!(*state, c.serial);
            }
            Output::TimedOut { phase, state, .. } => {
                assert_eq!(*phase, c.phase, "timed out in the wrong phase");
                assert_eq!(*state, c.serial);
                assert_eq!(
                    c.deadline(),
                    Some(now),
                    "{id:?} timed out at {now:?}, not at its deadline"
                );
            }
            Output::Disconnected { state, .. } => {
                assert_eq!(*state, c.serial);
                assert!(
                    self.shutdown_requested.contains(&id),
                    "Disconnected without shutdown"
                );
                if c.phase != Phase::Connecting {
                    assert_eq!(c.pending(), 0, "Disconnected before the queue flushed");
                }
            }
            other => panic!("unknown output {other:?}"),
        }
        if out.is_terminal() {
            let name = match out {
                Output::ConnectFailed { .. } => "ConnectFailed",
                Output::Error { .. } => "Error",
                Output::TimedOut { .. } => "TimedOut",
                _ => "Disconnected",
            };
            self.live.remove(&id);
            self.shutdown_requested.remove(&id);
            self.ended.insert(id, name);
        }
    }

    /// Checks what must hold between steps at time `now`.
    ///
    /// # Panics
    /// On a violation.
    pub fn check_quiescent(&self, now: Instant) {
        for (id, c) in &self.live {
            assert!(!c.closed, "{id:?} closed without a terminal event");
            if let Some(at) = c.deadline() {
                assert!(
                    at > now,
                    "{id:?}: deadline {at:?} passed at {now:?} without firing"
                );
            }
            assert!(c.written <= c.queued.len(), "written more than queued");
        }
    }
}
