//! Real loopback servers for the runtime adapters' tests and benchmarks.
//!
//! Every server listens on 127.0.0.1 (or `::1`, when asked) with a backlog of 4096 (the
//! default 128 overflows under connection bursts and stalls clients for a second), runs until
//! its handle is dropped, and counts the connections it sees so tests can check what the pool
//! did on the wire.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The backlog every test server listens with.
pub const BACKLOG: i32 = 4096;

/// A std listener on `addr` with a backlog of `backlog`, through socket2.
///
/// # Errors
/// The operating system's error.
pub fn std_listener(addr: SocketAddr, backlog: i32) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// A tokio listener on 127.0.0.1 (any port) with a backlog of [`BACKLOG`].
///
/// # Errors
/// The operating system's error.
pub fn listener() -> io::Result<TcpListener> {
    listener_at(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
}

/// A tokio listener on `addr` (port 0: any port) with a backlog of [`BACKLOG`].
///
/// # Errors
/// The operating system's error (for `::1`, on a machine without IPv6: `EADDRNOTAVAIL`).
pub fn listener_at(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::from_std(std_listener(addr, BACKLOG)?)
}

/// What a test server does with each connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behavior {
    /// Echoes every byte back. The bytes `!reset` make it reset the connection instead.
    Echo,
    /// Echoes, and closes a connection that stays quiet for this long.
    CloseIdle(Duration),
    /// Echoes, and writes `surprise` on a connection that stays quiet for this long.
    WriteIdle(Duration),
    /// Reads one byte, writes one byte back, and closes first (for connect-rate benchmarks:
    /// the server's close leaves `TIME_WAIT` on the server side, not on the client's ports).
    OneShot,
    /// Reads and discards everything and never writes: a peer that never answers.
    Silent,
    /// Never reads, writes or closes (until the server is dropped): a peer that gives no sign
    /// of anything the client does, a FIN included.
    Hold,
    /// Reads once (a request, a ClientHello) and closes without a word.
    HangUp,
    /// Speaks first: writes `hello\n` on accepting (as SMTP or MySQL servers greet), then
    /// echoes.
    Greet,
    /// An HTTP `CONNECT` proxy that tunnels to loopback addresses only (`CONNECT
    /// 127.0.0.1:port`); any other destination gets `403 Forbidden` and a close.
    Proxy,
}

/// Connection counts a server keeps.
#[derive(Debug, Default)]
pub struct Counts {
    /// Connections accepted.
    pub accepted: AtomicUsize,
    /// Connections open right now (accepted and not yet finished).
    pub live: AtomicUsize,
    /// The most connections open at once.
    pub peak: AtomicUsize,
}

/// A running test server; stopped when dropped.
#[derive(Debug)]
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    /// What it has seen.
    pub counts: Arc<Counts>,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    /// Starts a plain TCP server with `behavior` on 127.0.0.1.
    ///
    /// # Panics
    /// If no listener can be made.
    pub fn start(behavior: Behavior) -> Server {
        Server::start_with(listener().expect("test listener"), behavior, None)
    }

    /// Starts a plain TCP server with `behavior` on `addr`: another loopback address (`::1`,
    /// 127.0.0.2), or the port of a server on another address (port 0: any port).
    ///
    /// # Errors
    /// When no listener can be made on `addr`.
    pub fn start_at(addr: SocketAddr, behavior: Behavior) -> io::Result<Server> {
        Ok(Server::start_with(listener_at(addr)?, behavior, None))
    }

    /// Starts a TLS server (certificate and key given) with `behavior` on 127.0.0.1.
    ///
    /// # Panics
    /// If no listener can be made.
    pub fn start_tls(behavior: Behavior, acceptor: tokio_rustls::TlsAcceptor) -> Server {
        Server::start_with(listener().expect("test listener"), behavior, Some(acceptor))
    }

    fn start_with(
        listener: TcpListener,
        behavior: Behavior,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Server {
        let addr = listener.local_addr().expect("bound");
        let counts = Arc::new(Counts::default());
        let c = counts.clone();
        let task = tokio::spawn(async move {
            // Per-connection tasks are tracked so dropping the server ends them too.
            let mut conns = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((socket, _)) = accepted else { continue };
                        let _ = socket.set_nodelay(true);
                        c.accepted.fetch_add(1, Ordering::Relaxed);
                        let live = c.live.fetch_add(1, Ordering::Relaxed) + 1;
                        c.peak.fetch_max(live, Ordering::Relaxed);
                        let c = c.clone();
                        let tls = tls.clone();
                        conns.spawn(async move {
                            match tls {
                                None => serve(socket, behavior).await,
                                Some(acceptor) => {
                                    if let Ok(s) = acceptor.accept(socket).await {
                                        serve(s, behavior).await;
                                    }
                                }
                            }
                            c.live.fetch_sub(1, Ordering::Relaxed);
                        });
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        Server { addr, counts, task }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.counts.accepted.load(Ordering::Relaxed)
    }

    /// Connections open right now.
    pub fn live(&self) -> usize {
        self.counts.live.load(Ordering::Relaxed)
    }

    /// The most connections that were open at once.
    pub fn peak(&self) -> usize {
        self.counts.peak.load(Ordering::Relaxed)
    }
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin + ResetSocket>(mut s: S, behavior: Behavior) {
    let mut buf = vec![0u8; 16 * 1024];
    match behavior {
        Behavior::OneShot => {
            if let Ok(1..) = s.read(&mut buf[..1]).await {
                let _ = s.write_all(&buf[..1]).await;
            }
            return;
        }
        Behavior::Silent => {
            while let Ok(1..) = s.read(&mut buf).await {}
            return;
        }
        Behavior::Hold => std::future::pending().await,
        Behavior::HangUp => {
            let _ = s.read(&mut buf).await;
            return;
        }
        Behavior::Greet if s.write_all(b"hello\n").await.is_err() => return,
        Behavior::Proxy => return tunnel(s).await,
        _ => {}
    }
    let quiet = match behavior {
        Behavior::CloseIdle(d) | Behavior::WriteIdle(d) => d,
        _ => Duration::from_secs(3600),
    };
    loop {
        let n = match tokio::time::timeout(quiet, s.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return,
            Ok(Ok(n)) => n,
            Err(_) => match behavior {
                Behavior::WriteIdle(_) => {
                    if s.write_all(b"surprise").await.is_err() {
                        return;
                    }
                    continue;
                }
                _ => return,
            },
        };
        if buf[..n].windows(6).any(|w| w == b"!reset") {
            s.reset();
            return;
        }
        if s.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// The proxy's side of a `CONNECT`: reads the request head, connects to the destination if it
/// is a loopback address, answers, then copies bytes both ways until either side closes.
async fn tunnel<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) {
    let Ok(head) = read_head(&mut s).await else {
        return;
    };
    let destination = head
        .strip_prefix("CONNECT ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|authority| authority.parse::<SocketAddr>().ok())
        .filter(|addr| addr.ip().is_loopback());
    let Some(destination) = destination else {
        let _ = s.write_all(b"HTTP/1.1 403 Forbidden\r\n\r\n").await;
        return;
    };
    let Ok(mut upstream) = TcpStream::connect(destination).await else {
        let _ = s.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
        return;
    };
    if s.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await
        .is_ok()
    {
        let _ = tokio::io::copy_bidirectional(&mut s, &mut upstream).await;
    }
}

/// Reads an HTTP message head (up to the blank line, at most 8 KiB) one byte at a time, so
/// nothing after it is consumed.
///
/// # Errors
/// The stream's error, `UnexpectedEof`, or `InvalidData` for a head too long or not UTF-8.
pub async fn read_head<S: AsyncRead + Unpin>(s: &mut S) -> io::Result<String> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() == 8192 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "head too long"));
        }
        head.push(s.read_u8().await?);
    }
    String::from_utf8(head).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Makes the coming close of a socket a reset (`SO_LINGER` 0).
trait ResetSocket {
    fn reset(&self);
}

impl ResetSocket for TcpStream {
    fn reset(&self) {
        let _ = socket2::SockRef::from(self).set_linger(Some(Duration::ZERO));
    }
}

impl ResetSocket for tokio_rustls::server::TlsStream<TcpStream> {
    fn reset(&self) {
        self.get_ref().0.reset();
    }
}

/// A listener whose accept queue is full and which never accepts: a connect to it hangs (Linux
/// drops SYNs to a listener with a full accept queue), which is how a server that never
/// accepts looks from the client.
///
/// Linux completes the handshake for a listening socket even if nobody calls `accept`, so a
/// plain "bound and listening" socket would not hang; the queue has to be full. With a backlog
/// of 0 the queue holds one connection; we fill it (and one spare) from here.
#[derive(Debug)]
pub struct Blackhole {
    /// Where it listens.
    pub addr: SocketAddr,
    _listener: std::net::TcpListener,
    _fillers: Vec<TcpStream>,
}

impl Blackhole {
    /// Makes the listener and fills its queue.
    ///
    /// # Panics
    /// If no listener can be made, or the queue does not fill within two seconds.
    pub async fn start() -> Blackhole {
        let listener = std_listener(SocketAddr::from(([127, 0, 0, 1], 0)), 0).expect("listener");
        let addr = listener.local_addr().expect("bound");
        let mut fillers = Vec::new();
        // Connect until one attempt hangs: then the queue is full.
        for _ in 0..8 {
            match tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await {
                Ok(Ok(s)) => fillers.push(s),
                Ok(Err(e)) => panic!("filling the blackhole's queue: {e}"),
                Err(_) => {
                    return Blackhole {
                        addr,
                        _listener: listener,
                        _fillers: fillers,
                    };
                }
            }
        }
        panic!("the accept queue of a backlog-0 listener did not fill");
    }
}

/// A self-signed certificate for `localhost` and 127.0.0.1, made with rcgen: the server's
/// acceptor and a client config that trusts exactly this certificate.
///
/// # Panics
/// If rcgen or rustls refuse (they do not for these inputs).
pub fn tls_pair() -> (tokio_rustls::TlsAcceptor, Arc<rustls::ClientConfig>) {
    tls_pair_for(&["localhost", "127.0.0.1"])
}

/// As [`tls_pair`], with a certificate for exactly `names` (DNS names or IP addresses).
///
/// # Panics
/// If rcgen or rustls refuse `names`.
pub fn tls_pair_for(names: &[&str]) -> (tokio_rustls::TlsAcceptor, Arc<rustls::ClientConfig>) {
    let names = names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
    let certified = rcgen::generate_simple_self_signed(names).expect("rcgen");
    let cert = certified.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .expect("server config");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).expect("root");
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    (
        tokio_rustls::TlsAcceptor::from(Arc::new(server)),
        Arc::new(client),
    )
}

/// One request/response exchange on `s`: writes `msg`, reads the same number of bytes back.
///
/// # Errors
/// The stream's error, or `UnexpectedEof`.
pub async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, msg: &[u8]) -> io::Result<()> {
    s.write_all(msg).await?;
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back).await?;
    if back != msg {
        return Err(io::Error::other("echo mismatch"));
    }
    Ok(())
}
