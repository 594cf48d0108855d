//! A minimal HTTP/1.1 keep-alive client for the webhook's TLS port, as the API server talks to
//! it: one connection, one request at a time. For the soak and the fault tests, which count
//! every answer that is not a 200 (resets included).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// A TLS client config trusting only the CA in `ca_file` (PEM).
pub fn client_config(ca_file: &Path) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file)
        .with_context(|| format!("reading {}", ca_file.display()))?
    {
        roots.add(cert?)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

/// One keep-alive connection to `addr` (`127.0.0.1:<port>`).
pub struct Connection {
    stream: BufReader<TlsStream<TcpStream>>,
}

impl Connection {
    pub async fn open(addr: &str, tls: Arc<rustls::ClientConfig>) -> anyhow::Result<Self> {
        let tcp = TcpStream::connect(addr).await?;
        let _ = tcp.set_nodelay(true);
        let stream = TlsConnector::from(tls)
            .connect(ServerName::try_from("127.0.0.1")?.to_owned(), tcp)
            .await?;
        Ok(Connection {
            stream: BufReader::new(stream),
        })
    }

    /// `POST <path>` with `body`: `(status, body)`. Any I/O error (a reset, an early close)
    /// is an error; the connection is then unusable.
    pub async fn post(&mut self, path: &str, body: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
        let answer = self.send(path, body).await?;
        Ok((answer.status, answer.body))
    }

    /// [`Connection::post`], with the answer's headers.
    pub async fn send(&mut self, path: &str, body: &[u8]) -> anyhow::Result<Answer> {
        self.start(path, body.len(), body).await?;
        self.answer().await
    }

    /// Writes the head of `POST <path>` announcing `length` body bytes, and `part` of them:
    /// a request left in flight, finished by [`Connection::finish`].
    pub async fn start(&mut self, path: &str, length: usize, part: &[u8]) -> anyhow::Result<()> {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
        );
        let stream = self.stream.get_mut();
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(part).await?;
        stream.flush().await?;
        Ok(())
    }

    /// Writes the rest of a body begun by [`Connection::start`] and reads the answer.
    pub async fn finish(&mut self, rest: &[u8]) -> anyhow::Result<Answer> {
        let stream = self.stream.get_mut();
        stream.write_all(rest).await?;
        stream.flush().await?;
        self.answer().await
    }

    async fn answer(&mut self) -> anyhow::Result<Answer> {
        let mut status_line = String::new();
        if self.stream.read_line(&mut status_line).await? == 0 {
            bail!("connection closed before an answer");
        }
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line {status_line:?}"))?;
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            if self.stream.read_line(&mut line).await? == 0 {
                bail!("connection closed in the headers");
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
            }
        }
        let mut answer = Answer {
            status,
            headers,
            body: Vec::new(),
        };
        let length = answer.header("content-length").unwrap_or("0").parse()?;
        answer.body = vec![0; length];
        self.stream.read_exact(&mut answer.body).await?;
        Ok(answer)
    }
}

/// An HTTP answer: status, headers (names in lower case) and body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The server closes the connection after this answer (`Connection: close`).
    pub fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

/// An AdmissionReview (v1) of a pod CREATE in `namespace`.
pub fn pod_review(uid: &str, namespace: &str, pod: &Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod
        }
    }))
    .expect("a review encodes")
}

/// Checks an answer: 200, the uid echoed, allowed, and a patch. `Err` says what was wrong.
pub fn check_mutated(status: u16, body: &[u8], uid: &str) -> Result<(), String> {
    if status != 200 {
        return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(body)));
    }
    let review: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let response = &review["response"];
    if response["uid"] != uid || response["allowed"] != true || !response["patch"].is_string() {
        return Err(format!("unexpected response {response}"));
    }
    Ok(())
}

/// The AZURE_CLIENT_ID an allowed answer injects: the value of the `{"name":
/// "AZURE_CLIENT_ID"}` env entry in its JSON patch, wherever the patch puts it.
pub fn injected_client_id(body: &[u8]) -> Option<String> {
    use base64::Engine as _;
    let review: Value = serde_json::from_slice(body).ok()?;
    let patch = base64::engine::general_purpose::STANDARD
        .decode(review["response"]["patch"].as_str()?)
        .ok()?;
    fn find(value: &Value) -> Option<String> {
        match value {
            Value::Object(map) if map.get("name") == Some(&json!("AZURE_CLIENT_ID")) => {
                map.get("value")?.as_str().map(str::to_owned)
            }
            Value::Object(map) => map.values().find_map(find),
            Value::Array(items) => items.iter().find_map(find),
            _ => None,
        }
    }
    find(&serde_json::from_slice(&patch).ok()?)
}

/// Resident memory of process `pid`, in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Open file descriptors of process `pid`.
pub fn open_fds(pid: u32) -> Option<usize> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|d| d.count())
}

/// Sleeps until `next`, then returns the next tick `period` later (open-loop pacing).
pub async fn pace(next: tokio::time::Instant, period: Duration) -> tokio::time::Instant {
    tokio::time::sleep_until(next).await;
    next + period
}
