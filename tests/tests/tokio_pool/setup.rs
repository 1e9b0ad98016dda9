//! The `on_connect` setup step: run once per new connection, before any checkout sees it;
//! its failure or stall fails the attempt and leaves nothing behind. With the "for" target, it
//! opens tunnels through an HTTP `CONNECT` proxy, and TLS inside them.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use moor_tests::net::{Behavior, Server, exchange, read_head, tls_pair};
use moor_tokio::rustls::{self, pki_types::ServerName};
use moor_tokio::tokio_rustls::TlsConnector;
use moor_tokio::{Builder, CheckoutError, ConnectError, FromCache, Pool, Stream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// A builder whose setup step does one exchange of its own (so a setup that left its reply
/// unread would spoil the user's first exchange) and counts the setups that finished.
fn counting_setup(delay: Duration) -> (Builder, Arc<AtomicUsize>) {
    let done = Arc::new(AtomicUsize::new(0));
    let counter = done.clone();
    let builder = Pool::builder().on_connect(move |mut stream, target| {
        let counter = counter.clone();
        Box::pin(async move {
            assert_eq!(target.host(), "127.0.0.1", "the setup sees the target");
            exchange(&mut stream, b"setup").await?;
            tokio::time::sleep(delay).await;
            counter.fetch_add(1, Ordering::SeqCst);
            Ok(stream)
        })
    });
    (builder, done)
}

/// A setup step for targets dedicated to a destination behind an HTTP `CONNECT` proxy: asks
/// the proxy for a tunnel to `for_target()`, then, for an `https` destination, starts TLS to it
/// inside the tunnel with `tls` and hands that stream back.
fn through_proxy(builder: Builder, tls: Option<Arc<rustls::ClientConfig>>) -> Builder {
    builder.on_connect(move |mut stream, target| {
        let tls = tls.clone();
        Box::pin(async move {
            let Some((scheme, host, port)) = target.for_target() else {
                return Ok(stream);
            };
            let authority = format!("{host}:{port}");
            let request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
            stream.write_all(request.as_bytes()).await?;
            let head = read_head(&mut stream).await?;
            if !head.starts_with("HTTP/1.1 200 ") {
                let status = head.lines().next().unwrap_or_default().to_owned();
                return Err(io::Error::other(format!("the proxy refused: {status}")));
            }
            match (scheme, tls, stream) {
                ("https", Some(config), Stream::Tcp(tunnel)) => {
                    let name = ServerName::try_from(host.to_owned()).map_err(io::Error::other)?;
                    let tls = TlsConnector::from(config).connect(name, tunnel).await?;
                    Ok(Stream::Tls(Box::new(tls)))
                }
                (_, _, stream) => Ok(stream),
            }
        })
    })
}

/// The one failed attempt reached the server (which may accept after the client gave up), and
/// the server sees it closed.
async fn attempt_reached_and_closed(server: &Server) {
    eventually(5, "the server to accept it", || server.accepted() == 1).await;
    eventually(5, "the server to see it close", || server.live() == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_setup_step_runs_once_per_new_connection_before_any_checkout_gets_it() {
    bounded(10, async {
        let server = Server::start(Behavior::Echo);
        let t = target(&server);
        let (builder, setups) = counting_setup(Duration::ZERO);
        let pool = builder.max_per_key(2).build().unwrap();
        let mut c = pool.get(&t).await.unwrap();
        assert_eq!(c.from_cache(), FromCache::Fresh);
        assert_eq!(setups.load(Ordering::SeqCst), 1);
        exchange(&mut c, b"first").await.unwrap();
        drop(c);
        // Reused: no second setup.
        let mut c = pool.get(&t).await.unwrap();
        assert_eq!(c.from_cache(), FromCache::Immediate);
        exchange(&mut c, b"again").await.unwrap();
        assert_eq!(setups.load(Ordering::SeqCst), 1);
        // A second connection: its own setup.
        let mut d = pool.get(&t).await.unwrap();
        assert_eq!(d.from_cache(), FromCache::Fresh);
        exchange(&mut d, b"other").await.unwrap();
        assert_eq!(setups.load(Ordering::SeqCst), 2);
        assert_eq!(server.accepted(), 2);
        drop((c, d));
        pool.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_setup_fails_the_checkout_as_a_handshake_and_closes_the_connection() {
    bounded(10, async {
        let server = Server::start(Behavior::Echo);
        let t = target(&server);
        let pool = Pool::builder()
            .on_connect(|_, _| {
                Box::pin(async {
                    Err(io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        "wrong password",
                    ))
                })
            })
            .build()
            .unwrap();
        let err = pool.get(&t).await.unwrap_err();
        assert_eq!(
            err.kind(),
            CheckoutError::Connect(ConnectError::Handshake),
            "{err}"
        );
        let cause = err.io_error().expect("the setup's error");
        assert_eq!(cause.kind(), io::ErrorKind::PermissionDenied);
        assert!(err.to_string().ends_with("wrong password"), "{err}");
        assert_nothing_open(&pool);
        attempt_reached_and_closed(&server).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setup_that_never_finishes_is_cut_off_at_the_connect_timeout() {
    bounded(10, async {
        let server = Server::start(Behavior::Echo);
        let t = target(&server);
        let connect_timeout = Duration::from_millis(100);
        let pool = Pool::builder()
            .connect_timeout(connect_timeout)
            .on_connect(|_, _| Box::pin(std::future::pending()))
            .build()
            .unwrap();
        let started = Instant::now();
        let err = pool.get(&t).await.unwrap_err();
        assert!(err.is_timeout(), "{err}");
        assert!(started.elapsed() >= connect_timeout);
        assert_nothing_open(&pool);
        attempt_reached_and_closed(&server).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkout_dropped_during_the_setup_never_leaves_a_half_set_up_connection() {
    bounded(10, async {
        let server = Server::start(Behavior::Echo);
        let t = target(&server);
        let (builder, setups) = counting_setup(Duration::from_millis(100));
        let pool = builder.build().unwrap();
        // Started, then dropped while its connection is being set up.
        let mut first = pool.get(&t);
        assert!(!poll_in_place(&mut first));
        eventually(5, "the connection to reach the server", || {
            server.accepted() == 1
        })
        .await;
        drop(first);
        // Whatever the pool did with that connection (kept it or closed it), the next
        // checkout gets one whose setup has finished: exactly one setup per connection made.
        let mut c = pool.get(&t).await.unwrap();
        assert_eq!(setups.load(Ordering::SeqCst), server.accepted());
        exchange(&mut c, b"clean").await.unwrap();
        drop(c);
        let s = pool.stats();
        assert_eq!((s.total.open, s.total.idle), (1, 1), "{s:?}");
        pool.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setup_that_panics_fails_the_checkout_at_once_with_the_panic_message() {
    bounded(10, async {
        let server = Server::start(Behavior::Echo);
        let t = target(&server);
        // The default connect timeout is 30 s: only an answer from the attempt itself can
        // end this checkout within the test's bound.
        let pool = Pool::builder()
            .on_connect(|_, target| {
                Box::pin(async move {
                    tokio::task::yield_now().await;
                    panic!("bad setup for {target}");
                })
            })
            .build()
            .unwrap();
        let err = pool.get(&t).await.unwrap_err();
        assert_eq!(
            err.kind(),
            CheckoutError::Connect(ConnectError::Handshake),
            "{err}"
        );
        assert!(
            err.to_string()
                .ends_with(&format!("the on_connect setup panicked: bad setup for {t}")),
            "{err}"
        );
        assert_nothing_open(&pool);
        attempt_reached_and_closed(&server).await;
        // A panic when the setup is called, before any future exists: the same.
        let pool = Pool::builder()
            .on_connect(|_, _| panic!("no future at all"))
            .build()
            .unwrap();
        let err = pool.get(&t).await.unwrap_err();
        assert!(
            err.to_string()
                .ends_with("the on_connect setup panicked: no future at all"),
            "{err}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_speaks_first_is_pooled_when_the_setup_reads_its_greeting() {
    bounded(10, async {
        let server = Server::start(Behavior::Greet);
        let t = target(&server);
        let pool = Pool::builder()
            .on_connect(|mut stream, _| {
                Box::pin(async move {
                    let mut greeting = [0u8; 6];
                    stream.read_exact(&mut greeting).await?;
                    assert_eq!(&greeting, b"hello\n");
                    Ok(stream)
                })
            })
            .build()
            .unwrap();
        let mut c = pool.get(&t).await.unwrap();
        exchange(&mut c, b"request").await.unwrap();
        drop(c);
        // Idle, with nothing unread: it stays, and the next checkout reuses it.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let s = pool.stats();
        assert_eq!((s.total.open, s.total.idle), (1, 1), "{s:?}");
        let mut c = pool.get(&t).await.unwrap();
        assert_eq!(c.from_cache(), FromCache::Immediate);
        exchange(&mut c, b"again").await.unwrap();
        assert_eq!(server.accepted(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_a_connect_proxy_each_destination_gets_its_own_reused_tunnels() {
    bounded(10, async {
        let (a, b) = (Server::start(Behavior::Echo), Server::start(Behavior::Echo));
        let proxy = Server::start(Behavior::Proxy);
        // The seed's "for" target: connections to the proxy, dedicated to one destination.
        let via = target(&proxy);
        let to_a = via.with_for("tcp", "127.0.0.1", a.addr.port());
        let to_b = via.with_for("tcp", "127.0.0.1", b.addr.port());
        let pool = through_proxy(Pool::builder(), None).build().unwrap();
        let mut c = pool.get(&to_a).await.unwrap();
        exchange(&mut c, b"to a").await.unwrap();
        drop(c);
        // Another destination through the same proxy: not a's tunnel, a new one.
        let mut c = pool.get(&to_b).await.unwrap();
        assert_eq!(c.from_cache(), FromCache::Fresh);
        exchange(&mut c, b"to b").await.unwrap();
        drop(c);
        // Back to a: its tunnel, reused.
        let mut c = pool.get(&to_a).await.unwrap();
        assert_eq!(c.from_cache(), FromCache::Immediate);
        exchange(&mut c, b"a again").await.unwrap();
        drop(c);
        assert_eq!((a.accepted(), b.accepted(), proxy.accepted()), (1, 1, 2));
        assert_eq!(pool.key_stats(&to_a).idle, 1);
        assert_eq!(pool.key_stats(&to_b).idle, 1);
        // A destination the proxy refuses: the setup's error, as a handshake failure.
        let refused = via.with_for("tcp", "192.0.2.1", 80);
        let err = pool.get(&refused).await.unwrap_err();
        assert_eq!(
            err.kind(),
            CheckoutError::Connect(ConnectError::Handshake),
            "{err}"
        );
        assert!(
            err.to_string()
                .ends_with("the proxy refused: HTTP/1.1 403 Forbidden"),
            "{err}"
        );
        assert_eq!(pool.key_stats(&refused).open, 0);
        pool.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_through_a_connect_proxy_is_tls_to_the_destination_inside_the_tunnel() {
    bounded(10, async {
        let (acceptor, trusting) = tls_pair();
        let destination = Server::start_tls(Behavior::Echo, acceptor);
        let proxy = Server::start(Behavior::Proxy);
        // Plain TCP to the proxy; TLS (verified, SNI 127.0.0.1) to the destination, which the
        // setup step starts once the tunnel is open and hands back for pooling.
        let t = target(&proxy).with_for("https", "127.0.0.1", destination.addr.port());
        assert!(!t.is_tls());
        let pool = through_proxy(Pool::builder(), Some(trusting))
            .build()
            .unwrap();
        let mut c = pool.get(&t).await.unwrap();
        assert!(c.is_tls());
        assert_eq!(c.peer_addr().unwrap(), proxy.addr);
        exchange(&mut c, b"secret").await.unwrap();
        drop(c);
        // Idle inside the tunnel, watched like any TLS connection, then reused.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut c = pool.get(&t).await.unwrap();
        assert_eq!(c.from_cache(), FromCache::Immediate);
        exchange(&mut c, b"again").await.unwrap();
        drop(c);
        assert_eq!((proxy.accepted(), destination.accepted()), (1, 1));
        pool.shutdown().await;
        eventually(5, "the tunnel to close at both ends", || {
            proxy.live() == 0 && destination.live() == 0
        })
        .await;
    })
    .await;
}
