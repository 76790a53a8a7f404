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
    help_listing, observe, procfs, run_binary, run_demo, wait_until, Client, Demo, Server,
};

const SERVER: &str = "thread-server";

/// How long we wait for the server to reach an observable state (threads gone, fds closed).
const SETTLE: Duration = Duration::from_secs(10);

/// How many threads the server process has (`/proc/<pid>/task`).
fn thread_count(server: &Server) -> usize {
    procfs::threads(server.pid()).len()
}

/// Waits until thread `tid` of the server has ended (it is gone from `/proc/<pid>/task`).
fn thread_ends(server: &Server, tid: i32) -> bool {
    wait_until(SETTLE, || !procfs::threads(server.pid()).contains(&tid))
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
    // The contract: at least one thread per connected client (and the main one, which accepts).
    assert!(
        thread_count(&server) > 3,
        "{} threads for 3 clients",
        thread_count(&server)
    );
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

    drop(clients);
    // Many INCRs at the same time from four clients: no value is lost or handed out twice.
    observe::concurrent_incr_counts_every_request_once(&server, 4, INCRS_PER_CLIENT, 5);
}

/// How many `INCR`s each of the concurrent clients sends in one write. A counter updated with a
/// separate load and store (the classic lost update) goes wrong only when two threads touch it
/// within the same few nanoseconds, and each `INCR` costs a `write` of its reply: on a 2-core
/// machine, a few thousand `INCR`s often pass such a counter. With this many, that counter fails
/// every run (checked by making the counter racy on purpose).
const INCRS_PER_CLIENT: usize = 100_000;

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
    assert_eq!(alice.request("SAY hello"), "OK");
    assert!(doomed.next_message().is_ok() && bob.next_message().is_ok());
    let doomed_tid = doomed.hello.as_ref().unwrap().tid;

    doomed.send("PANIC");
    assert!(doomed.closes(), "the panicked client's socket is closed");
    assert!(
        thread_ends(&server, doomed_tid),
        "the thread that served the panicked client ended: {:?}",
        procfs::threads(server.pid())
    );
    assert!(tests::procfs::alive(server.pid()));
    for client in [&alice, &bob] {
        let tid = client.hello.as_ref().unwrap().tid;
        assert!(
            procfs::threads(server.pid()).contains(&tid),
            "only one thread ended: {tid} serves another client"
        );
    }

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
    // The baseline: after one client has come and gone (what a server starts lazily is there).
    let mut warm_up = server.greeted();
    let warm_tid = warm_up.hello.as_ref().unwrap().tid;
    assert_eq!(warm_up.request("QUIT"), "OK bye");
    assert!(warm_up.closes());
    assert!(thread_ends(&server, warm_tid), "a client's thread ends");
    let base_threads = thread_count(&server);
    let base_fds = procfs::fd_count(server.pid());
    for round in 0..10 {
        // Twenty at a time, ending in different ways: QUIT, a plain close, a reset.
        let mut clients: Vec<Client> = (0..20).map(|_| server.greeted()).collect();
        // One SAY: the 19 others get a MSG.
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
    sleepy.client_id(); // and then it never reads again
    let mut reader = server.greeted();
    let sender_id = sender.client_id();
    // The server's end of the sleepy client's connection, as the kernel shows it.
    let sleepy_addr = sleepy.stream().local_addr().expect("our address");
    let still_connected = || procfs::tcp_state(server.addr, sleepy_addr) == Some(1);
    assert!(still_connected(), "ESTABLISHED in /proc/net/tcp");

    // Flood: 4 KB lines, until the server gives up on the sleepy client (its end of that
    // connection is no longer ESTABLISHED: shut down or closed). Each SAY must be answered, and
    // reach the reading client, within the 10 s read timeout: nobody waits for the sleepy one.
    // (The reader keeps pace with the sender, as a chat client that reads as lines arrive does;
    // one that fell far behind would be cut off too.)
    let text = "z".repeat(4000);
    let started = Instant::now();
    let mut sent = 0u64;
    // Reading /proc/net/tcp takes milliseconds: look every 100 ms, not at every SAY.
    let mut looked = Instant::now();
    let mut connected = true;
    while connected {
        if looked.elapsed() >= Duration::from_millis(100) {
            connected = still_connected();
            looked = Instant::now();
        }
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
    assert_eq!(sender.request("SAY after"), "OK");
    assert_eq!(reader.next_message(), Ok(format!("MSG {sender_id} after")));
    // What the sleepy client experiences: the messages that were already on their way, whole
    // and in order (perhaps the start of one more, cut by the close), then the end.
    let mut received = 0u64;
    while let Ok(line) = sleepy.read_raw_line() {
        if !line.ends_with(b"\n") {
            break; // the close came in the middle of a line
        }
        assert_eq!(
            String::from_utf8_lossy(&line),
            format!("MSG {sender_id} {received} {text}\n"),
            "message {received} to the sleepy client"
        );
        received += 1;
    }
    assert!(
        received < sent,
        "the sleepy client got all {sent} messages, yet it was cut off"
    );
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
    assert!(
        thread_count(&server) >= 2,
        "two workers at least, before any client: {} threads",
        thread_count(&server)
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
    // Refused with an `ERR` line (the lab's README gives its words), never greeted, then closed.
    let refusal = third.read_line();
    assert!(
        refusal.as_deref().is_ok_and(|l| l.starts_with("ERR ")),
        "the third client is told ERR: {refusal:?}"
    );
    assert!(third.closes());

    // Once one leaves (and its thread has ended), there is room again.
    let first_tid = first.hello.as_ref().unwrap().tid;
    assert_eq!(first.request("QUIT"), "OK bye");
    assert!(
        thread_ends(&server, first_tid),
        "the first client's thread ended"
    );
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
        observe::start_a_long_sleep(&server, &mut sleeper);
        let asked = Instant::now();
        let status = server.stop_with(signal, Duration::from_secs(12));
        let took = asked.elapsed();
        assert_eq!(status.code(), Some(0), "{signal}: {status}");
        assert!(
            took < Duration::from_secs(2),
            "{signal}: took {took:?} with a 10 s SLEEP in progress"
        );
        for client in &mut idle {
            assert_eq!(client.read_reply().as_deref(), Ok("BYE"), "{signal}");
            assert!(client.closes());
        }
        observe::assert_sleeper_told_bye(&mut sleeper, signal.as_ref());
        observe::assert_stdout_is_only_the_listening_line(&server);
    }
}

#[test]
fn sigterm_during_a_sleep_in_the_pool_cuts_it_short_and_exits_zero() {
    let mut server = Server::start(SERVER, &["--pool", "2"]);
    observe::sigterm_cuts_a_sleep_short(&mut server, "thread-server --pool 2");
}

#[test]
fn sigterm_exits_zero_even_while_a_thread_is_stuck_writing_to_a_client_that_never_reads() {
    let mut server = Server::start(SERVER, &[]);
    let stuck = server.greeted();
    // Requests whose replies it never reads: once the socket buffers are full, the thread that
    // serves it waits in write(), where no shutdown of the read side reaches it.
    let mut writer = stuck.stream().try_clone().expect("clone");
    let line = format!("ECHO {}\n", "w".repeat(4000));
    let flooding = thread::spawn(move || {
        for _ in 0..10_000 {
            if writer.write_all(line.as_bytes()).is_err() {
                break; // the write timeout, or the server closed: either way, done
            }
        }
    });
    let (port, mine) = (server.port(), stuck.local_port());
    assert!(
        wait_until(SETTLE, || tests::connection_queues(port, mine)
            .is_some_and(|(_, unsent)| unsent > 64 * 1024)),
        "the server's replies did not pile up: {:?}",
        tests::connection_queues(port, mine)
    );
    let status = server.stop_with(Signal::SIGTERM, Duration::from_secs(20));
    assert_eq!(
        status.code(),
        Some(0),
        "SIGTERM with a thread stuck in write(): {status}"
    );
    drop(stuck);
    flooding.join().expect("the flooding thread");
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
    // The waiting client was never served: it is closed, told `BYE` or nothing, never greeted.
    let mut told = Vec::new();
    while let Ok(line) = waiting.read_line() {
        told.push(line);
    }
    assert!(
        told.is_empty() || told == ["BYE"],
        "the waiting client is closed without a greeting: {told:?}"
    );
    assert!(
        wait_until(SETTLE, || procfs::stat(server.pid()).is_none()),
        "the server process is gone"
    );
}

#[test]
fn a_silent_client_gets_bye_idle_while_the_others_are_served() {
    let server = Server::start(SERVER, &["--idle-timeout", "2"]);
    let mut silent = server.greeted();
    let started = Instant::now();
    let mut talker = server.greeted();
    // The talker keeps talking (six requests of 500 ms, pipelined) while the silent one waits.
    talker.send_raw(b"SLEEP 500\nSLEEP 500\nSLEEP 500\nSLEEP 500\nSLEEP 500\nSLEEP 500\n");
    assert_eq!(silent.read_line().as_deref(), Ok("BYE idle"));
    let took = started.elapsed();
    // Near the number given: not before it (less what greeting took), nor long after.
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_millis(3500),
        "BYE idle after {took:?} with --idle-timeout 2"
    );
    assert!(silent.closes());
    for _ in 0..6 {
        assert_eq!(talker.read_reply().as_deref(), Ok("OK slept 500"));
    }
    assert_eq!(
        talker.request("SAY alone now"),
        "OK",
        "SAY with nobody else is fine"
    );
    assert!(talker.request("PANIC").starts_with("ERR PANIC is disabled"));
}

#[test]
fn a_half_closed_client_gets_one_reply_for_its_one_complete_line() {
    let server = Server::start(SERVER, &[]);
    observe::half_close_discards_the_unfinished_line(&server);
}

#[test]
fn client_ids_are_unique_among_live_clients() {
    let server = Server::start(SERVER, &[]);
    let mut clients: Vec<Client> = (0..6).map(|_| server.greeted()).collect();
    observe::assert_unique_client_ids(&mut clients);
    // Two leave (their threads end); four more come: still no id shared by two live clients.
    for mut leaving in [clients.remove(3), clients.remove(0)] {
        let tid = leaving.hello.as_ref().unwrap().tid;
        assert_eq!(leaving.request("QUIT"), "OK bye");
        assert!(
            thread_ends(&server, tid),
            "the thread of a client that left ended"
        );
    }
    clients.extend((0..4).map(|_| server.greeted()));
    observe::assert_unique_client_ids(&mut clients);
}

/// The server's limit on open descriptors (`ulimit -n`), soft and hard, from `/proc/<pid>/limits`.
fn descriptor_limits(pid: i32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("read limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line");
    let fields: Vec<&str> = line.split_whitespace().collect();
    (fields[3].to_string(), fields[4].to_string())
}

/// Sets the running server's descriptor limit with `prlimit`.
fn set_descriptor_limit(pid: i32, soft: &str, hard: &str) {
    let mut prlimit = tests::tool("prlimit");
    prlimit.args([format!("--nofile={soft}:{hard}"), format!("--pid={pid}")]);
    let (status, _, stderr) = tests::run_with_timeout(prlimit, Duration::from_secs(10));
    assert!(status.success(), "prlimit: {stderr}");
}

#[test]
fn out_of_descriptors_the_server_goes_on_and_serves_once_some_are_free() {
    let server = Server::start(SERVER, &[]);
    let mut first = server.greeted();
    assert_eq!(first.request("ECHO warm"), "OK warm");
    // Room for a couple more clients only: the next accept() fails with EMFILE.
    let (soft, hard) = descriptor_limits(server.pid());
    let limit = (procfs::fd_count(server.pid()) + 4).to_string();
    set_descriptor_limit(server.pid(), &limit, &hard);
    let mut clients: Vec<Client> = (0..6).map(|_| server.connect()).collect();
    let mut greeted = Vec::new();
    for (i, client) in clients.iter_mut().enumerate() {
        client.set_timeout(Duration::from_secs(2));
        if client.read_line().is_ok_and(|l| l.starts_with("HELLO ")) {
            greeted.push(i);
        }
    }
    assert!(
        greeted.len() < clients.len(),
        "every client was greeted: the limit was never reached"
    );
    // A failed accept() is the server's trouble, not a reason to stop: once descriptors are
    // free again, it serves.
    set_descriptor_limit(server.pid(), &soft, &hard);
    for i in greeted.into_iter().rev() {
        drop(clients.remove(i));
    }
    drop(first);
    assert!(procfs::alive(server.pid()), "the server is still running");
    let mut newcomer = server.greeted();
    assert_eq!(newcomer.request("ECHO in"), "OK in");
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
    for bad in [
        &["--pool", "0"][..],
        &["--max-clients", "0"],
        &["--bogus"],
        &["--port", "x"],
    ] {
        let (status, stdout, stderr) = run_binary(SERVER, bad);
        assert_eq!(status.code(), Some(2), "{bad:?}: {stderr}");
        assert_eq!(stdout, "", "{bad:?}: nothing on stdout");
    }
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
    observe::the_client_prints_msg_lines_while_the_user_is_still_typing(&server, "thread-client");
}
