//! `select(2)`: the oldest readiness API (4.2BSD, 1983).
//!
//! We describe the descriptors we care about as *bitmaps* (`fd_set`): bit 5 set in the read set
//! means "tell me when fd 5 is readable". `select` blocks until one of them is ready, then
//! **overwrites** the bitmaps with the answer: only the ready bits are left. So:
//!
//! 1. we keep "master" sets of what we watch, and hand `select` a *copy* each time;
//! 2. after it returns, we scan every descriptor we watch to see whose bit is still set.
//!
//! The cost grows with the number of descriptors watched, however few are ready. And an `fd_set`
//! holds FD_SETSIZE = 1024 bits: setting the bit of descriptor 1024 in C writes past the bitmap
//! (memory corruption), and nix's `FdSet::insert` panics. So `add` refuses such a descriptor.

use std::collections::BTreeSet;
use std::io;
use std::os::fd::{BorrowedFd, RawFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::select::{select, FdSet, FD_SETSIZE};
use nix::sys::time::{TimeVal, TimeValLike};

use crate::readiness::{Interest, Readiness, Ready};

/// The watched descriptors, as select wants them.
#[derive(Default)]
pub struct Select {
    /// Descriptors to report readable / writable ("master" copies; select gets a copy).
    read_set: FdSet<'static>,
    write_set: FdSet<'static>,
    /// Every descriptor watched, in order: the highest gives `nfds`, and each is scanned after.
    watched: BTreeSet<RawFd>,
}

fn borrow(fd: RawFd) -> BorrowedFd<'static> {
    // SAFETY: an FdSet only records the number (one bit); it never reads or closes the file. The
    // event loop removes a descriptor from our sets before closing it (see `Readiness`), so
    // no bit stays set for a closed, or reused, number.
    unsafe { BorrowedFd::borrow_raw(fd) }
}

impl Readiness for Select {
    fn add(&mut self, fd: RawFd, interest: Interest) -> io::Result<()> {
        if fd < 0 || fd as usize >= FD_SETSIZE {
            let e = format!(
                "its descriptor {fd} does not fit in select()'s fd_set (FD_SETSIZE = {FD_SETSIZE})"
            );
            return Err(io::Error::new(io::ErrorKind::InvalidInput, e)); // not a panic in insert
        }
        self.watched.insert(fd);
        self.modify(fd, interest)
    }

    fn modify(&mut self, fd: RawFd, interest: Interest) -> io::Result<()> {
        let bit = borrow(fd);
        self.read_set.remove(bit); // FD_CLR
        self.write_set.remove(bit);
        if interest.read {
            self.read_set.insert(bit); // FD_SET
        }
        if interest.write {
            self.write_set.insert(bit);
        }
        Ok(())
    }

    fn remove(&mut self, fd: RawFd) -> io::Result<()> {
        if self.watched.remove(&fd) {
            self.read_set.remove(borrow(fd));
            self.write_set.remove(borrow(fd));
        }
        Ok(())
    }

    fn wait(&mut self, timeout: Option<Duration>, ready: &mut Vec<Ready>) -> io::Result<()> {
        let mut readable = self.read_set;
        let mut writable = self.write_set;
        let mut limit = timeout.map(|t| TimeVal::milliseconds(t.as_millis() as i64));
        // nfds: one more than the highest descriptor; the kernel looks at bits 0..nfds.
        let nfds = self.watched.last().map_or(0, |&fd| fd + 1);
        match select(nfds, &mut readable, &mut writable, None, limit.as_mut()) {
            Ok(_) => {}
            Err(Errno::EINTR) => return Ok(()), // a signal: let the loop check its flag
            Err(e) => return Err(e.into()),
        }
        for &fd in &self.watched {
            let (r, w) = (readable.contains(borrow(fd)), writable.contains(borrow(fd)));
            if r || w {
                ready.push(Ready {
                    fd,
                    readable: r,
                    writable: w,
                });
            }
        }
        Ok(())
    }
}
