use alloc::vec;
use alloc::vec::Vec;
use core::net::SocketAddr;

use super::*;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn t(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

fn drain<S>(m: &mut Multi<S>) -> Vec<Output<S>> {
    let mut v = Vec::new();
    while let Some(o) = m.poll_output() {
        v.push(o);
    }
    v
}

fn engine(config: Config) -> Multi<u32> {
    Multi::new(config, 7).unwrap()
}

/// An engine with one connected connection; outputs drained.
fn connected(config: Config) -> (Multi<u32>, ConnId) {
    let mut m = engine(config);
    let id = m.connect(t(0), ConnectOptions::new(addr(80)), 42).unwrap();
    m.handle_connected(t(0), id, addr(5000), addr(80)).unwrap();
    drain(&mut m);
    (m, id)
}

fn inputs<S>(outs: &[Output<S>]) -> Vec<Vec<u8>> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Input { frame, .. } => Some(frame.clone()),
            _ => None,
        })
        .collect()
}

mod input;
mod timers;

#[test]
fn connect_emits_connect_then_connected_with_addresses() {
    let mut m = engine(Config::default());
    let opts = ConnectOptions::new(addr(25)).bind(addr(0));
    let id = m.connect(t(0), opts, 1).unwrap();
    assert_eq!(
        drain(&mut m),
        vec![Output::Connect {
            conn: id,
            remote: addr(25),
            bind: Some(addr(0))
        }]
    );
    assert_eq!(m.phase(id), Some(Phase::Connecting));
    assert_eq!(m.remote_addr(id), Some(addr(25)));
    m.handle_connected(t(1), id, addr(4000), addr(25)).unwrap();
    assert_eq!(
        drain(&mut m),
        vec![Output::Connected {
            conn: id,
            local: addr(4000),
            remote: addr(25)
        }]
    );
    assert_eq!(m.phase(id), Some(Phase::Connected));
    assert_eq!(m.state(id), Some(&1));
    *m.state_mut(id).unwrap() = 9;
    assert_eq!(m.state(id), Some(&9));
    // A second completion is misuse, and changes nothing.
    assert_eq!(
        m.handle_connected(t(1), id, addr(4000), addr(25)),
        Err(UsageError::WrongState {
            operation: "complete a connect",
            state: "connected"
        })
    );
}

#[test]
fn connect_failure_is_one_terminal_event_with_the_cause_and_the_state() {
    let mut m = engine(Config::default());
    let id = m.connect(t(0), ConnectOptions::new(addr(1)), 5).unwrap();
    drain(&mut m);
    let failure = Failure::new(Operation::Connect, 111, "Connection refused");
    m.handle_connect_failed(t(1), id, failure.clone()).unwrap();
    assert_eq!(
        drain(&mut m),
        vec![
            Output::Close { conn: id },
            Output::ConnectFailed {
                conn: id,
                failure,
                state: 5
            }
        ]
    );
    assert!(m.is_empty());
    assert_eq!(m.armed_timers(), 0);
    assert_eq!(m.send(t(1), id, b"x"), Err(UsageError::UnknownConn(id)));
    // An I/O error while connecting is a connect failure too.
    let id = m.connect(t(1), ConnectOptions::new(addr(1)), 6).unwrap();
    drain(&mut m);
    m.handle_io_error(t(2), id, Failure::new(Operation::Bind, 98, "in use"))
        .unwrap();
    assert!(matches!(
        drain(&mut m)[1],
        Output::ConnectFailed { state: 6, .. }
    ));
}

#[test]
fn ids_are_stable_and_never_reused() {
    let mut m = engine(Config::default());
    let a = m.connect(t(0), ConnectOptions::new(addr(1)), 0).unwrap();
    m.handle_connected(t(0), a, addr(2), addr(1)).unwrap();
    m.shutdown(t(0), a).unwrap();
    let b = m.connect(t(0), ConnectOptions::new(addr(1)), 0).unwrap();
    assert_ne!(a, b);
    assert_eq!(m.phase(a), None);
    assert_eq!(m.phase(b), Some(Phase::Connecting));
}

#[test]
fn sends_queue_before_connect_and_flush_after() {
    let mut m = engine(Config::default());
    let id = m.connect(t(0), ConnectOptions::new(addr(1)), 0).unwrap();
    m.send(t(0), id, b"early").unwrap();
    assert!(!drain(&mut m).contains(&Output::WriteReady { conn: id }));
    m.handle_connected(t(1), id, addr(2), addr(1)).unwrap();
    let outs = drain(&mut m);
    assert_eq!(outs.last(), Some(&Output::WriteReady { conn: id }));
    assert_eq!(m.pending_write(id).unwrap(), b"early\r\n");
}

#[test]
fn writes_are_reported_and_short_writes_lose_nothing() {
    let (mut m, id) = connected(Config::default());
    m.send(t(1), id, b"abc").unwrap();
    m.send(t(1), id, b"de").unwrap();
    // One WriteReady per empty -> non-empty transition.
    assert_eq!(drain(&mut m), vec![Output::WriteReady { conn: id }]);
    let mut buf = [0u8; 4];
    assert_eq!(m.fill_write(id, &mut buf), Ok(4));
    assert_eq!(&buf, b"abc\r");
    assert_eq!(m.handle_written(t(1), id, 2), Ok(7));
    assert_eq!(m.pending_write(id).unwrap(), b"c\r\nde\r\n");
    assert_eq!(
        m.handle_written(t(1), id, 8),
        Err(UsageError::InvalidArgument {
            reason: "more bytes written than were queued"
        })
    );
    assert_eq!(m.handle_written(t(1), id, 7), Ok(0));
    assert!(drain(&mut m).is_empty());
    m.send(t(2), id, b"f").unwrap();
    assert_eq!(drain(&mut m), vec![Output::WriteReady { conn: id }]);
    let s = m.stats();
    assert_eq!((s.bytes_queued, s.bytes_written), (12, 9));
}

#[test]
fn the_send_queue_is_bounded_and_refusals_queue_nothing() {
    let config = Config {
        max_send_queue_len: 10,
        ..Config::default()
    };
    let (mut m, id) = connected(config);
    m.send(t(1), id, b"1234567").unwrap(); // 9 bytes with CRLF
    assert_eq!(
        m.send(t(1), id, b"x"),
        Err(UsageError::Full {
            what: "send queue",
            limit: 10
        })
    );
    assert_eq!(m.pending_write(id).unwrap(), b"1234567\r\n");
    assert_eq!(
        m.send(t(1), id, b"a\nb"),
        Err(UsageError::InvalidArgument {
            reason: "line contains the output codec's terminator"
        })
    );
    assert_eq!(m.pending_write(id).unwrap().len(), 9);
    // Written bytes free room.
    m.handle_written(t(1), id, 9).unwrap();
    m.send(t(1), id, b"12345678").unwrap();
}

#[test]
fn shutdown_flushes_then_disconnects_and_refuses_new_sends() {
    let (mut m, id) = connected(Config::default());
    m.send(t(1), id, b"bye").unwrap();
    drain(&mut m);
    m.shutdown(t(1), id).unwrap();
    assert!(drain(&mut m).is_empty());
    assert_eq!(m.phase(id), Some(Phase::Closing));
    assert_eq!(
        m.send(t(1), id, b"more"),
        Err(UsageError::WrongState {
            operation: "send",
            state: "closing"
        })
    );
    m.shutdown(t(1), id).unwrap(); // harmless again
    assert_eq!(m.handle_written(t(2), id, 2), Ok(3));
    assert!(drain(&mut m).is_empty());
    assert_eq!(m.handle_written(t(2), id, 3), Ok(0));
    assert_eq!(
        drain(&mut m),
        vec![
            Output::Close { conn: id },
            Output::Disconnected {
                conn: id,
                state: 42
            }
        ]
    );
    assert_eq!(m.armed_timers(), 0);
}

#[test]
fn shutdown_while_connecting_cancels_the_attempt() {
    let mut m = engine(Config::default());
    let id = m.connect(t(0), ConnectOptions::new(addr(1)), 3).unwrap();
    m.send(t(0), id, b"never").unwrap();
    drain(&mut m);
    m.shutdown(t(1), id).unwrap();
    assert_eq!(
        drain(&mut m),
        vec![
            Output::Close { conn: id },
            Output::Disconnected { conn: id, state: 3 }
        ]
    );
    assert_eq!(m.armed_timers(), 0);
}

#[test]
fn shutdown_all_cancels_connects_flushes_the_rest_and_drains_once() {
    let mut m = engine(Config::default());
    let pending = m.connect(t(0), ConnectOptions::new(addr(1)), 1).unwrap();
    let idle = m.connect(t(0), ConnectOptions::new(addr(2)), 2).unwrap();
    let busy = m.connect(t(0), ConnectOptions::new(addr(3)), 3).unwrap();
    m.handle_connected(t(0), idle, addr(9), addr(2)).unwrap();
    m.handle_connected(t(0), busy, addr(9), addr(3)).unwrap();
    m.send(t(0), busy, b"x").unwrap();
    drain(&mut m);
    m.shutdown_all(t(1)).unwrap();
    let outs = drain(&mut m);
    assert!(outs.contains(&Output::Disconnected {
        conn: pending,
        state: 1
    }));
    assert!(outs.contains(&Output::Disconnected {
        conn: idle,
        state: 2
    }));
    assert!(!outs.contains(&Output::Drained));
    assert_eq!(
        m.connect(t(1), ConnectOptions::new(addr(1)), 0),
        Err(UsageError::ShutDown)
    );
    m.handle_written(t(2), busy, 3).unwrap();
    assert_eq!(
        drain(&mut m),
        vec![
            Output::Close { conn: busy },
            Output::Disconnected {
                conn: busy,
                state: 3
            },
            Output::Drained
        ]
    );
    assert!(m.is_empty() && m.armed_timers() == 0 && m.poll_timeout().is_none());
    m.shutdown_all(t(3)).unwrap();
    assert!(drain(&mut m).is_empty());
    assert!(m.is_shutting_down());
}

#[test]
fn shutdown_all_with_nothing_open_drains_at_once() {
    let mut m = engine(Config::default());
    m.shutdown_all(t(0)).unwrap();
    assert_eq!(drain(&mut m), vec![Output::Drained]);
}

#[test]
fn an_io_error_after_connecting_is_an_error_event() {
    let (mut m, id) = connected(Config::default());
    m.handle_received(t(1), id, b"dropped, no terminator")
        .unwrap();
    let failure = Failure::new(Operation::Read, 104, "Connection reset by peer");
    m.handle_io_error(t(2), id, failure.clone()).unwrap();
    assert_eq!(
        drain(&mut m),
        vec![
            Output::Close { conn: id },
            Output::Error {
                conn: id,
                failure,
                state: 42
            }
        ]
    );
    assert_eq!(m.stats().errors, 1);
}

#[test]
fn misuse_is_refused_with_state_unchanged() {
    let mut m = engine(Config {
        max_connections: 1,
        ..Config::default()
    });
    let id = m.connect(t(5), ConnectOptions::new(addr(1)), 0).unwrap();
    assert_eq!(
        m.connect(t(5), ConnectOptions::new(addr(1)), 0),
        Err(UsageError::Full {
            what: "connections",
            limit: 1
        })
    );
    assert_eq!(
        m.send(t(4), id, b"x"),
        Err(UsageError::TimeWentBackwards {
            now: t(4),
            last: t(5)
        })
    );
    assert_eq!(
        m.handle_received(t(5), id, b"x"),
        Err(UsageError::WrongState {
            operation: "receive",
            state: "connecting"
        })
    );
    assert!(m.handle_written(t(5), id, 0).is_err());
    assert!(m.handle_eof(t(5), id).is_err());
    let ghost = ConnId::from_raw(999);
    assert_eq!(m.shutdown(t(5), ghost), Err(UsageError::UnknownConn(ghost)));
    assert_eq!(
        m.fill_write(ghost, &mut [0; 4]),
        Err(UsageError::UnknownConn(ghost))
    );
    assert_eq!(m.read_capacity(ghost), Err(UsageError::UnknownConn(ghost)));
    assert_eq!(m.timeout(ghost), None);
    // An earlier handle_timeout is a no-op.
    m.handle_timeout(t(1));
    assert_eq!(drain(&mut m).len(), 1); // just the Connect
    assert_eq!(m.phase(id), Some(Phase::Connecting));
    assert_eq!(m.stats().connects, 1);
}

#[test]
fn config_is_validated() {
    let bad = |c: Config| Multi::<()>::new(c, 0).err();
    assert_eq!(
        bad(Config {
            max_connections: 0,
            ..Config::default()
        }),
        Some(ConfigError::Zero {
            field: "max_connections"
        })
    );
    assert_eq!(
        bad(Config {
            max_send_queue_len: 0,
            ..Config::default()
        }),
        Some(ConfigError::Zero {
            field: "max_send_queue_len"
        })
    );
    assert!(matches!(
        bad(Config {
            max_input_len: 100,
            ..Config::default()
        }),
        Some(ConfigError::Conflict {
            field: "framing",
            ..
        })
    ));
    assert!(bad(Config::default()).is_none());
}

#[test]
fn per_connection_state_stays_small() {
    // Buffers and codecs allocate nothing until used; the record itself is what an idle
    // connection costs, plus slot bookkeeping and one timer entry.
    assert!(
        Multi::<()>::conn_record_len() <= 96,
        "{}",
        Multi::<()>::conn_record_len()
    );
    // The hot record every event touches: 24 bytes, 32 with the slot's generation, so 100,000
    // of them fit in a last-level cache.
    assert!(core::mem::size_of::<super::conn::Conn>() <= 24);
    let (m, _) = connected(Config::default());
    assert_eq!(m.buffer_capacity(), 0);
}
