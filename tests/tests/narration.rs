//! The narration: what each server tells its operator on stderr, one line per connection event.
//!
//! Narration is part of the lesson (the tutorials quote it), not of the contract: a student's
//! server may word it differently, or say nothing with `--quiet`. So these tests are not graded
//! (GRADING.md does not count them); they keep the reference's narration telling what the
//! tutorials say it tells. The graded tests, in the lab files, observe only the contract and the
//! system. Every server here is started with [`Server::start_narrating`], which never adds
//! `--quiet`.
//!
//! Run them with `cargo test -p tests --test narration`.

use std::collections::BTreeSet;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tests::ipc::{queues_of, shm_objects_of, startup_lock, sysv_objects_of, QueueBudget};
use tests::{procfs, run_with_timeout, tool, wait_until, Client, Server};

// ---------------------------------------------------------------------------------------------
// lab01, lab02, lab04

#[test]
fn lab01_a_line_cut_off_by_a_close_is_narrated() {
    let server = Server::start_narrating("iterative-server", &[]);
    let mut client = server.greeted();
    client.send_raw(b"ECHO half a li");
    drop(client);
    assert!(
        server.narrates("in the middle of a line"),
        "narrated:\n{}",
        server.stderr()
    );
}

#[test]
fn lab02_every_reaped_child_is_narrated_with_its_exit_status() {
    let mut server = Server::start_narrating("fork-server", &["--allow-panic"]);
    let mut doomed = server.greeted();
    let doomed_pid = doomed.serving_pid();
    doomed.send("PANIC");
    assert!(doomed.closes());
    assert!(
        server.narrates(&format!("reaped child {doomed_pid} (exit 101)")),
        "{}",
        server.stderr()
    );
    let mut polite = server.greeted();
    let polite_pid = polite.serving_pid();
    assert_eq!(polite.request("QUIT"), "OK bye");
    assert!(
        server.narrates(&format!("reaped child {polite_pid} (exit 0)")),
        "{}",
        server.stderr()
    );
    let idle = server.greeted();
    let idle_pid = idle.serving_pid();
    assert_eq!(
        server
            .stop_with(Signal::SIGTERM, Duration::from_secs(10))
            .code(),
        Some(0)
    );
    assert!(
        server
            .stderr()
            .contains(&format!("reaped child {idle_pid} (exit 0)")),
        "at shutdown too:\n{}",
        server.stderr()
    );
}

#[test]
fn lab02_a_stuck_child_is_narrated_as_killed() {
    let mut server = Server::start_narrating("fork-server", &[]);
    let client = server.greeted();
    let pid = client.serving_pid();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGSTOP).unwrap();
    assert!(wait_until(Duration::from_secs(10), || procfs::stat(pid)
        .is_some_and(|s| s.state == 'T')));
    server.stop_with(Signal::SIGTERM, Duration::from_secs(20));
    let stderr = server.stderr();
    assert!(stderr.contains("sent SIGKILL"), "{stderr}");
    assert!(
        stderr.contains(&format!("reaped child {pid} (killed by SIGKILL)")),
        "{stderr}"
    );
}

#[test]
fn lab02_the_max_children_wait_is_narrated() {
    let server = Server::start_narrating("fork-server", &["--max-children", "1"]);
    let _first = server.greeted();
    let _second = server.connect();
    assert!(server.narrates("--max-children cap"), "{}", server.stderr());
}

#[test]
fn lab04_a_sleep_and_a_panic_are_narrated() {
    let mut server = Server::start_narrating("multiplex-server", &["--allow-panic"]);
    let mut client = server.greeted();
    assert_eq!(client.request("SLEEP 10"), "OK slept 10");
    assert!(server.narrates("asked for SLEEP 10"), "{}", server.stderr());
    client.send("PANIC");
    assert!(client.closes());
    assert!(server.wait_exit(Duration::from_secs(10)).is_some());
    assert!(server.narrates("panicked"), "{}", server.stderr());
}

#[test]
fn lab04_running_out_of_descriptors_is_narrated() {
    let server = Server::start_narrating("multiplex-server", &[]);
    let limit = procfs::fd_count(server.pid()) + 2;
    let mut prlimit = tool("prlimit");
    prlimit.args([
        format!("--nofile={limit}:{limit}"),
        format!("--pid={}", server.pid()),
    ]);
    let (status, _, stderr) = run_with_timeout(prlimit, Duration::from_secs(10));
    assert!(status.success(), "prlimit: {stderr}");
    let _clients: Vec<Client> = (0..5).map(|_| server.connect()).collect();
    assert!(
        server.narrates("Too many open files"),
        "{}",
        server.stderr()
    );
}

#[test]
fn lab04_the_demo_narrates_the_whole_loop_waiting() {
    let demo = tests::run_demo("multiplex-server", 3);
    assert!(
        demo.stderr.contains("the whole loop waits"),
        "narrated: {}",
        demo.stderr
    );
}

// ---------------------------------------------------------------------------------------------
// lab03, lab05

/// Every narration line the tests below wait for comes within this.
const NARRATION: Duration = Duration::from_secs(10);

fn assert_narrates(server: &Server, text: &str) {
    assert!(
        server.narrates_within(text, NARRATION),
        "the narration never said {text:?}; stderr:\n{}",
        server.stderr()
    );
}

#[test]
fn thread_server_narrates_a_panic_a_refusal_and_its_stop() {
    let mut server =
        Server::start_narrating("thread-server", &["--allow-panic", "--max-clients", "2"]);
    let mut doomed = server.greeted();
    let _other = server.greeted();
    let mut refused = server.connect();
    assert_eq!(refused.read_line().as_deref(), Ok("ERR server full"));
    assert_narrates(&server, "refused client 3");
    doomed.send("PANIC");
    assert!(doomed.closes());
    assert_narrates(&server, "panicked");
    let status = server.stop_with(Signal::SIGTERM, Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
    assert_narrates(&server, "woke 1 client(s)");
}

#[test]
fn thread_pool_narrates_that_every_thread_has_finished() {
    let mut server = Server::start_narrating("thread-server", &["--pool", "2"]);
    let mut client = server.greeted();
    assert_eq!(client.request("ECHO hi"), "OK hi");
    let status = server.stop_with(Signal::SIGTERM, Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
    assert_narrates(&server, "every thread has finished");
}

#[test]
fn thread_server_narrates_cutting_off_a_client_that_never_reads() {
    let server = Server::start_narrating("thread-server", &[]);
    let mut sender = server.greeted();
    let mut sleepy = server.greeted();
    let sleepy_id = sleepy.client_id(); // and then it never reads again
    let text = "z".repeat(4000);
    let cut_off = format!("client {sleepy_id} has");
    let mut sent = 0;
    while !server.stderr().contains(&cut_off) {
        assert!(sent < 20_000, "never narrated {cut_off:?}");
        assert_eq!(sender.request(&format!("SAY {sent} {text}")), "OK");
        sent += 1;
    }
}

/// An ipc-server started as lab05's tests start it (see tests::ipc).
fn start_ipc(args: &[&str]) -> (Option<QueueBudget>, Server) {
    let sysv = args.windows(2).any(|w| w == ["--ipc", "sysv"]);
    let budget = (!sysv).then(|| QueueBudget::take(16));
    let _lock = startup_lock(false);
    (budget, Server::start_narrating("ipc-server", args))
}

#[test]
fn ipc_server_narrates_each_queue_and_the_removal_of_the_shared_memory() {
    let (_budget, mut server) = start_ipc(&[]);
    let mut clients: Vec<_> = (0..2).map(|_| server.greeted()).collect();
    for client in &mut clients {
        client.client_id();
    }
    for client in &clients {
        assert_narrates(
            &server,
            &format!(
                "created message queue /netlabs-ipc-{}-child-{}",
                server.pid(),
                client.serving_pid()
            ),
        );
    }
    let status = server.stop_with(Signal::SIGTERM, Duration::from_secs(15));
    assert_eq!(status.code(), Some(0));
    assert_narrates(&server, "removed shared memory");
}

#[test]
fn ipc_server_narrates_the_stale_objects_it_removes() {
    let budget = QueueBudget::take(16);
    let lock = startup_lock(true); // no other server starts (and cleans) meanwhile
    let mut killed = Server::start_narrating("ipc-server", &[]);
    let mut a = killed.greeted();
    a.client_id();
    let queues: BTreeSet<String> = queues_of(killed.pid());
    let shm = shm_objects_of(killed.pid());
    killpg(Pid::from_raw(killed.pid()), Signal::SIGKILL).expect("killpg");
    assert!(killed.wait_exit(Duration::from_secs(10)).is_some());
    assert!(wait_until(Duration::from_secs(10), || {
        procfs::live_in_group(killed.pid()).is_empty()
    }));
    let mut next = Server::start_narrating("ipc-server", &[]);
    drop(lock);
    for object in &shm {
        assert_narrates(&next, &format!("removed stale shared memory /{object}"));
    }
    for queue in &queues {
        assert_narrates(&next, &format!("removed stale message queue {queue}"));
    }
    let _ = next.stop_with(Signal::SIGTERM, Duration::from_secs(15));
    drop(budget);
}

#[test]
fn ipc_server_with_sysv_narrates_its_ids_and_ipc_rmid() {
    let (_budget, mut server) = start_ipc(&["--ipc", "sysv"]);
    let mut client = server.greeted();
    client.client_id(); // served: the objects exist
    let (shm, msg) = sysv_objects_of(server.pid());
    assert_narrates(&server, &format!("shmid {} ", shm[0][1]));
    assert_narrates(&server, &format!("msqid {} ", msg[0][1]));
    let status = server.stop_with(Signal::SIGTERM, Duration::from_secs(15));
    assert_eq!(status.code(), Some(0));
    assert_narrates(&server, "(IPC_RMID)");
}
