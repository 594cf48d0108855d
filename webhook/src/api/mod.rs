//! HTTP: the admission router (served over TLS) and the plain health/metrics router.
//! Both are plain axum routers, so tests drive them without sockets.

pub mod error;
pub mod health;
pub mod limit;
pub mod tls;
mod wire;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http::{StatusCode, header};

use crate::admission::{Admitter, Outcome};
use crate::metrics::Metrics;
use crate::policy::events::{EventSink, Finding};
use error::ApiError;

pub const DEFAULT_BODY_LIMIT: usize = 4 * 1024 * 1024;

/// Shared by every request.
pub struct AppState {
    pub admitter: Admitter,
    pub metrics: Metrics,
    /// True once every cache has synced.
    pub ready: AtomicBool,
    /// The certificate condition of readiness: true unless the certificate source says
    /// otherwise (self-managed mode: false until the certificate is served and the
    /// caBundle holds its CA). Readiness is both.
    pub certs_ready: Arc<AtomicBool>,
    /// Audit- and Warn-mode findings become Events on the AgentPool.
    pub events: EventSink,
}

impl AppState {
    pub fn new(admitter: Admitter) -> Arc<Self> {
        Arc::new(AppState {
            admitter,
            metrics: Metrics::default(),
            ready: AtomicBool::new(false),
            certs_ready: Arc::new(AtomicBool::new(true)),
            events: EventSink::none(),
        })
    }

    /// The same, writing Events for findings that do not deny.
    pub fn with_events(admitter: Admitter, events: EventSink) -> Arc<Self> {
        Arc::new(AppState {
            admitter,
            metrics: Metrics::default(),
            ready: AtomicBool::new(false),
            certs_ready: Arc::new(AtomicBool::new(true)),
            events,
        })
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && self.certs_ready.load(Ordering::Acquire)
    }
}

/// The admission router: `POST /mutate` (injection and pool policy for selected pods),
/// `POST /validate` (pool policy for everything else) and `POST /paths` (the other paths to
/// a pool pod's token: shell access, TokenRequest, pod UPDATE, pods created by hand).
pub fn router(state: Arc<AppState>, body_limit: usize) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        // Upstream's path, so that its webhook configuration works unchanged during a cut-over.
        .route("/mutate-v1-pod", post(mutate))
        .route("/validate", post(validate))
        .route("/paths", post(paths))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no such path: use POST /mutate or POST /validate",
            )
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed: use POST",
            )
        })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn(request_timeout))
        .with_state(state)
}

/// A whole request, body included, has this long: a client trickling its body cannot hold a
/// connection (and a decision) open for ever. The API server's own webhook timeout is at
/// most 30 s.
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

async fn request_timeout(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(StatusCode::REQUEST_TIMEOUT, "request not complete in time")
            .into_response(),
    }
}

/// The body, once its headers are in, has this long to arrive (the API server sends it at
/// once): a client trickling it is answered 408 and its slot freed.
pub const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

async fn read_body(req: axum::extract::Request) -> Result<Bytes, ApiError> {
    match tokio::time::timeout(BODY_TIMEOUT, Bytes::from_request(req, &())).await {
        Ok(Ok(body)) => Ok(body),
        Ok(Err(rejection)) => Err(ApiError::new(rejection.status(), rejection.body_text())),
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request body not received in time",
        )),
    }
}

async fn mutate(state: State<Arc<AppState>>, req: axum::extract::Request) -> Response {
    answer(state, read_body(req).await, Endpoint::Mutate).await
}

async fn validate(state: State<Arc<AppState>>, req: axum::extract::Request) -> Response {
    answer(state, read_body(req).await, Endpoint::Validate).await
}

async fn paths(state: State<Arc<AppState>>, req: axum::extract::Request) -> Response {
    answer(state, read_body(req).await, Endpoint::Paths).await
}

#[derive(Clone, Copy)]
enum Endpoint {
    Mutate,
    Validate,
    /// Shell access, TokenRequest, pod UPDATE and pod origin in pool namespaces.
    Paths,
}

impl Endpoint {
    fn path(self) -> &'static str {
        match self {
            Endpoint::Mutate => "/mutate",
            Endpoint::Validate => "/validate",
            Endpoint::Paths => "/paths",
        }
    }
}

async fn answer(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, ApiError>,
    endpoint: Endpoint,
) -> Response {
    let started = Instant::now();
    let body = match body {
        Ok(b) => b,
        Err(refused) => {
            state.metrics.bad_requests.inc();
            tracing::warn!(status = refused.status.as_u16(), error = %refused.message, "request body refused");
            return refused.into_response();
        }
    };
    let outcome = match endpoint {
        Endpoint::Mutate => state.admitter.review(&body).await,
        Endpoint::Validate => state.admitter.review_validate(&body).await,
        Endpoint::Paths => state.admitter.review_paths(&body).await,
    };
    match outcome {
        Err(bad) => {
            state.metrics.bad_requests.inc();
            tracing::warn!(error = %bad, "not an AdmissionReview");
            ApiError::new(StatusCode::BAD_REQUEST, bad.0).into_response()
        }
        Ok(mut outcome) => {
            outcome.endpoint = endpoint.path();
            respond(&state, outcome, started)
        }
    }
}

/// Everything after a decision: the answer encoded, the metrics, the findings' Events and
/// the admission line. Public for the benchmarks' floor (a server that answers without
/// deciding, `wi-load budget`).
pub fn respond(state: &AppState, outcome: Outcome, started: Instant) -> Response {
    let encoded = wire::encode(&outcome.review);
    let seconds = started.elapsed().as_secs_f64();
    let decision = outcome.decision.as_str();
    state
        .metrics
        .record(decision, outcome.operation, outcome.dry_run, seconds);
    if outcome.denied() {
        // A pool denial counts under each Enforce rule that denied, not the generic one.
        let mut rules: Vec<&'static str> = outcome
            .violations
            .iter()
            .filter(|v| v.enforcement == crate::policy::crd::Enforcement::Enforce)
            .map(|v| v.rule)
            .collect();
        rules.sort_unstable();
        rules.dedup();
        if rules.is_empty() {
            state.metrics.denial(outcome.rule);
        }
        for rule in rules {
            state.metrics.denial(Some(rule));
        }
    }
    for v in &outcome.violations {
        state
            .metrics
            .violation(&v.pool, v.rule, v.enforcement.as_str());
        if !outcome.denied() {
            state.events.report(Finding {
                violation: v.clone(),
                object: format!("{} {}/{}", outcome.kind, outcome.namespace, outcome.name),
            });
        }
    }
    for g in &outcome.grants {
        state.metrics.grant(&g.pool, g.rule);
        tracing::warn!(pool = %g.pool, rule = g.rule, list = g.list, user = %g.user, subject = %g.subject, action = %g.action, "pool access granted by a break-glass list");
        state.events.grant(g.clone());
    }
    tracing::info!(
        uid = %outcome.uid,
        namespace = %outcome.namespace,
        kind = %outcome.kind,
        name = %outcome.name,
        operation = outcome.operation,
        pool = outcome.pool.as_deref().unwrap_or(""),
        violations = %outcome.violations.iter().map(|v| v.rule).collect::<Vec<_>>().join(","),
        decision,
        rule = outcome.rule.unwrap_or(""),
        dry_run = outcome.dry_run,
        user = outcome.user.as_deref().unwrap_or(""),
        endpoint = outcome.endpoint,
        latency_us = (seconds * 1e6) as u64,
        "admission"
    );
    match encoded {
        Ok(bytes) => ([(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(e) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the answer: {e}"),
        )
        .into_response(),
    }
}
