//! The client of lab03-thread: type requests, see replies and chat messages as they arrive.
fn main() {
    common::client::main(common::Model::Thread);
}
