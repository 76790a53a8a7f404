//! The event loop's clients: each one's socket and buffers ([`Connection`]), and what they
//! share (the event loop itself).
//!
//! A blocking server keeps a client's state on the stack of the code serving it: "read a line,
//! answer it" is straight-line code. An event loop serves a client a little at a time, between
//! everyone else's turns, so whatever is half done must be kept here: the bytes of a line not
//! yet complete (`input`) and the bytes of replies the kernel has not taken yet (`output`).

use std::io::{self, Write};
use std::net::TcpStream;
use std::time::Instant;

use common::framing::LineFramer;
use common::protocol;
use common::session::Shared;

use crate::readiness::Interest;
use crate::EventLoop;

/// The most output one client may have waiting in our memory (on top of what the kernel's
/// socket buffer holds). A client that asks and asks but never reads its replies, or that
/// stopped reading while others `SAY` things to it, would otherwise make us hold ever more.
/// Past the cap the event loop **disconnects it**, as Redis does with its
/// `client-output-buffer-limit`: to stop reading from it instead would not stop others' `SAY`s.
pub const OUTPUT_CAP: usize = 256 * 1024;

/// What the event loop keeps for one connected client.
pub struct Connection {
    pub stream: TcpStream,
    pub id: u64,
    /// Bytes received but not yet a whole line.
    pub input: LineFramer,
    /// Replies and `MSG` lines not yet taken by the kernel.
    pub output: Vec<u8>,
    /// What the readiness API currently watches this socket for.
    pub watching: Interest,
    /// Set once we read no more (QUIT answered, or the client closed its side): close the
    /// connection as soon as `output` is sent. Holds what to narrate then.
    pub closing: Option<String>,
    /// When it last sent something (for `--idle-timeout`).
    pub last_heard: Instant,
}

impl Connection {
    /// A client just accepted and watched for reading, with nothing received or to send yet.
    pub fn new(stream: TcpStream, id: u64) -> Self {
        Connection {
            stream,
            id,
            input: LineFramer::new(),
            output: Vec::new(),
            watching: Interest::READ,
            closing: None,
            last_heard: Instant::now(),
        }
    }

    /// Appends one line to the output buffer. Nothing is written yet: see `write_pending`.
    pub fn queue(&mut self, line: &str) {
        self.output.extend_from_slice(line.as_bytes());
        self.output.push(b'\n');
    }

    /// Writes what is waiting until all is sent or the kernel takes no more (`Ok` either way).
    pub fn write_pending(&mut self) -> io::Result<()> {
        // Task 2: a client's output buffer: keep what the kernel does not take.
        // A non-blocking write may take only part of the buffer (the client reads slowly and the
        // kernel's socket buffer is full), or nothing (WouldBlock). Remove what was written,
        // keep the rest, and never wait.
        while !self.output.is_empty() {
            match (&self.stream).write(&self.output) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.output.drain(..n); // a partial write: keep the rest
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        self.output = Vec::new(); // all sent: an idle client holds no memory here
        Ok(())
        // End of task 2.
    }
}

/// What the clients share: they all live in the event loop's one thread, so "shared" is just
/// "in the event loop".
impl Shared for EventLoop {
    fn incr(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    fn say(&mut self, from: u64, text: &str) -> Result<(), String> {
        let line = protocol::msg(from, text);
        // The sender is out of `clients` while it is served: these are the others.
        for (&fd, other) in self.clients.iter_mut() {
            if other.closing.is_none() {
                other.queue(&line);
                self.touched.push(fd);
            }
        }
        Ok(())
    }
}
