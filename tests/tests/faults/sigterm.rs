//! SIGTERM under load: the webhook stops accepting, answers every request it has (one held
//! in flight on purpose for each protocol), exits 0 within the grace period, and no pod is
//! stored unmutated meanwhile.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use wi_e2e::admission_client::Connection;
use wi_e2e::h2_client::H2Connection;
use wi_e2e::private_cluster::PrivateCluster;

use super::*;

/// terminationGracePeriodSeconds of the manifests.
const GRACE: Duration = Duration::from_secs(40);
const HTTP1_CLIENTS: usize = 3;
const H2_STREAMS: usize = 4;

/// A stream the server never saw: failed by a GOAWAY without error, which (RFC 9113, 6.8)
/// fails only the streams above the last one the server will process. The client may retry
/// it elsewhere, as the API server's client does.
fn refused_by_goaway(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<h2::Error>())
        .any(|h2| h2.is_go_away() && h2.is_remote() && h2.reason() == Some(h2::Reason::NO_ERROR))
}

/// What became of one request.
#[derive(Debug)]
struct Outcome {
    client: String,
    /// Sent before the signal.
    before: bool,
    /// `Err`: a wrong answer, or none (the connection cut under it).
    result: Result<(), String>,
}

#[derive(Default)]
struct Log {
    outcomes: Mutex<Vec<Outcome>>,
    /// Connections refused after the signal: the listener is closed, as it must be.
    refused: Mutex<usize>,
}

impl Log {
    fn record(&self, client: &str, before: bool, result: Result<(), String>) {
        self.outcomes.lock().unwrap().push(Outcome {
            client: client.to_string(),
            before,
            result,
        });
    }

    fn answered(&self) -> usize {
        self.outcomes
            .lock()
            .unwrap()
            .iter()
            .filter(|o| o.result.is_ok())
            .count()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_drains_every_request_and_exits_zero() {
    let mut private = PrivateCluster::start(&[]).await;
    let ns = namespace_with_agent(&private, "sigterm").await;
    let namespace = ns.name().to_string();
    let (addr, tls) = (private.webhook_addr(), private.webhook_tls());
    let signalled: Arc<OnceLock<Instant>> = Arc::default();
    let log: Arc<Log> = Arc::default();
    let before = {
        let signalled = signalled.clone();
        move || signalled.get().is_none()
    };

    // HTTP/1.1 keep-alive clients, as the API server's: one request at a time, a new
    // connection after an answer that closes it; they end when connecting is refused after
    // the signal.
    let mut clients = Vec::new();
    for c in 0..HTTP1_CLIENTS {
        let (addr, tls, log, ns, before) = (
            addr.clone(),
            tls.clone(),
            log.clone(),
            namespace.clone(),
            before.clone(),
        );
        clients.push(tokio::spawn(async move {
            let client = format!("http1-{c}");
            for n in 0.. {
                let mut conn = match Connection::open(&addr, tls.clone()).await {
                    Ok(conn) => conn,
                    Err(_) if !before() => {
                        *log.refused.lock().unwrap() += 1;
                        return;
                    }
                    Err(e) => panic!("{client}: connecting before the signal: {e:#}"),
                };
                for r in 0.. {
                    let uid = format!("{client}-{n}-{r}");
                    let sent_before = before();
                    let answer = tokio::time::timeout(
                        Duration::from_secs(30),
                        conn.send("/mutate", &review(&uid, &ns)),
                    )
                    .await
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within 30 s")));
                    match answer {
                        Ok(answer) => {
                            log.record(&client, sent_before, check(&answer, &uid, Some(CLIENT_ID)));
                            if answer.closes() {
                                break;
                            }
                        }
                        Err(e) => {
                            log.record(
                                &client,
                                sent_before,
                                Err(format!("{uid}: no answer: {e:#}")),
                            );
                            break;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        }));
    }
    // HTTP/2: concurrent streams on one connection, until it takes no more (GOAWAY).
    let h2 = H2Connection::open(&addr, tls.clone()).await.unwrap();
    for s in 0..H2_STREAMS {
        let (h2, log, ns, before) = (h2.clone(), log.clone(), namespace.clone(), before.clone());
        clients.push(tokio::spawn(async move {
            let client = format!("h2-{s}");
            for r in 0.. {
                if h2.is_closed() {
                    return;
                }
                let uid = format!("{client}-{r}");
                let sent_before = before();
                match h2.post("/mutate", &review(&uid, &ns)).await {
                    Ok(answer) => {
                        log.record(&client, sent_before, check(&answer, &uid, Some(CLIENT_ID)))
                    }
                    // After GOAWAY a new stream is refused before the server sees it: the
                    // connection says so, or (when the error wins the race with that) the
                    // stream's own error is the GOAWAY's.
                    Err(e) if !sent_before && (h2.is_closed() || refused_by_goaway(&e)) => {
                        eprintln!("{client}: {uid} not sent after GOAWAY: {e:#}");
                        return;
                    }
                    Err(e) => log.record(
                        &client,
                        sent_before,
                        Err(format!("{uid}: no answer: {e:#}")),
                    ),
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }));
    }
    // Pods through the API server, before and during the shutdown.
    let creator = {
        let (client, ns, before) = (
            private.cluster.client.clone(),
            namespace.clone(),
            before.clone(),
        );
        let signalled = signalled.clone();
        tokio::spawn(async move {
            let api = kube::Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client, &ns);
            let (mut stored, mut refused) = (0, 0);
            for i in 0.. {
                if signalled
                    .get()
                    .is_some_and(|t| t.elapsed() > Duration::from_secs(5))
                {
                    break;
                }
                let pod = pods::labelled_pod(&format!("load-{i}"), "agent", &[]);
                match api.create(&kube::api::PostParams::default(), &pod).await {
                    Ok(pod) => {
                        pods::assert_mutated(&pod, agent_identity(CLIENT_ID), 3600);
                        stored += 1;
                    }
                    // Refused once the webhook stops accepting (fail closed).
                    Err(kube::Error::Api(status)) if !before() => {
                        assert!(
                            status.message.contains(FAILED_CALLING),
                            "pod load-{i}: {status:?}"
                        );
                        refused += 1;
                    }
                    Err(e) => panic!("pod load-{i}: {e}"),
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            (stored, refused)
        })
    };

    // Load runs; then one request per protocol held in flight: half its body sent.
    poll("load is answered", Duration::from_secs(30), || async {
        Ok((log.answered() >= 100).then_some(()))
    })
    .await
    .unwrap();
    let slow = review("slow-http1", &namespace);
    let (first, rest) = slow.split_at(slow.len() / 2);
    let mut slow_http1 = Connection::open(&addr, tls.clone()).await.unwrap();
    slow_http1
        .start("/mutate", slow.len(), first)
        .await
        .unwrap();
    let slow_h2_body = review("slow-h2", &namespace);
    let (h2_first, h2_rest) = slow_h2_body.split_at(slow_h2_body.len() / 2);
    let slow_h2_conn = H2Connection::open(&addr, tls.clone()).await.unwrap();
    let (slow_h2_tx, slow_h2_answer) = slow_h2_conn.start("/mutate", slow_h2_body.len());
    let slow_h2_answer = tokio::spawn(slow_h2_answer);
    slow_h2_tx.send(h2_first.to_vec().into()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    signalled.set(Instant::now()).unwrap();
    private.signal_webhook("TERM");
    let signal = *signalled.get().unwrap();

    // It stops accepting: a new connection is refused (the requests in flight hold on).
    poll(
        "new connections refused",
        Duration::from_secs(5),
        || async {
            Ok(tokio::net::TcpStream::connect(&addr)
                .await
                .is_err()
                .then_some(()))
        },
    )
    .await
    .unwrap();
    let refused_after = signal.elapsed();
    // The held requests are finished and answered.
    let answer = slow_http1
        .finish(rest)
        .await
        .expect("the held HTTP/1.1 request answered");
    check(&answer, "slow-http1", Some(CLIENT_ID)).unwrap();
    assert!(
        answer.closes(),
        "the last answer of a draining connection closes it: {:?}",
        answer.headers
    );
    slow_h2_tx.send(h2_rest.to_vec().into()).await.unwrap();
    drop(slow_h2_tx);
    let answer = slow_h2_answer
        .await
        .unwrap()
        .expect("the held HTTP/2 request answered");
    check(&answer, "slow-h2", Some(CLIENT_ID)).unwrap();

    let status = private
        .wait_webhook(GRACE.saturating_sub(signal.elapsed()))
        .await
        .unwrap();
    let exited_after = signal.elapsed();
    assert!(status.success(), "the webhook exited with {status}");
    let webhook_log = private.webhook_log();
    assert!(
        webhook_log.contains("shutdown requested") && webhook_log.contains("stopped"),
        "{webhook_log}"
    );

    for client in clients {
        tokio::time::timeout(Duration::from_secs(30), client)
            .await
            .expect("the load clients end")
            .expect("a load client does not panic");
    }
    let (stored, refused_pods) = creator.await.expect("the pod creator does not panic");
    let outcomes = std::mem::take(&mut *log.outcomes.lock().unwrap());
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| o.result.is_err()).collect();
    let sent_before = outcomes.iter().filter(|o| o.before).count();
    let http1 = outcomes
        .iter()
        .filter(|o| o.client.starts_with("http1"))
        .count();
    eprintln!(
        "sigterm: {} requests ({http1} HTTP/1.1, {sent_before} before the signal), {} failed; refused {:?} after the signal, \
         exited 0 {:?} after it; {} reconnections refused; pods: {stored} stored, {refused_pods} refused",
        outcomes.len(),
        failed.len(),
        refused_after,
        exited_after,
        *log.refused.lock().unwrap(),
    );
    assert!(
        failed.is_empty(),
        "requests without a complete, correct answer: {failed:#?}"
    );
    assert!(sent_before >= 100, "too little load: {sent_before}");
    assert!(stored > 0, "no pod created before the signal");
    // Nothing stored unmutated, nothing but what the creator saw.
    assert_eq!(
        assert_stored_pods_mutated(&private, &namespace).await,
        stored
    );
}
