//! The pool's internal invariants, checked by tests and fuzzing after every step.

use super::{ConnState, Gauges, Pool, PoolKey, PoolState, Timer};

impl<K: PoolKey> Pool<K> {
    /// Checks the pool's internal invariants, panicking on a violation. For tests and fuzzing:
    /// it walks every table, so it is O(n).
    #[doc(hidden)]
    pub fn check_invariants(&self) {
        assert_eq!(
            self.conns.len(),
            self.total.open,
            "open gauge counts every connection"
        );
        assert_eq!(
            self.total.open,
            self.total.idle + self.total.leased + self.total.connecting
        );
        assert_eq!(self.waiters.len(), self.total.waiters);
        // Every waiter has exactly one deadline entry: in the default-deadline list (which is
        // in deadline order) or in the timers.
        let mut listed = 0;
        let mut last = None;
        for (id, w) in self.waiters.iter() {
            if w.in_expiry {
                listed += 1;
                assert!(!self.timers.contains(w.deadline, Timer::Waiter(id)));
            } else {
                assert!(self.timers.contains(w.deadline, Timer::Waiter(id)));
            }
        }
        assert_eq!(self.expiry.len(), listed);
        let mut next = self.expiry.front();
        while let Some(id) = next {
            let w = self.waiters.get(id).expect("listed waiter is live");
            assert!(w.in_expiry);
            assert!(
                last.is_none_or(|l| l <= w.deadline),
                "expiry list out of order"
            );
            last = Some(w.deadline);
            next = (w.expiry_links.next() != 0).then(|| w.expiry_links.next());
        }
        assert_eq!(self.lru.len(), self.total.idle);
        assert_eq!(self.key_ids.len(), self.keys.len());
        assert!(
            self.total.open <= self.config.max_open,
            "global cap exceeded"
        );
        assert!(
            self.total.waiters <= self.config.max_waiters,
            "waiter bound exceeded"
        );
        let mut sum = Gauges::default();
        for (_, ks) in self.keys.iter() {
            let g = ks.gauges;
            assert!(g.open <= self.config.max_per_key, "per-key cap exceeded");
            assert_eq!(g.open, g.idle + g.leased + g.connecting);
            assert_eq!(ks.idle.len(), g.idle);
            assert_eq!(ks.waiters.len(), g.waiters);
            assert!(
                g.idle == 0 || g.waiters == 0,
                "idle connections while checkouts wait"
            );
            assert!(
                g.open > 0 || g.waiters > 0 || ks.in_blocked,
                "empty key kept"
            );
            sum.open += g.open;
            sum.idle += g.idle;
            sum.leased += g.leased;
            sum.connecting += g.connecting;
            sum.waiters += g.waiters;
        }
        assert_eq!(sum, self.total, "per-key gauges add up to the totals");
        for (id, c) in self.conns.iter() {
            if let ConnState::Connecting(a) = &c.state {
                assert!(!a.running.is_empty(), "a connecting conn with no attempt");
                assert!(a.next <= a.addrs.len());
                assert!(
                    a.running
                        .windows(2)
                        .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
                    "attempts out of start order"
                );
                assert!(a.running.iter().all(|&(n, _)| n < a.next));
                assert_eq!(
                    a.next_start.is_some(),
                    self.config.next_attempt_delay.is_some() && a.next < a.addrs.len(),
                    "a next start exactly when an address is left to race"
                );
            }
            if let Some(deadline) = c.deadline(&self.config) {
                let at = c.armed.expect("a connection with a deadline has a timer");
                assert!(at <= deadline, "timer armed after the deadline");
                assert!(self.timers.contains(at, Timer::Conn(id)));
            }
        }
        if self.state == PoolState::Drained {
            assert!(self.conns.is_empty() && self.waiters.is_empty() && self.keys.is_empty());
        }
    }
}
