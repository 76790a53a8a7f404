//! The client of lab04-multiplex: type requests, see replies and chat messages as they arrive.
fn main() {
    common::client::main(common::Model::Multiplex);
}
