//! Lab 3: the concurrent server with a thread per client (쓰레드 방식). (being written)
fn main() {
    common::exit_with_error("the thread server is not written yet");
}
