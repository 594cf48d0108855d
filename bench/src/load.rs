//! The load generator: keep-alive HTTP/1.1 or HTTP/2 connections over TLS (hyper's client
//! over tokio-rustls, as the API server keeps its webhook connections open), driven
//! closed-loop (as fast as answers come back) or open-loop at a fixed rate.
//!
//! Open-loop latency is measured from each request's *scheduled* send time, not from when it
//! was actually sent: a stalled server delays every request queued behind it, and those
//! delays count (no coordinated omission). Sends are paced by a dedicated thread with a 1 µs
//! timer slack, not by the async runtime's millisecond timer.
//!
//! Every loop is bounded by a duration and a request count, and every request by a timeout.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ClientConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_rustls::TlsConnector;

use crate::results::{Loop, Run};
use crate::stats::Summary;

/// No request waits longer than this for its answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Open loop: at most this many requests outstanding; later ones are counted as dropped.
pub const MAX_IN_FLIGHT: usize = 20_000;
/// Closed loop: at most this many requests per run, whatever the duration.
pub const MAX_REQUESTS: u64 = 5_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum Proto {
    #[serde(rename = "HTTP/1.1")]
    #[value(name = "h1")]
    H1,
    #[serde(rename = "HTTP/2")]
    #[value(name = "h2")]
    H2,
}

impl Proto {
    pub fn label(self) -> &'static str {
        match self {
            Proto::H1 => "HTTP/1.1",
            Proto::H2 => "HTTP/2",
        }
    }
}

/// Where requests go and what they carry.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub tls: Arc<ClientConfig>,
    pub path: String,
    pub body: Bytes,
}

/// A client configuration trusting only `ca_pem`, TLS 1.3, with the ALPN of `proto`.
pub fn client_config(ca_pem: &str, proto: Proto) -> anyhow::Result<ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.context("CA PEM")?)?;
    }
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![match proto {
        Proto::H1 => b"http/1.1".to_vec(),
        Proto::H2 => b"h2".to_vec(),
    }];
    Ok(config)
}

/// One open connection.
#[derive(Clone)]
pub enum Conn {
    H1(Arc<tokio::sync::Mutex<hyper::client::conn::http1::SendRequest<Full<Bytes>>>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

pub async fn connect(target: &Target, proto: Proto) -> anyhow::Result<Conn> {
    let tcp = TcpStream::connect(target.addr)
        .await
        .with_context(|| format!("connecting to {}", target.addr))?;
    tcp.set_nodelay(true)?;
    let name = ServerName::IpAddress(target.addr.ip().into());
    let tls = TlsConnector::from(target.tls.clone())
        .connect(name, tcp)
        .await
        .context("TLS handshake")?;
    let io = TokioIo::new(tls);
    Ok(match proto {
        Proto::H1 => {
            let (sender, conn) = hyper::client::conn::http1::handshake(io).await?;
            tokio::spawn(conn);
            Conn::H1(Arc::new(tokio::sync::Mutex::new(sender)))
        }
        Proto::H2 => {
            let (sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(conn);
            Conn::H2(sender)
        }
    })
}

fn request(target: &Target, proto: Proto) -> Request<Full<Bytes>> {
    let uri = match proto {
        Proto::H1 => target.path.clone(),
        Proto::H2 => format!("https://{}{}", target.addr, target.path),
    };
    Request::post(uri)
        .header(header::HOST, target.addr.to_string())
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "application/json")
        .body(Full::new(target.body.clone()))
        .expect("a valid request")
}

/// Keep-alive connections the server had closed, opened anew before a request (the server
/// closes HTTP/1.1 connections idle for longer than its header read timeout). The new
/// handshake counts in that request's latency, as it would for the API server.
pub static RECONNECTS: AtomicU64 = AtomicU64::new(0);

/// One request on `conn`: the answer's body, or why there is none.
pub async fn send(conn: &Conn, target: &Target, proto: Proto) -> anyhow::Result<Bytes> {
    let req = request(target, proto);
    let resp = match conn {
        Conn::H1(sender) => {
            let mut sender = sender.lock().await;
            if sender.is_closed() {
                RECONNECTS.fetch_add(1, Ordering::Relaxed);
                match connect(target, proto).await? {
                    Conn::H1(fresh) => {
                        let fresh = Arc::try_unwrap(fresh)
                            .map_err(|_| anyhow::anyhow!("a new connection is not shared"))?;
                        *sender = fresh.into_inner();
                    }
                    Conn::H2(_) => bail!("HTTP/1.1 asked, HTTP/2 connected"),
                }
            }
            sender.ready().await?;
            sender.send_request(req).await?
        }
        Conn::H2(sender) => {
            let mut sender = sender.clone();
            sender.ready().await?;
            sender.send_request(req).await?
        }
    };
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    if status != StatusCode::OK {
        bail!("status {status}: {}", String::from_utf8_lossy(&body));
    }
    Ok(body)
}

struct Recorder {
    latencies: Mutex<Vec<u64>>,
    ok: AtomicU64,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Recorder {
    fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Recorder {
            latencies: Mutex::new(Vec::with_capacity(capacity)),
            ok: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            first_error: Mutex::new(None),
        })
    }

    fn record(&self, result: anyhow::Result<Bytes>, latency: Duration) {
        match result {
            Ok(_) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
                self.latencies
                    .lock()
                    .expect("recorder")
                    .push(latency.as_nanos() as u64);
            }
            Err(e) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                let mut first = self.first_error.lock().expect("recorder");
                if first.is_none() {
                    *first = Some(format!("{e:#}"));
                }
            }
        }
    }
}

async fn timed(conn: &Conn, target: &Target, proto: Proto) -> anyhow::Result<Bytes> {
    match tokio::time::timeout(REQUEST_TIMEOUT, send(conn, target, proto)).await {
        Ok(r) => r,
        Err(_) => bail!("no answer within {REQUEST_TIMEOUT:?}"),
    }
}

/// Opens `n` connections.
pub async fn open(target: &Target, proto: Proto, n: usize) -> anyhow::Result<Vec<Conn>> {
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        conns.push(connect(target, proto).await?);
    }
    Ok(conns)
}

/// Closed loop: `concurrency` requests outstanding on each connection, each sent as soon as
/// the previous answer arrived, for `duration` (and at most [`MAX_REQUESTS`]).
pub async fn closed_loop(
    target: &Target,
    proto: Proto,
    conns: &[Conn],
    concurrency: usize,
    duration: Duration,
) -> Run {
    let concurrency = if proto == Proto::H1 { 1 } else { concurrency };
    let reconnects = RECONNECTS.load(Ordering::Relaxed);
    let recorder = Recorder::new(1 << 16);
    let issued = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = Vec::new();
    for conn in conns {
        for _ in 0..concurrency {
            let (conn, target, recorder, issued) = (
                conn.clone(),
                target.clone(),
                recorder.clone(),
                issued.clone(),
            );
            workers.push(tokio::spawn(async move {
                while Instant::now() < deadline
                    && issued.fetch_add(1, Ordering::Relaxed) < MAX_REQUESTS
                {
                    let t0 = Instant::now();
                    let result = timed(&conn, &target, proto).await;
                    recorder.record(result, t0.elapsed());
                }
            }));
        }
    }
    for w in workers {
        let _ = w.await;
    }
    finish(
        proto,
        Loop::Closed,
        0,
        conns.len(),
        concurrency,
        started.elapsed(),
        &recorder,
        0,
        reconnects,
    )
}

/// Open loop at `rate` requests per second for `duration`: request `i` is due at
/// `start + i / rate`, whatever happened to the ones before it. HTTP/1.1 requests take any
/// idle connection of `conns` (waiting for one counts as latency); HTTP/2 requests are spread
/// over the connections, multiplexed.
pub async fn open_loop(
    target: &Target,
    proto: Proto,
    conns: &[Conn],
    rate: u64,
    duration: Duration,
) -> Run {
    let total = (rate as f64 * duration.as_secs_f64()).round() as u64;
    let reconnects = RECONNECTS.load(Ordering::Relaxed);
    let recorder = Recorder::new(total as usize);
    let in_flight = Arc::new(AtomicUsize::new(0));
    let idle: Arc<Mutex<Vec<Conn>>> = Arc::new(Mutex::new(conns.to_vec()));
    let permits = Arc::new(Semaphore::new(conns.len()));
    let handle = tokio::runtime::Handle::current();
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let start = Instant::now() + Duration::from_millis(5);
    let pacer = {
        let (target, recorder, in_flight, idle, permits, conns) = (
            target.clone(),
            recorder.clone(),
            in_flight.clone(),
            idle.clone(),
            permits.clone(),
            conns.to_vec(),
        );
        std::thread::spawn(move || {
            // SAFETY: prctl(PR_SET_TIMERSLACK) only changes this thread's timer slack.
            unsafe {
                libc::prctl(libc::PR_SET_TIMERSLACK, 1u64, 0u64, 0u64, 0u64);
            }
            let mut dropped = 0u64;
            for i in 0..total {
                let due = start + interval.mul_f64(i as f64);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                if in_flight.load(Ordering::Relaxed) >= MAX_IN_FLIGHT {
                    dropped += 1;
                    continue;
                }
                in_flight.fetch_add(1, Ordering::Relaxed);
                let (target, recorder, in_flight, idle, permits) = (
                    target.clone(),
                    recorder.clone(),
                    in_flight.clone(),
                    idle.clone(),
                    permits.clone(),
                );
                let h2 = (proto == Proto::H2).then(|| conns[i as usize % conns.len()].clone());
                handle.spawn(async move {
                    let result = match h2 {
                        Some(conn) => timed(&conn, &target, proto).await,
                        None => {
                            let _permit = permits.acquire().await.expect("never closed");
                            let conn = idle.lock().expect("pool").pop().expect("a permit");
                            let r = timed(&conn, &target, proto).await;
                            idle.lock().expect("pool").push(conn);
                            r
                        }
                    };
                    recorder.record(result, due.elapsed());
                    in_flight.fetch_sub(1, Ordering::Relaxed);
                });
            }
            dropped
        })
    };
    let dropped = tokio::task::spawn_blocking(move || pacer.join().expect("the pacer"))
        .await
        .expect("the pacer");
    // Let the last answers arrive (each request has its own timeout).
    let drain_until = Instant::now() + REQUEST_TIMEOUT + Duration::from_secs(1);
    while in_flight.load(Ordering::Relaxed) > 0 && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = start.elapsed();
    finish(
        proto,
        Loop::Open,
        rate,
        conns.len(),
        1,
        elapsed,
        &recorder,
        dropped,
        reconnects,
    )
}

#[allow(clippy::too_many_arguments)]
fn finish(
    proto: Proto,
    mode: Loop,
    rate: u64,
    connections: usize,
    concurrency: usize,
    elapsed: Duration,
    recorder: &Recorder,
    dropped: u64,
    reconnects_before: u64,
) -> Run {
    let mut latencies = std::mem::take(&mut *recorder.latencies.lock().expect("recorder"));
    let ok = recorder.ok.load(Ordering::Relaxed);
    Run {
        proto,
        mode,
        rate,
        connections,
        concurrency,
        seconds: elapsed.as_secs_f64(),
        ok,
        errors: recorder.errors.load(Ordering::Relaxed),
        dropped,
        throughput: ok as f64 / elapsed.as_secs_f64(),
        latency: Summary::of(&mut latencies),
        first_error: recorder.first_error.lock().expect("recorder").clone(),
        reconnects: RECONNECTS.load(Ordering::Relaxed) - reconnects_before,
    }
}
