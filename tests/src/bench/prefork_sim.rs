//! `prefork-sim`: a simulated day of bursty load through the prefork supervisor.
//!
//! Requests arrive as a Poisson process whose rate follows a daily curve (20/s on average) with
//! a five-fold burst for 30 s every 10 minutes; each takes an exponential 200 ms on an idle worker
//! (queued while none is idle). Faults: 1 % of spawns fail, 1 % of workers crash at boot, a
//! request crashes its worker with probability 1e-4 and hangs it with probability 5e-5 (a hung
//! worker stops heartbeating and ignores polite stops). Healthy workers heartbeat every second.
//! The driver wakes at `poll_timeout()` rounded up to the next millisecond, like a real runtime
//! timer. Printed: throughput of the simulation, counts, and last the worst delay between a hung
//! worker's ack deadline and its detection.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::time::{Duration, Instant as WallInstant};

use moor_core::prefork::{ExitStatus, Output, Prefork, PreforkConfig, Report, Signal, TimeoutKind};
use moor_core::{Instant, Rng, WorkerId};

const DAY_S: u64 = 86_400;
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Arrival,
    Finish(WorkerId),
    Heartbeat(WorkerId),
    SpawnDone(WorkerId),
    Exit(WorkerId, i32),
}

#[derive(Debug, Default)]
struct SimWorker {
    ready: bool,
    busy: bool,
    hung: bool,
    stopping: bool,
    crash_on_finish: bool,
    last_report: Option<Instant>,
}

/// Figures from one simulated day.
#[derive(Debug, Default, Clone)]
pub struct DayReport {
    /// Requests completed.
    pub served: u64,
    /// Requests lost with a crashed or hung worker.
    pub lost: u64,
    /// Requests refused because the queue was full.
    pub rejected: u64,
    /// Hangs injected.
    pub hangs: u64,
    /// Hung workers detected by the ack timeout.
    pub hangs_detected: u64,
    /// Worst delay from a hung worker's ack deadline to its detection.
    pub max_detection_delay: Duration,
    /// Spawns asked for.
    pub spawns: u64,
    /// Crash loops detected.
    pub crash_loops: u64,
    /// Most live workers at once.
    pub max_live: u32,
    /// Worst queue length.
    pub max_queue: usize,
    /// Wall-clock time the day took.
    pub wall: Duration,
}

struct Sim {
    sup: Prefork,
    rng: Rng,
    now: Instant,
    heap: BinaryHeap<Reverse<(Instant, u64, Ev)>>,
    seq: u64,
    workers: BTreeMap<WorkerId, SimWorker>,
    idle: BTreeSet<WorkerId>,
    queue: VecDeque<Instant>,
    report: DayReport,
}

impl Sim {
    fn at(&mut self, at: Instant, ev: Ev) {
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq, ev)));
    }

    fn exp(&mut self, mean_s: f64) -> Duration {
        Duration::from_secs_f64(-(1.0 - self.rng.next_f64()).ln() * mean_s)
    }

    fn rate(&self) -> f64 {
        let t = self.now.since_origin().as_secs_f64();
        let daily = 20.0 * (1.0 + 0.8 * (std::f64::consts::TAU * t / DAY_S as f64).sin());
        if t % 600.0 < 30.0 { daily * 5.0 } else { daily }
    }

    fn report_to(&mut self, w: WorkerId, r: Report) {
        self.sup
            .handle_report(self.now, w, r)
            .expect("valid report");
        if let Some(sw) = self.workers.get_mut(&w) {
            sw.last_report = Some(self.now);
        }
    }

    fn dispatch(&mut self) {
        while !self.queue.is_empty() {
            let Some(w) = self.idle.pop_first() else {
                return;
            };
            self.queue.pop_front();
            self.report_to(w, Report::Busy);
            let roll = self.rng.below(1_000_000);
            let sw = self.workers.get_mut(&w).expect("idle worker is live");
            sw.busy = true;
            if roll < 50 {
                sw.hung = true;
                self.report.hangs += 1;
                self.report.lost += 1;
            } else {
                sw.crash_on_finish = roll < 150;
                let d = self.exp(0.2);
                self.at(self.now + d, Ev::Finish(w));
            }
        }
    }

    fn event(&mut self, ev: Ev) {
        let now = self.now;
        match ev {
            Ev::Arrival => {
                if self.queue.len() < 10_000 {
                    self.queue.push_back(now);
                } else {
                    self.report.rejected += 1;
                }
                let gap = self.exp(1.0 / self.rate());
                self.at(now + gap, Ev::Arrival);
            }
            Ev::SpawnDone(w) => {
                if self.rng.below(100) == 0 {
                    self.workers.remove(&w);
                    self.sup.handle_spawn_failed(now, w).expect("pending spawn");
                    return;
                }
                self.sup.handle_spawned(now, w).expect("pending spawn");
                if self.rng.below(100) == 0 {
                    self.at(now + Duration::from_millis(50), Ev::Exit(w, 11));
                    return;
                }
                let sw = self.workers.get_mut(&w).expect("spawned worker");
                if sw.stopping {
                    return;
                }
                sw.ready = true;
                self.report_to(w, Report::Ready);
                self.idle.insert(w);
                self.at(now + Duration::from_secs(1), Ev::Heartbeat(w));
            }
            Ev::Heartbeat(w) => {
                let Some(sw) = self.workers.get(&w) else {
                    return;
                };
                if sw.hung || !sw.ready {
                    return;
                }
                self.report_to(w, Report::Heartbeat);
                self.at(now + Duration::from_secs(1), Ev::Heartbeat(w));
            }
            Ev::Finish(w) => {
                let Some(sw) = self.workers.get_mut(&w) else {
                    return;
                };
                if sw.crash_on_finish {
                    self.report.lost += 1;
                    self.at(now, Ev::Exit(w, 1));
                    return;
                }
                sw.busy = false;
                let stopping = sw.stopping;
                self.report.served += 1;
                self.report_to(w, Report::RequestDone);
                if stopping {
                    self.at(now + Duration::from_millis(5), Ev::Exit(w, 0));
                } else if self.workers.get(&w).is_some_and(|s| !s.stopping) {
                    self.idle.insert(w);
                }
            }
            Ev::Exit(w, code) => {
                if self.workers.remove(&w).is_none() {
                    return;
                }
                self.idle.remove(&w);
                let status = match code {
                    0 => ExitStatus::Clean,
                    9 | 11 => ExitStatus::Signal(code),
                    c => ExitStatus::Code(c),
                };
                self.sup.handle_exited(now, w, status).expect("live worker");
            }
        }
    }

    fn drain(&mut self) {
        let now = self.now;
        while let Some(out) = self.sup.poll_output() {
            match out {
                Output::Spawn(w) => {
                    self.report.spawns += 1;
                    self.workers.insert(w, SimWorker::default());
                    self.at(now + Duration::from_millis(20), Ev::SpawnDone(w));
                }
                Output::Signal(w, Signal::Stop) => {
                    self.idle.remove(&w);
                    if let Some(sw) = self.workers.get_mut(&w) {
                        let obeys = !sw.hung && !sw.busy && sw.ready;
                        sw.stopping = true;
                        if obeys {
                            self.at(now + Duration::from_millis(20), Ev::Exit(w, 0));
                        }
                    }
                }
                Output::Signal(w, Signal::Kill) => {
                    self.idle.remove(&w);
                    self.at(now + Duration::from_millis(1), Ev::Exit(w, 9));
                }
                Output::WorkerTimedOut {
                    worker,
                    kind: TimeoutKind::Ack,
                } => {
                    let sw = &self.workers[&worker];
                    if sw.hung {
                        let deadline = sw.last_report.expect("ready worker reported") + ACK_TIMEOUT;
                        self.report.hangs_detected += 1;
                        self.report.max_detection_delay =
                            self.report.max_detection_delay.max(now - deadline);
                    }
                }
                Output::CrashLoopDetected { .. } => self.report.crash_loops += 1,
                _ => {}
            }
        }
        self.report.max_live = self.report.max_live.max(self.sup.stats().live);
    }
}

/// Runs one simulated day with `seed`.
///
/// # Panics
/// If the supervisor refuses a valid input (a bug).
#[must_use]
pub fn day(seed: u64) -> DayReport {
    let config = PreforkConfig {
        start_workers: 8,
        min_spare: 4,
        max_spare: 16,
        max_workers: 64,
        ack_timeout: Some(ACK_TIMEOUT),
        boot_timeout: Duration::from_secs(10),
        max_requests: Some(10_000),
        max_requests_jitter: 1_000,
        ..PreforkConfig::default()
    };
    let mut sim = Sim {
        sup: Prefork::new(config, seed).expect("valid config"),
        rng: Rng::new(seed),
        now: Instant::ZERO,
        heap: BinaryHeap::new(),
        seq: 0,
        workers: BTreeMap::new(),
        idle: BTreeSet::new(),
        queue: VecDeque::new(),
        report: DayReport::default(),
    };
    let started = WallInstant::now();
    let end = Instant::from_secs(DAY_S);
    sim.sup.handle_start(sim.now).expect("start");
    sim.at(Instant::ZERO, Ev::Arrival);
    loop {
        // A runtime timer wakes at millisecond granularity, never early.
        let timer = sim.sup.poll_timeout().map(|t| {
            let ms = t.as_nanos().div_ceil(1_000_000);
            Instant::from_millis(ms)
        });
        let next_ev = sim.heap.peek().map(|Reverse((t, _, _))| *t);
        let next = match (timer, next_ev) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b).expect("something is always scheduled"),
        };
        if next > end {
            break;
        }
        sim.now = next;
        if timer == Some(next) {
            sim.sup.handle_timeout(next);
        } else {
            let Reverse((_, _, ev)) = sim.heap.pop().expect("peeked");
            sim.event(ev);
        }
        sim.drain();
        sim.dispatch();
        sim.drain();
        sim.report.max_queue = sim.report.max_queue.max(sim.queue.len());
    }
    sim.report.wall = started.elapsed();
    sim.report
}

/// Runs the scenario: three repetitions of the same day, median wall time.
pub fn run() {
    let mut reports: Vec<DayReport> = (0..3).map(|_| day(2024)).collect();
    reports.sort_by_key(|r| r.wall);
    let r = &reports[1];
    let speed = DAY_S as f64 / r.wall.as_secs_f64();
    println!("prefork-sim: simulated time = {DAY_S} s");
    println!("prefork-sim: requests served = {}", r.served);
    println!(
        "prefork-sim: requests lost with crashed or hung workers = {}",
        r.lost
    );
    println!(
        "prefork-sim: requests rejected (queue full) = {}",
        r.rejected
    );
    println!("prefork-sim: max queue length = {}", r.max_queue);
    println!("prefork-sim: spawns = {}", r.spawns);
    println!("prefork-sim: crash loops detected = {}", r.crash_loops);
    println!("prefork-sim: max live workers = {}", r.max_live);
    println!("prefork-sim: hung workers injected = {}", r.hangs);
    println!("prefork-sim: hung workers detected = {}", r.hangs_detected);
    println!(
        "prefork-sim: wall time per day (median of 3) = {:.3} s",
        r.wall.as_secs_f64()
    );
    println!("prefork-sim: speed = {speed:.0} simulated s per real s");
    println!(
        "prefork-sim: max detection delay of hung worker = {:.3} ms past its ack timeout",
        r.max_detection_delay.as_secs_f64() * 1000.0
    );
}
