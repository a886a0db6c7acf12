//! nodectl: one multi-call binary for the container runtime, the node daemon and the
//! control plane (see README.md and docs/architecture.md for the parts).

fn main() {
    std::process::exit(nodectl::cli::main());
}
