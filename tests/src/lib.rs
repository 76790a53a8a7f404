//! The acceptance-test harness: run the labs' real binaries as separate processes and check them
//! from the outside, the way an instructor (or a student with `ss` and `ps`) would.
//!
//! - [`binary`] builds a lab's binaries once per test process (`cargo build -p <package> --bins`)
//!   and finds them through cargo's JSON messages, so a plain `cargo test` on a clean checkout
//!   never runs a stale or missing binary.
//! - [`Server`] starts a server with `--port 0`, reads its `listening on` line, keeps its stderr,
//!   and on drop kills its whole process group (forked children too) and reaps it. It also waits
//!   for what the tests watch (its [narration](Server::narrates), its
//!   [accept queue](Server::accept_queue_reaches)) and lists its
//!   [live children](Server::live_children).
//! - [`Client`] speaks the protocol with a timeout on every read, and answers the questions the
//!   labs' tests all ask of it: is it [still waiting](Client::still_waiting), what is its
//!   [`client=` id](Client::client_id), [which process serves it](Client::serving_pid).
//! - [`run_binary`], [`run_demo`], [`run_client`] (and [`spawn_client`]) run a lab's binaries
//!   as a user would: `--help` and bad usage, the `--demo N` walkthrough, the line client fed
//!   from stdin; [`help_listing`] checks what `--help` lists.
//! - [`procfs`] reads the observable truth: parents, threads, descriptors, zombies, the backlog.
//! - Events are observed through the system, never through narration: the server
//!   [has read a request](Server::has_read_everything_from) (`ss`), the process serving a client
//!   [sleeps](Server::is_working_on_request_of) (`/proc`), a child [is gone](Server::child_is_gone),
//!   the server [left nothing for anyone else to reap](Server::orphans).
//! - The machine is a student's, not ours: the soft limit on open files is raised to the hard
//!   limit once per test process ([`raise_descriptor_limit`], [`need_descriptors`]); a missing
//!   system tool is named with its Debian package ([`tool`]); files the tests share between test
//!   processes live in this checkout's target folder ([`scratch_dir`], [`file_lock`]).
//! - `NETLABS_QUIET=1` in the environment starts every server with `--quiet` ([`quiet_mode`]):
//!   a test graded on the contract must pass without narration. Only the narration tests use
//!   [`Server::start_narrating`].
//!
//! Every wait here is bounded, and every test socket has read and write timeouts. Nothing forks
//! inside the test process (we only spawn).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;

pub mod ipc;
pub mod observe;
pub mod procfs;

/// How long any single read from a server may take before the test fails.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long any single write to a server may block before the test fails (a server that stops
/// reading fills the socket buffers; the test must fail, not hang).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a server may take to print `listening on`.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a short run of a binary (`--help`, bad usage, a taken port, the line client) may take.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a `--demo N` run may take.
pub const DEMO_TIMEOUT: Duration = Duration::from_secs(60);
/// How long [`Server::narrates`] waits for a line of narration to reach the test.
pub const NARRATION_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`Server::accept_queue_reaches`] waits for the kernel to queue connections.
pub const QUEUE_TIMEOUT: Duration = Duration::from_secs(5);

/// The cargo package that ships each binary (the contract's table).
fn package_of(binary: &str) -> Option<&'static str> {
    Some(match binary {
        "iterative-server" | "iterative-client" => "lab01-iterative",
        "fork-server" | "fork-client" => "lab02-fork",
        "thread-server" | "thread-client" => "lab03-thread",
        "multiplex-server" | "multiplex-client" => "lab04-multiplex",
        "ipc-server" | "ipc-client" => "lab05-ipc",
        "bench" => "bench",
        _ => return None,
    })
}

/// The workspace root (the folder above this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf()
}

// ---------------------------------------------------------------------------------------------
// The machine the suite runs on: a student's, not ours.

/// The open-file limits `(soft, hard)` of this test process, after raising the soft limit to the
/// hard limit (once per test process; the servers and clients it starts inherit it).
///
/// Most Linux desktops give a soft `ulimit -n` of 1,024 and a much higher hard limit; a server
/// that holds a thousand clients raises its soft limit the same way (any process may, up to the
/// hard limit, without privileges).
pub fn raise_descriptor_limit() -> (u64, u64) {
    static LIMITS: OnceLock<(u64, u64)> = OnceLock::new();
    *LIMITS.get_or_init(|| {
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit(RLIMIT_NOFILE)");
        if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
            return (hard, hard);
        }
        (soft, hard)
    })
}

/// Panics, saying which limit and how to raise it, unless this test process (and so each server
/// it starts) may open at least `count` descriptors once the soft limit is raised to the hard one.
#[track_caller]
pub fn need_descriptors(count: u64) {
    let (soft, hard) = raise_descriptor_limit();
    assert!(
        soft >= count,
        "this test needs {count} open files, but the hard limit on open files (RLIMIT_NOFILE) \
         is {hard} (soft {soft}); `ulimit -Hn` shows it. Raise it for your user in \
         /etc/security/limits.conf (a line `yourname hard nofile 65536`, then log in again), \
         or run the tests from a shell where `ulimit -n 65536` succeeds"
    );
}

/// The Debian package that brings each system tool the tests run.
fn package_of_tool(name: &str) -> &'static str {
    match name {
        "ss" => "iproute2",
        "prlimit" => "util-linux",
        "bash" => "bash",
        "strace" => "strace",
        "nc" => "netcat-openbsd",
        "ps" => "procps",
        "ipcs" => "util-linux",
        _ => "the package that provides it",
    }
}

/// A [`Command`] for a system tool (`ss`, `prlimit`, `bash` ...), found in `PATH` (or
/// `/usr/sbin`, `/sbin`). Panics, naming the tool and the Debian package that brings it, if it
/// is not installed.
pub fn tool(name: &str) -> Command {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain(["/usr/sbin".into(), "/sbin".into()]);
    for dir in dirs {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Command::new(candidate);
        }
    }
    panic!(
        "this test runs `{name}`, which is not installed (not in PATH): install the package {} \
         (on Debian or Ubuntu: `sudo apt-get install {}`), or run `bash .ci/install-tools`",
        package_of_tool(name),
        package_of_tool(name)
    )
}

/// A folder for files the tests share between test processes (lock files, scratch files): in
/// this checkout's target folder, next to the test binaries, so it belongs to whoever builds and
/// runs this checkout. Never the shared temporary folder, where another user's file of the same
/// name would be in the way. Created if needed.
pub fn scratch_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // The test binary is target/<profile>/deps/<name>-<hash>: use target/<profile>/.
        let exe = std::env::current_exe().expect("the test binary's path");
        let deps = exe.parent().expect("the test binary is in a folder");
        let profile = if deps.file_name().is_some_and(|n| n == "deps") {
            deps.parent().unwrap_or(deps)
        } else {
            deps
        };
        let dir = profile.join("netlabs-tests");
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        dir
    })
    .clone()
}

/// Takes the file lock `name` in [`scratch_dir`] (shared or exclusive), waiting for it: for
/// tests that must not overlap even when they run in different test processes (nextest).
/// Released when the returned value is dropped.
pub fn file_lock(name: &str, exclusive: bool) -> Flock<File> {
    let path = scratch_dir().join(format!("{name}.lock"));
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("cannot open the lock file {}: {e}", path.display()));
    let how = if exclusive {
        FlockArg::LockExclusive
    } else {
        FlockArg::LockShared
    };
    Flock::lock(file, how).unwrap_or_else(|(_, e)| panic!("flock {}: {e}", path.display()))
}

/// True if `NETLABS_QUIET=1` is set: then [`Server::start`] starts every server with `--quiet`,
/// proof that the tests grade the contract and not the narration.
pub fn quiet_mode() -> bool {
    std::env::var_os("NETLABS_QUIET").is_some_and(|v| v == "1")
}

/// Makes this test process the "subreaper" of everything it starts (once): a process whose
/// parent exits without reaping it is then handed to us, not to process 1, so a test can see
/// what a server left behind ([`Server::orphans`]). The harness reaps those in the end.
fn become_subreaper() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        nix::sys::prctl::set_child_subreaper(true).expect("prctl(PR_SET_CHILD_SUBREAPER)");
    });
}

/// Makes what `command` starts receive SIGKILL if the test that starts it dies first.
///
/// Dropping a [`Server`] kills its group, but a test process that is itself killed (a runner's
/// time limit, Ctrl-C, cargo-mutants giving up on a mutant that hangs) drops nothing: without
/// this, its servers would run on, some of them spinning, on the student's machine. The kernel
/// sends the signal when the *thread* that spawned the process ends, so spawn servers from the
/// test's own thread (every test here does), not from a helper thread that returns early.
fn die_with_this_test(command: &mut Command) {
    let test_process = nix::unistd::getpid();
    // SAFETY: pre_exec runs in the forked child before exec, where only async-signal-safe calls
    // are allowed; prctl(2) and getppid(2) are plain system calls that allocate nothing and take
    // no lock.
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            // The test may have died between fork and prctl: then nothing would send the signal.
            if nix::unistd::getppid() != test_process {
                return Err(std::io::Error::other("the test process is gone"));
            }
            Ok(())
        });
    }
}

/// The process group of this test process.
fn our_pgrp() -> i32 {
    nix::unistd::getpgrp().as_raw()
}

/// The processes handed to this test process (see [`become_subreaper`]) from the process group
/// of something it started in a group of its own (a server and what it forked), with that
/// group: children of ours whose group is neither theirs nor ours. Zombies included.
fn orphans_now() -> Vec<(i32, procfs::Stat)> {
    let me = std::process::id() as i32;
    let ours = our_pgrp();
    procfs::children_of(me)
        .into_iter()
        .filter_map(|pid| Some((pid, procfs::stat(pid)?)))
        .filter(|(pid, stat)| stat.pgrp != *pid && stat.pgrp != ours)
        .collect()
}

/// Orphans the harness has reaped, by process group: what [`Server::orphans`] reports.
static REAPED_ORPHANS: Mutex<Vec<(i32, i32)>> = Mutex::new(Vec::new());

/// Reaps every orphan that has exited (a zombie handed to us), remembering its group. Only those
/// pids, one by one: never `waitpid(-1)`, which could take the status of a process another
/// test waits for. Called before every server starts, so that no zombie of ours holds on to a
/// pid (or to what a killed server left behind) that the next server looks at.
fn reap_orphans() {
    for (pid, stat) in orphans_now() {
        if stat.state == 'Z'
            && matches!(
                waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)),
                Ok(status) if status.pid().is_some()
            )
        {
            REAPED_ORPHANS
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((stat.pgrp, pid));
        }
    }
}

/// After killing group `pgrp`: reaps its orphans as they die, waiting at most a few seconds.
fn reap_orphans_in_group(pgrp: i32) {
    wait_until(Duration::from_secs(5), || {
        reap_orphans();
        orphans_now().iter().all(|(_, stat)| stat.pgrp != pgrp)
    });
}

/// The state letter of one thread (`R`, `S`, `D`, `Z` ...), from `/proc/<pid>/task/<tid>/stat`.
pub fn thread_state(pid: i32, tid: i32) -> Option<char> {
    let text = fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
    text[text.rfind(')')? + 1..]
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

/// The receive and send queues `(Recv-Q, Send-Q)` of the TCP connection from local port `from`
/// to port `to` on 127.0.0.1, as `ss -tn` shows them; `None` if there is no such connection.
pub fn connection_queues(from: u16, to: u16) -> Option<(u32, u32)> {
    let output = tool("ss")
        .args(["-tnH", &format!("( sport = :{from} and dport = :{to} )")])
        .output()
        .expect("run ss");
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text.lines().find(|l| !l.trim().is_empty())?;
    let fields: Vec<&str> = line.split_whitespace().collect();
    Some((fields.get(1)?.parse().ok()?, fields.get(2)?.parse().ok()?))
}

type Built = Result<HashMap<String, PathBuf>, String>;
/// One build per package per test process; other tests of the same package wait for it.
type BuildCell = Arc<OnceLock<Built>>;
static BUILDS: OnceLock<Mutex<HashMap<&'static str, BuildCell>>> = OnceLock::new();

/// The path of a workspace binary, built (once per test process) if needed.
///
/// Cargo builds only the test crate's own dependencies for `cargo test`, not other packages'
/// binaries, so we ask cargo to build the package and read each binary's path from its JSON
/// output. This is quick when nothing changed. A binary that is missing or does not build makes
/// the test fail with cargo's own message.
pub fn binary(name: &str) -> PathBuf {
    // Every test that runs a binary passes here first: what it starts inherits the raised limit.
    raise_descriptor_limit();
    let package =
        package_of(name).unwrap_or_else(|| panic!("no package ships a binary named {name:?}"));
    let cell = {
        let mut builds = BUILDS
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        Arc::clone(builds.entry(package).or_default())
    };
    let built = cell.get_or_init(|| build_package(package));
    match built {
        Ok(binaries) => binaries.get(name).cloned().unwrap_or_else(|| {
            panic!(
                "package {package} built, but it has no binary {name:?} (it has: {:?})",
                binaries.keys()
            )
        }),
        Err(message) => panic!("{message}"),
    }
}

fn build_package(package: &str) -> Built {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(workspace_root())
        .args([
            "build",
            "--quiet",
            "-p",
            package,
            "--bins",
            "--message-format=json-render-diagnostics",
        ])
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run cargo to build {package}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "`cargo build -p {package} --bins` failed ({}); is the package in the workspace and does it compile?",
            output.status
        ));
    }
    let mut binaries = HashMap::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        let (Some(exe), Some(name)) = (
            message["executable"].as_str(),
            message["target"]["name"].as_str(),
        ) else {
            continue;
        };
        binaries.insert(name.to_string(), PathBuf::from(exe));
    }
    Ok(binaries)
}

/// A server process started for a test. Dropping it kills its process group and reaps it.
pub struct Server {
    child: Child,
    /// The address from its `listening on` line.
    pub addr: SocketAddr,
    /// Whether the harness added `--quiet` ([`quiet_mode`]): then there is no narration to read.
    quieted: bool,
    stderr: Arc<Mutex<String>>,
    /// Says when the server's stderr reaches its end (every process holding it has exited).
    stderr_done: Option<mpsc::Receiver<()>>,
    stdout_rest: Arc<Mutex<String>>,
    stdout_closed: Arc<Mutex<bool>>,
}

impl Server {
    /// Starts `binary` with `--port 0` and `args` (and `--quiet` in [`quiet_mode`]), waits for
    /// `listening on`, and returns it.
    pub fn start(binary_name: &str, args: &[&str]) -> Server {
        Self::try_start(binary_name, args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`start`](Self::start), but returns what went wrong instead of panicking.
    pub fn try_start(binary_name: &str, args: &[&str]) -> Result<Server, String> {
        let mut args = args.to_vec();
        let quieted = quiet_mode() && !args.contains(&"--quiet");
        if quieted {
            args.push("--quiet");
        }
        let mut server = Self::launch(binary_name, &args)?;
        server.quieted = quieted;
        Ok(server)
    }

    /// Starts `binary` with `--port 0` and `args` as they are, never adding `--quiet`: for the
    /// narration tests (tests/tests/narration.rs), which read what the server tells its
    /// operator. Every other test uses [`start`](Self::start).
    pub fn start_narrating(binary_name: &str, args: &[&str]) -> Server {
        Self::launch(binary_name, args).unwrap_or_else(|e| panic!("{e}"))
    }

    fn launch(binary_name: &str, args: &[&str]) -> Result<Server, String> {
        let path = binary(binary_name);
        become_subreaper();
        reap_orphans();
        let mut command = Command::new(&path);
        command
            .args(["--port", "0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so that drop can kill it and every child it forked.
            .process_group(0);
        die_with_this_test(&mut command);
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", path.display()))?;
        // A group of this number that ended earlier (the kernel reuses pids) is not this one.
        REAPED_ORPHANS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(pgrp, _)| *pgrp != child.id() as i32);
        let Collected {
            text: stderr,
            done: stderr_done,
        } = collect(child.stderr.take().expect("piped"));
        let (line_tx, line_rx) = mpsc::channel();
        let stdout_rest = Arc::new(Mutex::new(String::new()));
        let stdout_closed = Arc::new(Mutex::new(false));
        {
            let stdout = child.stdout.take().expect("piped");
            let rest = Arc::clone(&stdout_rest);
            let closed = Arc::clone(&stdout_closed);
            thread::spawn(move || {
                let mut reader = BufReader::new(stdout);
                let mut first = String::new();
                let _ = reader.read_line(&mut first);
                let _ = line_tx.send(first);
                let mut chunk = [0u8; 4096];
                while let Ok(n) = reader.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    rest.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push_str(&String::from_utf8_lossy(&chunk[..n]));
                }
                *closed.lock().unwrap_or_else(|p| p.into_inner()) = true;
            });
        }
        let first = line_rx.recv_timeout(START_TIMEOUT);
        let mut server = Server {
            child,
            addr: "127.0.0.1:1".parse().unwrap(),
            quieted: false,
            stderr,
            stderr_done: Some(stderr_done),
            stdout_rest,
            stdout_closed,
        };
        let line = match first {
            Ok(line) => line,
            Err(_) => return Err(format!("{binary_name} printed no `listening on` line within {START_TIMEOUT:?}; stderr:\n{}", server.stderr())),
        };
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok());
        match addr {
            Some(addr) => {
                server.addr = addr;
                Ok(server)
            }
            None => {
                // Let the process finish so its stderr is complete.
                let _ = server.wait_exit(Duration::from_secs(5));
                Err(format!(
                    "{binary_name}: expected `listening on IP:PORT`, got {line:?}; stderr:\n{}",
                    server.stderr()
                ))
            }
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Everything it wrote to stderr so far (its narration).
    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// What it wrote to stdout after the `listening on` line so far.
    pub fn stdout_rest(&self) -> String {
        self.stdout_rest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Everything it wrote to stdout after the `listening on` line, once its stdout is closed
    /// (it exited): the contract says nothing. Call it after [`wait_exit`](Self::wait_exit).
    /// Panics if stdout is still open after [`RUN_TIMEOUT`] (a child kept it open).
    pub fn stdout_after_listening(&self) -> String {
        let closed = wait_until(RUN_TIMEOUT, || {
            *self.stdout_closed.lock().unwrap_or_else(|p| p.into_inner())
        });
        assert!(
            closed,
            "the server's stdout is still open {RUN_TIMEOUT:?} after the test asked: has every \
             process of the server exited?"
        );
        self.stdout_rest()
    }

    /// Connects a client (without reading `HELLO`).
    pub fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    /// Connects a client and reads its `HELLO`.
    pub fn greeted(&self) -> Client {
        let mut client = self.connect();
        client.read_hello();
        client
    }

    /// Sends `signal` to the server process (not its children).
    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.pid()), signal).expect("the server process exists");
    }

    /// Waits at most `timeout` for the server to exit; `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                reap_orphans();
                // Its last lines may still be in the pipe, on their way to the thread that
                // collects them: let that thread reach the end, so [`stderr`](Self::stderr) is
                // complete (bounded: a child the server left running may hold the pipe open).
                if let Some(done) = self.stderr_done.take() {
                    let _ = done.recv_timeout(Duration::from_secs(2));
                }
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `signal` and waits (at most `timeout`) for the exit status. Panics if it does not exit.
    pub fn stop_with(&mut self, signal: Signal, timeout: Duration) -> ExitStatus {
        self.signal(signal);
        self.wait_exit(timeout).unwrap_or_else(|| {
            panic!(
                "server did not exit within {timeout:?} of {signal}; stderr:\n{}",
                self.stderr()
            )
        })
    }

    /// The processes of the server's group that were handed to the test after the server
    /// exited: children it did not reap (zombies) or left running. Empty for a server that
    /// reaped every child before it exited. Meaningful once the server has exited.
    pub fn orphans(&self) -> Vec<i32> {
        reap_orphans();
        let group = self.pid();
        let mut pids: Vec<i32> = REAPED_ORPHANS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(pgrp, _)| *pgrp == group)
            .map(|(_, pid)| *pid)
            .collect();
        pids.extend(
            orphans_now()
                .into_iter()
                .filter(|(_, stat)| stat.pgrp == group)
                .map(|(pid, _)| pid),
        );
        pids
    }

    /// True once process `pid` (a child of the server) is gone: no longer in `/proc` as a child
    /// of the server, not even a zombie, waiting at most `timeout`. (If the kernel has already
    /// given its pid to a new, unrelated process, that one is not the server's child.)
    pub fn child_is_gone(&self, pid: i32, timeout: Duration) -> bool {
        wait_until(timeout, || {
            procfs::stat(pid).is_none_or(|s| s.ppid != self.pid() && s.pgrp != self.pid())
        })
    }

    /// True once the server has read everything `client` sent so far, waiting at most
    /// [`QUEUE_TIMEOUT`]: `ss` shows the client's side with nothing unacknowledged (Send-Q 0)
    /// and the server's side with nothing unread (Recv-Q 0). The way to know "the server has
    /// my request" without reading its narration.
    pub fn has_read_everything_from(&self, client: &Client) -> bool {
        let mine = client.local_port();
        let port = self.port();
        wait_until(QUEUE_TIMEOUT, || {
            connection_queues(mine, port).is_some_and(|(_, unacked)| unacked == 0)
                && connection_queues(port, mine).is_some_and(|(unread, _)| unread == 0)
        })
    }

    /// True once the server has read everything `client` sent and the thread serving it
    /// (from its `HELLO`) sleeps in the kernel (state `S` in `/proc`), waiting at most
    /// [`QUEUE_TIMEOUT`]: after a `SLEEP`, the server is now working on it. Panics if the
    /// client was not greeted.
    pub fn is_working_on_request_of(&self, client: &Client) -> bool {
        let served = client.hello.clone().expect("the client was greeted");
        self.has_read_everything_from(client)
            && wait_until(QUEUE_TIMEOUT, || {
                thread_state(served.pid, served.tid) == Some('S')
            })
    }

    /// Process ids whose parent is the server (its live or zombie children).
    pub fn children(&self) -> Vec<i32> {
        procfs::children_of(self.pid())
    }

    /// The server's live (non-zombie) children.
    pub fn live_children(&self) -> BTreeSet<i32> {
        self.children()
            .into_iter()
            .filter(|&pid| procfs::alive(pid))
            .collect()
    }

    /// True once the server's stderr contains `text`, waiting at most [`NARRATION_TIMEOUT`].
    ///
    /// Its stderr is read by a thread of the harness, so a line the server wrote before its reply
    /// may reach the test a moment after the reply: wait for it rather than read it once.
    pub fn narrates(&self, text: &str) -> bool {
        self.narrates_within(text, NARRATION_TIMEOUT)
    }

    /// Panics if the harness started the server with `--quiet` ([`quiet_mode`]): a test that
    /// reads narration belongs in tests/tests/narration.rs and starts its server with
    /// [`start_narrating`](Self::start_narrating). (A test that passes `--quiet` itself may still
    /// look for what `--quiet` keeps, such as the warning for a non-loopback `--host`.)
    fn expect_narration(&self) {
        assert!(
            !self.quieted,
            "this test reads the server's narration, but NETLABS_QUIET=1 started the server \
             with --quiet: graded tests observe only the contract and the system (narration \
             tests go in tests/tests/narration.rs)"
        );
    }

    /// True once its listening socket's accept queue (Recv-Q in `ss -ltn`) holds `count`
    /// connections that the kernel completed and the server has not accepted, waiting at most
    /// [`QUEUE_TIMEOUT`]. Panics if `ss` cannot tell.
    pub fn accept_queue_reaches(&self, count: u32) -> bool {
        wait_until(QUEUE_TIMEOUT, || {
            procfs::listen_queue(self.port()).unwrap().0 == count
        })
    }

    /// Like [`narrates`](Self::narrates), waiting at most `timeout`.
    pub fn narrates_within(&self, text: &str, timeout: Duration) -> bool {
        self.expect_narration();
        wait_until(timeout, || self.stderr().contains(text))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // A test that fails because a task of the student handout is still a `todo!()` says
        // which task: the server (or a child it forked) printed the todo's message on stderr.
        if thread::panicking() {
            let stderr = self.stderr();
            let mut todos: Vec<&str> = stderr
                .lines()
                .filter(|l| l.starts_with("not yet implemented"))
                .collect();
            todos.dedup();
            for todo in todos {
                eprintln!("the server stopped at a task to write: {todo}");
            }
        }
        // The whole group: the server and any child it forked (they share its process group).
        let _ = killpg(Pid::from_raw(self.pid()), Signal::SIGKILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Children it did not reap were handed to us (we are their subreaper): reap them.
        reap_orphans_in_group(self.pid());
    }
}

/// What a pipe said, read to its end by a thread.
struct Collected {
    text: Arc<Mutex<String>>,
    done: mpsc::Receiver<()>,
}

impl Collected {
    /// Waits (at most `timeout`) for the writer to close the pipe, then returns the text.
    fn finish(self, timeout: Duration) -> String {
        let _ = self.done.recv_timeout(timeout);
        let text = self.text.lock().unwrap_or_else(|p| p.into_inner());
        text.clone()
    }
}

/// Reads a pipe to the end in a thread, keeping what it says.
fn collect(pipe: impl Read + Send + 'static) -> Collected {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&text);
    let (done_tx, done) = mpsc::channel();
    thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut line = Vec::new();
        while let Ok(n) = reader.read_until(b'\n', &mut line) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push_str(&String::from_utf8_lossy(&line));
            line.clear();
        }
        let _ = done_tx.send(());
    });
    Collected { text, done }
}

/// Runs a command to completion with stdin closed, with a time limit; returns (status, stdout,
/// stderr). For `--help`, a port in use, the clients, the demo.
pub fn run_with_timeout(mut command: Command, timeout: Duration) -> (ExitStatus, String, String) {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    die_with_this_test(&mut command);
    let mut child = command.spawn().expect("spawn");
    let out = collect(child.stdout.take().expect("piped"));
    let err = collect(child.stderr.take().expect("piped"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
            reap_orphans_in_group(child.id() as i32);
            panic!("{command:?} did not finish within {timeout:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    // The pipes close when the process (and anything it left running) closes them.
    let out = out.finish(Duration::from_secs(5));
    let err = err.finish(Duration::from_secs(5));
    (status, out, err)
}

/// Runs a lab binary with `args` to completion (stdin closed, at most [`RUN_TIMEOUT`]); returns
/// (status, stdout, stderr). For `--help`, bad usage, a port in use.
pub fn run_binary(binary_name: &str, args: &[&str]) -> (ExitStatus, String, String) {
    let mut command = Command::new(binary(binary_name));
    command.args(args);
    run_with_timeout(command, RUN_TIMEOUT)
}

/// The flags every lab's server takes (the contract's shared command line).
pub const SHARED_FLAGS: &[&str] = &[
    "--host",
    "--port",
    "--backlog",
    "--allow-panic",
    "--quiet",
    "--demo",
];

/// Runs `binary_name --help`, checks that it succeeds and that its text contains each of
/// `needles` (flags, `[default: ...]` values), and returns the text for any further check.
pub fn help_listing(binary_name: &str, needles: &[&str]) -> String {
    let (status, stdout, stderr) = run_binary(binary_name, &["--help"]);
    assert!(status.success(), "{binary_name} --help: {status}\n{stderr}");
    for needle in needles {
        assert!(stdout.contains(needle), "--help lacks {needle}:\n{stdout}");
    }
    stdout
}

/// What a `--demo N` run printed.
#[derive(Clone, Debug)]
pub struct Demo {
    /// Its whole stdout (the walkthrough).
    pub stdout: String,
    /// Its whole stderr (the server's narration).
    pub stderr: String,
    /// Each `(waited N ms)` of the walkthrough, in order: how long, in milliseconds, each client
    /// waited for its `HELLO`.
    pub waits: Vec<u64>,
}

/// Runs `binary_name --demo <clients>` (at most [`DEMO_TIMEOUT`]) and checks what every lab's
/// demo must do: exit with success, after its server `stopped with SIGTERM: exit status: 0`.
/// Returns what it printed, with the `(waited N ms)` of each client parsed.
pub fn run_demo(binary_name: &str, clients: usize) -> Demo {
    let mut command = Command::new(binary(binary_name));
    command.args(["--demo", &clients.to_string()]);
    let (status, stdout, stderr) = run_with_timeout(command, DEMO_TIMEOUT);
    assert!(status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("server stopped with SIGTERM: exit status: 0"),
        "{stdout}"
    );
    let waits = stdout
        .lines()
        .filter_map(|l| {
            l.split("(waited ")
                .nth(1)?
                .split(" ms")
                .next()?
                .parse()
                .ok()
        })
        .collect();
    Demo {
        stdout,
        stderr,
        waits,
    }
}

/// Starts a lab's line client (`binary_name --port <port>`) with stdin and stdout piped and
/// stderr discarded, for a test that talks to it while it runs. See [`run_client`] for one that
/// only feeds it and reads what it printed.
pub fn spawn_client(binary_name: &str, port: u16) -> Child {
    Command::new(binary(binary_name))
        .args(["--port", &port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {binary_name}: {e}"))
}

/// Runs a lab's line client against `port`: writes `input` to its stdin, closes it (at end of
/// input the client sends `QUIT`), and waits at most `timeout` for it to end. Returns its exit
/// status and everything it printed on stdout. Panics, after killing it, if it does not end in
/// time.
pub fn run_client(
    binary_name: &str,
    port: u16,
    input: &[u8],
    timeout: Duration,
) -> (ExitStatus, String) {
    let mut child = spawn_client(binary_name, port);
    let stdout = collect(child.stdout.take().expect("piped"));
    {
        let mut stdin = child.stdin.take().expect("piped");
        stdin
            .write_all(input)
            .unwrap_or_else(|e| panic!("write to {binary_name}'s stdin: {e}"));
    } // dropped: end of input
    let mut status = None;
    wait_until(timeout, || {
        status = child.try_wait().expect("try_wait");
        status.is_some()
    });
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "{binary_name} did not end within {timeout:?} after stdin EOF; it printed:\n{}",
            stdout.finish(Duration::from_secs(1))
        );
    };
    (status, stdout.finish(Duration::from_secs(5)))
}

/// What a `HELLO` or `WHO` reply said about who serves a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Served {
    /// The model word.
    pub model: String,
    /// The serving process.
    pub pid: i32,
    /// The serving OS thread.
    pub tid: i32,
}

/// Parses `HELLO <model> pid=<pid> tid=<tid>` or `OK model=<model> pid=.. tid=.. client=..`.
pub fn parse_served(line: &str) -> Option<Served> {
    let mut model = None;
    let mut pid = None;
    let mut tid = None;
    let mut words = line.split(' ');
    match words.next()? {
        "HELLO" => model = words.next().map(str::to_string),
        "OK" => {}
        _ => return None,
    }
    for word in words {
        if let Some(m) = word.strip_prefix("model=") {
            model = Some(m.to_string());
        } else if let Some(p) = word.strip_prefix("pid=") {
            pid = p.parse().ok();
        } else if let Some(t) = word.strip_prefix("tid=") {
            tid = t.parse().ok();
        }
    }
    Some(Served {
        model: model?,
        pid: pid?,
        tid: tid?,
    })
}

/// Sets [`READ_TIMEOUT`] and [`WRITE_TIMEOUT`] on a socket the test made: no read or write of a
/// test waits forever, whatever the server does.
pub fn with_timeouts(stream: TcpStream) -> TcpStream {
    stream
        .set_read_timeout(Some(READ_TIMEOUT))
        .expect("set the read timeout");
    stream
        .set_write_timeout(Some(WRITE_TIMEOUT))
        .expect("set the write timeout");
    stream
}

/// Connects a plain [`TcpStream`] to `addr` (with a timeout), with [`with_timeouts`]: for a
/// test that needs the raw socket rather than a [`Client`].
pub fn connect_stream(addr: SocketAddr) -> TcpStream {
    raise_descriptor_limit();
    let stream = TcpStream::connect_timeout(&addr, READ_TIMEOUT)
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    with_timeouts(stream)
}

/// A test's connection to a server. Every read and every write has a timeout. One descriptor
/// per client (the reader owns the socket; writes go through a shared reference to it).
pub struct Client {
    reader: BufReader<TcpStream>,
    /// `MSG` lines that arrived while we waited for a reply.
    pub messages: VecDeque<String>,
    /// What `HELLO` said, once read.
    pub hello: Option<Served>,
}

impl Client {
    /// Connects (with a timeout) and sets the read and write timeouts.
    pub fn connect(addr: SocketAddr) -> Client {
        Client {
            reader: BufReader::new(connect_stream(addr)),
            messages: VecDeque::new(),
            hello: None,
        }
    }

    /// Sets how long a read may wait.
    pub fn set_timeout(&self, timeout: Duration) {
        self.stream()
            .set_read_timeout(Some(timeout))
            .expect("set timeout");
    }

    /// The local port of this client's connection (how `ss` tells it from the others).
    pub fn local_port(&self) -> u16 {
        self.stream().local_addr().expect("local address").port()
    }

    /// True if nothing arrives for `quiet`: the client is still waiting (in the accept queue,
    /// for a free worker, or for its request to be worked on). Panics on any other error (such
    /// as the server closing the connection). The read timeout is back to [`READ_TIMEOUT`]
    /// afterwards.
    pub fn still_waiting(&mut self, quiet: Duration) -> bool {
        self.set_timeout(quiet);
        let got = self.read_line();
        self.set_timeout(READ_TIMEOUT);
        match got {
            Err(e)
                if e.contains("timed out")
                    || e.contains("would block")
                    || e.contains("temporarily unavailable") =>
            {
                true
            }
            Err(e) => panic!("unexpected error while checking the client waits: {e}"),
            Ok(line) => {
                eprintln!("a waiting client received {line:?}");
                false
            }
        }
    }

    /// The pid of the process that serves us, from our `HELLO`. Panics if it was not read.
    pub fn serving_pid(&self) -> i32 {
        self.hello.as_ref().expect("greeted").pid
    }

    /// The id the server gave us: asks `WHO` and returns its `client=<id>`. Panics if the reply
    /// has none.
    pub fn client_id(&mut self) -> u64 {
        let who = self.request("WHO");
        who.rsplit("client=")
            .next()
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| panic!("no client id in {who:?}"))
    }

    /// Reads the `HELLO` line and remembers who serves us. Panics if it does not come in time.
    pub fn read_hello(&mut self) -> Served {
        let line = self.read_line().unwrap_or_else(|e| panic!("no HELLO: {e}"));
        let served = parse_served(&line)
            .filter(|_| line.starts_with("HELLO "))
            .unwrap_or_else(|| panic!("expected HELLO, got {line:?}"));
        self.hello = Some(served.clone());
        served
    }

    /// Sends raw bytes as they are.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        let mut stream: &TcpStream = self.reader.get_ref();
        stream
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("send to the server: {e}"));
    }

    /// Sends one line (adds `\n`).
    pub fn send(&mut self, line: &str) {
        self.send_raw(format!("{line}\n").as_bytes());
    }

    /// Reads the next line, whatever it is, without its line end. `Err` on timeout or close.
    pub fn read_line(&mut self) -> Result<String, String> {
        let mut line = Vec::new();
        match self.reader.read_until(b'\n', &mut line) {
            Ok(0) => Err("the server closed the connection".into()),
            Ok(_) => {
                let text = String::from_utf8_lossy(&line);
                Ok(text.trim_end_matches(['\n', '\r']).to_string())
            }
            Err(e) => Err(format!("read failed: {e}")),
        }
    }

    /// Reads the next line as the server sent it, bytes and `\n` included (no `\r` trimmed, no
    /// lossy decoding): for checking exactly what went over the wire. `Err` on timeout or close.
    pub fn read_raw_line(&mut self) -> Result<Vec<u8>, String> {
        let mut line = Vec::new();
        match self.reader.read_until(b'\n', &mut line) {
            Ok(0) => Err("the server closed the connection".into()),
            Ok(_) => Ok(line),
            Err(e) => Err(format!("read failed: {e}")),
        }
    }

    /// Reads the next line that is not a `MSG` (those are kept in [`messages`](Self::messages)).
    pub fn read_reply(&mut self) -> Result<String, String> {
        loop {
            let line = self.read_line()?;
            if line.starts_with("MSG ") {
                self.messages.push_back(line);
            } else {
                return Ok(line);
            }
        }
    }

    /// Sends a request and returns its reply. Panics (with the request) if none comes in time.
    pub fn request(&mut self, line: &str) -> String {
        self.send(line);
        self.read_reply()
            .unwrap_or_else(|e| panic!("no reply to {line:?}: {e}"))
    }

    /// The next `MSG` line (already received or arriving within the timeout).
    pub fn next_message(&mut self) -> Result<String, String> {
        if let Some(message) = self.messages.pop_front() {
            return Ok(message);
        }
        let line = self.read_line()?;
        if line.starts_with("MSG ") {
            Ok(line)
        } else {
            Err(format!("expected a MSG, got {line:?}"))
        }
    }

    /// True if the server closes the connection (EOF or reset) within the read timeout,
    /// skipping any lines (such as `BYE`) that come first.
    pub fn closes(&mut self) -> bool {
        let mut buf = [0u8; 4096];
        loop {
            match self.reader.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }

    /// Reads everything the server sends until it closes the connection (end of stream, or a
    /// reset once everything before it was read) and returns the bytes exactly. Panics if the
    /// connection is still open after the read timeout.
    pub fn read_to_close(&mut self) -> Vec<u8> {
        let mut received = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match self.reader.read(&mut buf) {
                Ok(0) => return received,
                Ok(n) => received.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return received,
                Err(e) => panic!(
                    "the server did not close the connection ({e}); it sent {:?}",
                    String::from_utf8_lossy(&received)
                ),
            }
        }
    }

    /// Reads lines until the connection closes (or a read times out) and returns the last one
    /// (empty if none came): what the client was told last, such as `BYE`.
    pub fn last_line(&mut self) -> String {
        let mut last = String::new();
        while let Ok(line) = self.read_line() {
            last = line;
        }
        last
    }

    /// Shuts down our sending side (half-close): the server sees end of stream.
    pub fn shutdown_write(&self) {
        let _ = self.stream().shutdown(Shutdown::Write);
    }

    /// Closes with a reset (RST) instead of a normal close: SO_LINGER with a zero timeout.
    pub fn reset(self) {
        let socket = socket2::SockRef::from(self.stream());
        let _ = socket.set_linger(Some(Duration::ZERO));
        drop(self);
    }

    /// The socket, for anything else.
    pub fn stream(&self) -> &TcpStream {
        self.reader.get_ref()
    }
}

/// Polls `condition` every 10 ms until it holds or `timeout` passes; returns whether it held.
/// For waiting on something observable (a process gone, a count back to baseline), never to
/// "give the server time".
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hello_and_who() {
        assert_eq!(
            parse_served("HELLO fork pid=10 tid=11"),
            Some(Served {
                model: "fork".into(),
                pid: 10,
                tid: 11
            })
        );
        assert_eq!(
            parse_served("OK model=thread pid=10 tid=12 client=3"),
            Some(Served {
                model: "thread".into(),
                pid: 10,
                tid: 12
            })
        );
        assert_eq!(parse_served("OK 3"), None);
        assert_eq!(parse_served("ERR x"), None);
    }

    fn panic_message(f: impl FnOnce() + std::panic::UnwindSafe) -> String {
        let payload = std::panic::catch_unwind(f).unwrap_err();
        match payload.downcast::<String>() {
            Ok(message) => *message,
            Err(payload) => payload.downcast_ref::<&str>().unwrap().to_string(),
        }
    }

    #[test]
    fn a_missing_tool_is_named_with_its_package() {
        let message = panic_message(|| {
            tool("no-such-tool-netlabs");
        });
        assert!(message.contains("`no-such-tool-netlabs`"), "{message}");
        assert_eq!(package_of_tool("ss"), "iproute2");
        assert_eq!(package_of_tool("prlimit"), "util-linux");
        let _ = tool("sh"); // found
    }

    #[test]
    fn too_few_descriptors_say_which_limit_and_how_to_raise_it() {
        let (soft, hard) = raise_descriptor_limit();
        assert_eq!(soft, hard, "the soft limit is raised to the hard one");
        need_descriptors(soft);
        let message = panic_message(|| need_descriptors(u64::MAX));
        assert!(message.contains("ulimit -Hn"), "{message}");
        assert!(message.contains("/etc/security/limits.conf"), "{message}");
    }

    #[test]
    fn scratch_files_live_in_this_checkouts_target_folder() {
        let dir = scratch_dir();
        assert!(dir.is_dir());
        let exe = std::env::current_exe().unwrap();
        assert!(exe.starts_with(dir.parent().unwrap()), "{}", dir.display());
        let _lock = file_lock("harness-self-test", true);
        assert!(dir.join("harness-self-test.lock").is_file());
    }

    #[test]
    fn an_unknown_binary_is_a_clear_failure() {
        let result = std::panic::catch_unwind(|| binary("no-such-server"));
        let message = *result.unwrap_err().downcast::<String>().unwrap();
        assert!(
            message.contains("no package ships a binary named"),
            "{message}"
        );
    }
}
