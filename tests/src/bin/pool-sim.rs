//! Drives the pool core through a simulated workload (fake network with latency, refusals,
//! resets and DNS failures; every output checked against the reference model) and prints its
//! stats: `cargo run --release -p moor-tests --bin pool-sim -- [seed] [steps]`.

use std::process::ExitCode;
use std::time::Instant as Clock;

use moor_tests::pool::{SimConfig, random_workload};
use moor_tests::sim::NetConfig;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parse = |i: usize, default: u64| -> Result<u64, String> {
        args.get(i).map_or(Ok(default), |a| {
            a.parse().map_err(|e| format!("argument `{a}`: {e}"))
        })
    };
    let (seed, steps) = match (parse(0, 1), parse(1, 200_000)) {
        (Ok(seed), Ok(steps)) => (seed, steps),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("usage: pool-sim [seed] [steps]\n{e}");
            return ExitCode::FAILURE;
        }
    };
    let config = SimConfig::small([2, 3, 20, 40, 1, 5], NetConfig::default());
    println!(
        "pool-sim: seed {seed}, {steps} steps, {} keys, {:?}",
        config.keys, config.pool
    );
    let start = Clock::now();
    let mut sim = random_workload(config, seed, steps as usize);
    let simulated = sim.now();
    let stats = sim.pool.stats();
    sim.finish();
    let c = stats.counters;
    println!(
        "pool-sim: simulated {:.1} s in {:.2} s of real time",
        simulated.since_origin().as_secs_f64(),
        start.elapsed().as_secs_f64()
    );
    println!(
        "pool-sim: checkouts answered: immediate {} deferred {} fresh {} timed out {} cancelled {}",
        c.immediate, c.deferred, c.fresh, c.timeouts, c.cancellations
    );
    println!(
        "pool-sim: connections: connect failures {} evicted {} idle-expired {}",
        c.connect_failures, c.evictions, c.idle_expired
    );
    println!(
        "pool-sim: happy eyeballs: attempts raced {} races won with rivals cancelled {} attempts cancelled at their timeout {}",
        sim.races, sim.races_won, sim.attempts_timed_out
    );
    let g = stats.total;
    println!(
        "pool-sim: before shutdown: open {} idle {} leased {} connecting {} waiters {}",
        g.open, g.idle, g.leased, g.connecting, g.waiters
    );
    println!("pool-sim: every output matched the reference model; shutdown drained to nothing");
    ExitCode::SUCCESS
}
