//! The servers under load, each in its own process (`wi-load serve`), so its CPU time and
//! memory are its own:
//!
//! - `webhook`: the real admission router (`api::router`) over `api::tls::serve`, with the
//!   seed's ServiceAccount in the cache and the seed's AgentPool in the index, logging every
//!   admission as `wi-webhook serve` does (text lines on stderr);
//! - `floor`: the webhook with its decision taken out (`floor`);
//! - `ceiling`: the same axum + rustls + hyper-util stack (`api::tls::serve`, the same body
//!   limit and timeout layers) answering every POST with a canned AdmissionReview response:
//!   the very bytes the webhook answers for the same request, with no decoding or mutation;
//!   with `--work-us N` it first burns N µs of its thread's CPU time per answer, as a decision
//!   of that cost would (`wi-load budget`).

use std::io::{BufRead, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::DefaultBodyLimit;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;
use tower::ServiceExt;
use tracing_subscriber::util::SubscriberInitExt;
use wi_webhook::admission::Admitter;
use wi_webhook::api::{self, AppState, tls};
use wi_webhook::config::MutationConfig;
use wi_webhook::logging;
use wi_webhook::policy::crd::{AgentPool, AgentPoolSpec};
use wi_webhook::policy::{Policy, Pool};
use wi_webhook::serviceaccounts::{ServiceAccounts, store_of};

use crate::fixtures;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Webhook,
    Ceiling,
    /// The ceiling's canned answer with the request's uid copied in, as the API server
    /// requires: what calling any webhook that answers this patch costs the API server.
    Echo,
    /// The webhook with its decision taken out (`floor`): what answering costs on this
    /// stack before anything is decided.
    Floor,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Webhook => "webhook",
            Kind::Ceiling => "ceiling",
            Kind::Echo => "echo",
            Kind::Floor => "floor",
        }
    }
}

/// The pods a load can carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PodKind {
    Seed,
    Wide,
    Large,
}

pub fn pod(kind: PodKind) -> serde_json::Value {
    match kind {
        PodKind::Seed => fixtures::seed_pod(),
        PodKind::Wide => fixtures::wide_pod(),
        PodKind::Large => fixtures::large_pod(300),
    }
}

/// The uid of every review the load sends.
const UID: &str = "0c9a8d74-9cb7-44dd-b98e-09fd62def2f4";

pub fn body(kind: PodKind) -> Vec<u8> {
    fixtures::review(&pod(kind), UID)
}

/// The state of the in-process webhook: the seed's ServiceAccount and AgentPool.
pub fn webhook_state() -> Arc<AppState> {
    let sa = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(fixtures::SERVICE_ACCOUNT.into()),
            namespace: Some(fixtures::NAMESPACE.into()),
            annotations: Some(
                [
                    (
                        "azure.workload.identity/client-id".to_string(),
                        fixtures::CLIENT_ID.to_string(),
                    ),
                    (
                        "azure.workload.identity/tenant-id".to_string(),
                        fixtures::TENANT.to_string(),
                    ),
                ]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        ..ServiceAccount::default()
    };
    let pools: Vec<Pool> = fixtures::pools(0)
        .into_iter()
        .filter_map(|(name, spec)| {
            let spec: AgentPoolSpec = serde_json::from_value(spec).ok()?;
            Pool::from_resource(&AgentPool::new(&name, spec))
        })
        .collect();
    let state = AppState::new(Admitter {
        config: MutationConfig::new(fixtures::TENANT),
        service_accounts: ServiceAccounts::from_store(store_of([sa])),
        policy: Policy::of(&pools),
    });
    state
        .ready
        .store(true, std::sync::atomic::Ordering::Release);
    state
}

/// The webhook's answer to `body`, computed in process.
pub async fn canned_answer(body: &[u8]) -> anyhow::Result<Bytes> {
    let app = api::router(webhook_state(), api::DEFAULT_BODY_LIMIT);
    let req = Request::post("/mutate")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_vec()))?;
    let resp = app.oneshot(req).await?;
    if resp.status() != StatusCode::OK {
        bail!("the webhook answered {}", resp.status());
    }
    Ok(resp.into_body().collect().await?.to_bytes())
}

async fn request_timeout(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    match tokio::time::timeout(api::REQUEST_TIMEOUT, next.run(req)).await {
        Ok(response) => response,
        Err(_) => StatusCode::REQUEST_TIMEOUT.into_response(),
    }
}

/// The ceiling: the webhook's stack and layers, a canned answer, after `work` of CPU time.
pub fn ceiling_router(canned: Bytes, work: Duration) -> Router {
    let answer = move |body: Bytes| {
        let canned = canned.clone();
        async move {
            drop(body);
            burn(work);
            ([(header::CONTENT_TYPE, "application/json")], canned)
        }
    };
    webhook_layers(
        Router::new()
            .route("/mutate", post(answer.clone()))
            .route("/validate", post(answer)),
    )
}

/// The CPU time of the calling thread, in nanoseconds.
fn thread_cpu_nanos() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Spins on this thread until it has used `work` more CPU time: a stand-in for a decision
/// of that cost (the thread's clock, so time spent preempted does not count).
fn burn(work: Duration) {
    if work.is_zero() {
        return;
    }
    let until = thread_cpu_nanos() + work.as_nanos() as u64;
    while thread_cpu_nanos() < until {
        std::hint::spin_loop();
    }
}

/// The body limit and timeout layers of the webhook's router, for the canned servers.
pub fn webhook_layers(router: Router) -> Router {
    router
        .layer(DefaultBodyLimit::max(api::DEFAULT_BODY_LIMIT))
        .layer(axum::middleware::from_fn(request_timeout))
}

/// `wi-load serve`: prints `LISTENING <addr>`, serves until stdin closes (or `max_seconds`).
pub async fn serve(
    kind: Kind,
    pod_kind: PodKind,
    cert_dir: &Path,
    max_seconds: u64,
    work_us: u64,
) -> anyhow::Result<()> {
    let pair = wi_certs::load_pair(
        &cert_dir.join(wi_certs::TLS_CERT_FILE),
        &cert_dir.join(wi_certs::TLS_KEY_FILE),
    )?;
    let config = tls::server_config(tls::CertSlot::new(pair.certified_key), false)?;
    if matches!(kind, Kind::Webhook | Kind::Floor) {
        // As `wi-webhook serve` logs by default: text lines, level info.
        let filter = tracing_subscriber::EnvFilter::new("info");
        logging::subscriber(filter, false, false, std::io::stderr).try_init()?;
    }
    let app = match kind {
        Kind::Webhook => api::router(webhook_state(), api::DEFAULT_BODY_LIMIT),
        Kind::Floor => crate::floor::router(
            webhook_state(),
            &canned_answer(&body(pod_kind)).await?,
            fixtures::POOL,
        )?,
        Kind::Ceiling => ceiling_router(
            canned_answer(&body(pod_kind)).await?,
            Duration::from_micros(work_us),
        ),
        Kind::Echo => echo_router(&canned_answer(&body(pod_kind)).await?)?,
    };
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    println!("LISTENING {addr}");
    std::io::stdout().flush()?;
    let stop = async move {
        // The parent holds our stdin: EOF means it is done (or gone).
        let _ = tokio::time::timeout(
            Duration::from_secs(max_seconds),
            tokio::task::spawn_blocking(|| {
                let mut sink = String::new();
                let _ = std::io::stdin().lock().read_line(&mut sink);
            }),
        )
        .await;
    };
    tls::serve(
        listener,
        Arc::new(config),
        app,
        stop,
        Duration::from_secs(2),
    )
    .await;
    Ok(())
}

/// What the echo server reads of a review: its uid.
#[derive(Deserialize)]
struct UidOnly {
    request: UidOf,
}

#[derive(Deserialize)]
struct UidOf {
    uid: String,
}

/// The echo server: the canned answer (the webhook's own, for the seed's pod) with the
/// request's uid in place of the canned one; nothing else of the request is read.
pub fn echo_router(canned: &[u8]) -> anyhow::Result<Router> {
    let quoted = format!("\"{}\"", UID);
    let text = std::str::from_utf8(canned)?;
    let (head, tail) = text
        .split_once(&quoted)
        .context("the canned answer carries the canned uid")?;
    let (head, tail) = (Arc::<str>::from(head), Arc::<str>::from(tail));
    let answer = move |body: Bytes| {
        let (head, tail) = (head.clone(), tail.clone());
        async move {
            match serde_json::from_slice::<UidOnly>(&body) {
                Ok(review) => {
                    let uid = serde_json::to_string(&review.request.uid).unwrap_or_default();
                    let out = format!("{head}{uid}{tail}");
                    ([(header::CONTENT_TYPE, "application/json")], out).into_response()
                }
                Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
            }
        }
    };
    Ok(webhook_layers(Router::new().route("/mutate", post(answer))))
}

/// A server child process; stopped (stdin closed, then killed if need be) on drop.
pub struct ServerProcess {
    pub addr: SocketAddr,
    child: Child,
}

impl ServerProcess {
    /// `work_us`: the ceiling's CPU time per answer on top of its canned one.
    pub fn start(
        kind: Kind,
        pod_kind: PodKind,
        cert_dir: &Path,
        work_us: u64,
    ) -> anyhow::Result<Self> {
        let exe = std::env::current_exe()?;
        let pod_arg = match pod_kind {
            PodKind::Seed => "seed",
            PodKind::Wide => "wide",
            PodKind::Large => "large",
        };
        let mut child = Command::new(exe)
            .args([
                "serve",
                "--kind",
                kind.name(),
                "--pod",
                pod_arg,
                "--work-us",
                &work_us.to_string(),
                "--cert-dir",
            ])
            .arg(cert_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            // The webhook's log lines are formatted and written, to nowhere.
            .stderr(Stdio::null())
            .spawn()
            .context("starting the server process")?;
        let stdout = child.stdout.take().context("the server's stdout")?;
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix("LISTENING ")
            .with_context(|| format!("the server said {line:?}"))?
            .parse()?;
        Ok(ServerProcess { addr, child })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Serving certificates for 127.0.0.1 in `dir`; returns the CA's PEM.
pub fn certificates(dir: &Path) -> anyhow::Result<String> {
    let bundle = wi_certs::generate(&wi_certs::GenerateOptions {
        dns_names: vec!["localhost".into()],
        ip_addresses: vec![std::net::IpAddr::V4(Ipv4Addr::LOCALHOST)],
        ..Default::default()
    })?;
    bundle.write_dir(dir)?;
    Ok(bundle.ca.cert)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn post(app: Router, body: &str) -> (StatusCode, String) {
        let req = Request::post("/mutate")
            .body(Body::from(body.to_string()))
            .unwrap();
        let resp = app.oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn the_echo_server_answers_the_canned_patch_with_the_request_uid() {
        let canned = format!(
            r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{{"uid":"{UID}","allowed":true,"patch":"W10="}}}}"#
        );
        let app = echo_router(canned.as_bytes()).unwrap();
        let (status, answer) = post(
            app.clone(),
            r#"{"apiVersion":"admission.k8s.io/v1","request":{"uid":"u-\"1","object":{}}}"#,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(answer["response"]["uid"], "u-\"1");
        assert_eq!(answer["response"]["patch"], "W10=");
        assert_eq!(post(app, "{}").await.0, StatusCode::BAD_REQUEST);
        assert!(echo_router(b"{\"uid\":\"other\"}").is_err());
    }
}
