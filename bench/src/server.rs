//! Starting a server as a separate process, and stopping it the way an operator would.
//!
//! Every server (the tokio baseline too) runs in its own process, started with `--port 0 --quiet
//! --backlog 4096`: the OS picks a free port, which the server tells us on its `listening on
//! IP:PORT` stdout line; no narration is measured; the accept queue is long enough that it is not
//! what limits a sweep. At the end we send SIGTERM and expect exit status 0, as the contract says.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

/// The process groups of the servers running now, so that an interrupted bench (Ctrl-C) can stop
/// them: each server has its own process group (see [`ServerProcess::start`]), so the terminal's
/// SIGINT does not reach it.
static RUNNING: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// Kills every running server's process group (for an interrupted bench).
pub fn kill_all() {
    let groups = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
    for &pgid in groups.iter() {
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
}

fn forget(pid: i32) {
    RUNNING
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|&p| p != pid);
}

/// How long a server may take to print `listening on`.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running server. Dropping it without [`stop`](Self::stop) kills its whole process group.
pub struct ServerProcess {
    child: Child,
    /// Its process id (the root of its process tree).
    pub pid: i32,
    /// Where it listens.
    pub addr: SocketAddr,
    stderr: Arc<Mutex<Vec<u8>>>,
    stopped: bool,
}

impl ServerProcess {
    /// Starts `program args...` and waits for its `listening on` line.
    pub fn start(program: &Path, args: &[String]) -> Result<ServerProcess> {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so that a failed run can kill it and every child it forked.
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start {}", program.display()))?;
        let pid = child.id() as i32;
        RUNNING.lock().unwrap_or_else(|p| p.into_inner()).push(pid);

        // stderr: kept (with --quiet it should stay empty; we show it if something goes wrong).
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut err_pipe = child.stderr.take().expect("piped");
        let sink = Arc::clone(&stderr);
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err_pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let mut kept = sink.lock().unwrap_or_else(|p| p.into_inner());
                if kept.len() < 64 * 1024 {
                    kept.extend_from_slice(&buf[..n]);
                }
            }
        });

        // stdout: the first line is `listening on IP:PORT`; the rest is drained and dropped.
        let (tx, rx) = mpsc::channel();
        let out_pipe = child.stdout.take().expect("piped");
        thread::spawn(move || {
            let mut reader = BufReader::new(out_pipe);
            let mut first = String::new();
            let _ = reader.read_line(&mut first);
            let _ = tx.send(first);
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });

        let mut server = ServerProcess {
            child,
            pid,
            addr: "127.0.0.1:1".parse().expect("valid"),
            stderr,
            stopped: false,
        };
        let line = rx.recv_timeout(START_TIMEOUT).map_err(|_| {
            anyhow!(
                "{} printed no `listening on` line within {START_TIMEOUT:?}; stderr: {}",
                program.display(),
                server.stderr_text()
            )
        })?;
        server.addr = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| {
                // Let it finish so that its stderr says why.
                thread::sleep(Duration::from_millis(200));
                anyhow!(
                    "{}: expected `listening on IP:PORT`, got {line:?}; stderr: {}",
                    program.display(),
                    server.stderr_text()
                )
            })?;
        Ok(server)
    }

    /// What the server wrote on stderr so far (trimmed).
    pub fn stderr_text(&self) -> String {
        let bytes = self.stderr.lock().unwrap_or_else(|p| p.into_inner());
        String::from_utf8_lossy(&bytes).trim().to_string()
    }

    /// How many bytes it wrote on stderr: with `--quiet` this should stay 0.
    pub fn stderr_bytes(&self) -> usize {
        self.stderr.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Sends SIGTERM and waits (at most `timeout`) for the exit. Returns how it ended, as text,
    /// and whether that was the clean `exit 0` the contract asks for. If it does not exit in
    /// time, its process group is killed.
    pub fn stop(mut self, timeout: Duration) -> (String, bool) {
        self.stopped = true;
        forget(self.pid);
        if let Err(e) = kill(Pid::from_raw(self.pid), Signal::SIGTERM) {
            return (format!("could not send SIGTERM: {e}"), false);
        }
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    // Anything its children left behind goes with the group.
                    let _ = killpg(Pid::from_raw(self.pid), Signal::SIGKILL);
                    return match (status.code(), status.signal()) {
                        (Some(0), _) => ("exit 0".into(), true),
                        (Some(code), _) => (format!("exit {code}"), false),
                        (None, Some(sig)) => (format!("killed by signal {sig}"), false),
                        _ => (format!("{status}"), false),
                    };
                }
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
                _ => {
                    let _ = killpg(Pid::from_raw(self.pid), Signal::SIGKILL);
                    let _ = self.child.wait();
                    return (
                        format!("did not exit within {timeout:?} of SIGTERM (killed)"),
                        false,
                    );
                }
            }
        }
    }

    /// Fails if the process has already exited (for instance, crashed under load).
    pub fn check_alive(&mut self) -> Result<()> {
        if let Ok(Some(status)) = self.child.try_wait() {
            self.stopped = true;
            bail!(
                "the server exited ({status}); stderr: {}",
                self.stderr_text()
            );
        }
        Ok(())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        forget(self.pid);
        if !self.stopped {
            let _ = killpg(Pid::from_raw(self.pid), Signal::SIGKILL);
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
