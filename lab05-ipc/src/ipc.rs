//! The two kinds of IPC (`--ipc`), behind one type each for what the server and its children do
//! with them: [`Ipc`] (the parent's objects, inherited by every child), [`Mailbox`] (where one
//! child's messages arrive) and [`Recipient`] (another child a `SAY` goes to). Each `match` puts
//! the POSIX calls (`posix.rs`) beside their System V twins (`sysv.rs`).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use common::narrate;
use nix::errno::Errno;

use crate::board::{Board, Member, SLOTS};
use crate::posix::{self, SharedMemory};
use crate::sysv::{self, MsgQueue, Segment};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// POSIX shared memory (`shm_open`) and a message queue per child (`mq_open`), in /dev/shm.
    Posix,
    /// System V shared memory (`shmget`) and one message queue (`msgget`) typed by child pid,
    /// woken by SIGUSR1; see them with `ipcs -m -q`.
    Sysv,
}

/// The server's IPC objects: made by the parent before any `fork()`, so every child inherits the
/// mapping (and the queue's id); removed by the parent at the end.
pub enum Ipc {
    /// A shared-memory object; each child makes its own queue, named after `server_pid` and itself.
    Posix {
        memory: SharedMemory,
        server_pid: u32,
    },
    /// A segment, and the server's one message queue.
    Sysv { segment: Segment, queue: MsgQueue },
}

/// Where the chat messages of child `pid` arrive.
pub struct Mailbox {
    pid: i32,
    inbox: Inbox,
}

enum Inbox {
    /// Our own queue, which `poll()` can watch, and its name (to remove it).
    Posix(posix::Queue, String),
    /// The server's queue (ours are the messages of type `pid`), and the chat pipe our `SIGUSR1`
    /// handler writes to.
    Sysv(MsgQueue, OwnedFd),
}

/// Another child a `SAY` goes to, and how to reach it.
pub struct Recipient {
    pub member: Member,
    via: Via,
}

enum Via {
    /// Its queue, opened for this one `SAY` (an open descriptor keeps a queue's memory counted).
    Posix(posix::Queue),
    Sysv(MsgQueue),
}

impl Ipc {
    /// Creates the shared memory (and, for System V, the one queue and the SIGUSR1 handler).
    pub fn create(kind: Kind, server_pid: u32, max_children: u32) -> Result<Ipc, String> {
        let bytes = std::mem::size_of::<Board>();
        let what = format!("{bytes} bytes: the INCR counter and the board of {SLOTS} children");
        if kind == Kind::Posix {
            let name = posix::shm_name(server_pid);
            let memory = SharedMemory::create(&name)
                .map_err(|e| format!("cannot create shared memory {name}: {e}"))?;
            narrate!("created shared memory {name} ({what})");
            explain_queue_budget(max_children);
            return Ok(Ipc::Posix { memory, server_pid });
        }
        sysv::install_wake_handler()
            .map_err(|e| format!("cannot install SIGUSR1's handler: {e}"))?;
        let key = sysv::key(sysv::Object::Memory, server_pid);
        let segment = Segment::create(key)
            .map_err(|e| format!("cannot create System V segment key {key:#010x}: {e}"))?;
        let id = segment.id;
        narrate!("created System V shared memory: key {key:#010x} shmid {id} ({what})");
        let key = sysv::key(sysv::Object::Queue, server_pid);
        let queue = MsgQueue::create(key).map_err(|e| {
            let _ = sysv::remove_segment(id);
            format!("cannot create System V message queue key {key:#010x}: {e}")
        })?;
        let id = queue.id;
        narrate!("created System V message queue: key {key:#010x} msqid {id} (one for all children; type = the recipient's pid)");
        Ok(Ipc::Sysv { segment, queue })
    }

    /// The board in the shared memory.
    pub fn board(&self) -> &Board {
        match self {
            Ipc::Posix { memory, .. } => memory.board(),
            Ipc::Sysv { segment, .. } => segment.board(),
        }
    }

    /// In a child: joins the board and makes our mailbox; `None` (no chat for this client) if
    /// either fails.
    pub fn open_mailbox(&self, pid: i32, client: u64) -> Option<Mailbox> {
        let opened = match *self {
            Ipc::Posix { server_pid, .. } => {
                self.open_queue(posix::queue_name(server_pid, pid), pid, client)
            }
            Ipc::Sysv { queue, .. } => self.open_pipe(queue, pid, client),
        };
        opened
            .inspect_err(|why| narrate!("{why}: client {client} will get no chat messages"))
            .ok()
    }

    /// Joins the board, then `mq_open`s our queue: in that order, so that a killed server's board
    /// lists every queue that may exist.
    fn open_queue(&self, name: String, pid: i32, client: u64) -> Result<Mailbox, String> {
        if !self.board().join(pid, client) {
            return Err("the board is full".into());
        }
        match posix::Queue::create(&name) {
            Ok(queue) => {
                let (depth, size) = (posix::QUEUE_DEPTH, posix::MESSAGE_SIZE);
                narrate!("created message queue {name} ({depth} messages of up to {size} bytes)");
                Ok(Mailbox {
                    pid,
                    inbox: Inbox::Posix(queue, name),
                })
            }
            Err(e) => {
                self.board().leave(pid);
                Err(format!("cannot create message queue {name}: {e}"))
            }
        }
    }

    /// Makes our chat pipe, then joins the board: in that order, so that a `SIGUSR1` has
    /// somewhere to go as soon as senders can find us.
    fn open_pipe(&self, queue: MsgQueue, pid: i32, client: u64) -> Result<Mailbox, String> {
        let pipe = sysv::chat_pipe().map_err(|e| format!("cannot make the chat pipe: {e}"))?;
        if !self.board().join(pid, client) {
            return Err("the board is full".into());
        }
        let id = queue.id;
        narrate!(
            "listening for messages of type {pid} in System V queue msqid {id} (woken by SIGUSR1)"
        );
        Ok(Mailbox {
            pid,
            inbox: Inbox::Sysv(queue, pipe),
        })
    }

    /// The other children in the chat, each ready to be sent to. Who cannot be reached is added
    /// to `missed`; a POSIX queue that is gone (ENOENT) belongs to a child that is just ending.
    pub fn recipients(&self, me: i32, missed: &mut Vec<u64>) -> Vec<Recipient> {
        let mut recipients = Vec::new();
        for member in self.board().members(me) {
            let via = match *self {
                Ipc::Posix { server_pid, .. } => {
                    let name = posix::queue_name(server_pid, member.pid);
                    match posix::Queue::open_for_sending(&name) {
                        Ok(queue) => Via::Posix(queue),
                        Err(Errno::ENOENT) => continue,
                        Err(e) => {
                            narrate!("cannot open {name}: {e}");
                            missed.push(member.client);
                            continue;
                        }
                    }
                }
                Ipc::Sysv { queue, .. } => Via::Sysv(queue),
            };
            recipients.push(Recipient { member, via });
        }
        recipients
    }

    /// System V only: marks child `me` as waiting for room in the queue (see `sysv.rs`), or not
    /// any more. POSIX polls each full queue for room instead.
    pub fn mark_waiting_for_room(&self, me: i32, waiting: bool) {
        if let Ipc::Sysv { .. } = self {
            self.board().set_waiting(me, waiting);
        }
    }

    /// In the parent, after child `pid` ended: what it did not remove itself (it crashed).
    pub fn remove_leftovers_of(&self, pid: i32) {
        // Leave the board first, so that no new sender finds that child.
        self.board().leave(pid);
        match self {
            Ipc::Posix { server_pid, .. } => {
                let name = posix::queue_name(*server_pid, pid);
                if posix::remove_queue(&name).is_ok() {
                    narrate!("removed message queue {name}, which child {pid} left behind");
                }
            }
            // Messages typed with a dead child's pid would take room in the queue for ever.
            Ipc::Sysv { queue, .. } => match (queue.drain(pid), queue.id) {
                (0, _) => {}
                (n, id) => narrate!(
                    "dropped {n} message(s) for child {pid} from System V queue msqid {id}"
                ),
            },
        }
    }

    /// In the parent, at the end (no child is left): removes every object of this server.
    pub fn remove(self) {
        // Task 4: remove every IPC object of this server when it stops.
        // First what crashed children left (`remove_leftovers_of`, for each member still on the
        // board), then the shared memory (munmap + shm_unlink, or shmdt + IPC_RMID) and the queue.
        for member in self.board().members(0) {
            self.remove_leftovers_of(member.pid);
        }
        match self {
            Ipc::Posix { memory, server_pid } => {
                drop(memory); // munmap
                let name = posix::shm_name(server_pid);
                let removed = posix::remove_memory(&name);
                report_removal(&format!("shared memory {name}"), removed);
            }
            Ipc::Sysv { segment, queue } => {
                let id = segment.id;
                drop(segment); // shmdt
                let what = format!("shared memory: System V segment shmid {id} (IPC_RMID)");
                report_removal(&what, sysv::remove_segment(id));
                let what = format!("System V message queue msqid {} (IPC_RMID)", queue.id);
                report_removal(&what, sysv::remove_queue(queue.id));
            }
        }
        // End of task 4.
    }
}

/// Narrates `removed <what>`, or why not.
pub fn report_removal(what: &str, result: nix::Result<()>) {
    match result {
        Ok(()) => narrate!("removed {what}"),
        Err(e) => narrate!("cannot remove {what}: {e}"),
    }
}

impl Mailbox {
    /// What `poll()` watches for mail: the queue itself, or the chat pipe.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        match &self.inbox {
            Inbox::Posix(queue, _) => queue.as_fd(),
            Inbox::Sysv(_, pipe) => pipe.as_fd(),
        }
    }

    /// Takes out every message waiting for us (`mq_receive` or `msgrcv` until there is none) and
    /// passes each to `deliver`. System V empties the chat pipe first (a later message brings a
    /// new byte), and wakes the children waiting for the room it made.
    pub fn receive_all(
        &self,
        board: &Board,
        buf: &mut [u8],
        mut deliver: impl FnMut(&[u8]) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        // Task 3: take every message out of our mailbox (mq_receive, or msgrcv of our type).
        // Until the queue is empty (EAGAIN, ENOMSG). System V: empty the chat pipe first, and
        // after taking any message out, wake (sysv::wake) the members waiting for room.
        if let Inbox::Sysv(_, pipe) = &self.inbox {
            sysv::empty_pipe(pipe);
        }
        let mut taken = 0;
        loop {
            let received = match &self.inbox {
                Inbox::Posix(queue, _) => queue.try_receive(buf),
                Inbox::Sysv(queue, _) => queue.try_receive(self.pid, buf),
            };
            match received {
                Ok(Some(n)) => deliver(&buf[..n])?,
                Ok(None) => break,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    narrate!("cannot take a message out of the queue: {e}");
                    break;
                }
            }
            taken += 1;
        }
        if let (Inbox::Sysv(..), 1..) = (&self.inbox, taken) {
            for waiting in board.members(self.pid).iter().filter(|m| m.waiting) {
                let _ = sysv::wake(waiting.pid); // ESRCH: it has just ended
            }
        }
        Ok(())
        // End of task 3.
    }

    /// Closes our mailbox and leaves the board: `mq_close` + `mq_unlink`, or drops the System V
    /// messages sent to us after our last look (they would take room in the queue for ever).
    pub fn close(self, board: &Board) {
        match self.inbox {
            Inbox::Posix(queue, name) => {
                drop(queue); // mq_close
                report_removal(&format!("message queue {name}"), posix::remove_queue(&name));
                board.leave(self.pid);
            }
            Inbox::Sysv(queue, _) => {
                board.leave(self.pid);
                queue.drain(self.pid);
            }
        }
    }
}

impl Recipient {
    /// `mq_send`, or `msgsnd` with type = its pid then `SIGUSR1`; `Ok(false)` if full.
    pub fn try_send(&self, message: &[u8]) -> nix::Result<bool> {
        match &self.via {
            Via::Posix(queue) => queue.try_send(message),
            Via::Sysv(queue) => {
                let sent = queue.try_send(self.member.pid, message)?;
                if sent {
                    let _ = sysv::wake(self.member.pid); // ESRCH: it has just ended
                }
                Ok(sent)
            }
        }
    }

    /// What `poll()` watches for room (`POLLOUT`): a POSIX queue; System V has nothing to poll.
    pub fn room_fd(&self) -> Option<BorrowedFd<'_>> {
        match &self.via {
            Via::Posix(queue) => Some(queue.as_fd()),
            Via::Sysv(_) => None,
        }
    }
}

/// Says how many POSIX queues this user's budget holds, and warns if `--max-children` is more.
fn explain_queue_budget(max_children: u32) {
    let cost = posix::BYTES_PER_QUEUE;
    let Some(budget) = posix::queue_budget() else {
        narrate!("each child's message queue costs {cost} bytes; RLIMIT_MSGQUEUE is unlimited");
        return;
    };
    let fit = budget / cost;
    narrate!("each child's message queue costs {cost} bytes of this user's {budget}-byte RLIMIT_MSGQUEUE: {fit} queues fit; --max-children is {max_children}");
    if u64::from(max_children) > fit {
        common::narration::warn(format_args!("--max-children {max_children} is more than the {fit} queues that fit; the last children will get no chat messages"));
    }
}
