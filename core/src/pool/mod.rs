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
//! - one resolution per host, its answer or error shared by every waiter at once;
//! - every step is O(1) or O(log n): waiters and idle connections are intrusive lists, timers a
//!   shared deadline index with lazy re-arming, so nothing scans a queue;
//! - shutdown answers every waiter and ends with exactly one [`Output::Drained`].
//!
//! See the crate docs for a complete run loop.

mod config;
mod key;
mod list;
mod output;
mod stats;
#[cfg(test)]
mod tests;

use alloc::collections::{BTreeMap, VecDeque};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::net::{IpAddr, SocketAddr};

pub use config::{Config, Reuse};
pub use key::{Endpoint, PoolKey};
pub use output::{CheckoutError, CloseReason, ConnectError, FromCache, Output, ResolveError};
pub use stats::{Counters, Gauges, Stats};

use self::list::{Links, List};
use crate::error::{ConfigError, UsageError};
use crate::id::{ConnId, Token};
use crate::slab::Slab;
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
    host_ids: BTreeMap<K::Host, u64>,
    resolutions: Slab<Resolution<K::Host>>,
    conns: Slab<Conn>,
    waiters: Slab<Waiter>,
    tokens: BTreeMap<Token, u64>,
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

/// A connection's states. Every change after creation goes through [`Pool::set_conn_state`].
#[derive(Debug, Clone)]
enum ConnState {
    /// Waiting for its host's resolution (no socket yet).
    Resolving { resolution: u64 },
    /// The driver is connecting to `addrs[index]`.
    Connecting {
        addrs: Arc<[IpAddr]>,
        index: usize,
        deadline: Instant,
    },
    /// Kept alive, waiting for reuse.
    Idle { since: Instant },
    /// Checked out.
    Leased,
}

impl ConnState {
    fn name(&self) -> &'static str {
        match self {
            ConnState::Resolving { .. } | ConnState::Connecting { .. } => "connecting",
            ConnState::Idle { .. } => "idle",
            ConnState::Leased => "leased",
        }
    }
}

#[derive(Debug)]
struct Waiter {
    token: Token,
    key: u64,
    deadline: Instant,
    links: Links,
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
            host_ids: BTreeMap::new(),
            resolutions: Slab::default(),
            conns: Slab::default(),
            waiters: Slab::default(),
            tokens: BTreeMap::new(),
            lru: List::default(),
            blocked: VecDeque::new(),
            timers: Timers::new(),
            outputs: VecDeque::new(),
            total: Gauges::default(),
            counters: Counters::default(),
        })
    }

    // ----- inputs -------------------------------------------------------------------------

    /// Asks for a connection for `key`, answered later by exactly one [`Output::Acquired`] or
    /// [`Output::CheckoutFailed`] carrying `token` (unless cancelled first). `deadline` bounds the
    /// whole checkout (resolve, queue, connect); `None` means `now + request_timeout`.
    ///
    /// # Errors
    /// [`UsageError::DuplicateToken`] if `token` is already waiting, [`UsageError::ShutDown`] after
    /// [`Pool::handle_shutdown`], [`UsageError::TimeWentBackwards`].
    pub fn handle_checkout(
        &mut self,
        now: Instant,
        token: Token,
        key: K,
        deadline: Option<Instant>,
    ) -> Result<(), UsageError> {
        if self.state != PoolState::Running {
            return Err(UsageError::ShutDown);
        }
        if self.tokens.contains_key(&token) {
            return Err(UsageError::DuplicateToken(token));
        }
        self.time.check(now)?;
        let key_id = self.intern_key(key);
        if let Some(conn) = self.take_idle(now, key_id) {
            self.lease(conn, token, FromCache::Immediate);
            return Ok(());
        }
        let deadline = deadline.unwrap_or(now + self.config.request_timeout);
        let refusal = if deadline <= now {
            self.counters.timeouts += 1;
            Some(CheckoutError::TimedOut)
        } else if self.tokens.len() >= self.config.max_waiters {
            Some(CheckoutError::QueueFull)
        } else {
            None
        };
        if let Some(error) = refusal {
            self.outputs
                .push_back(Output::CheckoutFailed { token, error });
            self.gc_key(key_id);
            return Ok(());
        }
        let waiter = self.waiters.insert(Waiter {
            token,
            key: key_id,
            deadline,
            links: Links::default(),
        });
        self.tokens.insert(token, waiter);
        self.timers.insert(deadline, Timer::Waiter(waiter));
        let ks = self.keys.get_mut(key_id).expect("interned key");
        ks.waiters
            .push_back(&mut self.waiters, waiter, waiter_links);
        ks.gauges.waiters += 1;
        self.total.waiters += 1;
        self.pump(now, key_id);
        Ok(())
    }

    /// Withdraws a waiting checkout. It gets no answer; a connection being opened for it stays
    /// in the pool for the next checkout.
    ///
    /// # Errors
    /// [`UsageError::UnknownToken`] if no checkout with `token` is waiting (never made, or
    /// already answered: a connection already acquired must be checked in instead).
    pub fn handle_cancel(&mut self, now: Instant, token: Token) -> Result<(), UsageError> {
        let Some(&waiter) = self.tokens.get(&token) else {
            return Err(UsageError::UnknownToken(token));
        };
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
        let expired = self.lifetime_end(c).is_some_and(|end| end <= now);
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
            self.hand_over(now, id, FromCache::Deferred);
        }
        self.serve_blocked(now);
        Ok(())
    }

    /// The answer to [`Output::Resolve`]: the host's addresses, or why there are none. Each
    /// connection waiting on it tries the addresses in order; an error (or an empty list) fails
    /// every checkout waiting on that host at once.
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
                let addrs: Arc<[IpAddr]> = Arc::from(addrs);
                for conn in waiting {
                    self.start_connect(now, conn, addrs.clone(), 0);
                }
            }
            Ok(_) => self.fail_resolution(now, waiting, ResolveError::NotFound),
            Err(error) => self.fail_resolution(now, waiting, error),
        }
        self.serve_blocked(now);
        Ok(())
    }

    /// The answer to [`Output::Connect`]: the connection is open. It goes to the oldest waiter of
    /// its key ([`FromCache::Fresh`]), or becomes idle if that checkout was cancelled.
    ///
    /// # Errors
    /// [`UsageError::UnknownConn`] / [`UsageError::WrongState`] if `conn` is not connecting (for
    /// example it was closed for taking too long: the driver should drop the socket).
    pub fn handle_connected(&mut self, now: Instant, conn: ConnId) -> Result<(), UsageError> {
        self.expect_connecting(conn, "complete connect")?;
        self.time.check(now)?;
        self.hand_over(now, conn.to_raw(), FromCache::Fresh);
        self.serve_blocked(now);
        Ok(())
    }

    /// The answer to [`Output::Connect`]: the attempt failed. The next address is tried; when
    /// none is left the connection is given up and checkouts fail with `cause` (all of the key's
    /// waiters if the key has no other connection that could serve them, else the oldest one).
    ///
    /// # Errors
    /// As [`Pool::handle_connected`].
    pub fn handle_connect_failed(
        &mut self,
        now: Instant,
        conn: ConnId,
        cause: ConnectError,
    ) -> Result<(), UsageError> {
        self.expect_connecting(conn, "fail connect")?;
        self.time.check(now)?;
        let id = conn.to_raw();
        let Some(Conn {
            state: ConnState::Connecting { addrs, index, .. },
            ..
        }) = self.conns.get(id)
        else {
            unreachable!("checked above");
        };
        if index + 1 < addrs.len() {
            let (addrs, next) = (addrs.clone(), index + 1);
            self.start_connect(now, id, addrs, next);
        } else {
            self.give_up_conn(now, id, CheckoutError::Connect(cause), None);
        }
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
        for key_id in &keys {
            while let Some(waiter) = self.keys.get(*key_id).and_then(|ks| ks.waiters.front()) {
                let token = self.remove_waiter(waiter).token;
                self.outputs.push_back(Output::CheckoutFailed {
                    token,
                    error: CheckoutError::Shutdown,
                });
            }
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
        while let Some((_, timer)) = self.timers.pop_due(now) {
            match timer {
                Timer::Waiter(waiter) => {
                    let w = self.remove_waiter_disarmed(waiter);
                    self.counters.timeouts += 1;
                    self.outputs.push_back(Output::CheckoutFailed {
                        token: w.token,
                        error: CheckoutError::TimedOut,
                    });
                    self.gc_key(w.key);
                }
                Timer::Resolution(resolution) => {
                    let r = self
                        .resolutions
                        .remove(resolution)
                        .expect("armed resolution is live");
                    self.host_ids.remove(&r.host);
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
        self.timers.next_deadline()
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
        self.key_ids
            .get(key)
            .and_then(|&id| self.keys.get(id))
            .map(|ks| ks.gauges)
            .unwrap_or_default()
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
        assert_eq!(self.tokens.len(), self.total.waiters);
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
            if let Some(deadline) = self.conn_deadline(c) {
                let at = c.armed.expect("a connection with a deadline has a timer");
                assert!(at <= deadline, "timer armed after the deadline");
                assert!(self.timers.contains(at, Timer::Conn(id)));
            }
        }
        if self.state == PoolState::Drained {
            assert!(self.conns.is_empty() && self.waiters.is_empty() && self.keys.is_empty());
        }
    }

    // ----- transitions --------------------------------------------------------------------

    fn conn(&self, conn: ConnId) -> Result<&Conn, UsageError> {
        self.conns
            .get(conn.to_raw())
            .ok_or(UsageError::UnknownConn(conn))
    }

    fn expect_connecting(&self, conn: ConnId, operation: &'static str) -> Result<(), UsageError> {
        let c = self.conn(conn)?;
        match c.state {
            ConnState::Connecting { .. } => Ok(()),
            ref s => Err(UsageError::WrongState {
                operation,
                state: if matches!(s, ConnState::Resolving { .. }) {
                    "resolving"
                } else {
                    s.name()
                },
            }),
        }
    }

    fn intern_key(&mut self, key: K) -> u64 {
        if let Some(&id) = self.key_ids.get(&key) {
            return id;
        }
        let id = self.keys.insert(KeyState {
            key: key.clone(),
            waiters: List::default(),
            idle: List::default(),
            gauges: Gauges::default(),
            in_blocked: false,
        });
        self.key_ids.insert(key, id);
        id
    }

    /// Forgets a key that has nothing left: keeps the key table bounded by live work.
    fn gc_key(&mut self, key_id: u64) {
        let Some(ks) = self.keys.get(key_id) else {
            return;
        };
        if ks.gauges.open == 0 && ks.waiters.is_empty() && !ks.in_blocked {
            let ks = self.keys.remove(key_id).expect("checked");
            self.key_ids.remove(&ks.key);
        }
    }

    fn lifetime_end(&self, c: &Conn) -> Option<Instant> {
        self.config.max_lifetime.map(|d| c.created + d)
    }

    /// The deadline the connection's timer should fire at, in its current state.
    fn conn_deadline(&self, c: &Conn) -> Option<Instant> {
        match c.state {
            ConnState::Resolving { .. } | ConnState::Leased => None,
            ConnState::Connecting { deadline, .. } => Some(deadline),
            ConnState::Idle { since } => {
                let idle_end = since + self.config.idle_timeout;
                Some(
                    self.lifetime_end(c)
                        .map_or(idle_end, |end| end.min(idle_end)),
                )
            }
        }
    }

    /// Makes sure the connection's timer fires no later than its deadline. A later deadline
    /// leaves the entry where it is (lazy re-arm: see [`crate::timer`]).
    fn arm_conn(&mut self, id: u64) {
        let c = self.conns.get(id).expect("live conn");
        let Some(deadline) = self.conn_deadline(c) else {
            return;
        };
        match c.armed {
            Some(at) if at <= deadline => {}
            old => {
                if let Some(at) = old {
                    self.timers.remove(at, Timer::Conn(id));
                }
                self.timers.insert(deadline, Timer::Conn(id));
                self.conns.get_mut(id).expect("live conn").armed = Some(deadline);
            }
        }
    }

    fn conn_timer_fired(&mut self, now: Instant, id: u64) {
        let Some(c) = self.conns.get_mut(id) else {
            unreachable!("closed conns are disarmed")
        };
        c.armed = None;
        let c = self.conns.get(id).expect("live conn");
        match self.conn_deadline(c) {
            None => {}
            Some(deadline) if deadline > now => self.arm_conn(id),
            Some(_) => match c.state {
                ConnState::Connecting { .. } => {
                    self.give_up_conn(
                        now,
                        id,
                        CheckoutError::Connect(ConnectError::TimedOut),
                        Some(CloseReason::ConnectTimedOut),
                    );
                }
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

    /// The one place a connection changes state (`None`: it is closed and forgotten): keeps the
    /// per-key and total gauges and the idle lists in step with it.
    fn set_conn_state(&mut self, id: u64, new: Option<ConnState>) -> Option<Conn> {
        let c = self.conns.get_mut(id).expect("live conn");
        let key_id = c.key;
        let old = match &new {
            Some(state) => core::mem::replace(&mut c.state, state.clone()),
            None => c.state.clone(),
        };
        let ks = self.keys.get_mut(key_id).expect("conn's key is live");
        let gauge = |g: &mut Gauges, state: &ConnState, delta: isize| {
            let field = match state {
                ConnState::Resolving { .. } | ConnState::Connecting { .. } => &mut g.connecting,
                ConnState::Idle { .. } => &mut g.idle,
                ConnState::Leased => &mut g.leased,
            };
            *field = field
                .checked_add_signed(delta)
                .expect("gauges never go negative");
        };
        gauge(&mut ks.gauges, &old, -1);
        gauge(&mut self.total, &old, -1);
        if matches!(old, ConnState::Idle { .. }) {
            ks.idle.remove(&mut self.conns, id, idle_links);
            self.lru.remove(&mut self.conns, id, lru_links);
        }
        match new {
            Some(new) => {
                gauge(&mut ks.gauges, &new, 1);
                gauge(&mut self.total, &new, 1);
                if matches!(new, ConnState::Idle { .. }) {
                    ks.idle.push_back(&mut self.conns, id, idle_links);
                    self.lru.push_back(&mut self.conns, id, lru_links);
                }
                None
            }
            None => {
                ks.gauges.open -= 1;
                self.total.open -= 1;
                self.conns.remove(id)
            }
        }
    }

    /// Opens a connection for `key_id`: resolving (sharing a resolution in flight) or, for a
    /// literal address, connecting at once.
    fn open_conn(&mut self, now: Instant, key_id: u64) {
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
            self.start_connect(now, id, Arc::from([addr.ip()]), 0);
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

    fn start_connect(&mut self, now: Instant, id: u64, addrs: Arc<[IpAddr]>, index: usize) {
        let deadline = now + self.config.connect_timeout;
        let ip = addrs[index];
        self.set_conn_state(
            id,
            Some(ConnState::Connecting {
                addrs,
                index,
                deadline,
            }),
        );
        let key_id = self.conns.get(id).expect("live conn").key;
        let key = self.keys.get(key_id).expect("live key").key.clone();
        let addr = SocketAddr::new(ip, key.port());
        self.arm_conn(id);
        self.outputs.push_back(Output::Connect {
            conn: ConnId::from_raw(id),
            key,
            addr,
        });
    }

    /// Hands a usable connection to the oldest waiter of its key, or keeps it idle.
    fn hand_over(&mut self, now: Instant, id: u64, from_cache: FromCache) {
        let key_id = self.conns.get(id).expect("live conn").key;
        let head = self.keys.get(key_id).expect("live key").waiters.front();
        match head {
            Some(waiter) => {
                let token = self.remove_waiter(waiter).token;
                self.lease(id, token, from_cache);
            }
            None => {
                self.set_conn_state(id, Some(ConnState::Idle { since: now }));
                self.arm_conn(id);
            }
        }
    }

    fn lease(&mut self, id: u64, token: Token, from_cache: FromCache) {
        self.set_conn_state(id, Some(ConnState::Leased));
        match from_cache {
            FromCache::Immediate => self.counters.immediate += 1,
            FromCache::Deferred => self.counters.deferred += 1,
            FromCache::Fresh => self.counters.fresh += 1,
        }
        self.outputs.push_back(Output::Acquired {
            token,
            conn: ConnId::from_raw(id),
            from_cache,
        });
    }

    /// Takes an idle connection of `key_id` in reuse order, closing any past its lifetime.
    fn take_idle(&mut self, now: Instant, key_id: u64) -> Option<u64> {
        loop {
            let ks = self.keys.get(key_id).expect("live key");
            let id = match self.config.reuse {
                Reuse::Lifo => ks.idle.back(),
                Reuse::Fifo => ks.idle.front(),
            }?;
            let c = self.conns.get(id).expect("idle conn is live");
            if self.lifetime_end(c).is_some_and(|end| end <= now) {
                self.close_conn(id, Some(CloseReason::MaxLifetime));
                continue;
            }
            return Some(id);
        }
    }

    /// Opens connections for `key_id` while it has more waiters than connections on the way
    /// and room under both caps, evicting the least recently used idle connection at the global
    /// cap. Queues the key for global capacity when nothing can be evicted.
    fn pump(&mut self, now: Instant, key_id: u64) {
        loop {
            let Some(ks) = self.keys.get(key_id) else {
                return;
            };
            debug_assert!(
                ks.idle.is_empty() || ks.waiters.is_empty(),
                "a key never has idle connections and waiters"
            );
            if ks.waiters.len() <= ks.gauges.connecting || ks.gauges.open >= self.config.max_per_key
            {
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
    fn serve_blocked(&mut self, now: Instant) {
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
    fn close_conn(&mut self, id: u64, reason: Option<CloseReason>) {
        let c = self
            .set_conn_state(id, None)
            .expect("closing removes the conn");
        if let Some(at) = c.armed {
            self.timers.remove(at, Timer::Conn(id));
        }
        if let Some(reason) = reason {
            self.outputs.push_back(Output::Close {
                conn: ConnId::from_raw(id),
                reason,
            });
        }
        self.gc_key(c.key);
    }

    /// A connection that could not be opened: fail checkouts with `error`: all of the key's
    /// waiters if nothing else could serve them, else the oldest one.
    fn give_up_conn(
        &mut self,
        now: Instant,
        id: u64,
        error: CheckoutError,
        reason: Option<CloseReason>,
    ) {
        let key_id = self.conns.get(id).expect("live conn").key;
        self.counters.connect_failures += 1;
        self.close_conn(id, reason);
        let Some(ks) = self.keys.get(key_id) else {
            return;
        };
        let fail_all = ks.gauges.open == 0;
        while let Some(waiter) = self.keys.get(key_id).and_then(|ks| ks.waiters.front()) {
            let token = self.remove_waiter(waiter).token;
            self.outputs
                .push_back(Output::CheckoutFailed { token, error });
            if !fail_all {
                break;
            }
        }
        self.gc_key(key_id);
        self.pump(now, key_id);
    }

    /// A resolution failed: its connections are dropped and every waiter of their keys fails
    /// with the same cause, at once.
    fn fail_resolution(&mut self, now: Instant, conns: Vec<u64>, error: ResolveError) {
        let mut keys = Vec::new();
        for id in conns {
            keys.push(self.conns.get(id).expect("filtered live").key);
            self.counters.connect_failures += 1;
            self.close_conn(id, None);
        }
        keys.sort_unstable();
        keys.dedup();
        for key_id in keys {
            while let Some(waiter) = self.keys.get(key_id).and_then(|ks| ks.waiters.front()) {
                let token = self.remove_waiter(waiter).token;
                self.outputs.push_back(Output::CheckoutFailed {
                    token,
                    error: CheckoutError::Resolve(error),
                });
            }
            self.gc_key(key_id);
            self.pump(now, key_id);
        }
    }

    /// The connections of a finished resolution that still wait for it (others closed since).
    fn still_resolving(&self, resolution: u64, conns: Vec<u64>) -> Vec<u64> {
        conns
            .into_iter()
            .filter(|&c| {
                matches!(self.conns.get(c), Some(Conn { state: ConnState::Resolving { resolution: r }, .. }) if *r == resolution)
            })
            .collect()
    }

    fn remove_waiter(&mut self, waiter: u64) -> Waiter {
        let deadline = self.waiters.get(waiter).expect("live waiter").deadline;
        self.timers.remove(deadline, Timer::Waiter(waiter));
        self.remove_waiter_disarmed(waiter)
    }

    fn remove_waiter_disarmed(&mut self, waiter: u64) -> Waiter {
        let key_id = self.waiters.get(waiter).expect("live waiter").key;
        let ks = self.keys.get_mut(key_id).expect("waiter's key is live");
        ks.waiters.remove(&mut self.waiters, waiter, waiter_links);
        ks.gauges.waiters -= 1;
        self.total.waiters -= 1;
        let w = self.waiters.remove(waiter).expect("live waiter");
        self.tokens.remove(&w.token);
        w
    }

    fn finish_drain(&mut self) {
        if self.state == PoolState::Draining && self.total.open == 0 {
            self.state = PoolState::Drained;
            self.outputs.push_back(Output::Drained);
        }
    }
}
