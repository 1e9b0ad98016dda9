//! The supervisor's private machinery: worker transitions (the one place a worker's state
//! changes), timers, maintenance, crash accounting.

use alloc::vec::Vec;

use super::{
    Class, Output, Phase, Prefork, Signal, StopReason, TimeoutKind, TimerKey, Worker, WorkerState,
    class_of,
};
use crate::error::UsageError;
use crate::id::WorkerId;
use crate::time::Instant;

impl Prefork {
    pub(super) fn wrong_phase(&self, operation: &'static str) -> UsageError {
        match self.phase {
            Phase::ShuttingDown | Phase::Exited => UsageError::ShutDown,
            Phase::NotStarted => UsageError::WrongState {
                operation,
                state: "not started",
            },
            Phase::Running => UsageError::WrongState {
                operation,
                state: "running",
            },
        }
    }

    /// The live worker `worker`, after checking `now`.
    pub(super) fn get(&self, now: Instant, worker: WorkerId) -> Result<&Worker, UsageError> {
        self.time.peek(now)?;
        self.workers
            .get(worker.to_raw())
            .ok_or(UsageError::UnknownWorker(worker))
    }

    /// The signal owed to a worker whose spawn is unanswered; an error if it is not spawning.
    pub(super) fn spawning(
        &self,
        now: Instant,
        worker: WorkerId,
        operation: &'static str,
    ) -> Result<Option<Signal>, UsageError> {
        match self.get(now, worker)?.state {
            WorkerState::Spawning { stop } => Ok(stop),
            _ => Err(UsageError::WrongState {
                operation,
                state: "a worker whose spawn was already answered",
            }),
        }
    }

    pub(super) fn worker_mut(&mut self, id: WorkerId) -> &mut Worker {
        self.workers
            .get_mut(id.to_raw())
            .expect("internal: worker id must be live")
    }

    /// Every live worker id, in slot order (deterministic).
    pub(super) fn ids(&self) -> Vec<WorkerId> {
        self.workers
            .iter()
            .map(|(key, _)| WorkerId::from_raw(key))
            .collect()
    }

    fn count(&mut self, class: Class, up: bool) {
        let counter = match class {
            Class::Pending => &mut self.pending,
            Class::Busy => &mut self.busy,
            Class::Stopping => &mut self.stopping,
            Class::Idle => return, // the idle set is its own count
        };
        if up {
            *counter += 1;
        } else {
            *counter = counter
                .checked_sub(1)
                .expect("internal: worker count underflow");
        }
    }

    /// The one place a live worker's state changes: counts, idle index and timer follow.
    pub(super) fn set_state(&mut self, id: WorkerId, new: WorkerState) {
        let w = self.worker_mut(id);
        let old = core::mem::replace(&mut w.state, new);
        self.count(class_of(old), false);
        self.count(class_of(new), true);
        if let WorkerState::Idle { since } = old {
            assert!(
                self.idle.remove(&(since, id)),
                "internal: idle index lost a worker"
            );
        }
        if let WorkerState::Idle { since } = new {
            self.idle.insert((since, id));
        }
        self.rearm(id);
    }

    /// The worker's true deadline in its current state.
    fn deadline(&self, w: &Worker) -> Option<Instant> {
        match w.state {
            WorkerState::Spawning { stop: None } | WorkerState::Booting => {
                Some(w.spawned_at + self.config.boot_timeout)
            }
            WorkerState::Idle { .. } | WorkerState::Busy { .. } => {
                self.config.ack_timeout.map(|t| w.last_report + t)
            }
            WorkerState::Stopping { kill_at } => Some(kill_at),
            WorkerState::Spawning { stop: Some(_) } | WorkerState::Killed => None,
        }
    }

    /// Lazy re-arm: an entry earlier than the true deadline is left to fire and re-arm itself;
    /// only a deadline that moved earlier touches the index now.
    pub(super) fn rearm(&mut self, id: WorkerId) {
        let w = self
            .workers
            .get(id.to_raw())
            .expect("internal: worker id must be live");
        let Some(due) = self.deadline(w) else {
            return;
        };
        let w = self
            .workers
            .get_mut(id.to_raw())
            .expect("internal: worker id must be live");
        self.timers
            .rearm_lazily(&mut w.armed, due, TimerKey::Worker(id));
    }

    /// Forgets an exited (or never spawned) worker.
    pub(super) fn remove(&mut self, id: WorkerId) {
        let mut w = self
            .workers
            .remove(id.to_raw())
            .expect("internal: worker id must be live");
        self.count(class_of(w.state), false);
        if let WorkerState::Idle { since } = w.state {
            assert!(
                self.idle.remove(&(since, id)),
                "internal: idle index lost a worker"
            );
        }
        self.timers.disarm(&mut w.armed, TimerKey::Worker(id));
    }

    /// A worker's timer entry fired.
    pub(super) fn worker_timer(&mut self, now: Instant, id: WorkerId) {
        let Some(w) = self.workers.get_mut(id.to_raw()) else {
            return;
        };
        w.armed = None;
        let w = self.workers.get(id.to_raw()).expect("just found");
        let Some(due) = self.deadline(w) else {
            return;
        };
        if due > now {
            self.rearm(id);
            return;
        }
        match w.state {
            WorkerState::Spawning { .. } | WorkerState::Booting => {
                self.timed_out(now, id, TimeoutKind::Boot);
            }
            WorkerState::Idle { .. } | WorkerState::Busy { .. } => {
                self.timed_out(now, id, TimeoutKind::Ack);
            }
            WorkerState::Stopping { .. } => self.signal_kill(id),
            WorkerState::Killed => unreachable!("a killed worker has no deadline"),
        }
    }

    fn timed_out(&mut self, now: Instant, id: WorkerId, kind: TimeoutKind) {
        self.stats.timeouts += 1;
        self.outputs
            .push_back(Output::WorkerTimedOut { worker: id, kind });
        self.stop(now, id, StopReason::TimedOut(kind));
    }

    /// Asks a worker to stop politely (now, or once its spawn is confirmed).
    pub(super) fn stop(&mut self, now: Instant, id: WorkerId, reason: StopReason) {
        match self.worker_mut(id).state {
            WorkerState::Spawning { stop: None } => {
                self.set_state(
                    id,
                    WorkerState::Spawning {
                        stop: Some(Signal::Stop),
                    },
                );
            }
            WorkerState::Booting | WorkerState::Idle { .. } | WorkerState::Busy { .. } => {
                self.signal_stop(now, id);
            }
            // Already on its way out.
            _ => return,
        }
        self.outputs
            .push_back(Output::WorkerStopping { worker: id, reason });
    }

    pub(super) fn signal_stop(&mut self, now: Instant, id: WorkerId) {
        let kill_at = now + self.config.stop_grace;
        self.set_state(id, WorkerState::Stopping { kill_at });
        self.outputs.push_back(Output::Signal(id, Signal::Stop));
    }

    /// Kills a worker now (or once its spawn is confirmed).
    pub(super) fn kill(&mut self, id: WorkerId) {
        match self.worker_mut(id).state {
            WorkerState::Spawning { .. } => self.set_state(
                id,
                WorkerState::Spawning {
                    stop: Some(Signal::Kill),
                },
            ),
            WorkerState::Killed => {}
            _ => self.signal_kill(id),
        }
    }

    pub(super) fn signal_kill(&mut self, id: WorkerId) {
        self.set_state(id, WorkerState::Killed);
        self.outputs.push_back(Output::Signal(id, Signal::Kill));
    }

    /// Forgets abnormal exits that fell out of the window.
    fn prune_crashes(&mut self, now: Instant) {
        let window_start = now - self.config.crash_loop_window;
        while self.crashes.front().is_some_and(|&t| t <= window_start) {
            self.crashes.pop_front();
        }
    }

    /// An abnormal exit: count it; too many in the window pauses spawning.
    pub(super) fn crashed(&mut self, now: Instant) {
        self.stats.crashes += 1;
        self.last_crash = Some(now);
        self.prune_crashes(now);
        self.crashes.push_back(now);
        let threshold = self.config.crash_loop_threshold as usize;
        if self.crashes.len() < threshold {
            return;
        }
        self.crashes.clear();
        let respawn_after = now + self.respawn_backoff.next_delay();
        self.respawn_after = Some(
            self.respawn_after
                .map_or(respawn_after, |t| t.max(respawn_after)),
        );
        self.stats.crash_loops += 1;
        self.outputs.push_back(Output::CrashLoopDetected {
            exits: threshold as u32,
            window: self.config.crash_loop_window,
            respawn_after,
        });
    }

    pub(super) fn check_all_exited(&mut self) {
        if self.phase == Phase::ShuttingDown && self.workers.is_empty() {
            self.phase = Phase::Exited;
            self.outputs.push_back(Output::AllExited);
        }
    }

    fn room(&self) -> u32 {
        self.config.max_workers - self.workers.len() as u32
    }

    fn spawn(&mut self, now: Instant) {
        let request_limit = self.config.max_requests.map(|m| {
            let extra = self
                .rng
                .below(u64::from(self.config.max_requests_jitter) + 1);
            m.saturating_add(extra as u32)
        });
        let key = self.workers.insert(Worker {
            state: WorkerState::Spawning { stop: None },
            spawned_at: now,
            last_report: now,
            ready_once: false,
            requests: 0,
            request_limit,
            armed: None,
        });
        let id = WorkerId::from_raw(key);
        self.count(Class::Pending, true);
        self.rearm(id);
        self.stats.spawned += 1;
        self.outputs.push_back(Output::Spawn(id));
        assert!(
            self.workers.len() as u32 <= self.config.max_workers,
            "internal: spawned past max_workers"
        );
    }

    /// Maintenance, once per interval while running: spawn toward the targets (rate-capped),
    /// stop excess idle workers, and arm the next round.
    pub(super) fn maintain(&mut self, now: Instant) {
        debug_assert_eq!(self.phase, Phase::Running);
        let at = now + self.config.maintenance_interval;
        self.timers.insert(at, TimerKey::Maintenance);
        self.next_maintenance = Some(at);

        self.prune_crashes(now);
        if self.respawn_after.is_some_and(|t| t <= now) {
            self.respawn_after = None;
        }
        let quiet = self
            .last_crash
            .is_none_or(|t| now - t >= self.config.crash_loop_window);
        if self.respawn_after.is_none() && quiet {
            // A whole window without abnormal exits: the next crash loop starts from the first
            // delay again.
            self.respawn_backoff.reset();
        }
        if self.respawn_after.is_none() {
            let cap = self.config.spawn_rate_max;
            let initial = self.start_remaining.min(cap).min(self.room());
            for _ in 0..initial {
                self.spawn(now);
            }
            self.start_remaining -= initial;
            let spare = self.idle.len() as u32 + self.pending;
            let deficit = self.config.min_spare.saturating_sub(spare);
            if deficit == 0 {
                self.spawn_rate = 1;
            } else {
                let n = deficit
                    .min(self.spawn_rate)
                    .min(cap - initial)
                    .min(self.room());
                for _ in 0..n {
                    self.spawn(now);
                }
                if deficit > n {
                    self.spawn_rate = (self.spawn_rate.saturating_mul(2)).min(cap);
                }
            }
        }
        let excess = (self.idle.len() as u32).saturating_sub(self.config.max_spare);
        for _ in 0..excess {
            let &(_, id) = self.idle.first().expect("excess implies idle workers");
            self.stop(now, id, StopReason::ExcessIdle);
        }
        debug_assert_eq!(
            self.pending + self.idle.len() as u32 + self.busy + self.stopping,
            self.workers.len() as u32,
            "counts must add up to the live workers"
        );
    }
}
