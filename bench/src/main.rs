//! The netlabs benchmark (being written).
fn main() {
    eprintln!("error: the benchmark is not written yet");
    std::process::exit(1);
}
