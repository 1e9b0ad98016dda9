//! Backoff between retries, with seeded jitter: shared by [`reconnect`](crate::reconnect) (delay
//! between connection attempts) and [`prefork`](crate::prefork) (respawn delay after a crash loop).
//!
//! Two policies:
//! - [`BackoffPolicy::Fixed`]: the same delay every time, the seed's `reconnect_after` (2 s).
//! - [`BackoffPolicy::Exponential`]: gRPC's connection backoff. The n-th delay since the last
//!   reset (n = 0, 1, ...) is `base(n) = min(initial * multiplier^n, max)`, scaled by a uniform
//!   factor in `[1 - jitter, 1 + jitter]`. Jitter is applied around the capped base, so delays at
//!   the cap stay spread out (clients that failed together do not retry together); a delay is
//!   therefore at most `max * (1 + jitter)`.
//!
//! The jitter comes from a [`Rng`] seeded by the caller: the same seed gives the same delays.

use core::time::Duration;

use crate::error::ConfigError;
use crate::rng::Rng;

/// The longest delay a policy may ask for: keeps jittered arithmetic far from overflow.
pub const MAX_DELAY: Duration = Duration::from_secs(365 * 24 * 3600);

/// How long to wait before the next retry.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum BackoffPolicy {
    /// Always the same delay, no jitter (the seed's `reconnect_after`).
    Fixed {
        /// The delay; must be positive.
        delay: Duration,
    },
    /// Exponential growth with jitter (gRPC's connection backoff).
    Exponential {
        /// The first delay after a reset; must be positive.
        initial: Duration,
        /// Growth factor per retry; finite and at least 1.
        multiplier: f64,
        /// Relative jitter, in `[0, 1)`: 0.2 means ±20 %.
        jitter: f64,
        /// Cap on the un-jittered delay; at least `initial`.
        max: Duration,
    },
}

impl BackoffPolicy {
    /// The seed's policy: a fixed 2 s `reconnect_after`.
    #[must_use]
    pub const fn seed_fixed() -> BackoffPolicy {
        BackoffPolicy::Fixed {
            delay: Duration::from_secs(2),
        }
    }

    /// gRPC's defaults: 1 s initial, ×1.6, ±20 % jitter, 120 s cap.
    #[must_use]
    pub const fn grpc() -> BackoffPolicy {
        BackoffPolicy::Exponential {
            initial: Duration::from_secs(1),
            multiplier: 1.6,
            jitter: 0.2,
            max: Duration::from_secs(120),
        }
    }

    /// Checks the policy.
    ///
    /// # Errors
    /// [`ConfigError`] if a delay is zero, the multiplier is below 1 or not finite, the jitter is
    /// outside `[0, 1)`, or `max < initial`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match *self {
            BackoffPolicy::Fixed { delay } => {
                if delay.is_zero() {
                    return Err(ConfigError::Zero {
                        field: "backoff.delay",
                    });
                }
                if delay > MAX_DELAY {
                    return Err(ConfigError::OutOfRange {
                        field: "backoff.delay",
                        expected: "at most one year",
                    });
                }
            }
            BackoffPolicy::Exponential {
                initial,
                multiplier,
                jitter,
                max,
            } => {
                if initial.is_zero() {
                    return Err(ConfigError::Zero {
                        field: "backoff.initial",
                    });
                }
                if !(multiplier.is_finite() && multiplier >= 1.0) {
                    return Err(ConfigError::OutOfRange {
                        field: "backoff.multiplier",
                        expected: "finite and at least 1",
                    });
                }
                if !(0.0..1.0).contains(&jitter) {
                    return Err(ConfigError::OutOfRange {
                        field: "backoff.jitter",
                        expected: "in [0, 1)",
                    });
                }
                if max < initial {
                    return Err(ConfigError::Conflict {
                        field: "backoff.max",
                        other: "backoff.initial",
                        rule: "max must be at least initial",
                    });
                }
                if max > MAX_DELAY {
                    return Err(ConfigError::OutOfRange {
                        field: "backoff.max",
                        expected: "at most one year",
                    });
                }
            }
        }
        Ok(())
    }

    /// The un-jittered delay for the `n`-th retry since a reset (`n` starts at 0).
    #[must_use]
    pub fn base_delay(&self, n: u32) -> Duration {
        match *self {
            BackoffPolicy::Fixed { delay } => delay,
            BackoffPolicy::Exponential {
                initial,
                multiplier,
                max,
                ..
            } => {
                // Closed form in f64 seconds: O(1), and an overflow becomes +inf, which the cap
                // absorbs (Duration arithmetic would panic instead).
                let grown = initial.as_secs_f64() * pow_u32(multiplier, n);
                if grown.is_finite() && grown < max.as_secs_f64() {
                    Duration::from_secs_f64(grown).max(initial)
                } else {
                    max
                }
            }
        }
    }

    /// The smallest and largest delay the `n`-th retry can get, jitter included.
    #[must_use]
    pub fn delay_bounds(&self, n: u32) -> (Duration, Duration) {
        let base = self.base_delay(n);
        match *self {
            BackoffPolicy::Fixed { .. } => (base, base),
            BackoffPolicy::Exponential { jitter, .. } => {
                (base.mul_f64(1.0 - jitter), base.mul_f64(1.0 + jitter))
            }
        }
    }

    /// The smallest delay this policy can ever give.
    #[must_use]
    pub fn min_delay(&self) -> Duration {
        self.delay_bounds(0).0
    }
}

/// `base^exp` by squaring (no `powf` in `core`): O(log exp); overflow gives +inf.
fn pow_u32(mut base: f64, mut exp: u32) -> f64 {
    let mut acc = 1.0;
    while exp > 0 {
        if exp & 1 == 1 {
            acc *= base;
        }
        base *= base;
        exp >>= 1;
    }
    acc
}

/// A backoff sequence: successive delays under a [`BackoffPolicy`], reset on success.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: BackoffPolicy,
    rng: Rng,
    /// Retries since the last reset; saturates (the cap was reached long before).
    retries: u32,
    /// The next un-jittered delay, kept so each step is O(1).
    next_base: Duration,
}

impl Backoff {
    /// A fresh sequence whose jitter is determined by `seed`.
    ///
    /// # Errors
    /// [`ConfigError`] if the policy is invalid (see [`BackoffPolicy::validate`]).
    pub fn new(policy: BackoffPolicy, seed: u64) -> Result<Backoff, ConfigError> {
        policy.validate()?;
        Ok(Backoff {
            policy,
            rng: Rng::new(seed),
            retries: 0,
            next_base: policy.base_delay(0),
        })
    }

    /// The policy.
    #[must_use]
    pub fn policy(&self) -> &BackoffPolicy {
        &self.policy
    }

    /// Retries since the last reset.
    #[must_use]
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// The un-jittered delay the next call to [`Backoff::next_delay`] is built on.
    #[must_use]
    pub fn peek_base(&self) -> Duration {
        self.next_base
    }

    /// The next delay (jittered), advancing the sequence.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next_base;
        self.retries = self.retries.saturating_add(1);
        match self.policy {
            BackoffPolicy::Fixed { .. } => base,
            BackoffPolicy::Exponential { jitter, .. } => {
                self.next_base = self.policy.base_delay(self.retries);
                self.rng.jitter(base, jitter)
            }
        }
    }

    /// Back to the first delay (after a success that lasted).
    pub fn reset(&mut self) {
        self.retries = 0;
        self.next_base = self.policy.base_delay(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    #[test]
    fn fixed_is_constant_and_seed_default_is_two_seconds() {
        let mut b = Backoff::new(BackoffPolicy::seed_fixed(), 1).unwrap();
        for _ in 0..5 {
            assert_eq!(b.next_delay(), Duration::from_secs(2));
        }
        assert_eq!(b.retries(), 5);
    }

    #[test]
    fn exponential_grows_by_multiplier_within_jitter_and_caps() {
        let p = BackoffPolicy::grpc();
        let mut b = Backoff::new(p, 42).unwrap();
        let mut expected = 1.0f64;
        for n in 0..40 {
            let d = b.next_delay().as_secs_f64();
            let base = expected.min(120.0);
            assert!(
                d >= base * 0.8 - 1e-6 && d <= base * 1.2 + 1e-6,
                "retry {n}: {d} not within 20% of {base}"
            );
            let (lo, hi) = p.delay_bounds(n);
            assert!(d >= lo.as_secs_f64() - 1e-9 && d <= hi.as_secs_f64() + 1e-9);
            expected *= 1.6;
        }
        assert_eq!(p.base_delay(100), Duration::from_secs(120));
        assert_eq!(p.base_delay(1), Duration::from_millis(1600));
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::new(BackoffPolicy::grpc(), 3).unwrap();
        for _ in 0..10 {
            b.next_delay();
        }
        assert!(b.peek_base() > Duration::from_secs(60));
        b.reset();
        assert_eq!(b.retries(), 0);
        assert_eq!(b.peek_base(), Duration::from_secs(1));
        let d = b.next_delay();
        assert!(d >= Duration::from_millis(800) && d <= Duration::from_millis(1200));
    }

    #[test]
    fn same_seed_same_delays_different_seed_different_delays() {
        let run = |seed| {
            let mut b = Backoff::new(BackoffPolicy::grpc(), seed).unwrap();
            (0..20).map(|_| b.next_delay()).collect::<Vec<_>>()
        };
        assert_eq!(run(9), run(9));
        assert_ne!(run(9), run(10));
    }

    #[test]
    fn invalid_policies_are_config_errors() {
        let bad = [
            BackoffPolicy::Fixed {
                delay: Duration::ZERO,
            },
            BackoffPolicy::Exponential {
                initial: Duration::ZERO,
                multiplier: 2.0,
                jitter: 0.1,
                max: Duration::from_secs(1),
            },
            BackoffPolicy::Exponential {
                initial: Duration::from_secs(1),
                multiplier: 0.5,
                jitter: 0.1,
                max: Duration::from_secs(10),
            },
            BackoffPolicy::Exponential {
                initial: Duration::from_secs(1),
                multiplier: f64::NAN,
                jitter: 0.1,
                max: Duration::from_secs(10),
            },
            BackoffPolicy::Exponential {
                initial: Duration::from_secs(1),
                multiplier: 2.0,
                jitter: 1.0,
                max: Duration::from_secs(10),
            },
            BackoffPolicy::Exponential {
                initial: Duration::from_secs(10),
                multiplier: 2.0,
                jitter: 0.1,
                max: Duration::from_secs(1),
            },
            BackoffPolicy::Fixed {
                delay: Duration::MAX,
            },
        ];
        for p in bad {
            assert!(Backoff::new(p, 0).is_err(), "{p:?} accepted");
        }
    }

    #[test]
    fn huge_multiplier_saturates_at_the_cap() {
        let p = BackoffPolicy::Exponential {
            initial: Duration::from_secs(1),
            multiplier: 1e300,
            jitter: 0.0,
            max: Duration::from_secs(5),
        };
        let mut b = Backoff::new(p, 0).unwrap();
        assert_eq!(b.next_delay(), Duration::from_secs(1));
        assert_eq!(b.next_delay(), Duration::from_secs(5));
        assert_eq!(p.base_delay(u32::MAX), Duration::from_secs(5));
    }
}
