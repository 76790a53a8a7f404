//! `--ipc posix` (the default): a POSIX shared-memory object, and a POSIX message queue per child.
//!
//! POSIX IPC objects have names, and outlive their processes until removed (`shm_unlink`,
//! `mq_unlink`) or the machine reboots. Every name holds the server's pid, so two servers never
//! share by accident, and a later server can tell a dead one's leftovers (`leftovers.rs`).
//!
//! **Shared memory**: `shm_open(O_CREAT | O_EXCL)` creates the object (`/dev/shm/...` on Linux),
//! `ftruncate` sizes it (new bytes read as zero), `mmap(MAP_SHARED)` maps it: writes go to the
//! object itself, not to a private copy, and the mapping survives `fork()`.
//!
//! **Message queues**: a Linux queue descriptor is a file descriptor, so a child can `poll()`
//! its client and its queue at once. A user's queues share a small budget (`RLIMIT_MSGQUEUE`;
//! few default-sized queues fit, and the one too many fails with a misleading EMFILE), so ours
//! are sized on purpose: a slot holds the longest `MSG`, and two slots suffice for a child that
//! empties its queue whenever `poll` says so. A queue counts until its last descriptor closes.

use std::num::NonZeroUsize;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mqueue::{mq_close, mq_open, mq_receive, mq_send, mq_unlink, MQ_OFlag, MqAttr, MqdT};
use nix::sys::mman::{mmap, munmap, shm_open, shm_unlink, MapFlags, ProtFlags};
use nix::sys::resource::{getrlimit, Resource, RLIM_INFINITY};
use nix::sys::stat::{fstat, Mode};

use crate::board::Board;

/// What every object name starts with (after the `/`).
pub const PREFIX: &str = "netlabs-ipc-";
pub const QUEUE_DEPTH: i64 = 2;
/// The largest message, in bytes: `MSG ` + a 20-digit id + ` ` + 4,092 bytes of text fit.
pub const MESSAGE_SIZE: i64 = 4160;
/// What one queue costs against `RLIMIT_MSGQUEUE`: its slots and the kernel's bookkeeping.
pub const BYTES_PER_QUEUE: u64 = QUEUE_DEPTH as u64 * (MESSAGE_SIZE as u64 + 96);

/// The shared-memory object of server `server_pid`.
pub fn shm_name(server_pid: u32) -> String {
    format!("/{PREFIX}{server_pid}-shm")
}

/// The message queue of child `child` of server `server_pid`.
pub fn queue_name(server_pid: u32, child: i32) -> String {
    format!("/{PREFIX}{server_pid}-child-{child}")
}

/// A mapping of a shared-memory object holding a [`Board`]; unmapped when dropped.
pub struct SharedMemory {
    board: NonNull<Board>,
}

const SIZE: usize = std::mem::size_of::<Board>();

impl SharedMemory {
    /// `shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600)` + `ftruncate` + `mmap`. `O_EXCL`: fail
    /// with EEXIST rather than share an object someone else made.
    pub fn create(name: &str) -> nix::Result<SharedMemory> {
        // Task 1: create the shared memory: shm_open, ftruncate, mmap.
        // A new object reads as zeros: an empty board. `Self::map` does the mmap; if anything
        // fails, shm_unlink what was made, so that nothing is left behind.
        let flags = OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR | OFlag::O_CLOEXEC;
        let fd = shm_open(name, flags, Mode::S_IRUSR | Mode::S_IWUSR)?;
        let mapped = nix::unistd::ftruncate(&fd, SIZE as i64).and_then(|()| Self::map(fd));
        if mapped.is_err() {
            let _ = shm_unlink(name); // do not leave a half-made object behind
        }
        mapped
        // End of task 1.
    }

    /// Maps the existing object `name` (a dead server's, to read its board). EINVAL if it is
    /// smaller than a [`Board`]: then it is not one of ours.
    pub fn open_existing(name: &str) -> nix::Result<SharedMemory> {
        let fd = shm_open(name, OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty())?;
        if (fstat(&fd)?.st_size as usize) < SIZE {
            return Err(Errno::EINVAL);
        }
        Self::map(fd)
    }

    /// `mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)`; `fd` is closed on return.
    fn map(fd: OwnedFd) -> nix::Result<SharedMemory> {
        let length = NonZeroUsize::new(SIZE).expect("a Board is not empty");
        // SAFETY: a new mapping at an address the kernel chooses (None) cannot overlap memory
        // Rust already uses, and the object is at least SIZE bytes long (we sized it, or checked
        // its size), so every byte of the mapping is backed.
        let address = unsafe {
            mmap(
                None,
                length,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                &fd,
                0,
            )
        }?;
        Ok(SharedMemory {
            board: address.cast(),
        })
    }

    /// The board in the shared pages.
    pub fn board(&self) -> &Board {
        // SAFETY: `board` points to SIZE bytes mapped readable and writable until `drop` unmaps
        // them, and the reference borrows `self`, so it cannot outlive the mapping. The address
        // is page-aligned, more than a Board needs. Any bytes are a valid Board (only atomics; a
        // new object is zeros), and other processes writing them meanwhile is what atomics are
        // for: we only ever hand out shared references.
        unsafe { self.board.as_ref() }
    }
}

impl Drop for SharedMemory {
    fn drop(&mut self) {
        // SAFETY: the address and length are mmap's, and no reference to the board can still
        // exist: `board()` borrows `self`, which is going away.
        let _ = unsafe { munmap(self.board.cast(), SIZE) };
    }
}

/// `shm_unlink(name)`: removes the name; the pages go when the last mapping does.
pub fn remove_memory(name: &str) -> nix::Result<()> {
    shm_unlink(name)
}

/// An open message-queue descriptor, closed (`mq_close`) when dropped.
#[derive(Debug)]
pub struct Queue {
    mqd: Option<MqdT>,
}

impl Queue {
    /// Creates our own queue: `mq_open(name, O_CREAT | O_EXCL | O_RDONLY | O_NONBLOCK, 0600,
    /// {QUEUE_DEPTH, MESSAGE_SIZE})`. EMFILE here means the user's `RLIMIT_MSGQUEUE` is used up.
    pub fn create(name: &str) -> nix::Result<Queue> {
        let attr = MqAttr::new(0, QUEUE_DEPTH, MESSAGE_SIZE, 0);
        let flags = MQ_OFlag::O_CREAT
            | MQ_OFlag::O_EXCL
            | MQ_OFlag::O_RDONLY
            | MQ_OFlag::O_NONBLOCK
            | MQ_OFlag::O_CLOEXEC;
        let mqd = mq_open(name, flags, Mode::S_IRUSR | Mode::S_IWUSR, Some(&attr))?;
        Ok(Queue { mqd: Some(mqd) })
    }

    /// Opens another child's queue to send to it, without waiting when it is full.
    pub fn open_for_sending(name: &str) -> nix::Result<Queue> {
        let flags = MQ_OFlag::O_WRONLY | MQ_OFlag::O_NONBLOCK | MQ_OFlag::O_CLOEXEC;
        let mqd = mq_open(name, flags, Mode::empty(), None)?;
        Ok(Queue { mqd: Some(mqd) })
    }

    fn mqd(&self) -> &MqdT {
        self.mqd.as_ref().expect("held until dropped")
    }

    /// `mq_send`: `Ok(false)` if the queue is full (EAGAIN).
    pub fn try_send(&self, message: &[u8]) -> nix::Result<bool> {
        match mq_send(self.mqd(), message, 0) {
            Ok(()) => Ok(true),
            Err(Errno::EAGAIN) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `mq_receive` of the oldest message into `buf` (at least [`MESSAGE_SIZE`] bytes); its
    /// length, or `Ok(None)` if the queue is empty (EAGAIN).
    pub fn try_receive(&self, buf: &mut [u8]) -> nix::Result<Option<usize>> {
        match mq_receive(self.mqd(), buf, &mut 0) {
            Ok(length) => Ok(Some(length)),
            Err(Errno::EAGAIN) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl AsFd for Queue {
    /// The queue's file descriptor, for `poll()` (a Linux feature; POSIX does not promise it).
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.mqd().as_fd()
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        if let Some(mqd) = self.mqd.take() {
            let _ = mq_close(mqd);
        }
    }
}

/// `mq_unlink(name)`: its memory is freed once every descriptor of it is closed.
pub fn remove_queue(name: &str) -> nix::Result<()> {
    mq_unlink(name)
}

/// This user's queue budget in bytes (`getrlimit(RLIMIT_MSGQUEUE)`); `None` if unlimited.
pub fn queue_budget() -> Option<u64> {
    let (soft, _hard) = getrlimit(Resource::RLIMIT_MSGQUEUE).ok()?;
    (soft != RLIM_INFINITY).then_some(soft)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

    /// Unique to this test process, so that concurrent runs never meet.
    fn test_name(what: &str) -> String {
        format!("/{PREFIX}unit-{}-{what}", std::process::id())
    }

    #[test]
    fn a_queue_takes_whole_messages_says_when_full_and_polls() {
        let name = test_name("queue");
        let receiver = Queue::create(&name).unwrap();
        let sender = Queue::open_for_sending(&name).unwrap();
        remove_queue(&name).unwrap(); // open descriptors keep working after the name is gone
        let ready =
            |q: &Queue, flags| poll(&mut [PollFd::new(q.as_fd(), flags)], PollTimeout::ZERO);
        assert_eq!(ready(&receiver, PollFlags::POLLIN), Ok(0));
        let longest = format!("MSG {} {}", u64::MAX, "y".repeat(4092));
        assert!(sender.try_send(longest.as_bytes()).unwrap());
        assert!(sender.try_send(b"MSG 1 second").unwrap());
        assert!(!sender.try_send(b"MSG 1 third").unwrap(), "two slots");
        assert_eq!(ready(&receiver, PollFlags::POLLIN), Ok(1));
        assert_eq!(ready(&sender, PollFlags::POLLOUT), Ok(0), "no room");
        let mut buf = vec![0; MESSAGE_SIZE as usize];
        let n = receiver.try_receive(&mut buf).unwrap().unwrap();
        assert_eq!(&buf[..n], longest.as_bytes());
        assert_eq!(ready(&sender, PollFlags::POLLOUT), Ok(1), "room again");
        let too_big = vec![b'z'; MESSAGE_SIZE as usize + 1];
        assert_eq!(sender.try_send(&too_big), Err(Errno::EMSGSIZE));
        assert!(queue_budget().expect("RLIMIT_MSGQUEUE") >= BYTES_PER_QUEUE);
    }
}
