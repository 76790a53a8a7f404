//! The chat room: the table of connected clients that every client thread shares.
//!
//! `SAY` needs to reach every *other* client, so some memory must list them all. With threads that
//! is easy, because threads share their process's memory (쓰레드 방식: 외부 변수가 있는 메모리
//! 공간을 공유): one `HashMap` from client id to a way of reaching that client, behind one
//! `Mutex`. The rules a student can check by reading this file:
//!
//! 1. The lock is held only for quick work on the table: insert, remove, and `try_send` a line
//!    into each outbox (which never waits). Never while reading or writing a socket, never while
//!    printing. So no thread can keep the others waiting on the lock.
//! 2. Joining the room returns a [`Seat`], a guard that removes the client when it is dropped.
//!    Rust drops it however the client's thread ends: a `return`, or a panic unwinding the stack
//!    (`PANIC`). A crashed thread cannot leave a dead client in the table.
//! 3. A *poisoned* lock does not bring the others down (see [`Room::members`]).

use std::collections::HashMap;
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc::TrySendError;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use common::{narrate, protocol};

use crate::outbox::{Outbox, OUTBOX_LINES};

/// How the room reaches one client.
struct Member {
    /// The client's socket, so that the room can shut it down: to wake its thread at server
    /// shutdown, or to cut off a client too slow to read what is sent to it.
    socket: Arc<TcpStream>,
    /// The client's outbox (see `outbox.rs`): its writer thread writes what we put in it.
    outbox: Outbox,
}

/// The table of connected clients. Shared by every thread through an `Arc`.
#[derive(Default)]
pub struct Room {
    members: Mutex<HashMap<u64, Member>>,
}

impl Room {
    /// Locks the table.
    ///
    /// **Poisoning.** If a thread panics while it holds a `MutexGuard`, Rust marks the mutex
    /// *poisoned*: the data inside may have been left half-changed, so every later `lock()`
    /// returns `Err(PoisonError)` to make the next thread think about it. The usual
    /// `lock().unwrap()` would then panic in *every* thread that touches the room: one crash
    /// would spread to every client. Our table cannot be left half-changed (each change is one
    /// `insert` or `remove` of a whole entry), so we take the data out of the error and go on.
    fn members(&self) -> MutexGuard<'_, HashMap<u64, Member>> {
        self.members.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds client `id`, reachable through `socket` and `outbox`, and returns its seat. The
    /// client leaves the room when the seat is dropped.
    pub fn join(&self, id: u64, socket: Arc<TcpStream>, outbox: Outbox) -> Seat<'_> {
        self.members().insert(id, Member { socket, outbox });
        Seat { room: self, id }
    }

    /// How many clients are in the room.
    pub fn len(&self) -> usize {
        self.members().len()
    }

    /// `SAY`: queues `MSG <from> <text>` for every client except `from`, without waiting for
    /// any of them. A client whose outbox is full has stopped reading: it is removed from the
    /// room and its socket is shut down (what IRC servers call "SendQ exceeded"), so that it
    /// cannot make the others wait or make the server hold ever more lines for it.
    pub fn say(&self, from: u64, text: &str) -> Result<(), String> {
        // Task 3: the chat room behind a lock.
        // Lock the table, try_send the line into every other client's outbox (never wait), cut
        // off the clients whose outbox is full, and print only once the lock is released.
        let mut line = protocol::msg(from, text).into_bytes();
        line.push(b'\n');
        let mut too_slow = Vec::new();
        {
            let mut members = self.members();
            for (&id, member) in members.iter() {
                if id == from {
                    continue;
                }
                match member.outbox.try_send(line.clone()) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => too_slow.push(id),
                    // Its writer thread has stopped: the client is leaving; its seat removes it.
                    Err(TrySendError::Disconnected(_)) => {}
                }
            }
            for id in &too_slow {
                if let Some(member) = members.remove(id) {
                    // Wakes its writer (blocked in write()) and its reader (blocked in read()).
                    let _ = member.socket.shutdown(Shutdown::Both);
                }
            }
        } // the lock is released here, before we print anything
        for id in too_slow {
            narrate!(
                "client {id} has {OUTBOX_LINES} lines waiting and reads none: disconnected it"
            );
        }
        Ok(())
        // End of task 3.
    }

    /// Server shutdown: shuts down the read side of every client's socket, so that each client
    /// thread blocked in `read()` gets end-of-file at once, sees the stop flag, sends `BYE` and
    /// ends. Returns how many clients were woken.
    pub fn wake_all(&self) -> usize {
        let members = self.members();
        for member in members.values() {
            let _ = member.socket.shutdown(Shutdown::Read);
        }
        members.len()
    }
}

/// A client's place in the room; dropping it removes the client (see the module docs).
pub struct Seat<'a> {
    room: &'a Room,
    id: u64,
}

impl Drop for Seat<'_> {
    fn drop(&mut self) {
        let left = self.room.members().remove(&self.id);
        if std::thread::panicking() {
            // We are running during the unwinding of a panic: say what the guard cleaned up.
            narrate!(
                "the thread serving client {} panicked; its seat guard removed it from the room \
                 and lets go of its socket (closed once its writer is done)",
                self.id
            );
        }
        drop(left); // the socket and the outbox, outside the lock: its writer thread ends
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::sync::mpsc;

    /// An outbox without a writer thread: the test reads the lines itself.
    fn outbox_for_test(_id: u64, lines: usize) -> (Outbox, mpsc::Receiver<Vec<u8>>) {
        mpsc::sync_channel(lines)
    }

    fn socket_pair() -> (Arc<TcpStream>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (Arc::new(server), client)
    }

    #[test]
    fn say_reaches_the_others_and_not_the_sender() {
        let room = Room::default();
        let (a_tx, a_rx) = outbox_for_test(1, 4);
        let (b_tx, b_rx) = outbox_for_test(2, 4);
        let _a = room.join(1, socket_pair().0, a_tx);
        let _b = room.join(2, socket_pair().0, b_tx);
        room.say(1, "hi").unwrap();
        assert_eq!(b_rx.try_recv().unwrap(), b"MSG 1 hi\n");
        assert!(a_rx.try_recv().is_err(), "not to the sender");
    }

    #[test]
    fn a_full_outbox_gets_its_client_disconnected_without_waiting() {
        let room = Room::default();
        let (slow_tx, _slow_rx) = outbox_for_test(2, 1);
        let (socket, mut peer) = socket_pair();
        let _slow = room.join(2, socket, slow_tx);
        room.say(1, "one").unwrap(); // fills the outbox of 1 line
        room.say(1, "two").unwrap(); // does not wait: cuts client 2 off
        assert_eq!(room.len(), 0);
        let mut buf = [0u8; 8];
        assert_eq!(std::io::Read::read(&mut peer, &mut buf).unwrap(), 0, "EOF");
    }

    #[test]
    fn a_poisoned_room_still_works_and_a_panicking_thread_leaves_it() {
        let room = Arc::new(Room::default());
        let (tx, rx) = outbox_for_test(1, 4);
        let _stays = room.join(1, socket_pair().0, tx);
        let crashing = Arc::clone(&room);
        let result = std::thread::spawn(move || {
            let (tx, _rx) = outbox_for_test(2, 4);
            let _seat = crashing.join(2, socket_pair().0, tx);
            let _guard = crashing.members.lock().unwrap();
            panic!("a bug while holding the lock");
        })
        .join();
        assert!(result.is_err(), "the thread panicked");
        assert!(room.members.is_poisoned());
        assert_eq!(room.len(), 1, "the seat guard removed client 2");
        room.say(2, "still here?").unwrap();
        assert_eq!(rx.try_recv().unwrap(), b"MSG 2 still here?\n");
    }
}
