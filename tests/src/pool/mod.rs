//! A simulation of the pool: a driver over the [fake network](crate::sim), an application that
//! checks connections out and in, and a reference model that predicts and checks every output.
//!
//! The model is an independent, deliberately naive bookkeeping of what the pool must do (linear
//! scans, plain maps). After every step it checks: caps never exceeded, every accepted checkout
//! answered exactly once, FIFO per key, no connection leased twice, an idle connection reused
//! immediately when the model has one (in LIFO/FIFO order) and never otherwise, eviction of the
//! least recently used idle connection, idle connections closed by their deadline and not
//! before, one resolution in flight per host, connect attempts in RFC 8305 order (families
//! alternating, the next one started after `next_attempt_delay` or at once when one fails,
//! the losers of a race cancelled), and nothing left after shutdown and drain.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use moor_core::pool::{Config, ConnectError, Endpoint, Pool, PoolState, ResolveError, Reuse};
use moor_core::{CheckoutId, ConnId, Instant, UsageError};

use crate::sim::{FakeNet, NetConfig};

mod model;

/// One step of the application or of time.
#[derive(Debug, Clone, PartialEq, Eq, Arbitrary)]
pub enum Op {
    /// Check out a connection for key number `key`, with an optional deadline in ms from now.
    Checkout {
        /// Which key (modulo the number of keys).
        key: u8,
        /// Deadline in milliseconds from now; `None` uses the request timeout.
        deadline_ms: Option<u16>,
    },
    /// Cancel a pending checkout (picked by index), or an unknown id if none is pending.
    Cancel {
        /// Which pending checkout.
        pick: u8,
    },
    /// Check a leased connection (picked by index) back in.
    Checkin {
        /// Which leased connection.
        pick: u8,
        /// The application's health verdict (a peer reset may still make it `false`).
        reusable: bool,
    },
    /// Let simulated time pass, delivering network completions and firing timers on the way.
    Advance {
        /// How long, in milliseconds.
        ms: u16,
    },
    /// Time passes without the driver calling `handle_timeout` (a late driver): the next inputs
    /// arrive after deadlines that have not fired yet.
    Stall {
        /// How long, in milliseconds.
        ms: u16,
    },
    /// The peer closes an idle connection (picked by index).
    PeerCloseIdle {
        /// Which idle connection.
        pick: u8,
    },
    /// A call that breaks the API's rules; it must be refused and change nothing.
    Misuse {
        /// Which misuse.
        kind: u8,
    },
    /// Shut the pool down.
    Shutdown,
}

/// The pool and network settings of a simulation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimConfig {
    /// The pool's configuration.
    pub pool: Config,
    /// The fake network's behaviour.
    pub net: NetConfig,
    /// How many distinct keys the application uses.
    pub keys: u8,
}

impl SimConfig {
    /// A small, contended configuration built from a few numbers (used by proptest and fuzz).
    pub fn small(knobs: [u8; 6], net: NetConfig) -> SimConfig {
        let [per_key, open, waiters, idle, lifetime, keys] = knobs;
        // Races need a delay shorter than the network's latency (up to 50 ms) and a longer one.
        let next_attempt_delay = match (keys / 6) % 3 {
            0 => Some(Duration::from_millis(20)),
            1 => None,
            _ => Some(Duration::from_millis(80)),
        };
        let max_per_key = usize::from(per_key % 3) + 1;
        let pool = Config {
            max_per_key,
            max_open: max_per_key + usize::from(open % 5),
            max_waiters: usize::from(waiters % 24) + 1,
            idle_timeout: Duration::from_millis(200 + u64::from(idle) * 20),
            request_timeout: Duration::from_millis(500 + u64::from(waiters) * 30),
            connect_timeout: Duration::from_millis(100 + u64::from(open) * 10),
            next_attempt_delay,
            max_lifetime: (lifetime % 4 == 0)
                .then(|| Duration::from_millis(300 + u64::from(lifetime) * 10)),
            reuse: if lifetime % 2 == 0 {
                Reuse::Lifo
            } else {
                Reuse::Fifo
            },
        };
        SimConfig {
            pool,
            net,
            keys: keys % 6 + 1,
        }
    }
}

/// Key number `k`: a few keys share a host (to exercise shared resolution), one is a literal IP.
pub fn key_of(k: u8) -> Endpoint {
    let host = match k % 4 {
        3 => "127.0.0.9".to_string(),
        h => format!("host{}.test", h % 2),
    };
    Endpoint::new("http", host, 1000 + u16::from(k))
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum NetEvent {
    Resolved {
        host: String,
        lookup: u64,
        ok: bool,
        addrs: u8,
    },
    Connected {
        conn: ConnId,
        attempt: usize,
    },
    Refused {
        conn: ConnId,
        attempt: usize,
    },
}

/// The fake resolver's answer for lookup number `lookup`: `count` addresses, a mix of IPv6 and
/// IPv4 that varies from lookup to lookup.
fn sim_addrs(lookup: u64, count: u8) -> Vec<IpAddr> {
    (0..count)
        .map(|i| {
            if (lookup + u64::from(i)).is_multiple_of(3) {
                IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, u16::from(i) + 1))
            } else {
                IpAddr::V4(Ipv4Addr::new(127, 0, 1, i + 1))
            }
        })
        .collect()
}

/// RFC 8305's order, written plainly: the families alternate, starting with the first
/// address's, each family in the resolver's order.
fn rfc8305_order(addrs: &[IpAddr]) -> Vec<IpAddr> {
    let Some(first) = addrs.first() else {
        return Vec::new();
    };
    let (same, other): (Vec<IpAddr>, Vec<IpAddr>) =
        addrs.iter().partition(|a| a.is_ipv6() == first.is_ipv6());
    (0..addrs.len())
        .flat_map(|i| [same.get(i), other.get(i)])
        .flatten()
        .copied()
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Sock {
    /// Connect attempts are in flight: each running one with when it started, how many were
    /// started in all, and when the last one started.
    Connecting {
        running: BTreeMap<usize, Instant>,
        started: usize,
        last_start: Instant,
    },
    /// Leased to a checkout.
    Leased { created: Instant },
    /// Idle since `since`; `seq` orders idle connections by when they became idle.
    Idle {
        since: Instant,
        seq: u64,
        created: Instant,
    },
}

#[derive(Debug, Clone)]
struct SockInfo {
    key: Endpoint,
    state: Sock,
    /// When the pool first asked for this conn (an upper bound of the pool's creation time).
    first_connect: Instant,
    /// The addresses its attempts must try, in order.
    order: Vec<IpAddr>,
}

/// The simulation: the pool under test, the network, the application and the model.
pub struct PoolSim {
    /// The pool under test.
    pub pool: Pool<Endpoint>,
    config: SimConfig,
    net: FakeNet<NetEvent>,
    now: Instant,
    /// Accepted, unanswered checkouts, per key in checkout order.
    queues: BTreeMap<Endpoint, VecDeque<CheckoutId>>,
    pending: BTreeMap<CheckoutId, Endpoint>,
    answered: BTreeSet<CheckoutId>,
    socks: BTreeMap<ConnId, SockInfo>,
    /// Lookups in flight: host → (when asked, which lookup).
    resolving: BTreeMap<String, (Instant, u64)>,
    lookups: u64,
    /// Conns with an attempt that ended (refused, or cancelled at its timeout) in the step
    /// being driven: each may start its next address at once, once.
    attempt_ended: BTreeSet<ConnId>,
    /// The conn that just connected, and its other attempts, which the pool must cancel.
    owed_cancels: Option<(ConnId, BTreeSet<usize>)>,
    /// Each host's last answered lookup.
    answered_addrs: BTreeMap<String, Vec<IpAddr>>,
    /// Attempts started while another of the same connection still ran (Happy Eyeballs).
    pub races: u64,
    /// Connections whose winning attempt had rivals to cancel.
    pub races_won: u64,
    /// Attempts cancelled at their connect timeout while their connection went on.
    pub attempts_timed_out: u64,
    idle_seq: u64,
    drained: u32,
    shut_down: bool,
    /// What happened, for determinism checks and failure reports.
    pub trace: Vec<String>,
    steps: u64,
}

/// What the step being applied may legitimately produce.
#[derive(Default)]
struct Expect {
    /// The checkout being made, and the conn it must get immediately, if any.
    checkout: Option<(CheckoutId, Option<ConnId>)>,
    /// The conn just checked in (Deferred hand-off allowed) or just connected (Fresh).
    deferred: Option<ConnId>,
    fresh: Option<ConnId>,
}

impl PoolSim {
    /// A simulation whose every choice follows from `config` and `seed`.
    ///
    /// # Panics
    /// If the pool refuses the configuration.
    pub fn new(config: SimConfig, seed: u64) -> PoolSim {
        let mut pool = Pool::new(config.pool.clone()).expect("valid simulation config");
        // Tell the pool the simulation's start time, so "earlier than now" means something.
        pool.handle_timeout(Instant::from_secs(1));
        PoolSim {
            pool,
            net: FakeNet::new(config.net, seed),
            config,
            now: Instant::from_secs(1),
            queues: BTreeMap::new(),
            pending: BTreeMap::new(),
            answered: BTreeSet::new(),
            socks: BTreeMap::new(),
            resolving: BTreeMap::new(),
            lookups: 0,
            answered_addrs: BTreeMap::new(),
            attempt_ended: BTreeSet::new(),
            owed_cancels: None,
            races: 0,
            races_won: 0,
            attempts_timed_out: 0,
            idle_seq: 0,
            drained: 0,
            shut_down: false,
            trace: Vec::new(),
            steps: 0,
        }
    }

    /// Applies one step and checks every invariant.
    pub fn apply(&mut self, op: &Op) {
        self.steps += 1;
        self.trace.push(format!("{:?} {op:?}", self.now));
        match *op {
            Op::Checkout { key, deadline_ms } => self.checkout(key, deadline_ms),
            Op::Cancel { pick } => self.cancel(pick),
            Op::Checkin { pick, reusable } => self.checkin(pick, reusable),
            Op::Advance { ms } => self.advance(Duration::from_millis(u64::from(ms))),
            Op::Stall { ms } => self.now = self.now + Duration::from_millis(u64::from(ms)),
            Op::PeerCloseIdle { pick } => self.peer_close_idle(pick),
            Op::Misuse { kind } => self.misuse(kind),
            Op::Shutdown => self.shutdown(),
        }
        self.check();
    }

    /// Ends the run: lets every deadline pass (every checkout must then be answered), shuts down,
    /// returns every leased connection, and checks that the pool drained to nothing.
    pub fn finish(&mut self) {
        if !self.shut_down {
            // The latest deadline a checkout can have: its own (at most u16::MAX ms) or the default.
            let longest = self
                .config
                .pool
                .request_timeout
                .max(Duration::from_millis(u64::from(u16::MAX)));
            let horizon = longest + self.config.pool.connect_timeout;
            self.advance(horizon + Duration::from_millis(1));
            assert!(
                self.pending.is_empty(),
                "checkouts never answered: {:?}",
                self.pending
            );
            self.shutdown();
        }
        let leased: Vec<ConnId> = self.leased();
        for conn in leased {
            self.return_conn(conn, true);
        }
        self.advance(self.config.pool.connect_timeout + Duration::from_secs(1));
        assert_eq!(self.drained, 1, "Drained must be emitted exactly once");
        assert_eq!(self.pool.state(), PoolState::Drained);
        assert!(
            self.pending.is_empty() & self.socks.is_empty(),
            "left over: {:?} {:?}",
            self.pending,
            self.socks
        );
        assert_eq!(self.pool.stats().total, Default::default());
        assert_eq!(self.pool.poll_timeout(), None);
        self.pool.check_invariants();
    }

    /// The current simulated time.
    pub fn now(&self) -> Instant {
        self.now
    }

    // ----- application steps ---------------------------------------------------------------

    fn checkout(&mut self, k: u8, deadline_ms: Option<u16>) {
        let key = key_of(k % self.config.keys);
        let deadline = deadline_ms.map(|ms| self.now + Duration::from_millis(u64::from(ms)));
        let result = self.pool.handle_checkout(self.now, &key, deadline);
        if self.shut_down {
            assert_eq!(result, Err(UsageError::ShutDown));
            return;
        }
        let checkout = result.expect("checkout accepted");
        assert!(
            !self.answered.contains(&checkout) && !self.pending.contains_key(&checkout),
            "{checkout:?} minted twice"
        );
        let immediate = self.predict_immediate(&key);
        self.pending.insert(checkout, key.clone());
        self.queues.entry(key).or_default().push_back(checkout);
        self.drive(Expect {
            checkout: Some((checkout, immediate)),
            ..Expect::default()
        });
    }

    /// The idle connection the pool must hand out at once, in its reuse order (the model
    /// cannot predict which connections max_lifetime has closed, so it skips those runs).
    fn predict_immediate(&self, key: &Endpoint) -> Option<ConnId> {
        let idle = self.socks.iter().filter_map(|(c, s)| match s.state {
            Sock::Idle { seq, .. } if &s.key == key => Some((seq, *c)),
            _ => None,
        });
        match self.config.pool.reuse {
            Reuse::Lifo => idle.max().map(|(_, c)| c),
            Reuse::Fifo => idle.min().map(|(_, c)| c),
        }
    }

    fn cancel(&mut self, pick: u8) {
        let Some(checkout) = self
            .pending
            .keys()
            .nth(usize::from(pick) % self.pending.len().max(1))
            .copied()
        else {
            let ghost = CheckoutId::from_raw(u64::MAX - u64::from(pick));
            self.refused(
                |p, now| p.handle_cancel(now, ghost),
                UsageError::UnknownCheckout(ghost),
            );
            return;
        };
        self.pool
            .handle_cancel(self.now, checkout)
            .expect("cancel a pending checkout");
        let key = self.pending.remove(&checkout).expect("pending");
        self.queues
            .get_mut(&key)
            .expect("queued")
            .retain(|c| *c != checkout);
        self.drive(Expect::default());
    }

    /// The connections the application holds, in id order.
    fn leased(&self) -> Vec<ConnId> {
        self.socks_where(|s| matches!(s, Sock::Leased { .. }))
    }

    /// The connections the model believes idle, in id order.
    fn idle(&self) -> Vec<ConnId> {
        self.socks_where(|s| matches!(s, Sock::Idle { .. }))
    }

    fn socks_where(&self, pred: impl Fn(&Sock) -> bool) -> Vec<ConnId> {
        self.socks
            .iter()
            .filter(|(_, s)| pred(&s.state))
            .map(|(c, _)| *c)
            .collect()
    }

    fn checkin(&mut self, pick: u8, reusable: bool) {
        let leased: Vec<ConnId> = self.leased();
        if leased.is_empty() {
            return;
        }
        let conn = leased[usize::from(pick) % leased.len()];
        // A peer may have reset the connection while it was in use: the user sees the error and
        // gives it back as not reusable.
        let reset = self.net.chance(self.config.net.reset_permille);
        self.return_conn(conn, reusable & !reset);
    }

    fn return_conn(&mut self, conn: ConnId, reusable: bool) {
        self.pool
            .handle_checkin(self.now, conn, reusable)
            .expect("checkin of a leased conn");
        let info = self.socks.get_mut(&conn).expect("leased");
        let Sock::Leased { created } = info.state else {
            unreachable!()
        };
        self.idle_seq += 1;
        info.state = Sock::Idle {
            since: self.now,
            seq: self.idle_seq,
            created,
        };
        self.drive(Expect {
            deferred: Some(conn),
            ..Expect::default()
        });
        // Not reusable, or shutting down: it must have been closed.
        if !reusable || self.shut_down {
            assert!(
                !self.socks.contains_key(&conn),
                "{conn:?} checked in as unusable was kept"
            );
        }
    }

    fn peer_close_idle(&mut self, pick: u8) {
        let idle: Vec<ConnId> = self.idle();
        if idle.is_empty() {
            return;
        }
        let conn = idle[usize::from(pick) % idle.len()];
        self.pool
            .handle_idle_closed(self.now, conn)
            .expect("report an idle conn closed");
        self.drive(Expect::default());
        assert!(
            !self.socks.contains_key(&conn),
            "a closed idle connection was kept"
        );
    }

    fn shutdown(&mut self) {
        self.pool.handle_shutdown(self.now).expect("shutdown");
        self.shut_down = true;
        self.drive(Expect::default());
        assert!(
            self.resolving.is_empty(),
            "shutdown must cancel every lookup in flight: {:?}",
            self.resolving
        );
        assert!(
            self.pending.is_empty(),
            "shutdown must answer every waiter: {:?}",
            self.pending
        );
        assert!(
            self.socks
                .values()
                .all(|s| matches!(s.state, Sock::Leased { .. })),
            "shutdown must close every connection that is not leased"
        );
        self.pool
            .handle_shutdown(self.now)
            .expect("a second shutdown is harmless");
        self.drive(Expect::default());
    }

    /// Bad input must be refused with a clear error and change nothing.
    fn misuse(&mut self, kind: u8) {
        let ghost = ConnId::from_raw(u64::MAX - u64::from(kind));
        match kind % 6 {
            0 => self.refused(
                |p, now| p.handle_checkin(now, ghost, true),
                UsageError::UnknownConn(ghost),
            ),
            1 => match self.socks.iter().find_map(|(c, s)| match s.state {
                Sock::Connecting { started, .. } => Some((*c, started)),
                _ => None,
            }) {
                // An attempt the pool has not started.
                Some((conn, attempt)) => self.refused(
                    move |p, now| p.handle_connected(now, conn, attempt),
                    UsageError::UnknownAttempt { conn, attempt },
                ),
                None => self.refused(
                    |p, now| p.handle_connected(now, ghost, 0),
                    UsageError::UnknownConn(ghost),
                ),
            },
            2 => {
                // The simulation starts at 1 s and tells the pool so: zero is always in its past.
                let before = (self.pool.stats(), self.pool.poll_timeout());
                let ghost = CheckoutId::from_raw(u64::MAX);
                let result = self.pool.handle_cancel(Instant::ZERO, ghost);
                // An unknown id may be reported first; either way nothing changes.
                assert!(
                    matches!(
                        result,
                        Err(UsageError::TimeWentBackwards { .. } | UsageError::UnknownCheckout(_))
                    ),
                    "{result:?}"
                );
                if let Some((&checkout, _)) = self.pending.iter().next() {
                    let result = self.pool.handle_cancel(Instant::ZERO, checkout);
                    assert!(
                        matches!(
                            result,
                            Err(UsageError::TimeWentBackwards {
                                now: Instant::ZERO,
                                ..
                            })
                        ),
                        "{result:?}"
                    );
                }
                assert_eq!((self.pool.stats(), self.pool.poll_timeout()), before);
                assert_eq!(self.pool.poll_output(), None);
            }
            3 => {
                // Cancelling a checkout after its answer: it must be checked in instead.
                if let Some(&answered) = self.answered.iter().next_back() {
                    self.refused(
                        move |p, now| p.handle_cancel(now, answered),
                        UsageError::UnknownCheckout(answered),
                    );
                }
            }
            4 => {
                // Double checkin: an idle connection is not leased.
                if let Some((&conn, _)) = self
                    .socks
                    .iter()
                    .find(|(_, s)| matches!(s.state, Sock::Idle { .. }))
                {
                    let before = (self.pool.stats(), self.pool.poll_timeout());
                    let result = self.pool.handle_checkin(self.now, conn, true);
                    assert!(
                        matches!(result, Err(UsageError::WrongState { .. })),
                        "{result:?}"
                    );
                    assert_eq!((self.pool.stats(), self.pool.poll_timeout()), before);
                    assert_eq!(self.pool.poll_output(), None);
                }
            }
            _ => {
                let before = (self.pool.stats(), self.pool.poll_timeout());
                self.pool.handle_timeout(Instant::ZERO);
                assert_eq!(
                    (self.pool.stats(), self.pool.poll_timeout()),
                    before,
                    "handle_timeout in the past"
                );
                assert_eq!(self.pool.poll_output(), None);
            }
        }
    }

    fn refused(
        &mut self,
        call: impl FnOnce(&mut Pool<Endpoint>, Instant) -> Result<(), UsageError>,
        expected: UsageError,
    ) {
        let before = (self.pool.stats(), self.pool.poll_timeout());
        let result = call(&mut self.pool, self.now);
        assert_eq!(result, Err(expected));
        assert_eq!(
            (self.pool.stats(), self.pool.poll_timeout()),
            before,
            "a refused call changed the pool"
        );
        assert_eq!(
            self.pool.poll_output(),
            None,
            "a refused call produced output"
        );
    }

    // ----- time and the network --------------------------------------------------------------

    fn advance(&mut self, by: Duration) {
        let target = self.now + by;
        for _ in 0..1_000_000 {
            let next = [self.net.next_due(), self.pool.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            let Some(at) = next.filter(|&at| at <= target) else {
                self.now = target;
                self.pool.handle_timeout(self.now);
                self.drive(Expect::default());
                self.check_idle_deadlines();
                self.check_connect_deadlines();
                return;
            };
            self.now = self.now.max(at);
            while let Some((_, event)) = self.net.pop_due(self.now) {
                self.deliver(event);
            }
            self.pool.handle_timeout(self.now);
            self.drive(Expect::default());
            self.check_idle_deadlines();
            self.check_connect_deadlines();
        }
        panic!("time did not advance: a timer keeps firing without progress");
    }

    fn deliver(&mut self, event: NetEvent) {
        self.trace.push(format!("{:?} net {event:?}", self.now));
        match event {
            NetEvent::Resolved {
                host,
                lookup,
                ok,
                addrs,
            } => {
                let current = self.resolving.get(&host).map(|&(_, l)| l);
                if current.is_some_and(|l| l != lookup) {
                    // A cancelled lookup, and a newer one is in flight: a driver that obeyed
                    // the cancel never delivers it.
                    return;
                }
                let ips = sim_addrs(lookup, addrs);
                let result = if ok {
                    Ok(&ips[..])
                } else {
                    Err(ResolveError::NotFound)
                };
                let answer = self.pool.handle_resolved(self.now, &host, result);
                match answer {
                    Ok(()) => {
                        self.answered_addrs.insert(host.clone(), ips);
                        assert_eq!(current, Some(lookup), "a cancelled lookup was answered");
                        self.resolving.remove(&host);
                    }
                    Err(UsageError::WrongState { .. }) => {
                        // Only a cancelled lookup's late answer may be refused.
                        assert_eq!(
                            current, None,
                            "the answer to a lookup in flight was refused"
                        );
                    }
                    Err(e) => panic!("unexpected {e}"),
                }
                self.drive(Expect::default());
            }
            NetEvent::Connected { conn, attempt } | NetEvent::Refused { conn, attempt } => {
                // The driver drops attempts it was told to cancel or close; their completions
                // never arrive.
                let live = matches!(self.socks.get(&conn), Some(SockInfo { state: Sock::Connecting { running, .. }, .. }) if running.contains_key(&attempt));
                if !live {
                    return;
                }
                if matches!(event, NetEvent::Connected { .. }) {
                    self.connected(conn, attempt);
                } else {
                    self.refused_attempt(conn, attempt);
                }
            }
        }
    }

    fn connected(&mut self, conn: ConnId, attempt: usize) {
        self.pool
            .handle_connected(self.now, conn, attempt)
            .expect("connected");
        let info = self.socks.get_mut(&conn).expect("live");
        self.idle_seq += 1;
        let idle = Sock::Idle {
            since: self.now,
            seq: self.idle_seq,
            created: info.first_connect,
        };
        let Sock::Connecting { running, .. } = std::mem::replace(&mut info.state, idle) else {
            unreachable!("checked live");
        };
        let rivals: BTreeSet<usize> = running.into_keys().filter(|&a| a != attempt).collect();
        if !rivals.is_empty() {
            self.races_won += 1;
        }
        self.owed_cancels = Some((conn, rivals));
        self.drive(Expect {
            fresh: Some(conn),
            ..Expect::default()
        });
        let (_, left) = self.owed_cancels.take().expect("set above");
        assert!(
            left.is_empty(),
            "{conn:?} connected, but its rival attempts {left:?} were not cancelled"
        );
    }

    fn refused_attempt(&mut self, conn: ConnId, attempt: usize) {
        self.pool
            .handle_connect_failed(self.now, conn, attempt, ConnectError::Refused)
            .expect("refused");
        let info = self.socks.get_mut(&conn).expect("live");
        let Sock::Connecting {
            running, started, ..
        } = &mut info.state
        else {
            unreachable!("checked live");
        };
        running.remove(&attempt);
        let (started_before, addrs_left) = (*started, *started < info.order.len());
        if running.is_empty() && !addrs_left {
            // Given up: the pool has nothing to tell the driver, which holds nothing.
            self.socks.remove(&conn);
        }
        self.attempt_ended.insert(conn);
        self.drive(Expect::default());
        if addrs_left {
            assert!(
                matches!(self.socks.get(&conn), Some(SockInfo { state: Sock::Connecting { started, .. }, .. }) if *started == started_before + 1),
                "{conn:?}: the next address must start at once when an attempt fails"
            );
        }
    }
}

/// A seeded random workload of `steps` steps (checkouts, checkins, time, cancels, peer closes,
/// misuse) on `config`; returns the simulation before [`PoolSim::finish`].
pub fn random_workload(config: SimConfig, seed: u64, steps: usize) -> PoolSim {
    let mut rng = moor_core::Rng::new(seed);
    let mut sim = PoolSim::new(config, seed);
    for _ in 0..steps {
        let op = match rng.below(20) {
            0..=5 => Op::Checkout {
                key: rng.below(6) as u8,
                deadline_ms: None,
            },
            6..=10 => Op::Checkin {
                pick: rng.below(256) as u8,
                reusable: rng.below(10) > 0,
            },
            11..=15 => Op::Advance {
                ms: rng.below(400) as u16,
            },
            16 => Op::PeerCloseIdle {
                pick: rng.below(256) as u8,
            },
            17 => Op::Misuse {
                kind: rng.below(256) as u8,
            },
            18 => Op::Cancel {
                pick: rng.below(256) as u8,
            },
            _ => Op::Stall {
                ms: rng.below(300) as u16,
            },
        };
        sim.apply(&op);
    }
    sim
}

/// Drives a simulation from fuzzer bytes: a configuration, a seed, then steps.
pub fn fuzz(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(knobs) = <[u8; 6]>::arbitrary(&mut u) else {
        return;
    };
    let Ok(seed) = u64::arbitrary(&mut u) else {
        return;
    };
    let mut sim = PoolSim::new(SimConfig::small(knobs, NetConfig::default()), seed);
    for _ in 0..256 {
        let Ok(op) = Op::arbitrary(&mut u) else { break };
        sim.apply(&op);
    }
    sim.finish();
}
