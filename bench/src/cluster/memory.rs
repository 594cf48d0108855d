//! The memory figures: the webhook idle, with its caches filled by the watch, after a
//! restart that lists everything at once, and under load straight at it.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::Api;
use serde_json::Value;
use wi_webhook::policy::crd::{AgentPool, AgentPoolSpec};

use super::control_plane::{ControlPlane, create, namespace, service_account};
use super::webhook::{Sampler, Webhook};
use super::{CANNED_LABEL, CANNED_NAMESPACE, ClusterArgs, IGNORED_NAMESPACE, log};
use crate::load::{self, Proto, Target};
use crate::results::{LoadRun, MemoryKib, Objects, ReadySeconds};
use crate::{fixtures, procfs};

/// The AgentPools of the measurement, the seed's first: `(name, spec)`.
pub type Pools = Vec<(String, Value)>;

/// Installs the AgentPool CRD and creates the seed's namespace, ServiceAccount and pool, and
/// the namespaces the webhook skips (with the same ServiceAccount).
pub async fn prepare(cp: &ControlPlane, args: &ClusterArgs) -> anyhow::Result<Pools> {
    log("installing the AgentPool CRD");
    cp.kubectl(&["apply", "-f", "manifests/base/crd-agentpools.yaml"], None)?;
    cp.kubectl(
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/agentpools.wi-webhook.dev",
        ],
        None,
    )?;
    let namespaces: Api<Namespace> = Api::all(cp.client.clone());
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
        let sas: Api<ServiceAccount> = Api::namespaced(cp.client.clone(), ns);
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
    let all_pools = fixtures::pools(args.pools);
    let (seed_name, seed_spec) = &all_pools[0];
    create(
        &Api::<AgentPool>::all(cp.client.clone()),
        &AgentPool::new(
            seed_name,
            serde_json::from_value::<AgentPoolSpec>(seed_spec.clone())?,
        ),
    )
    .await?;
    Ok(all_pools)
}

/// What the memory steps found; the webhook they leave running has full caches.
pub struct Measured {
    pub objects: Objects,
    pub memory_kib: MemoryKib,
    pub ready_seconds: ReadySeconds,
    pub load: Vec<LoadRun>,
}

/// The four memory steps in turn: idle, filled by the watch, filled at start, under load.
pub async fn measure(
    cp: &ControlPlane,
    args: &ClusterArgs,
    pools: &Pools,
    pki: &Path,
    ca_pem: &str,
) -> anyhow::Result<(Webhook, Measured)> {
    // 1. Idle.
    log("starting the webhook (idle cluster)");
    let log_1 = args.state.join("bench-webhook-1.log");
    let mut webhook = Webhook::start(&args.webhook_bin, &args.state, pki, &log_1)?;
    let ready_idle = webhook.wait_ready(Duration::from_secs(120)).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = procfs::memory(webhook.pid());
    let idle_sas = webhook.gauge("wi_webhook_serviceaccounts_cached").await?;
    log(format!(
        "idle: {} KiB resident ({idle_sas} ServiceAccounts cached)",
        idle.rss_kib
    ));

    // 2. Fill the caches.
    let fill_seconds = create_objects(cp, args, pools).await?;
    let watched = wait_for_caches(&webhook, args, fill_seconds).await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let grown = procfs::memory(webhook.pid());
    log(format!(
        "filled by the watch: {} KiB resident ({} ServiceAccounts, {} AgentPools)",
        grown.rss_kib, watched.service_accounts, watched.agent_pools
    ));

    // 3. A restart lists everything at once.
    webhook.stop();
    drop(webhook);
    log("restarting the webhook on the filled cluster");
    let log_2 = args.state.join("bench-webhook-2.log");
    let mut webhook = Webhook::start(&args.webhook_bin, &args.state, pki, &log_2)?;
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
    let (load, under_load_max) = under_load(&webhook, args, ca_pem).await?;
    let after_load = procfs::memory(webhook.pid());
    log(format!(
        "under load: at most {under_load_max} KiB resident (peak since start {} KiB)",
        after_load.hwm_kib
    ));

    let measured = Measured {
        objects: Objects {
            service_accounts: args.service_accounts,
            sa_namespaces: args.sa_namespaces,
            agent_pools: args.pools + 1,
            created_in_seconds: fill_seconds,
            watch_cached_service_accounts: watched.service_accounts,
            watch_cached_agent_pools: watched.agent_pools,
            all_service_accounts_cached_after_seconds: watched.all_service_accounts_after,
            all_agent_pools_indexed_after_seconds: watched.all_agent_pools_after,
            cached_service_accounts: fresh_sas,
            cached_agent_pools: fresh_pools,
            idle_cached_service_accounts: idle_sas,
        },
        memory_kib: MemoryKib {
            idle: idle.rss_kib,
            filled_by_watch: grown.rss_kib,
            filled_at_start: fresh.rss_kib,
            peak_filling_at_start: fresh.hwm_kib,
            under_load_max,
            peak_since_start: after_load.hwm_kib,
            after_pod_creates: None,
        },
        ready_seconds: ReadySeconds {
            idle: ready_idle.as_secs_f64(),
            filled: ready_filled.as_secs_f64(),
        },
        load,
    };
    Ok((webhook, measured))
}

/// Creates the ServiceAccounts (spread over their namespaces) and the AgentPools besides the
/// seed's, `args.concurrency` at a time; how long it took, in seconds.
async fn create_objects(
    cp: &ControlPlane,
    args: &ClusterArgs,
    pools: &Pools,
) -> anyhow::Result<f64> {
    log(format!(
        "creating {} ServiceAccounts in {} namespaces and {} AgentPools",
        args.service_accounts, args.sa_namespaces, args.pools
    ));
    let client = &cp.client;
    let namespaces: Api<Namespace> = Api::all(client.clone());
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
    let pools_api: Api<AgentPool> = Api::all(client.clone());
    futures::stream::iter(pools.iter().skip(1))
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
    Ok(fill_seconds)
}

/// What the running webhook's caches held at the end of the wait, and when they held every
/// object (seconds from the first create).
struct Watched {
    service_accounts: u64,
    agent_pools: u64,
    all_service_accounts_after: Option<f64>,
    all_agent_pools_after: Option<f64>,
}

async fn wait_for_caches(
    webhook: &Webhook,
    args: &ClusterArgs,
    fill_seconds: f64,
) -> anyhow::Result<Watched> {
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
    Ok(Watched {
        service_accounts: cached_sas,
        agent_pools: cached_pools,
        all_service_accounts_after: sas_after,
        all_agent_pools_after: pools_after,
    })
}

/// An open loop over HTTP/2, then a closed loop over 16 HTTP/1.1 connections, straight at
/// the webhook; the runs and the largest resident memory sampled meanwhile.
async fn under_load(
    webhook: &Webhook,
    args: &ClusterArgs,
    ca_pem: &str,
) -> anyhow::Result<(Vec<LoadRun>, u64)> {
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
            tls: Arc::new(load::client_config(ca_pem, proto)?),
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
        load_runs.push(LoadRun {
            run,
            server_cpu_us_per_request: cpu,
        });
    }
    Ok((load_runs, sampler.finish()))
}
