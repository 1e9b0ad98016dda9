//! The supervisor's inputs as data, its outputs, and its counters.

use core::time::Duration;

use crate::id::WorkerId;
use crate::time::Instant;

/// The supervisor's phase: the one machine-level state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Created, not started.
    NotStarted,
    /// Keeping the pool at size.
    Running,
    /// Stopping every worker; no new spawns.
    ShuttingDown,
    /// Every worker has exited ([`Output::AllExited`] was given).
    Exited,
}

/// One worker's state as the supervisor sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    /// [`Output::Spawn`] given, not yet answered. `stop` is the signal owed once it is spawned.
    Spawning {
        /// The signal to send as soon as the spawn is confirmed, if it was stopped meanwhile.
        stop: Option<Signal>,
    },
    /// Running, not ready yet.
    Booting,
    /// Ready and not busy.
    Idle {
        /// Since when.
        since: Instant,
    },
    /// Serving a request.
    Busy {
        /// Since when.
        since: Instant,
    },
    /// Told to stop; killed at `kill_at` if still there.
    Stopping {
        /// When it is killed.
        kill_at: Instant,
    },
    /// Killed; waiting for its exit.
    Killed,
}

/// A signal for the driver to deliver to a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Signal {
    /// Finish the current request and exit (SIGTERM or a message on the pipe).
    Stop,
    /// Exit now (SIGKILL).
    Kill,
}

/// What a worker reports over its pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Report {
    /// Booted and accepting (the first one ends the boot).
    Ready,
    /// Still alive (the seed's ACK).
    Heartbeat,
    /// Took a request (the seed's COMM_BUSY).
    Busy,
    /// Free again without finishing a counted request (the seed's COMM_NOT_BUSY).
    Idle,
    /// Finished a request and is free again; counts toward `max_requests`.
    RequestDone,
}

/// How a worker process ended, as the driver saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum ExitStatus {
    /// Exit code 0.
    Clean,
    /// A non-zero exit code.
    Code(i32),
    /// Killed by this signal number.
    Signal(i32),
}

/// Which timeout a worker missed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutKind {
    /// Not ready within `boot_timeout`.
    Boot,
    /// Silent for `ack_timeout`.
    Ack,
}

/// Why the supervisor stopped a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// More idle workers than `max_spare`; it was idle the longest.
    ExcessIdle,
    /// It served its `max_requests`.
    MaxRequests,
    /// It missed a timeout.
    TimedOut(TimeoutKind),
    /// A reload replaces every worker.
    Reload,
    /// The supervisor is shutting down.
    Shutdown,
}

/// One output: an action for the driver (imperative) or an event for the application (past
/// tense).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Output {
    /// Action: start a worker process; answer with `handle_spawned` or `handle_spawn_failed`.
    Spawn(WorkerId),
    /// Action: deliver this signal to the worker.
    Signal(WorkerId, Signal),
    /// Event: a spawn was confirmed; the worker is booting.
    WorkerStarted {
        /// The worker.
        worker: WorkerId,
    },
    /// Event: the worker reported ready for the first time.
    WorkerReady {
        /// The worker.
        worker: WorkerId,
    },
    /// Event: the worker missed a timeout; it is being stopped and will be replaced.
    WorkerTimedOut {
        /// The worker.
        worker: WorkerId,
        /// Which timeout.
        kind: TimeoutKind,
    },
    /// Event: the supervisor asked the worker to stop.
    WorkerStopping {
        /// The worker.
        worker: WorkerId,
        /// Why.
        reason: StopReason,
    },
    /// Event: a spawn failed; there was never a process.
    SpawnFailed {
        /// The worker id that was never started.
        worker: WorkerId,
    },
    /// Event: a worker exited. Exactly one per confirmed spawn.
    WorkerExited {
        /// The worker.
        worker: WorkerId,
        /// How.
        status: ExitStatus,
        /// Whether the supervisor had asked it to stop.
        expected: bool,
    },
    /// Event: too many abnormal exits in the window; spawning pauses.
    CrashLoopDetected {
        /// Abnormal exits counted.
        exits: u32,
        /// The window they happened in.
        window: Duration,
        /// When spawning resumes.
        respawn_after: Instant,
    },
    /// Event: after a shutdown, every worker has exited. Given exactly once.
    AllExited,
}

/// Counters and current sizes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Worker processes that exist or are being spawned (stopping ones included).
    pub live: u32,
    /// Spawning or booting (not ready yet, not stopping).
    pub pending: u32,
    /// Ready and idle.
    pub idle: u32,
    /// Busy.
    pub busy: u32,
    /// Told to stop or killed, not exited yet.
    pub stopping: u32,
    /// Spawns asked for.
    pub spawned: u64,
    /// Spawns that failed.
    pub spawn_failures: u64,
    /// Exits.
    pub exited: u64,
    /// Abnormal exits (crashes, exits before ready, spawn failures).
    pub crashes: u64,
    /// Timeouts (boot or ack).
    pub timeouts: u64,
    /// Crash loops detected.
    pub crash_loops: u64,
    /// Workers recycled after `max_requests`.
    pub recycled: u64,
}
