//! The admission and health routers driven in process (`tower::ServiceExt::oneshot`, no
//! sockets): the AdmissionReview contract as the API server sees it.

mod common;
use common::service_account;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::Body;
use base64::Engine;
use http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;
use wi_webhook::admission::Admitter;
use wi_webhook::api::{self, AppState};
use wi_webhook::config::MutationConfig;
use wi_webhook::policy::Policy;
use wi_webhook::serviceaccounts::{ServiceAccounts, store_of};

const TENANT: &str = "00000000-0000-0000-0000-000000000001";
const CLIENT_ID: &str = "6f1a3f4e-2b7c-4f0e-9a51-3c2d1e0f9a8b";
const DEFAULT_CLIENT_ID: &str = "44444444-4444-4444-4444-444444444444";
const NS: &str = "ado-agents-omtest1";
const SA: &str = "ado-agent-omtest1";
const LIMIT: usize = 64 * 1024;

/// The cluster of these tests: the seed's ServiceAccount, and an annotated `default` one.
fn state() -> Arc<AppState> {
    let accounts = [
        service_account(NS, SA, &[("azure.workload.identity/client-id", CLIENT_ID)]),
        service_account(
            NS,
            "default",
            &[("azure.workload.identity/client-id", DEFAULT_CLIENT_ID)],
        ),
    ];
    AppState::new(Admitter {
        config: MutationConfig::new(TENANT),
        service_accounts: ServiceAccounts::from_store(store_of(accounts)),
        policy: Policy::default(),
    })
}

fn app(state: &Arc<AppState>) -> Router {
    api::router(state.clone(), LIMIT)
}

/// The seed's agent pod as a ReplicaSet sends it: no name, no namespace, a generateName.
fn agent_pod() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "ado-agent-omtest1-7b8d79dd65-",
            "labels": {"app": "ado-agent-omtest1", "azure.workload.identity/use": "true"},
            "annotations": {"azure.workload.identity/inject-proxy-sidecar": "true"}
        },
        "spec": {
            "serviceAccountName": SA,
            "containers": [{
                "name": "ado-agent-omtest1",
                "image": "example.azurecr.io/ado-agent:latest",
                "envFrom": [{"secretRef": {"name": "ado-agent-omtest1"}}],
                "volumeMounts": [{"name": "temp-data", "mountPath": "/mnt/work"}]
            }],
            "volumes": [{"name": "temp-data", "emptyDir": {"sizeLimit": "4Gi"}}]
        }
    })
}

fn request(uid: &str, operation: &str, object: Option<Value>) -> Value {
    let mut req = json!({
        "uid": uid,
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
        "requestResource": {"group": "", "version": "v1", "resource": "pods"},
        "namespace": NS,
        "operation": operation,
        "userInfo": {
            "username": "system:serviceaccount:kube-system:replicaset-controller",
            "groups": ["system:serviceaccounts", "system:authenticated"]
        },
        "dryRun": false,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
    });
    if let Some(o) = object {
        req["object"] = o;
    }
    req
}

fn review(api_version: &str, request: Value) -> Value {
    json!({"apiVersion": api_version, "kind": "AdmissionReview", "request": request})
}

fn create(uid: &str, pod: Value) -> Value {
    review("admission.k8s.io/v1", request(uid, "CREATE", Some(pod)))
}

struct Answer {
    status: StatusCode,
    content_type: Option<String>,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "answer is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The AdmissionResponse of a 200 answer.
    fn response(&self) -> Value {
        assert_eq!(
            self.status,
            StatusCode::OK,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(self.content_type.as_deref(), Some("application/json"));
        self.json()["response"].clone()
    }
}

async fn send(app: Router, method: Method, uri: &str, body: impl Into<Body>) -> Answer {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.into())
        .expect("a request");
    let resp = app.oneshot(req).await.expect("the router never fails");
    let status = resp.status();
    let content_type = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = resp
        .into_body()
        .collect()
        .await
        .expect("a body")
        .to_bytes()
        .to_vec();
    Answer {
        status,
        content_type,
        body,
    }
}

async fn post(state: &Arc<AppState>, body: &Value) -> Answer {
    send(
        app(state),
        Method::POST,
        "/mutate",
        serde_json::to_vec(body).unwrap(),
    )
    .await
}

/// Decodes the base64 JSONPatch of an allowed response.
fn patch_of(response: &Value) -> json_patch::Patch {
    assert_eq!(response["allowed"], json!(true), "{response}");
    assert_eq!(response["patchType"], json!("JSONPatch"), "{response}");
    let b64 = response["patch"]
        .as_str()
        .unwrap_or_else(|| panic!("patch must be a base64 string: {}", response["patch"]));
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("standard base64");
    serde_json::from_slice(&bytes).expect("a JSON Patch")
}

fn apply(mut pod: Value, patch: &json_patch::Patch) -> Value {
    json_patch::patch(&mut pod, &patch.0).expect("the patch applies to the pod it was made for");
    pod
}

fn env_names(container: &Value) -> Vec<&str> {
    container["env"]
        .as_array()
        .map(|e| e.iter().filter_map(|v| v["name"].as_str()).collect())
        .unwrap_or_default()
}

fn env_value<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    container["env"]
        .as_array()?
        .iter()
        .find(|v| v["name"] == name)?["value"]
        .as_str()
}

fn no_patch(response: &Value) {
    assert_eq!(response["allowed"], json!(true), "{response}");
    assert!(response.get("patch").is_none(), "{response}");
    assert!(response.get("patchType").is_none(), "{response}");
}

#[tokio::test]
async fn v1_create_of_a_labelled_pod_is_answered_with_a_base64_json_patch() {
    let state = state();
    let answer = post(&state, &create("uid-v1-create", agent_pod())).await;
    let whole = answer.json();
    assert_eq!(whole["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(whole["kind"], "AdmissionReview");
    let response = answer.response();
    assert_eq!(response["uid"], "uid-v1-create");
    let patch = patch_of(&response);
    assert!(
        patch
            .0
            .iter()
            .all(|op| matches!(op, json_patch::PatchOperation::Add(_))),
        "only add operations: {patch:?}"
    );

    let pod = apply(agent_pod(), &patch);
    let spec = &pod["spec"];
    let inits = spec["initContainers"].as_array().expect("init containers");
    let names: Vec<&str> = inits.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["azwi-proxy-init", "azwi-proxy"]);
    assert_eq!(env_names(&inits[0])[0], "PROXY_PORT");
    assert_eq!(env_value(&inits[0], "PROXY_PORT"), Some("8000"));
    assert_eq!(inits[1]["restartPolicy"], "Always");

    let agent = &spec["containers"][0];
    assert_eq!(agent["name"], "ado-agent-omtest1");
    assert_eq!(
        env_names(agent),
        [
            "AZURE_CLIENT_ID",
            "AZURE_TENANT_ID",
            "AZURE_FEDERATED_TOKEN_FILE",
            "AZURE_AUTHORITY_HOST"
        ]
    );
    assert_eq!(env_value(agent, "AZURE_CLIENT_ID"), Some(CLIENT_ID));
    assert_eq!(env_value(agent, "AZURE_TENANT_ID"), Some(TENANT));
    assert_eq!(
        env_value(agent, "AZURE_FEDERATED_TOKEN_FILE"),
        Some("/var/run/secrets/azure/tokens/azure-identity-token")
    );
    assert_eq!(
        env_value(agent, "AZURE_AUTHORITY_HOST"),
        Some("https://login.microsoftonline.com/")
    );
    assert_eq!(
        agent["volumeMounts"],
        json!([
            {"name": "temp-data", "mountPath": "/mnt/work"},
            {"name": "azure-identity-token", "mountPath": "/var/run/secrets/azure/tokens", "readOnly": true}
        ])
    );
    assert_eq!(
        spec["volumes"][1],
        json!({"name": "azure-identity-token", "projected": {"sources": [{"serviceAccountToken": {
            "audience": "api://AzureADTokenExchange",
            "expirationSeconds": 3600,
            "path": "azure-identity-token"
        }}]}})
    );
    // The pod as sent is unchanged apart from what the patch adds.
    assert_eq!(pod["metadata"], agent_pod()["metadata"]);
    assert_eq!(
        pod["spec"]["containers"][0]["envFrom"],
        agent_pod()["spec"]["containers"][0]["envFrom"]
    );
}

#[tokio::test]
async fn v1beta1_is_answered_in_v1beta1() {
    let state = state();
    let body = review(
        "admission.k8s.io/v1beta1",
        request("uid-beta", "CREATE", Some(agent_pod())),
    );
    let answer = post(&state, &body).await;
    let whole = answer.json();
    assert_eq!(whole["apiVersion"], "admission.k8s.io/v1beta1");
    assert_eq!(whole["kind"], "AdmissionReview");
    let response = answer.response();
    assert_eq!(response["uid"], "uid-beta");
    let pod = apply(agent_pod(), &patch_of(&response));
    assert_eq!(pod["spec"]["initContainers"][0]["name"], "azwi-proxy-init");
}

#[tokio::test]
async fn update_and_delete_are_allowed_without_a_patch() {
    let state = state();
    let mut update = request("uid-update", "UPDATE", Some(agent_pod()));
    update["oldObject"] = agent_pod();
    update["options"] = json!({"apiVersion": "meta.k8s.io/v1", "kind": "UpdateOptions"});
    let mut delete = request("uid-delete", "DELETE", None);
    delete["oldObject"] = agent_pod();
    delete["options"] = json!({"apiVersion": "meta.k8s.io/v1", "kind": "DeleteOptions"});
    for (uid, req) in [("uid-update", update), ("uid-delete", delete)] {
        let response = post(&state, &review("admission.k8s.io/v1", req))
            .await
            .response();
        assert_eq!(response["uid"], uid);
        no_patch(&response);
    }
}

#[tokio::test]
async fn objects_that_are_not_pods_are_allowed_without_a_patch() {
    let state = state();
    // A Deployment whose template would be mutated if it were a pod.
    let deployment = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "ado-agent-omtest1", "namespace": NS},
        "spec": {"template": agent_pod()}
    });
    let mut req = request("uid-deploy", "CREATE", Some(deployment));
    req["kind"] = json!({"group": "apps", "version": "v1", "kind": "Deployment"});
    req["resource"] = json!({"group": "apps", "version": "v1", "resource": "deployments"});
    req["requestKind"] = req["kind"].clone();
    req["requestResource"] = req["resource"].clone();
    let response = post(&state, &review("admission.k8s.io/v1", req))
        .await
        .response();
    assert_eq!(response["uid"], "uid-deploy");
    no_patch(&response);

    // A pod-shaped object under another kind is not a Pod either.
    let mut req = request("uid-configmap", "CREATE", Some(agent_pod()));
    req["kind"] = json!({"group": "", "version": "v1", "kind": "ConfigMap"});
    req["resource"] = json!({"group": "", "version": "v1", "resource": "configmaps"});
    let response = post(&state, &review("admission.k8s.io/v1", req))
        .await
        .response();
    no_patch(&response);
}

#[tokio::test]
async fn the_request_namespace_wins_over_the_object_namespace() {
    let state = state();
    let mut pod = agent_pod();
    // The ServiceAccount exists only in the request's namespace.
    pod["metadata"]["namespace"] = json!("elsewhere");
    let response = post(&state, &create("uid-ns", pod.clone()))
        .await
        .response();
    let mutated = apply(pod, &patch_of(&response));
    assert_eq!(
        env_value(&mutated["spec"]["containers"][0], "AZURE_CLIENT_ID"),
        Some(CLIENT_ID)
    );

    // And the other way round: the object names the right namespace, the request does not.
    let mut pod = agent_pod();
    pod["metadata"]["namespace"] = json!(NS);
    let mut req = request("uid-ns-2", "CREATE", Some(pod));
    req["namespace"] = json!("elsewhere");
    let response = post(&state, &review("admission.k8s.io/v1", req))
        .await
        .response();
    assert_eq!(response["allowed"], json!(false), "{response}");
    let message = response["status"]["message"].as_str().unwrap();
    assert!(message.contains("elsewhere/ado-agent-omtest1"), "{message}");
}

#[tokio::test]
async fn an_empty_service_account_name_uses_default() {
    let state = state();
    for sa in [json!(""), Value::Null] {
        let mut pod = agent_pod();
        match sa {
            Value::Null => {
                pod["spec"]
                    .as_object_mut()
                    .unwrap()
                    .remove("serviceAccountName");
            }
            name => pod["spec"]["serviceAccountName"] = name,
        }
        let response = post(&state, &create("uid-default-sa", pod.clone()))
            .await
            .response();
        let mutated = apply(pod, &patch_of(&response));
        assert_eq!(
            env_value(&mutated["spec"]["containers"][0], "AZURE_CLIENT_ID"),
            Some(DEFAULT_CLIENT_ID)
        );
    }
}

#[tokio::test]
async fn dry_run_gets_the_same_answer_and_is_counted_as_dry_run() {
    let state = state();
    let real = post(&state, &create("uid-dry", agent_pod()))
        .await
        .response();
    let mut dry_body = create("uid-dry", agent_pod());
    dry_body["request"]["dryRun"] = json!(true);
    let dry = post(&state, &dry_body).await.response();
    assert_eq!(dry, real, "a dry run is answered exactly as a real request");
    assert!(patch_of(&dry).0.len() > 3);

    let metrics = send(
        api::health::router(state.clone()),
        Method::GET,
        "/metrics",
        Body::empty(),
    )
    .await;
    assert_eq!(metrics.status, StatusCode::OK);
    let text = String::from_utf8(metrics.body).unwrap();
    let counted = |dry_run: &str| {
        text.lines().any(|l| {
            l.starts_with("wi_webhook_admissions_total{")
                && l.contains(r#"decision="mutated""#)
                && l.contains(r#"operation="CREATE""#)
                && l.contains(&format!(r#"dry_run="{dry_run}""#))
                && l.ends_with(" 1")
        })
    };
    assert!(counted("true"), "no dry-run admission counted:\n{text}");
    assert!(counted("false"), "no real admission counted:\n{text}");
}

#[tokio::test]
async fn denials_carry_a_code_and_a_one_line_message_with_the_rule() {
    let state = state();
    let mut bad_expiration = agent_pod();
    bad_expiration["metadata"]["name"] = json!("agent-0");
    bad_expiration["metadata"]["annotations"]["azure.workload.identity/service-account-token-expiration"] =
        json!("60");
    let mut missing_sa = agent_pod();
    missing_sa["spec"]["serviceAccountName"] = json!("nobody");
    let mut bad_port = agent_pod();
    bad_port["metadata"]["annotations"]["azure.workload.identity/proxy-sidecar-port"] =
        json!("70000");
    let mut host_network = agent_pod();
    host_network["spec"]["hostNetwork"] = json!(true);
    let mut bad_shape = agent_pod();
    bad_shape["spec"]["containers"] = json!("not a list");

    for (uid, pod, code, needles) in [
        (
            "uid-exp",
            bad_expiration,
            400,
            &[
                "[token-expiration]",
                "ado-agents-omtest1/agent-0",
                "azure.workload.identity/service-account-token-expiration",
                "\"60\"",
                "3600..=86400",
            ][..],
        ),
        (
            "uid-sa",
            missing_sa,
            404,
            &[
                "[service-account]",
                "ServiceAccount ado-agents-omtest1/nobody",
            ][..],
        ),
        (
            "uid-port",
            bad_port,
            400,
            &["[proxy-port]", "\"70000\"", "1..65535"][..],
        ),
        (
            "uid-host",
            host_network,
            400,
            &["[proxy-host-network]", "hostNetwork"][..],
        ),
        (
            "uid-shape",
            bad_shape,
            400,
            &["[pod-shape]", "spec.containers"][..],
        ),
    ] {
        let response = post(&state, &create(uid, pod)).await.response();
        assert_eq!(response["uid"], uid);
        assert_eq!(response["allowed"], json!(false), "{response}");
        assert!(response.get("patch").is_none(), "{response}");
        assert_eq!(response["status"]["code"], json!(code), "{response}");
        let message = response["status"]["message"].as_str().expect("a message");
        assert!(!message.contains('\n'), "one line: {message:?}");
        for needle in needles {
            assert!(
                message.contains(needle),
                "{uid}: {needle:?} not in {message:?}"
            );
        }
    }
}

fn assert_json_error(answer: &Answer, status: StatusCode) {
    assert_eq!(
        answer.status,
        status,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(answer.content_type.as_deref(), Some("application/json"));
    let body = answer.json();
    assert_eq!(body["code"], json!(status.as_u16()), "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{body}"
    );
}

#[tokio::test]
async fn bodies_that_are_not_admission_reviews_get_400_with_a_json_error() {
    let state = state();
    let good = create("uid-good", agent_pod());
    let mut wrong_kind = good.clone();
    wrong_kind["kind"] = json!("Pod");
    let mut wrong_version = good.clone();
    wrong_version["apiVersion"] = json!("admission.k8s.io/v2");
    let no_request = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"});
    let mut empty_uid = good.clone();
    empty_uid["request"]["uid"] = json!("");
    let mut create_without_object = good.clone();
    create_without_object["request"]
        .as_object_mut()
        .unwrap()
        .remove("object");

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("not JSON", b"this is not json".to_vec()),
        ("empty body", Vec::new()),
        ("JSON, not a review", br#"{"hello": "world"}"#.to_vec()),
        ("JSON array", b"[1, 2, 3]".to_vec()),
        ("wrong kind", serde_json::to_vec(&wrong_kind).unwrap()),
        (
            "wrong apiVersion",
            serde_json::to_vec(&wrong_version).unwrap(),
        ),
        ("missing request", serde_json::to_vec(&no_request).unwrap()),
        ("empty uid", serde_json::to_vec(&empty_uid).unwrap()),
        (
            "CREATE without object",
            serde_json::to_vec(&create_without_object).unwrap(),
        ),
    ];
    for (what, body) in cases {
        let answer = send(app(&state), Method::POST, "/mutate", body).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{what}");
        assert_json_error(&answer, StatusCode::BAD_REQUEST);
    }
    // The same router still answers a good review afterwards.
    let response = post(&state, &good).await.response();
    assert_eq!(response["uid"], "uid-good");
}

#[tokio::test]
async fn a_body_over_the_limit_gets_413_with_a_json_error() {
    let state = state();
    let limit = 4096;
    let mut big = create("uid-big", agent_pod());
    big["request"]["object"]["metadata"]["annotations"]["padding"] = json!("x".repeat(limit));
    let body = serde_json::to_vec(&big).unwrap();
    assert!(body.len() > limit);
    let answer = send(
        api::router(state.clone(), limit),
        Method::POST,
        "/mutate",
        body,
    )
    .await;
    assert_json_error(&answer, StatusCode::PAYLOAD_TOO_LARGE);

    // Under the limit, the same router answers.
    let small = serde_json::to_vec(&create("uid-small", agent_pod())).unwrap();
    assert!(small.len() < limit);
    let answer = send(
        api::router(state.clone(), limit),
        Method::POST,
        "/mutate",
        small,
    )
    .await;
    assert_eq!(answer.response()["uid"], "uid-small");
}

#[tokio::test]
async fn wrong_method_is_405_and_unknown_path_is_404() {
    let state = state();
    let get = send(app(&state), Method::GET, "/mutate", Body::empty()).await;
    assert_eq!(get.status, StatusCode::METHOD_NOT_ALLOWED);
    let put = send(app(&state), Method::PUT, "/mutate", Body::empty()).await;
    assert_eq!(put.status, StatusCode::METHOD_NOT_ALLOWED);
    let body = serde_json::to_vec(&create("uid-404", agent_pod())).unwrap();
    let unknown = send(app(&state), Method::POST, "/no-such-path", body).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn readyz_follows_the_ready_flag_and_healthz_is_always_ok() {
    let state = state();
    let health = || api::health::router(state.clone());
    let ready = send(health(), Method::GET, "/readyz", Body::empty()).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    let healthz = send(health(), Method::GET, "/healthz", Body::empty()).await;
    assert_eq!(healthz.status, StatusCode::OK);

    state.ready.store(true, Ordering::Release);
    let ready = send(health(), Method::GET, "/readyz", Body::empty()).await;
    assert_eq!(ready.status, StatusCode::OK);
    let healthz = send(health(), Method::GET, "/healthz", Body::empty()).await;
    assert_eq!(healthz.status, StatusCode::OK);

    state.ready.store(false, Ordering::Release);
    let ready = send(health(), Method::GET, "/readyz", Body::empty()).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
}

/// Upstream's webhook configuration calls `/mutate-v1-pod`: the same decision as `/mutate`,
/// so that a configuration kept from upstream works during a cut-over.
#[tokio::test]
async fn upstream_path_mutate_v1_pod_is_the_mutation() {
    let state = state();
    let body = serde_json::to_vec(&create("uid-upstream-path", agent_pod())).unwrap();
    let ours = send(app(&state), Method::POST, "/mutate", body.clone()).await;
    let upstreams = send(app(&state), Method::POST, "/mutate-v1-pod", body).await;
    let patch = patch_of(&upstreams.response());
    assert!(!patch.0.is_empty(), "the upstream path mutates");
    assert_eq!(patch, patch_of(&ours.response()));
}

/// `--health-addr` serves the probes alone: `/healthz`, `/readyz` following readiness, and
/// no `/metrics` (that stays on the metrics port).
#[tokio::test]
async fn probes_of_the_health_address() {
    let state = state();
    let probes = || api::health::probes(state.clone());
    let healthz = send(probes(), Method::GET, "/healthz", Body::empty()).await;
    assert_eq!(healthz.status, StatusCode::OK);
    let ready = send(probes(), Method::GET, "/readyz", Body::empty()).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    state.ready.store(true, Ordering::Release);
    let ready = send(probes(), Method::GET, "/readyz", Body::empty()).await;
    assert_eq!(ready.status, StatusCode::OK);
    let metrics = send(probes(), Method::GET, "/metrics", Body::empty()).await;
    assert_eq!(metrics.status, StatusCode::NOT_FOUND);
}
