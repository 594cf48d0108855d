//! Bad input to the admission router, in process (no sockets): each case asserts the exact
//! outcome (status and message), nothing panics, and the same router answers a good review
//! afterwards. The table in docs/reliability.md lists these cases; keep them in step.
//! Socket-level cases (slow clients, idle connections, old TLS, HTTP/1.0) are in
//! `tests/hostile_clients.rs`.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use base64::Engine;
use http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Value, json};
use tower::ServiceExt;
use wi_webhook::admission::Admitter;
use wi_webhook::api::{self, AppState, limit};
use wi_webhook::config::MutationConfig;
use wi_webhook::policy::Policy;
use wi_webhook::serviceaccounts::{ServiceAccounts, store_of};

const TENANT: &str = "00000000-0000-0000-0000-000000000001";
const CLIENT_ID: &str = "6f1a3f4e-2b7c-4f0e-9a51-3c2d1e0f9a8b";
const NS: &str = "ado-agents-omtest1";
const SA: &str = "ado-agent-omtest1";
const LIMIT: usize = 64 * 1024;

fn state() -> Arc<AppState> {
    let sa = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(SA.into()),
            namespace: Some(NS.into()),
            annotations: Some(BTreeMap::from([(
                "azure.workload.identity/client-id".to_string(),
                CLIENT_ID.to_string(),
            )])),
            ..ObjectMeta::default()
        },
        ..ServiceAccount::default()
    };
    AppState::new(Admitter {
        config: MutationConfig::new(TENANT),
        service_accounts: ServiceAccounts::from_store(store_of([sa])),
        policy: Policy::default(),
    })
}

fn agent_pod() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "ado-agent-omtest1-7b8d79dd65-",
            "labels": {"azure.workload.identity/use": "true"}
        },
        "spec": {
            "serviceAccountName": SA,
            "containers": [{"name": "agent", "image": "example.azurecr.io/ado-agent:latest"}]
        }
    })
}

fn review(uid: &str, object: Value) -> Value {
    common::pod_review(uid, NS, object)
}

struct Answer {
    status: StatusCode,
    content_type: Option<String>,
    retry_after: Option<String>,
    body: Value,
}

async fn send(app: Router, method: Method, uri: &str, body: Body) -> Answer {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .expect("a request");
    let resp = app.oneshot(req).await.expect("the router never fails");
    let status = resp.status();
    let (content_type, retry_after) = {
        let header = |h: header::HeaderName| {
            resp.headers()
                .get(h)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        (header(header::CONTENT_TYPE), header(header::RETRY_AFTER))
    };
    let bytes = resp.into_body().collect().await.expect("a body").to_bytes();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)));
    Answer {
        status,
        content_type,
        retry_after,
        body,
    }
}

async fn post(state: &Arc<AppState>, body: Vec<u8>) -> Answer {
    send(
        api::router(state.clone(), LIMIT),
        Method::POST,
        "/mutate",
        Body::from(body),
    )
    .await
}

/// The router still decides a good review: 200 and the identity patch.
async fn still_serving(state: &Arc<AppState>) {
    let answer = post(
        state,
        serde_json::to_vec(&review("uid-good", agent_pod())).unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["response"]["uid"], "uid-good");
    assert_eq!(answer.body["response"]["allowed"], json!(true));
    let patch = base64::engine::general_purpose::STANDARD
        .decode(answer.body["response"]["patch"].as_str().expect("a patch"))
        .unwrap();
    assert!(String::from_utf8(patch).unwrap().contains(CLIENT_ID));
}

/// `(case, body, message)`: 400 answers carry `{"error": message, "code": 400}`.
fn refused_cases() -> Vec<(&'static str, Vec<u8>, String)> {
    let good = review("uid-1", agent_pod());
    let with = |f: &dyn Fn(&mut Value)| {
        let mut v = good.clone();
        f(&mut v);
        serde_json::to_vec(&v).unwrap()
    };
    let nested = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let mut deep = serde_json::to_vec(&good).unwrap();
    // The pod's labels become 10,000 nested arrays (20 KB, under the limit).
    let text = String::from_utf8(deep.clone())
        .unwrap()
        .replace(r#"{"azure.workload.identity/use":"true"}"#, &nested);
    deep = text.into_bytes();
    let mut bad_utf8 = serde_json::to_vec(&good).unwrap();
    let at = bad_utf8.windows(5).position(|w| w == b"agent").unwrap();
    bad_utf8[at] = 0xff;
    // In the image, a field the mutating path skips without keeping it.
    let mut bad_utf8_skipped = serde_json::to_vec(&good).unwrap();
    let image = bad_utf8_skipped
        .windows(7)
        .position(|w| w == b"example")
        .unwrap();
    bad_utf8_skipped[image] = 0xc3;
    let cases = vec![
        (
            "empty body",
            Vec::new(),
            "body is not an AdmissionReview: EOF while parsing a value at line 1 column 0",
        ),
        (
            "not JSON",
            b"this is not json".to_vec(),
            "body is not an AdmissionReview: expected ident at line 1 column 2",
        ),
        (
            "JSON, not an AdmissionReview",
            br#"{"hello": "world"}"#.to_vec(),
            "body is not an AdmissionReview: missing field `apiVersion` at line 1 column 18",
        ),
        (
            "JSON array",
            b"[1, 2, 3]".to_vec(),
            "body is not an AdmissionReview: invalid type: sequence, expected struct AdmissionReview at line 1 column 0",
        ),
        (
            "kind is not AdmissionReview",
            with(&|v| v["kind"] = json!("Pod")),
            "expected kind AdmissionReview in admission.k8s.io/v1 or admission.k8s.io/v1beta1, got kind \"Pod\" apiVersion \"admission.k8s.io/v1\"",
        ),
        (
            "missing request",
            with(&|v| {
                v.as_object_mut().unwrap().remove("request");
            }),
            "AdmissionReview has no request",
        ),
        (
            "request is null",
            with(&|v| v["request"] = Value::Null),
            "AdmissionReview has no request",
        ),
        (
            "missing uid",
            with(&|v| {
                v["request"].as_object_mut().unwrap().remove("uid");
            }),
            "body is not an AdmissionReview: missing field `uid` at line 1 column 591",
        ),
        (
            "empty uid",
            with(&|v| v["request"]["uid"] = json!("")),
            "AdmissionReview request has no uid",
        ),
        (
            "uid is a number",
            with(&|v| v["request"]["uid"] = json!(7)),
            "body is not an AdmissionReview: invalid type: integer `7`, expected a string at line 1 column 79",
        ),
        (
            "missing object on a pod CREATE",
            with(&|v| {
                v["request"].as_object_mut().unwrap().remove("object");
            }),
            "CREATE of a Pod without request.object",
        ),
        (
            "object is null on a pod CREATE",
            with(&|v| v["request"]["object"] = Value::Null),
            "CREATE of a Pod without request.object",
        ),
        (
            "unknown operation",
            with(&|v| v["request"]["operation"] = json!("PATCH")),
            "body is not an AdmissionReview: unknown variant `PATCH`, expected one of `CREATE`, `UPDATE`, `DELETE`, `CONNECT` at line 1 column 243",
        ),
        (
            "no namespace anywhere",
            with(&|v| {
                v["request"].as_object_mut().unwrap().remove("namespace");
            }),
            "Pod request has no namespace",
        ),
        (
            "duplicate key in the request (uid twice)",
            {
                let text = String::from_utf8(serde_json::to_vec(&good).unwrap()).unwrap();
                text.replacen(r#""uid":"uid-1""#, r#""uid":"uid-1","uid":"uid-2""#, 1)
                    .into_bytes()
            },
            "body is not an AdmissionReview: duplicate field `uid` at line 1 column 91",
        ),
        (
            "deeply nested JSON (10,000 levels)",
            deep,
            "body is not an AdmissionReview: recursion limit exceeded at line 1 column 560",
        ),
        (
            "invalid UTF-8 in a string",
            bad_utf8,
            "body is not an AdmissionReview: invalid UTF-8 at line 1 column 209",
        ),
        (
            "trailing garbage after the review",
            {
                let mut b = serde_json::to_vec(&good).unwrap();
                b.extend_from_slice(b" {}");
                b
            },
            "body is not an AdmissionReview: trailing characters at line 1 column 608",
        ),
    ];
    let mut cases: Vec<_> = cases
        .into_iter()
        .map(|(case, body, message)| (case, body, message.to_string()))
        .collect();
    cases.push((
        "invalid UTF-8 in a string the mutating path skips",
        bad_utf8_skipped,
        format!(
            "body is not an AdmissionReview: invalid UTF-8 at line 1 column {}",
            image + 1
        ),
    ));
    cases
}

#[tokio::test]
async fn malformed_bodies_get_400_with_the_exact_message_and_the_router_keeps_serving() {
    let state = state();
    let mut failures = Vec::new();
    for (case, body, message) in refused_cases() {
        let answer = post(&state, body).await;
        let expected = json!({"error": message, "code": 400});
        if answer.status != StatusCode::BAD_REQUEST
            || answer.body != expected
            || answer.content_type.as_deref() != Some("application/json")
        {
            failures.push(format!("{case}: got {} {}", answer.status, answer.body));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    still_serving(&state).await;
}

/// Well-formed reviews with wrong types inside the pod: answered 200 with a denial that names
/// the field (fail closed), never a patch.
#[tokio::test]
async fn wrong_types_in_known_pod_fields_are_denied_naming_the_field() {
    let state = state();
    let pod_name = "pod ado-agents-omtest1/ado-agent-omtest1-7b8d79dd65-*";
    let cases: Vec<(&str, Value, String)> = vec![
        (
            "containers as a string",
            json!("agent"),
            format!("[pod-shape] {pod_name}: spec.containers must be a list; fix the manifest"),
        ),
        (
            "env as an object",
            json!([{"name": "agent", "image": "x", "env": {"A": "1"}}]),
            format!(
                "[pod-shape] {pod_name}: spec.containers[0].env must be a list; fix the manifest"
            ),
        ),
        (
            "container is a number",
            json!([7]),
            format!(
                "[pod-shape] {pod_name}: spec.containers[0] must be an object; fix the manifest"
            ),
        ),
    ];
    for (case, containers, message) in cases {
        let mut pod = agent_pod();
        pod["spec"]["containers"] = containers;
        let answer = post(&state, serde_json::to_vec(&review("uid-t", pod)).unwrap()).await;
        assert_eq!(answer.status, StatusCode::OK, "{case}: {}", answer.body);
        assert_eq!(
            answer.body["response"],
            json!({"uid": "uid-t", "allowed": false,
                   "status": {"code": 400, "message": message, "reason": "BadRequest"}}),
            "{case}"
        );
    }
    still_serving(&state).await;
}

/// What the API server never sends, but the webhook must not be fooled by: an object that is
/// not a Pod under the Pod resource, and a pod with a duplicated key.
#[tokio::test]
async fn objects_that_are_not_pods_under_the_pod_resource() {
    let state = state();
    // A ConfigMap under kind Pod: judged as a pod, and denied for having no spec.
    let config_map = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "cm", "labels": {"azure.workload.identity/use": "true"}},
        "data": {"a": "b"}
    });
    let answer = post(
        &state,
        serde_json::to_vec(&review("uid-cm", config_map)).unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(
        answer.body["response"],
        json!({"uid": "uid-cm", "allowed": false, "status": {"code": 400,
               "message": "[pod-shape] pod ado-agents-omtest1/cm: has no spec",
               "reason": "BadRequest"}})
    );
    // A string instead of an object.
    let answer = post(
        &state,
        serde_json::to_vec(&review("uid-str", json!("pod"))).unwrap(),
    )
    .await;
    assert_eq!(
        answer.body["response"],
        json!({"uid": "uid-str", "allowed": false, "status": {"code": 400,
               "message": "[pod-shape] pod ado-agents-omtest1/<unnamed>: not an object",
               "reason": "BadRequest"}})
    );
    // A duplicated `labels` key in the pod: the last one wins (as in the API server's own
    // decoding), here the one without the injection label.
    let text = String::from_utf8(serde_json::to_vec(&review("uid-dup", agent_pod())).unwrap())
        .unwrap()
        .replacen(
            r#""labels":{"azure.workload.identity/use":"true"}"#,
            r#""labels":{"azure.workload.identity/use":"true"},"labels":{"app":"x"}"#,
            1,
        );
    let answer = post(&state, text.into_bytes()).await;
    assert_eq!(
        answer.body["response"],
        json!({"uid": "uid-dup", "allowed": true, "status": {}}),
        "the last `labels` wins: not selected, no patch"
    );
    still_serving(&state).await;
}

#[tokio::test]
async fn bodies_at_the_limit_are_decided_and_one_byte_over_gets_413() {
    let state = state();
    let mut body = serde_json::to_vec(&review("uid-limit", agent_pod())).unwrap();
    // JSON allows trailing whitespace: pad to exactly the limit.
    body.resize(LIMIT, b' ');
    let answer = post(&state, body.clone()).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["response"]["uid"], "uid-limit");
    body.push(b' ');
    let answer = post(&state, body).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        answer.body,
        json!({"error": "Failed to buffer the request body: length limit exceeded", "code": 413})
    );
    still_serving(&state).await;
}

#[tokio::test]
async fn wrong_method_and_path_get_json_405_and_404() {
    let state = state();
    let app = || api::router(state.clone(), LIMIT);
    for (method, path, status, message) in [
        (
            Method::GET,
            "/mutate",
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed: use POST",
        ),
        (
            Method::PUT,
            "/validate",
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed: use POST",
        ),
        (
            Method::DELETE,
            "/mutate",
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed: use POST",
        ),
        (
            Method::POST,
            "/",
            StatusCode::NOT_FOUND,
            "no such path: use POST /mutate or POST /validate",
        ),
        (
            Method::POST,
            "/mutate/../metrics",
            StatusCode::NOT_FOUND,
            "no such path: use POST /mutate or POST /validate",
        ),
        (
            Method::GET,
            "/metrics",
            StatusCode::NOT_FOUND,
            "no such path: use POST /mutate or POST /validate",
        ),
    ] {
        let answer = send(app(), method.clone(), path, Body::empty()).await;
        assert_eq!(answer.status, status, "{method} {path}");
        assert_eq!(
            answer.body,
            json!({"error": message, "code": status.as_u16()}),
            "{method} {path}"
        );
    }
    still_serving(&state).await;
}

/// A body that never finishes: 408 once BODY_TIMEOUT (10 s) passes.
#[tokio::test]
async fn a_body_that_trickles_gets_408_after_the_body_timeout() {
    let state = state();
    let (tx, rx) =
        futures::channel::mpsc::channel::<Result<hyper::body::Frame<Bytes>, std::io::Error>>(1);
    let mut tx = tx;
    tx.try_send(Ok(hyper::body::Frame::data(Bytes::from_static(
        b"{\"apiVersion\"",
    ))))
    .unwrap();
    let body = Body::new(http_body_util::StreamBody::new(rx));
    let started = tokio::time::Instant::now();
    let answer = send(
        api::router(state.clone(), LIMIT),
        Method::POST,
        "/mutate",
        body,
    )
    .await;
    assert_eq!(answer.status, StatusCode::REQUEST_TIMEOUT);
    assert_eq!(
        answer.body,
        json!({"error": "request body not received in time", "code": 408})
    );
    assert!(started.elapsed() >= api::BODY_TIMEOUT);
    drop(tx);
    still_serving(&state).await;
}

/// Beyond `max_in_flight`, a request waits `queue_timeout` for a slot, then gets 503 JSON with
/// Retry-After; once the slots free up, requests are decided again.
#[tokio::test]
async fn beyond_the_concurrency_limit_requests_get_503_then_recover() {
    let state = state();
    let limiter = limit::Limiter::counted(
        2,
        Duration::from_millis(500),
        state.metrics.shed_requests.clone(),
    );
    let app = || limit::bounded(api::router(state.clone(), LIMIT), limiter.clone());
    // Two requests whose bodies never arrive hold both slots.
    let mut held = Vec::new();
    for _ in 0..2 {
        let (tx, rx) =
            futures::channel::mpsc::channel::<Result<hyper::body::Frame<Bytes>, std::io::Error>>(1);
        let body = Body::new(http_body_util::StreamBody::new(rx));
        let task = tokio::spawn(send(app(), Method::POST, "/mutate", body));
        held.push((tx, task));
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(limiter.in_flight(), 2);
    let good = serde_json::to_vec(&review("uid-q", agent_pod())).unwrap();
    let answer = send(app(), Method::POST, "/mutate", Body::from(good.clone())).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.retry_after.as_deref(), Some("1"));
    assert_eq!(
        answer.body,
        json!({"error": "overloaded: 2 admission requests in flight; retry", "code": 503})
    );
    assert_eq!(limiter.shed(), 1);
    // Counted in the webhook's metrics (alerts watch it).
    assert!(
        state
            .metrics
            .encode()
            .contains("wi_webhook_shed_requests_total 1\n"),
        "{}",
        state.metrics.encode()
    );
    // A request that finds a slot within the queue timeout is decided: free one slot.
    let waiting = tokio::spawn(send(
        app(),
        Method::POST,
        "/mutate",
        Body::from(good.clone()),
    ));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (tx, task) = held.pop().unwrap();
    drop(tx);
    let _ = task.await.unwrap();
    let answer = waiting.await.unwrap();
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    // Everything released: decided again, nothing shed.
    let (tx, task) = held.pop().unwrap();
    drop(tx);
    let _ = task.await.unwrap();
    assert_eq!(limiter.in_flight(), 0);
    let answer = send(app(), Method::POST, "/mutate", Body::from(good)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(limiter.shed(), 1);
}
