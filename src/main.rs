//! nodectl: one multi-call binary for the container runtime, the node daemon and the
//! control plane (see README.md and docs/architecture.md for the parts).

/// jemalloc instead of glibc's malloc: under the API server's load (tens of thousands of
/// objects decoded, cached and encoded again) glibc's malloc took about a third of the
/// server's CPU and fragmented its heap (see README, Scale). jemalloc keeps its arenas
/// consistent across fork (pthread_atfork), which the runtime and the daemon rely on.
/// The feature `system-malloc` leaves glibc's in place, for heap profilers.
#[cfg(not(feature = "system-malloc"))]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    std::process::exit(nodectl::cli::main());
}
