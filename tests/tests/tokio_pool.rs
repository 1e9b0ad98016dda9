//! The tokio adapter on real loopback sockets: reuse, hand-off, caps, eviction, faults, TLS,
//! cancellation and shutdown. Every test is bounded by a timeout and stops its servers.

use std::future::Future;
use std::net::Ipv6Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use moor_tests::net::{Behavior, Blackhole, Server, exchange, tls_pair, tls_pair_for};
use moor_tokio::rustls::HandshakeKind;
use moor_tokio::{BuildError, CheckoutError, ConnectError, FromCache, Pool, Target};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Runs a test body with a hard time bound.
async fn bounded<F: Future<Output = ()>>(secs: u64, body: F) {
    tokio::time::timeout(Duration::from_secs(secs), body)
        .await
        .expect("test exceeded its time bound");
}

fn target(server: &Server) -> Target {
    Target::new("tcp", "127.0.0.1", server.addr.port())
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_use_drop_get_reuses_the_same_connection() {
    bounded(10, async {
        let server = Server::start(Behavior::Echo);
        let pool = Pool::builder().build().unwrap();
        let t = target(&server);
        let mut c = pool.get(&t).await.unwrap();
        assert_eq!(c.from_cache(), FromCache::Fresh);
        exchange(&mut c, b"hello").await.unwrap();
        let (id, local) = (c.conn_id(), c.local_addr().unwrap());
        drop(c);
        let mut c = pool.get(&t).await.unwrap();
        assert_eq!(c.from_cache(), FromCache::Immediate);
        assert_eq!((c.conn_id(), c.local_addr().unwrap()), (id, local));
        exchange(&mut c, b"again").await.unwrap();
        drop(c);
        assert_eq!(server.accepted(), 1);
        let s = pool.stats();
        assert_eq!((s.counters.fresh, s.counters.immediate), (1, 1));
        assert_eq!((s.total.open, s.total.idle), (1, 1));
        pool.shutdown().await;
        assert_eq!(pool.stats().total.open, 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_gets_the_released_connection_deferred() {
    bounded(10, async {
        let server = Server::start(Behavior::Echo);
        let pool = Pool::builder().max_per_key(1).build().unwrap();
        let t = target(&server);
        let first = pool.get(&t).await.unwrap();
        let id = first.conn_id();
        let (p, t2) = (pool.clone(), t.clone());
        let waiter = tokio::spawn(async move {
            let mut c = p.get(&t2).await.unwrap();
            exchange(&mut c, b"x").await.unwrap();
            (c.from_cache(), c.conn_id())
        });
        eventually(5, "the second get to queue", || {
            pool.stats().total.waiters == 1
        })
        .await;
        drop(first);
        assert_eq!(waiter.await.unwrap(), (FromCache::Deferred, id));
        assert_eq!(server.accepted(), 1);
        assert_eq!(pool.stats().counters.deferred, 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caps_hold_under_200_concurrent_tasks() {
    bounded(30, async {
        let a = Server::start(Behavior::Echo);
        let b = Server::start(Behavior::Echo);
        let (max_per_key, max_open) = (4, 6);
        let pool = Pool::builder()
            .max_per_key(max_per_key)
            .max_open(max_open)
            .build()
            .unwrap();
        let targets = [target(&a), target(&b)];
        let stop = Arc::new(AtomicUsize::new(0));
        // A sampler checks the pool's own gauges while the load runs.
        let sampler = {
            let (pool, targets, stop) = (pool.clone(), targets.clone(), stop.clone());
            tokio::spawn(async move {
                let mut samples = 0;
                while stop.load(Ordering::Relaxed) == 0 {
                    let s = pool.stats();
                    assert!(s.total.open <= max_open, "global cap exceeded: {s:?}");
                    for t in &targets {
                        assert!(pool.key_stats(t).open <= max_per_key, "key cap exceeded");
                    }
                    samples += 1;
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
                samples
            })
        };
        let mut tasks = Vec::new();
        for i in 0..200 {
            let (pool, t) = (pool.clone(), targets[i % 2].clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..5 {
                    let mut c = pool.get(&t).await.unwrap();
                    exchange(&mut c, b"load").await.unwrap();
                    tokio::time::sleep(Duration::from_micros(300)).await;
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        stop.store(1, Ordering::Relaxed);
        assert!(sampler.await.unwrap() > 0);
        // The servers saw no more at once than the caps allow.
        assert!(
            a.peak() <= max_per_key && b.peak() <= max_per_key,
            "{} {}",
            a.peak(),
            b.peak()
        );
        assert!(a.peak() + b.peak() >= 2);
        let s = pool.stats();
        assert_eq!(
            s.counters.fresh + s.counters.immediate + s.counters.deferred,
            1000
        );
        assert_eq!((s.total.leased, s.total.waiters), (0, 0));
        assert!(s.total.open <= max_open);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_cap_evicts_the_least_recently_used_idle_connection_of_another_host() {
    bounded(10, async {
        let a = Server::start(Behavior::Echo);
        let b = Server::start(Behavior::Echo);
        let pool = Pool::builder().max_per_key(2).max_open(2).build().unwrap();
        let (ta, tb) = (target(&a), target(&b));
        let a1 = pool.get(&ta).await.unwrap();
        let a2 = pool.get(&ta).await.unwrap();
        let keep = a2.conn_id();
        drop(a1); // least recently used
        drop(a2);
        assert_eq!(pool.stats().total.idle, 2);
        let mut c = pool.get(&tb).await.unwrap();
        exchange(&mut c, b"b").await.unwrap();
        let s = pool.stats();
        assert_eq!(s.counters.evictions, 1);
        assert_eq!(pool.key_stats(&ta).idle, 1);
        eventually(5, "server a to see the eviction", || a.live() == 1).await;
        drop(c);
        let again = pool.get(&ta).await.unwrap();
        assert_eq!(
            (again.from_cache(), again.conn_id()),
            (FromCache::Immediate, keep)
        );
    })
    .await;
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_dropped_with_unread_data_is_discarded() {
    bounded(10, async {
        let server = Server::start(Behavior::Echo);
        let pool = Pool::builder().build().unwrap();
        let t = target(&server);
        let mut c = pool.get(&t).await.unwrap();
        exchange(&mut c, b"warm").await.unwrap();
        c.write_all(b"unread reply").await.unwrap();
        // Wait until the reply is really there (peek leaves it unread), then return the guard.
        let mut first = [0u8; 1];
        assert_eq!(c.tcp().peek(&mut first).await.unwrap(), 1);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_whose_write_side_was_shut_down_is_not_reused() {
    bounded(10, async {
        // A peer that holds every connection open and never reads, writes or closes: nothing
        // on the wire tells the pool that our side sent its FIN.
        let listener = moor_tests::net::listener().unwrap();
        let port = listener.local_addr().unwrap().port();
        let holder = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let pool = Pool::builder().build().unwrap();
        let t = Target::new("tcp", "127.0.0.1", port);
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
        holder.abort();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_guard_with_unread_data_is_discarded_even_when_the_task_budget_is_spent() {
    bounded(10, async {
        let (acceptor, trusting) = tls_pair();
        let server = Server::start_tls(Behavior::WriteIdle(Duration::from_millis(50)), acceptor);
        let t = Target::new("tls", "localhost", server.addr.port());
        let pool = Pool::builder().tls_config(trusting).build().unwrap();
        let mut c = pool.get(&t).await.unwrap();
        exchange(&mut c, b"warm").await.unwrap();
        // The server's unsolicited record arrives while we hold the guard.
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Spend this task's cooperative budget without yielding: the pool's health check must
        // still look at the socket (a budget-limited read would answer "pending": healthy).
        while tokio::task::coop::has_budget_remaining() {
            tokio::task::consume_budget().await;
        }
        drop(c);
        let s = pool.stats();
        assert_eq!((s.total.open, s.total.idle), (0, 0), "{s:?}");
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
async fn tls_with_a_trusted_certificate_works_and_an_untrusted_one_fails_clearly() {
    bounded(10, async {
        let (acceptor, trusting) = tls_pair();
        let server = Server::start_tls(Behavior::Echo, acceptor);
        // "localhost" goes through the resolver; SNI and the certificate name come from it.
        let t = Target::new("tls", "localhost", server.addr.port());
        let pool = Pool::builder().tls_config(trusting).build().unwrap();
        let mut c = pool.get(&t).await.unwrap();
        assert!(c.is_tls());
        exchange(&mut c, b"secret").await.unwrap();
        drop(c);
        // TLS 1.3 session tickets arrive after the handshake: they must not make it stale.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut c = pool.get(&t).await.unwrap();
        assert_eq!(c.from_cache(), FromCache::Immediate);
        exchange(&mut c, b"again").await.unwrap();
        drop(c);

        let untrusting = Pool::builder().build().unwrap(); // webpki roots only
        let err = untrusting.get(&t).await.unwrap_err();
        assert_eq!(err.kind(), CheckoutError::Connect(ConnectError::Handshake));
        let text = err.to_string();
        assert!(text.contains("certificate"), "unclear error: {text}");
        assert!(err.io_error().is_some());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipv6_loopback_target_connects_and_is_reused() {
    bounded(10, async {
        let server = match Server::start_on(Ipv6Addr::LOCALHOST.into(), Behavior::Echo) {
            Ok(server) => server,
            Err(e) => {
                eprintln!("skipped: this machine cannot listen on ::1 ({e})");
                return;
            }
        };
        let pool = Pool::builder().build().unwrap();
        let t: Target = format!("tcp://[::1]:{}", server.addr.port())
            .parse()
            .unwrap();
        let mut c = pool.get(&t).await.unwrap();
        assert_eq!(c.from_cache(), FromCache::Fresh);
        assert_eq!(c.peer_addr().unwrap(), server.addr);
        exchange(&mut c, b"six").await.unwrap();
        drop(c);
        let mut c = pool.get(&t).await.unwrap();
        assert_eq!(c.from_cache(), FromCache::Immediate);
        exchange(&mut c, b"again").await.unwrap();
        drop(c);
        assert_eq!(server.accepted(), 1);
        pool.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_a_literal_ip_checks_the_certificate_against_that_ip() {
    bounded(10, async {
        // The certificate names 127.0.0.1: accepted for the literal target.
        let (acceptor, trusting) = tls_pair();
        let server = Server::start_tls(Behavior::Echo, acceptor);
        let pool = Pool::builder().tls_config(trusting).build().unwrap();
        let t = Target::new("tls", "127.0.0.1", server.addr.port());
        let mut c = pool.get(&t).await.unwrap();
        assert!(c.is_tls());
        exchange(&mut c, b"by address").await.unwrap();
        drop(c);
        pool.shutdown().await;

        // A trusted certificate that names only localhost is refused for 127.0.0.1.
        let (acceptor, trusting) = tls_pair_for(&["localhost"]);
        let server = Server::start_tls(Behavior::Echo, acceptor);
        let pool = Pool::builder().tls_config(trusting).build().unwrap();
        let t = Target::new("tls", "127.0.0.1", server.addr.port());
        let err = pool.get(&t).await.unwrap_err();
        assert_eq!(err.kind(), CheckoutError::Connect(ConnectError::Handshake));
        let cause = err.io_error().expect("the TLS error").to_string();
        assert!(cause.contains("not valid for"), "{cause}");
        let s = pool.stats();
        assert_eq!((s.total.open, s.total.connecting), (0, 0), "{s:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_tls_connection_resumes_the_first_ones_session() {
    bounded(10, async {
        let (acceptor, trusting) = tls_pair();
        let server = Server::start_tls(Behavior::Echo, acceptor);
        let pool = Pool::builder().tls_config(trusting).build().unwrap();
        let t = Target::new("tls", "localhost", server.addr.port());
        let handshake = |c: &moor_tokio::Pooled| match &**c {
            moor_tokio::Stream::Tls(s) => s.get_ref().1.handshake_kind(),
            moor_tokio::Stream::Tcp(_) => None,
        };
        let mut first = pool.get(&t).await.unwrap();
        // The exchange also reads the server's TLS 1.3 session tickets.
        exchange(&mut first, b"one").await.unwrap();
        assert_eq!(handshake(&first), Some(HandshakeKind::Full));
        // Held, so the second checkout opens a new connection: every connection of the pool
        // shares one client configuration, and so one session cache.
        let mut second = pool.get(&t).await.unwrap();
        assert_eq!(second.from_cache(), FromCache::Fresh);
        exchange(&mut second, b"two").await.unwrap();
        assert_eq!(handshake(&second), Some(HandshakeKind::Resumed));
        drop((first, second));
        pool.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_peer_that_never_answers_the_handshake_times_out_and_leaks_nothing() {
    bounded(10, async {
        // The TCP connect succeeds; the ClientHello is read and never answered.
        let server = Server::start(Behavior::Silent);
        let t = Target::new("tls", "127.0.0.1", server.addr.port());
        let connect_timeout = Duration::from_millis(300);
        let pool = Pool::builder()
            .connect_timeout(connect_timeout)
            .build()
            .unwrap();
        let started = Instant::now();
        let err = pool
            .get_timeout(&t, Duration::from_secs(5))
            .await
            .unwrap_err();
        let took = started.elapsed();
        assert_eq!(
            err.kind(),
            CheckoutError::Connect(ConnectError::TimedOut),
            "{err}"
        );
        assert!(
            took >= connect_timeout && took < connect_timeout + Duration::from_millis(700),
            "{took:?}"
        );
        let s = pool.stats();
        assert_eq!((s.total.open, s.total.waiters), (0, 0));
        assert_eq!(s.counters.connect_failures, 1);
        // The abandoned handshake's socket is closed, so the server sees its end.
        eventually(5, "the server to see the socket closed", || {
            server.live() == 0
        })
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_instead_of_a_tls_handshake_is_a_clear_handshake_error() {
    bounded(10, async {
        // A plain echo server answers the ClientHello with the ClientHello: not a ServerHello.
        let server = Server::start(Behavior::Echo);
        let tls = Target::new("tls", "127.0.0.1", server.addr.port());
        let pool = Pool::builder().build().unwrap();
        let err = pool.get(&tls).await.unwrap_err();
        assert_eq!(
            err.kind(),
            CheckoutError::Connect(ConnectError::Handshake),
            "{err}"
        );
        assert!(
            err.to_string().contains("handshake"),
            "unclear error: {err}"
        );
        assert!(err.io_error().is_some(), "no cause attached: {err}");
        let s = pool.stats();
        assert_eq!((s.total.open, s.counters.connect_failures), (0, 1));
        // The pool is still fine for a target that speaks the right protocol.
        let mut c = pool.get(&target(&server)).await.unwrap();
        exchange(&mut c, b"plain").await.unwrap();
    })
    .await;
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
        let shutdown = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.shutdown().await })
        };
        for w in waiters {
            let err = w.await.unwrap().unwrap_err();
            assert!(err.is_shutdown(), "{err}");
        }
        assert!(!shutdown.is_finished(), "a leased connection is still out");
        drop(held);
        shutdown.await.unwrap();
        assert_eq!(pool.stats().total.open, 0);
        assert!(pool.get(&t).await.unwrap_err().is_shutdown());
        eventually(5, "server to see the close", || server.live() == 0).await;
    })
    .await;
}

/// Polls `fut` once in place; `true` if it finished.
fn poll_in_place<F: Future + Unpin>(fut: &mut F) -> bool {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    std::pin::Pin::new(fut).poll(&mut cx).is_ready()
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
    // A limit the core refuses.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let err = Pool::builder().max_per_key(0).build().unwrap_err();
        assert!(matches!(err, BuildError::Config(_)), "{err:?}");
        assert!(err.to_string().contains("max_per_key"), "{err}");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_options_reach_the_socket() {
    bounded(10, async {
        let server = Server::start(Behavior::Echo);
        let t = target(&server);
        // Defaults: nodelay on, keepalive off, no linger.
        let pool = Pool::builder().build().unwrap();
        let c = pool.get(&t).await.unwrap();
        let s = socket2::SockRef::from(c.tcp());
        assert!(s.tcp_nodelay().unwrap());
        assert!(!s.keepalive().unwrap());
        assert_eq!(s.linger().unwrap(), None);
        drop(c);
        // Every option set; 127.0.0.2 is loopback too.
        let bind: std::net::IpAddr = "127.0.0.2".parse().unwrap();
        let pool = Pool::builder()
            .bind_address(bind)
            .nodelay(false)
            .keepalive(Some(Duration::from_secs(30)))
            .linger(Some(Duration::ZERO))
            .build()
            .unwrap();
        let mut c = pool.get(&t).await.unwrap();
        assert_eq!(c.local_addr().unwrap().ip(), bind);
        let s = socket2::SockRef::from(c.tcp());
        assert!(!s.tcp_nodelay().unwrap());
        assert!(s.keepalive().unwrap());
        assert_eq!(s.tcp_keepalive_time().unwrap(), Duration::from_secs(30));
        assert_eq!(s.linger().unwrap(), Some(Duration::ZERO));
        exchange(&mut c, b"bound").await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_closes_at_its_idle_timeout_and_a_full_queue_refuses_at_once() {
    bounded(10, async {
        let server = Server::start(Behavior::Echo);
        let t = target(&server);
        let idle_timeout = Duration::from_millis(200);
        let pool = Pool::builder()
            .idle_timeout(idle_timeout)
            .max_per_key(1)
            .max_waiters(1)
            .build()
            .unwrap();
        let held = pool.get(&t).await.unwrap();
        let mut waiter = pool.get(&t);
        assert!(!poll_in_place(&mut waiter), "the second checkout waits");
        let started = Instant::now();
        let err = pool.get(&t).await.unwrap_err();
        assert_eq!(err.kind(), CheckoutError::QueueFull, "{err}");
        assert!(started.elapsed() < Duration::from_millis(100));
        drop(waiter);
        // Idle from its return (read before it, so `took` can only overstate the idle time):
        // the driver's timer closes it at idle_timeout, not before.
        let idle_since = Instant::now();
        drop(held);
        eventually(5, "the idle connection to close", || {
            pool.stats().total.open == 0
        })
        .await;
        let took = idle_since.elapsed();
        assert!(
            took >= idle_timeout && took < idle_timeout + Duration::from_millis(300),
            "{took:?}"
        );
        eventually(5, "the server to see it close", || server.live() == 0).await;
        let c = pool.get(&t).await.unwrap();
        assert_eq!(c.from_cache(), FromCache::Fresh);
    })
    .await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reuse_order_and_max_lifetime_reach_the_core() {
    bounded(10, async {
        let server = Server::start(Behavior::Echo);
        let t = target(&server);
        // Two connections returned a then b: LIFO (the default) reuses b, FIFO reuses a.
        for (reuse, want_first) in [
            (moor_tokio::Reuse::Lifo, false),
            (moor_tokio::Reuse::Fifo, true),
        ] {
            let pool = Pool::builder().reuse(reuse).build().unwrap();
            let (a, b) = (pool.get(&t).await.unwrap(), pool.get(&t).await.unwrap());
            let (ida, idb) = (a.conn_id(), b.conn_id());
            drop(a);
            drop(b);
            let c = pool.get(&t).await.unwrap();
            assert_eq!(c.conn_id(), if want_first { ida } else { idb }, "{reuse:?}");
            drop(c);
            pool.shutdown().await;
        }
        // A connection older than max_lifetime is closed, not reused.
        let pool = Pool::builder()
            .max_lifetime(Some(Duration::from_millis(150)))
            .build()
            .unwrap();
        let c = pool.get(&t).await.unwrap();
        let old = c.conn_id();
        drop(c);
        tokio::time::sleep(Duration::from_millis(250)).await;
        let c = pool.get(&t).await.unwrap();
        assert_eq!(c.from_cache(), FromCache::Fresh);
        assert_ne!(c.conn_id(), old);
        assert_eq!(pool.stats().total.open, 1, "the old connection was closed");
    })
    .await;
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
