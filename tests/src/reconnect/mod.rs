//! Simulation harness for the reconnecting link: a driver that plays the peer (accepts, refuses,
//! drops, answers late), a reference model of the link's state and backoff, and invariant checks
//! after every step. Used by the proptest state-machine tests, the fuzz target and unit tests.

mod ops;

pub use ops::{Op, Profile};

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use moor_core::reconnect::{Applied, Cause, Output, Reason, Reconnect, ReconnectConfig, State};
use moor_core::{AttemptId, Instant, Token, UsageError};

/// The reference model: the state the link must be in, and the backoff index it must be at.
#[derive(Debug, Clone)]
struct Model {
    state: State,
    /// Backoff delays taken since the last reset.
    retries: u32,
    attempts_since_stable: u32,
}

/// The driver, the model and the bookkeeping behind every invariant.
#[derive(Debug)]
pub struct Harness {
    /// The machine under test.
    pub link: Reconnect<u64>,
    config: ReconnectConfig,
    /// Simulated time.
    pub now: Instant,
    model: Model,
    /// The attempt the driver is connecting (Connect given, not answered or closed).
    in_flight: Option<AttemptId>,
    /// The attempt whose connection is up, as the driver sees it.
    up: Option<AttemptId>,
    issued: Vec<AttemptId>,
    /// Subscribers and the last event each got (`true`: Connected).
    subscribers: BTreeMap<Token, Option<bool>>,
    next_message: u64,
    /// Messages queued, in order, as the driver expects them.
    queued: VecDeque<u64>,
    last_delivered: Option<u64>,
    delivered: u64,
    refused: u64,
    refused_stopped: u64,
    undelivered: u64,
    /// Times of backoff-driven attempts in the last minute.
    recent_retries: VecDeque<Instant>,
    /// Most backoff-driven attempts seen in any 60 s window.
    pub max_retries_per_minute: usize,
    /// Transitions seen.
    pub transitions: u64,
    last_state: State,
}

impl Harness {
    /// A harness around a fresh link.
    ///
    /// # Panics
    /// If the profile's configuration is refused (a bug).
    #[must_use]
    pub fn new(profile: Profile, seed: u64) -> Harness {
        let config = profile.config();
        Harness {
            link: Reconnect::new(config.clone(), seed).expect("valid profile"),
            config,
            now: Instant::ZERO,
            model: Model {
                state: State::Idle,
                retries: 0,
                attempts_since_stable: 0,
            },
            in_flight: None,
            up: None,
            issued: Vec::new(),
            subscribers: BTreeMap::new(),
            next_message: 0,
            queued: VecDeque::new(),
            last_delivered: None,
            delivered: 0,
            refused: 0,
            refused_stopped: 0,
            undelivered: 0,
            recent_retries: VecDeque::new(),
            max_retries_per_minute: 0,
            transitions: 0,
            last_state: State::Idle,
        }
    }

    /// The most backoff-driven attempts any 60 s window may hold under this policy.
    #[must_use]
    pub fn retry_bound_per_minute(&self) -> usize {
        let min = self.config.backoff.min_delay().as_secs_f64();
        (60.0 / min).floor() as usize + 1
    }

    fn current(&self) -> Option<AttemptId> {
        match self.link.state() {
            State::Connecting { attempt, .. } | State::Connected { attempt, .. } => Some(attempt),
            _ => None,
        }
    }

    /// Applies one step and checks every invariant.
    ///
    /// # Panics
    /// On an invariant violation.
    pub fn step(&mut self, op: &Op) {
        let now = self.now;
        match *op {
            Op::Start => {
                let r = self.link.handle_start(now);
                let startable = matches!(
                    self.model.state,
                    State::Idle | State::Stopped | State::GaveUp { .. }
                );
                assert_eq!(r.is_ok(), startable, "start: {r:?}");
                if startable {
                    self.model.retries = 0;
                    self.model.attempts_since_stable = 0;
                    self.model_connect(Reason::Started);
                }
            }
            Op::Stop => {
                self.link.handle_stop(now).unwrap();
                self.model.state = State::Stopped;
            }
            Op::Subscribe(n) => {
                let t = Token(u64::from(n % 8));
                let r = self.link.handle_subscribe(now, t);
                let dup = self.subscribers.contains_key(&t);
                let full = self.subscribers.len() >= self.config.max_subscribers;
                match r {
                    Ok(()) => {
                        assert!(!dup && !full);
                        self.subscribers.insert(t, None);
                    }
                    Err(UsageError::DuplicateToken(_)) => assert!(dup),
                    Err(UsageError::Full { .. }) => assert!(full && !dup),
                    Err(e) => panic!("subscribe: {e}"),
                }
            }
            Op::Unsubscribe(n) => {
                let t = Token(u64::from(n % 8));
                let r = self.link.handle_unsubscribe(now, t);
                assert_eq!(r.is_ok(), self.subscribers.remove(&t).is_some());
            }
            Op::Send => {
                let m = self.next_message;
                self.next_message += 1;
                match self.link.handle_send(now, m) {
                    Ok(_) => {
                        if !matches!(self.model.state, State::Connected { .. }) {
                            self.queued.push_back(m);
                        }
                    }
                    Err(e) => {
                        assert_eq!(e.message, m, "a refused message comes back");
                        match e.error {
                            UsageError::Full { limit, .. } => {
                                assert_eq!(self.queued.len(), limit);
                                self.refused += 1;
                            }
                            UsageError::WrongState { .. } => {
                                assert!(matches!(
                                    self.model.state,
                                    State::Stopped | State::GaveUp { .. }
                                ));
                                self.refused_stopped += 1;
                            }
                            other => panic!("send: {other}"),
                        }
                    }
                }
            }
            Op::Advance(n) => self.advance(now + Duration::from_millis(u64::from(n) * 100)),
            Op::Accept => self.accept(),
            Op::Refuse => {
                if let Some(a) = self.in_flight {
                    let r = self.link.handle_connect_failed(now, a, Cause::Refused);
                    assert_eq!(r, Ok(Applied::Yes));
                    self.in_flight = None;
                    self.model_fail(Reason::ConnectFailed(Cause::Refused));
                }
            }
            Op::Drop => self.drop_connection(),
            Op::Flap => {
                self.accept();
                self.drop_connection();
            }
            Op::Stale(k) => {
                let current = self.current();
                let old: Vec<AttemptId> = self
                    .issued
                    .iter()
                    .copied()
                    .filter(|a| Some(*a) != current)
                    .collect();
                if !old.is_empty() {
                    let a = old[usize::from(k) % old.len()];
                    let before = self.link.state();
                    let r = match k % 3 {
                        0 => self.link.handle_connected(now, a),
                        1 => self.link.handle_connect_failed(now, a, Cause::Reset),
                        _ => self.link.handle_disconnected(now, a, Cause::Closed),
                    };
                    assert_eq!(r, Ok(Applied::Stale));
                    assert_eq!(self.link.state(), before, "a stale report changes nothing");
                }
            }
            Op::Bogus => {
                let never = AttemptId::from_raw(self.issued.last().map_or(1, |a| a.to_raw() + 1));
                let before = self.link.state();
                assert!(matches!(
                    self.link.handle_connected(now, never),
                    Err(UsageError::InvalidArgument { .. })
                ));
                assert_eq!(self.link.state(), before);
            }
            Op::Backwards => {
                if now > Instant::ZERO {
                    let before = self.link.state();
                    let e = self
                        .link
                        .handle_send(now - Duration::from_nanos(1), u64::MAX);
                    assert!(matches!(
                        e,
                        Err(ref e) if matches!(e.error, UsageError::TimeWentBackwards { .. })
                    ));
                    assert!(
                        self.link
                            .handle_stop(now - Duration::from_nanos(1))
                            .is_err()
                    );
                    assert_eq!(self.link.state(), before);
                }
            }
        }
        self.drain();
        self.check();
    }

    fn accept(&mut self) {
        if let Some(a) = self.in_flight.take() {
            assert_eq!(self.link.handle_connected(self.now, a), Ok(Applied::Yes));
            self.model.state = State::Connected {
                attempt: a,
                since: self.now,
            };
            self.drain();
            self.check();
        }
    }

    fn drop_connection(&mut self) {
        let now = self.now;
        if let Some(a) = self.up {
            assert_eq!(
                self.link.handle_disconnected(now, a, Cause::Reset),
                Ok(Applied::Yes)
            );
            self.up = None;
            let State::Connected { since, .. } = self.model.state else {
                panic!("model not connected while the driver is up");
            };
            if now - since >= self.config.stable_period {
                self.model.retries = 0;
                self.model.attempts_since_stable = 0;
            }
            self.model_fail(Reason::ConnectionLost(Cause::Reset));
        } else if let Some(a) = self.in_flight.take() {
            assert_eq!(
                self.link.handle_disconnected(now, a, Cause::Reset),
                Ok(Applied::Yes)
            );
            self.model_fail(Reason::ConnectFailed(Cause::Reset));
        }
    }

    /// Steps time to `target`, stopping at every deadline on the way (bounded).
    fn advance(&mut self, target: Instant) {
        for _ in 0..100_000 {
            match self.link.poll_timeout() {
                Some(at) if at <= target => {
                    assert!(at >= self.now, "a deadline in the past");
                    self.now = at;
                    self.fire();
                }
                _ => {
                    self.now = target;
                    self.fire();
                    return;
                }
            }
        }
        panic!("timers kept firing: hot loop");
    }

    fn fire(&mut self) {
        let now = self.now;
        match self.model.state {
            State::Connecting { deadline, .. } if deadline <= now => {
                self.model_fail(Reason::ConnectTimedOut);
            }
            State::Backoff { until } if until <= now => self.model_connect(Reason::BackoffElapsed),
            _ => {}
        }
        self.link.handle_timeout(now);
        self.drain();
        self.check();
    }

    fn model_connect(&mut self, _reason: Reason) {
        self.model.attempts_since_stable += 1;
        // The attempt id and deadline are the machine's to choose; the model checks them when
        // the transition arrives.
        self.model.state = State::Connecting {
            attempt: AttemptId::from_raw(0),
            number: self.model.attempts_since_stable,
            deadline: Instant::MAX,
        };
    }

    fn model_fail(&mut self, _reason: Reason) {
        let exhausted = self
            .config
            .max_attempts
            .is_some_and(|m| self.model.attempts_since_stable >= m);
        self.model.state = if exhausted {
            State::GaveUp {
                attempts: self.model.attempts_since_stable,
            }
        } else {
            State::Backoff {
                until: Instant::MAX,
            }
        };
    }

    /// Drains the outputs, checking each against the driver's view and the model.
    fn drain(&mut self) {
        while let Some(out) = self.link.poll_output() {
            match out {
                Output::Connect { attempt } => {
                    assert!(
                        self.in_flight.is_none() && self.up.is_none(),
                        "a second attempt while one is in flight"
                    );
                    assert!(self.issued.last().is_none_or(|l| *l < attempt), "ids grow");
                    self.issued.push(attempt);
                    self.in_flight = Some(attempt);
                }
                Output::Close { attempt } => {
                    assert!(self.in_flight == Some(attempt) || self.up == Some(attempt));
                    self.in_flight = None;
                    self.up = None;
                }
                Output::Send { attempt, message } => {
                    assert!(
                        self.up == Some(attempt),
                        "send on a connection that is not up"
                    );
                    assert!(
                        self.last_delivered.is_none_or(|l| l < message),
                        "messages out of order"
                    );
                    if self.queued.front() == Some(&message) {
                        self.queued.pop_front();
                    } else {
                        assert!(self.queued.is_empty(), "queued messages skipped");
                    }
                    self.last_delivered = Some(message);
                    self.delivered += 1;
                }
                Output::StateChanged { from, to, reason } => self.on_transition(from, to, reason),
                Output::Connected {
                    subscriber,
                    attempt,
                } => {
                    assert_eq!(self.up, Some(attempt));
                    let last = self
                        .subscribers
                        .get_mut(&subscriber)
                        .expect("event for a subscriber that is not subscribed");
                    assert_ne!(*last, Some(true), "Connected twice in a row");
                    *last = Some(true);
                }
                Output::Disconnected { subscriber } => {
                    let last = self
                        .subscribers
                        .get_mut(&subscriber)
                        .expect("event for a subscriber that is not subscribed");
                    assert_eq!(*last, Some(true), "Disconnected without Connected");
                    *last = Some(false);
                }
                Output::Undelivered { message } => {
                    assert_eq!(
                        self.queued.pop_front(),
                        Some(message),
                        "undelivered in order"
                    );
                    self.undelivered += 1;
                }
                other => panic!("unexpected output {other:?}"),
            }
        }
    }

    fn on_transition(&mut self, from: State, to: State, reason: Reason) {
        self.transitions += 1;
        assert_eq!(from, self.last_state, "transitions must chain");
        assert_ne!(from, to);
        self.last_state = to;
        let now = self.now;
        match to {
            State::Connecting {
                attempt,
                number,
                deadline,
            } => {
                let State::Connecting { number: n, .. } = self.model.state else {
                    panic!("model expected {:?}, got Connecting", self.model.state);
                };
                assert_eq!(number, n);
                let base = self.config.backoff.base_delay(self.model.retries);
                let timeout = match self.config.backoff {
                    moor_core::backoff::BackoffPolicy::Exponential { .. } => {
                        self.config.connect_timeout.max(base)
                    }
                    moor_core::backoff::BackoffPolicy::Fixed { .. } => self.config.connect_timeout,
                };
                assert_eq!(deadline - now, timeout);
                self.model.state = State::Connecting {
                    attempt,
                    number,
                    deadline,
                };
                if reason == Reason::BackoffElapsed {
                    self.recent_retries.push_back(now);
                    while self
                        .recent_retries
                        .front()
                        .is_some_and(|&t| now - t >= Duration::from_secs(60))
                    {
                        self.recent_retries.pop_front();
                    }
                    self.max_retries_per_minute =
                        self.max_retries_per_minute.max(self.recent_retries.len());
                    assert!(
                        self.recent_retries.len() <= self.retry_bound_per_minute(),
                        "hot loop: {} attempts in a minute",
                        self.recent_retries.len()
                    );
                }
            }
            State::Connected { attempt, since } => {
                assert_eq!(since, now);
                assert_eq!(self.model.state, State::Connected { attempt, since });
                self.up = Some(attempt);
            }
            State::Backoff { until } => {
                assert!(
                    matches!(self.model.state, State::Backoff { .. }),
                    "model: {:?}",
                    self.model.state
                );
                let (lo, hi) = self.config.backoff.delay_bounds(self.model.retries);
                let d = until - now;
                assert!(
                    d >= lo && d <= hi + Duration::from_nanos(1),
                    "backoff {d:?} outside {lo:?}..={hi:?} (retry {})",
                    self.model.retries
                );
                self.model.retries += 1;
                self.model.state = to;
            }
            State::GaveUp { .. } | State::Stopped | State::Idle => {
                assert_eq!(self.model.state, to);
            }
        }
        if !matches!(to, State::Connecting { .. }) {
            self.in_flight = None;
        }
        if !matches!(to, State::Connected { .. }) {
            self.up = None;
        }
    }

    /// Invariants that hold between steps.
    fn check(&self) {
        let state = self.link.state();
        assert_eq!(state, self.last_state, "state() matches the last event");
        assert_eq!(
            core::mem::discriminant(&state),
            core::mem::discriminant(&self.model.state),
            "model {:?} vs machine {state:?}",
            self.model.state
        );
        assert_eq!(self.link.outbox_len(), self.queued.len());
        assert!(self.queued.len() <= self.config.outbox_capacity);
        assert!(self.queued.is_empty() || !matches!(state, State::Connected { .. }));
        // Nothing lost: every message is delivered, queued, refused or handed back.
        assert_eq!(
            self.next_message,
            self.delivered
                + self.queued.len() as u64
                + self.refused
                + self.refused_stopped
                + self.undelivered,
        );
        assert_eq!(self.link.stats().messages_sent, self.delivered);
        let connected = matches!(state, State::Connected { .. });
        for (t, last) in &self.subscribers {
            assert_eq!(
                *last == Some(true),
                connected,
                "subscriber {t:?} out of step"
            );
        }
        if let Some(at) = self.link.poll_timeout() {
            assert!(at >= self.now, "timeout in the past");
        }
    }
}

/// Runs a whole scenario.
pub fn run(profile: Profile, seed: u64, ops: &[Op]) -> Harness {
    let mut h = Harness::new(profile, seed);
    for op in ops {
        h.step(op);
    }
    h
}

/// Fuzz entry point: bytes choose a profile, a seed and up to 256 steps.
pub fn fuzz(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(profile) = Profile::arbitrary(&mut u) else {
        return;
    };
    let seed = u64::arbitrary(&mut u).unwrap_or(0);
    let ops: Vec<Op> = std::iter::from_fn(|| Op::arbitrary(&mut u).ok())
        .take(256)
        .collect();
    run(profile, seed, &ops);
}
