//! The client of lab05-ipc: type requests, see replies and chat messages as they arrive.
fn main() {
    common::client::main(common::Model::Ipc);
}
