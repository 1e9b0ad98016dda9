use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;
use core::net::SocketAddr;
use core::time::Duration;

use super::*;
use crate::codec::{BlockCodec, LineCodec, RawCodec, Terminator};

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

#[test]
fn input_is_decoded_into_frames_across_reads() {
    let (mut m, id) = connected(Config::default());
    m.handle_received(t(1), id, b"hel").unwrap();
    assert!(drain(&mut m).is_empty());
    m.handle_received(t(1), id, b"lo\r\nwor").unwrap();
    m.handle_received(t(1), id, b"ld\n\n").unwrap();
    let outs = drain(&mut m);
    assert_eq!(
        inputs(&outs),
        vec![b"hello".to_vec(), b"world".to_vec(), b"".to_vec()]
    );
    assert_eq!(m.stats().frames_in, 3);
    assert_eq!(m.read_capacity(id), Ok(64 << 10));
}

#[test]
fn switching_the_input_codec_applies_to_the_next_frame() {
    let (mut m, id) = connected(Config::default());
    m.handle_received(t(1), id, b"HEAD\nABCDEFGH").unwrap();
    let first = m.poll_output().unwrap();
    assert_eq!(
        first,
        Output::Input {
            conn: id,
            frame: b"HEAD".to_vec()
        }
    );
    // As the seed's InputEvent handler would: switch to 4-byte blocks.
    m.set_decoder(t(1), id, Box::new(BlockCodec::new(4).unwrap()))
        .unwrap();
    assert_eq!(
        inputs(&drain(&mut m)),
        vec![b"ABCD".to_vec(), b"EFGH".to_vec()]
    );
    // The output codec is still the default lines.
    m.send(t(1), id, b"ok").unwrap();
    assert_eq!(m.pending_write(id).unwrap(), b"ok\r\n");
    m.set_encoder(t(1), id, Box::new(RawCodec)).unwrap();
    m.send(t(1), id, b"raw").unwrap();
    assert_eq!(m.pending_write(id).unwrap(), b"ok\r\nraw");
    m.set_framing(
        t(1),
        id,
        Framing::Lines(LineCodec::new(Terminator::Lf, 16).unwrap()),
    )
    .unwrap();
    m.send(t(1), id, b"lf").unwrap();
    assert_eq!(m.pending_write(id).unwrap(), b"ok\r\nrawlf\n");
    m.handle_received(t(1), id, b"a\r\n").unwrap();
    assert_eq!(inputs(&drain(&mut m)), vec![b"a\r".to_vec()]);
}

#[test]
fn switching_the_codec_re_decodes_bytes_already_held() {
    let (mut m, id) = connected(Config::default());
    m.handle_received(t(1), id, b"no newline").unwrap();
    assert!(drain(&mut m).is_empty());
    m.set_framing(t(1), id, Framing::Raw(RawCodec)).unwrap();
    assert_eq!(inputs(&drain(&mut m)), vec![b"no newline".to_vec()]);
}

#[test]
fn an_over_long_line_ends_the_connection_with_a_decode_error() {
    let config = Config {
        framing: Framing::Lines(LineCodec::new(Terminator::Lf, 4).unwrap()),
        ..Config::default()
    };
    let (mut m, id) = connected(config);
    m.handle_received(t(1), id, b"ok\ntoo long").unwrap();
    let outs = drain(&mut m);
    assert_eq!(inputs(&outs), vec![b"ok".to_vec()]);
    assert_eq!(outs[1], Output::Close { conn: id });
    let Output::Error { failure, state, .. } = &outs[2] else {
        panic!("{outs:?}")
    };
    assert_eq!(*state, 42);
    assert_eq!(failure.operation, Operation::Decode);
    assert_eq!(failure.text, "line longer than 4 bytes");
}

#[test]
fn the_input_buffer_is_bounded() {
    let config = Config {
        max_input_len: 16,
        framing: Framing::Blocks(BlockCodec::new(8).unwrap()),
        ..Config::default()
    };
    let (mut m, id) = connected(config);
    assert_eq!(
        m.handle_received(t(1), id, &[0; 17]),
        Err(UsageError::Full {
            what: "input buffer",
            limit: 16
        })
    );
    m.handle_received(t(1), id, &[0; 12]).unwrap();
    assert_eq!(m.read_capacity(id), Ok(4));
    assert_eq!(inputs(&drain(&mut m)), vec![vec![0; 8]]);
    assert_eq!(m.read_capacity(id), Ok(12));
    // A codec switched to one whose frames cannot fit is an error, not a stall.
    m.set_decoder(t(1), id, Box::new(BlockCodec::new(100).unwrap()))
        .unwrap();
    m.handle_received(t(1), id, &[0; 12]).unwrap();
    let outs = drain(&mut m);
    assert!(
        matches!(&outs[1], Output::Error { failure, .. } if failure.operation == Operation::Decode)
    );
}

#[test]
fn end_of_file_delivers_received_frames_then_one_error() {
    let (mut m, id) = connected(Config::default());
    m.handle_received(t(1), id, b"last\npartial").unwrap();
    m.handle_eof(t(1), id).unwrap();
    let outs = drain(&mut m);
    assert_eq!(inputs(&outs), vec![b"last".to_vec()]);
    assert_eq!(outs.len(), 3);
    assert_eq!(
        outs[2],
        Output::Error {
            conn: id,
            failure: Failure::new(Operation::Read, 0, "connection closed by peer"),
            state: 42
        }
    );
    // With nothing pending it ends at once.
    let (mut m, id) = connected(Config::default());
    m.handle_eof(t(1), id).unwrap();
    assert!(drain(&mut m)[1].is_terminal());
}

#[test]
fn end_of_file_while_closing_lets_the_flush_finish() {
    let (mut m, id) = connected(Config::default());
    m.send(t(1), id, b"x").unwrap();
    m.shutdown(t(1), id).unwrap();
    m.handle_eof(t(1), id).unwrap();
    assert_eq!(
        m.handle_received(t(1), id, b"y"),
        Err(UsageError::WrongState {
            operation: "receive",
            state: "at end of file"
        })
    );
    m.handle_written(t(2), id, 3).unwrap();
    let outs = drain(&mut m);
    assert_eq!(
        outs.last(),
        Some(&Output::Disconnected {
            conn: id,
            state: 42
        })
    );
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
fn a_custom_codec_plugs_in() {
    /// Length-prefixed frames: one length byte, then the body.
    #[derive(Debug)]
    struct Prefixed;
    impl Decoder for Prefixed {
        fn decode(
            &mut self,
            input: &[u8],
            _seen: usize,
            frame: &mut Vec<u8>,
        ) -> Result<Option<usize>, DecodeError> {
            let Some(&len) = input.first() else {
                return Ok(None);
            };
            let end = 1 + len as usize;
            if input.len() < end {
                return Ok(None);
            }
            frame.extend_from_slice(&input[1..end]);
            Ok(Some(end))
        }
    }
    impl Encoder for Prefixed {
        fn encode(&mut self, frame: &[u8], out: &mut Vec<u8>) -> Result<(), EncodeError> {
            let len = u8::try_from(frame.len()).map_err(|_| EncodeError::Invalid {
                reason: "frame longer than 255 bytes",
            })?;
            out.push(len);
            out.extend_from_slice(frame);
            Ok(())
        }
    }
    let (mut m, id) = connected(Config::default());
    m.set_decoder(t(1), id, Box::new(Prefixed)).unwrap();
    m.set_encoder(t(1), id, Box::new(Prefixed)).unwrap();
    m.send(t(1), id, b"hi").unwrap();
    assert_eq!(m.pending_write(id).unwrap(), b"\x02hi");
    assert_eq!(
        m.send(t(1), id, &[0; 300]),
        Err(UsageError::InvalidArgument {
            reason: "frame longer than 255 bytes"
        })
    );
    m.handle_received(t(1), id, b"\x03abc\x00\x01").unwrap();
    assert_eq!(inputs(&drain(&mut m)), vec![b"abc".to_vec(), b"".to_vec()]);
}

#[test]
fn per_connection_state_stays_small() {
    // Buffers and codecs allocate nothing until used; the record itself is what an idle
    // connection costs, plus slot bookkeeping and one timer entry.
    assert!(
        Multi::<()>::conn_record_len() <= 160,
        "{}",
        Multi::<()>::conn_record_len()
    );
    let (m, _) = connected(Config::default());
    assert_eq!(m.buffer_capacity(), 0);
}

#[test]
fn emptied_buffers_are_handed_back_and_reused() {
    let (mut m, id) = connected(Config::default());
    m.send(t(1), id, b"ping").unwrap();
    m.handle_received(t(1), id, b"pong\n").unwrap();
    assert!(m.buffer_capacity() > 0);
    drain(&mut m);
    m.handle_written(t(1), id, 6).unwrap();
    // Both buffers emptied: the idle connection holds none, the engine keeps them as spares.
    assert_eq!(m.buffer_capacity(), 0);
    assert_eq!(m.spare.len(), 2);
    m.send(t(2), id, b"again").unwrap();
    assert_eq!(m.spare.len(), 1);
    assert!(m.buffer_capacity() > 0);
    // A partial frame keeps its buffer.
    m.handle_received(t(2), id, b"par").unwrap();
    drain(&mut m);
    assert_eq!(m.spare.len(), 0);
    assert_eq!(m.read_capacity(id), Ok((64 << 10) - 3));
    // The spare list is bounded.
    let mut spare = Vec::new();
    for _ in 0..100 {
        recycle(&mut spare, Vec::with_capacity(8));
    }
    recycle(&mut spare, Vec::with_capacity(1 << 20));
    assert_eq!(spare.len(), SPARE_BUFFERS);
}

#[test]
fn a_recorded_run_replays_bit_for_bit() {
    let record = vec![
        (
            t(1),
            Input::Connected {
                conn: ConnId::from_raw(1 << 32),
                local: addr(9),
                remote: addr(80),
            },
        ),
        (
            t(2),
            Input::Received {
                conn: ConnId::from_raw(1 << 32),
                bytes: b"a\nb\n".to_vec(),
            },
        ),
        (
            t(3),
            Input::Written {
                conn: ConnId::from_raw(1 << 32),
                len: 3,
            },
        ),
        (
            t(4),
            Input::Eof {
                conn: ConnId::from_raw(1 << 32),
            },
        ),
    ];
    let replay = || {
        let mut m = engine(Config::default());
        let id = m.connect(t(0), ConnectOptions::new(addr(80)), 1).unwrap();
        assert_eq!(id, ConnId::from_raw(1 << 32));
        m.send(t(0), id, b"x").unwrap();
        let mut outs = drain(&mut m);
        for (now, input) in record.clone() {
            m.handle_input(now, input).unwrap();
            outs.extend(drain(&mut m));
        }
        outs
    };
    let first = replay();
    assert_eq!(first, replay());
    assert_eq!(inputs(&first), vec![b"a".to_vec(), b"b".to_vec()]);
    assert!(first.last().unwrap().is_terminal());
}
