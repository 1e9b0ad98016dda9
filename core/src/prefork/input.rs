//! The supervisor's inputs as data, so a recorded `Vec<(Instant, Input)>` replays a run exactly.

use super::{ExitStatus, Prefork, Report};
use crate::error::UsageError;
use crate::id::WorkerId;
use crate::time::Instant;

/// One input to a [`Prefork`] supervisor: what each `handle_*` call takes, as a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Input {
    /// [`Prefork::handle_start`].
    Start,
    /// [`Prefork::handle_spawned`].
    Spawned(WorkerId),
    /// [`Prefork::handle_spawn_failed`].
    SpawnFailed(WorkerId),
    /// [`Prefork::handle_report`].
    Report(WorkerId, Report),
    /// [`Prefork::handle_exited`].
    Exited(WorkerId, ExitStatus),
    /// [`Prefork::handle_reload`].
    Reload,
    /// [`Prefork::handle_shutdown`].
    Shutdown {
        /// Stop politely first (else kill now).
        graceful: bool,
    },
    /// [`Prefork::handle_timeout`].
    Timeout,
}

impl Prefork {
    /// Applies one recorded input.
    ///
    /// # Errors
    /// Whatever the matching `handle_*` call returns.
    pub fn handle(&mut self, now: Instant, input: Input) -> Result<(), UsageError> {
        match input {
            Input::Start => self.handle_start(now),
            Input::Spawned(w) => self.handle_spawned(now, w),
            Input::SpawnFailed(w) => self.handle_spawn_failed(now, w),
            Input::Report(w, r) => self.handle_report(now, w, r),
            Input::Exited(w, s) => self.handle_exited(now, w, s),
            Input::Reload => self.handle_reload(now),
            Input::Shutdown { graceful } => self.handle_shutdown(now, graceful),
            Input::Timeout => {
                self.handle_timeout(now);
                Ok(())
            }
        }
    }
}
