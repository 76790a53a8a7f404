//! `poll(2)`: select without the bitmap (System V, 1986; Linux since 2.1).
//!
//! We keep an array of `struct pollfd { fd, events, revents }`: which descriptor, what we want to
//! hear about it (`POLLIN`, `POLLOUT`), and a field the kernel fills in with what happened. The
//! array can be as long as we like, so there is no FD_SETSIZE wall. But like select, the *whole*
//! array is copied into the kernel and checked on every call, and we scan it all afterwards to
//! find the entries whose `revents` is not empty: the cost of one wake-up grows with the number
//! of clients connected, not with the number that have something to say.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::readiness::{Interest, Readiness, Ready};

/// The pollfd array.
#[derive(Default)]
pub struct Poll {
    fds: Vec<PollFd<'static>>,
}

impl Poll {
    /// Where `fd` sits in the array. A linear search: each wait scans the whole array anyway.
    fn position(&self, fd: RawFd) -> Option<usize> {
        self.fds.iter().position(|p| p.as_fd().as_raw_fd() == fd)
    }
}

fn flags(interest: Interest) -> PollFlags {
    let mut flags = PollFlags::empty();
    flags.set(PollFlags::POLLIN, interest.read);
    flags.set(PollFlags::POLLOUT, interest.write);
    flags
}

impl Readiness for Poll {
    fn add(&mut self, fd: RawFd, interest: Interest) -> io::Result<()> {
        // SAFETY: a pollfd only records the number; poll never closes it. The event loop removes
        // the entry (below) before it closes the descriptor, so no entry outlives its file.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        self.fds.push(PollFd::new(borrowed, flags(interest)));
        Ok(())
    }

    fn modify(&mut self, fd: RawFd, interest: Interest) -> io::Result<()> {
        let i = self
            .position(fd)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "not watched"))?;
        self.fds[i].set_events(flags(interest));
        Ok(())
    }

    fn remove(&mut self, fd: RawFd) -> io::Result<()> {
        if let Some(i) = self.position(fd) {
            self.fds.swap_remove(i); // the last entry fills the hole: poll ignores the order
        }
        Ok(())
    }

    fn wait(&mut self, timeout: Option<Duration>, ready: &mut Vec<Ready>) -> io::Result<()> {
        let limit = match timeout {
            Some(t) => PollTimeout::try_from(t).unwrap_or(PollTimeout::MAX),
            None => PollTimeout::NONE,
        };
        match poll(&mut self.fds, limit) {
            Ok(_) => {}
            Err(Errno::EINTR) => return Ok(()), // a signal: let the loop check its flag
            Err(e) => return Err(e.into()),
        }
        // Hang-ups and errors are reported unasked: pass them on as both (see `Ready`).
        let trouble = PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL;
        for pollfd in &self.fds {
            let revents = pollfd.revents().unwrap_or(PollFlags::empty());
            if revents.is_empty() {
                continue;
            }
            ready.push(Ready {
                fd: pollfd.as_fd().as_raw_fd(),
                readable: revents.intersects(PollFlags::POLLIN | trouble),
                writable: revents.intersects(PollFlags::POLLOUT | trouble),
            });
        }
        Ok(())
    }
}
