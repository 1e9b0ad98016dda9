//! Simulated time and a fake network for driving the core machines: every latency and every
//! fault comes from a seeded [`Rng`], so a run is a pure function of its seed and inputs.

use std::collections::BTreeMap;
use std::time::Duration;

use moor_core::{Instant, Rng};

/// How the fake network behaves. Chances are in parts per thousand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetConfig {
    /// Shortest delay before a completion (resolve, connect) arrives.
    pub latency_min: Duration,
    /// Longest delay before a completion arrives.
    pub latency_max: Duration,
    /// Chance that a connect is refused.
    pub refuse_permille: u16,
    /// Chance that a connect never completes (a listener that never accepts).
    pub silent_connect_permille: u16,
    /// Chance that a resolution fails.
    pub dns_fail_permille: u16,
    /// Chance that a resolution never answers.
    pub dns_silent_permille: u16,
    /// Chance that a connection in use is reset by the peer.
    pub reset_permille: u16,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            latency_min: Duration::from_micros(100),
            latency_max: Duration::from_millis(50),
            refuse_permille: 50,
            silent_connect_permille: 20,
            dns_fail_permille: 30,
            dns_silent_permille: 10,
            reset_permille: 30,
        }
    }
}

/// A fake network: dice for faults and latencies, and a queue of completions due at simulated
/// times, delivered in (time, order of scheduling) order.
#[derive(Debug, Clone)]
pub struct FakeNet<E> {
    /// How it behaves.
    pub config: NetConfig,
    rng: Rng,
    seq: u64,
    due: BTreeMap<(Instant, u64), E>,
}

impl<E> FakeNet<E> {
    /// A network whose every choice follows from `seed`.
    pub fn new(config: NetConfig, seed: u64) -> Self {
        FakeNet {
            config,
            rng: Rng::new(seed),
            seq: 0,
            due: BTreeMap::new(),
        }
    }

    /// Rolls a die: true with `permille` / 1000 chance.
    pub fn chance(&mut self, permille: u16) -> bool {
        self.rng.below(1000) < u64::from(permille)
    }

    /// A latency between the configured bounds.
    pub fn latency(&mut self) -> Duration {
        let (lo, hi) = (
            self.config.latency_min,
            self.config.latency_max.max(self.config.latency_min),
        );
        let span = u64::try_from((hi - lo).as_nanos()).unwrap_or(u64::MAX);
        lo + Duration::from_nanos(self.rng.below(span.saturating_add(1)))
    }

    /// A number in `0..bound` from the network's dice.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.rng.below(bound)
    }

    /// Delivers `event` at `at`.
    pub fn schedule(&mut self, at: Instant, event: E) {
        self.seq += 1;
        self.due.insert((at, self.seq), event);
    }

    /// When the next completion is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.due.keys().next().map(|&(at, _)| at)
    }

    /// The next completion due at or before `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, E)> {
        let (&(at, seq), _) = self.due.iter().next()?;
        if at > now {
            return None;
        }
        self.due.remove(&(at, seq)).map(|e| (at, e))
    }

    /// Number of completions not yet delivered.
    pub fn pending(&self) -> usize {
        self.due.len()
    }
}
