//! # lab02: the fork server (다중 접속 서버, 포크 방식)
//!
//! The concurrent server of the notes: the main process sits in `accept()`; when a client comes,
//! it *copies itself* with `fork()` and lets the copy (the child) serve that client, while the
//! original (the parent) goes straight back to `accept()`. Every client has its own process, so
//! a slow client (`SLEEP`) or a crashing one (`PANIC`) delays or kills only its own child.
//!
//! `fork()` copies the whole process (프로세스 전체를 복사): its memory, and its open descriptors.
//! So after the fork *both* processes hold the listening socket and the client's socket. Each
//! closes what it does not need: the parent its copy of the client's socket (or it would leak one
//! descriptor per client, and the client would never see the connection close), the child its
//! copy of the listening socket (only the parent accepts).
//!
//! The copy is also why `INCR` returns 1 for every new client: each child increments its own
//! copy of the counter, and nobody else ever sees it. For the same reason `SAY` cannot reach the
//! other clients: their children share no memory with ours. Lab05 adds the IPC that fixes both.
//!
//! The parent must also *reap* each child that ends (`waitpid`), or the child stays a zombie
//! (`<defunct>` in `ps`) holding a process slot. The kernel tells the parent with SIGCHLD. We reap
//! in the parent's loop rather than in the signal handler (TLPI's `grimReaper` does it there),
//! because the loop may also print and update its table of children, which a handler must not.
//! The handler only wakes the loop; so that no wake-up is lost between a check and a wait, the
//! parent keeps its signals blocked except inside the calls where it waits (`common::fork`).
//!
//! Read on: `main`, the parent's loop (`fork_per_client`), the child
//! (`child_serves_one_client`), the reaping (`reap_ended_children`); then `prefork.rs` (the
//! pre-forked pool), `flags.rs` (the command line) and `demo.rs` (`--demo`).

mod demo;
mod flags;
mod prefork;

use std::fmt::Display;
use std::net::{SocketAddr, TcpListener, TcpStream};

use common::cli::ServerArgs;
use common::fork::{self, Children, ParentSignals, STOP_GRACE};
use common::session::{self, Client, Counter};
use common::{narrate, signals, Model};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, getppid, ForkResult};

use crate::flags::Mode;

/// Why `SAY` fails in a forked child.
const NO_SHARED_MEMORY: &str = "forked children share no memory: this child cannot reach the processes serving the other clients (lab05 relays SAY through a message queue)";

/// What the parent does with the children that ended: [`reap_ended_children`], or
/// [`leave_zombies`] with `--no-reap`.
type Reap = fn(&mut Children<String>) -> Vec<String>;

fn main() {
    let args = flags::parse();
    demo::run_if_asked(&args.server);
    common::narration::init(Model::Fork, args.server.quiet);
    // SIGINT/SIGTERM stop us, SIGCHLD wakes us when a child ends (see the top of this file).
    let parent_signals = match ParentSignals::install() {
        Ok(installed) => installed,
        Err(e) => common::exit_with_error(&format!("cannot install the signal handlers: {e}")),
    };

    // socket() + bind() + listen(backlog).
    let listener = common::listener::listen(args.server.address(), args.server.backlog);
    match args.mode() {
        Mode::ForkPerClient { max_children } => fork_per_client(
            listener,
            max_children,
            reap_ended_children,
            &parent_signals,
            &args.server,
        ),
        Mode::NoReap { max_children } => {
            narrate!("--no-reap: children that end stay zombies (<defunct> in ps) until we stop");
            fork_per_client(
                listener,
                max_children,
                leave_zombies,
                &parent_signals,
                &args.server,
            )
        }
        Mode::Prefork { workers } => {
            prefork::pool(listener, workers, &parent_signals, &args.server)
        }
    }
}

/// The parent: accept a client, fork a child to serve it, close the client's socket, reap the
/// children that ended; repeat. On SIGINT/SIGTERM: stop the children, reap them all, return.
fn fork_per_client(
    listener: TcpListener,
    max_children: usize,
    reap: Reap,
    parent_signals: &ParentSignals,
    args: &ServerArgs,
) {
    // On SIGINT/SIGTERM the handler shuts the listener down: no new connections get in.
    let listener_watch = signals::wake_on_shutdown(&listener);
    let mut children = Children::new();
    let mut next_id = 1;
    while !signals::requested() {
        reap(&mut children);
        children.wait_below(max_children, parent_signals, |children| {
            reap(children);
        });
        // Sleep until a client is in the accept queue, and accept it. A signal wakes us first if
        // a child ended (loop to reap it) or we must stop; one that came since we last looked
        // was held blocked, and wakes us at once (see the top of this file).
        let Some((stream, peer)) = parent_signals.accept(&listener) else {
            continue;
        };
        let client = Client {
            model: Model::Fork,
            id: next_id,
            allow_panic: args.allow_panic,
        };
        next_id += 1;

        // Task 1: fork a child per client; the parent closes its copy of the client's socket.
        // fork() returns twice: in the parent with the child's pid, and in the child.
        // SAFETY: fork() is unsafe because, in a process with several threads, the child would
        // get only the calling thread and any lock held by another one (the allocator's,
        // stderr's) would stay locked forever; such a child may call only async-signal-safe
        // functions. This process has exactly one thread (we start none, and our signal
        // handling uses no helper thread), so the child is a complete copy of a consistent
        // process and may run ordinary Rust code.
        match unsafe { fork() } {
            Ok(ForkResult::Parent { child }) => {
                // The child has its own copy of the client's socket. Close ours now: the parent
                // never talks to the client, and keeping it would leak one descriptor per
                // client and keep the connection open after the child closes it.
                drop(stream);
                children.add(child, format!("client {}", client.id));
                narrate!(
                    "accepted client {} from {peer}: forked child {child} to serve it ({} children live)",
                    client.id,
                    children.len()
                );
            }
            Ok(ForkResult::Child) => {
                parent_signals.in_child();
                child_serves_one_client(listener, stream, peer, &client, args)
            }
            // EAGAIN (too many processes) or ENOMEM: say so; dropping `stream` hangs up.
            Err(e) => narrate!(
                "fork() failed for client {}: {e}; closing its connection",
                client.id
            ),
        }
        // End of task 1.
    }

    drop(listener_watch);
    narrate!("stop signal: no more accept()");
    children.stop_all(STOP_GRACE);
    narrate!("shutting down: every child reaped; bye");
}

/// The child: serves its one client and exits. It never returns into the parent's loop.
fn child_serves_one_client(
    listener: TcpListener,
    stream: TcpStream,
    peer: SocketAddr,
    client: &Client,
    args: &ServerArgs,
) -> ! {
    // Task 2: the child closes the listening socket, serves its client, and exits.
    // fork() copied every descriptor: we hold the listening socket too. Only the parent accepts,
    // so close our copy. (The socket itself stays open: the parent still holds its descriptor.
    // A socket closes when its last descriptor is closed.)
    drop(listener);
    narrate!(
        "child of {}: serving client {} from {peer} (closed my copy of the listening socket)",
        getppid(),
        client.id
    );
    let status = serve(&stream, client, args, "this child exits");
    // close(): the connection ends, and the client sees it end.
    drop(stream);
    // exit() and not `return`: returning would put this copy back into the parent's accept
    // loop. Rust's exit() flushes our stdout buffer, which is empty: the parent flushed its
    // `listening on` line before forking, so nothing is written twice.
    std::process::exit(status)
    // End of task 2.
}

/// Serves one client in this process; returns the status the process must exit with (0, or 101
/// if the session panicked). `afterwards` says, for the narration, what the process does next.
fn serve(stream: &TcpStream, client: &Client, args: &ServerArgs, afterwards: &str) -> i32 {
    // A fresh counter in this process's memory: INCR says 1, then 2... and no other process
    // ever sees it.
    let counter = Counter::new(NO_SHARED_MEMORY);
    fork::run_session(client.id, afterwards, || {
        session::serve_client(stream, client, args.idle_timeout, counter)
    })
}

/// Reaps every child that has ended, without blocking, and returns what they did.
fn reap_ended_children<T: Display>(children: &mut Children<T>) -> Vec<T> {
    // Task 3: reap every child that has ended: waitpid() until none is left.
    // One SIGCHLD may stand for several children (signals are not queued), so loop; WNOHANG
    // makes waitpid() return at once when the children left are still running.
    let mut ended = Vec::new();
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => break, // children are running, none has ended
            Ok(status) => ended.extend(children.ended(status)),
            Err(_) => break, // ECHILD: no children at all
        }
    }
    ended
    // End of task 3.
}

/// `--no-reap`: reaps nothing while running, so each child that ends stays a zombie (and keeps
/// counting for --max-children) until the stop sequence reaps it.
fn leave_zombies<T: Display>(_children: &mut Children<T>) -> Vec<T> {
    Vec::new()
}
