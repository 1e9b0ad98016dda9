//! `pool-scaling`: the same mixed workload against a pool holding 1,000 and 1,000,000 keys, each
//! with a leased connection and a queued waiter, to show that the cost of an operation does not
//! grow with the size of the pool (nothing scans a queue or a table).
//!
//! Operations, on random keys of an active set: checkin (hand-off to the head waiter, or idle),
//! checkout (immediate hit, or queued with a short deadline), cancel of a queued checkout, and
//! time steps whose `handle_timeout` expires deadlines. Each size runs the same number of
//! operations several times; figures are median nanoseconds per operation.
//!
//! Two variants:
//! - *active set = whole pool*: keys uniformly random over all of them. At 1M keys every
//!   operation touches cold memory (the working set is hundreds of MB), so this mostly measures
//!   DRAM latency, which any data structure pays; it is printed for honesty.
//! - *active set = 1,000 keys* (the headline): the same 1,000 keys do the work in both runs; at
//!   1M the other 999,000 keys park a connection and a waiter each, so every index the
//!   operations go through (keys, waiters, timers, slabs) holds 1,000x more entries. This isolates
//!   what the pool's algorithms cost as it grows: O(log n) gives a ratio near
//!   log(1M)/log(1k) = 2 at worst, a scan would give ~1000.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant as Clock};

use moor_core::pool::{Config, Output, Pool, PoolKey};
use moor_core::{CheckoutId, ConnId, Instant, Rng};

/// A cheap key: a number, connected by literal address (no resolution in the measured loop).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Key(u32);

impl PoolKey for Key {
    type Host = u32;
    fn host(&self) -> &u32 {
        &self.0
    }
    fn port(&self) -> u16 {
        (self.0 % 50_000) as u16 + 1
    }
    fn literal_addr(&self) -> Option<SocketAddr> {
        Some(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            self.port(),
        ))
    }
}

struct Workload {
    pool: Pool<Key>,
    now: Instant,
    rng: Rng,
    /// The connection the application holds for each key, if any.
    held: Vec<Option<ConnId>>,
    /// Checkouts that may still be queued (answered ones are skipped lazily).
    queued: Vec<CheckoutId>,
    ops: u64,
}

impl Workload {
    fn new(keys: u32, seed: u64) -> Workload {
        let config = Config {
            max_per_key: 1,
            max_open: keys as usize,
            max_waiters: 4 * keys as usize,
            ..Config::default()
        };
        let mut w = Workload {
            pool: Pool::new(config).expect("valid"),
            now: Instant::from_secs(1),
            rng: Rng::new(seed),
            held: vec![None; keys as usize],
            queued: Vec::new(),
            ops: 0,
        };
        // Every key: one connection opened and leased, then one checkout queued behind it.
        for k in 0..keys {
            w.checkout(k, None);
            let (conn, attempt) = match w.pool.poll_output() {
                Some(Output::Connect { conn, attempt, .. }) => (conn, attempt),
                other => panic!("expected Connect, got {other:?}"),
            };
            w.pool
                .handle_connected(w.now, conn, attempt)
                .expect("connect");
            w.drain();
            w.checkout(k, None);
            w.drain();
        }
        // The measured cancels pick among checkouts the workload made, not the parked ones.
        w.queued.clear();
        w
    }

    fn checkout(&mut self, k: u32, deadline: Option<Instant>) {
        let checkout = self
            .pool
            .handle_checkout(self.now, &Key(k), deadline)
            .expect("checkout");
        self.queued.push(checkout);
    }

    fn drain(&mut self) {
        while let Some(out) = self.pool.poll_output() {
            if let Output::Acquired { conn, .. } = out {
                let k = self
                    .pool
                    .conn_key(conn)
                    .expect("a leased connection is live")
                    .0 as usize;
                debug_assert!(self.held[k].is_none());
                self.held[k] = Some(conn);
            }
        }
    }

    fn step(&mut self, active: u32) {
        let k = self.rng.below(u64::from(active)) as u32;
        match self.rng.below(10) {
            0..=3 => {
                if let Some(conn) = self.held[k as usize].take() {
                    self.pool
                        .handle_checkin(self.now, conn, true)
                        .expect("checkin");
                }
            }
            4..=6 => {
                if self.held[k as usize].is_none() {
                    let deadline = self.now + Duration::from_micros(1 + self.rng.below(2_000));
                    self.checkout(k, Some(deadline));
                }
            }
            7 => {
                if !self.queued.is_empty() {
                    let i = self.rng.below(self.queued.len() as u64) as usize;
                    let checkout = self.queued.swap_remove(i);
                    // Answered already (acquired or timed out) is fine: that is the race a
                    // real application has too.
                    let _ = self.pool.handle_cancel(self.now, checkout);
                }
            }
            _ => {
                self.now = self.now + Duration::from_micros(20);
                self.pool.handle_timeout(self.now);
            }
        }
        self.drain();
        self.ops += 1;
    }
}

/// Median nanoseconds per operation over `reps` runs of `ops` operations on the first `active`
/// of `keys` keys, and the number of waiters at the end.
fn cost_ns(keys: u32, active: u32, ops: u64, reps: u32) -> (f64, usize) {
    let mut w = Workload::new(keys, 7);
    let mut samples = Vec::new();
    for _ in 0..reps {
        let start = Clock::now();
        for _ in 0..ops {
            w.step(active);
        }
        samples.push(start.elapsed().as_nanos() as f64 / ops as f64);
    }
    let waiters = w.pool.stats().total.waiters;
    (super::median(samples), waiters)
}

/// Runs the scenario.
pub fn run() {
    const OPS: u64 = 1_000_000;
    const REPS: u32 = 5;
    const SMALL: u32 = 1_000;
    const LARGE: u32 = 1_000_000;
    let line = |label: &str, keys: u32, active: u32| {
        let (ns, waiters) = cost_ns(keys, active, OPS, REPS);
        println!(
            "pool-scaling: {label}: {ns:.1} ns/op (median of {REPS} x {OPS} ops; {keys} keys, {active} active, {waiters} waiters at end)"
        );
        ns
    };
    let small = line("1k keys", SMALL, SMALL);
    let uniform_large = line("1M keys, all active", LARGE, LARGE);
    println!(
        "pool-scaling: all-active cost ratio 1M/1k = {:.2} (DRAM-bound, see module docs)",
        uniform_large / small
    );
    let large = line("1M keys, 1k active", LARGE, SMALL);
    println!("pool-scaling: cost ratio 1M/1k = {:.2}", large / small);
}
