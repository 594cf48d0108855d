use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::util::SubscriberInitExt;
use wi_webhook::cli;

// The admission path makes many small, short-lived allocations (JSON trees, the patch, the
// answer); glibc malloc spent about half of a decision's time on them (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

// mimalloc 3 returns freed pages to the OS only after `purge_delay` (1 s by default, ten times
// that for whole arena chunks) and only when it runs again: the pages the caches' initial
// lists left behind stayed resident. 10 ms (mimalloc 2's default) returns them at once
// (BENCHMARKS.md, memory). MIMALLOC_PURGE_DELAY still decides when set.
const PURGE_DELAY_MS: std::ffi::c_long = 10;
/// `mi_option_purge_delay` in mimalloc's `mi_option_e` (mimalloc.h, versions 2 and 3).
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

unsafe extern "C" {
    // Part of the linked mimalloc library; the Rust crate does not export it.
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}

fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a plain integer option; any value is valid.
        unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    }
}

/// Azure Workload Identity mutating admission webhook for Azure DevOps agent pools.
#[derive(Parser, Debug)]
#[command(
    name = "wi-webhook",
    version = wi_webhook::VERSION,
    about,
    after_help = cli::EXIT_CODES
)]
struct Cli {
    /// Log level: error, warn, info, debug or trace (upstream's "" and all are warn and
    /// trace), or tracing directives such as info,wi_webhook=debug. Anything else is refused.
    #[arg(long, env = "WI_LOG_LEVEL", default_value = "info", global = true, value_parser = cli::upstream::log_level)]
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
    /// Walk one agent's chain to its Azure token on the live cluster, with the fix of each
    /// broken step (exit 1 when one fails).
    Doctor(cli::doctor::DoctorArgs),
    /// Create certificates for the webhook.
    Certs(cli::certs::CertsArgs),
    /// Print the AgentPool CustomResourceDefinition (as committed under manifests/).
    Crd,
    /// Print the webhook configurations (mutating and validating) the webhook expects.
    WebhookConfig(cli::WebhookConfigArgs),
    /// Print a shell completion script (e.g. `wi-webhook completions bash > /etc/bash_completion.d/wi-webhook`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

fn init_logging(level: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // Nothing else installs a subscriber: this cannot fail.
    let _ = wi_webhook::logging::subscriber(filter, json, ansi, std::io::stderr).try_init();
}

fn main() -> ExitCode {
    tune_allocator();
    let args = cli::upstream::go_style_args(std::env::args_os());
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // Help and version go to stdout and succeed; every other parse error is a usage
            // error (EX_USAGE), told apart from unusable input (2).
            return if e.use_stderr() {
                ExitCode::from(cli::EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
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
        Command::Doctor(args) => return runtime.block_on(cli::doctor::run(args)),
        Command::Certs(args) => cli::certs::run(args),
        Command::WebhookConfig(args) => args
            .options()
            .map(|o| print!("{}", wi_webhook::webhookconfig::yaml(&o))),
        Command::Crd => {
            print!("{}", wi_webhook::policy::crd::crd_yaml());
            Ok(())
        }
        Command::Completions { shell } => {
            // Into memory first: clap_complete panics on a write error (a closed pipe).
            let mut script = Vec::new();
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "wi-webhook", &mut script);
            std::io::Write::write_all(&mut std::io::stdout(), &script)
                .map_err(|e| anyhow::anyhow!("cannot write the completion script: {e}"))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(cli::EXIT_INPUT)
        }
    }
}
