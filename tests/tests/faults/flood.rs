//! A flood beyond capacity: with a small --max-in-flight and --max-connections, every
//! request gets either its decision or a clear 503 with Retry-After, the extra connections
//! wait in the backlog, memory stays bounded, and normal service (pods through the API
//! server included) resumes afterwards.
//!
//! The test's own client cannot outrun the webhook on two shared cores, so capacity is taken
//! for sure: two requests with half their body sent hold both slots (a slot is taken before
//! the body is read) while the flood starts, and are finished once it has been refused.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use wi_e2e::admission_client::{self, Connection};
use wi_e2e::pods;
use wi_e2e::poll;
use wi_e2e::private_cluster::PrivateCluster;

use super::*;

const MAX_IN_FLIGHT: usize = 2;
const MAX_CONNECTIONS: usize = 32;
/// Clients, each on its own keep-alive connection: three times the connection bound.
const CLIENTS: usize = 96;
const REQUESTS_PER_CLIENT: usize = 25;
/// Each review carries this much padding (an annotation), to make buffering visible.
const PADDING: usize = 64 * 1024;
const OVERLOADED: &str =
    r#"{"error":"overloaded: 2 admission requests in flight; retry","code":503}"#;

fn padded_review(uid: &str, ns: &str) -> Vec<u8> {
    let padding = "x".repeat(PADDING);
    let pod = pods::labelled_pod_json("", "agent", &[("wi-e2e/padding", &padding)]);
    admission_client::pod_review(uid, ns, &pod)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_beyond_capacity_gets_503_with_bounded_memory_then_recovers() {
    let max_in_flight = MAX_IN_FLIGHT.to_string();
    let max_connections = MAX_CONNECTIONS.to_string();
    let private = PrivateCluster::start(&[
        "--max-in-flight",
        &max_in_flight,
        "--queue-timeout-ms",
        "50",
        "--max-connections",
        &max_connections,
    ])
    .await;
    let ns = namespace_with_agent(&private, "flood").await;
    let namespace = ns.name().to_string();
    let (addr, tls) = (private.webhook_addr(), private.webhook_tls());
    let pid = private.webhook_pid();

    // Warm up (allocator, TLS, caches) before the baseline.
    all_decided(&private, "warm", 50, |uid| padded_review(uid, &namespace)).await;
    let rss_before = admission_client::rss_kib(pid).unwrap();
    let fds_before = admission_client::open_fds(pid).unwrap();

    // Both slots held; a request beyond them waits the queue timeout, then gets the 503.
    let mut holders = Vec::new();
    for h in 0..MAX_IN_FLIGHT {
        let body = padded_review(&format!("holder-{h}"), &namespace);
        let mut conn = Connection::open(&addr, tls.clone()).await.unwrap();
        conn.start("/mutate", body.len(), &body[..body.len() / 2])
            .await
            .unwrap();
        holders.push((conn, body));
    }
    poll(
        "a request beyond the held slots is refused",
        Duration::from_secs(10),
        || async {
            let mut probe = Connection::open(&addr, tls.clone()).await?;
            let answer = probe.send("/mutate", &review("probe", &namespace)).await?;
            Ok((answer.status == 503).then_some(()))
        },
    )
    .await
    .unwrap();

    let (decided, shed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let flooding = Arc::new(AtomicBool::new(true));
    let started = Instant::now();
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (addr, tls, ns) = (addr.clone(), tls.clone(), namespace.clone());
        let (decided, shed) = (decided.clone(), shed.clone());
        clients.push(tokio::spawn(async move {
            let mut conn = Connection::open(&addr, tls).await?;
            for r in 0..REQUESTS_PER_CLIENT {
                let uid = format!("flood-{c}-{r}");
                let answer = conn.send("/mutate", &padded_review(&uid, &ns)).await?;
                match answer.status {
                    200 => {
                        check(&answer, &uid, Some(CLIENT_ID)).map_err(anyhow::Error::msg)?;
                        decided.fetch_add(1, Ordering::Relaxed);
                    }
                    503 => {
                        anyhow::ensure!(
                            answer.header("retry-after") == Some("1")
                                && answer.body == OVERLOADED.as_bytes(),
                            "{uid}: 503 {:?} {}",
                            answer.headers,
                            String::from_utf8_lossy(&answer.body)
                        );
                        shed.fetch_add(1, Ordering::Relaxed);
                    }
                    other => anyhow::bail!(
                        "{uid}: HTTP {other}: {}",
                        String::from_utf8_lossy(&answer.body)
                    ),
                }
            }
            anyhow::Ok(())
        }));
    }
    // Pods through the API server during the flood: admitted mutated, or refused with the
    // webhook's 503 (fail closed); never stored unmutated.
    let creator = {
        let (client, ns, flooding) = (
            private.cluster.client.clone(),
            namespace.clone(),
            flooding.clone(),
        );
        tokio::spawn(async move {
            let api = kube::Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client, &ns);
            let (mut stored, mut refused) = (0, 0);
            for i in 0..100 {
                if !flooding.load(Ordering::Relaxed) {
                    break;
                }
                let pod = pods::labelled_pod(&format!("during-{i}"), "agent", &[]);
                match api.create(&kube::api::PostParams::default(), &pod).await {
                    Ok(pod) => {
                        pods::assert_mutated(&pod, agent_identity(CLIENT_ID), 3600);
                        stored += 1;
                    }
                    Err(kube::Error::Api(status)) => {
                        assert!(
                            status.message.contains(FAILED_CALLING),
                            "pod during-{i}: {status:?}"
                        );
                        if refused == 0 {
                            eprintln!("flood: pod during-{i} refused: {}", status.message);
                        }
                        refused += 1;
                    }
                    Err(e) => panic!("pod during-{i}: {e}"),
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            (stored, refused)
        })
    };

    // Memory and connections sampled while the flood lasts (bounded in time); the held
    // slots are given back once the flood has been refused a while (well within the
    // webhook's 10 s body timeout).
    let (mut rss_peak, mut fds_peak) = (rss_before, fds_before);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut released = false;
    while clients.iter().any(|c| !c.is_finished()) {
        assert!(
            Instant::now() < deadline,
            "the flood did not end within 120 s"
        );
        rss_peak = rss_peak.max(admission_client::rss_kib(pid).expect("the webhook runs"));
        fds_peak = fds_peak.max(admission_client::open_fds(pid).unwrap_or(0));
        if !released
            && (shed.load(Ordering::Relaxed) >= 200 || started.elapsed() > Duration::from_secs(5))
        {
            released = true;
            for (h, (conn, body)) in holders.iter_mut().enumerate() {
                let answer = conn.finish(&body[body.len() / 2..]).await.unwrap();
                check(&answer, &format!("holder-{h}"), Some(CLIENT_ID)).unwrap();
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let flood_time = started.elapsed();
    flooding.store(false, Ordering::Relaxed);
    for client in clients {
        client
            .await
            .unwrap()
            .expect("every flood request gets a 200 or a clear 503");
    }
    assert!(
        released,
        "the flood ended before the held slots were given back"
    );
    let (stored, refused) = creator.await.unwrap();
    let (decided, shed) = (
        decided.load(Ordering::Relaxed),
        shed.load(Ordering::Relaxed),
    );
    let total = (CLIENTS * REQUESTS_PER_CLIENT) as u64;

    // Recovery: sequential reviews all decided, a pod through the API server mutated.
    all_decided(&private, "after", 20, |uid| review(uid, &namespace)).await;
    let pod = create_pod(&private, &namespace, "after-flood", "agent")
        .await
        .unwrap();
    pods::assert_mutated(&pod, agent_identity(CLIENT_ID), 3600);
    assert_eq!(private.webhook().get("/readyz").await.unwrap().0, 200);
    let rss_after = admission_client::rss_kib(pid).unwrap();
    eprintln!(
        "flood: {total} requests of {} KiB in {flood_time:?}: {decided} decided, {shed} shed (503); \
         {stored} pods stored, {refused} refused during it; RSS {rss_before} KiB before, peak {rss_peak}, \
         after {rss_after}; fds {fds_before} before, peak {fds_peak}",
        PADDING / 1024
    );
    assert_eq!(decided + shed, total);
    assert!(shed > 0, "no 503: the flood did not exceed the capacity");
    // Every 503 is counted in the metric the overload alert watches (the probe's before the
    // flood too, hence at least).
    let metrics = private.webhook().metrics().await.unwrap();
    let counted: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("wi_webhook_shed_requests_total "))
        .expect("wi_webhook_shed_requests_total in /metrics")
        .trim()
        .parse()
        .unwrap();
    assert!(
        counted >= shed,
        "{counted} shed requests counted, {shed} seen"
    );
    assert!(decided > 0, "nothing decided during the flood");
    // The connection bound holds: at most MAX_CONNECTIONS client sockets at once (the rest
    // wait in the backlog), plus a few of the webhook's own (API server, listeners).
    assert!(
        fds_peak <= fds_before + MAX_CONNECTIONS + 4,
        "open files {fds_before} -> {fds_peak}: more connections than --max-connections"
    );
    // Memory: the flood sends ~150 MiB of bodies; the webhook's grows by a few MiB.
    assert!(
        rss_peak <= rss_before + 32 * 1024,
        "resident memory grew from {rss_before} to {rss_peak} KiB during the flood"
    );
    assert!(
        rss_after <= rss_before + 16 * 1024,
        "resident memory {rss_before} -> {rss_after} KiB after the flood"
    );
    assert_eq!(
        assert_stored_pods_mutated(&private, &namespace).await,
        stored + 1
    );
}

/// `count` reviews in a row on one connection, each decided with the agent's identity.
async fn all_decided(
    private: &PrivateCluster,
    prefix: &str,
    count: usize,
    body: impl Fn(&str) -> Vec<u8>,
) {
    let mut conn = Connection::open(&private.webhook_addr(), private.webhook_tls())
        .await
        .unwrap();
    for i in 0..count {
        let uid = format!("{prefix}-{i}");
        let answer = conn.send("/mutate", &body(&uid)).await.unwrap();
        check(&answer, &uid, Some(CLIENT_ID)).unwrap();
    }
}
