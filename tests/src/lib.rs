//! Test support for moor: a simulated clock and network, drivers that run each core machine
//! against them, reference models for the proptest state-machine tests, fuzz entry points, and
//! the benchmark scenarios behind `cargo run --release -p moor-tests --bin bench`.

#![forbid(unsafe_code)]

pub mod bench;
pub mod codec;
pub mod multi;
pub mod net;
pub mod pool;
pub mod prefork;
pub mod reconnect;
pub mod sim;
