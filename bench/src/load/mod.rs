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
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ClientConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

mod loops;

pub use loops::{closed_loop, open_loop};

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

/// Why a connection could not be opened or a request has no answer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("CA PEM")]
    CaPem(#[source] rustls::pki_types::pem::Error),
    #[error(transparent)]
    Tls(#[from] rustls::Error),
    #[error("connecting to {addr}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Socket(#[from] std::io::Error),
    #[error("TLS handshake")]
    Handshake(#[source] std::io::Error),
    #[error(transparent)]
    Http(#[from] hyper::Error),
    #[error("a new connection is not shared")]
    Shared,
    #[error("HTTP/1.1 asked, HTTP/2 connected")]
    WrongProtocol,
    #[error("status {status}: {body}")]
    Status { status: StatusCode, body: String },
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// An error and its causes on one line, each after ": " (as a run's `first_error`).
fn chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
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
pub fn client_config(ca_pem: &str, proto: Proto) -> Result<ClientConfig, Error> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.map_err(Error::CaPem)?)?;
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

pub async fn connect(target: &Target, proto: Proto) -> Result<Conn, Error> {
    let tcp = TcpStream::connect(target.addr)
        .await
        .map_err(|source| Error::Connect {
            addr: target.addr,
            source,
        })?;
    tcp.set_nodelay(true)?;
    let name = ServerName::IpAddress(target.addr.ip().into());
    let tls = TlsConnector::from(target.tls.clone())
        .connect(name, tcp)
        .await
        .map_err(Error::Handshake)?;
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
pub async fn send(conn: &Conn, target: &Target, proto: Proto) -> Result<Bytes, Error> {
    let req = request(target, proto);
    let resp = match conn {
        Conn::H1(sender) => {
            let mut sender = sender.lock().await;
            if sender.is_closed() {
                RECONNECTS.fetch_add(1, Ordering::Relaxed);
                match connect(target, proto).await? {
                    Conn::H1(fresh) => {
                        let fresh = Arc::try_unwrap(fresh).map_err(|_| Error::Shared)?;
                        *sender = fresh.into_inner();
                    }
                    Conn::H2(_) => return Err(Error::WrongProtocol),
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
        return Err(Error::Status {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
    }
    Ok(body)
}

/// Opens `n` connections.
pub async fn open(target: &Target, proto: Proto, n: usize) -> Result<Vec<Conn>, Error> {
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        conns.push(connect(target, proto).await?);
    }
    Ok(conns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_refused_connection_is_named_with_its_cause_as_the_run_records_it() {
        // A port nothing listens on: bound, then closed.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let target = Target {
            addr,
            tls: Arc::new(
                ClientConfig::builder()
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth(),
            ),
            path: "/mutate".into(),
            body: Bytes::new(),
        };
        let Err(error) = connect(&target, Proto::H1).await else {
            panic!("connected to a closed port");
        };
        assert!(matches!(error, Error::Connect { .. }), "{error}");
        let line = chain(&error);
        assert!(
            line.starts_with(&format!("connecting to {addr}: ")),
            "{line}"
        );
        // The same line as `{:#}` of the command line's errors.
        assert_eq!(line, format!("{:#}", anyhow::Error::from(error)));
    }
}
