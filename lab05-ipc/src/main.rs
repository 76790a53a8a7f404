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
//! The parent is lab02's, built on the same `common::fork` (race-free waits for SIGCHLD, the
//! table of live children, the `--max-children` wait, stopping them all): accept, fork, remember
//! the child, reap it when it ends; on SIGINT/SIGTERM pass SIGTERM on to the children (each says
//! `BYE` to its client), reap them all, remove the IPC objects, exit 0. What lab05 adds to the
//! parent is only the IPC housekeeping: create the shared memory before the first fork, remove
//! what a crashed child left behind when it is reaped, remove everything at the end.
//!
//! `--ipc sysv` does the same with **System V** IPC, the kind `ipcs` lists: the board in a
//! System V shared-memory segment, and the chat through *one* System V message queue whose
//! messages are typed with the recipient child's pid, the recipient woken by `SIGUSR1` since
//! such a queue cannot be polled (`sysv.rs`).

mod chat;
mod child;
mod names;
mod shm;
mod sysv;

use std::fmt;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use clap::Parser;
use common::cli::ServerArgs;
use common::fork::{self, Children, ParentSignals, STOP_GRACE};
use common::session::Client;
use common::{narrate, signals, Model};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::{fork, getppid, ForkResult, Pid};

use crate::shm::{Board, SharedMemory};
use crate::sysv::{MsgQueue, Segment};

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

    /// Which IPC the children share through: posix (shm_open + one mq_open queue per child, in
    /// /dev/shm) or sysv (shmget + one msgget queue typed by child pid, woken by SIGUSR1; see
    /// them with `ipcs -m -q`).
    #[arg(long, value_enum, value_name = "KIND", default_value_t = Ipc::Posix)]
    ipc: Ipc,
}

/// The two kinds of IPC (`--ipc`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Ipc {
    /// POSIX shared memory and message queues.
    Posix,
    /// System V shared memory and message queues.
    Sysv,
}

/// Where the board lives: a POSIX shared-memory object or a System V segment. Either way it is
/// the same bytes, mapped before the first fork.
enum Memory {
    Posix(SharedMemory),
    Sysv(Segment),
}

impl Memory {
    fn board(&self) -> &Board {
        match self {
            Memory::Posix(memory) => memory.board(),
            Memory::Sysv(segment) => segment.board(),
        }
    }
}

/// The listen backlog: clients beyond `--max-children` wait here.
const DEFAULT_BACKLOG: i32 = 128;

/// What the parent remembers about a child: the client it serves.
struct Served(u64);

impl fmt::Display for Served {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client {}", self.0)
    }
}

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
                    // Wait until every client is greeted (its child is listening on its queue),
                    // so that they are all there to hear.
                    common::demo::TOGETHER.into(),
                    "INCR".into(),
                    format!("SAY hello from client {i}"),
                    // The others' messages arrive in this child's queue; wait for them all.
                    common::demo::messages(clients - 1),
                    "INCR".into(),
                    "QUIT".into(),
                ]
            },
        );
    }
    common::narration::init(Model::Ipc, args.server.quiet);
    let parent_signals = match ParentSignals::install() {
        Ok(installed) => installed,
        Err(e) => common::exit_with_error(&format!("cannot install the signal handlers: {e}")),
    };
    let server = std::process::id();

    // Leftovers of servers that were killed (SIGKILL) before they could clean up, of either kind.
    names::remove_stale(server);
    sysv::remove_stale(server);

    // socket() + bind() + listen(backlog), first: if the port is taken we exit at once, before
    // creating anything that would then be left behind.
    let listener = common::listener::listen(args.server.address(), args.server.backlog);

    // The shared memory: created and mapped once, here, before any fork(), so that every child
    // inherits the mapping and they all see the same pages. (Clients that connect meanwhile wait
    // in the accept queue.)
    let shm_name = names::shm_name(server);
    let (memory, queue) = match args.ipc {
        Ipc::Posix => {
            let memory = match SharedMemory::create(&shm_name) {
                Ok(memory) => memory,
                Err(e) => {
                    common::exit_with_error(&format!("cannot create shared memory {shm_name}: {e}"))
                }
            };
            narrate!(
                "created shared memory {shm_name} ({} bytes: the INCR counter and the board of {} children)",
                std::mem::size_of::<Board>(),
                shm::SLOTS
            );
            explain_queue_budget(args.max_children);
            (Memory::Posix(memory), None)
        }
        Ipc::Sysv => {
            let (segment, queue) = create_sysv(server);
            (Memory::Sysv(segment), Some(queue))
        }
    };

    serve_forever(
        listener,
        memory.board(),
        server,
        queue,
        &args,
        &parent_signals,
    );

    // Stopped: no child is left. Remove what crashed children left, then the shared memory.
    clean_up_after_crashed_children(memory.board(), server, queue);
    match memory {
        Memory::Posix(memory) => {
            drop(memory); // munmap
            match shm::remove(&shm_name) {
                Ok(()) => narrate!("removed shared memory {shm_name}"),
                Err(e) => narrate!("cannot remove shared memory {shm_name}: {e}"),
            }
        }
        Memory::Sysv(segment) => {
            let id = segment.id;
            drop(segment); // shmdt
            match sysv::remove_segment(id) {
                Ok(()) => narrate!("removed shared memory: System V segment shmid {id} (IPC_RMID)"),
                Err(e) => narrate!("cannot remove System V segment shmid {id}: {e}"),
            }
        }
    }
    if let Some(queue) = queue {
        match sysv::remove_queue(queue.id) {
            Ok(()) => narrate!(
                "removed System V message queue msqid {} (IPC_RMID)",
                queue.id
            ),
            Err(e) => narrate!(
                "cannot remove System V message queue msqid {}: {e}",
                queue.id
            ),
        }
    }
    narrate!("shutting down: every child reaped, every IPC object removed; bye");
}

/// `--ipc sysv`: the SIGUSR1 handler (before any fork), the segment and the one queue.
fn create_sysv(server: u32) -> (Segment, MsgQueue) {
    if let Err(e) = sysv::install_wake_handler() {
        common::exit_with_error(&format!("cannot install the SIGUSR1 handler: {e}"));
    }
    let key = sysv::key(sysv::Kind::Memory, server);
    let segment = match Segment::create(key) {
        Ok(segment) => segment,
        Err(e) => common::exit_with_error(&format!(
            "cannot create System V shared memory key {key:#010x}: {e}"
        )),
    };
    narrate!(
        "created System V shared memory: key {key:#010x} shmid {} ({} bytes: the INCR counter and the board of {} children)",
        segment.id,
        std::mem::size_of::<Board>(),
        shm::SLOTS
    );
    let key = sysv::key(sysv::Kind::Queue, server);
    let queue = match MsgQueue::create(key) {
        Ok(queue) => queue,
        Err(e) => {
            let _ = sysv::remove_segment(segment.id);
            common::exit_with_error(&format!(
                "cannot create System V message queue key {key:#010x}: {e}"
            ))
        }
    };
    let limit = |name: &str| {
        std::fs::read_to_string(format!("/proc/sys/kernel/{name}"))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "?".into())
    };
    narrate!(
        "created System V message queue: key {key:#010x} msqid {} (one for all children, mtype = the recipient's pid; msgmnb {} bytes per queue, msgmax {} per message)",
        queue.id,
        limit("msgmnb"),
        limit("msgmax")
    );
    (segment, queue)
}

/// The parent's loop: accept, fork, repeat; until SIGINT/SIGTERM, then stop the children.
fn serve_forever(
    listener: TcpListener,
    board: &Board,
    server: u32,
    queue: Option<MsgQueue>,
    args: &Args,
    parent_signals: &ParentSignals,
) {
    // On SIGINT/SIGTERM the handler shuts the listener down, which wakes accept() below.
    let listener_watch = signals::wake_on_shutdown(&listener);
    let max = args.max_children as usize;
    let mut children: Children<Served> = Children::new();
    let mut next_id = 1;
    while !signals::requested() {
        // Reap the children that ended (lab02 explains the loop) and remove what the crashed
        // ones left in the shared memory and the queues.
        reap(&mut children, board, server, queue);
        children.wait_below(max, parent_signals, |children| {
            reap(children, board, server, queue)
        });
        // A client, or a signal (a child ended, or a stop): see common::fork.
        let Some((stream, peer)) = parent_signals.accept(&listener) else {
            continue;
        };
        let client = Client {
            model: Model::Ipc,
            id: next_id,
            allow_panic: args.server.allow_panic,
        };
        next_id += 1;
        // SAFETY: in a process with several threads, the child of fork() gets only the calling
        // thread, and a lock another thread held (the allocator's, stderr's) stays locked forever.
        // This process has exactly one thread (we start none; signals are handled with sigaction,
        // not a helper thread), so the child is a consistent copy that may run ordinary Rust code.
        match unsafe { fork() } {
            Ok(ForkResult::Parent { child }) => {
                drop(stream); // the child has its own copy; ours would only leak
                children.add(child, Served(client.id));
                narrate!(
                    "accepted client {} from {peer}: forked child {child} to serve it ({} children live)",
                    client.id,
                    children.len()
                );
            }
            Ok(ForkResult::Child) => {
                parent_signals.in_child();
                child_main(
                    listener,
                    (stream, peer),
                    &client,
                    board,
                    server,
                    queue,
                    args,
                )
            }
            Err(e) => narrate!(
                "fork() failed for client {}: {e}; closing its connection",
                client.id
            ),
        }
    }
    drop(listener_watch);
    narrate!("stop signal: no more accept(); stopping the children");
    children.stop_all(STOP_GRACE);
}

/// A child: serves its one client and exits. It never returns into the parent's loop.
fn child_main(
    listener: TcpListener,
    (stream, peer): (TcpStream, SocketAddr),
    client: &Client,
    board: &Board,
    server: u32,
    queue: Option<MsgQueue>,
    args: &Args,
) -> ! {
    // fork() copied every descriptor. We need the client's socket, not the listening socket:
    // close our copy. (The parent holds no other descriptor: it closed each client's socket
    // after forking, it closed the shared memory's descriptor after mmap, and it never opens a
    // queue.) The mapping of the shared memory is inherited, and is what we want to keep.
    drop(listener);
    narrate!(
        "child of {}: serving client {} from {peer}",
        getppid(),
        client.id
    );
    let idle = args.server.idle_timeout.map(Duration::from_secs);
    let status = fork::run_session(client.id, "this child exits", || {
        child::serve(stream, client, board, server, queue, idle)
    });
    std::process::exit(status)
}

/// Reaps the children that ended: a child that ended normally removed its queue and left the
/// board itself; one that crashed (PANIC, kill -9) could not, so the parent does it for it.
fn reap(children: &mut Children<Served>, board: &Board, server: u32, queue: Option<MsgQueue>) {
    while let Ok(status) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
        let Some(pid) = status.pid() else { break }; // StillAlive: none has ended
        children.ended(status);
        remove_leftovers_of(pid.as_raw(), board, server, queue);
    }
}

/// Removes child `pid`'s queue (posix) or its unread messages (sysv), and its board row, if it
/// left them behind.
fn remove_leftovers_of(pid: i32, board: &Board, server: u32, queue: Option<MsgQueue>) {
    match queue {
        // Messages typed with a dead child's pid would take room in the shared queue for ever:
        // leave the board first (no new sender finds that pid), then drain them.
        Some(queue) => {
            board.unregister(pid);
            let dropped = queue.drain(pid);
            if dropped > 0 {
                narrate!(
                    "dropped {dropped} message(s) for child {pid} from System V queue msqid {}",
                    queue.id
                );
            }
        }
        None => {
            let name = names::queue_name(server, pid);
            if chat::remove(&name).is_ok() {
                narrate!("removed message queue {name}, which child {pid} left behind");
            }
            board.unregister(pid);
        }
    }
}

/// At the end: every row still on the board is a child that did not clean up after itself.
fn clean_up_after_crashed_children(board: &Board, server: u32, queue: Option<MsgQueue>) {
    for child in board.listeners(0) {
        remove_leftovers_of(child.pid, board, server, queue);
    }
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
