//! Cutting a byte stream into lines.
//!
//! TCP delivers a *stream* of bytes, not messages: one `read()` may return half a line, or three
//! lines and the start of a fourth. So every server needs a framer that keeps the bytes of an
//! unfinished line until its `\n` arrives. It also has to protect the server: a client that sends a
//! megabyte without a newline must not make the server hold a megabyte. The [`LineFramer`] keeps
//! at most one line's worth of unfinished bytes; past [`MAX_LINE`] it reports
//! [`Frame::TooLong`] once and throws the rest of that line away until the next `\n`.
//!
//! [`LineFramer`] does no I/O itself, so the same code serves the event loop of lab04 (feed it
//! whatever a non-blocking `read` returned) and the blocking labs, through [`LineReader`].

use std::io::{self, Read};

use crate::protocol::MAX_LINE;

/// One thing a framer can hand out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A complete line, without its `\n` (a `\r` before it is still there: see
    /// [`crate::protocol::decode_line`]).
    Line(Vec<u8>),
    /// A line grew past [`MAX_LINE`]; what was kept of it is gone and the rest of it, up to the
    /// next `\n`, will be thrown away as it arrives.
    TooLong,
}

/// Keeps the bytes of the line being received until it is complete. See the module docs.
#[derive(Debug, Default)]
pub struct LineFramer {
    /// Bytes received and not yet handed out. `buf[start..]` is what is left.
    buf: Vec<u8>,
    start: usize,
    /// Where to resume looking for `\n` (everything before it in `buf[start..]` has none).
    scanned: usize,
    /// We are inside an over-long line: drop bytes until the next `\n`.
    discarding: bool,
    /// A `TooLong` was detected and not yet handed out.
    too_long_pending: bool,
}

/// The most unfinished bytes a framer keeps: a full line plus its optional `\r`.
const MAX_PENDING: usize = MAX_LINE + 1;

impl LineFramer {
    /// An empty framer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds bytes just received. Call [`next_frame`](Self::next_frame) until it returns `None`
    /// before feeding more, so the framer never holds more than one read plus one line.
    pub fn feed(&mut self, mut data: &[u8]) {
        if self.discarding {
            match data.iter().position(|&b| b == b'\n') {
                Some(newline) => {
                    self.discarding = false;
                    data = &data[newline + 1..];
                }
                None => return, // the whole chunk belongs to the over-long line
            }
        }
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
            self.scanned = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// The next complete line or over-long marker, if there is one.
    pub fn next_frame(&mut self) -> Option<Frame> {
        if self.too_long_pending {
            self.too_long_pending = false;
            return Some(Frame::TooLong);
        }
        let pending = &self.buf[self.start..];
        let search_from = self.scanned - self.start;
        if let Some(offset) = pending[search_from..].iter().position(|&b| b == b'\n') {
            let end = search_from + offset; // index of the '\n' in `pending`
            let line = &pending[..end];
            let frame = if is_too_long(line) {
                Frame::TooLong
            } else {
                Frame::Line(line.to_vec())
            };
            self.start += end + 1;
            self.scanned = self.start;
            self.compact();
            return Some(frame);
        }
        // No complete line. If what we hold is already too long, drop it and discard the rest.
        if is_too_long_unfinished(pending) {
            self.buf.clear();
            self.start = 0;
            self.scanned = 0;
            self.discarding = true;
            return Some(Frame::TooLong);
        }
        self.scanned = self.buf.len();
        None
    }

    /// How many bytes of unfinished input the framer holds.
    pub fn pending_bytes(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Called at end of stream: true if an unfinished line (no `\n` yet) was left behind.
    pub fn has_partial_line(&self) -> bool {
        self.pending_bytes() > 0 || self.discarding
    }

    /// Moves the unread bytes to the front once most of the buffer has been handed out, so the
    /// buffer does not grow while a client pipelines many lines.
    fn compact(&mut self) {
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
            self.scanned = 0;
        } else if self.start > 4 * MAX_PENDING && self.start * 2 > self.buf.len() {
            self.buf.drain(..self.start);
            self.scanned -= self.start;
            self.start = 0;
        }
        // Give back memory a big pipelined read left behind.
        if self.buf.is_empty() && self.buf.capacity() > 4 * MAX_PENDING {
            self.buf = Vec::new();
        }
    }
}

/// A complete line (without `\n`) is too long if, without a final `\r`, it has over MAX_LINE bytes.
fn is_too_long(line: &[u8]) -> bool {
    line.strip_suffix(b"\r").unwrap_or(line).len() > MAX_LINE
}

/// An unfinished line is already too long once it has more than MAX_LINE bytes that cannot all be
/// a line plus the `\r` of its terminator.
fn is_too_long_unfinished(partial: &[u8]) -> bool {
    partial.len() > MAX_PENDING || (partial.len() == MAX_PENDING && partial.last() != Some(&b'\r'))
}

/// A blocking reader of frames, for the labs that give each client its own process or thread.
pub struct LineReader<R> {
    inner: R,
    framer: LineFramer,
    chunk: Box<[u8]>,
}

/// What a [`LineReader`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadFrame {
    /// A frame.
    Frame(Frame),
    /// The peer closed its side. `partial` is true if it left an unfinished line (thrown away).
    Closed {
        /// Bytes of an unfinished line were thrown away.
        partial: bool,
    },
}

impl<R: Read> LineReader<R> {
    /// Wraps a byte stream, usually a `TcpStream` (or `&TcpStream`).
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            framer: LineFramer::new(),
            chunk: vec![0; 4096].into_boxed_slice(),
        }
    }

    /// Blocks until a whole frame arrives or the stream ends. An error (for example a reset
    /// connection) is returned as it is; `Interrupted` is returned too, so the caller can check
    /// whether a signal asked it to stop.
    pub fn read_frame(&mut self) -> io::Result<ReadFrame> {
        loop {
            if let Some(frame) = self.framer.next_frame() {
                return Ok(ReadFrame::Frame(frame));
            }
            let n = self.inner.read(&mut self.chunk)?;
            if n == 0 {
                return Ok(ReadFrame::Closed {
                    partial: self.framer.has_partial_line(),
                });
            }
            self.framer.feed(&self.chunk[..n]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames_of(chunks: &[&[u8]]) -> Vec<Frame> {
        let mut framer = LineFramer::new();
        let mut out = Vec::new();
        for chunk in chunks {
            framer.feed(chunk);
            while let Some(f) = framer.next_frame() {
                out.push(f);
            }
        }
        out
    }

    fn line(s: &str) -> Frame {
        Frame::Line(s.as_bytes().to_vec())
    }

    #[test]
    fn several_lines_in_one_read() {
        assert_eq!(
            frames_of(&[b"A\nB\r\nC\n"]),
            [line("A"), line("B\r"), line("C")]
        );
    }

    #[test]
    fn a_line_split_across_reads() {
        assert_eq!(
            frames_of(&[b"EC", b"HO h", b"i\nWH", b"O\n"]),
            [line("ECHO hi"), line("WHO")]
        );
        let bytes = b"ECHO one byte at a time\n";
        let chunks: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(frames_of(&chunks), [line("ECHO one byte at a time")]);
    }

    #[test]
    fn empty_lines_are_lines() {
        assert_eq!(frames_of(&[b"\n\r\n"]), [line(""), line("\r")]);
    }

    #[test]
    fn a_line_of_exactly_max_is_fine_with_or_without_cr() {
        let mut data = vec![b'a'; MAX_LINE];
        data.extend_from_slice(b"\r\n");
        data.extend_from_slice(&[b'b'; MAX_LINE]);
        data.push(b'\n');
        let frames = frames_of(&[&data]);
        assert_eq!(frames.len(), 2);
        assert!(matches!(&frames[0], Frame::Line(l) if l.len() == MAX_LINE + 1));
        assert!(matches!(&frames[1], Frame::Line(l) if l.len() == MAX_LINE));
    }

    #[test]
    fn one_byte_over_is_too_long_and_the_next_line_survives() {
        let mut data = vec![b'a'; MAX_LINE + 1];
        data.extend_from_slice(b"\nWHO\n");
        assert_eq!(frames_of(&[&data]), [Frame::TooLong, line("WHO")]);
    }

    #[test]
    fn a_huge_line_is_reported_once_and_never_held() {
        let mut framer = LineFramer::new();
        let mut out = Vec::new();
        let chunk = vec![b'x'; 1000];
        for _ in 0..1000 {
            // one megabyte, no newline
            framer.feed(&chunk);
            while let Some(f) = framer.next_frame() {
                out.push(f);
            }
            assert!(framer.pending_bytes() <= MAX_PENDING + chunk.len());
        }
        assert_eq!(
            out,
            [Frame::TooLong],
            "reported as soon as it is known, once"
        );
        framer.feed(b"xxx\nECHO after\n");
        assert_eq!(framer.next_frame(), Some(line("ECHO after")));
        assert_eq!(framer.next_frame(), None);
        assert_eq!(framer.pending_bytes(), 0);
    }

    #[test]
    fn too_long_detected_in_a_single_big_read_with_newline() {
        let mut data = vec![b'x'; 10 * MAX_LINE];
        data.extend_from_slice(b"\nINCR\n");
        assert_eq!(frames_of(&[&data]), [Frame::TooLong, line("INCR")]);
    }

    #[test]
    fn many_pipelined_lines_do_not_grow_the_buffer() {
        let mut framer = LineFramer::new();
        let mut count = 0;
        for _ in 0..100 {
            framer.feed(&b"ECHO x\n".repeat(100));
            while let Some(f) = framer.next_frame() {
                assert_eq!(f, line("ECHO x"));
                count += 1;
            }
            assert_eq!(framer.pending_bytes(), 0);
        }
        assert_eq!(count, 10_000);
    }

    #[test]
    fn partial_line_at_end_is_reported() {
        let mut reader = LineReader::new(&b"WHO\nECH"[..]);
        assert_eq!(reader.read_frame().unwrap(), ReadFrame::Frame(line("WHO")));
        assert_eq!(
            reader.read_frame().unwrap(),
            ReadFrame::Closed { partial: true }
        );
        let mut reader = LineReader::new(&b"WHO\n"[..]);
        reader.read_frame().unwrap();
        assert_eq!(
            reader.read_frame().unwrap(),
            ReadFrame::Closed { partial: false }
        );
    }

    #[test]
    fn invalid_utf8_is_still_a_line() {
        // Framing is about bytes; decoding is the protocol's job.
        assert_eq!(frames_of(&[b"\xff\xfe\n"]), [Frame::Line(vec![0xff, 0xfe])]);
    }
}
