//! The terminals: one private tmux server, one window per tutorial terminal.
//!
//! `tmux -L <socket>` starts a server of our own, so a user's tmux is never touched. Each window
//! runs an interactive bash with job control (as a student's terminal does, so a background job
//! that reads the terminal is stopped, and `fg` works) and the prompt `$ `, as in the tutorials.
//! This process is made a child subreaper: whatever the windows start stays our descendant even
//! when its parent exits, and [`Terminals`]' drop kills all of it, on success, failure or Ctrl-C.

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
        let _ = nix::sys::prctl::set_child_subreaper(true);
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
        let _ = self.tmux(&["kill-server"]);
        kill_descendants();
        if let Ok(path) = socket {
            let _ = std::fs::remove_file(path.trim());
        }
    }
}

/// Kills every process below this one (SIGTERM, then SIGKILL after a second), and reaps them.
pub fn kill_descendants() {
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut signal = Signal::SIGTERM;
    loop {
        let pids = descendants(std::process::id() as i32);
        reap();
        if pids.is_empty() {
            return;
        }
        for &pid in &pids {
            let _ = kill(Pid::from_raw(pid), signal);
            // A stopped job would keep its SIGTERM pending.
            let _ = kill(Pid::from_raw(pid), Signal::SIGCONT);
        }
        std::thread::sleep(Duration::from_millis(50));
        if Instant::now() > deadline {
            signal = Signal::SIGKILL;
        }
        if Instant::now() > deadline + Duration::from_secs(5) {
            return;
        }
    }
}

fn reap() {
    while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        if status == nix::sys::wait::WaitStatus::StillAlive {
            break;
        }
    }
}

/// The live processes below `root`, from /proc (zombies left out: they only need reaping).
fn descendants(root: i32) -> Vec<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
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
        let mut fields = after.split_whitespace();
        let state = fields.next().unwrap_or("");
        let Some(ppid) = fields.next().and_then(|p| p.parse().ok()) else {
            continue;
        };
        if state != "Z" {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut found = Vec::new();
    let mut queue = vec![root];
    while let Some(pid) = queue.pop() {
        for &child in children.get(&pid).into_iter().flatten() {
            found.push(child);
            queue.push(child);
        }
    }
    found
}
