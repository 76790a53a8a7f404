//! Hardening: one matrix of bad input and faults, applied to every server and its variants.
//!
//! The [`matrix!`] at the bottom lists the server configurations (lab01 to lab05, with prefork,
//! pool and each multiplex API); every case below is written once, as a function of a
//! [`Config`], and the macro makes one `#[test]` per (configuration, case), so a failure names
//! both: `multiplex_select::pipelined_requests`. A new server gets every case by adding one line.
//!
//! Each case, through [`check`]:
//! 1. starts the server and takes a baseline of what it holds (descriptors, threads, children,
//!    summed over the server and its children) after startup and one served client;
//! 2. does its thing and checks the contract's replies;
//! 3. checks that a fresh client is still served (after the case's own clients have closed: the
//!    iterative server serves one at a time);
//! 4. waits (bounded) for the descriptors, threads and children to be back at the baseline;
//! 5. stops the server with SIGTERM: exit status 0, nothing on stdout but `listening on`.
//!
//! `soak` (ignored by default, 10,000 connections per server) is run with
//! `cargo test -p tests --test hardening -- --ignored --test-threads 1`. The bench runs the same
//! soak over every server and reports the figures (RSS before, after each tenth and after;
//! processes, threads, descriptors; connections/s; a verdict):
//! `cargo run --release -p bench -- --workloads soak` (docs/benchmarks.md, "Soak").
//! The framer underneath every server has property tests over any bytes cut into any chunks:
//! `cargo test -p common --test framing_props`.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tests::ipc::{startup_lock, QueueBudget};
use tests::{observe, procfs, wait_until, Client, Server};

/// One server configuration of the matrix.
struct Config {
    binary: &'static str,
    args: &'static [&'static str],
    /// Serves one client at a time (lab01): its accept queue is short (backlog 5), so a burst of
    /// connections must not outrun it.
    one_at_a_time: bool,
}

/// How long the server may take to be back at its baseline after a case.
const SETTLE: Duration = Duration::from_secs(10);

/// A server started for a case, with what lab05's servers need while they run: a share of the
/// user's POSIX message-queue budget (each child makes a queue; at most 16 children here, see
/// the matrix) held until the server is gone. Fields drop in order: the server first.
struct Started {
    server: Server,
    _budget: Option<QueueBudget>,
}

impl std::ops::Deref for Started {
    type Target = Server;
    fn deref(&self) -> &Server {
        &self.server
    }
}

impl std::ops::DerefMut for Started {
    fn deref_mut(&mut self) -> &mut Server {
        &mut self.server
    }
}

/// Starts `binary` with `args`. An `ipc-server` start takes the lab05 startup lock (a starting
/// server removes dead servers' IPC objects, which lab05's tests of that cleanup watch: see
/// [`startup_lock`]) and, with POSIX IPC, a share of the queue budget.
fn start(binary: &str, args: &[&str]) -> Started {
    if binary != "ipc-server" {
        return Started {
            server: Server::start(binary, args),
            _budget: None,
        };
    }
    let sysv = args.windows(2).any(|w| w == ["--ipc", "sysv"]);
    let budget = (!sysv).then(|| QueueBudget::take(16));
    let _lock = startup_lock(false);
    Started {
        server: Server::start(binary, args),
        _budget: budget,
    }
}

/// What a server holds, summed over the server process and its children.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Usage {
    fds: usize,
    threads: usize,
    /// Children, live or zombie (a zombie is a child not reaped).
    children: usize,
}

fn usage(server: &Server) -> Usage {
    let children = server.children();
    let pids = || std::iter::once(server.pid()).chain(children.iter().copied());
    Usage {
        fds: pids().map(procfs::fd_count).sum(),
        threads: pids().map(|p| procfs::threads(p).len()).sum(),
        children: children.len(),
    }
}

/// What the server holds once it stops changing: the same for 100 ms (waiting at most 5 s).
///
/// Only for baselines: if it is taken too early (something still starting or ending), it is
/// wrong in a way that makes [`back_to`] fail, never pass.
fn settled_usage(server: &Server) -> Usage {
    let mut last = usage(server);
    let mut same_since = Instant::now();
    wait_until(Duration::from_secs(5), || {
        let now = usage(server);
        if now != last {
            last = now;
            same_since = Instant::now();
        }
        same_since.elapsed() >= Duration::from_millis(100)
    });
    last
}

/// Greets a client, has it ECHO and QUIT, and checks the server closes the connection. Returns
/// who served it (its `HELLO`).
fn serve_one(server: &Server, text: &str) -> tests::Served {
    let mut client = server.greeted();
    assert_eq!(
        client.request(&format!("ECHO {text}")),
        format!("OK {text}")
    );
    assert_eq!(client.request("QUIT"), "OK bye");
    assert!(client.closes(), "the server closes after QUIT");
    client.hello.expect("greeted")
}

/// Waits until the thread or child process that served a client that has left is gone (unless
/// it belongs to a pool, `--prefork` or `--pool`, which keeps it for the next client, or it is
/// the server's main thread). Panics if it stays: one per client that never ends is a leak.
fn serving_task_ends(server: &Server, args: &[&str], served: &tests::Served) {
    let pooled = args.iter().any(|a| *a == "--prefork" || *a == "--pool");
    if pooled || served.tid == server.pid() {
        return;
    }
    let ended = if served.pid == server.pid() {
        wait_until(SETTLE, || {
            !procfs::threads(server.pid()).contains(&served.tid)
        })
    } else {
        wait_until(SETTLE, || !server.children().contains(&served.pid))
    };
    assert!(
        ended,
        "what served a client that left ({served:?}) is still there"
    );
}

/// Waits until the server holds what it held at `baseline`, or fails saying what differs.
fn back_to(server: &Server, baseline: &Usage, after: &str) {
    let mut now = usage(server);
    let settled = wait_until(SETTLE, || {
        now = usage(server);
        now == *baseline
    });
    assert!(
        settled,
        "after {after}: the server holds {now:?}, not its baseline {baseline:?}; stderr ends:\n{}",
        tail(&server.stderr())
    );
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Starts `config` (plus `extra` flags), takes the baseline, runs `case`, then checks that a
/// fresh client is served, that everything is back at the baseline, and that SIGTERM stops the
/// server with status 0 and nothing extra on stdout.
fn check(config: &Config, extra: &[&str], case: impl FnOnce(&Server)) {
    let args: Vec<&str> = config.args.iter().chain(extra).copied().collect();
    let mut server = start(config.binary, &args);
    // The baseline: after startup (prefork children, pool threads, the event loop's descriptors
    // are made after `listening on`) and one served client (lazy initialisation), once it holds
    // still.
    let warm_up = serve_one(&server, "warming up");
    // Not while the warm-up client's thread or child is still ending: it would inflate the
    // baseline, and every count afterwards would look short of it.
    serving_task_ends(&server, &args, &warm_up);
    let baseline = settled_usage(&server);
    case(&server);
    serve_one(&server, "fresh client after the case");
    back_to(&server, &baseline, "the case and a fresh client");
    let status = server.stop_with(Signal::SIGTERM, Duration::from_secs(10));
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM; stderr ends:\n{}",
        tail(&server.stderr())
    );
    observe::assert_stdout_is_only_the_listening_line(&server);
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.binary, self.args.join(" "))
    }
}

const TRY: &str = "try ECHO, WHO, INCR, SLEEP, SAY or QUIT";

// ---- The cases. Each is a function of the configuration. ----

/// 4,096 bytes is a line; 4,097 is `ERR line too long`, and the next line is answered.
fn line_of_4097_bytes(config: &Config) {
    check(config, &[], |server| {
        let mut client = server.greeted();
        let fits = format!("ECHO {}", "a".repeat(4096 - 5));
        assert_eq!(client.request(&fits), format!("OK {}", &fits[5..]));
        let over = format!("ECHO {}", "b".repeat(4097 - 5));
        assert_eq!(client.request(&over), "ERR line too long");
        // With `\r\n`, the `\r` does not count.
        client.send_raw(format!("{fits}\r\n").as_bytes());
        assert_eq!(client.read_reply(), Ok(format!("OK {}", &fits[5..])));
        assert_eq!(client.request("ECHO after"), "OK after");
    });
}

/// A megabyte without a newline: one `ERR line too long` (as soon as it is known), the rest of
/// the line is thrown away, and the next request is answered normally.
fn megabyte_without_newline(config: &Config) {
    check(config, &[], |server| {
        let mut client = server.greeted();
        // The server answers with one short line while it reads, so one thread can write it all.
        client.send_raw(&vec![b'x'; 1 << 20]);
        client.send_raw(b"still the same line\nECHO after\n");
        assert_eq!(client.read_reply().as_deref(), Ok("ERR line too long"));
        assert_eq!(
            client.read_reply().as_deref(),
            Ok("OK after"),
            "exactly one ERR for the whole over-long line"
        );
    });
}

/// Bytes that are not UTF-8: `ERR invalid utf-8`; the connection stays usable.
fn invalid_utf8(config: &Config) {
    check(config, &[], |server| {
        let mut client = server.greeted();
        for bad in [
            &b"ECHO \xff\xfe\n"[..],
            b"\xc3\n",
            b"ECHO caf\xc3\r\n",
            b"\x80ECHO\n",
        ] {
            client.send_raw(bad);
            assert_eq!(
                client.read_reply().as_deref(),
                Ok("ERR invalid utf-8"),
                "{bad:?}"
            );
        }
        assert_eq!(client.request("ECHO café"), "OK café");
    });
}

/// NUL is a valid UTF-8 character: inside a line it is text like any other, echoed as sent; a
/// verb made of it is an unknown verb, quoted with escapes (no raw NUL in the error).
fn nul_bytes(config: &Config) {
    check(config, &[], |server| {
        let mut client = server.greeted();
        client.send_raw(b"ECHO a\0b\0\n");
        assert_eq!(client.read_raw_line(), Ok(b"OK a\0b\0\n".to_vec()));
        client.send_raw(b"\0\n");
        assert_eq!(
            client.read_raw_line(),
            Ok(format!("ERR unknown command \"\\0\"; {TRY}\n").into_bytes())
        );
        client.send_raw(b"WHO\0\n");
        assert_eq!(
            client.read_reply(),
            Ok(format!("ERR unknown command \"WHO\\0\"; {TRY}"))
        );
        assert_eq!(client.request("INCR").split(' ').next(), Some("OK"));
    });
}

/// Empty lines (`\n`, `\r\n`, only spaces) are `ERR empty line`; the connection stays usable.
fn empty_lines(config: &Config) {
    check(config, &[], |server| {
        let mut client = server.greeted();
        client.send_raw(b"\n\r\n   \n \r\n");
        for _ in 0..4 {
            assert_eq!(client.read_reply(), Ok(format!("ERR empty line; {TRY}")));
        }
        assert_eq!(client.request("ECHO after"), "OK after");
    });
}

/// `\r\n` works like `\n` (the `\r` is dropped, not echoed); the server ends its lines with `\n`.
fn crlf_line_ends(config: &Config) {
    check(config, &[], |server| {
        let mut client = server.greeted();
        client.send_raw(b"ECHO telnet\r\nwho\r\nECHO inner\rcr\r\nQUIT\r\n");
        assert_eq!(client.read_raw_line(), Ok(b"OK telnet\n".to_vec()));
        let who = client.read_raw_line().unwrap();
        assert!(
            who.starts_with(b"OK model=") && !who.contains(&b'\r'),
            "{who:?}"
        );
        assert_eq!(client.read_raw_line(), Ok(b"OK inner\rcr\n".to_vec()));
        assert_eq!(client.read_raw_line(), Ok(b"OK bye\n".to_vec()));
        assert!(client.closes());
    });
}

/// 10,000 requests in one write: all answered, in order. We read while a thread writes, or both
/// sides' socket buffers would fill and deadlock.
fn pipelined_requests(config: &Config) {
    const COUNT: usize = 10_000;
    check(config, &[], |server| {
        let mut client = server.greeted();
        let requests: String = (0..COUNT).map(|i| format!("ECHO {i}\n")).collect();
        let mut writer = client.stream().try_clone().expect("clone");
        let sender = thread::spawn(move || writer.write_all(requests.as_bytes()));
        for i in 0..COUNT {
            match client.read_reply() {
                Ok(reply) if reply == format!("OK {i}") => {}
                other => panic!("reply {i} of {COUNT}: {other:?}"),
            }
        }
        sender.join().expect("writer").expect("write the requests");
        assert_eq!(client.request("QUIT"), "OK bye");
        assert!(client.closes());
    });
}

/// A request sent one byte per write (a multi-byte character split too): nothing is answered
/// before its `\n`, then exactly one reply.
fn one_byte_writes(config: &Config) {
    check(config, &[], |server| {
        let mut client = server.greeted();
        client.stream().set_nodelay(true).expect("TCP_NODELAY");
        for byte in "ECHO 한 byte at a time".bytes() {
            client.send_raw(&[byte]);
        }
        assert!(
            client.still_waiting(Duration::from_millis(300)),
            "answered before the line was complete"
        );
        client.send_raw(b"\n");
        assert_eq!(client.read_reply().as_deref(), Ok("OK 한 byte at a time"));
        assert_eq!(client.request("ECHO next"), "OK next");
    });
}

/// A client that shuts down its sending side after its requests still gets every reply, then
/// the server closes; an unfinished last line (no `\n`) is discarded without a reply.
fn half_close(config: &Config) {
    check(config, &[], |server| {
        let mut client = server.greeted();
        client.send_raw(b"INCR\nECHO before half-close\nECHO never finished");
        client.shutdown_write();
        let incr = client.read_reply().unwrap();
        assert!(incr.starts_with("OK "), "{incr:?}");
        assert_eq!(client.read_reply().as_deref(), Ok("OK before half-close"));
        assert_eq!(
            client.read_raw_line(),
            Err("the server closed the connection".to_string()),
            "after the two replies the server closes: the unfinished line gets none"
        );
    });
}

/// A reset (RST) in the middle of a line, and one while a reply is on its way: the server
/// drops that client (a failed write must not kill it: SIGPIPE) and goes on.
fn reset_mid_line(config: &Config) {
    check(config, &[], |server| {
        let mut client = server.greeted();
        client.send_raw(b"ECHO this line never ends");
        client.reset();
        let mut client = server.greeted();
        client.send_raw(b"SLEEP 200\nECHO the reply meets a reset\n");
        client.reset();
        // Before the fresh client: a connection that will be reset before it is even accepted
        // (or greeted) by the servers that are busy.
        let mut client = Client::connect(server.addr);
        client.send_raw(b"ECHO queued");
        client.reset();
    });
}

/// 1,000 connections that close without sending anything, opened 50 at a time (the iterative
/// server: 5 at a time, its backlog), waiting for the accept queue to empty between bursts so
/// that no SYN is dropped (a dropped SYN costs a one-second retry).
fn storm_of_silent_connections(config: &Config) {
    const STORM: usize = 1_000;
    check(config, &[], |server| {
        let burst = if config.one_at_a_time { 5 } else { 50 };
        let started = Instant::now();
        let mut opened = 0;
        while opened < STORM {
            let streams: Vec<TcpStream> = (0..burst.min(STORM - opened))
                .map(|_| {
                    TcpStream::connect_timeout(&server.addr, Duration::from_secs(10))
                        .expect("connect")
                })
                .collect();
            opened += streams.len();
            drop(streams);
            assert!(
                server.accept_queue_reaches(0),
                "the accept queue did not empty after {opened} connections; stderr ends:\n{}",
                tail(&server.stderr())
            );
        }
        eprintln!("{config:?}: {STORM} connections in {:?}", started.elapsed());
    });
}

/// SIGTERM while a client streams an endless line: the server still stops as the contract says
/// (`ERR line too long`, then `BYE`, exit status 0, no process left), though no line ever ends.
fn sigterm_during_an_endless_line(config: &Config) {
    // More than the kernel's socket buffers can hold: once it is sent, the server is reading.
    const READING: usize = 16 << 20;
    let mut server = start(config.binary, config.args);
    let mut client = server.greeted();
    let mut writer = client.stream().try_clone().expect("clone");
    let sent = Arc::new(AtomicUsize::new(0));
    // Writes until the server closes the connection (or the process holding it is gone).
    let streaming = {
        let sent = Arc::clone(&sent);
        thread::spawn(move || {
            let chunk = [b'x'; 16 * 1024];
            while writer.write_all(&chunk).is_ok() {
                sent.fetch_add(chunk.len(), Ordering::Relaxed);
            }
        })
    };
    assert!(
        wait_until(SETTLE, || sent.load(Ordering::Relaxed) >= READING),
        "the server does not read the endless line"
    );
    let status = server.stop_with(Signal::SIGTERM, Duration::from_secs(10));
    assert!(
        status.success(),
        "{status}; stderr ends:\n{}",
        tail(&server.stderr())
    );
    let mut lines = Vec::new();
    while let Ok(line) = client.read_line() {
        lines.push(line);
    }
    assert_eq!(
        lines,
        ["ERR line too long", "BYE"],
        "what the client is told; stderr ends:\n{}",
        tail(&server.stderr())
    );
    assert!(
        wait_until(SETTLE, || procfs::live_in_group(server.pid()).is_empty()),
        "processes of the server are left: {:?}",
        procfs::live_in_group(server.pid())
    );
    streaming.join().expect("the streaming thread");
}

/// `SLEEP` outside 0..=10,000 ms, or not a whole number: `ERR`, no sleep.
fn sleep_out_of_range(config: &Config) {
    check(config, &[], |server| {
        let mut client = server.greeted();
        let started = Instant::now();
        for bad in [
            "SLEEP 10001",
            "SLEEP -1",
            "SLEEP 1.5",
            "SLEEP 1e3",
            "SLEEP 99999999999999999999999",
            "SLEEP",
            "SLEEP soon",
        ] {
            assert_eq!(
                client.request(bad),
                "ERR SLEEP needs a whole number of milliseconds from 0 to 10000",
                "{bad}"
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "an ERR must not sleep"
        );
        assert_eq!(client.request("sleep 0"), "OK slept 0");
    });
}

/// Unknown verbs and extra arguments: `ERR` with the reason (a long verb cut to 32 characters);
/// `PANIC` stays off without `--allow-panic`.
fn unknown_verbs(config: &Config) {
    check(config, &[], |server| {
        let mut client = server.greeted();
        assert_eq!(
            client.request("FLY me to the moon"),
            format!("ERR unknown command \"FLY\"; {TRY}")
        );
        let long = "V".repeat(3000);
        assert_eq!(
            client.request(&long),
            format!("ERR unknown command \"{}...\"; {TRY}", "V".repeat(32))
        );
        assert_eq!(client.request("WHO are you"), "ERR WHO takes no argument");
        assert_eq!(client.request("QUIT now"), "ERR QUIT takes no argument");
        assert_eq!(
            client.request("PANIC"),
            "ERR PANIC is disabled; start the server with --allow-panic"
        );
        assert_eq!(client.request("eChO still usable"), "OK still usable");
    });
}

/// `--idle-timeout 1`: a silent client is told `BYE idle` and closed, about a second after it
/// was greeted (not before, nor seconds later); the server goes on.
fn idle_timeout(config: &Config) {
    check(config, &["--idle-timeout", "1"], |server| {
        let mut silent = server.greeted();
        let started = Instant::now();
        assert_eq!(silent.read_line().as_deref(), Ok("BYE idle"));
        let took = started.elapsed();
        assert!(silent.closes());
        assert!(
            took >= Duration::from_millis(800) && took < Duration::from_millis(3000),
            "BYE idle after {took:?}, with a 1 s idle timeout"
        );
    });
}

/// SIGTERM while the only client is in a `SLEEP 10000`: the sleep is cut short, the client is
/// told `BYE`, and the server exits 0 within 2 seconds (the contract: "the signal does not wait
/// for it").
fn sigterm_during_a_sleep(config: &Config) {
    let mut server = start(config.binary, config.args);
    let mut sleeper = server.greeted();
    observe::start_a_long_sleep(&server, &mut sleeper);
    let asked = Instant::now();
    let status = server.stop_with(Signal::SIGTERM, Duration::from_secs(12));
    let took = asked.elapsed();
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM");
    assert!(
        took < Duration::from_secs(2),
        "exited {took:?} after SIGTERM: the 10 s SLEEP was not cut short"
    );
    observe::assert_sleeper_told_bye(&mut sleeper, &format!("{config:?}"));
    observe::assert_stdout_is_only_the_listening_line(&server);
    assert!(
        wait_until(SETTLE, || procfs::live_in_group(server.pid()).is_empty()),
        "processes of the server are left: {:?}",
        procfs::live_in_group(server.pid())
    );
}

/// Exposure: the default address is 127.0.0.1; `--host 0.0.0.0` is served but warns on stderr,
/// even with `--quiet` (a security warning is not narration).
fn exposure(config: &Config) {
    let mut args: Vec<&str> = config.args.to_vec();
    args.push("--quiet");
    let mut local = start(config.binary, &args);
    assert_eq!(local.addr.ip().to_string(), "127.0.0.1", "the default host");
    serve_one(&local, "quiet and local");
    assert!(
        !local.stderr().contains("WARNING"),
        "a warning for 127.0.0.1: {:?}",
        local.stderr()
    );
    let status = local.stop_with(Signal::SIGTERM, Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
    drop(local);

    check(config, &["--host", "0.0.0.0", "--quiet"], |server| {
        assert_eq!(server.addr.ip().to_string(), "0.0.0.0");
        assert!(
            server.narrates("reachable from the network"),
            "no warning on stderr for --host 0.0.0.0 --quiet: {:?}",
            server.stderr()
        );
        let loopback = SocketAddr::from(([127, 0, 0, 1], server.port()));
        let mut client = Client::connect(loopback);
        client.read_hello();
        assert_eq!(client.request("ECHO via 127.0.0.1"), "OK via 127.0.0.1");
    });
}

/// The soak: 10,000 connections, 200 at a time, each HELLO, ECHO, QUIT; memory (RSS of the
/// server and its children), descriptors, threads and processes must not grow.
fn soak(config: &Config) {
    const CONNECTIONS: usize = 10_000;
    const AT_ONCE: usize = 200;
    let mut args: Vec<&str> = config.args.to_vec();
    // 200 clients at once: those the server does not serve yet wait in the accept queue.
    args.extend(["--quiet", "--backlog", "512"]);
    let server = start(config.binary, &args);
    let rss = |server: &Server| -> u64 {
        std::iter::once(server.pid())
            .chain(server.children())
            .filter_map(procfs::rss_kib)
            .sum()
    };
    let round = |count: usize| {
        let per_thread = count / AT_ONCE;
        let addr = server.addr;
        let workers: Vec<_> = (0..AT_ONCE)
            .map(|w| {
                thread::spawn(move || {
                    for i in 0..per_thread {
                        let mut client = Client::connect(addr);
                        client.read_hello();
                        let text = format!("soak {w}.{i}");
                        assert_eq!(
                            client.request(&format!("ECHO {text}")),
                            format!("OK {text}")
                        );
                        assert_eq!(client.request("QUIT"), "OK bye");
                        assert!(client.closes());
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().expect("a soak client failed");
        }
    };
    // Warm up with one round of 200, so lazily grown things (thread stacks, allocator arenas)
    // are there before we measure.
    round(AT_ONCE);
    let baseline = settled_usage(&server);
    let rss_before = rss(&server);
    let started = Instant::now();
    round(CONNECTIONS);
    let took = started.elapsed();
    back_to(&server, &baseline, "the soak");
    let rss_after = rss(&server);
    eprintln!(
        "SOAK {config:?}: {CONNECTIONS} connections ({AT_ONCE} at a time) in {took:.1?}; \
         RSS {rss_before} KiB -> {rss_after} KiB; {baseline:?}"
    );
    assert!(
        rss_after <= rss_before + 8 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
}

// ---- The matrix: every configuration gets every case. ----

/// One `#[test]` per case, for the `CONFIG` of the module it is expanded in.
macro_rules! every_case {
    ($($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                super::$case(&CONFIG)
            }
        )*

        #[test]
        #[ignore = "10,000 connections: run with --ignored --test-threads 1"]
        fn soak() {
            super::soak(&CONFIG)
        }
    };
}

/// One module per configuration, holding its `CONFIG` and every case.
macro_rules! matrix {
    ($($name:ident: $binary:literal $([$($arg:literal),*])? $(, $one:ident)?;)*) => {
        $(
            mod $name {
                use super::Config;

                const CONFIG: Config = Config {
                    binary: $binary,
                    args: &[$($($arg),*)?],
                    one_at_a_time: matrix!(@one $($one)?),
                };

                every_case!(
                    line_of_4097_bytes,
                    megabyte_without_newline,
                    invalid_utf8,
                    nul_bytes,
                    empty_lines,
                    crlf_line_ends,
                    pipelined_requests,
                    one_byte_writes,
                    half_close,
                    reset_mid_line,
                    storm_of_silent_connections,
                    sigterm_during_an_endless_line,
                    sigterm_during_a_sleep,
                    sleep_out_of_range,
                    unknown_verbs,
                    idle_timeout,
                    exposure,
                );
            }
        )*
    };
    (@one one_at_a_time) => { true };
    (@one) => { false };
}

matrix! {
    iterative: "iterative-server", one_at_a_time;
    fork_per_client: "fork-server";
    fork_prefork: "fork-server" ["--prefork", "3"];
    thread_per_client: "thread-server";
    thread_pool: "thread-server" ["--pool", "4"];
    multiplex_select: "multiplex-server" ["--api", "select"];
    multiplex_poll: "multiplex-server" ["--api", "poll"];
    multiplex_epoll: "multiplex-server" ["--api", "epoll"];
    multiplex_epoll_edge: "multiplex-server" ["--api", "epoll", "--edge"];
    // At most 16 children, so 16 message queues: two of these tests at once stay well within the
    // user's queue budget (RLIMIT_MSGQUEUE: 96 queues), with room for another lab05 test.
    ipc: "ipc-server" ["--max-children", "16"];
    // System V: one queue for the whole server, whatever the number of children.
    ipc_sysv: "ipc-server" ["--max-children", "16", "--ipc", "sysv"];
}
