//! The `--demo N` script of lab02: what each scripted client sends (the demo itself is
//! the `walkthrough` crate).

use common::cli::ServerArgs;
use common::Model;

/// With `--demo N`: runs the demo and exits. Without it: returns at once.
pub fn run_if_asked(args: &ServerArgs) {
    if let Some(clients) = args.demo {
        walkthrough::run(
            Model::Fork,
            clients,
            "The clients connect 100 ms apart; each is greeted at once by its own child process (a different pid), and INCR says 1 to everyone.",
            |_| vec!["WHO".into(), "INCR".into(), "SLEEP 1500".into(), "QUIT".into()],
        );
    }
}
