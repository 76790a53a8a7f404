//! Lab 4: the multiplexing server - one process, one thread, every client (Multiplexing 방식). (being written)
fn main() {
    common::exit_with_error("the multiplex server is not written yet");
}
