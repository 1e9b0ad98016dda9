//! The pool's life: shutdown, the last handle dropped, build errors, its runtime shutting
//! down, and use from other threads and runtimes.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moor_tests::net::{Behavior, Server, exchange};
use moor_tokio::{BuildError, FromCache, Pool, Target};

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_fails_every_waiter_and_closes_everything() {
    bounded(10, async {
        let server = Server::start(Behavior::Echo);
        let pool = Pool::builder().max_per_key(1).build().unwrap();
        let t = target(&server);
        let held = pool.get(&t).await.unwrap();
        let mut waiters = Vec::new();
        for _ in 0..10 {
            let (pool, t) = (pool.clone(), t.clone());
            waiters.push(tokio::spawn(async move { pool.get(&t).await.map(|_| ()) }));
        }
        eventually(5, "ten waiters to queue", || {
            pool.stats().total.waiters == 10
        })
        .await;
        // Two shutdowns at once (say, two parts of a program winding down): both wait.
        let shutdowns = [(); 2].map(|()| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.shutdown().await })
        });
        for w in waiters {
            let err = w.await.unwrap().unwrap_err();
            assert!(err.is_shutdown(), "{err}");
        }
        assert!(
            shutdowns.iter().all(|s| !s.is_finished()),
            "a leased connection is still out"
        );
        drop(held);
        for shutdown in shutdowns {
            shutdown.await.unwrap();
        }
        assert_eq!(pool.stats().total.open, 0);
        // Once drained, another shutdown returns at once.
        tokio::time::timeout(Duration::from_secs(1), pool.shutdown())
            .await
            .expect("a drained pool's shutdown does not wait");
        assert!(pool.get(&t).await.unwrap_err().is_shutdown());
        eventually(5, "server to see the close", || server.live() == 0).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_last_handle_closes_idle_connections_and_a_leased_one_on_its_return() {
    bounded(10, async {
        let server = Server::start(Behavior::Echo);
        let tasks = || {
            tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks()
        };
        let before = tasks();
        let pool = Pool::builder().build().unwrap();
        let t = target(&server);
        let mut held = pool.get(&t).await.unwrap();
        drop(pool.get(&t).await.unwrap()); // a second connection, now idle
        eventually(5, "two connections at the server", || server.live() == 2).await;
        drop(pool);
        // The idle one closes at once; the leased one still works for its holder.
        eventually(5, "the idle connection to close", || server.live() == 1).await;
        exchange(&mut held, b"still mine").await.unwrap();
        drop(held);
        eventually(5, "the returned connection to close", || server.live() == 0).await;
        // The pool's driver and connect tasks are gone (and so are the server's per-connection
        // tasks): the runtime is back to what it ran before the pool.
        eventually(5, "the pool's tasks to end", || tasks() == before).await;
    })
    .await;
}

#[test]
fn build_errors_are_clear_and_need_no_runtime_to_report() {
    // Outside a runtime: a clear error, not a panic.
    let err = Pool::builder().build().unwrap_err();
    assert_eq!(err, BuildError::NoRuntime);
    assert!(err.to_string().contains("tokio runtime"), "{err}");
    // A limit the core refuses, and socket options the OS would refuse on every connect or
    // change silently (a 500 ms linger would become 0: a reset on every close): each is
    // reported by name, before the runtime is looked for.
    let secs = Duration::from_secs;
    let cases: [(moor_tokio::Builder, &str); 7] = [
        (
            Pool::builder().max_per_key(0),
            "`max_per_key` must be greater than zero",
        ),
        (
            Pool::builder().keepalive(Some(Duration::ZERO)),
            "`keepalive` must be",
        ),
        (
            Pool::builder().keepalive(Some(Duration::from_millis(1500))),
            "`keepalive`",
        ),
        (Pool::builder().keepalive(Some(secs(32_768))), "`keepalive`"),
        (
            Pool::builder().linger(Some(Duration::from_millis(500))),
            "`linger` must be",
        ),
        (Pool::builder().linger(Some(secs(1 << 31))), "`linger`"),
        (Pool::builder().linger(Some(Duration::MAX)), "`linger`"),
    ];
    for (builder, text) in cases {
        let err = builder.build().unwrap_err();
        assert!(matches!(err, BuildError::Config(_)), "{err:?}");
        assert!(err.to_string().contains(text), "{err}");
    }
    // The bounds themselves are fine (and reach the socket: see socket_options_reach_the_socket).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for builder in [
            Pool::builder().keepalive(Some(secs(1))),
            Pool::builder().keepalive(Some(secs(32_767))),
            Pool::builder().linger(Some(Duration::ZERO)),
            Pool::builder().linger(Some(secs(65_535))),
        ] {
            builder.build().unwrap();
        }
    });
}

/// A compile-time check: the handles can be moved into spawned tasks and shared across threads.
#[test]
fn the_public_types_cross_tasks_and_threads() {
    fn send_sync<T: Send + Sync + 'static>() {}
    send_sync::<Pool>();
    send_sync::<Target>();
    send_sync::<moor_tokio::Pooled>();
    send_sync::<moor_tokio::Error>();
    send_sync::<BuildError>();
    send_sync::<moor_tokio::Builder>();
    send_sync::<moor_tokio::Stream>();
    fn send<T: Send>(_: &T) {}
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let pool = Pool::builder().build().unwrap();
    let t = Target::new("tcp", "127.0.0.1", 9);
    send(&pool.get(&t));
}

#[test]
fn a_pool_whose_runtime_shuts_down_fails_checkouts_clearly_instead_of_hanging() {
    let runtime = |workers| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
            .unwrap()
    };
    // The server, the pool, and the pool's users each on their own runtime.
    let (servers, home, other) = (runtime(1), runtime(1), runtime(1));
    let server = servers.block_on(async { Server::start(Behavior::Echo) });
    let t = target(&server);
    let (pool, held) = home.block_on(async {
        let pool = Pool::builder().max_per_key(1).build().unwrap();
        let held = pool.get(&t).await.unwrap();
        (pool, held)
    });
    let waiter = other.spawn({
        let (pool, t) = (pool.clone(), t.clone());
        async move { pool.get(&t).await.map(|c| c.conn_id()) }
    });
    eventually_blocking(5, "the waiter to queue", || pool.stats().total.waiters == 1);

    drop(home);

    let expect_clear = |e: moor_tokio::Error| {
        assert!(e.is_shutdown(), "{e}");
        assert!(
            e.to_string()
                .contains("runtime the pool was built on has shut down"),
            "{e}"
        );
    };
    other.block_on(async {
        bounded(5, async {
            // The queued checkout is answered, not left to wait for a driver that is gone …
            expect_clear(waiter.await.unwrap().unwrap_err());
            // … and a new one is refused at once instead of spawning a connect that never runs.
            expect_clear(pool.get(&t).await.unwrap_err());
            assert_eq!(pool.stats().total.connecting, 0);
            // The leased connection closes on its return, and then the pool has drained.
            drop(held);
            pool.shutdown().await;
            let s = pool.stats();
            assert_eq!((s.total.open, s.total.waiters), (0, 0), "{s:?}");
        })
        .await;
    });
}

/// Runs a future on the calling thread, outside any runtime (an executor of the caller's own).
fn block_on_this_thread<F: Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let mut fut = std::pin::pin!(fut);
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        if let std::task::Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        assert!(Instant::now() < end, "the future did not finish within 5 s");
        std::thread::park_timeout(Duration::from_millis(10));
    }
}

#[test]
fn plain_threads_outside_any_runtime_can_check_out_wait_and_return() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let server = rt.block_on(async { Server::start(Behavior::Echo) });
    let t = target(&server);
    let pool = rt.block_on(async { Pool::builder().max_per_key(1).build().unwrap() });
    // Only the pool's runtime runs tokio; these threads drive the futures themselves.
    let mut held = block_on_this_thread(pool.get(&t)).unwrap();
    assert_eq!(held.from_cache(), FromCache::Fresh);
    block_on_this_thread(exchange(&mut held, b"hi")).unwrap();
    let waiter = std::thread::spawn({
        let (pool, t) = (pool.clone(), t.clone());
        move || block_on_this_thread(pool.get(&t)).map(|c| c.from_cache())
    });
    eventually_blocking(5, "the waiter to queue", || pool.stats().total.waiters == 1);
    drop(held);
    assert_eq!(waiter.join().unwrap().unwrap(), FromCache::Deferred);
    let c = block_on_this_thread(pool.get(&t)).unwrap();
    assert_eq!(c.from_cache(), FromCache::Immediate);
    drop(c);
    let s = pool.stats();
    assert_eq!(
        (s.counters.fresh, s.counters.deferred, s.counters.immediate),
        (1, 1, 1)
    );
    rt.block_on(async { bounded(5, pool.shutdown()).await });
}
