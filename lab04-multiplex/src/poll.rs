//! `poll(2)`: select without the bitmap (System V, 1986; Linux since 2.1).
//!
//! We keep an array of `struct pollfd { fd, events, revents }`: which descriptor, what we want to
//! hear about it (`POLLIN`, `POLLOUT`), and a field the kernel fills in with what happened. The
//! array can be as long as we like, so there is no FD_SETSIZE wall. But like select, the *whole*
//! array is copied into the kernel and checked on every call, and we scan it all afterwards to
//! find the entries whose `revents` is not empty: the cost of one wake-up grows with the number
//! of clients connected, not with the number that have something to say.
//!
//! `POLLHUP` and `POLLERR` are reported even if we did not ask for them; we pass them on as
//! "readable and writable", so the next `read`/`write` meets the error.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::readiness::{Interest, Readiness, Ready};

/// The pollfd array, and where each descriptor sits in it.
pub struct Poll {
    fds: Vec<PollFd<'static>>,
    index: HashMap<RawFd, usize>,
}

impl Poll {
    /// An empty array.
    pub fn new() -> Self {
        Poll {
            fds: Vec::new(),
            index: HashMap::new(),
        }
    }
}

fn flags(interest: Interest) -> PollFlags {
    let mut flags = PollFlags::empty();
    if interest.read {
        flags |= PollFlags::POLLIN;
    }
    if interest.write {
        flags |= PollFlags::POLLOUT;
    }
    flags
}

impl Readiness for Poll {
    fn add(&mut self, fd: RawFd, interest: Interest) -> io::Result<()> {
        // SAFETY: a pollfd only records the number; poll never closes it. The event loop removes
        // the entry (below) before it closes the descriptor, so no entry outlives its file.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        self.index.insert(fd, self.fds.len());
        self.fds.push(PollFd::new(borrowed, flags(interest)));
        Ok(())
    }

    fn modify(&mut self, fd: RawFd, interest: Interest) -> io::Result<()> {
        let &i = self
            .index
            .get(&fd)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "not watched"))?;
        self.fds[i].set_events(flags(interest));
        Ok(())
    }

    fn remove(&mut self, fd: RawFd) -> io::Result<()> {
        if let Some(i) = self.index.remove(&fd) {
            // Move the last entry into the hole (order does not matter to poll).
            self.fds.swap_remove(i);
            if let Some(moved) = self.fds.get(i) {
                self.index.insert(moved.as_fd().as_raw_fd(), i);
            }
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
        // Scan the whole array for entries the kernel marked.
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
