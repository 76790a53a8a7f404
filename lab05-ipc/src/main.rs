//! # lab05: forked children that share data through IPC
//!
//! lab02's fork server gives each client its own child process: a crash kills one child only,
//! but each child has its *copy* of the counter, and no child can reach another's client. As the
//! notes say, *자식프로세스간의 데이터 공유는 IPC 기법 (메시지큐, 공유 메모리 등)*. This file is
//! the whole model, in the order it runs:
//!
//! 1. the parent creates the **shared memory** before any `fork()` (`shm_open` + `ftruncate` +
//!    `mmap`, or `shmget` + `shmat`), so every child inherits the mapping: the `INCR` counter
//!    and the board of children in the chat live there ([`board`]);
//! 2. it accepts and forks a child per client, as in lab02, and reaps them;
//! 3. each child opens its **mailbox** (its own `mq_open` queue, or its type in the server's one
//!    `msgget` queue) and waits in `poll()` on its client and its mailbox at once: a request is
//!    answered, mail is taken out (`mq_receive`/`msgrcv`) and passed on as `MSG` lines;
//! 4. a `SAY` is put in every other child's mailbox (`mq_send`/`msgsnd`);
//! 5. IPC objects outlive processes: a child removes its queue, the parent what a crashed child
//!    left and everything at the end, and a new server what a killed one left ([`leftovers`]).
//!    [`ipc`] puts each POSIX call ([`posix`]) beside its System V twin ([`sysv`]).

mod board;
mod demo;
mod ipc;
mod leftovers;
mod posix;
mod sysv;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use clap::Parser;
use common::cli::ServerArgs;
use common::fork::{self, Children, ParentSignals, STOP_GRACE};
use common::framing::LineFramer;
use common::session::{self, Client, Ending, Next, Shared, WRITE_TIMEOUT};
use common::{narrate, protocol, signals, Model};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::{fork, getppid, ForkResult};

use crate::ipc::{Ipc, Mailbox, Recipient};

/// The fork server of lab05, whose children share a counter (shared memory) and a chat
/// (message queues).
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    #[command(flatten)]
    server: ServerArgs,

    /// At most N children (clients served) at once; further clients wait in the accept queue.
    /// Each child makes a message queue, from a small budget per user (RLIMIT_MSGQUEUE).
    #[arg(long, value_name = "N", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=board::SLOTS as i64))]
    max_children: u32,

    /// Which IPC the children share through.
    #[arg(long, value_enum, value_name = "KIND", default_value_t = ipc::Kind::Posix)]
    ipc: ipc::Kind,
}

/// The listen backlog: clients beyond `--max-children` wait here.
const DEFAULT_BACKLOG: i32 = 128;
/// The longest a `SAY` waits in all for room in full queues, before saying who missed it: a
/// reader may be a moment behind, or asleep for seconds.
const SEND_WAIT: Duration = Duration::from_millis(500);

fn main() {
    let args: Args = common::cli::parse(Model::Ipc, DEFAULT_BACKLOG);
    if let Some(clients) = args.server.demo {
        demo::run(clients);
    }
    common::narration::init(Model::Ipc, args.server.quiet);
    // SIGINT/SIGTERM stop us, SIGCHLD wakes us when a child ends (lab02 explains them).
    let parent_signals = ParentSignals::install().unwrap_or_else(|e| {
        common::exit_with_error(&format!("cannot install the signal handlers: {e}"))
    });
    let server_pid = std::process::id();
    // What killed servers left behind, of either kind (SIGKILL cannot be caught).
    leftovers::remove_stale_posix(server_pid);
    leftovers::remove_stale_sysv(server_pid);

    // socket() + bind() + listen(backlog), first: if the port is taken we exit before creating
    // anything that would be left behind.
    let listener = common::listener::listen(args.server.address(), args.server.backlog);
    // The shared memory, before any fork(): every child inherits the mapping.
    let ipc = Ipc::create(args.ipc, server_pid, args.max_children)
        .unwrap_or_else(|e| common::exit_with_error(&e));
    serve_forever(listener, &ipc, &args, &parent_signals);
    // No child is left: remove what crashed children left, then the objects themselves.
    ipc.remove();
    narrate!("shutting down: every child reaped, every IPC object removed; bye");
}

/// The parent: lab02's loop (accept, fork, close, reap) plus the IPC housekeeping.
fn serve_forever(listener: TcpListener, ipc: &Ipc, args: &Args, parent_signals: &ParentSignals) {
    let listener_watch = signals::wake_on_shutdown(&listener);
    let mut children = Children::new();
    let mut next_id = 1;
    while !signals::requested() {
        reap(&mut children, ipc);
        let max = args.max_children as usize;
        children.wait_below(max, parent_signals, |children| reap(children, ipc));
        // A client, or a signal (a child ended, or a stop): loop to look.
        let Some((stream, peer)) = parent_signals.accept(&listener) else {
            continue;
        };
        let (id, allow_panic) = (next_id, args.server.allow_panic);
        next_id += 1;
        // SAFETY: the child of fork() gets only the calling thread, so a lock another thread held
        // would stay locked in it forever. This process has exactly one thread (signals are
        // handled with sigaction, not a helper thread): the child is a consistent copy.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                parent_signals.in_child();
                let client = Client {
                    model: Model::Ipc,
                    id,
                    allow_panic,
                };
                child_main(listener, (stream, peer), &client, ipc, args)
            }
            Ok(ForkResult::Parent { child }) => {
                drop(stream); // the child has its own copy; ours would only leak
                children.add(child, format!("client {id}"));
                let live = children.len();
                narrate!("accepted client {id} from {peer}: forked child {child} to serve it ({live} children live)");
            }
            Err(e) => narrate!("fork() failed for client {id}: {e}; closing its connection"),
        }
    }
    drop(listener_watch);
    narrate!("stop signal: no more accept(); stopping the children");
    children.stop_all(STOP_GRACE);
}

/// `waitpid()` every child that has ended (lab02 explains the loop). One that ended normally
/// removed its queue and left the board; one that crashed (PANIC, kill -9) could not, so the
/// parent does it.
fn reap(children: &mut Children<String>, ipc: &Ipc) {
    while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        let Some(pid) = status.pid() else { break }; // StillAlive: none has ended
        children.ended(status);
        ipc.remove_leftovers_of(pid.as_raw());
    }
}

/// A child: serves its one client and exits; it never returns into the parent's loop.
fn child_main(
    listener: TcpListener,
    (stream, peer): (TcpStream, SocketAddr),
    client: &Client,
    ipc: &Ipc,
    args: &Args,
) -> ! {
    // fork() copied every descriptor: close our copy of the listening socket. The mapping of the
    // shared memory is inherited too, and that one we keep.
    drop(listener);
    let (parent, id) = (getppid(), client.id);
    narrate!("child of {parent}: serving client {id} from {peer}");
    let idle = args.server.idle_timeout.map(Duration::from_secs);
    let status = fork::run_session(id, "this child exits", || {
        serve_client(&stream, client, ipc, idle)
    });
    std::process::exit(status)
}

/// Everything one child uses. As [`Shared`], `INCR` and `SAY` go through the IPC.
struct Child<'a> {
    stream: &'a TcpStream,
    ipc: &'a Ipc,
    /// `None` if it could not be made: then this client is not in the chat.
    mailbox: Option<Mailbox>,
    /// Read end of this process's self-pipe: readable once SIGTERM/SIGINT arrived.
    stop: BorrowedFd<'static>,
    pid: i32,
    buf: Vec<u8>, // room for the largest message
}

/// Serves `client` in this child until it leaves or the server stops.
fn serve_client(stream: &TcpStream, client: &Client, ipc: &Ipc, idle: Option<Duration>) -> Ending {
    // Our own self-pipe: made now, in the child, so that no other process shares it.
    let stop = match signals::wake_pipe() {
        // SAFETY: the pipe's read end lives as long as the process (see `signals::wake_pipe`).
        Ok(fd) => unsafe { BorrowedFd::borrow_raw(fd) },
        Err(e) => return Ending::Error(e.kind()),
    };
    // A write to a client that never reads gives up; a MSG line and a reply often leave one
    // right after the other, which Nagle's algorithm would delay (TCP_NODELAY).
    let options = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    if let Err(e) = options.and_then(|()| stream.set_nodelay(true)) {
        narrate!("cannot set the socket options of client {}: {e}", client.id);
    }
    let pid = std::process::id() as i32;
    let mut child = Child {
        stream,
        ipc,
        mailbox: ipc.open_mailbox(pid, client.id),
        stop,
        pid,
        buf: vec![0; posix::MESSAGE_SIZE as usize],
    };
    let ending = (child.run(client, idle)).unwrap_or_else(|e| Ending::Error(e.kind()));
    if let Some(mailbox) = child.mailbox.take() {
        mailbox.close(ipc.board());
    }
    ending
}

impl Child<'_> {
    /// The child's loop: `poll()` on the client, the stop pipe and the mailbox at once.
    fn run(&mut self, client: &Client, idle: Option<Duration>) -> io::Result<Ending> {
        self.send(&session::hello(client.model))?;
        let mut framer = LineFramer::new();
        let mut chunk = [0u8; 4096];
        let mut last_heard = Instant::now();
        loop {
            if signals::requested() {
                let _ = self.send(&protocol::bye(""));
                return Ok(Ending::Shutdown);
            }
            let left = idle.map(|limit| limit.saturating_sub(last_heard.elapsed()));
            if left.is_some_and(|left| left.is_zero()) {
                let _ = self.send(&protocol::bye("idle"));
                return Ok(Ending::Idle);
            }
            let timeout = left.map_or(PollTimeout::NONE, |left| {
                PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX)
            });
            let (request, mail) = match self.wait(true, &[], timeout) {
                Err(Errno::EINTR) => continue, // a signal: the loop checks why
                ready => ready?,
            };
            if mail {
                self.deliver_mail()?;
            }
            if !request {
                continue;
            }
            let n = match self.stream.read(&mut chunk) {
                Ok(0) => {
                    return Ok(Ending::ClientClosed {
                        partial: framer.has_partial_line(),
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                read => read?,
            };
            last_heard = Instant::now();
            framer.feed(&chunk[..n]);
            while let Some(frame) = framer.next_frame() {
                let (reply, next) = session::respond(frame, client, self);
                self.send(&reply)?;
                if next == Next::Close {
                    return Ok(Ending::Quit);
                }
            }
        }
    }

    /// Waits in `poll()` for the client (if `client`), room in the `full` queues, our mail and
    /// the stop pipe (which only wakes us: the caller checks the flag). Returns whether the
    /// client sent something and whether mail arrived.
    fn wait(
        &self,
        client: bool,
        full: &[Recipient],
        timeout: PollTimeout,
    ) -> nix::Result<(bool, bool)> {
        let watch = |fd, flags| PollFd::new(fd, flags);
        let mut fds = vec![watch(self.stop, PollFlags::POLLIN)];
        fds.extend(client.then(|| watch(self.stream.as_fd(), PollFlags::POLLIN)));
        fds.extend(
            full.iter()
                .filter_map(Recipient::room_fd)
                .map(|fd| watch(fd, PollFlags::POLLOUT)),
        );
        fds.extend(
            self.mailbox
                .as_ref()
                .map(|m| watch(m.as_fd(), PollFlags::POLLIN)),
        );
        poll(&mut fds, timeout)?;
        let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
        Ok((
            client && ready(&fds[1]),
            self.mailbox.is_some() && fds.last().is_some_and(ready),
        ))
    }

    /// Takes every message out of our mailbox and writes each to the client as a line.
    fn deliver_mail(&mut self) -> io::Result<()> {
        let Some(mailbox) = &self.mailbox else {
            return Ok(());
        };
        let mut writer = self.stream;
        mailbox.receive_all(self.ipc.board(), &mut self.buf, |message| {
            writer.write_all(&[message, b"\n"].concat())
        })
    }

    fn send(&self, line: &str) -> io::Result<()> {
        session::send_line(&mut &*self.stream, line)
    }
}

impl Shared for Child<'_> {
    /// The counter is in shared memory: one atomic add, seen by every child.
    fn incr(&mut self) -> u64 {
        self.ipc.board().incr()
    }

    /// Puts `MSG <from> <text>` in every other child's mailbox. A full one is waited for, at
    /// most [`SEND_WAIT`] in all, while we keep taking out our own mail: its sender may be
    /// waiting for room too, so two children sending to each other never wait on each other.
    fn say(&mut self, from: u64, text: &str) -> Result<(), String> {
        // Task 2: put the SAY in every other child's mailbox (mq_send, or msgsnd).
        // `Recipient::try_send` never blocks; while some are full, wait for room (`self.wait`)
        // and take out our own mail meanwhile, until SEND_WAIT is over: then name who missed it.
        if self.mailbox.is_none() {
            return Err("the chat is not available to this client".into());
        }
        let message = protocol::msg(from, text);
        let mut missed = Vec::new();
        let mut pending = self.ipc.recipients(self.pid, &mut missed);
        let deadline = Instant::now() + SEND_WAIT;
        let (mut delivered, mut waiting) = (0, false);
        loop {
            pending.retain(|to| match to.try_send(message.as_bytes()) {
                Ok(sent) => {
                    delivered += usize::from(sent);
                    !sent
                }
                Err(e) => {
                    narrate!("cannot send to client {}: {e}", to.member.client);
                    missed.push(to.member.client);
                    false
                }
            });
            let left = deadline.saturating_duration_since(Instant::now());
            if pending.is_empty() || left.is_zero() || signals::requested() {
                break;
            }
            if !waiting {
                // Say that we wait for room, then try once more: room made in between counts.
                self.ipc.mark_waiting_for_room(self.pid, true);
                waiting = true;
                continue;
            }
            // Room in a full queue, or our own mail (System V: either brings a SIGUSR1); EINTR
            // is fine, we try again either way.
            let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
            let _ = self.wait(false, &pending, timeout);
            let _ = self.deliver_mail(); // a client that is gone shows in the main loop
        }
        if waiting {
            self.ipc.mark_waiting_for_room(self.pid, false);
        }
        missed.extend(pending.iter().map(|to| to.member.client));
        if missed.is_empty() {
            return Ok(());
        }
        missed.sort_unstable();
        let who: Vec<String> = missed.iter().map(u64::to_string).collect();
        let (who, wait) = (who.join(", "), SEND_WAIT.as_millis());
        let plural = if delivered == 1 { "" } else { "s" };
        Err(format!("client {who} missed it: queue full for {wait} ms; delivered to {delivered} other client{plural}"))
        // End of task 2.
    }
}
