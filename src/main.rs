//! The `trackgate` binary: everything lives in the library; see `cli`.

fn main() {
    std::process::exit(trackgate::cli::main());
}
