//! Codec harness: decode a stream in arbitrary chunkings with a caller-side pending buffer, and
//! the `codec` fuzz entry point (chunking independence, round trip, garbage never panics).

use arbitrary::{Arbitrary, Unstructured};
use moor_core::codec::{DecodeError, Decoder, Encoder, Framing};

/// Frames decoded from a stream, and the error that ended it, if any.
pub type Decoded = (Vec<Vec<u8>>, Option<DecodeError>);

/// Decodes `input` delivered in pieces of the given sizes (cycled; 0 counts as 1), as a driver
/// would: append to a pending buffer, decode until "need more", pass the `seen` hint.
pub fn decode_chunked(codec: &mut dyn Decoder, input: &[u8], chunk_lens: &[usize]) -> Decoded {
    let mut pending: Vec<u8> = Vec::new();
    let mut seen = 0;
    let mut frames = Vec::new();
    let mut offset = 0;
    let mut i = 0;
    while offset < input.len() {
        let len = chunk_lens
            .get(i % chunk_lens.len().max(1))
            .copied()
            .unwrap_or(input.len())
            .max(1);
        i += 1;
        let end = (offset + len).min(input.len());
        pending.extend_from_slice(&input[offset..end]);
        offset = end;
        // Each decoded frame consumes at least one byte: bounded by the pending length.
        for _ in 0..=pending.len() {
            let mut frame = Vec::new();
            match codec.decode(&pending, seen, &mut frame) {
                Ok(Some(n)) => {
                    assert!(n >= 1 && n <= pending.len(), "bad consumed count {n}");
                    pending.drain(..n);
                    seen = 0;
                    frames.push(frame);
                }
                Ok(None) => {
                    assert!(frame.is_empty(), "frame bytes appended on need-more");
                    seen = pending.len();
                    break;
                }
                Err(e) => return (frames, Some(e)),
            }
        }
    }
    (frames, None)
}

/// Decodes `input` as one slice.
pub fn decode_whole(codec: &mut dyn Decoder, input: &[u8]) -> Decoded {
    decode_chunked(codec, input, &[input.len().max(1)])
}

/// Checks that `framing` decodes `input` the same in the given chunking as in one slice.
///
/// # Panics
/// If the results differ.
pub fn check_chunking(framing: Framing, input: &[u8], chunk_lens: &[usize]) {
    let (whole, whole_err) = decode_whole(&mut framing.clone(), input);
    let (chunked, chunked_err) = decode_chunked(&mut framing.clone(), input, chunk_lens);
    assert_eq!(whole_err, chunked_err, "{framing:?}: errors differ");
    if matches!(framing, Framing::Raw(_)) {
        // Raw frames are the chunks themselves; their concatenation is what must not change.
        assert_eq!(whole.concat(), chunked.concat());
        assert_eq!(whole.concat(), input);
    } else {
        assert_eq!(whole, chunked, "{framing:?}: frames differ");
    }
}

/// Encodes every frame the codec accepts, decodes the result in the given chunking, and checks
/// the accepted frames come back. Returns how many frames were accepted.
///
/// # Panics
/// If they do not come back.
pub fn check_round_trip(framing: Framing, frames: &[Vec<u8>], chunk_lens: &[usize]) -> usize {
    let mut encoder = framing;
    let mut wire = Vec::new();
    let mut accepted = Vec::new();
    for f in frames {
        let before = wire.len();
        match encoder.encode(f, &mut wire) {
            Ok(()) => accepted.push(f.clone()),
            Err(_) => wire.truncate(before),
        }
    }
    let (decoded, err) = decode_chunked(&mut framing.clone(), &wire, chunk_lens);
    assert_eq!(err, None, "{framing:?}: encoded frames do not decode");
    match framing {
        Framing::Raw(_) => assert_eq!(decoded.concat(), accepted.concat()),
        Framing::Blocks(b) => {
            let len = b.block_len().max(1);
            let want: Vec<Vec<u8>> = accepted.concat().chunks(len).map(<[u8]>::to_vec).collect();
            assert_eq!(decoded, want);
        }
        Framing::Lines(_) => assert_eq!(decoded, accepted, "{framing:?}: round trip"),
    }
    accepted.len()
}

/// Fuzz entry point: a framing, garbage bytes in two chunkings, and frames to round-trip.
pub fn fuzz(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(framing) = Framing::arbitrary(&mut u) else {
        return;
    };
    // Keep lengths small so a fuzz iteration stays fast.
    let framing = match framing {
        Framing::Lines(l) => Framing::Lines(
            moor_core::codec::LineCodec::new(l.terminator(), l.max_line_len() % 64 + 1)
                .expect("non-zero"),
        ),
        Framing::Blocks(b) => Framing::Blocks(
            moor_core::codec::BlockCodec::new(b.block_len() % 16 + 1).expect("non-zero"),
        ),
        raw @ Framing::Raw(_) => raw,
    };
    let chunk_lens: Vec<usize> = (0..u.int_in_range(1..=8u8).unwrap_or(1))
        .map(|_| usize::from(u.int_in_range(1..=32u8).unwrap_or(1)))
        .collect();
    let garbage: Vec<u8> = Vec::arbitrary(&mut u).unwrap_or_default();
    check_chunking(framing, &garbage, &chunk_lens);
    let frames: Vec<Vec<u8>> = Vec::arbitrary(&mut u).unwrap_or_default();
    let _ = check_round_trip(framing, &frames, &chunk_lens);
}
