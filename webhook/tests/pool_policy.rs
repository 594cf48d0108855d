//! The pool isolation policy through the admission routers, driven in process
//! (`tower::ServiceExt::oneshot`, no sockets), for what `wi-webhook mutate` cannot show: the
//! validating path (unlabelled pods, `kubectl debug`, workload templates at CREATE and UPDATE,
//! AgentPools themselves), the response's `warnings` and `auditAnnotations`, and the metric.
//!
//! Every way of obtaining another pool's identity listed in the issue has a test here that
//! asserts denial in Enforce mode; `tests/golden/pool-*` shows the same through `mutate`.
//!
//! The cluster of these tests: pool omtest1 (team platform, the seed's identity) and pool
//! payments (team payments), each with its namespace and ServiceAccount; namespace apps
//! belongs to no pool.
mod common;
use common::service_account;

use std::sync::Arc;

use axum::body::Body;
use base64::Engine;
use http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::ServiceAccount;
use serde_json::{Value, json};
use tower::ServiceExt;
use wi_webhook::admission::Admitter;
use wi_webhook::api::{self, AppState};
use wi_webhook::config::MutationConfig;
use wi_webhook::policy::crd::Enforcement;
use wi_webhook::policy::rules::rule;
use wi_webhook::policy::{Policy, Pool};
use wi_webhook::serviceaccounts::{ServiceAccounts, store_of};

const TENANT: &str = "00000000-0000-0000-0000-000000000001";
const POOL_TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const OM: &str = "6f1a3f4e-2b7c-4f0e-9a51-3c2d1e0f9a8b";
const PAY: &str = "0b7c2d1e-5a4f-4e3d-8c2b-1a0f9e8d7c6b";
const OM_NS: &str = "ado-agents-omtest1";
const OM_SA: &str = "ado-agent-omtest1";
const PAY_NS: &str = "ado-agents-payments";
const PAY_SA: &str = "ado-agent-payments";
const TOKEN_FILE: &str = "/var/run/secrets/azure/tokens/azure-identity-token";
const LIMIT: usize = 1024 * 1024;

fn omtest1(enforcement: Enforcement) -> Pool {
    Pool {
        name: "omtest1".into(),
        team: "platform".into(),
        client_id: OM.into(),
        tenant_id: Some(POOL_TENANT.into()),
        namespaces: vec![OM_NS.into()],
        service_accounts: vec![OM_SA.into()],
        enforcement,
        created: String::new(),
        access: Default::default(),
    }
}

fn payments(enforcement: Enforcement) -> Pool {
    Pool {
        name: "payments".into(),
        team: "payments".into(),
        client_id: PAY.into(),
        tenant_id: Some(POOL_TENANT.into()),
        namespaces: vec![PAY_NS.into()],
        service_accounts: vec![PAY_SA.into(), "nightly".into()],
        enforcement,
        created: String::new(),
        access: Default::default(),
    }
}

const CLIENT_ID_KEY: &str = "azure.workload.identity/client-id";

/// A cluster of these pools and ServiceAccounts.
fn cluster(pools: &[Pool], accounts: Vec<ServiceAccount>) -> Arc<AppState> {
    AppState::new(Admitter {
        config: MutationConfig::new(TENANT),
        service_accounts: ServiceAccounts::from_store(store_of(accounts)),
        policy: Policy::of(pools),
    })
}

/// The cluster with the given pools. payments' `nightly` ServiceAccount is annotated with
/// omtest1's identity (an attempt to take it); `apps/app` has no annotation.
fn state_with(pools: &[Pool]) -> Arc<AppState> {
    let accounts = vec![
        service_account(OM_NS, OM_SA, &[(CLIENT_ID_KEY, OM)]),
        service_account(PAY_NS, PAY_SA, &[(CLIENT_ID_KEY, PAY)]),
        service_account(PAY_NS, "nightly", &[(CLIENT_ID_KEY, OM)]),
        service_account("apps", "app", &[]),
    ];
    cluster(pools, accounts)
}

/// Both pools in one mode.
fn state(enforcement: Enforcement) -> Arc<AppState> {
    state_with(&[omtest1(enforcement), payments(enforcement)])
}

// ---------------------------------------------------------------------------------------------
// Objects

fn container(name: &str, env: Value) -> Value {
    json!({"name": name, "image": "example.azurecr.io/ado-agent:latest", "env": env})
}

/// A pod spec: `containers` with the given env on the `agent` container.
fn pod_with(name: &str, sa: &str, labelled: bool, env: Value) -> Value {
    let mut labels = json!({"app": "agent"});
    if labelled {
        labels["azure.workload.identity/use"] = json!("true");
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "serviceAccountName": sa,
            "containers": [container("agent", env)]
        }
    })
}

/// A pod that skips the webhook (no `azure.workload.identity/use` label) and sets `client_id`
/// by hand, with its own projected token volume: what a job on a pool could write.
fn hand_made_identity_pod(sa: &str, client_id: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "by-hand"},
        "spec": {
            "serviceAccountName": sa,
            "containers": [{
                "name": "agent",
                "image": "example.azurecr.io/ado-agent:latest",
                "env": [
                    {"name": "AZURE_CLIENT_ID", "value": client_id},
                    {"name": "AZURE_TENANT_ID", "value": POOL_TENANT},
                    {"name": "AZURE_FEDERATED_TOKEN_FILE", "value": "/token/azure-identity-token"},
                    {"name": "AZURE_AUTHORITY_HOST", "value": "https://login.microsoftonline.com/"}
                ],
                "volumeMounts": [{"name": "token", "mountPath": "/token", "readOnly": true}]
            }],
            "volumes": [{
                "name": "token",
                "projected": {"sources": [{"serviceAccountToken": {
                    "audience": "api://AzureADTokenExchange",
                    "expirationSeconds": 3600,
                    "path": "azure-identity-token"
                }}]}
            }]
        }
    })
}

fn deployment(name: &str, template: Value) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": "agent"}},
            "template": {"metadata": template["metadata"].clone(), "spec": template["spec"].clone()}
        }
    })
}

fn cronjob(name: &str, template: Value) -> Value {
    let mut spec = template["spec"].clone();
    spec["restartPolicy"] = json!("Never");
    json!({
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": name},
        "spec": {
            "schedule": "0 3 * * *",
            "jobTemplate": {"spec": {"template": {
                "metadata": template["metadata"].clone(),
                "spec": spec
            }}}
        }
    })
}

fn agent_pool(name: &str, client_id: &str, namespaces: &[&str]) -> Value {
    json!({
        "apiVersion": "wi-webhook.dev/v1alpha1",
        "kind": "AgentPool",
        "metadata": {"name": name},
        "spec": {
            "team": "newcomers",
            "identity": {"clientId": client_id},
            "namespaces": namespaces,
            "serviceAccounts": ["ado-agent"]
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Requests

/// `(group, version, kind, resource)` of the objects these tests send.
type Gvk = (&'static str, &'static str, &'static str, &'static str);
const POD: Gvk = ("", "v1", "Pod", "pods");
const DEPLOYMENT: Gvk = ("apps", "v1", "Deployment", "deployments");
const CRONJOB: Gvk = ("batch", "v1", "CronJob", "cronjobs");
const AGENTPOOL: Gvk = ("wi-webhook.dev", "v1alpha1", "AgentPool", "agentpools");
const NAMESPACE: Gvk = ("", "v1", "Namespace", "namespaces");

struct Req {
    gvk: Gvk,
    namespace: Option<&'static str>,
    operation: &'static str,
    sub_resource: Option<&'static str>,
    object: Value,
    old_object: Option<Value>,
}

impl Req {
    fn create(gvk: Gvk, namespace: &'static str, object: Value) -> Self {
        Req {
            gvk,
            namespace: Some(namespace).filter(|n| !n.is_empty()),
            operation: "CREATE",
            sub_resource: None,
            object,
            old_object: None,
        }
    }

    fn update(gvk: Gvk, namespace: &'static str, object: Value, old: Value) -> Self {
        Req {
            operation: "UPDATE",
            old_object: Some(old),
            ..Req::create(gvk, namespace, object)
        }
    }

    fn body(&self, uid: &str) -> Vec<u8> {
        let (group, version, kind, resource) = self.gvk;
        let name = self.object["metadata"]["name"].as_str().unwrap_or_default();
        let mut req = json!({
            "uid": uid,
            "kind": {"group": group, "version": version, "kind": kind},
            "resource": {"group": group, "version": version, "resource": resource},
            "requestKind": {"group": group, "version": version, "kind": kind},
            "requestResource": {"group": group, "version": version, "resource": resource},
            "name": name,
            "operation": self.operation,
            "userInfo": {"username": "ado-job", "groups": ["system:authenticated"]},
            "dryRun": false,
            "object": self.object,
        });
        if let Some(ns) = self.namespace {
            req["namespace"] = json!(ns);
        }
        if let Some(sub) = self.sub_resource {
            req["subResource"] = json!(sub);
            req["requestSubResource"] = json!(sub);
        }
        if let Some(old) = &self.old_object {
            req["oldObject"] = old.clone();
        }
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": req
        }))
        .unwrap()
    }
}

async fn get(router: axum::Router, uri: &str) -> (StatusCode, String) {
    let req = Request::builder()
        .method(Method::GET)
        .uri(uri)
        .body(Body::empty())
        .unwrap();
    let resp = router.oneshot(req).await.expect("the router never fails");
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

/// POSTs the request to `path` (`/mutate` or `/validate`); returns the AdmissionResponse.
async fn send(state: &Arc<AppState>, path: &str, req: &Req) -> Value {
    let uid = format!("uid-{}", path.trim_start_matches('/'));
    let http = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(req.body(&uid)))
        .unwrap();
    let resp = api::router(state.clone(), LIMIT)
        .oneshot(http)
        .await
        .expect("the router never fails");
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        status,
        StatusCode::OK,
        "{path}: {}",
        String::from_utf8_lossy(&body)
    );
    let review: Value = serde_json::from_slice(&body).expect("a JSON AdmissionReview");
    let response = review["response"].clone();
    assert_eq!(response["uid"], json!(uid), "{response}");
    response
}

async fn validate(state: &Arc<AppState>, req: &Req) -> Value {
    send(state, "/validate", req).await
}

async fn mutate(state: &Arc<AppState>, req: &Req) -> Value {
    send(state, "/mutate", req).await
}

/// Asserts a 403 pool denial whose one-line message names every rule in `rules` and each of
/// `names` (pod, container, pool, team...); returns the message.
#[track_caller]
fn assert_denied(response: &Value, rules: &[&str], names: &[&str]) -> String {
    assert_eq!(response["allowed"], json!(false), "{response}");
    assert_eq!(response["status"]["code"], json!(403), "{response}");
    assert_eq!(
        response["status"]["reason"],
        json!("Forbidden"),
        "{response}"
    );
    let message = response["status"]["message"]
        .as_str()
        .expect("a status message")
        .to_string();
    assert!(!message.contains('\n'), "one line: {message}");
    assert!(
        message.contains("[pool-policy]"),
        "the denial's rule: {message}"
    );
    for r in rules {
        assert!(
            message.contains(&format!("[{r}]")),
            "rule {r} missing: {message}"
        );
    }
    for n in names {
        assert!(message.contains(n), "{n:?} missing: {message}");
    }
    assert!(
        response.get("patch").is_none(),
        "a denial has no patch: {response}"
    );
    assert!(
        response.get("warnings").is_none() && response.get("auditAnnotations").is_none(),
        "a denial carries its reasons in the message only: {response}"
    );
    message
}

/// The rule ids in a violation list (a warning or an audit annotation).
fn rule_ids(text: &str) -> Vec<&'static str> {
    rule::ALL
        .into_iter()
        .filter(|r| text.contains(&format!("[{r}]")))
        .collect()
}

#[track_caller]
fn assert_allowed_plain(response: &Value) {
    assert_eq!(response["allowed"], json!(true), "{response}");
    assert!(response.get("warnings").is_none(), "{response}");
    assert!(response.get("auditAnnotations").is_none(), "{response}");
}

fn patch_of(response: &Value) -> json_patch::Patch {
    let b64 = response["patch"].as_str().expect("a base64 patch");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("base64");
    serde_json::from_slice(&bytes).expect("a JSON Patch")
}

fn env_value<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    container["env"]
        .as_array()?
        .iter()
        .find(|v| v["name"] == name)?["value"]
        .as_str()
}

// ---------------------------------------------------------------------------------------------
// Skipping the injection and setting the variables by hand (unlabelled pods, /validate)

#[tokio::test]
async fn unlabelled_pod_with_another_pools_client_id_by_hand_is_denied_in_enforce() {
    let state = state(Enforcement::Enforce);
    // In a namespace of no pool.
    let response = validate(
        &state,
        &Req::create(POD, "apps", hand_made_identity_pod("app", OM)),
    )
    .await;
    assert_denied(
        &response,
        &[rule::ANOTHER_POOLS_IDENTITY],
        &[
            "pod apps/by-hand",
            "of no pool",
            "container agent",
            "pool omtest1",
            "team platform",
            OM,
            "remove it",
        ],
    );
    // In another pool's namespace: also an override of that pool's identity.
    let response = validate(
        &state,
        &Req::create(POD, PAY_NS, hand_made_identity_pod(PAY_SA, OM)),
    )
    .await;
    let message = assert_denied(
        &response,
        &[rule::ANOTHER_POOLS_IDENTITY, rule::ENV_OVERRIDE],
        &[
            "pod ado-agents-payments/by-hand",
            "container agent",
            "pool omtest1",
            "team platform",
            "pool payments",
            "team payments",
        ],
    );
    // The token file is its own, not the one the webhook injects.
    assert!(
        message.contains("AZURE_FEDERATED_TOKEN_FILE=/token/azure-identity-token"),
        "{message}"
    );
}

#[tokio::test]
async fn unlabelled_pod_by_hand_in_warn_and_audit_modes() {
    let pod = || Req::create(POD, "apps", hand_made_identity_pod("app", OM));

    let response = validate(&state(Enforcement::Warn), &pod()).await;
    assert_eq!(response["allowed"], json!(true), "{response}");
    assert!(response.get("patch").is_none(), "validate never patches");
    let warnings = response["warnings"].as_array().expect("warnings");
    assert_eq!(warnings.len(), 1, "{response}");
    assert_eq!(
        rule_ids(warnings[0].as_str().unwrap()),
        [rule::ANOTHER_POOLS_IDENTITY]
    );
    assert!(response.get("auditAnnotations").is_none(), "{response}");

    let response = validate(&state(Enforcement::Audit), &pod()).await;
    assert_eq!(response["allowed"], json!(true), "{response}");
    assert!(response.get("warnings").is_none(), "{response}");
    let audit = response["auditAnnotations"]["pool-violations"]
        .as_str()
        .expect("an audit annotation");
    assert_eq!(rule_ids(audit), [rule::ANOTHER_POOLS_IDENTITY]);
}

#[tokio::test]
async fn unlabelled_pods_of_no_pool_and_of_their_own_pool_pass_validation() {
    let state = state(Enforcement::Enforce);
    // The upstream case: a pod of no pool with an identity that no pool owns.
    let response = validate(
        &state,
        &Req::create(
            POD,
            "apps",
            hand_made_identity_pod("app", "99999999-9999-4999-8999-999999999999"),
        ),
    )
    .await;
    assert_allowed_plain(&response);
    // A plain pod without any identity in a pool's namespace, as the pool's ServiceAccount.
    let response = validate(
        &state,
        &Req::create(POD, OM_NS, pod_with("plain", OM_SA, false, json!([]))),
    )
    .await;
    assert_allowed_plain(&response);
}

// ---------------------------------------------------------------------------------------------
// The mutating and the validating path agree on a pool's own pod

#[tokio::test]
async fn a_pool_pod_mutated_by_the_webhook_passes_validation() {
    let state = state(Enforcement::Enforce);
    let mut pod = pod_with("agent-0", OM_SA, true, json!([]));
    pod["metadata"]["annotations"] =
        json!({"azure.workload.identity/inject-proxy-sidecar": "true"});
    let response = mutate(&state, &Req::create(POD, OM_NS, pod.clone())).await;
    assert_eq!(response["allowed"], json!(true), "{response}");
    let mut mutated = pod;
    json_patch::patch(&mut mutated, &patch_of(&response).0).unwrap();
    let agent = &mutated["spec"]["containers"][0];
    assert_eq!(env_value(agent, "AZURE_CLIENT_ID"), Some(OM));
    assert_eq!(env_value(agent, "AZURE_TENANT_ID"), Some(POOL_TENANT));
    assert_eq!(
        env_value(agent, "AZURE_FEDERATED_TOKEN_FILE"),
        Some(TOKEN_FILE)
    );
    // The API server calls the validating webhook with the mutated pod.
    let response = validate(&state, &Req::create(POD, OM_NS, mutated)).await;
    assert_allowed_plain(&response);
}

#[tokio::test]
async fn the_owning_pools_identity_feeds_the_mutation() {
    // A ServiceAccount of the pool without client-id: the pool's identity is injected.
    let state = cluster(
        &[Pool {
            service_accounts: vec!["plain".into()],
            ..omtest1(Enforcement::Enforce)
        }],
        vec![service_account(OM_NS, "plain", &[])],
    );
    let pod = pod_with("agent-0", "plain", true, json!([]));
    let response = mutate(&state, &Req::create(POD, OM_NS, pod.clone())).await;
    let mut mutated = pod;
    json_patch::patch(&mut mutated, &patch_of(&response).0).unwrap();
    let agent = &mutated["spec"]["containers"][0];
    assert_eq!(env_value(agent, "AZURE_CLIENT_ID"), Some(OM));
    assert_eq!(env_value(agent, "AZURE_TENANT_ID"), Some(POOL_TENANT));
}

// ---------------------------------------------------------------------------------------------
// Every adversarial path of the issue, denied in Enforce mode on both paths

/// payments' agents trying to obtain omtest1's identity: (what, pod in payments' namespace,
/// rules that must be named, names the message must carry).
fn adversarial_pods() -> Vec<(&'static str, Value, Vec<&'static str>, Vec<&'static str>)> {
    let literal = json!([{"name": "AZURE_CLIENT_ID", "value": OM}]);
    let mut init = pod_with("agent-0", PAY_SA, true, json!([]));
    init["spec"]["initContainers"] = json!([container("fetch", literal.clone())]);
    let mut skipped = pod_with(
        "agent-0",
        PAY_SA,
        true,
        json!([
            {"name": "AZURE_CLIENT_ID", "value": OM},
            {"name": "AZURE_TENANT_ID", "value": POOL_TENANT},
            {"name": "AZURE_FEDERATED_TOKEN_FILE", "value": TOKEN_FILE}
        ]),
    );
    skipped["metadata"]["annotations"] =
        json!({"azure.workload.identity/skip-containers": "agent"});
    let mut label = pod_with("agent-0", PAY_SA, true, json!([]));
    label["metadata"]["labels"]["wi-webhook.dev/agent-pool"] = json!("omtest1");
    vec![
        (
            "ServiceAccount annotated with another pool's client-id",
            pod_with("agent-0", "nightly", true, json!([])),
            vec![rule::IDENTITY_MISMATCH, rule::ANOTHER_POOLS_IDENTITY],
            vec!["ServiceAccount ado-agents-payments/nightly", "pool omtest1"],
        ),
        (
            "literal AZURE_CLIENT_ID in a container",
            pod_with("agent-0", PAY_SA, true, literal.clone()),
            vec![rule::ENV_OVERRIDE, rule::ANOTHER_POOLS_IDENTITY],
            vec!["container agent", "pool omtest1", "team platform"],
        ),
        (
            "literal AZURE_CLIENT_ID in an init container",
            init,
            vec![rule::ENV_OVERRIDE, rule::ANOTHER_POOLS_IDENTITY],
            vec!["container fetch", "pool omtest1"],
        ),
        (
            "AZURE_CLIENT_ID from a Secret",
            pod_with(
                "agent-0",
                PAY_SA,
                true,
                json!([{
                    "name": "AZURE_CLIENT_ID",
                    "valueFrom": {"secretKeyRef": {"name": "omtest1", "key": "client-id"}}
                }]),
            ),
            vec![rule::ENV_REFERENCE],
            vec!["container agent", "AZURE_CLIENT_ID", "pool payments"],
        ),
        (
            "AZURE_CLIENT_ID from a ConfigMap",
            pod_with(
                "agent-0",
                PAY_SA,
                true,
                json!([{
                    "name": "AZURE_CLIENT_ID",
                    "valueFrom": {"configMapKeyRef": {"name": "omtest1", "key": "client-id"}}
                }]),
            ),
            vec![rule::ENV_REFERENCE],
            vec!["container agent", "AZURE_CLIENT_ID", "pool payments"],
        ),
        (
            "injection skipped, variables set by hand",
            skipped,
            vec![rule::ENV_OVERRIDE, rule::ANOTHER_POOLS_IDENTITY],
            vec!["container agent", "pool omtest1"],
        ),
        (
            "pool label disagreeing with the namespace",
            label,
            vec![rule::CLAIMS_DISAGREE],
            vec![
                "label wi-webhook.dev/agent-pool=omtest1",
                "namespace ado-agents-payments",
            ],
        ),
        (
            "AZP_POOL disagreeing with the namespace",
            pod_with(
                "agent-0",
                PAY_SA,
                true,
                json!([{"name": "AZP_POOL", "value": "omtest1"}]),
            ),
            vec![rule::CLAIMS_DISAGREE],
            vec![
                "AZP_POOL=omtest1 in container agent",
                "namespace ado-agents-payments",
            ],
        ),
    ]
}

#[tokio::test]
async fn every_adversarial_pod_is_denied_in_enforce_on_both_paths() {
    let state = state(Enforcement::Enforce);
    for (what, pod, rules, names) in adversarial_pods() {
        for path in ["/mutate", "/validate"] {
            let response = send(&state, path, &Req::create(POD, PAY_NS, pod.clone())).await;
            assert_eq!(
                response["allowed"],
                json!(false),
                "{what} via {path}: {response}"
            );
            let message = assert_denied(&response, &rules, &names);
            assert!(
                message.contains("pod ado-agents-payments/agent-0"),
                "{what}: {message}"
            );
        }
        // Unlabelled: the mutating path leaves it alone, the validating path still denies.
        let mut unlabelled = pod.clone();
        unlabelled["metadata"]["labels"]
            .as_object_mut()
            .unwrap()
            .remove("azure.workload.identity/use");
        let response = validate(&state, &Req::create(POD, PAY_NS, unlabelled)).await;
        assert_denied(&response, &rules, &names);
    }
}

#[tokio::test]
async fn adversarial_pods_are_warned_or_audited_in_the_other_modes() {
    for (what, pod, rules, _) in adversarial_pods() {
        let response = validate(
            &state(Enforcement::Warn),
            &Req::create(POD, PAY_NS, pod.clone()),
        )
        .await;
        assert_eq!(response["allowed"], json!(true), "{what}: {response}");
        let warned: Vec<&str> = response["warnings"]
            .as_array()
            .unwrap_or_else(|| panic!("{what}: no warnings: {response}"))
            .iter()
            .flat_map(|w| rule_ids(w.as_str().unwrap()))
            .collect();
        for r in &rules {
            assert!(warned.contains(r), "{what}: {r} not warned: {response}");
        }

        let response = validate(&state(Enforcement::Audit), &Req::create(POD, PAY_NS, pod)).await;
        assert_eq!(response["allowed"], json!(true), "{what}: {response}");
        assert!(response.get("warnings").is_none(), "{what}: {response}");
        let audited = rule_ids(
            response["auditAnnotations"]["pool-violations"]
                .as_str()
                .unwrap_or_else(|| panic!("{what}: no audit annotation: {response}")),
        );
        for r in &rules {
            assert!(audited.contains(r), "{what}: {r} not audited: {response}");
        }
    }
}

#[tokio::test]
async fn a_pool_claim_outside_the_pools_namespaces_is_denied() {
    // A ServiceAccount named like the pool's, in a namespace of no pool, without client-id:
    // without the check, the pod would be taken for the pool's and get its identity.
    let state = cluster(
        &[omtest1(Enforcement::Enforce)],
        vec![service_account("apps", OM_SA, &[])],
    );
    let mut by_label = pod_with("agent-0", OM_SA, true, json!([]));
    by_label["metadata"]["labels"]["wi-webhook.dev/agent-pool"] = json!("omtest1");
    let by_azp_pool = pod_with(
        "agent-0",
        OM_SA,
        true,
        json!([{"name": "AZP_POOL", "value": "omtest1"}]),
    );
    for pod in [by_label, by_azp_pool] {
        for path in ["/mutate", "/validate"] {
            let response = send(&state, path, &Req::create(POD, "apps", pod.clone())).await;
            assert_denied(
                &response,
                &[rule::CLAIMS_DISAGREE],
                &[
                    "pod apps/agent-0",
                    "namespace apps",
                    "pool omtest1",
                    "team platform",
                ],
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Ephemeral containers (kubectl debug): pods/ephemeralcontainers UPDATE

fn pool_pod_running() -> Value {
    let mut pod = pod_with(
        "agent-0",
        OM_SA,
        true,
        json!([
            {"name": "AZURE_CLIENT_ID", "value": OM},
            {"name": "AZURE_TENANT_ID", "value": POOL_TENANT},
            {"name": "AZURE_FEDERATED_TOKEN_FILE", "value": TOKEN_FILE}
        ]),
    );
    pod["metadata"]["namespace"] = json!(OM_NS);
    pod
}

fn debug_request() -> Req {
    let old = pool_pod_running();
    let mut new = old.clone();
    new["spec"]["ephemeralContainers"] = json!([{
        "name": "debugger-x7k2p",
        "image": "busybox",
        "targetContainerName": "agent",
        "stdin": true,
        "tty": true
    }]);
    Req {
        sub_resource: Some("ephemeralcontainers"),
        ..Req::update(POD, OM_NS, new, old)
    }
}

#[tokio::test]
async fn ephemeral_container_on_a_pool_pod_is_denied_in_enforce() {
    let response = validate(&state(Enforcement::Enforce), &debug_request()).await;
    assert_denied(
        &response,
        &[rule::EPHEMERAL],
        &[
            "pod ado-agents-omtest1/agent-0",
            "ephemeral container debugger-x7k2p",
            "pool omtest1",
            "team platform",
            "debug a copy of the pod",
        ],
    );
}

#[tokio::test]
async fn ephemeral_container_in_warn_returns_warnings() {
    let response = validate(&state(Enforcement::Warn), &debug_request()).await;
    assert_eq!(response["allowed"], json!(true), "{response}");
    let warnings = response["warnings"].as_array().expect("warnings");
    assert_eq!(warnings.len(), 1, "{response}");
    let w = warnings[0].as_str().unwrap();
    assert_eq!(rule_ids(w), [rule::EPHEMERAL]);
    assert!(w.contains("debugger-x7k2p"), "{w}");
    assert!(response.get("auditAnnotations").is_none(), "{response}");
}

#[tokio::test]
async fn ephemeral_container_in_audit_returns_audit_annotations() {
    let response = validate(&state(Enforcement::Audit), &debug_request()).await;
    assert_eq!(response["allowed"], json!(true), "{response}");
    assert!(response.get("warnings").is_none(), "{response}");
    let annotations = response["auditAnnotations"]
        .as_object()
        .expect("auditAnnotations");
    assert_eq!(annotations.len(), 1, "{response}");
    let a = annotations["pool-violations"].as_str().unwrap();
    assert_eq!(rule_ids(a), [rule::EPHEMERAL]);
    assert!(a.contains("debugger-x7k2p"), "{a}");
}

#[tokio::test]
async fn ephemeral_containers_that_were_there_before_or_on_pods_of_no_pool_pass() {
    let state = state(Enforcement::Enforce);
    // An update that adds nothing new (the debugger existed in the old pod too).
    let mut req = debug_request();
    req.old_object = Some(req.object.clone());
    assert_allowed_plain(&validate(&state, &req).await);
    // A pod of no pool.
    let old = pod_with("app-0", "app", false, json!([]));
    let mut new = old.clone();
    new["spec"]["ephemeralContainers"] = json!([{"name": "debugger", "image": "busybox"}]);
    let req = Req {
        sub_resource: Some("ephemeralcontainers"),
        ..Req::update(POD, "apps", new, old)
    };
    assert_allowed_plain(&validate(&state, &req).await);
}

// ---------------------------------------------------------------------------------------------
// Workload templates: CREATE and UPDATE

fn own_template() -> Value {
    pod_with("ignored", PAY_SA, true, json!([]))
}

fn stealing_template() -> Value {
    pod_with(
        "ignored",
        PAY_SA,
        true,
        json!([{"name": "AZURE_CLIENT_ID", "value": OM}]),
    )
}

#[tokio::test]
async fn deployment_template_with_another_pools_identity_is_denied_at_create() {
    let state = state(Enforcement::Enforce);
    let response = validate(
        &state,
        &Req::create(DEPLOYMENT, PAY_NS, deployment("steal", stealing_template())),
    )
    .await;
    assert_denied(
        &response,
        &[rule::ENV_OVERRIDE, rule::ANOTHER_POOLS_IDENTITY],
        &[
            "ado-agents-payments/steal (Deployment pod template)",
            "container agent",
            "pool omtest1",
            "team platform",
        ],
    );
    // The same Deployment using its own pool's identity is allowed.
    let response = validate(
        &state,
        &Req::create(DEPLOYMENT, PAY_NS, deployment("agent", own_template())),
    )
    .await;
    assert_allowed_plain(&response);
}

#[tokio::test]
async fn cronjob_template_with_another_pools_service_account_identity_is_denied_at_create() {
    let state = state(Enforcement::Enforce);
    let template = pod_with("ignored", "nightly", true, json!([]));
    let response = validate(
        &state,
        &Req::create(CRONJOB, PAY_NS, cronjob("nightly", template)),
    )
    .await;
    assert_denied(
        &response,
        &[rule::IDENTITY_MISMATCH, rule::ANOTHER_POOLS_IDENTITY],
        &[
            "ado-agents-payments/nightly (CronJob pod template)",
            "ServiceAccount ado-agents-payments/nightly",
            "pool omtest1",
            "pool payments",
        ],
    );
    let response = validate(
        &state,
        &Req::create(CRONJOB, PAY_NS, cronjob("nightly", own_template())),
    )
    .await;
    assert_allowed_plain(&response);
}

#[tokio::test]
async fn deployment_update_whose_template_now_uses_another_pools_identity_is_denied() {
    let state = state(Enforcement::Enforce);
    let old = deployment("agent", own_template());
    let new = deployment("agent", stealing_template());
    let response = validate(&state, &Req::update(DEPLOYMENT, PAY_NS, new, old.clone())).await;
    assert_denied(
        &response,
        &[rule::ENV_OVERRIDE, rule::ANOTHER_POOLS_IDENTITY],
        &[
            "ado-agents-payments/agent (Deployment pod template)",
            "pool omtest1",
        ],
    );
    // An update that keeps the pool's own identity is allowed.
    let mut scaled = old.clone();
    scaled["spec"]["replicas"] = json!(3);
    let response = validate(&state, &Req::update(DEPLOYMENT, PAY_NS, scaled, old)).await;
    assert_allowed_plain(&response);
}

#[tokio::test]
async fn workload_templates_in_warn_and_audit_modes_are_allowed_with_the_reasons() {
    let req = || Req::create(DEPLOYMENT, PAY_NS, deployment("steal", stealing_template()));
    let response = validate(&state(Enforcement::Warn), &req()).await;
    assert_eq!(response["allowed"], json!(true), "{response}");
    assert_eq!(
        response["warnings"].as_array().map(Vec::len),
        Some(2),
        "{response}"
    );
    let response = validate(&state(Enforcement::Audit), &req()).await;
    assert_eq!(response["allowed"], json!(true), "{response}");
    let audit = response["auditAnnotations"]["pool-violations"]
        .as_str()
        .unwrap();
    assert_eq!(
        rule_ids(audit),
        [rule::ANOTHER_POOLS_IDENTITY, rule::ENV_OVERRIDE]
    );
}

// ---------------------------------------------------------------------------------------------
// AgentPools: CREATE and UPDATE that would conflict

#[tokio::test]
async fn agentpool_sharing_a_client_id_is_denied_naming_the_other_pool() {
    let state = state(Enforcement::Enforce);
    // Same identity as omtest1, written in upper case: still the same GUID.
    let response = validate(
        &state,
        &Req::create(
            AGENTPOOL,
            "",
            agent_pool("omtest2", &OM.to_uppercase(), &["ado-agents-omtest2"]),
        ),
    )
    .await;
    assert_eq!(response["allowed"], json!(false), "{response}");
    assert_eq!(response["status"]["code"], json!(403), "{response}");
    let message = response["status"]["message"].as_str().unwrap();
    assert!(message.contains("[pool-conflict]"), "{message}");
    assert!(message.contains("AgentPool omtest2"), "{message}");
    assert!(message.contains("clientId"), "{message}");
    assert!(message.contains("pool omtest1's"), "{message}");
}

#[tokio::test]
async fn agentpool_sharing_a_namespace_is_denied_naming_the_other_pool() {
    let state = state(Enforcement::Enforce);
    let response = validate(
        &state,
        &Req::create(
            AGENTPOOL,
            "",
            agent_pool(
                "newcomers",
                "5c4b3a29-1807-4f6e-9d5c-4b3a29180706",
                &["ado-agents-newcomers", PAY_NS],
            ),
        ),
    )
    .await;
    assert_eq!(response["allowed"], json!(false), "{response}");
    assert_eq!(response["status"]["code"], json!(403), "{response}");
    let message = response["status"]["message"].as_str().unwrap();
    assert!(message.contains("[pool-conflict]"), "{message}");
    assert!(message.contains("AgentPool newcomers"), "{message}");
    assert!(
        message.contains("namespace ado-agents-payments is already pool payments's"),
        "{message}"
    );
}

#[tokio::test]
async fn agentpool_without_conflict_is_allowed_and_updating_a_pool_is_not_a_conflict_with_itself() {
    let state = state(Enforcement::Enforce);
    let new = agent_pool(
        "newcomers",
        "5c4b3a29-1807-4f6e-9d5c-4b3a29180706",
        &["ado-agents-newcomers"],
    );
    assert_allowed_plain(&validate(&state, &Req::create(AGENTPOOL, "", new)).await);
    // omtest1 changing its enforcement keeps its own namespace and identity.
    let old = agent_pool("omtest1", OM, &[OM_NS]);
    let mut new = old.clone();
    new["spec"]["enforcement"] = json!("Warn");
    assert_allowed_plain(&validate(&state, &Req::update(AGENTPOOL, "", new, old)).await);
}

#[tokio::test]
async fn agentpool_naming_kube_system_is_refused() {
    let state = state(Enforcement::Enforce);
    let pool = agent_pool(
        "newcomers",
        "5c4b3a29-1807-4f6e-9d5c-4b3a29180706",
        &["ado-agents-newcomers", "kube-system"],
    );
    let response = validate(&state, &Req::create(AGENTPOOL, "", pool)).await;
    assert_eq!(response["allowed"], json!(false), "{response}");
    assert_eq!(response["status"]["code"], json!(403), "{response}");
    let message = response["status"]["message"].as_str().unwrap();
    assert!(message.contains("[pool-reserved-namespace]"), "{message}");
    assert!(message.contains("kube-system"), "{message}");
}

#[tokio::test]
async fn a_pools_namespace_labelled_ignored_is_refused_others_are_not() {
    let state = state(Enforcement::Enforce);
    let namespace = |name: &str, ignore: &str| {
        json!({"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": name, "labels": {"wi-webhook.dev/ignore": ignore}}})
    };
    let response = validate(
        &state,
        &Req::create(NAMESPACE, "", namespace(OM_NS, "true")),
    )
    .await;
    assert_eq!(response["allowed"], json!(false), "{response}");
    let message = response["status"]["message"].as_str().unwrap();
    assert!(message.contains("[pool-namespace-ignored]"), "{message}");
    assert!(message.contains("AgentPool omtest1"), "{message}");
    // Another value does not opt out; a namespace of no pool may opt out.
    assert_allowed_plain(
        &validate(
            &state,
            &Req::create(NAMESPACE, "", namespace(OM_NS, "false")),
        )
        .await,
    );
    assert_allowed_plain(
        &validate(
            &state,
            &Req::create(NAMESPACE, "", namespace("apps", "true")),
        )
        .await,
    );
}

// ---------------------------------------------------------------------------------------------
// Metrics

#[tokio::test]
async fn audit_mode_violations_are_counted_by_pool_rule_and_enforcement() {
    let state = state(Enforcement::Audit);
    let response = validate(
        &state,
        &Req::create(POD, "apps", hand_made_identity_pod("app", OM)),
    )
    .await;
    assert_eq!(response["allowed"], json!(true), "{response}");
    assert!(response["auditAnnotations"]["pool-violations"].is_string());

    let (status, text) = get(api::health::router(state.clone()), "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    let counted = text.lines().any(|l| {
        l.starts_with("wi_webhook_pool_violations_total{")
            && l.contains(r#"pool="omtest1""#)
            && l.contains(r#"rule="identity-of-another-pool""#)
            && l.contains(r#"enforcement="Audit""#)
            && l.ends_with(" 1")
    });
    assert!(counted, "no pool violation counted:\n{text}");
}
