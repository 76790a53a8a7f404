//! lab05: forked children (distinct pids) that share `INCR`'s counter through POSIX shared memory
//! and relay `SAY` through POSIX message queues; no IPC object outlives the server.
//!
//! Grade this lab alone with `cargo test -p tests --test lab05_ipc`.
//!
//! Every server here is stopped with SIGTERM or SIGINT at the end of its test where that matters,
//! and the harness kills the rest with SIGKILL (which leaves IPC objects behind: the next server
//! to start removes them, which is one of the things tested).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::ops::{Deref, DerefMut};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use tests::ipc::{
    name_prefix, queue_exists, queue_modes_held_by, queues_held_by, queues_of, shm_objects_of,
    startup_lock, sysv_objects_of, QueueBudget,
};
use tests::{binary, observe, procfs, run_binary, run_demo, wait_until, Client, Demo, Server};

const SERVER: &str = "ipc-server";

/// A server that is stopped with SIGTERM when the test ends, so that it removes its IPC objects
/// (the harness's own drop uses SIGKILL, which would leave them for the next start to clean). It
/// holds its share of the user's message-queue budget until then (see [`QueueBudget`]).
struct Stopping {
    server: Server,
    _budget: Option<QueueBudget>,
}

impl Deref for Stopping {
    type Target = Server;
    fn deref(&self) -> &Server {
        &self.server
    }
}

impl DerefMut for Stopping {
    fn deref_mut(&mut self) -> &mut Server {
        &mut self.server
    }
}

impl Drop for Stopping {
    fn drop(&mut self) {
        if self.server.wait_exit(Duration::ZERO).is_none() {
            let _ = kill(Pid::from_raw(self.server.pid()), Signal::SIGTERM);
            let _ = self.server.wait_exit(Duration::from_secs(10));
        }
    }
}

/// Starts a server for a test that has at most 16 clients connected at once.
fn start(args: &[&str]) -> Stopping {
    start_for(16, args)
}

/// Starts a server for a test that has at most `clients` clients connected at once: with POSIX
/// IPC, each makes a message queue, so the test first takes that much of the user's queue
/// budget ([`QueueBudget`]; System V queues do not count against it). The start itself holds
/// the startup lock shared: see [`startup_lock`].
fn start_for(clients: usize, args: &[&str]) -> Stopping {
    let sysv = args.windows(2).any(|w| w == ["--ipc", "sysv"]);
    let budget = (!sysv).then(|| QueueBudget::take(clients));
    let _lock = startup_lock(false);
    Stopping {
        server: Server::start(SERVER, args),
        _budget: budget,
    }
}

/// The queues that the process serving `client` holds, waiting (bounded) until it holds one: a
/// child makes its queue as it starts serving, and a `WHO` answered shows it is serving.
fn queues_of_child(server: &Server, client: &mut Client) -> BTreeSet<String> {
    client.client_id();
    let child = client.serving_pid();
    let mut held = BTreeSet::new();
    wait_until(Duration::from_secs(10), || {
        held = queues_held_by(child, server.pid());
        !held.is_empty()
    });
    held
}

/// Whether process `pid` maps a shared-memory object of server `server` (a line of
/// `/proc/<pid>/maps` for `/dev/shm/netlabs-ipc-<server>-...`).
fn maps_the_shared_memory_of(pid: i32, server: i32) -> bool {
    let object = format!("/dev/shm/{}", tests::ipc::name_prefix(server));
    std::fs::read_to_string(format!("/proc/{pid}/maps")).is_ok_and(|maps| maps.contains(&object))
}

/// Reads `count` MSG lines from `client`.
fn messages(client: &mut Client, count: usize) -> Vec<String> {
    (0..count)
        .map(|i| {
            client
                .next_message()
                .unwrap_or_else(|e| panic!("message {i} of {count}: {e}"))
        })
        .collect()
}

/// True if `client` gets no MSG: a round trip comes back with nothing before it. A child passes
/// on what is in its queue before it reads its client's next request, and a `SAY` is answered
/// only once the message is in every queue, so a message sent before would have come first.
fn got_no_message(client: &mut Client) -> bool {
    assert_eq!(
        client.request("ECHO anything for me?"),
        "OK anything for me?"
    );
    client.messages.is_empty()
}

#[test]
fn three_clients_three_children_one_shared_counter() {
    let server = start(&[]);
    let mut clients: Vec<Client> = (0..3).map(|_| server.greeted()).collect();
    let pids: BTreeSet<i32> = clients.iter().map(Client::serving_pid).collect();
    assert_eq!(pids.len(), 3, "three distinct serving processes: {pids:?}");
    for client in &mut clients {
        let hello = client.hello.clone().unwrap();
        assert_eq!(hello.model, "ipc");
        assert_ne!(hello.pid, server.pid(), "served by a child, not the parent");
        let stat = procfs::stat(hello.pid).expect("the serving child exists");
        assert_eq!(stat.ppid, server.pid(), "its parent is the server");
        let who = client.request("WHO");
        assert!(
            who.starts_with(&format!("OK model=ipc pid={} ", hello.pid)),
            "{who}"
        );
    }
    assert_eq!(server.live_children(), pids);
    // Unlike lab02, the counter is shared: 1, 2, 3 across three processes.
    let counts: Vec<String> = clients.iter_mut().map(|c| c.request("INCR")).collect();
    assert_eq!(counts, ["OK 1", "OK 2", "OK 3"]);
    assert_eq!(clients[1].request("INCR"), "OK 4");
    assert_eq!(clients[0].request("INCR"), "OK 5");
    // A new client (a new child) sees the same counter.
    let mut later = server.greeted();
    assert_eq!(later.request("INCR"), "OK 6");
    // It lives in a shared-memory object of the server's (in /dev/shm, named with its pid), which
    // every serving child has mapped.
    assert!(
        !shm_objects_of(server.pid()).is_empty(),
        "no /dev/shm/netlabs-ipc-{}-... object",
        server.pid()
    );
    for &pid in &pids {
        assert!(
            maps_the_shared_memory_of(pid, server.pid()),
            "child {pid} maps no /dev/shm/netlabs-ipc-{}-... object",
            server.pid()
        );
    }
    assert_single_threaded([server.pid()].into_iter().chain(pids));
}

#[test]
fn say_reaches_the_others_served_by_other_processes_and_not_the_sender() {
    let server = start(&[]);
    let mut a = server.greeted();
    let mut b = server.greeted();
    let mut c = server.greeted();
    assert_ne!(a.serving_pid(), b.serving_pid());
    assert_ne!(b.serving_pid(), c.serving_pid());
    let a_id = a.client_id();
    assert_eq!(a.request("SAY hello from a"), "OK");
    assert_eq!(b.next_message(), Ok(format!("MSG {a_id} hello from a")));
    assert_eq!(c.next_message(), Ok(format!("MSG {a_id} hello from a")));
    assert!(
        got_no_message(&mut a),
        "the sender got its own message: {:?}",
        a.messages
    );

    let c_id = c.client_id();
    assert_eq!(c.request("SAY and from c"), "OK");
    assert_eq!(a.next_message(), Ok(format!("MSG {c_id} and from c")));
    assert_eq!(b.next_message(), Ok(format!("MSG {c_id} and from c")));
    assert!(got_no_message(&mut c));
    // Each serving child holds a message queue named after the server (its descriptors in
    // /proc/<pid>/fd), and the kernel knows each by that name.
    for client in [&mut a, &mut b, &mut c] {
        let queues = queues_of_child(&server, client);
        assert!(
            !queues.is_empty(),
            "child {} holds no /netlabs-ipc-{}-... queue",
            client.serving_pid(),
            server.pid()
        );
        for queue in &queues {
            assert!(queue_exists(queue), "{queue} exists while its child runs");
        }
    }
    // With the messages delivered and nothing to do, every process waits in the kernel.
    observe::assert_idle_processes_sleep(&server_and_children(&server));
}

/// The server and its children: every process of a fork server.
fn server_and_children(server: &Server) -> Vec<i32> {
    std::iter::once(server.pid())
        .chain(procfs::children_of(server.pid()))
        .collect()
}

#[test]
fn a_4096_byte_say_arrives_whole() {
    let server = start(&[]);
    let mut a = server.greeted();
    let mut b = server.greeted();
    let a_id = a.client_id();
    // "SAY " + 4,092 bytes: a line of exactly 4,096 bytes, the protocol's limit.
    let text: String = (0..4092)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let line = format!("SAY {text}");
    assert_eq!(line.len(), 4096);
    assert_eq!(a.request(&line), "OK");
    let message = b.next_message().expect("the long message");
    assert_eq!(message.len(), format!("MSG {a_id} ").len() + 4092);
    assert_eq!(message, format!("MSG {a_id} {text}"));
    // One byte more is refused, and nothing is relayed.
    assert_eq!(a.request(&format!("{line}x")), "ERR line too long");
    assert!(got_no_message(&mut b));
}

#[test]
fn a_burst_of_100_says_arrives_complete_and_in_order_at_each_other_client() {
    let server = start(&[]);
    let mut sender = server.greeted();
    let sender_id = sender.client_id();
    let readers: Vec<thread::JoinHandle<Vec<String>>> = (0..2)
        .map(|_| {
            let mut reader = server.greeted();
            // Greeted and registered (its WHO is answered after its queue exists).
            reader.client_id();
            thread::spawn(move || messages(&mut reader, 100))
        })
        .collect();
    // All 100 in one write: the child reads them as fast as it can relay them.
    let burst: String = (0..100).map(|i| format!("SAY burst {i}\n")).collect();
    sender.send_raw(burst.as_bytes());
    for i in 0..100 {
        let reply = sender
            .read_reply()
            .unwrap_or_else(|e| panic!("reply {i}: {e}"));
        assert_eq!(reply, "OK", "SAY {i} was not delivered to everyone");
    }
    let expected: Vec<String> = (0..100)
        .map(|i| format!("MSG {sender_id} burst {i}"))
        .collect();
    for reader in readers {
        assert_eq!(reader.join().expect("reader thread"), expected);
    }
    assert!(
        sender.messages.is_empty(),
        "the sender got its own messages"
    );
}

#[test]
fn fifty_clients_connected_at_once_all_receive_a_say() {
    let server = start_for(50, &[]);
    let mut clients: Vec<Client> = (0..50).map(|_| server.greeted()).collect();
    let pids: BTreeSet<i32> = clients.iter().map(Client::serving_pid).collect();
    assert_eq!(pids.len(), 50, "fifty serving processes");
    let first_id = clients[0].client_id();
    let last_id = clients[49].client_id();
    assert_eq!(clients[0].request("SAY to all fifty"), "OK");
    assert_eq!(clients[49].request("SAY and back"), "OK");
    for (i, client) in clients.iter_mut().enumerate() {
        let mut expected = Vec::new();
        if i != 0 {
            expected.push(format!("MSG {first_id} to all fifty"));
        }
        if i != 49 {
            expected.push(format!("MSG {last_id} and back"));
        }
        assert_eq!(messages(client, expected.len()), expected, "client {i}");
    }
    // Fifty children, each with its queue: within the user's queue budget.
    for client in &mut clients {
        assert!(
            !queues_of_child(&server, client).is_empty(),
            "child {} holds no queue",
            client.serving_pid()
        );
    }
}

#[test]
fn a_say_into_a_full_queue_is_refused_with_err_and_nothing_hangs() {
    let server = start(&[]);
    let mut sender = server.greeted();
    let mut sleeper = server.greeted();
    let mut awake = server.greeted();
    let sender_id = sender.client_id();
    sleeper.client_id();
    awake.client_id();
    // The sleeper's child blocks in SLEEP and does not empty its queue meanwhile. Both lines in
    // one write: once ECHO is answered, the child goes straight on to the SLEEP it has already
    // read, without looking at its queue in between.
    sleeper.send_raw(b"ECHO ready\nSLEEP 6000\n");
    assert_eq!(sleeper.read_reply(), Ok("OK ready".into()));
    let slept = Instant::now();
    // A queue holds at most 10 messages (/proc/sys/fs/mqueue/msg_max), so it fills in time. The
    // contract leaves the words of the refusal to the server: an `ERR` line, after a bounded
    // wait (the read timeout), with the connection still usable.
    let mut said = Vec::new();
    let mut missed = None;
    for i in 0..40 {
        let reply = sender.request(&format!("SAY note {i}"));
        said.push(format!("MSG {sender_id} note {i}"));
        if reply == "OK" {
            continue;
        }
        assert!(
            reply.starts_with("ERR "),
            "a SAY is answered OK or ERR: {reply:?}"
        );
        missed = Some(i);
        break;
    }
    let missed = missed.expect("a SAY to a sleeping client's full queue was reported with ERR");
    assert!(
        slept.elapsed() < Duration::from_millis(5000),
        "the test was too slow to check this while the sleeper slept"
    );
    // The sender's connection is fine, and the awake client got every message.
    assert_eq!(sender.request("ECHO still here"), "OK still here");
    assert_eq!(messages(&mut awake, said.len()), said);
    // The sleeper gets, after its SLEEP, exactly the messages that were not reported missed.
    assert_eq!(sleeper.read_reply(), Ok("OK slept 6000".into()));
    let delivered: Vec<String> = said[..missed].to_vec();
    assert_eq!(messages(&mut sleeper, delivered.len()), delivered);
    assert!(got_no_message(&mut sleeper), "{:?}", sleeper.messages);
}

#[test]
fn a_panic_in_one_child_leaves_the_counter_and_the_chat_working() {
    let server = start(&["--allow-panic"]);
    let mut a = server.greeted();
    let mut b = server.greeted();
    let mut doomed = server.greeted();
    let doomed_pid = doomed.serving_pid();
    // The queues only the doomed child holds (its own: no other process of the server has them
    // open).
    let others: BTreeSet<String> = [&mut a, &mut b]
        .into_iter()
        .flat_map(|c| queues_of_child(&server, c))
        .chain(queues_held_by(server.pid(), server.pid()))
        .collect();
    let doomed_queues: BTreeSet<String> = queues_of_child(&server, &mut doomed)
        .difference(&others)
        .cloned()
        .collect();
    assert!(
        !doomed_queues.is_empty(),
        "the doomed child holds a queue of its own"
    );
    assert_eq!(a.request("INCR"), "OK 1");
    assert_eq!(doomed.request("INCR"), "OK 2");
    doomed.send("PANIC");
    panicked_child_is_gone(&server, &mut doomed, doomed_pid);
    assert!(procfs::zombie_children_of(server.pid()).is_empty());
    // Its queue could not be removed by the child itself: the parent removes it when it reaps
    // it, or it would outlive everyone who could use it.
    assert!(
        wait_until(Duration::from_secs(5), || !doomed_queues
            .iter()
            .any(|q| queue_exists(q))),
        "the panicked child's queues {doomed_queues:?} are left; stderr:\n{}",
        server.stderr()
    );
    // The counter goes on where it was, and the chat still works between the survivors.
    assert_eq!(b.request("INCR"), "OK 3");
    assert_eq!(a.request("INCR"), "OK 4");
    let a_id = a.client_id();
    assert_eq!(a.request("SAY still here"), "OK");
    assert_eq!(b.next_message(), Ok(format!("MSG {a_id} still here")));
}

#[test]
fn after_200_clients_one_after_another_the_chat_still_works_and_nothing_is_left() {
    let server = start(&[]);
    // More clients, one after the other, than the shared memory has rows for its children
    // (lab05-ipc's board: 128): a child that leaves must give its place back.
    let mut queues = BTreeSet::new();
    for i in 0..200 {
        let mut client = server.greeted();
        client.client_id(); // served: its queue exists
        queues.extend(queues_held_by(client.serving_pid(), server.pid()));
        assert_eq!(client.request("QUIT"), "OK bye", "client {i}");
        assert!(client.closes(), "client {i}");
    }
    assert!(
        wait_until(Duration::from_secs(10), || server.children().is_empty()),
        "children left: {:?}",
        server.children()
    );
    let mut a = server.greeted();
    let mut b = server.greeted();
    let a_id = a.client_id();
    b.client_id();
    assert_eq!(a.request("SAY after 200"), "OK");
    assert_eq!(b.next_message(), Ok(format!("MSG {a_id} after 200")));
    // The queues of the 200 are gone.
    let left: Vec<&String> = queues.iter().filter(|q| queue_exists(q)).collect();
    assert!(left.is_empty(), "queues of children that left: {left:?}");
}

#[test]
fn a_client_that_resets_its_connection_ends_its_child() {
    let server = start(&[]);
    let mut gone = server.greeted();
    let pid = gone.serving_pid();
    assert_eq!(gone.request("INCR"), "OK 1");
    // A reset (RST) in the middle of a line: the read fails with ECONNRESET, and the child must
    // end (and be reaped), not go on polling a dead connection.
    gone.send_raw(b"INCR\nECHO this line never ends");
    gone.reset();
    assert!(
        server.child_is_gone(pid, Duration::from_secs(10)),
        "the child of a client that reset its connection is still there"
    );
    let mut next = server.greeted();
    assert_eq!(next.request("ECHO still serving"), "OK still serving");
}

/// Stops a busy server with `signal` and checks that it leaves nothing behind.
fn stops_cleanly_on(signal: Signal) {
    let mut server = start(&["--allow-panic"]);
    let mut clients: Vec<Client> = (0..3).map(|_| server.greeted()).collect();
    assert_eq!(clients[0].request("INCR"), "OK 1");
    assert_eq!(clients[0].request("SAY hi"), "OK");
    let queues: BTreeSet<String> = clients
        .iter_mut()
        .flat_map(|c| queues_of_child(&server, c))
        .collect();
    assert!(!queues.is_empty(), "the children hold queues");
    assert!(queues.iter().all(|q| queue_exists(q)));
    assert!(!shm_objects_of(server.pid()).is_empty());
    let pids: Vec<i32> = clients.iter().map(Client::serving_pid).collect();

    // No other server starts until we have looked: a starting server removes what a dead one
    // left behind, which would hide objects this one forgot.
    let _no_cleanup = startup_lock(true);
    let status = server.stop_with(signal, Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "exit status after {signal}");
    for client in &mut clients {
        assert_eq!(client.last_line(), "BYE", "each client is told");
    }
    assert_eq!(
        shm_objects_of(server.pid()),
        Vec::<String>::new(),
        "/dev/shm after {signal}"
    );
    assert_eq!(
        tests::ipc::mounted_queues_of(server.pid()),
        Vec::<String>::new()
    );
    for queue in &queues {
        assert!(!queue_exists(queue), "{queue} still exists after {signal}");
    }
    for pid in pids {
        assert!(!procfs::alive(pid), "child {pid} is still running");
        assert!(
            procfs::stat(pid).is_none(),
            "child {pid} is left as a zombie"
        );
    }
    assert_eq!(procfs::live_in_group(server.pid()), Vec::<i32>::new());
    observe::assert_stdout_is_only_the_listening_line(&server);
}

#[test]
fn sigterm_removes_every_ipc_object_and_every_child() {
    stops_cleanly_on(Signal::SIGTERM);
}

#[test]
fn sigint_removes_every_ipc_object_and_every_child() {
    stops_cleanly_on(Signal::SIGINT);
}

#[test]
fn the_leftovers_of_a_killed_server_are_removed_by_the_next_start() {
    let budget = QueueBudget::take(16);
    let lock = startup_lock(true); // no other server starts (and cleans) meanwhile
    let mut killed = Server::start(SERVER, &[]);
    let mut a = killed.greeted();
    let mut b = killed.greeted();
    assert_eq!(a.request("INCR"), "OK 1");
    assert_eq!(b.request("INCR"), "OK 2");
    let queues: BTreeSet<String> = [&mut a, &mut b]
        .into_iter()
        .flat_map(|c| queues_of_child(&killed, c))
        .collect();
    assert!(!queues.is_empty(), "the children hold queues");
    let shm = shm_objects_of(killed.pid());
    assert!(!shm.is_empty(), "the server has a shared-memory object");

    // SIGKILL cannot be caught: the server and its children die without cleaning up.
    killpg(Pid::from_raw(killed.pid()), Signal::SIGKILL).expect("killpg");
    assert!(killed.wait_exit(Duration::from_secs(10)).is_some());
    assert!(wait_until(Duration::from_secs(10), || {
        procfs::live_in_group(killed.pid()).is_empty()
    }));
    assert_eq!(shm_objects_of(killed.pid()), shm, "left in /dev/shm");
    assert!(queues.iter().all(|q| queue_exists(q)), "queues left behind");

    let next = Stopping {
        server: Server::start(SERVER, &[]),
        _budget: Some(budget),
    };
    drop(lock);
    assert_eq!(
        shm_objects_of(killed.pid()),
        Vec::<String>::new(),
        "{}",
        next.stderr()
    );
    for queue in &queues {
        assert!(!queue_exists(queue), "{queue} was not cleaned up");
    }
    // The new server has its own, fresh counter.
    let mut c = next.greeted();
    assert_eq!(c.request("INCR"), "OK 1");
}

/// A server killed between `shm_open` and `ftruncate` leaves an empty shared-memory object. The
/// next server removes it like any other leftover, and does not read a board that is not there
/// (touching a mapping past the end of its object kills a process with SIGBUS).
#[test]
fn an_empty_leftover_shared_memory_object_is_removed_and_the_server_starts() {
    let budget = QueueBudget::take(16);
    let lock = startup_lock(true); // no other server starts (and cleans) meanwhile
    let dead = {
        let mut child = Command::new("true").spawn().expect("run true");
        child.wait().expect("wait for true");
        i32::try_from(child.id()).expect("a pid")
    };
    let path = format!("/dev/shm/{}shm", name_prefix(dead));
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .unwrap_or_else(|e| panic!("create {path}: {e}"));
    let server = Stopping {
        server: Server::start(SERVER, &[]),
        _budget: Some(budget),
    };
    drop(lock);
    let left = Path::new(&path).exists();
    if left {
        let _ = fs::remove_file(&path);
    }
    assert!(!left, "{path} was not removed:\n{}", server.stderr());
    let mut client = server.greeted();
    assert_eq!(client.request("INCR"), "OK 1");
}

/// The shared memory and every child's queue are private to the user who runs the server (mode
/// 0600): no other user may read the counter or post into a child's mailbox.
#[test]
fn the_ipc_objects_are_private_to_the_user() {
    let server = start(&[]);
    let mut client = server.greeted();
    assert_eq!(client.request("INCR"), "OK 1");
    let shm = shm_objects_of(server.pid());
    assert!(!shm.is_empty(), "no shared memory in /dev/shm");
    for name in &shm {
        let mode = fs::metadata(format!("/dev/shm/{name}"))
            .expect("stat the shared memory")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "/dev/shm/{name}: mode {mode:o}");
    }
    let child = client.serving_pid();
    let mut modes = BTreeMap::new();
    wait_until(Duration::from_secs(10), || {
        modes = queue_modes_held_by(child, server.pid());
        !modes.is_empty()
    });
    assert!(!modes.is_empty(), "child {child} holds no queue");
    for (queue, mode) in &modes {
        assert_eq!(*mode, 0o600, "{queue}: mode {mode:o}");
    }
}

#[test]
fn two_servers_side_by_side_share_nothing() {
    let one = start(&[]);
    let two = start(&[]);
    let mut a1 = one.greeted();
    let mut b1 = one.greeted();
    let mut a2 = two.greeted();
    let mut b2 = two.greeted();
    assert_eq!(a1.request("INCR"), "OK 1");
    assert_eq!(b1.request("INCR"), "OK 2");
    assert_eq!(
        a2.request("INCR"),
        "OK 1",
        "the second server has its own counter"
    );
    assert_eq!(b1.request("INCR"), "OK 3");
    assert_eq!(b2.request("INCR"), "OK 2");

    let a2_id = a2.client_id();
    assert_eq!(a2.request("SAY only for server two"), "OK");
    assert_eq!(
        b2.next_message(),
        Ok(format!("MSG {a2_id} only for server two"))
    );
    assert!(got_no_message(&mut a1));
    assert!(got_no_message(&mut b1));
    let a1_id = a1.client_id();
    assert_eq!(a1.request("SAY only for server one"), "OK");
    assert_eq!(
        b1.next_message(),
        Ok(format!("MSG {a1_id} only for server one"))
    );
    assert!(got_no_message(&mut b2));

    let (shm_one, shm_two) = (shm_objects_of(one.pid()), shm_objects_of(two.pid()));
    assert!(!shm_one.is_empty() && !shm_two.is_empty());
    assert!(shm_one.iter().all(|name| !shm_two.contains(name)));
    let (queues_one, queues_two) = (queues_of(one.pid()), queues_of(two.pid()));
    assert!(!queues_one.is_empty() && !queues_two.is_empty());
    assert!(queues_one.is_disjoint(&queues_two));
}

#[test]
fn each_child_keeps_only_what_it_needs() {
    let server = start(&[]);
    let mut a = server.greeted();
    let mut b = server.greeted();
    let mut c = server.greeted();
    b.client_id();
    c.client_id();
    let child = a.serving_pid();
    let parent_sockets = procfs::sockets_of(server.pid());
    let child_sockets = procfs::sockets_of(child);
    // The child closed its copy of the listening socket: it shares no socket with the parent.
    assert_eq!(
        parent_sockets.len(),
        1,
        "the parent holds only the listener"
    );
    assert_eq!(child_sockets.len(), 1, "the child holds only its client");
    assert!(child_sockets.is_disjoint(&parent_sockets));
    // Sending opens the other children's queues and closes them again: no descriptor piles up.
    let before = procfs::fd_count(child);
    for i in 0..20 {
        assert_eq!(a.request(&format!("SAY {i}")), "OK");
    }
    assert_eq!(messages(&mut b, 20).len(), 20);
    assert_eq!(messages(&mut c, 20).len(), 20);
    assert_eq!(
        procfs::fd_count(child),
        before,
        "{:?}",
        procfs::fd_links(child)
    );
}

#[test]
fn max_children_makes_further_clients_wait_in_the_accept_queue() {
    let server = start(&["--max-children", "2"]);
    let mut a = server.greeted();
    let _b = server.greeted();
    let mut c = server.connect();
    // The third connection waits in the kernel's accept queue (Recv-Q of the listening socket
    // in `ss -ltn`), not accepted and held somewhere by the server: two children, no third.
    assert!(
        server.accept_queue_reaches(1),
        "the third client is not waiting in the accept queue: (Recv-Q, Send-Q) = {:?}",
        procfs::listen_queue(server.port())
    );
    assert!(
        c.still_waiting(Duration::from_millis(300)),
        "a third client was served at --max-children 2"
    );
    // Still there, not taken out of the queue to wait somewhere else.
    assert_eq!(
        procfs::listen_queue(server.port()).map(|(waiting, _)| waiting),
        Ok(1),
        "after 300 ms, the third client is still in the accept queue"
    );
    assert_eq!(server.live_children().len(), 2, "two children at most");
    assert_eq!(a.request("QUIT"), "OK bye");
    let hello = c.read_hello();
    assert_eq!(c.request("INCR"), "OK 1");
    assert_ne!(hello.pid, server.pid());
    assert!(
        server.accept_queue_reaches(0),
        "the accept queue is empty again"
    );
}

#[test]
fn the_demo_shows_separate_pids_sharing_one_counter_and_one_chat() {
    let _budget = QueueBudget::take(3); // its three children's queues
    let _lock = startup_lock(false);
    let Demo { stdout, .. } = run_demo(SERVER, 3);
    let pids: BTreeSet<&str> = stdout
        .lines()
        .filter_map(|l| l.split("<- HELLO ipc pid=").nth(1)?.split(' ').next())
        .collect();
    assert_eq!(pids.len(), 3, "{stdout}");
    // Six INCRs in all, by three processes: one counter, 1 to 6.
    let mut counts: Vec<u64> = stdout
        .lines()
        .filter(|l| !l.contains("slept"))
        .filter_map(|l| l.split("<- OK ").nth(1)?.trim().parse().ok())
        .collect();
    counts.sort_unstable();
    assert_eq!(counts, [1, 2, 3, 4, 5, 6], "{stdout}");
    // Each client hears the other two.
    let broadcasts = stdout
        .lines()
        .filter(|l| l.contains("(a broadcast)"))
        .count();
    assert_eq!(broadcasts, 6, "{stdout}");
}

#[test]
fn an_idle_timeout_ends_a_silent_client_even_while_messages_arrive() {
    let server = start(&["--idle-timeout", "2"]);
    let mut silent = server.greeted();
    let mut talker = server.greeted();
    talker.client_id();
    // The talker says something every 200 ms for 4 s (or until the silent client is let go).
    let done = Arc::new(AtomicBool::new(false));
    let talking = {
        let done = Arc::clone(&done);
        thread::spawn(move || {
            let until = Instant::now() + Duration::from_secs(6);
            while Instant::now() < until && !done.load(Ordering::SeqCst) {
                assert_eq!(talker.request("SAY still talking"), "OK");
                thread::sleep(Duration::from_millis(200));
            }
        })
    };
    // Messages the silent client receives are not requests: they do not keep it alive.
    let started = Instant::now();
    let mut received = 0;
    let last = loop {
        match silent.read_line() {
            Ok(line) if line.starts_with("MSG ") => received += 1,
            other => break other,
        }
    };
    let took = started.elapsed();
    done.store(true, Ordering::SeqCst);
    talking.join().expect("the talker");
    assert_eq!(last.as_deref(), Ok("BYE idle"));
    assert!(silent.closes());
    assert!(received >= 2, "only {received} messages arrived meanwhile");
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_millis(3500),
        "BYE idle after {took:?}, with --idle-timeout 2 and messages until 6 s"
    );
}

#[test]
fn a_port_in_use_is_a_clear_error_that_leaves_nothing_behind() {
    let first = start(&[]);
    let port = first.port().to_string();
    // A starting server may clean up after dead ones: it takes the startup lock like any start.
    let lock = startup_lock(false);
    let mut second = Command::new(binary(SERVER))
        .args(["--port", &port])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start a second server");
    let pid = second.id() as i32;
    let mut status = None;
    wait_until(Duration::from_secs(30), || {
        status = second.try_wait().expect("try_wait");
        status.is_some()
    });
    let Some(status) = status else {
        let _ = second.kill();
        let _ = second.wait();
        panic!("the second server did not exit");
    };
    drop(lock);
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(2), "{stderr}");
    // The contract: one `error: ...` line that says what to do, no panic.
    assert!(
        stderr.lines().any(|l| l.starts_with("error: ")),
        "no `error: ...` line: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(shm_objects_of(pid), Vec::<String>::new(), "{stderr}");
    assert_eq!(sysv_objects_of(pid), (vec![], vec![]), "{stderr}");
}

/// How many `INCR`s each of the concurrent clients sends in one write. A counter updated with a
/// separate load and store (the classic lost update) goes wrong only when two children touch it
/// within the same few nanoseconds, and each `INCR` costs a `write` of its reply: on a 2-core
/// machine, a few thousand `INCR`s often pass such a counter. With this many, that counter fails
/// every run (checked by making the counter racy on purpose).
const INCRS_PER_CLIENT: usize = 100_000;

#[test]
fn concurrent_incr_from_four_pipelining_clients_counts_every_request_once() {
    let server = start(&[]);
    observe::concurrent_incr_counts_every_request_once(&server, 4, INCRS_PER_CLIENT, 1);
}

#[test]
fn sigterm_during_a_sleep_cuts_it_short_and_exits_zero() {
    let mut server = start(&[]);
    let _no_cleanup = startup_lock(true); // as in stops_cleanly_on
    observe::sigterm_cuts_a_sleep_short(&mut server, "ipc-server");
    assert_eq!(shm_objects_of(server.pid()), Vec::<String>::new());
}

#[test]
fn a_half_closed_client_gets_one_reply_for_its_one_complete_line() {
    let server = start(&[]);
    observe::half_close_discards_the_unfinished_line(&server);
}

/// `client=<id>` is unique among the live clients, also after some have left (a server that
/// derives the id from the number of live children hands out an id twice).
fn client_ids_are_unique_among_live_clients_of(server: &Server) {
    let mut clients: Vec<Client> = (0..6).map(|_| server.greeted()).collect();
    observe::assert_unique_client_ids(&mut clients);
    for mut leaving in [clients.remove(3), clients.remove(0)] {
        let pid = leaving.serving_pid();
        assert_eq!(leaving.request("QUIT"), "OK bye");
        assert!(leaving.closes());
        assert!(
            wait_until(Duration::from_secs(10), || !server
                .children()
                .contains(&pid)),
            "the child of a client that left was reaped"
        );
    }
    clients.extend((0..4).map(|_| server.greeted()));
    observe::assert_unique_client_ids(&mut clients);
}

#[test]
fn client_ids_are_unique_among_live_clients() {
    let server = start(&[]);
    client_ids_are_unique_among_live_clients_of(&server);
}

#[test]
fn the_client_prints_msg_lines_while_the_user_is_still_typing() {
    let server = Server::start(SERVER, &[]);
    observe::the_client_prints_msg_lines_while_the_user_is_still_typing(&server, "ipc-client");
}

#[test]
fn help_exits_0_and_bad_usage_exits_2() {
    let help = tests::help_listing(
        SERVER,
        &[
            "--max-children",
            "--ipc",
            "--idle-timeout",
            "[default: 7005]",
        ],
    );
    assert!(help.contains("posix") && help.contains("sysv"), "{help}");
    for bad in [
        &["--bogus"][..],
        &["--ipc", "carrier-pigeon"],
        &["--max-children", "0"],
        &["--max-children", "x"],
        &["--port", "x"],
        &["--backlog", "0"],
        &["--idle-timeout", "0"],
    ] {
        let (status, stdout, stderr) = run_binary(SERVER, bad);
        assert_eq!(status.code(), Some(2), "{bad:?}: {stderr}");
        assert_eq!(stdout, "", "{bad:?}: nothing on stdout");
    }
}

// ---------------------------------------------------------------------------------------------
// `--ipc sysv`: the same server with System V shared memory and one System V message queue.
// The objects are found in /proc/sysvipc by their keys, which the contract derives from the
// server's pid: 0x1<pid in 7 decimal digits> for the segment, 0x2<...> for the queue.
// ---------------------------------------------------------------------------------------------

const SYSV: [&str; 2] = ["--ipc", "sysv"];

#[test]
fn sysv_three_clients_three_children_one_counter_in_a_system_v_segment() {
    let server = start(&SYSV);
    let mut clients: Vec<Client> = (0..3).map(|_| server.greeted()).collect();
    let pids: BTreeSet<i32> = clients.iter().map(Client::serving_pid).collect();
    assert_eq!(pids.len(), 3, "three distinct serving processes: {pids:?}");
    assert!(!pids.contains(&server.pid()));
    let counts: Vec<String> = clients.iter_mut().map(|c| c.request("INCR")).collect();
    assert_eq!(counts, ["OK 1", "OK 2", "OK 3"]);
    // One segment, made by the server (cpid), attached by it and its three children; one queue.
    let (shm, msg) = sysv_objects_of(server.pid());
    assert_eq!(shm.len(), 1, "{}", server.stderr());
    assert_eq!(shm[0][4], server.pid().to_string(), "cpid: {:?}", shm[0]);
    assert_eq!(shm[0][6], "4", "nattch: {:?}", shm[0]);
    assert_eq!(msg.len(), 1, "{}", server.stderr());
    // Private to the user, as the POSIX objects are: perms 600.
    assert_eq!(shm[0][2], "600", "perms: {:?}", shm[0]);
    assert_eq!(msg[0][2], "600", "perms: {:?}", msg[0]);
    // And nothing in /dev/shm: this is not POSIX shared memory.
    assert_eq!(shm_objects_of(server.pid()), Vec::<String>::new());
    assert_single_threaded([server.pid()].into_iter().chain(pids));
}

#[test]
fn sysv_say_reaches_the_others_and_not_the_sender() {
    let server = start(&SYSV);
    let mut a = server.greeted();
    let mut b = server.greeted();
    let mut c = server.greeted();
    let a_id = a.client_id();
    assert_eq!(a.request("SAY hello from a"), "OK");
    // b and c are silent: only the SIGUSR1 wake-up makes their children look in the queue.
    assert_eq!(b.next_message(), Ok(format!("MSG {a_id} hello from a")));
    assert_eq!(c.next_message(), Ok(format!("MSG {a_id} hello from a")));
    assert!(got_no_message(&mut a), "the sender got: {:?}", a.messages);
    let c_id = c.client_id();
    assert_eq!(c.request("SAY and from c"), "OK");
    assert_eq!(a.next_message(), Ok(format!("MSG {c_id} and from c")));
    assert_eq!(b.next_message(), Ok(format!("MSG {c_id} and from c")));
    assert!(got_no_message(&mut c));
    // Everything was taken out of the one queue.
    let (_, msg) = sysv_objects_of(server.pid());
    assert_eq!(msg[0][4], "0", "messages left in the queue: {:?}", msg[0]);
    // And the wake-ups that brought it are used up: every process waits in the kernel again.
    observe::assert_idle_processes_sleep(&server_and_children(&server));
}

#[test]
fn sysv_a_4096_byte_say_arrives_whole() {
    let server = start(&SYSV);
    let mut a = server.greeted();
    let mut b = server.greeted();
    let a_id = a.client_id();
    let text: String = (0..4092)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let line = format!("SAY {text}");
    assert_eq!(line.len(), 4096);
    // Twice: the second one also shows the first left no bytes behind in the queue.
    for _ in 0..2 {
        assert_eq!(a.request(&line), "OK");
        assert_eq!(b.next_message(), Ok(format!("MSG {a_id} {text}")));
    }
    assert!(got_no_message(&mut b));
}

#[test]
fn sysv_sigterm_removes_the_segment_the_queue_and_every_child() {
    let mut server = start(&SYSV);
    let mut clients: Vec<Client> = (0..3).map(|_| server.greeted()).collect();
    assert_eq!(clients[0].request("INCR"), "OK 1");
    assert_eq!(clients[0].request("SAY hi"), "OK");
    let (shm, msg) = sysv_objects_of(server.pid());
    assert_eq!((shm.len(), msg.len()), (1, 1));
    let pids: Vec<i32> = clients.iter().map(Client::serving_pid).collect();

    let _no_cleanup = startup_lock(true); // as in stops_cleanly_on
    let status = server.stop_with(Signal::SIGTERM, Duration::from_secs(15));
    assert_eq!(status.code(), Some(0));
    for client in &mut clients {
        assert_eq!(client.last_line(), "BYE", "each client is told");
    }
    let (shm_after, msg_after) = sysv_objects_of(server.pid());
    assert_eq!(shm_after, Vec::<Vec<String>>::new(), "{}", server.stderr());
    assert_eq!(msg_after, Vec::<Vec<String>>::new(), "{}", server.stderr());
    // Not even under another key (a removed but still attached segment gets key 0).
    assert!(
        !all_sysv_ids("shm").contains(&shm[0][1]),
        "segment {} is left",
        shm[0][1]
    );
    for pid in pids {
        assert!(!procfs::alive(pid), "child {pid} is still running");
        assert!(
            procfs::stat(pid).is_none(),
            "child {pid} is left as a zombie"
        );
    }
    observe::assert_stdout_is_only_the_listening_line(&server);
}

#[test]
fn sysv_the_leftovers_of_a_killed_server_are_removed_by_the_next_start() {
    let lock = startup_lock(true); // no other server starts (and cleans) meanwhile
    let mut killed = Server::start(SERVER, &SYSV);
    let mut a = killed.greeted();
    let mut b = killed.greeted();
    assert_eq!(a.request("INCR"), "OK 1");
    assert_eq!(b.request("SAY unread by a dead server"), "OK");
    killpg(Pid::from_raw(killed.pid()), Signal::SIGKILL).expect("killpg");
    assert!(killed.wait_exit(Duration::from_secs(10)).is_some());
    assert!(wait_until(Duration::from_secs(10), || {
        procfs::live_in_group(killed.pid()).is_empty()
    }));
    let (shm, msg) = sysv_objects_of(killed.pid());
    assert_eq!((shm.len(), msg.len()), (1, 1), "left behind by SIGKILL");

    let next = Stopping {
        server: Server::start(SERVER, &SYSV),
        _budget: None,
    };
    drop(lock);
    assert_eq!(
        sysv_objects_of(killed.pid()),
        (vec![], vec![]),
        "{}",
        next.stderr()
    );
    // Removed, not just given another key: no object has those ids any more.
    for (table, id) in [("shm", &shm[0][1]), ("msg", &msg[0][1])] {
        let ids = all_sysv_ids(table);
        assert!(!ids.contains(id), "{table} id {id} is left: {ids:?}");
    }
    let mut c = next.greeted();
    assert_eq!(c.request("INCR"), "OK 1", "a fresh counter");
}

#[test]
fn sysv_a_panic_leaves_the_counter_and_the_chat_working_and_its_mail_is_drained() {
    let server = start(&["--ipc", "sysv", "--allow-panic"]);
    let mut a = server.greeted();
    let mut b = server.greeted();
    let mut doomed = server.greeted();
    let doomed_pid = doomed.serving_pid();
    assert_eq!(a.request("INCR"), "OK 1");
    assert_eq!(doomed.request("INCR"), "OK 2");
    // The doomed child sleeps, then panics without looking at its mail again: a message sent
    // meanwhile stays in the shared queue, typed with its pid, until the parent drains it. The
    // three lines arrive in one read(), and the child answers them one after the other without
    // going back to poll(): once "OK asleep" is here, it will not look at its mail again.
    doomed.send_raw(b"ECHO asleep\nSLEEP 1000\nPANIC\n");
    assert_eq!(doomed.read_reply(), Ok("OK asleep".to_string()));
    let a_id = a.client_id();
    assert_eq!(a.request("SAY you will not read this"), "OK");
    assert_eq!(
        b.next_message(),
        Ok(format!("MSG {a_id} you will not read this"))
    );
    panicked_child_is_gone(&server, &mut doomed, doomed_pid);
    // Its mail would take room in the shared queue for ever: the server drains it.
    let queued = || sysv_objects_of(server.pid()).1[0][4].clone();
    assert!(
        wait_until(Duration::from_secs(5), || queued() == "0"),
        "messages left in the queue: {}",
        queued()
    );
    assert!(procfs::zombie_children_of(server.pid()).is_empty());
    assert_eq!(b.request("INCR"), "OK 3");
    assert_eq!(a.request("SAY still here"), "OK");
    assert_eq!(b.next_message(), Ok(format!("MSG {a_id} still here")));
}

#[test]
fn sysv_a_say_into_a_full_queue_is_refused_with_err_and_nothing_hangs() {
    let server = start(&SYSV);
    let mut sender = server.greeted();
    let mut sleeper = server.greeted();
    let sender_id = sender.client_id();
    sleeper.client_id();
    // As in the POSIX test: once ECHO is answered, the sleeper's child is in its SLEEP and does
    // not take its messages out of the (one, shared) queue meanwhile.
    sleeper.send_raw(b"ECHO ready\nSLEEP 5000\n");
    assert_eq!(sleeper.read_reply(), Ok("OK ready".into()));
    let slept = Instant::now();
    // 4,117-byte messages: msgmnb (16,384 bytes on a default kernel) holds three of them.
    let text = "z".repeat(4092);
    let mut said = Vec::new();
    let mut missed = None;
    for i in 0..20 {
        let reply = sender.request(&format!("SAY {i:04} {}", &text[5..]));
        if reply == "OK" {
            said.push(format!("MSG {sender_id} {i:04} {}", &text[5..]));
            continue;
        }
        // The words are the server's (the contract does not fix them): an `ERR` line.
        assert!(
            reply.starts_with("ERR "),
            "a SAY is answered OK or ERR: {reply:?}"
        );
        missed = Some(i);
        break;
    }
    let missed = missed.expect("a SAY into a full System V queue was reported with ERR");
    assert!(missed >= 1, "not even one long message fit");
    assert!(
        slept.elapsed() < Duration::from_millis(4000),
        "the test was too slow to check this while the sleeper slept"
    );
    assert_eq!(sender.request("ECHO still here"), "OK still here");
    assert_eq!(sleeper.read_reply(), Ok("OK slept 5000".into()));
    assert_eq!(messages(&mut sleeper, said.len()), said);
    assert!(got_no_message(&mut sleeper), "{:?}", sleeper.messages);
}

#[test]
fn sysv_concurrent_incr_from_four_pipelining_clients_counts_every_request_once() {
    let server = start(&SYSV);
    observe::concurrent_incr_counts_every_request_once(&server, 4, INCRS_PER_CLIENT, 1);
}

#[test]
fn sysv_sigterm_during_a_sleep_cuts_it_short_and_exits_zero() {
    let mut server = start(&SYSV);
    let _no_cleanup = startup_lock(true); // as in stops_cleanly_on
    observe::sigterm_cuts_a_sleep_short(&mut server, "ipc-server --ipc sysv");
    assert_eq!(sysv_objects_of(server.pid()), (vec![], vec![]));
}

#[test]
fn sysv_a_half_closed_client_gets_one_reply_for_its_one_complete_line() {
    let server = start(&SYSV);
    observe::half_close_discards_the_unfinished_line(&server);
}

#[test]
fn sysv_client_ids_are_unique_among_live_clients() {
    let server = start(&SYSV);
    client_ids_are_unique_among_live_clients_of(&server);
}

/// The ids (column 1) of every object in `/proc/sysvipc/<table>`, whatever its key.
fn all_sysv_ids(table: &str) -> Vec<String> {
    std::fs::read_to_string(format!("/proc/sysvipc/{table}"))
        .expect("read /proc/sysvipc")
        .lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().nth(1).map(str::to_string))
        .collect()
}

/// The server and its children stay single-threaded (code after `fork` in a multi-threaded
/// process may only call async-signal-safe functions): one task each in `/proc/<pid>/task`.
fn assert_single_threaded(pids: impl IntoIterator<Item = i32>) {
    for pid in pids {
        assert_eq!(
            procfs::threads(pid).len(),
            1,
            "process {pid} is single-threaded"
        );
    }
}

/// A child that panicked: its client is disconnected, and the parent reaps it.
fn panicked_child_is_gone(server: &Server, doomed: &mut Client, doomed_pid: i32) {
    assert!(
        doomed.closes(),
        "the panicking child's client is disconnected"
    );
    assert!(
        wait_until(Duration::from_secs(10), || !server
            .children()
            .contains(&doomed_pid)),
        "the panicked child was reaped"
    );
}
