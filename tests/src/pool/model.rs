//! The reference model's side of the simulation: every output of the pool is checked against
//! the model's own bookkeeping, and the network acts on the driver actions.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use moor_core::CheckoutId;
use moor_core::pool::{CheckoutError, CloseReason, Endpoint, FromCache, Output, PoolKey};

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
                    let addrs = self.net.below(3) as u8;
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
                Output::Connect { conn, key, addr } => {
                    assert_eq!(addr.port(), key.port());
                    if let Some((retried, info)) = self.retrying.take_if(|(c, _)| *c == conn) {
                        self.socks.insert(retried, info);
                    }
                    let attempt = match self.socks.get(&conn) {
                        Some(SockInfo {
                            state: Sock::Connecting { attempt },
                            ..
                        }) => attempt + 1,
                        Some(other) => panic!("Connect for {conn:?} in state {other:?}"),
                        None => {
                            // A literal address, or its lookup was answered just now.
                            let addrs = match key.literal_addr() {
                                Some(_) => 1,
                                None => self.answered_addrs[key.host()],
                            };
                            self.socks.insert(
                                conn,
                                SockInfo {
                                    key: key.clone(),
                                    state: Sock::Connecting { attempt: 0 },
                                    first_connect: self.now,
                                    addrs,
                                },
                            );
                            1
                        }
                    };
                    let info = self.socks.get_mut(&conn).expect("just inserted");
                    assert_eq!(info.key, key, "a conn never changes key");
                    assert!(
                        attempt <= u32::from(info.addrs),
                        "{conn:?}: more attempts than addresses"
                    );
                    let expected = key
                        .literal_addr()
                        .map_or(IpAddr::V4(Ipv4Addr::new(127, 0, 1, attempt as u8)), |a| {
                            a.ip()
                        });
                    assert_eq!(
                        addr.ip(),
                        expected,
                        "{conn:?}: the addresses are tried in order"
                    );
                    info.state = Sock::Connecting { attempt };
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
                        (CloseReason::ConnectTimedOut, Sock::Connecting { attempt }) => {
                            assert_eq!(
                                *attempt,
                                u32::from(info.addrs),
                                "{conn:?} gave up at a timeout with addresses left"
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
