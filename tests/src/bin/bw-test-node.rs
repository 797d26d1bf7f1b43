//! The node daemon as a separate process, for tests that SIGKILL a node.
//! Usage: `bw-test-node run --config PATH`.

fn main() -> std::process::ExitCode {
    bluewire_node::daemon::main()
}
