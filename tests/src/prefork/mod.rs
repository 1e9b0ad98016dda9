//! Simulation harness for the prefork supervisor: a driver that plays the worker processes
//! (healthy ones, ones that fail to spawn, crash at boot, never report, or hang), a reference
//! model of every worker's state, and invariant checks after every step. Used by the proptest
//! state-machine tests, the fuzz target and unit tests.

mod ops;

use ops::{Behaviour, Class};
pub use ops::{Op, Profile};

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use moor_core::prefork::{
    ExitStatus, Output, Phase, Prefork, PreforkConfig, Report, Signal, TimeoutKind,
};
use moor_core::{Instant, Rng, WorkerId};

#[derive(Debug, Clone)]
struct SimWorker {
    behaviour: Behaviour,
    class: Class,
    spawned_at: Instant,
    last_report: Instant,
    hung: bool,
    stop_at: Option<Instant>,
    exit_due: Option<ExitStatus>,
}

/// The driver, the model and the bookkeeping behind every invariant.
#[derive(Debug)]
pub struct Harness {
    /// The machine under test.
    pub sup: Prefork,
    config: PreforkConfig,
    faults: (u64, u64, u64),
    rng: Rng,
    /// Simulated time.
    pub now: Instant,
    workers: BTreeMap<WorkerId, SimWorker>,
    unanswered: VecDeque<WorkerId>,
    exited: BTreeSet<WorkerId>,
    spawn_times: VecDeque<Instant>,
    /// Most spawns seen within one maintenance interval.
    pub max_spawns_per_interval: usize,
    hard_shutdown: bool,
    /// `AllExited` events seen.
    pub all_exited: u32,
    /// Timeouts seen (boot, ack).
    pub timeouts: u64,
    /// Crash loops seen.
    pub crash_loops: u64,
    over_spare_since: Option<Instant>,
    short_since: Option<Instant>,
}

impl Harness {
    /// A harness around a fresh supervisor.
    ///
    /// # Panics
    /// If the profile's configuration is refused (a bug).
    #[must_use]
    pub fn new(profile: Profile, seed: u64) -> Harness {
        let config = profile.config();
        Harness {
            sup: Prefork::new(config.clone(), seed).expect("valid profile"),
            config,
            faults: profile.faults(),
            rng: Rng::new(seed ^ 0x5eed),
            now: Instant::ZERO,
            workers: BTreeMap::new(),
            unanswered: VecDeque::new(),
            exited: BTreeSet::new(),
            spawn_times: VecDeque::new(),
            max_spawns_per_interval: 0,
            hard_shutdown: false,
            all_exited: 0,
            timeouts: 0,
            crash_loops: 0,
            over_spare_since: None,
            short_since: None,
        }
    }

    /// The n-th live worker (by id) in `class` that is not hung, if any.
    fn pick(&self, n: u8, class: Class) -> Option<WorkerId> {
        let v: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, w)| w.class == class && !w.hung && w.exit_due.is_none())
            .map(|(&id, _)| id)
            .collect();
        (!v.is_empty()).then(|| v[usize::from(n) % v.len()])
    }

    fn report(&mut self, id: WorkerId, report: Report) {
        self.sup.handle_report(self.now, id, report).unwrap();
        let w = self.workers.get_mut(&id).unwrap();
        w.last_report = self.now;
        if w.class != Class::Stopping {
            w.class = match report {
                Report::Ready | Report::Idle | Report::RequestDone => Class::Idle,
                Report::Busy => Class::Busy,
                Report::Heartbeat => w.class,
            };
        }
    }

    /// Applies one step, lets the simulated workers react, and checks every invariant.
    ///
    /// # Panics
    /// On an invariant violation.
    pub fn step(&mut self, op: &Op) {
        let now = self.now;
        match *op {
            Op::Start => {
                let was = self.sup.phase();
                let r = self.sup.handle_start(now);
                assert_eq!(r.is_ok(), was == Phase::NotStarted, "start: {r:?}");
            }
            Op::Answer => self.answer(),
            Op::Busy(n) => {
                if let Some(id) = self.pick(n, Class::Idle) {
                    self.report(id, Report::Busy);
                }
            }
            Op::Free(n) => {
                if let Some(id) = self.pick(n, Class::Busy) {
                    self.report(id, Report::Idle);
                }
            }
            Op::Done(n) => {
                if let Some(id) = self.pick(n, Class::Busy) {
                    self.report(id, Report::RequestDone);
                }
            }
            Op::Hang(n) => {
                if let Some(id) = self
                    .pick(n, Class::Idle)
                    .or_else(|| self.pick(n, Class::Busy))
                {
                    self.workers.get_mut(&id).unwrap().hung = true;
                }
            }
            Op::Crash(n) | Op::Quit(n) => {
                let id = self
                    .pick(n, Class::Idle)
                    .or_else(|| self.pick(n, Class::Busy));
                if let Some(id) = id {
                    let status = if matches!(op, Op::Crash(_)) {
                        ExitStatus::Code(1)
                    } else {
                        ExitStatus::Clean
                    };
                    self.workers.get_mut(&id).unwrap().exit_due = Some(status);
                }
            }
            Op::Advance(n) => self.advance(now + Duration::from_millis(u64::from(n % 400) * 50)),
            Op::Reload => {
                let was = self.sup.phase();
                let r = self.sup.handle_reload(now);
                assert_eq!(r.is_ok(), was == Phase::Running, "reload: {r:?}");
            }
            Op::Shutdown(graceful) => {
                self.sup.handle_shutdown(now, graceful).unwrap();
                if !graceful {
                    self.hard_shutdown = true;
                }
                assert!(self.sup.handle_start(now).is_err());
                assert!(self.sup.handle_reload(now).is_err());
            }
            Op::Misuse(k) => self.misuse(k),
        }
        self.settle();
    }

    fn misuse(&mut self, k: u8) {
        let now = self.now;
        let before = self.sup.stats();
        let r = match k % 4 {
            0 => self
                .sup
                .handle_report(now, WorkerId::from_raw(u64::MAX), Report::Busy),
            1 if now > Instant::ZERO => {
                let id = self
                    .workers
                    .keys()
                    .next()
                    .copied()
                    .unwrap_or(WorkerId::from_raw(1));
                self.sup
                    .handle_exited(now - Duration::from_nanos(1), id, ExitStatus::Clean)
            }
            2 if !self.exited.is_empty() => {
                let id = *self.exited.iter().next().unwrap();
                self.sup.handle_exited(now, id, ExitStatus::Clean)
            }
            3 => match self.workers.iter().find(|(_, w)| w.class == Class::Booting) {
                Some((&id, _)) => self.sup.handle_report(now, id, Report::Busy),
                None => return,
            },
            _ => return,
        };
        assert!(r.is_err(), "misuse {k} accepted");
        assert_eq!(
            self.sup.stats(),
            before,
            "a refused input changed the state"
        );
    }

    /// Answers every pending spawn as each worker's behaviour dictates.
    fn answer(&mut self) {
        while let Some(id) = self.unanswered.pop_front() {
            let now = self.now;
            let behaviour = self.workers[&id].behaviour;
            if behaviour == Behaviour::SpawnFails {
                self.sup.handle_spawn_failed(now, id).unwrap();
                self.drain();
                continue;
            }
            self.sup.handle_spawned(now, id).unwrap();
            {
                let w = self.workers.get_mut(&id).unwrap();
                if w.class == Class::Spawning {
                    w.class = Class::Booting;
                }
            }
            self.drain();
            match behaviour {
                Behaviour::Healthy => self.report(id, Report::Ready),
                Behaviour::CrashesAtBoot => {
                    self.workers.get_mut(&id).unwrap().exit_due = Some(ExitStatus::Signal(11));
                }
                Behaviour::NeverReports | Behaviour::SpawnFails => {}
            }
            self.drain();
        }
    }

    /// Steps time to `target`, stopping at every deadline and every heartbeat second (bounded).
    fn advance(&mut self, target: Instant) {
        for _ in 0..100_000 {
            let second = Instant::from_secs(self.now.as_nanos() / 1_000_000_000 + 1);
            let next = self.sup.poll_timeout().map_or(second, |t| t.min(second));
            if next > target {
                self.now = target;
                self.sup.handle_timeout(target);
                self.settle();
                return;
            }
            assert!(next >= self.now, "deadline in the past");
            self.now = next;
            if next == second {
                let healthy: Vec<WorkerId> = self
                    .workers
                    .iter()
                    .filter(|(_, w)| {
                        matches!(w.class, Class::Idle | Class::Busy)
                            && !w.hung
                            && w.exit_due.is_none()
                    })
                    .map(|(&id, _)| id)
                    .collect();
                for id in healthy {
                    self.report(id, Report::Heartbeat);
                }
            }
            self.sup.handle_timeout(next);
            self.settle();
        }
        panic!("time never reached its target: hot loop");
    }

    /// Drains outputs and lets workers that are due to exit do so, until quiet (bounded).
    fn settle(&mut self) {
        for _ in 0..10_000 {
            self.drain();
            let due: Vec<(WorkerId, ExitStatus)> = self
                .workers
                .iter()
                .filter_map(|(&id, w)| w.exit_due.map(|s| (id, s)))
                .filter(|(id, _)| !self.unanswered.contains(id))
                .collect();
            if due.is_empty() {
                self.check();
                return;
            }
            for (id, status) in due {
                self.sup.handle_exited(self.now, id, status).unwrap();
                self.drain();
            }
        }
        panic!("workers kept exiting");
    }

    fn drain(&mut self) {
        let now = self.now;
        while let Some(out) = self.sup.poll_output() {
            match out {
                Output::Spawn(id) => {
                    assert!(
                        self.sup.phase() == Phase::Running,
                        "spawn while not running"
                    );
                    let roll = self.rng.below(1000);
                    let (fail, crash, silent) = self.faults;
                    let behaviour = if roll < fail {
                        Behaviour::SpawnFails
                    } else if roll < fail + crash {
                        Behaviour::CrashesAtBoot
                    } else if roll < fail + crash + silent {
                        Behaviour::NeverReports
                    } else {
                        Behaviour::Healthy
                    };
                    let fresh = self.workers.insert(
                        id,
                        SimWorker {
                            behaviour,
                            class: Class::Spawning,
                            spawned_at: now,
                            last_report: now,
                            hung: false,
                            stop_at: None,
                            exit_due: None,
                        },
                    );
                    assert!(
                        fresh.is_none() && !self.exited.contains(&id),
                        "worker id reused"
                    );
                    self.unanswered.push_back(id);
                    self.spawn_times.push_back(now);
                    while self
                        .spawn_times
                        .front()
                        .is_some_and(|&t| now - t >= self.config.maintenance_interval)
                    {
                        self.spawn_times.pop_front();
                    }
                    self.max_spawns_per_interval =
                        self.max_spawns_per_interval.max(self.spawn_times.len());
                    assert!(
                        self.spawn_times.len() <= self.config.spawn_rate_max as usize,
                        "spawn rate cap exceeded"
                    );
                    self.short_since = None;
                }
                Output::Signal(id, signal) => {
                    assert!(
                        !self.unanswered.contains(&id),
                        "signal before the spawn was answered"
                    );
                    let grace = self.config.stop_grace;
                    let hard = self.hard_shutdown;
                    let w = self.workers.get_mut(&id).expect("signal for a dead worker");
                    w.class = Class::Stopping;
                    match signal {
                        Signal::Stop => {
                            assert!(w.stop_at.is_none(), "stopped twice");
                            w.stop_at = Some(now);
                            let obeys = w.behaviour == Behaviour::Healthy && !w.hung;
                            if obeys && w.exit_due.is_none() {
                                w.exit_due = Some(ExitStatus::Clean);
                            }
                        }
                        Signal::Kill => {
                            let after_grace = w.stop_at.is_some_and(|t| now >= t + grace);
                            assert!(after_grace || hard, "killed before the grace period ended");
                            w.exit_due = Some(ExitStatus::Signal(9));
                        }
                    }
                }
                Output::WorkerStarted { worker } | Output::WorkerReady { worker } => {
                    assert!(self.workers.contains_key(&worker));
                }
                Output::WorkerTimedOut { worker, kind } => {
                    self.timeouts += 1;
                    let w = &self.workers[&worker];
                    match kind {
                        TimeoutKind::Boot => {
                            assert_eq!(
                                now - w.spawned_at,
                                self.config.boot_timeout,
                                "boot timeout fired off time"
                            );
                        }
                        TimeoutKind::Ack => {
                            let ack = self.config.ack_timeout.expect("ack timeout without ack");
                            assert_eq!(now - w.last_report, ack, "ack timeout fired off time");
                        }
                    }
                }
                Output::WorkerStopping { worker, .. } => {
                    self.workers
                        .get_mut(&worker)
                        .expect("stopping a dead worker")
                        .class = Class::Stopping;
                }
                Output::SpawnFailed { worker } => {
                    let w = self.workers.remove(&worker).expect("unknown spawn failed");
                    assert_eq!(w.behaviour, Behaviour::SpawnFails);
                    self.exited.insert(worker);
                }
                Output::WorkerExited { worker, .. } => {
                    assert!(
                        self.workers.remove(&worker).is_some(),
                        "exit of a dead worker"
                    );
                    assert!(self.exited.insert(worker), "two exits for one worker");
                }
                Output::CrashLoopDetected { respawn_after, .. } => {
                    self.crash_loops += 1;
                    assert!(respawn_after > now);
                }
                Output::AllExited => {
                    self.all_exited += 1;
                    assert_eq!(self.all_exited, 1, "AllExited twice");
                    assert!(self.workers.is_empty(), "AllExited with workers left");
                }
                other => panic!("unexpected output {other:?}"),
            }
        }
    }

    /// Invariants that hold between steps.
    fn check(&mut self) {
        let s = self.sup.stats();
        let count = |c: Class| self.workers.values().filter(|w| w.class == c).count() as u32;
        assert_eq!(s.live as usize, self.workers.len(), "live workers");
        assert!(s.live <= self.config.max_workers, "past max_workers");
        assert_eq!(s.idle, count(Class::Idle), "idle");
        assert_eq!(s.busy, count(Class::Busy), "busy");
        assert_eq!(s.stopping, count(Class::Stopping), "stopping");
        assert_eq!(
            s.pending,
            count(Class::Spawning) + count(Class::Booting),
            "pending"
        );
        // Hung or silent workers are caught exactly at their deadline, never later.
        for (id, w) in &self.workers {
            match w.class {
                Class::Idle | Class::Busy => {
                    if let Some(ack) = self.config.ack_timeout {
                        assert!(
                            self.now < w.last_report + ack,
                            "{id:?} missed its ack timeout"
                        );
                    }
                }
                Class::Spawning | Class::Booting => {
                    assert!(
                        self.now < w.spawned_at + self.config.boot_timeout,
                        "{id:?} missed boot"
                    );
                }
                Class::Stopping => {}
            }
        }
        let interval = self.config.maintenance_interval;
        let running = self.sup.phase() == Phase::Running;
        // Too many idle workers: fixed within one maintenance interval.
        if running && s.idle > self.config.max_spare {
            let since = *self.over_spare_since.get_or_insert(self.now);
            assert!(self.now - since <= interval, "over max_spare for too long");
        } else {
            self.over_spare_since = None;
        }
        // Too few spares with room to grow and no crash pause: a spawn within one interval.
        let paused = self.sup.respawn_after().is_some_and(|t| t > self.now);
        let short = s.idle + s.pending < self.config.min_spare;
        if running && short && !paused && s.live < self.config.max_workers {
            let since = *self.short_since.get_or_insert(self.now);
            assert!(
                self.now - since <= interval,
                "short of spares with no spawn"
            );
        } else {
            self.short_since = None;
        }
        if self.sup.phase() == Phase::Exited {
            assert!(self.workers.is_empty());
        }
    }

    /// Shuts down and drives until every worker has exited; checks that every spawn was
    /// answered and every worker ended in exactly one exit, with one `AllExited`.
    ///
    /// # Panics
    /// On an invariant violation.
    pub fn finish(&mut self) {
        self.step(&Op::Shutdown(true));
        for _ in 0..1000 {
            if self.sup.phase() == Phase::Exited {
                break;
            }
            self.step(&Op::Answer);
            self.step(&Op::Advance(20));
        }
        assert_eq!(self.sup.phase(), Phase::Exited, "shutdown never finished");
        assert_eq!(self.all_exited, 1);
        assert!(self.workers.is_empty() && self.unanswered.is_empty());
        assert_eq!(self.exited.len() as u64, self.sup.stats().spawned);
        assert_eq!(self.sup.poll_timeout(), None);
    }
}

/// Runs a whole scenario, then shuts down and checks that everything ended.
pub fn run(profile: Profile, seed: u64, ops: &[Op]) -> Harness {
    let mut h = Harness::new(profile, seed);
    for op in ops {
        h.step(op);
    }
    h.finish();
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
