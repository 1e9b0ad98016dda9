//! Cancellation: dropped checkout futures and guards at any stage leak nothing, and a
//! detached stream leaves the pool.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use moor_tests::net::{Behavior, Server, exchange};
use moor_tokio::{FromCache, Pool};

use super::*;

/// Polls a future once and reports whether it finished (then drops it).
async fn poll_once<F: Future + Unpin>(mut fut: F) -> bool {
    std::future::poll_fn(|cx| {
        std::task::Poll::Ready(std::pin::Pin::new(&mut fut).poll(cx).is_ready())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_gets_with_random_drops_leak_nothing() {
    bounded(50, async {
        let server = Server::start(Behavior::Echo);
        let pool = Pool::builder().max_per_key(4).build().unwrap();
        let t = target(&server);
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let completed = Arc::new(AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..10_000 {
            let (pool, t, completed) = (pool.clone(), t.clone(), completed.clone());
            let (choice, micros) = (rng.below(4), rng.below(400));
            tasks.spawn(async move {
                let wait = Duration::from_micros(micros);
                match choice {
                    // Drop the future while it is queued or connecting.
                    0 => {
                        let _ = tokio::time::timeout(wait, pool.get(&t)).await;
                    }
                    // Poll it once, then drop it.
                    1 => {
                        let _ = poll_once(Box::pin(pool.get(&t))).await;
                    }
                    // Use the connection, then return it.
                    2 => {
                        if let Ok(Ok(mut c)) = tokio::time::timeout(wait * 10, pool.get(&t)).await {
                            exchange(&mut c, b"z").await.unwrap();
                            completed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    // Take it and discard it.
                    _ => {
                        if let Ok(Ok(c)) = tokio::time::timeout(wait * 10, pool.get(&t)).await {
                            c.discard();
                        }
                    }
                }
            });
            // Keep a bounded number in flight.
            while tasks.len() >= 64 {
                tasks.join_next().await.unwrap().unwrap();
            }
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
        // Connections opened for cancelled checkouts finish connecting and become idle.
        eventually(10, "connects to settle", || {
            pool.stats().total.connecting == 0
        })
        .await;
        let s = pool.stats();
        assert_eq!((s.total.waiters, s.total.leased), (0, 0), "{s:?}");
        assert_eq!(s.total.open, s.total.idle, "{s:?}");
        assert!(s.total.open <= 4);
        assert!(s.counters.cancellations > 0, "{s:?}");
        assert!(completed.load(Ordering::Relaxed) > 0);
        // The server sees exactly the connections the pool still holds: no socket leaked.
        eventually(10, "server to see every discarded socket close", || {
            server.live() == pool.stats().total.open
        })
        .await;
        pool.shutdown().await;
        eventually(5, "server to see the idle sockets close", || {
            server.live() == 0
        })
        .await;
    })
    .await;
}

/// Regression (from when answer slots were keyed by reused slab keys): a checkout answered but
/// never polled again, dropped after a later checkout started waiting, must give its connection
/// back (to that checkout), not withdraw the later one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_an_answered_checkout_leaves_a_later_waiter_alone() {
    bounded(10, async {
        let server = Server::start(Behavior::Echo);
        let pool = Pool::builder().max_per_key(1).build().unwrap();
        let t = target(&server);
        let held = pool.get(&t).await.unwrap();
        let id = held.conn_id();
        let mut first = pool.get(&t);
        assert!(!poll_in_place(&mut first), "the first checkout waits");
        drop(held); // answers `first`; its slot is free again
        let mut second = pool.get(&t);
        assert!(!poll_in_place(&mut second), "the second checkout waits");
        assert_eq!(pool.stats().total.waiters, 1);
        drop(first); // answered, never polled: the connection goes back, to `second`
        let c = second.await.unwrap();
        assert_eq!((c.conn_id(), c.from_cache()), (id, FromCache::Deferred));
        drop(c);
        let s = pool.stats();
        assert_eq!((s.total.open, s.total.idle, s.total.waiters), (1, 1, 0));
        assert_eq!(s.counters.cancellations, 0);
        pool.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detached_stream_leaves_the_pool_and_stays_open_for_its_new_owner() {
    bounded(10, async {
        let server = Server::start(Behavior::Echo);
        let t = target(&server);
        let pool = Pool::builder().max_per_key(1).build().unwrap();
        let held = pool.get(&t).await.unwrap();
        let id = held.conn_id();
        let mut waiter = pool.get(&t);
        assert!(
            !poll_in_place(&mut waiter),
            "the second checkout waits for the one place"
        );
        let mut stream = held.detach();
        // The place is free at once: the waiter gets a new connection, not the detached one.
        let c = waiter.await.unwrap();
        assert_eq!(c.from_cache(), FromCache::Fresh);
        assert_ne!(c.conn_id(), id);
        drop(c);
        let s = pool.stats();
        assert_eq!((s.total.open, s.total.idle, s.total.leased), (1, 1, 0));
        // The detached stream is the caller's, still open, and the pool's shutdown leaves it be.
        pool.shutdown().await;
        eventually(5, "the pool's own connection to close", || {
            server.live() == 1
        })
        .await;
        exchange(&mut stream, b"mine now").await.unwrap();
        drop(stream);
        eventually(5, "the server to see it close", || server.live() == 0).await;
    })
    .await;
}
