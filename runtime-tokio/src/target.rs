//! What a checkout asks for: a [`Target`], the pool key of this adapter.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use moor_core::pool::{Endpoint, PoolKey};

/// Where to connect: scheme, host and port, plus an optional target the connection is
/// dedicated to (the seed's `for_scheme/for_addr/for_port`, for proxies).
///
/// Connections are shared only between checkouts of equal targets. The scheme `https` or `tls`
/// makes the connection a TLS one; any other scheme is plain TCP. A target is cheap to clone
/// (one reference count), so keep one and pass it to every [`Pool::get`](crate::Pool::get).
#[derive(Clone, Eq)]
pub struct Target(Arc<Parts>);

#[derive(PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Parts {
    scheme: Box<str>,
    host: Arc<str>,
    port: u16,
    for_target: Option<(Box<str>, Box<str>, u16)>,
    /// Derived from `host` once, so a fresh connect to a literal IP skips resolution cheaply.
    literal: Option<IpAddr>,
}

/// Why a string is not a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseTargetError(&'static str);

impl fmt::Display for ParseTargetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid target: {}", self.0)
    }
}

impl std::error::Error for ParseTargetError {}

impl Target {
    /// A target for `scheme://host:port`. `host` is a name or a literal IP (`::1` or `[::1]`).
    /// Scheme and host are compared without regard to ASCII case (`Example.COM` and
    /// `example.com` share connections), as in URLs.
    pub fn new(scheme: &str, host: &str, port: u16) -> Target {
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        Target(Arc::new(Parts {
            scheme: scheme.to_ascii_lowercase().into(),
            host: Arc::from(bare.to_ascii_lowercase()),
            port,
            for_target: None,
            literal: bare.parse().ok(),
        }))
    }

    /// The same target, dedicated to `(scheme, host, port)` behind it (a proxy connection):
    /// such connections are never shared with checkouts for another `for` target. An
    /// [`on_connect`](crate::Builder::on_connect) step can read it back
    /// ([`Target::for_target`]) to open the tunnel, such as an HTTP `CONNECT`.
    #[must_use]
    pub fn with_for(&self, scheme: &str, host: &str, port: u16) -> Target {
        let p = &self.0;
        Target(Arc::new(Parts {
            scheme: p.scheme.clone(),
            host: p.host.clone(),
            port: p.port,
            for_target: Some((
                scheme.to_ascii_lowercase().into(),
                host.to_ascii_lowercase().into(),
                port,
            )),
            literal: p.literal,
        }))
    }

    /// Parses `scheme://host[:port]`, ignoring any path, query or fragment after it. The port
    /// defaults to 80 for `http` and 443 for `https`; other schemes need one.
    ///
    /// # Errors
    /// [`ParseTargetError`] for a missing or malformed scheme, a missing host or port, a bad port number (0 included),
    /// user info (`user@`), a host with characters no host name has (non-ASCII names go in
    /// their punycode form), an IPv6 address without brackets or not an IPv6 address in them,
    /// or text between an IPv6 host's `]` and its port.
    pub fn parse(s: &str) -> Result<Target, ParseTargetError> {
        let (scheme, rest) = s
            .split_once("://")
            .ok_or(ParseTargetError("expected scheme://host:port"))?;
        if scheme.is_empty() {
            return Err(ParseTargetError("empty scheme"));
        }
        // RFC 3986: a letter, then letters, digits, '+', '-' or '.'.
        let mut chars = scheme.bytes();
        if !chars.next().is_some_and(|b| b.is_ascii_alphabetic())
            || !chars.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
        {
            return Err(ParseTargetError("invalid scheme"));
        }
        let rest = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if rest.contains('@') {
            return Err(ParseTargetError(
                "user info (user@host) is not part of a target",
            ));
        }
        let (host, port) = if let Some(after) = rest.strip_prefix('[') {
            let (h, tail) = after
                .split_once(']')
                .ok_or(ParseTargetError("unclosed [ in IPv6 host"))?;
            if h.parse::<Ipv6Addr>().is_err() {
                return Err(ParseTargetError("not an IPv6 address between [ and ]"));
            }
            match tail.strip_prefix(':') {
                Some(p) => (h, Some(p)),
                None if tail.is_empty() => (h, None),
                None => return Err(ParseTargetError("text between ] and the port")),
            }
        } else {
            let (h, p) = match rest.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            };
            if p.is_some_and(|p| p.contains(':')) {
                return Err(ParseTargetError("an IPv6 host needs brackets, as in [::1]"));
            }
            // What a resolver accepts: letters, digits, '-', '.' and (seen in the wild) '_'.
            // Anything else (spaces, '%', non-ASCII: use the punycode form) cannot name a host.
            if !h
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
            {
                return Err(ParseTargetError("invalid character in host"));
            }
            (h, p)
        };
        if host.is_empty() {
            return Err(ParseTargetError("empty host"));
        }
        let port = match port {
            Some(p) => match p.parse() {
                Ok(0) => return Err(ParseTargetError("port 0")),
                Ok(port) => port,
                Err(_) => return Err(ParseTargetError("bad port")),
            },
            None => match scheme.to_ascii_lowercase().as_str() {
                "http" => 80,
                "https" => 443,
                _ => return Err(ParseTargetError("no port and no default for the scheme")),
            },
        };
        Ok(Target::new(scheme, host, port))
    }

    /// The scheme, lower-cased.
    pub fn scheme(&self) -> &str {
        &self.0.scheme
    }

    /// The host name or literal IP (without brackets).
    pub fn host(&self) -> &str {
        &self.0.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.0.port
    }

    /// The `(scheme, host, port)` this target's connections are dedicated to (set with
    /// [`Target::with_for`]), if any: for a proxy, where an
    /// [`on_connect`](crate::Builder::on_connect) step asks it to tunnel to.
    pub fn for_target(&self) -> Option<(&str, &str, u16)> {
        self.0
            .for_target
            .as_ref()
            .map(|(scheme, host, port)| (&**scheme, &**host, *port))
    }

    /// Whether connections to this target speak TLS (scheme `https` or `tls`).
    pub fn is_tls(&self) -> bool {
        matches!(&*self.0.scheme, "https" | "tls")
    }
}

impl PoolKey for Target {
    type Host = Arc<str>;

    fn host(&self) -> &Arc<str> {
        &self.0.host
    }

    fn port(&self) -> u16 {
        self.0.port
    }

    fn literal_addr(&self) -> Option<SocketAddr> {
        self.0.literal.map(|ip| SocketAddr::new(ip, self.0.port))
    }
}

// Equality and order by content, with a pointer check first: a caller reusing one `Target`
// (the common case) pays no string comparison on the pool's key lookup.
impl PartialEq for Target {
    fn eq(&self, other: &Target) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
    }
}

impl Ord for Target {
    fn cmp(&self, other: &Target) -> std::cmp::Ordering {
        if Arc::ptr_eq(&self.0, &other.0) {
            return std::cmp::Ordering::Equal;
        }
        self.0.cmp(&other.0)
    }
}

impl std::hash::Hash for Target {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl PartialOrd for Target {
    fn partial_cmp(&self, other: &Target) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl FromStr for Target {
    type Err = ParseTargetError;
    fn from_str(s: &str) -> Result<Target, ParseTargetError> {
        Target::parse(s)
    }
}

impl From<&Endpoint> for Target {
    fn from(e: &Endpoint) -> Target {
        let t = Target::new(&e.scheme, &e.host, e.port);
        match e.for_target.as_deref() {
            Some((s, h, p)) => t.with_for(s, h, *p),
            None => t,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.0;
        if p.host.contains(':') {
            write!(f, "{}://[{}]:{}", p.scheme, p.host, p.port)?;
        } else {
            write!(f, "{}://{}:{}", p.scheme, p.host, p.port)?;
        }
        if let Some((s, h, port)) = &p.for_target {
            write!(f, " (for {s}://{h}:{port})")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Target({self})")
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Any text: an answer, never a panic; and a target that parses prints as text that
        /// parses back to it.
        #[test]
        fn parse_never_panics_and_what_it_accepts_round_trips(s in prop_oneof![
            ".{0,40}",
            // Mostly the characters that mean something in a target, so that many inputs
            // get past the scheme and into the host and port rules.
            "[a-zA-Z0-9+.-]{0,4}://[\\[\\]a-zA-Z0-9:@%. /?#_-]{0,24}",
        ]) {
            if let Ok(t) = Target::parse(&s) {
                prop_assert_eq!(Target::parse(&t.to_string()), Ok(t));
            }
        }

        /// Well-formed targets of every host kind (names, IPv4, IPv6) parse to their parts.
        #[test]
        fn well_formed_targets_parse_to_their_parts(
            scheme in "[a-zA-Z][a-zA-Z0-9+.-]{0,8}",
            name in "[a-zA-Z0-9_-]{1,10}(\\.[a-zA-Z0-9_-]{1,10}){0,3}",
            ip in any::<IpAddr>(),
            use_ip in any::<bool>(),
            port in 1u16..,
            tail in "(/[a-z]{0,5})?(\\?[a-z=]{0,5})?(#[a-z]{0,5})?",
        ) {
            let (host, written) = match ip {
                IpAddr::V6(v6) if use_ip => (v6.to_string(), format!("[{v6}]")),
                IpAddr::V4(v4) if use_ip => (v4.to_string(), v4.to_string()),
                _ => (name.clone(), name.clone()),
            };
            let t = Target::parse(&format!("{scheme}://{written}:{port}{tail}")).unwrap();
            prop_assert_eq!(&t, &Target::new(&scheme, &host, port));
            prop_assert_eq!(t.host(), host.to_ascii_lowercase());
            prop_assert_eq!(t.port(), port);
            prop_assert_eq!(t.literal_addr().map(|a| a.ip()), host.parse::<IpAddr>().ok());
            prop_assert_eq!(Target::parse(&t.to_string()), Ok(t));
        }
    }

    #[test]
    fn parses_common_forms() {
        let t = Target::parse("https://example.com").unwrap();
        assert_eq!(
            (t.scheme(), t.host(), t.port(), t.is_tls()),
            ("https", "example.com", 443, true)
        );
        let t = Target::parse("tcp://[::1]:8080/x").unwrap();
        assert_eq!((t.host(), t.port()), ("::1", 8080));
        assert_eq!(t.literal_addr(), Some("[::1]:8080".parse().unwrap()));
        assert_eq!(t.to_string(), "tcp://[::1]:8080");
        assert!(Target::parse("tcp://host").is_err());
        assert!(Target::parse("host:80").is_err());
        assert!(Target::parse("http://:80").is_err());
        assert!(Target::parse("http://h:99999").is_err());
        assert_eq!(
            Target::parse("http://h").unwrap(),
            Target::new("HTTP", "h", 80)
        );
        assert_ne!(
            Target::new("http", "h", 1),
            Target::new("http", "h", 1).with_for("http", "x", 2)
        );
        assert_eq!(Target::new("http", "h", 1).for_target(), None);
        assert_eq!(
            Target::new("http", "h", 1)
                .with_for("HTTPS", "X", 2)
                .for_target(),
            Some(("https", "x", 2))
        );
    }

    #[test]
    fn hosts_compare_without_case_and_the_authority_ends_at_path_query_or_fragment() {
        let a = Target::parse("HTTPS://Example.COM:8443?q=1").unwrap();
        assert_eq!(a, Target::new("https", "example.com", 8443));
        assert_eq!(a.host(), "example.com");
        assert_eq!(
            Target::parse("tcp://h:7#frag").unwrap(),
            Target::new("tcp", "h", 7)
        );
        assert_eq!(
            Target::new("tcp", "h", 1).with_for("HTTP", "X.org", 2),
            Target::new("tcp", "h", 1).with_for("http", "x.org", 2)
        );
        let v6 = Target::parse("http://[::FFFF:7F00:1]").unwrap();
        assert_eq!(v6.port(), 80);
        assert_eq!(
            v6.literal_addr(),
            Some("[::ffff:127.0.0.1]:80".parse().unwrap())
        );
    }

    #[test]
    fn malformed_targets_are_refused_with_a_reason() {
        for (input, reason) in [
            ("", "expected scheme://host:port"),
            ("://h:1", "empty scheme"),
            ("tcp://", "empty host"),
            ("tcp://[::1", "unclosed [ in IPv6 host"),
            ("http://[::1]junk", "text between ] and the port"),
            ("http://[::1]junk:80", "text between ] and the port"),
            ("tcp://h:", "bad port"),
            ("tcp://h:x", "bad port"),
            ("tcp://h:0", "port 0"),
            ("ftp://h", "no port and no default for the scheme"),
            ("h t://h:1", "invalid scheme"),
            ("1tcp://h:1", "invalid scheme"),
            (
                "http://user:pw@h:80",
                "user info (user@host) is not part of a target",
            ),
            ("http://@h", "user info (user@host) is not part of a target"),
            ("http://[foo]:80", "not an IPv6 address between [ and ]"),
            (
                "http://[fe80::1%eth0]:80",
                "not an IPv6 address between [ and ]",
            ),
            ("http://::1", "an IPv6 host needs brackets, as in [::1]"),
            ("http://::1:80", "an IPv6 host needs brackets, as in [::1]"),
            ("http://ho st:80", "invalid character in host"),
            ("http://h%41:80", "invalid character in host"),
            ("http://bücher.example", "invalid character in host"),
            ("http://h\n:80", "invalid character in host"),
        ] {
            let err = Target::parse(input).unwrap_err();
            assert_eq!(err, ParseTargetError(reason), "{input:?}");
            assert!(err.to_string().contains(reason));
        }
    }
}
