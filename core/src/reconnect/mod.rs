//! A reconnecting link: one long-lived logical connection that reconnects by itself and tells its
//! subscribers (the seed is Perl's `Message::Passing::Role::ConnectionManager`, done better).
//!
//! The link is in exactly one [`State`]: `Idle → Connecting → Connected → Backoff → Connecting →
//! …`, plus `Stopped` and `GaveUp`. Every change is an [`Output::StateChanged`] event with its
//! [`Reason`]. The driver performs [`Output::Connect`], [`Output::Close`] and [`Output::Send`]
//! and reports back with the [`AttemptId`] it was given; a report for an attempt the link has
//! abandoned (timed out, stopped) changes nothing and answers [`Applied::Stale`].
//!
//! Better than the seed:
//! - gRPC's exponential backoff with seeded jitter by default (the seed's fixed 2 s is
//!   [`ReconnectConfig::seed`]); the backoff resets only after a connection stayed up for
//!   `stable_period`, and every new attempt after the first waits at least one backoff delay, so a
//!   peer that accepts and drops at once cannot cause a hot loop;
//! - an optional attempt limit ([`State::GaveUp`]);
//! - a bounded outbox: messages sent while disconnected are queued and flushed in order on
//!   reconnect; a full outbox refuses the message and gives it back; on stop or give-up queued
//!   messages come back as [`Output::Undelivered`]. Nothing is dropped silently.
//!
//! Subscribers are named by the caller's [`Token`]. Subscribing while connected yields
//! [`Output::Connected`] for that subscriber at once; [`Output::Disconnected`] goes only to
//! subscribers that were told `Connected`, so each subscriber sees the two alternate.
//!
//! Messages handed out as [`Output::Send`] belong to the driver: if the connection breaks before
//! it writes them, that is the driver's to report; the link does not keep a copy.

mod config;
mod input;
mod output;
#[cfg(test)]
mod tests;

use alloc::collections::{BTreeMap, VecDeque};

use crate::backoff::{Backoff, BackoffPolicy};
use crate::error::{ConfigError, UsageError};
use crate::id::{AttemptId, Counter, Token};
use crate::time::{Instant, TimeGuard};

pub use config::ReconnectConfig;
pub use input::Input;
pub use output::{Applied, Cause, Output, Reason, SendError, Sent, State, Stats};

/// The reconnecting link. `M` is the application's message type.
#[derive(Debug, Clone)]
pub struct Reconnect<M> {
    config: ReconnectConfig,
    state: State,
    backoff: Backoff,
    time: TimeGuard,
    attempt_ids: Counter,
    /// The highest attempt id minted (0: none), to tell stale ids from never-issued ones.
    last_attempt: u64,
    /// Attempts since the last stable connection (or start).
    attempts_since_stable: u32,
    /// Subscriber → whether it was told `Connected` (and is owed a `Disconnected`).
    subscribers: BTreeMap<Token, bool>,
    outbox: VecDeque<M>,
    outputs: VecDeque<Output<M>>,
    stats: Stats,
}

impl<M> Reconnect<M> {
    /// A link in [`State::Idle`]; its backoff jitter is determined by `seed`.
    ///
    /// # Errors
    /// [`ConfigError`] if the configuration is invalid (see [`ReconnectConfig::validate`]).
    pub fn new(config: ReconnectConfig, seed: u64) -> Result<Self, ConfigError> {
        config.validate()?;
        let backoff = Backoff::new(config.backoff, seed)?;
        Ok(Reconnect {
            config,
            state: State::Idle,
            backoff,
            time: TimeGuard::default(),
            attempt_ids: Counter::default(),
            last_attempt: 0,
            attempts_since_stable: 0,
            subscribers: BTreeMap::new(),
            outbox: VecDeque::new(),
            outputs: VecDeque::new(),
            stats: Stats::default(),
        })
    }

    /// The current state.
    #[must_use]
    pub fn state(&self) -> State {
        self.state
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &ReconnectConfig {
        &self.config
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Messages waiting in the outbox.
    #[must_use]
    pub fn outbox_len(&self) -> usize {
        self.outbox.len()
    }

    /// Number of subscribers.
    #[must_use]
    pub fn subscriber_count(&self) -> usize {
        self.subscribers.len()
    }

    /// Attempts made since the last stable connection (or the last start).
    #[must_use]
    pub fn attempts_since_stable(&self) -> u32 {
        self.attempts_since_stable
    }

    /// Whether the link is connected.
    #[must_use]
    pub fn is_connected(&self) -> bool {
        matches!(self.state, State::Connected { .. })
    }

    /// Starts connecting, from [`State::Idle`], [`State::Stopped`] or [`State::GaveUp`]. A
    /// restart begins a fresh backoff sequence and attempt count.
    ///
    /// # Errors
    /// [`UsageError::TimeWentBackwards`]; [`UsageError::WrongState`] if the link is already
    /// running.
    pub fn handle_start(&mut self, now: Instant) -> Result<(), UsageError> {
        if !matches!(
            self.state,
            State::Idle | State::Stopped | State::GaveUp { .. }
        ) {
            return Err(UsageError::WrongState {
                operation: "start the link",
                state: self.state.name(),
            });
        }
        self.time.check(now)?;
        self.attempts_since_stable = 0;
        self.backoff.reset();
        self.start_attempt(now, Reason::Started);
        Ok(())
    }

    /// Stops the link: abandons the attempt or closes the connection, tells subscribers, and
    /// hands back queued messages as [`Output::Undelivered`]. Stopping a stopped link does
    /// nothing.
    ///
    /// # Errors
    /// [`UsageError::TimeWentBackwards`].
    pub fn handle_stop(&mut self, now: Instant) -> Result<(), UsageError> {
        self.time.check(now)?;
        if self.state != State::Stopped {
            self.transition(State::Stopped, Reason::StopRequested);
        }
        Ok(())
    }

    /// The driver reports that `attempt` connected.
    ///
    /// # Errors
    /// [`UsageError::TimeWentBackwards`]; [`UsageError::InvalidArgument`] for an attempt id never
    /// issued; [`UsageError::WrongState`] if that attempt is already connected.
    pub fn handle_connected(
        &mut self,
        now: Instant,
        attempt: AttemptId,
    ) -> Result<Applied, UsageError> {
        self.check_attempt(now, attempt)?;
        match self.state {
            State::Connecting { attempt: a, .. } if a == attempt => {
                self.time.check(now)?;
                self.stats.connects += 1;
                self.transition(
                    State::Connected {
                        attempt,
                        since: now,
                    },
                    Reason::ConnectSucceeded,
                );
                Ok(Applied::Yes)
            }
            State::Connected { attempt: a, .. } if a == attempt => Err(UsageError::WrongState {
                operation: "report the attempt connected",
                state: "already connected",
            }),
            _ => self.stale(now),
        }
    }

    /// The driver reports that `attempt` failed to connect.
    ///
    /// # Errors
    /// [`UsageError::TimeWentBackwards`]; [`UsageError::InvalidArgument`] for an attempt id never
    /// issued; [`UsageError::WrongState`] if that attempt had connected (report
    /// [`Reconnect::handle_disconnected`] instead).
    pub fn handle_connect_failed(
        &mut self,
        now: Instant,
        attempt: AttemptId,
        cause: Cause,
    ) -> Result<Applied, UsageError> {
        self.check_attempt(now, attempt)?;
        match self.state {
            State::Connecting { attempt: a, .. } if a == attempt => self.connect_failed(now, cause),
            State::Connected { attempt: a, .. } if a == attempt => Err(UsageError::WrongState {
                operation: "report a connect failure",
                state: "connected",
            }),
            _ => self.stale(now),
        }
    }

    /// The driver reports that the connection of `attempt` ended (or, while still connecting,
    /// that the attempt failed).
    ///
    /// # Errors
    /// [`UsageError::TimeWentBackwards`]; [`UsageError::InvalidArgument`] for an attempt id never
    /// issued.
    pub fn handle_disconnected(
        &mut self,
        now: Instant,
        attempt: AttemptId,
        cause: Cause,
    ) -> Result<Applied, UsageError> {
        self.check_attempt(now, attempt)?;
        match self.state {
            State::Connecting { attempt: a, .. } if a == attempt => self.connect_failed(now, cause),
            State::Connected { attempt: a, since } if a == attempt => {
                self.time.check(now)?;
                self.stats.disconnects += 1;
                if now.saturating_duration_since(since) >= self.config.stable_period {
                    // It stayed up long enough: the peer is healthy again.
                    self.attempts_since_stable = 0;
                    self.backoff.reset();
                }
                self.after_failure(now, Reason::ConnectionLost(cause));
                Ok(Applied::Yes)
            }
            _ => self.stale(now),
        }
    }

    /// The attempt in flight failed before it connected.
    fn connect_failed(&mut self, now: Instant, cause: Cause) -> Result<Applied, UsageError> {
        self.time.check(now)?;
        self.stats.connect_failures += 1;
        self.after_failure(now, Reason::ConnectFailed(cause));
        Ok(Applied::Yes)
    }

    /// Adds a subscriber. If the link is connected, it is told [`Output::Connected`] at once.
    ///
    /// # Errors
    /// [`UsageError::TimeWentBackwards`]; [`UsageError::DuplicateToken`];
    /// [`UsageError::Full`] past `max_subscribers`.
    pub fn handle_subscribe(&mut self, now: Instant, subscriber: Token) -> Result<(), UsageError> {
        if self.subscribers.contains_key(&subscriber) {
            return Err(UsageError::DuplicateToken(subscriber));
        }
        if self.subscribers.len() >= self.config.max_subscribers {
            return Err(UsageError::Full {
                what: "subscribers",
                limit: self.config.max_subscribers,
            });
        }
        self.time.check(now)?;
        let told = if let State::Connected { attempt, .. } = self.state {
            self.outputs.push_back(Output::Connected {
                subscriber,
                attempt,
            });
            true
        } else {
            false
        };
        self.subscribers.insert(subscriber, told);
        Ok(())
    }

    /// Removes a subscriber; it gets no further events (not even `Disconnected`).
    ///
    /// # Errors
    /// [`UsageError::TimeWentBackwards`]; [`UsageError::UnknownToken`].
    pub fn handle_unsubscribe(
        &mut self,
        now: Instant,
        subscriber: Token,
    ) -> Result<(), UsageError> {
        if !self.subscribers.contains_key(&subscriber) {
            return Err(UsageError::UnknownToken(subscriber));
        }
        self.time.check(now)?;
        self.subscribers.remove(&subscriber);
        Ok(())
    }

    /// Sends a message: at once if connected, else queued in the outbox (sent in order on
    /// reconnect).
    ///
    /// # Errors
    /// A [`SendError`] that gives the message back, with [`UsageError::TimeWentBackwards`],
    /// [`UsageError::WrongState`] if the link is stopped or gave up, or [`UsageError::Full`] if
    /// the outbox is full.
    pub fn handle_send(&mut self, now: Instant, message: M) -> Result<Sent, SendError<M>> {
        if let Err(error) = self.time.peek(now) {
            return Err(SendError { error, message });
        }
        let refused = match self.state {
            State::Stopped | State::GaveUp { .. } => Some(UsageError::WrongState {
                operation: "send",
                state: self.state.name(),
            }),
            State::Connected { .. } => None,
            _ if self.outbox.len() >= self.config.outbox_capacity => {
                self.stats.messages_refused += 1;
                Some(UsageError::Full {
                    what: "outbox",
                    limit: self.config.outbox_capacity,
                })
            }
            _ => None,
        };
        if let Some(error) = refused {
            return Err(SendError { error, message });
        }
        self.time.advance(now);
        if let State::Connected { attempt, .. } = self.state {
            self.stats.messages_sent += 1;
            self.outputs.push_back(Output::Send { attempt, message });
            Ok(Sent::Now)
        } else {
            self.stats.messages_queued += 1;
            self.outbox.push_back(message);
            Ok(Sent::Queued)
        }
    }

    /// Fires what is due: abandons an attempt past its connect timeout, starts the next attempt
    /// when the backoff elapsed. An earlier `now` than already seen does nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        if !self.time.advance(now) {
            return;
        }
        match self.state {
            State::Connecting { deadline, .. } if deadline <= now => {
                self.stats.connect_timeouts += 1;
                self.after_failure(now, Reason::ConnectTimedOut);
            }
            State::Backoff { until } if until <= now => {
                self.start_attempt(now, Reason::BackoffElapsed);
            }
            _ => {}
        }
    }

    /// The next output, if any; the driver drains this until `None` after every call.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output<M>> {
        self.outputs.pop_front()
    }

    /// When [`Reconnect::handle_timeout`] should next be called.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Connecting { deadline, .. } => Some(deadline),
            State::Backoff { until } => Some(until),
            _ => None,
        }
    }

    /// Refuses attempt ids the link never issued; checks time without consuming it.
    fn check_attempt(&self, now: Instant, attempt: AttemptId) -> Result<(), UsageError> {
        if attempt.to_raw() == 0 || attempt.to_raw() > self.last_attempt {
            return Err(UsageError::InvalidArgument {
                reason: "this attempt id was never issued by this link",
            });
        }
        self.time.peek(now)
    }

    /// A report for an abandoned attempt: nothing changes but the clock and a counter.
    fn stale(&mut self, now: Instant) -> Result<Applied, UsageError> {
        self.time.check(now)?;
        self.stats.stale_reports += 1;
        Ok(Applied::Stale)
    }

    /// Mints the next attempt and enters `Connecting`.
    fn start_attempt(&mut self, now: Instant, reason: Reason) {
        let raw = self.attempt_ids.next();
        self.last_attempt = raw;
        let attempt = AttemptId::from_raw(raw);
        self.attempts_since_stable = self.attempts_since_stable.saturating_add(1);
        self.stats.attempts += 1;
        let timeout = match self.config.backoff {
            // gRPC: an attempt may take as long as the wait that would follow it.
            BackoffPolicy::Exponential { .. } => {
                self.config.connect_timeout.max(self.backoff.peek_base())
            }
            BackoffPolicy::Fixed { .. } => self.config.connect_timeout,
        };
        self.transition(
            State::Connecting {
                attempt,
                number: self.attempts_since_stable,
                deadline: now + timeout,
            },
            reason,
        );
    }

    /// After a failed attempt or a lost connection: back off, or give up at the attempt limit.
    fn after_failure(&mut self, now: Instant, reason: Reason) {
        let exhausted = self
            .config
            .max_attempts
            .is_some_and(|max| self.attempts_since_stable >= max);
        if exhausted {
            self.transition(
                State::GaveUp {
                    attempts: self.attempts_since_stable,
                },
                reason,
            );
        } else {
            let until = now + self.backoff.next_delay();
            self.transition(State::Backoff { until }, reason);
        }
    }

    /// The one place the state changes: leaves the old state, enters the new one, and reports
    /// the change.
    fn transition(&mut self, to: State, reason: Reason) {
        let from = self.state;
        debug_assert_ne!(from, to, "a transition must change the state");
        // Leaving: abandon what the link gave up on; tell subscribers the connection is gone.
        match from {
            State::Connecting { attempt, .. } | State::Connected { attempt, .. }
                if matches!(reason, Reason::ConnectTimedOut | Reason::StopRequested) =>
            {
                self.outputs.push_back(Output::Close { attempt });
            }
            _ => {}
        }
        if matches!(from, State::Connected { .. }) {
            for (&subscriber, told) in &mut self.subscribers {
                if core::mem::replace(told, false) {
                    self.outputs.push_back(Output::Disconnected { subscriber });
                }
            }
        }
        self.state = to;
        self.outputs
            .push_back(Output::StateChanged { from, to, reason });
        // Entering.
        match to {
            State::Connecting { attempt, .. } => {
                self.outputs.push_back(Output::Connect { attempt });
            }
            State::Connected { attempt, .. } => {
                for (&subscriber, told) in &mut self.subscribers {
                    *told = true;
                    self.outputs.push_back(Output::Connected {
                        subscriber,
                        attempt,
                    });
                }
                // Flush in the order the messages were sent.
                while let Some(message) = self.outbox.pop_front() {
                    self.stats.messages_sent += 1;
                    self.outputs.push_back(Output::Send { attempt, message });
                }
            }
            State::Stopped | State::GaveUp { .. } => {
                while let Some(message) = self.outbox.pop_front() {
                    self.stats.messages_undelivered += 1;
                    self.outputs.push_back(Output::Undelivered { message });
                }
            }
            State::Idle | State::Backoff { .. } => {}
        }
    }
}
