//! `iotseal`: the one binary. Subcommands live in `cmd/`, one module each.
#![forbid(unsafe_code)]

mod cmd;
mod providers;

/// With `--features mimalloc`: mimalloc instead of the system allocator. Faster under batch
/// load (glibc's malloc takes ~17% of the gateway's CPU there), but idle sessions and the
/// baseline take more memory; docs/decisions.md D12 has both measurements.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// By default (feature `jemalloc`): jemalloc, whose background thread (started in `main`)
/// purges freed pages after its decay time (10 s), also while the gateway is idle. glibc's
/// malloc kept the ~225 MB of a 10,000-connection burst after every connection had closed;
/// jemalloc gives it back within seconds (docs/decisions.md D33, docs/performance.md).
#[cfg(all(feature = "jemalloc", not(feature = "mimalloc")))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Starts jemalloc's background purging thread (a no-op with another allocator). Without it
/// jemalloc purges only when a thread allocates, so an idle gateway would keep a burst's pages.
fn allocator_background_purge() {
    #[cfg(all(feature = "jemalloc", not(feature = "mimalloc")))]
    if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
        eprintln!("warning: jemalloc background thread not started: {e}");
    }
}

use clap::{Parser, Subcommand};

/// Secure IoT telemetry: authenticated, post-quantum hybrid, end-to-end sealed readings.
#[derive(Debug, Parser)]
#[command(name = "iotseal", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The whole system in one command: a gateway in this process, a mixed fleet of simulated
    /// devices over HTTPS, every reading verified in storage, a summary.
    Demo(cmd::demo::Args),
    /// Run a fleet of simulated devices against a running gateway.
    Simulate(cmd::simulate::Args),
    /// List the algorithms and suites with their wire sizes.
    Suites(cmd::suites::Args),
    /// Generate an identity key pair.
    Keygen(cmd::keygen::Args),
    /// Set up, rotate keys of, and run a gateway.
    Gateway(cmd::gateway::Args),
    /// Manage devices through a running gateway's admin API.
    Device(cmd::device::Args),
    /// Benchmarks: `crypto` (what each cryptographic choice costs) and `load` (a gateway).
    Bench(cmd::bench::Args),
    /// One self-contained HTML report (SVG charts, PNGs beside it) from benchmark results.
    Report(cmd::report::Args),
    /// The threat lab: attack iotseal (or the original design) through an intercepting proxy.
    Attack(cmd::attack::Args),
}

fn main() -> anyhow::Result<()> {
    allocator_background_purge();
    let cli = Cli::parse();
    match cli.command {
        Command::Demo(a) => cmd::demo::run(a),
        Command::Simulate(a) => cmd::simulate::run(a),
        Command::Suites(a) => cmd::suites::run(a),
        Command::Keygen(a) => cmd::keygen::run(a),
        Command::Gateway(a) => cmd::gateway::run(a),
        Command::Device(a) => cmd::device::run(a),
        Command::Bench(a) => cmd::bench::run(a),
        Command::Report(a) => cmd::report::run(a),
        Command::Attack(a) => cmd::attack::run(a),
    }
}
