//! Name resolution through a resolver of the test's own (`Builder::resolver`): one lookup per
//! host shared by every checkout waiting on it, every kind of failure reaching all of them with
//! its cause, the addresses tried in order, and a lookup the pool gives up on dropped, not left
//! running.

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use moor_tests::net::{Behavior, Server, exchange};
use moor_tokio::{CheckoutError, ConnectError, FromCache, Pool, ResolveError};
use tokio::sync::Semaphore;

use super::*;

fn loopback(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// Sets its flag when dropped: held by a lookup's future, it tells whether the pool dropped it.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn checkouts_waiting_on_one_host_share_one_lookup() {
    bounded(10, async {
        let server = Server::start(Behavior::Echo);
        let lookups = Arc::new(AtomicUsize::new(0));
        // The lookup answers only when the test says so, once every checkout waits on it.
        let answer = Arc::new(Semaphore::new(0));
        let pool = Pool::builder()
            .max_per_key(4)
            .resolver({
                let (lookups, answer) = (lookups.clone(), answer.clone());
                move |host| {
                    lookups.fetch_add(1, Ordering::SeqCst);
                    let answer = answer.clone();
                    Box::pin(async move {
                        assert_eq!(host, "svc.test");
                        answer.acquire().await.expect("open").forget();
                        Ok(vec![loopback(1)])
                    })
                }
            })
            .build()
            .unwrap();
        // Two keys (schemes) on one host: each has its own connections, the host one lookup.
        let port = server.addr.port();
        let keys = [
            Target::new("tcp", "svc.test", port),
            Target::new("http", "svc.test", port),
        ];
        let tasks: Vec<_> = (0..40)
            .map(|i| {
                let (pool, target) = (pool.clone(), keys[i % 2].clone());
                tokio::spawn(async move {
                    let mut conn = pool.get(&target).await.expect("checkout");
                    exchange(&mut *conn, b"ping").await.expect("exchange");
                    conn.from_cache()
                })
            })
            .collect();
        eventually(5, "every checkout waits on the lookup", || {
            let s = pool.stats().total;
            (s.waiters, s.connecting) == (40, 8)
        })
        .await;
        assert_eq!(lookups.load(Ordering::SeqCst), 1);
        answer.add_permits(1);
        let mut fresh = 0;
        for task in tasks {
            if task.await.unwrap() == FromCache::Fresh {
                fresh += 1;
            }
        }
        assert_eq!(fresh, 8, "four connections per key");
        assert_eq!(server.accepted(), 8);
        assert_eq!(lookups.load(Ordering::SeqCst), 1, "one lookup for all 40");
        // With idle connections there is nothing to look up.
        let conn = pool.get(&keys[0]).await.unwrap();
        assert_eq!(conn.from_cache(), FromCache::Immediate);
        assert_eq!(lookups.load(Ordering::SeqCst), 1);
    })
    .await;
}

#[tokio::test]
async fn a_failed_lookup_fails_every_checkout_waiting_on_it_with_its_cause() {
    bounded(10, async {
        let answer = Arc::new(Semaphore::new(0));
        let pool = Pool::builder()
            .resolver({
                let answer = answer.clone();
                move |host| {
                    let answer = answer.clone();
                    Box::pin(async move {
                        answer.acquire().await.expect("open").forget();
                        let kind = match host {
                            "gone.test" => io::ErrorKind::NotFound,
                            "slow.test" => io::ErrorKind::TimedOut,
                            "empty.test" => return Ok(Vec::new()),
                            "panic.test" => panic!("boom in the resolver"),
                            _ => io::ErrorKind::ConnectionRefused,
                        };
                        Err(io::Error::new(kind, format!("test resolver: {host}")))
                    })
                }
            })
            .build()
            .unwrap();
        let cases = [
            (
                "gone.test",
                ResolveError::NotFound,
                "test resolver: gone.test",
            ),
            (
                "slow.test",
                ResolveError::TimedOut,
                "test resolver: slow.test",
            ),
            (
                "servfail.test",
                ResolveError::Failed { code: None },
                "test resolver: servfail.test",
            ),
            (
                "empty.test",
                ResolveError::NotFound,
                "the resolver found no address for empty.test",
            ),
            (
                "panic.test",
                ResolveError::Failed { code: None },
                "the resolver panicked: boom in the resolver",
            ),
        ];
        for (host, expected, message) in cases {
            let tasks: Vec<_> = (0..3u16)
                .map(|i| {
                    let (pool, target) = (pool.clone(), Target::new("tcp", host, 1000 + i));
                    tokio::spawn(async move { pool.get(&target).await.err() })
                })
                .collect();
            eventually(5, "three checkouts wait on the lookup", || {
                pool.stats().total.waiters == 3
            })
            .await;
            answer.add_permits(1);
            for task in tasks {
                let e = task.await.unwrap().expect("the lookup failed");
                assert_eq!(e.kind(), CheckoutError::Resolve(expected), "{host}: {e}");
                let cause = e.io_error().expect("the resolver's error").to_string();
                assert_eq!(cause, message, "{host}");
            }
            assert_nothing_open(&pool);
            assert_eq!(pool.stats().total.waiters, 0);
        }
    })
    .await;
}

#[tokio::test]
async fn the_addresses_are_tried_in_the_order_given_until_one_connects() {
    bounded(10, async {
        // Only 127.0.0.1 listens; 127.0.0.2 and .3 refuse at once.
        let server = Server::start(Behavior::Echo);
        let pool = Pool::builder()
            .resolver(|host| {
                Box::pin(async move {
                    Ok(match host {
                        "third.test" => vec![loopback(2), loopback(3), loopback(2), loopback(1)],
                        _ => vec![loopback(2), loopback(3)],
                    })
                })
            })
            .build()
            .unwrap();
        let port = server.addr.port();
        let mut conn = pool
            .get(&Target::new("tcp", "third.test", port))
            .await
            .unwrap();
        assert_eq!(conn.from_cache(), FromCache::Fresh);
        assert_eq!(conn.peer_addr().unwrap(), server.addr);
        exchange(&mut *conn, b"hi").await.unwrap();
        drop(conn);

        let e = pool
            .get(&Target::new("tcp", "none.test", port))
            .await
            .expect_err("no address listens");
        assert_eq!(e.kind(), CheckoutError::Connect(ConnectError::Refused));
        assert_eq!(server.accepted(), 1);
        assert_eq!(pool.stats().total.open, 1, "only the good connection");
    })
    .await;
}

#[tokio::test]
async fn a_lookup_the_pool_gives_up_on_is_dropped_at_the_connect_timeout_or_shutdown() {
    bounded(10, async {
        let lookups = Arc::new(AtomicUsize::new(0));
        let dropped: Arc<Vec<Arc<AtomicBool>>> =
            Arc::new((0..2).map(|_| Arc::new(AtomicBool::new(false))).collect());
        let pool = Pool::builder()
            .connect_timeout(Duration::from_millis(300))
            .resolver({
                let (lookups, dropped) = (lookups.clone(), dropped.clone());
                move |_host| {
                    let n = lookups.fetch_add(1, Ordering::SeqCst);
                    let flag = DropFlag(dropped[n].clone());
                    Box::pin(async move {
                        let _flag = flag;
                        std::future::pending().await
                    })
                }
            })
            .build()
            .unwrap();
        let target = Target::new("tcp", "never.test", 1);

        let started = Instant::now();
        let e = pool.get(&target).await.expect_err("the lookup never ends");
        assert_eq!(e.kind(), CheckoutError::Resolve(ResolveError::TimedOut));
        assert!(started.elapsed() >= Duration::from_millis(300));
        eventually(2, "the timed-out lookup is dropped", || {
            dropped[0].load(Ordering::SeqCst)
        })
        .await;

        // The next checkout starts a new lookup; shutdown drops it and fails the checkout.
        let waiting = tokio::spawn({
            let (pool, target) = (pool.clone(), target.clone());
            async move { pool.get(&target).await.err() }
        });
        eventually(2, "a second lookup", || lookups.load(Ordering::SeqCst) == 2).await;
        assert!(!dropped[1].load(Ordering::SeqCst));
        pool.shutdown().await;
        let e = waiting.await.unwrap().expect("shut down");
        assert!(e.is_shutdown(), "{e}");
        eventually(2, "shutdown drops the lookup in flight", || {
            dropped[1].load(Ordering::SeqCst)
        })
        .await;
    })
    .await;
}

/// One port on two addresses, 127.0.0.2 first: it accepts and never answers the setup's
/// exchange, while 127.0.0.1 echoes. Checks out a connection with `next_attempt_delay` and
/// returns how long it took; the silent attempt must be dropped, its socket closed.
async fn past_a_silent_address(
    next_attempt_delay: Option<Duration>,
    connect_timeout: Duration,
) -> Duration {
    let server = Server::start(Behavior::Echo);
    let silent = Server::start_at((loopback(2), server.addr.port()).into(), Behavior::Silent)
        .expect("a listener on 127.0.0.2");
    let abandoned = Arc::new(AtomicBool::new(false));
    let pool = Pool::builder()
        .connect_timeout(connect_timeout)
        .next_attempt_delay(next_attempt_delay)
        .resolver(|_host| Box::pin(async { Ok(vec![loopback(2), loopback(1)]) }))
        // The setup's exchange hangs on the silent address, holding the flag.
        .on_connect({
            let abandoned = abandoned.clone();
            move |mut stream, _target| {
                let on_silent = stream.peer_addr().is_ok_and(|a| a.ip() == loopback(2));
                let flag = on_silent.then(|| DropFlag(abandoned.clone()));
                Box::pin(async move {
                    let _flag = flag;
                    exchange(&mut stream, b"hello").await?;
                    Ok(stream)
                })
            }
        })
        .build()
        .unwrap();
    let started = Instant::now();
    let mut conn = pool
        .get(&Target::new("tcp", "two.test", server.addr.port()))
        .await
        .expect("the second address answers");
    let elapsed = started.elapsed();
    assert_eq!(conn.from_cache(), FromCache::Fresh);
    assert_eq!(conn.peer_addr().unwrap(), server.addr);
    exchange(&mut *conn, b"hi").await.unwrap();
    // The first attempt was dropped, not left hanging: its socket closed.
    eventually(2, "the silent attempt is dropped", || {
        abandoned.load(Ordering::SeqCst)
    })
    .await;
    eventually(2, "the silent server sees the close", || silent.live() == 0).await;
    assert_eq!(silent.accepted(), 1);
    let s = pool.stats();
    assert_eq!((s.total.open, s.total.connecting), (1, 0), "{s:?}");
    assert_eq!(s.counters.connect_failures, 0);
    elapsed
}

#[tokio::test]
async fn happy_eyeballs_races_past_a_silent_address_after_the_delay() {
    bounded(10, async {
        let delay = Duration::from_millis(250);
        let elapsed = past_a_silent_address(Some(delay), Duration::from_secs(30)).await;
        // The second address started after the delay, and won long before the timeout.
        assert!(elapsed >= delay, "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    })
    .await;
}

#[tokio::test]
async fn one_at_a_time_a_silent_address_gives_way_to_the_next_at_the_connect_timeout() {
    bounded(10, async {
        let connect_timeout = Duration::from_millis(300);
        let elapsed = past_a_silent_address(None, connect_timeout).await;
        assert!(elapsed >= connect_timeout, "{elapsed:?}");
    })
    .await;
}
