//! The soak (docs/reliability.md): not part of tests/test.sh. Run it with `tests/soak.sh`,
//! which starts its own control plane and runs this test with `--ignored`.
//!
//! For `WI_SOAK_SECONDS` (default 600) at `WI_SOAK_RATE` admissions per second (default 100)
//! over 4 keep-alive TLS connections, straight to the webhook's `/mutate`; and one pod
//! created through the API server every 2 s (the real admission path, checked for the
//! injected identity). Every answer must be a 200 with a patch; the webhook's resident memory
//! is sampled every 30 s and must stay flat.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{Api, DeleteParams, PostParams};
use tokio::sync::Mutex;
use wi_e2e::admission_client::{self, Connection};
use wi_e2e::pods;

const CLIENT_ID: &str = "7d3c8e51-0a4b-4c1e-9f2d-5b6a7c8d9e0f";
const CONNECTIONS: usize = 4;

fn env_u64(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "10-minute soak: run tests/soak.sh"]
async fn soak() {
    let seconds = env_u64("WI_SOAK_SECONDS", 600);
    let rate = env_u64("WI_SOAK_RATE", 100).max(1);
    let cluster = wi_e2e::cluster().await;
    let webhook = cluster.webhook();
    let dir = wi_e2e::state_dir();
    let pid: u32 = std::fs::read_to_string(dir.join("wi-webhook.pid"))
        .expect("the webhook's pid file")
        .trim()
        .parse()
        .expect("a pid");
    let tls = admission_client::client_config(&dir.join("pki/webhook/ca.crt")).expect("the CA");
    let addr = webhook
        .mutate_url
        .trim_start_matches("https://")
        .trim_end_matches("/mutate")
        .to_string();

    let ns = cluster.namespace("soak").await;
    let namespace = ns.name().to_string();
    Api::<ServiceAccount>::namespaced(cluster.client.clone(), &namespace)
        .create(
            &PostParams::default(),
            &pods::service_account("agent", CLIENT_ID, None),
        )
        .await
        .expect("ServiceAccount created");
    // The webhook's cache sees the ServiceAccount (else the first answers would miss it).
    tokio::time::sleep(Duration::from_secs(2)).await;

    let sent = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::<u32>::new()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    let period = Duration::from_secs_f64(CONNECTIONS as f64 / rate as f64);
    let mut workers = Vec::new();
    for w in 0..CONNECTIONS {
        let (tls, addr, namespace) = (tls.clone(), addr.clone(), namespace.clone());
        let (sent, failed, latencies) = (sent.clone(), failed.clone(), latencies.clone());
        workers.push(tokio::spawn(async move {
            let pod = pods::labelled_pod_json("", "agent", &[]);
            let mut conn = None;
            let mut next = tokio::time::Instant::now() + period.mul_f64(w as f64 / 4.0);
            let mut n = 0u64;
            while next < deadline {
                next = admission_client::pace(next, period).await;
                n += 1;
                let uid = format!("soak-{w}-{n}");
                let body = admission_client::pod_review(&uid, &namespace, &pod);
                sent.fetch_add(1, Ordering::Relaxed);
                let started = Instant::now();
                let result = async {
                    if conn.is_none() {
                        conn = Some(Connection::open(&addr, tls.clone()).await?);
                    }
                    conn.as_mut().unwrap().post("/mutate", &body).await
                };
                let outcome = tokio::time::timeout(Duration::from_secs(10), result).await;
                let verdict = match outcome {
                    Ok(Ok((status, body))) => admission_client::check_mutated(status, &body, &uid),
                    Ok(Err(e)) => Err(format!("{e:#}")),
                    Err(_) => Err("no answer within 10 s".into()),
                };
                if let Err(e) = verdict {
                    conn = None;
                    if failed.fetch_add(1, Ordering::Relaxed) < 10 {
                        eprintln!("soak: request {uid} failed: {e}");
                    }
                } else {
                    latencies
                        .lock()
                        .await
                        .push(started.elapsed().as_micros() as u32);
                }
            }
        }));
    }

    // The API server path, and the memory samples.
    let api: Api<Pod> = Api::namespaced(cluster.client.clone(), &namespace);
    let (mut created, mut create_failed) = (0u64, 0u64);
    let mut samples: Vec<(u64, u64, usize)> = Vec::new();
    let started = Instant::now();
    let mut next_sample = Duration::ZERO;
    let mut i = 0u64;
    while tokio::time::Instant::now() < deadline {
        if started.elapsed() >= next_sample {
            let rss = admission_client::rss_kib(pid).expect("the webhook is running");
            let fds = admission_client::open_fds(pid).unwrap_or(0);
            eprintln!(
                "soak: t={:>4}s sent={} failed={} pods={} rss={} KiB fds={}",
                started.elapsed().as_secs(),
                sent.load(Ordering::Relaxed),
                failed.load(Ordering::Relaxed),
                created,
                rss,
                fds
            );
            samples.push((started.elapsed().as_secs(), rss, fds));
            next_sample += Duration::from_secs(30);
        }
        i += 1;
        let name = format!("soak-{i}");
        let pod = pods::labelled_pod(&name, "agent", &[]);
        match api.create(&PostParams::default(), &pod).await {
            Ok(stored) => {
                let spec = pods::spec(&stored);
                let agent = pods::container(spec, "agent");
                if pods::env_value(agent, "AZURE_CLIENT_ID") == Some(CLIENT_ID) {
                    created += 1;
                } else {
                    create_failed += 1;
                    eprintln!("soak: pod {name} stored without its identity");
                }
                // Keep the store small: the pod is never scheduled anyway.
                let _ = api.delete(&name, &DeleteParams::default()).await;
            }
            Err(e) => {
                create_failed += 1;
                eprintln!("soak: pod {name} refused: {e}");
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    for w in workers {
        w.await.expect("a worker does not panic");
    }
    let rss_end = admission_client::rss_kib(pid).expect("the webhook is still running");
    samples.push((
        started.elapsed().as_secs(),
        rss_end,
        admission_client::open_fds(pid).unwrap_or(0),
    ));

    let mut lat = latencies.lock().await.clone();
    lat.sort_unstable();
    let q = |p: f64| lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)));
    let sent = sent.load(Ordering::Relaxed);
    let failed = failed.load(Ordering::Relaxed);
    // After the first minute (caches, allocator warm-up) the resident memory must not grow.
    let warm: Vec<u64> = samples.iter().filter(|s| s.0 >= 60).map(|s| s.1).collect();
    let (lo, hi) = (
        warm.iter().min().copied().unwrap_or(0),
        warm.iter().max().copied().unwrap_or(0),
    );
    println!(
        "SOAK RESULT: {seconds} s at {rate}/s: {sent} admissions, {failed} failed, \
         p50 {:?} us, p99 {:?} us, max {:?} us; {created} pods through the API server, \
         {create_failed} failed; RSS KiB first {} / after 60 s min {lo} max {hi} / end {rss_end}; \
         fds first {} end {}",
        q(0.5),
        q(0.99),
        lat.last(),
        samples.first().map_or(0, |s| s.1),
        samples.first().map_or(0, |s| s.2),
        samples.last().map_or(0, |s| s.2),
    );
    ns.delete().await.expect("namespace deleted");
    assert_eq!(failed, 0, "failed admissions");
    assert_eq!(create_failed, 0, "failed pod creations");
    assert!(
        sent >= seconds * rate * 9 / 10,
        "the rate was not held: {sent}"
    );
    // Flat: the spread after warm-up stays under 10 % + 8 MiB.
    assert!(
        hi <= lo + lo / 10 + 8 * 1024,
        "memory grew: {lo} -> {hi} KiB"
    );
}
