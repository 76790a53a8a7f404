//! Stopping cleanly on SIGINT (Ctrl-C) and SIGTERM (`kill`).
//!
//! A signal handler may run between any two instructions of the program, so it may only do
//! things that are *async-signal-safe*: set an atomic flag, call a few system calls such as
//! `write` and `shutdown`. It must not allocate, lock, or print with `println!`. Our handler:
//!
//! 1. sets a flag that the server's loops check ([`requested`]);
//! 2. calls `shutdown(fd, SHUT_RD)` on the sockets the server asked it to ([`wake_on_shutdown`]).
//!    On Linux that wakes a thread blocked in `accept()` on a listening socket (it fails with
//!    `EINVAL`) and stops new connections, and makes a blocked `read()` on a connected socket
//!    return 0. This closes a race a flag alone leaves open: a signal that arrives just *before*
//!    the server calls `accept()` would otherwise go unnoticed until the next client came;
//! 3. writes one byte to a pipe ([`wake_pipe`]), for event loops that wait in
//!    `poll`/`epoll_wait` (the "self-pipe trick").
//!
//! We install the handler with `sigaction` and without `SA_RESTART`, so slow system calls that
//! are waiting return `EINTR` instead of silently resuming. There is no helper thread: the fork
//! servers must stay single-threaded (see lab02), which is why we do not use a crate that spawns
//! one (ctrlc, signal-hook's iterator).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::OnceLock;

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

static SHUTDOWN: AtomicBool = AtomicBool::new(false);

/// Sockets to `shutdown(SHUT_RD)` when a stop signal arrives; -1 marks a free slot.
const SLOTS: usize = 16;
static WATCHED: [AtomicI32; SLOTS] = [const { AtomicI32::new(-1) }; SLOTS];

/// The write end of the self-pipe, or -1 before [`wake_pipe`] made it.
static PIPE_WRITE: AtomicI32 = AtomicI32::new(-1);
static PIPE_READ: OnceLock<OwnedFd> = OnceLock::new();

extern "C" fn on_stop_signal(_signal: nix::libc::c_int) {
    SHUTDOWN.store(true, Ordering::SeqCst);
    for slot in &WATCHED {
        let fd = slot.load(Ordering::SeqCst);
        if fd >= 0 {
            // SAFETY: shutdown(2) is async-signal-safe. If the fd was closed in the meantime the
            // call fails with EBADF or ENOTSOCK, which we ignore; `Watch` removes the fd from
            // its slot before the socket can be closed, so it cannot hit an unrelated file.
            unsafe { nix::libc::shutdown(fd, nix::libc::SHUT_RD) };
        }
    }
    let fd = PIPE_WRITE.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: write(2) is async-signal-safe; the pipe is non-blocking, so a full pipe
        // (which already means "wake up") makes it fail with EAGAIN instead of hanging here.
        unsafe { nix::libc::write(fd, b"!".as_ptr().cast(), 1) };
    }
}

/// Installs the handler for SIGINT and SIGTERM (see the module docs).
pub fn install() -> io::Result<()> {
    let action = SigAction::new(
        SigHandler::Handler(on_stop_signal),
        SaFlags::empty(), // no SA_RESTART: blocking calls return EINTR
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only touches atomics and calls async-signal-safe functions.
        unsafe { sigaction(signal, &action) }.map_err(io::Error::from)?;
    }
    Ok(())
}

/// True once SIGINT or SIGTERM has arrived.
pub fn requested() -> bool {
    SHUTDOWN.load(Ordering::SeqCst)
}

/// Registers `socket` so the stop signal shuts down its read side, waking whoever is blocked in
/// `accept()` or `read()` on it. Keep the returned guard alive no longer than the socket: drop it
/// first (declare it after the socket, or drop it explicitly).
///
/// # Panics
/// If more than 16 sockets are watched at once: watch the listener and the client being served,
/// not every client of a thread server.
pub fn wake_on_shutdown(socket: &impl AsRawFd) -> Watch {
    let fd = socket.as_raw_fd();
    let slot = WATCHED
        .iter()
        .position(|s| {
            s.compare_exchange(-1, fd, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        })
        .expect("too many sockets watched for shutdown");
    if requested() {
        // The signal came before we registered: do now what the handler would have done.
        // SAFETY: fd is a live socket, borrowed from `socket`.
        unsafe { nix::libc::shutdown(fd, nix::libc::SHUT_RD) };
    }
    Watch { slot }
}

/// Keeps a socket registered with [`wake_on_shutdown`]; unregisters it when dropped.
#[must_use = "the socket is unregistered when the guard is dropped"]
pub struct Watch {
    slot: usize,
}

impl Drop for Watch {
    fn drop(&mut self) {
        WATCHED[self.slot].store(-1, Ordering::SeqCst);
    }
}

/// Forgets every watched socket. A forked child calls this first: the slots it inherited name
/// the parent's sockets (the child closes its copy of the listener).
pub fn forget_watched() {
    for slot in &WATCHED {
        slot.store(-1, Ordering::SeqCst);
    }
}

/// The read end of a non-blocking pipe that becomes readable when a stop signal arrives. Put it
/// in your `poll`/`epoll` set beside the sockets. Made on first call.
pub fn wake_pipe() -> io::Result<RawFd> {
    if let Some(fd) = PIPE_READ.get() {
        return Ok(fd.as_raw_fd());
    }
    let (read, write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(io::Error::from)?;
    let raw_read = read.as_raw_fd();
    if PIPE_READ.set(read).is_err() {
        return Ok(PIPE_READ.get().map(|fd| fd.as_raw_fd()).unwrap_or(raw_read));
    }
    // The write end lives for the whole process; the handler only needs its number.
    PIPE_WRITE.store(std::os::fd::IntoRawFd::into_raw_fd(write), Ordering::SeqCst);
    if requested() {
        on_stop_signal(0);
    }
    Ok(raw_read)
}
