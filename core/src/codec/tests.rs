use alloc::vec;
use alloc::vec::Vec;

use super::*;

/// Decodes `input` fed in chunks of `chunk` bytes, keeping a caller-side pending buffer.
fn decode_chunked(
    codec: &mut dyn Decoder,
    input: &[u8],
    chunk: usize,
) -> (Vec<Vec<u8>>, Option<DecodeError>) {
    let mut pending = Vec::new();
    let mut seen = 0;
    let mut frames = Vec::new();
    for piece in input.chunks(chunk.max(1)) {
        pending.extend_from_slice(piece);
        loop {
            let mut frame = Vec::new();
            match codec.decode(&pending, seen, &mut frame) {
                Ok(Some(n)) => {
                    pending.drain(..n);
                    seen = 0;
                    frames.push(frame);
                }
                Ok(None) => {
                    seen = pending.len();
                    break;
                }
                Err(e) => return (frames, Some(e)),
            }
        }
    }
    (frames, None)
}

fn lines(t: Terminator, max: usize) -> LineCodec {
    LineCodec::new(t, max).unwrap()
}

#[test]
fn lf_lines_decode_the_same_in_any_chunking() {
    let input = b"one\ntwo\r\n\nthree\n";
    for chunk in 1..=input.len() {
        let (frames, err) = decode_chunked(&mut lines(Terminator::Lf, 16), input, chunk);
        assert_eq!(err, None);
        assert_eq!(
            frames,
            vec![
                b"one".to_vec(),
                b"two\r".to_vec(),
                b"".to_vec(),
                b"three".to_vec()
            ]
        );
    }
}

#[test]
fn crlf_lines_keep_lone_newlines_and_split_straddling_terminators() {
    let input = b"a\nb\r\nc\rd\r\n";
    for chunk in 1..=input.len() {
        let (frames, err) = decode_chunked(&mut lines(Terminator::CrLf, 16), input, chunk);
        assert_eq!(err, None);
        assert_eq!(frames, vec![b"a\nb".to_vec(), b"c\rd".to_vec()]);
    }
}

#[test]
fn lenient_lines_accept_both_terminators() {
    let (frames, err) = decode_chunked(&mut lines(Terminator::LfOrCrLf, 8), b"x\r\ny\nz\r\r\n", 1);
    assert_eq!(err, None);
    assert_eq!(frames, vec![b"x".to_vec(), b"y".to_vec(), b"z\r".to_vec()]);
}

#[test]
fn an_over_long_line_is_an_error_before_its_terminator_arrives() {
    let mut c = lines(Terminator::Lf, 4);
    let mut frame = Vec::new();
    assert_eq!(c.decode(b"abcd", 0, &mut frame), Ok(None));
    assert_eq!(
        c.decode(b"abcde", 4, &mut frame),
        Err(DecodeError::LineTooLong { max_line_len: 4 })
    );
    // The same line in one slice, terminator included, is the same error.
    assert_eq!(
        c.decode(b"abcde\n", 0, &mut frame),
        Err(DecodeError::LineTooLong { max_line_len: 4 })
    );
    assert!(frame.is_empty());
    // A line of exactly the maximum is fine, with either terminator.
    let mut c = lines(Terminator::CrLf, 4);
    assert_eq!(c.decode(b"abcd\r", 0, &mut frame), Ok(None));
    assert_eq!(c.decode(b"abcd\r\n", 5, &mut frame), Ok(Some(6)));
    assert_eq!(frame, b"abcd");
    assert_eq!(
        c.decode(b"abcde\r", 0, &mut Vec::new()),
        Err(DecodeError::LineTooLong { max_line_len: 4 })
    );
}

#[test]
fn line_encoding_round_trips_and_refuses_what_would_not() {
    for t in [Terminator::Lf, Terminator::CrLf, Terminator::LfOrCrLf] {
        let mut c = lines(t, 8);
        let mut wire = Vec::new();
        for f in [&b"a"[..], b"", b"b\rc", b"12345678"] {
            c.encode(f, &mut wire).unwrap();
        }
        let (frames, err) = decode_chunked(&mut c, &wire, 3);
        assert_eq!(err, None);
        assert_eq!(
            frames,
            vec![
                b"a".to_vec(),
                b"".to_vec(),
                b"b\rc".to_vec(),
                b"12345678".to_vec()
            ]
        );
        assert_eq!(
            c.encode(b"123456789", &mut wire),
            Err(EncodeError::LineTooLong { max_line_len: 8 })
        );
    }
    let mut out = Vec::new();
    assert_eq!(
        lines(Terminator::Lf, 8).encode(b"a\nb", &mut out),
        Err(EncodeError::ContainsTerminator)
    );
    assert_eq!(
        lines(Terminator::CrLf, 8).encode(b"a\r\nb", &mut out),
        Err(EncodeError::ContainsTerminator)
    );
    lines(Terminator::CrLf, 8)
        .encode(b"a\nb", &mut out)
        .unwrap();
    assert_eq!(out, b"a\nb\r\n");
}

#[test]
fn blocks_split_input_into_fixed_frames() {
    let mut c = BlockCodec::new(3).unwrap();
    let (frames, err) = decode_chunked(&mut c, b"abcdefgh", 2);
    assert_eq!(err, None);
    assert_eq!(frames, vec![b"abc".to_vec(), b"def".to_vec()]);
    let mut out = Vec::new();
    c.encode(b"abcdef", &mut out).unwrap();
    assert_eq!(
        c.encode(b"ab", &mut out),
        Err(EncodeError::NotBlockMultiple { block_len: 3 })
    );
    assert_eq!(out, b"abcdef");
    assert_eq!(
        BlockCodec::new(0),
        Err(ConfigError::Zero { field: "block_len" })
    );
    assert_eq!(
        LineCodec::new(Terminator::Lf, 0),
        Err(ConfigError::Zero {
            field: "max_line_len"
        })
    );
}

#[test]
fn raw_passes_everything_through() {
    let mut c = RawCodec;
    let (frames, err) = decode_chunked(&mut c, b"hello", 2);
    assert_eq!(err, None);
    assert_eq!(frames.concat(), b"hello");
    assert_eq!(c.decode(b"", 0, &mut Vec::new()), Ok(None));
    let mut out = Vec::new();
    c.encode(b"\n\r\0", &mut out).unwrap();
    assert_eq!(out, b"\n\r\0");
}

#[test]
fn framing_dispatches_and_bounds_pending_input() {
    let mut f = Framing::default();
    let mut out = Vec::new();
    f.encode(b"hi", &mut out).unwrap();
    assert_eq!(out, b"hi\r\n");
    let mut frame = Vec::new();
    assert_eq!(f.decode(&out, 0, &mut frame), Ok(Some(4)));
    assert_eq!(frame, b"hi");
    assert_eq!(f.max_pending_len(), Some(8 * 1024 + 2));
    assert_eq!(
        Framing::Blocks(BlockCodec::new(4).unwrap()).max_pending_len(),
        Some(4)
    );
    assert_eq!(Framing::Raw(RawCodec).max_pending_len(), None);
}
