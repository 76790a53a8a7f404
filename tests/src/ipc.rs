//! lab05's IPC objects as the system shows them, and the locks that let every test that starts
//! `ipc-server` (lab05's own and the hardening matrix's lab05 rows) share one user's IPC limits.
//!
//! What the tests rely on is what the contract documents (docs/protocol.md, "lab05: IPC object
//! names"): every POSIX object of server `<pid>` is named `/netlabs-ipc-<pid>-...`; with
//! `--ipc sysv`, its segment has key `0x1<pid>` and its queue key `0x2<pid>` (the pid's decimal
//! digits, 7 of them, read as hex). The rest is found where the system shows it:
//!
//! - shared-memory objects are files in `/dev/shm`;
//! - message queues are listed in `/dev/mqueue` only where that file system is mounted (not by
//!   default, and mounting it needs root), so we find them where every process shows the queues
//!   it holds open: its descriptors, `/proc/<pid>/fd/N -> /netlabs-ipc-...`. [`queue_exists`]
//!   then asks the kernel (`mq_open` without `O_CREAT`) whether a name still exists;
//! - System V objects are rows of `/proc/sysvipc/shm` and `/proc/sysvipc/msg`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, DirBuilder, File};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::mqueue::{mq_close, mq_open, mq_unlink, MQ_OFlag, MqAttr};
use nix::sys::stat::Mode;

use crate::procfs;

/// The documented start of every POSIX IPC object name of server `pid` (without the `/`).
pub fn name_prefix(server_pid: i32) -> String {
    format!("netlabs-ipc-{server_pid}-")
}

/// Files in `/dev/shm` that belong to server `pid` (`netlabs-ipc-<pid>-...`), sorted.
pub fn shm_objects_of(server_pid: i32) -> Vec<String> {
    let prefix = name_prefix(server_pid);
    let mut found: Vec<String> = fs::read_dir("/dev/shm")
        .expect("list /dev/shm")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with(&prefix))
        .collect();
    found.sort();
    found
}

/// The POSIX message queues of server `server_pid` that process `pid` holds open, by name
/// (`/netlabs-ipc-<server>-...`), read from its descriptors in `/proc/<pid>/fd`.
pub fn queues_held_by(pid: i32, server_pid: i32) -> BTreeSet<String> {
    let prefix = format!("/{}", name_prefix(server_pid));
    procfs::fd_links(pid)
        .into_iter()
        .filter(|target| target.starts_with(&prefix))
        .collect()
}

/// The permission bits (`mode & 0o777`) of each POSIX message queue of server `server_pid` that
/// process `pid` holds open: `stat` through `/proc/<pid>/fd/<n>` reaches the queue itself, mounted
/// or not.
pub fn queue_modes_held_by(pid: i32, server_pid: i32) -> BTreeMap<String, u32> {
    let prefix = format!("/{}", name_prefix(server_pid));
    let Ok(entries) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return BTreeMap::new();
    };
    entries
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let target = fs::read_link(&path).ok()?.to_string_lossy().into_owned();
            let mode = fs::metadata(&path).ok()?.permissions().mode() & 0o777;
            target.starts_with(&prefix).then_some((target, mode))
        })
        .collect()
}

/// The POSIX message queues of server `server_pid` held open by it or any of its children.
pub fn queues_of(server_pid: i32) -> BTreeSet<String> {
    std::iter::once(server_pid)
        .chain(procfs::children_of(server_pid))
        .flat_map(|pid| queues_held_by(pid, server_pid))
        .collect()
}

/// Whether a message queue of that name exists: `mq_open` without `O_CREAT` fails with ENOENT
/// if not. (This works whether or not /dev/mqueue is mounted.)
pub fn queue_exists(name: &str) -> bool {
    match mq_open(
        name,
        MQ_OFlag::O_RDONLY | MQ_OFlag::O_NONBLOCK,
        Mode::empty(),
        None,
    ) {
        Ok(mqd) => {
            mq_close(mqd).expect("mq_close");
            true
        }
        Err(Errno::ENOENT) => false,
        Err(e) => panic!("mq_open({name}) failed with {e}, neither opened nor ENOENT"),
    }
}

/// Queues of server `pid` listed in /dev/mqueue, if the mqueue file system is mounted there.
pub fn mounted_queues_of(server_pid: i32) -> Vec<String> {
    let prefix = name_prefix(server_pid);
    fs::read_dir("/dev/mqueue")
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|name| name.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// The documented key of server `pid`'s System V object: `kind` 1 = segment, 2 = queue.
pub fn sysv_key(kind: u32, pid: i32) -> i64 {
    i64::from_str_radix(&format!("{kind}{pid:07}"), 16).expect("a key")
}

/// The rows (split in columns) of `/proc/sysvipc/<table>` whose key is `key`. Column 1 is the id;
/// in `shm`, column 4 is the creator's pid (cpid) and column 6 the number of attached processes
/// (nattch); in `msg`, column 4 is the number of messages in the queue.
pub fn sysv_rows(table: &str, key: i64) -> Vec<Vec<String>> {
    fs::read_to_string(format!("/proc/sysvipc/{table}"))
        .expect("read /proc/sysvipc")
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().map(str::to_string).collect())
        .filter(|fields: &Vec<String>| fields.first().and_then(|k| k.parse().ok()) == Some(key))
        .collect()
}

/// Server `pid`'s System V segment and queue rows.
pub fn sysv_objects_of(server_pid: i32) -> (Vec<Vec<String>>, Vec<Vec<String>>) {
    (
        sysv_rows("shm", sysv_key(1, server_pid)),
        sysv_rows("msg", sysv_key(2, server_pid)),
    )
}

/// A folder for the lock files below, private to this user and shared by all their checkouts:
/// `<temp dir>/netlabs-<uid>` (mode 0700). The IPC limits and the stale objects these locks guard
/// are per user, not per checkout, so two checkouts of the same user must see the same locks,
/// and another user's files must never be in the way (nobody else can write in a 0700 folder).
/// If that folder is not ours (someone made it first), the locks go to this checkout's
/// [`scratch_dir`](crate::scratch_dir) instead, which still serializes the tests of this checkout.
pub fn lock_dir() -> PathBuf {
    // The owner of /proc/self is the user this process runs as.
    let uid = fs::metadata("/proc/self").expect("/proc/self exists").uid();
    let dir = std::env::temp_dir().join(format!("netlabs-{uid}"));
    let _ = DirBuilder::new().mode(0o700).create(&dir);
    let ours = fs::symlink_metadata(&dir)
        .is_ok_and(|m| m.is_dir() && m.uid() == uid && m.permissions().mode() & 0o022 == 0);
    if ours {
        return dir;
    }
    crate::scratch_dir()
}

fn open_lock_file(name: &str) -> File {
    let path = lock_dir().join(name);
    File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("open the lock file {path:?}: {e}"))
}

/// A starting `ipc-server` removes the leftovers of dead servers. The tests of that must be the
/// only ones to start a server while they watch, so every start takes this lock shared (for the
/// start only) and those tests take it exclusive (from the SIGKILL to the next start). A file
/// lock, so that it holds across test processes (lab05 and hardening, cargo test and nextest).
pub fn startup_lock(exclusive: bool) -> Flock<File> {
    let how = if exclusive {
        FlockArg::LockExclusive
    } else {
        FlockArg::LockShared
    };
    Flock::lock(open_lock_file("lab05-startup.lock"), how)
        .unwrap_or_else(|(_, e)| panic!("flock the lab05 startup lock: {e}"))
}

/// How many message queues one [`QueueBudget`] slot stands for.
pub const QUEUES_PER_SLOT: usize = 16;
/// How many slots there are: a user's POSIX message queues may hold 819,200 bytes in all
/// (RLIMIT_MSGQUEUE, which an unprivileged user cannot raise); an `ipc-server` child's queue
/// costs 8,512 bytes of it (2 slots of 4,160 bytes plus the kernel's bookkeeping), so 96 fit.
/// Six slots of 16 queues are 96 queues.
pub const SLOTS: usize = 6;

/// A share of this user's POSIX message-queue budget, held for a whole test.
///
/// Every child of a POSIX `ipc-server` creates a queue, and the user's budget (96 of them, see
/// [`SLOTS`]) is shared by every test that runs at once, in every test process of this user
/// (cargo test runs tests in threads, nextest in processes, and two checkouts may run at once).
/// Without this, enough lab05 tests running together (the one with 50 clients and a few others)
/// make `mq_open` fail with EMFILE and the tests fail for a reason that is not the server's.
/// So a test that creates queues first takes as many slots as it needs (16 queues each): the
/// tests run side by side while their queues fit, and wait for each other when they would not.
/// Slots are lock files; a test that needs several takes them in order, so two such tests never
/// wait for each other in a cycle.
pub struct QueueBudget {
    _slots: Vec<Flock<File>>,
}

impl QueueBudget {
    /// Takes enough slots for `queues` queues (waiting, bounded by the tests' own timeouts, for
    /// other tests to give theirs back).
    pub fn take(queues: usize) -> QueueBudget {
        let needed = queues.div_ceil(QUEUES_PER_SLOT).clamp(1, SLOTS);
        let slot = |i: usize| open_lock_file(&format!("lab05-queues-{i}.lock"));
        if needed > 1 {
            // In order, waiting for each.
            let slots = (0..needed)
                .map(|i| {
                    Flock::lock(slot(i), FlockArg::LockExclusive)
                        .unwrap_or_else(|(_, e)| panic!("flock queue slot {i}: {e}"))
                })
                .collect();
            check_room(needed * QUEUES_PER_SLOT);
            return QueueBudget { _slots: slots };
        }
        // One slot: any free one, starting from the last (the first ones are where tests that
        // need several wait).
        loop {
            for i in (0..SLOTS).rev() {
                match Flock::lock(slot(i), FlockArg::LockExclusiveNonblock) {
                    Ok(lock) => {
                        check_room(QUEUES_PER_SLOT);
                        return QueueBudget { _slots: vec![lock] };
                    }
                    Err((_, Errno::EWOULDBLOCK)) => continue,
                    Err((_, e)) => panic!("flock queue slot {i}: {e}"),
                }
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// With our slots held, `count` queues the size of an `ipc-server` child's (2 messages of 4,160
/// bytes) must fit in this user's budget, since every other test holds queues only within its own
/// slots. If they do not, queues outside the tests hold it: most likely ones that a killed or
/// broken `ipc-server` left behind (a queue stays until someone removes its name, or the machine
/// restarts). Say so, and how to remove them, rather than let a server's `mq_open` fail with
/// EMFILE and a test fail for a reason that is not the server's.
fn check_room(count: usize) {
    static PROBES: AtomicUsize = AtomicUsize::new(0);
    let attr = MqAttr::new(0, 2, 4160, 0);
    let flags = MQ_OFlag::O_CREAT | MQ_OFlag::O_EXCL | MQ_OFlag::O_RDONLY;
    let mut made = Vec::new();
    let mut failure = None;
    for _ in 0..count {
        let n = PROBES.fetch_add(1, Ordering::Relaxed);
        let name = format!("/netlabs-tests-probe-{}-{n}", std::process::id());
        match mq_open(
            name.as_str(),
            flags,
            Mode::S_IRUSR | Mode::S_IWUSR,
            Some(&attr),
        ) {
            Ok(queue) => made.push((name, queue)),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let fitted = made.len();
    for (name, queue) in made {
        let _ = mq_close(queue);
        let _ = mq_unlink(name.as_str());
    }
    if failure == Some(Errno::EMFILE) {
        panic!(
            "only {fitted} of the {count} message queues this test needs fit in your POSIX \
             message-queue budget (RLIMIT_MSGQUEUE, `grep msgqueue /proc/self/limits`), and no \
             other test holds them: queues left behind by an ipc-server that was killed or \
             broken before it removed them take the rest. They stay until removed or until the \
             machine restarts. To list and remove them (as root, or with sudo): \
             mkdir -p /dev/mqueue; mount -t mqueue none /dev/mqueue; ls /dev/mqueue; \
             rm /dev/mqueue/netlabs-ipc-*"
        );
    }
}
