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
//! (`<defunct>`); `common::fork` does that from the SIGCHLD handler (read why there).
//! `--prefork N` shows the other classic design (Stevens, UNP ch. 30): fork N children up front,
//! each blocking in `accept()` on the listening socket they all share.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::panic::{self, AssertUnwindSafe};
use std::time::Duration;

use clap::Parser;
use common::cli::ServerArgs;
use common::fork::{self, Children};
use common::session::{self, Client, Shared};
use common::{narrate, signals, Model};
use nix::unistd::{fork, getppid, ForkResult};

/// The fork server of lab02: a child process per client (다중 접속 서버, 포크 방식).
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    #[command(flatten)]
    server: ServerArgs,

    /// Pre-forked mode (UNP ch. 30): fork N children at startup, each blocking in accept() on the
    /// shared listening socket and serving clients one after another; a child that ends is
    /// replaced, so the pool stays at N (and at most N clients are served at once).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    prefork: Option<u32>,

    /// Fork-per-client mode: at most N children at once. At the cap the server stops calling
    /// accept() until a child ends, so new clients wait in the accept queue instead of forking
    /// the machine to death.
    #[arg(long, value_name = "N", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    max_children: u32,

    /// For the tutorial only: never reap a child while running, so every child that ends stays
    /// a zombie (<defunct> in `ps`) until the server stops. Zombies still count for
    /// --max-children.
    #[arg(long)]
    no_reap: bool,
}

/// The usual `listen()` backlog: clients arrive only while the parent is between two
/// `accept()`s (or at --max-children), so the queue seldom holds anyone.
const DEFAULT_BACKLOG: i32 = 128;

/// How long the children get to say `BYE` and exit after SIGTERM, before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// The exit status of a child whose session panicked (Rust's own status for a panic in main).
const PANIC_EXIT_STATUS: i32 = 101;

/// A counter in the child's own memory: a copy, made by fork(), that no other process sees.
struct OwnCounter {
    value: u64,
}

impl Shared for OwnCounter {
    fn incr(&mut self) -> u64 {
        self.value += 1;
        self.value
    }

    fn say(&mut self, _from: u64, _text: &str) -> Result<(), String> {
        Err("forked children share no memory: this child cannot reach the processes serving the other clients (lab05 relays SAY through a message queue)".into())
    }
}

fn main() {
    let args: Args = common::cli::parse(Model::Fork, DEFAULT_BACKLOG);
    if let Some(clients) = args.server.demo {
        common::demo::run(
            Model::Fork,
            clients,
            "The clients connect 100 ms apart; each is greeted at once by its own child process (a different pid), and INCR says 1 to everyone.",
            |_| vec!["WHO".into(), "INCR".into(), "SLEEP 1500".into(), "QUIT".into()],
        );
    }
    common::narrate::init(Model::Fork, args.server.quiet);
    if let Err(e) = signals::install() {
        common::exit_with_error(&format!("cannot install the signal handlers: {e}"));
    }
    if args.no_reap {
        narrate!("--no-reap: children that end stay zombies (<defunct> in ps) until we stop");
    } else if let Err(e) = fork::install_reaper() {
        common::exit_with_error(&format!("cannot install the SIGCHLD handler: {e}"));
    }

    // socket() + bind() + listen(backlog).
    let listener = common::listener::listen(&args.server);
    match args.prefork {
        None => fork_per_client(listener, &args),
        Some(size) => prefork_pool(listener, size, &args),
    }
}

/// The parent of the fork-per-client mode: accept, fork, close the client's socket, repeat.
fn fork_per_client(listener: TcpListener, args: &Args) {
    // On SIGINT/SIGTERM the handler shuts the listener down, which wakes accept() below.
    let listener_watch = signals::wake_on_shutdown(&listener);
    let max = args.max_children as usize;
    let mut children = Children::new();
    let mut next_id = 1;
    loop {
        // Narrate the children that ended since we last looked (the SIGCHLD handler has
        // already reaped them: they are not zombies, even while we sit in accept()).
        children.reap();
        if children.len() >= max && !signals::requested() {
            narrate!(
                "{} children: the --max-children cap; not accepting until one ends (new clients wait in the accept queue)",
                children.len()
            );
            children.wait_until_fewer_than(max);
        }
        if signals::requested() {
            break;
        }

        // Block until a client is in the accept queue. (fork::accept is accept(), but unlike
        // std's it lets a signal interrupt it, so a child's SIGCHLD wakes us to narrate it.)
        let (stream, peer) = match fork::accept(&listener) {
            Ok(accepted) => accepted,
            Err(_) if signals::requested() => break,
            // EINTR: a child ended while we were blocked (SIGCHLD); loop to narrate it.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                narrate!("accept() failed: {e}");
                continue;
            }
        };
        let client = Client {
            model: Model::Fork,
            id: next_id,
            allow_panic: args.server.allow_panic,
        };
        next_id += 1;

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
                // We are the copy. We must never get back into this loop: the function below
                // ends with exit(), it does not return.
                child_serves_one_client(listener, stream, peer, &client, args)
            }
            Err(e) => {
                // EAGAIN (too many processes) or ENOMEM: say so; dropping `stream` hangs up.
                narrate!(
                    "fork() failed for client {}: {e}; closing its connection",
                    client.id
                );
            }
        }
    }

    drop(listener_watch);
    narrate!("stop signal: no more accept()");
    children.stop_all(STOP_GRACE);
    narrate!("shutting down: every child reaped; bye");
}

/// A child of the fork-per-client mode: serves its one client and exits.
fn child_serves_one_client(
    listener: TcpListener,
    stream: TcpStream,
    peer: SocketAddr,
    client: &Client,
    args: &Args,
) -> ! {
    // fork() copied the parent's signal setup and its list of watched sockets: drop what is the
    // parent's business (reaping, the listener's slot) before anything else.
    fork::in_child();
    signals::forget_watched();
    // fork() copies the whole process, descriptors included: we hold the listening socket too.
    // Only the parent accepts, so close our copy. (The socket itself stays open: the parent
    // still holds its descriptor. A socket closes when its last descriptor is closed.)
    drop(listener);
    narrate!(
        "child of {}: serving client {} from {peer} (closed my copy of the listening socket)",
        getppid(),
        client.id
    );
    let status = serve_one(stream, client, args, "this child exits");
    // exit() and not `return`: returning would put this copy back into the parent's accept
    // loop. Rust's exit() flushes our stdout buffer, which is empty: the parent flushed its
    // `listening on` line before forking, so nothing is written twice.
    std::process::exit(status)
}

/// Serves one client from `HELLO` to the end in this process; returns the exit status the
/// child should have (0, or 101 if the session panicked). `next` says what we do after.
fn serve_one(stream: TcpStream, client: &Client, args: &Args, next: &str) -> i32 {
    // TCP_NODELAY (replies leave at once) and --idle-timeout: see common/src/session.rs.
    if let Err(e) = session::prepare_client_socket(&stream, args.server.idle_timeout) {
        narrate!("cannot set the socket options of client {}: {e}", client.id);
    }
    // A stop signal (the parent's SIGTERM at shutdown) must wake us if we are blocked reading.
    let _watch = signals::wake_on_shutdown(&stream);
    // Each client gets a fresh counter, in this process's memory: INCR says 1, then 2...
    let mut counter = OwnCounter { value: 0 };
    // A PANIC unwinds to here; we turn it into an exit status, so the panicking child ends
    // (the parent reaps it and narrates `exit 101`) and never unwinds into code that is not its.
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
        session::serve_blocking(&stream, &mut &stream, client, &mut counter)
    }));
    match outcome {
        Ok(ending) => {
            let next = if signals::requested() {
                "this child exits"
            } else {
                next
            };
            narrate!("client {} {ending}; {next}", client.id);
            0
        }
        Err(_) => {
            narrate!(
                "the session of client {} panicked: this child exits with status {PANIC_EXIT_STATUS}; no other client is touched",
                client.id
            );
            PANIC_EXIT_STATUS
        }
    }
}

/// Which slot of the pre-forked pool a child fills.
#[derive(Clone, Copy, Debug)]
struct Worker {
    slot: u32,
}

impl std::fmt::Display for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pool worker {}", self.slot)
    }
}

/// The parent of the pre-forked mode: fork `size` workers, then only reap and replace them.
fn prefork_pool(listener: TcpListener, size: u32, args: &Args) {
    // The handler's shutdown() acts on the socket itself, which the workers share: it wakes
    // every worker blocked in accept() too (they get EINVAL and exit).
    let listener_watch = signals::wake_on_shutdown(&listener);
    narrate!(
        "pre-forking {size} workers: the cost of fork() is paid now, once; at most {size} clients are served at once, the others wait in the accept queue"
    );
    narrate!(
        "every worker blocks in accept() on the same socket; the kernel hands each new connection to one of them (Linux wakes just one; kernels that woke them all had the 'thundering herd')"
    );
    let mut children = Children::new();
    let mut empty_slots: Vec<u32> = (1..=size).rev().collect();
    while !signals::requested() {
        while let Some(slot) = empty_slots.pop() {
            // SAFETY: as in fork_per_client: this process has a single thread, so the child is
            // a consistent copy that may run ordinary Rust code.
            match unsafe { fork() } {
                Ok(ForkResult::Parent { child }) => {
                    let worker = Worker { slot };
                    children.add(child, worker);
                    narrate!(
                        "forked {worker}: child {child} ({} of {size} in the pool)",
                        children.len()
                    );
                }
                Ok(ForkResult::Child) => worker_serves_clients(&listener, slot, size, args),
                Err(e) => {
                    narrate!("fork() failed: {e}; trying again in a second");
                    empty_slots.push(slot);
                    session::sleep_unless_stopping(1000);
                    break;
                }
            }
        }
        // Sleep until a worker ends (SIGCHLD) or we are told to stop (SIGINT/SIGTERM).
        for ended in children.wait_until_fewer_than(size as usize) {
            if let Some(worker) = ended.info {
                if !signals::requested() {
                    narrate!("{worker} is gone: forking a replacement");
                }
                empty_slots.push(worker.slot);
            }
        }
    }

    drop(listener_watch);
    narrate!(
        "stop signal: the listening socket is shut down, the idle workers return from accept()"
    );
    children.stop_all(STOP_GRACE);
    narrate!("shutting down: every worker reaped; bye");
}

/// A worker of the pre-forked pool: accept a client, serve it, accept the next, until stopped.
fn worker_serves_clients(listener: &TcpListener, slot: u32, size: u32, args: &Args) -> ! {
    let parent = getppid();
    fork::in_child();
    // If the parent dies without stopping us (`kill -9`), nobody would ever stop this pool: ask
    // the kernel (Linux's prctl) to send us SIGTERM then. And if it died before we asked, stop.
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM);
    if getppid() != parent {
        std::process::exit(0);
    }
    // Not watched here: our handler's shutdown() would shut the listening socket of the whole
    // pool. A SIGTERM interrupts our accept() (EINTR) instead.
    signals::forget_watched();
    narrate!(
        "pool worker {slot}, child of {parent}: blocking in accept() on the listening socket all workers share"
    );
    let mut served: u64 = 0;
    loop {
        let (stream, peer) = match fork::accept(listener) {
            Ok(accepted) => accepted,
            Err(_) if signals::requested() => break,
            // The parent shut the shared listening socket down: the server is stopping.
            Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                narrate!("accept() failed: {e}");
                continue;
            }
        };
        // Ids slot, slot+N, slot+2N...: two workers never hand out the same one.
        let client = Client {
            model: Model::Fork,
            id: u64::from(slot) + served * u64::from(size),
            allow_panic: args.server.allow_panic,
        };
        served += 1;
        narrate!(
            "pool worker {slot}: accepted client {} from {peer} (my client number {served})",
            client.id
        );
        let status = serve_one(stream, &client, args, "back to accept()");
        if status != 0 || signals::requested() {
            std::process::exit(status); // the parent reaps us and forks a replacement
        }
    }
    narrate!("pool worker {slot}: stopping after {served} clients");
    std::process::exit(0)
}
