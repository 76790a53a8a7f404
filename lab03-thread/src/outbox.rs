//! Each client's way out: the replies its own thread writes, and the `MSG` lines that other
//! clients' threads send it.
//!
//! Two kinds of lines go to a client: the replies its own thread produces, and the `MSG` lines
//! that *other* clients' threads produce with `SAY`, at any moment. Two rules keep that safe:
//!
//! 1. **Lines never interleave** ("OK 3" cut in the middle by "MSG 2 hi"). Every line is written
//!    whole while holding the client's write lock: the write half of its socket lives in a
//!    `Mutex` ([`Writer`]), and whoever writes a line holds that mutex for the whole line.
//! 2. **A `SAY` never waits for a slow recipient.** A client that stops reading fills its socket
//!    buffers, and then a `write()` to it blocks: one sleepy client would freeze the chat for
//!    everyone. So a `MSG` line is not written by the sender's thread: it is put in the
//!    recipient's [`Outbox`], a bounded channel of [`OUTBOX_LINES`] lines, with `try_send`, which
//!    never waits. The recipient's own writer thread, started when it connects, takes the lines
//!    out and writes them. When the outbox is full the recipient has stopped reading, and the
//!    chat room disconnects it (see `room.rs`).
//!
//! A client's own replies take the short way: its thread writes them itself, under the same
//! lock. If its client is slow, only that thread waits; and a client that takes nothing for
//! [`WRITE_TIMEOUT`] is disconnected. (Sending the replies through the outbox as well would
//! break rule 2: a client busy reading a long run of its own replies would fill its outbox
//! with them, and the next `SAY` would cut it off.)
//!
//! The write half is a second descriptor for the same socket (`try_clone`, that is, `dup()`):
//! `/proc/<pid>/fd` shows two descriptors per client. Both name one socket; `shutdown` on either
//! shuts the socket down for both.

use std::io::{self, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};

use common::narrate;
use common::session::WRITE_TIMEOUT;

/// How many `MSG` lines may wait in one client's outbox. With lines of at most ~4 KiB, that is
/// at most about 130 KiB per client, on top of the kernel's socket buffers.
pub const OUTBOX_LINES: usize = 32;

/// One whole line, with its `\n`.
pub type Line = Vec<u8>;

/// Where other clients' threads put the `MSG` lines for one client: the sending end of a
/// bounded channel. Only the chat room holds it; once the room lets go of it, the client's
/// writer thread writes what is still queued and ends.
pub type Outbox = SyncSender<Line>;

/// The write half of a client's socket, behind the lock that keeps its lines whole.
#[derive(Clone)]
pub struct Writer {
    socket: Arc<Mutex<TcpStream>>,
    id: u64,
}

impl Writer {
    /// Writes one whole line, holding the lock for all of it. On failure the socket is shut
    /// down, so that the client's own thread, blocked in `read()`, stops too.
    fn write_line(&self, line: &[u8]) -> io::Result<()> {
        // Poisoning (see room.rs) cannot leave a socket half-changed: go on with it.
        let socket = self.socket.lock().unwrap_or_else(PoisonError::into_inner);
        let written = (&*socket).write_all(line);
        if let Err(e) = &written {
            if e.kind() == io::ErrorKind::WouldBlock {
                let secs = WRITE_TIMEOUT.as_secs();
                narrate!(
                    "client {} has read nothing for {secs} s: disconnecting it",
                    self.id
                );
            }
            // EPIPE/ECONNRESET: the client is gone, or the chat room cut it off.
            let _ = socket.shutdown(Shutdown::Both);
        }
        written
    }
}

/// The client's own thread writes its replies through this. It implements [`Write`] so that
/// `common::session::serve_blocking` can use it as the client's writer: bytes are collected
/// until `flush()`, which writes them as one line (`send_line` writes a line and its `\n`, then
/// flushes, so a line is never split).
pub struct Replies {
    writer: Writer,
    pending: Vec<u8>,
}

impl Write for Replies {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.pending.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let written = self.writer.write_line(&self.pending);
        self.pending.clear();
        written
    }
}

/// Opens client `id`'s ways out: the [`Replies`] its own thread writes through, its [`Outbox`]
/// (for the chat room), and the writer thread that empties the outbox, `writer-<id>`.
pub fn open(socket: &TcpStream, id: u64) -> io::Result<(Replies, Outbox, JoinHandle<()>)> {
    // SO_SNDTIMEO belongs to the socket, so it applies to both descriptors.
    socket.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let writer = Writer {
        socket: Arc::new(Mutex::new(socket.try_clone()?)), // dup(): the write half
        id,
    };
    let (outbox, lines) = mpsc::sync_channel(OUTBOX_LINES);
    let messages = writer.clone();
    let thread = thread::Builder::new()
        .name(format!("writer-{id}"))
        .spawn(move || write_messages(&messages, lines))?;
    let replies = Replies {
        writer,
        pending: Vec::new(),
    };
    Ok((replies, outbox, thread))
}

/// The writer thread: the `MSG` lines of the outbox, one whole line at a time, in order.
fn write_messages(writer: &Writer, lines: Receiver<Line>) {
    // `for` on a Receiver waits for the next line and stops once the sender is dropped.
    for line in lines {
        if writer.write_line(&line).is_err() {
            return;
        }
    }
}
