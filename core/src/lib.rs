//! # moor-core
//!
//! (Crate docs are written with the pool; see the `pool` module.)
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
pub use id::{AttemptId, ConnId, Token, WorkerId};
pub use rng::Rng;
pub use time::Instant;
pub use timer::Timers;

pub use core::time::Duration;
