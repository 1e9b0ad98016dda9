//! The reference model's side of the simulation: every output of the pool is checked against
//! the model's own bookkeeping, and the network acts on the driver actions.

use std::collections::BTreeMap;

use moor_core::pool::{CheckoutError, CloseReason, Endpoint, FromCache, Output, PoolKey};
use moor_core::{CheckoutId, ConnId};

use super::{Expect, NetEvent, PoolSim, Sock, SockInfo};

impl PoolSim {
    /// Drains the pool's outputs, checking each against the model and acting on it.
    pub(super) fn drive(&mut self, mut expect: Expect) {
        let mut immediate_seen = false;
        while let Some(out) = self.pool.poll_output() {
            self.trace.push(format!("{:?} {out:?}", self.now));
            match out {
                Output::Resolve { host } => {
                    self.lookups += 1;
                    let lookup = self.lookups;
                    let earlier = self.resolving.insert(host.clone(), (self.now, lookup));
                    assert_eq!(
                        earlier, None,
                        "second lookup of {host} while one is in flight"
                    );
                    let at = self.now + self.net.latency();
                    if self.net.chance(self.config.net.dns_silent_permille) {
                        continue;
                    }
                    let ok = !self.net.chance(self.config.net.dns_fail_permille);
                    let addrs = self.net.below(5) as u8;
                    self.net.schedule(
                        at,
                        NetEvent::Resolved {
                            host,
                            lookup,
                            ok,
                            addrs,
                        },
                    );
                }
                Output::CancelResolve { host } => {
                    let (asked, _) = self.resolving.remove(&host).unwrap_or_else(|| {
                        panic!("cancel of {host}, which is not being looked up")
                    });
                    assert!(
                        self.shut_down || asked + self.config.pool.connect_timeout <= self.now,
                        "the lookup of {host} was cancelled before its connect_timeout"
                    );
                }
                Output::Connect {
                    conn,
                    attempt,
                    key,
                    addr,
                } => {
                    assert_eq!(addr.port(), key.port());
                    self.attempt_started(conn, attempt, &key);
                    let info = self.socks.get_mut(&conn).expect("just checked");
                    assert_eq!(info.key, key, "a conn never changes key");
                    let Sock::Connecting {
                        running,
                        started,
                        last_start,
                    } = &mut info.state
                    else {
                        unreachable!("just checked");
                    };
                    assert_eq!(attempt, *started, "{conn:?}: attempts start in order, once");
                    assert!(
                        attempt < info.order.len(),
                        "{conn:?}: more attempts than addresses"
                    );
                    assert_eq!(
                        addr.ip(),
                        info.order[attempt],
                        "{conn:?}: the addresses are tried in RFC 8305 order"
                    );
                    running.insert(attempt, self.now);
                    *started += 1;
                    *last_start = self.now;
                    self.check_caps();
                    let at = self.now + self.net.latency();
                    if self.net.chance(self.config.net.silent_connect_permille) {
                        continue;
                    }
                    let event = if self.net.chance(self.config.net.refuse_permille) {
                        NetEvent::Refused { conn, attempt }
                    } else {
                        NetEvent::Connected { conn, attempt }
                    };
                    self.net.schedule(at, event);
                }
                Output::CancelConnect { conn, attempt } => {
                    if let Some((winner, rivals)) = &mut self.owed_cancels
                        && *winner == conn
                    {
                        assert!(
                            rivals.remove(&attempt),
                            "{conn:?}: cancel of attempt {attempt}, which was not racing the winner"
                        );
                        continue;
                    }
                    let timeout = self.config.pool.connect_timeout;
                    let info = self
                        .socks
                        .get_mut(&conn)
                        .unwrap_or_else(|| panic!("CancelConnect of unknown {conn:?}"));
                    let Sock::Connecting {
                        running, started, ..
                    } = &mut info.state
                    else {
                        panic!("CancelConnect of {conn:?} in state {:?}", info.state)
                    };
                    let start = running.remove(&attempt).unwrap_or_else(|| {
                        panic!("{conn:?}: cancel of attempt {attempt}, which is not running")
                    });
                    assert!(
                        start + timeout <= self.now,
                        "{conn:?}: attempt {attempt} cancelled before its connect_timeout"
                    );
                    assert!(
                        !running.is_empty() || *started < info.order.len(),
                        "{conn:?}: its last attempt was cancelled instead of the conn closed"
                    );
                    self.attempts_timed_out += 1;
                    self.attempt_ended.insert(conn);
                }
                Output::Close { conn, reason } => {
                    let info = self
                        .socks
                        .remove(&conn)
                        .unwrap_or_else(|| panic!("Close of unknown {conn:?}"));
                    match (reason, &info.state) {
                        (CloseReason::IdleTimeout, Sock::Idle { since, .. }) => {
                            assert!(
                                *since + self.config.pool.idle_timeout <= self.now,
                                "idle connection closed early"
                            );
                        }
                        (CloseReason::MaxLifetime, Sock::Idle { .. }) => {
                            assert!(
                                self.config.pool.max_lifetime.is_some(),
                                "MaxLifetime without a lifetime"
                            );
                        }
                        (CloseReason::Evicted, Sock::Idle { seq, .. }) => {
                            let oldest = self
                                .socks
                                .values()
                                .filter_map(|s| match s.state {
                                    Sock::Idle { seq, .. } => Some(seq),
                                    _ => None,
                                })
                                .min();
                            assert!(
                                oldest.is_none_or(|o| o > *seq),
                                "evicted an idle connection that was not the LRU"
                            );
                        }
                        (
                            CloseReason::PeerClosed
                            | CloseReason::Discarded
                            | CloseReason::Shutdown,
                            Sock::Idle { .. },
                        ) => {}
                        (
                            CloseReason::ConnectTimedOut,
                            Sock::Connecting {
                                running, started, ..
                            },
                        ) => {
                            assert_eq!(
                                *started,
                                info.order.len(),
                                "{conn:?} gave up at a timeout with addresses left"
                            );
                            let [start] = running.values().copied().collect::<Vec<_>>()[..] else {
                                panic!("{conn:?} gave up with attempts {running:?} still running")
                            };
                            assert!(
                                start + self.config.pool.connect_timeout <= self.now,
                                "{conn:?} gave up before its last attempt's connect_timeout"
                            );
                        }
                        (CloseReason::Shutdown, Sock::Connecting { .. }) => {}
                        (reason, state) => panic!("Close {reason:?} of a conn in state {state:?}"),
                    }
                }
                Output::Acquired {
                    checkout,
                    conn,
                    from_cache,
                } => {
                    let (key, was_head) = self.answer(checkout);
                    assert!(
                        was_head,
                        "{checkout:?} served before an older checkout of its key"
                    );
                    let info = self
                        .socks
                        .get_mut(&conn)
                        .unwrap_or_else(|| panic!("acquired unknown {conn:?}"));
                    assert_eq!(info.key, key, "connection of another key");
                    let Sock::Idle { created, .. } = info.state else {
                        panic!("{conn:?} handed out while {:?}: leased twice?", info.state)
                    };
                    info.state = Sock::Leased { created };
                    match from_cache {
                        FromCache::Immediate => {
                            let (made, predicted) =
                                expect.checkout.expect("Immediate only answers a checkout");
                            assert_eq!(made, checkout);
                            if self.config.pool.max_lifetime.is_none() {
                                assert_eq!(predicted, Some(conn), "reuse order");
                            }
                            immediate_seen = true;
                        }
                        FromCache::Deferred => assert_eq!(
                            expect.deferred.take(),
                            Some(conn),
                            "Deferred without a checkin"
                        ),
                        FromCache::Fresh => {
                            assert_eq!(expect.fresh.take(), Some(conn), "Fresh without a connect")
                        }
                    }
                }
                Output::CheckoutFailed { checkout, error } => {
                    self.answer(checkout);
                    if error == CheckoutError::Shutdown {
                        assert!(self.shut_down);
                    }
                }
                Output::Drained => {
                    assert!(self.shut_down);
                    self.drained += 1;
                }
                other => panic!("unknown output {other:?}"),
            }
        }
        self.attempt_ended.clear();
        if let Some((checkout, predicted)) = expect.checkout
            && self.config.pool.max_lifetime.is_none()
        {
            assert_eq!(
                immediate_seen,
                predicted.is_some(),
                "{checkout:?}: an idle connection must be reused at once"
            );
        }
    }

    /// Marks `checkout` answered (exactly once); returns its key and whether it was the oldest
    /// pending checkout of that key. Failures may hit any waiter (a deadline); a success must go
    /// to the oldest (strict FIFO, no barging).
    pub(super) fn answer(&mut self, checkout: CheckoutId) -> (Endpoint, bool) {
        assert!(
            self.answered.insert(checkout),
            "{checkout:?} answered twice"
        );
        let key = self
            .pending
            .remove(&checkout)
            .unwrap_or_else(|| panic!("answer for {checkout:?}, which is not pending"));
        let queue = self.queues.get_mut(&key).expect("queued");
        let was_head = queue.front() == Some(&checkout);
        queue.retain(|c| *c != checkout);
        (key, was_head)
    }

    pub(super) fn check_caps(&self) {
        let mut per_key: BTreeMap<&Endpoint, usize> = BTreeMap::new();
        for s in self.socks.values() {
            *per_key.entry(&s.key).or_default() += 1;
        }
        assert!(
            self.socks.len() <= self.config.pool.max_open,
            "global cap exceeded"
        );
        assert!(
            per_key.values().all(|&n| n <= self.config.pool.max_per_key),
            "per-key cap exceeded"
        );
    }

    pub(super) fn check_idle_deadlines(&self) {
        for (conn, s) in &self.socks {
            if let Sock::Idle { since, .. } = s.state {
                assert!(
                    since + self.config.pool.idle_timeout > self.now,
                    "{conn:?} idle since {since:?} outlived its keep-alive at {:?}",
                    self.now
                );
            }
        }
    }

    /// Checks a Connect may start attempt `attempt` of `conn` now: a new conn starts with
    /// attempt 0 on its lookup's (or literal) address; a connecting one starts its next
    /// address after `next_attempt_delay`, or at once when an attempt just ended.
    fn attempt_started(&mut self, conn: ConnId, attempt: usize, key: &Endpoint) {
        let delay = self.config.pool.next_attempt_delay;
        match self.socks.get(&conn) {
            None => {
                assert_eq!(attempt, 0, "{conn:?}: a connection starts with attempt 0");
                let order = match key.literal_addr() {
                    Some(a) => vec![a.ip()],
                    None => super::rfc8305_order(&self.answered_addrs[key.host()]),
                };
                self.socks.insert(
                    conn,
                    SockInfo {
                        key: key.clone(),
                        state: Sock::Connecting {
                            running: BTreeMap::new(),
                            started: 0,
                            last_start: self.now,
                        },
                        first_connect: self.now,
                        order,
                    },
                );
            }
            Some(SockInfo {
                state:
                    Sock::Connecting {
                        running,
                        last_start,
                        ..
                    },
                ..
            }) => {
                let delay_up = delay.is_some_and(|d| *last_start + d <= self.now);
                let ended = self.attempt_ended.remove(&conn);
                assert!(
                    ended || delay_up,
                    "{conn:?}: attempt {attempt} started before an attempt ended or the delay was up"
                );
                if !running.is_empty() {
                    assert!(delay.is_some(), "{conn:?}: two attempts at once");
                    self.races += 1;
                }
            }
            Some(other) => panic!("Connect for {conn:?} in state {other:?}"),
        }
    }

    /// After the timers fired at `now`: no attempt is past its connect timeout, and no next
    /// address past its start.
    pub(super) fn check_connect_deadlines(&self) {
        for (conn, s) in &self.socks {
            if let Sock::Connecting {
                running,
                started,
                last_start,
            } = &s.state
            {
                assert!(!running.is_empty(), "{conn:?} connecting with no attempt");
                for (attempt, start) in running {
                    assert!(
                        *start + self.config.pool.connect_timeout > self.now,
                        "{conn:?}: attempt {attempt} outlived its connect_timeout"
                    );
                }
                if let Some(d) = self.config.pool.next_attempt_delay
                    && *started < s.order.len()
                {
                    assert!(
                        *last_start + d > self.now,
                        "{conn:?}: the next address did not start after the delay"
                    );
                }
            }
        }
    }

    pub(super) fn check(&self) {
        self.pool.check_invariants();
        self.check_caps();
        let g = self.pool.stats().total;
        let count = |f: fn(&Sock) -> bool| self.socks.values().filter(|s| f(&s.state)).count();
        assert_eq!(
            g.leased,
            count(|s| matches!(s, Sock::Leased { .. })),
            "leased gauge"
        );
        assert_eq!(
            g.idle,
            count(|s| matches!(s, Sock::Idle { .. })),
            "idle gauge"
        );
        assert!(
            g.connecting >= count(|s| matches!(s, Sock::Connecting { .. })),
            "connecting gauge"
        );
        assert_eq!(g.waiters, self.pending.len(), "waiters gauge");
        assert!(self.drained <= 1);
    }
}
