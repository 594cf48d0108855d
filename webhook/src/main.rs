use std::process::ExitCode;

use clap::{Parser, Subcommand};
use wi_webhook::cli;

// The admission path makes many small, short-lived allocations (JSON trees, the patch, the
// answer); glibc malloc spent about half of a decision's time on them (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Azure Workload Identity mutating admission webhook for Azure DevOps agent pools.
#[derive(Parser, Debug)]
#[command(name = "wi-webhook", version, about)]
struct Cli {
    /// Log filter (error, warn, info, debug, trace, or a tracing directive).
    #[arg(long, env = "WI_LOG_LEVEL", default_value = "info", global = true)]
    log_level: String,

    /// Log as JSON lines.
    #[arg(long, env = "WI_LOG_JSON", global = true)]
    log_json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve admission reviews over TLS (the webhook).
    Serve(Box<cli::serve::ServeArgs>),
    /// Show the mutation of Pods and workloads in manifests, without a cluster.
    Mutate(cli::mutate::MutateArgs),
    /// Report every pool violation in manifests or a live cluster (exit 1 on violations).
    Audit(cli::audit::AuditArgs),
    /// Create certificates for the webhook.
    Certs(cli::certs::CertsArgs),
    /// Print the AgentPool CustomResourceDefinition (as committed under manifests/).
    Crd,
    /// Print the webhook configurations (mutating and validating) the webhook expects.
    WebhookConfig(cli::WebhookConfigArgs),
}

fn init_logging(level: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log_level, cli.log_json);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Serve(args) => runtime.block_on(cli::serve::run(*args)),
        Command::Mutate(args) => return runtime.block_on(cli::mutate::run(args)),
        Command::Audit(args) => return runtime.block_on(cli::audit::run(args)),
        Command::Certs(args) => cli::certs::run(args),
        Command::WebhookConfig(args) => args
            .options()
            .map(|o| print!("{}", wi_webhook::webhookconfig::yaml(&o))),
        Command::Crd => {
            print!("{}", wi_webhook::policy::crd::crd_yaml());
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
