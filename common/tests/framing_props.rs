//! Property tests of the framer and the parser: for *any* input, cut into *any* chunks.
//!
//! - framing does not depend on how TCP happened to cut the stream;
//! - the framer never holds more than one line plus one read, whatever arrives;
//! - no input makes the framer or the parser panic, nor any line the framer hands out.

use common::framing::{Frame, LineFramer};
use common::protocol::{parse_line, MAX_LINE};
use proptest::prelude::*;

/// Frames `data` fed in pieces cut at `cuts` (positions, any order, may repeat).
fn frames_with_cuts(data: &[u8], cuts: &[usize]) -> (Vec<Frame>, usize) {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
    cuts.push(0);
    cuts.push(data.len());
    cuts.sort_unstable();
    cuts.dedup();
    let mut framer = LineFramer::new();
    let mut frames = Vec::new();
    let mut most_held = 0;
    for pair in cuts.windows(2) {
        let chunk = &data[pair[0]..pair[1]];
        framer.feed(chunk);
        while let Some(frame) = framer.next_frame() {
            frames.push(frame);
        }
        // After draining, only an unfinished line (at most MAX_LINE + '\r') may be held.
        most_held = most_held.max(framer.pending_bytes());
    }
    (frames, most_held)
}

/// A short random pattern repeated up to thousands of times: long lines of any bytes (invalid
/// UTF-8, `\r`, NUL) and long runs of short lines, cheaply.
fn repeated_stream() -> impl Strategy<Value = Vec<u8>> {
    (proptest::collection::vec(any::<u8>(), 1..24), 1..3000usize)
        .prop_map(|(pattern, times)| pattern.repeat(times))
}

/// Bytes that look like a protocol stream: short lines, long lines, `\r`, invalid UTF-8.
fn stream() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        4 => proptest::collection::vec(any::<u8>(), 0..40),
        2 => Just(b"\n".to_vec()),
        1 => Just(b"\r\n".to_vec()),
        1 => (MAX_LINE - 2..MAX_LINE + 3).prop_map(|n| vec![b'a'; n]),
        1 => Just(vec![b'z'; 3 * MAX_LINE]),
    ];
    proptest::collection::vec(piece, 0..12).prop_map(|pieces| pieces.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn any_chunking_gives_the_same_frames(data in stream(), cuts in proptest::collection::vec(any::<usize>(), 0..30)) {
        let (whole, held_whole) = frames_with_cuts(&data, &[]);
        let (chunked, most_held) = frames_with_cuts(&data, &cuts);
        prop_assert_eq!(&whole, &chunked);
        prop_assert!(held_whole <= MAX_LINE + 1, "held {} bytes after one big read", held_whole);
        prop_assert!(most_held <= MAX_LINE + 1, "held {} bytes", most_held);
        for frame in &whole {
            if let Frame::Line(line) = frame {
                prop_assert!(line.len() <= MAX_LINE + 1);
                prop_assert!(!line.contains(&b'\n'));
                let _ = parse_line(line); // any framed line parses without a panic
            }
        }
    }

    #[test]
    fn a_repeated_pattern_frames_the_same_in_any_chunks_and_stays_bounded(data in repeated_stream(), cuts in proptest::collection::vec(any::<usize>(), 0..30)) {
        let (whole, held_whole) = frames_with_cuts(&data, &[]);
        let (chunked, held_chunked) = frames_with_cuts(&data, &cuts);
        prop_assert_eq!(&whole, &chunked);
        prop_assert!(held_whole <= MAX_LINE + 1, "held {} bytes after one big read", held_whole);
        prop_assert!(held_chunked <= MAX_LINE + 1, "held {} bytes", held_chunked);
        for frame in &whole {
            if let Frame::Line(line) = frame {
                prop_assert!(line.len() <= MAX_LINE + 1);
                let _ = parse_line(line); // any framed line parses without a panic
            }
        }
    }

    #[test]
    fn one_byte_at_a_time_is_the_same_as_all_at_once(data in stream()) {
        let every_byte: Vec<usize> = (0..data.len()).collect();
        prop_assert_eq!(frames_with_cuts(&data, &[]).0, frames_with_cuts(&data, &every_byte).0);
    }

    #[test]
    fn the_parser_never_panics(line in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = parse_line(&line);
    }

    #[test]
    fn echo_returns_any_text_unchanged(text in "[^\r\n]{0,100}") {
        let line = format!("ECHO {text}");
        prop_assert_eq!(parse_line(line.as_bytes()), Ok(common::protocol::Request::Echo(text)));
    }
}
