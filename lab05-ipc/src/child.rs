//! One child's life: serve one client, and pass chat messages through the queues.
//!
//! A lab02 child blocks in `read()` on its client's socket: nothing else can reach it. A lab05
//! child must also notice messages arriving in its queue while its client is silent, so it waits
//! in `poll()` on three descriptors at once:
//!
//! ```text
//!   poll([client socket: POLLIN, my queue: POLLIN, wake pipe: POLLIN])
//!          |                      |                  '- SIGTERM/SIGINT arrived: BYE, end
//!          |                      '- mq_receive each message, write `MSG ...` to the client
//!          '- read() the request bytes, answer each complete line (INCR, SAY, ...)
//! ```
//!
//! It is the event loop of lab04 in miniature, with one client instead of many.
//!
//! With `--ipc sysv` the middle descriptor is not a queue (a System V queue cannot be polled) but
//! the child's *chat pipe*, into which its `SIGUSR1` handler writes a byte when a sender says
//! "there is mail for you"; the child then `msgrcv`s its messages (see `sysv.rs`).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use common::framing::LineFramer;
use common::session::{self, Client, Ending, Next, Shared, WRITE_TIMEOUT};
use common::{narrate, protocol, signals};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::chat::{self, Queue};
use crate::names;
use crate::shm::{Board, Listener};
use crate::sysv::{self, MsgQueue};

/// At most this many queued messages are passed on per wake-up, so a busy chat cannot keep the
/// child from reading its own client's requests.
const DELIVER_PER_WAKE: usize = 16;
/// `--ipc sysv`: how often a `SAY` retries a full System V queue (it cannot be polled for room).
const SYSV_RETRY: Duration = Duration::from_millis(10);

/// Everything one child uses. It implements [`Shared`]: `INCR` and `SAY` go through IPC.
struct Child<'a> {
    stream: &'a TcpStream,
    board: &'a Board,
    /// Our own queue, `None` if it could not be created (then this client gets no `MSG`s).
    queue: Option<Queue>,
    /// Read end of this process's self-pipe: readable once SIGTERM/SIGINT arrived.
    wake: BorrowedFd<'static>,
    pid: i32,
    /// The server's (parent's) pid: part of every queue's name.
    server: u32,
    /// A buffer for `mq_receive`, which wants room for the largest message.
    inbox: Vec<u8>,
    /// `--ipc sysv`: the server's one System V queue and our chat pipe (instead of `queue`).
    sysv: Option<(MsgQueue, OwnedFd)>,
}

/// Serves `client` on `stream` in this (forked) child until the client leaves or the server
/// stops. `server` is the parent's pid (for the queue's name); `idle_timeout` is
/// `--idle-timeout`.
pub fn serve(
    stream: TcpStream,
    client: &Client,
    board: &Board,
    server: u32,
    sysv_queue: Option<MsgQueue>,
    idle_timeout: Option<Duration>,
) -> Ending {
    let pid = std::process::id() as i32;
    // Our own self-pipe: made now, in the child, so that it is not shared with other processes.
    let wake = match signals::wake_pipe() {
        // SAFETY: the pipe's read end lives as long as the process (see `signals::wake_pipe`).
        Ok(fd) => unsafe { BorrowedFd::borrow_raw(fd) },
        Err(e) => {
            narrate!("cannot make the wake-up pipe: {e}");
            return Ending::Error(e.kind());
        }
    };
    // Blocking reads and writes (poll tells us when a read will not block), but a write that
    // waits for a client that never reads gives up after WRITE_TIMEOUT.
    // TCP_NODELAY: a MSG line and a reply often leave one right after the other, as two small
    // writes; without it, Nagle's algorithm holds the second until the client's (delayed, up to
    // 40 ms) acknowledgement of the first.
    if let Err(e) = stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_write_timeout(Some(WRITE_TIMEOUT)))
        .and_then(|()| stream.set_nodelay(true))
    {
        narrate!("cannot set the socket options of client {}: {e}", client.id);
    }
    let queue_name = names::queue_name(server, pid);
    let (queue, sysv) = match sysv_queue {
        None => (open_my_queue(board, pid, client.id, &queue_name), None),
        Some(shared) => (None, join_sysv_chat(board, pid, client.id, shared)),
    };
    let mut child = Child {
        stream: &stream,
        board,
        queue,
        wake,
        pid,
        server,
        inbox: vec![0; chat::MESSAGE_SIZE as usize],
        sysv,
    };
    let ending = child.run(client, idle_timeout);

    // Close and remove our queue, then leave the board (in that order, so that the board lists
    // every queue that may exist, should we be killed in between).
    if child.queue.take().is_some() {
        match chat::remove(&queue_name) {
            Ok(()) => narrate!("removed message queue {queue_name}"),
            Err(e) => narrate!("cannot remove message queue {queue_name}: {e}"),
        }
    }
    board.unregister(pid);
    if let Some((shared, _pipe)) = &child.sysv {
        // Messages sent to us after our last look would take room in the shared queue: drop them.
        shared.drain(pid);
    }
    ending
}

/// `--ipc sysv`: make our chat pipe (so a wake-up has somewhere to go), then write our row on the
/// board (from then on, senders send us messages of type `pid` and `SIGUSR1`).
fn join_sysv_chat(
    board: &Board,
    pid: i32,
    client: u64,
    shared: MsgQueue,
) -> Option<(MsgQueue, OwnedFd)> {
    let pipe = match sysv::chat_pipe() {
        Ok(pipe) => pipe,
        Err(e) => {
            narrate!("cannot make the chat pipe: {e}; client {client} will get no chat messages");
            return None;
        }
    };
    if board.register(pid, client).is_none() {
        narrate!("the board is full: client {client} will get no chat messages");
        return None;
    }
    narrate!(
        "listening for messages of type {pid} in System V queue msqid {} (woken by SIGUSR1)",
        shared.id
    );
    Some((shared, pipe))
}

/// Writes our row on the board, then creates our queue (in that order, so that a crashed
/// server's board lists every queue it may have left behind).
fn open_my_queue(board: &Board, pid: i32, client: u64, name: &str) -> Option<Queue> {
    if board.register(pid, client).is_none() {
        narrate!("the board is full: client {client} will get no chat messages");
        return None;
    }
    match Queue::create(name) {
        Ok(queue) => {
            narrate!(
                "created message queue {name} ({} messages of up to {} bytes)",
                chat::QUEUE_DEPTH,
                chat::MESSAGE_SIZE
            );
            Some(queue)
        }
        Err(e) => {
            board.unregister(pid);
            let hint = if e == Errno::EMFILE {
                " (EMFILE here means this user's RLIMIT_MSGQUEUE budget is used up)"
            } else {
                ""
            };
            narrate!("cannot create message queue {name}: {e}{hint}; client {client} will get no chat messages");
            None
        }
    }
}

impl Child<'_> {
    /// The poll loop (see the module docs).
    fn run(&mut self, client: &Client, idle_timeout: Option<Duration>) -> Ending {
        if let Err(e) = self.send(&session::hello(client.model)) {
            return Ending::Error(e.kind());
        }
        let mut framer = LineFramer::new();
        let mut chunk = [0u8; 4096];
        let mut last_heard = Instant::now();
        loop {
            if signals::requested() {
                let _ = self.send(&protocol::bye(""));
                return Ending::Shutdown;
            }
            let timeout = match idle_timeout {
                Some(limit) => {
                    let left = limit.saturating_sub(last_heard.elapsed());
                    if left.is_zero() {
                        let _ = self.send(&protocol::bye("idle"));
                        return Ending::Idle;
                    }
                    PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX)
                }
                None => PollTimeout::NONE,
            };
            let (client_ready, queue_ready) = match self.wait(timeout) {
                Ok(ready) => ready,
                Err(Errno::EINTR) => continue, // a signal: the loop checks why
                Err(e) => return Ending::Error(io::Error::from(e).kind()),
            };
            if queue_ready {
                if let Err(e) = self.deliver_queued() {
                    return Ending::Error(e.kind());
                }
            }
            if !client_ready {
                continue;
            }
            let n = match self.stream.read(&mut chunk) {
                Ok(0) => {
                    return Ending::ClientClosed {
                        partial: framer.has_partial_line(),
                    }
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Ending::Error(e.kind()),
            };
            last_heard = Instant::now();
            framer.feed(&chunk[..n]);
            while let Some(frame) = framer.next_frame() {
                let (reply, next) = session::respond(frame, client, self);
                if let Err(e) = self.send(&reply) {
                    return Ending::Error(e.kind());
                }
                if next == Next::Close {
                    return Ending::Quit;
                }
            }
        }
    }

    /// `poll()` on the client socket, our queue and the wake pipe. Returns (client readable,
    /// queue readable); the wake pipe only needs to wake us (the loop checks the signal flag).
    fn wait(&self, timeout: PollTimeout) -> nix::Result<(bool, bool)> {
        let mut fds = vec![
            PollFd::new(self.stream.as_fd(), PollFlags::POLLIN),
            PollFd::new(self.wake, PollFlags::POLLIN),
        ];
        if let Some(queue) = &self.queue {
            fds.push(PollFd::new(queue.as_fd(), PollFlags::POLLIN));
        }
        if let Some((_, pipe)) = &self.sysv {
            fds.push(PollFd::new(pipe.as_fd(), PollFlags::POLLIN));
        }
        poll(&mut fds, timeout)?;
        let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
        Ok((ready(&fds[0]), fds.get(2).is_some_and(ready)))
    }

    /// Takes messages out of our queue and writes each to the client as a line.
    fn deliver_queued(&mut self) -> io::Result<()> {
        if self.sysv.is_some() {
            return self.deliver_sysv();
        }
        let Some(queue) = &self.queue else {
            return Ok(());
        };
        for _ in 0..DELIVER_PER_WAKE {
            let n = match queue.try_receive(&mut self.inbox) {
                Ok(Some(n)) => n,
                Ok(None) => break,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    narrate!("mq_receive failed: {e}");
                    break;
                }
            };
            let mut line = Vec::with_capacity(n + 1);
            line.extend_from_slice(&self.inbox[..n]);
            line.push(b'\n');
            let mut writer = self.stream;
            writer.write_all(&line)?;
        }
        Ok(())
    }

    /// `--ipc sysv`: empty the chat pipe *first*, then take our messages (type = our pid) out of
    /// the shared queue until there is none. A message sent after we looked brings its own
    /// `SIGUSR1`, hence a new byte in the pipe: no wake-up is lost.
    fn deliver_sysv(&mut self) -> io::Result<()> {
        let Some((queue, pipe)) = &self.sysv else {
            return Ok(());
        };
        sysv::empty_pipe(pipe.as_raw_fd());
        for _ in 0..DELIVER_PER_WAKE {
            let n = match queue.try_receive(self.pid, &mut self.inbox) {
                Ok(Some(n)) => n,
                Ok(None) => return Ok(()),
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    narrate!("msgrcv from msqid {} failed: {e}", queue.id);
                    return Ok(());
                }
            };
            let mut line = Vec::with_capacity(n + 1);
            line.extend_from_slice(&self.inbox[..n]);
            line.push(b'\n');
            let mut writer = self.stream;
            writer.write_all(&line)?;
        }
        // More may wait, but our client comes first: a byte in our own pipe brings us back.
        sysv::wake_myself();
        Ok(())
    }

    /// `--ipc sysv`'s `SAY`: `msgsnd` a message of type `pid` for each other child, then wake it
    /// with `SIGUSR1`. A full queue (EAGAIN; `msgmnb` bytes for all children together) cannot be
    /// polled for room, so we retry every [`SYSV_RETRY`], delivering our own messages meanwhile
    /// (that frees room too), for at most [`chat::SEND_WAIT`] in all.
    fn say_sysv(&mut self, message: &str) -> Result<(), String> {
        let Some((queue, _)) = &self.sysv else {
            return Err("the chat is not available to this client".into());
        };
        let queue = *queue;
        let mut pending: Vec<Listener> = self.board.listeners(self.pid);
        let mut missed = Vec::new();
        let mut delivered = 0;
        let deadline = Instant::now() + chat::SEND_WAIT;
        loop {
            pending.retain(
                |listener| match queue.try_send(listener.pid, message.as_bytes()) {
                    Ok(true) => {
                        delivered += 1;
                        // ESRCH: that child just ended; the parent drains its messages.
                        if let Err(e) = sysv::wake(listener.pid) {
                            narrate!("cannot wake child {} (SIGUSR1): {e}", listener.pid);
                        }
                        false
                    }
                    Ok(false) => true,
                    Err(e) => {
                        narrate!("msgsnd for client {} failed: {e}", listener.client);
                        missed.push(listener.client);
                        false
                    }
                },
            );
            let left = deadline.saturating_duration_since(Instant::now());
            if pending.is_empty() || left.is_zero() || signals::requested() {
                break;
            }
            let mut fds = vec![PollFd::new(self.wake, PollFlags::POLLIN)];
            if let Some((_, pipe)) = &self.sysv {
                fds.push(PollFd::new(pipe.as_fd(), PollFlags::POLLIN));
            }
            let timeout = PollTimeout::try_from(left.min(SYSV_RETRY)).unwrap_or(PollTimeout::MAX);
            let _ = poll(&mut fds, timeout); // EINTR (a SIGUSR1) is fine: we retry either way
            let _ = self.deliver_sysv();
        }
        missed.extend(pending.iter().map(|listener| listener.client));
        missed_report(missed, delivered)
    }

    fn send(&self, line: &str) -> io::Result<()> {
        session::send_line(&mut &*self.stream, line)
    }
}

impl Shared for Child<'_> {
    /// The counter is in shared memory: one atomic add, seen by every child.
    fn incr(&mut self) -> u64 {
        self.board.incr()
    }

    /// Puts `MSG <from> <text>` in the queue of every other child (see `chat.rs` for what
    /// happens when a queue is full).
    fn say(&mut self, from: u64, text: &str) -> Result<(), String> {
        let message = protocol::msg(from, text);
        if self.sysv.is_some() {
            return self.say_sysv(&message);
        }
        let mut missed = Vec::new();
        // Open each recipient's queue, for this message only: an open descriptor keeps a queue's
        // memory counted, so we must not hold on to other children's queues.
        let mut pending: Vec<(u64, Queue)> = Vec::new();
        for listener in self.board.listeners(self.pid) {
            let name = names::queue_name(self.server, listener.pid);
            match Queue::open_for_sending(&name) {
                Ok(queue) => pending.push((listener.client, queue)),
                // That child is ending (or starting): it is not listening, nobody missed anything.
                Err(Errno::ENOENT) => {}
                Err(e) => {
                    narrate!(
                        "cannot open {name} to send to client {}: {e}",
                        listener.client
                    );
                    missed.push(listener.client);
                }
            }
        }
        let deadline = Instant::now() + chat::SEND_WAIT;
        let mut delivered = 0;
        loop {
            // Send to every queue that has room; keep those that are full.
            pending.retain(|(client, queue)| match queue.try_send(message.as_bytes()) {
                Ok(true) => {
                    delivered += 1;
                    false
                }
                Ok(false) => true,
                Err(e) => {
                    narrate!("mq_send to the queue of client {client} failed: {e}");
                    missed.push(*client);
                    false
                }
            });
            let left = deadline.saturating_duration_since(Instant::now());
            if pending.is_empty() || left.is_zero() || signals::requested() {
                break;
            }
            // Wait for room in one of the full queues, but keep passing on what arrives in our
            // own queue meanwhile: its sender may be waiting for room in ours.
            let own_ready = {
                let mut fds: Vec<PollFd> = pending
                    .iter()
                    .map(|(_, queue)| PollFd::new(queue.as_fd(), PollFlags::POLLOUT))
                    .collect();
                fds.push(PollFd::new(self.wake, PollFlags::POLLIN));
                if let Some(own) = &self.queue {
                    fds.push(PollFd::new(own.as_fd(), PollFlags::POLLIN));
                }
                let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
                match poll(&mut fds, timeout) {
                    Ok(_) => {
                        self.queue.is_some()
                            && fds
                                .last()
                                .and_then(PollFd::revents)
                                .is_some_and(|r| !r.is_empty())
                    }
                    Err(_) => false, // EINTR: loop round and check
                }
            };
            if own_ready {
                // A client that is gone shows up in the main loop; nothing to do about it here.
                let _ = self.deliver_queued();
            }
        }
        // `pending` is dropped here: every queue we opened is closed (mq_close).
        missed.extend(pending.iter().map(|(client, _)| *client));
        missed_report(missed, delivered)
    }
}

/// `Ok` if nobody missed the message, else the `ERR` text naming who did.
fn missed_report(mut missed: Vec<u64>, delivered: usize) -> Result<(), String> {
    if missed.is_empty() {
        return Ok(());
    }
    missed.sort_unstable();
    let who: Vec<String> = missed.iter().map(u64::to_string).collect();
    Err(format!(
        "client {} missed it: queue full for {} ms; delivered to {delivered} other client{}",
        who.join(", "),
        chat::SEND_WAIT.as_millis(),
        if delivered == 1 { "" } else { "s" }
    ))
}
