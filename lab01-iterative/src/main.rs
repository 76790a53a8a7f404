//! # lab01: the iterative server (단일 접속 서버)
//!
//! The simplest server there is: accept one client, serve it from start to finish, and only then
//! accept the next. While one client is being served, the others are not refused: the kernel
//! completes their TCP handshakes and parks them in the *accept queue* (접속 대기큐, the backlog)
//! that `listen()` created. They sit there, connected but unanswered, until we call `accept()`.
//! Watch it with `ss -ltn`: Recv-Q is how many are waiting, Send-Q the queue's length.
//!
//! One client at a time also means one counter, in one process, that every client sees in turn:
//! `INCR` counts across clients. `SAY` reaches nobody, since nobody else is being served.
//!
//! Read on: `main`, `listen` (the accept queue), `serve_clients_in_turn` (accept, serve, close);
//! then `demo.rs` (`--demo`).

mod demo;

use std::net::TcpListener;

use clap::Parser;
use common::cli::ServerArgs;
use common::session::{self, Client, Counter};
use common::{narrate, signals, Model};

/// The iterative server of lab01: one client at a time (단일 접속 서버).
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    #[command(flatten)]
    server: ServerArgs,
}

/// A small backlog, so that `ss -ltn` shows the queue filling up after a few clients.
const DEFAULT_BACKLOG: i32 = 5;

fn main() {
    let args: Args = common::cli::parse(Model::Iterative, DEFAULT_BACKLOG);
    demo::run_if_asked(&args.server);
    common::narration::init(Model::Iterative, args.server.quiet);
    if let Err(e) = signals::install() {
        common::exit_with_error(&format!("cannot install the signal handlers: {e}"));
    }

    let listener = listen(&args.server);
    // On SIGINT/SIGTERM the handler shuts the listener down, which wakes accept().
    let listener_watch = signals::wake_on_shutdown(&listener);
    serve_clients_in_turn(&listener, &args.server);
    drop(listener_watch);
    narrate!("shutting down: no client is being served, nothing else to clean up");
}

/// socket() + bind() + listen(backlog): from here on, the kernel queues clients for us.
fn listen(args: &ServerArgs) -> TcpListener {
    // Task 1: listen with --backlog as the length of the accept queue.
    // The backlog is how many connections the kernel completes and keeps for us while we are
    // busy with one client: `ss -ltn` shows it as the Send-Q of the listening socket.
    common::listener::listen(args.address(), args.backlog)
    // End of task 1.
}

/// Accepts a client, serves it until it leaves, closes its connection, and only then accepts
/// the next; until a stop signal. Nobody else is served in the meantime: that is the model.
fn serve_clients_in_turn(listener: &TcpListener, args: &ServerArgs) {
    // Task 2: accept a client, serve it, close it; then the next.
    // What the clients share: one counter in this one process, seen by each client in turn.
    let mut counter =
        Counter::new("nobody else is being served: an iterative server has one client at a time");
    let mut next_id = 1;
    loop {
        // Block until a client is in the accept queue, and take the oldest one.
        let (stream, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(_) if signals::requested() => break,
            Err(e) => {
                // ECONNABORTED (a client gave up while queued), EMFILE (out of descriptors)...:
                // say so, and keep serving the others.
                narrate!("accept() failed: {e}");
                continue;
            }
        };
        let client = Client {
            model: Model::Iterative,
            id: next_id,
            allow_panic: args.allow_panic,
        };
        next_id += 1;
        narrate!(
            "accepted client {} from {peer}; everyone else waits in the accept queue",
            client.id
        );
        let ending = session::serve_client(&stream, &client, args.idle_timeout, &mut counter);
        narrate!("client {} {ending}; back to accept()", client.id);
        // close(): the connection ends, and the client sees it end.
        drop(stream);
    }
    // End of task 2.
}
