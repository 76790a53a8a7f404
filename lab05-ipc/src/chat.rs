//! The chat: POSIX message queues, one per child.
//!
//! # The design: a queue per child, senders deliver directly
//!
//! Every child creates its own queue, `/netlabs-ipc-<server>-child-<pid>`, and writes its pid in
//! the shared [`Board`](crate::shm::Board) so the others can find it. To relay a `SAY`, the child
//! of the sender reads the board and, for every other child, opens its queue, puts `MSG <id> <text>`
//! in it and closes it again. Each child waits in `poll()` on its client's socket *and* its own
//! queue (on Linux a queue descriptor is a file descriptor, so `poll` works on it): when the queue
//! becomes readable it takes the messages out and writes them to its client.
//!
//! We could instead have one queue into a hub (the parent) that copies each message into the
//! children's queues. That needs the same per-child queues *and* a second hop, and the parent,
//! which must keep accepting clients, would become a busy relay. Direct delivery is simpler.
//!
//! # Sizing the queues: the limits are tight
//!
//! Linux counts the memory of every queue a user creates against `RLIMIT_MSGQUEUE` (see
//! `grep msgqueue /proc/self/limits`), 819,200 bytes by default, and an unprivileged user cannot
//! raise it. A queue costs, per message slot, its size plus about 96 bytes of bookkeeping (one
//! `struct msg_msg`, 48 bytes, and one tree node, 48 bytes). The default queue (10 slots of 8,192
//! bytes: `/proc/sys/fs/mqueue/msg_default` and `msgsize_default`) costs 82,880 bytes: only *nine*
//! fit, and the tenth `mq_open` fails with the misleading error EMFILE ("too many open files").
//!
//! So we size ours on purpose: a message is at most `MSG ` + a 20-digit id + ` ` + 4,092 bytes of
//! text (a 4,096-byte `SAY` line minus `SAY `) = 4,117 bytes, so [`MESSAGE_SIZE`] is 4,160; and
//! [`QUEUE_DEPTH`] is 2 slots, since a child empties its queue as soon as `poll` says so. One queue
//! costs 2 × (4,160 + 96) = 8,512 bytes ([`BYTES_PER_QUEUE`]), and 819,200 / 8,512 = 96 queues fit.
//! The server's default `--max-children` (64) uses two thirds of that, leaving room for a second
//! server of the same user. A queue's memory stays counted until *every* descriptor of it is
//! closed, even after `mq_unlink`: that is why a sender closes each queue right after sending.
//!
//! # A full queue
//!
//! If a child is busy (its client asked for `SLEEP 10000`), its two slots fill up. A sender must not
//! wait forever for room, nor give up at once when the reader is merely a little behind. Our sender
//! opens queues with `O_NONBLOCK` (a full queue fails with EAGAIN instead of blocking), then waits
//! in `poll()` for room (`POLLOUT`) for at most [`SEND_WAIT`] in total per `SAY`, and meanwhile keeps
//! delivering the messages arriving in its *own* queue, so that two children sending to each other
//! never wait on each other. A recipient whose queue stays full that long misses the message, and
//! the sender is told who missed it (`ERR client 7 missed it ...`); its connection stays open.

use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::mqueue::{mq_close, mq_open, mq_receive, mq_send, mq_unlink, MQ_OFlag, MqAttr, MqdT};
use nix::sys::stat::Mode;

/// Message slots per queue.
pub const QUEUE_DEPTH: i64 = 2;
/// The largest message a queue takes, in bytes (a 4,096-byte `SAY` makes a 4,117-byte `MSG`).
pub const MESSAGE_SIZE: i64 = 4160;
/// Bytes of bookkeeping the kernel counts per message slot (a `msg_msg` and a tree node).
pub const KERNEL_BYTES_PER_SLOT: usize = 96;
/// What one of our queues costs against `RLIMIT_MSGQUEUE`: 8,512 bytes.
pub const BYTES_PER_QUEUE: usize =
    QUEUE_DEPTH as usize * (MESSAGE_SIZE as usize + KERNEL_BYTES_PER_SLOT);
/// The longest a `SAY` waits, in total, for room in full queues before reporting who missed it.
pub const SEND_WAIT: Duration = Duration::from_millis(500);

/// An open message-queue descriptor, closed (`mq_close`) when dropped.
#[derive(Debug)]
pub struct Queue {
    mqd: Option<MqdT>,
}

impl Queue {
    /// Creates queue `name` for us to receive from: `mq_open(name, O_CREAT | O_EXCL | O_RDONLY |
    /// O_NONBLOCK, 0600, {QUEUE_DEPTH, MESSAGE_SIZE})`. EMFILE here usually means the user's
    /// `RLIMIT_MSGQUEUE` budget is used up, not that we have too many files open.
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

    /// Opens someone else's queue `name` to send to it, without waiting when it is full.
    pub fn open_for_sending(name: &str) -> nix::Result<Queue> {
        let flags = MQ_OFlag::O_WRONLY | MQ_OFlag::O_NONBLOCK | MQ_OFlag::O_CLOEXEC;
        let mqd = mq_open(name, flags, Mode::empty(), None)?;
        Ok(Queue { mqd: Some(mqd) })
    }

    fn mqd(&self) -> &MqdT {
        self.mqd
            .as_ref()
            .expect("a Queue holds its descriptor until dropped")
    }

    /// Puts `message` in the queue. `Ok(false)` if the queue is full (EAGAIN).
    pub fn try_send(&self, message: &[u8]) -> nix::Result<bool> {
        match mq_send(self.mqd(), message, 0) {
            Ok(()) => Ok(true),
            Err(Errno::EAGAIN) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Takes the oldest message out into `buf` (at least [`MESSAGE_SIZE`] bytes long) and returns
    /// its length; `Ok(None)` if the queue is empty (EAGAIN).
    pub fn try_receive(&self, buf: &mut [u8]) -> nix::Result<Option<usize>> {
        let mut priority = 0;
        match mq_receive(self.mqd(), buf, &mut priority) {
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

/// Removes queue `name` (`mq_unlink`). Its memory is freed once every descriptor is closed.
pub fn remove(name: &str) -> nix::Result<()> {
    mq_unlink(name)
}

/// The per-user queue budget, `RLIMIT_MSGQUEUE` in bytes, read from `/proc/self/limits` (the
/// "Max msgqueue size" line). `None` if unlimited or unreadable.
pub fn budget() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max msgqueue size"))?;
    // "Max msgqueue size         819200               819200               bytes"
    line["Max msgqueue size".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

    fn test_name(what: &str) -> String {
        format!("/netlabs-ipc-unit-{}-{what}", std::process::id())
    }

    #[test]
    fn the_budget_arithmetic() {
        assert_eq!(BYTES_PER_QUEUE, 8512);
        assert_eq!(819_200 / BYTES_PER_QUEUE, 96);
        // The longest MSG line fits in one message.
        let longest = format!("MSG {} {}", u64::MAX, "x".repeat(4092));
        assert!(longest.len() <= MESSAGE_SIZE as usize, "{}", longest.len());
        // The default queue really is that expensive.
        assert_eq!(819_200 / (10 * (8192 + KERNEL_BYTES_PER_SLOT)), 9);
    }

    #[test]
    fn a_long_message_goes_through_whole_and_a_full_queue_says_so() {
        let name = test_name("queue");
        let receiver = Queue::create(&name).unwrap();
        let sender = Queue::open_for_sending(&name).unwrap();
        remove(&name).unwrap(); // open descriptors keep working after the name is gone
        let long = format!("MSG 1 {}", "y".repeat(4092));
        assert!(sender.try_send(long.as_bytes()).unwrap());
        assert!(sender.try_send(b"MSG 1 second").unwrap());
        // QUEUE_DEPTH is 2: the third does not fit, and we are told instead of blocked.
        assert!(!sender.try_send(b"MSG 1 third").unwrap());

        let mut buf = vec![0; MESSAGE_SIZE as usize];
        let n = receiver.try_receive(&mut buf).unwrap().unwrap();
        assert_eq!(&buf[..n], long.as_bytes());
        let n = receiver.try_receive(&mut buf).unwrap().unwrap();
        assert_eq!(&buf[..n], b"MSG 1 second");
        assert_eq!(receiver.try_receive(&mut buf).unwrap(), None);
        // Too big for the queue: refused, not cut.
        let too_big = vec![b'z'; MESSAGE_SIZE as usize + 1];
        assert_eq!(sender.try_send(&too_big), Err(Errno::EMSGSIZE));
    }

    #[test]
    fn poll_sees_messages_and_room() {
        let name = test_name("poll");
        let receiver = Queue::create(&name).unwrap();
        let sender = Queue::open_for_sending(&name).unwrap();
        remove(&name).unwrap();
        let readable = |q: &Queue| {
            let mut fds = [PollFd::new(q.as_fd(), PollFlags::POLLIN)];
            poll(&mut fds, PollTimeout::ZERO).unwrap() == 1
        };
        let writable = |q: &Queue| {
            let mut fds = [PollFd::new(q.as_fd(), PollFlags::POLLOUT)];
            poll(&mut fds, PollTimeout::ZERO).unwrap() == 1
        };
        assert!(!readable(&receiver));
        assert!(writable(&sender));
        sender.try_send(b"a").unwrap();
        sender.try_send(b"b").unwrap();
        assert!(readable(&receiver));
        assert!(!writable(&sender), "a full queue has no room");
        let mut buf = vec![0; MESSAGE_SIZE as usize];
        receiver.try_receive(&mut buf).unwrap();
        assert!(writable(&sender), "room again after a receive");
    }

    #[test]
    fn the_budget_is_read_from_proc() {
        // Whatever this machine's limit is, it is readable and holds at least one queue.
        let budget = budget().expect("RLIMIT_MSGQUEUE in /proc/self/limits");
        assert!(budget >= BYTES_PER_QUEUE as u64);
    }
}
