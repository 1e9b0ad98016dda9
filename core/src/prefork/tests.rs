//! Unit tests, one per behaviour, with a tiny harness that steps simulated time.

use alloc::vec::Vec;
use core::time::Duration;

use super::*;

fn ms(n: u64) -> Instant {
    Instant::from_millis(n)
}

fn drain(p: &mut Prefork) -> Vec<Output> {
    core::iter::from_fn(|| p.poll_output()).collect()
}

fn spawns(outs: &[Output]) -> Vec<WorkerId> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Spawn(w) => Some(*w),
            _ => None,
        })
        .collect()
}

fn signals(outs: &[Output]) -> Vec<(WorkerId, Signal)> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Signal(w, s) => Some((*w, *s)),
            _ => None,
        })
        .collect()
}

/// Confirms and readies every worker in `ids` at `now`.
fn boot(p: &mut Prefork, now: Instant, ids: &[WorkerId]) {
    for &w in ids {
        p.handle_spawned(now, w).unwrap();
        p.handle_report(now, w, Report::Ready).unwrap();
    }
}

/// A started supervisor whose first workers are all ready at t = 0.
fn running(config: PreforkConfig) -> (Prefork, Vec<WorkerId>) {
    let mut p = Prefork::new(config, 1).unwrap();
    p.handle_start(ms(0)).unwrap();
    let ids = spawns(&drain(&mut p));
    boot(&mut p, ms(0), &ids);
    drain(&mut p);
    (p, ids)
}

#[test]
fn seed_start_spawns_start_workers() {
    let (p, ids) = running(PreforkConfig::default());
    assert_eq!(ids.len(), 5);
    let s = p.stats();
    assert_eq!((s.live, s.idle, s.pending, s.busy), (5, 5, 0, 0));
    assert_eq!(p.phase(), Phase::Running);
    assert_eq!(p.poll_timeout(), Some(ms(1000)));
}

#[test]
fn seed_min_spare_spawns_when_all_busy_with_doubling_rate() {
    let config = PreforkConfig {
        start_workers: 1,
        min_spare: 8,
        max_spare: 20,
        ..PreforkConfig::default()
    };
    let mut p = Prefork::new(config, 1).unwrap();
    p.handle_start(ms(0)).unwrap();
    // Start worker plus a rate of 1 for the deficit.
    let first = spawns(&drain(&mut p));
    assert_eq!(first.len(), 2);
    let mut per_tick = Vec::new();
    let mut all = first.clone();
    boot(&mut p, ms(0), &first);
    for &w in &first {
        p.handle_report(ms(0), w, Report::Busy).unwrap();
    }
    for t in 1..=4u64 {
        p.handle_timeout(ms(t * 1000));
        let new = spawns(&drain(&mut p));
        per_tick.push(new.len());
        boot(&mut p, ms(t * 1000), &new);
        for &w in &new {
            p.handle_report(ms(t * 1000), w, Report::Busy).unwrap();
        }
        all.extend(new);
    }
    assert_eq!(
        per_tick,
        [2, 4, 8, 8],
        "rate doubles while short, bounded by the deficit"
    );
    assert_eq!(
        p.spawn_rate(),
        8,
        "the last tick covered the deficit: no doubling"
    );
}

#[test]
fn seed_max_spare_stops_the_longest_idle_first() {
    let config = PreforkConfig {
        start_workers: 5,
        min_spare: 0,
        max_spare: 3,
        ..PreforkConfig::default()
    };
    let (mut p, ids) = running(config);
    // Make them busy, then idle again in a known order: ids[4] idle longest, ids[0] newest.
    for &w in &ids {
        p.handle_report(ms(10), w, Report::Busy).unwrap();
    }
    for (i, &w) in ids.iter().rev().enumerate() {
        p.handle_report(ms(100 + i as u64), w, Report::Idle)
            .unwrap();
    }
    assert_eq!(p.oldest_idle(), Some(ids[4]));
    p.handle_timeout(ms(1000));
    let outs = drain(&mut p);
    assert_eq!(
        signals(&outs),
        [(ids[4], Signal::Stop), (ids[3], Signal::Stop)]
    );
    assert!(outs.contains(&Output::WorkerStopping {
        worker: ids[4],
        reason: StopReason::ExcessIdle
    }));
    let s = p.stats();
    assert_eq!((s.idle, s.stopping), (3, 2));
}

#[test]
fn seed_silent_worker_is_timed_out_killed_after_grace_and_replaced() {
    let config = PreforkConfig {
        start_workers: 2,
        min_spare: 2,
        max_spare: 5,
        ack_timeout: Some(Duration::from_secs(5)),
        ..PreforkConfig::default()
    };
    let (mut p, ids) = running(config);
    // ids[0] keeps reporting, ids[1] goes silent.
    for t in 1..=5u64 {
        p.handle_report(ms(t * 1000 - 1), ids[0], Report::Heartbeat)
            .unwrap();
        p.handle_timeout(ms(t * 1000 - 1));
        drain(&mut p);
    }
    p.handle_timeout(ms(5000));
    let outs = drain(&mut p);
    assert!(outs.contains(&Output::WorkerTimedOut {
        worker: ids[1],
        kind: TimeoutKind::Ack
    }));
    assert_eq!(signals(&outs), [(ids[1], Signal::Stop)]);
    // Stopping: neither idle nor capacity, so the next maintenance replaces it.
    assert_eq!(p.stats().idle, 1);
    p.handle_timeout(ms(6000));
    let outs = drain(&mut p);
    assert_eq!(spawns(&outs).len(), 1);
    // Killed exactly at the end of the grace period, not before.
    for t in 13..30u64 {
        p.handle_report(ms(t * 500), ids[0], Report::Heartbeat)
            .unwrap();
        p.handle_timeout(ms(t * 500));
        assert!(signals(&drain(&mut p)).is_empty(), "at {t}");
    }
    p.handle_timeout(ms(14_999));
    assert!(signals(&drain(&mut p)).is_empty());
    p.handle_timeout(ms(15_000));
    assert_eq!(signals(&drain(&mut p)), [(ids[1], Signal::Kill)]);
    assert_eq!(p.worker_state(ids[1]), Some(WorkerState::Killed));
    assert_eq!(
        p.worker_state(ids[0]),
        Some(WorkerState::Idle { since: ms(0) })
    );
    p.handle_exited(ms(15_001), ids[1], ExitStatus::Signal(9))
        .unwrap();
    assert!(drain(&mut p).contains(&Output::WorkerExited {
        worker: ids[1],
        status: ExitStatus::Signal(9),
        expected: true
    }));
    assert_eq!(p.stats().crashes, 0, "an exit we asked for is no crash");
}

#[test]
fn boot_timeout_stops_a_worker_that_never_reports_ready() {
    let config = PreforkConfig {
        start_workers: 1,
        boot_timeout: Duration::from_secs(3),
        ..PreforkConfig::default()
    };
    let mut p = Prefork::new(config, 1).unwrap();
    p.handle_start(ms(0)).unwrap();
    let w = spawns(&drain(&mut p))[0];
    p.handle_spawned(ms(10), w).unwrap();
    p.handle_report(ms(2000), w, Report::Heartbeat).unwrap();
    p.handle_timeout(ms(2999));
    assert!(
        !drain(&mut p)
            .iter()
            .any(|o| matches!(o, Output::WorkerTimedOut { .. }))
    );
    p.handle_timeout(ms(3000));
    let outs = drain(&mut p);
    assert!(outs.contains(&Output::WorkerTimedOut {
        worker: w,
        kind: TimeoutKind::Boot
    }));
    assert!(signals(&outs).contains(&(w, Signal::Stop)));
}

#[test]
fn never_past_max_workers_even_with_stopping_ones() {
    let config = PreforkConfig {
        start_workers: 3,
        min_spare: 2,
        max_spare: 3,
        max_workers: 3,
        ..PreforkConfig::default()
    };
    let (mut p, ids) = running(config);
    for &w in &ids {
        p.handle_report(ms(1), w, Report::Busy).unwrap();
    }
    for t in 1..5u64 {
        p.handle_timeout(ms(t * 1000));
        assert!(spawns(&drain(&mut p)).is_empty());
        assert!(p.stats().live <= 3);
    }
}

#[test]
fn crash_loop_pauses_spawning_then_resumes() {
    let config = PreforkConfig {
        start_workers: 0,
        min_spare: 1,
        max_spare: 2,
        crash_loop_threshold: 3,
        crash_loop_window: Duration::from_secs(10),
        ..PreforkConfig::default()
    };
    let mut p = Prefork::new(config, 1).unwrap();
    p.handle_start(ms(0)).unwrap();
    let mut now = 0;
    let mut detected = None;
    for _ in 0..5 {
        let outs = drain(&mut p);
        if let Some(o) = outs
            .iter()
            .find(|o| matches!(o, Output::CrashLoopDetected { .. }))
        {
            detected = Some(o.clone());
            break;
        }
        for w in spawns(&outs) {
            p.handle_spawned(ms(now), w).unwrap();
            p.handle_exited(ms(now), w, ExitStatus::Code(1)).unwrap();
        }
        if p.respawn_after().is_some() {
            continue;
        }
        now += 1000;
        p.handle_timeout(ms(now));
    }
    let Some(Output::CrashLoopDetected {
        exits,
        respawn_after,
        ..
    }) = detected.or_else(|| {
        drain(&mut p)
            .into_iter()
            .find(|o| matches!(o, Output::CrashLoopDetected { .. }))
    })
    else {
        panic!("no crash loop detected");
    };
    assert_eq!(exits, 3);
    assert_eq!(p.stats().crash_loops, 1);
    let pause = respawn_after - ms(now);
    assert!(pause >= Duration::from_millis(800) && pause <= Duration::from_millis(1200));
    // No spawn while paused.
    let mut t = now;
    while ms(t) < respawn_after {
        t += 100;
        if ms(t) >= respawn_after {
            break;
        }
        p.handle_timeout(ms(t));
        assert!(
            spawns(&drain(&mut p)).is_empty(),
            "spawned during the pause"
        );
    }
    // Resumes at the first maintenance after the pause.
    p.handle_timeout(respawn_after + Duration::from_secs(1));
    assert_eq!(spawns(&drain(&mut p)).len(), 1);
}

#[test]
fn exit_before_ready_counts_as_crash_but_requested_exit_does_not() {
    let (mut p, ids) = running(PreforkConfig {
        start_workers: 2,
        ..PreforkConfig::default()
    });
    p.handle_exited(ms(5), ids[0], ExitStatus::Clean).unwrap();
    assert_eq!(
        p.stats().crashes,
        0,
        "a ready worker exiting cleanly is fine"
    );
    p.handle_exited(ms(6), ids[1], ExitStatus::Code(3)).unwrap();
    assert_eq!(p.stats().crashes, 1);
    p.handle_timeout(ms(1000));
    let w = spawns(&drain(&mut p))[0];
    p.handle_spawned(ms(1000), w).unwrap();
    p.handle_exited(ms(1001), w, ExitStatus::Clean).unwrap();
    assert_eq!(p.stats().crashes, 2, "exiting before ready is a crash");
}

#[test]
fn max_requests_recycles_with_jitter() {
    let config = PreforkConfig {
        start_workers: 1,
        max_requests: Some(3),
        max_requests_jitter: 2,
        ..PreforkConfig::default()
    };
    let (mut p, ids) = running(config);
    let w = ids[0];
    let mut served = 0;
    while p.worker_state(w)
        != Some(WorkerState::Stopping {
            kill_at: ms(10_000 + served),
        })
        && served < 10
    {
        served += 1;
        p.handle_report(ms(served), w, Report::Busy).unwrap();
        p.handle_report(ms(served), w, Report::RequestDone).unwrap();
    }
    assert!((3..=5).contains(&served), "recycled after {served}");
    assert!(drain(&mut p).contains(&Output::WorkerStopping {
        worker: w,
        reason: StopReason::MaxRequests
    }));
    assert_eq!(p.stats().recycled, 1);
}

#[test]
fn graceful_shutdown_stops_all_kills_after_grace_one_all_exited() {
    let (mut p, ids) = running(PreforkConfig::default());
    p.handle_timeout(ms(1000));
    let pending = spawns(&drain(&mut p));
    assert!(pending.is_empty());
    p.handle_shutdown(ms(2000), true).unwrap();
    let outs = drain(&mut p);
    assert_eq!(signals(&outs).len(), 5);
    assert!(signals(&outs).iter().all(|&(_, s)| s == Signal::Stop));
    // ids[0] exits politely; the rest ignore the stop and are killed at 12 s.
    p.handle_exited(ms(3000), ids[0], ExitStatus::Clean)
        .unwrap();
    p.handle_timeout(ms(11_999));
    assert!(signals(&drain(&mut p)).is_empty());
    p.handle_timeout(ms(12_000));
    let kills = signals(&drain(&mut p));
    assert_eq!(kills.len(), 4);
    assert!(kills.iter().all(|&(_, s)| s == Signal::Kill));
    for &w in &ids[1..] {
        p.handle_exited(ms(12_001), w, ExitStatus::Signal(9))
            .unwrap();
    }
    let outs = drain(&mut p);
    assert_eq!(outs.iter().filter(|o| **o == Output::AllExited).count(), 1);
    assert_eq!(p.phase(), Phase::Exited);
    assert_eq!(p.poll_timeout(), None);
    assert_eq!(p.stats().crashes, 0);
    p.handle_shutdown(ms(13_000), false).unwrap();
    assert!(drain(&mut p).is_empty());
}

#[test]
fn hard_shutdown_kills_now_and_a_pending_spawn_once_spawned() {
    let mut p = Prefork::new(PreforkConfig::default(), 1).unwrap();
    p.handle_start(ms(0)).unwrap();
    let ids = spawns(&drain(&mut p));
    boot(&mut p, ms(0), &ids[..4]);
    drain(&mut p);
    p.handle_shutdown(ms(1), false).unwrap();
    let outs = drain(&mut p);
    assert_eq!(signals(&outs).len(), 4);
    assert!(signals(&outs).iter().all(|&(_, s)| s == Signal::Kill));
    // The fifth's spawn completes now: it is killed at once and never counted idle.
    p.handle_spawned(ms(2), ids[4]).unwrap();
    assert_eq!(signals(&drain(&mut p)), [(ids[4], Signal::Kill)]);
    for &w in &ids {
        p.handle_exited(ms(3), w, ExitStatus::Signal(9)).unwrap();
    }
    assert_eq!(drain(&mut p).last(), Some(&Output::AllExited));
    // Shutdown before start: all exited at once.
    let mut q = Prefork::new(PreforkConfig::default(), 1).unwrap();
    q.handle_shutdown(ms(0), true).unwrap();
    assert_eq!(drain(&mut q), [Output::AllExited]);
    assert_eq!(q.handle_start(ms(0)), Err(UsageError::ShutDown));
}

#[test]
fn reload_replaces_every_worker() {
    let (mut p, ids) = running(PreforkConfig::default());
    p.handle_reload(ms(500)).unwrap();
    let outs = drain(&mut p);
    assert_eq!(signals(&outs).len(), 5);
    assert_eq!(p.stats().idle, 0);
    p.handle_timeout(ms(1000));
    let fresh = spawns(&drain(&mut p));
    assert_eq!(fresh.len(), 5);
    assert!(fresh.iter().all(|w| !ids.contains(w)));
}

#[test]
fn misuse_is_refused_with_state_unchanged() {
    let (mut p, ids) = running(PreforkConfig::default());
    let before = p.stats();
    let ghost = WorkerId::from_raw(999);
    assert_eq!(
        p.handle_report(ms(1), ghost, Report::Busy),
        Err(UsageError::UnknownWorker(ghost))
    );
    assert!(matches!(
        p.handle_spawned(ms(1), ids[0]),
        Err(UsageError::WrongState { .. })
    ));
    p.handle_exited(ms(2), ids[0], ExitStatus::Clean).unwrap();
    assert_eq!(
        p.handle_exited(ms(3), ids[0], ExitStatus::Clean),
        Err(UsageError::UnknownWorker(ids[0]))
    );
    assert!(matches!(
        p.handle_report(ms(1), ids[1], Report::Busy),
        Err(UsageError::TimeWentBackwards { .. })
    ));
    assert!(matches!(
        p.handle_start(ms(5)),
        Err(UsageError::WrongState { .. })
    ));
    assert_eq!(p.stats().live, before.live - 1);
    // A report before ready is refused.
    p.handle_timeout(ms(1000));
    let w = spawns(&drain(&mut p));
    assert!(w.is_empty(), "4 idle workers cover min_spare");
    p.handle_timeout(ms(500)); // earlier: no-op
}

#[test]
fn report_before_ready_and_exit_before_spawn_confirmed_are_refused() {
    let mut p = Prefork::new(PreforkConfig::default(), 1).unwrap();
    p.handle_start(ms(0)).unwrap();
    let ids = spawns(&drain(&mut p));
    assert!(matches!(
        p.handle_report(ms(0), ids[0], Report::Ready),
        Err(UsageError::WrongState { .. })
    ));
    assert!(matches!(
        p.handle_exited(ms(0), ids[0], ExitStatus::Clean),
        Err(UsageError::WrongState { .. })
    ));
    p.handle_spawned(ms(0), ids[0]).unwrap();
    assert!(matches!(
        p.handle_report(ms(0), ids[0], Report::Busy),
        Err(UsageError::WrongState { .. })
    ));
    assert_eq!(p.worker_state(ids[0]), Some(WorkerState::Booting));
}

#[test]
fn heartbeats_keep_a_worker_alive_for_a_long_time() {
    let config = PreforkConfig {
        start_workers: 1,
        ack_timeout: Some(Duration::from_secs(2)),
        ..PreforkConfig::default()
    };
    let (mut p, ids) = running(config);
    for t in 1..=1000u64 {
        p.handle_report(ms(t * 1000), ids[0], Report::Heartbeat)
            .unwrap();
        p.handle_timeout(ms(t * 1000));
    }
    assert_eq!(p.stats().timeouts, 0);
    assert!(
        p.timers.len() <= 2,
        "lazy re-arm keeps one entry per worker"
    );
}

#[test]
fn invalid_config_is_a_config_error() {
    let d = PreforkConfig::default;
    let bad = [
        PreforkConfig {
            max_spare: 1,
            ..d()
        },
        PreforkConfig {
            min_spare: 5,
            max_spare: 4,
            ..d()
        },
        PreforkConfig {
            start_workers: 51,
            ..d()
        },
        PreforkConfig {
            max_workers: 0,
            ..d()
        },
        PreforkConfig {
            min_spare: 60,
            max_spare: 70,
            ..d()
        },
        PreforkConfig {
            ack_timeout: Some(Duration::ZERO),
            ..d()
        },
        PreforkConfig {
            maintenance_interval: Duration::ZERO,
            ..d()
        },
        PreforkConfig {
            spawn_rate_max: 0,
            ..d()
        },
        PreforkConfig {
            max_requests: Some(0),
            ..d()
        },
        PreforkConfig {
            stop_grace: Duration::ZERO,
            ..d()
        },
        PreforkConfig {
            crash_loop_threshold: 0,
            ..d()
        },
    ];
    for c in bad {
        assert!(Prefork::new(c.clone(), 0).is_err(), "{c:?}");
    }
    assert!(Prefork::new(d(), 0).is_ok());
}

#[test]
fn same_seed_same_trace() {
    let run = || {
        let config = PreforkConfig {
            max_requests: Some(2),
            max_requests_jitter: 5,
            ..PreforkConfig::default()
        };
        let (mut p, ids) = running(config);
        let mut trace = Vec::new();
        for i in 0..20u64 {
            for &w in &ids {
                if p.worker_state(w)
                    .is_some_and(|s| matches!(s, WorkerState::Idle { .. }))
                {
                    p.handle_report(ms(i), w, Report::Busy).unwrap();
                    p.handle_report(ms(i), w, Report::RequestDone).unwrap();
                }
            }
            trace.extend(drain(&mut p));
        }
        trace
    };
    assert_eq!(run(), run());
}

#[test]
fn respawn_pause_grows_while_crash_loops_continue() {
    let config = PreforkConfig {
        start_workers: 0,
        crash_loop_threshold: 2,
        ..PreforkConfig::default()
    };
    let mut p = Prefork::new(config, 4).unwrap();
    p.handle_start(ms(0)).unwrap();
    let mut pauses = Vec::new();
    let mut now = ms(0);
    for _ in 0..200 {
        for o in drain(&mut p) {
            match o {
                Output::Spawn(w) => {
                    p.handle_spawned(now, w).unwrap();
                    p.handle_exited(now, w, ExitStatus::Code(1)).unwrap();
                }
                Output::CrashLoopDetected { respawn_after, .. } => {
                    pauses.push(respawn_after - now);
                }
                _ => {}
            }
        }
        now = p.poll_timeout().unwrap();
        p.handle_timeout(now);
    }
    assert!(pauses.len() >= 4, "{pauses:?}");
    for pair in pauses.windows(2).take(4) {
        assert!(pair[1] > pair[0], "pauses must grow: {pauses:?}");
    }
}

#[test]
fn a_recorded_input_log_replays_exactly() {
    // Record a run: every input with its time, and what each gave back.
    let mut p = Prefork::new(PreforkConfig::default(), 5).unwrap();
    let mut log = Vec::new();
    let mut trace = Vec::new();
    let mut apply = |p: &mut Prefork, now, input| {
        log.push((now, input));
        let ok = p.handle(now, input).is_ok();
        trace.push((ok, drain(p)));
        trace.last().unwrap().1.clone()
    };
    let ids = spawns(&apply(&mut p, ms(0), Input::Start));
    for &id in &ids {
        apply(&mut p, ms(1), Input::Spawned(id));
    }
    for &id in &ids {
        apply(&mut p, ms(2), Input::Report(id, Report::Ready));
    }
    apply(&mut p, ms(3), Input::Exited(ids[0], ExitStatus::Code(2)));
    let fresh = spawns(&apply(&mut p, ms(1000), Input::Timeout));
    assert_eq!(fresh.len(), 0, "four idle workers cover min_spare");
    apply(
        &mut p,
        ms(1001),
        Input::Report(WorkerId::from_raw(999), Report::Busy),
    );
    apply(&mut p, ms(1002), Input::Shutdown { graceful: false });
    for &id in &ids[1..] {
        apply(&mut p, ms(1003), Input::Exited(id, ExitStatus::Signal(9)));
    }
    assert_eq!(
        trace.last().unwrap().1.last(),
        Some(&Output::AllExited),
        "{trace:?}"
    );
    assert!(!trace[13].0, "the unknown worker's report was refused");
    // Replaying the log on a fresh supervisor with the same seed gives the same trace.
    let mut q = Prefork::new(PreforkConfig::default(), 5).unwrap();
    let again: Vec<(bool, Vec<Output>)> = log
        .iter()
        .map(|&(now, input)| (q.handle(now, input).is_ok(), drain(&mut q)))
        .collect();
    assert_eq!(trace, again);
}
