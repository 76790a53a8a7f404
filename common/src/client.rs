//! The client every lab ships: type lines, see every line the server sends as it arrives.
//!
//! It needs two things to happen at once: wait for the user to type, and wait for the server to
//! speak (a `MSG` from another client can come at any time). A blocking program can only wait for
//! one thing per thread, so the client uses two: the main thread copies stdin to the socket, a
//! second thread copies the socket to stdout. (The servers of lab04 show the other answer: one
//! thread waiting for many things with `epoll`.)

use std::io::{self, BufRead, BufReader, Write};
use std::net::TcpStream;
use std::thread;

use crate::cli::ClientArgs;
use crate::protocol::Model;

/// Runs the client of `model`'s lab until stdin ends (then it sends `QUIT`) or the server closes.
pub fn main(model: Model) -> ! {
    let args = ClientArgs::parse_for(model);
    let stream = match TcpStream::connect((args.host, args.port)) {
        Ok(stream) => stream,
        Err(e) => {
            eprintln!(
                "error: cannot connect to {}:{}: {e}; is the server running? (cargo run -p {})",
                args.host,
                args.port,
                package_of(model)
            );
            std::process::exit(1);
        }
    };
    let from_server = stream.try_clone().unwrap_or_else(|e| {
        eprintln!("error: cannot duplicate the socket: {e}");
        std::process::exit(1);
    });
    let printer = thread::spawn(move || print_server_lines(from_server));
    send_stdin_lines(&stream);
    // Wait for the server's goodbye and its close; the printer thread exits the process then.
    let _ = printer.join();
    std::process::exit(0);
}

/// Copies every line the server sends to stdout, as it arrives. Exits the process when the
/// server closes the connection.
fn print_server_lines(stream: TcpStream) {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) => {
                let mut out = io::stdout().lock();
                let _ = out.write_all(&line);
                if !line.ends_with(b"\n") {
                    let _ = out.write_all(b"\n");
                }
                let _ = out.flush();
            }
            Err(e) => {
                eprintln!("connection error: {e}");
                break;
            }
        }
    }
    eprintln!("(server closed the connection)");
    std::process::exit(0);
}

/// Sends each line typed on stdin; sends `QUIT` when stdin ends, unless the user already did.
fn send_stdin_lines(mut stream: &TcpStream) {
    let stdin = io::stdin();
    let mut line = Vec::new();
    let mut input = stdin.lock();
    loop {
        line.clear();
        match input.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                if !line.ends_with(b"\n") {
                    line.push(b'\n');
                }
                if stream.write_all(&line).is_err() {
                    return; // the server is gone; the printer thread reports it
                }
                // After QUIT the server closes: sending more (even our own QUIT at the end)
                // would hit a closed socket, and the kernel would answer with a reset.
                if line.trim_ascii().eq_ignore_ascii_case(b"QUIT") {
                    return;
                }
            }
        }
    }
    let _ = stream.write_all(b"QUIT\n");
}

/// The cargo package of a model's lab, for hints.
pub fn package_of(model: Model) -> &'static str {
    match model {
        Model::Iterative => "lab01-iterative",
        Model::Fork => "lab02-fork",
        Model::Thread => "lab03-thread",
        Model::Multiplex => "lab04-multiplex",
        Model::Ipc => "lab05-ipc",
    }
}
