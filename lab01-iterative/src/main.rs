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

use std::net::TcpStream;

use clap::Parser;
use common::cli::ServerArgs;
use common::session::{self, Client, Shared};
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

/// What the clients share: one counter in this one process, seen by each client in turn.
struct Counter {
    value: u64,
}

impl Shared for Counter {
    fn incr(&mut self) -> u64 {
        self.value += 1;
        self.value
    }

    fn say(&mut self, _from: u64, _text: &str) -> Result<(), String> {
        Err("nobody else is being served: an iterative server has one client at a time".into())
    }
}

fn main() {
    let args: Args = common::cli::parse(Model::Iterative, DEFAULT_BACKLOG);
    if let Some(clients) = args.server.demo {
        common::demo::run(
            Model::Iterative,
            clients,
            "The clients connect 100 ms apart; each waits in the accept queue until the one before it sends QUIT.",
            |_| vec!["WHO".into(), "INCR".into(), "SLEEP 500".into(), "QUIT".into()],
        );
    }
    common::narrate::init(Model::Iterative, args.server.quiet);
    if let Err(e) = signals::install() {
        common::exit_with_error(&format!("cannot install the signal handlers: {e}"));
    }

    // socket() + bind() + listen(backlog): from here on, the kernel queues clients for us.
    let listener = common::listener::listen(&args.server);
    // On SIGINT/SIGTERM the handler shuts the listener down, which wakes accept() below.
    let listener_watch = signals::wake_on_shutdown(&listener);

    let mut counter = Counter { value: 0 };
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
            allow_panic: args.server.allow_panic,
        };
        next_id += 1;
        narrate!(
            "accepted client {} from {peer}; everyone else waits in the accept queue",
            client.id
        );
        // TCP_NODELAY (replies leave at once) and --idle-timeout: see common/src/session.rs.
        if let Err(e) = session::prepare_client_socket(&stream, args.server.idle_timeout) {
            narrate!("cannot set the socket options of client {}: {e}", client.id);
        }
        serve(stream, &client, &mut counter);
    }

    drop(listener_watch);
    narrate!("shutting down: no client is being served, nothing else to clean up");
}

/// Serves one client until it leaves. Nobody else is served in the meantime: that is the model.
fn serve(stream: TcpStream, client: &Client, counter: &mut Counter) {
    // A stop signal must also wake us if we are blocked reading from this client.
    let _watch = signals::wake_on_shutdown(&stream);
    let ending = session::serve_blocking(&stream, &mut &stream, client, counter);
    narrate!("client {} {ending}; back to accept()", client.id);
    // `stream` is dropped here (after `_watch`): close() ends the connection.
}
