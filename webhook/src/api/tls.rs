//! Serving a router over TLS (rustls), HTTP/1.1 and HTTP/2 on one port, with graceful
//! shutdown: stop accepting, let every connection finish what it has, then return. The number
//! of connections is bounded and idle ones are closed (docs/reliability.md).

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// A client has this long to finish the TLS handshake and to send request headers.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The serving certificate, swappable while the server runs (new handshakes get the new one).
#[derive(Debug)]
pub struct CertSlot(RwLock<Arc<CertifiedKey>>);

impl CertSlot {
    pub fn new(key: Arc<CertifiedKey>) -> Arc<Self> {
        Arc::new(CertSlot(RwLock::new(key)))
    }

    pub fn set(&self, key: Arc<CertifiedKey>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = key;
    }

    pub fn get(&self) -> Arc<CertifiedKey> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl ResolvesServerCert for CertSlot {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

/// TLS 1.3 only, or 1.2 and 1.3; ALPN offers h2 and http/1.1.
pub fn server_config(certs: Arc<CertSlot>, allow_tls12: bool) -> anyhow::Result<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = if allow_tls12 {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13]
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Bounds of the TLS server: how many connections it holds and how long one may idle.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Open connections (TLS handshake included). At the bound the server stops accepting
    /// until one closes: new clients wait in the kernel's backlog (back-pressure), the
    /// process's memory and file handles stay bounded.
    pub max_connections: usize,
    /// A connection with no request in flight for this long is closed gracefully (HTTP/1.1:
    /// closed between requests; HTTP/2: GOAWAY). Longer than the API server's own idle
    /// timeout (90 s), so it normally closes first.
    pub idle_timeout: Duration,
}

/// Default of `serve --max-connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Default of `serve --idle-timeout-seconds`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// HTTP/2 streams one connection may have open at once.
pub const MAX_CONCURRENT_STREAMS: u32 = 128;
/// On shutdown, how long a connection with no request in flight stays open for one more.
/// Closed at once, a keep-alive client that has just sent a request would get no answer (or
/// a reset, if its bytes arrived unread). Kept, that request is answered, with `Connection:
/// close` on HTTP/1.1 (then the connection ends) and before GOAWAY on HTTP/2.
pub const SHUTDOWN_LINGER: Duration = Duration::from_secs(1);

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// Accepts TLS connections on `listener` until `shutdown` resolves, then waits for the
/// connections in flight to finish (or `drain` to pass). Default [`Limits`].
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    app: Router,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
    serve_with(listener, tls, app, shutdown, drain, Limits::default()).await
}

/// Requests in flight on one connection, and when the last one ended.
struct Activity {
    in_flight: AtomicUsize,
    /// Requests started on this connection.
    requests: AtomicUsize,
    /// Milliseconds since `epoch` at the end of the last request (or the connection's start).
    last: AtomicU64,
    epoch: Instant,
}

impl Activity {
    fn touch(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last.store(ms, Ordering::Release);
    }

    /// How long the connection may idle: a connection that never sent a request has the
    /// handshake timeout (the protocol detection of HTTP/1 or 2 waits on its first bytes).
    fn allowed_idle(&self, idle_timeout: Duration) -> Duration {
        if self.requests.load(Ordering::Acquire) == 0 {
            idle_timeout.min(HANDSHAKE_TIMEOUT)
        } else {
            idle_timeout
        }
    }

    /// How long the connection has had nothing in flight; zero while a request runs.
    fn idle(&self) -> Duration {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Duration::ZERO;
        }
        let last = Duration::from_millis(self.last.load(Ordering::Acquire));
        self.epoch.elapsed().saturating_sub(last)
    }
}

/// Ends a request's activity when dropped (a cancelled request included).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// [`serve`] with explicit [`Limits`].
pub async fn serve_with(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    app: Router,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
    limits: Limits,
) {
    let acceptor = TlsAcceptor::from(tls);
    let max = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let slots = Arc::new(Semaphore::new(max));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HANDSHAKE_TIMEOUT);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .keep_alive_interval(Duration::from_secs(30));
    let builder = Arc::new(builder);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut waits: u64 = 0;
    loop {
        // A free slot first: at the bound, accepting waits (the backlog holds new clients).
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                // One line per 100 waits: a flood must not become a flood of logs.
                waits += 1;
                if waits % 100 == 1 {
                    tracing::warn!(
                        max_connections = max,
                        waits,
                        "connection limit reached; waiting"
                    );
                }
                tokio::select! {
                    slot = slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                    () = &mut shutdown => break,
                }
            }
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let builder = builder.clone();
        let mut stop = stop_rx.clone();
        let idle_timeout = limits.idle_timeout;
        tokio::spawn(async move {
            let _slot = slot;
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
            let tls = tokio::select! {
                tls = handshake => match tls {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                },
                _ = stop.wait_for(|s| *s) => return,
            };
            let activity = Arc::new(Activity {
                in_flight: AtomicUsize::new(0),
                requests: AtomicUsize::new(0),
                last: AtomicU64::new(0),
                epoch: Instant::now(),
            });
            let tracked = activity.clone();
            let draining = stop.clone();
            let service = tower::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                tracked.in_flight.fetch_add(1, Ordering::AcqRel);
                tracked.requests.fetch_add(1, Ordering::AcqRel);
                let guard = InFlight(tracked.clone());
                let http1 = req.version() < http::Version::HTTP_2;
                let draining = draining.clone();
                let response = app.clone().oneshot(req.map(axum::body::Body::new));
                async move {
                    let mut response = response.await;
                    // Shutting down: the HTTP/1.1 client learns that this is the last answer.
                    if http1
                        && *draining.borrow()
                        && let Ok(response) = response.as_mut()
                    {
                        response.headers_mut().insert(
                            http::header::CONNECTION,
                            http::HeaderValue::from_static("close"),
                        );
                    }
                    drop(guard);
                    response
                }
            });
            let conn = builder
                .serve_connection(TokioIo::new(tls), TowerToHyperService::new(service))
                .into_owned();
            let mut conn = std::pin::pin!(conn);
            let mut closing = false;
            // Shutdown with nothing in flight: the connection lingers (SHUTDOWN_LINGER).
            let mut lingering = false;
            let result = loop {
                let check = if lingering {
                    SHUTDOWN_LINGER
                } else {
                    activity
                        .allowed_idle(idle_timeout)
                        .saturating_sub(activity.idle())
                        .max(Duration::from_millis(100))
                };
                tokio::select! {
                    result = conn.as_mut() => break result,
                    _ = stop.wait_for(|s| *s), if !closing && !lingering => {
                        if activity.in_flight.load(Ordering::Acquire) > 0 {
                            closing = true;
                            conn.as_mut().graceful_shutdown();
                        } else {
                            lingering = true;
                        }
                    }
                    () = tokio::time::sleep(check), if !closing => {
                        if lingering || activity.idle() >= activity.allowed_idle(idle_timeout) {
                            tracing::debug!(%peer, "idle connection closed");
                            closing = true;
                            conn.as_mut().graceful_shutdown();
                        }
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let open = max - slots.available_permits();
    tracing::info!(connections = open, "stopped accepting; draining");
    let _ = stop_tx.send(true);
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    if tokio::time::timeout(drain, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("drain timed out; closing remaining connections");
    }
}
