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

    /// Lazy re-arming (see the module docs) of `key`'s one entry, which `armed` records: an
    /// entry at or before `due` stays, and otherwise (later, or none) the entry moves to `due`.
    ///
    /// # Panics
    /// If `armed` names an entry the index does not hold (the caller's record is corrupt).
    #[inline]
    pub fn rearm_lazily(&mut self, armed: &mut Option<Instant>, due: Instant, key: K) {
        if armed.is_some_and(|at| at <= due) {
            return;
        }
        self.disarm(armed, key);
        self.insert(due, key);
        *armed = Some(due);
    }

    /// Removes `key`'s one entry, which `armed` records, if it has one.
    ///
    /// # Panics
    /// As [`Timers::rearm_lazily`].
    pub fn disarm(&mut self, armed: &mut Option<Instant>, key: K) {
        if let Some(at) = armed.take() {
            assert!(
                self.remove(at, key),
                "armed timer entry missing from the index"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lazy_rearm_moves_only_earlier_and_disarm_removes() {
        let mut t = Timers::new();
        let mut armed = None;
        t.rearm_lazily(&mut armed, Instant::from_secs(5), 1u32);
        assert_eq!(armed, Some(Instant::from_secs(5)));
        // Later: the entry stays where it is.
        t.rearm_lazily(&mut armed, Instant::from_secs(9), 1u32);
        assert_eq!(armed, Some(Instant::from_secs(5)));
        assert!(t.contains(Instant::from_secs(5), 1));
        // Earlier: it moves at once.
        t.rearm_lazily(&mut armed, Instant::from_secs(2), 1u32);
        assert_eq!(armed, Some(Instant::from_secs(2)));
        assert_eq!(t.len(), 1);
        t.disarm(&mut armed, 1u32);
        assert_eq!((armed, t.len()), (None, 0));
        t.disarm(&mut armed, 1u32);
        assert!(t.is_empty());
    }

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
