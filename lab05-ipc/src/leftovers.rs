//! Cleaning up after a server killed with SIGKILL, which cannot be caught: its IPC objects stay,
//! and count against the user's limits. A starting server removes those whose server pid is dead.
//! POSIX shared memory is listed in `/dev/shm`; queues are listed only where the `mqueue` file
//! system is mounted (not by default), so the dead server's board names its children's queues.
//! System V objects are listed in `/proc/sysvipc`, and their keys hold the server's pid.

use std::fs;

use common::narrate;
use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;

use crate::ipc::report_removal;
use crate::posix::{self, SharedMemory};
use crate::sysv::{self, Object};

/// Whether process `pid` is running: `kill(pid, 0)` sends nothing, it only checks (ESRCH: no
/// such process). A zombie passes that check, so its state in `/proc/<pid>/stat` is read too.
/// (A pid reused by another process leaves a dead server's objects for a later start.)
fn is_alive(pid: u32) -> bool {
    if let Err(Errno::ESRCH) = kill(Pid::from_raw(pid as i32), None) {
        return false;
    }
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // "4242 (ipc-server) Z ...": the state follows the last ')'.
    let after_name = stat.rsplit(')').next().unwrap_or_default();
    after_name.split_whitespace().next() != Some("Z")
}

/// The server pid in a POSIX object's file name (`netlabs-ipc-<pid>-...`), if it is one of ours.
fn owner(file_name: &str) -> Option<u32> {
    let (pid, _) = file_name.strip_prefix(posix::PREFIX)?.split_once('-')?;
    pid.parse().ok().filter(|&pid| pid > 0)
}

/// Whether an object of server `server_pid` is a leftover: its server is gone, or has our own pid
/// (an earlier server's, since we have not made ours yet).
fn is_stale(server_pid: u32, me: u32) -> bool {
    server_pid == me || !is_alive(server_pid)
}

/// Removes the POSIX objects of dead servers.
pub fn remove_stale_posix(me: u32) {
    let entries = match fs::read_dir("/dev/shm") {
        Ok(entries) => entries,
        Err(e) => {
            narrate!("cannot list /dev/shm to look for leftovers of killed servers: {e}");
            return;
        }
    };
    for file in entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
    {
        let Some(server_pid) = owner(&file).filter(|&server_pid| is_stale(server_pid, me)) else {
            continue;
        };
        let name = format!("/{file}");
        if name == posix::shm_name(server_pid) {
            if let Ok(memory) = SharedMemory::open_existing(&name) {
                for child in memory.board().members(0) {
                    remove_stale_queue(&posix::queue_name(server_pid, child.pid), server_pid);
                }
            }
        }
        let what = format!("stale shared memory {name} (its server, pid {server_pid}, is gone)");
        report_removal(&what, posix::remove_memory(&name));
    }
}

fn remove_stale_queue(name: &str, server_pid: u32) {
    match posix::remove_queue(name) {
        Err(Errno::ENOENT) => {} // that child had removed it, or never made it
        result => {
            let what =
                format!("stale message queue {name} (its server, pid {server_pid}, is gone)");
            report_removal(&what, result);
        }
    }
}

/// Removes the System V objects of dead servers (our keys, our user's).
pub fn remove_stale_sysv(me: u32) {
    // SAFETY: getuid cannot fail and touches no memory of ours.
    let uid = unsafe { libc::getuid() };
    for (table, kind) in [("shm", Object::Memory), ("msg", Object::Queue)] {
        let text = fs::read_to_string(format!("/proc/sysvipc/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            // key id perms ...; the owner's uid is the 8th column in both tables.
            let fields: Vec<&str> = line.split_whitespace().collect();
            let field = |i: usize| fields.get(i).and_then(|f| f.parse::<i64>().ok());
            let (Some(key), Some(id), Some(owner_uid)) = (field(0), field(1), field(7)) else {
                continue;
            };
            let Some((found, server_pid)) = sysv::owner(key as i32) else {
                continue;
            };
            if found != kind || owner_uid != i64::from(uid) || !is_stale(server_pid, me) {
                continue;
            }
            let (what, result) = match kind {
                Object::Memory => ("segment", sysv::remove_segment(id as i32)),
                Object::Queue => ("message queue", sysv::remove_queue(id as i32)),
            };
            let what = format!(
                "stale System V {what} key {key:#010x} id {id} (its server, pid {server_pid}, is gone)"
            );
            report_removal(&what, result);
        }
    }
}
