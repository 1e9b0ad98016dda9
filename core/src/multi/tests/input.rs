//! Receiving, decoding, codec switches, buffers and replay.

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;

use super::super::conn::{Buffers, SPARE_BUFFER_CAPACITY, SPARE_BUFFERS, Spare};
use super::super::*;
use super::{addr, connected, drain, engine, inputs, t};
use crate::codec::{
    BlockCodec, DecodeError, Decoder, EncodeError, Encoder, Framing, LineCodec, RawCodec,
    Terminator,
};

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
fn emptied_buffers_are_handed_back_and_reused() {
    let (mut m, id) = connected(Config::default());
    m.send(t(1), id, b"ping").unwrap();
    m.handle_received(t(1), id, b"pong\n").unwrap();
    assert!(m.buffer_capacity() > 0);
    drain(&mut m);
    m.handle_written(t(1), id, 6).unwrap();
    // Both buffers emptied: the idle connection holds none, the engine keeps the pair as a
    // spare.
    assert_eq!(m.buffer_capacity(), 0);
    assert_eq!(m.spare.len(), 1);
    m.send(t(2), id, b"again").unwrap();
    assert_eq!(m.spare.len(), 0);
    assert!(m.buffer_capacity() > 0);
    // A partial frame keeps the buffers even once the output is written.
    m.handle_received(t(2), id, b"par").unwrap();
    drain(&mut m);
    m.handle_written(t(2), id, 7).unwrap();
    assert_eq!(m.spare.len(), 0);
    assert!(m.buffer_capacity() > 0);
    assert_eq!(m.read_capacity(id), Ok((64 << 10) - 3));
    // Completing the frame hands the pair back.
    m.handle_received(t(2), id, b"t\n").unwrap();
    assert_eq!(inputs(&drain(&mut m)), vec![b"part".to_vec()]);
    assert_eq!(m.spare.len(), 1);
    assert_eq!(m.buffer_capacity(), 0);
    // The spare list is bounded, and a pair holding a large buffer is freed.
    let mut spare = Spare::default();
    for _ in 0..100 {
        spare.recycle(Box::default());
    }
    assert_eq!(spare.len(), SPARE_BUFFERS);
    let mut spare = Spare::default();
    let big = Buffers {
        input: Vec::with_capacity(SPARE_BUFFER_CAPACITY + 1),
        ..Buffers::default()
    };
    spare.recycle(Box::new(big));
    assert_eq!(spare.len(), 0);
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
