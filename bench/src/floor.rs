//! The floor: the webhook with its decision taken out. It reads the AdmissionReview as the
//! webhook does (`admission::decode`, kube-core's `AdmissionRequest`), but scans the pod
//! without keeping any of it, looks nothing up and checks nothing, and answers the patch,
//! warnings and audit annotations the webhook answers for the seed's pod, through the
//! webhook's own `api::respond` (encoding, metrics, the admission line). Its ratio to the
//! ceiling is the best a decision built on this stack could reach; what the webhook loses
//! beyond it is the decision's (`wi-load budget`).

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use http::StatusCode;
use kube::core::admission::AdmissionResponse;
use wi_webhook::admission::{self, Decision, Outcome, Unread};
use wi_webhook::api::{self, AppState};

/// What the webhook answers for the seed's pod, apart from the uid.
#[derive(Clone)]
struct Canned {
    patch: Vec<u8>,
    warnings: Option<Vec<String>>,
    audit_annotations: std::collections::HashMap<String, String>,
    pool: String,
}

impl Canned {
    /// Read back from the webhook's own answer, so the floor answers the same bytes.
    fn of(answer: &[u8], pool: &str) -> anyhow::Result<Canned> {
        let review: serde_json::Value = serde_json::from_slice(answer)?;
        let response = &review["response"];
        let patch = response["patch"]
            .as_str()
            .context("the webhook's answer carries a patch")?;
        Ok(Canned {
            patch: base64::engine::general_purpose::STANDARD.decode(patch)?,
            warnings: serde_json::from_value(response["warnings"].clone())?,
            audit_annotations: serde_json::from_value(response["auditAnnotations"].clone())
                .unwrap_or_default(),
            pool: pool.to_string(),
        })
    }
}

struct Floor {
    state: Arc<AppState>,
    canned: Canned,
}

/// The floor's router: `POST /mutate` as the webhook routes it, with its body limit and
/// timeout layers (`server::webhook_layers`).
pub fn router(state: Arc<AppState>, answer: &[u8], pool: &str) -> anyhow::Result<Router> {
    let floor = Arc::new(Floor {
        state,
        canned: Canned::of(answer, pool)?,
    });
    Ok(crate::server::webhook_layers(
        Router::new()
            .route("/mutate", post(mutate))
            .with_state(floor),
    ))
}

async fn mutate(State(floor): State<Arc<Floor>>, body: Bytes) -> Response {
    let started = Instant::now();
    let req = match admission::decode::<Unread>(&body) {
        Ok(req) => req,
        Err(bad) => return (StatusCode::BAD_REQUEST, bad.0).into_response(),
    };
    let canned = &floor.canned;
    let mut response = AdmissionResponse::from(&req);
    response.patch = Some(canned.patch.clone());
    response.warnings = canned.warnings.clone();
    response.audit_annotations = canned.audit_annotations.clone();
    let mut outcome = Outcome::of(&req);
    outcome.review = response.into_review();
    outcome.decision = Decision::Mutated;
    outcome.pool = Some(canned.pool.clone());
    api::respond(&floor.state, outcome, started)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn post(app: Router, body: Vec<u8>) -> (StatusCode, Bytes) {
        let req = Request::post("/mutate")
            .body(axum::body::Body::from(body))
            .unwrap();
        let resp = app.oneshot(req).await.unwrap();
        let status = resp.status();
        (status, resp.into_body().collect().await.unwrap().to_bytes())
    }

    #[tokio::test]
    async fn the_floor_answers_the_webhooks_bytes_without_deciding() {
        let body = crate::server::body(crate::server::PodKind::Seed);
        let answer = crate::server::canned_answer(&body).await.unwrap();
        let app = router(
            crate::server::webhook_state(),
            &answer,
            crate::fixtures::POOL,
        )
        .unwrap();
        let (status, got) = post(app.clone(), body.clone()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(got, answer, "the same bytes as the webhook");

        // The request's uid is the one answered: the review is read, not replayed.
        let mut review: serde_json::Value = serde_json::from_slice(&body).unwrap();
        review["request"]["uid"] = "another-uid".into();
        let (_, got) = post(app.clone(), serde_json::to_vec(&review).unwrap()).await;
        let got: serde_json::Value = serde_json::from_slice(&got).unwrap();
        assert_eq!(got["response"]["uid"], "another-uid");

        // What is not an AdmissionReview is refused, as by the webhook.
        let (status, _) = post(app, b"{\"kind\":\"Pod\"}".to_vec()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
}
