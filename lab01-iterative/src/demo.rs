//! The `--demo N` script of lab01: what each scripted client sends (the demo itself is
//! the `walkthrough` crate).

use common::cli::ServerArgs;
use common::Model;

/// With `--demo N`: runs the demo and exits. Without it: returns at once.
pub fn run_if_asked(args: &ServerArgs) {
    if let Some(clients) = args.demo {
        walkthrough::run(
            Model::Iterative,
            clients,
            "The clients connect 100 ms apart; each waits in the accept queue until the one before it sends QUIT.",
            |_| vec!["WHO".into(), "INCR".into(), "SLEEP 500".into(), "QUIT".into()],
        );
    }
}
