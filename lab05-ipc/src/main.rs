//! Lab 5: forked children that share data through IPC - shared memory and message queues. (being written)
fn main() {
    common::exit_with_error("the ipc server is not written yet");
}
