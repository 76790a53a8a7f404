//! Each client's outbox: a short queue of lines, and the one thread that writes them out.
//!
//! Two kinds of lines go to a client: the replies its own thread produces, and the `MSG` lines
//! that *other* clients' threads produce with `SAY`, at any moment. If several threads wrote to
//! the socket directly, two lines could interleave in the middle ("OK 3" cut by "MSG 2 hi"), and
//! worse, a `SAY` would block inside `write()` as soon as one recipient stopped reading and its
//! socket buffers filled up: one sleepy client would freeze the chat for everyone.
//!
//! So every client gets:
//!
//! - a *bounded* channel of [`OUTBOX_LINES`] whole lines (`std::sync::mpsc::sync_channel`), and
//! - a writer thread, the only code that ever writes to that client's socket. It takes one line
//!   at a time from the channel and writes it whole.
//!
//! The client's own thread puts its replies in with a blocking `send` (if its own client is slow,
//! only it waits). Other threads put `MSG` lines in with `try_send`, which never waits: when the
//! outbox is full the recipient has stopped reading, and the chat room disconnects it (see
//! `room.rs`). The writer also gives up on a client that accepts nothing for [`WRITE_TIMEOUT`].
//!
//! What is queued for one client is therefore bounded: at most [`OUTBOX_LINES`] lines here, plus
//! what the kernel's socket buffers hold. The outbox fills only once those buffers are full, that
//! is, once the client has left megabytes unread: its own replies count too, so a client that
//! sends request after request and never reads the answers is cut off by the next `MSG` as well.

use std::io::{self, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use common::narrate;

/// How many lines may wait in one client's outbox. With lines of at most ~4 KiB, that is at most
/// about 130 KiB per client, on top of the kernel's socket buffers.
pub const OUTBOX_LINES: usize = 32;

/// A `write()` to a client that makes no progress for this long fails (`SO_SNDTIMEO`), and the
/// writer disconnects that client: it has stopped reading.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// One whole line, with its `\n`.
pub type Line = Vec<u8>;

/// The client thread's end of the outbox. It implements [`Write`] so that
/// `common::session::serve_blocking` can use it as the client's writer: bytes are collected
/// until `flush()`, which queues them as one line (`send_line` writes a line and its `\n`, then
/// flushes, so a line is never split).
pub struct Outbox {
    lines: SyncSender<Line>,
    pending: Vec<u8>,
}

impl Outbox {
    /// Another handle on the same queue, for the chat room to put `MSG` lines in.
    pub fn sender(&self) -> SyncSender<Line> {
        self.lines.clone()
    }
}

impl Write for Outbox {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.pending.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let line = std::mem::take(&mut self.pending);
        // Blocks while the outbox is full: only this client's own thread waits for its client.
        self.lines.send(line).map_err(|_| {
            io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the writer thread has stopped (the client is gone or was cut off)",
            )
        })
    }
}

/// Creates client `id`'s outbox and starts its writer thread. The socket is shared (`Arc`): the
/// client's thread reads from it, the writer writes to it, and it is closed when the last of
/// them lets go of it.
///
/// The writer thread ends when every sender is gone (the client's thread and the chat room both
/// let go of the outbox) and the queued lines are written, or when a write fails.
pub fn open(socket: Arc<TcpStream>, id: u64) -> io::Result<(Outbox, JoinHandle<()>)> {
    socket.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let (lines, queue) = mpsc::sync_channel(OUTBOX_LINES);
    let writer = thread::Builder::new()
        .name(format!("writer-{id}"))
        .spawn(move || write_lines(&socket, queue, id))?;
    let outbox = Outbox {
        lines,
        pending: Vec::new(),
    };
    Ok((outbox, writer))
}

/// The writer thread: one whole line at a time, in the order they were queued.
fn write_lines(socket: &TcpStream, queue: Receiver<Line>, id: u64) {
    // `for` on a Receiver waits for the next line and stops once every sender is dropped.
    for line in queue {
        // `&TcpStream` implements Write: the writer and the reader share the one socket.
        if let Err(e) = (&*socket).write_all(&line) {
            if e.kind() == io::ErrorKind::WouldBlock {
                narrate!(
                    "client {id} has read nothing for {} s: disconnecting it",
                    WRITE_TIMEOUT.as_secs()
                );
            }
            // EPIPE/ECONNRESET: the client is gone, or the chat room cut it off. Either way,
            // shut the socket down so that the client's own thread stops reading too.
            let _ = socket.shutdown(Shutdown::Both);
            return;
        }
    }
}
