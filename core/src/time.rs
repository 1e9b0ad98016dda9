//! Time as the core sees it: an [`Instant`] chosen by the driver, never read from a clock.
//!
//! The core has no clock. Every mutating call takes `now: Instant`, which the driver reads from
//! its own clock (tokio's, `std::time::Instant`, or a simulated one) and converts to nanoseconds
//! since an origin of its choosing. Durations are plain [`core::time::Duration`]s.

use core::fmt;
use core::ops::{Add, Sub};
use core::time::Duration;

use crate::error::UsageError;

/// A point in time: nanoseconds since an origin the driver chose.
///
/// Arithmetic saturates instead of overflowing: `Instant::MAX` stands for "never", which is what
/// a deadline of `now + Duration::MAX` should mean.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Instant(u64);

impl Instant {
    /// The driver's origin.
    pub const ZERO: Instant = Instant(0);
    /// The last representable instant; used as "never".
    pub const MAX: Instant = Instant(u64::MAX);

    /// An instant `nanos` nanoseconds after the origin.
    #[must_use]
    pub const fn from_nanos(nanos: u64) -> Instant {
        Instant(nanos)
    }

    /// An instant `millis` milliseconds after the origin (saturating).
    #[must_use]
    pub const fn from_millis(millis: u64) -> Instant {
        Instant(millis.saturating_mul(1_000_000))
    }

    /// An instant `secs` seconds after the origin (saturating).
    #[must_use]
    pub const fn from_secs(secs: u64) -> Instant {
        Instant(secs.saturating_mul(1_000_000_000))
    }

    /// Nanoseconds since the origin.
    #[must_use]
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// The time from the origin to `self`.
    #[must_use]
    pub const fn since_origin(self) -> Duration {
        Duration::from_nanos(self.0)
    }

    /// `self + d`, or `None` if that does not fit.
    #[must_use]
    #[inline]
    pub fn checked_add(self, d: Duration) -> Option<Instant> {
        let nanos = u64::try_from(d.as_nanos()).ok()?;
        self.0.checked_add(nanos).map(Instant)
    }

    /// `self + d`, clamped to [`Instant::MAX`].
    #[must_use]
    #[inline]
    pub fn saturating_add(self, d: Duration) -> Instant {
        self.checked_add(d).unwrap_or(Instant::MAX)
    }

    /// `self - d`, clamped to [`Instant::ZERO`].
    #[must_use]
    pub fn saturating_sub(self, d: Duration) -> Instant {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Instant(self.0.saturating_sub(nanos))
    }

    /// The time elapsed from `earlier` to `self`, or zero if `earlier` is later.
    #[must_use]
    pub const fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// The time elapsed from `earlier` to `self`, or `None` if `earlier` is later.
    #[must_use]
    pub fn checked_duration_since(self, earlier: Instant) -> Option<Duration> {
        self.0.checked_sub(earlier.0).map(Duration::from_nanos)
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    /// Saturating: a deadline too far away becomes [`Instant::MAX`].
    #[inline]
    fn add(self, d: Duration) -> Instant {
        self.saturating_add(d)
    }
}

impl Sub<Duration> for Instant {
    type Output = Instant;
    /// Saturating at [`Instant::ZERO`].
    fn sub(self, d: Duration) -> Instant {
        self.saturating_sub(d)
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    /// Saturating: zero if `rhs` is later.
    fn sub(self, rhs: Instant) -> Duration {
        self.saturating_duration_since(rhs)
    }
}

impl fmt::Debug for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Instant::MAX {
            return f.write_str("Instant(never)");
        }
        write!(
            f,
            "Instant({}.{:09}s)",
            self.0 / 1_000_000_000,
            self.0 % 1_000_000_000
        )
    }
}

impl fmt::Display for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Remembers the latest `now` a machine was given, so time cannot go backwards.
///
/// Every machine owns one. Inputs call [`TimeGuard::check`], which refuses an earlier `now` with
/// [`UsageError::TimeWentBackwards`] before anything changes; `handle_timeout` calls
/// [`TimeGuard::advance`], which makes an earlier `now` a no-op.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TimeGuard {
    last: Instant,
}

impl TimeGuard {
    /// Accepts `now` if it is not earlier than the latest time seen, and remembers it.
    #[inline]
    pub(crate) fn check(&mut self, now: Instant) -> Result<(), UsageError> {
        self.peek(now)?;
        self.last = now;
        Ok(())
    }

    /// Like [`TimeGuard::check`] without remembering `now`: for inputs that validate everything
    /// before they change anything.
    #[inline]
    pub(crate) fn peek(&self, now: Instant) -> Result<(), UsageError> {
        if now < self.last {
            return Err(UsageError::TimeWentBackwards {
                now,
                last: self.last,
            });
        }
        Ok(())
    }

    /// Like [`TimeGuard::check`] but answers `false` instead of an error.
    #[inline]
    pub(crate) fn advance(&mut self, now: Instant) -> bool {
        self.check(now).is_ok()
    }

    /// The latest time seen.
    #[cfg(test)]
    pub(crate) fn last(&self) -> Instant {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        assert_eq!(Instant::MAX + Duration::from_secs(1), Instant::MAX);
        assert_eq!(Instant::ZERO - Duration::from_secs(1), Instant::ZERO);
        assert_eq!(
            Instant::from_secs(1) - Instant::from_secs(3),
            Duration::ZERO
        );
        assert_eq!(Instant::ZERO + Duration::MAX, Instant::MAX);
        assert_eq!(
            Instant::from_secs(2) - Instant::from_millis(500),
            Duration::from_millis(1500)
        );
        assert_eq!(
            Instant::from_secs(1).checked_duration_since(Instant::from_secs(2)),
            None
        );
    }

    #[test]
    fn guard_refuses_backwards_time() {
        let mut g = TimeGuard::default();
        assert!(g.check(Instant::from_secs(5)).is_ok());
        assert_eq!(
            g.check(Instant::from_secs(4)),
            Err(UsageError::TimeWentBackwards {
                now: Instant::from_secs(4),
                last: Instant::from_secs(5)
            })
        );
        assert_eq!(g.last, Instant::from_secs(5));
        assert!(!g.advance(Instant::from_secs(1)));
        assert!(g.advance(Instant::from_secs(5)));
    }
}
