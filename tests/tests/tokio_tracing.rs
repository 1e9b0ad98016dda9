//! The tokio adapter's `tracing` events: a connection's life (resolve, connect, close and why)
//! and every failure can be followed in the logs, and they show what the core decided (literal
//! IPs are not looked up; concurrent checkouts share one lookup; a lookup given up on is
//! dropped; a connect attempt that loses a Happy Eyeballs race is cancelled). The subscriber
//! is process-wide, so this file holds one test.

use std::future::Future;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use moor_tests::net::{Behavior, Server, exchange};
use moor_tokio::{FromCache, Pool, Target};
use tokio::io::AsyncWriteExt;

/// Where the subscriber writes: one shared buffer.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    /// Takes the lines written so far.
    fn take(&self) -> Vec<String> {
        let bytes = std::mem::take(&mut *self.0.lock().unwrap());
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// Asserts that some line has every one of `parts`.
fn has_line(lines: &[String], parts: &[&str]) {
    assert!(
        lines.iter().any(|l| parts.iter().all(|p| l.contains(p))),
        "no line with all of {parts:?} in:\n{}",
        lines.join("\n")
    );
}

#[test]
fn a_connections_life_and_every_failure_are_traced() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .without_time()
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), async {
            let pool = Pool::builder().build().unwrap();

            // A refused connect: the attempt and its error.
            let port = moor_tests::net::listener()
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let refused = Target::new("tcp", "127.0.0.1", port);
            let err = pool.get(&refused).await.unwrap_err();
            assert!(err.is_refused(), "{err}");
            let lines = capture.take();
            let addr = format!("addr=127.0.0.1:{port}");
            has_line(&lines, &["DEBUG", "connecting", "conn=", &addr]);
            has_line(&lines, &["connect failed", "refused"]);
            has_line(&lines, &["checkout failed", "refused"]);
            // A literal IP is not looked up.
            assert!(
                !lines.iter().any(|l| l.contains("resolving")),
                "{}",
                lines.join("\n")
            );

            // A connection opened, used, then returned with unread data: closed, and why.
            let server = Server::start(Behavior::Echo);
            let t = Target::new("tcp", "localhost", server.addr.port());
            let mut c = pool.get(&t).await.unwrap();
            let conn = format!("conn={}", c.conn_id().to_raw());
            exchange(&mut c, b"hello").await.unwrap();
            c.write_all(b"unread").await.unwrap();
            let mut first = [0u8; 1];
            assert_eq!(c.tcp().peek(&mut first).await.unwrap(), 1);
            drop(c);
            let lines = capture.take();
            has_line(&lines, &["resolving", "host=localhost"]);
            has_line(&lines, &["resolved", "host=localhost", "127.0.0.1"]);
            has_line(&lines, &["connected", &conn]);
            has_line(&lines, &["unread data", &conn]);
            has_line(&lines, &["closing", &conn, "reason=Discarded"]);

            // Shutdown: idle connections close with their reason, then the pool drains.
            drop(pool.get(&t).await.unwrap());
            pool.shutdown().await;
            let lines = capture.take();
            has_line(&lines, &["shutting down"]);
            has_line(&lines, &["closing", "reason=Shutdown"]);
            has_line(&lines, &["drained"]);
        })
        .await
        .expect("test exceeded its time bound");
    });
    drop(rt);

    // DNS coalescing: eight checkouts for a name, all asked before any answer can arrive (one
    // thread, and one poll reaches all eight), share one resolution and open eight connections.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), async {
            let server = Server::start(Behavior::Echo);
            let pool = Pool::builder().max_per_key(8).build().unwrap();
            let t = Target::new("tcp", "localhost", server.addr.port());
            let _ = capture.take();
            let mut gets: Vec<_> = (0..8).map(|_| Box::pin(pool.get(&t))).collect();
            let mut got = Vec::new();
            std::future::poll_fn(|cx| {
                gets.retain_mut(|g| match g.as_mut().poll(cx) {
                    Poll::Ready(r) => {
                        got.push(r.expect("a checkout through the shared resolution"));
                        false
                    }
                    Poll::Pending => true,
                });
                if gets.is_empty() {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            })
            .await;
            assert!(got.iter().all(|c| c.from_cache() == FromCache::Fresh));
            let lines = capture.take();
            let count = |what: &str, and: &str| {
                lines
                    .iter()
                    .filter(|l| l.contains(what) && l.contains(and))
                    .count()
            };
            // Counting first attempts only: `localhost` may also have an address that refuses.
            assert_eq!(
                (
                    count("resolving", ""),
                    count("connecting conn=", "attempt=0")
                ),
                (1, 8),
                "{}",
                lines.join("\n")
            );
            drop(got);
            pool.shutdown().await;

            // A lookup the pool gives up on: the give-up and the failure, with the cause.
            let pool = Pool::builder()
                .connect_timeout(Duration::from_millis(100))
                .resolver(|_host| Box::pin(std::future::pending()))
                .build()
                .unwrap();
            let err = pool
                .get(&Target::new("tcp", "never.test", 1))
                .await
                .unwrap_err();
            assert!(err.is_timeout(), "{err}");
            let lines = capture.take();
            has_line(&lines, &["resolving", "host=never.test"]);
            has_line(&lines, &["lookup abandoned", "host=never.test"]);
            has_line(&lines, &["checkout failed", "resolver timed out"]);
            pool.shutdown().await;

            // Happy Eyeballs: a silent first address, raced by the second after the delay;
            // the loser is cancelled.
            let server = Server::start(Behavior::Echo);
            let silent = Server::start_at(
                ([127, 0, 0, 2], server.addr.port()).into(),
                Behavior::Silent,
            )
            .expect("a listener on 127.0.0.2");
            let pool = Pool::builder()
                .next_attempt_delay(Some(Duration::from_millis(50)))
                .resolver(|_host| {
                    let addrs = [[127, 0, 0, 2], [127, 0, 0, 1]].map(std::net::IpAddr::from);
                    Box::pin(async move { Ok(addrs.to_vec()) })
                })
                // The silent address accepts: the setup's exchange is what never finishes.
                .on_connect(|mut stream, _target| {
                    Box::pin(async move {
                        exchange(&mut stream, b"hello").await?;
                        Ok(stream)
                    })
                })
                .build()
                .unwrap();
            let conn = pool
                .get(&Target::new("tcp", "two.test", server.addr.port()))
                .await
                .unwrap();
            let lines = capture.take();
            let id = format!("conn={}", conn.conn_id().to_raw());
            has_line(&lines, &["connecting", &id, "attempt=0", "127.0.0.2"]);
            has_line(&lines, &["connecting", &id, "attempt=1", "127.0.0.1"]);
            has_line(&lines, &["connected", &id, "attempt=1"]);
            has_line(&lines, &["connect attempt cancelled", &id, "attempt=0"]);
            drop(conn);
            pool.shutdown().await;
            drop(silent);
        })
        .await
        .expect("test exceeded its time bound");
    });
}
