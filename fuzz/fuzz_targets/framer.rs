//! Fuzzes `common::framing::LineFramer` and the request parser: for any byte stream, cut into
//! any chunks (the first bytes of the input choose the chunk sizes), the framer hands out the same
//! frames as when the stream arrives whole, never holds more than one line plus one chunk, and
//! nothing panics.

#![no_main]

use common::framing::{Frame, LineFramer};
use common::protocol::{self, MAX_LINE};
use libfuzzer_sys::fuzz_target;

/// Feeds `chunks` one after another, taking every frame after each, and checks the bound.
fn frames_of<'a>(chunks: impl Iterator<Item = &'a [u8]>) -> Vec<Frame> {
    let mut framer = LineFramer::new();
    let mut frames = Vec::new();
    for chunk in chunks {
        framer.feed(chunk);
        while let Some(frame) = framer.next_frame() {
            if let Frame::Line(line) = &frame {
                assert!(line.len() <= MAX_LINE + 1, "a line over the limit: {}", line.len());
                // Parsing any line must not panic.
                let _ = protocol::parse_line(line);
            }
            frames.push(frame);
        }
        assert!(
            framer.pending_bytes() <= MAX_LINE + 1,
            "holds {} bytes after a chunk of {}",
            framer.pending_bytes(),
            chunk.len()
        );
    }
    frames
}

fuzz_target!(|input: &[u8]| {
    // The first 8 bytes are chunk sizes (1 to 256, used in turn); the rest is the stream. The
    // fuzzer finds long lines on its own; `repeat` makes over-long ones cheap to reach.
    if input.len() < 9 {
        return;
    }
    let (sizes, rest) = input.split_at(8);
    let repeat = 1 + usize::from(sizes[0] % 4) * 1500;
    let stream: Vec<u8> = rest.iter().copied().cycle().take(rest.len() * repeat).collect();

    let whole = frames_of(std::iter::once(&stream[..]));
    let mut chunks = Vec::new();
    let mut at = 0;
    for size in sizes.iter().cycle() {
        if at >= stream.len() {
            break;
        }
        let end = (at + usize::from(*size) + 1).min(stream.len());
        chunks.push(&stream[at..end]);
        at = end;
    }
    let chunked = frames_of(chunks.into_iter());
    assert_eq!(whole, chunked, "the same stream, whole and in chunks");
});
