//! Building the objects the tests send, and checking what the API server stored: the
//! workload-identity mutation, with its default configuration (the one
//! `run.sh` starts the webhook with).

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::Context;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, ServiceAccount};
use kube::core::Status;
use serde_json::{Value, json};

/// The label of the webhook configuration's objectSelector.
pub const USE_LABEL: &str = "azure.workload.identity/use";
pub const CLIENT_ID_ANNOTATION: &str = "azure.workload.identity/client-id";
pub const TENANT_ID_ANNOTATION: &str = "azure.workload.identity/tenant-id";
pub const TOKEN_EXPIRATION_ANNOTATION: &str =
    "azure.workload.identity/service-account-token-expiration";
pub const INJECT_PROXY_ANNOTATION: &str = "azure.workload.identity/inject-proxy-sidecar";
pub const PROXY_PORT_ANNOTATION: &str = "azure.workload.identity/proxy-sidecar-port";

pub const TOKEN_VOLUME: &str = "azure-identity-token";
pub const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/azure/tokens";
pub const TOKEN_FILE: &str = "/var/run/secrets/azure/tokens/azure-identity-token";
pub const AUTHORITY_HOST: &str = "https://login.microsoftonline.com/";
pub const AUDIENCE: &str = "api://AzureADTokenExchange";
pub const PROXY_INIT: &str = "azwi-proxy-init";
pub const PROXY: &str = "azwi-proxy";
pub const PROXY_INIT_IMAGE: &str =
    "mcr.microsoft.com/oss/azure/workload-identity/proxy-init:v1.6.0";
pub const PROXY_IMAGE: &str = "mcr.microsoft.com/oss/azure/workload-identity/proxy:v1.6.0";
/// `--tenant-id` of the webhook started by `run.sh`.
pub const WEBHOOK_TENANT_ID: &str = "00000000-0000-0000-0000-000000000000";
/// The env vars of the mutation, in the order they are appended.
pub const AZURE_ENV: [&str; 4] = [
    "AZURE_CLIENT_ID",
    "AZURE_TENANT_ID",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_AUTHORITY_HOST",
];
/// The identity a pod should get.
#[derive(Clone, Copy, Debug)]
pub struct Identity<'a> {
    /// `None`: no AZURE_CLIENT_ID is injected.
    pub client_id: Option<&'a str>,
    pub tenant_id: &'a str,
}

/// A ServiceAccount annotated with a client-id and, if given, a tenant-id.
pub fn service_account(name: &str, client_id: &str, tenant_id: Option<&str>) -> ServiceAccount {
    let mut annotations = json!({ CLIENT_ID_ANNOTATION: client_id });
    if let Some(tenant) = tenant_id {
        annotations[TENANT_ID_ANNOTATION] = tenant.into();
    }
    serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": annotations},
        "automountServiceAccountToken": false,
    }))
    .expect("static ServiceAccount")
}

/// A pod labelled for the webhook, one container `agent` with no env and no mounts, no
/// API token mount (so the volumes are the test's alone), as JSON to extend.
pub fn labelled_pod_json(name: &str, service_account: &str, annotations: &[(&str, &str)]) -> Value {
    let annotations: serde_json::Map<String, Value> = annotations
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Value::from(*v)))
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {USE_LABEL: "true"},
            "annotations": annotations,
        },
        "spec": {
            "serviceAccountName": service_account,
            "automountServiceAccountToken": false,
            "containers": [{"name": "agent", "image": "registry.invalid/agent:1"}],
        },
    })
}

/// [`labelled_pod_json`] as a typed Pod.
pub fn labelled_pod(name: &str, service_account: &str, annotations: &[(&str, &str)]) -> Pod {
    serde_json::from_value(labelled_pod_json(name, service_account, annotations))
        .expect("static Pod")
}

pub fn spec(pod: &Pod) -> &PodSpec {
    pod.spec.as_ref().expect("a stored pod has a spec")
}

/// Init containers then containers.
pub fn all_containers(spec: &PodSpec) -> impl Iterator<Item = &Container> {
    spec.init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
}

pub fn container<'a>(spec: &'a PodSpec, name: &str) -> &'a Container {
    all_containers(spec)
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no container {name}: {:?}", container_names(spec)))
}

/// `[init containers..] | [containers..]` names, for messages.
pub fn container_names(spec: &PodSpec) -> (Vec<&str>, Vec<&str>) {
    (
        spec.init_containers
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect(),
        spec.containers.iter().map(|c| c.name.as_str()).collect(),
    )
}

pub fn env_names(c: &Container) -> Vec<&str> {
    c.env.iter().flatten().map(|e| e.name.as_str()).collect()
}

pub fn env_value<'a>(c: &'a Container, name: &str) -> Option<&'a str> {
    c.env
        .iter()
        .flatten()
        .find(|e| e.name == name)
        .and_then(|e| e.value.as_deref())
}

/// The container got the mutation's env vars, once each, after its own, in order, with the
/// values of `identity` and the default configuration.
#[track_caller]
pub fn assert_identity_env(c: &Container, identity: Identity<'_>) {
    let names = env_names(c);
    let azure: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| n.starts_with("AZURE_"))
        .collect();
    let expected: Vec<&str> = AZURE_ENV
        .iter()
        .copied()
        .filter(|n| identity.client_id.is_some() || *n != "AZURE_CLIENT_ID")
        .collect();
    assert_eq!(azure, expected, "AZURE_* env of container {}", c.name);
    assert!(
        names.ends_with(&expected),
        "container {}: the AZURE_* env must be appended after its own: {names:?}",
        c.name
    );
    let value = |n| env_value(c, n);
    assert_eq!(value("AZURE_CLIENT_ID"), identity.client_id, "{}", c.name);
    assert_eq!(
        value("AZURE_TENANT_ID"),
        Some(identity.tenant_id),
        "{}",
        c.name
    );
    assert_eq!(
        value("AZURE_FEDERATED_TOKEN_FILE"),
        Some(TOKEN_FILE),
        "{}",
        c.name
    );
    assert_eq!(
        value("AZURE_AUTHORITY_HOST"),
        Some(AUTHORITY_HOST),
        "{}",
        c.name
    );
}

/// The container mounts the token volume read-only at the default path, once.
#[track_caller]
pub fn assert_token_mount(c: &Container) {
    let mounts: Vec<_> = c
        .volume_mounts
        .iter()
        .flatten()
        .filter(|m| m.name == TOKEN_VOLUME || m.mount_path == TOKEN_MOUNT_PATH)
        .collect();
    assert_eq!(
        mounts.len(),
        1,
        "token mounts of container {}: {mounts:?}",
        c.name
    );
    let m = mounts[0];
    assert_eq!(
        (m.name.as_str(), m.mount_path.as_str(), m.read_only),
        (TOKEN_VOLUME, TOKEN_MOUNT_PATH, Some(true)),
        "token mount of container {}",
        c.name
    );
}

/// The pod has the projected token volume, once, as the seed describes it.
#[track_caller]
pub fn assert_token_volume(spec: &PodSpec, expiration_seconds: i64) {
    let volumes: Vec<_> = spec
        .volumes
        .iter()
        .flatten()
        .filter(|v| v.name == TOKEN_VOLUME)
        .collect();
    assert_eq!(volumes.len(), 1, "token volumes: {volumes:?}");
    let projected = volumes[0]
        .projected
        .as_ref()
        .unwrap_or_else(|| panic!("{TOKEN_VOLUME} is not projected: {:?}", volumes[0]));
    let sources = projected.sources.as_deref().unwrap_or_default();
    assert_eq!(sources.len(), 1, "{sources:?}");
    let token = sources[0]
        .service_account_token
        .as_ref()
        .unwrap_or_else(|| panic!("not a serviceAccountToken source: {:?}", sources[0]));
    assert_eq!(token.audience.as_deref(), Some(AUDIENCE));
    assert_eq!(token.expiration_seconds, Some(expiration_seconds));
    assert_eq!(token.path, TOKEN_VOLUME);
}

/// The whole mutation: every container (init ones, injected ones and ones added by other
/// webhooks included) has the env and the mount, the volume is there, nothing twice.
#[track_caller]
pub fn assert_mutated(pod: &Pod, identity: Identity<'_>, expiration_seconds: i64) {
    let spec = spec(pod);
    for c in all_containers(spec) {
        assert_identity_env(c, identity);
        assert_token_mount(c);
    }
    assert_token_volume(spec, expiration_seconds);
    assert_no_duplicates(spec);
}

/// What the API server would refuse anyway, and what a non-idempotent mutation produces on
/// reinvocation: a volume, container, env var or mount path twice.
#[track_caller]
pub fn assert_no_duplicates(spec: &PodSpec) {
    fn unique<'a>(what: &str, items: impl IntoIterator<Item = &'a str>) {
        let mut seen = BTreeSet::new();
        for item in items {
            assert!(seen.insert(item), "{what}: {item:?} appears twice");
        }
    }
    unique(
        "volume names",
        spec.volumes.iter().flatten().map(|v| v.name.as_str()),
    );
    unique(
        "container names",
        all_containers(spec).map(|c| c.name.as_str()),
    );
    for c in all_containers(spec) {
        unique(&format!("env of {}", c.name), env_names(c));
        unique(
            &format!("mount paths of {}", c.name),
            c.volume_mounts
                .iter()
                .flatten()
                .map(|m| m.mount_path.as_str()),
        );
    }
}

/// Nothing of the mutation: no AZURE_* env, no token volume or mount, no proxy containers.
#[track_caller]
pub fn assert_not_mutated(pod: &Pod) {
    let spec = spec(pod);
    for c in all_containers(spec) {
        assert!(
            !env_names(c).iter().any(|n| n.starts_with("AZURE_")),
            "container {}: {:?}",
            c.name,
            env_names(c)
        );
        assert!(
            !c.volume_mounts
                .iter()
                .flatten()
                .any(|m| m.name == TOKEN_VOLUME || m.mount_path == TOKEN_MOUNT_PATH),
            "container {} mounts the token",
            c.name
        );
        assert!(
            c.name != PROXY && c.name != PROXY_INIT,
            "proxy container {} injected",
            c.name
        );
    }
    assert!(
        !spec
            .volumes
            .iter()
            .flatten()
            .any(|v| v.name == TOKEN_VOLUME),
        "token volume injected"
    );
}

/// The Status of an API error; panics on any other result.
#[track_caller]
pub fn api_error<T: std::fmt::Debug>(result: kube::Result<T>) -> Box<Status> {
    match result {
        Err(kube::Error::Api(status)) => status,
        other => panic!("expected the API server to refuse, got {other:?}"),
    }
}

/// A denial by an admission webhook, as the API server reports it.
#[derive(Debug)]
pub struct WebhookDenial {
    pub status: Box<Status>,
    /// The webhook's name (`admission webhook "<name>" denied the request: ..`).
    pub webhook: String,
    /// The webhook's own message, after the API server's prefix.
    pub message: String,
}

/// The denial by an admission webhook in `result`; panics on success or on another error.
#[track_caller]
pub fn webhook_denial<T: std::fmt::Debug>(result: kube::Result<T>) -> WebhookDenial {
    let status = api_error(result);
    let parsed = status
        .message
        .strip_prefix("admission webhook \"")
        .and_then(|rest| rest.split_once("\" denied the request: "))
        .map(|(webhook, message)| (webhook.to_owned(), message.to_owned()));
    match parsed {
        Some((webhook, message)) => WebhookDenial {
            status,
            webhook,
            message,
        },
        None => panic!("not a denial by an admission webhook: {status:?}"),
    }
}

/// The seed's agent pool (`examples/seed-agent.yaml`) for namespace `ns`: every object
/// moved into `ns`, the Namespace object dropped; otherwise as written.
pub fn seed_manifests(ns: &str) -> anyhow::Result<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/seed-agent.yaml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut docs = Vec::new();
    for mut value in serde_saphyr::from_multiple::<serde_json::Value>(&text)? {
        if value["kind"].as_str() == Some("Namespace") {
            continue;
        }
        let meta = value
            .get_mut("metadata")
            .and_then(serde_json::Value::as_object_mut)
            .context("a manifest without metadata")?;
        if meta.contains_key("namespace") {
            meta.insert("namespace".into(), ns.into());
        }
        docs.push(wi_webhook::yaml::to_string(&value));
    }
    Ok(docs.join("---\n"))
}
