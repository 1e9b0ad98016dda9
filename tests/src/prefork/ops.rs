//! The scenario vocabulary: steps and configuration profiles.

use std::time::Duration;

use arbitrary::Arbitrary;
use moor_core::prefork::PreforkConfig;

/// One step of a scenario.
#[derive(Debug, Clone, PartialEq, Eq, Arbitrary)]
pub enum Op {
    /// Start the supervisor.
    Start,
    /// The driver answers every pending spawn (each worker behaves as it was dealt).
    Answer,
    /// An idle worker (n-th) takes a request.
    Busy(u8),
    /// A busy worker goes idle without finishing a counted request.
    Free(u8),
    /// A busy worker finishes a request.
    Done(u8),
    /// A ready worker hangs: no more reports, ignores polite stops.
    Hang(u8),
    /// A ready worker crashes (exit code 1).
    Crash(u8),
    /// A ready worker exits cleanly on its own.
    Quit(u8),
    /// Time passes: `(n % 400) * 50` ms (under 20 s); healthy workers heartbeat every second.
    Advance(u16),
    /// Reload.
    Reload,
    /// Shut down, gracefully or not.
    Shutdown(bool),
    /// A misuse the machine must refuse with its state unchanged.
    Misuse(u8),
}

/// Which configuration and fault mix a scenario runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Arbitrary)]
pub enum Profile {
    /// The seed's sizes, no ack timeout, few faults.
    Seed,
    /// The seed's sizes and no faults at all.
    Healthy,
    /// Ack and boot timeouts, recycling, crash-loop detection, many faults.
    Watched,
    /// Three workers at most.
    Tiny,
}

impl Profile {
    /// The configuration.
    #[must_use]
    pub fn config(self) -> PreforkConfig {
        match self {
            Profile::Seed | Profile::Healthy => PreforkConfig::default(),
            Profile::Watched => PreforkConfig {
                start_workers: 3,
                min_spare: 2,
                max_spare: 4,
                max_workers: 12,
                ack_timeout: Some(Duration::from_secs(3)),
                boot_timeout: Duration::from_secs(5),
                spawn_rate_max: 4,
                max_requests: Some(5),
                max_requests_jitter: 2,
                crash_loop_threshold: 3,
                crash_loop_window: Duration::from_secs(5),
                stop_grace: Duration::from_secs(2),
                ..PreforkConfig::default()
            },
            Profile::Tiny => PreforkConfig {
                start_workers: 3,
                min_spare: 1,
                max_spare: 2,
                max_workers: 3,
                ack_timeout: Some(Duration::from_secs(2)),
                boot_timeout: Duration::from_secs(2),
                stop_grace: Duration::from_millis(500),
                ..PreforkConfig::default()
            },
        }
    }

    /// Per-mille chances that a new worker fails to spawn, crashes at boot, never reports.
    pub(crate) fn faults(self) -> (u64, u64, u64) {
        match self {
            Profile::Seed => (20, 20, 10),
            Profile::Healthy => (0, 0, 0),
            Profile::Watched => (100, 150, 80),
            Profile::Tiny => (50, 100, 100),
        }
    }
}

/// How a simulated worker behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Behaviour {
    Healthy,
    SpawnFails,
    CrashesAtBoot,
    NeverReports,
}

/// The model's view of a worker's class in the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    Spawning,
    Booting,
    Idle,
    Busy,
    Stopping,
}
