//! Opening the listening socket: `socket()`, `setsockopt(SO_REUSEADDR)`, `bind()`, `listen()`.
//!
//! We use socket2 rather than `std::net::TcpListener::bind` because std always asks for a backlog
//! of 128, and the backlog is part of the lesson: it is the length of the accept queue (접속 대기큐)
//! where connections the kernel has already completed wait for the server to call `accept()`.
//! `ss -ltn` shows it as the Send-Q of the LISTEN socket; Recv-Q is how many are waiting now.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

use crate::narrate;

/// Opens a socket listening on `addr` with an accept queue of `backlog` connections, prints
/// `listening on IP:PORT` on stdout (flushed, so a test or script reading our stdout sees it at
/// once) and narrates it.
///
/// If the address cannot be bound (already in use, not an address of this machine, a port
/// below 1024 without privileges) it prints one clear line and exits with status 2.
pub fn listen(addr: SocketAddr, backlog: i32) -> TcpListener {
    let listener = match open(addr, backlog) {
        Ok(listener) => listener,
        Err(e) => crate::exit_with_usage_error(&bind_error_message(addr, &e)),
    };
    let local = listener
        .local_addr()
        .expect("a bound socket has an address");
    if !addr.ip().is_loopback() {
        // Not narration: a security warning is shown even with --quiet.
        crate::narration::warn(format_args!(
            "listening on {} makes this lab server reachable from the network; \
             keep --host 127.0.0.1 unless you mean to let other machines in",
            addr.ip()
        ));
    }
    let mut stdout = io::stdout().lock();
    // If nobody reads our stdout any more, there is nobody to tell: ignore the error.
    let _ = writeln!(stdout, "listening on {local}");
    let _ = stdout.flush();
    narrate!("listening on {local} (backlog {backlog})");
    listener
}

/// The system calls themselves, each one's failure passed up.
fn open(addr: SocketAddr, backlog: i32) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // SO_REUSEADDR lets a restarted server bind the port again while connections of the previous
    // run are still in TIME_WAIT. It does not let two servers listen on one port.
    socket.set_reuse_address(true)?;
    // Close this socket in a program we exec (children of fork keep it: that is lab02's point).
    socket.set_cloexec(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

fn bind_error_message(addr: SocketAddr, e: &io::Error) -> String {
    let hint = match e.kind() {
        io::ErrorKind::AddrInUse => {
            "another program (an earlier server?) already listens there; stop it, or pick another --port (0 lets the OS choose)"
        }
        io::ErrorKind::AddrNotAvailable => "that address is not one of this machine's; try --host 127.0.0.1",
        io::ErrorKind::PermissionDenied => "ports below 1024 need privileges; pick a --port above 1024",
        _ => "check --host and --port",
    };
    format!("cannot listen on {addr}: {e}; {hint}")
}
