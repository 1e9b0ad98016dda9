//! What the pool is keyed by.

use alloc::boxed::Box;
use alloc::string::String;
use core::fmt::Debug;
use core::net::{IpAddr, SocketAddr};

/// A pool key: everything that makes two connections interchangeable.
///
/// Connections are shared only between checkouts with equal keys. The pool resolves
/// [`PoolKey::host`] (once per host, shared by every key on it) and connects to each resolved
/// address at [`PoolKey::port`].
pub trait PoolKey: Ord + Clone + Debug {
    /// What the resolver looks up. Keys with equal hosts share one resolution.
    type Host: Ord + Clone + Debug;

    /// The host to resolve.
    fn host(&self) -> &Self::Host;

    /// The port to connect to on every resolved address.
    fn port(&self) -> u16;

    /// The address to connect to without resolving, when the host is a literal IP.
    fn literal_addr(&self) -> Option<SocketAddr> {
        None
    }
}

/// The seed's key: scheme, host and port, plus an optional target the connection is *for*
/// (the seed's `for_scheme/for_addr/for_port`: a proxy connection dedicated to one target).
///
/// The scheme is free-form and only compared (adapters give meaning to `https`); it keeps TLS
/// and cleartext connections to the same host and port apart.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Endpoint {
    /// The scheme, for example `http` or `https`.
    pub scheme: String,
    /// A host name or a literal IP address.
    pub host: String,
    /// The port.
    pub port: u16,
    /// The `(scheme, host, port)` this connection is dedicated to, when connecting through a
    /// proxy. Boxed: it is rare, and keeps the common key (and every output carrying one) small.
    pub for_target: Option<Box<(String, String, u16)>>,
}

impl Endpoint {
    /// An endpoint with no proxy target.
    pub fn new(scheme: impl Into<String>, host: impl Into<String>, port: u16) -> Endpoint {
        Endpoint {
            scheme: scheme.into(),
            host: host.into(),
            port,
            for_target: None,
        }
    }
}

impl PoolKey for Endpoint {
    type Host = String;

    fn host(&self) -> &String {
        &self.host
    }

    fn port(&self) -> u16 {
        self.port
    }

    fn literal_addr(&self) -> Option<SocketAddr> {
        // Accept "::1" as well as the bracketed "[::1]" form of URLs.
        let host = self
            .host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(&self.host);
        host.parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, self.port))
    }
}
