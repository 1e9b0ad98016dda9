//! The deadline index every machine keeps its timers in.
//!
//! [`Timers`] is an ordered set of `(deadline, key)` pairs: insert, remove and pop-earliest are
//! O(log n), and ties break on the key, so expiry order is deterministic.
//!
//! Machines avoid touching the index on hot paths with *lazy re-arming*: an object keeps at most
//! one entry, remembers where it is armed, and when its true deadline moves later (an input
//! timeout pushed back by every read, an idle timer restarted by every checkin) it leaves the entry
//! where it is. When the entry fires, the machine compares it with the true deadline and re-arms
//! once if it is not due yet. A deadline that moves earlier is re-armed at once, so nothing fires
//! late.

use alloc::collections::BTreeSet;

use crate::time::Instant;

/// An ordered index of deadlines, each naming the key of what is due.
#[derive(Debug, Clone)]
pub struct Timers<K> {
    set: BTreeSet<(Instant, K)>,
}

impl<K: Ord + Copy> Default for Timers<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Ord + Copy> Timers<K> {
    /// An empty index.
    #[must_use]
    pub const fn new() -> Self {
        Timers {
            set: BTreeSet::new(),
        }
    }

    /// Arms `key` at `deadline`. Returns `false` if that exact pair was already armed.
    pub fn insert(&mut self, deadline: Instant, key: K) -> bool {
        self.set.insert((deadline, key))
    }

    /// Disarms `key` at `deadline`. Returns `false` if that pair was not armed.
    pub fn remove(&mut self, deadline: Instant, key: K) -> bool {
        self.set.remove(&(deadline, key))
    }

    /// Whether `key` is armed at `deadline`.
    #[must_use]
    pub fn contains(&self, deadline: Instant, key: K) -> bool {
        self.set.contains(&(deadline, key))
    }

    /// The earliest deadline, if any.
    #[must_use]
    pub fn next_deadline(&self) -> Option<Instant> {
        self.set.first().map(|&(at, _)| at)
    }

    /// Removes and returns the earliest entry if it is due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, K)> {
        match self.set.first() {
            Some(&(at, _)) if at <= now => self.set.pop_first(),
            _ => None,
        }
    }

    /// Number of armed entries.
    #[must_use]
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// Whether nothing is armed.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// Disarms everything.
    pub fn clear(&mut self) {
        self.set.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_deadline_then_key_order_and_only_when_due() {
        let mut t = Timers::new();
        t.insert(Instant::from_secs(2), 7u32);
        t.insert(Instant::from_secs(1), 9u32);
        t.insert(Instant::from_secs(1), 3u32);
        assert_eq!(t.next_deadline(), Some(Instant::from_secs(1)));
        assert_eq!(t.pop_due(Instant::ZERO), None);
        assert_eq!(
            t.pop_due(Instant::from_secs(1)),
            Some((Instant::from_secs(1), 3))
        );
        assert_eq!(
            t.pop_due(Instant::from_secs(1)),
            Some((Instant::from_secs(1), 9))
        );
        assert_eq!(t.pop_due(Instant::from_secs(1)), None);
        assert!(t.remove(Instant::from_secs(2), 7));
        assert!(!t.remove(Instant::from_secs(2), 7));
        assert!(t.is_empty());
    }
}
