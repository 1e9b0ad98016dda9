//! Harness for the multi engine: a simulated network of peers with seeded latency, a driver that
//! runs the engine against it, and a reference model ([`model`]) checked after every output and
//! every step. The proptest state-machine test (`tests/tests/multi.rs`) and the `multi` fuzz
//! target drive it with [`Op`] sequences.

use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use moor_core::codec::{Framing, LineCodec, Terminator};
use moor_core::multi::Config;

mod harness;
pub mod model;

pub use harness::Harness;

/// How a simulated peer behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Arbitrary)]
pub enum Behaviour {
    /// Refuses the connection (`ECONNREFUSED`).
    Refuse,
    /// Never answers the connect: only the connect timeout ends it.
    Blackhole,
    /// Accepts and echoes every line back.
    Echo,
    /// Accepts and reads, but never sends anything: only the input timeout ends it.
    Silent,
    /// Accepts and reads `chunk` bytes per `delay_ms`, echoing lines back.
    SlowReader {
        /// Bytes taken per write (at least 1).
        chunk: u8,
        /// Milliseconds between writes.
        delay_ms: u8,
    },
    /// Accepts, then resets the connection `after_ms` later.
    ResetAfter {
        /// Milliseconds after the connect.
        after_ms: u8,
    },
}

/// One step of a test: an application command, an injected fault, or time passing.
#[derive(Debug, Clone, PartialEq, Eq, Arbitrary)]
pub enum Op {
    /// Connect to a peer that behaves like this, with optional per-connection timeouts in ms.
    Connect {
        /// The peer.
        behaviour: Behaviour,
        /// Connect timeout override (ms; 0 disables).
        connect_timeout_ms: Option<u16>,
        /// Input timeout override (ms; 0 disables).
        input_timeout_ms: Option<u16>,
    },
    /// Send a line of `len` bytes on the `conn`-th connection ever opened.
    Send {
        /// Index into the connections opened so far (modulo).
        conn: u8,
        /// Line length.
        len: u8,
    },
    /// `shutdown` one connection.
    Shutdown {
        /// Index into the connections opened so far.
        conn: u8,
    },
    /// `shutdown_all`.
    ShutdownAll,
    /// `set_timeout` (current phase) on one connection; `None` disables.
    SetTimeout {
        /// Index into the connections opened so far.
        conn: u8,
        /// Milliseconds.
        ms: Option<u16>,
    },
    /// The peer closes its side.
    PeerEof {
        /// Index into the connections opened so far.
        conn: u8,
    },
    /// The network resets the connection.
    Reset {
        /// Index into the connections opened so far.
        conn: u8,
    },
    /// Let `ms` milliseconds pass.
    Advance {
        /// Milliseconds.
        ms: u16,
    },
}

/// The configuration the harness runs the engine with: small bounds, so they are hit.
#[must_use]
pub fn harness_config() -> Config {
    Config {
        max_connections: 12,
        connect_timeout: Some(Duration::from_millis(100)),
        input_timeout: Some(Duration::from_millis(150)),
        max_send_queue_len: 256,
        max_input_len: 512,
        framing: Framing::Lines(LineCodec::new(Terminator::LfOrCrLf, 120).unwrap()),
    }
}

/// The line the harness sends for a `Send { len }`: printable, never a terminator.
#[must_use]
pub fn line(serial: u64, len: u8) -> Vec<u8> {
    (0..len)
        .map(|i| b'a' + ((serial + u64::from(i)) % 26) as u8)
        .collect()
}

/// Runs `ops` against a fresh harness and finishes with `shutdown_all`; returns the trace.
///
/// # Panics
/// On any contract violation.
#[must_use]
pub fn run(config: Config, seed: u64, ops: &[Op]) -> Vec<String> {
    let mut h = Harness::new(config, seed);
    for op in ops {
        h.step(op);
    }
    h.finish();
    h.trace
}

/// Fuzz entry point: the bytes choose a seed, timeouts and up to 64 ops.
pub fn fuzz(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(seed) = u64::arbitrary(&mut u) else {
        return;
    };
    let mut config = harness_config();
    if let Ok(Some(ms)) = Option::<u16>::arbitrary(&mut u) {
        config.input_timeout = Some(Duration::from_millis(u64::from(ms)));
    }
    let mut ops = Vec::new();
    // `Unstructured` yields defaults once the bytes run out; stop there instead.
    while ops.len() < 64 && !u.is_empty() {
        match Op::arbitrary(&mut u) {
            Ok(op) => ops.push(op),
            Err(_) => break,
        }
    }
    // An early `shutdown_all` would end the interesting part of the run: keep it only in the
    // last quarter (`finish` shuts down anyway).
    let quarter = ops.len() * 3 / 4;
    let mut i = 0;
    ops.retain(|op| {
        i += 1;
        !matches!(op, Op::ShutdownAll) || i > quarter
    });
    let _ = run(config, seed, &ops);
}
