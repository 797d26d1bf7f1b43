//! `bluewire-node`: the node daemon. All logic lives in the library.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    bluewire_node::daemon::main()
}
