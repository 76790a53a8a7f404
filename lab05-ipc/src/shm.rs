//! The POSIX shared-memory object: memory that several processes really share.
//!
//! After `fork()` a child has a *copy* of its parent's memory: that is why lab02's `INCR` says 1
//! to every client. To share, the processes must map the *same* physical pages into their address
//! spaces. POSIX gives those pages a name:
//!
//! 1. `shm_open("/netlabs-ipc-4242-shm", O_CREAT | O_EXCL | O_RDWR)` creates a named memory object
//!    (on Linux it is the file `/dev/shm/netlabs-ipc-4242-shm`, in RAM) and opens it;
//! 2. `ftruncate(fd, size)` gives it a size (new bytes read as zero);
//! 3. `mmap(fd, MAP_SHARED)` maps it into our address space. `MAP_SHARED` is the point: writes go
//!    to the object itself, not to a private copy, so every process that maps it sees them. A
//!    mapping survives `fork()`: the parent maps the object *once*, before forking, and every child
//!    inherits the mapping, so children need neither the name nor a descriptor;
//! 4. `close(fd)`: the mapping keeps the object's pages alive, the descriptor is not needed;
//! 5. at the end, `munmap` and `shm_unlink(name)`. An object nobody unlinks stays in `/dev/shm`
//!    until the machine reboots, even when every process that used it is gone.
//!
//! What lives in it is the [`Board`]: the `INCR` counter and the list of children that listen for
//! chat messages (so that a child knows whose queues to send a `SAY` to, see `chat.rs`). Several
//! processes update it at the same moment, so every field is an *atomic*: `fetch_add` on the
//! counter is one indivisible CPU instruction (`lock xadd` on x86-64), whichever process runs it.
//! No lock is needed, and so no lock can be left held by a child that crashed (PANIC, kill -9).

use std::num::NonZeroUsize;
use std::os::fd::OwnedFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

use nix::fcntl::OFlag;
use nix::sys::mman::{mmap, munmap, shm_open, shm_unlink, MapFlags, ProtFlags};
use nix::sys::stat::{fstat, Mode};

// Atomics shared between processes must be lock-free (a lock-based fallback would live in each
// process's private memory). They are on every platform with 64-bit atomic instructions.
#[cfg(not(target_has_atomic = "64"))]
compile_error!("lab05 needs 64-bit atomic instructions for its shared counter");

/// How many children can listen for chat at once: the rows of the board's table. `--max-children`
/// cannot exceed it.
pub const SLOTS: usize = 128;

/// What the shared-memory object holds. `#[repr(C)]` fixes the field order and layout, so every
/// process (and a later run cleaning up a crashed one) reads the same bytes the same way.
///
/// All zeros is a valid board (counter 0, every slot free), which is exactly what `ftruncate`
/// gives a new object.
#[repr(C)]
pub struct Board {
    /// The `INCR` counter.
    pub counter: AtomicU64,
    /// The children that are listening for chat: who to send a `SAY` to.
    pub children: [Slot; SLOTS],
}

/// One row of the table of children: a child's pid (0 = free row) and the client it serves.
#[repr(C)]
pub struct Slot {
    /// The child's process id, 0 if the slot is free.
    pub pid: AtomicI32,
    /// The id of the client that child serves (for "client 7 missed your message").
    pub client: AtomicU64,
}

/// A live child as read from the board.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listener {
    /// The child's pid (its queue's name is built from it).
    pub pid: i32,
    /// The client it serves.
    pub client: u64,
}

impl Board {
    /// `INCR`: adds one and returns the new value. `fetch_add` returns the value *before* the
    /// addition, atomically: two children can never both get the same number.
    pub fn incr(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Takes a free row for child `pid` serving `client`. `None` if all [`SLOTS`] rows are taken.
    /// `compare_exchange(0, pid)` claims a row only if it is still free at that instant, so two
    /// children registering at once never take the same row.
    pub fn register(&self, pid: i32, client: u64) -> Option<usize> {
        let index = self.children.iter().position(|slot| {
            slot.pid
                .compare_exchange(0, pid, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        })?;
        self.children[index].client.store(client, Ordering::SeqCst);
        Some(index)
    }

    /// Frees the row of child `pid`, if it has one. Returns whether it had.
    pub fn unregister(&self, pid: i32) -> bool {
        self.children.iter().any(|slot| {
            slot.pid
                .compare_exchange(pid, 0, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        })
    }

    /// The children registered right now, except `except` (the caller itself).
    pub fn listeners(&self, except: i32) -> Vec<Listener> {
        self.children
            .iter()
            .filter_map(|slot| {
                let pid = slot.pid.load(Ordering::SeqCst);
                (pid != 0 && pid != except).then(|| Listener {
                    pid,
                    client: slot.client.load(Ordering::SeqCst),
                })
            })
            .collect()
    }
}

/// A mapping of a shared-memory object holding a [`Board`]. Unmapped when dropped; the object
/// itself is removed only by [`remove`].
pub struct SharedMemory {
    board: NonNull<Board>,
}

const SIZE: usize = std::mem::size_of::<Board>();

impl SharedMemory {
    /// Creates the object `name` (it must not exist yet: `O_EXCL`), sizes it and maps it.
    pub fn create(name: &str) -> nix::Result<SharedMemory> {
        // O_EXCL: fail with EEXIST rather than silently share an object someone else made.
        // 0600: only our user may open it.
        let fd = shm_open(
            name,
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR | OFlag::O_CLOEXEC,
            Mode::S_IRUSR | Mode::S_IWUSR,
        )?;
        let mapped = nix::unistd::ftruncate(&fd, SIZE as i64).and_then(|()| Self::map(fd));
        if mapped.is_err() {
            let _ = shm_unlink(name); // do not leave a half-made object behind
        }
        mapped
    }

    /// Opens and maps an existing object `name` (to clean up after a crashed server). Fails with
    /// `EINVAL` if it is smaller than a [`Board`] (then it is not one of ours).
    pub fn open_existing(name: &str) -> nix::Result<SharedMemory> {
        let fd = shm_open(name, OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty())?;
        if (fstat(&fd)?.st_size as usize) < SIZE {
            return Err(nix::errno::Errno::EINVAL);
        }
        Self::map(fd)
    }

    /// `mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)`, then close `fd`.
    fn map(fd: OwnedFd) -> nix::Result<SharedMemory> {
        let length = NonZeroUsize::new(SIZE).expect("a Board is not empty");
        // SAFETY: we ask for a new mapping at an address the kernel chooses (None), so it cannot
        // overlap memory Rust already uses. The object is at least SIZE bytes long (we sized it,
        // or checked its size), so every byte of the mapping is backed by the object.
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
        // `fd` is dropped (closed) here: the mapping alone keeps the pages.
        Ok(SharedMemory {
            board: address.cast(),
        })
    }

    /// The board in the shared pages.
    pub fn board(&self) -> &Board {
        // SAFETY: `board` points to SIZE bytes mapped readable and writable until `drop` unmaps
        // them, so the reference cannot outlive the mapping (it borrows `self`). The address is
        // page-aligned, more than a Board's alignment (8). Any bytes are a valid Board: it is
        // only integers (atomics), and a new object starts as zeros. Other processes write to
        // these bytes at the same time, which is fine because we only ever hand out a shared
        // reference and every field is an atomic, built for exactly that.
        unsafe { self.board.as_ref() }
    }
}

impl Drop for SharedMemory {
    fn drop(&mut self) {
        // SAFETY: `board` and SIZE are exactly what mmap gave us, and no reference to the board
        // can still exist, since `board()` borrows `self` and `self` is going away.
        let _ = unsafe { munmap(self.board.cast(), SIZE) };
    }
}

/// Removes the object's name (`shm_unlink`). Processes that have it mapped keep their mapping;
/// the memory is freed when the last of them unmaps it (or exits).
pub fn remove(name: &str) -> nix::Result<()> {
    shm_unlink(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_name(what: &str) -> String {
        format!("/netlabs-ipc-unit-{}-{what}", std::process::id())
    }

    #[test]
    fn two_mappings_of_one_object_see_the_same_counter() {
        let name = test_name("counter");
        let first = SharedMemory::create(&name).unwrap();
        let second = SharedMemory::open_existing(&name).unwrap();
        assert_eq!(first.board().incr(), 1);
        assert_eq!(second.board().incr(), 2);
        assert_eq!(first.board().incr(), 3);
        assert!(std::path::Path::new(&format!("/dev/shm{name}")).exists());
        // It exists once: a second create fails instead of sharing by accident.
        assert_eq!(
            SharedMemory::create(&name).err(),
            Some(nix::errno::Errno::EEXIST)
        );
        remove(&name).unwrap();
        assert!(!std::path::Path::new(&format!("/dev/shm{name}")).exists());
        // The mappings still work after the name is gone.
        assert_eq!(second.board().incr(), 4);
    }

    #[test]
    fn the_table_of_children() {
        let name = test_name("table");
        let shm = SharedMemory::create(&name).unwrap();
        remove(&name).unwrap();
        let board = shm.board();
        assert_eq!(board.listeners(0), vec![]);
        board.register(100, 1).unwrap();
        board.register(200, 2).unwrap();
        board.register(300, 3).unwrap();
        assert_eq!(
            board.listeners(200),
            vec![
                Listener {
                    pid: 100,
                    client: 1
                },
                Listener {
                    pid: 300,
                    client: 3
                }
            ]
        );
        assert!(board.unregister(100));
        assert!(!board.unregister(100));
        assert_eq!(board.listeners(0).len(), 2);
        // Every row can be taken, then none is left.
        let free = SLOTS - 2;
        for i in 0..free {
            assert!(board.register(1000 + i as i32, 0).is_some());
        }
        assert_eq!(board.register(5, 5), None);
    }

    #[test]
    fn a_small_object_is_not_a_board() {
        let name = test_name("small");
        let fd = shm_open(
            name.as_str(),
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR,
            Mode::S_IRUSR | Mode::S_IWUSR,
        )
        .unwrap();
        nix::unistd::ftruncate(&fd, 8).unwrap();
        let opened = SharedMemory::open_existing(&name);
        remove(&name).unwrap();
        assert_eq!(opened.err(), Some(nix::errno::Errno::EINVAL));
    }
}
