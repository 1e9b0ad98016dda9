//! TLS: verified certificates, literal IPs, session resumption, ALPN, and peers that stall or
//! do not speak TLS.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moor_tests::net::{Behavior, Server, exchange, tls_pair, tls_pair_for};
use moor_tokio::rustls::HandshakeKind;
use moor_tokio::tokio_rustls;
use moor_tokio::{CheckoutError, ConnectError, FromCache, Pool, Target};

use super::*;

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
        assert_nothing_open(&pool);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_hangs_up_during_the_handshake_is_a_clear_handshake_error() {
    bounded(10, async {
        // Reads the ClientHello and closes without a word.
        let server = Server::start(Behavior::HangUp);
        let pool = Pool::builder().build().unwrap();
        let t = Target::new("tls", "127.0.0.1", server.addr.port());
        let err = pool.get(&t).await.unwrap_err();
        assert_eq!(
            err.kind(),
            CheckoutError::Connect(ConnectError::Handshake),
            "{err}"
        );
        let cause = err.io_error().expect("the cause");
        assert_eq!(cause.kind(), std::io::ErrorKind::UnexpectedEof, "{err}");
        assert!(
            err.to_string()
                .contains("the peer closed the connection during the TLS handshake"),
            "unclear error: {err}"
        );
        assert_nothing_open(&pool);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_protocol_the_server_chose_with_alpn_is_on_the_guard() {
    bounded(10, async {
        let (acceptor, trusting) = tls_pair();
        let mut server_config = (**acceptor.config()).clone();
        server_config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let server = Server::start_tls(
            Behavior::Echo,
            tokio_rustls::TlsAcceptor::from(Arc::new(server_config)),
        );
        let t = Target::new("tls", "localhost", server.addr.port());
        let mut client_config = (*trusting).clone();
        client_config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let pool = Pool::builder()
            .tls_config(Arc::new(client_config))
            .build()
            .unwrap();
        let mut c = pool.get(&t).await.unwrap();
        assert_eq!(c.alpn_protocol(), Some(&b"http/1.1"[..]));
        exchange(&mut c, b"alpn").await.unwrap();
        drop(c);
        // Offered nothing: nothing chosen. Plain TCP: none.
        let pool = Pool::builder().tls_config(trusting).build().unwrap();
        assert_eq!(pool.get(&t).await.unwrap().alpn_protocol(), None);
        let plain = Server::start(Behavior::Echo);
        let c = pool.get(&target(&plain)).await.unwrap();
        assert_eq!(c.alpn_protocol(), None);
    })
    .await;
}
