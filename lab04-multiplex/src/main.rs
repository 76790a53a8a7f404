//! # lab04: the multiplexing server (Multiplexing 방식의 서버)
//!
//! One process, one thread, every client. Instead of blocking in `accept()` or `read()` on one
//! socket (and leaving every other client waiting, like lab01), the server asks the kernel
//! *which* sockets are ready, and only then calls `accept`, `read` or `write` on those: the
//! notes' "블록킹이 발생하는 함수를 호출하기 전 해당 이벤트가 있는지 확인 후 처리". Every socket
//! is non-blocking too, so even a wrong guess costs a `WouldBlock`, never a wait.
//!
//! The loop, top to bottom:
//!
//! 1. **wait** until some registered descriptor is ready (`select`, `poll` or `epoll_wait`,
//!    chosen with `--api`; see `readiness.rs` and one module per API);
//! 2. for each ready one: the listener → `accept` the waiting clients and register them; a
//!    client → `read` what it sent, cut it into lines, answer each line into that client's
//!    *output buffer*; the self-pipe → a stop signal arrived;
//! 3. **write** what each touched client has waiting. What the kernel does not take now stays
//!    in the buffer, and we ask to be told when the socket is writable again;
//! 4. back to 1.
//!
//! Because one thread does everything, clients share memory for free: `INCR` is one counter and
//! `SAY` appends to the other clients' output buffers. The price, and the lesson of the notes:
//! whatever blocks the loop blocks **everyone**. `SLEEP 1500` from one client freezes all the
//! others for 1.5 s, and a `PANIC` takes the whole server, with every connection, down
//! ("예외상황에 따른 서버 프로세스의 이상은 모든 연결된 클라이언트에 영향을 줌").
//!
//! Narration (stderr) tells connection events: accepts, refusals, closes, and every `SLEEP`,
//! since freezing everyone is the point. Each wake-up of the loop is narrated only with
//! `--trace`: with a thousand busy clients that is thousands of lines a second.

mod clients;
mod epoll;
mod poll;
mod readiness;
mod select;

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use common::cli::ServerArgs;
use common::framing::{Frame, LineFramer};
use common::protocol::{self, Request};
use common::session::{self, Client, Next, Shared};
use common::{narrate, signals, Model};
use nix::sys::socket::{setsockopt, sockopt};

use clients::Clients;
use readiness::{Interest, Readiness, Ready};

/// The multiplexing server of lab04: one process, one thread, every client (Multiplexing 방식).
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    #[command(flatten)]
    server: ServerArgs,

    /// The readiness API the event loop waits with: select (FD_SETSIZE = 1024 limit), poll, or
    /// epoll.
    #[arg(long, value_enum, default_value_t = Api::Epoll)]
    api: Api,

    /// Edge-triggered epoll (only with --api epoll): told once per change, so every read,
    /// accept and write must go on until WouldBlock.
    #[arg(long)]
    edge: bool,

    /// Narrate every wake-up of the event loop (how many descriptors were ready, and which).
    #[arg(long)]
    trace: bool,

    /// Set each client socket's kernel send buffer (SO_SNDBUF) to BYTES instead of letting
    /// Linux size it (up to megabytes): makes partial writes easy to see with a client that
    /// reads slowly.
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u32).range(1024..=16_777_216))]
    send_buffer: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Api {
    Select,
    Poll,
    Epoll,
}

/// An event loop accepts fast, but a burst of a thousand connects should not overflow the queue.
const DEFAULT_BACKLOG: i32 = 1024;

/// One read buffer, shared by every client (one thread: only one read happens at a time).
const CHUNK: usize = 64 * 1024;

/// The most output one client may have waiting in our memory (on top of what the kernel's
/// socket buffer holds). A client that asks and asks but never reads its replies, or that
/// stopped reading while others `SAY` things to it, would otherwise make us hold ever more.
///
/// Our choice past the cap: **disconnect it**. The alternative, to stop reading from it until
/// it catches up, works for its own requests but not for `SAY`s from others, and needs care in
/// edge mode (no new edge comes for the input we left unread). Redis does the same with its
/// `client-output-buffer-limit`. Everyone else is served on either way.
const OUTPUT_CAP: usize = 256 * 1024;

/// Edge-triggered, the most reads one client gets per turn (up to 16 × 64 KiB = 1 MiB). A client
/// that streams faster than we can answer would otherwise keep us reading forever, and every
/// other client would starve. Past the budget it goes on the `unfinished` list and gets another
/// turn after the others (see `run`).
const READS_PER_TURN: usize = 16;

/// Once empty, a client's input and output buffers are kept if they are at most this big, and
/// given back to the allocator otherwise. Keeping a small one saves a `malloc` and a `free` per
/// request for a client that sends short lines; giving big ones back keeps an idle client cheap
/// (a few hundred bytes, however much it once sent or was sent).
const KEEP_BUFFER: usize = 512;

/// How often to look for clients silent longer than `--idle-timeout`.
const IDLE_SWEEP: Duration = Duration::from_secs(1);

/// What the server keeps for one connected client.
struct Conn {
    stream: TcpStream,
    id: u64,
    /// Bytes received but not yet a whole line.
    input: LineFramer,
    /// Replies (and `MSG`s) not yet taken by the kernel. Empty most of the time, and never
    /// holding more than [`KEEP_BUFFER`] bytes of memory once empty.
    output: Vec<u8>,
    /// What the readiness API currently watches this socket for.
    watching: Interest,
    /// Set once we read no more (QUIT answered, or the client closed its side): close the
    /// connection as soon as `output` is sent. Holds what to narrate then.
    closing: Option<String>,
    /// When it last sent something (for `--idle-timeout`).
    last_heard: Instant,
}

impl Conn {
    /// Appends one line to the output buffer.
    fn queue(&mut self, line: &str) {
        self.output.extend_from_slice(line.as_bytes());
        self.output.push(b'\n');
    }

    /// Writes what is waiting until it is all sent or the kernel's buffer is full (WouldBlock:
    /// the rest stays for when the socket is writable again).
    fn write_pending(&mut self) -> io::Result<()> {
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
        // All sent. A small buffer is kept for the next reply; a big one is given back.
        if self.output.capacity() > KEEP_BUFFER {
            self.output = Vec::new();
        } else {
            self.output.clear();
        }
        Ok(())
    }
}

/// What the clients share: they all live in this one thread, so "shared" is just "here".
/// While one client is being served, it is taken out of the table: `others` is then exactly
/// "every other client", the ones a `SAY` goes to.
struct Everyone<'a> {
    others: &'a mut Clients<Conn>,
    counter: &'a mut u64,
    /// Clients that were given a `MSG` and must be written to.
    touched: &'a mut Vec<RawFd>,
}

impl Shared for Everyone<'_> {
    fn incr(&mut self) -> u64 {
        *self.counter += 1;
        *self.counter
    }

    fn say(&mut self, from: u64, text: &str) -> Result<(), String> {
        let line = protocol::msg(from, text);
        for (fd, other) in self.others.iter_mut() {
            if other.closing.is_none() {
                other.queue(&line);
                self.touched.push(fd);
            }
        }
        Ok(())
    }
}

/// The whole server: the listening socket, the readiness API, and every client.
struct Server {
    api: Box<dyn Readiness>,
    listener: TcpListener,
    wake_pipe: RawFd,
    /// Every client, at the index of its descriptor (see `clients.rs`).
    clients: Clients<Conn>,
    counter: u64,
    next_id: u64,
    /// Edge-triggered: read/accept until WouldBlock (see `epoll.rs` for why).
    drain: bool,
    allow_panic: bool,
    trace: bool,
    idle_timeout: Option<Duration>,
    send_buffer: Option<usize>,
    /// One read buffer for all clients.
    chunk: Vec<u8>,
    /// Clients with new output to write (or new interest to register) after the current event.
    touched: Vec<RawFd>,
    /// Edge-triggered: clients that used up their `READS_PER_TURN` with input still waiting.
    /// No new edge will announce that input, so we must remember it ourselves.
    unfinished: Vec<RawFd>,
    /// A descriptor kept in reserve, for when we run out (see `accept_all`).
    spare: Option<File>,
}

fn main() {
    let args: Args = common::cli::parse(Model::Multiplex, DEFAULT_BACKLOG);
    if args.edge && args.api != Api::Epoll {
        common::exit_with_usage_error(
            "--edge is a mode of epoll only: use it with --api epoll (select and poll are always level-triggered)",
        );
    }
    if let Some(clients) = args.server.demo {
        common::demo::run(
            Model::Multiplex,
            clients,
            "One thread serves everyone: all clients see the same pid and tid. Client 1 asks for \
             SLEEP 1500 at once, and while it sleeps the whole loop waits: the others are not \
             even greeted until it is over.",
            |i| {
                if i == 1 {
                    vec![
                        "WHO".into(),
                        "SLEEP 1500".into(),
                        "INCR".into(),
                        "QUIT".into(),
                    ]
                } else {
                    vec![
                        "WHO".into(),
                        format!("ECHO hello from client {i}"),
                        "INCR".into(),
                        "QUIT".into(),
                    ]
                }
            },
        );
    }
    common::narrate::init(Model::Multiplex, args.server.quiet);
    if let Err(e) = signals::install() {
        common::exit_with_error(&format!("cannot install the signal handlers: {e}"));
    }
    // The signal handler writes a byte into this pipe: a stop signal becomes "a descriptor is
    // readable", something the loop is waiting for anyway (the self-pipe trick).
    let wake_pipe = signals::wake_pipe()
        .unwrap_or_else(|e| common::exit_with_error(&format!("cannot make the self-pipe: {e}")));

    let api: Box<dyn Readiness> = match args.api {
        Api::Select => Box::new(select::Select::new()),
        Api::Poll => Box::new(poll::Poll::new()),
        Api::Epoll => Box::new(epoll::Epoll::new(args.edge).unwrap_or_else(|e| {
            common::exit_with_error(&format!("cannot create the epoll instance: {e}"))
        })),
    };
    let listener = common::listener::listen(&args.server);
    // A non-blocking listener: accept() returns WouldBlock instead of waiting when no client is
    // queued, so the loop can never get stuck in it.
    if let Err(e) = listener.set_nonblocking(true) {
        common::exit_with_error(&format!("cannot make the listener non-blocking: {e}"));
    }

    let mut server = Server {
        api,
        listener,
        wake_pipe,
        clients: Clients::default(),
        counter: 0,
        next_id: 1,
        drain: args.edge,
        allow_panic: args.server.allow_panic,
        trace: args.trace,
        idle_timeout: args.server.idle_timeout.map(Duration::from_secs),
        send_buffer: args.send_buffer.map(|b| b as usize),
        chunk: vec![0; CHUNK],
        touched: Vec::new(),
        unfinished: Vec::new(),
        spare: File::open("/dev/null").ok(),
    };
    let everyone_reads = Interest {
        read: true,
        write: false,
    };
    for fd in [server.listener.as_raw_fd(), wake_pipe] {
        if let Err(e) = server.api.add(fd, everyone_reads) {
            common::exit_with_error(&format!("cannot watch descriptor {fd}: {e}"));
        }
    }
    narrate!(
        "event loop ready: {} ({}), one thread for every client",
        match args.api {
            Api::Select => "select",
            Api::Poll => "poll",
            Api::Epoll if args.edge => "epoll, edge-triggered",
            Api::Epoll => "epoll, level-triggered",
        },
        if args.api == Api::Select {
            "descriptors up to 1023"
        } else {
            "no descriptor limit but ulimit -n"
        }
    );
    server.run();
    server.shut_down();
}

impl Server {
    /// The event loop: wait, handle what is ready, repeat, until a stop signal.
    fn run(&mut self) {
        let mut ready = Vec::new();
        let mut last_sweep = Instant::now();
        while !signals::requested() {
            // With --idle-timeout, wake at least once a second to look for silent clients
            // (a real server keeps its timers sorted, and sleeps exactly until the next one).
            // With unfinished clients (edge-triggered), do not sleep at all: only look whether
            // anyone else is ready, then give the unfinished their next turn.
            let timeout = if self.unfinished.is_empty() {
                self.idle_timeout.map(|_| IDLE_SWEEP)
            } else {
                Some(Duration::ZERO)
            };
            ready.clear();
            if let Err(e) = self.api.wait(timeout, &mut ready) {
                common::exit_with_error(&format!("waiting for readiness failed: {e}"));
            }
            if self.trace {
                self.narrate_wake_up(&ready);
            }
            for event in &ready {
                if signals::requested() {
                    return;
                }
                if event.fd == self.listener.as_raw_fd() {
                    self.accept_all();
                } else if event.fd == self.wake_pipe {
                    return; // a stop signal: the handler set the flag and wrote to the pipe
                } else {
                    if event.readable {
                        self.on_readable(event.fd);
                    }
                    if event.writable {
                        self.touched.push(event.fd);
                    }
                }
                self.settle_touched();
            }
            // The next turn of the clients that still had input waiting (edge-triggered only).
            for fd in std::mem::take(&mut self.unfinished) {
                if signals::requested() {
                    return;
                }
                self.on_readable(fd);
                self.settle_touched();
            }
            if self.idle_timeout.is_some() && last_sweep.elapsed() >= IDLE_SWEEP {
                last_sweep = Instant::now();
                self.say_bye_to_idle();
            }
        }
    }

    /// Accepts every client waiting in the accept queue (the listener said it is readable).
    fn accept_all(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, peer)) => self.admit(stream, peer),
                // The queue is empty. (Edge-triggered, we *must* get here: a client left in the
                // queue would never be announced again.)
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(nix::libc::EMFILE | nix::libc::ENFILE)
                    ) =>
                {
                    // Out of descriptors (ulimit -n). The client stays queued, so a
                    // level-triggered loop would be woken for it again at once, forever.
                    // Classic way out: close the descriptor kept in reserve, accept the client
                    // with it, refuse it, and take the reserve back. (Linux reports EMFILE
                    // before it looks at the queue, so the queue may turn out to be empty.)
                    self.spare = None;
                    let refused = match self.listener.accept() {
                        Ok((stream, peer)) => {
                            narrate!("accept() failed: {e}; refused {peer} with ERR server full, using the spare descriptor");
                            refuse(stream); // and close it, so the spare can be taken back
                            true
                        }
                        Err(_) => false, // nobody queued after all (or no descriptor still)
                    };
                    self.spare = File::open("/dev/null").ok();
                    if !refused || self.spare.is_none() {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {
                    // The client gave up while it was queued: say so, and take the next one.
                    narrate!("accept() failed: {e}");
                }
                Err(e) => {
                    // Anything else (ENOBUFS, ENOMEM...): say so, and try again at the next
                    // wake-up rather than spin here.
                    narrate!("accept() failed: {e}");
                    return;
                }
            }
        }
    }

    /// Registers a newly accepted client and greets it, unless its descriptor cannot be watched.
    fn admit(&mut self, stream: TcpStream, peer: SocketAddr) {
        let fd = stream.as_raw_fd();
        if !self.api.can_watch(fd) {
            narrate!(
                "refused a client from {peer}: its descriptor {fd} does not fit in select()'s \
                 fd_set (FD_SETSIZE = {}); sent ERR server full",
                nix::sys::select::FD_SETSIZE
            );
            refuse(stream);
            return;
        }
        if let Err(e) = stream.set_nonblocking(true) {
            narrate!("cannot make the socket of {peer} non-blocking: {e}; closing it");
            return;
        }
        // TCP_NODELAY: each reply leaves at once (common::session::prepare_client_socket says
        // why; this loop keeps its own idle timer, so it sets only this).
        if let Err(e) = stream.set_nodelay(true) {
            narrate!("cannot set TCP_NODELAY on the socket of {peer}: {e}");
        }
        if let Some(bytes) = self.send_buffer {
            // setsockopt(SO_SNDBUF): the kernel doubles the value for its bookkeeping.
            if let Err(e) = setsockopt(&stream, sockopt::SndBuf, &bytes) {
                narrate!("cannot set the send buffer of {peer}: {e}");
            }
        }
        let watching = Interest {
            read: true,
            write: false,
        };
        if let Err(e) = self.api.add(fd, watching) {
            narrate!("cannot watch the socket of {peer}: {e}; closing it");
            return;
        }
        let mut conn = Conn {
            stream,
            id: self.next_id,
            input: LineFramer::new(),
            output: Vec::new(),
            watching,
            closing: None,
            last_heard: Instant::now(),
        };
        self.next_id += 1;
        conn.queue(&session::hello(Model::Multiplex));
        narrate!(
            "accepted client {} from {peer} (fd {fd}); {} connected now, one thread for all",
            conn.id,
            self.clients.len() + 1
        );
        self.clients.insert(fd, conn);
        self.touched.push(fd);
    }

    /// The client's socket is readable: read what it sent and answer every complete line.
    fn on_readable(&mut self, fd: RawFd) {
        // Take the client out of the table while serving it (see `Everyone`). No entry: the event
        // is stale (the client was closed earlier in this round), nothing to do.
        let Some(mut conn) = self.clients.remove(fd) else {
            return;
        };
        if conn.closing.is_none() {
            if let Err(e) = self.read_and_answer(&mut conn) {
                self.close(conn, &format!("connection failed: {e}"));
                return;
            }
        }
        self.clients.insert(fd, conn);
        self.touched.push(fd);
    }

    /// Reads once (level-triggered: if more is waiting we will be told again) or until
    /// WouldBlock (edge-triggered: we will *not* be told again), answering each line.
    fn read_and_answer(&mut self, conn: &mut Conn) -> io::Result<()> {
        for _ in 0..READS_PER_TURN {
            let n = match (&conn.stream).read(&mut self.chunk) {
                Ok(0) => {
                    let how = if conn.input.has_partial_line() {
                        "closed the connection in the middle of a line (discarded)"
                    } else {
                        "closed the connection"
                    };
                    conn.closing = Some(how.into()); // replies still waiting are sent first
                    return Ok(());
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            conn.last_heard = Instant::now();
            conn.input.feed(&self.chunk[..n]);
            while let Some(frame) = conn.input.next_frame() {
                if self.answer(conn, frame) == Next::Close {
                    conn.closing = Some("sent QUIT".into());
                    return Ok(()); // whatever else it sent is ignored
                }
            }
            if !conn.input.has_partial_line() && conn.input.capacity() > KEEP_BUFFER {
                conn.input = LineFramer::new(); // nothing pending: give the big buffer back
            }
            if conn.output.len() > OUTPUT_CAP {
                // It is not reading its replies. Try handing them to the kernel; if they still
                // do not fit, stop here: `settle` disconnects it.
                conn.write_pending()?;
                if conn.output.len() > OUTPUT_CAP {
                    return Ok(());
                }
            }
            // Edge-triggered, we read on until WouldBlock, but no longer than its turn (below),
            // and not past a stop signal.
            if !self.drain || signals::requested() {
                return Ok(());
            }
        }
        // Its turn is over and it has not hit WouldBlock: input may still be waiting, and the
        // kernel will not tell us again. Remember it, serve the others, come back.
        self.unfinished.push(conn.stream.as_raw_fd());
        Ok(())
    }

    /// Answers one line into the client's output buffer.
    fn answer(&mut self, conn: &mut Conn, frame: Frame) -> Next {
        let client = Client {
            model: Model::Multiplex,
            id: conn.id,
            allow_panic: self.allow_panic,
        };
        let sleep = sleep_requested(&frame);
        if let Some(ms) = sleep {
            let others = match self.clients.len() {
                0 => "anyone who connects now waits in the accept queue".to_string(),
                n => format!("the {n} other client(s) wait too, and so does anyone still queued"),
            };
            narrate!(
                "client {} asked for SLEEP {ms}: the whole loop waits; {others}",
                conn.id
            );
        }
        let mut everyone = Everyone {
            others: &mut self.clients,
            counter: &mut self.counter,
            touched: &mut self.touched,
        };
        // SLEEP blocks right here; PANIC panics right here, and the whole process goes down.
        let (reply, next) = session::respond(frame, &client, &mut everyone);
        if let Some(ms) = sleep {
            narrate!(
                "client {}'s SLEEP {ms} is over: back to the loop, everyone else can be served again",
                conn.id
            );
        }
        conn.queue(&reply);
        next
    }

    /// Writes to every client touched by the last event, then closes or re-registers it.
    fn settle_touched(&mut self) {
        if self.touched.is_empty() {
            return;
        }
        let mut touched = std::mem::take(&mut self.touched);
        touched.sort_unstable();
        touched.dedup();
        for &fd in &touched {
            self.settle(fd);
        }
        touched.clear();
        self.touched = touched; // keep the allocation
    }

    /// Writes what `fd` has waiting; closes it if it is done, failed, or over the output cap;
    /// otherwise tells the readiness API what to watch it for next.
    fn settle(&mut self, fd: RawFd) {
        let Some(conn) = self.clients.get_mut(fd) else {
            return; // already closed
        };
        let ending = match conn.write_pending() {
            Err(e) => Some(format!("connection failed: {e}")),
            Ok(()) if conn.output.len() > OUTPUT_CAP => Some(format!(
                "does not read its replies: {} KiB waiting, over the {} KiB cap; disconnected",
                conn.output.len() / 1024,
                OUTPUT_CAP / 1024
            )),
            Ok(()) if conn.output.is_empty() => conn.closing.clone(),
            Ok(()) => None,
        };
        if let Some(ending) = ending {
            if let Some(conn) = self.clients.remove(fd) {
                self.close(conn, &ending);
            }
            return;
        }
        // Read unless we are done reading; ask about writability only while output waits
        // (a socket with room is *always* writable: watching it otherwise would wake us forever).
        let want = Interest {
            read: conn.closing.is_none(),
            write: !conn.output.is_empty(),
        };
        if want != conn.watching {
            match self.api.modify(fd, want) {
                Ok(()) => conn.watching = want,
                Err(e) => {
                    if let Some(conn) = self.clients.remove(fd) {
                        self.close(conn, &format!("cannot be watched: {e}"));
                    }
                }
            }
        }
    }

    /// Unregisters and closes a client (it is already out of the table).
    fn close(&mut self, conn: Conn, why: &str) {
        // Remove it from the readiness API *before* close(): its number may be reused at once.
        let _ = self.api.remove(conn.stream.as_raw_fd());
        narrate!("client {} {why}; {} remain", conn.id, self.clients.len());
        // `conn.stream` is dropped here: close().
    }

    /// `--idle-timeout`: tells clients silent for too long `BYE idle` and closes them.
    fn say_bye_to_idle(&mut self) {
        let Some(limit) = self.idle_timeout else {
            return;
        };
        for (fd, conn) in self.clients.iter_mut() {
            if conn.closing.is_none() && conn.last_heard.elapsed() >= limit {
                conn.queue(&protocol::bye("idle"));
                conn.closing = Some("was silent too long (--idle-timeout): sent BYE idle".into());
                self.touched.push(fd);
            }
        }
        self.settle_touched();
    }

    /// SIGINT/SIGTERM: `BYE` to everyone (if their socket has room), close everything.
    fn shut_down(mut self) {
        narrate!(
            "stop signal: telling {} clients BYE and closing them",
            self.clients.len()
        );
        for (fd, mut conn) in self.clients.drain() {
            // (TCP_NODELAY, set in `admit`, sends it at once: see there why that matters.)
            conn.queue(&protocol::bye(""));
            let _ = conn.write_pending(); // best effort: a full socket buffer loses it
            let _ = self.api.remove(fd);
        }
        narrate!("shutting down: one process, nothing else to clean up");
    }

    /// `--trace`: one line per wake-up, saying what was ready.
    fn narrate_wake_up(&self, ready: &[Ready]) {
        let what: Vec<String> = ready
            .iter()
            .map(|r| {
                let name = if r.fd == self.listener.as_raw_fd() {
                    "listener".to_string()
                } else if r.fd == self.wake_pipe {
                    "signal pipe".to_string()
                } else if let Some(conn) = self.clients.get(r.fd) {
                    format!("client {}", conn.id)
                } else {
                    format!("fd {}", r.fd)
                };
                match (r.readable, r.writable) {
                    (true, true) => format!("{name} (readable, writable)"),
                    (false, true) => format!("{name} (writable)"),
                    _ => name,
                }
            })
            .collect();
        let unfinished = match self.unfinished.len() {
            0 => String::new(),
            n => format!("; then {n} client(s) whose input was left unread at their last turn"),
        };
        narrate!(
            "woke with {} ready descriptor{} of {} watched: {}{unfinished}",
            ready.len(),
            if ready.len() == 1 { "" } else { "s" },
            self.clients.len() + 2,
            what.join(", ")
        );
    }
}

/// Says `ERR server full` to a client we cannot serve, and closes it.
fn refuse(stream: TcpStream) {
    // A fresh socket has an empty send buffer: this short write does not block.
    let _ = (&stream).write_all(b"ERR server full\n");
}

/// The milliseconds of a `SLEEP` request (checked cheaply first: this runs for every line).
fn sleep_requested(frame: &Frame) -> Option<u64> {
    match frame {
        Frame::Line(line) if line.len() >= 5 && line[..5].eq_ignore_ascii_case(b"SLEEP") => {
            match protocol::parse_line(line) {
                Ok(Request::Sleep(ms)) => Some(ms),
                _ => None,
            }
        }
        _ => None,
    }
}
