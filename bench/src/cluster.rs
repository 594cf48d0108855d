//! `wi-load cluster`: the real `wi-webhook serve` (release build) against the control plane
//! of `tests/cluster/run.sh` (its own state directory, started without the test webhook):
//!
//! 1. resident memory idle, with 10,000 ServiceAccounts and 1,000 AgentPools in the caches
//!    (as the watch grew them, and after a restart that lists them all), and under load;
//! 2. pod-creation latency through the API server, alternating creates in a namespace the
//!    webhook configurations select and in one they skip (`wi-webhook.dev/ignore: "true"`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wi_webhook::policy::crd::{AgentPool, AgentPoolSpec};

use crate::fixtures;
use crate::load::{self, Proto, Target};
use crate::procfs;
use crate::server::{Kind, PodKind, ServerProcess};
use crate::stats::Summary;

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

/// A `wi-webhook serve` process; stopped on drop.
struct Webhook {
    child: Child,
    port: u16,
    metrics_port: u16,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Webhook {
    fn start(bin: &Path, state: &Path, pki: &Path, log: &Path) -> anyhow::Result<Webhook> {
        let (port, metrics_port) = (free_port()?, free_port()?);
        let log = std::fs::File::create(log)?;
        let child = Command::new(bin)
            .arg("serve")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
            .arg("--tls-cert-file")
            .arg(pki.join(wi_certs::TLS_CERT_FILE))
            .arg("--tls-key-file")
            .arg(pki.join(wi_certs::TLS_KEY_FILE))
            .args(["--tenant-id", fixtures::TENANT, "--drain-seconds", "1"])
            .arg("--kubeconfig")
            .arg(state.join("kubeconfig"))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        Ok(Webhook {
            child,
            port,
            metrics_port,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    async fn get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.metrics_port)).await?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = String::new();
        tokio::time::timeout(
            Duration::from_secs(10),
            stream.read_to_string(&mut response),
        )
        .await
        .context("no answer within 10 s")??;
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Ok((status, body.to_string()))
    }

    async fn wait_ready(&mut self, within: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        loop {
            if let Ok((200, _)) = self.get("/readyz").await {
                return Ok(started.elapsed());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("the webhook exited ({status})");
            }
            if started.elapsed() > within {
                bail!("the webhook was not ready within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A gauge of `/metrics`.
    async fn gauge(&self, name: &str) -> anyhow::Result<u64> {
        let (_, body) = self.get("/metrics").await?;
        body.lines()
            .find_map(|l| {
                l.strip_prefix(name)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .map(|v| v as u64)
            .with_context(|| format!("no {name} in /metrics"))
    }

    fn stop(&mut self) {
        // SAFETY: signalling our own child by its pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.stop();
    }
}

fn cluster_env(state: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(state.join("cluster.env")).with_context(|| {
        format!(
            "no control plane in {}: start it with bench/run.sh",
            state.display()
        )
    })?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect())
}

async fn client(state: &Path) -> anyhow::Result<kube::Client> {
    let raw = Kubeconfig::read_from(state.join("kubeconfig"))?;
    let config = kube::Config::from_custom_kubeconfig(raw, &KubeConfigOptions::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

fn kubectl(
    path: &str,
    state: &Path,
    args: &[&str],
    stdin: Option<&[u8]>,
) -> anyhow::Result<String> {
    let mut child = Command::new(path)
        .arg("--kubeconfig")
        .arg(state.join("kubeconfig"))
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {path}"))?;
    if let Some(input) = stdin {
        use std::io::Write;
        child.stdin.take().context("stdin")?.write_all(input)?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn namespace(name: &str, labels: &[(&str, &str)]) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    }
}

fn service_account(ns: &str, name: &str, client_id: &str, tenant: Option<&str>) -> ServiceAccount {
    let mut annotations = BTreeMap::from([(
        "azure.workload.identity/client-id".to_string(),
        client_id.to_string(),
    )]);
    if let Some(t) = tenant {
        annotations.insert("azure.workload.identity/tenant-id".into(), t.into());
    }
    ServiceAccount {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        ..ServiceAccount::default()
    }
}

/// Creates, tolerating "already exists" (a re-run on the same control plane).
async fn create<K>(api: &Api<K>, object: &K) -> anyhow::Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    match api.create(&PostParams::default(), object).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The seed's agent pod, as its ReplicaSet would post it, in `ns`.
fn agent_pod(ns: &str) -> anyhow::Result<Pod> {
    let mut pod = fixtures::seed_pod();
    let meta = pod["metadata"].as_object_mut().context("metadata")?;
    for key in ["managedFields", "ownerReferences", "creationTimestamp"] {
        meta.remove(key);
    }
    meta.insert("namespace".into(), json!(ns));
    meta.insert("generateName".into(), json!("bench-agent-"));
    pod.as_object_mut().context("pod")?.remove("status");
    Ok(serde_json::from_value(pod)?)
}

fn injected(pod: &Pod) -> bool {
    pod.spec.as_ref().is_some_and(|s| {
        s.containers
            .iter()
            .any(|c| c.env.iter().flatten().any(|e| e.name == "AZURE_CLIENT_ID"))
    })
}

/// Samples a process's resident memory until stopped; returns the largest sample.
struct Sampler {
    stop: Arc<AtomicBool>,
    max: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<()>,
}

impl Sampler {
    fn start(pid: u32) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let max = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, max) = (stop.clone(), max.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    max.fetch_max(procfs::memory(pid).rss_kib, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        };
        Sampler { stop, max, thread }
    }

    fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        self.max.load(Ordering::Relaxed)
    }
}

fn log(msg: impl AsRef<str>) {
    eprintln!("[cluster] {}", msg.as_ref());
}

pub async fn run(args: ClusterArgs) -> anyhow::Result<()> {
    let machine = procfs::machine();
    let env = cluster_env(&args.state)?;
    let kubectl_path = env
        .get("KUBECTL")
        .cloned()
        .unwrap_or_else(|| "kubectl".into());
    let client = client(&args.state).await?;
    let version = client.apiserver_version().await?;
    log(format!("API server {}", version.git_version));

    log("installing the AgentPool CRD");
    kubectl(
        &kubectl_path,
        &args.state,
        &["apply", "-f", "manifests/base/crd-agentpools.yaml"],
        None,
    )?;
    kubectl(
        &kubectl_path,
        &args.state,
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/agentpools.wi-webhook.dev",
        ],
        None,
    )?;

    // The seed's namespace, ServiceAccount and pool; the skipped namespace with the same
    // ServiceAccount.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    create(&namespaces, &namespace(fixtures::NAMESPACE, &[])).await?;
    create(
        &namespaces,
        &namespace(IGNORED_NAMESPACE, &[("wi-webhook.dev/ignore", "true")]),
    )
    .await?;
    create(
        &namespaces,
        &namespace(
            CANNED_NAMESPACE,
            &[("wi-webhook.dev/ignore", "true"), (CANNED_LABEL, "true")],
        ),
    )
    .await?;
    for ns in [fixtures::NAMESPACE, IGNORED_NAMESPACE, CANNED_NAMESPACE] {
        let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
        create(
            &sas,
            &service_account(
                ns,
                fixtures::SERVICE_ACCOUNT,
                fixtures::CLIENT_ID,
                Some(fixtures::TENANT),
            ),
        )
        .await?;
    }
    let pools_api: Api<AgentPool> = Api::all(client.clone());
    let all_pools = fixtures::pools(args.pools);
    let (seed_name, seed_spec) = &all_pools[0];
    create(
        &pools_api,
        &AgentPool::new(
            seed_name,
            serde_json::from_value::<AgentPoolSpec>(seed_spec.clone())?,
        ),
    )
    .await?;

    let pki = args.state.join("bench-webhook-pki");
    let ca_pem = crate::server::certificates(&pki)?;

    // 1. Idle.
    log("starting the webhook (idle cluster)");
    let mut webhook = Webhook::start(
        &args.webhook_bin,
        &args.state,
        &pki,
        &args.state.join("bench-webhook-1.log"),
    )?;
    let ready_idle = webhook.wait_ready(Duration::from_secs(120)).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = procfs::memory(webhook.pid());
    let idle_sas = webhook.gauge("wi_webhook_serviceaccounts_cached").await?;
    log(format!(
        "idle: {} KiB resident ({idle_sas} ServiceAccounts cached)",
        idle.rss_kib
    ));

    // 2. Fill the caches.
    log(format!(
        "creating {} ServiceAccounts in {} namespaces and {} AgentPools",
        args.service_accounts, args.sa_namespaces, args.pools
    ));
    let fill_started = Instant::now();
    let per_ns = args.service_accounts.div_ceil(args.sa_namespaces.max(1));
    futures::stream::iter(0..args.sa_namespaces)
        .map(|i| {
            let api = namespaces.clone();
            async move { create(&api, &namespace(&format!("bench-sa-{i:03}"), &[])).await }
        })
        .buffer_unordered(args.concurrency)
        .try_collect::<Vec<_>>()
        .await?;
    futures::stream::iter(0..args.service_accounts)
        .map(|i| {
            let ns = format!("bench-sa-{:03}", i / per_ns);
            let api: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
            async move {
                let sa = service_account(
                    &ns,
                    &format!("agent-{i:05}"),
                    &fixtures::client_id(100_000 + i),
                    None,
                );
                create(&api, &sa).await
            }
        })
        .buffer_unordered(args.concurrency)
        .try_collect::<Vec<_>>()
        .await?;
    futures::stream::iter(all_pools.iter().skip(1))
        .map(|(name, spec)| {
            let api = pools_api.clone();
            async move {
                let spec: AgentPoolSpec = serde_json::from_value(spec.clone())?;
                create(&api, &AgentPool::new(name, spec)).await
            }
        })
        .buffer_unordered(args.concurrency)
        .try_collect::<Vec<_>>()
        .await?;
    let fill_seconds = fill_started.elapsed().as_secs_f64();
    log(format!(
        "created in {fill_seconds:.1} s; waiting for the webhook's caches"
    ));
    let want_sas = (args.service_accounts + 1) as u64;
    let want_pools = (args.pools + 1) as u64;
    let waited = Instant::now();
    let (mut sas_after, mut pools_after) = (None, None);
    let (mut cached_sas, mut cached_pools) = (0, 0);
    // Bounded: a cache that lags is a finding, reported with how far it got.
    while waited.elapsed() < Duration::from_secs(args.cache_wait_seconds) {
        cached_sas = webhook.gauge("wi_webhook_serviceaccounts_cached").await?;
        cached_pools = webhook.gauge("wi_webhook_agentpools").await?;
        if cached_sas >= want_sas && sas_after.is_none() {
            sas_after = Some(fill_seconds + waited.elapsed().as_secs_f64());
        }
        if cached_pools >= want_pools && pools_after.is_none() {
            pools_after = Some(fill_seconds + waited.elapsed().as_secs_f64());
        }
        if sas_after.is_some() && pools_after.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    log(format!(
        "caches: {cached_sas} ServiceAccounts (all after {sas_after:?} s), {cached_pools} AgentPools (all after {pools_after:?} s) from the first create"
    ));
    tokio::time::sleep(Duration::from_secs(5)).await;
    let grown = procfs::memory(webhook.pid());
    log(format!(
        "filled by the watch: {} KiB resident ({cached_sas} ServiceAccounts, {cached_pools} AgentPools)",
        grown.rss_kib
    ));

    // 3. A restart lists everything at once.
    webhook.stop();
    drop(webhook);
    log("restarting the webhook on the filled cluster");
    let mut webhook = Webhook::start(
        &args.webhook_bin,
        &args.state,
        &pki,
        &args.state.join("bench-webhook-2.log"),
    )?;
    let ready_filled = webhook.wait_ready(Duration::from_secs(300)).await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let fresh = procfs::memory(webhook.pid());
    let fresh_sas = webhook.gauge("wi_webhook_serviceaccounts_cached").await?;
    let fresh_pools = webhook.gauge("wi_webhook_agentpools").await?;
    log(format!(
        "filled at start: {} KiB resident, peak {} KiB ({fresh_sas} ServiceAccounts, {fresh_pools} AgentPools), ready in {:.1} s",
        fresh.rss_kib,
        fresh.hwm_kib,
        ready_filled.as_secs_f64()
    ));

    // 4. Under load, straight at the webhook.
    let addr = format!("127.0.0.1:{}", webhook.port).parse()?;
    let body = Bytes::from(fixtures::review(
        &fixtures::seed_pod(),
        "0c9a8d74-9cb7-44dd-b98e-09fd62def2f4",
    ));
    let sampler = Sampler::start(webhook.pid());
    let mut load_runs = Vec::new();
    let load_time = Duration::from_secs_f64(args.load_seconds);
    for (proto, n) in [(Proto::H2, 1), (Proto::H1, 16)] {
        let target = Target {
            addr,
            tls: Arc::new(load::client_config(&ca_pem, proto)?),
            path: "/mutate".into(),
            body: body.clone(),
        };
        let conns = load::open(&target, proto, n).await?;
        let answer = load::send(&conns[0], &target, proto).await?;
        anyhow::ensure!(
            String::from_utf8_lossy(&answer).contains("\"patch\""),
            "the webhook did not mutate the seed's pod: {}",
            String::from_utf8_lossy(&answer)
        );
        let (s0, t0) = (procfs::cpu_nanos(webhook.pid()), Instant::now());
        let run = match proto {
            Proto::H2 => load::open_loop(&target, proto, &conns, args.load_rate, load_time).await,
            Proto::H1 => load::closed_loop(&target, proto, &conns, 1, load_time).await,
        };
        let cpu =
            procfs::cpu_nanos(webhook.pid()).saturating_sub(s0) as f64 / 1e3 / run.ok.max(1) as f64;
        log(format!(
            "load {} {}: {:.0}/s, p50 {:.0} us, p99 {:.0} us, {cpu:.1} CPU-us/request ({:.1} s)",
            proto.label(),
            run.mode,
            run.throughput,
            run.latency.p50_us,
            run.latency.p99_us,
            t0.elapsed().as_secs_f64()
        ));
        load_runs.push(json!({"run": run, "server_cpu_us_per_request": cpu}));
    }
    let under_load_max = sampler.finish();
    let after_load = procfs::memory(webhook.pid());
    log(format!(
        "under load: at most {under_load_max} KiB resident (peak since start {} KiB)",
        after_load.hwm_kib
    ));

    let mut result = json!({
        "machine": machine,
        "apiserver": version.git_version,
        "objects": {
            "service_accounts": args.service_accounts,
            "sa_namespaces": args.sa_namespaces,
            "agent_pools": args.pools + 1,
            "created_in_seconds": fill_seconds,
            "watch_cached_service_accounts": cached_sas,
            "watch_cached_agent_pools": cached_pools,
            "all_service_accounts_cached_after_seconds": sas_after,
            "all_agent_pools_indexed_after_seconds": pools_after,
            "cached_service_accounts": fresh_sas,
            "cached_agent_pools": fresh_pools,
            "idle_cached_service_accounts": idle_sas,
        },
        "memory_kib": {
            "idle": idle.rss_kib,
            "filled_by_watch": grown.rss_kib,
            "filled_at_start": fresh.rss_kib,
            "peak_filling_at_start": fresh.hwm_kib,
            "under_load_max": under_load_max,
            "peak_since_start": after_load.hwm_kib,
        },
        "ready_seconds": {"idle": ready_idle.as_secs_f64(), "filled": ready_filled.as_secs_f64()},
        "load": load_runs,
    });
    if args.memory_only {
        webhook.stop();
        return write_result(&args.out, &result);
    }

    // 5. Pod creation through the API server, with and without the webhook.
    log("registering the webhook configurations");
    let ca_bundle = base64::engine::general_purpose::STANDARD.encode(&ca_pem);
    let config = Command::new(&args.webhook_bin)
        .args([
            "webhook-config",
            "--url",
            &format!("https://127.0.0.1:{}", webhook.port),
        ])
        .args(["--ca-bundle", &ca_bundle])
        .output()?;
    anyhow::ensure!(config.status.success(), "webhook-config failed");
    kubectl(
        &kubectl_path,
        &args.state,
        &["apply", "-f", "-"],
        Some(&config.stdout),
    )?;
    let echo = ServerProcess::start(Kind::Echo, PodKind::Seed, &pki, 0)?;
    let configurations: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    create(
        &configurations,
        &canned_configuration(&format!("https://{}/mutate", echo.addr), &ca_bundle)?,
    )
    .await?;
    let with_api: Api<Pod> = Api::namespaced(client.clone(), fixtures::NAMESPACE);
    let without_api: Api<Pod> = Api::namespaced(client.clone(), IGNORED_NAMESPACE);
    let canned_api: Api<Pod> = Api::namespaced(client.clone(), CANNED_NAMESPACE);
    let with_pod = agent_pod(fixtures::NAMESPACE)?;
    let without_pod = agent_pod(IGNORED_NAMESPACE)?;
    let canned_pod = agent_pod(CANNED_NAMESPACE)?;
    // The API server picks the configurations up within a moment.
    for (api, pod, ns) in [
        (&with_api, &with_pod, fixtures::NAMESPACE),
        (&canned_api, &canned_pod, CANNED_NAMESPACE),
    ] {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let dry = PostParams {
                dry_run: true,
                ..PostParams::default()
            };
            if api.create(&dry, pod).await.is_ok_and(|p| injected(&p)) {
                break;
            }
            if Instant::now() > deadline {
                bail!("pods in {ns} are still not mutated after 60 s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let created = without_api
        .create(&PostParams::default(), &without_pod)
        .await?;
    anyhow::ensure!(
        !injected(&created),
        "the webhook mutated a pod of the skipped namespace"
    );

    log(format!(
        "creating {} pods on each of three sides, in turn",
        args.pods
    ));
    let admissions_before = procfs::cpu_nanos(webhook.pid());
    let calls_before = webhook_calls(&client).await?;
    let log_path = args.state.join("bench-webhook-2.log");
    let log_before = std::fs::metadata(&log_path).map_or(0, |m| m.len());
    let mut with = Vec::with_capacity(args.pods);
    let mut without = Vec::with_capacity(args.pods);
    let mut canned = Vec::with_capacity(args.pods);
    let pp = PostParams::default();
    for i in 0..(args.warmup_pods + args.pods) {
        let measured = i >= args.warmup_pods;
        // Rotate which side goes first, so none always follows another.
        for side in (0..3).map(|k| (i + k) % 3) {
            let (api, pod, samples, mutated) = match side {
                0 => (&with_api, &with_pod, &mut with, true),
                1 => (&without_api, &without_pod, &mut without, false),
                _ => (&canned_api, &canned_pod, &mut canned, true),
            };
            let t0 = Instant::now();
            let created = api.create(&pp, pod).await?;
            let took = t0.elapsed().as_nanos() as u64;
            anyhow::ensure!(
                injected(&created) == mutated,
                "a pod in {} was created {} its identity",
                api.namespace().unwrap_or_default(),
                if mutated { "without" } else { "with" }
            );
            if measured {
                samples.push(took);
            }
        }
    }
    let webhook_cpu_per_create = procfs::cpu_nanos(webhook.pid()).saturating_sub(admissions_before)
        as f64
        / 1e3
        / (args.pods + args.warmup_pods) as f64;
    // Where the added time goes: the API server's own timing of its calls to the webhook
    // (TLS, HTTP/2, the decision; the mean, its histogram's buckets being too coarse for
    // percentiles), and the webhook's own latency per admission (its log).
    let calls = webhook_calls(&client).await?.since(calls_before);
    let mut own = logged_latencies(&log_path, log_before)?;
    let own = Summary::of(&mut own);
    let with = Summary::of(&mut with);
    let without = Summary::of(&mut without);
    let canned = Summary::of(&mut canned);
    let added_p50_ms = (with.p50_us - without.p50_us) / 1e3;
    let added_p99_ms = (with.p99_us - without.p99_us) / 1e3;
    log(format!(
        "pod create p50 {:.2} ms with the webhook, {:.2} ms without: +{added_p50_ms:.2} ms (p99 +{added_p99_ms:.2} ms)",
        with.p50_us / 1e3,
        without.p50_us / 1e3
    ));

    // Leave the control plane usable: no configuration pointing at a stopped webhook.
    let _ = kubectl(
        &kubectl_path,
        &args.state,
        &[
            "delete",
            "mutatingwebhookconfiguration,validatingwebhookconfiguration",
            "wi-webhook",
            CANNED_CONFIGURATION,
            "--ignore-not-found",
        ],
        None,
    );
    let final_memory = procfs::memory(webhook.pid());
    webhook.stop();

    result["memory_kib"]["after_pod_creates"] = json!(final_memory.rss_kib);
    result["pod_create"] = json!({
        "pods_each": args.pods,
        "with_webhook": with,
        "without_webhook": without,
        "with_canned_webhook": canned,
        "added_p50_ms": added_p50_ms,
        "added_p99_ms": added_p99_ms,
        "webhook_cpu_us_per_create": webhook_cpu_per_create,
        "apiserver_webhook_calls": calls.count,
        "apiserver_webhook_call_mean_us": calls.mean_us(),
        "webhook_logged_latency": own,
    });
    write_result(&args.out, &result)
}

/// The API server's histogram of its calls to the pod webhook
/// (`apiserver_admission_webhook_admission_duration_seconds`, CREATE, admit).
#[derive(Clone, Copy, Debug, Default)]
struct Calls {
    count: f64,
    sum_seconds: f64,
}

impl Calls {
    fn since(self, before: Calls) -> Calls {
        Calls {
            count: self.count - before.count,
            sum_seconds: self.sum_seconds - before.sum_seconds,
        }
    }

    fn mean_us(self) -> f64 {
        if self.count > 0.0 {
            self.sum_seconds / self.count * 1e6
        } else {
            0.0
        }
    }
}

async fn webhook_calls(client: &kube::Client) -> anyhow::Result<Calls> {
    let request = http::Request::get("/metrics").body(Vec::new())?;
    Ok(calls_in(&client.request_text(request).await?))
}

/// The pod webhook's admit calls in the API server's metrics text.
fn calls_in(text: &str) -> Calls {
    let mut calls = Calls::default();
    let metric = "apiserver_admission_webhook_admission_duration_seconds";
    for line in text.lines() {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        if !series.contains("name=\"pods.wi-webhook.dev\"") || !series.contains("type=\"admit\"") {
            continue;
        }
        let value: f64 = value.parse().unwrap_or(0.0);
        if series.starts_with(&format!("{metric}_count{{")) {
            calls.count += value;
        } else if series.starts_with(&format!("{metric}_sum{{")) {
            calls.sum_seconds += value;
        }
    }
    calls
}

/// `latency_us` of the mutated pod admissions the webhook logged after byte `from`.
fn logged_latencies(log: &Path, from: u64) -> anyhow::Result<Vec<u64>> {
    let text = std::fs::read(log).with_context(|| format!("reading {}", log.display()))?;
    let text = String::from_utf8_lossy(&text[(from as usize).min(text.len())..]).into_owned();
    Ok(text
        .lines()
        .filter(|l| l.contains("decision=\"mutated\"") || l.contains("\"decision\":\"mutated\""))
        .filter_map(|l| {
            let at = l.find("latency_us")? + "latency_us".len();
            let digits: String = l[at..]
                .chars()
                .skip_while(|c| !c.is_ascii_digit())
                .take_while(char::is_ascii_digit)
                .collect();
            // In nanoseconds, as the other samples.
            digits.parse::<u64>().ok().map(|us| us * 1000)
        })
        .collect())
}

const CANNED_CONFIGURATION: &str = "wi-bench-canned";

/// The echo server's configuration: pod CREATE in the namespaces labelled `CANNED_LABEL`.
fn canned_configuration(
    url: &str,
    ca_bundle: &str,
) -> anyhow::Result<MutatingWebhookConfiguration> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": CANNED_CONFIGURATION},
        "webhooks": [{
            "name": "canned.wi-bench.dev",
            "clientConfig": {"url": url, "caBundle": ca_bundle},
            "rules": [{
                "apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                "resources": ["pods"], "scope": "Namespaced"
            }],
            "namespaceSelector": {"matchLabels": {CANNED_LABEL: "true"}},
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 10
        }]
    }))?)
}

fn write_result(out: &Path, result: &serde_json::Value) -> anyhow::Result<()> {
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(out, serde_json::to_vec_pretty(result)?)?;
    log(format!("wrote {}", out.display()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pod_webhook_admit_calls_are_summed_from_the_metrics_text() {
        let text = r#"# HELP apiserver_admission_webhook_admission_duration_seconds x
apiserver_admission_webhook_admission_duration_seconds_bucket{name="pods.wi-webhook.dev",operation="CREATE",rejected="false",type="admit",le="0.005"} 3
apiserver_admission_webhook_admission_duration_seconds_sum{name="pods.wi-webhook.dev",operation="CREATE",rejected="false",type="admit"} 0.006
apiserver_admission_webhook_admission_duration_seconds_count{name="pods.wi-webhook.dev",operation="CREATE",rejected="false",type="admit"} 3
apiserver_admission_webhook_admission_duration_seconds_sum{name="pods.wi-webhook.dev",operation="CREATE",rejected="true",type="admit"} 0.002
apiserver_admission_webhook_admission_duration_seconds_count{name="pods.wi-webhook.dev",operation="CREATE",rejected="true",type="admit"} 1
apiserver_admission_webhook_admission_duration_seconds_sum{name="unlabelled-pods.wi-webhook.dev",operation="CREATE",rejected="false",type="validating"} 9
apiserver_admission_webhook_admission_duration_seconds_count{name="canned.wi-bench.dev",operation="CREATE",rejected="false",type="admit"} 7
"#;
        let calls = calls_in(text).since(Calls {
            count: 1.0,
            sum_seconds: 0.001,
        });
        assert_eq!(calls.count, 3.0);
        assert!(
            (calls.mean_us() - 2333.33).abs() < 0.01,
            "{}",
            calls.mean_us()
        );
        assert_eq!(Calls::default().mean_us(), 0.0);
    }

    #[test]
    fn logged_latencies_are_those_of_mutated_admissions_after_the_offset() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("webhook.log");
        let before = "INFO admission uid=a decision=\"mutated\" latency_us=999\n";
        let after = concat!(
            "INFO admission uid=b decision=\"mutated\" rule=\"\" latency_us=120\n",
            "INFO admission uid=c decision=\"allowed\" latency_us=5\n",
            "{\"fields\":{\"decision\":\"mutated\",\"latency_us\":87}}\n",
        );
        std::fs::write(&log, format!("{before}{after}")).unwrap();
        let found = logged_latencies(&log, before.len() as u64).unwrap();
        assert_eq!(found, vec![120_000, 87_000]);
    }
}
