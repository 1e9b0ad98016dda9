//! Codec properties: chunking independence, round trip, over-long lines, garbage bytes.

use moor_core::codec::{
    BlockCodec, DecodeError, Decoder, Framing, LineCodec, RawCodec, Terminator,
};
use moor_tests::codec::{check_chunking, check_round_trip, decode_chunked, decode_whole};
use proptest::prelude::*;

fn terminator() -> impl Strategy<Value = Terminator> {
    prop_oneof![
        Just(Terminator::Lf),
        Just(Terminator::CrLf),
        Just(Terminator::LfOrCrLf)
    ]
}

fn framing() -> impl Strategy<Value = Framing> {
    prop_oneof![
        (terminator(), 1usize..40)
            .prop_map(|(t, max)| Framing::Lines(LineCodec::new(t, max).unwrap())),
        (1usize..12).prop_map(|n| Framing::Blocks(BlockCodec::new(n).unwrap())),
        Just(Framing::Raw(RawCodec)),
    ]
}

/// Bytes rich in terminator characters, so lines actually form.
fn wire_bytes() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        prop_oneof![
            3 => Just(b'\n'),
            3 => Just(b'\r'),
            10 => b'a'..=b'e',
            1 => any::<u8>(),
        ],
        0..300,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn decoding_does_not_depend_on_chunking(
        framing in framing(),
        input in wire_bytes(),
        chunks in proptest::collection::vec(1usize..20, 1..8),
    ) {
        check_chunking(framing, &input, &chunks);
        // One byte at a time too.
        check_chunking(framing, &input, &[1]);
    }

    #[test]
    fn encoding_then_decoding_gives_the_frames_back(
        framing in framing(),
        frames in proptest::collection::vec(wire_bytes(), 0..12),
        chunks in proptest::collection::vec(1usize..20, 1..8),
    ) {
        check_round_trip(framing, &frames, &chunks);
    }

    #[test]
    fn clean_lines_always_round_trip(
        t in terminator(),
        frames in proptest::collection::vec(
            proptest::collection::vec(b'a'..=b'z', 0..30), 1..10),
        chunk in 1usize..16,
    ) {
        let accepted = check_round_trip(
            Framing::Lines(LineCodec::new(t, 30).unwrap()), &frames, &[chunk]);
        prop_assert_eq!(accepted, frames.len());
    }

    #[test]
    fn an_over_long_line_is_an_error_in_any_chunking(
        t in terminator(),
        max in 1usize..32,
        extra in 1usize..40,
        terminated in any::<bool>(),
        chunk in 1usize..50,
    ) {
        let mut input = vec![b'x'; max + extra];
        if terminated {
            input.extend_from_slice(b"\r\n");
        }
        let mut codec = LineCodec::new(t, max).unwrap();
        let (frames, err) = decode_chunked(&mut codec, &input, &[chunk]);
        prop_assert!(frames.is_empty());
        // Unterminated input one byte past the maximum may still end in "\r\n" for the CR modes.
        let certain = terminated || extra > 1 || t == Terminator::Lf;
        if certain {
            prop_assert_eq!(err, Some(DecodeError::LineTooLong { max_line_len: max }));
        }
    }

    #[test]
    fn garbage_never_panics_and_pending_stays_bounded(
        framing in framing(),
        input in proptest::collection::vec(any::<u8>(), 0..400),
        chunks in proptest::collection::vec(1usize..64, 1..8),
    ) {
        check_chunking(framing, &input, &chunks);
        // Whatever the bytes, a line codec never asks the caller to hold more than max + 2.
        if let Framing::Lines(l) = framing {
            let mut codec = l;
            let mut frame = Vec::new();
            let bound = l.max_line_len() + 2;
            for end in 0..=input.len().min(bound) {
                if let Ok(None) = codec.decode(&input[..end], 0, &mut frame) {
                    prop_assert!(end < bound);
                }
            }
        }
    }
}

#[test]
fn whole_and_byte_by_byte_agree_on_a_mixed_stream() {
    let input = b"GET / HTTP/1.0\r\nHost: x\r\n\r\nbody";
    let framing = Framing::Lines(LineCodec::new(Terminator::CrLf, 64).unwrap());
    let (frames, err) = decode_whole(&mut framing.clone(), input);
    assert_eq!(err, None);
    assert_eq!(
        frames,
        vec![b"GET / HTTP/1.0".to_vec(), b"Host: x".to_vec(), Vec::new()]
    );
    check_chunking(framing, input, &[1]);
}
