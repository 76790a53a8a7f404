//! The `--demo N` script: what each scripted client sends to this lab's server.
//!
//! Everyone is greeted at once, so the clients wait for each other (`TOGETHER`) and then all
//! `SLEEP` side by side, count with `INCR`, and each `SAY`s hello and hears the others.

use common::Model;
use walkthrough::TOGETHER;

/// Runs the demo with `clients` scripted clients (see the `walkthrough` crate), then exits.
pub fn run(clients: u32) -> ! {
    walkthrough::run(
        Model::Thread,
        clients,
        "The clients connect 100 ms apart and each is greeted at once: one pid, a thread (tid) each. \
         INCR counts across them, and each SAY reaches the others as a MSG.",
        |i| {
            vec![
                "WHO".into(),
                TOGETHER.into(), // wait for the others, so that all hear every SAY
                "SLEEP 300".into(),
                "INCR".into(),
                format!("SAY hello from client {i}"),
                walkthrough::messages(clients - 1),
                "QUIT".into(),
            ]
        },
    )
}
