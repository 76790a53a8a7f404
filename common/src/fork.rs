//! The plumbing of a fork server (lab02, lab05): how its parent waits without missing a signal,
//! the table of its children and how it stops them, and a child's first and last steps.
//!
//! The model itself - `fork()`, the two `close()`s, the `waitpid()` loop that reaps - is in
//! lab02's `src/main.rs`, which is also where the choices below are explained.
//!
//! # Why the parent keeps its signals blocked
//!
//! The parent reaps in its own loop, where it may print and update its table (a signal handler
//! may do neither). SIGCHLD only has to wake it. But a loop that checks "did a child end?" and
//! then blocks in a system call has a hole: a signal that arrives between the check and the call
//! wakes nothing, and the zombie waits for the next client. So [`ParentSignals`] keeps SIGCHLD,
//! SIGINT and SIGTERM *blocked* (held pending) while the parent works, and unblocks them only
//! inside the calls that wait, `ppoll()` and `sigsuspend()`, which unblock and sleep in one atomic
//! step: a signal that came meanwhile wakes them at once.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::panic::{self, AssertUnwindSafe};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::libc;
use nix::poll::{ppoll, PollFd, PollFlags};
use nix::sys::signal::{
    kill, sigaction, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal,
};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::session::Ending;
use crate::{narrate, signals};

/// How long the children get to say `BYE` and exit after SIGTERM, before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(3);

/// The exit status of a child whose session panicked (Rust's own status for a panic in main).
pub const PANIC_EXIT_STATUS: i32 = 101;

extern "C" fn on_sigchld(_signal: libc::c_int) {
    // Nothing to do: being delivered is the point. It makes ppoll() or sigsuspend() return.
}

/// The parent's signal setup: SIGINT/SIGTERM stop it ([`signals`]), SIGCHLD wakes it, and all
/// three stay blocked except while it waits (see the module docs).
pub struct ParentSignals {
    /// The signal mask from before we blocked them: the one to wait with.
    waiting: SigSet,
}

impl ParentSignals {
    /// Installs the handlers and blocks the three signals. Call it once, before the first fork.
    pub fn install() -> std::io::Result<ParentSignals> {
        signals::install()?;
        // SA_NOCLDSTOP: no SIGCHLD when a child is merely stopped (Ctrl-Z, `kill -STOP`).
        let action = SigAction::new(
            SigHandler::Handler(on_sigchld),
            SaFlags::SA_NOCLDSTOP,
            SigSet::empty(),
        );
        // SAFETY: the handler does nothing at all, which is async-signal-safe.
        unsafe { sigaction(Signal::SIGCHLD, &action) }?;
        let mut blocked = SigSet::empty();
        for signal in [Signal::SIGCHLD, Signal::SIGINT, Signal::SIGTERM] {
            blocked.add(signal);
        }
        // One thread, so the thread's mask is the process's.
        let waiting = blocked.thread_swap_mask(SigmaskHow::SIG_BLOCK)?;
        Ok(ParentSignals { waiting })
    }

    /// Sleeps until a client is in `listener`'s accept queue, with the signals unblocked, and
    /// accepts it. `None` if a signal came first (a child ended, or a stop: loop, and look at
    /// what it changed) or if `accept()` failed (narrated).
    ///
    /// `ppoll()` waits: it unblocks the signals and sleeps in one step, which `accept()` cannot.
    /// Once it says the listening socket is readable, `accept()` returns at once.
    pub fn accept(&self, listener: &TcpListener) -> Option<(TcpStream, SocketAddr)> {
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        match ppoll(&mut fds, None, Some(self.waiting)) {
            Ok(_) => {}
            Err(Errno::EINTR) => return None,
            Err(e) => {
                narrate!("ppoll() failed: {e}");
                return None;
            }
        }
        if signals::requested() {
            return None; // the stop handler shut the listener down: that is what woke us
        }
        match listener.accept() {
            Ok(accepted) => Some(accepted),
            Err(e) => {
                narrate!("accept() failed: {e}");
                None
            }
        }
    }

    /// Sleeps, with the signals unblocked, until one of them has been handled.
    pub fn wait_for_signal(&self) {
        // sigsuspend() always "fails" with EINTR: returning means a handler ran.
        let _ = self.waiting.suspend();
    }

    /// Call first thing in a freshly forked child: it has no children of its own, it must be
    /// stopped by SIGTERM at any point, and the sockets the stop handler watched are the
    /// parent's. So: SIGCHLD back to its default, the mask as it was, no watched sockets.
    pub fn in_child(&self) {
        // SAFETY: SIG_DFL installs no code of ours; nothing can be unsound about it.
        let _ = unsafe { nix::sys::signal::signal(Signal::SIGCHLD, SigHandler::SigDfl) };
        let _ = self.waiting.thread_set_mask();
        signals::forget_watched();
    }
}

/// Runs a forked child's session and returns the status the child must exit with: 0, or
/// [`PANIC_EXIT_STATUS`] if it panicked (`PANIC`). The panic stops here: it never unwinds into
/// the parent's code that the child's memory is a copy of. `afterwards` says, for the narration,
/// what the child does next (unless a stop signal came: then it exits).
pub fn run_session(client: u64, afterwards: &str, session: impl FnOnce() -> Ending) -> i32 {
    match panic::catch_unwind(AssertUnwindSafe(session)) {
        Ok(ending) => {
            let afterwards = if signals::requested() {
                "this child exits"
            } else {
                afterwards
            };
            narrate!("client {client} {ending}; {afterwards}");
            0
        }
        Err(_) => {
            narrate!(
                "the session of client {client} panicked: this child exits with status {PANIC_EXIT_STATUS}; no other client is touched"
            );
            PANIC_EXIT_STATUS
        }
    }
}

/// `exit 0`, `exit 101`, `killed by SIGSEGV`, `killed by SIGKILL, core dumped`.
fn describe(status: &WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, code) => format!("exit {code}"),
        WaitStatus::Signaled(_, signal, false) => format!("killed by {}", signal.as_str()),
        WaitStatus::Signaled(_, signal, true) => {
            format!("killed by {}, core dumped", signal.as_str())
        }
        other => format!("{other:?}"),
    }
}

/// The parent's table of its children, each with what it does (`T`, shown in the narration: a
/// client, a pool slot...). A child is in it from [`add`](Self::add) until `waitpid()` reported
/// it and [`ended`](Self::ended) was told: until then it takes a process slot, zombie or not.
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

    /// How many children are running, or ended but not reaped yet.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// True if there are none.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// Takes note of a child that `waitpid()` reported ended (reaped): removes it from the table,
    /// narrates `reaped child 4242 (exit 0): client 7; 2 children live` and returns what it did
    /// (`None` for a child not in the table, or for `StillAlive`).
    pub fn ended(&mut self, status: WaitStatus) -> Option<T> {
        let pid = status.pid()?;
        let info = self.live.remove(&pid);
        match &info {
            Some(info) => narrate!(
                "reaped child {pid} ({}): {info}; {} children live",
                describe(&status),
                self.live.len()
            ),
            None => narrate!("reaped child {pid} ({})", describe(&status)),
        }
        info
    }

    /// At `limit` children or more (the `--max-children` cap): narrates it, then sleeps until
    /// `reap` has brought the table below `limit` or a stop signal came. The parent does not
    /// accept meanwhile, so new clients wait in the accept queue.
    pub fn wait_below(
        &mut self,
        limit: usize,
        parent_signals: &ParentSignals,
        mut reap: impl FnMut(&mut Self),
    ) {
        if self.live.len() < limit {
            return;
        }
        narrate!(
            "{} children: the --max-children cap; not accepting until one ends (new clients wait in the accept queue)",
            self.live.len()
        );
        while self.live.len() >= limit && !signals::requested() {
            parent_signals.wait_for_signal();
            reap(self);
        }
    }

    /// Shutdown: sends SIGTERM to every child (each then says `BYE` to its client and exits),
    /// reaps them as they end, waits at most `grace`, then sends SIGKILL to any child still there
    /// and reaps it too. Every step is narrated. Call it with the signals blocked (as
    /// [`ParentSignals`] leaves them): only this table reaps, so each pid in it is still our child,
    /// running or a zombie, and never a pid the kernel gave to some other process.
    pub fn stop_all(&mut self, grace: Duration) {
        self.reap_listed();
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

    fn signal_all(&self, signal: Signal) -> usize {
        for &pid in self.live.keys() {
            if let Err(e) = kill(pid, signal) {
                narrate!("kill({pid}, {signal}) failed: {e}");
            }
        }
        self.live.len()
    }

    /// `waitpid(pid, WNOHANG)` for each child in the table.
    fn reap_listed(&mut self) {
        let pids: Vec<Pid> = self.live.keys().copied().collect();
        for pid in pids {
            match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => {}
                Ok(status) => {
                    self.ended(status);
                }
                Err(e) => {
                    narrate!("waitpid({pid}) failed: {e}; forgetting that child");
                    self.live.remove(&pid);
                }
            }
        }
    }

    /// Reaps until the table is empty or `timeout` passes; true if empty. It looks every 10 ms:
    /// a simple bounded wait, used only at shutdown.
    fn wait_until_empty(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            self.reap_listed();
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
    }

    #[test]
    fn the_table_forgets_a_child_once_it_ended() {
        let mut children = Children::new();
        children.add(Pid::from_raw(4242), "client 1");
        children.add(Pid::from_raw(4243), "client 2");
        let ended = children.ended(WaitStatus::Exited(Pid::from_raw(4242), 0));
        assert_eq!(ended, Some("client 1"));
        assert_eq!(children.len(), 1);
        assert_eq!(children.ended(WaitStatus::StillAlive), None);
        assert_eq!(children.len(), 1);
    }
}
