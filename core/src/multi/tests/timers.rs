//! Connect, input and closing timeouts.

use alloc::vec;
use core::time::Duration;

use super::super::*;
use super::{addr, connected, drain, engine, t};
#[test]
fn the_connect_timeout_fires_at_its_deadline_and_not_before() {
    let mut m = engine(Config::default()); // 30 s
    let id = m.connect(t(0), ConnectOptions::new(addr(1)), 0).unwrap();
    let fast = m
        .connect(
            t(0),
            ConnectOptions::new(addr(1)).connect_timeout(Duration::from_secs(5)),
            1,
        )
        .unwrap();
    let never = m
        .connect(
            t(0),
            ConnectOptions::new(addr(1)).connect_timeout(Duration::ZERO),
            2,
        )
        .unwrap();
    drain(&mut m);
    assert_eq!(m.poll_timeout(), Some(Instant::from_secs(5)));
    m.handle_timeout(Instant::from_secs(5) - Duration::from_nanos(1));
    assert!(drain(&mut m).is_empty());
    m.handle_timeout(Instant::from_secs(5));
    assert_eq!(
        drain(&mut m),
        vec![
            Output::Close { conn: fast },
            Output::TimedOut {
                conn: fast,
                phase: Phase::Connecting,
                state: 1
            }
        ]
    );
    m.handle_timeout(Instant::from_secs(30));
    assert!(matches!(drain(&mut m)[1], Output::TimedOut { conn, .. } if conn == id));
    m.handle_timeout(Instant::from_secs(1_000_000));
    assert_eq!(m.phase(never), Some(Phase::Connecting));
    assert_eq!(m.poll_timeout(), None);
}

#[test]
fn reads_push_the_input_timeout_back_without_touching_the_index() {
    let config = Config {
        input_timeout: Some(Duration::from_secs(10)),
        ..Config::default()
    };
    let (mut m, id) = connected(config);
    assert_eq!(m.poll_timeout(), Some(Instant::from_secs(10)));
    for s in 1..=9 {
        m.handle_received(Instant::from_secs(s), id, b"x").unwrap();
        // The entry stays where it was: no index operation per read.
        assert_eq!(m.poll_timeout(), Some(Instant::from_secs(10)));
        assert_eq!(m.armed_timers(), 1);
    }
    // The stale entry fires once, finds the true deadline later, and re-arms there.
    m.handle_timeout(Instant::from_secs(10));
    assert!(drain(&mut m).is_empty());
    assert_eq!(m.poll_timeout(), Some(Instant::from_secs(19)));
    m.handle_timeout(Instant::from_secs(19) - Duration::from_nanos(1));
    assert_eq!(m.phase(id), Some(Phase::Connected));
    m.handle_timeout(Instant::from_secs(19));
    assert_eq!(
        drain(&mut m),
        vec![
            Output::Close { conn: id },
            Output::TimedOut {
                conn: id,
                phase: Phase::Connected,
                state: 42
            }
        ]
    );
}

#[test]
fn set_timeout_acts_on_the_current_phase_and_zero_disables() {
    let mut m = engine(Config::default());
    let id = m.connect(t(0), ConnectOptions::new(addr(1)), 0).unwrap();
    assert_eq!(m.timeout(id), Some(Duration::from_secs(30)));
    // Shorter: re-armed at once, counted from now.
    m.set_timeout(t(1000), id, Some(Duration::from_secs(2)))
        .unwrap();
    assert_eq!(m.timeout(id), Some(Duration::from_secs(2)));
    assert_eq!(m.poll_timeout(), Some(t(3000)));
    assert_eq!(m.armed_timers(), 1);
    m.set_input_timeout(t(1000), id, Some(Duration::from_secs(7)))
        .unwrap();
    m.handle_connected(t(2000), id, addr(2), addr(1)).unwrap();
    // Now the input timeout is the current one.
    assert_eq!(m.timeout(id), Some(Duration::from_secs(7)));
    m.handle_timeout(t(3000)); // stale connect entry re-arms at 2 s + 7 s
    assert_eq!(m.poll_timeout(), Some(t(9000)));
    m.set_timeout(t(3000), id, None).unwrap();
    assert_eq!(m.timeout(id), None);
    m.handle_timeout(t(100_000));
    assert_eq!(m.phase(id), Some(Phase::Connected));
    assert_eq!(m.poll_timeout(), None);
    m.set_timeout(t(100_000), id, Some(Duration::ZERO)).unwrap();
    assert_eq!(m.timeout(id), None);
    m.set_timeout(t(100_000), id, Some(Duration::from_secs(1)))
        .unwrap();
    drain(&mut m);
    m.handle_timeout(t(101_000));
    assert!(matches!(
        drain(&mut m)[1],
        Output::TimedOut {
            phase: Phase::Connected,
            ..
        }
    ));
}

#[test]
fn a_stalled_flush_times_out_in_the_closing_phase() {
    let config = Config {
        input_timeout: Some(Duration::from_secs(5)),
        ..Config::default()
    };
    let (mut m, id) = connected(config);
    m.send(t(0), id, b"data").unwrap();
    m.shutdown(t(1000), id).unwrap();
    m.handle_written(t(4000), id, 1).unwrap(); // progress restarts the clock
    m.handle_timeout(t(8999));
    assert_eq!(m.phase(id), Some(Phase::Closing));
    m.handle_timeout(t(9000));
    assert!(drain(&mut m).contains(&Output::TimedOut {
        conn: id,
        phase: Phase::Closing,
        state: 42
    }));
}
