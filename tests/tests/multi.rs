//! The multi engine against its reference model, over a simulated network with seeded latency,
//! refusals, resets, silent peers and slow readers. After every step the model checks: exactly
//! one terminal event per connection, nothing after it, bytes written never exceed bytes queued
//! and arrive in order, every timer fires at its deadline and not before, and after
//! `shutdown_all` drains nothing is left.

use moor_tests::multi::{Behaviour, Harness, Op, harness_config, run};
use proptest::prelude::*;

fn behaviour() -> impl Strategy<Value = Behaviour> {
    prop_oneof![
        1 => Just(Behaviour::Refuse),
        1 => Just(Behaviour::Blackhole),
        3 => Just(Behaviour::Echo),
        1 => Just(Behaviour::Silent),
        2 => (1u8..16, 1u8..40)
            .prop_map(|(chunk, delay_ms)| Behaviour::SlowReader { chunk, delay_ms }),
        1 => (0u8..200).prop_map(|after_ms| Behaviour::ResetAfter { after_ms }),
    ]
}

fn timeout_ms() -> impl Strategy<Value = Option<u16>> {
    prop_oneof![
        2 => Just(None),
        1 => Just(Some(0)),
        3 => (1u16..400).prop_map(Some),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => (behaviour(), timeout_ms(), timeout_ms()).prop_map(|(behaviour, c, i)| {
            Op::Connect { behaviour, connect_timeout_ms: c, input_timeout_ms: i }
        }),
        20 => (any::<u8>(), 0u8..140).prop_map(|(conn, len)| Op::Send { conn, len }),
        3 => any::<u8>().prop_map(|conn| Op::Shutdown { conn }),
        3 => (any::<u8>(), timeout_ms()).prop_map(|(conn, ms)| Op::SetTimeout { conn, ms }),
        3 => any::<u8>().prop_map(|conn| Op::PeerEof { conn }),
        3 => any::<u8>().prop_map(|conn| Op::Reset { conn }),
        16 => (0u16..300).prop_map(|ms| Op::Advance { ms }),
        1 => Just(Op::ShutdownAll),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn the_engine_matches_its_model(
        seed in any::<u64>(),
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        let _ = run(harness_config(), seed, &ops);
    }

    #[test]
    fn the_same_seed_and_ops_give_the_same_trace(
        seed in any::<u64>(),
        ops in proptest::collection::vec(op(), 1..40),
    ) {
        prop_assert_eq!(run(harness_config(), seed, &ops), run(harness_config(), seed, &ops));
    }
}

#[test]
fn a_busy_mix_reaches_every_terminal_event() {
    let mut h = Harness::new(harness_config(), 11);
    let behaviours = [
        Behaviour::Refuse,
        Behaviour::Blackhole,
        Behaviour::Echo,
        Behaviour::Silent,
        Behaviour::SlowReader {
            chunk: 2,
            delay_ms: 3,
        },
        Behaviour::ResetAfter { after_ms: 50 },
    ];
    for b in behaviours {
        h.step(&Op::Connect {
            behaviour: b,
            connect_timeout_ms: None,
            input_timeout_ms: Some(1000),
        });
    }
    for i in 0..6u8 {
        h.step(&Op::Send { conn: i, len: 20 });
    }
    h.step(&Op::Advance { ms: 30 });
    h.step(&Op::Shutdown { conn: 4 }); // the slow reader flushes, then disconnects
    h.step(&Op::Advance { ms: 2000 });
    h.finish();
    let s = h.engine.stats();
    assert_eq!(s.connects, 6);
    assert!(s.connect_failures >= 1, "{s:?}"); // refused
    assert!(s.timeouts >= 2, "{s:?}"); // blackhole connect, silent input
    assert!(s.errors >= 1, "{s:?}"); // reset
    assert!(s.disconnects >= 1, "{s:?}"); // slow reader, echo at shutdown_all
    assert!(s.frames_in >= 1, "{s:?}"); // the echo
    let ended: Vec<&str> = h.model.ended.values().copied().collect();
    assert_eq!(ended.len(), 6);
}
