//! The results files of `bench/results/`, as the measuring commands write them and
//! `wi-load report` reads them: `decision.json`, `tls.json` and `budget.json` (the same
//! shape), `cluster.json`. Fields added after a file was first saved have defaults, so older
//! results still read.

use serde::{Deserialize, Serialize};

use crate::load::Proto;
use crate::procfs::{Machine, Memory};
use crate::stats::Summary;

/// `decision.json`: criterion's medians, with the machine of the run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DecisionResults {
    pub machine: Option<Machine>,
    pub benchmarks: Vec<Benchmark>,
}

/// One criterion benchmark: its median and the 95% interval of the median, in nanoseconds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Benchmark {
    pub id: String,
    pub group: String,
    pub median_ns: f64,
    pub low_ns: f64,
    pub high_ns: f64,
    /// The body of the benchmark, when it declared one.
    pub bytes: Option<u64>,
}

/// `tls.json` and `budget.json`: servers measured in turn over TLS.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoadResults {
    pub machine: Option<Machine>,
    /// The pod the AdmissionReviews carried.
    pub pod: String,
    pub request_bytes: usize,
    pub response_bytes: usize,
    pub h1_connections: usize,
    pub h2_streams: usize,
    /// How many times every scenario ran (results before repeats: once).
    #[serde(default = "one")]
    pub repeats: usize,
    pub runs: Vec<ServerRun>,
}

fn one() -> usize {
    1
}

/// One run of one server.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServerRun {
    /// `webhook`, `ceiling`, `floor` or `echo`.
    pub server: String,
    /// CPU time the ceiling burns per answer on top of its canned one (`wi-load budget`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub work_us: u64,
    /// Which repeat of the scenario (0-based; results before repeats have one, the 0th).
    #[serde(default)]
    pub repeat: usize,
    #[serde(flatten)]
    pub run: Run,
    /// CPU time of the server process per answered request.
    pub server_cpu_us_per_request: f64,
    /// CPU time of the load generator per answered request.
    pub client_cpu_us_per_request: f64,
    pub server_memory: Memory,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// `cluster.json`: memory and pod-creation latency through a real control plane.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClusterResults {
    pub machine: Option<Machine>,
    /// The API server's version.
    pub apiserver: String,
    pub objects: Objects,
    pub memory_kib: MemoryKib,
    pub ready_seconds: ReadySeconds,
    /// The load straight at the webhook with its caches full.
    pub load: Option<Vec<LoadRun>>,
    /// Absent from a `--memory-only` run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_create: Option<PodCreate>,
}

/// The objects created, and how many the webhook's caches held when.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Objects {
    pub service_accounts: usize,
    pub sa_namespaces: usize,
    /// The seed's included.
    pub agent_pools: usize,
    pub created_in_seconds: f64,
    pub watch_cached_service_accounts: u64,
    pub watch_cached_agent_pools: u64,
    /// From the first create; `None`: not within the wait.
    pub all_service_accounts_cached_after_seconds: Option<f64>,
    pub all_agent_pools_indexed_after_seconds: Option<f64>,
    /// After the restart, which lists everything.
    pub cached_service_accounts: u64,
    pub cached_agent_pools: u64,
    pub idle_cached_service_accounts: u64,
}

/// Resident memory (`VmRSS`, or `VmHWM` for the peaks) of the webhook, KiB.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MemoryKib {
    pub idle: u64,
    pub filled_by_watch: u64,
    pub filled_at_start: u64,
    pub peak_filling_at_start: u64,
    pub under_load_max: u64,
    pub peak_since_start: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_pod_creates: Option<u64>,
}

/// How long the webhook took to be ready, idle and on the filled cluster.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReadySeconds {
    pub idle: f64,
    pub filled: f64,
}

/// One load of `cluster.json`, with the webhook's CPU time per request.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoadRun {
    pub run: Run,
    pub server_cpu_us_per_request: f64,
}

/// Pod creates through the API server, with and without the webhook.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PodCreate {
    pub pods_each: usize,
    pub with_webhook: Summary,
    pub without_webhook: Summary,
    /// The echo server's side (results before it have none).
    #[serde(default)]
    pub with_canned_webhook: Option<Summary>,
    pub added_p50_ms: f64,
    pub added_p99_ms: f64,
    pub webhook_cpu_us_per_create: f64,
    /// The API server's own timing of its calls to the webhook (results before it have none).
    #[serde(default)]
    pub apiserver_webhook_calls: Option<f64>,
    #[serde(default)]
    pub apiserver_webhook_call_mean_us: Option<f64>,
    /// The latency the webhook logged per admission.
    #[serde(default)]
    pub webhook_logged_latency: Option<Summary>,
}

/// How a run drove its requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Loop {
    /// Each request sent as soon as the previous answer arrived.
    Closed,
    /// Requests due at a fixed rate.
    Open,
}

impl std::fmt::Display for Loop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Loop::Closed => "closed",
            Loop::Open => "open",
        })
    }
}

/// What one run measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Run {
    pub proto: Proto,
    pub mode: Loop,
    /// Requests per second asked for (open loop), 0 for closed loop.
    pub rate: u64,
    pub connections: usize,
    /// Requests outstanding per connection (closed loop).
    pub concurrency: usize,
    pub seconds: f64,
    pub ok: u64,
    pub errors: u64,
    /// Open loop: requests not sent because too many were outstanding.
    pub dropped: u64,
    /// Answers per second.
    pub throughput: f64,
    pub latency: Summary,
    pub first_error: Option<String>,
    /// Connections opened anew during the run (see [`crate::load::RECONNECTS`]; results before
    /// it: 0).
    #[serde(default)]
    pub reconnects: u64,
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde::de::DeserializeOwned;
    use serde_json::Value;

    use super::*;

    /// Reads a saved results file as `T` and writes it back: the same fields, in the same
    /// order and form, as the file read as plain JSON and written back. (Not the file's own
    /// bytes: serde_json reads a few long decimals one bit off, either way.)
    fn round_trip<T: Serialize + DeserializeOwned>(name: &str) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("results")
            .join(name);
        let text = std::fs::read(&path).unwrap();
        let typed: T = serde_json::from_slice(&text).unwrap();
        let saved: Value = serde_json::from_slice(&text).unwrap();
        assert_eq!(serde_json::to_value(&typed).unwrap(), saved, "{name}");
        assert!(
            serde_json::to_vec_pretty(&typed).unwrap()
                == serde_json::to_vec_pretty(&saved).unwrap(),
            "{name}: the same fields, written in another order"
        );
    }

    #[test]
    fn the_saved_results_read_and_write_back_unchanged() {
        round_trip::<DecisionResults>("decision.json");
        round_trip::<LoadResults>("tls.json");
        round_trip::<LoadResults>("budget.json");
        round_trip::<ClusterResults>("cluster.json");
    }
}
