//! The admission router served over real TLS on 127.0.0.1 (`api::tls::serve`), talked to by
//! a rustls client that trusts only the test CA: HTTP/1.1 and HTTP/2 (ALPN), the minimum TLS
//! version, and graceful shutdown with a request in flight.

mod common;

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use base64::Engine;
use futures::channel::mpsc;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ProtocolVersion, RootCertStore};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use wi_webhook::admission::Admitter;
use wi_webhook::api::{self, AppState, tls};
use wi_webhook::config::MutationConfig;
use wi_webhook::policy::Policy;
use wi_webhook::serviceaccounts::{ServiceAccounts, store_of};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const NS: &str = "ado-agents-omtest1";
const SA: &str = "ado-agent-omtest1";
const CLIENT_ID: &str = "6f1a3f4e-2b7c-4f0e-9a51-3c2d1e0f9a8b";
/// Generous bound for anything that should happen at once on a loaded 2-core machine.
const PATIENCE: Duration = Duration::from_secs(20);

/// A CA and a serving certificate for 127.0.0.1, written where `load_pair` reads them.
struct Pki {
    ca_pem: String,
    dir: PathBuf,
}

fn pki() -> Pki {
    let (dir, ca_pem) = common::certificates("tls");
    Pki { ca_pem, dir }
}

struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Server {
    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn start(pki: &Pki, allow_tls12: bool, drain: Duration) -> Server {
    let pair = wi_certs::load_pair(
        &pki.dir.join(wi_certs::TLS_CERT_FILE),
        &pki.dir.join(wi_certs::TLS_KEY_FILE),
    )
    .expect("the serving pair loads");
    let config = tls::server_config(tls::CertSlot::new(pair.certified_key), allow_tls12)
        .expect("a server config");
    let sa = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(SA.into()),
            namespace: Some(NS.into()),
            annotations: Some(
                [(
                    "azure.workload.identity/client-id".to_string(),
                    CLIENT_ID.to_string(),
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
    let listener = TcpListener::bind((LOCALHOST, 0))
        .await
        .expect("a port on 127.0.0.1");
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(tls::serve(
        listener,
        Arc::new(config),
        app,
        async move {
            let _ = stopped.await;
        },
        drain,
    ));
    Server {
        addr,
        stop: Some(stop),
        task,
    }
}

fn client_config(
    pki: &Pki,
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> ClientConfig {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pki.ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("CA accepted");
    }
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(versions)
            .expect("versions supported")
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

async fn connect(addr: SocketAddr, config: ClientConfig) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::IpAddress(LOCALHOST.into()), tcp)
        .await
}

fn agent_pod() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "ado-agent-omtest1-7b8d79dd65-",
            "labels": {"azure.workload.identity/use": "true"},
            "annotations": {"azure.workload.identity/inject-proxy-sidecar": "true"}
        },
        "spec": {
            "serviceAccountName": SA,
            "containers": [{"name": "ado-agent-omtest1", "image": "example.azurecr.io/ado-agent:latest"}]
        }
    })
}

fn review_body(uid: &str) -> Vec<u8> {
    serde_json::to_vec(&common::pod_review(uid, NS, agent_pod())).unwrap()
}

/// Checks an answer: 200, the uid echoed, and a base64 patch that gives the agent its identity.
fn check_answer(status: StatusCode, body: &[u8], uid: &str) {
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(body));
    let review: Value = serde_json::from_slice(body).expect("JSON answer");
    let response = &review["response"];
    assert_eq!(response["uid"], uid);
    assert_eq!(response["allowed"], json!(true));
    assert_eq!(response["patchType"], "JSONPatch");
    let patch = base64::engine::general_purpose::STANDARD
        .decode(response["patch"].as_str().expect("base64 patch"))
        .expect("base64");
    let patch: json_patch::Patch = serde_json::from_slice(&patch).expect("a JSON Patch");
    let mut pod = agent_pod();
    json_patch::patch(&mut pod, &patch.0).expect("the patch applies");
    assert_eq!(pod["spec"]["initContainers"][0]["name"], "azwi-proxy-init");
    let env = &pod["spec"]["containers"][0]["env"];
    assert_eq!(
        env[0],
        json!({"name": "AZURE_CLIENT_ID", "value": CLIENT_ID})
    );
}

async fn post_http1(tls: TlsStream<TcpStream>, uid: &str) -> (StatusCode, Bytes) {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("HTTP/1.1 handshake");
    tokio::spawn(conn);
    let req = Request::post("/mutate")
        .header(header::HOST, "127.0.0.1")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(review_body(uid))))
        .unwrap();
    let resp = sender.send_request(req).await.expect("an HTTP/1.1 answer");
    assert_eq!(resp.version(), http::Version::HTTP_11);
    let status = resp.status();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}

async fn post_http2(tls: TlsStream<TcpStream>, addr: SocketAddr, uid: &str) -> (StatusCode, Bytes) {
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .expect("HTTP/2 handshake");
    tokio::spawn(conn);
    let req = Request::post(format!("https://{addr}/mutate"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(review_body(uid))))
        .unwrap();
    let resp = sender.send_request(req).await.expect("an HTTP/2 answer");
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let status = resp.status();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}

async fn stop(mut server: Server) {
    server.shutdown();
    tokio::time::timeout(PATIENCE, server.task)
        .await
        .expect("serve returns after shutdown")
        .expect("serve does not panic");
}

#[tokio::test]
async fn admission_review_over_http1_and_http2() {
    let pki = pki();
    let server = start(&pki, false, PATIENCE).await;
    let tls13 = [&rustls::version::TLS13];

    let tls = connect(server.addr, client_config(&pki, &tls13, &[b"http/1.1"]))
        .await
        .expect("TLS handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(ProtocolVersion::TLSv1_3)
    );
    let (status, body) = post_http1(tls, "uid-h1").await;
    check_answer(status, &body, "uid-h1");

    let tls = connect(
        server.addr,
        client_config(&pki, &tls13, &[b"h2", b"http/1.1"]),
    )
    .await
    .expect("TLS handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (status, body) = post_http2(tls, server.addr, "uid-h2").await;
    check_answer(status, &body, "uid-h2");

    stop(server).await;
}

#[tokio::test]
async fn a_client_trusting_another_ca_is_refused() {
    let pki = pki();
    let other = self::pki();
    let server = start(&pki, false, PATIENCE).await;
    let err = connect(
        server.addr,
        client_config(&other, &[&rustls::version::TLS13], &[b"http/1.1"]),
    )
    .await
    .expect_err("the server's certificate is not signed by the client's CA");
    assert!(
        err.to_string().contains("certificate"),
        "unexpected error: {err}"
    );
    stop(server).await;
}

#[tokio::test]
async fn tls12_only_client_is_refused_by_default_and_accepted_when_allowed() {
    let pki = pki();
    let tls12 = [&rustls::version::TLS12];

    let strict = start(&pki, false, PATIENCE).await;
    let refused = connect(strict.addr, client_config(&pki, &tls12, &[b"http/1.1"])).await;
    assert!(
        refused.is_err(),
        "a TLS 1.3-only server must refuse a TLS 1.2 client"
    );
    // The refusal does not disturb the server: a TLS 1.3 client still gets answers.
    let tls = connect(
        strict.addr,
        client_config(&pki, &[&rustls::version::TLS13], &[b"http/1.1"]),
    )
    .await
    .expect("TLS 1.3 handshake");
    let (status, body) = post_http1(tls, "uid-after-refusal").await;
    check_answer(status, &body, "uid-after-refusal");
    stop(strict).await;

    let lenient = start(&pki, true, PATIENCE).await;
    let tls = connect(lenient.addr, client_config(&pki, &tls12, &[b"h2"]))
        .await
        .expect("a TLS 1.2 handshake when 1.2 is allowed");
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(ProtocolVersion::TLSv1_2)
    );
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (status, body) = post_http2(tls, lenient.addr, "uid-tls12").await;
    check_answer(status, &body, "uid-tls12");
    stop(lenient).await;
}

#[tokio::test]
async fn graceful_shutdown_drains_a_request_in_flight() {
    let pki = pki();
    // The drain bound is far above the test's waits: serve must return because the request
    // finished, not because the drain timed out.
    let mut server = start(&pki, false, Duration::from_secs(60)).await;
    let tls = connect(
        server.addr,
        client_config(&pki, &[&rustls::version::TLS13], &[b"http/1.1"]),
    )
    .await
    .expect("TLS handshake");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("HTTP/1.1 handshake");
    tokio::spawn(conn);

    // A request whose body arrives in two parts: it is in flight until the second one is sent.
    let body = review_body("uid-drain");
    let (first, second) = body.split_at(body.len() / 2);
    let (mut tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(2);
    let req = Request::post("/mutate")
        .header(header::HOST, "127.0.0.1")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, body.len())
        .body(StreamBody::new(rx))
        .unwrap();
    tx.try_send(Ok(Frame::data(Bytes::copy_from_slice(first))))
        .unwrap();
    let in_flight = tokio::spawn(sender.send_request(req));
    // Let the server read the headers and the first part.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!in_flight.is_finished(), "the request ended early");

    server.shutdown();
    // Shutdown closes the listener: wait until new connections are refused.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while TcpStream::connect(server.addr).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the listener still accepts after shutdown"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !server.task.is_finished(),
        "serve returned while a request was still in flight"
    );
    assert!(!in_flight.is_finished(), "the request ended early");

    tx.try_send(Ok(Frame::data(Bytes::copy_from_slice(second))))
        .unwrap();
    drop(tx);
    let resp = tokio::time::timeout(PATIENCE, in_flight)
        .await
        .expect("the in-flight request completes")
        .unwrap()
        .expect("an answer");
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    check_answer(status, &body, "uid-drain");

    tokio::time::timeout(PATIENCE, server.task)
        .await
        .expect("serve returns once the request is answered")
        .expect("serve does not panic");
}
