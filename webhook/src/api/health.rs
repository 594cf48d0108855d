//! The plain-HTTP operations port: `/metrics`, `/healthz`, `/readyz`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use http::{StatusCode, header};

use super::AppState;

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// `/healthz` and `/readyz` alone, for a separate probe address (`--health-addr`).
pub fn probes(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let cached = state.admitter.service_accounts.cached();
    state.metrics.serviceaccounts.set(cached as i64);
    let index = state.admitter.policy.snapshot();
    state.metrics.pools.set(index.len() as i64);
    state
        .metrics
        .pool_conflicts
        .set(index.conflicted_pools() as i64);
    let synced = state.ready.load(std::sync::atomic::Ordering::Acquire);
    state.metrics.caches_synced.set(i64::from(synced));
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

async fn readyz(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    if state.is_ready() {
        (StatusCode::OK, "ready")
    } else if !state.ready.load(std::sync::atomic::Ordering::Acquire) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "caches not synced (ServiceAccounts, AgentPools)",
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "serving certificate not in place (self-managed: caBundle not written yet)",
        )
    }
}
