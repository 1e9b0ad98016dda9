//! The error a checkout ends with, and the error building a pool can give.

use std::fmt;
use std::io;
use std::sync::Arc;

use moor_core::ConfigError;
use moor_core::pool::{CheckoutError, ConnectError, ResolveError};

/// Why [`Pool::get`](crate::Pool::get) gave no connection: the core's cause, plus the
/// operating system's or TLS library's error behind it when there is one (for example
/// "invalid peer certificate: UnknownIssuer").
#[derive(Debug, Clone)]
pub struct Error {
    kind: CheckoutError,
    source: Option<Arc<io::Error>>,
}

impl Error {
    pub(crate) fn new(kind: CheckoutError, source: Option<Arc<io::Error>>) -> Error {
        Error { kind, source }
    }

    /// The cause as the pool core classifies it.
    pub fn kind(&self) -> CheckoutError {
        self.kind
    }

    /// The I/O (or TLS) error behind a connect or resolve failure, or the reason for a
    /// shutdown the caller did not ask for, if any.
    pub fn io_error(&self) -> Option<&io::Error> {
        self.source.as_deref()
    }

    /// Whether something ran out of time: the checkout's deadline, the connect attempts, or
    /// the host's lookup.
    pub fn is_timeout(&self) -> bool {
        matches!(
            self.kind,
            CheckoutError::TimedOut
                | CheckoutError::Connect(ConnectError::TimedOut)
                | CheckoutError::Resolve(ResolveError::TimedOut)
        )
    }

    /// Whether the peer refused the connection (nothing listening).
    pub fn is_refused(&self) -> bool {
        self.kind == CheckoutError::Connect(ConnectError::Refused)
    }

    /// Whether the pool is shutting down: [`Pool::shutdown`](crate::Pool::shutdown), the last
    /// handle dropped, or the pool's runtime shut down ([`Error::io_error`] then says so).
    pub fn is_shutdown(&self) -> bool {
        self.kind == CheckoutError::Shutdown
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(e) => write!(f, "{}: {e}", self.kind),
            None => write!(f, "{}", self.kind),
        }
    }
}

/// The message already carries the kind and the I/O error's own message, so `source` goes on
/// from below them (as `std::io::Error` does for the error it wraps): a chain printer such as
/// anyhow's `{:#}` shows every cause once. [`Error::kind`] and [`Error::io_error`] give both
/// as values.
impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().and_then(std::error::Error::source)
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        let kind = match e.kind {
            _ if e.is_timeout() => io::ErrorKind::TimedOut,
            CheckoutError::Connect(ConnectError::Refused) => io::ErrorKind::ConnectionRefused,
            CheckoutError::Resolve(_) => io::ErrorKind::NotFound,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}

/// Why [`Builder::build`](crate::Builder::build) failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildError {
    /// The core refused the configuration.
    Config(ConfigError),
    /// `build` was called outside a tokio runtime (the pool needs one for its driver task).
    NoRuntime,
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::Config(e) => write!(f, "{e}"),
            BuildError::NoRuntime => {
                f.write_str("a moor-tokio pool must be built inside a tokio runtime")
            }
        }
    }
}

impl std::error::Error for BuildError {}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every message of the chain, outermost first, as a chain printer would show them.
    fn chain(e: &dyn std::error::Error) -> Vec<String> {
        let mut out = vec![e.to_string()];
        let mut next = e.source();
        while let Some(cause) = next {
            out.push(cause.to_string());
            next = cause.source();
        }
        out
    }

    #[derive(Debug)]
    struct Leaf;
    impl fmt::Display for Leaf {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("the root cause")
        }
    }
    impl std::error::Error for Leaf {}

    #[derive(Debug)]
    struct Middle(Leaf);
    impl fmt::Display for Middle {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("the library's error")
        }
    }
    impl std::error::Error for Middle {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn error_chains_show_each_cause_once_and_io_conversion_keeps_the_kind() {
        let timeout = Error::new(CheckoutError::TimedOut, None);
        assert_eq!(chain(&timeout), ["checkout timed out"]);

        let refused = Error::new(
            CheckoutError::Connect(ConnectError::Refused),
            Some(Arc::new(io::Error::from(io::ErrorKind::ConnectionRefused))),
        );
        // The OS error has no cause of its own: one message says it all.
        assert_eq!(
            chain(&refused),
            [format!(
                "{}: {}",
                refused.kind(),
                io::Error::from(io::ErrorKind::ConnectionRefused)
            )]
        );
        assert!(refused.io_error().is_some());

        // A TLS failure: rustls's error inside an io::Error, with a cause of its own.
        let handshake = Error::new(
            CheckoutError::Connect(ConnectError::Handshake),
            Some(Arc::new(io::Error::new(
                io::ErrorKind::InvalidData,
                Middle(Leaf),
            ))),
        );
        assert_eq!(
            chain(&handshake),
            [
                format!(
                    "{}: the library's error",
                    CheckoutError::Connect(ConnectError::Handshake)
                ),
                "the root cause".to_owned()
            ]
        );

        // Converted for `?` in io code: the kind carries over where io has one.
        let io_kind = |kind| io::Error::from(Error::new(kind, None)).kind();
        assert_eq!(io_kind(CheckoutError::TimedOut), io::ErrorKind::TimedOut);
        assert_eq!(
            io_kind(CheckoutError::Connect(ConnectError::TimedOut)),
            io::ErrorKind::TimedOut
        );
        assert_eq!(
            io_kind(CheckoutError::Connect(ConnectError::Refused)),
            io::ErrorKind::ConnectionRefused
        );
        assert_eq!(
            io_kind(CheckoutError::Resolve(ResolveError::NotFound)),
            io::ErrorKind::NotFound
        );
        assert_eq!(
            io_kind(CheckoutError::Resolve(ResolveError::TimedOut)),
            io::ErrorKind::TimedOut
        );
        assert_eq!(io_kind(CheckoutError::Shutdown), io::ErrorKind::Other);
        let timeouts = [
            CheckoutError::TimedOut,
            CheckoutError::Connect(ConnectError::TimedOut),
            CheckoutError::Resolve(ResolveError::TimedOut),
        ];
        for kind in timeouts {
            assert!(Error::new(kind, None).is_timeout(), "{kind}");
        }
        let refused = CheckoutError::Connect(ConnectError::Refused);
        assert!(!Error::new(refused, None).is_timeout());
        // And the same messages, once each.
        let as_io = io::Error::from(handshake);
        assert_eq!(chain(&as_io).len(), 2);
        assert!(chain(&as_io)[0].ends_with("the library's error"));
    }
}
