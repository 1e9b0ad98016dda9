//! # moor-core
//!
//! Connection management as pure, deterministic **sans-IO state machines**: a keyed keep-alive
//! [`pool`], a [`multi`]-connection engine, a [`reconnect`]ing link and a [`prefork`]
//! supervisor. This crate does no I/O, reads no clock, starts no thread and draws no randomness
//! of its own; runtime adapters (`moor-tokio`, …) and simulations drive it.
//!
//! ## The contract every machine follows
//!
//! ```text
//! new(config, ..) -> Result<Machine, ConfigError>         config validated once
//! handle_*(&mut self, now, ..) -> Result<_, UsageError>    inputs: app commands, driver completions
//! handle_timeout(&mut self, now)                           fires everything due; extra calls harmless
//! poll_output(&mut self) -> Option<Output>                 a queue; drain it to None
//! poll_timeout(&self) -> Option<Instant>                   absolute next deadline
//! stats(&self), state getters                              no side effects
//! ```
//!
//! 1. **Time is an input.** `now` ([`Instant`], nanoseconds since an origin the driver picks) is
//!    the first argument of every mutating call. An input with an earlier `now` than one already
//!    seen is refused with [`UsageError::TimeWentBackwards`]; `handle_timeout` with an earlier
//!    `now` does nothing.
//! 2. **Outputs are a queue** of one `#[non_exhaustive]` enum per machine. Imperative names are
//!    actions for the driver (`Resolve`, `Connect`, `Close`, `Spawn`, `Signal`); past-tense names
//!    are answers for the application (`Acquired`, `CheckoutFailed`, `Connected`, `Drained`).
//! 3. **Three kinds of failure.** Operational failures (refused, reset, timed out, DNS) are output
//!    events carrying the real cause. API misuse (unknown id, duplicate token, double checkin) is
//!    `Err(`[`UsageError`]`)` and leaves the machine unchanged. A broken internal invariant is a
//!    panic, so fuzzers find it.
//! 4. **Ids.** The caller names its requests with a [`Token`] (a reconnecting link's
//!    subscribers); a pool names each checkout with a [`CheckoutId`] it mints; the core names
//!    what it creates ([`ConnId`], [`AttemptId`], [`WorkerId`]). The core never reuses an id.
//! 5. **Deterministic.** Same config, seed and inputs give the same outputs, bit for bit: no
//!    hashing with random state, no iteration-order dependence, randomness only from a seeded
//!    [`Rng`].
//! 6. **Bounded.** Every queue and table has a limit from the config; going past it is an error.
//! 7. **Cheap.** Every operation is O(1) or O(log n); timers live in one ordered deadline index
//!    ([`Timers`]) and are re-armed lazily, so hot paths rarely touch it.
//!
//! ## A run loop
//!
//! A driver is a loop: feed an input, drain the outputs and act on them, sleep until
//! `poll_timeout()` or the next completion, call `handle_timeout`. Here a pool is driven against
//! a fake network that answers every resolution and connect at once:
//!
//! ```
//! use std::net::{IpAddr, Ipv4Addr};
//! use moor_core::pool::{CloseReason, Config, Endpoint, FromCache, Output, Pool};
//! use moor_core::{Duration, Instant};
//!
//! let mut pool = Pool::new(Config::default())?;
//! let key = Endpoint::new("http", "example.test", 80);
//! let mut now = Instant::ZERO;
//! let (mut checkouts, mut answers) = (Vec::new(), Vec::new());
//!
//! for _ in 0..3 {
//!     now = now + Duration::from_millis(10);
//!     // The pool names the checkout; its answer carries that id.
//!     checkouts.push(pool.handle_checkout(now, &key, None)?);
//!     // Drain the outputs, performing the driver's actions, until there are none.
//!     while let Some(output) = pool.poll_output() {
//!         match output {
//!             Output::Resolve { host } => {
//!                 let addrs = [IpAddr::V4(Ipv4Addr::LOCALHOST)]; // the fake resolver
//!                 pool.handle_resolved(now, &host, Ok(&addrs))?;
//!             }
//!             // The fake network: every attempt connects at once.
//!             Output::Connect { conn, attempt, .. } => pool.handle_connected(now, conn, attempt)?,
//!             Output::Acquired { checkout, conn, from_cache } => {
//!                 answers.push((checkout, from_cache));
//!                 // ... use the connection, then give it back, healthy:
//!                 pool.handle_checkin(now, conn, true)?;
//!             }
//!             Output::Close { .. } | Output::CheckoutFailed { .. } | Output::Drained => {}
//!             _ => {}
//!         }
//!     }
//! }
//! assert_eq!(answers[0], (checkouts[0], FromCache::Fresh));
//! assert_eq!(answers[1], (checkouts[1], FromCache::Immediate));
//!
//! // Sleep until each deadline and fire it: the idle connection's keep-alive runs out.
//! while let Some(at) = pool.poll_timeout() {
//!     pool.handle_timeout(at);
//! }
//! assert!(matches!(
//!     pool.poll_output(),
//!     Some(Output::Close { reason: CloseReason::IdleTimeout, .. })
//! ));
//! assert_eq!(pool.stats().total.open, 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Features
//! - `arbitrary`: derives `arbitrary::Arbitrary` for input types, for fuzzing.
#![no_std]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

extern crate alloc;
// The `arbitrary` derive expands to paths under `std`; fuzzing builds are hosted anyway.
#[cfg(any(test, feature = "arbitrary"))]
extern crate std;

mod error;
mod id;
mod rng;
mod slab;
mod time;
pub mod timer;

pub mod backoff;
pub mod codec;
pub mod multi;
pub mod pool;
pub mod prefork;
pub mod reconnect;

pub use error::{ConfigError, UsageError};
pub use id::{AttemptId, CheckoutId, ConnId, Token, WorkerId};
pub use rng::Rng;
pub use time::Instant;
pub use timer::Timers;

pub use core::time::Duration;
