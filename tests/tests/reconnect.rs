//! Scenario tests of the seed's behaviours and proptest state-machine tests of the reconnecting
//! link against the reference model in `moor_tests::reconnect`.

use std::time::Duration;

use moor_core::reconnect::{Output, Reconnect, ReconnectConfig, State};
use moor_core::{Instant, Token};
use moor_tests::reconnect::{Harness, Op, Profile, run};
use proptest::prelude::*;

#[test]
fn seed_subscribe_when_already_connected() {
    let h = run(
        Profile::Seed,
        1,
        &[Op::Start, Op::Accept, Op::Subscribe(1), Op::Subscribe(2)],
    );
    assert!(matches!(h.link.state(), State::Connected { .. }));
    // The harness asserted each subscriber saw Connected; check through a raw link too.
    let mut link: Reconnect<u8> = Reconnect::new(ReconnectConfig::seed(), 0).unwrap();
    link.handle_start(Instant::ZERO).unwrap();
    let a = std::iter::from_fn(|| link.poll_output())
        .find_map(|o| match o {
            Output::Connect { attempt } => Some(attempt),
            _ => None,
        })
        .unwrap();
    link.handle_connected(Instant::ZERO, a).unwrap();
    while link.poll_output().is_some() {}
    link.handle_subscribe(Instant::ZERO, Token(5)).unwrap();
    assert_eq!(
        link.poll_output(),
        Some(Output::Connected {
            subscriber: Token(5),
            attempt: a
        })
    );
}

#[test]
fn seed_reconnects_after_timeout_and_after_disconnect() {
    // 30 s timeout, 2 s wait, then a new attempt that connects and later drops.
    let h = run(
        Profile::Seed,
        1,
        &[
            Op::Subscribe(0),
            Op::Start,
            Op::Advance(300), // 30 s: timed out
            Op::Advance(20),  // 2 s: next attempt
            Op::Accept,
            Op::Advance(50),
            Op::Drop,
            Op::Advance(20),
            Op::Accept,
        ],
    );
    let s = h.link.stats();
    assert_eq!(s.connect_timeouts, 1);
    assert_eq!(s.disconnects, 1);
    assert_eq!(s.connects, 2);
    assert!(matches!(h.link.state(), State::Connected { .. }));
}

#[test]
fn flapping_peer_causes_no_hot_loop_and_backoff_keeps_growing() {
    // A peer that accepts and drops at once, for 30 simulated minutes.
    let mut h = Harness::new(Profile::Grpc, 3);
    h.step(&Op::Start);
    let mut per_minute = Vec::new();
    for _minute in 0..30 {
        let before = h.link.stats().attempts;
        for _ in 0..600 {
            h.step(&Op::Flap);
            h.step(&Op::Advance(1));
        }
        per_minute.push(h.link.stats().attempts - before);
    }
    assert!(h.max_retries_per_minute <= h.retry_bound_per_minute());
    // Once the backoff reached its cap (~120 s), at most one attempt per minute.
    assert!(
        per_minute[20..].iter().all(|&n| n <= 1),
        "attempts per minute: {per_minute:?}"
    );
    // The seed's fixed policy is bounded too: at most one attempt per 2 s.
    let mut h = Harness::new(Profile::Seed, 3);
    h.step(&Op::Start);
    for _ in 0..3000 {
        h.step(&Op::Flap);
        h.step(&Op::Advance(1));
    }
    assert!(
        h.max_retries_per_minute <= 31,
        "{}",
        h.max_retries_per_minute
    );
}

#[test]
fn outbox_order_survives_reconnects() {
    let mut ops = vec![Op::Start];
    for _ in 0..5 {
        ops.extend([Op::Send, Op::Send, Op::Refuse, Op::Send, Op::Advance(30)]);
        ops.extend([Op::Accept, Op::Send, Op::Drop]);
    }
    let h = run(Profile::Grpc, 9, &ops);
    assert_eq!(h.link.stats().messages_sent, 20);
}

#[test]
fn stable_period_resets_backoff() {
    let mut h = Harness::new(Profile::Grpc, 4);
    h.step(&Op::Start);
    for _ in 0..8 {
        h.step(&Op::Refuse);
        h.step(&Op::Advance(2000));
    }
    h.step(&Op::Accept);
    h.step(&Op::Advance(100)); // 10 s up: stable
    h.step(&Op::Drop);
    let State::Backoff { until } = h.link.state() else {
        panic!()
    };
    assert!(until - h.now <= Duration::from_millis(1200));
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => Just(Op::Start),
        1 => Just(Op::Stop),
        2 => any::<u8>().prop_map(Op::Subscribe),
        1 => any::<u8>().prop_map(Op::Unsubscribe),
        4 => Just(Op::Send),
        6 => (0u16..400).prop_map(Op::Advance),
        4 => Just(Op::Accept),
        3 => Just(Op::Refuse),
        3 => Just(Op::Drop),
        2 => Just(Op::Flap),
        1 => any::<u8>().prop_map(Op::Stale),
        1 => Just(Op::Bogus),
        1 => Just(Op::Backwards),
    ]
}

fn profile() -> impl Strategy<Value = Profile> {
    prop_oneof![
        Just(Profile::Seed),
        Just(Profile::Grpc),
        Just(Profile::Tight)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Every invariant is checked by the harness after every step: one attempt in flight at most,
    /// backoff within the model's bounds, no hot loop, alternating subscriber events, outbox
    /// order and nothing lost, state matching the reference model.
    #[test]
    fn state_machine_matches_model(profile in profile(), seed in any::<u64>(),
                                   ops in proptest::collection::vec(op(), 1..200)) {
        let h = run(profile, seed, &ops);
        prop_assert!(h.max_retries_per_minute <= h.retry_bound_per_minute());
    }

    /// Same seed and inputs, same outputs.
    #[test]
    fn deterministic(profile in profile(), seed in any::<u64>(),
                     ops in proptest::collection::vec(op(), 1..100)) {
        let a = run(profile, seed, &ops);
        let b = run(profile, seed, &ops);
        prop_assert_eq!(a.link.state(), b.link.state());
        prop_assert_eq!(a.link.stats(), b.link.stats());
        prop_assert_eq!(a.transitions, b.transitions);
    }
}
