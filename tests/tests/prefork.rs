//! Scenario tests of the seed's behaviours and proptest state-machine tests of the prefork
//! supervisor against the reference model in `moor_tests::prefork`.

use moor_core::prefork::{Phase, PreforkConfig};
use moor_tests::prefork::{Harness, Op, Profile, run};
use proptest::prelude::*;

#[test]
fn seed_start_min_and_max_spare() {
    let mut h = Harness::new(Profile::Healthy, 0);
    h.step(&Op::Start);
    assert_eq!(h.sup.stats().pending, 5, "seed: start 5");
    h.step(&Op::Answer);
    assert_eq!(h.sup.stats().idle, 5);
    // All five go busy: min spare 1 → spawns at the next maintenance.
    for i in 0..5 {
        h.step(&Op::Busy(i));
    }
    let before = h.sup.stats().spawned;
    h.step(&Op::Advance(20));
    assert_eq!(
        h.sup.stats().spawned,
        before + 1,
        "short of spares: one spawn"
    );
    // All free again: 6 idle, within max spare 10: nothing is stopped.
    for i in 0..5 {
        h.step(&Op::Free(i));
    }
    h.step(&Op::Answer);
    h.step(&Op::Advance(20));
    assert_eq!(h.sup.stats().idle, 6);
    assert_eq!(h.sup.stats().stopping, 0);
    h.finish();
}

#[test]
fn seed_timeout_replacement_with_hung_workers() {
    let mut h = Harness::new(Profile::Watched, 1);
    h.step(&Op::Start);
    h.step(&Op::Answer);
    h.step(&Op::Hang(0));
    h.step(&Op::Hang(0));
    let spawned = h.sup.stats().spawned;
    h.step(&Op::Advance(200)); // 10 s
    h.step(&Op::Answer);
    assert!(h.timeouts >= 2, "hung workers were timed out");
    assert!(h.sup.stats().spawned > spawned, "and replaced");
    h.finish();
}

#[test]
fn crash_loop_at_boot_is_detected_without_a_hot_fork_loop() {
    // Every worker crashes at boot: spawning must pause, not loop.
    let config = PreforkConfig {
        crash_loop_threshold: 3,
        ..PreforkConfig::default()
    };
    let mut sup = moor_core::prefork::Prefork::new(config, 3).unwrap();
    let mut now = moor_core::Instant::ZERO;
    sup.handle_start(now).unwrap();
    let mut spawns = 0u32;
    for _ in 0..600 {
        while let Some(out) = sup.poll_output() {
            if let moor_core::prefork::Output::Spawn(w) = out {
                spawns += 1;
                sup.handle_spawned(now, w).unwrap();
                sup.handle_exited(now, w, moor_core::prefork::ExitStatus::Code(1))
                    .unwrap();
            }
        }
        now = sup.poll_timeout().unwrap();
        sup.handle_timeout(now);
    }
    let minutes = now.since_origin().as_secs_f64() / 60.0;
    assert!(sup.stats().crash_loops >= 3);
    // Without the pause this would be ≥ 1 spawn per second; the backoff caps it far lower.
    assert!(
        f64::from(spawns) / minutes < 30.0,
        "{spawns} spawns in {minutes:.1} min"
    );
}

#[test]
fn hard_shutdown_kills_at_once() {
    let h = run(
        Profile::Watched,
        5,
        &[Op::Start, Op::Answer, Op::Hang(1), Op::Shutdown(false)],
    );
    assert_eq!(h.sup.phase(), Phase::Exited);
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => Just(Op::Start),
        6 => Just(Op::Answer),
        4 => any::<u8>().prop_map(Op::Busy),
        2 => any::<u8>().prop_map(Op::Free),
        3 => any::<u8>().prop_map(Op::Done),
        1 => any::<u8>().prop_map(Op::Hang),
        1 => any::<u8>().prop_map(Op::Crash),
        1 => any::<u8>().prop_map(Op::Quit),
        6 => (0u16..200).prop_map(Op::Advance),
        1 => Just(Op::Reload),
        1 => (0u8..20).prop_map(|n| Op::Shutdown(n % 2 == 0)).prop_filter("rare", |_| true),
        1 => any::<u8>().prop_map(Op::Misuse),
    ]
}

fn profile() -> impl Strategy<Value = Profile> {
    prop_oneof![
        Just(Profile::Seed),
        Just(Profile::Healthy),
        Just(Profile::Watched),
        Just(Profile::Tiny)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The harness checks after every step: counts match the model and stay within bounds,
    /// spawns per interval within the cap, timeouts at their deadline, kill only after grace,
    /// spare targets restored within an interval; and at the end every spawn was answered and
    /// every worker exited exactly once, then one AllExited.
    #[test]
    fn state_machine_matches_model(profile in profile(), seed in any::<u64>(),
                                   ops in proptest::collection::vec(op(), 1..150)) {
        let mut ops = ops;
        ops.insert(0, Op::Start);
        let h = run(profile, seed, &ops);
        prop_assert!(h.max_spawns_per_interval <= profile.config().spawn_rate_max as usize);
    }

    /// Same seed and inputs, same outcome.
    #[test]
    fn deterministic(profile in profile(), seed in any::<u64>(),
                     ops in proptest::collection::vec(op(), 1..80)) {
        let a = run(profile, seed, &ops);
        let b = run(profile, seed, &ops);
        prop_assert_eq!(a.sup.stats(), b.sup.stats());
        prop_assert_eq!(a.now, b.now);
    }
}

#[test]
fn seed_oldest_idle_is_stopped_first_when_over_max_spare() {
    use moor_core::prefork::{Output, Prefork, Report, Signal};
    use moor_core::{Duration, Instant};
    let config = PreforkConfig {
        start_workers: 6,
        min_spare: 1,
        max_spare: 3,
        ..PreforkConfig::default()
    };
    let mut p = Prefork::new(config, 0).unwrap();
    p.handle_start(Instant::ZERO).unwrap();
    let ids: Vec<_> = std::iter::from_fn(|| p.poll_output())
        .filter_map(|o| match o {
            Output::Spawn(w) => Some(w),
            _ => None,
        })
        .collect();
    let t = |ms| Instant::ZERO + Duration::from_millis(ms);
    for &w in &ids {
        p.handle_spawned(t(1), w).unwrap();
        p.handle_report(t(1), w, Report::Ready).unwrap();
    }
    for &w in &ids {
        p.handle_report(t(2), w, Report::Busy).unwrap();
    }
    // Free again in a scrambled order.
    let order = [3usize, 0, 5, 1, 4, 2];
    for (k, &i) in order.iter().enumerate() {
        p.handle_report(t(10 + k as u64), ids[i], Report::Idle)
            .unwrap();
    }
    while p.poll_output().is_some() {}
    p.handle_timeout(t(1000));
    let stopped: Vec<_> = std::iter::from_fn(|| p.poll_output())
        .filter_map(|o| match o {
            Output::Signal(w, Signal::Stop) => Some(w),
            _ => None,
        })
        .collect();
    assert_eq!(stopped, [ids[3], ids[0], ids[5]], "longest idle first");
}
