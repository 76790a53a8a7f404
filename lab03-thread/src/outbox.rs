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
//!    never waits. A writer thread of the recipient takes the lines out and writes them. When the
//!    outbox is full the recipient has stopped reading, and the chat room disconnects it (see
//!    `room.rs`).
//!
//! The writer thread is started by the first `MSG` line a client is sent, not when it connects:
//! most connections never take part in a chat, and starting a thread is the most expensive thing
//! this server does for a connection (a `clone3` system call, and an `mmap` for the new stack).
//! With a writer thread started for every connection, the bench's `connect` workload measured
//! `--pool 8` at 190–240 µs of CPU per connection (1.9–2.2× the connections per second of lab02's
//! fork per client); with writers started only when needed, at 95–118 µs (3.15–3.48×). See
//! docs/benchmarks.md.
//!
//! A client's own replies take the short way: its thread writes them itself, under the same
//! lock. If its client is slow, only that thread waits; and a client that takes nothing for
//! [`WRITE_TIMEOUT`] is disconnected.
//!
//! Why not send the replies through the outbox too? The first version of this lab did, so that
//! one writer thread was the only code writing to a socket. It was simple and correct, and slow:
//! every request then woke the writer thread, a hand-off between two threads (a futex wake-up and
//! two context switches) for each reply. With 100 clients the bench measured 31k requests per
//! second that way, and 53k with the replies written directly (docs/benchmarks.md).
//!
//! The write half is a second descriptor for the same socket (`try_clone`, that is, `dup()`):
//! `/proc/<pid>/fd` shows two descriptors per client. Both name one socket; `shutdown` on either
//! shuts the socket down for both.

use std::io::{self, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};

use common::narrate;
use common::session::WRITE_TIMEOUT;

/// How many `MSG` lines may wait in one client's outbox. With lines of at most ~4 KiB, that is
/// at most about 130 KiB per client, on top of the kernel's socket buffers.
pub const OUTBOX_LINES: usize = 32;

/// One whole line, with its `\n`.
pub type Line = Vec<u8>;

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
                narrate!(
                    "client {} has read nothing for {} s: disconnecting it",
                    self.id,
                    WRITE_TIMEOUT.as_secs()
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

/// Client `id`'s outbox: where other clients' threads put the `MSG` lines for it.
pub struct Outbox {
    id: u64,
    lines: SyncSender<Line>,
    writer: Mutex<WriterThread>,
}

/// The outbox's writer thread, which exists only once the client has been sent something.
enum WriterThread {
    /// No line yet: what the thread will need, kept until then.
    NotStarted(Receiver<Line>, Writer),
    /// Writing the lines, in order, until the client leaves.
    Running(JoinHandle<()>),
    /// The client has left, or the thread could not be started.
    Stopped,
}

impl Outbox {
    /// Queues one line without ever waiting. `Full`: the client has [`OUTBOX_LINES`] lines
    /// waiting, so it is not reading. `Disconnected`: the client is leaving (its writer thread has
    /// stopped, or will never start).
    pub fn try_send(&self, line: Line) -> Result<(), TrySendError<Line>> {
        self.lines.try_send(line)
    }

    /// Starts the writer thread if it is not running yet. The chat room calls this after a
    /// `SAY`, *outside* its lock: a thread takes tens of microseconds to start, far too long to
    /// make every other client wait for the lock.
    pub fn start_writer(&self) {
        let mut state = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let now = std::mem::replace(&mut *state, WriterThread::Stopped);
        let WriterThread::NotStarted(queue, writer) = now else {
            *state = now; // already running, or the client has left: leave it as it was
            return;
        };
        let socket = Arc::clone(&writer.socket);
        let spawned = thread::Builder::new()
            .name(format!("writer-{}", self.id))
            .spawn(move || write_messages(&writer, queue));
        match spawned {
            Ok(thread) => {
                *state = WriterThread::Running(thread);
                drop(state); // (never print while holding a lock)
                narrate!(
                    "client {} was sent its first MSG: started thread writer-{} for its MSG lines",
                    self.id,
                    self.id
                );
            }
            Err(e) => {
                drop(state);
                // EAGAIN: out of threads or memory. Without a writer its lines would pile up:
                // cut it off now (its own thread sees end-of-file and ends).
                narrate!(
                    "cannot start thread writer-{}: {e}; disconnecting it",
                    self.id
                );
                let socket = socket.lock().unwrap_or_else(PoisonError::into_inner);
                let _ = socket.shutdown(Shutdown::Both);
            }
        }
    }

    /// The client is leaving: no writer thread may start any more. Returns the running one, if
    /// any (it ends once it has written what is queued and the last `Arc<Outbox>`, and the
    /// sending end with it, is gone).
    fn stop(&self) -> Option<JoinHandle<()>> {
        let mut state = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        match std::mem::replace(&mut *state, WriterThread::Stopped) {
            WriterThread::Running(thread) => Some(thread),
            WriterThread::NotStarted(..) | WriterThread::Stopped => None,
        }
    }

    /// An outbox without a writer thread: the test reads the lines itself.
    #[cfg(test)]
    pub fn for_test(id: u64, lines: usize) -> (Arc<Outbox>, Receiver<Line>) {
        let (sender, queue) = mpsc::sync_channel(lines);
        let outbox = Outbox {
            id,
            lines: sender,
            writer: Mutex::new(WriterThread::Stopped),
        };
        (Arc::new(outbox), queue)
    }
}

/// Opens client `id`'s ways out: the [`Replies`] its own thread writes through, and its
/// [`Outbox`] (for the chat room). No thread is started here.
pub fn open(socket: &TcpStream, id: u64) -> io::Result<(Replies, Arc<Outbox>)> {
    // SO_SNDTIMEO belongs to the socket, so it applies to both descriptors.
    socket.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let writer = Writer {
        socket: Arc::new(Mutex::new(socket.try_clone()?)), // dup(): the write half
        id,
    };
    let (lines, queue) = mpsc::sync_channel(OUTBOX_LINES);
    let outbox = Outbox {
        id,
        lines,
        writer: Mutex::new(WriterThread::NotStarted(queue, writer.clone())),
    };
    let replies = Replies {
        writer,
        pending: Vec::new(),
    };
    Ok((replies, Arc::new(outbox)))
}

/// The client's thread calls this when its client leaves (after leaving the chat room): the
/// writer thread, if one was started, writes what is still queued and ends, and we wait for it.
/// It takes the client's own `Arc` of the outbox because that must be gone before we wait:
/// while any `Arc` holds the sending end, the writer waits for more lines, forever.
pub fn close(outbox: Arc<Outbox>) {
    let writer = outbox.stop();
    drop(outbox);
    if let Some(writer) = writer {
        let _ = writer.join();
    }
}

/// The writer thread: the `MSG` lines of the outbox, one whole line at a time, in order.
fn write_messages(writer: &Writer, queue: Receiver<Line>) {
    // `for` on a Receiver waits for the next line and stops once every sender is dropped.
    for line in queue {
        if writer.write_line(&line).is_err() {
            return;
        }
    }
}
