//! The client of lab02-fork: type requests, see replies and chat messages as they arrive.
fn main() {
    common::client::main(common::Model::Fork);
}
