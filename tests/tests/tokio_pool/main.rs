//! The tokio adapter on real loopback sockets, one module per theme: reuse and limits, faults,
//! TLS, the setup step, cancellation, and the pool's life. Every test is bounded by a timeout
//! and stops its servers. One test binary (shared helpers below), so the suite links once.

use std::future::Future;
use std::time::{Duration, Instant};

use moor_tests::net::Server;
use moor_tokio::Target;

mod cancel;
mod dns;
mod faults;
mod lifecycle;
mod reuse;
mod setup;
mod tls;

/// Runs a test body with a hard time bound.
async fn bounded<F: Future<Output = ()>>(secs: u64, body: F) {
    tokio::time::timeout(Duration::from_secs(secs), body)
        .await
        .expect("test exceeded its time bound");
}

fn target(server: &Server) -> Target {
    Target::new("tcp", "127.0.0.1", server.addr.port())
}

/// After a failed checkout: the pool holds no connection, open or being opened.
fn assert_nothing_open(pool: &moor_tokio::Pool) {
    let s = pool.stats();
    assert_eq!((s.total.open, s.total.connecting), (0, 0), "{s:?}");
}

/// Polls `cond` every 5 ms until it holds; panics after `secs`.
async fn eventually(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// As [`eventually`], for a thread outside any runtime.
fn eventually_blocking(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A tiny seeded generator, so the cancellation test is the same run every time.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Polls `fut` once in place; `true` if it finished.
fn poll_in_place<F: Future + Unpin>(fut: &mut F) -> bool {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    std::pin::Pin::new(fut).poll(&mut cx).is_ready()
}
