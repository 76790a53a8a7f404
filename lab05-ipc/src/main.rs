//! # lab05: forked children that share data through IPC
//!
//! lab02's fork server gives each client its own child process. That isolates them (a crash
//! kills one child only) but also separates them: each child has its *copy* of the counter, and
//! no child can reach another's client. As the notes say, *자식프로세스간의 데이터 공유는 IPC 기법
//! (메시지큐, 공유 메모리 등)*: children share data through inter-process communication.
//!
//! This server is lab02's fork server plus two kinds of IPC object:
//!
//! - a **POSIX shared-memory object** (`shm.rs`), `/netlabs-ipc-<pid>-shm`, mapped by the parent
//!   before it forks so every child inherits the mapping. It holds the `INCR` counter (an atomic,
//!   so children serving clients at the same moment never lose an update) and the board of
//!   children listening for chat;
//! - a **POSIX message queue per child** (`chat.rs`), `/netlabs-ipc-<pid>-child-<child pid>`. A
//!   `SAY` is put in every other child's queue; each child waits in `poll()` on its client socket
//!   and its queue at once (`child.rs`) and passes `MSG` lines on to its client.
//!
//! IPC objects outlive processes, so their names hold the server's pid, the parent removes all of
//! them when it stops (and a child's queue when it reaps that child), and leftovers of a server
//! killed with SIGKILL are removed at the next start (`names.rs`).
//!
//! The parent itself: accept, fork, remember the child, reap it when it ends (SIGCHLD), never more
//! than `--max-children` at once; on SIGINT/SIGTERM pass the signal on to the children (each says
//! `BYE` to its client), reap them all, remove the IPC objects, exit 0.

mod chat;
mod child;
mod names;
mod shm;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use clap::Parser;
use common::cli::ServerArgs;
use common::session::Client;
use common::{narrate, signals, Model};
use nix::errno::Errno;
use nix::poll::{ppoll, PollFd, PollFlags};
use nix::sys::signal::{
    self, sigaction, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal,
};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

use crate::shm::{Board, SharedMemory};

/// The fork server of lab05, whose children share a counter (shared memory) and a chat
/// (message queues).
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    #[command(flatten)]
    server: ServerArgs,

    /// At most N children (clients served) at once; further clients wait in the accept queue.
    /// Each child makes a message queue of 8,512 bytes and a user may have 819,200 bytes of
    /// queues (RLIMIT_MSGQUEUE): 96 queues. The default, 64, leaves room for a second server.
    #[arg(long, value_name = "N", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=shm::SLOTS as i64))]
    max_children: u32,
}

/// The listen backlog: clients beyond `--max-children` wait here.
const DEFAULT_BACKLOG: i32 = 128;
/// How long the children get to say BYE and exit after SIGTERM before they are killed.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

fn main() {
    let args: Args = common::cli::parse(Model::Ipc, DEFAULT_BACKLOG);
    if let Some(clients) = args.server.demo {
        common::demo::run(
            Model::Ipc,
            clients,
            "Each client is served by its own child process (see the pids), yet INCR counts across \
             them (shared memory) and every SAY reaches the others (message queues).",
            |i| {
                vec![
                    "WHO".into(),
                    // Wait until every client is connected, so that they are all there to hear.
                    format!("SLEEP {}", (clients - i) * 100 + 200),
                    "INCR".into(),
                    format!("SAY hello from client {i}"),
                    // Meanwhile the others' messages wait in this child's queue.
                    "SLEEP 200".into(),
                    "INCR".into(),
                    "QUIT".into(),
                ]
            },
        );
    }
    common::narrate::init(Model::Ipc, args.server.quiet);
    if let Err(e) = signals::install() {
        common::exit_with_error(&format!("cannot install the signal handlers: {e}"));
    }
    let server = std::process::id();

    // Leftovers of servers that were killed (SIGKILL) before they could clean up.
    names::remove_stale(server);

    // The shared memory: created and mapped once, here, so that every child inherits the mapping.
    let shm_name = names::shm_name(server);
    let memory = match SharedMemory::create(&shm_name) {
        Ok(memory) => memory,
        Err(e) => common::exit_with_error(&format!("cannot create shared memory {shm_name}: {e}")),
    };
    narrate!(
        "created shared memory {shm_name} ({} bytes: the INCR counter and the board of {} children)",
        std::mem::size_of::<Board>(),
        shm::SLOTS
    );
    explain_queue_budget(args.max_children);

    let listener = common::listener::listen(&args.server);
    // Non-blocking, so that accept() cannot hang if a client gave up between ppoll() and accept().
    if let Err(e) = listener.set_nonblocking(true) {
        common::exit_with_error(&format!("cannot make the listener non-blocking: {e}"));
    }
    // Stop signals shut the listener down, which wakes the ppoll() below.
    let listener_watch = signals::wake_on_shutdown(&listener);
    if let Err(e) = listen_for_children_ending() {
        common::exit_with_error(&format!("cannot handle SIGCHLD: {e}"));
    }

    let mut children = Children::new(server, memory.board());
    let mut next_id = 1;
    while !signals::requested() {
        children.reap();
        if children.live.len() >= args.max_children as usize {
            children.wait_for_one_to_end(args.max_children);
            continue;
        }
        if !wait_for_client(&listener) {
            continue; // a child ended, or a stop signal: back to the top of the loop
        }
        let (stream, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(_) if signals::requested() => break,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                narrate!("accept() failed: {e}");
                continue;
            }
        };
        let client = Client {
            model: Model::Ipc,
            id: next_id,
            allow_panic: args.server.allow_panic,
        };
        next_id += 1;
        // SAFETY: this process is single-threaded (no helper threads anywhere in this server), so
        // the child is a complete copy of it; the usual danger of fork - another thread holding a
        // lock that the child then waits for forever - cannot happen.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                // The child: it never returns to this loop.
                drop(listener_watch);
                signals::forget_watched();
                drop(listener); // the child does not accept: close its copy of the listener
                let code = run_child(stream, &client, memory.board(), server, &args.server);
                std::process::exit(code);
            }
            Ok(ForkResult::Parent { child }) => {
                narrate!(
                    "accepted client {} from {peer}; forked child {child} to serve it",
                    client.id
                );
                children.live.insert(child.as_raw(), client.id);
                // `stream` is dropped here: the parent closes its copy, the child keeps its own.
            }
            Err(e) => narrate!("fork() failed: {e}; closing client {}", client.id),
        }
    }

    drop(listener_watch);
    drop(listener);
    narrate!(
        "shutting down: telling {} children to stop",
        children.live.len()
    );
    children.stop_all();
    drop(memory);
    match shm::remove(&shm_name) {
        Ok(()) => narrate!("removed shared memory {shm_name}"),
        Err(e) => narrate!("cannot remove shared memory {shm_name}: {e}"),
    }
    narrate!("all children reaped, every IPC object removed: bye");
}

/// Says how many queues the user's budget holds, and warns if `--max-children` is more.
fn explain_queue_budget(max_children: u32) {
    let per_queue = chat::BYTES_PER_QUEUE as u64;
    match chat::budget() {
        Some(budget) => {
            let fit = budget / per_queue;
            narrate!(
                "each child's message queue costs {per_queue} bytes of this user's {budget}-byte RLIMIT_MSGQUEUE: {fit} queues fit; --max-children is {max_children}"
            );
            if u64::from(max_children) > fit {
                narrate!(
                    "WARNING: --max-children {max_children} is more than the {fit} queues that fit; the last children will get no chat messages"
                );
            }
        }
        None => {
            narrate!("each child's message queue costs {per_queue} bytes (RLIMIT_MSGQUEUE unknown)")
        }
    }
}

/// The child's whole life: serve the client, then tell the parent how it went (exit status).
fn run_child(
    stream: std::net::TcpStream,
    client: &Client,
    board: &Board,
    server: u32,
    args: &ServerArgs,
) -> i32 {
    // The parent blocks SIGCHLD (see below); the child has no children: undo it.
    let _ = signal::sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&sigchld()), None);
    narrate!("child serving client {}", client.id);
    let idle = args.idle_timeout.map(Duration::from_secs);
    // A PANIC unwinds to here: the child ends with status 101 like any panicking Rust program,
    // without running the parent's code that follows the fork.
    let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        child::serve(stream, client, board, server, idle)
    }));
    match served {
        Ok(ending) => {
            narrate!("client {} {ending}; child exits", client.id);
            0
        }
        Err(_) => 101,
    }
}

fn sigchld() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    set
}

extern "C" fn on_sigchld(_: nix::libc::c_int) {
    // Nothing to do here: its only job is to interrupt ppoll() (EINTR) so the loop reaps.
}

/// Installs a SIGCHLD handler and blocks SIGCHLD except inside `ppoll()`, which unblocks it
/// atomically while it waits. So a child ending is noticed even if it ends just before we wait:
/// the signal stays pending until `ppoll()` lets it in and returns EINTR.
fn listen_for_children_ending() -> nix::Result<()> {
    let action = SigAction::new(
        SigHandler::Handler(on_sigchld),
        SaFlags::SA_NOCLDSTOP,
        SigSet::empty(),
    );
    // SAFETY: the handler does nothing at all, which is async-signal-safe.
    unsafe { sigaction(Signal::SIGCHLD, &action) }?;
    signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&sigchld()), None)
}

/// Waits until a client is waiting to be accepted (true), or a signal arrived (false).
fn wait_for_client(listener: &TcpListener) -> bool {
    let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
    // The empty set: SIGCHLD is let in while we wait, and only then.
    match ppoll(&mut fds, None, Some(SigSet::empty())) {
        Ok(_) => !signals::requested(),
        Err(_) => false,
    }
}

/// The parent's list of live children: pid -> client id.
struct Children<'a> {
    live: BTreeMap<i32, u64>,
    server: u32,
    board: &'a Board,
}

impl<'a> Children<'a> {
    fn new(server: u32, board: &'a Board) -> Self {
        Children {
            live: BTreeMap::new(),
            server,
            board,
        }
    }

    /// Reaps every child that has ended (`waitpid(-1, WNOHANG)` until none is left), so none
    /// stays a zombie, and removes what a crashed child could not.
    fn reap(&mut self) {
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(status) => self.ended(status),
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    narrate!("waitpid() failed: {e}");
                    return;
                }
            }
        }
    }

    /// Narrates one ended child and cleans up after it.
    fn ended(&mut self, status: WaitStatus) {
        let (pid, how) = match status {
            WaitStatus::Exited(pid, 0) => (pid, "exit 0".to_string()),
            WaitStatus::Exited(pid, 101) => (pid, "exit 101: it panicked".to_string()),
            WaitStatus::Exited(pid, code) => (pid, format!("exit {code}")),
            WaitStatus::Signaled(pid, sig, _) => (pid, format!("killed by {sig}")),
            _ => return,
        };
        let client = self.live.remove(&pid.as_raw());
        let client = client.map(|c| format!(" (client {c})")).unwrap_or_default();
        narrate!("reaped child {pid}{client}: {how}");
        // A child that ended normally left the board and removed its queue itself. One that
        // crashed (PANIC, kill -9) could not: do it for it.
        self.board.unregister(pid.as_raw());
        let queue = names::queue_name(self.server, pid.as_raw());
        if chat::remove(&queue).is_ok() {
            narrate!("removed message queue {queue}, which child {pid} left behind");
        }
    }

    /// At `--max-children`: blocks until a child ends (or a stop signal), instead of accepting.
    fn wait_for_one_to_end(&mut self, max: u32) {
        narrate!(
            "{max} children (--max-children): new clients wait in the accept queue until one ends"
        );
        // sigsuspend-like: ppoll on nothing, letting SIGCHLD (and SIGINT/SIGTERM) in.
        let _ = ppoll(&mut [], None, Some(SigSet::empty()));
        self.reap();
    }

    /// Shutdown: SIGTERM to every child (each says BYE to its client and exits), then reap them
    /// all; a child that does not exit within [`SHUTDOWN_GRACE`] gets SIGKILL.
    fn stop_all(&mut self) {
        for &pid in self.live.keys() {
            let _ = signal::kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        let mut killed = false;
        loop {
            self.reap();
            if self.live.is_empty() {
                return;
            }
            if Instant::now() >= deadline && !killed {
                for &pid in self.live.keys() {
                    narrate!("child {pid} did not stop within {SHUTDOWN_GRACE:?}: SIGKILL");
                    let _ = signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
                killed = true;
            }
            // Sleep until SIGCHLD (or 100 ms, to look at the clock again).
            let tick = nix::sys::time::TimeSpec::from_duration(Duration::from_millis(100));
            let _ = ppoll(&mut [], Some(tick), Some(SigSet::empty()));
        }
    }
}
