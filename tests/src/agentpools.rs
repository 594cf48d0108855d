//! AgentPools in end-to-end tests: unique client ids, pools deleted when the test ends, and
//! waiting until the webhook has scoped its fail-closed webhooks to a pool's namespace.
//!
//! AgentPools are cluster-scoped: every test makes its own, with names and client ids unique
//! to it, and deletes them at the end (a guard also on failure).

use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::{Value, json};

use crate::{Cluster, WEBHOOK_CONFIGURATION, poll};

pub use crate::pool_namespace::{AGENT_SA, PoolNamespace};

/// Suffix of the webhooks that fail closed in the pools' namespaces.
pub const POOL_NAMESPACES: &str = ".pool-namespaces.wi-webhook.dev";

pub fn pool_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("wi-webhook.dev", "v1alpha1", "AgentPool"),
        "agentpools",
    )
}

/// A GUID unique to this run and `seed`.
pub fn guid(seed: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (seed, std::process::id(), std::time::SystemTime::now()).hash(&mut h);
    let a = h.finish();
    seed.hash(&mut h);
    let b = h.finish();
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

/// The spec of a pool of one namespace whose agents run as ServiceAccount `agent`.
pub fn pool_spec(
    team: &str,
    client_id: &str,
    tenant_id: &str,
    namespace: &str,
    enforcement: &str,
) -> Value {
    json!({
        "team": team,
        "identity": {"clientId": client_id, "tenantId": tenant_id},
        "namespaces": [namespace],
        "serviceAccounts": ["agent"],
        "enforcement": enforcement,
        // The tests create pool pods directly, as the admin: a listed pod creator.
        "access": {"podCreators": [{"kind": "User", "name": "admin"}]},
    })
}

/// Deletes the AgentPools a test made, also when it fails.
pub struct Pools {
    pub api: Api<DynamicObject>,
    names: Vec<String>,
    kubectl: std::path::PathBuf,
    kubeconfig: std::path::PathBuf,
}

impl Pools {
    pub fn new(cluster: &Cluster) -> Self {
        Pools {
            api: Api::all_with(cluster.client.clone(), &pool_resource()),
            names: Vec::new(),
            kubectl: cluster.kubectl_path(),
            kubeconfig: cluster.kubeconfig.clone(),
        }
    }

    /// The AgentPool `name` with `spec`, as an object to create.
    pub fn object(name: &str, spec: Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "wi-webhook.dev/v1alpha1",
            "kind": "AgentPool",
            "metadata": {"name": name},
            "spec": spec,
        }))
        .expect("static AgentPool")
    }

    /// Deletes the AgentPool `name` at the end (for pools created through `api`).
    pub fn track(&mut self, name: &str) {
        self.names.push(name.to_string());
    }

    pub async fn create(&mut self, name: &str, spec: Value) -> Result<DynamicObject, kube::Error> {
        // Deleted at the end even when the create's answer is lost.
        self.track(name);
        self.api
            .create(&PostParams::default(), &Self::object(name, spec))
            .await
    }

    pub async fn patch_spec(&self, name: &str, spec: Value) -> Result<DynamicObject, kube::Error> {
        self.api
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": spec})),
            )
            .await
    }
}

impl Drop for Pools {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = std::process::Command::new(&self.kubectl)
                .arg("--kubeconfig")
                .arg(&self.kubeconfig)
                .args([
                    "delete",
                    "agentpool",
                    name,
                    "--ignore-not-found",
                    "--wait=false",
                ])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

/// Whether every fail-closed (`*.pool-namespaces.*`) webhook of the validating
/// configuration selects `namespace`.
pub async fn pool_scoped(cluster: &Cluster, namespace: &str) -> anyhow::Result<bool> {
    let config = Api::<ValidatingWebhookConfiguration>::all(cluster.client.clone())
        .get(WEBHOOK_CONFIGURATION)
        .await?;
    let scoped: Vec<bool> = config
        .webhooks
        .iter()
        .flatten()
        .filter(|w| w.name.ends_with(POOL_NAMESPACES))
        .map(|w| {
            w.namespace_selector
                .iter()
                .flat_map(|s| s.match_expressions.iter().flatten())
                .any(|r| {
                    r.key == "kubernetes.io/metadata.name"
                        && r.operator == "In"
                        && r.values.iter().flatten().any(|v| v == namespace)
                })
        })
        .collect();
    anyhow::ensure!(
        !scoped.is_empty(),
        "no *{POOL_NAMESPACES} webhook registered"
    );
    Ok(scoped.iter().all(|s| *s))
}

/// Waits until the webhook has scoped its fail-closed webhooks to `namespace` (call it after
/// creating an AgentPool that names it), and a moment more for the API server to load them.
pub async fn wait_pool_scoped(cluster: &Cluster, namespace: &str) -> anyhow::Result<()> {
    wait_scope(cluster, namespace, true).await
}

/// Waits until no fail-closed webhook selects `namespace` any more.
pub async fn wait_pool_unscoped(cluster: &Cluster, namespace: &str) -> anyhow::Result<()> {
    wait_scope(cluster, namespace, false).await
}

async fn wait_scope(cluster: &Cluster, namespace: &str, want: bool) -> anyhow::Result<()> {
    let what = format!("namespace {namespace} scoped: {want}");
    poll(&what, Duration::from_secs(20), || async {
        Ok((pool_scoped(cluster, namespace).await? == want).then_some(()))
    })
    .await?;
    // The API server reloads webhook configurations from its informer.
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(())
}
