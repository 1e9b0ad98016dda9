//! The stream a checkout hands out (plain TCP or TLS), and the health probes the pool runs on it.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// A pooled connection's byte stream: plain TCP, or TLS over TCP for `https`/`tls` targets.
#[derive(Debug)]
pub enum Stream {
    /// Plain TCP.
    Tcp(TcpStream),
    /// TLS (rustls) over TCP.
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Tcp(s) => s,
            Stream::Tls(s) => s.get_ref().0,
        }
    }

    /// Whether this is a TLS stream.
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// The application protocol the server chose in the TLS handshake (ALPN, such as `b"h2"`
    /// or `b"http/1.1"`), when the client configuration offered some; `None` for plain TCP.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        match self {
            Stream::Tcp(_) => None,
            Stream::Tls(s) => s.get_ref().1.alpn_protocol(),
        }
    }

    /// The peer's address.
    ///
    /// # Errors
    /// The operating system's error.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().peer_addr()
    }

    /// The local address.
    ///
    /// # Errors
    /// The operating system's error.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().local_addr()
    }

    /// Whether the stream looks reusable right now: no unread data, no EOF, no error.
    ///
    /// Plain TCP asks tokio's readiness first, so a quiet socket costs no system call; a TLS
    /// stream is read once without blocking, which also consumes protocol-only records such as
    /// TLS 1.3 session tickets (those do not make a connection unusable).
    pub(crate) fn probe(&mut self) -> bool {
        match self {
            Stream::Tcp(s) => {
                let mut byte = [0u8; 1];
                match s.try_read(&mut byte) {
                    Err(e) => e.kind() == io::ErrorKind::WouldBlock,
                    // Data nobody asked for, or EOF.
                    Ok(_) => false,
                }
            }
            Stream::Tls(s) => {
                let mut byte = [0u8; 1];
                let mut buf = ReadBuf::new(&mut byte);
                outside_budget(Waker::noop(), |cx| {
                    Pin::new(&mut **s).poll_read(cx, &mut buf).is_pending()
                })
            }
        }
    }

    /// Registers `waker` to be woken when the socket becomes readable (data, EOF or error).
    /// `false` if it is readable already (the caller probes and tries again).
    fn arm(&self, waker: &Waker) -> bool {
        outside_budget(waker, |cx| self.tcp().poll_read_ready(cx).is_pending())
    }

    /// Makes an idle stream wake `waker` on any activity. `false` if the stream is not healthy
    /// (the caller closes it).
    pub(crate) fn watch_idle(&mut self, waker: &Waker) -> bool {
        // A TLS stream may hold decrypted bytes (or a close) that the socket no longer shows:
        // read it once first. A TCP socket's readiness covers everything, and a stale readiness
        // makes the arm below probe it.
        if self.is_tls() && !self.probe() {
            return false;
        }
        // Readiness can flip between the probe and the arm; a few rounds settle it, and a
        // socket that keeps flipping is not one to keep.
        for _ in 0..4 {
            if self.arm(waker) {
                return true;
            }
            if !self.probe() {
                return false;
            }
        }
        false
    }
}

/// Runs `f` with a context for `waker` outside tokio's cooperative budget.
///
/// The probes and the idle watch are the pool's bookkeeping, not the task's I/O. Under the
/// task's budget they would use it up (making the task yield more often than its own work
/// asks), and once it is spent they would answer `Pending` without looking at the socket: a
/// TLS probe would pass a connection it never read, and the idle watch would not be armed but
/// would wake its waker (the driver) for nothing.
fn outside_budget<T>(waker: &Waker, f: impl FnOnce(&mut Context<'_>) -> T) -> T {
    let mut f = Some(f);
    let poll = std::future::poll_fn(|cx| Poll::Ready(f.take().expect("polled once")(cx)));
    let mut fut = std::pin::pin!(tokio::task::unconstrained(poll));
    match fut.as_mut().poll(&mut Context::from_waker(waker)) {
        Poll::Ready(v) => v,
        Poll::Pending => unreachable!("an unconstrained ready future"),
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Tcp(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}
