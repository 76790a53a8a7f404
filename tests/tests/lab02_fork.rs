//! lab02: the fork server (포크 방식) serves each client in its own child process; the parent
//! only accepts, forks and reaps. `--prefork N` keeps a pool of N children that accept by
//! themselves.
//!
//! Grade this lab alone with `cargo test -p tests --test lab02_fork`.

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tests::{
    help_listing, observe, procfs, run_binary, run_client, run_demo, wait_until, Client, Demo,
    Server, SHARED_FLAGS,
};

const SERVER: &str = "fork-server";

#[test]
fn three_clients_are_served_at_once_each_by_its_own_child() {
    let server = Server::start(SERVER, &[]);
    let mut clients: Vec<Client> = (0..3).map(|_| server.greeted()).collect();
    // All three are greeted before any leaves: they are served at the same time.
    let pids: BTreeSet<i32> = clients.iter().map(Client::serving_pid).collect();
    assert_eq!(pids.len(), 3, "three distinct serving processes: {pids:?}");
    let mut ids = Vec::new();
    for client in &mut clients {
        let hello = client.hello.clone().unwrap();
        assert_eq!(hello.model, "fork");
        assert_ne!(hello.pid, server.pid(), "served by a child, not the parent");
        assert_eq!(hello.tid, hello.pid, "each child has a single thread");
        let stat = procfs::stat(hello.pid).expect("the serving child exists");
        assert_eq!(stat.ppid, server.pid(), "its parent is the server");
        let who = client.request("WHO");
        assert!(
            who.starts_with(&format!("OK model=fork pid={} ", hello.pid)),
            "{who}"
        );
        ids.push(client.client_id());
        // Each child has its own copy of the counter.
        assert_eq!(client.request("INCR"), "OK 1");
        assert_eq!(client.request("INCR"), "OK 2");
        let say = client.request("SAY hello?");
        assert!(
            say.starts_with("ERR ") && say.contains("share no memory") && say.contains("lab05"),
            "{say}"
        );
    }
    let distinct: BTreeSet<u64> = ids.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        3,
        "client ids are unique among live clients: {ids:?}"
    );
    assert!(ids.iter().all(|&id| id > 0), "{ids:?}");
    assert_eq!(
        server.live_children(),
        pids,
        "the server's children are exactly the serving processes"
    );
    // fork() copied the listening socket into each child; each child closed its copy, and the
    // parent closed its copies of the clients' sockets.
    let parent_sockets = procfs::sockets_of(server.pid());
    assert_eq!(
        parent_sockets.len(),
        1,
        "the parent holds only the listening socket: {parent_sockets:?}"
    );
    for &pid in &pids {
        let child_sockets = procfs::sockets_of(pid);
        assert_eq!(
            child_sockets.len(),
            1,
            "child {pid} holds only its client's socket: {child_sockets:?}"
        );
        assert!(child_sockets.is_disjoint(&parent_sockets));
    }
    assert_eq!(
        procfs::threads(server.pid()).len(),
        1,
        "the fork server stays single-threaded"
    );
    // The next client gets a fresh copy of the counter again.
    let mut later = server.greeted();
    assert_eq!(later.request("INCR"), "OK 1");
    assert_eq!(later.request("QUIT"), "OK bye");
}

#[test]
fn a_sleep_in_one_child_does_not_delay_the_others() {
    let server = Server::start(SERVER, &[]);
    let mut sleeper = server.greeted();
    let sent = Instant::now();
    sleeper.send("SLEEP 4000");
    assert!(
        server.is_working_on_request_of(&sleeper),
        "the sleeper's child never started the SLEEP"
    );
    let mut other = server.greeted();
    assert_eq!(other.request("ECHO not delayed"), "OK not delayed");
    let mut third = server.greeted();
    assert_eq!(third.request("INCR"), "OK 1");
    // The sleeper's reply has not come yet: the others were greeted and answered during its
    // SLEEP, not after it.
    assert!(
        sleeper.still_waiting(Duration::from_millis(100)),
        "the two other clients were served only after the 4,000 ms SLEEP ended ({:?})",
        sent.elapsed()
    );
    // ... and it gets its answer in the end, not early.
    assert_eq!(sleeper.read_reply().unwrap(), "OK slept 4000");
    assert!(sent.elapsed() >= Duration::from_millis(4000));
}

#[test]
fn two_hundred_clients_one_after_another_leave_no_zombie_and_no_descriptor() {
    let server = Server::start(SERVER, &[]);
    let baseline = procfs::fd_count(server.pid());
    assert!(baseline >= 3, "stdin, stdout, stderr and the listener");
    let mut pids = BTreeSet::new();
    for i in 0..200 {
        let mut client = server.greeted();
        pids.insert(client.serving_pid());
        if i % 2 == 0 {
            assert_eq!(client.request("QUIT"), "OK bye");
        }
        // Odd ones just hang up: the child sees end of stream and exits.
    }
    assert!(pids.len() > 1, "each client had its own child");
    let clean = wait_until(Duration::from_secs(15), || {
        server.children().is_empty() && procfs::fd_count(server.pid()) == baseline
    });
    assert!(
        clean,
        "after 200 clients: children {:?} (zombies {:?}), {} descriptors open against {baseline} at start",
        server.children(),
        procfs::zombie_children_of(server.pid()),
        procfs::fd_count(server.pid())
    );
}

#[test]
fn twenty_clients_that_leave_at_once_are_all_reaped() {
    let server = Server::start(SERVER, &[]);
    let clients: Vec<Client> = (0..20).map(|_| server.greeted()).collect();
    let pids: BTreeSet<i32> = clients.iter().map(Client::serving_pid).collect();
    assert_eq!(pids.len(), 20, "twenty children");
    // All hang up at once: twenty children end together, and their SIGCHLDs merge (a signal
    // is not queued), so one SIGCHLD must be taken to mean "one or more children ended".
    drop(clients);
    let clean = wait_until(Duration::from_secs(10), || server.children().is_empty());
    assert!(
        clean,
        "children left: {:?}, zombies among them: {:?}",
        server.children(),
        procfs::zombie_children_of(server.pid())
    );
}

#[test]
fn a_panic_kills_one_child_and_the_others_are_still_served() {
    let server = Server::start(SERVER, &["--allow-panic"]);
    let mut doomed = server.greeted();
    let mut survivor = server.greeted();
    let doomed_pid = doomed.serving_pid();
    doomed.send("PANIC");
    assert!(doomed.closes(), "the panicking child's connection closes");
    assert!(
        server.child_is_gone(doomed_pid, Duration::from_secs(10)),
        "the panicked child is reaped (no zombie): {:?}",
        procfs::stat(doomed_pid)
    );
    assert_eq!(survivor.request("ECHO still here"), "OK still here");
    let mut next = server.greeted();
    assert_eq!(next.request("INCR"), "OK 1");
}

/// Stops `server` with `signal` while one client idles, one is in the middle of a
/// `SLEEP 10000` and one has just been answered: the server exits 0 within 2 s, every client is
/// told `BYE`, and the server itself reaped every child (none was left for anyone else to reap).
fn stop_during_a_sleep(args: &[&str], signal: Signal) {
    let mut server = Server::start(SERVER, args);
    let mut idle = server.greeted();
    let mut sleeping = server.greeted();
    let mut busy = server.greeted();
    sleeping.send("SLEEP 10000");
    assert_eq!(busy.request("ECHO hi"), "OK hi");
    assert!(
        server.is_working_on_request_of(&sleeping),
        "the sleeper's child never started the SLEEP"
    );
    let pids = [
        idle.serving_pid(),
        sleeping.serving_pid(),
        busy.serving_pid(),
    ];

    let signalled = Instant::now();
    let status = server.stop_with(signal, Duration::from_secs(10));
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "{signal}: {status}");
    assert!(
        took < Duration::from_secs(2),
        "{signal}: exited {took:?} after the signal, with a SLEEP 10000 in progress"
    );
    assert_eq!(idle.read_line().as_deref(), Ok("BYE"), "the client is told");
    assert!(idle.closes());
    assert_eq!(busy.read_line().as_deref(), Ok("BYE"));
    // The SLEEP is cut short by the stop; the last line is BYE.
    assert_eq!(
        sleeping.last_line(),
        "BYE",
        "{signal}: the sleeping client is told"
    );
    assert_eq!(
        server.orphans(),
        Vec::<i32>::new(),
        "{signal}: children the server left unreaped at its exit"
    );
    for pid in pids {
        assert!(
            server.child_is_gone(pid, Duration::ZERO),
            "{signal}: child {pid} is gone: {:?}",
            procfs::stat(pid)
        );
    }
    assert!(
        procfs::live_in_group(server.pid()).is_empty(),
        "{signal}: no process of the server's group is left"
    );
    assert_eq!(
        server.stdout_after_listening(),
        "",
        "nothing on stdout after `listening on`"
    );
}

#[test]
fn sigterm_and_sigint_stop_every_child_and_exit_zero() {
    stop_during_a_sleep(&[], Signal::SIGTERM);
    stop_during_a_sleep(&[], Signal::SIGINT);
    // And while idle in accept(), just after it started listening.
    let mut idle = Server::start(SERVER, &[]);
    assert_eq!(
        idle.stop_with(Signal::SIGTERM, Duration::from_secs(10))
            .code(),
        Some(0)
    );
    assert_eq!(idle.orphans(), Vec::<i32>::new());
}

#[test]
fn prefork_sigterm_stops_every_worker_and_exits_zero() {
    stop_during_a_sleep(&["--prefork", "3"], Signal::SIGTERM);
    stop_during_a_sleep(&["--prefork", "4"], Signal::SIGINT);
}

#[test]
fn a_child_that_ignores_sigterm_is_killed_after_the_grace_period() {
    let mut server = Server::start(SERVER, &[]);
    let client = server.greeted();
    let pid = client.serving_pid();
    // Freeze the child: a stopped process cannot run its SIGTERM handler (the signal waits,
    // pending), but SIGKILL still ends it. It stands for a child stuck for any reason.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGSTOP).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || procfs::stat(pid)
            .is_some_and(|s| s.state == 'T')),
        "the child is stopped"
    );

    let status = server.stop_with(Signal::SIGTERM, Duration::from_secs(20));
    assert_eq!(status.code(), Some(0));
    assert_eq!(
        server.orphans(),
        Vec::<i32>::new(),
        "the server killed and reaped the stuck child itself before it exited"
    );
    assert!(server.child_is_gone(pid, Duration::ZERO));
}

#[test]
fn prefork_three_serves_from_a_pool_of_three_and_replaces_a_child_that_panicked() {
    let server = Server::start(SERVER, &["--prefork", "3", "--allow-panic"]);
    assert!(
        wait_until(Duration::from_secs(10), || server.live_children().len()
            == 3),
        "three children forked up front, before any client: {:?}",
        server.children()
    );
    let pool = server.live_children();

    // Three clients at once: three distinct workers of the pool.
    let mut clients: Vec<Client> = (0..3).map(|_| server.greeted()).collect();
    let serving: BTreeSet<i32> = clients.iter().map(Client::serving_pid).collect();
    assert_eq!(
        serving, pool,
        "served by exactly the three pre-forked children"
    );
    // A fourth waits: the pool caps concurrency at three.
    let mut fourth = server.connect();
    assert!(
        fourth.still_waiting(Duration::from_millis(500)),
        "a fourth client was served by a pool of three"
    );
    assert_eq!(clients[0].request("INCR"), "OK 1");
    assert_eq!(clients[0].request("QUIT"), "OK bye");
    let freed = clients[0].serving_pid();
    assert_eq!(
        fourth.read_hello().pid,
        freed,
        "the worker that became free takes the next client"
    );
    assert_eq!(fourth.request("INCR"), "OK 1", "a fresh counter per client");
    drop(fourth);

    // Clients one after another: never a pid from outside the pool, never a new fork.
    for _ in 0..6 {
        let mut client = server.greeted();
        assert!(pool.contains(&client.serving_pid()));
        assert_eq!(client.request("QUIT"), "OK bye");
    }
    assert_eq!(server.live_children(), pool, "no fork per client");

    // A panic kills one worker; the parent forks a replacement.
    let doomed = clients[1].serving_pid();
    clients[1].send("PANIC");
    assert!(clients[1].closes());
    assert!(
        wait_until(Duration::from_secs(10), || {
            let now = server.live_children();
            now.len() == 3 && !now.contains(&doomed)
        }),
        "the pool is back at three without {doomed}: {:?}",
        server.children()
    );
    let new_pool = server.live_children();
    for pid in &new_pool {
        assert_eq!(procfs::stat(*pid).unwrap().ppid, server.pid());
    }
    assert_eq!(clients[2].request("ECHO unharmed"), "OK unharmed");
    assert!(procfs::zombie_children_of(server.pid()).is_empty());

    // Three at once again: exactly the new pool.
    drop(clients);
    let again: Vec<Client> = (0..3).map(|_| server.greeted()).collect();
    let serving: BTreeSet<i32> = again.iter().map(Client::serving_pid).collect();
    assert_eq!(serving, new_pool);
    assert_eq!(server.live_children(), new_pool, "the pool stays at three");
    assert_eq!(procfs::threads(server.pid()).len(), 1);
}

#[test]
fn max_children_two_holds_the_third_client_back_until_one_leaves() {
    let server = Server::start(SERVER, &["--max-children", "2"]);
    let mut first = server.greeted();
    let second = server.greeted();
    let mut third = server.connect();
    // The third is not accepted: it waits in the accept queue, where `ss` counts it.
    assert!(
        server.accept_queue_reaches(1),
        "Recv-Q should show the third client waiting, got {:?}",
        procfs::listen_queue(server.port())
    );
    assert!(
        third.still_waiting(Duration::from_millis(700)),
        "a third client was served at --max-children 2"
    );
    assert_eq!(server.children().len(), 2);

    let first_pid = first.serving_pid();
    assert_eq!(first.request("QUIT"), "OK bye");
    let hello = third.read_hello();
    assert_eq!(third.request("ECHO in"), "OK in");
    assert!(
        server.child_is_gone(first_pid, Duration::from_secs(10)),
        "the first client's child is reaped"
    );
    assert_eq!(
        server.live_children(),
        BTreeSet::from([second.serving_pid(), hello.pid]),
        "the third client has a child of its own, and there are never more than two"
    );
}

#[test]
fn no_reap_leaves_zombies_until_the_server_stops() {
    let mut server = Server::start(SERVER, &["--no-reap"]);
    let mut client = server.greeted();
    let pid = client.serving_pid();
    assert_eq!(client.request("QUIT"), "OK bye");
    assert!(
        wait_until(Duration::from_secs(10), || procfs::zombie_children_of(
            server.pid()
        )
        .contains(&pid)),
        "with --no-reap the ended child stays a zombie"
    );
    // Still a zombie a moment later, after another client came and went.
    let mut other = server.greeted();
    assert_eq!(other.request("QUIT"), "OK bye");
    assert_eq!(procfs::stat(pid).map(|s| s.state), Some('Z'));
    let status = server.stop_with(Signal::SIGTERM, Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
    assert_eq!(
        server.orphans(),
        Vec::<i32>::new(),
        "at shutdown the server reaps its zombies after all"
    );
    assert!(server.child_is_gone(pid, Duration::ZERO));
}

#[test]
fn bad_usage_exits_2_and_help_lists_the_flags() {
    let lab_flags = ["--prefork", "--max-children", "--no-reap"];
    let defaults = ["[default: 7002]", "[default: 256]"];
    help_listing(SERVER, &[SHARED_FLAGS, &lab_flags, &defaults].concat());

    for bad in [
        ["--prefork", "0"],
        ["--max-children", "0"],
        ["--prefork", "many"],
    ] {
        let (status, stdout, stderr) = run_binary(SERVER, &bad);
        assert_eq!(status.code(), Some(2), "{bad:?}: {stderr}");
        assert!(stdout.is_empty(), "{bad:?}: no listening line");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn the_client_sends_stdin_lines_and_prints_replies() {
    let server = Server::start(SERVER, &[]);
    // Then EOF: the client sends QUIT.
    let (status, stdout) = run_client(
        "fork-client",
        server.port(),
        b"INCR\nINCR\nSAY hi\n",
        Duration::from_secs(10),
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("HELLO fork pid="), "{stdout}");
    assert_eq!(lines[1..3], ["OK 1", "OK 2"], "{stdout}");
    assert!(lines[3].starts_with("ERR "), "{stdout}");
    assert_eq!(lines[4], "OK bye", "{stdout}");
    assert!(status.success());
}

#[test]
fn the_demo_shows_every_client_greeted_at_once_by_its_own_pid() {
    let Demo { stdout, waits, .. } = run_demo(SERVER, 3);
    assert_eq!(waits.len(), 3, "{stdout}");
    // Each client SLEEPs 1,500 ms; nobody waits for another's SLEEP to be greeted.
    assert!(
        waits.iter().all(|&w| w < 1000),
        "waits {waits:?}:\n{stdout}"
    );
    let pids: BTreeSet<&str> = stdout
        .lines()
        .filter_map(|l| l.split("HELLO fork pid=").nth(1)?.split(' ').next())
        .collect();
    assert_eq!(pids.len(), 3, "three distinct pids:\n{stdout}");
    assert_eq!(
        stdout.matches("<- OK 1").count(),
        3,
        "INCR says 1 to everyone:\n{stdout}"
    );
}

#[test]
fn a_half_closed_client_gets_exactly_the_reply_to_its_complete_line() {
    let server = Server::start(SERVER, &[]);
    let mut client = server.greeted();
    // One complete line, then an unfinished one, then end of stream (shutdown of our write side).
    client.send_raw(b"INCR\nINCR");
    client.shutdown_write();
    assert_eq!(
        client.read_to_close(),
        b"OK 1\n",
        "exactly one reply, for the one complete line, then the child closes"
    );
    let mut next = server.greeted();
    assert_eq!(
        next.request("INCR"),
        "OK 1",
        "a fresh counter in a new child"
    );
}

#[test]
fn an_idle_timeout_says_bye_to_the_silent_client_only() {
    let server = Server::start(SERVER, &["--idle-timeout", "1"]);
    let mut talker = server.greeted();
    let connecting = Instant::now();
    let mut silent = server.greeted();
    let greeted = Instant::now();
    let silent_pid = silent.serving_pid();
    // The silent client waits for its BYE in a thread while the talker keeps talking.
    let waiting = std::thread::spawn(move || {
        let line = silent.read_line();
        let at = Instant::now();
        (line, at, silent.closes())
    });
    let talking = Instant::now();
    while talking.elapsed() < Duration::from_millis(2500) {
        assert_eq!(talker.request("SLEEP 300"), "OK slept 300");
    }
    let (line, at, closed) = waiting.join().unwrap();
    assert_eq!(line.as_deref(), Ok("BYE idle"));
    observe::assert_bye_idle_on_time(1, connecting, greeted, at);
    assert!(closed, "then the connection closes");
    assert!(
        server.child_is_gone(silent_pid, Duration::from_secs(10)),
        "its child ends and is reaped"
    );
    assert_eq!(talker.request("ECHO still here"), "OK still here");

    let slow = Server::start(SERVER, &["--idle-timeout", "3"]);
    observe::a_silent_client_is_told_bye_idle_on_time(&slow, 3);
}

#[test]
fn prefork_client_ids_are_unique_among_live_clients() {
    let server = Server::start(SERVER, &["--prefork", "3"]);
    let mut clients: VecDeque<Client> = (0..3).map(|_| server.greeted()).collect();
    // Round and round: the oldest leaves, a new client comes (to the one worker now free), ten
    // times, so that every worker serves several clients; at every moment the three connected
    // clients have three different ids.
    for round in 0..10 {
        let ids: Vec<u64> = clients.iter_mut().map(Client::client_id).collect();
        let distinct: BTreeSet<u64> = ids.iter().copied().collect();
        assert_eq!(
            distinct.len(),
            3,
            "round {round}: ids of the live clients {ids:?}"
        );
        assert!(ids.iter().all(|&id| id > 0), "{ids:?}");
        let mut oldest = clients.pop_front().unwrap();
        assert_eq!(oldest.request("QUIT"), "OK bye");
        clients.push_back(server.greeted());
    }
}
