//! The one question an event loop asks the kernel: "which of my descriptors can I use now
//! without blocking?" Three system calls answer it, each in its own module:
//!
//! - [`crate::select`]: `select(2)`, the oldest. A fixed-size bitmap of descriptors, FD_SETSIZE
//!   (1024) bits: a descriptor numbered 1024 or more cannot be watched at all.
//! - [`crate::poll`]: `poll(2)`. An array of `(fd, events)` of any length: no 1024 wall, but
//!   like `select` the whole list goes to the kernel and is scanned on *every* call.
//! - [`crate::epoll`]: `epoll(7)` (through the polling crate). The kernel keeps the list; we
//!   change it only when interest changes, and each wait returns only the ready descriptors.
//!
//! The event loop in `main.rs` talks to them through this small trait, so the protocol logic
//! above is the same whichever one is chosen with `--api`.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use clap::ValueEnum;
use common::narrate;

/// The readiness APIs, as `--api` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Api {
    Select,
    Poll,
    Epoll,
}

/// Makes an empty set of watched descriptors for `api`; `edge` asks epoll for edge triggering.
pub fn open(api: Api, edge: bool) -> io::Result<Box<dyn Readiness>> {
    Ok(match api {
        Api::Select => Box::<crate::select::Select>::default(),
        Api::Poll => Box::<crate::poll::Poll>::default(),
        Api::Epoll => Box::new(crate::epoll::Epoll::new(edge)?),
    })
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

/// One descriptor the kernel reported ready. An error or hang-up on the socket is reported as
/// both readable and writable: the next `read` or `write` then returns the error (or end of
/// stream), which is how the loop finds out.
#[derive(Clone, Copy, Debug)]
pub struct Ready {
    /// The descriptor.
    pub fd: RawFd,
    /// A read would not block (data, end of stream, an error, or a connection to accept).
    pub readable: bool,
    /// A write would not block.
    pub writable: bool,
}

/// A readiness API: a set of watched descriptors and a way to wait on them.
///
/// The caller must `remove` a descriptor before closing it: the backends keep its number, and
/// a number can be reused by the next `accept`.
pub trait Readiness {
    /// Starts watching `fd` (select cannot past FD_SETSIZE: an error says so).
    fn add(&mut self, fd: RawFd, interest: Interest) -> io::Result<()>;
    /// Changes what we want to hear about `fd`.
    fn modify(&mut self, fd: RawFd, interest: Interest) -> io::Result<()>;
    /// Stops watching `fd` (call it before closing `fd`).
    fn remove(&mut self, fd: RawFd) -> io::Result<()>;
    /// Blocks until at least one watched descriptor is ready, or `timeout` passes (`None`: no
    /// limit), and appends what is ready to `ready`. A signal arriving meanwhile may end the wait
    /// early with nothing ready (`EINTR`); the loop then checks its signal flag.
    fn wait(&mut self, timeout: Option<Duration>, ready: &mut Vec<Ready>) -> io::Result<()>;
}

/// `--trace`: one line per wake-up, saying what was ready (`name` names a descriptor).
pub fn narrate_wake_up(ready: &[Ready], watched: usize, name: impl Fn(RawFd) -> String) {
    let what: Vec<String> = ready
        .iter()
        .map(|r| match (r.readable, r.writable) {
            (true, true) => format!("{} (readable, writable)", name(r.fd)),
            (false, true) => format!("{} (writable)", name(r.fd)),
            _ => name(r.fd),
        })
        .collect();
    let s = if ready.len() == 1 { "" } else { "s" };
    let (count, what) = (ready.len(), what.join(", "));
    narrate!("woke with {count} ready descriptor{s} of {watched} watched: {what}");
}
