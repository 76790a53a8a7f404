//! Lab 2: the concurrent server that forks a child process per client (포크 방식). (being written)
fn main() {
    common::exit_with_error("the fork server is not written yet");
}
