//! Building a [`Pool`]: the core's limits plus socket and TLS options.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use moor_core::ConfigError;
use moor_core::pool::{Config, Reuse};
use rustls::ClientConfig;

use crate::error::BuildError;
use crate::pool::Pool;
use crate::stream::Stream;
use crate::target::Target;

/// The future a [`Builder::on_connect`] setup step returns: the stream to pool.
pub type SetupFuture<'a> = Pin<Box<dyn Future<Output = io::Result<Stream>> + Send + 'a>>;

/// The shape of a setup step: the new connection and the target it was opened for.
type SetupFn = dyn for<'a> Fn(Stream, &'a Target) -> SetupFuture<'a> + Send + Sync;

/// A setup step run on every new connection (see [`Builder::on_connect`]).
#[derive(Clone)]
pub(crate) struct OnConnect(pub(crate) Arc<SetupFn>);

impl fmt::Debug for OnConnect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OnConnect(..)")
    }
}

/// The future a [`Builder::resolver`] returns: the host's addresses, in the order to try them.
pub type ResolveFuture<'a> = Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send + 'a>>;

/// The shape of a resolver: the host name to look up.
type ResolveFn = dyn for<'a> Fn(&'a str) -> ResolveFuture<'a> + Send + Sync;

/// A resolver of the caller's (see [`Builder::resolver`]).
#[derive(Clone)]
pub(crate) struct Resolver(pub(crate) Arc<ResolveFn>);

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Resolver(..)")
    }
}

/// Socket and TLS options the driver applies to every connection it opens.
#[derive(Clone, Debug)]
pub(crate) struct NetOptions {
    pub(crate) bind_address: Option<IpAddr>,
    pub(crate) nodelay: bool,
    pub(crate) keepalive: Option<Duration>,
    pub(crate) linger: Option<Duration>,
    pub(crate) tls: Option<Arc<ClientConfig>>,
    pub(crate) on_connect: Option<OnConnect>,
    pub(crate) resolver: Option<Resolver>,
}

impl NetOptions {
    /// Refuses socket options the operating system would refuse on every connect (keepalive
    /// outside 1–32,767 s, Linux's range) or would change without a word: both are set in
    /// whole seconds, and a sub-second linger would become zero, turning every close into a
    /// reset.
    fn validate(&self) -> Result<(), ConfigError> {
        let whole_seconds =
            |d: Duration, max_secs: u64| d.subsec_nanos() == 0 && d.as_secs() <= max_secs;
        if let Some(idle) = self.keepalive
            && !(idle >= Duration::from_secs(1) && whole_seconds(idle, 32_767))
        {
            return Err(ConfigError::OutOfRange {
                field: "keepalive",
                expected: "a whole number of seconds from 1 s to 32,767 s",
            });
        }
        if let Some(linger) = self.linger
            && !whole_seconds(linger, 65_535)
        {
            return Err(ConfigError::OutOfRange {
                field: "linger",
                expected: "a whole number of seconds up to 65,535 s (zero: close with a reset)",
            });
        }
        Ok(())
    }
}

/// Configures a [`Pool`]. Start from [`Pool::builder`]; every limit defaults to the seed's value
/// (4 per key, 128 in total, 15 s idle timeout, 120 s request timeout).
#[derive(Clone, Debug)]
pub struct Builder {
    config: Config,
    net: NetOptions,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            config: Config::default(),
            net: NetOptions {
                bind_address: None,
                nodelay: true,
                keepalive: None,
                linger: None,
                tls: None,
                on_connect: None,
                resolver: None,
            },
        }
    }
}

impl Builder {
    /// Replaces every core limit at once.
    #[must_use]
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Most connections to one target (default 4).
    #[must_use]
    pub fn max_per_key(mut self, n: usize) -> Self {
        self.config.max_per_key = n;
        self
    }

    /// Most connections in total (default 128). At this cap the least recently used idle
    /// connection of another target is closed to make room.
    #[must_use]
    pub fn max_open(mut self, n: usize) -> Self {
        self.config.max_open = n;
        self
    }

    /// How long a connection may stay idle (default 15 s).
    #[must_use]
    pub fn idle_timeout(mut self, d: Duration) -> Self {
        self.config.idle_timeout = d;
        self
    }

    /// How long a checkout may take in all, unless it gives its own (default 120 s).
    #[must_use]
    pub fn request_timeout(mut self, d: Duration) -> Self {
        self.config.request_timeout = d;
        self
    }

    /// How long one resolution or one connect attempt (TCP, the TLS handshake and the
    /// [`on_connect`](Builder::on_connect) setup) may take (default 30 s).
    #[must_use]
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.config.connect_timeout = d;
        self
    }

    /// Happy Eyeballs (RFC 8305): how long a connect attempt runs alone before the host's
    /// next address is tried beside it; the first to connect wins and the others are dropped
    /// (default 250 ms). The pool also alternates IPv6 and IPv4 addresses. `None`: one
    /// attempt at a time, the next only when one fails or runs out of `connect_timeout`.
    #[must_use]
    pub fn next_attempt_delay(mut self, d: Option<Duration>) -> Self {
        self.config.next_attempt_delay = d;
        self
    }

    /// Connections older than this are closed instead of reused (default: no limit).
    #[must_use]
    pub fn max_lifetime(mut self, d: Option<Duration>) -> Self {
        self.config.max_lifetime = d;
        self
    }

    /// Most checkouts waiting at once (default 65,536); one more fails with `QueueFull`.
    #[must_use]
    pub fn max_waiters(mut self, n: usize) -> Self {
        self.config.max_waiters = n;
        self
    }

    /// Which idle connection is reused first (default: the most recently returned).
    #[must_use]
    pub fn reuse(mut self, reuse: Reuse) -> Self {
        self.config.reuse = reuse;
        self
    }

    /// The local address outgoing connections bind to (the seed's `bind_address`). A host's
    /// addresses of the other family are not used: connecting to one fails with an error that
    /// says so, and the next address is tried.
    #[must_use]
    pub fn bind_address(mut self, ip: IpAddr) -> Self {
        self.net.bind_address = Some(ip);
        self
    }

    /// Sets `TCP_NODELAY` on every connection (default: on, as request/response traffic wants).
    #[must_use]
    pub fn nodelay(mut self, on: bool) -> Self {
        self.net.nodelay = on;
        self
    }

    /// Turns TCP keepalive on with this idle time before the first probe (default: off): a
    /// whole number of seconds from 1 s to 32,767 s.
    #[must_use]
    pub fn keepalive(mut self, idle: Option<Duration>) -> Self {
        self.net.keepalive = idle;
        self
    }

    /// Sets `SO_LINGER` (default: unset), a whole number of seconds up to 65,535 s.
    /// `Some(Duration::ZERO)` makes a close a reset, which leaves no `TIME_WAIT` behind on very
    /// high connection churn.
    #[must_use]
    pub fn linger(mut self, linger: Option<Duration>) -> Self {
        self.net.linger = linger;
        self
    }

    /// The rustls client configuration for `https`/`tls` targets. By default certificates are
    /// verified against the Mozilla roots of `webpki-roots`.
    ///
    /// Every connection of the pool uses this one configuration (the default one is shared by
    /// every pool of the process), and so its session cache: a new connection to a server
    /// resumes an earlier connection's TLS session instead of doing a full handshake.
    ///
    /// A client certificate for servers that ask for one (mutual TLS) goes on the
    /// configuration too (`with_client_auth_cert` in place of `with_no_client_auth`).
    ///
    /// To negotiate an application protocol, set the configuration's `alpn_protocols`; each
    /// guard tells the server's choice ([`Stream::alpn_protocol`](crate::Stream::alpn_protocol)).
    /// Every checkout of a target may get any of its connections, so offer the same protocols
    /// for all of them (a pool per protocol list otherwise).
    ///
    /// Trusting a private CA (given as DER) instead of the public roots:
    ///
    /// ```
    /// use std::sync::Arc;
    /// use moor_tokio::rustls::{self, RootCertStore, pki_types::CertificateDer};
    ///
    /// # fn demo(ca_der: Vec<u8>) -> Result<moor_tokio::Builder, Box<dyn std::error::Error>> {
    /// let mut roots = RootCertStore::empty();
    /// roots.add(CertificateDer::from(ca_der))?;
    /// let provider = Arc::new(rustls::crypto::ring::default_provider());
    /// let config = rustls::ClientConfig::builder_with_provider(provider)
    ///     .with_safe_default_protocol_versions()?
    ///     .with_root_certificates(roots)
    ///     .with_no_client_auth();
    /// let builder = moor_tokio::Pool::builder().tls_config(Arc::new(config));
    /// # Ok(builder) }
    /// ```
    #[must_use]
    pub fn tls_config(mut self, config: Arc<ClientConfig>) -> Self {
        self.net.tls = Some(config);
        self
    }

    /// A setup step run on every new connection (after TCP, and TLS for a TLS target) before
    /// any checkout gets it: a login, a database selection, a protocol preface. A connection
    /// is pooled only once its setup has finished, so no checkout ever gets one half set up,
    /// even when the checkout that asked for it is dropped during the setup. A server that
    /// speaks first (an SMTP or MySQL greeting) needs one: read the greeting here, or the pool
    /// takes it for data nobody asked for and closes an idle connection that holds it.
    ///
    /// The step takes the stream and gives back the one to pool, so it may also replace it: a
    /// STARTTLS upgrade, or TLS to the destination inside a proxy's tunnel (see
    /// [`Target::for_target`](crate::Target::for_target)), each a [`Stream::Tls`] over the same
    /// socket.
    ///
    /// The setup counts as part of the connect attempt: `connect_timeout` bounds it, and an
    /// error it returns fails the attempt as a handshake failure
    /// (`CheckoutError::Connect(ConnectError::Handshake)`, with this error in
    /// [`Error::io_error`](crate::Error::io_error)); the connection is closed. A panic in the
    /// step fails the attempt the same way, with the panic's message.
    ///
    /// ```
    /// use tokio::io::{AsyncReadExt, AsyncWriteExt};
    ///
    /// let builder = moor_tokio::Pool::builder().on_connect(|mut stream, _target| {
    ///     Box::pin(async move {
    ///         stream.write_all(b"HELLO\n").await?;
    ///         let mut ok = [0u8; 3];
    ///         stream.read_exact(&mut ok).await?;
    ///         if &ok != b"OK\n" {
    ///             return Err(std::io::Error::other("the server refused our HELLO"));
    ///         }
    ///         Ok(stream)
    ///     })
    /// });
    /// ```
    #[must_use]
    pub fn on_connect<F>(mut self, setup: F) -> Self
    where
        F: for<'a> Fn(Stream, &'a Target) -> SetupFuture<'a> + Send + Sync + 'static,
    {
        self.net.on_connect = Some(OnConnect(Arc::new(setup)));
        self
    }

    /// Looks host names up with `resolve` instead of the system resolver (`getaddrinfo` on
    /// tokio's blocking pool): a DNS client of your own, fixed answers (as curl's `--resolve`
    /// gives), service discovery. Literal IP addresses never reach it. To fall back on the
    /// system resolver for some names, call `tokio::net::lookup_host` from it.
    ///
    /// The pool asks for one host at most once at a time and shares the answer with every
    /// checkout waiting on that host; each new connection tries the addresses in the order
    /// given (repeats are skipped). `connect_timeout` bounds a lookup: when it runs out, or the
    /// pool shuts down, the pool drops the future, so one that never finishes holds nothing.
    ///
    /// An error fails every checkout waiting on the host with `CheckoutError::Resolve`, the
    /// error itself in [`Error::io_error`](crate::Error::io_error): `ErrorKind::NotFound` (or
    /// an empty list) as `ResolveError::NotFound`, `ErrorKind::TimedOut` as
    /// `ResolveError::TimedOut`, anything else as `ResolveError::Failed`. A panic in the
    /// resolver fails them the same way, with the panic's message.
    ///
    /// ```
    /// use std::io;
    /// use std::net::{IpAddr, Ipv4Addr};
    ///
    /// let builder = moor_tokio::Pool::builder().resolver(|host| {
    ///     Box::pin(async move {
    ///         match host {
    ///             "db.internal" => Ok(vec![IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7))]),
    ///             _ => Err(io::Error::new(io::ErrorKind::NotFound, format!("unknown host {host}"))),
    ///         }
    ///     })
    /// });
    /// ```
    #[must_use]
    pub fn resolver<F>(mut self, resolve: F) -> Self
    where
        F: for<'a> Fn(&'a str) -> ResolveFuture<'a> + Send + Sync + 'static,
    {
        self.net.resolver = Some(Resolver(Arc::new(resolve)));
        self
    }

    /// Builds the pool and starts its driver task on the current tokio runtime (the pool shuts
    /// down if that runtime does; see [`Pool`]).
    ///
    /// # Errors
    /// [`BuildError::Config`] if the core refuses the limits or a socket option is out of its
    /// range (checked first, so a runtime is not needed to learn it), [`BuildError::NoRuntime`]
    /// outside a tokio runtime.
    pub fn build(self) -> Result<Pool, BuildError> {
        self.config.validate().map_err(BuildError::Config)?;
        self.net.validate().map_err(BuildError::Config)?;
        let rt = tokio::runtime::Handle::try_current().map_err(|_| BuildError::NoRuntime)?;
        Pool::start(self.config, self.net, rt).map_err(BuildError::Config)
    }
}

/// A rustls client configuration that verifies servers against the `webpki-roots` CA set.
pub fn default_tls_config() -> Arc<ClientConfig> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}
