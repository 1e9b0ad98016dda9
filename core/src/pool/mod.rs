//! A keyed keep-alive connection pool (the seed: POE::Component::Client::Keepalive, done better).
//!
//! The pool decides; the driver acts. A checkout names a key (scheme, host, port, …); the pool
//! answers it exactly once with [`Output::Acquired`] or [`Output::CheckoutFailed`], reusing an
//! idle connection when it can, queueing the checkout behind others for the same key (strictly
//! FIFO) when the key is at its cap, and asking the driver to [`Output::Resolve`] and
//! [`Output::Connect`] otherwise.
//!
//! What it does better than the seed:
//! - a freed connection goes straight to the oldest waiter of its key, never to a newcomer;
//! - at the global cap it evicts the least recently used idle connection, not a random one;
//! - one resolution per host, its answer or error shared by every waiter at once, and an
//!   [`Output::CancelResolve`] when the pool gives up on one, so no lookup outlives its use;
//! - Happy Eyeballs (RFC 8305) over a host's addresses: families alternate, a silent attempt
//!   gets the next address raced beside it after `next_attempt_delay`, the first to connect
//!   wins and the rest get an [`Output::CancelConnect`];
//! - every step is O(1) or O(log n): waiters and idle connections are intrusive lists, timers a
//!   shared deadline index with lazy re-arming, so nothing scans a queue;
//! - shutdown answers every waiter and ends with exactly one [`Output::Drained`].
//!
//! See the crate docs for a complete run loop.

mod config;
mod input;
mod invariants;
mod key;
mod list;
mod output;
mod stats;
#[cfg(test)]
mod tests;
mod transitions;

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::net::IpAddr;

pub use config::{Config, Reuse};
pub use input::Input;
pub use key::{Endpoint, PoolKey};
pub use output::{CheckoutError, CloseReason, ConnectError, FromCache, Output, ResolveError};
pub use stats::{Counters, Gauges, Stats};

use self::list::{Links, List};
use crate::error::{ConfigError, UsageError};
use crate::id::{CheckoutId, ConnId};
use crate::slab::{Slab, UNSTORED};
use crate::time::{Instant, TimeGuard};
use crate::timer::Timers;

/// Where the pool is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolState {
    /// Taking checkouts.
    Running,
    /// Shut down; waiting for leased connections to come back.
    Draining,
    /// Shut down and empty; [`Output::Drained`] has been emitted.
    Drained,
}

/// A keyed keep-alive connection pool as a sans-IO state machine.
///
/// `K` is the key; [`Endpoint`] is the seed's (scheme, host, port, for-target).
#[derive(Debug)]
pub struct Pool<K: PoolKey> {
    config: Config,
    time: TimeGuard,
    state: PoolState,
    key_ids: BTreeMap<K, u64>,
    keys: Slab<KeyState<K>>,
    /// The key id [`Pool::intern_key`] last returned (0: none; slab keys are never 0): checkouts
    /// tend to repeat a key, and comparing with one key is cheaper than searching the map. A
    /// forgotten key's id finds nothing in the slab (ids are never reused), so it cannot be stale.
    recent_key: u64,
    host_ids: BTreeMap<K::Host, u64>,
    resolutions: Slab<Resolution<K::Host>>,
    conns: Slab<Conn>,
    /// Waiting checkouts. A waiting checkout's id is its key here, so answering or cancelling
    /// one is a slab lookup.
    waiters: Slab<Waiter>,
    /// How many checkouts were answered without waiting (at once, or refused): their ids are
    /// this count tagged with [`UNSTORED`], which no waiter key has.
    answered_unqueued: u64,
    /// Waiters with the default deadline (`now + request_timeout`), oldest first. `now` never
    /// goes backwards, so this list is also in deadline order: it serves as their timer
    /// without touching the shared deadline index (only custom deadlines go there).
    expiry: List,
    /// Every idle connection, least recently used first: the eviction order.
    lru: List,
    /// Keys with waiters that need a connection but the global cap is reached, oldest first.
    blocked: VecDeque<u64>,
    timers: Timers<Timer>,
    outputs: VecDeque<Output<K>>,
    total: Gauges,
    counters: Counters,
}

#[derive(Debug)]
struct KeyState<K> {
    key: K,
    waiters: List,
    /// Idle connections, least recently returned first.
    idle: List,
    gauges: Gauges,
    in_blocked: bool,
}

impl<K> KeyState<K> {
    /// Whether the key has more waiters than connections on the way and room under its cap
    /// for another: what [`Pool::pump`] opens connections for.
    #[inline]
    fn wants_conn(&self, config: &Config) -> bool {
        self.waiters.len() > self.gauges.connecting && self.gauges.open < config.max_per_key
    }
}

#[derive(Debug)]
struct Resolution<H> {
    host: H,
    deadline: Instant,
    /// Connections waiting for the answer (some may have gone since: checked on use).
    conns: Vec<u64>,
}

#[derive(Debug)]
struct Conn {
    key: u64,
    created: Instant,
    state: ConnState,
    /// Where this connection's one timer entry is armed, if anywhere.
    armed: Option<Instant>,
    idle_links: Links,
    lru_links: Links,
}

impl Conn {
    /// When this connection reaches `max_lifetime`, if one is set.
    #[inline]
    fn lifetime_end(&self, config: &Config) -> Option<Instant> {
        config.max_lifetime.map(|d| self.created + d)
    }

    /// The deadline its timer should fire at, in its current state.
    #[inline]
    fn deadline(&self, config: &Config) -> Option<Instant> {
        match self.state {
            ConnState::Resolving { .. } | ConnState::Leased => None,
            ConnState::Connecting(ref a) => Some(a.deadline()),
            ConnState::Idle { since } => {
                let idle_end = since + config.idle_timeout;
                Some(
                    self.lifetime_end(config)
                        .map_or(idle_end, |end| end.min(idle_end)),
                )
            }
        }
    }
}

/// A connection's states. Every change after creation goes through [`Pool::set_conn_state`].
#[derive(Debug, Clone)]
enum ConnState {
    /// Waiting for its host's resolution (no socket yet).
    Resolving { resolution: u64 },
    /// The driver is making one or more connect attempts.
    Connecting(Box<Attempts>),
    /// Kept alive, waiting for reuse.
    Idle { since: Instant },
    /// Checked out.
    Leased,
}

impl ConnState {
    fn name(&self) -> &'static str {
        match self {
            ConnState::Resolving { .. } | ConnState::Connecting(_) => "connecting",
            ConnState::Idle { .. } => "idle",
            ConnState::Leased => "leased",
        }
    }
}

/// A connecting connection's attempts: boxed in [`ConnState`], so the other states (the
/// cache-hit path's) stay small.
#[derive(Debug, Clone)]
struct Attempts {
    /// Its host's addresses, in the order they are tried (see [`transitions::happy_order`]).
    addrs: Arc<[IpAddr]>,
    /// The next address to try (`addrs.len()`: none left).
    next: usize,
    /// The attempts in flight with their deadlines, oldest first: in deadline order, as `now`
    /// never goes backwards. Never empty.
    running: Vec<(usize, Instant)>,
    /// When `addrs[next]` starts even if nothing fails first (`next_attempt_delay`); `None`
    /// when no address is left or attempts go one at a time.
    next_start: Option<Instant>,
}

impl Attempts {
    /// When the connection's timer must fire: an attempt's timeout or the next start.
    #[inline]
    fn deadline(&self) -> Instant {
        let timeout = self
            .running
            .first()
            .expect("a connecting conn has an attempt")
            .1;
        self.next_start.map_or(timeout, |start| start.min(timeout))
    }
}

#[derive(Debug)]
struct Waiter {
    key: u64,
    deadline: Instant,
    links: Links,
    /// In [`Pool::expiry`] (default deadline) rather than in the timers.
    in_expiry: bool,
    expiry_links: Links,
}

/// What a timer entry is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Waiter(u64),
    Resolution(u64),
    Conn(u64),
}

fn ks_host<K: PoolKey>(keys: &Slab<KeyState<K>>, key_id: u64) -> K::Host {
    keys.get(key_id).expect("live key").key.host().clone()
}

fn idle_links(c: &mut Conn) -> &mut Links {
    &mut c.idle_links
}
fn lru_links(c: &mut Conn) -> &mut Links {
    &mut c.lru_links
}
fn waiter_links(w: &mut Waiter) -> &mut Links {
    &mut w.links
}
fn expiry_links(w: &mut Waiter) -> &mut Links {
    &mut w.expiry_links
}

impl<K: PoolKey> Pool<K> {
    /// A pool with `config`.
    ///
    /// # Errors
    /// [`ConfigError`] if the configuration cannot work (see [`Config::validate`]).
    pub fn new(config: Config) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Pool {
            config,
            time: TimeGuard::default(),
            state: PoolState::Running,
            key_ids: BTreeMap::new(),
            keys: Slab::default(),
            recent_key: 0,
            host_ids: BTreeMap::new(),
            resolutions: Slab::default(),
            conns: Slab::default(),
            waiters: Slab::default(),
            answered_unqueued: 0,
            expiry: List::default(),
            lru: List::default(),
            blocked: VecDeque::new(),
            timers: Timers::new(),
            outputs: VecDeque::new(),
            total: Gauges::default(),
            counters: Counters::default(),
        })
    }

    // ----- inputs -------------------------------------------------------------------------

    /// Asks for a connection for `key` and names the checkout. It is answered by exactly one
    /// [`Output::Acquired`] or [`Output::CheckoutFailed`] carrying that id (unless cancelled
    /// first); a connection already idle is answered before this returns. `deadline` bounds the
    /// whole checkout (resolve, queue, connect); `None` means `now + request_timeout`.
    ///
    /// Ids are never reused, and the same inputs mint the same ids.
    ///
    /// # Errors
    /// [`UsageError::ShutDown`] after [`Pool::handle_shutdown`],
    /// [`UsageError::TimeWentBackwards`].
    pub fn handle_checkout(
        &mut self,
        now: Instant,
        key: &K,
        deadline: Option<Instant>,
    ) -> Result<CheckoutId, UsageError> {
        if self.state != PoolState::Running {
            return Err(UsageError::ShutDown);
        }
        self.time.check(now)?;
        let key_id = self.intern_key(key);
        if let Some(conn) = self.take_idle(now, key_id) {
            let checkout = self.mint_unqueued();
            self.lease(conn, checkout, FromCache::Immediate);
            return Ok(checkout);
        }
        // take_idle may have closed the key's last (expired) connection and forgotten the key
        // (slab keys are never reused, so a live id is still this key's).
        let key_id = if self.keys.get(key_id).is_some() {
            key_id
        } else {
            self.intern_key(key)
        };
        let in_expiry = deadline.is_none();
        let deadline = deadline.unwrap_or(now + self.config.request_timeout);
        let refusal = if deadline <= now {
            self.counters.timeouts += 1;
            Some(CheckoutError::TimedOut)
        } else if self.waiters.len() >= self.config.max_waiters {
            Some(CheckoutError::QueueFull)
        } else {
            None
        };
        if let Some(error) = refusal {
            let checkout = self.mint_unqueued();
            self.outputs
                .push_back(Output::CheckoutFailed { checkout, error });
            self.gc_key(key_id);
            return Ok(checkout);
        }
        // The new waiter goes at the back of its key's queue (and of the default-deadline
        // order): it is inserted already carrying those links, so only the old tails are looked
        // up to link it in.
        let ks = self.keys.get_mut(key_id).expect("interned key");
        let waiter = self.waiters.insert(Waiter {
            key: key_id,
            deadline,
            links: ks.waiters.back_links(),
            in_expiry,
            expiry_links: if in_expiry {
                self.expiry.back_links()
            } else {
                Links::default()
            },
        });
        if in_expiry {
            self.expiry
                .attach_back(&mut self.waiters, waiter, expiry_links);
        } else {
            self.timers.insert(deadline, Timer::Waiter(waiter));
        }
        ks.waiters
            .attach_back(&mut self.waiters, waiter, waiter_links);
        ks.gauges.waiters += 1;
        self.total.waiters += 1;
        // The usual reason to queue is a key at its cap: then there is nothing to pump.
        if ks.wants_conn(&self.config) {
            self.pump(now, key_id);
        }
        Ok(CheckoutId::from_raw(waiter))
    }

    /// The id of a checkout answered without ever waiting.
    fn mint_unqueued(&mut self) -> CheckoutId {
        self.answered_unqueued += 1;
        CheckoutId::from_raw(UNSTORED | self.answered_unqueued)
    }

    /// Withdraws a waiting checkout. It gets no answer; a connection being opened for it stays
    /// in the pool for the next checkout.
    ///
    /// # Errors
    /// [`UsageError::UnknownCheckout`] if `checkout` is not waiting (never made, or already
    /// answered: a connection already acquired must be checked in instead).
    pub fn handle_cancel(&mut self, now: Instant, checkout: CheckoutId) -> Result<(), UsageError> {
        let waiter = checkout.to_raw();
        if self.waiters.get(waiter).is_none() {
            return Err(UsageError::UnknownCheckout(checkout));
        }
        self.time.check(now)?;
        let key_id = self.remove_waiter(waiter).key;
        self.counters.cancellations += 1;
        self.gc_key(key_id);
        Ok(())
    }

    /// Gives a leased connection back. `reusable` is the driver's health verdict: `false` for a
    /// connection with unread data, EOF or an error, which is then closed.
    ///
    /// # Errors
    /// [`UsageError::UnknownConn`] for an id that is not open, [`UsageError::WrongState`] for a
    /// connection that is not leased (a double checkin).
    pub fn handle_checkin(
        &mut self,
        now: Instant,
        conn: ConnId,
        reusable: bool,
    ) -> Result<(), UsageError> {
        let c = self.conn(conn)?;
        if !matches!(c.state, ConnState::Leased) {
            return Err(UsageError::WrongState {
                operation: "check in connection",
                state: c.state.name(),
            });
        }
        let key_id = c.key;
        let expired = c.lifetime_end(&self.config).is_some_and(|end| end <= now);
        self.time.check(now)?;
        let id = conn.to_raw();
        if self.state != PoolState::Running {
            self.close_conn(id, Some(CloseReason::Shutdown));
            self.finish_drain();
            return Ok(());
        }
        if !reusable || expired {
            let reason = if reusable {
                CloseReason::MaxLifetime
            } else {
                CloseReason::Discarded
            };
            self.close_conn(id, Some(reason));
            self.pump(now, key_id);
        } else {
            self.hand_over(now, id, key_id, FromCache::Deferred);
        }
        self.serve_blocked(now);
        Ok(())
    }

    /// The answer to [`Output::Resolve`]: the host's addresses, or why there are none. Each
    /// connection waiting on it tries them in the resolver's order, except that address
    /// families alternate (RFC 8305 §4: the first address's family, then the other, …); an
    /// error (or an empty list) fails every checkout waiting on that host at once.
    ///
    /// # Errors
    /// [`UsageError::WrongState`] if `host` is not being resolved (never asked, already answered,
    /// or timed out: a late answer can be ignored).
    pub fn handle_resolved(
        &mut self,
        now: Instant,
        host: &K::Host,
        result: Result<&[IpAddr], ResolveError>,
    ) -> Result<(), UsageError> {
        let Some(&resolution) = self.host_ids.get(host) else {
            return Err(UsageError::WrongState {
                operation: "answer resolution",
                state: "not being resolved",
            });
        };
        self.time.check(now)?;
        self.host_ids.remove(host);
        let r = self
            .resolutions
            .remove(resolution)
            .expect("host maps to a live resolution");
        self.timers
            .remove(r.deadline, Timer::Resolution(resolution));
        let waiting = self.still_resolving(resolution, r.conns);
        match result {
            Ok(addrs) if !addrs.is_empty() => {
                let addrs = transitions::happy_order(addrs);
                for conn in waiting {
                    self.start_connect(now, conn, addrs.clone());
                }
            }
            Ok(_) => self.fail_resolution(now, waiting, ResolveError::NotFound),
            Err(error) => self.fail_resolution(now, waiting, error),
        }
        self.serve_blocked(now);
        Ok(())
    }

    /// The answer to [`Output::Connect`]: attempt `attempt` of `conn` connected. The
    /// connection's other attempts are cancelled ([`Output::CancelConnect`]) and it goes to the
    /// oldest waiter of its key ([`FromCache::Fresh`]), or becomes idle if that checkout was
    /// cancelled.
    ///
    /// # Errors
    /// [`UsageError::UnknownConn`] / [`UsageError::WrongState`] if `conn` is not connecting,
    /// [`UsageError::UnknownAttempt`] if that attempt is not running (for example it was
    /// cancelled: the driver should drop the socket).
    pub fn handle_connected(
        &mut self,
        now: Instant,
        conn: ConnId,
        attempt: usize,
    ) -> Result<(), UsageError> {
        self.expect_attempt(conn, attempt, "complete connect")?;
        self.time.check(now)?;
        self.attempt_won(now, conn.to_raw(), attempt);
        self.serve_blocked(now);
        Ok(())
    }

    /// The answer to [`Output::Connect`]: attempt `attempt` of `conn` failed. The next address
    /// is tried at once; when none is left and no other attempt is running, the connection is
    /// given up and checkouts fail with `cause` (all of the key's waiters if the key has no
    /// other connection that could serve them, else the oldest one).
    ///
    /// # Errors
    /// As [`Pool::handle_connected`].
    pub fn handle_connect_failed(
        &mut self,
        now: Instant,
        conn: ConnId,
        attempt: usize,
        cause: ConnectError,
    ) -> Result<(), UsageError> {
        self.expect_attempt(conn, attempt, "fail connect")?;
        self.time.check(now)?;
        self.attempt_failed(now, conn.to_raw(), attempt, cause, false);
        self.serve_blocked(now);
        Ok(())
    }

    /// An idle connection was closed by the peer or showed activity (data, EOF, error): it is
    /// closed at once, so it is never handed out stale.
    ///
    /// # Errors
    /// [`UsageError::UnknownConn`], or [`UsageError::WrongState`] if the connection is not idle.
    pub fn handle_idle_closed(&mut self, now: Instant, conn: ConnId) -> Result<(), UsageError> {
        let c = self.conn(conn)?;
        if !matches!(c.state, ConnState::Idle { .. }) {
            return Err(UsageError::WrongState {
                operation: "report idle connection closed",
                state: c.state.name(),
            });
        }
        self.time.check(now)?;
        self.close_conn(conn.to_raw(), Some(CloseReason::PeerClosed));
        self.serve_blocked(now);
        Ok(())
    }

    /// Shuts the pool down: every waiting checkout fails with [`CheckoutError::Shutdown`], idle
    /// and connecting connections close, leased ones close when checked in, and then
    /// [`Output::Drained`] is emitted once. Calling it again does nothing.
    ///
    /// # Errors
    /// [`UsageError::TimeWentBackwards`].
    pub fn handle_shutdown(&mut self, now: Instant) -> Result<(), UsageError> {
        self.time.check(now)?;
        if self.state != PoolState::Running {
            return Ok(());
        }
        self.state = PoolState::Draining;
        // Answer waiters key by key, each key in FIFO order: deterministic and fair.
        let keys: Vec<u64> = self.key_ids.values().copied().collect();
        for &key_id in &keys {
            self.fail_all_waiters(key_id, CheckoutError::Shutdown);
        }
        let doomed: Vec<(u64, bool)> = self
            .conns
            .iter()
            .filter(|(_, c)| !matches!(c.state, ConnState::Leased))
            .map(|(id, c)| (id, !matches!(c.state, ConnState::Resolving { .. })))
            .collect();
        for (id, has_socket) in doomed {
            self.close_conn(id, has_socket.then_some(CloseReason::Shutdown));
        }
        for (id, r) in core::mem::take(&mut self.resolutions).iter() {
            self.timers.remove(r.deadline, Timer::Resolution(id));
            self.outputs.push_back(Output::CancelResolve {
                host: r.host.clone(),
            });
        }
        self.host_ids.clear();
        self.blocked.clear();
        for key_id in keys {
            if let Some(ks) = self.keys.get_mut(key_id) {
                ks.in_blocked = false;
            }
            self.gc_key(key_id);
        }
        self.finish_drain();
        Ok(())
    }

    /// Fires everything due at `now`: checkout deadlines, resolution and connect timeouts, idle
    /// expiry and max lifetime. Extra calls are harmless; an earlier `now` does nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        if !self.time.advance(now) {
            return;
        }
        loop {
            // The earliest due entry of the two deadline orders; on a tie the default-deadline
            // waiter goes first, as waiters go before other timers at one deadline.
            let fifo = self.expiry.front().and_then(|w| {
                let at = self.waiters.get(w).expect("listed waiter is live").deadline;
                (at <= now).then_some((at, w))
            });
            let timer = match (fifo, self.timers.next_deadline()) {
                (Some((at, w)), next) if next.is_none_or(|t| at <= t) => Timer::Waiter(w),
                _ => match self.timers.pop_due(now) {
                    Some((_, timer)) => timer,
                    None => break,
                },
            };
            match timer {
                Timer::Waiter(waiter) => {
                    let w = self.fail_waiter(waiter, CheckoutError::TimedOut);
                    self.counters.timeouts += 1;
                    self.gc_key(w.key);
                }
                Timer::Resolution(resolution) => {
                    let r = self
                        .resolutions
                        .remove(resolution)
                        .expect("armed resolution is live");
                    self.host_ids.remove(&r.host);
                    self.outputs
                        .push_back(Output::CancelResolve { host: r.host });
                    let waiting = self.still_resolving(resolution, r.conns);
                    self.fail_resolution(now, waiting, ResolveError::TimedOut);
                }
                Timer::Conn(conn) => self.conn_timer_fired(now, conn),
            }
        }
        self.serve_blocked(now);
    }

    // ----- outputs and getters ------------------------------------------------------------

    /// The next output, in the order they were produced. Drain it to `None` after every input.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output<K>> {
        self.outputs.pop_front()
    }

    /// When [`Pool::handle_timeout`] should next be called, if ever.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let fifo = self
            .expiry
            .front()
            .map(|w| self.waiters.get(w).expect("listed waiter is live").deadline);
        match (self.timers.next_deadline(), fifo) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Gauges over all keys and the counters.
    #[must_use]
    pub fn stats(&self) -> Stats {
        Stats {
            total: self.total,
            counters: self.counters,
        }
    }

    /// Gauges for one key (all zero for a key the pool does not know).
    #[must_use]
    pub fn key_stats(&self, key: &K) -> Gauges {
        self.find_key(key)
            .and_then(|id| self.keys.get(id))
            .map(|ks| ks.gauges)
            .unwrap_or_default()
    }

    /// Gauges of the key a live connection belongs to: [`Pool::key_stats`] of its
    /// [`Pool::conn_key`], without looking the key up.
    #[must_use]
    pub fn conn_key_stats(&self, conn: ConnId) -> Option<Gauges> {
        let c = self.conns.get(conn.to_raw())?;
        self.keys.get(c.key).map(|ks| ks.gauges)
    }

    /// The key a live connection belongs to.
    #[must_use]
    pub fn conn_key(&self, conn: ConnId) -> Option<&K> {
        let c = self.conns.get(conn.to_raw())?;
        self.keys.get(c.key).map(|ks| &ks.key)
    }

    /// Where the pool is in its life.
    #[must_use]
    pub fn state(&self) -> PoolState {
        self.state
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.config
    }
}
