//! The parent's side of a fork server: reaping children, counting them, stopping them.
//!
//! A server that `fork()`s a child per client (lab02, lab05) must `waitpid()` for every child
//! that ends. Until it does, the dead child stays in the process table as a *zombie*
//! (`<defunct>` in `ps`): its exit status is kept for the parent to collect. A server that
//! forgets to reap fills the process table with zombies, one per client it ever served.
//!
//! # The race, and how this module avoids it
//!
//! The kernel tells the parent that a child ended with the signal SIGCHLD. The obvious design -
//! the handler sets a flag, the main loop sees the flag and calls `waitpid` - has a hole: the
//! main loop spends its life blocked in `accept()`. If SIGCHLD arrives just *before* the parent
//! enters `accept()` (after it looked at the flag), nothing wakes it: the zombie stays until the
//! next client happens to connect, which may be never.
//!
//! So here **the SIGCHLD handler reaps**. `waitpid()` is async-signal-safe (POSIX lists it), so
//! a handler may call it. The handler calls `waitpid(-1, WNOHANG)` in a loop until no ended child
//! is left (one SIGCHLD can stand for several children: signals are not queued), and writes each
//! `(pid, status)` into a small fixed array (no allocation, no lock: a handler must not take
//! either). Zombies therefore never outlive the handler, wherever the parent is blocked.
//!
//! The main loop does the part a handler must not do (allocating, printing): [`Children::reap`]
//! takes the records out of the array, updates the table of live children and narrates
//! `reaped child 4242 (exit 0): client 7`. The handler is installed without `SA_RESTART`, so a
//! SIGCHLD that arrives while the parent is blocked in `accept()` makes it return `EINTR`: the
//! parent loops, calls [`Children::reap`] and the narration appears at once. (If it arrives
//! elsewhere, the child is reaped all the same; only the narration waits for the next wake-up.)
//!
//! While [`Children::reap`] reads the array it *blocks* SIGCHLD (`sigprocmask`), so the handler
//! never runs in the middle of it; a SIGCHLD that comes meanwhile is held and delivered when
//! the block is lifted. Waiting for "a child ended or a stop signal came" without a race is the
//! classic `sigsuspend` pattern, in [`Children::wait_until_fewer_than`].
//!
//! # Single-threaded on purpose
//!
//! All of this assumes the server process has one thread. After `fork()` in a multi-threaded
//! process, the child gets only the thread that called `fork()`; a lock another thread held (the
//! allocator's, stderr's) stays locked forever in the child, so the child may then call only
//! async-signal-safe functions - no `String`, no `println!`. With one thread the child is a plain
//! copy and may run ordinary Rust code. Hence `sigaction` and flags here, never a crate that
//! starts a signal-handling thread.
//!
//! # How a fork server uses this module
//!
//! ```no_run
//! use std::time::Duration;
//! use common::fork::{self, Children};
//! use nix::unistd::{fork, ForkResult};
//!
//! common::signals::install().unwrap();       // SIGINT/SIGTERM: stop
//! fork::install_reaper().unwrap();           // SIGCHLD: reap (before the first fork)
//! let mut children: Children<String> = Children::new();
//! let max = 256;
//! while !common::signals::requested() {
//!     children.reap();                       // narrate whoever ended since we last looked
//!     children.wait_until_fewer_than(max);   // at the cap: wait for a child to end (or a stop)
//!     # let client_id = 1;
//!     // ... fork::accept() a client (EINTR: a child ended, loop) ...
//!     // SAFETY: (say why) this process is single-threaded.
//!     match unsafe { fork() } {
//!         Ok(ForkResult::Parent { child }) => children.add(child, format!("client {client_id}")),
//!         Ok(ForkResult::Child) => {
//!             fork::in_child();              // first thing in the child
//!             common::signals::forget_watched();
//!             // ... close the listener copy, serve, then std::process::exit(0): never return
//!             std::process::exit(0);
//!         }
//!         Err(e) => common::narrate!("fork() failed: {e}"),
//!     }
//! }
//! children.stop_all(Duration::from_secs(3)); // SIGTERM, reap, SIGKILL stragglers, reap
//! ```
//!
//! Rules: one [`Children`] table per process (the array is global); call [`install_reaper`] once,
//! in the parent, before the first `fork()`; call [`in_child`] first thing in every child; and do
//! not also wait for children some other way (`std::process::Child::wait`): the handler reaps
//! *every* child of the process, whoever started it.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::libc;
use nix::sys::signal::{
    kill, sigaction, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal,
};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

use crate::{narrate, signals};

/// How many reaped children the handler can record before the main loop collects them. If it
/// is ever full, the handler leaves further zombies for [`Children::reap`] to collect itself.
const RECORDS: usize = 1024;

/// `(pid << 32) | raw wait status` of each child the handler reaped, in a ring: the handler
/// writes at `HEAD`, the main loop reads from `TAIL`. Only the handler moves `HEAD`, only the
/// main loop moves `TAIL`, so neither needs a lock.
static REAPED: [AtomicU64; RECORDS] = [const { AtomicU64::new(0) }; RECORDS];
static HEAD: AtomicUsize = AtomicUsize::new(0);
static TAIL: AtomicUsize = AtomicUsize::new(0);

/// False until [`install_reaper`] (and again in a child, or with lab02's `--no-reap`): then
/// nothing calls `waitpid` before [`Children::stop_all`].
static REAPING: AtomicBool = AtomicBool::new(false);

/// Calls `waitpid(-1, WNOHANG)` until no ended child is left, recording each one. Runs in the
/// SIGCHLD handler, or in the main loop with SIGCHLD blocked - never both at once.
fn reap_into_records() {
    loop {
        let head = HEAD.load(Ordering::SeqCst);
        if head - TAIL.load(Ordering::SeqCst) >= RECORDS {
            return; // full: the rest stay zombies until the main loop makes room
        }
        let mut status: libc::c_int = 0;
        // SAFETY: waitpid(2) is async-signal-safe, and `status` is a valid place to write.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return; // 0: children are running but none has ended; -1 (ECHILD): no children
        }
        let record = (u64::from(pid as u32) << 32) | u64::from(status as u32);
        REAPED[head % RECORDS].store(record, Ordering::SeqCst);
        HEAD.store(head + 1, Ordering::SeqCst);
    }
}

extern "C" fn on_sigchld(_signal: libc::c_int) {
    // The handler interrupts the main code anywhere, maybe right after a failed system call and
    // before it read `errno`; waitpid() sets errno (ECHILD at the end). Put it back as it was.
    let saved_errno = Errno::last_raw();
    reap_into_records();
    Errno::set_raw(saved_errno);
}

/// Installs the SIGCHLD handler that reaps ended children (see the module docs). Call it once,
/// in the parent, before the first `fork()`.
///
/// `SA_NOCLDSTOP`: no SIGCHLD when a child is merely stopped (Ctrl-Z, `kill -STOP`).
/// No `SA_RESTART`: a blocked `accept()` returns `EINTR` when a child ends, so the parent can
/// narrate the reaping at once. Use [`accept`] (std's retries `EINTR` silently) and treat
/// `EINTR` as "loop and call [`Children::reap`]".
pub fn install_reaper() -> io::Result<()> {
    REAPING.store(true, Ordering::SeqCst);
    let action = SigAction::new(
        SigHandler::Handler(on_sigchld),
        SaFlags::SA_NOCLDSTOP,
        SigSet::empty(),
    );
    // SAFETY: the handler only calls waitpid(2) and touches atomics: async-signal-safe.
    unsafe { sigaction(Signal::SIGCHLD, &action) }.map_err(io::Error::from)?;
    Ok(())
}

/// `accept()` on `listener`, except that a signal interrupting it is returned as an error of
/// kind [`io::ErrorKind::Interrupted`] (`EINTR`) instead of being retried. Use it in the loops
/// of a fork server, and treat `Interrupted` as "loop, and look at what the signal changed".
///
/// std's `TcpListener::accept` retries by itself after `EINTR`. A parent blocked in it would
/// sleep through SIGCHLD (the handler still reaps the child, but the narration would wait for
/// the next client), and a pre-forked worker would sleep through its own SIGTERM. socket2's
/// `accept` makes the one system call, `accept4(..., SOCK_CLOEXEC)`, and returns what it says.
pub fn accept(listener: &TcpListener) -> io::Result<(TcpStream, SocketAddr)> {
    let (socket, addr) = socket2::SockRef::from(listener).accept()?;
    let peer = addr
        .as_socket()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "the peer has no IP address"))?;
    Ok((socket.into(), peer))
}

/// Call first thing in a freshly forked child. `fork()` copied the parent's signal handlers
/// and its table of reaped children; the child has no children of its own, so it puts SIGCHLD
/// back to its default and forgets the copied records.
///
/// The SIGINT/SIGTERM handler of [`signals`] is kept on purpose: when the parent stops, it sends
/// SIGTERM to each child, whose handler then makes the session say `BYE` and end. Call
/// [`signals::forget_watched`] too, since the watched sockets are the parent's.
pub fn in_child() {
    REAPING.store(false, Ordering::SeqCst);
    // SAFETY: SIG_DFL installs no code of ours; nothing can be unsound about it.
    let _ = unsafe { nix::sys::signal::signal(Signal::SIGCHLD, SigHandler::SigDfl) };
    HEAD.store(0, Ordering::SeqCst);
    TAIL.store(0, Ordering::SeqCst);
}

/// Blocks `signals` (adds them to the process's signal mask) until dropped, then restores the
/// mask as it was. A blocked signal is not lost: it stays pending and is delivered on unblock.
struct Blocked {
    previous: SigSet,
}

impl Blocked {
    fn new(signals: &[Signal]) -> Blocked {
        let mut set = SigSet::empty();
        for &signal in signals {
            set.add(signal);
        }
        // The process has one thread, so the thread's mask is the process's mask. This call
        // cannot fail with valid arguments; if it did, the mask would simply stay unchanged.
        let previous = set
            .thread_swap_mask(SigmaskHow::SIG_BLOCK)
            .unwrap_or_else(|_| SigSet::empty());
        Blocked { previous }
    }
}

impl Drop for Blocked {
    fn drop(&mut self) {
        let _ = self.previous.thread_set_mask();
    }
}

/// Takes every record out of the array; reaps leftovers itself if the array had been full.
fn take_records() -> Vec<(Pid, i32)> {
    let _blocked = Blocked::new(&[Signal::SIGCHLD]); // the handler cannot run in here
    let mut taken = Vec::new();
    loop {
        if REAPING.load(Ordering::SeqCst) {
            reap_into_records();
        }
        let head = HEAD.load(Ordering::SeqCst);
        let mut tail = TAIL.load(Ordering::SeqCst);
        if tail == head {
            return taken;
        }
        while tail != head {
            let record = REAPED[tail % RECORDS].load(Ordering::SeqCst);
            taken.push((Pid::from_raw((record >> 32) as i32), record as u32 as i32));
            tail += 1;
        }
        TAIL.store(tail, Ordering::SeqCst);
    }
}

/// A child that ended and was reaped.
#[derive(Debug)]
pub struct Ended<T> {
    /// Its process id (free for the kernel to reuse from now on).
    pub pid: Pid,
    /// How it ended: `Exited(pid, code)` or `Signaled(pid, signal, core_dumped)`.
    pub status: WaitStatus,
    /// What [`Children::add`] was told about it; `None` for a child that was not in the table.
    pub info: Option<T>,
}

/// `exit 0`, `exit 101`, `killed by SIGSEGV`, `killed by SIGKILL, core dumped`.
pub fn describe(status: &WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, code) => format!("exit {code}"),
        WaitStatus::Signaled(_, signal, false) => format!("killed by {}", signal.as_str()),
        WaitStatus::Signaled(_, signal, true) => {
            format!("killed by {}, core dumped", signal.as_str())
        }
        other => format!("{other:?}"),
    }
}

/// The parent's table of its live children, each with what it does (`T`, shown in the
/// narration: a client number, a pool slot...). One per process.
///
/// A child stays in the table from [`add`](Self::add) until [`reap`](Self::reap) (or a method
/// that calls it) collects its exit status, so [`len`](Self::len) counts children that are
/// running or ended but not yet collected: exactly the ones that still take a process slot.
#[derive(Debug)]
pub struct Children<T> {
    live: BTreeMap<Pid, T>,
}

impl<T: fmt::Display> Default for Children<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: fmt::Display> Children<T> {
    /// An empty table.
    pub fn new() -> Self {
        Children {
            live: BTreeMap::new(),
        }
    }

    /// Records a child the parent just forked (`ForkResult::Parent { child }`).
    pub fn add(&mut self, pid: Pid, info: T) {
        self.live.insert(pid, info);
    }

    /// How many children are live (or ended but not yet collected by [`reap`](Self::reap)).
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// True if there are none.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// The live children's pids and infos, in pid order.
    pub fn iter(&self) -> impl Iterator<Item = (Pid, &T)> {
        self.live.iter().map(|(&pid, info)| (pid, info))
    }

    /// Collects the children that ended since the last call (the SIGCHLD handler already
    /// reaped them), removes them from the table, narrates each one
    /// (`reaped child 4242 (exit 0): client 7`) and returns them. Never blocks.
    ///
    /// Without [`install_reaper`] (lab02's `--no-reap`) it finds nothing: the ended children stay
    /// zombies and keep counting in [`len`](Self::len).
    pub fn reap(&mut self) -> Vec<Ended<T>> {
        let mut ended = Vec::new();
        for (pid, raw) in take_records() {
            let status = WaitStatus::from_raw(pid, raw).unwrap_or(WaitStatus::StillAlive);
            let info = self.live.remove(&pid);
            match &info {
                Some(info) => narrate!(
                    "reaped child {pid} ({}): {info}; {} children live",
                    describe(&status),
                    self.live.len()
                ),
                None => narrate!("reaped child {pid} ({})", describe(&status)),
            }
            ended.push(Ended { pid, status, info });
        }
        ended
    }

    /// Blocks until fewer than `limit` children are live, or a stop signal arrived
    /// ([`signals::requested`]); returns the children reaped meanwhile (already narrated).
    /// Returns at once if that already holds. Use it for a `--max-children` cap (the parent
    /// stops calling `accept()`, so new clients wait in the accept queue) and in a pre-forked
    /// pool (wait for a worker to end, then fork its replacement).
    ///
    /// Race-free: SIGCHLD, SIGINT and SIGTERM are blocked while we look at the count, and
    /// `sigsuspend()` unblocks them and sleeps in one atomic step, so a signal that comes just
    /// after we looked is delivered inside `sigsuspend()` and wakes it. (Checking, then calling
    /// `pause()`, would sleep through it.) Call it with those signals unblocked, as they
    /// normally are.
    pub fn wait_until_fewer_than(&mut self, limit: usize) -> Vec<Ended<T>> {
        let mut ended = self.reap();
        if self.live.len() < limit || signals::requested() {
            return ended;
        }
        let blocked = Blocked::new(&[Signal::SIGCHLD, Signal::SIGINT, Signal::SIGTERM]);
        loop {
            ended.extend(self.reap());
            if self.live.len() < limit || signals::requested() {
                break;
            }
            // Sleep with the mask we had before (signals unblocked) until a handler has run.
            if let Err(e) = blocked.previous.suspend() {
                narrate!("sigsuspend() failed: {e}");
                break;
            }
        }
        drop(blocked);
        ended
    }

    /// Sends `signal` to every live child; returns how many were sent it.
    ///
    /// SIGCHLD is blocked while we do it, after collecting the ended children: a pid in the
    /// table then belongs to a child that is running or a zombie - still ours either way. (If
    /// the handler could reap a child between our look and our `kill()`, the kernel could hand
    /// its pid to an unrelated process, which we would then signal.)
    pub fn signal_all(&mut self, signal: Signal) -> usize {
        let _blocked = Blocked::new(&[Signal::SIGCHLD]);
        self.reap();
        for &pid in self.live.keys() {
            if let Err(e) = kill(pid, signal) {
                narrate!("kill({pid}, {signal}) failed: {e}");
            }
        }
        self.live.len()
    }

    /// Shutdown: sends SIGTERM to every child (each then says `BYE` to its client and exits),
    /// reaps them as they end, waits at most `grace`, then sends SIGKILL to any child still
    /// there and reaps it too. Every step is narrated. On return no child of ours is left, not
    /// even a zombie (unless the kernel took more than 5 s to kill a process after SIGKILL).
    ///
    /// It reaps even if [`install_reaper`] was never called (`--no-reap`): a server leaves
    /// nothing behind.
    pub fn stop_all(&mut self, grace: Duration) {
        REAPING.store(true, Ordering::SeqCst);
        self.reap();
        if self.live.is_empty() {
            narrate!("no children left to stop");
            return;
        }
        let sent = self.signal_all(Signal::SIGTERM);
        narrate!("sent SIGTERM to {sent} children; waiting up to {grace:?} for them to end");
        if self.wait_until_empty(grace) {
            narrate!("all children ended and were reaped");
            return;
        }
        let sent = self.signal_all(Signal::SIGKILL);
        narrate!("{sent} children still running after {grace:?}: sent SIGKILL");
        if !self.wait_until_empty(Duration::from_secs(5)) {
            narrate!("{} children could not be reaped", self.live.len());
        }
    }

    /// Reaps until the table is empty or `timeout` passes; true if empty. It checks every 10 ms:
    /// a simple bounded wait, used only at shutdown.
    fn wait_until_empty(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            self.reap();
            if self.live.is_empty() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_how_a_child_ended() {
        let pid = Pid::from_raw(4242);
        assert_eq!(describe(&WaitStatus::Exited(pid, 0)), "exit 0");
        assert_eq!(
            describe(&WaitStatus::Signaled(pid, Signal::SIGSEGV, false)),
            "killed by SIGSEGV"
        );
        assert_eq!(
            describe(&WaitStatus::Signaled(pid, Signal::SIGABRT, true)),
            "killed by SIGABRT, core dumped"
        );
        // The raw statuses waitpid() writes: exit code in the second byte, signal in the first.
        assert_eq!(
            WaitStatus::from_raw(pid, 101 << 8),
            Ok(WaitStatus::Exited(pid, 101))
        );
        assert_eq!(
            WaitStatus::from_raw(pid, libc::SIGKILL),
            Ok(WaitStatus::Signaled(pid, Signal::SIGKILL, false))
        );
    }
}
