//! # lab03: the concurrent server with a thread per client (다중 접속, 쓰레드 방식)
//!
//! The main thread does one thing: it blocks in `accept()`, and for each client it accepts it
//! starts a new thread (`std::thread`) that serves that client from `HELLO` to the end. The
//! clients are served at the same time, like the forked children of lab02, but the threads are
//! all inside *one* process: one pid, one address space, a distinct OS thread id (tid) each. A
//! thread is a "light-weight process" (쓰레드 = 경량 프로세스): creating one copies nothing but a
//! stack, and everything else is shared (외부 변수가 있는 메모리 공간을 공유).
//!
//! Sharing is the lesson, with both its power and its danger:
//!
//! - `INCR`'s counter is one number that every thread updates: 1, 2, 3... across all clients.
//! - `SAY` reaches every other client through a chat room (`room.rs`): the table of connected
//!   clients, which every thread reads and changes, behind a `Mutex`.
//! - A `PANIC` ends one thread; the process, and every other client, goes on. The mutex must
//!   then survive being *poisoned* (see `room.rs`).
//! - A client that stops reading must not freeze everyone's chat: the `MSG` lines for a client
//!   go through a bounded outbox and its own writer thread (`outbox.rs`).
//!
//! `--pool N` serves with N threads made up front instead (`pool.rs`), and `--max-clients` keeps
//! the server from starting threads without bound.
//!
//! Rust will not compile a program where two threads could change the same memory without
//! synchronisation (a *data race*): to share anything, a thread must hold an `Arc` of it, and to
//! change it through the `Arc` the type must be an atomic, a `Mutex`, or another type that
//! synchronises (it must be `Sync`). The comments below point at the places where that shows.

mod demo;
mod outbox;
mod pool;
mod room;

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::TrySendError;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use clap::Parser;
use common::cli::ServerArgs;
use common::session::{self, Client, Shared};
use common::{narrate, signals, Model};

use crate::pool::Pool;
use crate::room::Room;

/// The thread server of lab03: a thread per client, sharing one counter and one chat room
/// (다중 접속, 쓰레드 방식).
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    #[command(flatten)]
    server: ServerArgs,

    /// Serve with a pool of N worker threads started up front, instead of a new thread per
    /// client: at most N clients are served at once, the others wait their turn (no HELLO yet).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pool: Option<u32>,

    /// The most clients held at once: client threads (thread per client), or clients waiting
    /// for a free worker (--pool). Past it a new client gets `ERR server full` and is closed.
    #[arg(long, value_name = "N", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..=65_536))]
    max_clients: u32,
}

/// Room for many clients in the accept queue (the kernel caps it at net.core.somaxconn).
const DEFAULT_BACKLOG: i32 = 128;

/// At shutdown, how long the main thread waits for the client threads to say `BYE` and end.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// The memory every client thread shares. One value, made by `main`, reached by every thread
/// through an `Arc` (a reference-counted pointer whose count is itself atomic).
struct SharedState {
    /// `INCR`. An atomic rather than a `Mutex<u64>`: a single number with no other data to keep
    /// consistent with it is exactly what the CPU can update atomically (`lock xadd` on x86), so
    /// no thread ever waits on a lock for it. A `Mutex<u64>` would work too; the chat room needs
    /// a mutex because it changes a whole table at once.
    counter: AtomicU64,
    /// The table of connected clients that `SAY` goes through.
    room: Room,
    allow_panic: bool,
    idle_timeout: Option<u64>,
}

/// Each client thread's view of the shared state is a plain `&SharedState`: shared, read-only
/// as far as the type system knows. It may still change the counter and the room because those
/// synchronise inside (interior mutability with `Sync` types). A plain `u64` field could not be
/// changed through `&SharedState` at all: that is how Rust rules out the data race.
impl Shared for &SharedState {
    fn incr(&mut self) -> u64 {
        // Task 2: the shared counter.
        // Every thread adds to the one counter at once: an atomic read-modify-write gives each
        // INCR its own number. Relaxed is enough: no other memory is published through it.
        self.counter.fetch_add(1, Ordering::Relaxed) + 1
        // End of task 2.
    }

    fn say(&mut self, from: u64, text: &str) -> Result<(), String> {
        self.room.say(from, text)
    }
}

/// A client just accepted: its socket, its address and its id.
type Accepted = (TcpStream, SocketAddr, u64);

/// How clients get their thread: one name for each way.
enum Threads {
    /// A new thread per client (the default): the running ones, to count and, at the end, join.
    PerClient(Vec<JoinHandle<()>>),
    /// `--pool N`: N workers made up front take the accepted clients from a queue.
    Pool(Pool<Accepted>),
}

fn main() {
    let args: Args = common::cli::parse(Model::Thread, DEFAULT_BACKLOG);
    if let Some(clients) = args.server.demo {
        demo::run(clients);
    }
    common::narration::init(Model::Thread, args.server.quiet);
    // The handler is process-wide: the kernel delivers SIGINT/SIGTERM to whichever thread it
    // likes. That is fine, because the handler only sets a flag and shuts the listener down.
    if let Err(e) = signals::install() {
        common::exit_with_error(&format!("cannot install the signal handlers: {e}"));
    }
    let state = Arc::new(SharedState {
        counter: AtomicU64::new(0),
        room: Room::default(),
        allow_panic: args.server.allow_panic,
        idle_timeout: args.server.idle_timeout,
    });
    let max_clients = args.max_clients as usize;
    let mut threads = match args.pool {
        // --pool N: the workers, made now, before we even listen.
        Some(size) => Threads::Pool(start_pool(size as usize, max_clients, &state)),
        None => Threads::PerClient(Vec::new()),
    };

    // socket() + bind() + listen(backlog).
    let listener = common::listener::listen(args.server.address(), args.server.backlog);
    // On SIGINT/SIGTERM the handler shuts the listener down, which wakes accept() below. We
    // watch only the listener: the client sockets are in the room, and `wake_all` wakes them.
    let listener_watch = signals::wake_on_shutdown(&listener);
    let mut next_id: u64 = 1;
    loop {
        // Block until a client is in the accept queue, and take the oldest one.
        let (stream, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(_) if signals::requested() => break,
            Err(e) => {
                // ECONNABORTED (gave up while queued), EMFILE (out of descriptors)...: say so,
                // and keep serving the others.
                narrate!("accept() failed: {e}");
                continue;
            }
        };
        let id = next_id;
        next_id += 1;
        threads.hand_over((stream, peer, id), &state, max_clients);
    }

    // Stop: no new clients (the listener is shut down). Wake every client thread blocked in
    // read(): each gets end-of-file, sees the stop flag, sends BYE and ends.
    drop(listener_watch);
    let woken = state.room.wake_all();
    narrate!("shutting down: woke {woken} client(s); waiting for their threads to say BYE");
    let still_running = threads.finish(SHUTDOWN_GRACE);
    if still_running > 0 {
        narrate!("{still_running} thread(s) did not finish in time; exiting anyway");
    } else {
        narrate!("every thread has finished; exiting");
    }
    // Returning from main ends the process, and with it any thread still running.
}

impl Threads {
    /// Gives the client just accepted a thread: a new one, or a place in the pool's queue. Past
    /// `max_clients`, refuses it.
    fn hand_over(
        &mut self,
        (stream, peer, id): Accepted,
        state: &Arc<SharedState>,
        max_clients: usize,
    ) {
        match self {
            Threads::PerClient(running) => {
                running.retain(|t| !t.is_finished()); // forget the threads that have ended
                if running.len() >= max_clients {
                    let why = format!("{max_clients} client threads already (--max-clients)");
                    refuse(&stream, id, &why);
                    return;
                }
                match spawn_client_thread(stream, peer, id, state) {
                    Ok(thread) => {
                        running.push(thread);
                        let count = running.len();
                        narrate!("accepted client {id} from {peer}; started thread client-{id} ({count} client threads)");
                    }
                    // EAGAIN: out of threads or memory. The socket was dropped with the closure
                    // that owned it: the client sees the connection close.
                    Err(e) => narrate!("cannot start a thread for client {id}: {e}; closed it"),
                }
            }
            Threads::Pool(pool) => match pool.submit((stream, peer, id)) {
                Ok(()) => {
                    narrate!("accepted client {id} from {peer}; queued for the next free worker")
                }
                Err(
                    TrySendError::Full((stream, ..)) | TrySendError::Disconnected((stream, ..)),
                ) => {
                    let why = "all workers busy and the queue is full (--max-clients)";
                    refuse(&stream, id, why);
                }
            },
        }
    }

    /// At shutdown: waits at most `grace` for the threads to end; returns how many had not.
    fn finish(self, grace: Duration) -> usize {
        match self {
            Threads::PerClient(running) => pool::join_within(running, grace),
            Threads::Pool(pool) => pool.shut_down(grace),
        }
    }
}

/// Starts a thread that serves client `id` to the end, and returns its handle.
fn spawn_client_thread(
    stream: TcpStream,
    peer: SocketAddr,
    id: u64,
    state: &Arc<SharedState>,
) -> io::Result<JoinHandle<()>> {
    // Task 1: a thread per client.
    // The new thread needs its own owner of the shared state (an `Arc` clone), and takes the
    // socket with it (`move`): from here on, this client is that thread's alone.
    let state = Arc::clone(state);
    thread::Builder::new()
        .name(format!("client-{id}"))
        .spawn(move || serve_client(stream, peer, id, &state))
    // End of task 1.
}

/// `--pool N`: starts the N workers. Each one serves the clients it takes from the queue;
/// after a stop signal, it only tells the clients still waiting `BYE`.
fn start_pool(size: usize, waiting: usize, state: &Arc<SharedState>) -> Pool<Accepted> {
    let state = Arc::clone(state);
    let serve = move |(stream, peer, id): Accepted| {
        if signals::requested() {
            let _ = (&stream).write_all(b"BYE\n");
            return;
        }
        serve_client(stream, peer, id, &state);
    };
    match Pool::new(size, waiting, serve) {
        Ok(pool) => {
            narrate!("started a pool of {size} worker threads");
            pool
        }
        Err(e) => common::exit_with_error(&format!("cannot start {size} worker threads: {e}")),
    }
}

/// Says `ERR server full` and closes: better than a silent close, and no thread is started.
fn refuse(stream: &TcpStream, id: u64, why: &str) {
    narrate!("refused client {id}: {why}");
    let _ = (&*stream).write_all(b"ERR server full\n");
    // The socket is closed when the caller drops `stream`.
}

/// Serves one client to the end, in the calling thread (a client thread, or a pool worker).
fn serve_client(stream: TcpStream, peer: SocketAddr, id: u64, state: &SharedState) {
    // TCP_NODELAY (replies leave at once) and --idle-timeout: see common/src/session.rs.
    if let Err(e) = session::prepare_client_socket(&stream, state.idle_timeout) {
        narrate!("cannot set the socket options of client {id}: {e}");
    }
    // This thread reads from the socket and writes its replies; the MSG lines other clients
    // send go through its outbox, to its writer thread (see outbox.rs).
    let (mut replies, outbox, writer) = match outbox::open(&stream, id) {
        Ok(opened) => opened,
        Err(e) => {
            narrate!("cannot set up the writing side of client {id}: {e}; closing it");
            return;
        }
    };
    // The room keeps the socket too (an `Arc`: shared ownership), to shut it down, and the
    // outbox. From here other clients' SAY reach this one. The seat leaves the room when
    // dropped, even if this thread panics (PANIC): the unwinding drops it.
    let socket = Arc::new(stream);
    let seat = state.room.join(id, Arc::clone(&socket), outbox);
    narrate!(
        "serving client {id} ({peer}) in this thread; {} in the chat room",
        state.room.len()
    );
    let client = Client {
        model: Model::Thread,
        id,
        allow_panic: state.allow_panic,
    };
    let ending = session::serve_blocking(&*socket, &mut replies, &client, state);
    // Leave the room: it held the outbox's only sender, so the writer thread writes what is
    // still queued and ends. Wait for it; the socket closes with the last of its descriptors.
    drop(seat);
    let _ = writer.join();
    narrate!("client {id} {ending}; done with it");
}
