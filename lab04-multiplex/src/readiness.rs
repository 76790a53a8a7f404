//! The one question an event loop asks the kernel: "which of my descriptors can I use now
//! without blocking?" Three system calls answer it, each in its own module that says what it
//! costs: [`crate::select`], [`crate::poll`] and [`crate::epoll`]. The event loop in `main.rs`
//! talks to them through this small trait, so it is the same whichever one `--api` picks.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use clap::ValueEnum;

/// The readiness APIs, as `--api` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Api {
    Select,
    Poll,
    Epoll,
}

/// What the loop wants to hear about one descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interest {
    /// Tell me when a `read` (or `accept`) would not block.
    pub read: bool,
    /// Tell me when a `write` would not block (only while we have output waiting).
    pub write: bool,
}

impl Interest {
    /// Readable only: what a new socket is watched for.
    pub const READ: Interest = Interest {
        read: true,
        write: false,
    };
}

/// One descriptor the kernel reported ready, and for what. An error or hang-up on the socket
/// is reported as both readable and writable: the next `read` or `write` then returns the error
/// (or end of stream), which is how the loop finds out.
#[derive(Clone, Copy, Debug)]
pub struct Ready {
    pub fd: RawFd,
    pub readable: bool,
    pub writable: bool,
}

/// A readiness API: a set of watched descriptors and a way to wait on them.
///
/// The caller must `remove` a descriptor before closing it: the backends keep its number, and
/// a number can be reused by the next `accept`.
pub trait Readiness {
    /// Starts watching `fd` (select cannot past FD_SETSIZE: an error says so).
    fn add(&mut self, fd: RawFd, interest: Interest) -> io::Result<()>;
    fn modify(&mut self, fd: RawFd, interest: Interest) -> io::Result<()>;
    fn remove(&mut self, fd: RawFd) -> io::Result<()>;
    /// Blocks until a watched descriptor is ready or `timeout` passes (`None`: no limit), and
    /// appends what is ready to `ready`, which a signal may leave empty (the loop checks its flag).
    fn wait(&mut self, timeout: Option<Duration>, ready: &mut Vec<Ready>) -> io::Result<()>;
}
