//! Reuse and limits: the same connection again, hand-off to a waiter, caps per host and in
//! total, LRU eviction, idle timeout, reuse order, max lifetime, IPv6, socket options.

use std::net::Ipv6Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use moor_tests::net::{Behavior, Server, exchange};
use moor_tokio::{CheckoutError, ConnectError, FromCache, Pool, Target};

use super::*;

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
async fn an_ipv6_loopback_target_connects_and_is_reused() {
    bounded(10, async {
        let server = match Server::start_at((Ipv6Addr::LOCALHOST, 0).into(), Behavior::Echo) {
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
async fn a_bind_address_is_never_ignored_for_an_address_of_the_other_family() {
    bounded(10, async {
        let v4: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        let pool = Pool::builder().bind_address(v4).build().unwrap();
        // The only address is IPv6: a clear failure, not a connection from another source.
        if let Ok(v6_server) = Server::start_at((Ipv6Addr::LOCALHOST, 0).into(), Behavior::Echo) {
            let t: Target = format!("tcp://[::1]:{}", v6_server.addr.port())
                .parse()
                .unwrap();
            let err = pool.get(&t).await.unwrap_err();
            assert_eq!(
                err.kind(),
                CheckoutError::Connect(ConnectError::Other { code: None }),
                "{err}"
            );
            assert!(
                err.to_string()
                    .contains("from bind_address 127.0.0.1: another address family"),
                "{err}"
            );
            assert_eq!(v6_server.accepted(), 0);
            assert_eq!(pool.key_stats(&t).open, 0);
        } else {
            eprintln!("part skipped: this machine cannot listen on ::1");
        }
        // A name: where it has addresses of both families (localhost has on many machines,
        // only 127.0.0.1 on others), whichever comes first, the connection goes out from the
        // bind address, over IPv4.
        let server = Server::start(Behavior::Echo);
        let t = Target::new("tcp", "localhost", server.addr.port());
        let mut c = pool.get(&t).await.unwrap();
        assert_eq!(c.local_addr().unwrap().ip(), v4);
        exchange(&mut c, b"v4").await.unwrap();
    })
    .await;
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
