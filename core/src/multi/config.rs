//! The multi engine's configuration, validated once by [`Multi::new`](super::Multi::new).

use core::time::Duration;

use crate::codec::Framing;
use crate::error::ConfigError;

/// Limits and defaults for a [`Multi`](super::Multi) engine.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Config {
    /// Most connections (connecting, connected or closing) at once. Default 65,536.
    pub max_connections: usize,
    /// Default connect timeout; `None` or zero disables. Default 30 s (the seed's `Timeout`).
    pub connect_timeout: Option<Duration>,
    /// Default input timeout: the longest a connected connection may go without input; `None` or
    /// zero disables. Default `None` (the seed's `InputTimeout` is optional too).
    pub input_timeout: Option<Duration>,
    /// Most bytes queued for sending on one connection (encoded, not yet written). Default 1 MiB.
    pub max_send_queue_len: usize,
    /// Most received bytes held for one connection before they form a frame. The driver reads at
    /// most [`Multi::read_capacity`](super::Multi::read_capacity) bytes. Default 64 KiB.
    pub max_input_len: usize,
    /// The framing every new connection starts with, both ways. Default: lines ending in `\n` or
    /// `\r\n`, at most 8 KiB.
    pub framing: Framing,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_connections: 65_536,
            connect_timeout: Some(Duration::from_secs(30)),
            input_timeout: None,
            max_send_queue_len: 1 << 20,
            max_input_len: 64 << 10,
            framing: Framing::default(),
        }
    }
}

/// Buffer offsets are kept as `u32` to keep per-connection state small.
const MAX_BUFFER_LEN: usize = u32::MAX as usize;

impl Config {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_connections == 0 {
            return Err(ConfigError::Zero {
                field: "max_connections",
            });
        }
        if self.max_connections > MAX_BUFFER_LEN {
            return Err(ConfigError::OutOfRange {
                field: "max_connections",
                expected: "at most 2^32 - 1",
            });
        }
        for (field, len) in [
            ("max_send_queue_len", self.max_send_queue_len),
            ("max_input_len", self.max_input_len),
        ] {
            if len == 0 {
                return Err(ConfigError::Zero { field });
            }
            if len > MAX_BUFFER_LEN / 2 {
                return Err(ConfigError::OutOfRange {
                    field,
                    expected: "at most 2^31 - 1",
                });
            }
        }
        if let Some(need) = self.framing.max_pending_len()
            && need > self.max_input_len
        {
            return Err(ConfigError::Conflict {
                field: "framing",
                other: "max_input_len",
                rule: "a frame in progress must fit in the input buffer",
            });
        }
        Ok(())
    }
}
