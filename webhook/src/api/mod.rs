//! HTTP: the admission router (served over TLS) and the plain health/metrics router.
//! Both are plain axum routers, so tests drive them without sockets.

pub mod error;
pub mod health;
pub mod tls;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http::{StatusCode, header};

use crate::admission::Admitter;
use crate::metrics::Metrics;
use error::ApiError;

pub const DEFAULT_BODY_LIMIT: usize = 4 * 1024 * 1024;

/// Shared by every request.
pub struct AppState {
    pub admitter: Admitter,
    pub metrics: Metrics,
    /// True once every cache has synced (and, later, a certificate is served).
    pub ready: AtomicBool,
}

impl AppState {
    pub fn new(admitter: Admitter) -> Arc<Self> {
        Arc::new(AppState {
            admitter,
            metrics: Metrics::default(),
            ready: AtomicBool::new(false),
        })
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

/// The admission router: `POST /mutate`.
pub fn router(state: Arc<AppState>, body_limit: usize) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

async fn mutate(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let body = match body {
        Ok(b) => b,
        Err(rejection) => {
            state.metrics.bad_requests.inc();
            let status = rejection.status();
            tracing::warn!(status = status.as_u16(), error = %rejection.body_text(), "request body refused");
            return ApiError::new(status, rejection.body_text()).into_response();
        }
    };
    match state.admitter.review(&body).await {
        Err(bad) => {
            state.metrics.bad_requests.inc();
            tracing::warn!(error = %bad, "not an AdmissionReview");
            ApiError::new(StatusCode::BAD_REQUEST, bad.0).into_response()
        }
        Ok(outcome) => {
            let encoded = serde_json::to_vec(&outcome.review);
            let seconds = started.elapsed().as_secs_f64();
            let decision = outcome.decision.as_str();
            state
                .metrics
                .record(decision, outcome.operation, outcome.dry_run, seconds);
            tracing::info!(
                uid = %outcome.uid,
                namespace = %outcome.namespace,
                pod = %outcome.pod,
                operation = outcome.operation,
                decision,
                rule = outcome.rule.unwrap_or(""),
                dry_run = outcome.dry_run,
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
    }
}
