//! `--demo N`: see a server model at work with one command, no second terminal.
//!
//! The walkthrough starts the *same* server binary again as a separate process (without
//! `--demo`, on a port the OS picks), runs N scripted clients against it, one thread each, a
//! little apart so they connect in order, and prints a timeline on stdout: when each client
//! connected, when it was greeted (and by which pid/tid), what it sent and when the answer came.
//! The server's own narration appears on stderr in between. At the end it stops the server with
//! SIGTERM and prints a summary. With `--svg FILE` it also draws the timeline as a picture into
//! FILE (see [`svg`]).
//!
//! The server runs in its own process on purpose: a fork server must stay single-threaded, and
//! the walkthrough's client threads would break that if they shared its process.
//!
//! This is a teaching tool, not server plumbing, so it lives in its own crate beside `common`
//! (which still parses the `--demo N` and `--svg FILE` flags every server accepts). It is named
//! `walkthrough`, not `demo`, because each lab already has a `demo` module (its `src/demo.rs`,
//! what the scripted clients send): in a lab, `demo::run` is that lab's script and
//! `walkthrough::run` is the machinery that plays it, and one name never means both.

pub mod svg;

use std::ffi::OsString;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::Model;
use svg::{ClientTimeline, Language, Request};

/// What one demo client does: the request lines it sends, in order, one after another. Two
/// lines are not sent but tell the demo client to wait, so that a demo does not depend on timing:
///
/// - [`TOGETHER`]: wait until every client has been greeted and reached this line (only for
///   models that greet everyone at once: with lab01 it would wait forever, so it gives up after
///   30 s);
/// - `#messages N` ([`messages`]): wait until N `MSG` lines from other clients have arrived.
pub type Script = Vec<String>;

/// A script line: wait here until every demo client has reached it.
pub const TOGETHER: &str = "#together";

/// A script line: wait until `count` broadcasts (`MSG` lines) have arrived in all.
pub fn messages(count: u32) -> String {
    format!("#messages {count}")
}

/// How long a demo client waits at [`TOGETHER`] or for messages before giving up.
const DEMO_WAIT: Duration = Duration::from_secs(30);

/// A meeting point for the demo clients (a barrier that gives up after [`DEMO_WAIT`]).
struct Meeting {
    arrived: Mutex<u32>,
    all_here: Condvar,
    expected: u32,
}

impl Meeting {
    /// Waits until `expected` clients arrived; false if it gave up.
    fn arrive(&self) -> bool {
        let mut arrived = self.arrived.lock().unwrap_or_else(|p| p.into_inner());
        *arrived += 1;
        self.all_here.notify_all();
        let (arrived, timeout) = self
            .all_here
            .wait_timeout_while(arrived, DEMO_WAIT, |n| *n < self.expected)
            .unwrap_or_else(|p| p.into_inner());
        drop(arrived);
        !timeout.timed_out()
    }
}

/// Runs the demo for `model` with `clients` clients; `script(i)` gives client `i`'s requests
/// (clients are numbered from 1). `intro` is printed first: one or two sentences saying what to
/// watch for. Exits the process when done.
pub fn run(model: Model, clients: u32, intro: &str, script: impl Fn(u32) -> Script) -> ! {
    let command_line = CommandLine::read();
    // Create the picture's file first, so that a path we cannot write fails before the demo runs.
    let picture = command_line.svg.as_ref().map(|path| {
        let file = File::create(path).unwrap_or_else(|e| {
            common::exit_with_error(&format!("cannot create {}: {e}", path.display()))
        });
        (path, file)
    });
    let (mut server, port) = start_server(&command_line.server_args);
    let clock = Instant::now();
    println!(
        "== demo: {model} server (pid {}) on 127.0.0.1:{port}, {clients} clients ==",
        server.id()
    );
    println!("{intro}");
    println!("(timeline on stdout; the server's narration on stderr)\n");
    let timelines = run_clients(port, clients, clock, script);
    stop_server(&mut server);
    print_summary(model, &timelines);
    if let Some((path, mut file)) = picture {
        let picture = svg::render(model, &timelines, Language::from_locale());
        if let Err(e) = file.write_all(picture.as_bytes()) {
            common::exit_with_error(&format!("cannot write {}: {e}", path.display()));
        }
        println!("\ntimeline picture written to {}", path.display());
    }
    std::process::exit(0);
}

/// Starts `clients` clients against the server on `port`, one thread each, 100 ms apart, client
/// `i` following `script(i)`; returns what each lived through (times since `clock`) once all
/// are done.
fn run_clients(
    port: u16,
    clients: u32,
    clock: Instant,
    script: impl Fn(u32) -> Script,
) -> Vec<ClientTimeline> {
    let out = Arc::new(Mutex::new(()));
    let meeting = Arc::new(Meeting {
        arrived: Mutex::new(0),
        all_here: Condvar::new(),
        expected: clients,
    });
    let mut handles = Vec::new();
    for i in 1..=clients {
        let lines = script(i);
        let out = Arc::clone(&out);
        let meeting = Arc::clone(&meeting);
        handles.push(thread::spawn(move || {
            let mut timeline = ClientTimeline {
                client: i,
                ..ClientTimeline::default()
            };
            run_client(&mut timeline, port, lines, clock, &out, &meeting);
            timeline.left = timeline.connected.map(|_| clock.elapsed());
            timeline
        }));
        thread::sleep(Duration::from_millis(100)); // so they connect in order
    }
    handles.into_iter().filter_map(|h| h.join().ok()).collect()
}

/// The summary table: for each client, when it connected, how long until its `HELLO`, and who
/// served it.
fn print_summary(model: Model, timelines: &[ClientTimeline]) {
    println!("\n== summary ==");
    println!("client  connected  greeted after  served by");
    for t in timelines {
        let (greeted_after, served_by) = match (t.connected, &t.greeted) {
            (Some(connected), Some((greeted, by))) => (
                format!("{:.0} ms", (*greeted - connected).as_secs_f64() * 1000.0),
                format!("{model} {by}"),
            ),
            _ => ("never".into(), "-".into()),
        };
        println!(
            "{:>6}  {:>8.3}s  {:>12}  {served_by}",
            t.client,
            t.connected.unwrap_or_default().as_secs_f64(),
            greeted_after,
        );
    }
}

/// What the demo takes from its own command line, which clap has already checked: the server's
/// arguments (ours without `--demo N` and `--svg FILE`, which are the demo's own) and the path of
/// the picture.
struct CommandLine {
    server_args: Vec<OsString>,
    svg: Option<PathBuf>,
}

impl CommandLine {
    fn read() -> CommandLine {
        let mut server_args = Vec::new();
        let mut svg = None;
        let mut given = std::env::args_os().skip(1);
        while let Some(arg) = given.next() {
            let text = arg.to_string_lossy();
            if text == "--demo" {
                given.next();
            } else if text == "--svg" {
                svg = given.next().map(PathBuf::from);
            } else if let Some(path) = text.strip_prefix("--svg=") {
                svg = Some(PathBuf::from(path));
            } else if !text.starts_with("--demo=") {
                server_args.push(arg);
            }
        }
        CommandLine { server_args, svg }
    }
}

/// Runs one demo client's script, printing each step on the timeline and recording it in
/// `timeline`. It stops early when the server closes or cannot be reached.
fn run_client(
    timeline: &mut ClientTimeline,
    port: u16,
    lines: Script,
    clock: Instant,
    out: &Mutex<()>,
    meeting: &Meeting,
) {
    let mut client = DemoClient {
        timeline,
        clock,
        out,
    };
    let Some((stream, connected)) = client.connect(port) else {
        return;
    };
    let mut reader = BufReader::new(&stream);
    if !client.await_greeting(&mut reader, connected) {
        return;
    }
    for request in lines {
        let carry_on = if request == TOGETHER {
            client.meet(meeting);
            true
        } else if let Some(count) = broadcasts_to_await(&request) {
            client.await_broadcasts(&mut reader, count)
        } else {
            client.send_and_await_reply(&stream, &mut reader, request)
        };
        if !carry_on {
            return;
        }
    }
}

/// The N of a `#messages N` script line (see [`messages`]).
fn broadcasts_to_await(request: &str) -> Option<usize> {
    request
        .strip_prefix("#messages ")
        .and_then(|n| n.parse::<usize>().ok())
}

/// One demo client at work: what it has lived through so far, the demo's clock, and the lock
/// that keeps the clients' lines on stdout whole.
struct DemoClient<'a> {
    timeline: &'a mut ClientTimeline,
    clock: Instant,
    out: &'a Mutex<()>,
}

impl DemoClient<'_> {
    /// Prints one line of the timeline: the time, the client, `what` happened.
    fn say(&self, what: String) {
        let _guard = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let i = self.timeline.client;
        println!(
            "{:8.3}s  client {i}  {what}",
            self.clock.elapsed().as_secs_f64()
        );
        let _ = std::io::stdout().flush();
    }

    /// Connects to the server; returns the connection and when the handshake was done.
    fn connect(&mut self, port: u16) -> Option<(TcpStream, Duration)> {
        let stream = match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => s,
            Err(e) => {
                self.say(format!("could not connect: {e}"));
                return None;
            }
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
        let connected = self.clock.elapsed();
        self.timeline.connected = Some(connected);
        self.say("connected (the kernel finished the handshake; now waiting for HELLO)".into());
        Some((stream, connected))
    }

    /// Waits for the `HELLO` line and prints how long it took since `connected`; false if the
    /// server closed first.
    fn await_greeting(&mut self, reader: &mut BufReader<&TcpStream>, connected: Duration) -> bool {
        let Some(hello) = read_line(reader) else {
            self.say("the server closed before greeting".into());
            return false;
        };
        let greeted = self.clock.elapsed();
        self.say(format!(
            "<- {hello}   (waited {:.0} ms)",
            (greeted - connected).as_secs_f64() * 1000.0
        ));
        // "HELLO <model> pid=.. tid=..": keep what tells who serves us.
        let served_by = hello.splitn(3, ' ').nth(2).unwrap_or_default().to_string();
        self.timeline.greeted = Some((greeted, served_by));
        true
    }

    /// [`TOGETHER`]: waits until every client has reached this line (or the meeting gave up).
    fn meet(&self, meeting: &Meeting) {
        self.say("waits until every client has been greeted".into());
        if !meeting.arrive() {
            self.say("gave up waiting for the others".into());
        }
    }

    /// `#messages count`: reads until `count` broadcasts have arrived in all; false if the
    /// server closed first.
    fn await_broadcasts(&mut self, reader: &mut BufReader<&TcpStream>, count: usize) -> bool {
        let received = self.timeline.broadcasts.len();
        if received < count {
            self.say(format!("waits for {} more broadcast(s)", count - received));
        }
        while self.timeline.broadcasts.len() < count {
            match read_line(reader) {
                Some(line) if line.starts_with("MSG ") => self.record_broadcast(line),
                Some(line) => self.say(format!("<- {line}")),
                None => {
                    self.say("stopped waiting: no more broadcasts came".into());
                    return false;
                }
            }
        }
        true
    }

    /// Sends `request` and reads until its reply, noting the broadcasts (`MSG` lines from other
    /// clients) that may come first; false if the server is gone.
    fn send_and_await_reply(
        &mut self,
        mut writer: &TcpStream,
        reader: &mut BufReader<&TcpStream>,
        request: String,
    ) -> bool {
        self.say(format!("-> {request}"));
        let line = format!("{request}\n");
        self.timeline.requests.push(Request {
            text: request,
            sent: self.clock.elapsed(),
            answered: None,
        });
        if writer.write_all(line.as_bytes()).is_err() {
            self.say("the server is gone".into());
            return false;
        }
        loop {
            match read_line(reader) {
                Some(line) if line.starts_with("MSG ") => self.record_broadcast(line),
                Some(line) => {
                    if let Some(last) = self.timeline.requests.last_mut() {
                        last.answered = Some(self.clock.elapsed());
                    }
                    self.say(format!("<- {line}"));
                    return true;
                }
                None => {
                    self.say("the server closed the connection".into());
                    return false;
                }
            }
        }
    }

    /// Notes a broadcast (`MSG` line) that arrived now, and prints it.
    fn record_broadcast(&mut self, line: String) {
        self.timeline.broadcasts.push(self.clock.elapsed());
        self.say(format!("<- {line}   (a broadcast)"));
    }
}

/// One line from the server without its line ending; `None` at end of stream or on an error
/// (the read timeout included).
fn read_line(reader: &mut BufReader<&TcpStream>) -> Option<String> {
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(line.trim_end().to_string()),
    }
}

/// Starts this very program again as the server with `args` (ours without the demo's own flags),
/// on port 0 unless `--port` was given. Returns the child and the port from its `listening on`
/// line.
fn start_server(args: &[OsString]) -> (Child, u16) {
    let exe = std::env::current_exe()
        .unwrap_or_else(|e| common::exit_with_error(&format!("cannot find my own binary: {e}")));
    let mut args = args.to_vec();
    if !args.iter().any(|a| {
        let a = a.to_string_lossy();
        a == "--port" || a.starts_with("--port=")
    }) {
        args.extend(["--port".into(), "0".into()]);
    }
    let mut child = Command::new(exe)
        .args(&args)
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| common::exit_with_error(&format!("cannot start the server: {e}")));
    let stdout = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    let _ = BufReader::new(stdout).read_line(&mut line);
    let port = line
        .trim()
        .strip_prefix("listening on ")
        .and_then(|addr| addr.rsplit(':').next())
        .and_then(|p| p.parse().ok());
    match port {
        Some(port) => (child, port),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            common::exit_with_error("the server did not start (see its message above)");
        }
    }
}

fn stop_server(server: &mut Child) {
    let pid = nix::unistd::Pid::from_raw(server.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = server.try_wait() {
            println!("\nserver stopped with SIGTERM: {status}");
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = server.kill();
    let _ = server.wait();
    println!("\nserver did not stop within 10 s of SIGTERM; killed it");
}
