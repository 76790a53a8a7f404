//! lab01: the iterative server (단일 접속 서버) serves one client at a time; the others wait in the
//! accept queue that `listen()` created.
//!
//! Grade this lab alone with `cargo test -p tests --test lab01_iterative`.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tests::{
    help_listing, observe, procfs, run_binary, run_demo, run_with_timeout, tool, Client, Demo,
    Server, SHARED_FLAGS,
};

const SERVER: &str = "iterative-server";

#[test]
fn the_second_client_waits_until_the_first_quits_and_the_third_until_the_second() {
    let server = Server::start(SERVER, &[]);
    let mut first = server.greeted();
    let mut second = server.connect();
    let mut third = server.connect();
    // The server is busy with the first client: prove it by a round trip, then check the others
    // got nothing in half a second.
    assert_eq!(first.request("ECHO busy"), "OK busy");
    assert!(
        second.still_waiting(Duration::from_millis(500)),
        "second was served while first was"
    );
    assert!(
        third.still_waiting(Duration::from_millis(100)),
        "third was served while first was"
    );

    assert_eq!(first.request("QUIT"), "OK bye");
    let hello = second.read_hello();
    assert_eq!(hello.model, "iterative");
    assert_eq!(
        hello.pid,
        server.pid(),
        "served by the server process itself"
    );
    assert_eq!(hello.tid, server.pid(), "by its one and only thread");
    assert_eq!(second.request("ECHO now"), "OK now");
    assert!(
        third.still_waiting(Duration::from_millis(500)),
        "third was served while second was"
    );

    assert_eq!(second.request("QUIT"), "OK bye");
    third.read_hello();
    assert_eq!(third.request("ECHO finally"), "OK finally");
    assert_eq!(
        procfs::threads(server.pid()).len(),
        1,
        "one thread serves everyone"
    );
}

#[test]
fn incr_counts_across_clients() {
    let server = Server::start(SERVER, &[]);
    for expected in 1..=3 {
        let mut client = server.greeted();
        assert_eq!(client.request("INCR"), format!("OK {expected}"));
        assert_eq!(client.request("QUIT"), "OK bye");
    }
    let mut client = server.greeted();
    assert_eq!(client.request("incr"), "OK 4");
    assert_eq!(client.request("INCR"), "OK 5");
}

#[test]
fn a_sleep_delays_the_client_queued_behind_it() {
    let server = Server::start(SERVER, &[]);
    let mut sleeper = server.greeted();
    // The sleeper asks for a slow task and then leaves, in one write: nothing the test does
    // holds the server up, only the SLEEP.
    let sent = Instant::now();
    sleeper.send_raw(b"SLEEP 1500\nQUIT\n");
    let mut behind = server.connect();
    behind.read_hello();
    // The SLEEP began after `sent`, and the next client is greeted only after it ended.
    let waited = sent.elapsed();
    assert!(
        waited >= Duration::from_millis(1500),
        "greeted after only {waited:?} of a 1,500 ms SLEEP"
    );
    assert_eq!(sleeper.read_reply().unwrap(), "OK slept 1500");
    assert_eq!(sleeper.read_reply().unwrap(), "OK bye");
}

#[test]
fn the_backlog_is_what_listen_was_given_and_the_queue_fills_up() {
    let server = Server::start(SERVER, &["--backlog", "7"]);
    let (waiting, backlog) = procfs::listen_queue(server.port()).unwrap();
    assert_eq!(backlog, 7, "ss -ltn shows the backlog as Send-Q");
    assert_eq!(waiting, 0);

    let mut served = server.greeted();
    assert_eq!(served.request("ECHO hold"), "OK hold");
    let queued: Vec<Client> = (0..3).map(|_| server.connect()).collect();
    // The kernel completes the handshakes and queues them; Recv-Q counts them.
    assert!(
        server.accept_queue_reaches(3),
        "Recv-Q should show 3 clients waiting, got {:?}",
        procfs::listen_queue(server.port())
    );
    drop(served);
    drop(queued);

    let default = Server::start(SERVER, &[]);
    assert_eq!(
        procfs::listen_queue(default.port()).unwrap().1,
        5,
        "the default backlog is 5"
    );
}

#[test]
fn bad_input_gets_the_contract_answer_and_the_next_client_is_served() {
    let server = Server::start(SERVER, &[]);
    let mut client = server.greeted();

    let mut long = vec![b'x'; 4097];
    long.push(b'\n');
    client.send_raw(&long);
    assert_eq!(client.read_reply().unwrap(), "ERR line too long");
    let mut max = b"ECHO ".to_vec();
    max.extend(vec![b'y'; 4091]);
    max.extend_from_slice(b"\r\n");
    client.send_raw(&max);
    assert_eq!(
        client.read_reply().unwrap(),
        format!("OK {}", "y".repeat(4091)),
        "4,096 bytes is allowed"
    );

    client.send_raw(b"ECHO \xff\xfe\n");
    assert_eq!(client.read_reply().unwrap(), "ERR invalid utf-8");
    let unknown = client.request("FLY away");
    assert!(unknown.starts_with("ERR unknown command"), "{unknown}");
    assert!(client.request("SLEEP 10001").starts_with("ERR SLEEP needs"));
    assert!(client.request("PANIC").starts_with("ERR PANIC is disabled"));
    assert!(client.request("SAY anyone?").starts_with("ERR "));
    assert_eq!(client.request("echo still usable"), "OK still usable");

    // An abrupt disconnect in the middle of a line: the unfinished `INCR` is not counted...
    client.send_raw(b"INCR");
    drop(client);
    let mut next = server.greeted();
    assert_eq!(
        next.request("INCR"),
        "OK 1",
        "a line cut off by a close is discarded, not run"
    );
    // ... nor one cut off by a reset.
    next.send_raw(b"INCR");
    next.reset();
    let mut after = server.greeted();
    assert_eq!(
        after.request("INCR"),
        "OK 2",
        "a line cut off by a reset is discarded, not run"
    );
}

#[test]
fn a_half_closed_client_still_gets_its_reply() {
    let server = Server::start(SERVER, &[]);
    let mut client = server.greeted();
    // One complete line, then an unfinished one, then end of stream (shutdown of our write side).
    client.send_raw(b"INCR\nINCR");
    client.shutdown_write();
    assert_eq!(
        client.read_to_close(),
        b"OK 1\n",
        "exactly one reply, for the one complete line, then the server closes"
    );
    let mut next = server.greeted();
    assert_eq!(
        next.request("INCR"),
        "OK 2",
        "the unfinished INCR was not counted"
    );
}

#[test]
fn sigterm_and_sigint_exit_zero_even_while_serving() {
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        let mut server = Server::start(SERVER, &[]);
        let mut client = server.greeted();
        assert_eq!(client.request("ECHO hi"), "OK hi");
        let mut queued = server.connect();
        assert!(
            server.accept_queue_reaches(1),
            "the second client is queued"
        );
        let status = server.stop_with(signal, Duration::from_secs(10));
        assert_eq!(status.code(), Some(0), "{signal}: {status}");
        assert_eq!(
            client.read_line().as_deref(),
            Ok("BYE"),
            "the client is told"
        );
        assert!(client.closes());
        assert_eq!(
            queued.read_to_close(),
            b"",
            "{signal}: a client still in the accept queue is closed without a greeting"
        );
        assert_eq!(
            server.stdout_after_listening(),
            "",
            "nothing on stdout after `listening on`"
        );
    }
    // And while idle in accept(), just after it started listening.
    let mut idle = Server::start(SERVER, &[]);
    assert_eq!(
        idle.stop_with(Signal::SIGTERM, Duration::from_secs(10))
            .code(),
        Some(0)
    );
}

#[test]
fn sigterm_cuts_a_sleep_short() {
    let mut server = Server::start(SERVER, &[]);
    let mut sleeper = server.greeted();
    sleeper.send("SLEEP 10000");
    assert!(
        server.is_working_on_request_of(&sleeper),
        "the server never started the SLEEP"
    );
    let signalled = Instant::now();
    let status = server.stop_with(Signal::SIGTERM, Duration::from_secs(10));
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(
        took < Duration::from_secs(2),
        "exited {took:?} after SIGTERM: a SLEEP in progress is cut short"
    );
    assert_eq!(sleeper.last_line(), "BYE", "the sleeper is told");
}

#[test]
fn a_panic_ends_the_server_with_status_101() {
    let mut server = Server::start(SERVER, &["--allow-panic"]);
    let mut client = server.greeted();
    let mut queued = server.connect();
    assert!(
        server.accept_queue_reaches(1),
        "the second client is queued"
    );
    client.send("PANIC");
    assert_eq!(
        client.read_to_close(),
        b"",
        "no reply to PANIC, then closed"
    );
    let status = server
        .wait_exit(Duration::from_secs(10))
        .expect("the server exits after PANIC");
    assert_eq!(
        status.code(),
        Some(101),
        "a panic in the main thread: {status}"
    );
    assert_eq!(
        queued.read_to_close(),
        b"",
        "the queued client is closed without a greeting"
    );
    assert_eq!(server.stdout_after_listening(), "");
}

#[test]
fn a_port_in_use_exits_2_with_a_clear_message() {
    let server = Server::start(SERVER, &[]);
    let port = server.port().to_string();
    let (status, stdout, stderr) = run_binary(SERVER, &["--port", &port]);
    assert_eq!(status.code(), Some(2));
    assert!(stdout.is_empty(), "no listening line: {stdout}");
    assert!(stderr.contains("in use"), "{stderr}");
    assert!(stderr.contains("--port"), "says what to do: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let (status, _, stderr) = run_binary(SERVER, &["--backlog", "lots"]);
    assert_eq!(status.code(), Some(2), "{stderr}");
}

#[test]
fn help_lists_the_shared_flags() {
    help_listing(SERVER, &[SHARED_FLAGS, &["[default: 7001]"]].concat());
}

#[test]
fn the_client_sends_stdin_lines_and_prints_replies() {
    let server = Server::start(SERVER, &[]);
    observe::the_client_sends_stdin_lines_and_prints_replies(
        &server,
        "iterative-client",
        "iterative",
    );
}

#[test]
fn the_demo_shows_each_client_waiting_for_the_one_before() {
    let Demo { stdout, waits, .. } = run_demo(SERVER, 3);
    assert_eq!(waits.len(), 3, "{stdout}");
    // Each client does a SLEEP 500 before QUIT, so each waits longer than the one before.
    assert!(
        waits[1] >= 300 && waits[2] >= waits[1] + 300,
        "waits {waits:?}:\n{stdout}"
    );
}

#[test]
fn an_idle_timeout_frees_the_server_from_a_silent_client() {
    let server = Server::start(SERVER, &["--idle-timeout", "1"]);
    let connecting = Instant::now();
    let mut silent = server.greeted();
    let greeted = Instant::now();
    let mut next = server.connect();
    assert_eq!(
        silent.read_line().as_deref(),
        Ok("BYE idle"),
        "the silent client is told"
    );
    observe::assert_bye_idle_on_time(1, connecting, greeted, Instant::now());
    assert!(silent.closes());
    next.read_hello();
    // A client that keeps talking is not cut off by the timeout.
    for _ in 0..3 {
        assert_eq!(next.request("SLEEP 400"), "OK slept 400");
    }
    assert_eq!(next.request("ECHO still here"), "OK still here");
}

#[test]
fn an_idle_timeout_of_three_seconds_waits_three_seconds() {
    let server = Server::start(SERVER, &["--idle-timeout", "3"]);
    observe::a_silent_client_is_told_bye_idle_on_time(&server, 3);
}

#[test]
fn each_client_gets_a_positive_client_id() {
    let server = Server::start(SERVER, &[]);
    for _ in 0..3 {
        let mut client = server.greeted();
        assert!(client.client_id() > 0);
        assert_eq!(client.request("QUIT"), "OK bye");
    }
}

#[test]
fn out_of_descriptors_the_server_keeps_the_client_waiting_and_serves_it_once_it_can() {
    let server = Server::start(SERVER, &[]);
    // The lowest descriptor number the server has free: the one accept() gives the next client.
    let open: std::collections::BTreeSet<u64> =
        std::fs::read_dir(format!("/proc/{}/fd", server.pid()))
            .expect("the server's /proc/<pid>/fd")
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
    let next = (0..).find(|fd| !open.contains(fd)).unwrap();
    let prlimit = |soft: u64| {
        let mut command = tool("prlimit");
        command.args([
            format!("--nofile={soft}:"),
            format!("--pid={}", server.pid()),
        ]);
        let (status, _, stderr) = run_with_timeout(command, Duration::from_secs(10));
        assert!(status.success(), "prlimit: {stderr}");
    };
    // While it serves a first client (holding that descriptor, not waiting in accept()), lower
    // its soft limit on open files (ulimit -n) to that number: once the first client leaves,
    // accept() has no descriptor to give the next one (EMFILE).
    let mut first = server.greeted();
    assert_eq!(first.request("ECHO busy"), "OK busy");
    let (soft, _) = tests::raise_descriptor_limit();
    prlimit(next);
    assert_eq!(first.request("QUIT"), "OK bye");
    let mut client = server.connect();
    assert!(
        client.still_waiting(Duration::from_millis(500)),
        "no descriptor for the client, so no HELLO"
    );
    assert!(
        procfs::alive(server.pid()),
        "a failing accept() does not stop the server"
    );
    // Descriptors again: the waiting client is served.
    prlimit(soft);
    client.read_hello();
    assert_eq!(client.request("ECHO served"), "OK served");
}
