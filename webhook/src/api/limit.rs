//! Bounded concurrency of the admission router: at most `max_in_flight` requests are decided
//! at once; a request beyond that waits up to `queue_timeout` for a slot, then gets
//! `503 Service Unavailable` (JSON, `Retry-After: 1`) instead of queueing without bound.
//!
//! The wait happens before the body is read, so waiting requests hold only their headers:
//! memory is bounded by `max_in_flight` bodies plus the connection bound of `api::tls`. A
//! refused HTTP/1.1 request's body is read and dropped before the 503, so the client gets
//! the answer on a connection it can reuse.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::Semaphore;

use super::error::ApiError;

/// Default of `serve --max-in-flight`.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 256;
/// Default of `serve --queue-timeout-ms`.
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(2);

/// The slots, shared by every request of one router.
#[derive(Debug)]
pub struct Limiter {
    slots: Semaphore,
    max: usize,
    queue_timeout: Duration,
    /// Refusals, shared with the metric `wi_webhook_shed_requests_total` when counted.
    shed: Counter,
}

impl Limiter {
    pub fn new(max_in_flight: usize, queue_timeout: Duration) -> Arc<Self> {
        Self::counted(max_in_flight, queue_timeout, Counter::default())
    }

    /// The same, counting its refusals in `shed` (the webhook's metric).
    pub fn counted(max_in_flight: usize, queue_timeout: Duration, shed: Counter) -> Arc<Self> {
        let max = max_in_flight.clamp(1, Semaphore::MAX_PERMITS);
        Arc::new(Limiter {
            slots: Semaphore::new(max),
            max,
            queue_timeout,
            shed,
        })
    }

    /// Requests decided right now.
    pub fn in_flight(&self) -> usize {
        self.max - self.slots.available_permits()
    }

    /// Requests answered 503 so far because every slot stayed busy.
    pub fn shed(&self) -> u64 {
        self.shed.get()
    }
}

/// `router` with its requests bounded by `limiter`.
pub fn bounded(router: Router, limiter: Arc<Limiter>) -> Router {
    router.layer(axum::middleware::from_fn_with_state(limiter, limit))
}

async fn limit(State(limiter): State<Arc<Limiter>>, req: Request, next: Next) -> Response {
    let slot = match limiter.slots.try_acquire() {
        Ok(slot) => Some(slot),
        Err(_) => tokio::time::timeout(limiter.queue_timeout, limiter.slots.acquire())
            .await
            .ok()
            .and_then(Result::ok),
    };
    let Some(_slot) = slot else {
        let shed = limiter.shed.inc() + 1;
        // One line per 100 refusals: a flood must not become a flood of logs.
        if shed % 100 == 1 {
            tracing::warn!(
                max_in_flight = limiter.max,
                shed,
                "overloaded: request refused with 503"
            );
        }
        if req.version() < http::Version::HTTP_2 {
            drain(req.into_body()).await;
        }
        let mut response = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "overloaded: {} admission requests in flight; retry",
                limiter.max
            ),
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return response;
    };
    next.run(req).await
}

/// Reads and drops a refused request's body (HTTP/1.1). Unread, the connection is closed
/// while the client is still sending, and the client sees a broken pipe or a reset instead
/// of the 503. Chunk by chunk, nothing kept; bounded in time like any body, and in size.
async fn drain(mut body: axum::body::Body) {
    use http_body_util::BodyExt;
    let mut left = super::DEFAULT_BODY_LIMIT;
    let _ = tokio::time::timeout(super::BODY_TIMEOUT, async {
        while let Some(Ok(frame)) = body.frame().await {
            let Some(data) = frame.data_ref() else {
                continue;
            };
            match left.checked_sub(data.len()) {
                Some(rest) => left = rest,
                None => break,
            }
        }
    })
    .await;
}
