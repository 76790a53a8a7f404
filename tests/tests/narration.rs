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

use std::time::Duration;

use nix::sys::signal::Signal;
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
