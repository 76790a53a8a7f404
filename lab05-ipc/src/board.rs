//! The board: what the shared memory holds, whichever kind of IPC made it: the `INCR` counter,
//! and the table of children in the chat (so that a child knows whom to send a `SAY` to).
//!
//! Several processes update it at the same moment, so every field is an *atomic*: `fetch_add` on
//! the counter is one indivisible CPU instruction (`lock xadd` on x86-64), whichever process runs
//! it. No lock is needed, so no lock can be left held by a child that crashed.

use std::sync::atomic::{AtomicI32, AtomicU64, Ordering::SeqCst};

// Atomics shared between processes must be lock-free (a lock-based fallback would live in each
// process's private memory). They are on every platform with 64-bit atomic instructions.
#[cfg(not(target_has_atomic = "64"))]
compile_error!("lab05 needs 64-bit atomic instructions for its shared counter");

/// How many children can be in the chat at once: the rows of the board. `--max-children` cannot
/// exceed it.
pub const SLOTS: usize = 128;

/// What the shared memory holds. `#[repr(C)]` fixes the layout, so every process (and a later
/// server cleaning up after a killed one) reads the same bytes the same way. All zeros is a valid
/// board (counter 0, every row free): exactly what a new object or segment holds.
#[repr(C)]
pub struct Board {
    counter: AtomicU64,
    rows: [Row; SLOTS],
}

/// One row: a child in the chat (pid 0 = a free row).
#[repr(C)]
struct Row {
    pid: AtomicI32,
    /// 1 while this child waits for room in the System V queue (see `sysv.rs`).
    waiting: AtomicI32,
    client: AtomicU64,
}

/// A child in the chat, as read from the board.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    /// The child's pid (a POSIX queue's name is built from it; a System V message's type is it).
    pub pid: i32,
    /// The client it serves (for "client 7 missed it").
    pub client: u64,
    /// Whether it waits for room in the System V queue.
    pub waiting: bool,
}

impl Board {
    /// `INCR`: `fetch_add` returns the value *before* the addition, atomically: two children can
    /// never both get the same number.
    pub fn incr(&self) -> u64 {
        self.counter.fetch_add(1, SeqCst) + 1
    }

    /// Takes a free row for child `pid`; `false` if all [`SLOTS`] are taken.
    /// `compare_exchange(0, pid)` claims a row only if it is still free at that instant, so two
    /// children joining at once never take the same row.
    pub fn join(&self, pid: i32, client: u64) -> bool {
        let claim = |row: &&Row| row.pid.compare_exchange(0, pid, SeqCst, SeqCst).is_ok();
        let row = self.rows.iter().find(claim);
        row.inspect(|row| row.client.store(client, SeqCst))
            .is_some()
    }

    /// Frees child `pid`'s row; `false` if it had none.
    pub fn leave(&self, pid: i32) -> bool {
        let row = self.row(pid).inspect(|row| row.waiting.store(0, SeqCst));
        row.is_some_and(|row| row.pid.compare_exchange(pid, 0, SeqCst, SeqCst).is_ok())
    }

    /// The children in the chat right now, except `except` (the caller itself; 0 for none).
    pub fn members(&self, except: i32) -> Vec<Member> {
        (self.rows.iter())
            .map(|row| Member {
                pid: row.pid.load(SeqCst),
                client: row.client.load(SeqCst),
                waiting: row.waiting.load(SeqCst) == 1,
            })
            .filter(|member| member.pid != 0 && member.pid != except)
            .collect()
    }

    /// Marks child `pid` as waiting for room in the System V queue, or not any more.
    pub fn set_waiting(&self, pid: i32, waiting: bool) {
        if let Some(row) = self.row(pid) {
            row.waiting.store(i32::from(waiting), SeqCst);
        }
    }

    fn row(&self, pid: i32) -> Option<&Row> {
        self.rows.iter().find(|row| row.pid.load(SeqCst) == pid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_taken_and_freed() {
        assert_eq!(
            std::mem::size_of::<Board>(),
            8 + SLOTS * 16,
            "a fixed layout"
        );
        // SAFETY: all zeros is a valid Board (only integers), as in a new shared-memory object.
        let board: Board = unsafe { std::mem::zeroed() };
        assert_eq!((board.incr(), board.incr()), (1, 2));
        assert!(board.join(100, 1) && board.join(200, 2) && board.join(300, 3));
        board.set_waiting(300, true);
        let others: Vec<_> = board
            .members(200)
            .iter()
            .map(|m| (m.pid, m.client, m.waiting))
            .collect();
        assert_eq!(others, [(100, 1, false), (300, 3, true)]);
        assert!(board.leave(300) && !board.leave(300));
        assert!(
            board.join(300, 4) && !board.members(0)[2].waiting,
            "leaving clears the flag"
        );
        assert!((1000..1000 + SLOTS as i32 - 3).all(|pid| board.join(pid, 0)));
        assert!(!board.join(5, 5), "every row is taken");
    }
}
