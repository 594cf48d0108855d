//! `wi-load`: the benchmarks of BENCHMARKS.md that are not criterion's.
//!
//!   wi-load tls       the webhook and its ceiling over TLS on 127.0.0.1 (section 2)
//!   wi-load budget    the ceiling with a decision's worth of CPU time added: how much a
//!                     decision may cost for a given ratio to the ceiling
//!   wi-load cluster   memory and pod-creation latency through a real control plane
//!                     (sections 3 and 4; `bench/run.sh` starts the control plane)
//!   wi-load report    BENCHMARKS.md's tables and plots from the results
//!
//! `bench/run.sh` runs everything and rewrites BENCHMARKS.md.

mod budget;
mod cluster;
mod fixtures;
mod floor;
mod load;
mod procfs;
mod report;
mod results;
mod server;
mod stats;
mod tlsbench;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

// The allocator of the wi-webhook binary, for the servers under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "wi-load",
    about = "Benchmarks of wi-webhook (see BENCHMARKS.md)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Throughput and latency over TLS: the webhook against its ceiling.
    Tls(tlsbench::TlsArgs),
    /// The ceiling with N µs of CPU time added per answer, against the webhook: the ratio to
    /// the ceiling as a function of a decision's cost.
    Budget(budget::BudgetArgs),
    /// Memory and pod-creation latency against the control plane of tests/cluster/run.sh.
    Cluster(cluster::ClusterArgs),
    /// Rewrites the generated parts of BENCHMARKS.md and the plots from the results.
    Report(report::ReportArgs),
    /// (internal) One server under load, in its own process.
    #[command(hide = true)]
    Serve {
        #[arg(long, value_enum)]
        kind: server::Kind,
        #[arg(long, value_enum, default_value = "seed")]
        pod: server::PodKind,
        #[arg(long)]
        cert_dir: PathBuf,
        /// Stop after this long even if the parent never closes stdin.
        #[arg(long, default_value_t = 3600)]
        max_seconds: u64,
        /// The ceiling's CPU time per answer on top of its canned one, in µs.
        #[arg(long, default_value_t = 0)]
        work_us: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let result = match cli.command {
        Command::Tls(args) => runtime.block_on(tlsbench::run(args)),
        Command::Budget(args) => runtime.block_on(budget::run(args)),
        Command::Cluster(args) => runtime.block_on(cluster::run(args)),
        Command::Report(args) => report::run(args).map_err(anyhow::Error::from),
        Command::Serve {
            kind,
            pod,
            cert_dir,
            max_seconds,
            work_us,
        } => runtime.block_on(server::serve(kind, pod, &cert_dir, max_seconds, work_us)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
