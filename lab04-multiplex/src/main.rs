//! # lab04: the multiplexing server (Multiplexing 방식의 서버)
//!
//! One process, one thread, every client. Instead of blocking in `accept()` or `read()` on one
//! socket (and leaving every other client waiting, like lab01), the server asks the kernel
//! *which* sockets are ready, and only then calls `accept`, `read` or `write` on those: the
//! notes' "블록킹이 발생하는 함수를 호출하기 전 해당 이벤트가 있는지 확인 후 처리". Every socket
//! is non-blocking too, so even a wrong guess costs a `WouldBlock`, never a wait.
//!
//! The event loop, in the order of this file:
//!
//! 1. **register** the listener and the self-pipe, and each client once it is accepted;
//! 2. **wait** until some registered descriptor is ready (`select`, `poll` or `epoll_wait`,
//!    chosen with `--api`: `readiness.rs`, then one file per API);
//! 3. **dispatch** each ready one: the listener → `accept`; a client → `read` what it sent, cut it
//!    into lines and answer each into that client's output buffer (`connection.rs`); the
//!    self-pipe → a stop signal arrived;
//! 4. **write** what the client has waiting. What the kernel does not take now stays in the
//!    buffer, and we ask to be told when the socket is writable again (*write interest*).
//!
//! Because one thread does everything, clients share memory for free: `INCR` is one counter and
//! `SAY` appends to the other clients' output buffers. The price, and the lesson of the notes:
//! whatever blocks the loop blocks **everyone**. `SLEEP 1500` from one client freezes all the
//! others for 1.5 s, and a `PANIC` takes the whole server, with every connection, down
//! ("예외상황에 따른 서버 프로세스의 이상은 모든 연결된 클라이언트에 영향을 줌").

mod accept;
mod args;
mod connection;
mod demo;
mod epoll;
mod poll;
mod readiness;
mod select;

use std::collections::HashMap;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use common::framing::{Frame, LineFramer};
use common::protocol::{self, Request};
use common::session::{self, Client, Next};
use common::{narrate, signals, Model};

use accept::Acceptor;
use args::Args;
use connection::{Connection, OUTPUT_CAP};
use readiness::{Api, Interest, Readiness, Ready};

/// How much one `read` may take from a client.
const READ_CHUNK: usize = 64 * 1024;

/// Edge-triggered, the most reads one client gets per turn. A client that streams faster than
/// we answer would otherwise keep us reading it forever, and every other client would starve.
const READS_PER_TURN: usize = 16;

/// How often to look for clients silent longer than `--idle-timeout`.
const IDLE_SWEEP: Duration = Duration::from_secs(1);

/// The whole server: the listening socket, the readiness API, and every client.
struct EventLoop {
    readiness: Box<dyn Readiness>,
    acceptor: Acceptor,
    /// The self-pipe's read end: readable once a stop signal arrived.
    wake_pipe: RawFd,
    /// Every connected client, by its descriptor: readiness names descriptors.
    clients: HashMap<RawFd, Connection>,
    /// `INCR`: one number, in the one thread's memory.
    counter: u64,
    /// The clients a `SAY` queued a line for, to write once the sender's turn is over.
    touched: Vec<RawFd>,
    next_id: u64,
    args: Args,
    /// Where each `read` puts what a client sent: one buffer for all, since one thread reads.
    read_buffer: Vec<u8>,
}

fn main() {
    let args = Args::parse_checked();
    if let Some(clients) = args.server.demo {
        demo::run(clients);
    }
    common::narration::init(Model::Multiplex, args.server.quiet);
    if let Err(e) = signals::install() {
        common::exit_with_error(&format!("cannot install the signal handlers: {e}"));
    }
    // The signal handler writes a byte into this pipe: a stop signal becomes "a descriptor is
    // readable", something the loop is waiting for anyway (the self-pipe trick).
    let wake_pipe = signals::wake_pipe()
        .unwrap_or_else(|e| common::exit_with_error(&format!("cannot make the self-pipe: {e}")));
    let readiness: Box<dyn Readiness> = match args.api {
        Api::Select => Box::<select::Select>::default(),
        Api::Poll => Box::<poll::Poll>::default(),
        Api::Epoll => Box::new(epoll::Epoll::new(args.edge).unwrap_or_else(|e| {
            common::exit_with_error(&format!("cannot create the readiness API: {e}"))
        })),
    };
    let listener = common::listener::listen(args.server.address(), args.server.backlog);
    let acceptor = Acceptor::new(listener).unwrap_or_else(|e| {
        common::exit_with_error(&format!("cannot make the listener non-blocking: {e}"))
    });
    let mut event_loop = EventLoop {
        readiness,
        acceptor,
        wake_pipe,
        clients: HashMap::new(),
        counter: 0,
        touched: Vec::new(),
        next_id: 1,
        args,
        read_buffer: vec![0; READ_CHUNK],
    };
    event_loop.run();
    event_loop.shut_down();
}

impl EventLoop {
    /// The event loop: register, then wait, dispatch and write, until a stop signal.
    fn run(&mut self) {
        // Task 1: the event loop.
        // Register the listener and the self-pipe, then loop: wait until something is ready,
        // handle each ready descriptor, repeat. Nothing here may block but the wait itself.
        for fd in [self.acceptor.fd(), self.wake_pipe] {
            if let Err(e) = self.readiness.add(fd, Interest::READ) {
                common::exit_with_error(&format!("cannot watch descriptor {fd}: {e}"));
            }
        }
        let api = format!("{:?}", self.args.api).to_lowercase();
        let mode = if self.args.edge { "edge" } else { "level" };
        narrate!("event loop ready: {api}, {mode}-triggered, one thread for every client");
        // With --idle-timeout, wake at least once a second to look for silent clients.
        let timeout = self.args.server.idle_timeout.map(|_| IDLE_SWEEP);
        let mut last_sweep = Instant::now();
        let mut ready = Vec::new();
        while !signals::requested() {
            ready.clear();
            if let Err(e) = self.readiness.wait(timeout, &mut ready) {
                common::exit_with_error(&format!("waiting for readiness failed: {e}"));
            }
            if self.args.trace {
                self.narrate_wake_up(&ready);
            }
            for event in &ready {
                if event.fd == self.acceptor.fd() {
                    self.accept_all();
                } else if event.fd == self.wake_pipe || signals::requested() {
                    return; // a stop signal: the handler set the flag and wrote to the pipe
                } else if event.readable {
                    self.on_readable(event.fd);
                } else if event.writable {
                    self.write_and_watch(event.fd);
                }
            }
            if timeout.is_some() && last_sweep.elapsed() >= IDLE_SWEEP {
                last_sweep = Instant::now();
                self.say_bye_to_idle();
            }
        }
        // End of task 1.
    }

    /// The listener is readable: accept every client waiting in the accept queue, register it
    /// with the readiness API, and greet it.
    fn accept_all(&mut self) {
        while let Some((stream, peer)) = self.acceptor.next() {
            let fd = stream.as_raw_fd();
            if let Err(e) = accept::prepare(&stream, self.args.send_buffer) {
                narrate!("cannot set up the socket of {peer}: {e}; closing it");
                continue;
            }
            // A descriptor select() cannot watch (see `select.rs`), or the kernel out of memory.
            if let Err(e) = self.readiness.add(fd, Interest::READ) {
                narrate!("refused a client from {peer}: {e}; sent ERR server full");
                accept::refuse(stream);
                continue;
            }
            let mut client = Connection::new(stream, self.next_id);
            self.next_id += 1;
            client.queue(&session::hello(Model::Multiplex));
            narrate!(
                "accepted client {} from {peer} (fd {fd}); {} connected now, one thread for all",
                client.id,
                self.clients.len() + 1
            );
            self.clients.insert(fd, client);
            self.write_and_watch(fd);
        }
    }

    /// The client's socket is readable: read what it sent, answer every complete line, write.
    fn on_readable(&mut self, fd: RawFd) {
        // Take the client out of the table while serving it: `clients` is then everyone else,
        // whom its `SAY` reaches. No entry: the event is stale (closed earlier in this round).
        let Some(mut client) = self.clients.remove(&fd) else {
            return;
        };
        let read = self.read_and_answer(&mut client);
        self.clients.insert(fd, client);
        match read {
            Ok(()) => self.write_and_watch(fd),
            Err(e) => self.close(fd, &format!("connection failed: {e}")),
        }
        // A SAY queued lines for others: write them too.
        for other in std::mem::take(&mut self.touched) {
            self.write_and_watch(other);
        }
    }

    /// Reads once (level-triggered: if more is waiting we will be told again) or until
    /// WouldBlock (edge-triggered: we will *not* be told again), answering each line.
    fn read_and_answer(&mut self, client: &mut Connection) -> io::Result<()> {
        for _ in 0..READS_PER_TURN {
            if client.closing.is_some() {
                return Ok(()); // done reading
            }
            if client.output.len() > OUTPUT_CAP {
                // Enough replies wait: write them before reading more (`write_and_watch` cuts the
                // client off if they stay over the cap). Edge-triggered, the input left unread
                // must still be announced again: end the turn below, not here.
                break;
            }
            let n = match (&client.stream).read(&mut self.read_buffer) {
                Ok(0) => {
                    client.closing = Some(match client.input.has_partial_line() {
                        true => "closed the connection in the middle of a line (discarded)".into(),
                        false => "closed the connection".into(),
                    });
                    return Ok(()); // replies still waiting are sent first
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            client.last_heard = Instant::now();
            client.input.feed(&self.read_buffer[..n]);
            while let Some(frame) = client.input.next_frame() {
                if self.answer(client, frame) == Next::Close {
                    client.closing = Some("sent QUIT".into()); // the rest it sent is ignored
                    return Ok(());
                }
            }
            if !client.input.has_partial_line() {
                client.input = LineFramer::new(); // nothing pending: give the memory back
            }
            if !self.args.edge || signals::requested() {
                return Ok(());
            }
        }
        // Edge-triggered, its turn is over before WouldBlock: input may still be waiting, and no
        // new edge will announce it. Re-registering makes the kernel look again (epoll_ctl MOD
        // re-checks the socket), so the next wait reports it, after the others had their turn.
        self.readiness
            .modify(client.stream.as_raw_fd(), client.watching)
    }

    /// Answers one line into the client's output buffer.
    fn answer(&mut self, client: &mut Connection, frame: Frame) -> Next {
        let id = client.id;
        let request = match &frame {
            Frame::Line(line) => protocol::parse_line(line).ok(),
            Frame::TooLong => None,
        };
        if let Some(Request::Sleep(ms)) = request {
            let others = match self.clients.len() {
                0 => "anyone who connects now waits in the accept queue".to_string(),
                n => format!("the {n} other client(s) wait too, and so does anyone still queued"),
            };
            narrate!("client {id} asked for SLEEP {ms}: the whole loop waits; {others}");
        }
        let who = Client {
            model: Model::Multiplex,
            id,
            allow_panic: self.args.server.allow_panic,
        };
        // SLEEP blocks right here; PANIC panics right here, and the whole process goes down.
        let (reply, next) = session::respond(frame, &who, self);
        if let Some(Request::Sleep(ms)) = request {
            narrate!(
                "client {id}'s SLEEP {ms} is over: back to the loop, everyone else can be served again"
            );
        }
        client.queue(&reply);
        next
    }

    /// Writes what `fd` has waiting; closes it if it is done, failed, or over the output cap;
    /// otherwise tells the readiness API what to watch it for next.
    fn write_and_watch(&mut self, fd: RawFd) {
        let Some(client) = self.clients.get_mut(&fd) else {
            return; // already closed
        };
        let ending = match client.write_pending() {
            Err(e) => Some(format!("connection failed: {e}")),
            Ok(()) if client.output.len() > OUTPUT_CAP => Some(format!(
                "does not read its replies: {} KiB waiting, over the {} KiB cap; disconnected",
                client.output.len() / 1024,
                OUTPUT_CAP / 1024
            )),
            Ok(()) if client.output.is_empty() => client.closing.clone(),
            Ok(()) => None,
        };
        if let Some(ending) = ending {
            return self.close(fd, &ending);
        }
        // Task 3: write interest: watch for writability only while output waits.
        // Read unless we are done reading; ask about writability only while output waits: a
        // socket with room is *always* writable, so watching it otherwise would wake us forever.
        let want = Interest {
            read: client.closing.is_none(),
            write: !client.output.is_empty(),
        };
        if want != client.watching {
            match self.readiness.modify(fd, want) {
                Ok(()) => client.watching = want,
                Err(e) => self.close(fd, &format!("cannot be watched: {e}")),
            }
        }
        // End of task 3.
    }

    /// `--trace`: one line per wake-up, saying what was ready.
    fn narrate_wake_up(&self, ready: &[Ready]) {
        let name = |fd| match self.clients.get(&fd) {
            _ if fd == self.acceptor.fd() => "listener".to_string(),
            _ if fd == self.wake_pipe => "signal pipe".to_string(),
            Some(client) => format!("client {}", client.id),
            None => format!("fd {fd}"),
        };
        let what: Vec<String> = ready
            .iter()
            .map(|r| match (r.readable, r.writable) {
                (true, true) => format!("{} (readable, writable)", name(r.fd)),
                (false, true) => format!("{} (writable)", name(r.fd)),
                _ => name(r.fd),
            })
            .collect();
        let (count, what) = (ready.len(), what.join(", "));
        let watched = self.clients.len() + 2; // and the listener and the self-pipe
        let s = if count == 1 { "" } else { "s" };
        narrate!("woke with {count} ready descriptor{s} of {watched} watched: {what}");
    }

    /// Unregisters and closes a client.
    fn close(&mut self, fd: RawFd, why: &str) {
        // Remove it from the readiness API *before* close(): its number may be reused at once.
        let _ = self.readiness.remove(fd);
        if let Some(client) = self.clients.remove(&fd) {
            narrate!("client {} {why}; {} remain", client.id, self.clients.len());
        } // `client.stream` is dropped here: close().
    }

    /// `--idle-timeout`: tells clients silent for too long `BYE idle` and closes them.
    fn say_bye_to_idle(&mut self) {
        let Some(limit) = self.args.server.idle_timeout.map(Duration::from_secs) else {
            return;
        };
        let mut silent = Vec::new();
        for (&fd, client) in &mut self.clients {
            if client.closing.is_none() && client.last_heard.elapsed() >= limit {
                client.queue(&protocol::bye("idle"));
                client.closing = Some("was silent too long (--idle-timeout): sent BYE idle".into());
                silent.push(fd);
            }
        }
        for fd in silent {
            self.write_and_watch(fd);
        }
    }

    /// SIGINT/SIGTERM: `BYE` to everyone (if their socket has room), close everything.
    fn shut_down(mut self) {
        let n = self.clients.len();
        narrate!("stop signal: telling {n} clients BYE and closing them");
        for (fd, mut client) in std::mem::take(&mut self.clients) {
            // (TCP_NODELAY, set in `accept::prepare`, sends it at once: see there why that matters.)
            client.queue(&protocol::bye(""));
            let _ = client.write_pending(); // best effort: a full socket buffer loses it
            let _ = self.readiness.remove(fd);
        }
        narrate!("shutting down: one process, nothing else to clean up");
    }
}
