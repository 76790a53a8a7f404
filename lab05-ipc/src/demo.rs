//! `--demo N`: the script each demo client follows against this lab's server.

use common::Model;
use walkthrough::TOGETHER;

/// Runs the demo (see the `walkthrough` crate) and exits. Each client waits until every client is
/// greeted (its child is in the chat, so all are there to hear), counts, says hello, waits for
/// the others' messages, counts again.
pub fn run(clients: u32) -> ! {
    let intro = "Each client is served by its own child process (see the pids), yet INCR counts \
                 across them (shared memory) and every SAY reaches the others (message queues).";
    walkthrough::run(Model::Ipc, clients, intro, |i| {
        let say = format!("SAY hello from client {i}");
        let others = walkthrough::messages(clients - 1);
        let script = ["WHO", TOGETHER, "INCR", &say, &others, "INCR", "QUIT"];
        script.map(String::from).to_vec()
    })
}
