//! Reading the observable truth about processes from `/proc` (and the accept queue from `ss`).

use std::collections::BTreeSet;
use std::fs;

/// The fields of `/proc/<pid>/stat` the tests care about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stat {
    /// The process id.
    pub pid: i32,
    /// The command name (in parentheses in the file).
    pub comm: String,
    /// R, S, D, Z (zombie), T ...
    pub state: char,
    /// The parent's pid.
    pub ppid: i32,
    /// The process group.
    pub pgrp: i32,
}

/// Parses `/proc/<pid>/stat`; `None` if the process is gone.
pub fn stat(pid: i32) -> Option<Stat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The name can hold spaces and parentheses: it runs to the *last* ')'.
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text[open + 1..close].to_string();
    let mut rest = text[close + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    let pgrp = rest.next()?.parse().ok()?;
    Some(Stat {
        pid,
        comm,
        state,
        ppid,
        pgrp,
    })
}

/// True if the process exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    stat(pid).is_some_and(|s| s.state != 'Z')
}

/// Every process whose parent is `pid` (zombies included).
pub fn children_of(pid: i32) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|&p| stat(p).is_some_and(|s| s.ppid == pid))
        .collect()
}

/// The children of `pid` that are zombies (exited, not yet reaped).
pub fn zombie_children_of(pid: i32) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|&p| stat(p).is_some_and(|s| s.ppid == pid && s.state == 'Z'))
        .collect()
}

/// Every process in process group `pgrp` that is not a zombie.
pub fn live_in_group(pgrp: i32) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|&p| stat(p).is_some_and(|s| s.pgrp == pgrp && s.state != 'Z'))
        .collect()
}

fn all_pids() -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// The thread ids of a process, from `/proc/<pid>/task`.
pub fn threads(pid: i32) -> Vec<i32> {
    let Ok(entries) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut tids: Vec<i32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort_unstable();
    tids
}

/// What the descriptors of a process point to: the targets of the links in `/proc/<pid>/fd`
/// (`socket:[inode]`, `/dev/null`, `pipe:[inode]`, a path ...). Empty if the process is gone.
pub fn fd_links(pid: i32) -> BTreeSet<String> {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(|e| fs::read_link(e.ok()?.path()).ok())
                .map(|target| target.to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The sockets a process holds open: its [`fd_links`] that are `socket:[inode]`.
pub fn sockets_of(pid: i32) -> BTreeSet<String> {
    fd_links(pid)
        .into_iter()
        .filter(|target| target.starts_with("socket:"))
        .collect()
}

/// How many descriptors the process has open, from `/proc/<pid>/fd`.
pub fn fd_count(pid: i32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Where thread `tid` of process `pid` waits in the kernel (`/proc/<pid>/task/<tid>/wchan`, such
/// as `hrtimer_nanosleep` or `do_sys_poll`); empty if it runs, or if the kernel does not say.
pub fn task_wchan(pid: i32, tid: i32) -> String {
    fs::read_to_string(format!("/proc/{pid}/task/{tid}/wchan")).unwrap_or_default()
}

/// The state of the TCP connection from `local` to `remote` as the kernel holds it, from
/// `/proc/net/tcp` (IPv4): 1 ESTABLISHED, 4 FIN_WAIT1, 7 CLOSE, 8 CLOSE_WAIT ... (see
/// `include/net/tcp_states.h`); `None` if the kernel holds no such connection any more.
pub fn tcp_state(local: std::net::SocketAddr, remote: std::net::SocketAddr) -> Option<u8> {
    let hex = |addr: std::net::SocketAddr| -> Option<String> {
        let std::net::IpAddr::V4(ip) = addr.ip() else {
            return None;
        };
        // The address is the kernel's u32 in host order (little-endian here), printed in hex.
        Some(format!(
            "{:08X}:{:04X}",
            u32::from_le_bytes(ip.octets()),
            addr.port()
        ))
    };
    let (local, remote) = (hex(local)?, hex(remote)?);
    fs::read_to_string("/proc/net/tcp")
        .ok()?
        .lines()
        .skip(1)
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.get(1) == Some(&local.as_str()) && fields.get(2) == Some(&remote.as_str()))
                .then(|| u8::from_str_radix(fields.get(3)?, 16).ok())
                .flatten()
        })
}

/// Resident memory of the process in KiB (VmRSS in `/proc/<pid>/status`).
pub fn rss_kib(pid: i32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The accept queue of the TCP socket listening on `port`, as `ss -ltn` shows it:
/// `(Recv-Q, Send-Q)` = (connections waiting to be accepted, the backlog).
pub fn listen_queue(port: u16) -> Result<(u32, u32), String> {
    let output = crate::tool("ss")
        .args(["-ltnH", &format!("sport = :{port}")])
        .output()
        .map_err(|e| format!("cannot run `ss` (package iproute2): {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("LISTEN"))
        .ok_or_else(|| format!("no LISTEN socket on port {port} in `ss -ltn`: {text:?}"))?;
    let fields: Vec<&str> = line.split_whitespace().collect();
    let recv_q = fields
        .get(1)
        .and_then(|f| f.parse().ok())
        .ok_or("bad Recv-Q")?;
    let send_q = fields
        .get(2)
        .and_then(|f| f.parse().ok())
        .ok_or("bad Send-Q")?;
    Ok((recv_q, send_q))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_process() {
        let me = std::process::id() as i32;
        let s = stat(me).expect("we exist");
        assert_eq!(s.pid, me);
        assert!(matches!(s.state, 'R' | 'S'));
        assert!(!threads(me).is_empty());
        assert!(fd_count(me) >= 3);
        assert!(!fd_links(me).is_empty());
        assert!(sockets_of(me).iter().all(|s| s.starts_with("socket:")));
        assert!(rss_kib(me).unwrap() > 0);
        assert!(children_of(s.ppid).contains(&me));
    }

    #[test]
    fn sees_a_tcp_connection_and_its_state() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server_side, _) = listener.accept().unwrap();
        let (ours, theirs) = (client.local_addr().unwrap(), client.peer_addr().unwrap());
        assert_eq!(tcp_state(ours, theirs), Some(1), "ESTABLISHED");
        assert_eq!(tcp_state(theirs, ours), Some(1), "ESTABLISHED");
        drop(server_side);
        assert!(
            crate::wait_until(std::time::Duration::from_secs(5), || {
                tcp_state(ours, theirs) == Some(8)
            }),
            "CLOSE_WAIT once the peer closed"
        );
    }
}
