//! Identifiers: [`Token`]s the caller chooses, and ids the core mints and never reuses.

use core::fmt;

/// A name the caller chooses for something it asks for (a reconnecting link's subscriber).
///
/// The core never interprets a token; it only echoes it back. A token must be unique among the
/// caller's requests that are still pending; reusing one is a [`UsageError::DuplicateToken`].
///
/// [`UsageError::DuplicateToken`]: crate::UsageError::DuplicateToken
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Token(pub u64);

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "token {}", self.0)
    }
}

macro_rules! minted_id {
    ($(#[$doc:meta])* $name:ident, $label:literal) => {
        $(#[$doc])*
        ///
        /// Minted by the core and never reused within one machine. The raw value is stable and
        /// may be used as a key in the driver's own tables.
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
        pub struct $name(u64);

        impl $name {
            /// Rebuilds an id from [`Self::to_raw`]; an id the core never minted is refused by
            /// every call that takes one.
            #[must_use]
            pub const fn from_raw(raw: u64) -> Self {
                $name(raw)
            }

            /// The raw value of this id.
            #[must_use]
            pub const fn to_raw(self) -> u64 {
                self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($label, "#{}"), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($label, " {}"), self.0)
            }
        }
    };
}

minted_id!(
    /// One checkout of a pool: named by the pool when the checkout is made, carried by its
    /// answer, and used to cancel it.
    CheckoutId,
    "checkout"
);
minted_id!(
    /// A connection owned by a pool or a multi engine.
    ConnId,
    "conn"
);
minted_id!(
    /// One connection attempt of a reconnecting link.
    AttemptId,
    "attempt"
);
minted_id!(
    /// One worker process of a prefork supervisor.
    WorkerId,
    "worker"
);

/// Mints ids from a counter: the simplest way never to reuse one.
#[derive(Debug, Clone, Default)]
pub(crate) struct Counter {
    next: u64,
}

impl Counter {
    /// The next value; starts at 1 so that 0 is never a valid id.
    pub(crate) fn next(&mut self) -> u64 {
        self.next += 1;
        self.next
    }
}
