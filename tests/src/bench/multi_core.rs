//! `multi-core`: N simulated connections, each exchanging 100 line frames through one multi
//! engine with input timeouts armed, at N = 1,000 and N = 100,000.
//!
//! One exchange is five engine events: `send`, the `WriteReady` output, `handle_written`,
//! `handle_received` (the peer's echo) and the `Input` output. Connections are visited in a
//! fixed shuffled order each round, so the 100k run pays the cache misses a real event loop
//! would, and simulated time advances 1 ms per round with a 50 ms input timeout, so stale timer
//! entries fire and re-arm lazily throughout.
//!
//! Memory is measured two ways, both for idle connected connections with their input timer
//! armed and no frame buffers allocated:
//! * resident set growth (`/proc/self/statm`) while the connections are opened, divided by N:
//!   everything the engine allocated for them (slab slots, timer index nodes, slack);
//! * the record alone: `size_of` of the per-connection struct, as a floor.
//!
//! Frame buffers (the per-connection input and output `Vec`s, empty until used, and handed back
//! to the engine's small spare list when emptied) are reported separately after the run, as
//! allocated capacity per connection.
//!
//! The headline ratio visits connections in shuffled order; the line before it visits them in
//! connection order. The gap between the two is the memory hierarchy: at 100k connections the
//! first touch of a connection's record per exchange misses the caches (`perf` puts about half
//! the 100k run's time on that one load in `send`), which no engine design avoids.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant as WallInstant};

use moor_core::multi::{Config, ConnectOptions, Multi, Output};
use moor_core::{ConnId, Instant, Rng};

use super::median;

const FRAMES_PER_CONN: u64 = 100;
const EVENTS_PER_FRAME: u64 = 5;

fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

struct Run {
    /// Nanoseconds per event in the exchange phase.
    ns_per_event: f64,
    /// Resident bytes added per idle connection, if measurable.
    rss_per_conn: Option<f64>,
    /// Frame buffer capacity per connection after the run.
    buffers_per_conn: f64,
}

fn config(n: usize) -> Config {
    Config {
        max_connections: n,
        input_timeout: Some(Duration::from_millis(50)),
        ..Config::default()
    }
}

fn run_once(n: usize, seed: u64, shuffled: bool) -> Run {
    let remote = SocketAddr::from(([127, 0, 0, 1], 7));
    let local = SocketAddr::from(([127, 0, 0, 1], 40_000));
    let rss_before = resident_bytes();
    let mut engine: Multi<()> = Multi::new(config(n), seed).expect("valid config");
    let mut now = Instant::ZERO;
    let mut ids: Vec<ConnId> = Vec::with_capacity(n);
    for _ in 0..n {
        let id = engine
            .connect(now, ConnectOptions::new(remote), ())
            .expect("within max_connections");
        // Drain as we go, as a driver does, so the output queue stays small.
        while let Some(out) = engine.poll_output() {
            if let Output::Connect { conn, .. } = out {
                engine.handle_connected(now, conn, local, remote).unwrap();
            }
        }
        ids.push(id);
    }
    let rss_after = resident_bytes();
    // `ids` is the driver's table, not engine state: subtract it.
    let ids_bytes = (ids.capacity() * std::mem::size_of::<ConnId>()) as f64;
    let rss_per_conn = match (rss_before, rss_after) {
        (Some(b), Some(a)) => Some((a.saturating_sub(b) as f64 - ids_bytes) / n as f64),
        _ => None,
    };
    assert_eq!(
        engine.armed_timers(),
        n,
        "every connection has its input timer armed"
    );

    // A fixed shuffled visiting order (or connection order, to separate the engine's own
    // scaling from the memory hierarchy's).
    let mut rng = Rng::new(seed);
    for i in (1..ids.len()).rev() {
        if shuffled {
            let j = rng.below(i as u64 + 1) as usize;
            ids.swap(i, j);
        }
    }

    let frame = b"the quick brown fox jumps over the lazy dog";
    let mut echo = frame.to_vec();
    echo.push(b'\n');
    let mut buf = [0u8; 256];
    let mut events = 0u64;
    let started = WallInstant::now();
    for _round in 0..FRAMES_PER_CONN {
        now = now + Duration::from_millis(1);
        engine.handle_timeout(now);
        for &id in &ids {
            engine.send(now, id, frame).unwrap();
            events += 1;
            while let Some(out) = engine.poll_output() {
                events += 1;
                match out {
                    Output::WriteReady { conn } => {
                        let n = engine.fill_write(conn, &mut buf).unwrap();
                        black_box(&buf[..n]);
                        let left = engine.handle_written(now, conn, n).unwrap();
                        debug_assert_eq!(left, 0);
                        events += 1;
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            engine.handle_received(now, id, &echo).unwrap();
            events += 1;
            while let Some(out) = engine.poll_output() {
                events += 1;
                match out {
                    Output::Input { frame, .. } => {
                        black_box(frame);
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
    }
    let elapsed = started.elapsed();
    assert_eq!(events, n as u64 * FRAMES_PER_CONN * EVENTS_PER_FRAME);
    assert_eq!(engine.stats().frames_in, n as u64 * FRAMES_PER_CONN);
    assert_eq!(
        engine.len(),
        n,
        "no connection timed out: input kept arriving"
    );
    let buffers_per_conn = engine.buffer_capacity() as f64 / n as f64;
    Run {
        ns_per_event: elapsed.as_nanos() as f64 / events as f64,
        rss_per_conn,
        buffers_per_conn,
    }
}

/// Median ns/event at 1k and at 100k connections, sizes alternated so noise hits both alike,
/// plus the last 100k run's frame buffer capacity per connection.
fn measure(shuffled: bool, reps: u64) -> (f64, f64, f64) {
    let mut small = Vec::new();
    let mut large = Vec::new();
    let mut buffers = 0.0;
    for rep in 0..reps {
        for k in 0..3u64 {
            small.push(run_once(1_000, 10 + rep * 3 + k, shuffled).ns_per_event);
        }
        let r = run_once(100_000, 100 + rep, shuffled);
        large.push(r.ns_per_event);
        buffers = r.buffers_per_conn;
    }
    (median(small), median(large), buffers)
}

/// Runs the scenario.
pub fn run() {
    // Memory first, while the heap is fresh: resident growth only shows new pages, so a heap
    // already grown by earlier runs would hide the engine's allocations.
    let idle = run_once(100_000, 99, true).rss_per_conn;
    let (seq_small, seq_large, _) = measure(false, 2);
    let (small_ns, large_ns, buffers) = measure(true, 3);
    println!("multi-core: connections 100000");
    println!("multi-core: frames per connection {FRAMES_PER_CONN}");
    println!("multi-core: ns per event at 1k {small_ns:.1} ns");
    println!("multi-core: ns per event at 100k {large_ns:.1} ns");
    println!(
        "multi-core: events per second at 100k {:.0} events/s",
        1e9 / large_ns
    );
    println!(
        "multi-core: connection record {} bytes",
        Multi::<()>::conn_record_len()
    );
    match idle {
        Some(bytes) => println!("multi-core: engine state per idle connection {bytes:.0} bytes"),
        None => println!("multi-core: engine state per idle connection unavailable (no /proc)"),
    }
    println!("multi-core: frame buffers per idle connection after run {buffers:.0} bytes");
    println!(
        "multi-core: cost ratio 100k/1k visiting in connection order = {:.2}",
        seq_large / seq_small
    );
    // Headline: shuffled order, as readiness events arrive in a real loop.
    println!(
        "multi-core: cost ratio 100k/1k = {:.2}",
        large_ns / small_ns
    );
}
