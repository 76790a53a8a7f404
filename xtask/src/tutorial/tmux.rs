//! The terminals: one private tmux server, one window per tutorial terminal.
//!
//! `tmux -L <socket>` starts a server of our own, so a user's tmux is never touched. Each window
//! runs an interactive bash with job control (as a student's terminal does, so a background job
//! that reads the terminal is stopped, and `fg` works) and the prompt `$ `, as in the tutorials.
//! Every window's shell leads a session of its own, and whatever it starts stays in that session
//! even when its parent exits (an orphaned child is adopted by init, as a tutorial shows):
//! [`Terminals`]' drop kills the tmux server and every process of those sessions, on success,
//! failure or Ctrl-C.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;

pub struct Terminals {
    socket: String,
    dir: PathBuf,
    windows: BTreeSet<u32>,
}

impl Terminals {
    /// A new tmux server whose windows start in `dir`.
    pub fn start(dir: &Path, name: &str) -> anyhow::Result<Terminals> {
        // The terminals run at the usual priority even when the replay runs under `nice`: `ps`
        // shows a niced process's state with an `N` a student's terminal does not show. Lowering
        // the niceness needs privileges; without them the terminals stay niced.
        // SAFETY: setpriority is a plain system call on this process; it touches no memory.
        let _ = unsafe { nix::libc::setpriority(nix::libc::PRIO_PROCESS, 0, 0) };
        let terminals = Terminals {
            socket: format!("netlabs-replay-{}-{name}", std::process::id()),
            dir: dir.to_path_buf(),
            windows: BTreeSet::new(),
        };
        terminals.tmux(&[
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-s",
            "replay",
            "-x",
            "200",
            "-y",
            "50",
            "-n",
            "idle",
            "sleep 100000",
        ])?;
        terminals.tmux(&["set-option", "-g", "history-limit", "200000"])?;
        terminals.tmux(&["set-option", "-g", "remain-on-exit", "on"])?;
        Ok(terminals)
    }

    fn tmux(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut command = Command::new("tmux");
        super::clean_env(&mut command);
        let output = command
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("cannot run tmux (install it: cargo xtask install-tools)")?;
        if !output.status.success() {
            bail!(
                "tmux {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    fn target(n: u32) -> String {
        format!("replay:t{n}")
    }

    /// Opens terminal `n` if it is not open yet; whether it is new.
    pub fn open(&mut self, n: u32) -> anyhow::Result<bool> {
        if self.windows.contains(&n) {
            return Ok(false);
        }
        let dir = self.dir.to_string_lossy().into_owned();
        let name = format!("t{n}");
        // The tutorials' prompt; nothing of the user's own shell setup.
        let rc = self.dir.join("../bashrc");
        std::fs::write(&rc, "PS1='$ '\nunset PROMPT_COMMAND\nHISTFILE=/dev/null\n")?;
        let shell = format!("bash --noprofile --rcfile {} -i", rc.display());
        self.tmux(&[
            "new-window",
            "-d",
            "-t",
            "replay:",
            "-n",
            &name,
            "-c",
            &dir,
            &shell,
        ])?;
        self.windows.insert(n);
        Ok(true)
    }

    /// Types `text` and Enter.
    pub fn type_line(&self, n: u32, text: &str) -> anyhow::Result<()> {
        let target = Self::target(n);
        if !text.is_empty() {
            self.tmux(&["send-keys", "-t", &target, "-l", text])?;
        }
        self.tmux(&["send-keys", "-t", &target, "Enter"])?;
        Ok(())
    }

    /// Presses a key (`C-c`).
    pub fn key(&self, n: u32, key: &str) -> anyhow::Result<()> {
        self.tmux(&["send-keys", "-t", &Self::target(n), key])?;
        Ok(())
    }

    /// Everything terminal `n` has shown, one entry per line (wrapped lines joined), without the
    /// blank lines at the bottom.
    pub fn screen(&self, n: u32) -> anyhow::Result<Vec<String>> {
        let text = self.tmux(&[
            "capture-pane",
            "-p",
            "-J",
            "-S",
            "-",
            "-t",
            &Self::target(n),
        ])?;
        let mut lines: Vec<String> = text.lines().map(|l| l.trim_end().to_string()).collect();
        while lines.last().is_some_and(|l| l.is_empty()) {
            lines.pop();
        }
        Ok(lines)
    }

    /// The program in the foreground of terminal `n` (`bash` when the shell waits for a
    /// command).
    pub fn foreground(&self, n: u32) -> anyhow::Result<String> {
        Ok(self
            .tmux(&[
                "display-message",
                "-p",
                "-t",
                &Self::target(n),
                "#{pane_current_command}",
            ])?
            .trim()
            .to_string())
    }
}

impl Drop for Terminals {
    fn drop(&mut self) {
        // Where the server's socket was (tmux leaves the file behind when killed).
        let socket = self.tmux(&["display-message", "-p", "#{socket_path}"]);
        let shells: Vec<i32> = self
            .tmux(&["list-panes", "-a", "-F", "#{pane_pid}"])
            .map(|pids| pids.lines().filter_map(|p| p.trim().parse().ok()).collect())
            .unwrap_or_default();
        // SIGTERM first, as a student's Ctrl-C or kill would: the servers stop cleanly and remove
        // their IPC objects. (Killing the tmux server first would hang their terminals up, and
        // SIGHUP ends them without cleaning up.) The shells ignore SIGTERM; tmux's exit ends them.
        stop(&shells, Signal::SIGTERM, Duration::from_secs(4));
        let _ = self.tmux(&["kill-server"]);
        stop(&shells, Signal::SIGKILL, Duration::from_secs(2));
        if let Ok(path) = socket {
            let _ = std::fs::remove_file(path.trim());
        }
    }
}

/// Sends `signal` (and SIGCONT, for stopped jobs) to every process of the shells' sessions and
/// below this one, but the shells, and waits up to `wait` for them to end, reaping our children.
fn stop(shells: &[i32], signal: Signal, wait: Duration) {
    let deadline = Instant::now() + wait;
    let mut signalled = Vec::new();
    loop {
        reap();
        let pids: Vec<i32> = processes(std::process::id() as i32, shells)
            .into_iter()
            .filter(|pid| !shells.contains(pid))
            .collect();
        if pids.is_empty() || Instant::now() > deadline {
            return;
        }
        for &pid in &pids {
            if !signalled.contains(&pid) {
                let _ = kill(Pid::from_raw(pid), signal);
                let _ = kill(Pid::from_raw(pid), Signal::SIGCONT);
                signalled.push(pid);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn reap() {
    while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        if status == nix::sys::wait::WaitStatus::StillAlive {
            break;
        }
    }
}

/// The live processes below `root` or in one of `sessions`, from /proc (zombies left out: they
/// only need reaping).
fn processes(root: i32, sessions: &[i32]) -> Vec<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces and parentheses.
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        // state ppid pgrp session ...
        let fields: Vec<&str> = after.split_whitespace().collect();
        let (Some(state), Some(ppid), Some(session)) = (
            fields.first(),
            fields.get(1).and_then(|p| p.parse().ok()),
            fields.get(3).and_then(|s| s.parse::<i32>().ok()),
        ) else {
            continue;
        };
        if *state != "Z" {
            children.entry(ppid).or_default().push(pid);
            if sessions.contains(&session) && pid != root {
                found.push(pid);
            }
        }
    }
    let mut queue = vec![root];
    while let Some(pid) = queue.pop() {
        for &child in children.get(&pid).into_iter().flatten() {
            found.push(child);
            queue.push(child);
        }
    }
    found.sort_unstable();
    found.dedup();
    found
}
