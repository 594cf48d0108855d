//! An HTTP/2 client for the webhook's TLS port (hyper's), as the API server talks when it
//! negotiates h2: many requests at once on one connection. A request's body may be sent in
//! parts, to hold it in flight on purpose (the SIGTERM test).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use anyhow::Context;
use http_body_util::BodyExt;
use hyper::body::{Bytes, Frame};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;

use crate::admission_client::Answer;

/// A request body fed from a channel: done when its sender is dropped.
pub struct ChannelBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|part| part.map(|b| Ok(Frame::data(b))))
    }
}

/// One HTTP/2 connection; cheap to clone (the clones share it).
#[derive(Clone)]
pub struct H2Connection {
    sender: SendRequest<ChannelBody>,
}

impl H2Connection {
    /// Connects to `addr` over TLS, offering only h2 in ALPN.
    pub async fn open(addr: &str, tls: Arc<rustls::ClientConfig>) -> anyhow::Result<Self> {
        let mut config = (*tls).clone();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let tcp = TcpStream::connect(addr).await?;
        let _ = tcp.set_nodelay(true);
        let stream = TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("127.0.0.1")?.to_owned(), tcp)
            .await?;
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .context("HTTP/2 handshake")?;
        tokio::spawn(conn);
        Ok(H2Connection { sender })
    }

    /// `POST <path>` of `length` bytes: the sender of the body's parts (drop it after the
    /// last) and the answer.
    pub fn start(
        &self,
        path: &str,
        length: usize,
    ) -> (
        mpsc::Sender<Bytes>,
        impl Future<Output = anyhow::Result<Answer>> + use<>,
    ) {
        let (tx, rx) = mpsc::channel(4);
        let request = http::Request::post(format!("https://127.0.0.1{path}"))
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::CONTENT_LENGTH, length)
            .body(ChannelBody(rx))
            .expect("a static request");
        let mut sender = self.sender.clone();
        let answer = async move {
            let response = sender.send_request(request).await?;
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
                .collect();
            let body = response.into_body().collect().await?.to_bytes().to_vec();
            Ok(Answer {
                status,
                headers,
                body,
            })
        };
        (tx, answer)
    }

    /// `POST <path>` with `body`.
    pub async fn post(&self, path: &str, body: &[u8]) -> anyhow::Result<Answer> {
        let (tx, answer) = self.start(path, body.len());
        tx.send(Bytes::copy_from_slice(body))
            .await
            .map_err(|_| anyhow::anyhow!("the request was dropped before its body was sent"))?;
        drop(tx);
        answer.await
    }

    /// The connection can take no more requests (GOAWAY received, or closed).
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }
}
