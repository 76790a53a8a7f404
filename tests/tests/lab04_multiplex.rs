//! lab04: the multiplexing server (Multiplexing 방식) serves every client from one process and one
//! thread, with an event loop over select, poll or epoll (level- or edge-triggered).
//!
//! Most checks are written once and run for each of the four loops (`api_tests!` at the bottom
//! makes a module per API: `select::...`, `poll::...`, `epoll::...`, `epoll_edge::...`).
//!
//! Grade this lab alone with `cargo test -p tests --test lab04_multiplex`.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use socket2::{Domain, Socket, Type};
use tests::{
    help_listing, need_descriptors, observe, procfs, run_binary, run_demo, run_with_timeout, tool,
    wait_until, Client, Demo, Server,
};

const SERVER: &str = "multiplex-server";

/// The tests that open a thousand connections take turns, so that together they never need
/// more than one thousand-odd descriptors in this test process at once.
static MANY_DESCRIPTORS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Takes [`MANY_DESCRIPTORS`] (whatever another test's failure did to it) and checks that this
/// process, and the server it starts, may open `count` descriptors.
fn many_descriptors(count: u64) -> std::sync::MutexGuard<'static, ()> {
    let turn = MANY_DESCRIPTORS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    need_descriptors(count);
    turn
}

/// A hundred clients connected at once are all greeted and answered by the one thread of the
/// one process, and share one counter.
fn one_thread_serves_100_clients(args: &[&str]) {
    let server = Server::start(SERVER, args);
    let mut clients: Vec<Client> = (0..100).map(|_| server.greeted()).collect();
    assert_eq!(
        procfs::threads(server.pid()),
        vec![server.pid()],
        "exactly one thread in /proc/<pid>/task while 100 clients are connected"
    );
    for (i, client) in clients.iter_mut().enumerate() {
        let hello = client.hello.clone().unwrap();
        assert_eq!(hello.model, "multiplex");
        assert_eq!(
            (hello.pid, hello.tid),
            (server.pid(), server.pid()),
            "pid and tid of the server itself"
        );
        assert_eq!(client.request(&format!("ECHO {i}")), format!("OK {i}"));
        assert_eq!(
            client.request("INCR"),
            format!("OK {}", i + 1),
            "one counter"
        );
    }
    let who = clients[99].request("WHO");
    assert!(
        who.contains(&format!("pid={0} tid={0} ", server.pid())),
        "{who}"
    );
    let ids: std::collections::BTreeSet<u64> = clients.iter_mut().map(Client::client_id).collect();
    assert_eq!(ids.len(), 100, "client ids are unique among live clients");
    assert!(!ids.contains(&0), "client ids are positive");
    assert_eq!(procfs::threads(server.pid()).len(), 1);
}

/// Many requests in one write are all answered, in order, bad ones included.
fn pipelined_requests_are_answered_in_order(args: &[&str]) {
    let server = Server::start(SERVER, args);
    let mut client = server.greeted();
    let mut batch = Vec::new();
    for i in 0..50 {
        batch.extend_from_slice(format!("ECHO {i}\n").as_bytes());
    }
    batch.extend_from_slice(b"INCR\r\n");
    batch.extend(vec![b'x'; 5000]); // an over-long line...
    batch.extend_from_slice(b"\nECHO \xff\n"); // ...and invalid UTF-8, in the same write
    batch.extend_from_slice(b"incr\nBOGUS\nQUIT\nECHO never answered\n");
    client.send_raw(&batch);
    for i in 0..50 {
        assert_eq!(client.read_reply().unwrap(), format!("OK {i}"));
    }
    assert_eq!(client.read_reply().unwrap(), "OK 1");
    assert_eq!(client.read_reply().unwrap(), "ERR line too long");
    assert_eq!(client.read_reply().unwrap(), "ERR invalid utf-8");
    assert_eq!(client.read_reply().unwrap(), "OK 2");
    assert!(client
        .read_reply()
        .unwrap()
        .starts_with("ERR unknown command"));
    assert_eq!(client.read_reply().unwrap(), "OK bye");
    assert!(client.closes(), "closed after QUIT, the rest ignored");
}

/// Thousands of requests, far more than one `read` takes, all answered in order while the
/// client keeps sending. Edge-triggered, this fails if the server does not read until
/// WouldBlock (the rest would never be announced again); any API, if a partial write is not
/// finished when the socket becomes writable again.
fn a_big_pipeline_is_answered_completely(args: &[&str]) {
    let server = Server::start(SERVER, args);
    let mut client = server.greeted();
    let writer = client.stream().try_clone().unwrap();
    writer
        .set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    const LINES: usize = 4000;
    let sending = thread::spawn(move || {
        let padding = "p".repeat(90);
        let batch: String = (0..LINES)
            .map(|i| format!("ECHO {i} {padding}\n"))
            .collect();
        (&writer).write_all(batch.as_bytes()) // ~400 KB in one write
    });
    for i in 0..LINES {
        let reply = client
            .read_reply()
            .unwrap_or_else(|e| panic!("reply {i} of {LINES}: {e}"));
        assert!(reply.starts_with(&format!("OK {i} ")), "{reply}");
    }
    sending.join().unwrap().expect("the whole batch was sent");
    assert_eq!(client.request("INCR"), "OK 1");
}

/// What the kernel does not take now is kept and written when the socket is writable again.
/// `--send-buffer 4096` (and a small receive buffer here) keep the kernel's share small; the listener reads nothing until 200 KB
/// of `MSG`s (under the output cap) are waiting for it, and it sends nothing that would wake the
/// server for it: only its socket becoming writable can bring the rest.
fn partial_writes_are_finished_when_the_socket_is_writable(args: &[&str]) {
    let mut small = args.to_vec();
    small.extend(["--send-buffer", "4096"]);
    let server = Server::start(SERVER, &small);
    let mut speaker = server.greeted();
    // The listener: a socket with a small receive buffer (set before connect, so the TCP window
    // is small from the start), so that little of the 200 KB fits in the kernel.
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&server.addr.into()).unwrap();
    let stream = tests::with_timeouts(socket.into());
    let mut listener = BufReader::new(stream);
    let mut line = String::new();
    listener.read_line(&mut line).unwrap();
    assert!(line.starts_with("HELLO "), "{line}");
    let speaker_id = speaker.client_id();
    let text = "m".repeat(1000);
    const SAYS: usize = 200;
    speaker.send_raw(format!("SAY {text}\n").repeat(SAYS).as_bytes());
    for _ in 0..SAYS {
        assert_eq!(speaker.read_reply().unwrap(), "OK");
    }
    for i in 0..SAYS {
        line.clear();
        listener
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("MSG {i} of {SAYS}: {e}"));
        assert_eq!(line, format!("MSG {speaker_id} {text}\n"));
    }
    listener.get_ref().write_all(b"ECHO all there\n").unwrap();
    line.clear();
    listener.read_line(&mut line).unwrap();
    assert_eq!(line, "OK all there\n");
}

/// A client that sends its requests and then half-closes (end of stream) gets exactly the
/// replies to its complete lines before the server closes its side; the unfinished last line is
/// dropped, not run.
fn a_half_closed_client_still_gets_its_replies(args: &[&str]) {
    let server = Server::start(SERVER, args);
    let mut client = server.greeted();
    client.send_raw(b"ECHO one\nINCR\nINCR");
    client.shutdown_write();
    assert_eq!(
        String::from_utf8_lossy(&client.read_to_close()),
        "OK one\nOK 1\n",
        "exactly the replies to the complete lines, then the server closes"
    );
    let mut next = server.greeted();
    assert_eq!(
        next.request("INCR"),
        "OK 2",
        "the unfinished INCR was not counted"
    );
}

/// A request that trickles in one byte at a time is answered once its `\n` arrives, and the
/// unfinished line holds nobody else up.
fn a_request_sent_one_byte_at_a_time_is_answered(args: &[&str]) {
    let server = Server::start(SERVER, args);
    let mut slow = server.greeted();
    let mut other = server.greeted();
    slow.stream().set_nodelay(true).unwrap(); // one byte, one segment
    let request = b"ECHO one byte at a time\n";
    for (i, byte) in request.iter().enumerate() {
        slow.send_raw(&[*byte]);
        if i == 4 {
            assert_eq!(
                other.request("ECHO meanwhile"),
                "OK meanwhile",
                "a half-received line of another client blocks nobody"
            );
        }
        thread::sleep(Duration::from_millis(1)); // so the server sees the bytes one by one
    }
    assert_eq!(slow.read_reply().unwrap(), "OK one byte at a time");
    assert_eq!(slow.request("ECHO next"), "OK next");
}

/// `SAY` reaches every other client as `MSG <id> <text>`, and not the sender.
fn say_reaches_every_other_client(args: &[&str]) {
    let server = Server::start(SERVER, args);
    let mut clients: Vec<Client> = (0..4).map(|_| server.greeted()).collect();
    let speaker = clients[0].client_id();
    assert_eq!(clients[0].request("SAY hello everyone"), "OK");
    for other in &mut clients[1..] {
        assert_eq!(
            other.next_message().unwrap(),
            format!("MSG {speaker} hello everyone")
        );
    }
    assert_eq!(clients[0].request("ECHO and me?"), "OK and me?");
    assert!(
        clients[0].messages.is_empty(),
        "the sender got its own MSG: {:?}",
        clients[0].messages
    );
}

/// One client's `SLEEP` blocks the loop, so another client's `ECHO` waits too: the lesson.
fn a_sleep_delays_every_other_client(args: &[&str]) {
    let server = Server::start(SERVER, args);
    let mut sleeper = server.greeted();
    let mut other = server.greeted();
    let sent = Instant::now();
    sleeper.send("SLEEP 1500");
    // Wait (observably: `ss` and /proc) until the server has read the SLEEP and its one thread
    // sleeps, then ask for an ECHO.
    assert!(
        server.is_working_on_request_of(&sleeper),
        "the server never started the SLEEP"
    );
    let echo = other.request("ECHO are you there?");
    let waited = sent.elapsed();
    assert_eq!(echo, "OK are you there?");
    // The SLEEP began after `sent`, and the loop reads the ECHO only after it ended.
    assert!(
        waited >= Duration::from_millis(1500),
        "the ECHO was answered {waited:?} after another client's 1,500 ms SLEEP began"
    );
    // Ordering: the loop finished the SLEEP (and sent its reply) before it even read the ECHO,
    // so the sleeper's reply is already here: a non-blocking read finds it.
    sleeper.stream().set_nonblocking(true).unwrap();
    let already = sleeper.read_reply();
    sleeper.stream().set_nonblocking(false).unwrap();
    assert_eq!(already.as_deref(), Ok("OK slept 1500"));
}

/// `PANIC` takes the whole server down, and every client's connection with it.
fn panic_closes_every_connection(args: &[&str]) {
    let mut with_panic = args.to_vec();
    with_panic.push("--allow-panic");
    let mut server = Server::start(SERVER, &with_panic);
    let mut clients: Vec<Client> = (0..3).map(|_| server.greeted()).collect();
    clients[1].send("PANIC");
    for (i, client) in clients.iter_mut().enumerate() {
        assert!(client.closes(), "client {i} was not disconnected");
    }
    let status = server
        .wait_exit(Duration::from_secs(10))
        .expect("the server process is gone");
    assert_eq!(
        status.code(),
        Some(101),
        "a panic in the one thread ends the process with status 101: {status}"
    );
}

/// A client that floods requests and never reads its replies is cut off at the output cap; the
/// others are served meanwhile, and the server's memory stays bounded.
fn a_client_that_never_reads_does_not_stop_the_others(args: &[&str]) {
    let server = Server::start(SERVER, args);
    let mut other = server.greeted();
    let flooder = server.greeted();
    let before = procfs::rss_kib(server.pid()).unwrap();
    let stream: TcpStream = flooder.stream().try_clone().unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let flood = thread::spawn(move || {
        let chunk = format!("ECHO {}\n", "x".repeat(4000)).repeat(16);
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut sent = 0usize;
        while sent < 128 << 20 && Instant::now() < deadline {
            if let Err(e) = (&stream).write_all(chunk.as_bytes()) {
                return (sent, Some(e.kind()));
            }
            sent += chunk.len();
        }
        (sent, None)
    });
    for i in 0..20 {
        let asked = Instant::now();
        assert_eq!(other.request(&format!("ECHO {i}")), format!("OK {i}"));
        assert!(
            asked.elapsed() < Duration::from_secs(5),
            "answered only after {:?} during the flood",
            asked.elapsed()
        );
    }
    let (sent, ended) = flood.join().unwrap();
    let after = procfs::rss_kib(server.pid()).unwrap();
    assert!(
        after.saturating_sub(before) < 64 * 1024,
        "the server's RSS grew from {before} KiB to {after} KiB"
    );
    assert!(
        matches!(
            ended,
            Some(std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe)
        ),
        "the flooder should have been disconnected; it sent {} MiB and ended with {ended:?}",
        sent >> 20
    );
    assert_eq!(other.request("ECHO still here"), "OK still here");
}

/// A client that streams requests faster than the server can answer them (and reads every
/// reply, so it is never cut off) does not starve the others: a client that connects during the
/// stream is greeted and answered while the stream goes on. This is the edge-triggered trap's
/// other side: "read until WouldBlock" must still leave a turn to everyone else.
fn a_client_that_streams_without_pause_does_not_starve_the_others(args: &[&str]) {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    let server = Server::start(SERVER, args);
    let flooder = server.greeted();
    let writer: TcpStream = flooder.stream().try_clone().unwrap();
    let reader: TcpStream = flooder.stream().try_clone().unwrap();
    writer
        .set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    reader
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    // How the stream ended: None while it was still going when told to stop.
    let stream = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let chunk = format!("ECHO {}\n", "y".repeat(200)).repeat(256);
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut sent = 0usize;
            while !stop.load(Ordering::Relaxed) {
                if Instant::now() > deadline {
                    return (
                        sent,
                        Some("ran 30 s without being told to stop".to_string()),
                    );
                }
                if let Err(e) = (&writer).write_all(chunk.as_bytes()) {
                    return (sent, Some(format!("write failed: {e}")));
                }
                sent += chunk.len();
            }
            (sent, None)
        })
    };
    // Read (and drop) every reply, so the flooder is a reader the output cap never cuts off.
    let received = Arc::new(AtomicUsize::new(0));
    let drain = {
        let received = Arc::clone(&received);
        thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            while let Ok(n) = std::io::Read::read(&mut &reader, &mut buf) {
                if n == 0 {
                    break;
                }
                received.fetch_add(n, Ordering::Relaxed);
            }
        })
    };
    // Wait until the stream is really flowing: a megabyte of replies has come back.
    assert!(
        wait_until(Duration::from_secs(10), || received.load(Ordering::Relaxed)
            >= 1 << 20),
        "the stream never got going"
    );
    let mut other = server.greeted();
    for i in 0..20 {
        assert_eq!(other.request(&format!("ECHO {i}")), format!("OK {i}"));
    }
    stop.store(true, Ordering::Relaxed);
    let (sent, ended) = stream.join().unwrap();
    assert_eq!(
        ended,
        None,
        "the stream should still be going when the other client is answered ({} MiB sent)",
        sent >> 20
    );
    flooder.stream().shutdown(std::net::Shutdown::Both).unwrap();
    drain.join().unwrap();
    assert_eq!(other.request("ECHO still here"), "OK still here");
}

/// SIGTERM or SIGINT, even in the middle of one client's `SLEEP 10000`: every client is told
/// `BYE` and closed, and the server exits 0 within 2 s, having printed nothing more on stdout.
fn sigterm_and_sigint_say_bye_to_everyone_and_exit_zero(args: &[&str]) {
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        let mut server = Server::start(SERVER, args);
        let mut clients: Vec<Client> = (0..3).map(|_| server.greeted()).collect();
        assert_eq!(clients[0].request("ECHO hi"), "OK hi");
        clients[1].send_raw(b"ECHO half"); // one in the middle of a line
        clients[2].send("SLEEP 10000");
        assert!(
            server.is_working_on_request_of(&clients[2]),
            "the server never started the SLEEP"
        );
        let signalled = Instant::now();
        let status = server.stop_with(signal, Duration::from_secs(10));
        let took = signalled.elapsed();
        assert_eq!(status.code(), Some(0), "{signal}: {status}");
        assert!(
            took < Duration::from_secs(2),
            "{signal}: exited {took:?} after the signal, with a SLEEP 10000 in progress"
        );
        for (i, client) in clients.iter_mut().enumerate() {
            assert_eq!(client.last_line(), "BYE", "{signal}: client {i} is told");
        }
        assert_eq!(
            server.stdout_after_listening(),
            "",
            "nothing on stdout after `listening on`"
        );
    }
}

macro_rules! api_tests {
    ($($module:ident: $args:expr;)*) => {$(
        mod $module {
            const ARGS: &[&str] = $args;
            #[test]
            fn one_thread_serves_100_clients() {
                super::one_thread_serves_100_clients(ARGS);
            }
            #[test]
            fn pipelined_requests_are_answered_in_order() {
                super::pipelined_requests_are_answered_in_order(ARGS);
            }
            #[test]
            fn a_big_pipeline_is_answered_completely() {
                super::a_big_pipeline_is_answered_completely(ARGS);
            }
            #[test]
            fn partial_writes_are_finished_when_the_socket_is_writable() {
                super::partial_writes_are_finished_when_the_socket_is_writable(ARGS);
            }
            #[test]
            fn a_half_closed_client_still_gets_its_replies() {
                super::a_half_closed_client_still_gets_its_replies(ARGS);
            }
            #[test]
            fn a_request_sent_one_byte_at_a_time_is_answered() {
                super::a_request_sent_one_byte_at_a_time_is_answered(ARGS);
            }
            #[test]
            fn say_reaches_every_other_client() {
                super::say_reaches_every_other_client(ARGS);
            }
            #[test]
            fn a_sleep_delays_every_other_client() {
                super::a_sleep_delays_every_other_client(ARGS);
            }
            #[test]
            fn panic_closes_every_connection() {
                super::panic_closes_every_connection(ARGS);
            }
            #[test]
            fn a_client_that_never_reads_does_not_stop_the_others() {
                super::a_client_that_never_reads_does_not_stop_the_others(ARGS);
            }
            #[test]
            fn a_client_that_streams_without_pause_does_not_starve_the_others() {
                super::a_client_that_streams_without_pause_does_not_starve_the_others(ARGS);
            }
            #[test]
            fn sigterm_and_sigint_say_bye_to_everyone_and_exit_zero() {
                super::sigterm_and_sigint_say_bye_to_everyone_and_exit_zero(ARGS);
            }
        }
    )*};
}

api_tests! {
    select: &["--api", "select"];
    poll: &["--api", "poll"];
    epoll: &["--api", "epoll"];
    epoll_edge: &["--api", "epoll", "--edge"];
}

#[test]
fn a_thousand_clients_are_served_with_the_default_api() {
    let _turn = many_descriptors(1200);
    let server = Server::start(SERVER, &["--quiet"]);
    let baseline = procfs::fd_count(server.pid());
    let mut clients: Vec<Client> = (0..1000).map(|_| server.greeted()).collect();
    assert!(
        procfs::fd_count(server.pid()) >= baseline + 1000,
        "a descriptor per client in /proc/<pid>/fd"
    );
    // Everyone asks first, then everyone reads: a thousand requests in flight at once.
    for (i, client) in clients.iter_mut().enumerate() {
        client.send(&format!("ECHO {i}"));
    }
    for (i, client) in clients.iter_mut().enumerate() {
        assert_eq!(client.read_reply().unwrap(), format!("OK {i}"));
    }
    assert_eq!(clients[0].request("INCR"), "OK 1");
    assert_eq!(procfs::threads(server.pid()).len(), 1);
}

#[test]
fn select_refuses_the_client_past_fd_setsize_and_serves_the_others() {
    let _turn = many_descriptors(1200);
    let mut server = Server::start(SERVER, &["--api", "select"]);
    let mut clients: Vec<Client> = (0..1030).map(|_| server.connect()).collect();
    let firsts: Vec<String> = clients
        .iter_mut()
        .map(|c| c.read_line().expect("a first line"))
        .collect();
    let greeted = firsts.iter().filter(|l| l.starts_with("HELLO ")).count();
    let refused = firsts.iter().filter(|l| *l == "ERR server full").count();
    assert_eq!(greeted + refused, firsts.len(), "only HELLO or the refusal");
    assert!(refused >= 6, "only {refused} refused of 1,030");
    assert!(greeted > 1000, "only {greeted} served below FD_SETSIZE");
    assert!(
        firsts[..greeted].iter().all(|l| l.starts_with("HELLO ")),
        "the refused ones are the last to connect"
    );
    for refused_client in &mut clients[greeted..] {
        assert!(refused_client.closes(), "a refused client is closed");
    }
    // The others are served on, the first and the last below the limit alike.
    assert_eq!(clients[0].request("ECHO first"), "OK first");
    assert_eq!(
        clients[greeted - 1].request("ECHO last"),
        "OK last",
        "the client with the highest descriptor is served"
    );
    // Once some leave, their descriptors are free again and a new client gets in.
    let fds_before = procfs::fd_count(server.pid());
    clients.truncate(greeted - 10);
    assert!(wait_until(Duration::from_secs(10), || procfs::fd_count(
        server.pid()
    ) <= fds_before - 10));
    let mut newcomer = server.greeted();
    assert_eq!(newcomer.request("ECHO in"), "OK in");
    drop(clients);
    let status = server.stop_with(Signal::SIGTERM, Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
}

#[test]
fn out_of_descriptors_the_extra_client_is_refused_and_the_loop_goes_on() {
    let server = Server::start(SERVER, &[]);
    // Lower the running server's descriptor limit (ulimit -n) to leave room for 5 clients.
    let limit = procfs::fd_count(server.pid()) + 5;
    let mut prlimit = tool("prlimit");
    prlimit.args([
        format!("--nofile={limit}:{limit}"),
        format!("--pid={}", server.pid()),
    ]);
    let (status, _, stderr) = run_with_timeout(prlimit, Duration::from_secs(10));
    assert!(status.success(), "prlimit: {stderr}");

    let mut clients: Vec<Client> = (0..10).map(|_| server.connect()).collect();
    let firsts: Vec<String> = clients
        .iter_mut()
        .map(|c| c.read_line().expect("a first line, not silence"))
        .collect();
    // About 5 fit (the count above is a snapshot); the rest must be refused, clearly.
    let greeted = firsts
        .iter()
        .take_while(|l| l.starts_with("HELLO "))
        .count();
    assert!((3..=7).contains(&greeted), "{firsts:?}");
    assert!(
        firsts[greeted..].iter().all(|l| l == "ERR server full"),
        "past the limit, a clear refusal (accept() failed with EMFILE): {firsts:?}"
    );
    for refused in &mut clients[greeted..] {
        assert!(refused.closes());
    }
    assert_eq!(clients[greeted - 1].request("ECHO served"), "OK served");
    let fds_before = procfs::fd_count(server.pid());
    clients.truncate(greeted - 2); // two leave: their descriptors are free again
    assert!(wait_until(Duration::from_secs(10), || procfs::fd_count(
        server.pid()
    ) <= fds_before - 2));
    let mut newcomer = server.greeted();
    assert_eq!(newcomer.request("ECHO in"), "OK in");
}

#[test]
fn an_idle_timeout_says_bye_to_the_silent_client_only() {
    for (timeout, seconds) in [("1", 1), ("3", 3)] {
        let server = Server::start(SERVER, &["--idle-timeout", timeout]);
        let mut talker = server.greeted();
        let connecting = Instant::now();
        let mut silent = server.greeted();
        let greeted = Instant::now();
        // The silent client waits for its BYE in a thread while the talker keeps talking.
        let waiting = thread::spawn(move || {
            let line = silent.read_line();
            let at = Instant::now();
            (line, at, silent.closes())
        });
        let talking = Instant::now();
        while talking.elapsed() < Duration::from_secs(seconds) + Duration::from_millis(1500) {
            assert_eq!(talker.request("SLEEP 300"), "OK slept 300");
        }
        let (line, at, closed) = waiting.join().unwrap();
        assert_eq!(line.as_deref(), Ok("BYE idle"));
        observe::assert_bye_idle_on_time(seconds, connecting, greeted, at);
        assert!(closed, "then the connection closes");
        assert_eq!(talker.request("ECHO still here"), "OK still here");
    }
}

#[test]
fn edge_without_epoll_is_a_usage_error() {
    let (status, stdout, stderr) = run_binary(SERVER, &["--port", "0", "--api", "poll", "--edge"]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("--api epoll"), "{stderr}");
}

#[test]
fn a_port_in_use_exits_2_with_a_clear_message() {
    let server = Server::start(SERVER, &[]);
    let port = server.port().to_string();
    let (status, stdout, stderr) = run_binary(SERVER, &["--port", &port]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("in use"), "{stderr}");
}

#[test]
fn help_documents_the_lab_flags() {
    help_listing(
        SERVER,
        &[
            "--api",
            "select",
            "poll",
            "epoll",
            "--edge",
            "--trace",
            "--demo",
            "[default: 7004]",
            "[default: epoll]",
        ],
    );
}

#[test]
fn the_demo_shows_one_thread_and_a_sleep_freezing_everyone() {
    let Demo { stdout, waits, .. } = run_demo(SERVER, 3);
    let summary = stdout.split("== summary ==").nth(1).unwrap_or("");
    let served: Vec<&str> = summary
        .lines()
        .filter(|l| l.contains("multiplex pid="))
        .filter_map(|l| l.split("  ").last())
        .collect();
    assert_eq!(served.len(), 3, "{stdout}");
    assert!(
        served.iter().all(|s| *s == served[0]),
        "one pid and tid: {served:?}"
    );
    assert_eq!(waits.len(), 3, "{stdout}");
    assert!(
        waits[1..].iter().any(|&w| w >= 500),
        "nobody was held up by client 1's SLEEP 1500: waits {waits:?}\n{stdout}"
    );
}

#[test]
fn the_client_sends_stdin_lines_and_prints_replies() {
    let server = Server::start(SERVER, &[]);
    observe::the_client_sends_stdin_lines_and_prints_replies(
        &server,
        "multiplex-client",
        "multiplex",
    );
}

#[test]
fn an_idle_timeout_says_bye_to_a_silent_client_even_when_nothing_else_happens() {
    // No other client talks, so nothing but the clock can wake the loop to notice the silence.
    let server = Server::start(SERVER, &["--idle-timeout", "1"]);
    observe::a_silent_client_is_told_bye_idle_on_time(&server, 1);
}

#[test]
fn a_client_that_resets_is_closed_and_its_descriptor_freed() {
    for args in [
        &["--api", "select"][..],
        &["--api", "poll"],
        &["--api", "epoll"],
        &["--api", "epoll", "--edge"],
    ] {
        let server = Server::start(SERVER, args);
        let mut client = server.greeted();
        assert_eq!(client.request("ECHO before"), "OK before");
        // Counted once the loop is running (it may open its own descriptors after `listening on`).
        let with_client = procfs::fd_count(server.pid());
        // A reset (RST) instead of a FIN: the server's next read fails with ECONNRESET.
        client.reset();
        assert_the_reset_client_is_closed(&server, with_client, &format!("{args:?}"));
    }
}

/// After a client reset its connection: the server closes its descriptor (the count of open ones
/// falls below `with_client`, counted while it was connected) and serves the next client.
fn assert_the_reset_client_is_closed(server: &Server, with_client: usize, label: &str) {
    assert!(
        wait_until(Duration::from_secs(10), || procfs::fd_count(server.pid())
            < with_client),
        "{label}: the reset client's descriptor is still open ({} open, {with_client} with it)",
        procfs::fd_count(server.pid())
    );
    let mut next = server.greeted();
    assert_eq!(next.request("ECHO after"), "OK after", "{label}");
}

#[test]
fn quit_behind_more_replies_than_the_sockets_hold_still_gets_every_reply_then_bye() {
    // Small kernel buffers on both sides (`--send-buffer 4096`, and a 4 KB receive buffer set
    // before connect): most of the replies must wait in the server's memory.
    let server = Server::start(SERVER, &["--send-buffer", "4096"]);
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&server.addr.into()).unwrap();
    let stream = tests::with_timeouts(socket.into());
    let mine = stream.local_addr().unwrap().port();
    let writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("HELLO "), "{line}");
    // About 100 KB of replies (under the output cap), then QUIT, in one write.
    const LINES: usize = 1000;
    let padding = "p".repeat(90);
    let mut batch: String = (0..LINES)
        .map(|i| format!("ECHO {i} {padding}\n"))
        .collect();
    batch.push_str("QUIT\n");
    let sending = thread::spawn(move || (&writer).write_all(batch.as_bytes()));
    sending.join().unwrap().expect("the whole batch was sent");
    // Read nothing until the server has read it all, QUIT included (`ss`: nothing unread on its
    // side, nothing unacknowledged on ours): its QUIT then comes with replies still waiting.
    assert!(
        wait_until(Duration::from_secs(10), || {
            tests::connection_queues(server.port(), mine).is_some_and(|(unread, _)| unread == 0)
                && tests::connection_queues(mine, server.port())
                    .is_some_and(|(_, unacked)| unacked == 0)
        }),
        "the server did not read the whole batch"
    );
    for i in 0..LINES {
        line.clear();
        reader
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("reply {i} of {LINES}: {e}"));
        assert_eq!(line, format!("OK {i} {padding}\n"), "reply {i} of {LINES}");
    }
    line.clear();
    reader.read_line(&mut line).unwrap();
    assert_eq!(
        line, "OK bye\n",
        "QUIT answered after every reply before it"
    );
    line.clear();
    assert_eq!(
        reader.read_line(&mut line).ok(),
        Some(0),
        "then closed: {line:?}"
    );
}

#[test]
fn a_client_that_resets_while_its_replies_wait_is_closed_and_its_descriptor_freed() {
    for api in ["select", "poll", "epoll"] {
        // Small kernel buffers (as in the QUIT test above): the replies wait in the server's
        // memory.
        let server = Server::start(SERVER, &["--api", api, "--send-buffer", "4096"]);
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket.connect(&server.addr.into()).unwrap();
        let stream = tests::with_timeouts(socket.into());
        let mine = stream.local_addr().unwrap().port();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert!(line.starts_with("HELLO "), "{line}");
        let with_client = procfs::fd_count(server.pid());
        // Requests, then end of stream: the server has read everything and only writes from
        // now on.
        let batch: String = (0..1000)
            .map(|i| format!("ECHO {i} {}\n", "p".repeat(90)))
            .collect();
        (&stream).write_all(batch.as_bytes()).unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        assert!(
            wait_until(Duration::from_secs(10), || {
                tests::connection_queues(server.port(), mine).is_some_and(|(unread, _)| unread == 0)
            }),
            "{api}: the server did not read the whole batch"
        );
        // Then a reset instead of reading the replies: the server's next write fails (EPIPE or
        // ECONNRESET), and that client is gone.
        let socket = Socket::from(stream);
        socket.set_linger(Some(Duration::ZERO)).unwrap();
        drop(socket);
        drop(reader);
        assert_the_reset_client_is_closed(&server, with_client, api);
    }
}

#[test]
fn an_idle_loop_sleeps_in_its_wait_after_a_client_has_left() {
    for args in [
        &["--api", "select"][..],
        &["--api", "poll"],
        &["--api", "epoll"],
        &["--api", "epoll", "--edge"],
    ] {
        let server = Server::start(SERVER, args);
        let mut staying = server.greeted();
        assert_eq!(staying.request("ECHO here"), "OK here");
        let mut leaving = server.greeted();
        let with_both = procfs::fd_count(server.pid());
        assert_eq!(leaving.request("QUIT"), "OK bye");
        assert!(leaving.closes());
        assert!(wait_until(Duration::from_secs(10), || procfs::fd_count(
            server.pid()
        ) < with_both));
        // Nothing to do now: the loop must sleep in its wait, not wake again and again (for a
        // descriptor it still watches after closing it, or for writability it does not need).
        observe::assert_idle_processes_sleep(&[server.pid()]);
        assert_eq!(staying.request("ECHO still here"), "OK still here");
    }
}
