//! Unit tests of the pool, one behaviour each. `moor-tests` adds the simulation, the reference
//! model and proptest.

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::net::{IpAddr, Ipv4Addr, SocketAddr};
use core::time::Duration;

use super::*;

fn key(port: u16) -> Endpoint {
    Endpoint::new("http", "example.test", port)
}

fn other_host(port: u16) -> Endpoint {
    Endpoint::new("http", "other.test", port)
}

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

fn ip6(last: u16) -> IpAddr {
    IpAddr::V6(core::net::Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, last))
}

fn secs(s: u64) -> Instant {
    Instant::from_secs(s)
}

fn millis(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

struct Harness {
    pool: Pool<Endpoint>,
}

impl Harness {
    fn new(config: Config) -> Self {
        Harness {
            pool: Pool::new(config).unwrap(),
        }
    }

    fn drain(&mut self) -> Vec<Output<Endpoint>> {
        let mut out = Vec::new();
        while let Some(o) = self.pool.poll_output() {
            out.push(o);
        }
        self.pool.check_invariants();
        out
    }

    /// Checkout and answer resolve/connect at once; returns the acquired conn.
    fn fresh(&mut self, now: Instant, k: Endpoint) -> ConnId {
        self.fresh_checkout(now, k).1
    }

    /// Checks out `key(80)` at `now` and resolves its host to `addrs`: returns the checkout
    /// and its connection, whose first attempt goes to `addrs[0]`.
    fn connecting(&mut self, now: Instant, addrs: &[IpAddr]) -> (CheckoutId, ConnId) {
        let checkout = self.pool.handle_checkout(now, &key(80), None).unwrap();
        self.drain();
        self.pool
            .handle_resolved(now, &"example.test".into(), Ok(addrs))
            .unwrap();
        let [(conn, addr)] = connects(&self.drain())[..] else {
            panic!("one connection, one attempt")
        };
        assert_eq!(addr, SocketAddr::new(addrs[0], 80));
        (checkout, conn)
    }

    /// As [`Harness::fresh`], also returning the checkout's id.
    fn fresh_checkout(&mut self, now: Instant, k: Endpoint) -> (CheckoutId, ConnId) {
        let checkout = self.pool.handle_checkout(now, &k, None).unwrap();
        loop {
            let out = self.drain();
            let mut progressed = false;
            for o in out {
                match o {
                    Output::Resolve { host } => {
                        self.pool.handle_resolved(now, &host, Ok(&[ip(1)])).unwrap();
                        progressed = true;
                    }
                    Output::Connect { conn, attempt, .. } => {
                        self.pool.handle_connected(now, conn, attempt).unwrap();
                        progressed = true;
                    }
                    Output::Acquired {
                        checkout: c,
                        conn,
                        from_cache,
                    } => {
                        assert_eq!(c, checkout);
                        assert_eq!(from_cache, FromCache::Fresh);
                        return (checkout, conn);
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            assert!(progressed, "fresh checkout stalled");
        }
    }
}

fn acquired(out: &[Output<Endpoint>]) -> Vec<(CheckoutId, ConnId, FromCache)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Acquired {
                checkout,
                conn,
                from_cache,
            } => Some((*checkout, *conn, *from_cache)),
            _ => None,
        })
        .collect()
}

fn failed(out: &[Output<Endpoint>]) -> Vec<(CheckoutId, CheckoutError)> {
    out.iter()
        .filter_map(|o| match o {
            Output::CheckoutFailed { checkout, error } => Some((*checkout, *error)),
            _ => None,
        })
        .collect()
}

/// The connect attempts started and cancelled, in order: (conn, attempt, address or `None`
/// for a cancel).
fn attempts(out: &[Output<Endpoint>]) -> Vec<(ConnId, usize, Option<SocketAddr>)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Connect {
                conn,
                attempt,
                addr,
                ..
            } => Some((*conn, *attempt, Some(*addr))),
            Output::CancelConnect { conn, attempt } => Some((*conn, *attempt, None)),
            _ => None,
        })
        .collect()
}

fn connects(out: &[Output<Endpoint>]) -> Vec<(ConnId, SocketAddr)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Connect { conn, addr, .. } => Some((*conn, *addr)),
            _ => None,
        })
        .collect()
}

fn closes(out: &[Output<Endpoint>]) -> Vec<(ConnId, CloseReason)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Close { conn, reason } => Some((*conn, *reason)),
            _ => None,
        })
        .collect()
}

#[test]
fn defaults_are_the_seeds() {
    let c = Config::default();
    assert_eq!((c.max_per_key, c.max_open), (4, 128));
    assert_eq!(c.idle_timeout, Duration::from_secs(15));
    assert_eq!(c.request_timeout, Duration::from_secs(120));
    assert_eq!(c.reuse, Reuse::Lifo);
}

#[test]
fn invalid_config_is_an_error() {
    for (config, field) in [
        (
            Config {
                max_per_key: 0,
                ..Config::default()
            },
            "max_per_key",
        ),
        (
            Config {
                max_open: 0,
                ..Config::default()
            },
            "max_open",
        ),
        (
            Config {
                max_waiters: 0,
                ..Config::default()
            },
            "max_waiters",
        ),
        (
            Config {
                idle_timeout: Duration::ZERO,
                ..Config::default()
            },
            "idle_timeout",
        ),
        (
            Config {
                request_timeout: Duration::ZERO,
                ..Config::default()
            },
            "request_timeout",
        ),
        (
            Config {
                connect_timeout: Duration::ZERO,
                ..Config::default()
            },
            "connect_timeout",
        ),
        (
            Config {
                next_attempt_delay: Some(Duration::ZERO),
                ..Config::default()
            },
            "next_attempt_delay",
        ),
        (
            Config {
                max_lifetime: Some(Duration::ZERO),
                ..Config::default()
            },
            "max_lifetime",
        ),
    ] {
        assert_eq!(
            Pool::<Endpoint>::new(config).unwrap_err(),
            ConfigError::Zero { field }
        );
    }
    let err = Pool::<Endpoint>::new(Config {
        max_per_key: 5,
        max_open: 4,
        ..Config::default()
    })
    .unwrap_err();
    assert!(matches!(
        err,
        ConfigError::Conflict {
            field: "max_per_key",
            ..
        }
    ));
    assert!(alloc::format!("{err}").contains("max_per_key"));
}

#[test]
fn fresh_then_free_then_immediate_reuse() {
    let mut h = Harness::new(Config::default());
    let conn = h.fresh(secs(0), key(80));
    assert_eq!(h.pool.stats().total.leased, 1);
    h.pool.handle_checkin(secs(1), conn, true).unwrap();
    assert_eq!(h.drain(), []);
    assert_eq!(h.pool.key_stats(&key(80)).idle, 1);
    let c2 = h.pool.handle_checkout(secs(2), &key(80), None).unwrap();
    assert_eq!(acquired(&h.drain()), [(c2, conn, FromCache::Immediate)]);
    let c = h.pool.stats().counters;
    assert_eq!((c.fresh, c.immediate, c.deferred), (1, 1, 0));
}

#[test]
fn a_waiter_gets_a_released_connection_deferred() {
    let mut h = Harness::new(Config {
        max_per_key: 1,
        ..Config::default()
    });
    let conn = h.fresh(secs(0), key(80));
    let c2 = h.pool.handle_checkout(secs(1), &key(80), None).unwrap();
    assert_eq!(h.drain(), [], "at its cap the key queues the checkout");
    assert_eq!(h.pool.stats().total.waiters, 1);
    // A connection's key gauges, without the key: what a driver asks before a return.
    let gauges = h.pool.conn_key_stats(conn).expect("a live connection");
    assert_eq!(gauges, h.pool.key_stats(&key(80)));
    assert_eq!((gauges.leased, gauges.waiters), (1, 1));
    h.pool.handle_checkin(secs(2), conn, true).unwrap();
    assert_eq!(acquired(&h.drain()), [(c2, conn, FromCache::Deferred)]);
    assert_eq!(h.pool.stats().counters.deferred, 1);
    h.pool.handle_checkin(secs(3), conn, false).unwrap();
    assert_eq!(h.pool.conn_key_stats(conn), None, "closed: no key");
}

#[test]
fn waiters_are_served_strictly_fifo() {
    let mut h = Harness::new(Config {
        max_per_key: 1,
        ..Config::default()
    });
    let conn = h.fresh(secs(0), key(80));
    let c: Vec<CheckoutId> = (0..4)
        .map(|_| h.pool.handle_checkout(secs(1), &key(80), None).unwrap())
        .collect();
    h.pool.handle_cancel(secs(1), c[1]).unwrap();
    let mut order = Vec::new();
    for step in 2..5 {
        h.pool.handle_checkin(secs(step), conn, true).unwrap();
        let got = acquired(&h.drain());
        assert_eq!(got.len(), 1);
        order.push(got[0].0);
    }
    assert_eq!(order, [c[0], c[2], c[3]]);
}

#[test]
fn cancelling_before_the_connection_exists_keeps_it_for_later() {
    let mut h = Harness::new(Config::default());
    let c1 = h.pool.handle_checkout(secs(0), &key(80), None).unwrap();
    assert!(matches!(h.drain()[..], [Output::Resolve { .. }]));
    h.pool.handle_cancel(secs(1), c1).unwrap();
    assert_eq!(h.pool.stats().counters.cancellations, 1);
    h.pool
        .handle_resolved(secs(1), &"example.test".into(), Ok(&[ip(1)]))
        .unwrap();
    let conn = connects(&h.drain())[0].0;
    h.pool.handle_connected(secs(2), conn, 0).unwrap();
    assert_eq!(h.drain(), [], "a cancelled checkout gets no answer");
    assert_eq!(h.pool.stats().total.idle, 1);
    assert_eq!(
        h.pool.handle_cancel(secs(2), c1),
        Err(UsageError::UnknownCheckout(c1))
    );
    let c2 = h.pool.handle_checkout(secs(3), &key(80), None).unwrap();
    assert_eq!(acquired(&h.drain()), [(c2, conn, FromCache::Immediate)]);
}

#[test]
fn idle_connections_expire_exactly_at_their_keep_alive_deadline() {
    let mut h = Harness::new(Config::default());
    let conn = h.fresh(secs(0), key(80));
    h.pool.handle_checkin(secs(10), conn, true).unwrap();
    // Its timer may sit earlier (lazy re-arm) but it must not close early.
    let deadline = secs(25);
    let mut guard = 0;
    while let Some(at) = h.pool.poll_timeout().filter(|&at| at < deadline) {
        h.pool.handle_timeout(at);
        assert_eq!(h.drain(), [], "closed before its deadline");
        guard += 1;
        assert!(guard < 4, "timer keeps firing early");
    }
    assert_eq!(h.pool.poll_timeout(), Some(deadline));
    h.pool.handle_timeout(deadline);
    assert_eq!(closes(&h.drain()), [(conn, CloseReason::IdleTimeout)]);
    assert_eq!(h.pool.stats().total.open, 0);
    assert_eq!(h.pool.stats().counters.idle_expired, 1);
    assert_eq!(h.pool.poll_timeout(), None);
}

#[test]
fn reuse_restarts_the_keep_alive_clock() {
    let mut h = Harness::new(Config::default());
    let conn = h.fresh(secs(0), key(80));
    h.pool.handle_checkin(secs(0), conn, true).unwrap();
    h.pool.handle_checkout(secs(14), &key(80), None).unwrap();
    h.pool.handle_checkin(secs(14), conn, true).unwrap();
    h.drain();
    h.pool.handle_timeout(secs(15));
    assert_eq!(h.drain(), []);
    h.pool.handle_timeout(secs(29));
    assert_eq!(closes(&h.drain()), [(conn, CloseReason::IdleTimeout)]);
}

#[test]
fn request_timeout_covers_resolving() {
    let mut h = Harness::new(Config {
        request_timeout: Duration::from_secs(5),
        ..Config::default()
    });
    let c1 = h.pool.handle_checkout(secs(0), &key(80), None).unwrap();
    h.drain();
    assert_eq!(h.pool.poll_timeout(), Some(secs(5)));
    h.pool.handle_timeout(secs(4));
    assert_eq!(h.drain(), []);
    h.pool.handle_timeout(secs(5));
    assert_eq!(failed(&h.drain()), [(c1, CheckoutError::TimedOut)]);
    assert_eq!(h.pool.stats().counters.timeouts, 1);
    // A per-checkout deadline wins over the configured one.
    let c2 = h
        .pool
        .handle_checkout(secs(5), &key(81), Some(secs(6)))
        .unwrap();
    h.pool.handle_timeout(secs(6));
    assert_eq!(failed(&h.drain()), [(c2, CheckoutError::TimedOut)]);
}

#[test]
fn a_key_at_its_cap_does_not_block_other_keys() {
    let mut h = Harness::new(Config {
        max_per_key: 1,
        ..Config::default()
    });
    let _a = h.fresh(secs(0), key(80));
    h.pool.handle_checkout(secs(0), &key(80), None).unwrap();
    assert_eq!(h.drain(), []);
    let b = h.fresh(secs(0), key(81));
    assert_ne!(b, _a);
    assert_eq!(h.pool.key_stats(&key(80)).waiters, 1);
}

#[test]
fn the_global_cap_evicts_the_least_recently_used_idle_connection() {
    let mut h = Harness::new(Config {
        max_per_key: 2,
        max_open: 3,
        ..Config::default()
    });
    let a = h.fresh(secs(0), key(1));
    let b = h.fresh(secs(0), key(2));
    let c = h.fresh(secs(0), key(3));
    h.pool.handle_checkin(secs(1), b, true).unwrap();
    h.pool.handle_checkin(secs(2), a, true).unwrap();
    h.pool.handle_checkin(secs(3), c, true).unwrap();
    h.pool.handle_checkout(secs(4), &key(4), None).unwrap();
    let out = h.drain();
    assert_eq!(
        closes(&out),
        [(b, CloseReason::Evicted)],
        "b was used least recently"
    );
    assert_eq!(h.pool.stats().counters.evictions, 1);
    assert_eq!(h.pool.stats().total.open, 3);
}

#[test]
fn at_the_global_cap_with_nothing_idle_a_key_waits_for_capacity() {
    let mut h = Harness::new(Config {
        max_per_key: 2,
        max_open: 2,
        ..Config::default()
    });
    let a = h.fresh(secs(0), key(1));
    let _b = h.fresh(secs(0), key(1));
    h.pool.handle_checkout(secs(1), &key(2), None).unwrap();
    assert_eq!(h.drain(), []);
    // Checking `a` in: nobody waits for key 1, key 2 waits for room: `a` makes room.
    h.pool.handle_checkin(secs(2), a, true).unwrap();
    let out = h.drain();
    assert_eq!(closes(&out), [(a, CloseReason::Evicted)]);
    assert!(matches!(out.last(), Some(Output::Resolve { .. })));
    assert_eq!(h.pool.stats().total.open, 2);
}

#[test]
fn one_resolution_per_host_and_its_error_reaches_every_waiter() {
    let mut h = Harness::new(Config::default());
    let c1 = h.pool.handle_checkout(secs(0), &key(80), None).unwrap();
    let c2 = h.pool.handle_checkout(secs(0), &key(80), None).unwrap();
    let c3 = h.pool.handle_checkout(secs(0), &key(443), None).unwrap();
    h.pool
        .handle_checkout(secs(0), &other_host(80), None)
        .unwrap();
    let out = h.drain();
    let resolves: Vec<_> = out
        .iter()
        .filter(|o| matches!(o, Output::Resolve { .. }))
        .collect();
    assert_eq!(resolves.len(), 2, "one per host: {out:?}");
    h.pool
        .handle_resolved(secs(1), &"example.test".into(), Err(ResolveError::NotFound))
        .unwrap();
    let mut f = failed(&h.drain());
    f.sort_by_key(|(c, _)| *c);
    let e = CheckoutError::Resolve(ResolveError::NotFound);
    let mut expected = [(c1, e), (c2, e), (c3, e)];
    expected.sort_by_key(|(c, _)| *c);
    assert_eq!(f, expected);
    assert_eq!(
        h.pool.stats().total.waiters,
        1,
        "the other host is unaffected"
    );
    assert!(matches!(
        h.pool
            .handle_resolved(secs(1), &"example.test".into(), Ok(&[ip(1)])),
        Err(UsageError::WrongState { .. })
    ));
}

#[test]
fn a_resolver_that_never_answers_times_out() {
    let mut h = Harness::new(Config {
        connect_timeout: Duration::from_secs(3),
        ..Config::default()
    });
    let c1 = h.pool.handle_checkout(secs(0), &key(80), None).unwrap();
    h.drain();
    h.pool.handle_timeout(secs(3));
    let out = h.drain();
    assert_eq!(
        failed(&out),
        [(c1, CheckoutError::Resolve(ResolveError::TimedOut))]
    );
    assert_eq!(
        out.first(),
        Some(&Output::CancelResolve {
            host: "example.test".into()
        }),
        "the driver is told to stop the lookup: {out:?}"
    );
    assert_eq!(h.pool.stats().total.open, 0);
    assert!(matches!(
        h.pool
            .handle_resolved(secs(4), &"example.test".into(), Ok(&[ip(1)])),
        Err(UsageError::WrongState { .. })
    ));
    // The next checkout starts a new lookup, which an answer ends without a cancel.
    h.pool.handle_checkout(secs(4), &key(80), None).unwrap();
    assert_eq!(
        h.drain(),
        [Output::Resolve {
            host: "example.test".into()
        }]
    );
    h.pool
        .handle_resolved(secs(4), &"example.test".into(), Ok(&[ip(1)]))
        .unwrap();
    h.pool.handle_timeout(secs(10));
    let out = h.drain();
    assert!(
        !out.iter()
            .any(|o| matches!(o, Output::CancelResolve { .. })),
        "{out:?}"
    );
}

#[test]
fn the_next_address_is_tried_when_a_connect_fails() {
    let mut h = Harness::new(Config::default());
    let (c1, conn) = h.connecting(secs(0), &[ip(1), ip(2)]);
    h.pool
        .handle_connect_failed(secs(1), conn, 0, ConnectError::Refused)
        .unwrap();
    assert_eq!(connects(&h.drain()), [(conn, SocketAddr::new(ip(2), 80))]);
    h.pool.handle_connected(secs(1), conn, 1).unwrap();
    assert_eq!(acquired(&h.drain()), [(c1, conn, FromCache::Fresh)]);
}

#[test]
fn one_at_a_time_an_address_that_never_answers_gives_way_to_the_next_at_the_connect_timeout() {
    let mut h = Harness::new(Config {
        connect_timeout: Duration::from_secs(2),
        next_attempt_delay: None,
        ..Config::default()
    });
    let (c1, conn) = h.connecting(secs(0), &[ip(1), ip(2), ip(3)]);
    // Each attempt gets its own connect_timeout; the first two run out.
    h.pool.handle_timeout(secs(1));
    assert_eq!(h.drain(), []);
    h.pool.handle_timeout(secs(2));
    let out = h.drain();
    assert_eq!(
        out,
        [
            Output::CancelConnect { conn, attempt: 0 },
            Output::Connect {
                conn,
                attempt: 1,
                key: key(80),
                addr: SocketAddr::new(ip(2), 80)
            }
        ],
        "the silent attempt is cancelled and the checkout still waits: {out:?}"
    );
    assert_eq!(h.pool.poll_timeout(), Some(secs(4)));
    h.pool.handle_timeout(secs(4));
    assert_eq!(connects(&h.drain()), [(conn, SocketAddr::new(ip(3), 80))]);
    assert_eq!(
        h.pool.handle_connected(secs(5), conn, 0),
        Err(UsageError::UnknownAttempt { conn, attempt: 0 }),
        "a cancelled attempt's late answer is refused"
    );
    h.pool.handle_connected(secs(5), conn, 2).unwrap();
    assert_eq!(acquired(&h.drain()), [(c1, conn, FromCache::Fresh)]);
    assert_eq!(h.pool.stats().counters.connect_failures, 0);
}

#[test]
fn address_families_alternate_starting_with_the_resolvers_first() {
    let order = |addrs: &[IpAddr]| transitions::happy_order(addrs).to_vec();
    assert_eq!(
        order(&[ip(1), ip6(1), ip6(2), ip(2), ip(3)]),
        [ip(1), ip6(1), ip(2), ip6(2), ip(3)]
    );
    assert_eq!(
        order(&[ip6(1), ip6(2), ip6(3), ip(1)]),
        [ip6(1), ip(1), ip6(2), ip6(3)]
    );
    assert_eq!(order(&[ip(3), ip(1), ip(2)]), [ip(3), ip(1), ip(2)]);
    assert_eq!(order(&[]), Vec::<IpAddr>::new());
}

#[test]
fn happy_eyeballs_races_the_next_address_after_the_delay_and_the_first_to_connect_wins() {
    let mut h = Harness::new(Config::default());
    let at = |ip| Some(SocketAddr::new(ip, 80));
    let (c1, conn) = h.connecting(millis(0), &[ip6(1), ip6(2), ip(1), ip(2)]);
    // The next address starts 250 ms after the last one while none has answered, the
    // families alternating.
    assert_eq!(h.pool.poll_timeout(), Some(millis(250)));
    h.pool.handle_timeout(millis(249));
    assert_eq!(h.drain(), []);
    h.pool.handle_timeout(millis(250));
    assert_eq!(attempts(&h.drain()), [(conn, 1, at(ip(1)))]);
    h.pool.handle_timeout(millis(500));
    assert_eq!(attempts(&h.drain()), [(conn, 2, at(ip6(2)))]);
    assert_eq!(
        h.pool.stats().total.connecting,
        1,
        "one connection, three attempts"
    );
    // The IPv4 attempt connects first: the two others are cancelled, then the checkout is
    // answered.
    h.pool.handle_connected(millis(600), conn, 1).unwrap();
    let out = h.drain();
    assert_eq!(attempts(&out), [(conn, 0, None), (conn, 2, None)]);
    assert_eq!(acquired(&out), [(c1, conn, FromCache::Fresh)]);
    assert!(
        matches!(out.last(), Some(Output::Acquired { .. })),
        "cancels come first: {out:?}"
    );
    // The last address never starts, and a loser's late answer is refused.
    h.pool.handle_timeout(millis(750));
    assert_eq!(h.drain(), []);
    assert!(matches!(
        h.pool.handle_connected(millis(800), conn, 0),
        Err(UsageError::WrongState { .. })
    ));
    assert_eq!(h.pool.stats().counters.connect_failures, 0);
}

#[test]
fn happy_eyeballs_starts_the_next_address_at_once_when_one_fails() {
    let mut h = Harness::new(Config::default());
    let (_, conn) = h.connecting(millis(0), &[ip(1), ip(2), ip(3)]);
    h.pool
        .handle_connect_failed(millis(100), conn, 0, ConnectError::Refused)
        .unwrap();
    assert_eq!(
        attempts(&h.drain()),
        [(conn, 1, Some(SocketAddr::new(ip(2), 80)))]
    );
    // The delay counts from the attempt just started.
    h.pool.handle_timeout(millis(349));
    assert_eq!(h.drain(), []);
    h.pool.handle_timeout(millis(350));
    assert_eq!(
        attempts(&h.drain()),
        [(conn, 2, Some(SocketAddr::new(ip(3), 80)))]
    );
}

#[test]
fn happy_eyeballs_a_silent_attempt_is_cancelled_while_another_runs_and_the_last_cause_is_reported()
{
    let mut h = Harness::new(Config {
        connect_timeout: Duration::from_secs(1),
        ..Config::default()
    });
    let (c1, conn) = h.connecting(millis(0), &[ip(1), ip(2)]);
    h.pool.handle_timeout(millis(250));
    assert_eq!(connects(&h.drain()).len(), 1);
    assert_eq!(
        h.pool.poll_timeout(),
        Some(millis(1000)),
        "no address left to start"
    );
    // The first attempt runs out while the second still runs: only it is given up.
    h.pool.handle_timeout(millis(1000));
    assert_eq!(attempts(&h.drain()), [(conn, 0, None)]);
    assert_eq!(
        h.pool.handle_connected(millis(1000), conn, 0),
        Err(UsageError::UnknownAttempt { conn, attempt: 0 })
    );
    assert_eq!(h.pool.stats().total.waiters, 1);
    // The second fails: nothing is left, so the checkout gets that attempt's cause.
    h.pool
        .handle_connect_failed(millis(1100), conn, 1, ConnectError::Unreachable)
        .unwrap();
    let out = h.drain();
    assert_eq!(
        failed(&out),
        [(c1, CheckoutError::Connect(ConnectError::Unreachable))]
    );
    assert_eq!(closes(&out), [], "the driver has no attempt left to close");
    assert_eq!(h.pool.stats().counters.connect_failures, 1);
    assert_eq!(h.pool.stats().total, Gauges::default());
}

#[test]
fn happy_eyeballs_waits_for_attempts_still_running_before_giving_up() {
    let mut h = Harness::new(Config {
        connect_timeout: Duration::from_secs(1),
        ..Config::default()
    });
    let (c1, conn) = h.connecting(millis(0), &[ip(1), ip(2)]);
    h.pool.handle_timeout(millis(250));
    h.drain();
    // The second is refused while the first still runs: the checkout waits for it.
    h.pool
        .handle_connect_failed(millis(300), conn, 1, ConnectError::Refused)
        .unwrap();
    assert_eq!(h.drain(), []);
    // The first runs out too: the connection is given up, its attempt closed.
    h.pool.handle_timeout(millis(1000));
    let out = h.drain();
    assert_eq!(closes(&out), [(conn, CloseReason::ConnectTimedOut)]);
    assert_eq!(
        failed(&out),
        [(c1, CheckoutError::Connect(ConnectError::TimedOut))]
    );
    assert_eq!(attempts(&out), [], "the Close covers the attempt");
}

#[test]
fn refusal_on_every_address_fails_all_waiters_with_the_real_cause() {
    let mut h = Harness::new(Config {
        max_per_key: 1,
        ..Config::default()
    });
    let c: Vec<CheckoutId> = (0..3)
        .map(|_| h.pool.handle_checkout(secs(0), &key(80), None).unwrap())
        .collect();
    h.drain();
    h.pool
        .handle_resolved(secs(0), &"example.test".into(), Ok(&[ip(1)]))
        .unwrap();
    let conn = connects(&h.drain())[0].0;
    h.pool
        .handle_connect_failed(secs(0), conn, 0, ConnectError::Refused)
        .unwrap();
    let e = CheckoutError::Connect(ConnectError::Refused);
    assert_eq!(failed(&h.drain()), [(c[0], e), (c[1], e), (c[2], e)]);
    assert_eq!(h.pool.stats().counters.connect_failures, 1);
    assert_eq!(h.pool.stats().total, Gauges::default());
}

#[test]
fn a_connect_that_hangs_times_out_and_closes() {
    let mut h = Harness::new(Config {
        connect_timeout: Duration::from_secs(2),
        ..Config::default()
    });
    let c1 = h
        .pool
        .handle_checkout(secs(0), &Endpoint::new("http", "127.0.0.1", 9), None)
        .unwrap();
    let out = h.drain();
    let [(conn, addr)] = connects(&out)[..] else {
        panic!("a literal IP skips resolving: {out:?}")
    };
    assert_eq!(addr, "127.0.0.1:9".parse().unwrap());
    h.pool.handle_timeout(secs(2));
    let out = h.drain();
    assert_eq!(closes(&out), [(conn, CloseReason::ConnectTimedOut)]);
    assert_eq!(
        failed(&out),
        [(c1, CheckoutError::Connect(ConnectError::TimedOut))]
    );
    assert_eq!(
        h.pool.handle_connected(secs(3), conn, 0),
        Err(UsageError::UnknownConn(conn))
    );
}

#[test]
fn max_lifetime_closes_old_connections_instead_of_reusing_them() {
    let mut h = Harness::new(Config {
        max_lifetime: Some(Duration::from_secs(10)),
        ..Config::default()
    });
    let conn = h.fresh(secs(0), key(80));
    h.pool.handle_checkin(secs(5), conn, true).unwrap();
    h.pool.handle_timeout(secs(10));
    assert_eq!(closes(&h.drain()), [(conn, CloseReason::MaxLifetime)]);
    let conn = h.fresh(secs(10), key(80));
    h.pool.handle_checkin(secs(21), conn, true).unwrap();
    assert_eq!(closes(&h.drain()), [(conn, CloseReason::MaxLifetime)]);
}

#[test]
fn checkin_as_not_reusable_closes_and_serves_the_next_waiter_fresh() {
    let mut h = Harness::new(Config {
        max_per_key: 1,
        ..Config::default()
    });
    let conn = h.fresh(secs(0), key(80));
    h.pool.handle_checkout(secs(0), &key(80), None).unwrap();
    h.pool.handle_checkin(secs(1), conn, false).unwrap();
    let out = h.drain();
    assert_eq!(closes(&out), [(conn, CloseReason::Discarded)]);
    assert!(
        out.iter().any(|o| matches!(o, Output::Resolve { .. })),
        "a replacement is opened"
    );
}

#[test]
fn an_idle_connection_closed_by_the_peer_is_dropped() {
    let mut h = Harness::new(Config::default());
    let conn = h.fresh(secs(0), key(80));
    assert!(matches!(
        h.pool.handle_idle_closed(secs(0), conn),
        Err(UsageError::WrongState { .. })
    ));
    h.pool.handle_checkin(secs(0), conn, true).unwrap();
    h.pool.handle_idle_closed(secs(1), conn).unwrap();
    assert_eq!(closes(&h.drain()), [(conn, CloseReason::PeerClosed)]);
    let again = h.fresh(secs(2), key(80));
    assert_ne!(again, conn, "ids are never reused");
}

#[test]
fn too_many_waiters_is_queue_full() {
    let mut h = Harness::new(Config {
        max_waiters: 2,
        ..Config::default()
    });
    let c: Vec<CheckoutId> = (0..3)
        .map(|_| h.pool.handle_checkout(secs(0), &key(80), None).unwrap())
        .collect();
    assert_eq!(failed(&h.drain()), [(c[2], CheckoutError::QueueFull)]);
}

#[test]
fn shutdown_answers_everyone_closes_everything_then_drains_once() {
    let mut h = Harness::new(Config {
        max_per_key: 2,
        ..Config::default()
    });
    let leased = h.fresh(secs(0), key(80));
    let idle = h.fresh(secs(0), key(81));
    h.pool.handle_checkin(secs(0), idle, true).unwrap();
    let _c = h.fresh(secs(0), key(80));
    let c4 = h.pool.handle_checkout(secs(0), &key(80), None).unwrap();
    let c5 = h.pool.handle_checkout(secs(0), &key(82), None).unwrap();
    h.drain();
    h.pool.handle_shutdown(secs(1)).unwrap();
    let out = h.drain();
    assert_eq!(
        failed(&out),
        [(c4, CheckoutError::Shutdown), (c5, CheckoutError::Shutdown)]
    );
    assert!(closes(&out).contains(&(idle, CloseReason::Shutdown)));
    assert!(
        out.contains(&Output::CancelResolve {
            host: "example.test".into()
        }),
        "c5's lookup is abandoned: {out:?}"
    );
    assert!(
        !out.contains(&Output::Drained),
        "two connections are still leased"
    );
    assert_eq!(h.pool.state(), PoolState::Draining);
    assert_eq!(
        h.pool.handle_checkout(secs(1), &key(80), None),
        Err(UsageError::ShutDown)
    );
    h.pool.handle_checkin(secs(2), leased, true).unwrap();
    assert_eq!(
        h.drain(),
        [Output::Close {
            conn: leased,
            reason: CloseReason::Shutdown
        }]
    );
    h.pool.handle_checkin(secs(2), _c, true).unwrap();
    assert_eq!(
        h.drain(),
        [
            Output::Close {
                conn: _c,
                reason: CloseReason::Shutdown
            },
            Output::Drained
        ]
    );
    h.pool.handle_shutdown(secs(3)).unwrap();
    assert_eq!(h.drain(), [], "Drained is emitted once");
    assert_eq!(h.pool.state(), PoolState::Drained);
    assert_eq!(h.pool.poll_timeout(), None);
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let mut h = Harness::new(Config {
        max_per_key: 1,
        ..Config::default()
    });
    let (answered, conn) = h.fresh_checkout(secs(5), key(80));
    h.pool.handle_checkout(secs(5), &key(80), None).unwrap();
    h.drain();
    let before = (h.pool.stats(), h.pool.poll_timeout());
    let ghost = ConnId::from_raw(12345);
    assert_eq!(
        h.pool.handle_checkin(secs(6), ghost, true),
        Err(UsageError::UnknownConn(ghost))
    );
    assert_eq!(
        h.pool.handle_connected(secs(6), ghost, 0),
        Err(UsageError::UnknownConn(ghost))
    );
    assert_eq!(
        h.pool
            .handle_connect_failed(secs(6), ghost, 0, ConnectError::Refused),
        Err(UsageError::UnknownConn(ghost))
    );
    // A checkout never minted, and one already answered (its connection is checked in, not
    // cancelled): neither is waiting.
    let never = CheckoutId::from_raw(12345);
    assert_eq!(
        h.pool.handle_cancel(secs(6), never),
        Err(UsageError::UnknownCheckout(never))
    );
    assert_eq!(
        h.pool.handle_cancel(secs(6), answered),
        Err(UsageError::UnknownCheckout(answered))
    );
    assert!(matches!(
        h.pool.handle_connected(secs(6), conn, 0),
        Err(UsageError::WrongState { .. })
    ));
    assert_eq!(
        h.pool.handle_checkout(secs(4), &key(80), None),
        Err(UsageError::TimeWentBackwards {
            now: secs(4),
            last: secs(5)
        })
    );
    h.pool.handle_timeout(secs(1));
    assert_eq!(h.drain(), []);
    assert_eq!((h.pool.stats(), h.pool.poll_timeout()), before);
    // Double checkin: the first hands the connection to the waiting checkout, the second is
    // refused.
    h.pool.handle_checkin(secs(6), conn, true).unwrap();
    h.drain();
    h.pool.handle_checkin(secs(6), conn, true).unwrap();
    h.drain();
    let before = h.pool.stats();
    assert!(matches!(
        h.pool.handle_checkin(secs(6), conn, true),
        Err(UsageError::WrongState { .. })
    ));
    assert_eq!(h.pool.stats(), before);
    assert_eq!(h.drain(), []);
}

#[test]
fn fifo_reuse_takes_the_oldest_idle_connection() {
    for (reuse, expect_first) in [(Reuse::Lifo, false), (Reuse::Fifo, true)] {
        let mut h = Harness::new(Config {
            reuse,
            ..Config::default()
        });
        let a = h.fresh(secs(0), key(80));
        let b = h.fresh(secs(0), key(80));
        h.pool.handle_checkin(secs(1), a, true).unwrap();
        h.pool.handle_checkin(secs(2), b, true).unwrap();
        h.pool.handle_checkout(secs(3), &key(80), None).unwrap();
        let got = acquired(&h.drain())[0].1;
        assert_eq!(got, if expect_first { a } else { b }, "{reuse:?}");
    }
}

/// Regression: a checkout at the very instant the key's only idle connection reaches its max
/// lifetime (before `handle_timeout` ran) closed it, forgot the key, then used the stale key.
#[test]
fn checkout_at_the_instant_the_last_idle_connection_expires() {
    let mut h = Harness::new(Config {
        max_lifetime: Some(Duration::from_secs(10)),
        ..Config::default()
    });
    let conn = h.fresh(secs(0), key(80));
    h.pool.handle_checkin(secs(5), conn, true).unwrap();
    h.drain();
    h.pool.handle_checkout(secs(10), &key(80), None).unwrap();
    let out = h.drain();
    assert_eq!(closes(&out), [(conn, CloseReason::MaxLifetime)]);
    assert!(
        matches!(out.last(), Some(Output::Resolve { .. })),
        "a fresh connection is opened: {out:?}"
    );
    assert_eq!(h.pool.stats().total.waiters, 1);
}

#[test]
fn a_recorded_input_log_replays_to_the_same_outputs() {
    // Record a run as data, replay it into a fresh pool: identical outputs, bit for bit. The
    // recorded cancel names its checkout by the id the recorded run was given: minting is
    // deterministic, so every replay gives that checkout the same id.
    let host: String = "example.test".into();
    let conn = ConnId::from_raw(1 << 32);
    let mut pool = Pool::new(Config::default()).unwrap();
    let mut log: Vec<(Instant, Input<Endpoint>)> = Vec::new();
    let mut recorded = Vec::new();
    let mut record = |now: Instant, input: Input<Endpoint>| {
        // A checkout is made directly, to learn its id; the rest goes through `handle`.
        let result = match &input {
            Input::Checkout { key, deadline } => {
                pool.handle_checkout(now, key, *deadline).map(Some)
            }
            _ => pool.handle(now, input.clone()).map(|()| None),
        };
        recorded.push(alloc::format!("{:?}", result.as_ref().map(|_| ())));
        while let Some(o) = pool.poll_output() {
            recorded.push(alloc::format!("{o:?}"));
        }
        log.push((now, input));
        result.unwrap()
    };
    record(
        secs(0),
        Input::Checkout {
            key: key(80),
            deadline: None,
        },
    );
    let second = record(
        secs(0),
        Input::Checkout {
            key: key(80),
            deadline: Some(secs(3)),
        },
    )
    .expect("a checkout is named");
    record(
        secs(1),
        Input::Resolved {
            host: host.clone(),
            result: Ok(vec![ip(1), ip(2)]),
        },
    );
    record(
        secs(1),
        Input::ConnectFailed {
            conn,
            attempt: 0,
            cause: ConnectError::Refused,
        },
    );
    record(secs(2), Input::Connected { conn, attempt: 1 });
    record(secs(2), Input::Cancel(second));
    record(secs(3), Input::Timeout);
    record(secs(4), Input::Shutdown);
    record(
        secs(5),
        Input::Checkin {
            conn,
            reusable: true,
        },
    );
    let run = || {
        let mut pool = Pool::new(Config::default()).unwrap();
        let mut out = Vec::new();
        for (now, input) in log.clone() {
            let result = pool.handle(now, input);
            out.push(alloc::format!("{result:?}"));
            while let Some(o) = pool.poll_output() {
                out.push(alloc::format!("{o:?}"));
            }
        }
        out
    };
    let first = run();
    assert_eq!(first, recorded, "the replay is the recorded run");
    assert_eq!(first, run());
    assert!(first.iter().any(|o| o.contains("Fresh")), "{first:?}");
    assert!(first.iter().any(|o| o.contains("Drained")), "{first:?}");
}

#[test]
fn checkout_ids_are_never_reused() {
    // Every way a checkout ends, round after round: answered at once, queued then answered,
    // queued then cancelled, refused (queue full, deadline already passed). The pool reuses the
    // slots these free; the ids it mints must still all differ.
    let mut h = Harness::new(Config {
        max_per_key: 1,
        max_waiters: 2,
        ..Config::default()
    });
    let (first, conn) = h.fresh_checkout(secs(0), key(80));
    h.pool.handle_checkin(secs(0), conn, true).unwrap();
    let mut ids = vec![first];
    for round in 1..=20 {
        let now = secs(round);
        let immediate = h.pool.handle_checkout(now, &key(80), None).unwrap();
        assert_eq!(
            acquired(&h.drain()),
            [(immediate, conn, FromCache::Immediate)]
        );
        // Answered already: it cannot be cancelled (and nothing changes).
        assert_eq!(
            h.pool.handle_cancel(now, immediate),
            Err(UsageError::UnknownCheckout(immediate))
        );
        let queued = h.pool.handle_checkout(now, &key(80), None).unwrap();
        let cancelled = h.pool.handle_checkout(now, &key(80), None).unwrap();
        assert_eq!(h.drain(), [], "both wait for the leased connection");
        let full = h.pool.handle_checkout(now, &key(80), None).unwrap();
        assert_eq!(failed(&h.drain()), [(full, CheckoutError::QueueFull)]);
        h.pool.handle_cancel(now, cancelled).unwrap();
        let late = h.pool.handle_checkout(now, &key(80), Some(now)).unwrap();
        assert_eq!(failed(&h.drain()), [(late, CheckoutError::TimedOut)]);
        h.pool.handle_checkin(now, conn, true).unwrap();
        assert_eq!(acquired(&h.drain()), [(queued, conn, FromCache::Deferred)]);
        h.pool.handle_checkin(now, conn, true).unwrap();
        assert_eq!(h.drain(), [], "the cancelled checkout gets no answer");
        ids.extend([immediate, queued, cancelled, full, late]);
    }
    let mut distinct = ids.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), ids.len(), "an id was reused: {ids:?}");
    let c = h.pool.stats().counters;
    assert_eq!((c.immediate, c.deferred, c.cancellations), (20, 20, 20));
}
