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

mod outbox;
mod pool;
mod room;

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::TrySendError;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use clap::Parser;
use common::cli::ServerArgs;
use common::session::{self, Client, Shared};
use common::{narrate, protocol, signals, Model};

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
struct Server {
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

/// Each client thread's view of the shared state is a plain `&Server`: shared, read-only as far
/// as the type system knows. It may still change the counter and the room because those
/// synchronise inside (interior mutability with `Sync` types). A plain `u64` field could not be
/// changed through `&Server` at all: that is how Rust rules out the data race.
impl Shared for &Server {
    fn incr(&mut self) -> u64 {
        // Relaxed is enough: we only need every INCR to get its own number, which any atomic
        // read-modify-write guarantees; no other memory is published through the counter.
        self.counter.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn say(&mut self, from: u64, text: &str) -> Result<(), String> {
        self.room.say(from, text)
    }
}

fn main() {
    let args: Args = common::cli::parse(Model::Thread, DEFAULT_BACKLOG);
    if let Some(clients) = args.server.demo {
        common::demo::run(
            Model::Thread,
            clients,
            "The clients connect 100 ms apart and each is greeted at once: one pid, a thread (tid) each. \
             INCR counts across them, and each SAY reaches the others as a MSG.",
            |i| {
                vec![
                    "WHO".into(),
                    // Everyone is greeted at once: wait for the others, so all hear every SAY.
                    common::demo::TOGETHER.into(),
                    "SLEEP 300".into(),
                    "INCR".into(),
                    format!("SAY hello from client {i}"),
                    common::demo::messages(clients - 1),
                    "QUIT".into(),
                ]
            },
        );
    }
    common::narration::init(Model::Thread, args.server.quiet);
    // The handler is process-wide: the kernel delivers SIGINT/SIGTERM to whichever thread it
    // likes. That is fine, because the handler only sets a flag and shuts the listener down.
    if let Err(e) = signals::install() {
        common::exit_with_error(&format!("cannot install the signal handlers: {e}"));
    }

    let server = Arc::new(Server {
        counter: AtomicU64::new(0),
        room: Room::default(),
        allow_panic: args.server.allow_panic,
        idle_timeout: args.server.idle_timeout,
    });
    let max_clients = args.max_clients as usize;
    // --pool N: the workers, made now, before we even listen.
    let pool = args
        .pool
        .map(|size| start_pool(size as usize, max_clients, &server));

    // socket() + bind() + listen(backlog).
    let listener = common::listener::listen(args.server.address(), args.server.backlog);
    // On SIGINT/SIGTERM the handler shuts the listener down, which wakes accept() below. We
    // watch only the listener: the client sockets are in the room, and `wake_all` wakes them.
    let listener_watch = signals::wake_on_shutdown(&listener);

    let mut next_id: u64 = 1;
    // Thread per client: the handles of the client threads, to count and, at the end, join them.
    let mut threads: Vec<JoinHandle<()>> = Vec::new();

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
        match &pool {
            Some(pool) => match pool.submit((stream, peer, id)) {
                Ok(()) => {
                    narrate!("accepted client {id} from {peer}; queued for the next free worker")
                }
                Err(
                    TrySendError::Full((stream, ..)) | TrySendError::Disconnected((stream, ..)),
                ) => {
                    refuse(
                        &stream,
                        id,
                        "all workers busy and the queue is full (--max-clients)",
                    );
                }
            },
            None => {
                // Forget the threads whose client has left (they have ended).
                threads.retain(|t| !t.is_finished());
                if threads.len() >= max_clients {
                    refuse(
                        &stream,
                        id,
                        &format!("{max_clients} client threads already (--max-clients)"),
                    );
                    continue;
                }
                let shared = Arc::clone(&server); // one more owner of the shared state
                let spawned = thread::Builder::new()
                    .name(format!("client-{id}"))
                    .spawn(move || serve_client(stream, peer, id, &shared));
                match spawned {
                    Ok(handle) => {
                        threads.push(handle);
                        narrate!(
                            "accepted client {id} from {peer}; started thread client-{id} ({} client threads)",
                            threads.len()
                        );
                    }
                    // EAGAIN: out of threads or memory. The closure, and the socket with it,
                    // was dropped: the client sees the connection close.
                    Err(e) => narrate!("cannot start a thread for client {id}: {e}; closed it"),
                }
            }
        }
    }

    // Stop: no new clients (the listener is shut down). Wake every client thread blocked in
    // read(): each gets end-of-file, sees the stop flag, sends BYE and ends.
    drop(listener_watch);
    let woken = server.room.wake_all();
    narrate!("shutting down: woke {woken} client(s); waiting for their threads to say BYE");
    let still_running = match pool {
        Some(pool) => pool.shut_down(SHUTDOWN_GRACE),
        None => pool::join_within(threads, SHUTDOWN_GRACE),
    };
    if still_running > 0 {
        narrate!("{still_running} thread(s) did not finish in time; exiting anyway");
    } else {
        narrate!("every thread has finished; exiting");
    }
    // Returning from main ends the process, and with it any thread still running.
}

/// `--pool N`: starts the N workers. Each one serves the connections it takes from the queue;
/// after a stop signal, it only tells the clients still waiting `BYE`.
fn start_pool(
    size: usize,
    waiting: usize,
    server: &Arc<Server>,
) -> Pool<(TcpStream, SocketAddr, u64)> {
    let server = Arc::clone(server);
    let pool = Pool::new(
        size,
        waiting,
        move |(stream, peer, id): (TcpStream, SocketAddr, u64)| {
            if signals::requested() {
                let _ = session::send_line(&mut &stream, &protocol::bye(""));
                return;
            }
            serve_client(stream, peer, id, &server);
        },
    );
    match pool {
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
    let _ = session::send_line(&mut &*stream, &protocol::err("server full"));
    // The socket is closed when the caller drops `stream`.
}

/// Serves one client to the end, in the calling thread (a client thread, or a pool worker).
fn serve_client(stream: TcpStream, peer: SocketAddr, id: u64, server: &Server) {
    // TCP_NODELAY (replies leave at once) and --idle-timeout: see common/src/session.rs.
    if let Err(e) = session::prepare_client_socket(&stream, server.idle_timeout) {
        narrate!("cannot set the socket options of client {id}: {e}");
    }
    // This thread reads from the socket and writes its replies; the MSG lines other clients
    // send go through its outbox, to a writer thread started by the first one (see outbox.rs).
    let (mut replies, outbox) = match outbox::open(&stream, id) {
        Ok(opened) => opened,
        Err(e) => {
            narrate!("cannot set up the socket of client {id} for writing: {e}; closing it");
            return;
        }
    };
    // The room keeps the socket too (an `Arc`: shared ownership), to shut it down. From here
    // other clients' SAY reach this one. The seat leaves the room when dropped, even if this
    // thread panics (PANIC): the unwinding drops it.
    let socket = Arc::new(stream);
    let seat = server
        .room
        .join(id, Arc::clone(&socket), Arc::clone(&outbox));
    narrate!(
        "serving client {id} ({peer}) in this thread; {} in the chat room",
        server.room.len()
    );
    let client = Client {
        model: Model::Thread,
        id,
        allow_panic: server.allow_panic,
    };
    let ending = session::serve_blocking(&*socket, &mut replies, &client, server);
    // Leave the room, then let the writer thread, if one was started, write what is still
    // queued and end (see `outbox::close`). The socket closes with the last of its descriptors.
    drop(seat);
    outbox::close(outbox);
    narrate!("client {id} {ending}; done with it");
}
