//! # moor-tokio
//!
//! The moor keep-alive connection pool on tokio: real TCP sockets (with `socket2` options),
//! DNS through tokio's resolver (or one of your own: [`Builder::resolver`]), TLS through
//! rustls with verified certificates, and health checks that never hand out a connection the
//! pool knows is stale.
//!
//! Every decision (caps, FIFO hand-off, LRU eviction, deadlines, DNS coalescing) is made by the
//! sans-IO core in [`moor_core::pool`]; this crate only performs the core's actions and feeds
//! the results back. A checkout that finds an idle connection completes inside its first poll,
//! under one short lock, without a hop through another task.
//!
//! ```no_run
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let pool = moor_tokio::Pool::builder().max_per_key(8).build()?;
//! let target: moor_tokio::Target = "tcp://127.0.0.1:7000".parse()?;
//! let mut conn = pool.get(&target).await?;
//! conn.write_all(b"ping\n").await?;
//! let mut reply = [0u8; 5];
//! conn.read_exact(&mut reply).await?;
//! drop(conn); // back to the pool: the next get reuses it
//! println!("{:?}", pool.stats());
//! pool.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! A host with several addresses gets Happy Eyeballs (RFC 8305), decided by the core: IPv6 and
//! IPv4 alternate, and an attempt that has not connected after
//! [`next_attempt_delay`](Builder::next_attempt_delay) (250 ms) gets the next address raced
//! beside it. The first to connect (TCP, TLS and setup done) is pooled and the others are
//! dropped, so a blackholed address costs a quarter second, not a `connect_timeout`.
//!
//! Per-connection setup (a login, a database selection, a protocol preface, a STARTTLS
//! upgrade, a tunnel through a proxy) goes in [`Builder::on_connect`]: it runs before a new
//! connection is pooled, so no checkout ever gets one half set up.
//!
//! Health: a connection checked in with unread data, EOF or an error, or after its holder shut
//! its write side down, is closed instead of kept.
//! While a connection is idle, its socket's readiness is watched through tokio's reactor (a
//! waker per connection, no task, no extra system call); data or a close from the peer gets it
//! dropped at once.
//!
//! Logs: the pool emits [`tracing`](https://docs.rs/tracing) events under the target
//! `moor_tokio::pool`: at DEBUG each resolution, connect attempt (with its number and address),
//! cancelled attempt, connect or resolve failure (with the OS or TLS error), close (with the
//! core's reason, such as `IdleTimeout`, `Evicted` or `PeerClosed`) and failed checkout; a
//! WARN if the runtime the pool was built on shuts down under it. The cache-hit path emits
//! nothing.

#![forbid(unsafe_code)]

mod answer;
mod builder;
mod checkout;
mod connect;
mod error;
mod pool;
mod stream;
mod target;

pub use builder::{Builder, ResolveFuture, SetupFuture, default_tls_config};
pub use checkout::{Checkout, Pooled};
pub use error::{BuildError, Error};
pub use pool::Pool;
pub use stream::Stream;
pub use target::{ParseTargetError, Target};

pub use moor_core::pool::{
    CheckoutError, Config, ConnectError, Counters, FromCache, Gauges, ResolveError, Reuse, Stats,
};
pub use rustls;
pub use tokio_rustls;

/// The README's example, compiled as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
