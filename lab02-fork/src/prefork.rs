//! `--prefork N`: the other classic fork design (Stevens, UNP ch. 30). The parent forks N
//! workers up front, and each of them blocks in `accept()` on the listening socket they all
//! inherited, serving clients one after another. The cost of `fork()` is paid once per worker,
//! not once per client; at most N clients are served at once, the others wait in the accept
//! queue. The parent only reaps the workers that end and forks their replacements.

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};

use common::cli::ServerArgs;
use common::fork::{Children, ParentSignals, STOP_GRACE};
use common::session::{self, Client};
use common::{narrate, signals, Model};
use nix::unistd::{fork, getppid, ForkResult};

/// Which slot of the pool a worker fills.
#[derive(Clone, Copy, Debug)]
pub struct Worker {
    slot: u32,
}

impl fmt::Display for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pool worker {}", self.slot)
    }
}

/// The parent of the pool: fork `size` workers, then only reap and replace them, until stopped.
pub fn pool(listener: TcpListener, size: u32, parent_signals: &ParentSignals, args: &ServerArgs) {
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
        if let Some(slot) = empty_slots.pop() {
            // SAFETY: as in main.rs: this process has a single thread, so the child is a
            // consistent copy that may run ordinary Rust code.
            match unsafe { fork() } {
                Ok(ForkResult::Parent { child }) => {
                    let worker = Worker { slot };
                    children.add(child, worker);
                    narrate!(
                        "forked {worker}: child {child} ({} of {size} in the pool)",
                        children.len()
                    );
                }
                Ok(ForkResult::Child) => {
                    parent_signals.in_child();
                    worker_serves_clients(&listener, slot, size, args)
                }
                Err(e) => {
                    narrate!("fork() failed: {e}; trying again in a second");
                    empty_slots.push(slot);
                    session::sleep_unless_stopping(1000);
                }
            }
            continue;
        }
        // Sleep until a worker ends (SIGCHLD) or we are told to stop (SIGINT/SIGTERM).
        parent_signals.wait_for_signal();
        for worker in crate::reap_ended_children(&mut children) {
            if !signals::requested() {
                narrate!("{worker} is gone: forking a replacement");
            }
            empty_slots.push(worker.slot);
        }
    }

    drop(listener_watch);
    narrate!(
        "stop signal: the listening socket is shut down, the idle workers return from accept()"
    );
    children.stop_all(STOP_GRACE);
    narrate!("shutting down: every worker reaped; bye");
}

/// A worker of the pool: accept a client, serve it, accept the next, until stopped.
fn worker_serves_clients(listener: &TcpListener, slot: u32, size: u32, args: &ServerArgs) -> ! {
    let parent = getppid();
    // If the parent dies without stopping us (`kill -9`), nobody would ever stop this pool: ask
    // the kernel (Linux's prctl) to send us SIGTERM then. And if it died before we asked, stop.
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM);
    if getppid() != parent {
        std::process::exit(0);
    }
    // The listening socket is not watched here: our handler's shutdown() would shut it for the
    // whole pool. A SIGTERM interrupts our accept() (EINTR) instead.
    narrate!(
        "pool worker {slot}, child of {parent}: blocking in accept() on the listening socket all workers share"
    );
    let mut served: u64 = 0;
    loop {
        let (stream, peer) = match accept(listener) {
            Ok(accepted) => accepted,
            Err(_) if signals::requested() => break,
            // The parent shut the shared listening socket down: the server is stopping.
            Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                narrate!("accept() failed: {e}");
                continue;
            }
        };
        // Ids slot, slot+N, slot+2N...: two workers never hand out the same one.
        let client = Client {
            model: Model::Fork,
            id: u64::from(slot) + served * u64::from(size),
            allow_panic: args.allow_panic,
        };
        served += 1;
        narrate!(
            "pool worker {slot}: accepted client {} from {peer} (my client number {served})",
            client.id
        );
        let status = crate::serve(&stream, &client, args, "back to accept()");
        if status != 0 || signals::requested() {
            std::process::exit(status); // the parent reaps us and forks a replacement
        }
    }
    narrate!("pool worker {slot}: stopping after {served} clients");
    std::process::exit(0)
}

/// `accept()`, except that a signal interrupting it is returned as an error of kind
/// [`io::ErrorKind::Interrupted`] instead of being retried, as std's `TcpListener::accept`
/// does: a worker blocked in it must not sleep through its own SIGTERM. socket2's `accept`
/// makes the one system call, `accept4(..., SOCK_CLOEXEC)`, and returns what it says.
fn accept(listener: &TcpListener) -> io::Result<(TcpStream, SocketAddr)> {
    let (socket, addr) = socket2::SockRef::from(listener).accept()?;
    let peer = addr
        .as_socket()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "the peer has no IP address"))?;
    Ok((socket.into(), peer))
}
