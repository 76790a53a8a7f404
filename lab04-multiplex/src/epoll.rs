//! `epoll(7)`: Linux's answer to the cost of select and poll (Linux 2.6, 2002), here through the
//! polling crate (the same crate async runtimes use; on Linux it *is* epoll).
//!
//! The list of watched descriptors lives **in the kernel**, in an epoll instance. We change it
//! only when our interest changes (`epoll_ctl` ADD / MOD / DEL), not on every wait, and
//! `epoll_wait` hands back *only the ready descriptors*. A wake-up costs in proportion to what is
//! ready, not to how many clients are connected: 10,000 idle clients cost nothing per wake-up.
//!
//! ## Level-triggered (the default) and edge-triggered (`--edge`)
//!
//! - **Level-triggered**: "fd 7 *is* readable". Like select and poll, every `epoll_wait` reports
//!   it again as long as unread data sits in the socket: the loop may read a little at a time.
//! - **Edge-triggered**: "fd 7 *became* readable", reported once per arrival. What the loop
//!   leaves unread is never announced again, so it must read (and accept, and write) until
//!   `WouldBlock` (`read_and_answer` in `main.rs`). Fewer wake-ups, more care.

use std::io;
use std::os::fd::{BorrowedFd, RawFd};
use std::time::Duration;

use polling::{Event, Events, PollMode, Poller};

use crate::readiness::{Interest, Readiness, Ready};

/// An epoll instance and room for the events one wait returns.
pub struct Epoll {
    poller: Poller,
    events: Events,
    mode: PollMode,
}

impl Epoll {
    /// `epoll_create1()`: a new, empty epoll instance; `edge` picks edge triggering.
    pub fn new(edge: bool) -> io::Result<Self> {
        Ok(Epoll {
            poller: Poller::new()?,
            events: Events::new(),
            mode: if edge {
                PollMode::Edge
            } else {
                PollMode::Level
            },
        })
    }
}

/// The event we register: its key is the descriptor itself, so a ready event names its fd.
fn event(fd: RawFd, interest: Interest) -> Event {
    Event::new(fd as usize, interest.read, interest.write)
}

fn borrow(fd: RawFd) -> BorrowedFd<'static> {
    // SAFETY: only used for the duration of one epoll_ctl call, on a descriptor the event loop
    // has open: it removes a descriptor from epoll before it closes it (see `Readiness`).
    unsafe { BorrowedFd::borrow_raw(fd) }
}

impl Readiness for Epoll {
    fn add(&mut self, fd: RawFd, interest: Interest) -> io::Result<()> {
        // epoll_ctl(EPOLL_CTL_ADD). If data is already waiting, the next wait reports it at once
        // (even in edge mode: adding counts as an edge).
        // SAFETY: polling requires the descriptor to stay open until it is deleted from the
        // poller; the event loop calls `remove` before closing any descriptor it added.
        unsafe {
            self.poller
                .add_with_mode(fd, event(fd, interest), self.mode)
        }
    }

    fn modify(&mut self, fd: RawFd, interest: Interest) -> io::Result<()> {
        // epoll_ctl(EPOLL_CTL_MOD). This also re-checks the socket, so turning write interest on
        // reports "writable" at once if there is room, in edge mode too.
        self.poller
            .modify_with_mode(borrow(fd), event(fd, interest), self.mode)
    }

    fn remove(&mut self, fd: RawFd) -> io::Result<()> {
        // epoll_ctl(EPOLL_CTL_DEL), before the descriptor is closed (see `Readiness`).
        self.poller.delete(borrow(fd))
    }

    fn wait(&mut self, timeout: Option<Duration>, ready: &mut Vec<Ready>) -> io::Result<()> {
        // epoll_wait(): only the ready descriptors come back. (The crate retries by itself when
        // a signal interrupts the wait; the signal's self-pipe then wakes us as an event.)
        self.events.clear();
        self.poller.wait(&mut self.events, timeout)?;
        ready.extend(self.events.iter().map(|e| Ready {
            fd: e.key as RawFd,
            readable: e.readable,
            writable: e.writable,
        }));
        Ok(())
    }
}
