//! Faults: refused and silent peers, peers that close or write to idle connections, guards
//! returned in a state the next user must not get, resets, a mix of all of them, and extreme
//! durations.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use moor_tests::net::{Behavior, Blackhole, Server, exchange};
use moor_tokio::{BuildError, CheckoutError, ConnectError, FromCache, Pool, Target};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_port_fails_at_once_with_refused() {
    bounded(10, async {
        // A port that was just free: nothing listens there now.
        let port = moor_tests::net::listener()
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pool = Pool::builder().build().unwrap();
        let started = Instant::now();
        let err = pool
            .get_timeout(
                &Target::new("tcp", "127.0.0.1", port),
                Duration::from_secs(5),
            )
            .await
            .unwrap_err();
        assert!(err.is_refused(), "{err}");
        assert_eq!(err.kind(), CheckoutError::Connect(ConnectError::Refused));
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "refusal took {:?}",
            started.elapsed()
        );
        let s = pool.stats();
        assert_eq!((s.total.open, s.counters.connect_failures), (0, 1));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_that_never_accepts_times_out_at_the_deadline() {
    bounded(15, async {
        let hole = Blackhole::start().await;
        let pool = Pool::builder()
            .connect_timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let t = Target::new("tcp", "127.0.0.1", hole.addr.port());
        let deadline = Duration::from_millis(400);
        let started = Instant::now();
        let err = pool.get_timeout(&t, deadline).await.unwrap_err();
        let took = started.elapsed();
        assert_eq!(err.kind(), CheckoutError::TimedOut, "{err}");
        assert!(
            took >= deadline && took < deadline + Duration::from_millis(300),
            "{took:?}"
        );
        // The connect attempt itself gives up at connect_timeout, and then nothing is left.
        eventually(5, "the hung connect to be abandoned", || {
            pool.stats().total.open == 0
        })
        .await;
        assert_eq!(pool.stats().counters.connect_failures, 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_the_server_closes_are_dropped_and_the_next_get_is_fresh() {
    bounded(10, async {
        let server = Server::start(Behavior::CloseIdle(Duration::from_millis(100)));
        let pool = Pool::builder().build().unwrap();
        let t = target(&server);
        let mut c = pool.get(&t).await.unwrap();
        exchange(&mut c, b"hi").await.unwrap();
        drop(c);
        assert_eq!(pool.stats().total.idle, 1);
        // Dropped by the watcher long before the 15 s idle timeout.
        eventually(3, "the closed idle connection to be dropped", || {
            pool.stats().total.open == 0
        })
        .await;
        assert_eq!(pool.stats().counters.idle_expired, 0);
        let mut c = pool.get(&t).await.unwrap();
        assert_eq!(c.from_cache(), FromCache::Fresh);
        exchange(&mut c, b"ok").await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_the_server_writes_to_is_discarded() {
    bounded(10, async {
        let server = Server::start(Behavior::WriteIdle(Duration::from_millis(100)));
        let pool = Pool::builder().build().unwrap();
        let t = target(&server);
        let mut c = pool.get(&t).await.unwrap();
        exchange(&mut c, b"hi").await.unwrap();
        drop(c);
        eventually(3, "the written-to idle connection to be dropped", || {
            pool.stats().total.open == 0
        })
        .await;
        let mut c = pool.get(&t).await.unwrap();
        assert_eq!(c.from_cache(), FromCache::Fresh);
        exchange(&mut c, b"ok").await.unwrap();
        assert_eq!(server.accepted(), 2);
    })
    .await;
}

/// A connection returned without any I/O keeps the idle watch it had (the pool does not arm it
/// again while the socket still holds its waker), and one whose user waited on a read gets a
/// new one (that read replaced the watch's waker without waking it): either way the peer
/// writing to it or closing it while it is idle is seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_returned_without_io_is_still_watched_while_idle() {
    bounded(10, async {
        for behavior in [
            Behavior::WriteIdle(Duration::from_millis(150)),
            Behavior::CloseIdle(Duration::from_millis(150)),
        ] {
            let server = Server::start(behavior);
            let pool = Pool::builder().build().unwrap();
            let t = target(&server);
            drop(pool.get(&t).await.unwrap());
            let mut c = pool.get(&t).await.unwrap();
            assert_eq!(c.from_cache(), FromCache::Immediate);
            // A read that waits, then is given up before anything arrives (so nothing woke
            // the watch either).
            let mut byte = [0u8; 1];
            let read = tokio::time::timeout(Duration::from_millis(20), c.read(&mut byte)).await;
            assert!(read.is_err(), "the server sent nothing yet");
            let conn = c.conn_id();
            drop(c);
            // Checked out and back without I/O, again and again: each return keeps the watch.
            for _ in 0..100 {
                let c = pool.get(&t).await.unwrap();
                assert_eq!((c.from_cache(), c.conn_id()), (FromCache::Immediate, conn));
            }
            eventually(3, "the idle connection the peer woke to be dropped", || {
                pool.stats().total.open == 0
            })
            .await;
            let c = pool.get(&t).await.unwrap();
            assert_eq!(c.from_cache(), FromCache::Fresh);
            assert_eq!(pool.stats().counters.idle_expired, 0);
        }
    })
    .await;
}

/// Uses `c` (against an echo server), then sends a request whose reply it leaves unread, and
/// waits until that reply is really there (peek leaves it unread).
async fn leave_unread_reply(c: &mut moor_tokio::Pooled) {
    exchange(c, b"warm").await.unwrap();
    c.write_all(b"unread reply").await.unwrap();
    let mut first = [0u8; 1];
    assert_eq!(c.tcp().peek(&mut first).await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_dropped_with_unread_data_is_discarded() {
    bounded(10, async {
        let server = Server::start(Behavior::Echo);
        let pool = Pool::builder().build().unwrap();
        let t = target(&server);
        let mut c = pool.get(&t).await.unwrap();
        leave_unread_reply(&mut c).await;
        drop(c);
        let s = pool.stats();
        assert_eq!((s.total.open, s.total.idle), (0, 0), "{s:?}");
        let c = pool.get(&t).await.unwrap();
        assert_eq!(c.from_cache(), FromCache::Fresh);
        // The client's connect can complete before the server's accept loop counts it.
        eventually(5, "the server to accept a second connection", || {
            server.accepted() == 2
        })
        .await;
    })
    .await;
}

/// The same while a checkout waits for the connection: it is not handed the unread data, but a
/// new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_returned_with_unread_data_to_a_waiting_checkout_is_discarded() {
    bounded(10, async {
        let server = Server::start(Behavior::Echo);
        let pool = Pool::builder().max_per_key(1).build().unwrap();
        let t = target(&server);
        let mut c = pool.get(&t).await.unwrap();
        leave_unread_reply(&mut c).await;
        let waiter = tokio::spawn({
            let (pool, t) = (pool.clone(), t.clone());
            async move {
                let mut c = pool.get(&t).await.unwrap();
                let from = c.from_cache();
                exchange(&mut c, b"clean").await.unwrap();
                from
            }
        });
        eventually(3, "the checkout to wait", || {
            pool.stats().total.waiters == 1
        })
        .await;
        drop(c);
        assert_eq!(waiter.await.unwrap(), FromCache::Fresh);
        assert_eq!(pool.stats().counters.deferred, 0);
        eventually(5, "the server to accept a second connection", || {
            server.accepted() == 2
        })
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_whose_write_side_was_shut_down_is_not_reused() {
    bounded(10, async {
        // A peer that holds every connection open and never reads, writes or closes: nothing
        // on the wire tells the pool that our side sent its FIN.
        let server = Server::start(Behavior::Hold);
        let pool = Pool::builder().build().unwrap();
        let t = target(&server);
        let mut c = pool.get(&t).await.unwrap();
        let first = c.conn_id();
        c.write_all(b"last request").await.unwrap();
        c.shutdown().await.unwrap();
        drop(c);
        let s = pool.stats();
        assert_eq!((s.total.open, s.total.idle), (0, 0), "{s:?}");
        // The next user gets a connection it can write to.
        let mut c = pool.get(&t).await.unwrap();
        assert_eq!(c.from_cache(), FromCache::Fresh);
        assert_ne!(c.conn_id(), first);
        c.write_all(b"next request").await.unwrap();
        drop(c);
        pool.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_marked_broken_or_discarded_is_closed_and_the_server_sees_it_go() {
    bounded(10, async {
        let server = Server::start(Behavior::Echo);
        let pool = Pool::builder().build().unwrap();
        let t = target(&server);
        // A healthy connection the caller knows is not reusable (say, a response it abandoned
        // half way that the peer has not sent yet): nothing on the socket says so.
        let mut c = pool.get(&t).await.unwrap();
        exchange(&mut c, b"one").await.unwrap();
        let first = c.conn_id();
        c.mark_broken();
        drop(c);
        let s = pool.stats();
        assert_eq!((s.total.open, s.total.idle), (0, 0), "{s:?}");
        eventually(5, "the server to see it close", || server.live() == 0).await;
        let mut c = pool.get(&t).await.unwrap();
        assert_eq!(c.from_cache(), FromCache::Fresh);
        assert_ne!(c.conn_id(), first);
        exchange(&mut c, b"two").await.unwrap();
        c.discard();
        let s = pool.stats();
        assert_eq!((s.total.open, s.total.idle), (0, 0), "{s:?}");
        eventually(5, "the server to see it close", || server.live() == 0).await;
        assert_eq!(server.accepted(), 2);
        pool.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_in_the_middle_of_use_reaches_the_user_and_the_pool_stays_consistent() {
    bounded(10, async {
        let server = Server::start(Behavior::Echo);
        let pool = Pool::builder().build().unwrap();
        let t = target(&server);
        let mut c = pool.get(&t).await.unwrap();
        exchange(&mut c, b"fine").await.unwrap();
        c.write_all(b"!reset").await.unwrap();
        let mut buf = [0u8; 16];
        let err = c.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
        drop(c);
        let s = pool.stats();
        assert_eq!(
            (s.total.open, s.total.leased, s.total.idle),
            (0, 0, 0),
            "{s:?}"
        );
        let mut c = pool.get(&t).await.unwrap();
        assert_eq!(c.from_cache(), FromCache::Fresh);
        exchange(&mut c, b"after").await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_mixed_faults_every_checkout_is_answered_and_nothing_stale_or_leaked() {
    bounded(60, async {
        // Three hosts: a steady echo server (sometimes told to reset), a server that closes
        // connections quiet for 5 ms, and one that writes to connections quiet for 5 ms.
        let servers = [
            Server::start(Behavior::Echo),
            Server::start(Behavior::CloseIdle(Duration::from_millis(5))),
            Server::start(Behavior::WriteIdle(Duration::from_millis(5))),
        ];
        let targets: Vec<Target> = servers.iter().map(target).collect();
        // Three hosts wanting up to 3 connections each, 5 in total: eviction at the cap.
        let pool = Pool::builder()
            .max_per_key(3)
            .max_open(5)
            .idle_timeout(Duration::from_millis(50))
            .build()
            .unwrap();
        #[derive(Default)]
        struct Tally {
            ok: AtomicUsize,
            timeouts: AtomicUsize,
            steady_failures: AtomicUsize,
        }
        let tally = Arc::new(Tally::default());
        let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..3_000 {
            let host = rng.below(3) as usize;
            let (action, timeout_ms) = (rng.below(6), 1 + rng.below(20));
            let (pool, t, tally) = (pool.clone(), targets[host].clone(), tally.clone());
            tasks.spawn(async move {
                // The pool's own deadline, so every checkout ends with the pool's answer.
                let mut c = match pool
                    .get_timeout(&t, Duration::from_millis(timeout_ms))
                    .await
                {
                    Ok(c) => c,
                    Err(e) => {
                        assert!(e.is_timeout(), "only deadlines can fail a checkout: {e}");
                        tally.timeouts.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                };
                tally.ok.fetch_add(1, Ordering::Relaxed);
                let used = match action {
                    // Reset by the server mid-use: the holder sees an error.
                    0 if host == 0 => {
                        c.write_all(b"!reset").await.unwrap();
                        let mut buf = [0u8; 8];
                        assert!(c.read(&mut buf).await.is_err());
                        return;
                    }
                    1 => {
                        c.discard();
                        return;
                    }
                    // Held a while: others queue behind it and get it Deferred.
                    2 => {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                        exchange(&mut c, b"held").await
                    }
                    _ => exchange(&mut c, b"plain").await,
                };
                // The steady server never closes or writes first: a stale connection from it
                // would be the pool's fault. The others may race the holder (as with any pool).
                if host == 0 && used.is_err() {
                    tally.steady_failures.fetch_add(1, Ordering::Relaxed);
                }
            });
            while tasks.len() >= 32 {
                tasks.join_next().await.unwrap().unwrap();
            }
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
        eventually(10, "connects to settle", || {
            pool.stats().total.connecting == 0
        })
        .await;
        let (s, steady_idle) = (pool.stats(), pool.key_stats(&targets[0]).idle);
        let (ok, timeouts) = (
            tally.ok.load(Ordering::Relaxed),
            tally.timeouts.load(Ordering::Relaxed),
        );
        assert_eq!(ok + timeouts, 3_000);
        assert_eq!(tally.steady_failures.load(Ordering::Relaxed), 0);
        // The pool's books agree with what its users saw.
        let c = &s.counters;
        assert_eq!((c.immediate + c.deferred + c.fresh) as usize, ok, "{s:?}");
        assert_eq!(c.timeouts as usize, timeouts, "{s:?}");
        assert!(
            c.evictions > 0 && c.deferred > 0,
            "the faults were exercised: {s:?}"
        );
        assert_eq!((s.total.waiters, s.total.leased), (0, 0), "{s:?}");
        assert_eq!(s.total.open, s.total.idle, "{s:?}");
        assert!(s.total.open <= 5, "{s:?}");
        for t in &targets {
            assert!(pool.key_stats(t).open <= 3, "{t}: {:?}", pool.key_stats(t));
        }
        // Every socket the pool let go of is closed: the servers see only what it holds.
        let live = || servers.iter().map(Server::live).sum::<usize>();
        eventually(10, "servers to see exactly the pool's connections", || {
            live() == pool.stats().total.open
        })
        .await;
        // Left idle, connections go: within 5 ms those the two servers close or write to, and
        // only the steady server's ones at the 50 ms idle timeout.
        eventually(5, "every idle connection to be dropped", || {
            pool.stats().total.open == 0
        })
        .await;
        let expired = pool.stats().counters.idle_expired - s.counters.idle_expired;
        assert_eq!(expired, steady_idle as u64);
        eventually(5, "servers to see them close", || live() == 0).await;
        pool.shutdown().await;
        eventually(5, "servers to see every connection close", || live() == 0).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extreme_durations_neither_overflow_nor_hang() {
    bounded(10, async {
        let server = Server::start(Behavior::Echo);
        let t = target(&server);
        // Every timeout at Duration::MAX: deadlines saturate instead of overflowing.
        let pool = Pool::builder()
            .max_per_key(1)
            .request_timeout(Duration::MAX)
            .idle_timeout(Duration::MAX)
            .connect_timeout(Duration::MAX)
            .max_lifetime(Some(Duration::MAX))
            .build()
            .unwrap();
        let held = pool.get_timeout(&t, Duration::MAX).await.unwrap();
        let (p, t2) = (pool.clone(), t.clone());
        let waiter = tokio::spawn(async move {
            p.get_timeout(&t2, Duration::MAX)
                .await
                .map(|c| c.from_cache())
        });
        eventually(5, "the waiter to queue", || pool.stats().total.waiters == 1).await;
        // A zero timeout fails at once when it would have to wait …
        let err = pool.get_timeout(&t, Duration::ZERO).await.unwrap_err();
        assert_eq!(err.kind(), CheckoutError::TimedOut, "{err}");
        drop(held);
        assert_eq!(waiter.await.unwrap().unwrap(), FromCache::Deferred);
        // … and is served when an idle connection is there.
        let c = pool.get_timeout(&t, Duration::ZERO).await.unwrap();
        assert_eq!(c.from_cache(), FromCache::Immediate);
        drop(c);
        pool.shutdown().await;
        assert_eq!(pool.stats().total.open, 0);
        // Zero for a timeout the pool needs is refused when building, naming the option.
        for (builder, field) in [
            (
                Pool::builder().request_timeout(Duration::ZERO),
                "request_timeout",
            ),
            (Pool::builder().idle_timeout(Duration::ZERO), "idle_timeout"),
            (
                Pool::builder().connect_timeout(Duration::ZERO),
                "connect_timeout",
            ),
        ] {
            let err = builder.build().unwrap_err();
            assert!(matches!(err, BuildError::Config(_)), "{err:?}");
            assert!(err.to_string().contains(field), "{err}");
        }
    })
    .await;
}
