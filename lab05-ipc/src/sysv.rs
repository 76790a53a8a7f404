//! `--ipc sysv`: the same board and chat through **System V** IPC, the older kind `ipcs` lists.
//!
//! System V objects have no names: each has a numeric *key* chosen by its creator, and an *id*
//! the kernel gives it (`shmid`, `msqid`; `ipcs -m -q` or `/proc/sysvipc/{shm,msg}` list both).
//! Our keys hold the server's pid: a digit for the kind, then the pid's decimal digits read as
//! hex, so server 4242's segment is key `0x10004242` and its queue `0x20004242`.
//!
//! - **Shared memory**: `shmget(key, size, IPC_CREAT | IPC_EXCL | 0600)` makes a segment (zeros)
//!   and `shmat` maps it; the attachment survives `fork()`. It holds the same [`Board`].
//! - **One message queue for the whole server**: `msgget(key, IPC_CREAT | IPC_EXCL | 0600)`.
//!   Every message has a *type*, and `msgrcv` can take only the messages of one type: a message
//!   for child 4250 has type 4250, and child 4250 takes out only type 4250.
//!
//! A System V queue is a number, not a file descriptor: `poll()` cannot watch it, for mail or for
//! room. So the processes wake each other with `SIGUSR1`, whose handler writes a byte into the
//! child's *chat pipe*, which its `poll()` watches beside its client (the self-pipe trick). The
//! signal means "look at the queue", and always comes after the fact it announces:
//!
//! - **mail for you**: a sender `msgsnd`s, *then* signals the recipient, which empties its pipe,
//!   *then* `msgrcv`s until `ENOMSG` (a message after that brings a new byte);
//! - **room for you**: a sender that finds the queue full marks itself *waiting* on the board,
//!   *then* tries again; whoever takes messages out afterwards signals every waiting child.
//!
//! So no wake-up is lost, and a child waiting for room keeps taking its own mail out meanwhile:
//! children sending to each other never wait on each other. The price of one shared queue: its
//! `msgmnb` bytes are for all children together, and one child that stops reading (`SLEEP`)
//! fills it for everyone.

use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicI32, Ordering};

use nix::errno::Errno;
use nix::sys::signal::{kill, sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::unistd::Pid;

use crate::board::Board;
use crate::posix::MESSAGE_SIZE;

/// The kinds of object: the first hex digit of their key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Object {
    Memory = 1, // `ipcs -m`
    Queue = 2,  // `ipcs -q`
}

/// The key of server `server_pid`'s object of `kind`. A pid has at most seven digits.
pub fn key(kind: Object, server_pid: u32) -> i32 {
    let digits = i32::from_str_radix(&format!("{server_pid:07}"), 16).expect("a pid has 7 digits");
    ((kind as i32) << 28) | digits
}

/// The kind and server pid a key stands for, if it is one of ours.
pub fn owner(found: i32) -> Option<(Object, u32)> {
    let kind = [Object::Memory, Object::Queue]
        .into_iter()
        .find(|&k| k as i32 == found >> 28)?;
    let pid: u32 = format!("{:07x}", found & 0x0fff_ffff).parse().ok()?;
    (pid > 0 && key(kind, pid) == found).then_some((kind, pid))
}

/// `-1` from libc means: look at `errno`.
fn check(result: libc::c_int) -> nix::Result<libc::c_int> {
    if result < 0 {
        Err(Errno::last())
    } else {
        Ok(result)
    }
}

/// A System V segment holding a [`Board`], attached to this process; detached (`shmdt`) when
/// dropped. The segment itself goes only with [`remove_segment`].
pub struct Segment {
    /// The id `ipcs -m` shows (shmid).
    pub id: i32,
    board: NonNull<Board>,
}

const SIZE: usize = std::mem::size_of::<Board>();

impl Segment {
    /// `shmget(key, SIZE, IPC_CREAT | IPC_EXCL | 0600)` + `shmat(id, NULL, 0)`.
    pub fn create(key: i32) -> nix::Result<Segment> {
        // SAFETY: shmget only reads its integer arguments.
        let id =
            check(unsafe { libc::shmget(key, SIZE, libc::IPC_CREAT | libc::IPC_EXCL | 0o600) })?;
        // SAFETY: a null address lets the kernel pick free address space, so the mapping cannot
        // overlap memory Rust uses. shmat returns (void *) -1 on failure, checked below.
        let address = unsafe { libc::shmat(id, std::ptr::null(), 0) };
        match NonNull::new(address.cast::<Board>()) {
            Some(board) if address as isize != -1 => Ok(Segment { id, board }),
            _ => {
                let e = Errno::last();
                let _ = remove_segment(id); // do not leave a half-made segment behind
                Err(e)
            }
        }
    }

    /// The board in the shared pages.
    pub fn board(&self) -> &Board {
        // SAFETY: as for the POSIX mapping (posix.rs): SIZE bytes, attached readable and
        // writable until `drop` detaches them, borrowed from `self`; page-aligned; any bytes are
        // a valid Board (only atomics; a new segment is zeros).
        unsafe { self.board.as_ref() }
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        // SAFETY: the address is shmat's, and no reference to the board outlives `self`.
        unsafe { libc::shmdt(self.board.as_ptr().cast()) };
    }
}

/// `shmctl(id, IPC_RMID)`: the segment goes at once, or when its last process detaches.
pub fn remove_segment(id: i32) -> nix::Result<()> {
    // SAFETY: IPC_RMID does not read the buffer argument, so null is fine.
    check(unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) }).map(drop)
}

/// `msgctl(id, IPC_RMID)`: the queue and every message in it go at once.
pub fn remove_queue(id: i32) -> nix::Result<()> {
    // SAFETY: IPC_RMID does not read the buffer argument, so null is fine.
    check(unsafe { libc::msgctl(id, libc::IPC_RMID, std::ptr::null_mut()) }).map(drop)
}

/// The layout `msgsnd`/`msgrcv` expect: a `long` type, then the bytes.
#[repr(C)]
struct Message {
    mtype: libc::c_long,
    mtext: [u8; MESSAGE_SIZE as usize],
}

/// The server's one message queue: only an id, inherited across `fork()` as a number.
#[derive(Clone, Copy, Debug)]
pub struct MsgQueue {
    /// The id `ipcs -q` shows (msqid).
    pub id: i32,
}

impl MsgQueue {
    /// `msgget(key, IPC_CREAT | IPC_EXCL | 0600)`.
    pub fn create(key: i32) -> nix::Result<MsgQueue> {
        // SAFETY: msgget only reads its integer arguments.
        let id = check(unsafe { libc::msgget(key, libc::IPC_CREAT | libc::IPC_EXCL | 0o600) })?;
        Ok(MsgQueue { id })
    }

    /// `msgsnd(id, {to, text}, IPC_NOWAIT)`: `Ok(false)` if the queue is full (EAGAIN).
    pub fn try_send(&self, to: i32, text: &[u8]) -> nix::Result<bool> {
        if text.len() > MESSAGE_SIZE as usize {
            return Err(Errno::EMSGSIZE);
        }
        let mut message = Box::new(Message {
            mtype: libc::c_long::from(to),
            mtext: [0; MESSAGE_SIZE as usize],
        });
        message.mtext[..text.len()].copy_from_slice(text);
        let pointer = std::ptr::from_ref(&*message).cast();
        // SAFETY: `message` is a live Message laid out as msgsnd expects, and the length we pass
        // is within its text: the kernel reads only those bytes.
        match check(unsafe { libc::msgsnd(self.id, pointer, text.len(), libc::IPC_NOWAIT) }) {
            Ok(_) => Ok(true),
            Err(Errno::EAGAIN) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `msgrcv(id, buf, MESSAGE_SIZE, mine, IPC_NOWAIT)`: the oldest message of type `mine`, into
    /// `buf`; its length, or `Ok(None)` if there is none (ENOMSG).
    pub fn try_receive(&self, mine: i32, buf: &mut [u8]) -> nix::Result<Option<usize>> {
        let mut message = Box::new(Message {
            mtype: 0,
            mtext: [0; MESSAGE_SIZE as usize],
        });
        let pointer = std::ptr::from_mut(&mut *message).cast();
        let (size, mine) = (MESSAGE_SIZE as usize, libc::c_long::from(mine));
        // SAFETY: `message` is a live, writable Message with room for MESSAGE_SIZE bytes of text,
        // the most we let the kernel write (a longer message fails with E2BIG).
        let n = unsafe { libc::msgrcv(self.id, pointer, size, mine, libc::IPC_NOWAIT) };
        if n < 0 {
            return match Errno::last() {
                Errno::ENOMSG => Ok(None),
                e => Err(e),
            };
        }
        let n = n as usize;
        buf[..n].copy_from_slice(&message.mtext[..n]);
        Ok(Some(n))
    }

    /// Takes out and drops every message of type `pid` (mail of a child that is gone).
    pub fn drain(&self, pid: i32) -> usize {
        let mut buf = vec![0; MESSAGE_SIZE as usize];
        let mut dropped = 0;
        while let Ok(Some(_)) = self.try_receive(pid, &mut buf) {
            dropped += 1;
        }
        dropped
    }
}

/// The write end of this child's chat pipe, or -1 (in the parent: there is none).
static CHAT_PIPE_WRITE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_sigusr1(_signal: libc::c_int) {
    let fd = CHAT_PIPE_WRITE.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: write(2) is async-signal-safe; the pipe is non-blocking, so a full pipe (which
        // already says "look at the queue") fails with EAGAIN instead of hanging the handler.
        unsafe { libc::write(fd, b"!".as_ptr().cast(), 1) };
    }
}

/// Installs the `SIGUSR1` handler. In the parent, before any fork.
pub fn install_wake_handler() -> nix::Result<()> {
    let action = SigAction::new(
        SigHandler::Handler(on_sigusr1),
        SaFlags::empty(), // no SA_RESTART: poll() returns EINTR, and the pipe is readable
        SigSet::empty(),
    );
    // SAFETY: the handler only reads an atomic and calls write(2), which is async-signal-safe.
    unsafe { sigaction(Signal::SIGUSR1, &action) }.map(drop)
}

/// Makes this child's chat pipe and returns its read end, for `poll()`.
pub fn chat_pipe() -> nix::Result<OwnedFd> {
    use nix::fcntl::OFlag;
    let (read, write) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
    // The write end lives as long as the child; the handler needs only its number.
    CHAT_PIPE_WRITE.store(write.into_raw_fd(), Ordering::SeqCst);
    Ok(read)
}

/// Empties the chat pipe (non-blocking reads until EAGAIN).
pub fn empty_pipe(read: &OwnedFd) {
    let mut buf = [0u8; 64];
    // SAFETY: `read` is an open pipe's read end and `buf` is writable for its length.
    while unsafe { libc::read(read.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
}

/// `kill(pid, SIGUSR1)`: tells child `pid` to look at the queue. ESRCH: it has just ended.
pub fn wake(pid: i32) -> nix::Result<()> {
    kill(Pid::from_raw(pid), Signal::SIGUSR1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_messages_reach_only_their_recipient_whole() {
        // Our own pid in the key: no server can have it while we run, so no run shares it.
        assert_eq!(owner(key(Object::Queue, 4242)), Some((Object::Queue, 4242)));
        let queue = MsgQueue::create(key(Object::Queue, std::process::id())).unwrap();
        let long = format!("MSG 1 {}", "y".repeat(4092));
        assert!(queue.try_send(100, long.as_bytes()).unwrap());
        assert!(queue.try_send(200, b"MSG 1 for 200").unwrap());
        let mut buf = vec![0; MESSAGE_SIZE as usize];
        assert_eq!(queue.try_receive(200, &mut buf), Ok(Some(13)));
        assert_eq!(&buf[..13], b"MSG 1 for 200");
        assert_eq!(queue.try_receive(200, &mut buf), Ok(None));
        assert_eq!(queue.try_receive(100, &mut buf), Ok(Some(long.len())));
        let mut sent = 0; // fill it (msgmnb bytes in all): it says so instead of blocking
        while queue.try_send(300, long.as_bytes()).unwrap() && sent < 1000 {
            sent += 1;
        }
        assert_eq!(queue.drain(300), sent);
        remove_queue(queue.id).unwrap();
        assert_eq!(remove_queue(queue.id), Err(Errno::EINVAL));
    }
}
