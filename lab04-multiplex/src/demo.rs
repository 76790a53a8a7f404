//! The `--demo N` script: what each scripted client sends to this lab's server.

use common::Model;

/// Runs the demo with `clients` scripted clients (see the `walkthrough` crate), then exits.
pub fn run(clients: u32) -> ! {
    walkthrough::run(
        Model::Multiplex,
        clients,
        "One thread serves everyone: all clients see the same pid and tid. Client 1 asks for \
         SLEEP 1500 at once, and while it sleeps the whole loop waits: the others are not \
         even greeted until it is over.",
        |i| {
            let middle = if i == 1 {
                "SLEEP 1500".to_string()
            } else {
                format!("ECHO hello from client {i}")
            };
            vec!["WHO".into(), middle, "INCR".into(), "QUIT".into()]
        },
    )
}
