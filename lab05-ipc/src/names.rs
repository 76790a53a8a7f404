//! The names of our IPC objects, and cleaning up after a server that was killed.
//!
//! POSIX shared-memory objects and message queues have names in a system-wide namespace, and they
//! outlive the processes that made them: nothing removes them but `shm_unlink`/`mq_unlink` (or a
//! reboot). So:
//!
//! - every name holds the server's pid: `/netlabs-ipc-4242-shm`, `/netlabs-ipc-4242-child-4250`.
//!   Two servers (or two test runs) side by side never open each other's objects;
//! - a server removes what it made when it stops, and removes a child's queue when it reaps that
//!   child, whether the child ended well or crashed;
//! - a server killed with SIGKILL cannot clean up (SIGKILL cannot be caught). Its objects stay,
//!   and still count against the user's limits. So at startup we look for objects whose server pid
//!   is dead and remove them ([`remove_stale`]). The shared-memory objects are files in `/dev/shm`
//!   on Linux, so they are easy to list. Queues are listed only where the `mqueue` file system is
//!   mounted (`/dev/mqueue`, not by default), so we do not rely on it: the dead server's board (in
//!   its shared memory) lists its children, and the queue names follow from their pids.

use std::fs;

use common::narrate;
use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;

use crate::{chat, shm};

/// What every object name starts with (after the `/`).
pub const PREFIX: &str = "netlabs-ipc-";

/// The shared-memory object of server `server`.
pub fn shm_name(server: u32) -> String {
    format!("/{PREFIX}{server}-shm")
}

/// The message queue of child `child` of server `server`.
pub fn queue_name(server: u32, child: i32) -> String {
    format!("/{PREFIX}{server}-child-{child}")
}

/// The server pid in an object's file name (`netlabs-ipc-<pid>-...`), if it is one of ours.
pub fn owner(file_name: &str) -> Option<u32> {
    let rest = file_name.strip_prefix(PREFIX)?;
    let (pid, _) = rest.split_once('-')?;
    pid.parse().ok().filter(|&pid| pid > 0)
}

/// Whether process `pid` is running: `kill(pid, 0)` sends nothing, it only checks (ESRCH means
/// no such process; EPERM means it exists but belongs to someone else). A zombie - dead, waiting
/// for its parent to collect its status - also passes that check, so we look at its state in
/// `/proc/<pid>/stat` too: `Z` counts as dead.
///
/// A pid can be reused by an unrelated process after its server died; then we wrongly think the
/// server is alive and leave its objects for a later start. That is the safe way to be wrong.
pub fn is_alive(pid: u32) -> bool {
    if let Err(Errno::ESRCH) = kill(Pid::from_raw(pid as i32), None) {
        return false;
    }
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // "4242 (ipc-server) Z ...": the state follows the last ')'.
    let state = stat
        .rsplit(')')
        .next()
        .and_then(|rest| rest.split_whitespace().next());
    state != Some("Z")
}

/// Removes the objects of every server that is gone (see the module docs). `me` is our own pid.
/// Returns how many objects it removed.
pub fn remove_stale(me: u32) -> usize {
    let mut removed = 0;
    let entries = match fs::read_dir("/dev/shm") {
        Ok(entries) => entries,
        Err(e) => {
            narrate!("cannot list /dev/shm to look for leftovers of crashed servers: {e}");
            return 0;
        }
    };
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(server) = owner(&file) else { continue };
        if server == me || is_alive(server) {
            continue;
        }
        let name = format!("/{file}");
        if name == shm_name(server) {
            removed += remove_queues_listed_in(&name, server);
        }
        match shm::remove(&name) {
            Ok(()) => {
                narrate!("removed stale shared memory {name} (its server, pid {server}, is gone)");
                removed += 1;
            }
            Err(e) => narrate!("cannot remove stale shared memory {name}: {e}"),
        }
    }
    removed + remove_stale_mounted_queues(me)
}

/// Reads the board of dead server `server` and removes the queue of every child listed there.
fn remove_queues_listed_in(shm_name: &str, server: u32) -> usize {
    let memory = match shm::SharedMemory::open_existing(shm_name) {
        Ok(memory) => memory,
        Err(e) => {
            narrate!("cannot read the stale board {shm_name}: {e}");
            return 0;
        }
    };
    let mut removed = 0;
    for child in memory.board().listeners(0) {
        let queue = queue_name(server, child.pid);
        match chat::remove(&queue) {
            Ok(()) => {
                narrate!("removed stale message queue {queue} (its server, pid {server}, is gone)");
                removed += 1;
            }
            Err(Errno::ENOENT) => {} // that child had removed it, or never made it
            Err(e) => narrate!("cannot remove stale message queue {queue}: {e}"),
        }
    }
    removed
}

/// If the mqueue file system happens to be mounted on `/dev/mqueue`, removes every queue there
/// whose server is gone (it catches queues that no board lists any more).
fn remove_stale_mounted_queues(me: u32) -> usize {
    let Ok(entries) = fs::read_dir("/dev/mqueue") else {
        return 0; // not mounted: the usual case, and fine
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(server) = owner(&file) else { continue };
        if server == me || is_alive(server) {
            continue;
        }
        let queue = format!("/{file}");
        if chat::remove(&queue).is_ok() {
            narrate!("removed stale message queue {queue} (its server, pid {server}, is gone)");
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_hold_the_server_pid() {
        assert_eq!(shm_name(4242), "/netlabs-ipc-4242-shm");
        assert_eq!(queue_name(4242, 4250), "/netlabs-ipc-4242-child-4250");
        assert_ne!(shm_name(1), shm_name(2));
        assert_eq!(owner("netlabs-ipc-4242-shm"), Some(4242));
        assert_eq!(owner("netlabs-ipc-4242-child-4250"), Some(4242));
        assert_eq!(owner("netlabs-ipc-unit-7-x"), None);
        assert_eq!(owner("netlabs-ipc-0-shm"), None);
        assert_eq!(owner("other-4242-shm"), None);
    }

    #[test]
    fn liveness() {
        assert!(is_alive(std::process::id()));
        assert!(is_alive(1));
        // Above /proc/sys/kernel/pid_max (at most 2^22), so no process has it.
        assert!(!is_alive(4_194_305));
        // A process that has ended but is not yet collected by its parent (us) is a zombie.
        let mut ended = std::process::Command::new("true").spawn().unwrap();
        let pid = ended.id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while is_alive(pid) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!is_alive(pid), "a zombie counts as dead");
        ended.wait().unwrap();
    }

    #[test]
    fn leftovers_of_a_dead_server_are_removed() {
        // A server pid no process can have: its objects look like those of a crashed server.
        let dead = 4_194_306;
        let shm_name = shm_name(dead);
        let memory = shm::SharedMemory::create(&shm_name).unwrap();
        memory.board().register(77, 1).unwrap();
        let queue = queue_name(dead, 77);
        drop(chat::Queue::create(&queue).unwrap()); // closed, but the name remains

        assert!(remove_stale(std::process::id()) >= 2);
        assert_eq!(
            chat::Queue::open_for_sending(&queue).err(),
            Some(Errno::ENOENT)
        );
        assert!(!std::path::Path::new(&format!("/dev/shm{shm_name}")).exists());
    }
}
