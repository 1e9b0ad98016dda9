//! The driver's two slow actions, each run as its own task: resolving a host and opening a
//! connection (TCP, then TLS when the target asks for it).

use std::any::Any;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, OnceLock};
use std::task::Poll;

use moor_core::pool::{ConnectError, ResolveError};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use socket2::{Domain, Protocol, Socket, TcpKeepalive, Type};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::builder::{NetOptions, OnConnect, default_tls_config};
use crate::stream::Stream;
use crate::target::Target;

/// Looks `host` up with the pool's resolver, or with tokio's (the system's, on a blocking
/// thread). The addresses keep their order, without repeats.
pub(crate) async fn resolve(
    net: &NetOptions,
    host: &str,
) -> Result<Vec<IpAddr>, (ResolveError, io::Error)> {
    let found = match &net.resolver {
        Some(resolver) => catch_panics("the resolver", async { (resolver.0)(host).await }).await,
        None => tokio::net::lookup_host((host, 0))
            .await
            .map(|addrs| addrs.map(|a| a.ip()).collect()),
    };
    let mut ips: Vec<IpAddr> = Vec::new();
    for ip in found.map_err(|e| (classify_resolve(&e), e))? {
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    if ips.is_empty() {
        let e = io::Error::new(
            io::ErrorKind::NotFound,
            format!("the resolver found no address for {host}"),
        );
        return Err((ResolveError::NotFound, e));
    }
    Ok(ips)
}

/// getaddrinfo's "no such name" arrives as an uncategorised error; its text is the only stable
/// sign of it (glibc: "Name or service not known", "No address associated with hostname";
/// musl: "Name does not resolve"; macOS: "nodename nor servname provided, or not known").
/// A resolver of the caller's says it with the error's kind.
fn classify_resolve(e: &io::Error) -> ResolveError {
    let text = e.to_string();
    let no_such_name = ["not known", "No address", "does not resolve"];
    if e.kind() == io::ErrorKind::NotFound || no_such_name.iter().any(|sign| text.contains(sign)) {
        ResolveError::NotFound
    } else if e.kind() == io::ErrorKind::TimedOut {
        ResolveError::TimedOut
    } else {
        ResolveError::Failed {
            code: e.raw_os_error(),
        }
    }
}

/// The default TLS configuration, made once per process: building it copies the root set, and
/// one configuration per connection would also give each its own session cache, so no
/// connection could resume another's TLS session.
fn shared_default_tls_config() -> Arc<ClientConfig> {
    static DEFAULT: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    DEFAULT.get_or_init(default_tls_config).clone()
}

/// Opens a connection to `addr` for `target`, with the pool's socket options, a verified TLS
/// handshake for TLS targets, and the pool's setup step if it has one.
pub(crate) async fn open(
    net: &NetOptions,
    target: &Target,
    addr: SocketAddr,
) -> Result<Stream, (ConnectError, io::Error)> {
    let tcp = open_tcp(net, addr).await.map_err(|e| (classify(&e), e))?;
    let stream = if target.is_tls() {
        Stream::Tls(Box::new(handshake(net, target, tcp).await?))
    } else {
        Stream::Tcp(tcp)
    };
    match &net.on_connect {
        Some(setup) => run_setup(setup, stream, target)
            .await
            .map_err(|e| (ConnectError::Handshake, e)),
        None => Ok(stream),
    }
}

/// Runs the caller's setup step.
async fn run_setup(setup: &OnConnect, stream: Stream, target: &Target) -> io::Result<Stream> {
    catch_panics("the on_connect setup", async {
        (setup.0)(stream, target).await
    })
    .await
}

/// Runs caller code (`who`), turning a panic in it into an error with the panic's message:
/// unwinding out of a resolve or connect task would leave the checkouts waiting for it until
/// their deadline, with no word of why.
async fn catch_panics<T>(who: &str, work: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    let panicked = |payload: Box<dyn Any + Send>| {
        let text = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        io::Error::other(format!("{who} panicked: {text}"))
    };
    // `work` is an async block, so calling the caller's function happens inside the first
    // poll, and a panic there is caught too.
    let mut work = std::pin::pin!(work);
    std::future::poll_fn(|cx| {
        catch_unwind(AssertUnwindSafe(|| work.as_mut().poll(cx)))
            .unwrap_or_else(|payload| Poll::Ready(Err(panicked(payload))))
    })
    .await
}

/// The TLS handshake over `tcp`, verified against the pool's configuration, with SNI from the
/// target's host.
async fn handshake(
    net: &NetOptions,
    target: &Target,
    tcp: TcpStream,
) -> Result<TlsStream<TcpStream>, (ConnectError, io::Error)> {
    let config = net.tls.clone().unwrap_or_else(shared_default_tls_config);
    let name = ServerName::try_from(target.host().to_owned()).map_err(|e| {
        (
            ConnectError::Handshake,
            io::Error::new(io::ErrorKind::InvalidInput, e),
        )
    })?;
    TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| {
            // tokio-rustls says only "tls handshake eof".
            let e = if e.kind() == io::ErrorKind::UnexpectedEof {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the peer closed the connection during the TLS handshake",
                )
            } else {
                e
            };
            (ConnectError::Handshake, e)
        })
}

async fn open_tcp(net: &NetOptions, addr: SocketAddr) -> io::Result<TcpStream> {
    // Going out from another source than the one asked for could pass a firewall rule or a
    // route the caller chose that address to avoid: refuse, and the core tries the next address.
    if let Some(ip) = net.bind_address
        && ip.is_ipv4() != addr.is_ipv4()
    {
        return Err(io::Error::new(
            io::ErrorKind::AddrNotAvailable,
            format!("cannot reach {addr} from bind_address {ip}: another address family"),
        ));
    }
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking(),
        Some(Protocol::TCP),
    )?;
    if net.nodelay {
        socket.set_tcp_nodelay(true)?;
    }
    if let Some(idle) = net.keepalive {
        socket.set_tcp_keepalive(&TcpKeepalive::new().with_time(idle))?;
    }
    if net.linger.is_some() {
        socket.set_linger(net.linger)?;
    }
    if let Some(ip) = net.bind_address {
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    let socket = TcpSocket::from_std_stream(std::net::TcpStream::from(socket));
    socket.connect(addr).await
}

fn classify(e: &io::Error) -> ConnectError {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => ConnectError::Refused,
        io::ErrorKind::TimedOut => ConnectError::TimedOut,
        io::ErrorKind::NetworkUnreachable | io::ErrorKind::HostUnreachable => {
            ConnectError::Unreachable
        }
        _ => ConnectError::Other {
            code: e.raw_os_error(),
        },
    }
}

/// The io error wrapped for sharing among every checkout it fails.
pub(crate) fn shared(e: io::Error) -> Arc<io::Error> {
    Arc::new(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolver_errors_tell_a_missing_name_from_a_failure() {
        let lookup =
            |text: &str| io::Error::other(format!("failed to lookup address information: {text}"));
        for text in [
            "Name or service not known",
            "No address associated with hostname",
            "Name does not resolve",
            "nodename nor servname provided, or not known",
        ] {
            assert_eq!(
                classify_resolve(&lookup(text)),
                ResolveError::NotFound,
                "{text}"
            );
        }
        assert_eq!(
            classify_resolve(&lookup("Temporary failure in name resolution")),
            ResolveError::Failed { code: None }
        );
        assert_eq!(
            classify_resolve(&io::Error::from_raw_os_error(11)),
            ResolveError::Failed { code: Some(11) }
        );
        // A resolver of the caller's says it with the kind.
        for (kind, expected) in [
            (io::ErrorKind::NotFound, ResolveError::NotFound),
            (io::ErrorKind::TimedOut, ResolveError::TimedOut),
            (io::ErrorKind::Other, ResolveError::Failed { code: None }),
        ] {
            assert_eq!(classify_resolve(&io::Error::new(kind, "x")), expected);
        }
    }
}
