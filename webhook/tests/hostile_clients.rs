//! Hostile and odd clients against the real TLS server (`api::tls::serve_with`) on 127.0.0.1:
//! slow headers, thousands of idle connections, the connection bound, idle keep-alive,
//! HTTP/1.0, TLS 1.0-only and SNI-less clients. Each case asserts its outcome and that the
//! server still answers a good client afterwards (docs/reliability.md has the table).

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_rustls::TlsConnector;
use wi_webhook::admission::Admitter;
use wi_webhook::api::{self, AppState, tls};
use wi_webhook::config::MutationConfig;
use wi_webhook::policy::Policy;
use wi_webhook::serviceaccounts::{ServiceAccounts, store_of};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const NS: &str = "ado-agents-omtest1";
const SA: &str = "ado-agent-omtest1";
/// Generous bound for anything that should happen at once on a loaded 2-core machine.
const PATIENCE: Duration = Duration::from_secs(20);

struct Server {
    addr: SocketAddr,
    ca_pem: String,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn start(limits: tls::Limits) -> Server {
    let (dir, ca_pem) = common::certificates("hostile");
    let pair = wi_certs::load_pair(
        &dir.join(wi_certs::TLS_CERT_FILE),
        &dir.join(wi_certs::TLS_KEY_FILE),
    )
    .expect("pair");
    let config = tls::server_config(tls::CertSlot::new(pair.certified_key), false).unwrap();
    let sa = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(SA.into()),
            namespace: Some(NS.into()),
            annotations: Some(
                [(
                    "azure.workload.identity/client-id".to_string(),
                    "6f1a3f4e-2b7c-4f0e-9a51-3c2d1e0f9a8b".to_string(),
                )]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        ..ServiceAccount::default()
    };
    let state = AppState::new(Admitter {
        config: MutationConfig::new("00000000-0000-0000-0000-000000000001"),
        service_accounts: ServiceAccounts::from_store(store_of([sa])),
        policy: Policy::default(),
    });
    let app = api::router(state, api::DEFAULT_BODY_LIMIT);
    let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(tls::serve_with(
        listener,
        Arc::new(config),
        app,
        async move {
            let _ = stopped.await;
        },
        Duration::from_secs(5),
        limits,
    ));
    Server {
        addr,
        ca_pem,
        stop: Some(stop),
    }
}

fn client_config(
    ca_pem: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

async fn connect_as(server: &Server, name: ServerName<'static>, sni: bool) -> std::io::Result<Tls> {
    let mut config = client_config(&server.ca_pem, &[&rustls::version::TLS13]);
    config.enable_sni = sni;
    let tcp = TcpStream::connect(server.addr).await?;
    TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
}

async fn connect(server: &Server) -> std::io::Result<Tls> {
    connect_as(server, ServerName::IpAddress(LOCALHOST.into()), true).await
}

fn review() -> Vec<u8> {
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "a-", "labels": {"azure.workload.identity/use": "true"}},
        "spec": {"serviceAccountName": SA, "containers": [{"name": "a", "image": "i"}]}
    });
    serde_json::to_vec(&common::pod_review("uid-hostile", NS, pod)).unwrap()
}

/// One request over `tls` in HTTP/`version`; reads until the server closes or the answer is
/// complete. Returns the raw response text.
async fn raw_request(tls: &mut Tls, version: &str, keep_alive: bool) -> String {
    let body = review();
    let head = format!(
        "POST /mutate HTTP/{version}\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{}\r\n",
        body.len(),
        if keep_alive {
            ""
        } else {
            "Connection: close\r\n"
        }
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(&body).await.unwrap();
    tls.flush().await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        let n = tokio::time::timeout(PATIENCE, tls.read(&mut buf))
            .await
            .expect("an answer in time")
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&out);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head.lines().find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse::<usize>().unwrap())
            });
            if length.is_some_and(|l| body.len() >= l) {
                break;
            }
        }
    }
    String::from_utf8(out).expect("UTF-8 answer")
}

/// A good client is answered 200 with the identity patch.
async fn good_client_served(server: &Server) {
    let mut tls = tokio::time::timeout(PATIENCE, connect(server))
        .await
        .expect("handshake in time")
        .expect("handshake");
    let answer = raw_request(&mut tls, "1.1", false).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    let body: Value = serde_json::from_str(answer.split_once("\r\n\r\n").unwrap().1).unwrap();
    assert_eq!(body["response"]["allowed"], json!(true));
    assert!(body["response"]["patch"].is_string());
}

/// Reads until EOF or error: true if the server closed the connection within `within`.
async fn closed_within(stream: &mut (impl AsyncReadExt + Unpin), within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test]
async fn a_client_trickling_its_headers_is_closed_by_the_header_timeout() {
    let server = start(tls::Limits::default()).await;
    let mut slow = connect(&server).await.unwrap();
    let started = Instant::now();
    slow.write_all(b"POST /mutate HTTP/1.1\r\n").await.unwrap();
    // One header byte per second: never a complete header block.
    let trickle = async {
        for b in b"Host: 127.0.0.1\r\nX-Slow: yes".iter() {
            if slow.write_all(&[*b]).await.is_err() {
                break;
            }
            let _ = slow.flush().await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    };
    let ((), ()) = tokio::join!(trickle, good_client_served(&server));
    assert!(
        closed_within(&mut slow, PATIENCE).await,
        "the slow client is closed"
    );
    let took = started.elapsed();
    assert!(
        took >= tls::HANDSHAKE_TIMEOUT - Duration::from_secs(1),
        "{took:?}"
    );
    assert!(took <= tls::HANDSHAKE_TIMEOUT + PATIENCE, "{took:?}");
    good_client_served(&server).await;
}

#[tokio::test]
async fn thousands_of_idle_connections_do_not_stop_the_server_answering() {
    let server = start(tls::Limits::default()).await;
    // 2,000 TCP connections that never start TLS, and 100 that finish TLS and send nothing.
    let mut raw = Vec::new();
    for _ in 0..2000 {
        raw.push(TcpStream::connect(server.addr).await.expect("connect"));
    }
    let mut idle_tls = Vec::new();
    for _ in 0..100 {
        idle_tls.push(connect(&server).await.expect("handshake"));
    }
    let started = Instant::now();
    good_client_served(&server).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // The ones that never finish TLS are closed by the handshake timeout.
    let mut closed = 0;
    for s in raw.iter_mut().take(50) {
        if closed_within(s, tls::HANDSHAKE_TIMEOUT + PATIENCE).await {
            closed += 1;
        }
    }
    assert_eq!(closed, 50);
    // The TLS ones that never send a request: closed once the handshake timeout passes.
    let mut closed = 0;
    for s in idle_tls.iter_mut().take(10) {
        if closed_within(s, tls::HANDSHAKE_TIMEOUT + PATIENCE).await {
            closed += 1;
        }
    }
    assert_eq!(closed, 10);
    good_client_served(&server).await;
}

#[tokio::test]
async fn at_the_connection_bound_new_clients_wait_then_are_served() {
    let server = start(tls::Limits {
        max_connections: 16,
        idle_timeout: Duration::from_secs(120),
    })
    .await;
    let mut raw = Vec::new();
    for _ in 0..16 {
        raw.push(TcpStream::connect(server.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The 17th client is in the backlog: its handshake cannot finish while the slots are held.
    let started = Instant::now();
    let waiting = tokio::time::timeout(Duration::from_secs(3), connect(&server)).await;
    assert!(waiting.is_err(), "the bound holds");
    // The idle ones time out; then the server accepts again.
    good_client_served(&server).await;
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(3), "{took:?}");
    drop(raw);
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed_after_the_idle_timeout() {
    let server = start(tls::Limits {
        max_connections: 64,
        idle_timeout: Duration::from_secs(1),
    })
    .await;
    let mut tls = connect(&server).await.unwrap();
    let answer = raw_request(&mut tls, "1.1", true).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    let started = Instant::now();
    assert!(closed_within(&mut tls, Duration::from_secs(10)).await);
    assert!(started.elapsed() >= Duration::from_millis(900));
    good_client_served(&server).await;
}

#[tokio::test]
async fn http_1_0_is_answered_and_closed() {
    let server = start(tls::Limits::default()).await;
    let mut tls = connect(&server).await.unwrap();
    let answer = raw_request(&mut tls, "1.0", true).await;
    assert!(answer.starts_with("HTTP/1.0 200 OK\r\n"), "{answer}");
    assert!(closed_within(&mut tls, Duration::from_secs(5)).await);
    good_client_served(&server).await;
}

#[tokio::test]
async fn a_client_without_sni_is_served() {
    let server = start(tls::Limits::default()).await;
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = connect_as(&server, name, false)
        .await
        .expect("handshake without SNI");
    let answer = raw_request(&mut tls, "1.1", false).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
}

/// A hand-made ClientHello offering TLS 1.0 only (rustls cannot send one): the server
/// answers with a fatal alert and closes.
#[tokio::test]
async fn a_tls_1_0_only_client_gets_a_fatal_alert() {
    let server = start(tls::Limits::default()).await;
    let mut hello = vec![0x03, 0x01]; // client_version TLS 1.0
    hello.extend_from_slice(&[0x42; 32]); // random
    hello.push(0); // no session id
    hello.extend_from_slice(&[0x00, 0x04, 0x00, 0x2f, 0x00, 0x35]); // AES-CBC-SHA suites
    hello.extend_from_slice(&[0x01, 0x00]); // null compression
    let mut handshake = vec![0x01, 0x00, 0x00, hello.len() as u8];
    handshake.extend_from_slice(&hello);
    let mut record = vec![0x16, 0x03, 0x01, 0x00, handshake.len() as u8];
    record.extend_from_slice(&handshake);
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(&record).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut answer)).await;
    assert_eq!(answer.first(), Some(&0x15), "an alert record: {answer:?}");
    assert_eq!(answer.get(5), Some(&0x02), "fatal: {answer:?}");
    // rustls: handshake_failure (40), no version in common; protocol_version (70) is fine too.
    assert!(
        matches!(answer.get(6), Some(&40) | Some(&70)),
        "handshake_failure or protocol_version: {answer:?}"
    );
    good_client_served(&server).await;
}
