//! What a server costs, read from `/proc` the way `ps`, `top` and `ss` read it.
//!
//! A server is not one process: the fork server has a child per client, the pre-forked one a pool
//! of children. So every figure here is for the *process tree*: the server and all its
//! descendants, found by following the parent pid of every process in `/proc`.
//!
//! - CPU time: `/proc/<pid>/stat` fields 14-17, `utime stime cutime cstime`, in clock ticks. A
//!   live process's own time is in `utime`/`stime` (all its threads together); a child that has
//!   exited *and been reaped* moves its time into its parent's `cutime`/`cstime`. Adding both over
//!   the tree counts every child exactly once, whether it is still running or already reaped.
//! - Memory: `VmRSS` in `/proc/<pid>/status` (resident pages, shared ones counted in every
//!   process that maps them) and `Pss` in `/proc/<pid>/smaps_rollup` (shared pages divided
//!   between the processes that share them: the honest figure for forked children).
//! - Threads: `/proc/<pid>/task`; descriptors: `/proc/<pid>/fd`.

use std::collections::HashMap;
use std::fs;

use serde::{Deserialize, Serialize};

/// The fields of `/proc/<pid>/stat` the bench reads.
#[derive(Clone, Copy, Debug)]
pub struct Stat {
    /// The parent's pid.
    pub ppid: i32,
    /// R, S, Z (zombie), ...
    pub state: char,
    /// Clock ticks: user, system, reaped children's user, reaped children's system.
    pub ticks: u64,
    /// Threads in the process.
    pub threads: u64,
}

/// Parses `/proc/<pid>/stat`; `None` if the process is gone.
pub fn stat(pid: i32) -> Option<Stat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: the fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 of proc(5) (state), so field N is fields[N - 3].
    let number = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        ticks: number(14)? + number(15)? + number(16)? + number(17)?,
        threads: number(20)?,
    })
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`, nearly always 100).
pub fn ticks_per_second() -> f64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(ticks)) if ticks > 0 => ticks as f64,
        _ => 100.0,
    }
}

/// `root` and every process descended from it (children, grandchildren, ...), zombies included.
pub fn tree(root: i32) -> Vec<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            if let Some(s) = stat(pid) {
                children.entry(s.ppid).or_default().push(pid);
            }
        }
    }
    let mut found = vec![root];
    let mut next = 0;
    while next < found.len() {
        if let Some(kids) = children.get(&found[next]) {
            found.extend(kids);
        }
        next += 1;
    }
    found
}

/// CPU seconds used so far by the tree rooted at `root` (see the module docs).
pub fn tree_cpu_seconds(root: i32) -> f64 {
    let ticks: u64 = tree(root)
        .iter()
        .filter_map(|&p| stat(p))
        .map(|s| s.ticks)
        .sum();
    ticks as f64 / ticks_per_second()
}

/// What a server's process tree holds at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Footprint {
    /// Processes in the tree that are not zombies.
    pub processes: u64,
    /// Zombies (exited, not yet reaped) in the tree.
    pub zombies: u64,
    /// Threads over the tree.
    pub threads: u64,
    /// Open descriptors over the tree.
    pub fds: u64,
    /// Sum of VmRSS over the tree, KiB.
    pub rss_kib: u64,
    /// Sum of Pss over the tree, KiB (0 unless asked for: it is slower to read).
    pub pss_kib: u64,
}

impl Footprint {
    /// The counts a leak check compares: processes, zombies, threads, descriptors.
    pub fn counts(&self) -> (u64, u64, u64, u64) {
        (self.processes, self.zombies, self.threads, self.fds)
    }
}

/// Reads the footprint of the tree rooted at `root`; `with_pss` also sums `Pss`.
pub fn footprint(root: i32, with_pss: bool) -> Footprint {
    let mut total = Footprint::default();
    for pid in tree(root) {
        let Some(s) = stat(pid) else { continue };
        if s.state == 'Z' {
            total.zombies += 1;
            continue;
        }
        total.processes += 1;
        total.threads += s.threads;
        total.fds += fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64);
        total.rss_kib += kib_field(&format!("/proc/{pid}/status"), "VmRSS:").unwrap_or(0);
        if with_pss {
            total.pss_kib += kib_field(&format!("/proc/{pid}/smaps_rollup"), "Pss:").unwrap_or(0);
        }
    }
    total
}

/// The value of a `Name:   1234 kB` line.
fn kib_field(path: &str, name: &str) -> Option<u64> {
    let text = fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// CPU seconds (user + system, all threads) used so far by this process: the load generator.
pub fn self_cpu_seconds() -> f64 {
    use nix::sys::resource::{getrusage, UsageWho};
    match getrusage(UsageWho::RUSAGE_SELF) {
        Ok(usage) => {
            let seconds = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
            seconds(usage.user_time()) + seconds(usage.system_time())
        }
        Err(_) => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_process() {
        let me = std::process::id() as i32;
        let s = stat(me).expect("we exist");
        assert!(s.threads >= 1);
        assert_eq!(tree(me)[0], me);
        let f = footprint(me, true);
        assert_eq!(f.processes, 1);
        assert!(f.fds >= 3 && f.rss_kib > 0 && f.pss_kib > 0);
        assert!(ticks_per_second() > 0.0);
    }
}
