//! A prefork supervisor's bookkeeping: keeps a pool of worker processes at the right size and
//! replaces dead or hung ones (the seed is Perl's `POE::Class::Server::PreFork`, done better).
//!
//! The core knows [`WorkerId`]s only: the driver turns [`Output::Spawn`] into a process and
//! [`Output::Signal`] into a signal, and reports spawns, worker reports and exits back.
//!
//! - **Size.** Once per `maintenance_interval`: fewer idle-or-booting workers than `min_spare` →
//!   spawn, at a rate that starts at 1 and doubles per interval while still short, up to
//!   `spawn_rate_max` per interval (Apache, php-fpm), never past `max_workers` processes; more
//!   idle workers than `max_spare` → stop the ones idle the longest. All spawning happens in
//!   maintenance, so spawns in any interval never exceed the cap. A stopping worker counts as
//!   neither idle nor capacity, but still as a process against `max_workers`.
//! - **Health.** A worker not ready within `boot_timeout`, or (with `ack_timeout`) silent that
//!   long, is reported [`Output::WorkerTimedOut`], stopped, and killed after `stop_grace`;
//!   maintenance replaces it. The deadlines live in a [`Timers`] index with lazy re-arming, so a
//!   heartbeat is O(1) and a hang is detected at its deadline, not at the next scan.
//! - **Crash loops.** `crash_loop_threshold` abnormal exits within `crash_loop_window` pause
//!   spawning for a `respawn_backoff` delay (an [`Output::CrashLoopDetected`] event): never a hot
//!   fork loop.
//! - **Shutdown.** Polite [`Signal::Stop`] to all, [`Signal::Kill`] after `stop_grace`; every
//!   confirmed spawn ends in exactly one [`Output::WorkerExited`], then one
//!   [`Output::AllExited`].

mod config;
mod input;
mod internals;
mod output;
#[cfg(test)]
mod tests;

use alloc::collections::{BTreeSet, VecDeque};

use crate::backoff::Backoff;
use crate::error::{ConfigError, UsageError};
use crate::id::WorkerId;
use crate::rng::Rng;
use crate::slab::Slab;
use crate::time::{Instant, TimeGuard};
use crate::timer::Timers;

pub use config::{PreforkConfig, WORKERS_LIMIT};
pub use input::Input;
pub use output::{
    ExitStatus, Output, Phase, Report, Signal, Stats, StopReason, TimeoutKind, WorkerState,
};

/// What a timer entry is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKey {
    Maintenance,
    Worker(WorkerId),
}

/// The class a worker state counts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Pending,
    Idle,
    Busy,
    Stopping,
}

fn class_of(state: WorkerState) -> Class {
    match state {
        WorkerState::Spawning { stop: None } | WorkerState::Booting => Class::Pending,
        WorkerState::Idle { .. } => Class::Idle,
        WorkerState::Busy { .. } => Class::Busy,
        WorkerState::Spawning { stop: Some(_) }
        | WorkerState::Stopping { .. }
        | WorkerState::Killed => Class::Stopping,
    }
}

#[derive(Debug, Clone)]
struct Worker {
    state: WorkerState,
    spawned_at: Instant,
    last_report: Instant,
    ready_once: bool,
    requests: u32,
    request_limit: Option<u32>,
    /// Where this worker's timer entry sits, if it has one (lazy re-arm: may be earlier than
    /// its true deadline, never later).
    armed: Option<Instant>,
}

/// The prefork supervisor.
#[derive(Debug, Clone)]
pub struct Prefork {
    config: PreforkConfig,
    phase: Phase,
    time: TimeGuard,
    rng: Rng,
    workers: Slab<Worker>,
    /// Idle workers ordered by idle-since, then id: the first is the longest idle.
    idle: BTreeSet<(Instant, WorkerId)>,
    timers: Timers<TimerKey>,
    pending: u32,
    busy: u32,
    stopping: u32,
    /// Initial (or post-reload) spawns still owed.
    start_remaining: u32,
    /// Current spawn rate while short of spares (1, 2, 4 … `spawn_rate_max`).
    spawn_rate: u32,
    /// Abnormal exits inside the window, oldest first (at most `crash_loop_threshold`).
    crashes: VecDeque<Instant>,
    respawn_backoff: Backoff,
    /// The latest abnormal exit: the respawn backoff resets a window after it.
    last_crash: Option<Instant>,
    /// No spawns before this (after a crash loop).
    respawn_after: Option<Instant>,
    /// Where the maintenance timer is armed (while running).
    next_maintenance: Option<Instant>,
    outputs: VecDeque<Output>,
    stats: Stats,
}

impl Prefork {
    /// A supervisor in [`Phase::NotStarted`]; `seed` drives the jitter (request limits, respawn
    /// backoff).
    ///
    /// # Errors
    /// [`ConfigError`] if the configuration is invalid (see [`PreforkConfig::validate`]).
    pub fn new(config: PreforkConfig, seed: u64) -> Result<Prefork, ConfigError> {
        config.validate()?;
        let mut rng = Rng::new(seed);
        let respawn_backoff = Backoff::new(config.respawn_backoff, rng.next_u64())?;
        Ok(Prefork {
            config,
            phase: Phase::NotStarted,
            time: TimeGuard::default(),
            rng,
            workers: Slab::default(),
            idle: BTreeSet::new(),
            timers: Timers::new(),
            pending: 0,
            busy: 0,
            stopping: 0,
            start_remaining: 0,
            spawn_rate: 1,
            crashes: VecDeque::new(),
            respawn_backoff,
            last_crash: None,
            respawn_after: None,
            next_maintenance: None,
            outputs: VecDeque::new(),
            stats: Stats::default(),
        })
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &PreforkConfig {
        &self.config
    }

    /// The phase.
    #[must_use]
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// A worker's state, or `None` if it is unknown or has exited.
    #[must_use]
    pub fn worker_state(&self, worker: WorkerId) -> Option<WorkerState> {
        self.workers.get(worker.to_raw()).map(|w| w.state)
    }

    /// The worker idle the longest (the next to stop when over `max_spare`).
    #[must_use]
    pub fn oldest_idle(&self) -> Option<WorkerId> {
        self.idle.first().map(|&(_, id)| id)
    }

    /// The spawn rate that applies at the next maintenance while short of spares.
    #[must_use]
    pub fn spawn_rate(&self) -> u32 {
        self.spawn_rate
    }

    /// When spawning resumes after a crash loop, if it is paused.
    #[must_use]
    pub fn respawn_after(&self) -> Option<Instant> {
        self.respawn_after
    }

    /// Counters and sizes.
    #[must_use]
    pub fn stats(&self) -> Stats {
        Stats {
            live: self.workers.len() as u32,
            pending: self.pending,
            idle: self.idle.len() as u32,
            busy: self.busy,
            stopping: self.stopping,
            ..self.stats
        }
    }

    /// Starts the supervisor: spawns the first workers now and maintains the pool from then on.
    ///
    /// # Errors
    /// [`UsageError::TimeWentBackwards`]; [`UsageError::WrongState`] unless not started yet.
    pub fn handle_start(&mut self, now: Instant) -> Result<(), UsageError> {
        if self.phase != Phase::NotStarted {
            return Err(self.wrong_phase("start"));
        }
        self.time.check(now)?;
        self.phase = Phase::Running;
        self.start_remaining = self.config.start_workers;
        self.maintain(now);
        Ok(())
    }

    /// The driver started the process for `worker`.
    ///
    /// # Errors
    /// [`UsageError::TimeWentBackwards`]; [`UsageError::UnknownWorker`];
    /// [`UsageError::WrongState`] if its spawn was already answered.
    pub fn handle_spawned(&mut self, now: Instant, worker: WorkerId) -> Result<(), UsageError> {
        let stop = self.spawning(now, worker, "confirm the spawn of")?;
        self.time.check(now)?;
        self.outputs.push_back(Output::WorkerStarted { worker });
        match stop {
            None => self.set_state(worker, WorkerState::Booting),
            Some(Signal::Stop) => self.signal_stop(now, worker),
            Some(Signal::Kill) => self.signal_kill(worker),
        }
        Ok(())
    }

    /// The driver could not start the process for `worker`; it counts as a crash.
    ///
    /// # Errors
    /// [`UsageError::TimeWentBackwards`]; [`UsageError::UnknownWorker`];
    /// [`UsageError::WrongState`] if its spawn was already answered.
    pub fn handle_spawn_failed(
        &mut self,
        now: Instant,
        worker: WorkerId,
    ) -> Result<(), UsageError> {
        let stop = self.spawning(now, worker, "fail the spawn of")?;
        self.time.check(now)?;
        self.remove(worker);
        self.stats.spawn_failures += 1;
        self.outputs.push_back(Output::SpawnFailed { worker });
        if stop.is_none() {
            self.crashed(now);
        }
        self.check_all_exited();
        Ok(())
    }

    /// A worker reported over its pipe. Reports from a stopping worker are accepted and ignored.
    ///
    /// # Errors
    /// [`UsageError::TimeWentBackwards`]; [`UsageError::UnknownWorker`];
    /// [`UsageError::WrongState`] for a report from a worker whose spawn is unconfirmed, or
    /// `Busy`/`Idle`/`RequestDone` before `Ready`.
    pub fn handle_report(
        &mut self,
        now: Instant,
        worker: WorkerId,
        report: Report,
    ) -> Result<(), UsageError> {
        let w = self.get(now, worker)?;
        let state = w.state;
        let next = match (state, report) {
            (WorkerState::Spawning { .. }, _) => {
                return Err(UsageError::WrongState {
                    operation: "take a report from",
                    state: "a worker whose spawn is not confirmed",
                });
            }
            (WorkerState::Booting, Report::Ready) => Some(WorkerState::Idle { since: now }),
            (WorkerState::Booting, Report::Heartbeat) => None,
            (WorkerState::Booting, _) => {
                return Err(UsageError::WrongState {
                    operation: "take busy/idle reports from",
                    state: "a worker that has not reported ready",
                });
            }
            (WorkerState::Stopping { .. } | WorkerState::Killed, _) => None,
            (WorkerState::Idle { .. }, Report::Busy) => Some(WorkerState::Busy { since: now }),
            (WorkerState::Busy { .. }, Report::Idle | Report::RequestDone) => {
                Some(WorkerState::Idle { since: now })
            }
            (WorkerState::Idle { .. } | WorkerState::Busy { .. }, _) => None,
        };
        self.time.check(now)?;
        let w = self.worker_mut(worker);
        w.last_report = now;
        let counted = report == Report::RequestDone
            && matches!(state, WorkerState::Idle { .. } | WorkerState::Busy { .. });
        if counted {
            w.requests = w.requests.saturating_add(1);
        }
        let recycle = counted && w.request_limit.is_some_and(|limit| w.requests >= limit);
        if state == WorkerState::Booting && report == Report::Ready {
            w.ready_once = true;
            self.outputs.push_back(Output::WorkerReady { worker });
        }
        if let Some(next) = next {
            self.set_state(worker, next);
        } else {
            // Only the ack deadline moved (later): the lazy timer re-arms itself when it fires.
            self.rearm(worker);
        }
        if recycle {
            self.stats.recycled += 1;
            self.stop(now, worker, StopReason::MaxRequests);
        }
        Ok(())
    }

    /// A worker process exited.
    ///
    /// # Errors
    /// [`UsageError::TimeWentBackwards`]; [`UsageError::UnknownWorker`] (never spawned, or
    /// already exited); [`UsageError::WrongState`] if its spawn was never confirmed (report
    /// [`Prefork::handle_spawn_failed`] instead).
    pub fn handle_exited(
        &mut self,
        now: Instant,
        worker: WorkerId,
        status: ExitStatus,
    ) -> Result<(), UsageError> {
        let w = self.get(now, worker)?;
        if let WorkerState::Spawning { .. } = w.state {
            return Err(UsageError::WrongState {
                operation: "take the exit of",
                state: "a worker whose spawn is not confirmed",
            });
        }
        let expected = class_of(w.state) == Class::Stopping;
        let abnormal = !expected && (status != ExitStatus::Clean || !w.ready_once);
        self.time.check(now)?;
        self.remove(worker);
        self.stats.exited += 1;
        self.outputs.push_back(Output::WorkerExited {
            worker,
            status,
            expected,
        });
        if abnormal {
            self.crashed(now);
        }
        self.check_all_exited();
        Ok(())
    }

    /// Replaces every worker: stops them all politely and spawns `start_workers` fresh ones
    /// over the next maintenance intervals.
    ///
    /// # Errors
    /// [`UsageError::TimeWentBackwards`]; [`UsageError::WrongState`] unless running.
    pub fn handle_reload(&mut self, now: Instant) -> Result<(), UsageError> {
        if self.phase != Phase::Running {
            return Err(self.wrong_phase("reload"));
        }
        self.time.check(now)?;
        for id in self.ids() {
            self.stop(now, id, StopReason::Reload);
        }
        self.start_remaining = self.config.start_workers;
        self.spawn_rate = 1;
        Ok(())
    }

    /// Shuts down: no more spawns; every worker is stopped politely and killed after
    /// `stop_grace` (`graceful`), or killed now. A non-graceful shutdown during a graceful one
    /// kills what is left. [`Output::AllExited`] follows the last exit, once.
    ///
    /// # Errors
    /// [`UsageError::TimeWentBackwards`].
    pub fn handle_shutdown(&mut self, now: Instant, graceful: bool) -> Result<(), UsageError> {
        self.time.check(now)?;
        match self.phase {
            Phase::Exited => return Ok(()),
            Phase::ShuttingDown if graceful => return Ok(()),
            Phase::NotStarted | Phase::Running | Phase::ShuttingDown => {}
        }
        if let Some(at) = self.next_maintenance.take() {
            self.timers.remove(at, TimerKey::Maintenance);
        }
        self.phase = Phase::ShuttingDown;
        self.start_remaining = 0;
        for id in self.ids() {
            if graceful {
                self.stop(now, id, StopReason::Shutdown);
            } else {
                if class_of(self.worker_mut(id).state) != Class::Stopping {
                    self.outputs.push_back(Output::WorkerStopping {
                        worker: id,
                        reason: StopReason::Shutdown,
                    });
                }
                self.kill(id);
            }
        }
        self.check_all_exited();
        Ok(())
    }

    /// Fires what is due: maintenance, boot and ack timeouts, kills after the grace period.
    /// An earlier `now` than already seen does nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        if !self.time.advance(now) {
            return;
        }
        // Bounded: each entry is popped once; a re-armed entry is later than `now`.
        while let Some((_, key)) = self.timers.pop_due(now) {
            match key {
                TimerKey::Maintenance => {
                    self.next_maintenance = None;
                    self.maintain(now);
                }
                TimerKey::Worker(id) => self.worker_timer(now, id),
            }
        }
    }

    /// The next output, if any; the driver drains this until `None` after every call.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`Prefork::handle_timeout`] should next be called.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_deadline()
    }
}
