//! Scenarios that several labs' tests share, written against the contract only: what the server
//! replies, its exit status, its stdout, and the events the system shows in `/proc` (a thread
//! asleep, a connection closed), never the server's narration.

use std::io::{BufRead, BufReader, Write};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::{Client, Server};

/// Sends `SLEEP 10000` for `client` and waits until `server` is working on it: it has read the
/// line (`ss`), and the thread that serves the client sleeps in the kernel (`/proc`); see
/// [`Server::is_working_on_request_of`]. If that is never seen, the test goes on: the `SLEEP` is
/// then at worst about to start, which makes the test weaker, never wrong.
///
/// (Sending a request in the same write and waiting for its reply would not do: a server may
/// answer every line it has read before it writes any reply, as an event loop does, and then
/// that reply only comes once the `SLEEP` is over.)
pub fn start_a_long_sleep(server: &Server, client: &mut Client) {
    client.send("SLEEP 10000");
    if !server.is_working_on_request_of(client) {
        eprintln!("the server was never seen working on the SLEEP; signalling anyway");
    }
}

/// What a client that was in a `SLEEP 10000` when the server was told to stop receives: `BYE`,
/// perhaps after the cut-short `OK slept <ms>` (the contract leaves that reply to the server),
/// then the end of the connection. Panics otherwise.
pub fn assert_sleeper_told_bye(sleeper: &mut Client, what: &str) {
    let mut lines = Vec::new();
    while let Ok(line) = sleeper.read_line() {
        lines.push(line);
        if lines.len() > 2 {
            break;
        }
    }
    let told_bye = match lines.as_slice() {
        [bye] => bye == "BYE",
        [slept, bye] => slept.starts_with("OK slept ") && bye == "BYE",
        _ => false,
    };
    assert!(
        told_bye,
        "{what}: the sleeping client should get BYE (after at most an `OK slept <ms>`), then the \
         end of the connection; it got {lines:?}"
    );
}

/// SIGTERM while one client is in a `SLEEP 10000` and another is idle: the server cuts the
/// sleep short (the contract: "the signal does not wait for it"), tells both `BYE`, and exits 0
/// within 2 seconds; its stdout held nothing but the `listening on` line.
pub fn sigterm_cuts_a_sleep_short(server: &mut Server, what: &str) {
    let mut idle = server.greeted();
    let mut sleeper = server.greeted();
    assert_eq!(idle.request("ECHO idle"), "OK idle");
    start_a_long_sleep(server, &mut sleeper);
    let asked = Instant::now();
    server.signal(Signal::SIGTERM);
    let status = server.wait_exit(Duration::from_secs(12));
    let took = asked.elapsed();
    let status = status.unwrap_or_else(|| {
        panic!("{what}: the server did not exit within 12 s of SIGTERM during a 10 s SLEEP")
    });
    assert_eq!(status.code(), Some(0), "{what}: exit status after SIGTERM");
    assert!(
        took < Duration::from_secs(2),
        "{what}: exited {took:?} after SIGTERM: the 10 s SLEEP was not cut short"
    );
    assert_sleeper_told_bye(&mut sleeper, what);
    assert_eq!(idle.last_line(), "BYE", "{what}: the idle client is told");
    assert_stdout_is_only_the_listening_line(server);
}

/// Nothing but the `listening on` line on stdout: call it once the server has exited.
pub fn assert_stdout_is_only_the_listening_line(server: &Server) {
    assert_eq!(
        server.stdout_after_listening(),
        "",
        "stdout carries exactly one line, `listening on IP:PORT` (narration goes to stderr)"
    );
}

/// `INCR\nINCR` without the final newline, then the end of the stream (half-close): exactly one
/// `OK <n>` (the unfinished line is discarded without a reply), then the server closes; the next
/// client's `INCR` is `n + 1` (the unfinished `INCR` did not count either).
pub fn half_close_discards_the_unfinished_line(server: &Server) {
    let mut client = server.greeted();
    client.send_raw(b"INCR\nINCR");
    client.shutdown_write();
    let reply = client.read_line().expect("the reply to the complete INCR");
    let n: u64 = reply
        .strip_prefix("OK ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("expected `OK <n>`, got {reply:?}"));
    assert_eq!(
        client.read_raw_line(),
        Err("the server closed the connection".to_string()),
        "after the one reply, the server closes: the unfinished `INCR` gets no reply"
    );
    let mut next = server.greeted();
    assert_eq!(
        next.request("INCR"),
        format!("OK {}", n + 1),
        "the unfinished INCR did not count"
    );
}

/// `clients` clients connected at once each send `per_client` `INCR` lines in one write (all in
/// flight before any reply is read), from their own threads. Between them they must get every
/// value from `first` to `first + clients * per_client - 1` exactly once, each client's in
/// increasing order: no update lost, none counted twice.
pub fn concurrent_incr_counts_every_request_once(
    server: &Server,
    clients: usize,
    per_client: usize,
    first: u64,
) {
    let connected: Vec<Client> = (0..clients).map(|_| server.greeted()).collect();
    // Every client sends at the same moment, so that their servers count at the same time.
    let start = Arc::new(Barrier::new(clients));
    let workers: Vec<_> = connected
        .into_iter()
        .map(|mut client| {
            let start = Arc::clone(&start);
            thread::spawn(move || {
                let requests = "INCR\n".repeat(per_client);
                start.wait();
                client.send_raw(requests.as_bytes());
                let values: Vec<u64> = (0..per_client)
                    .map(|i| {
                        let reply = client
                            .read_reply()
                            .unwrap_or_else(|e| panic!("reply {i} of {per_client}: {e}"));
                        reply
                            .strip_prefix("OK ")
                            .and_then(|n| n.parse().ok())
                            .unwrap_or_else(|| panic!("expected `OK <n>`, got {reply:?}"))
                    })
                    .collect();
                assert!(
                    values.windows(2).all(|w| w[0] < w[1]),
                    "one client's INCRs answered in increasing order"
                );
                values
            })
        })
        .collect();
    let mut all: Vec<u64> = workers
        .into_iter()
        .flat_map(|w| w.join().expect("an INCR client failed"))
        .collect();
    all.sort_unstable();
    let total = (clients * per_client) as u64;
    let expected: Vec<u64> = (first..first + total).collect();
    if all != expected {
        let mut seen = std::collections::BTreeMap::new();
        for v in &all {
            *seen.entry(*v).or_insert(0) += 1;
        }
        let twice: Vec<u64> = seen
            .iter()
            .filter(|(_, &n)| n > 1)
            .map(|(v, _)| *v)
            .collect();
        let missing = expected.iter().filter(|v| !seen.contains_key(v)).count();
        panic!(
            "{clients} clients x {per_client} INCRs: expected every value from {first} to {} \
             exactly once; {} values handed out more than once (first few: {:?}), {missing} \
             missing: the counter loses updates",
            first + total - 1,
            twice.len(),
            &twice[..twice.len().min(5)]
        );
    }
}

/// The `client=<id>` of every client in `clients` (asked with `WHO`): each a positive integer,
/// none shared by two live clients (the contract). Returns them.
pub fn assert_unique_client_ids(clients: &mut [Client]) -> Vec<u64> {
    let ids: Vec<u64> = clients.iter_mut().map(Client::client_id).collect();
    assert!(ids.iter().all(|&id| id > 0), "ids are positive: {ids:?}");
    let distinct: std::collections::BTreeSet<u64> = ids.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        ids.len(),
        "no two live clients share an id: {ids:?}"
    );
    ids
}

/// `BYE idle`, received at `at`, came when `--idle-timeout <seconds>` says: not before that many
/// seconds of silence (counted from just before the client connected), and not much after them
/// (at most 3 s more, counted from its `HELLO`): the number given is the number used.
pub fn assert_bye_idle_on_time(seconds: u64, connecting: Instant, greeted: Instant, at: Instant) {
    let timeout = Duration::from_secs(seconds);
    assert!(
        at - connecting >= timeout - Duration::from_millis(50),
        "BYE idle after only {:?} of --idle-timeout {seconds}",
        at - connecting
    );
    assert!(
        at - greeted < timeout + Duration::from_secs(3),
        "BYE idle only after {:?} of --idle-timeout {seconds}",
        at - greeted
    );
}

/// A client that connects to a server started with `--idle-timeout <seconds>` and says nothing
/// is told `BYE idle` on time ([`assert_bye_idle_on_time`]), then the server closes the
/// connection.
pub fn a_silent_client_is_told_bye_idle_on_time(server: &Server, seconds: u64) {
    let connecting = Instant::now();
    let mut silent = server.greeted();
    let greeted = Instant::now();
    assert_eq!(silent.read_line().as_deref(), Ok("BYE idle"));
    assert_bye_idle_on_time(seconds, connecting, greeted, Instant::now());
    assert!(silent.closes(), "then the connection closes");
}

/// A lab's line client (`client_binary`) prints what the server sends while its user types
/// nothing: its greeting and replies, then a `MSG` another client's `SAY` brought, then, at the
/// end of its input, the `OK bye` of the `QUIT` it sends for the user; and it exits with 0.
pub fn the_client_prints_msg_lines_while_the_user_is_still_typing(
    server: &Server,
    client_binary: &str,
) {
    let mut child = crate::spawn_client(client_binary, server.port());
    let (lines_tx, lines) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().expect("piped");
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let next = || {
        lines
            .recv_timeout(crate::READ_TIMEOUT)
            .unwrap_or_else(|_| panic!("{client_binary} printed no line within the read timeout"))
    };
    let mut stdin = child.stdin.take().expect("piped");
    stdin
        .write_all(b"ECHO ready\n")
        .expect("write to the client");
    let hello = next();
    assert!(hello.starts_with("HELLO "), "greeting: {hello:?}");
    assert_eq!(next(), "OK ready");

    // The user has typed nothing more; a message from another client shows up anyway.
    let mut other = server.greeted();
    let other_id = other.client_id();
    assert_eq!(other.request("SAY are you there?"), "OK");
    assert_eq!(next(), format!("MSG {other_id} are you there?"));

    drop(stdin); // end of input: the client says QUIT and ends
    assert_eq!(next(), "OK bye");
    let ended = crate::wait_until(Duration::from_secs(10), || {
        child.try_wait().expect("try_wait").is_some()
    });
    if !ended {
        let _ = child.kill();
    }
    let status = child.wait().expect("wait for the client");
    assert!(
        ended && status.success(),
        "{client_binary} ended with {status}"
    );
}

/// Panics unless every thread of every process in `pids` is asleep (state `S` in `/proc`) and
/// stays asleep for half a second: a server with nothing to do waits in the kernel (`poll`,
/// `accept`, `read`). One that loops on a descriptor that is always ready (a wake-up pipe it
/// never empties, say) is always runnable (`R`), however loaded the machine is.
pub fn assert_idle_processes_sleep(pids: &[i32]) {
    let states = || -> Vec<(i32, char)> {
        pids.iter()
            .flat_map(|&pid| crate::procfs::threads(pid))
            .filter_map(|tid| Some((tid, crate::procfs::stat(tid)?.state)))
            .collect()
    };
    let asleep = || states().iter().all(|&(_, state)| state == 'S');
    // What was just served may still be on its way back into the kernel.
    let settled = crate::wait_until(Duration::from_secs(5), asleep);
    assert!(
        settled,
        "not asleep 5 s after the last request: {:?}",
        states()
    );
    let until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < until {
        let now = states();
        assert!(
            now.iter().all(|&(_, state)| state == 'S'),
            "an idle server woke up with nothing to do: {now:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// A lab's line client (`client_binary`) fed two requests and then the end of its input: it
/// prints the server's greeting (`HELLO <model> ...`), each reply in turn, and the `OK bye` of the
/// `QUIT` it sends for the user at the end, and exits with 0.
pub fn the_client_sends_stdin_lines_and_prints_replies(
    server: &Server,
    client_binary: &str,
    model: &str,
) {
    let (status, stdout) = crate::run_client(
        client_binary,
        server.port(),
        b"ECHO from the client\nINCR\n",
        Duration::from_secs(10),
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines
            .first()
            .is_some_and(|l| l.starts_with(&format!("HELLO {model} pid="))),
        "{stdout}"
    );
    assert_eq!(
        lines[1..],
        ["OK from the client", "OK 1", "OK bye"],
        "{stdout}"
    );
    assert!(status.success());
}
