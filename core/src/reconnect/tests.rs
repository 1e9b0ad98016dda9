//! Unit tests, one per behaviour, with a tiny step-the-clock harness.

use alloc::vec::Vec;
use core::time::Duration;

use super::*;

fn secs(s: u64) -> Instant {
    Instant::from_secs(s)
}

fn drain(link: &mut Reconnect<u32>) -> Vec<Output<u32>> {
    core::iter::from_fn(|| link.poll_output()).collect()
}

fn connect_of(outs: &[Output<u32>]) -> AttemptId {
    outs.iter()
        .find_map(|o| match o {
            Output::Connect { attempt } => Some(*attempt),
            _ => None,
        })
        .expect("a Connect action")
}

fn seed_link() -> Reconnect<u32> {
    Reconnect::new(ReconnectConfig::seed(), 1).unwrap()
}

/// A seed-config link that is connected at t = 0.
fn connected_link() -> (Reconnect<u32>, AttemptId) {
    let mut link = seed_link();
    link.handle_start(secs(0)).unwrap();
    let a = connect_of(&drain(&mut link));
    assert_eq!(link.handle_connected(secs(0), a), Ok(Applied::Yes));
    drain(&mut link);
    (link, a)
}

#[test]
fn start_connects_and_every_change_is_an_event() {
    let mut link = seed_link();
    assert_eq!(link.state(), State::Idle);
    link.handle_start(secs(1)).unwrap();
    let outs = drain(&mut link);
    let a = connect_of(&outs);
    assert_eq!(
        outs[0],
        Output::StateChanged {
            from: State::Idle,
            to: State::Connecting {
                attempt: a,
                number: 1,
                deadline: secs(31)
            },
            reason: Reason::Started
        }
    );
    assert_eq!(link.poll_timeout(), Some(secs(31)));
    link.handle_connected(secs(2), a).unwrap();
    assert_eq!(
        link.state(),
        State::Connected {
            attempt: a,
            since: secs(2)
        }
    );
    assert!(matches!(
        drain(&mut link)[0],
        Output::StateChanged {
            reason: Reason::ConnectSucceeded,
            ..
        }
    ));
    assert_eq!(link.poll_timeout(), None);
}

#[test]
fn seed_subscribe_while_connected_gets_connected_at_once() {
    let (mut link, a) = connected_link();
    link.handle_subscribe(secs(1), Token(7)).unwrap();
    assert_eq!(
        drain(&mut link),
        [Output::Connected {
            subscriber: Token(7),
            attempt: a
        }]
    );
}

#[test]
fn seed_subscribers_told_on_connect_and_disconnect() {
    let mut link = seed_link();
    link.handle_subscribe(secs(0), Token(1)).unwrap();
    assert!(drain(&mut link).is_empty(), "not connected: nothing yet");
    link.handle_start(secs(0)).unwrap();
    let a = connect_of(&drain(&mut link));
    link.handle_connected(secs(1), a).unwrap();
    assert!(drain(&mut link).contains(&Output::Connected {
        subscriber: Token(1),
        attempt: a
    }));
    link.handle_disconnected(secs(2), a, Cause::Reset).unwrap();
    assert!(drain(&mut link).contains(&Output::Disconnected {
        subscriber: Token(1)
    }));
}

#[test]
fn disconnected_only_to_subscribers_told_connected() {
    let mut link = seed_link();
    link.handle_start(secs(0)).unwrap();
    let a = connect_of(&drain(&mut link));
    // Subscribed while connecting, then unsubscribed: must get nothing.
    link.handle_subscribe(secs(0), Token(1)).unwrap();
    link.handle_connected(secs(0), a).unwrap();
    link.handle_unsubscribe(secs(0), Token(1)).unwrap();
    drain(&mut link);
    link.handle_disconnected(secs(1), a, Cause::Closed).unwrap();
    let outs = drain(&mut link);
    assert!(
        !outs
            .iter()
            .any(|o| matches!(o, Output::Disconnected { .. }))
    );
    // A subscriber that joins during backoff is not told Disconnected either.
    link.handle_subscribe(secs(1), Token(2)).unwrap();
    link.handle_stop(secs(1)).unwrap();
    assert!(
        !drain(&mut link)
            .iter()
            .any(|o| matches!(o, Output::Disconnected { .. }))
    );
    assert_eq!(
        link.handle_unsubscribe(secs(1), Token(9)),
        Err(UsageError::UnknownToken(Token(9)))
    );
    assert_eq!(
        link.handle_subscribe(secs(1), Token(2)),
        Err(UsageError::DuplicateToken(Token(2)))
    );
}

#[test]
fn seed_reconnect_after_connect_timeout() {
    let mut link = seed_link();
    link.handle_start(secs(0)).unwrap();
    let a = connect_of(&drain(&mut link));
    link.handle_timeout(secs(29));
    assert!(drain(&mut link).is_empty());
    link.handle_timeout(secs(30));
    let outs = drain(&mut link);
    assert_eq!(outs[0], Output::Close { attempt: a });
    assert_eq!(link.state(), State::Backoff { until: secs(32) });
    link.handle_timeout(secs(32));
    let b = connect_of(&drain(&mut link));
    assert_ne!(a, b);
    assert_eq!(link.stats().connect_timeouts, 1);
}

#[test]
fn seed_reconnect_after_disconnect_waits_reconnect_after() {
    let (mut link, a) = connected_link();
    link.handle_disconnected(secs(100), a, Cause::Reset)
        .unwrap();
    assert_eq!(link.state(), State::Backoff { until: secs(102) });
    link.handle_timeout(secs(101));
    assert!(
        drain(&mut link)
            .iter()
            .all(|o| !matches!(o, Output::Connect { .. }))
    );
    link.handle_timeout(secs(102));
    assert!(matches!(link.state(), State::Connecting { .. }));
}

#[test]
fn late_result_of_abandoned_attempt_changes_nothing() {
    let mut link = seed_link();
    link.handle_start(secs(0)).unwrap();
    let a = connect_of(&drain(&mut link));
    link.handle_timeout(secs(30));
    link.handle_timeout(secs(32));
    let b = connect_of(&drain(&mut link));
    let before = link.state();
    assert_eq!(link.handle_connected(secs(33), a), Ok(Applied::Stale));
    assert_eq!(
        link.handle_connect_failed(secs(33), a, Cause::Refused),
        Ok(Applied::Stale)
    );
    assert_eq!(
        link.handle_disconnected(secs(33), a, Cause::Reset),
        Ok(Applied::Stale)
    );
    assert_eq!(link.state(), before);
    assert!(drain(&mut link).is_empty());
    assert_eq!(link.stats().stale_reports, 3);
    // An id never issued is an error, and so is time going backwards.
    let never = AttemptId::from_raw(b.to_raw() + 1);
    assert!(matches!(
        link.handle_connected(secs(33), never),
        Err(UsageError::InvalidArgument { .. })
    ));
    assert!(matches!(
        link.handle_connected(secs(1), b),
        Err(UsageError::TimeWentBackwards { .. })
    ));
    assert_eq!(link.state(), before);
}

#[test]
fn exponential_backoff_grows_and_connect_timeout_is_grpc_minimum() {
    let mut link: Reconnect<u32> = Reconnect::new(ReconnectConfig::default(), 5).unwrap();
    link.handle_start(secs(0)).unwrap();
    let State::Connecting { deadline, .. } = link.state() else {
        panic!()
    };
    assert_eq!(deadline, secs(20));
    let mut now = secs(0);
    for n in 0..12u32 {
        let State::Connecting { attempt, .. } = link.state() else {
            panic!()
        };
        link.handle_connect_failed(now, attempt, Cause::Refused)
            .unwrap();
        let State::Backoff { until } = link.state() else {
            panic!()
        };
        let (lo, hi) = BackoffPolicy::grpc().delay_bounds(n);
        let d = until - now;
        assert!(
            d >= lo && d <= hi,
            "retry {n}: {d:?} not in {lo:?}..={hi:?}"
        );
        now = until;
        link.handle_timeout(now);
        // Past 20 s of backoff, an attempt may take as long as the next wait.
        let State::Connecting { deadline, .. } = link.state() else {
            panic!()
        };
        let base = BackoffPolicy::grpc().base_delay(n + 1);
        assert_eq!(deadline - now, base.max(Duration::from_secs(20)));
    }
}

#[test]
fn accept_then_drop_does_not_reset_backoff_but_a_stable_connection_does() {
    let mut link: Reconnect<u32> = Reconnect::new(ReconnectConfig::default(), 5).unwrap();
    let mut now = secs(0);
    link.handle_start(now).unwrap();
    let mut delays = Vec::new();
    for _ in 0..6 {
        let State::Connecting { attempt, .. } = link.state() else {
            panic!()
        };
        link.handle_connected(now, attempt).unwrap();
        link.handle_disconnected(now, attempt, Cause::Closed)
            .unwrap();
        let State::Backoff { until } = link.state() else {
            panic!()
        };
        delays.push(until - now);
        now = until;
        link.handle_timeout(now);
    }
    // Growing: the 6th wait is at least 1.6^5 * 0.8 s.
    assert!(
        delays[5] >= Duration::from_secs_f64(1.6f64.powi(5) * 0.8),
        "{delays:?}"
    );
    assert_eq!(link.attempts_since_stable(), 7);
    // Now it stays up for the stable period: the next wait is back to ~1 s.
    let State::Connecting { attempt, .. } = link.state() else {
        panic!()
    };
    link.handle_connected(now, attempt).unwrap();
    now = now + Duration::from_secs(10);
    link.handle_disconnected(now, attempt, Cause::Closed)
        .unwrap();
    let State::Backoff { until } = link.state() else {
        panic!()
    };
    assert!(until - now <= Duration::from_millis(1200));
    assert_eq!(link.attempts_since_stable(), 0);
}

#[test]
fn max_attempts_gives_up_and_hands_back_the_outbox() {
    let config = ReconnectConfig {
        max_attempts: Some(2),
        ..ReconnectConfig::seed()
    };
    let mut link: Reconnect<u32> = Reconnect::new(config, 0).unwrap();
    link.handle_send(secs(0), 10).unwrap();
    link.handle_start(secs(0)).unwrap();
    let a = connect_of(&drain(&mut link));
    link.handle_connect_failed(secs(0), a, Cause::Refused)
        .unwrap();
    link.handle_timeout(secs(2));
    let b = connect_of(&drain(&mut link));
    link.handle_connect_failed(secs(2), b, Cause::Dns).unwrap();
    assert_eq!(link.state(), State::GaveUp { attempts: 2 });
    let outs = drain(&mut link);
    assert!(outs.contains(&Output::Undelivered { message: 10 }));
    assert_eq!(link.poll_timeout(), None);
    assert!(link.handle_send(secs(3), 11).is_err());
    // A restart starts a fresh count.
    link.handle_start(secs(3)).unwrap();
    assert!(matches!(link.state(), State::Connecting { number: 1, .. }));
}

#[test]
fn outbox_flushes_in_order_and_overflow_gives_the_message_back() {
    let config = ReconnectConfig {
        outbox_capacity: 3,
        ..ReconnectConfig::seed()
    };
    let mut link: Reconnect<u32> = Reconnect::new(config, 0).unwrap();
    link.handle_start(secs(0)).unwrap();
    let a = connect_of(&drain(&mut link));
    for m in 1..=3 {
        assert_eq!(link.handle_send(secs(0), m), Ok(Sent::Queued));
    }
    let err = link.handle_send(secs(0), 4).unwrap_err();
    assert_eq!(err.message, 4);
    assert_eq!(
        err.error,
        UsageError::Full {
            what: "outbox",
            limit: 3
        }
    );
    assert_eq!(link.outbox_len(), 3);
    link.handle_connected(secs(1), a).unwrap();
    assert_eq!(link.handle_send(secs(1), 5), Ok(Sent::Now));
    let sent: Vec<u32> = drain(&mut link)
        .into_iter()
        .filter_map(|o| match o {
            Output::Send { message, attempt } if attempt == a => Some(message),
            _ => None,
        })
        .collect();
    assert_eq!(sent, [1, 2, 3, 5]);
    assert_eq!(link.outbox_len(), 0);
}

#[test]
fn stop_closes_tells_subscribers_and_returns_queued_messages() {
    let (mut link, a) = connected_link();
    link.handle_subscribe(secs(1), Token(3)).unwrap();
    drain(&mut link);
    link.handle_stop(secs(2)).unwrap();
    let outs = drain(&mut link);
    assert_eq!(outs[0], Output::Close { attempt: a });
    assert!(outs.contains(&Output::Disconnected {
        subscriber: Token(3)
    }));
    assert_eq!(link.state(), State::Stopped);
    link.handle_stop(secs(3)).unwrap();
    assert!(drain(&mut link).is_empty(), "stopping twice does nothing");
    // Stopping while backing off hands the outbox back.
    let mut link = seed_link();
    link.handle_start(secs(0)).unwrap();
    let a = connect_of(&drain(&mut link));
    link.handle_connect_failed(secs(0), a, Cause::Refused)
        .unwrap();
    link.handle_send(secs(0), 1).unwrap();
    link.handle_send(secs(0), 2).unwrap();
    link.handle_stop(secs(1)).unwrap();
    let back: Vec<u32> = drain(&mut link)
        .into_iter()
        .filter_map(|o| match o {
            Output::Undelivered { message } => Some(message),
            _ => None,
        })
        .collect();
    assert_eq!(back, [1, 2]);
    assert_eq!(link.stats().messages_undelivered, 2);
}

#[test]
fn misuse_is_refused_with_state_unchanged() {
    let (mut link, a) = connected_link();
    let before = link.state();
    assert!(matches!(
        link.handle_start(secs(1)),
        Err(UsageError::WrongState { .. })
    ));
    assert!(matches!(
        link.handle_connected(secs(1), a),
        Err(UsageError::WrongState { .. })
    ));
    assert!(matches!(
        link.handle_connect_failed(secs(1), a, Cause::Refused),
        Err(UsageError::WrongState { .. })
    ));
    link.handle_timeout(secs(5));
    let err = link.handle_send(secs(4), 1).unwrap_err();
    assert!(matches!(err.error, UsageError::TimeWentBackwards { .. }));
    assert!(link.handle_subscribe(secs(4), Token(1)).is_err());
    assert_eq!(link.subscriber_count(), 0);
    link.handle_timeout(secs(1)); // earlier: a no-op
    assert_eq!(link.state(), before);
    assert!(drain(&mut link).is_empty());
}

#[test]
fn invalid_config_is_refused() {
    let bad = [
        ReconnectConfig {
            connect_timeout: Duration::ZERO,
            ..ReconnectConfig::default()
        },
        ReconnectConfig {
            stable_period: Duration::ZERO,
            ..ReconnectConfig::default()
        },
        ReconnectConfig {
            max_attempts: Some(0),
            ..ReconnectConfig::default()
        },
        ReconnectConfig {
            max_subscribers: 0,
            ..ReconnectConfig::default()
        },
        ReconnectConfig {
            backoff: BackoffPolicy::Fixed {
                delay: Duration::ZERO,
            },
            ..ReconnectConfig::default()
        },
    ];
    for c in bad {
        assert!(Reconnect::<u32>::new(c.clone(), 0).is_err(), "{c:?}");
    }
}

#[test]
fn same_seed_same_trace() {
    let run = || {
        let mut link: Reconnect<u32> = Reconnect::new(ReconnectConfig::default(), 77).unwrap();
        let mut trace = Vec::new();
        link.handle_start(secs(0)).unwrap();
        for _ in 0..20 {
            let State::Connecting { attempt, .. } = link.state() else {
                panic!()
            };
            let now = link.time.last();
            link.handle_connect_failed(now, attempt, Cause::Refused)
                .unwrap();
            let at = link.poll_timeout().unwrap();
            link.handle_timeout(at);
            trace.extend(drain(&mut link));
        }
        trace
    };
    assert_eq!(run(), run());
}

#[test]
fn a_recorded_input_log_replays_exactly() {
    let a1 = AttemptId::from_raw(1);
    let a2 = AttemptId::from_raw(2);
    let log: Vec<(Instant, Input<u32>)> = alloc::vec![
        (secs(0), Input::Subscribe(Token(1))),
        (secs(0), Input::Send(7)),
        (secs(0), Input::Start),
        (secs(1), Input::ConnectFailed(a1, Cause::Refused)),
        (secs(3), Input::Timeout),
        (secs(3), Input::Connected(a2)),
        (secs(4), Input::Send(8)),
        (secs(5), Input::Disconnected(a2, Cause::Reset)),
        (secs(9), Input::Timeout),
        (secs(9), Input::Connected(a1)),
        (secs(10), Input::Stop),
    ];
    let replay = || {
        let mut link: Reconnect<u32> = Reconnect::new(ReconnectConfig::default(), 11).unwrap();
        let mut trace = Vec::new();
        for (now, input) in log.iter().cloned() {
            let r = link.handle(now, input);
            trace.push(Output::Undelivered {
                message: u32::from(r.is_ok()),
            });
            trace.extend(drain(&mut link));
        }
        (trace, link.stats())
    };
    let (a, stats) = replay();
    assert_eq!(a, replay().0);
    assert_eq!(stats.connects, 1);
    assert_eq!(stats.stale_reports, 1);
    assert_eq!(stats.messages_sent, 2);
}
