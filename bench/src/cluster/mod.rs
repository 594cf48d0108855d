//! `wi-load cluster`: the real `wi-webhook serve` (release build) against the control plane
//! of `tests/cluster/run.sh` (its own state directory, started without the test webhook):
//!
//! 1. resident memory idle, with 10,000 ServiceAccounts and 1,000 AgentPools in the caches
//!    (as the watch grew them, and after a restart that lists them all), and under load;
//! 2. pod-creation latency through the API server, alternating creates in a namespace the
//!    webhook configurations select and in one they skip (`wi-webhook.dev/ignore: "true"`).
//!
//! Each step has a module: the control plane and the objects created in it
//! (`control_plane`), the measured webhook process (`webhook`), the memory figures
//! (`memory`), the pod creates (`pods`).

mod control_plane;
mod memory;
mod pods;
mod webhook;

use std::path::{Path, PathBuf};

use self::control_plane::ControlPlane;
use crate::procfs;
use crate::results::ClusterResults;

#[derive(clap::Args, Debug)]
pub struct ClusterArgs {
    /// State directory of `tests/cluster/run.sh` (kubeconfig, cluster.env).
    #[arg(long, env = "WI_CLUSTER_DIR", default_value = "/tmp/wi-bench")]
    pub state: PathBuf,
    /// The webhook binary to measure.
    #[arg(long, default_value = "target/release/wi-webhook")]
    pub webhook_bin: PathBuf,
    #[arg(long, default_value = "bench/results/cluster.json")]
    pub out: PathBuf,
    /// ServiceAccounts to create (annotated with a client id), spread over namespaces.
    #[arg(long, default_value_t = 10_000)]
    pub service_accounts: usize,
    /// Namespaces holding those ServiceAccounts.
    #[arg(long, default_value_t = 100)]
    pub sa_namespaces: usize,
    /// AgentPools to create besides the seed's.
    #[arg(long, default_value_t = 1_000)]
    pub pools: usize,
    /// Pods to create on each side (with and without the webhook).
    #[arg(long, default_value_t = 600)]
    pub pods: usize,
    /// Unmeasured creates on each side first.
    #[arg(long, default_value_t = 25)]
    pub warmup_pods: usize,
    /// How long to wait for the running webhook's caches to hold every created object (the
    /// restart that follows lists them all in any case).
    #[arg(long, default_value_t = 120)]
    pub cache_wait_seconds: u64,
    /// Concurrent creates while filling the cluster.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Memory under load: an open loop at this rate over HTTP/2 ...
    #[arg(long, default_value_t = 2_000)]
    pub load_rate: u64,
    /// ... for this long, then a closed loop over 16 HTTP/1.1 connections as long.
    #[arg(long, default_value_t = 10.0)]
    pub load_seconds: f64,
    /// Stop after the memory figures (idle, filled, under load), without the pod creates: a
    /// quicker run, whose result `wi-load report` does not take (give another `--out`).
    #[arg(long)]
    pub memory_only: bool,
}

const IGNORED_NAMESPACE: &str = "bench-ignored";
/// Skipped by the webhook like the ignored one, served instead by the echo server (a canned
/// patch, the uid copied): what any webhook answering this patch costs the API server.
const CANNED_NAMESPACE: &str = "bench-canned";
const CANNED_LABEL: &str = "wi-bench.dev/canned";

fn log(msg: impl AsRef<str>) {
    eprintln!("[cluster] {}", msg.as_ref());
}

pub async fn run(args: ClusterArgs) -> anyhow::Result<()> {
    let machine = procfs::machine();
    let cp = ControlPlane::connect(&args.state).await?;
    let version = cp.client.apiserver_version().await?;
    log(format!("API server {}", version.git_version));
    let pools = memory::prepare(&cp, &args).await?;
    let pki = args.state.join("bench-webhook-pki");
    let ca_pem = crate::server::certificates(&pki)?;

    let (mut webhook, measured) = memory::measure(&cp, &args, &pools, &pki, &ca_pem).await?;
    let mut result = ClusterResults {
        machine: Some(machine),
        apiserver: version.git_version,
        objects: measured.objects,
        memory_kib: measured.memory_kib,
        ready_seconds: measured.ready_seconds,
        load: Some(measured.load),
        pod_create: None,
    };
    if args.memory_only {
        webhook.stop();
        return write_result(&args.out, &result);
    }

    let (pod_create, final_rss_kib) =
        pods::measure(&cp, &args, &mut webhook, &pki, &ca_pem).await?;
    result.memory_kib.after_pod_creates = Some(final_rss_kib);
    result.pod_create = Some(pod_create);
    write_result(&args.out, &result)
}

fn write_result(out: &Path, result: &ClusterResults) -> anyhow::Result<()> {
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(out, serde_json::to_vec_pretty(result)?)?;
    log(format!("wrote {}", out.display()));
    Ok(())
}
