//! The client of lab01: type requests, see replies. Try `WHO`, `INCR`, `SLEEP 3000`, `QUIT`.
fn main() {
    common::client::main(common::Model::Iterative);
}
