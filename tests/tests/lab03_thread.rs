//! lab03: the thread server (다중 접속, 쓰레드 방식) serves each client in its own thread of one
//! process; the threads share the `INCR` counter and the chat room that `SAY` goes through.
//!
//! Grade this lab alone with `cargo test -p tests --test lab03_thread`.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use socket2::{Domain, Socket, Type};
use tests::{
    help_listing, procfs, run_binary, run_demo, spawn_client, wait_until, Client, Demo, Server,
};

const SERVER: &str = "thread-server";

/// How long we wait for the server to reach an observable state (threads gone, fds closed).
const SETTLE: Duration = Duration::from_secs(10);

/// How long we wait for a line of the server's narration to reach the test.
const NARRATION: Duration = Duration::from_secs(5);

/// How many threads the server process has (`/proc/<pid>/task`).
fn thread_count(server: &Server) -> usize {
    procfs::threads(server.pid()).len()
}

#[test]
fn three_clients_are_served_at_once_by_one_process_and_three_threads() {
    let server = Server::start(SERVER, &[]);
    // All three are greeted while none has left: they are served at the same time.
    let mut clients: Vec<Client> = (0..3).map(|_| server.greeted()).collect();
    let tasks = procfs::threads(server.pid());
    let mut tids = HashSet::new();
    for client in &mut clients {
        let hello = client.hello.clone().unwrap();
        assert_eq!(hello.model, "thread");
        assert_eq!(hello.pid, server.pid(), "one process serves everyone");
        assert_ne!(
            hello.tid,
            server.pid(),
            "served by a thread, not the main one"
        );
        assert!(
            tasks.contains(&hello.tid),
            "tid {} is in /proc/{}/task: {tasks:?}",
            hello.tid,
            server.pid()
        );
        let who = tests::parse_served(&client.request("WHO")).unwrap();
        assert_eq!(who, hello, "WHO is answered by the same thread");
        tids.insert(hello.tid);
    }
    assert_eq!(tids.len(), 3, "three distinct threads: {tids:?}");
    // They are still all being served: each answers in turn, in any order.
    for (i, client) in clients.iter_mut().enumerate().rev() {
        assert_eq!(client.request(&format!("ECHO {i}")), format!("OK {i}"));
    }
}

#[test]
fn incr_is_shared_by_every_thread() {
    let server = Server::start(SERVER, &[]);
    let mut clients: Vec<Client> = (0..4).map(|_| server.greeted()).collect();
    for client in &mut clients {
        client.send("INCR");
    }
    let mut values: Vec<u64> = clients
        .iter_mut()
        .map(|c| {
            let reply = c.read_reply().unwrap();
            reply
                .strip_prefix("OK ")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{reply:?}"))
        })
        .collect();
    values.sort_unstable();
    assert_eq!(values, [1, 2, 3, 4], "one counter, shared, in some order");

    // Many INCRs at the same time from four threads: no value is lost or handed out twice.
    let per_client = 250;
    let handles: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            thread::spawn(move || {
                // Pipelined: every request is in flight before we read a reply.
                let requests = "INCR\n".repeat(per_client);
                client.send_raw(requests.as_bytes());
                (0..per_client)
                    .map(|_| {
                        let reply = client.read_reply().unwrap();
                        reply[3..].parse::<u64>().unwrap()
                    })
                    .collect::<Vec<u64>>()
            })
        })
        .collect();
    let mut all: Vec<u64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    all.sort_unstable();
    let expected: Vec<u64> = (5..5 + 4 * per_client as u64).collect();
    assert_eq!(all, expected, "every value from 5 to 1,004 exactly once");
}

#[test]
fn say_reaches_the_two_others_and_not_the_sender() {
    let server = Server::start(SERVER, &[]);
    let mut alice = server.greeted();
    let mut bob = server.greeted();
    let mut carol = server.greeted();
    let alice_id = alice.client_id();
    assert_eq!(alice.request("SAY hello, room"), "OK");
    let expected = format!("MSG {alice_id} hello, room");
    assert_eq!(bob.next_message().as_deref(), Ok(expected.as_str()));
    assert_eq!(carol.next_message().as_deref(), Ok(expected.as_str()));
    // Bob answers; everything Alice receives before her next reply is kept aside by the harness.
    let bob_id = bob.client_id();
    assert_eq!(bob.request("say hi alice"), "OK");
    assert_eq!(
        alice.next_message(),
        Ok(format!("MSG {bob_id} hi alice")),
        "the sender's own SAY never came back to her"
    );
    assert_eq!(alice.request("ECHO done"), "OK done");
    assert!(alice.messages.is_empty(), "{:?}", alice.messages);
    assert_eq!(bob.request("ECHO done"), "OK done");
    assert!(
        bob.messages.is_empty(),
        "not to the sender: {:?}",
        bob.messages
    );
    assert_eq!(carol.next_message(), Ok(format!("MSG {bob_id} hi alice")));
}

#[test]
fn a_panic_ends_one_thread_and_the_others_go_on_sharing() {
    let server = Server::start(SERVER, &["--allow-panic"]);
    let mut alice = server.greeted();
    let mut bob = server.greeted();
    let mut doomed = server.greeted();
    assert_eq!(alice.request("INCR"), "OK 1");
    assert_eq!(doomed.request("INCR"), "OK 2");
    // A MSG to Bob and to the doomed client starts their writer threads (outbox.rs).
    let before_say = thread_count(&server);
    assert_eq!(alice.request("SAY hello"), "OK");
    assert!(doomed.next_message().is_ok() && bob.next_message().is_ok());
    assert!(
        wait_until(SETTLE, || thread_count(&server) == before_say + 2),
        "the first MSG to each started its writer: {} threads, {before_say} before",
        thread_count(&server)
    );
    let before = thread_count(&server);

    doomed.send("PANIC");
    assert!(doomed.closes(), "the panicked client's socket is closed");
    assert!(
        wait_until(SETTLE, || thread_count(&server) == before - 2),
        "its thread (and its writer) ended: {} threads, {before} before",
        thread_count(&server)
    );
    assert!(tests::procfs::alive(server.pid()));
    assert!(
        server.narrates_within("panicked", NARRATION),
        "stderr:\n{}",
        server.stderr()
    );

    // The others are still served, still share the counter, and the chat room still works
    // (the panicked client has left it: only Bob hears Alice).
    assert_eq!(bob.request("INCR"), "OK 3");
    assert_eq!(alice.request("INCR"), "OK 4");
    let alice_id = alice.client_id();
    assert_eq!(alice.request("SAY still here"), "OK");
    assert_eq!(bob.next_message(), Ok(format!("MSG {alice_id} still here")));
    let mut newcomer = server.greeted();
    assert_eq!(newcomer.request("INCR"), "OK 5");
}

#[test]
fn after_200_connections_threads_and_descriptors_are_back_to_baseline() {
    let server = Server::start(SERVER, &[]);
    let base_threads = thread_count(&server);
    let base_fds = procfs::fd_count(server.pid());
    assert_eq!(base_threads, 1, "only the main thread before any client");
    for round in 0..10 {
        // Twenty at a time, ending in different ways: QUIT, a plain close, a reset.
        let mut clients: Vec<Client> = (0..20).map(|_| server.greeted()).collect();
        // One SAY: the 19 others get a MSG, which starts a writer thread for each of them.
        assert_eq!(clients[0].request("SAY round"), "OK", "round {round}");
        for (i, mut client) in clients.drain(..).enumerate() {
            assert_eq!(client.request("ECHO x"), "OK x", "round {round}");
            match i % 3 {
                0 => assert_eq!(client.request("QUIT"), "OK bye"),
                1 => drop(client),
                _ => client.reset(),
            }
        }
    }
    let settled = wait_until(SETTLE, || {
        thread_count(&server) == base_threads && procfs::fd_count(server.pid()) == base_fds
    });
    assert!(
        settled,
        "threads {} (baseline {base_threads}), fds {} (baseline {base_fds})",
        thread_count(&server),
        procfs::fd_count(server.pid())
    );
}

#[test]
fn a_client_that_never_reads_does_not_stop_say_reaching_the_others() {
    let server = Server::start(SERVER, &[]);
    let mut sender = server.greeted();
    let mut sleepy = server.greeted();
    let sleepy_id = sleepy.client_id(); // and then it never reads again
    let mut reader = server.greeted();
    let sender_id = sender.client_id();

    // Flood: 4 KB lines, until the server gives up on the sleepy client. Each SAY must be
    // answered, and reach the reading client, within the 10 s read timeout: nobody waits for
    // the sleepy one. (The reader keeps pace with the sender, as a chat client that reads as
    // lines arrive does; one that fell far behind would be cut off too.)
    let text = "z".repeat(4000);
    let cut_off = format!("client {sleepy_id} has");
    let started = Instant::now();
    let mut sent = 0u64;
    while !server.stderr().contains(&cut_off) {
        assert!(
            sent < 20_000,
            "sent {sent} SAYs and the sleepy client was never cut off"
        );
        assert_eq!(sender.request(&format!("SAY {sent} {text}")), "OK");
        assert_eq!(
            reader.next_message(),
            Ok(format!("MSG {sender_id} {sent} {text}")),
            "SAY number {sent} reached the reading client"
        );
        sent += 1;
    }
    eprintln!(
        "the sleepy client was cut off after {sent} SAYs ({} ms)",
        started.elapsed().as_millis()
    );
    assert!(sent > 32, "only after its outbox filled up");
    assert_eq!(sender.request("SAY after"), "OK");
    assert_eq!(reader.next_message(), Ok(format!("MSG {sender_id} after")));
    // What the sleepy client experiences: whatever was already on its way, then the close.
    assert!(sleepy.closes(), "the server disconnected the sleepy client");
}

#[test]
fn a_reply_and_a_msg_line_never_interleave_under_a_say_storm() {
    // Two threads of the server write to the victim's socket: its own thread (the ECHO replies)
    // and its writer thread (the MSG lines of the sayer's SAYs). Each holds the socket's write
    // lock for a whole line. We keep megabytes of replies on their way and read them slowly
    // (a tiny receive buffer, 32-byte reads), so that the server's send buffer is full and its
    // write()s wait half-done: without the lock, the other thread's line would then land
    // inside this one. (Without the lock this test failed 8 runs out of 8.)
    let server = Server::start(SERVER, &[]);
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let addr: SocketAddr = ([127, 0, 0, 1], server.port()).into();
    socket
        .connect_timeout(&addr.into(), Duration::from_secs(10))
        .expect("connect");
    let victim: TcpStream = socket.into();
    victim
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut lines = BufReader::with_capacity(32, victim.try_clone().expect("clone"));
    let mut read_line = || {
        let mut line = String::new();
        match lines.read_line(&mut line) {
            Ok(0) => panic!("the server closed the victim's connection"),
            Ok(_) => line.trim_end_matches('\n').to_string(),
            Err(e) => panic!("reading the victim's next line: {e}"),
        }
    };
    assert!(read_line().starts_with("HELLO "));

    const SAYS: usize = 1000;
    const ECHOES: usize = 4000;
    // Lines on their way to us: replies by the megabyte, but at most 16 MSG lines, so that the
    // victim's outbox (32 lines) never fills and it is never cut off.
    const ECHOES_IN_FLIGHT: usize = 1000;
    const SAYS_IN_FLIGHT: usize = 16;
    let text = "m".repeat(4000);
    let payload = "r".repeat(4000);

    // Calls `send(i)` for each i in 0..count, at most `in_flight` lines ahead of what the
    // victim has read (it hands back one credit per line it reads).
    fn sender(
        count: usize,
        in_flight: usize,
        mut send: impl FnMut(usize) + Send + 'static,
    ) -> (mpsc::SyncSender<()>, thread::JoinHandle<()>) {
        let (credit, credits) = mpsc::sync_channel::<()>(in_flight);
        for _ in 0..in_flight {
            credit.send(()).unwrap();
        }
        let thread = thread::spawn(move || {
            for i in 0..count {
                credits
                    .recv_timeout(Duration::from_secs(10))
                    .expect("the victim stopped reading");
                send(i);
            }
        });
        (credit, thread)
    }
    let mut sayer = server.greeted();
    let sayer_id = sayer.client_id();
    let said = text.clone();
    let (say_credit, storm) = sender(SAYS, SAYS_IN_FLIGHT, move |i| {
        assert_eq!(sayer.request(&format!("SAY {i} {said}")), "OK");
    });
    let mut requests = victim.try_clone().expect("clone");
    let echoed = payload.clone();
    let (echo_credit, pipeline) = sender(ECHOES, ECHOES_IN_FLIGHT, move |k| {
        requests
            .write_all(format!("ECHO {k} {echoed}\n").as_bytes())
            .expect("send ECHO");
    });

    let (mut replies, mut messages) = (0, 0);
    while messages < SAYS || replies < ECHOES {
        let line = read_line();
        if line.starts_with("MSG ") {
            let expected = format!("MSG {sayer_id} {messages} {text}");
            assert!(
                line == expected,
                "MSG {messages} is not whole ({} bytes, {} expected): {line:.60}...",
                line.len(),
                expected.len()
            );
            messages += 1;
            let _ = say_credit.send(()); // the sayer may send one more
        } else {
            let expected = format!("OK {replies} {payload}");
            assert!(
                line == expected,
                "reply {replies} is not whole ({} bytes, {} expected): {line:.60}...",
                line.len(),
                expected.len()
            );
            replies += 1;
            let _ = echo_credit.send(());
        }
    }
    storm.join().expect("the sayer's thread");
    pipeline.join().expect("the victim's sending thread");
    eprintln!("{messages} MSG lines and {replies} replies, every one whole");
}

#[test]
fn a_pool_of_two_serves_two_while_the_third_waits_its_turn() {
    let server = Server::start(SERVER, &["--pool", "2"]);
    assert_eq!(
        thread_count(&server),
        3,
        "the main thread and two workers, before any client"
    );
    let mut first = server.greeted();
    let mut second = server.greeted();
    let first_tid = first.hello.as_ref().unwrap().tid;
    assert_ne!(first_tid, second.hello.as_ref().unwrap().tid);
    let mut third = server.connect();
    assert_eq!(second.request("ECHO busy"), "OK busy");
    assert!(
        third.still_waiting(Duration::from_millis(500)),
        "the third client was greeted while two workers were busy"
    );
    assert_eq!(first.request("INCR"), "OK 1");

    assert_eq!(first.request("QUIT"), "OK bye");
    let hello = third.read_hello();
    assert_eq!(
        hello.tid, first_tid,
        "the freed worker took the third client"
    );
    assert_eq!(third.request("INCR"), "OK 2", "the counter is shared");
    assert_eq!(
        second.request("ECHO still served"),
        "OK still served",
        "two at once again"
    );
}

#[test]
fn a_pool_worker_survives_the_panic_of_its_client() {
    let server = Server::start(SERVER, &["--pool", "1", "--allow-panic"]);
    let mut doomed = server.greeted();
    let worker = doomed.hello.as_ref().unwrap().tid;
    let mut next = server.connect();
    doomed.send("PANIC");
    assert!(doomed.closes());
    assert_eq!(
        next.read_hello().tid,
        worker,
        "the same worker serves the next client"
    );
    assert_eq!(next.request("ECHO alive"), "OK alive");
    assert!(procfs::threads(server.pid()).contains(&worker));
}

#[test]
fn max_clients_refuses_the_next_one_politely() {
    let server = Server::start(SERVER, &["--max-clients", "2"]);
    let mut first = server.greeted();
    let _second = server.greeted();
    let mut third = server.connect();
    assert_eq!(third.read_line().as_deref(), Ok("ERR server full"));
    assert!(third.closes());
    assert!(
        server.narrates_within("refused client 3", NARRATION),
        "{}",
        server.stderr()
    );

    // Once one leaves (and its thread has ended), there is room again. Nobody was sent a MSG,
    // so no writer thread was started: the main thread and the second client's thread remain.
    assert_eq!(first.request("QUIT"), "OK bye");
    assert!(wait_until(SETTLE, || thread_count(&server) == 1 + 1));
    let mut fourth = server.greeted();
    assert_eq!(fourth.request("ECHO in"), "OK in");
}

#[test]
fn sigterm_and_sigint_exit_zero_promptly_with_clients_connected() {
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        let mut server = Server::start(SERVER, &[]);
        let mut idle: Vec<Client> = (0..3).map(|_| server.greeted()).collect();
        let mut sleeper = server.greeted();
        assert_eq!(idle[0].request("SAY before the end"), "OK");
        assert!(sleeper.next_message().is_ok());
        sleeper.send("SLEEP 10000");
        // Wait until its thread is in the SLEEP, where the kernel shows it (wchan); if this
        // kernel does not tell, go on: the SLEEP is then at worst about to start.
        let tid = sleeper.hello.as_ref().unwrap().tid;
        wait_until(Duration::from_secs(5), || {
            std::fs::read_to_string(format!("/proc/{}/task/{tid}/wchan", server.pid()))
                .is_ok_and(|w| w.contains("nanosleep"))
        });
        let asked = Instant::now();
        let status = server.stop_with(signal, Duration::from_secs(10));
        let took = asked.elapsed();
        assert_eq!(status.code(), Some(0), "{signal}: {status}");
        assert!(
            took < Duration::from_secs(5),
            "{signal}: took {took:?} with a 10 s SLEEP in progress"
        );
        for client in &mut idle {
            assert_eq!(client.read_reply().as_deref(), Ok("BYE"), "{signal}");
            assert!(client.closes());
        }
        assert_eq!(
            sleeper.read_reply().as_deref(),
            Ok("OK slept 10000"),
            "{signal}: the SLEEP was cut short"
        );
        assert_eq!(sleeper.read_reply().as_deref(), Ok("BYE"), "{signal}");
        assert!(sleeper.closes(), "{signal}: the sleeper was closed too");
        assert!(
            server.narrates_within("woke 4 client(s)", NARRATION),
            "{signal}"
        );
    }
}

#[test]
fn sigterm_stops_the_pool_gracefully() {
    let mut server = Server::start(SERVER, &["--pool", "1"]);
    let mut served = server.greeted();
    let mut waiting = server.connect();
    assert_eq!(served.request("ECHO hi"), "OK hi");
    assert!(waiting.still_waiting(Duration::from_millis(300)));
    let status = server.stop_with(Signal::SIGTERM, Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
    assert_eq!(served.read_line().as_deref(), Ok("BYE"));
    assert!(served.closes());
    assert_eq!(
        waiting.read_line().as_deref(),
        Ok("BYE"),
        "the waiting client is told too, never greeted"
    );
    assert!(waiting.closes());
    assert!(
        server.narrates_within("every thread has finished", NARRATION),
        "{}",
        server.stderr()
    );
}

#[test]
fn a_silent_client_gets_bye_idle_while_the_others_are_served() {
    let server = Server::start(SERVER, &["--idle-timeout", "1"]);
    let mut silent = server.greeted();
    let started = Instant::now();
    let mut talker = server.greeted();
    // The talker keeps talking (three requests of 400 ms, pipelined) while the silent one waits.
    talker.send_raw(b"SLEEP 400\nSLEEP 400\nSLEEP 400\n");
    assert_eq!(silent.read_line().as_deref(), Ok("BYE idle"));
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "not before the timeout"
    );
    assert!(silent.closes());
    for _ in 0..3 {
        assert_eq!(talker.read_reply().as_deref(), Ok("OK slept 400"));
    }
    assert_eq!(
        talker.request("SAY alone now"),
        "OK",
        "SAY with nobody else is fine"
    );
    assert!(talker.request("PANIC").starts_with("ERR PANIC is disabled"));
}

#[test]
fn help_documents_the_lab_flags() {
    help_listing(
        SERVER,
        &[
            "--pool",
            "--max-clients",
            "--allow-panic",
            "--demo",
            "[default: 7003]",
        ],
    );
    let (status, _, stderr) = run_binary(SERVER, &["--pool", "0"]);
    assert_eq!(status.code(), Some(2), "{stderr}");
}

#[test]
fn the_demo_shows_one_pid_and_a_thread_per_client() {
    let Demo { stdout, waits, .. } = run_demo(SERVER, 3);
    let greetings: Vec<tests::Served> = stdout
        .lines()
        .filter_map(|l| tests::parse_served(l.split("<- ").nth(1)?.split("   (").next()?))
        .filter(|s| s.model == "thread")
        .collect();
    let hellos: Vec<&str> = stdout.lines().filter(|l| l.contains("<- HELLO")).collect();
    assert_eq!(hellos.len(), 3, "{stdout}");
    let pids: HashSet<i32> = greetings.iter().map(|s| s.pid).collect();
    let tids: HashSet<i32> = greetings.iter().map(|s| s.tid).collect();
    assert_eq!(pids.len(), 1, "one process: {stdout}");
    assert_eq!(tids.len(), 3, "a thread per client: {stdout}");
    // Nobody waits for the clients ahead (each holds the server for over 1.3 s in lab01).
    assert!(
        waits.iter().all(|&w| w < 1_000),
        "waits {waits:?}:\n{stdout}"
    );
    assert!(
        stdout.contains("(a broadcast)"),
        "SAY reached others:\n{stdout}"
    );
    let mut counts: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.split("<- OK ").nth(1))
        .filter(|n| n.len() == 1)
        .collect();
    counts.sort_unstable();
    assert_eq!(counts, ["1", "2", "3"], "INCR shared:\n{stdout}");
}

#[test]
fn the_client_prints_msg_lines_while_the_user_is_still_typing() {
    let server = Server::start(SERVER, &[]);
    let mut child = spawn_client("thread-client", server.port());
    let (lines_tx, lines) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let next = || {
        lines
            .recv_timeout(tests::READ_TIMEOUT)
            .expect("a line from the client")
    };
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"ECHO ready\n").unwrap();
    assert!(next().starts_with("HELLO thread pid="));
    assert_eq!(next(), "OK ready");

    // The "user" has typed nothing more; a message from another client shows up anyway.
    let mut other = server.greeted();
    let other_id = other.client_id();
    assert_eq!(other.request("SAY are you there?"), "OK");
    assert_eq!(next(), format!("MSG {other_id} are you there?"));

    drop(stdin); // end of input: the client says QUIT and ends
    assert_eq!(next(), "OK bye");
    assert!(
        wait_until(SETTLE, || child.try_wait().unwrap().is_some()),
        "the client ended"
    );
    assert!(child.wait().unwrap().success());
}
