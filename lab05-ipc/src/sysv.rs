//! `--ipc sysv`: the same counter and chat through **System V** IPC, the older kind that `ipcs`
//! lists.
//!
//! System V objects have no names in a file system. Each has a numeric *key* chosen by whoever
//! creates it, and the kernel gives it an *id* (`shmid`, `msqid`); `ipcs -m -q` lists both, and
//! `/proc/sysvipc/shm` and `/proc/sysvipc/msg` show the same tables. Like POSIX objects, they
//! outlive the processes that made them until someone removes them (`IPC_RMID`).
//!
//! - **Shared memory**: `shmget(key, size, IPC_CREAT | IPC_EXCL | 0600)` makes a segment (new
//!   bytes read as zero) and `shmat` maps it into our address space. It holds the very same
//!   [`Board`] as the POSIX object: only the source of the bytes differs. An attachment survives
//!   `fork()`, so the parent attaches once and every child inherits it.
//! - **One message queue for the whole server**: `msgget(key, IPC_CREAT | IPC_EXCL | 0600)`. Every
//!   message carries a *type* (`mtype`, a positive number) and `msgrcv` can take only the
//!   messages of one type. So a child sends `MSG ...` to child 4250 with `mtype = 4250`, and child
//!   4250 takes out only `msgrcv(..., mtype = 4250, IPC_NOWAIT)`.
//!
//! # Waking the recipient: a signal, because a System V queue cannot be polled
//!
//! A POSIX queue is a file descriptor on Linux, so a child waits in `poll()` on it. A System V
//! queue is just a number: `poll` cannot watch it, and a blocking `msgrcv` would stop the child
//! from reading its client. So the sender wakes the recipient itself:
//!
//! 1. the sender `msgsnd`s the message, *then* sends the recipient `SIGUSR1` (`kill`);
//! 2. the recipient's handler (installed with `sigaction`, no `SA_RESTART`) does one
//!    async-signal-safe thing: it writes a byte into the child's *chat pipe*, which the child's
//!    `poll()` watches beside its client socket (the self-pipe trick again);
//! 3. `poll` returns; the child empties the pipe, then `msgrcv(IPC_NOWAIT)`s until `ENOMSG`.
//!
//! No wake-up is lost: the signal always comes *after* its message is in the queue, and the child
//! empties the pipe *before* it drains the queue, so a message that arrives after the drain
//! brings a new byte into the pipe. The handler is installed in the parent before any fork, so a
//! child can never be killed by a `SIGUSR1` (its default action is to terminate) that arrives
//! early; in the parent it writes nowhere (the pipe is made in each child).
//!
//! One honest weakness: a sender signals a *pid* it read on the board. If that child has just
//! ended and been reaped, and the system gave its pid to a new process of ours within that
//! instant, the new process gets a stray `SIGUSR1` (a file descriptor, as with POSIX queues,
//! cannot be reused that way). Children leave the board before they exit, so the window is tiny.
//!
//! # The limits (this machine: `msgmax` 8,192, `msgmnb` 16,384)
//!
//! `/proc/sys/kernel/msgmax` is the largest message: our longest, a 4,096-byte `SAY` as a
//! 4,117-byte `MSG`, fits whole. `/proc/sys/kernel/msgmnb` is the most bytes *one queue* holds, for
//! all recipients together: three longest messages. When the queue is full, `msgsnd(IPC_NOWAIT)`
//! fails with `EAGAIN`; as with POSIX, the sender keeps delivering its own messages and retries for
//! at most [`chat::SEND_WAIT`], then tells its client who missed it (`ERR`). The price of one
//! shared queue: one slow reader can fill it for everyone.
//!
//! # Keys, and cleaning up after a server killed with SIGKILL
//!
//! The keys come from the server's pid by a fixed formula (no `ftok`): its decimal digits read as
//! hex, after a digit for the kind. Server 4242's segment is key `0x10004242`, its queue
//! `0x20004242`, so `ipcs` shows whose they are. At startup, every object in `/proc/sysvipc` with
//! such a key, of our user, whose server is gone (or has our own pid: left from an earlier server
//! that had it) is removed ([`remove_stale`]).

use std::fs;
use std::os::fd::{OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicI32, Ordering};

use common::narrate;
use nix::errno::Errno;
use nix::sys::signal::{kill, sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::unistd::Pid;

use crate::chat::MESSAGE_SIZE;
use crate::names;
use crate::shm::Board;

/// The two kinds of object, the first hex digit of their key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A shared-memory segment (`ipcs -m`), key `0x1<pid>`.
    Memory = 1,
    /// A message queue (`ipcs -q`), key `0x2<pid>`.
    Queue = 2,
}

/// The key of server `server`'s object of `kind`: `0x10004242` for server 4242's segment. The pid
/// (at most 4,194,304, seven digits) is read as hex digits so that `ipcs` shows it as it is.
pub fn key(kind: Kind, server: u32) -> i32 {
    let digits = i32::from_str_radix(&format!("{server:07}"), 16).expect("a pid has 7 digits");
    ((kind as i32) << 28) | digits
}

/// The server pid and kind a key stands for, if it is one of ours.
pub fn owner(found: i32) -> Option<(Kind, u32)> {
    let kind = match found >> 28 {
        1 => Kind::Memory,
        2 => Kind::Queue,
        _ => return None,
    };
    let pid: u32 = format!("{:07x}", found & 0x0fff_ffff).parse().ok()?;
    (pid > 0 && key(kind, pid) == found).then_some((kind, pid))
}

/// An `Errno` from the last failed libc call.
fn last_error() -> Errno {
    Errno::last()
}

/// A System V shared-memory segment holding a [`Board`], attached to this process. Detached
/// (`shmdt`) when dropped; the segment itself is removed only by [`remove_segment`].
pub struct Segment {
    /// The id `ipcs -m` shows (shmid).
    pub id: i32,
    board: NonNull<Board>,
}

const SIZE: usize = std::mem::size_of::<Board>();

impl Segment {
    /// `shmget(key, SIZE, IPC_CREAT | IPC_EXCL | 0600)` + `shmat`. IPC_EXCL: fail with EEXIST
    /// rather than share a segment someone else made.
    pub fn create(key: i32) -> nix::Result<Segment> {
        // SAFETY: shmget only reads its integer arguments; it touches none of our memory.
        let id = unsafe { libc::shmget(key, SIZE, libc::IPC_CREAT | libc::IPC_EXCL | 0o600) };
        if id < 0 {
            return Err(last_error());
        }
        Self::attach(id).inspect_err(|_| {
            let _ = remove_segment(id); // do not leave a half-made segment behind
        })
    }

    /// `shmat(id, NULL, 0)`: the kernel picks an address where nothing of ours is mapped.
    fn attach(id: i32) -> nix::Result<Segment> {
        // SAFETY: a null address lets the kernel choose free address space, so the new mapping
        // cannot overlap memory Rust uses. shmat returns (void *) -1 on failure, checked below.
        let address = unsafe { libc::shmat(id, std::ptr::null(), 0) };
        if address as isize == -1 {
            return Err(last_error());
        }
        let board = NonNull::new(address.cast::<Board>()).ok_or(Errno::EINVAL)?;
        Ok(Segment { id, board })
    }

    /// The board in the shared pages.
    pub fn board(&self) -> &Board {
        // SAFETY: as for the POSIX mapping (shm.rs): `board` points to SIZE bytes attached
        // readable and writable until `drop` detaches them, and the reference borrows `self`;
        // the address is page-aligned; any bytes (only atomics) are a valid Board and a new
        // segment is zeros; other processes write at the same time, which atomics are made for.
        unsafe { self.board.as_ref() }
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        // SAFETY: the address is the one shmat gave us, and no reference to the board can still
        // exist (`board()` borrows `self`, which is going away).
        unsafe { libc::shmdt(self.board.as_ptr().cast()) };
    }
}

/// `shmctl(id, IPC_RMID)`: removes the segment (at once if nobody is attached, else when the last
/// process detaches).
pub fn remove_segment(id: i32) -> nix::Result<()> {
    // SAFETY: IPC_RMID does not read the buffer argument, so null is fine.
    if unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) } < 0 {
        return Err(last_error());
    }
    Ok(())
}

/// `msgctl(id, IPC_RMID)`: removes the queue and every message in it, at once.
pub fn remove_queue(id: i32) -> nix::Result<()> {
    // SAFETY: IPC_RMID does not read the buffer argument, so null is fine.
    if unsafe { libc::msgctl(id, libc::IPC_RMID, std::ptr::null_mut()) } < 0 {
        return Err(last_error());
    }
    Ok(())
}

/// The layout `msgsnd`/`msgrcv` expect: a `long` type, then the bytes.
#[repr(C)]
struct Message {
    mtype: libc::c_long,
    mtext: [u8; MESSAGE_SIZE as usize],
}

/// The server's one message queue. Only an id: it is inherited across `fork()` as a number.
#[derive(Clone, Copy, Debug)]
pub struct MsgQueue {
    /// The id `ipcs -q` shows (msqid).
    pub id: i32,
}

impl MsgQueue {
    /// `msgget(key, IPC_CREAT | IPC_EXCL | 0600)`.
    pub fn create(key: i32) -> nix::Result<MsgQueue> {
        // SAFETY: msgget only reads its integer arguments.
        let id = unsafe { libc::msgget(key, libc::IPC_CREAT | libc::IPC_EXCL | 0o600) };
        if id < 0 {
            return Err(last_error());
        }
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
        // SAFETY: `message` is a live Message laid out as msgsnd expects, and we pass the length
        // of its text, which is within `mtext`: the kernel reads only those bytes.
        let sent = unsafe {
            libc::msgsnd(
                self.id,
                std::ptr::from_ref(&*message).cast(),
                text.len(),
                libc::IPC_NOWAIT,
            )
        };
        match sent {
            0 => Ok(true),
            _ => match last_error() {
                Errno::EAGAIN => Ok(false),
                e => Err(e),
            },
        }
    }

    /// `msgrcv(id, buf, MESSAGE_SIZE, mine, IPC_NOWAIT)`: the oldest message of type `mine`, into
    /// `buf`; `Ok(None)` if there is none (ENOMSG).
    pub fn try_receive(&self, mine: i32, buf: &mut Vec<u8>) -> nix::Result<Option<usize>> {
        let mut message = Box::new(Message {
            mtype: 0,
            mtext: [0; MESSAGE_SIZE as usize],
        });
        // SAFETY: `message` is a live, writable Message whose text has room for MESSAGE_SIZE
        // bytes, the most we let the kernel write (a longer message fails with E2BIG).
        let n = unsafe {
            libc::msgrcv(
                self.id,
                std::ptr::from_mut(&mut *message).cast(),
                MESSAGE_SIZE as usize,
                libc::c_long::from(mine),
                libc::IPC_NOWAIT,
            )
        };
        if n < 0 {
            return match last_error() {
                Errno::ENOMSG => Ok(None),
                e => Err(e),
            };
        }
        let n = n as usize;
        buf.clear();
        buf.extend_from_slice(&message.mtext[..n]);
        Ok(Some(n))
    }

    /// Takes out and drops every message of type `pid` (a child that crashed left them).
    pub fn drain(&self, pid: i32) -> usize {
        let mut buf = Vec::new();
        let mut dropped = 0;
        while let Ok(Some(_)) = self.try_receive(pid, &mut buf) {
            dropped += 1;
        }
        dropped
    }
}

/// The write end of this child's chat pipe, or -1 (in the parent, before a child made one).
static CHAT_PIPE_WRITE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_sigusr1(_signal: libc::c_int) {
    let fd = CHAT_PIPE_WRITE.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: write(2) is async-signal-safe; the pipe is non-blocking, so a full pipe (which
        // already means "there is mail") fails with EAGAIN instead of hanging in the handler.
        unsafe { libc::write(fd, b"!".as_ptr().cast(), 1) };
    }
}

/// Installs the `SIGUSR1` handler (see the module docs). Call it in the parent, before forking.
pub fn install_wake_handler() -> nix::Result<()> {
    let action = SigAction::new(
        SigHandler::Handler(on_sigusr1),
        SaFlags::empty(), // no SA_RESTART: poll() returns EINTR, and the pipe is readable
        SigSet::empty(),
    );
    // SAFETY: the handler only reads an atomic and calls write(2), which is async-signal-safe.
    unsafe { sigaction(Signal::SIGUSR1, &action) }?;
    Ok(())
}

/// Makes this child's chat pipe and returns its read end, for `poll()`.
pub fn chat_pipe() -> nix::Result<OwnedFd> {
    use nix::fcntl::OFlag;
    let (read, write) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
    // The write end lives as long as the child; the handler only needs its number.
    CHAT_PIPE_WRITE.store(std::os::fd::IntoRawFd::into_raw_fd(write), Ordering::SeqCst);
    Ok(read)
}

/// Empties the chat pipe (non-blocking reads until EAGAIN).
pub fn empty_pipe(read: RawFd) {
    let mut buf = [0u8; 64];
    // SAFETY: `read` is our pipe's open read end and `buf` is writable for its length.
    while unsafe { libc::read(read, buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
}

/// Writes a byte into our own chat pipe, so that `poll()` comes back to the queue at once.
pub fn wake_myself() {
    on_sigusr1(libc::SIGUSR1);
}

/// `kill(pid, SIGUSR1)`: tells child `pid` there is mail for it.
pub fn wake(pid: i32) -> nix::Result<()> {
    kill(Pid::from_raw(pid), Signal::SIGUSR1)
}

/// One row of `/proc/sysvipc/shm` or `/proc/sysvipc/msg`: key, id, owner's uid.
fn objects(table: &str) -> Vec<(i32, i32, u32)> {
    let text = fs::read_to_string(table).unwrap_or_default();
    text.lines()
        .skip(1) // the header
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // key id perms ...; the uid is the 8th column in both tables
            Some((
                fields.first()?.parse().ok()?,
                fields.get(1)?.parse().ok()?,
                fields.get(7)?.parse().ok()?,
            ))
        })
        .collect()
}

/// Removes the System V objects of servers that are gone (see the module docs): our keys, our
/// user, and a server pid that is dead or is our own (we have not made ours yet). Returns how
/// many it removed.
pub fn remove_stale(me: u32) -> usize {
    // SAFETY: getuid cannot fail and touches no memory of ours.
    let uid = unsafe { libc::getuid() };
    let mut removed = 0;
    for (table, kind) in [
        ("/proc/sysvipc/shm", Kind::Memory),
        ("/proc/sysvipc/msg", Kind::Queue),
    ] {
        for (key, id, owner_uid) in objects(table) {
            let Some((found, server)) = owner(key) else {
                continue;
            };
            if found != kind || owner_uid != uid || (server != me && names::is_alive(server)) {
                continue;
            }
            let (what, result) = match kind {
                Kind::Memory => ("segment", remove_segment(id)),
                Kind::Queue => ("message queue", remove_queue(id)),
            };
            match result {
                Ok(()) => {
                    narrate!("removed stale System V {what} key {key:#010x} id {id} (its server, pid {server}, is gone)");
                    removed += 1;
                }
                Err(e) => narrate!("cannot remove stale System V {what} id {id}: {e}"),
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_show_the_server_pid() {
        assert_eq!(key(Kind::Memory, 4242), 0x1000_4242);
        assert_eq!(key(Kind::Queue, 4_194_304), 0x2419_4304);
        assert_eq!(owner(0x1000_4242), Some((Kind::Memory, 4242)));
        assert_eq!(owner(0x2419_4304), Some((Kind::Queue, 4_194_304)));
        assert_eq!(owner(0), None);
        assert_eq!(owner(0x1000_00a0), None); // not decimal digits
        assert_eq!(owner(0x3000_4242), None);
    }

    #[test]
    fn typed_messages_reach_only_their_recipient_whole() {
        // A server pid no process can have, so no real server uses these keys.
        let queue = MsgQueue::create(key(Kind::Queue, 4_194_307)).unwrap();
        let long = format!("MSG 1 {}", "y".repeat(4092));
        assert!(queue.try_send(100, long.as_bytes()).unwrap());
        assert!(queue.try_send(200, b"MSG 1 for 200").unwrap());
        let mut buf = Vec::new();
        assert_eq!(queue.try_receive(200, &mut buf).unwrap(), Some(13));
        assert_eq!(buf, b"MSG 1 for 200");
        assert_eq!(queue.try_receive(200, &mut buf).unwrap(), None);
        assert_eq!(queue.try_receive(100, &mut buf).unwrap(), Some(long.len()));
        assert_eq!(buf, long.as_bytes());
        // Fill it (msgmnb bytes in all): it says so instead of blocking.
        let mut sent = 0;
        while queue.try_send(300, long.as_bytes()).unwrap() {
            sent += 1;
            assert!(sent < 1000, "the queue never filled");
        }
        assert_eq!(queue.drain(300), sent);
        remove_queue(queue.id).unwrap();
        assert_eq!(remove_queue(queue.id), Err(Errno::EINVAL));
    }

    #[test]
    fn a_segment_holds_a_board() {
        let segment = Segment::create(key(Kind::Memory, 4_194_308)).unwrap();
        assert_eq!(segment.board().incr(), 1);
        assert_eq!(segment.board().incr(), 2);
        remove_segment(segment.id).unwrap();
        assert_eq!(segment.board().incr(), 3, "still attached after IPC_RMID");
    }
}
