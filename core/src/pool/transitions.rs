//! Every state change of the pool, in one place: the public inputs in `mod.rs` validate their
//! arguments and then call these.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::cmp::Ordering;
use core::net::{IpAddr, SocketAddr};

use super::list::{Links, List};
use super::{
    Attempts, CheckoutError, CloseReason, Conn, ConnState, ConnectError, FromCache, Gauges,
    KeyState, Output, Pool, PoolKey, PoolState, Resolution, ResolveError, Reuse, Timer, Waiter,
    expiry_links, idle_links, ks_host, lru_links, waiter_links,
};
use crate::error::UsageError;
use crate::id::{CheckoutId, ConnId};
use crate::time::Instant;

impl<K: PoolKey> Pool<K> {
    pub(super) fn conn(&self, conn: ConnId) -> Result<&Conn, UsageError> {
        self.conns
            .get(conn.to_raw())
            .ok_or(UsageError::UnknownConn(conn))
    }

    /// Checks that `conn` is connecting and running attempt `attempt`.
    pub(super) fn expect_attempt(
        &self,
        conn: ConnId,
        attempt: usize,
        operation: &'static str,
    ) -> Result<(), UsageError> {
        match &self.conn(conn)?.state {
            ConnState::Connecting(a) if a.running.iter().any(|&(n, _)| n == attempt) => Ok(()),
            ConnState::Connecting(_) => Err(UsageError::UnknownAttempt { conn, attempt }),
            s => Err(UsageError::WrongState {
                operation,
                state: if matches!(s, ConnState::Resolving { .. }) {
                    "resolving"
                } else {
                    s.name()
                },
            }),
        }
    }

    /// The id of a live key: the key [`Pool::intern_key`] last returned if it is that one
    /// (checkouts tend to repeat a key, and one comparison is cheaper than a search), else the
    /// map's.
    #[inline]
    pub(super) fn find_key(&self, key: &K) -> Option<u64> {
        // `cmp`, not `==`: the same test the map's search makes.
        if let Some(ks) = self.keys.get(self.recent_key)
            && ks.key.cmp(key) == Ordering::Equal
        {
            return Some(self.recent_key);
        }
        self.key_ids.get(key).copied()
    }

    pub(super) fn intern_key(&mut self, key: &K) -> u64 {
        if let Some(id) = self.find_key(key) {
            self.recent_key = id;
            return id;
        }
        let id = self.keys.insert(KeyState {
            key: key.clone(),
            waiters: List::default(),
            idle: List::default(),
            gauges: Gauges::default(),
            in_blocked: false,
        });
        self.key_ids.insert(key.clone(), id);
        self.recent_key = id;
        id
    }

    /// Forgets a key that has nothing left: keeps the key table bounded by live work.
    pub(super) fn gc_key(&mut self, key_id: u64) {
        let Some(ks) = self.keys.get(key_id) else {
            return;
        };
        if ks.gauges.open == 0 && ks.waiters.is_empty() && !ks.in_blocked {
            let ks = self.keys.remove(key_id).expect("checked");
            self.key_ids.remove(&ks.key);
        }
    }

    /// Makes sure the connection's timer fires no later than its deadline. A later deadline
    /// leaves the entry where it is (lazy re-arm: see [`crate::timer`]). Always inlined: it is
    /// small, and on every checkin.
    #[inline(always)]
    pub(super) fn arm_conn(&mut self, id: u64) {
        // One lookup: the deadline needs only the config, a field apart from the connections.
        let c = self.conns.get_mut(id).expect("live conn");
        let Some(deadline) = c.deadline(&self.config) else {
            return;
        };
        self.timers
            .rearm_lazily(&mut c.armed, deadline, Timer::Conn(id));
    }

    pub(super) fn conn_timer_fired(&mut self, now: Instant, id: u64) {
        let Some(c) = self.conns.get_mut(id) else {
            unreachable!("closed conns are disarmed")
        };
        c.armed = None;
        let c = self.conns.get(id).expect("live conn");
        match c.deadline(&self.config) {
            None => {}
            Some(deadline) if deadline > now => self.arm_conn(id),
            Some(_) => match c.state {
                ConnState::Connecting(_) => self.attempts_due(now, id),
                ConnState::Idle { since } => {
                    let reason = if since + self.config.idle_timeout <= now {
                        self.counters.idle_expired += 1;
                        CloseReason::IdleTimeout
                    } else {
                        CloseReason::MaxLifetime
                    };
                    self.close_conn(id, Some(reason));
                }
                ConnState::Resolving { .. } | ConnState::Leased => unreachable!("no deadline"),
            },
        }
    }

    /// A connecting connection's timer fired: attempts out of time give way as failed ones do
    /// (a silent address is as dead as a refusing one), and the next address starts if its
    /// delay is up.
    fn attempts_due(&mut self, now: Instant, id: u64) {
        loop {
            let Some(Conn {
                state: ConnState::Connecting(a),
                ..
            }) = self.conns.get(id)
            else {
                return; // given up
            };
            match a.running.first() {
                Some(&(attempt, deadline)) if deadline <= now => {
                    self.attempt_failed(now, id, attempt, ConnectError::TimedOut, true);
                }
                _ if a.next_start.is_some_and(|start| start <= now) => {
                    self.start_attempt(now, id);
                }
                _ => break,
            }
        }
        self.arm_conn(id);
    }

    /// The one place a connection changes state (`None`: it is closed and forgotten): keeps the
    /// per-key and total gauges and the idle lists in step with it.
    ///
    /// It is on every checkout and checkin, so it looks the connection and its key up once and
    /// touches only the neighbours in the lists it leaves or joins. Always inlined: each of its
    /// few callers passes one known state, so each copy folds down to that one transition.
    #[inline(always)]
    pub(super) fn set_conn_state(&mut self, id: u64, new: Option<ConnState>) -> Option<Conn> {
        let c = self.conns.get_mut(id).expect("live conn");
        let old = Kind::of(&c.state);
        let new_kind = new.as_ref().map(Kind::of);
        let ks = self.keys.get_mut(c.key).expect("conn's key is live");
        if new_kind == Some(old) && old != Kind::Idle {
            // Same gauge and no idle list to leave or join (a leased connection handed straight
            // to a waiter, a resolved one starting to connect): only the state changes.
            if let Some(state) = new {
                c.state = state;
            }
            return None;
        }
        *old.gauge(&mut ks.gauges) -= 1;
        *old.gauge(&mut self.total) -= 1;
        // Leaving the idle lists: take the node's links while it is at hand.
        let left = (old == Kind::Idle).then(|| {
            (
                core::mem::take(&mut c.idle_links),
                core::mem::take(&mut c.lru_links),
            )
        });
        // Joining them from another state: the lists do not change before the attach below, so
        // the node can carry its new links now. (Idle to idle relinks the slow way below.)
        let joins_idle = new_kind == Some(Kind::Idle);
        let links_set = joins_idle && old != Kind::Idle;
        if links_set {
            c.idle_links = ks.idle.back_links();
            c.lru_links = self.lru.back_links();
        }
        if let Some(state) = new {
            c.state = state;
        }
        if let Some((idle_node, lru_node)) = left {
            ks.idle.unlink(&mut self.conns, id, idle_node, idle_links);
            self.lru.unlink(&mut self.conns, id, lru_node, lru_links);
        }
        let Some(new) = new_kind else {
            ks.gauges.open -= 1;
            self.total.open -= 1;
            return self.conns.remove(id);
        };
        *new.gauge(&mut ks.gauges) += 1;
        *new.gauge(&mut self.total) += 1;
        if links_set {
            ks.idle.attach_back(&mut self.conns, id, idle_links);
            self.lru.attach_back(&mut self.conns, id, lru_links);
        } else if joins_idle {
            ks.idle.push_back(&mut self.conns, id, idle_links);
            self.lru.push_back(&mut self.conns, id, lru_links);
        }
        None
    }

    /// Opens a connection for `key_id`: resolving (sharing a resolution in flight) or, for a
    /// literal address, connecting at once.
    pub(super) fn open_conn(&mut self, now: Instant, key_id: u64) {
        // A new connection is born "connecting": count it here, once.
        let ks = self.keys.get_mut(key_id).expect("live key");
        ks.gauges.open += 1;
        ks.gauges.connecting += 1;
        self.total.open += 1;
        self.total.connecting += 1;
        let literal = ks.key.literal_addr();
        let id = self.conns.insert(Conn {
            key: key_id,
            created: now,
            // Pointed at its real resolution below; no resolution has slab key 0.
            state: ConnState::Resolving { resolution: 0 },
            armed: None,
            idle_links: Links::default(),
            lru_links: Links::default(),
        });
        if let Some(addr) = literal {
            self.start_connect(now, id, Arc::from([addr.ip()]));
            return;
        }
        let host = ks_host(&self.keys, key_id);
        let resolution = match self.host_ids.get(&host) {
            Some(&r) => r,
            None => {
                let deadline = now + self.config.connect_timeout;
                let r = self.resolutions.insert(Resolution {
                    host: host.clone(),
                    deadline,
                    conns: Vec::new(),
                });
                self.timers.insert(deadline, Timer::Resolution(r));
                self.host_ids.insert(host.clone(), r);
                self.outputs.push_back(Output::Resolve { host });
                r
            }
        };
        self.resolutions
            .get_mut(resolution)
            .expect("live resolution")
            .conns
            .push(id);
        self.conns.get_mut(id).expect("just made").state = ConnState::Resolving { resolution };
    }

    /// Starts connecting `id` to `addrs`, which are in the order to try them.
    pub(super) fn start_connect(&mut self, now: Instant, id: u64, addrs: Arc<[IpAddr]>) {
        let attempts = Attempts {
            addrs,
            next: 0,
            running: Vec::new(),
            next_start: None,
        };
        self.set_conn_state(id, Some(ConnState::Connecting(Box::new(attempts))));
        self.start_attempt(now, id);
    }

    /// Starts a connecting connection's next address, beside any attempt still running.
    pub(super) fn start_attempt(&mut self, now: Instant, id: u64) {
        let deadline = now + self.config.connect_timeout;
        let delay = self.config.next_attempt_delay;
        let c = self.conns.get_mut(id).expect("live conn");
        let ConnState::Connecting(a) = &mut c.state else {
            unreachable!("only a connecting conn makes attempts");
        };
        let attempt = a.next;
        let ip = a.addrs[attempt];
        a.next += 1;
        a.running.push((attempt, deadline));
        a.next_start = delay.filter(|_| a.next < a.addrs.len()).map(|d| now + d);
        let key = self.keys.get(c.key).expect("live key").key.clone();
        let addr = SocketAddr::new(ip, key.port());
        self.arm_conn(id);
        self.outputs.push_back(Output::Connect {
            conn: ConnId::from_raw(id),
            attempt,
            key,
            addr,
        });
    }

    /// Attempt `attempt` of `id` connected: the others are cancelled and the connection is
    /// handed over.
    pub(super) fn attempt_won(&mut self, now: Instant, id: u64, attempt: usize) {
        let Some(Conn {
            state: ConnState::Connecting(a),
            ..
        }) = self.conns.get(id)
        else {
            unreachable!("only a connecting conn has attempts");
        };
        let conn = ConnId::from_raw(id);
        for &(other, _) in &a.running {
            if other != attempt {
                self.outputs.push_back(Output::CancelConnect {
                    conn,
                    attempt: other,
                });
            }
        }
        let key_id = self.conns.get(id).expect("live conn").key;
        self.hand_over(now, id, key_id, FromCache::Fresh);
    }

    /// Hands a usable connection (of key `key_id`, which the caller has at hand) to the oldest
    /// waiter of its key, or keeps it idle.
    pub(super) fn hand_over(&mut self, now: Instant, id: u64, key_id: u64, from_cache: FromCache) {
        debug_assert_eq!(self.conns.get(id).map(|c| c.key), Some(key_id));
        let head = self.keys.get(key_id).expect("live key").waiters.front();
        match head {
            Some(waiter) => {
                self.remove_waiter(waiter);
                self.lease(id, CheckoutId::from_raw(waiter), from_cache);
            }
            None => {
                self.set_conn_state(id, Some(ConnState::Idle { since: now }));
                self.arm_conn(id);
            }
        }
    }

    pub(super) fn lease(&mut self, id: u64, checkout: CheckoutId, from_cache: FromCache) {
        self.set_conn_state(id, Some(ConnState::Leased));
        match from_cache {
            FromCache::Immediate => self.counters.immediate += 1,
            FromCache::Deferred => self.counters.deferred += 1,
            FromCache::Fresh => self.counters.fresh += 1,
        }
        self.outputs.push_back(Output::Acquired {
            checkout,
            conn: ConnId::from_raw(id),
            from_cache,
        });
    }

    /// Takes an idle connection of `key_id` in reuse order, closing any past its lifetime.
    /// Closing the last connection may forget the key: the caller re-interns it.
    pub(super) fn take_idle(&mut self, now: Instant, key_id: u64) -> Option<u64> {
        loop {
            let ks = self.keys.get(key_id)?;
            let id = match self.config.reuse {
                Reuse::Lifo => ks.idle.back(),
                Reuse::Fifo => ks.idle.front(),
            }?;
            // Without a max lifetime nothing idle is too old: skip looking the connection up.
            if self.config.max_lifetime.is_some() {
                let c = self.conns.get(id).expect("idle conn is live");
                if c.lifetime_end(&self.config).is_some_and(|end| end <= now) {
                    self.close_conn(id, Some(CloseReason::MaxLifetime));
                    continue;
                }
            }
            return Some(id);
        }
    }

    /// Opens connections for `key_id` while it has more waiters than connections on the way
    /// and room under both caps, evicting the least recently used idle connection at the global
    /// cap. Queues the key for global capacity when nothing can be evicted.
    pub(super) fn pump(&mut self, now: Instant, key_id: u64) {
        loop {
            let Some(ks) = self.keys.get(key_id) else {
                return;
            };
            debug_assert!(
                ks.idle.is_empty() || ks.waiters.is_empty(),
                "a key never has idle connections and waiters"
            );
            if !ks.wants_conn(&self.config) {
                return;
            }
            if self.total.open >= self.config.max_open {
                match self.lru.front() {
                    Some(victim) => {
                        self.counters.evictions += 1;
                        self.close_conn(victim, Some(CloseReason::Evicted));
                        continue;
                    }
                    None => {
                        let ks = self.keys.get_mut(key_id).expect("live key");
                        if !ks.in_blocked {
                            ks.in_blocked = true;
                            self.blocked.push_back(key_id);
                        }
                        return;
                    }
                }
            }
            self.open_conn(now, key_id);
        }
    }

    /// Gives freed global capacity to keys queued for it, oldest first.
    #[inline]
    pub(super) fn serve_blocked(&mut self, now: Instant) {
        // Most inputs find no key blocked: keep that check inline in every caller.
        if !self.blocked.is_empty() {
            self.serve_blocked_keys(now);
        }
    }

    fn serve_blocked_keys(&mut self, now: Instant) {
        while let Some(&key_id) = self.blocked.front() {
            if self.total.open >= self.config.max_open && self.lru.is_empty() {
                return;
            }
            self.blocked.pop_front();
            let Some(ks) = self.keys.get_mut(key_id) else {
                continue;
            };
            ks.in_blocked = false;
            self.pump(now, key_id);
            let still_blocked = self.keys.get(key_id).is_some_and(|ks| ks.in_blocked);
            if still_blocked {
                // pump queued it again at the back: put it back at the front, its turn kept.
                let back = self.blocked.pop_back();
                debug_assert_eq!(back, Some(key_id));
                self.blocked.push_front(key_id);
                return;
            }
            self.gc_key(key_id);
        }
    }

    /// Closes a connection: unlinks it, disarms its timer, updates gauges, and tells the driver
    /// (`reason` is `None` for a connection that never had a socket).
    pub(super) fn close_conn(&mut self, id: u64, reason: Option<CloseReason>) {
        let mut c = self
            .set_conn_state(id, None)
            .expect("closing removes the conn");
        self.timers.disarm(&mut c.armed, Timer::Conn(id));
        if let Some(reason) = reason {
            self.outputs.push_back(Output::Close {
                conn: ConnId::from_raw(id),
                reason,
            });
        }
        self.gc_key(c.key);
    }

    /// Attempt `attempt` of `id` failed (`abandon`: it timed out here and the driver still
    /// runs it). The next address starts at once; with none left and no other attempt running,
    /// the connection is given up and checkouts fail with `cause`: all of the key's waiters if
    /// nothing else could serve them, else the oldest.
    pub(super) fn attempt_failed(
        &mut self,
        now: Instant,
        id: u64,
        attempt: usize,
        cause: ConnectError,
        abandon: bool,
    ) {
        let Some(Conn {
            key: key_id,
            state: ConnState::Connecting(a),
            ..
        }) = self.conns.get_mut(id)
        else {
            unreachable!("only a connecting conn has attempts");
        };
        let key_id = *key_id;
        a.running.retain(|&(n, _)| n != attempt);
        let addrs_left = a.next < a.addrs.len();
        if addrs_left || !a.running.is_empty() {
            if abandon {
                self.outputs.push_back(Output::CancelConnect {
                    conn: ConnId::from_raw(id),
                    attempt,
                });
            }
            if addrs_left {
                self.start_attempt(now, id);
            }
            return;
        }
        self.counters.connect_failures += 1;
        self.close_conn(id, abandon.then_some(CloseReason::ConnectTimedOut));
        let Some(ks) = self.keys.get(key_id) else {
            return;
        };
        let fail_all = ks.gauges.open == 0;
        while let Some(waiter) = self.keys.get(key_id).and_then(|ks| ks.waiters.front()) {
            self.fail_waiter(waiter, CheckoutError::Connect(cause));
            if !fail_all {
                break;
            }
        }
        self.gc_key(key_id);
        self.pump(now, key_id);
    }

    /// A resolution failed: its connections are dropped and every waiter of their keys fails
    /// with the same cause, at once.
    pub(super) fn fail_resolution(&mut self, now: Instant, conns: Vec<u64>, error: ResolveError) {
        let mut keys = Vec::new();
        for id in conns {
            keys.push(self.conns.get(id).expect("filtered live").key);
            self.counters.connect_failures += 1;
            self.close_conn(id, None);
        }
        keys.sort_unstable();
        keys.dedup();
        for key_id in keys {
            self.fail_all_waiters(key_id, CheckoutError::Resolve(error));
            self.gc_key(key_id);
            self.pump(now, key_id);
        }
    }

    /// The connections of a finished resolution that still wait for it (others closed since).
    pub(super) fn still_resolving(&self, resolution: u64, conns: Vec<u64>) -> Vec<u64> {
        conns
            .into_iter()
            .filter(|&c| {
                matches!(self.conns.get(c), Some(Conn { state: ConnState::Resolving { resolution: r }, .. }) if *r == resolution)
            })
            .collect()
    }

    /// Removes a waiter from its key's queue and its deadline order.
    pub(super) fn remove_waiter(&mut self, waiter: u64) -> Waiter {
        // Out of the slab first, links and all: unlinking then looks up only the neighbours.
        let w = self.waiters.remove(waiter).expect("live waiter");
        if w.in_expiry {
            self.expiry
                .unlink(&mut self.waiters, waiter, w.expiry_links, expiry_links);
        } else {
            self.timers.remove(w.deadline, Timer::Waiter(waiter));
        }
        let ks = self.keys.get_mut(w.key).expect("waiter's key is live");
        ks.waiters
            .unlink(&mut self.waiters, waiter, w.links, waiter_links);
        ks.gauges.waiters -= 1;
        self.total.waiters -= 1;
        w
    }

    /// Removes a waiter and answers it with `error`.
    pub(super) fn fail_waiter(&mut self, waiter: u64, error: CheckoutError) -> Waiter {
        let w = self.remove_waiter(waiter);
        self.outputs.push_back(Output::CheckoutFailed {
            checkout: CheckoutId::from_raw(waiter),
            error,
        });
        w
    }

    /// Answers every waiter of a key with `error`, oldest first.
    pub(super) fn fail_all_waiters(&mut self, key_id: u64, error: CheckoutError) {
        while let Some(waiter) = self.keys.get(key_id).and_then(|ks| ks.waiters.front()) {
            self.fail_waiter(waiter, error);
        }
    }

    pub(super) fn finish_drain(&mut self) {
        if self.state == PoolState::Draining && self.total.open == 0 {
            self.state = PoolState::Drained;
            self.outputs.push_back(Output::Drained);
        }
    }
}

/// A host's addresses in the order to try them (RFC 8305 §4): the resolver's order within each
/// family, the families alternating, starting with the first address's family.
pub(super) fn happy_order(addrs: &[IpAddr]) -> Arc<[IpAddr]> {
    let Some(first) = addrs.first() else {
        return Arc::from(addrs);
    };
    let first_family = first.is_ipv6();
    let mut same = addrs.iter().filter(|a| a.is_ipv6() == first_family);
    let mut other = addrs.iter().filter(|a| a.is_ipv6() != first_family);
    let mut ordered = Vec::with_capacity(addrs.len());
    loop {
        match (same.next(), other.next()) {
            (None, None) => break,
            (a, b) => ordered.extend(a.into_iter().chain(b).copied()),
        }
    }
    Arc::from(ordered)
}

/// Which gauge a connection state counts under.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Connecting,
    Idle,
    Leased,
}

impl Kind {
    #[inline]
    fn of(state: &ConnState) -> Kind {
        match state {
            ConnState::Resolving { .. } | ConnState::Connecting(_) => Kind::Connecting,
            ConnState::Idle { .. } => Kind::Idle,
            ConnState::Leased => Kind::Leased,
        }
    }

    #[inline]
    fn gauge(self, g: &mut Gauges) -> &mut usize {
        match self {
            Kind::Connecting => &mut g.connecting,
            Kind::Idle => &mut g.idle,
            Kind::Leased => &mut g.leased,
        }
    }
}
