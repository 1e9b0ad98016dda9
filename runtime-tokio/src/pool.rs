//! The pool handle, the shared state behind it, and the driver: the one place that turns the
//! core's outputs into actions.
//!
//! Every path (a `get` on the cache-hit path, a guard's drop, a connect task finishing, the
//! driver's timer) does the same thing under one short lock: feed the core an
//! input, then drain [`CorePool::poll_output`] to `None`, performing each action. The lock is
//! never held across an `.await`; slow work (resolve, connect, TLS) runs in spawned tasks that
//! come back through the same door.
//!
//! The lock is kept short. The clock is read before it is taken, or not at all for an input
//! that does nothing time-dependent (a cache hit, a return that goes straight to a waiter:
//! [`Inner::lock_timeless_if`]). A returned connection's health check and idle watch run
//! before it, on the stream alone. An answer for a waiting checkout goes into that checkout's
//! own slot ([`crate::answer`]) after it is released: the woken checkout never takes the pool's
//! lock again.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Wake, Waker};
use std::time::Duration;

use moor_core::pool::{CheckoutError, Config, Gauges, Output, Pool as CorePool, PoolState, Stats};
use moor_core::{CheckoutId, ConfigError, ConnId, Instant};
use tokio::sync::{Notify, watch};
use tokio::task::AbortHandle;
use tracing::{debug, warn};

use crate::builder::{Builder, NetOptions};
use crate::checkout::{Checkout, Lease};
use crate::connect;
use crate::error::Error;
use crate::stream::Stream;
use crate::target::Target;

/// A keep-alive connection pool on tokio. Cheap to clone; every clone is the same pool.
///
/// Dropping the last clone shuts the pool down (as [`Pool::shutdown`] does, without waiting).
///
/// A pool runs its connects and timers on the runtime it was built on, and can be used from
/// any runtime while that one lives. If that runtime shuts down first, the pool shuts down with
/// it: waiting checkouts fail, and new ones fail at once, with a shutdown error that says so
/// (where a static pool shared by `#[tokio::test]`s, each with its own runtime, would
/// otherwise wait forever). Build one pool per runtime.
#[derive(Clone)]
pub struct Pool {
    handle: Arc<Handle>,
}

/// Shuts the pool down when the last user handle goes (the driver and guards keep `Inner`).
struct Handle {
    inner: Arc<Inner>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.inner.begin_shutdown();
    }
}

/// A fast hasher for the core's ids (already unique u64s).
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

pub(crate) type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// An open connection the pool holds (idle, or just connected or returned and about to be
/// handed over). A leased one is in its guard; a connecting one has only its attempts, in
/// [`State::attempts`].
pub(crate) struct Parked {
    stream: Stream,
    watch: Watch,
}

/// A connection's idle watch: what its socket wakes on activity while it is idle. It travels
/// with the stream (into the guard and back), so a returned connection is armed before the
/// pool's lock is taken.
pub(crate) struct Watch(Arc<IdleWaker>);

impl Watch {
    fn new(conn: ConnId, inner: &Arc<Inner>) -> Watch {
        Watch(Arc::new(IdleWaker {
            conn,
            inner: Arc::downgrade(inner),
            fired: AtomicBool::new(false),
        }))
    }

    /// Arms the watch on a returned stream: `false` if the stream is not healthy (unread data,
    /// EOF or an error), and the caller closes it.
    fn arm_returned(&self, stream: &mut Stream) -> bool {
        if self.registered() {
            // Nothing woke the watch since it was armed (a read event would have, and a read
            // that waited would have replaced it): the socket is as quiet as it was then.
            return true;
        }
        self.arm(stream)
    }

    /// Arms the watch on `stream` (registers its waker with the socket), after probing the
    /// stream if it is readable: `false` if it is not healthy.
    fn arm(&self, stream: &mut Stream) -> bool {
        // Cleared before arming: a wake from this registration comes after, and sets it again.
        self.0.fired.store(false, Ordering::Relaxed);
        stream.watch_idle(&Waker::from(self.0.clone()))
    }

    /// Whether the socket still holds this watch's waker: tokio keeps one clone of the waker a
    /// readiness poll registered, until it wakes it or a later poll replaces it, and the watch
    /// holds the only other handle. A wake on its way also counts: it still arrives, and the
    /// driver then arms the watch again without asking this.
    fn registered(&self) -> bool {
        Arc::strong_count(&self.0) == 2
    }

    /// Whether the socket woke the watch since it was last armed.
    fn fired(&self) -> bool {
        self.0.fired.load(Ordering::Acquire)
    }
}

/// Where the answer to a waiting checkout goes: the checkout holds the receiving end.
pub(crate) type Answer = Result<Lease, Error>;
pub(crate) type WaiterSlot = crate::answer::Sender;

pub(crate) struct State {
    pub(crate) core: CorePool<Target>,
    /// The latest time fed to the core (inputs that do not read the clock are fed this).
    pub(crate) last_now: Instant,
    /// Waiting checkouts' answer slots, by the id the core gave each (never reused, so a
    /// checkout dropped after its answer cannot mistake a later checkout's slot for its own).
    pub(crate) waiters: IdMap<CheckoutId, WaiterSlot>,
    /// Every open connection the core knows: `Some` while parked, `None` while leased (the
    /// guard holds the stream; the entry stays, so a return costs no insertion).
    pub(crate) conns: IdMap<ConnId, Option<Parked>>,
    /// The connection being checked in or connected while its input is fed: the core may hand
    /// it out or close it at once, so it joins [`State::conns`] only if it stays parked.
    returning: Option<(ConnId, Parked)>,
    /// Connect attempts running, by connection and attempt: a pair the core never reuses, so
    /// an attempt that was cancelled but finished anyway is recognised (it is not here) and
    /// its socket dropped.
    attempts: BTreeMap<(ConnId, usize), AbortHandle>,
    /// Lookups in flight, by host: which lookup (see [`State::lookups_started`]) and its task.
    lookups: HashMap<Arc<str>, (u64, AbortHandle)>,
    /// Lookups started so far: each lookup task carries its number, so one that was abandoned
    /// but finished anyway is told from its successor for the same host, and its result
    /// dropped.
    lookups_started: u64,
    /// The deadline the driver sleeps until (`None`: until notified).
    driver_deadline: Option<Instant>,
    drained: bool,
    /// Answers to hand to waiting checkouts once the lock is released (waking under the lock
    /// would lengthen it by a possible thread wake-up).
    deliveries: Vec<(WaiterSlot, Answer)>,
}

impl State {
    /// The time to feed the core for a clock reading of `nanos`: never earlier than the last
    /// input, so inputs reach the core in time order.
    fn tick(&mut self, nanos: u64) -> Instant {
        self.last_now = Instant::from_nanos(nanos).max(self.last_now);
        self.last_now
    }

    /// Takes a parked connection out, to hand it out (its entry stays, as leased).
    fn take_parked(&mut self, conn: ConnId) -> Option<Parked> {
        match self.returning.take() {
            Some((c, parked)) if c == conn => Some(parked),
            other => {
                self.returning = other;
                self.conns.get_mut(&conn).and_then(Option::take)
            }
        }
    }

    /// Forgets a connection the core closed, dropping its stream if parked. `false` if it was
    /// not open (still connecting).
    fn remove_conn(&mut self, conn: ConnId) -> bool {
        let returning = self.returning.take_if(|(c, _)| *c == conn).is_some();
        self.conns.remove(&conn).is_some() || returning
    }

    /// The returning connection stayed in the pool: park it with the others.
    /// `false` if it is not there any more: handed out or closed.
    fn park_returning(&mut self) -> bool {
        let Some((conn, parked)) = self.returning.take() else {
            return false;
        };
        self.conns.insert(conn, Some(parked));
        true
    }
}

/// The locked pool state. Letting go of it ([`Drop`]) releases the lock, then hands out the
/// answers produced under it (see [`Inner::release`]).
pub(crate) struct Locked<'a> {
    inner: &'a Arc<Inner>,
    guard: Option<parking_lot::MutexGuard<'a, State>>,
}

impl Deref for Locked<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        self.guard.as_ref().expect("held until drop")
    }
}

impl DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut State {
        self.guard.as_mut().expect("held until drop")
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        if let Some(guard) = self.guard.take() {
            self.inner.release(guard);
        }
    }
}

pub(crate) struct Inner {
    /// `parking_lot`'s mutex rather than std's: with two threads taking it for every checkout
    /// and return, std's (after a short spin the waiter sleeps in the kernel, and the holder
    /// pays a wake-up call to release it) made 64 tasks on 2 workers 0.7-0.9x the peers'
    /// get+drop throughput; parking_lot's (spins, then yields, before it parks) 1.0-1.6x, in
    /// the same runs of `bench pool-vs-peers`.
    state: parking_lot::Mutex<State>,
    origin: tokio::time::Instant,
    rt: tokio::runtime::Handle,
    net: NetOptions,
    /// Wakes the driver: a new earlier deadline, idle activity, or shutdown.
    driver: Notify,
    /// Whether the last checkout had to wait: if so, the next one makes its answer slot
    /// before taking the lock (a guess: a wrong one costs an allocation, not correctness).
    pub(crate) queue_hint: AtomicBool,
    /// Idle connections whose socket showed activity, reported by their wakers.
    woken: Mutex<Vec<ConnId>>,
    woken_any: AtomicBool,
    drained: watch::Sender<bool>,
    /// Set when the runtime the pool was built on shut down under it: the reason attached to
    /// every shutdown error from then on.
    orphaned: OnceLock<Arc<io::Error>>,
}

/// Wakes the driver when an idle connection's socket becomes readable (data, EOF, error).
struct IdleWaker {
    conn: ConnId,
    inner: Weak<Inner>,
    /// Set by every wake: a connection armed outside the lock may wake before it is parked,
    /// when the driver would not find it; parking looks at this under the lock.
    fired: AtomicBool,
}

impl Wake for IdleWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        if let Some(inner) = self.inner.upgrade() {
            inner.woken.lock().expect("woken list").push(self.conn);
            inner.woken_any.store(true, Ordering::Release);
            inner.driver.notify_one();
        }
    }
}

impl Pool {
    /// A builder with the seed's defaults.
    pub fn builder() -> Builder {
        Builder::default()
    }

    pub(crate) fn start(
        config: Config,
        net: NetOptions,
        rt: tokio::runtime::Handle,
    ) -> Result<Pool, ConfigError> {
        let core = CorePool::new(config)?;
        let inner = Arc::new(Inner {
            state: parking_lot::Mutex::new(State {
                core,
                last_now: Instant::ZERO,
                waiters: IdMap::default(),
                conns: IdMap::default(),
                returning: None,
                attempts: BTreeMap::new(),
                lookups: HashMap::new(),
                lookups_started: 0,
                driver_deadline: None,
                drained: false,
                deliveries: Vec::new(),
            }),
            origin: tokio::time::Instant::now(),
            rt: rt.clone(),
            net,
            driver: Notify::new(),
            queue_hint: AtomicBool::new(false),
            woken: Mutex::new(Vec::new()),
            woken_any: AtomicBool::new(false),
            drained: watch::Sender::new(false),
            orphaned: OnceLock::new(),
        });
        rt.spawn(drive(inner.clone()));
        Ok(Pool {
            handle: Arc::new(Handle { inner }),
        })
    }

    /// Checks out a connection to `target`: an idle one at once if there is one (no task hop),
    /// else the oldest-first wait for a released or new connection, bounded by the pool's
    /// request timeout. Dropping the future cancels the checkout at any stage.
    ///
    /// # Errors
    /// An [`Error`] whose [`kind`](Error::kind) says why: the deadline passed
    /// (`TimedOut`), the host could not be resolved (`Resolve`, shared by every checkout that
    /// waited on the lookup), every address refused or failed, or the TLS handshake failed
    /// (`Connect`, with the OS or rustls error in [`Error::io_error`]), `max_waiters` checkouts
    /// were already waiting (`QueueFull`, at once), or the pool is shutting down (`Shutdown`).
    pub fn get<'a>(&'a self, target: &'a Target) -> Checkout<'a> {
        Checkout::new(&self.handle.inner, target, None)
    }

    /// As [`Pool::get`], with this checkout's own deadline `timeout` from now (in place of the
    /// pool's request timeout; `Duration::ZERO` takes an idle connection or fails at once).
    ///
    /// # Errors
    /// As [`Pool::get`].
    pub fn get_timeout<'a>(&'a self, target: &'a Target, timeout: Duration) -> Checkout<'a> {
        Checkout::new(&self.handle.inner, target, Some(timeout))
    }

    /// Gauges over all targets and the counters (hits, misses, timeouts, evictions …).
    pub fn stats(&self) -> Stats {
        self.handle.inner.lock().0.core.stats()
    }

    /// Gauges of one target.
    pub fn key_stats(&self, target: &Target) -> Gauges {
        self.handle.inner.lock().0.core.key_stats(target)
    }

    /// Shuts the pool down: every waiting checkout fails with a shutdown error, idle
    /// connections close, and new checkouts are refused. Resolves once every leased
    /// connection has come back (and been closed).
    ///
    /// A guard its holder never drops keeps this waiting: where one may be stuck, bound the
    /// wait with `tokio::time::timeout` (the pool is shut down either way; the late guard's
    /// connection closes when it does come back).
    pub async fn shutdown(&self) {
        let inner = &self.handle.inner;
        inner.begin_shutdown();
        let mut rx = inner.drained.subscribe();
        // The sender lives in `inner`, which we hold: the wait ends only by draining.
        let _ = rx.wait_for(|drained| *drained).await;
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("stats", &self.stats())
            .finish()
    }
}

impl Inner {
    /// Reads the clock (outside the lock: a clock read can cost more than the whole critical
    /// section), then takes the lock and makes the reading monotonic under it, so inputs reach
    /// the core in time order.
    pub(crate) fn lock(self: &Arc<Self>) -> (Locked<'_>, Instant) {
        let nanos = self.clock();
        let mut guard = self.state.lock();
        let now = guard.tick(nanos);
        (self.locked(guard), now)
    }

    /// Takes the lock for a checkout of `target` that will probably not wait: when an idle
    /// connection can serve it at once, without reading the clock (see
    /// [`Inner::lock_timeless_if`]).
    pub(crate) fn lock_for_hit(self: &Arc<Self>, target: &Target) -> (Locked<'_>, Instant) {
        self.lock_timeless_if(|core| core.key_stats(target).idle > 0)
    }

    /// Takes the lock for the return of `conn`, which will probably go straight to a waiting
    /// checkout: when one is waiting for its key, without reading the clock.
    fn lock_for_handover(self: &Arc<Self>, conn: ConnId) -> (Locked<'_>, Instant) {
        self.lock_timeless_if(|core| core.conn_key_stats(conn).is_some_and(|g| g.waiters > 0))
    }

    /// Takes the lock, and reads the clock under it unless `timeless` says the input about to
    /// be fed does nothing that depends on the time: then the time of the last input serves as
    /// well as a fresh reading, and saves the most expensive step of a cache hit or a
    /// hand-over (a clock read orders the processor's pipeline). Such inputs are a checkout an
    /// idle connection serves at once and a return that goes straight to a waiting checkout,
    /// and only while no `max_lifetime` is set (a connection's age is then checked). Idle
    /// sockets that woke are handled at a fresh reading ([`Inner::check_woken`]).
    fn lock_timeless_if(
        self: &Arc<Self>,
        timeless: impl FnOnce(&CorePool<Target>) -> bool,
    ) -> (Locked<'_>, Instant) {
        let mut guard = self.state.lock();
        let now = if guard.core.config().max_lifetime.is_none() && timeless(&guard.core) {
            guard.last_now
        } else {
            guard.tick(self.clock())
        };
        (self.locked(guard), now)
    }

    /// Nanoseconds since the pool's origin.
    fn clock(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Wraps a taken lock.
    fn locked<'a>(self: &'a Arc<Self>, guard: parking_lot::MutexGuard<'a, State>) -> Locked<'a> {
        Locked {
            inner: self,
            guard: Some(guard),
        }
    }

    /// Releases the lock, then hands the answers produced under it to their checkouts (waking
    /// a task under the lock would lengthen it by a possible thread wake-up). An answer whose
    /// checkout has gone since (dropped after it was answered) goes back.
    fn release(self: &Arc<Self>, mut guard: parking_lot::MutexGuard<'_, State>) {
        match guard.deliveries.len() {
            0 => {}
            // The common case (a checkin serving the head waiter): the buffer stays allocated.
            1 => {
                let delivery = guard.deliveries.pop().expect("one delivery");
                drop(guard);
                self.deliver_now(delivery);
            }
            _ => {
                let deliveries = std::mem::take(&mut guard.deliveries);
                drop(guard);
                for delivery in deliveries {
                    self.deliver_now(delivery);
                }
            }
        }
    }

    fn deliver_now(self: &Arc<Self>, (slot, answer): (WaiterSlot, Answer)) {
        if let Err(Ok(lease)) = slot.send(answer) {
            self.checkin(lease, false);
        }
    }

    /// Why the pool shut down, when it was not asked to: its runtime went away.
    pub(crate) fn shutdown_cause(&self) -> Option<Arc<io::Error>> {
        self.orphaned.get().cloned()
    }

    fn begin_shutdown(self: &Arc<Self>) {
        let (mut st, now) = self.lock();
        if st.core.state() == PoolState::Running {
            debug!("shutting down");
        }
        // Only TimeWentBackwards can come back, and `now` never goes backwards.
        let _ = st.core.handle_shutdown(now);
        self.pump(&mut st, None, None);
        drop(st);
        self.driver.notify_one();
    }

    /// Drains the core's outputs and performs them. An answer for `mine` is returned instead
    /// of being delivered (the caller is the checkout itself, on the cache-hit path). `cause`
    /// is the I/O error behind the input just fed, attached to the failures it produced.
    pub(crate) fn pump(
        self: &Arc<Self>,
        st: &mut State,
        mine: Option<CheckoutId>,
        cause: Option<&Arc<io::Error>>,
    ) -> Option<Answer> {
        let mut answer = None;
        while let Some(output) = st.core.poll_output() {
            match output {
                Output::Acquired {
                    checkout,
                    conn,
                    from_cache,
                } => {
                    let Parked { stream, watch } = st
                        .take_parked(conn)
                        .expect("the core leases only open, unleased connections");
                    let lease = Lease {
                        conn,
                        stream,
                        watch,
                        from_cache,
                    };
                    if Some(checkout) == mine {
                        answer = Some(Ok(lease));
                    } else {
                        deliver(st, checkout, Ok(lease));
                    }
                }
                Output::CheckoutFailed { checkout, error } => {
                    let err = self.failure(checkout, error, cause);
                    if Some(checkout) == mine {
                        answer = Some(Err(err));
                    } else {
                        deliver(st, checkout, Err(err));
                    }
                }
                other => self.perform(st, other),
            }
        }
        if let Some(next) = st.core.poll_timeout()
            && st.driver_deadline.is_none_or(|d| next < d)
        {
            st.driver_deadline = Some(next);
            self.driver.notify_one();
        }
        answer
    }

    /// The error a failed checkout gets: the core's reason, with the I/O error behind it.
    #[cold]
    fn failure(
        &self,
        checkout: CheckoutId,
        error: CheckoutError,
        cause: Option<&Arc<io::Error>>,
    ) -> Error {
        let detail = match error {
            CheckoutError::Connect(_) | CheckoutError::Resolve(_) => cause.cloned(),
            CheckoutError::Shutdown => self.shutdown_cause(),
            _ => None,
        };
        let err = Error::new(error, detail);
        debug!(checkout = checkout.to_raw(), error = %err, "checkout failed");
        err
    }

    /// Performs one of the core's actions (all but the answers, which [`Inner::pump`] hands
    /// out itself). Kept out of `pump`, whose loop is on every checkout and checkin: these
    /// arms spawn tasks and would give it a frame of over a kilobyte.
    #[inline(never)]
    fn perform(self: &Arc<Self>, st: &mut State, output: Output<Target>) {
        match output {
            Output::Resolve { host } => {
                debug!(%host, "resolving");
                st.lookups_started += 1;
                let lookup = st.lookups_started;
                let inner = self.clone();
                let task = self.rt.spawn({
                    let host = host.clone();
                    async move {
                        let result = connect::resolve(&inner.net, &host).await;
                        inner.resolved(&host, lookup, result);
                    }
                });
                st.lookups.insert(host, (lookup, task.abort_handle()));
            }
            Output::CancelResolve { host } => {
                debug!(%host, "lookup abandoned");
                if let Some((_, task)) = st.lookups.remove(&host) {
                    task.abort();
                }
            }
            Output::Connect {
                conn,
                attempt,
                key,
                addr,
            } => {
                debug!(conn = conn.to_raw(), attempt, target = %key, %addr, "connecting");
                let inner = self.clone();
                let task = self.rt.spawn(async move {
                    let result = connect::open(&inner.net, &key, addr).await;
                    inner.connected(conn, attempt, result);
                });
                st.attempts.insert((conn, attempt), task.abort_handle());
            }
            Output::CancelConnect { conn, attempt } => {
                debug!(conn = conn.to_raw(), attempt, "connect attempt cancelled");
                if let Some(task) = st.attempts.remove(&(conn, attempt)) {
                    task.abort();
                }
            }
            Output::Close { conn, reason } => {
                debug!(conn = conn.to_raw(), ?reason, "closing");
                // Dropping the stream closes the socket; a connection still connecting has
                // only attempts to stop (a leased one was dropped by its guard already).
                if !st.remove_conn(conn) && !st.attempts.is_empty() {
                    let running: Vec<_> = st
                        .attempts
                        .range((conn, 0)..=(conn, usize::MAX))
                        .map(|(&id, _)| id)
                        .collect();
                    for id in running {
                        st.attempts.remove(&id).expect("just listed").abort();
                    }
                }
            }
            Output::Drained => {
                debug!("drained");
                st.drained = true;
                self.drained.send_replace(true);
                self.driver.notify_one();
            }
            _ => {}
        }
    }

    /// After the core kept `conn` (checked in or connected) and the outputs are drained: if it
    /// is still parked it is idle, so watch its socket; a socket that is not healthy is reported
    /// as closed by the peer.
    fn settle(self: &Arc<Self>, st: &mut State, now: Instant, conn: ConnId) {
        let Some(Some(Parked { stream, watch })) = st.conns.get_mut(&conn) else {
            return;
        };
        if watch.arm(stream) {
            return;
        }
        st.core
            .handle_idle_closed(now, conn)
            .expect("a parked connection after draining is idle");
        self.pump(st, None, None);
    }

    /// Looks at the idle connections whose sockets woke up: closes the ones that are not healthy
    /// any more (data, EOF, error) and re-arms the others.
    ///
    /// It reads the clock itself when there is something to do (closing a connection can open
    /// another, with a connect deadline), so a caller that took the lock without reading it
    /// feeds its own input at `now.max(st.last_now)` afterwards.
    pub(crate) fn check_woken(self: &Arc<Self>, st: &mut State) {
        // A plain load first: every checkout passes here, and a swap would bounce the cache
        // line between cores even when nothing woke.
        if !self.woken_any.load(Ordering::Relaxed) || !self.woken_any.swap(false, Ordering::Acquire)
        {
            return;
        }
        let now = st.tick(self.clock());
        let ids = std::mem::take(&mut *self.woken.lock().expect("woken list"));
        for conn in ids {
            // Leased since, or closed: the waker was stale.
            self.settle(st, now, conn);
        }
    }

    /// A leased connection comes back. Called by the guard's drop and by a checkout future
    /// dropped after its answer arrived.
    pub(crate) fn checkin(self: &Arc<Self>, lease: Lease, discard: bool) {
        let Lease {
            conn,
            mut stream,
            watch,
            ..
        } = lease;
        // Both run before the lock (they touch only this stream): the health check, and the
        // idle watch unless checkouts are waiting (then the connection probably goes straight
        // to one of them, and arming it would be wasted). A watch still registered means the
        // socket has been quiet since it was armed: nothing to probe either.
        let handing_over = self.queue_hint.load(Ordering::Relaxed);
        let healthy = !discard
            && if handing_over {
                watch.registered() || stream.probe()
            } else {
                watch.arm_returned(&mut stream)
            };
        if !healthy {
            if !discard {
                debug!(
                    conn = conn.to_raw(),
                    "returned with unread data, EOF or an error: not reusable"
                );
            }
            self.forget(conn);
            // Closing a socket is a system call or two: outside the lock.
            drop(stream);
            return;
        }
        let (mut st, now) = if handing_over {
            self.lock_for_handover(conn)
        } else {
            self.lock()
        };
        // Not armed, or woken since it was armed (a wake while it was leased is passed over by
        // the driver): settle it if it stays parked.
        let unsettled = handing_over || watch.fired();
        st.returning = Some((conn, Parked { stream, watch }));
        st.core
            .handle_checkin(now, conn, true)
            .expect("a lease's connection is leased");
        self.pump(&mut st, None, None);
        if st.park_returning() && unsettled {
            self.settle(&mut st, now, conn);
        }
    }

    /// A leased connection leaves the pool for good (discarded, unhealthy, or detached by its
    /// holder, who keeps the stream): the core closes it in its books and frees its place.
    pub(crate) fn forget(self: &Arc<Self>, conn: ConnId) {
        let (mut st, now) = self.lock();
        st.conns.remove(&conn);
        st.core
            .handle_checkin(now, conn, false)
            .expect("a lease's connection is leased");
        self.pump(&mut st, None, None);
    }

    fn resolved(
        self: &Arc<Self>,
        host: &Arc<str>,
        lookup: u64,
        result: Result<Vec<std::net::IpAddr>, (moor_core::pool::ResolveError, io::Error)>,
    ) {
        let (mut st, now) = self.lock();
        // Cancelled while it finished: the core refuses the answer, or would take it for a
        // newer lookup's.
        if st
            .lookups
            .get(host)
            .is_none_or(|&(current, _)| current != lookup)
        {
            return;
        }
        st.lookups.remove(host);
        let (answer, cause) = match result {
            Ok(ips) => {
                debug!(%host, addrs = ?ips, "resolved");
                (st.core.handle_resolved(now, host, Ok(&ips)), None)
            }
            Err((kind, e)) => {
                debug!(%host, error = %e, "resolve failed");
                (
                    st.core.handle_resolved(now, host, Err(kind)),
                    Some(connect::shared(e)),
                )
            }
        };
        answer.expect("the core is resolving every host the driver is looking up");
        self.pump(&mut st, None, cause.as_ref());
    }

    fn connected(
        self: &Arc<Self>,
        conn: ConnId,
        attempt: usize,
        result: Result<Stream, (moor_core::pool::ConnectError, io::Error)>,
    ) {
        let (mut st, now) = self.lock();
        if st.attempts.remove(&(conn, attempt)).is_none() {
            // Cancelled or closed while it finished (a rival won, it timed out, or the pool
            // shut down): drop whatever we got.
            return;
        }
        match result {
            Ok(stream) => {
                debug!(conn = conn.to_raw(), attempt, "connected");
                let watch = Watch::new(conn, self);
                st.returning = Some((conn, Parked { stream, watch }));
                st.core
                    .handle_connected(now, conn, attempt)
                    .expect("a running attempt is one the core is making");
                self.pump(&mut st, None, None);
                if st.park_returning() {
                    self.settle(&mut st, now, conn);
                }
            }
            Err((kind, e)) => {
                debug!(conn = conn.to_raw(), attempt, error = %e, "connect failed");
                st.core
                    .handle_connect_failed(now, conn, attempt, kind)
                    .expect("a running attempt is one the core is making");
                self.pump(&mut st, None, Some(&connect::shared(e)));
            }
        }
    }
}

/// Queues an answer for a waiting checkout, handed over by [`Inner::release`].
fn deliver(st: &mut State, checkout: CheckoutId, result: Answer) {
    let slot = st
        .waiters
        .remove(&checkout)
        .expect("every pending checkout but the caller's has a waiter slot");
    st.deliveries.push((slot, result));
}

/// The driver task: fires the core's timers, handles idle-socket wake-ups, and sleeps until
/// the next deadline or a notification. Ends when the pool has drained.
async fn drive(inner: Arc<Inner>) {
    let mut driver = Driver {
        inner,
        finished: false,
    };
    let inner = &driver.inner;
    loop {
        let deadline = {
            let (mut st, now) = inner.lock();
            inner.check_woken(&mut st);
            let now = now.max(st.last_now);
            st.core.handle_timeout(now);
            inner.pump(&mut st, None, None);
            if st.drained {
                break;
            }
            st.driver_deadline = st.core.poll_timeout();
            st.driver_deadline
        };
        match deadline {
            Some(at) => {
                let at = inner.origin + at.since_origin();
                tokio::select! {
                    () = inner.driver.notified() => {}
                    () = tokio::time::sleep_until(at) => {}
                }
            }
            None => inner.driver.notified().await,
        }
    }
    driver.finished = true;
}

/// Owns the driver's handle on the pool. Dropped before the driver finished, the runtime it
/// ran on has shut down (nothing else drops it): with no driver no deadline would ever fire and
/// no connect task would ever run, so the pool shuts down and says why, instead of letting
/// checkouts from another runtime wait forever.
struct Driver {
    inner: Arc<Inner>,
    finished: bool,
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Unwinding from a panic under the lock: the state is poisoned, leave it.
        if self.finished || std::thread::panicking() {
            return;
        }
        warn!("the tokio runtime the pool was built on has shut down: shutting the pool down");
        let _ = self.inner.orphaned.set(Arc::new(io::Error::other(
            "the tokio runtime the pool was built on has shut down",
        )));
        self.inner.begin_shutdown();
    }
}
