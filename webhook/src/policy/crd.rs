//! The `AgentPool` custom resource: one per Azure DevOps agent pool, cluster-scoped.
//! Its CRD YAML under `manifests/` is generated from this type (`wi-webhook crd`).

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "wi-webhook.dev";
/// Pod label naming the pool a pod belongs to (one of the pod's three pool claims).
pub const POOL_LABEL: &str = "wi-webhook.dev/agent-pool";
/// The env var the ADO agent registers with; a literal value is a pool claim.
pub const AZP_POOL: &str = "AZP_POOL";

const DNS_LABEL: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
const DNS_SUBDOMAIN: &str = "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$";
const GUID: &str = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";

/// An agent pool, the team that owns it, and the one managed identity its agents get.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "wi-webhook.dev",
    version = "v1alpha1",
    kind = "AgentPool",
    plural = "agentpools",
    shortname = "ap",
    status = "AgentPoolStatus",
    printcolumn = r#"{"name":"Team","type":"string","jsonPath":".spec.team"}"#,
    printcolumn = r#"{"name":"Client ID","type":"string","jsonPath":".spec.identity.clientId"}"#,
    printcolumn = r#"{"name":"Enforcement","type":"string","jsonPath":".spec.enforcement"}"#,
    printcolumn = r#"{"name":"Conflicts","type":"integer","jsonPath":".status.conflictCount"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct AgentPoolSpec {
    /// The ADO project or team that owns the pool.
    #[schemars(length(min = 1, max = 253))]
    pub team: String,
    /// The pool's managed identity.
    pub identity: PoolIdentitySpec,
    /// Namespaces where this pool's agents run (at least one).
    #[schemars(length(min = 1, max = 256), inner(length(max = 63), regex(pattern = DNS_LABEL)))]
    pub namespaces: Vec<String>,
    /// ServiceAccount names the pool's agents may use in those namespaces.
    #[schemars(length(min = 1, max = 256), inner(length(max = 253), regex(pattern = DNS_SUBDOMAIN)))]
    pub service_accounts: Vec<String>,
    /// What a violation does: Enforce denies, Warn allows with warnings, Audit allows and
    /// records.
    #[serde(default)]
    pub enforcement: Enforcement,
    /// Who may reach the pool's token by a path other than the pool's own workloads: each
    /// list empty by default, every use recorded.
    #[serde(default)]
    pub access: PoolAccess,
}

/// Break-glass lists: the subjects allowed each path to a pool pod's token.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PoolAccess {
    /// May `kubectl exec`, `attach` and `port-forward` into the pool's pods.
    #[serde(default)]
    #[schemars(length(max = 64))]
    pub shell: Vec<AccessSubject>,
    /// May request tokens (TokenRequest) for the pool's ServiceAccounts, besides the kubelets.
    #[serde(default)]
    #[schemars(length(max = 64))]
    pub token_requesters: Vec<AccessSubject>,
    /// May create pods in the pool's namespaces directly, besides the workload controllers.
    #[serde(default)]
    #[schemars(length(max = 64))]
    pub pod_creators: Vec<AccessSubject>,
}

/// A user, group or ServiceAccount, as an RBAC subject names it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.kind == 'ServiceAccount' ? has(self.__namespace__) : !has(self.__namespace__)").message("namespace is set for a ServiceAccount, and only for one"))]
pub struct AccessSubject {
    pub kind: SubjectKind,
    /// User name, group name, or ServiceAccount name, exactly as the API server
    /// authenticates it.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The ServiceAccount's namespace (ServiceAccount only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,
}

#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SubjectKind {
    User,
    Group,
    ServiceAccount,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PoolIdentitySpec {
    /// Client id (GUID) of the pool's managed identity.
    #[schemars(regex(pattern = GUID))]
    pub client_id: String,
    /// Tenant id (GUID); absent means the webhook's tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = GUID))]
    pub tenant_id: Option<String>,
}

#[derive(
    schemars::JsonSchema,
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
)]
pub enum Enforcement {
    /// Record only (log, metric, audit annotation).
    Audit,
    /// Allow, and return admission warnings that kubectl prints.
    Warn,
    /// Deny (403).
    #[default]
    Enforce,
}

impl Enforcement {
    pub fn as_str(self) -> &'static str {
        match self {
            Enforcement::Enforce => "Enforce",
            Enforcement::Warn => "Warn",
            Enforcement::Audit => "Audit",
        }
    }
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AgentPoolStatus {
    /// The `Conflict` condition: True while the pool shares a namespace or its client id.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Other pools that share a namespace or the client id with this one.
    #[serde(default)]
    pub conflicts: Vec<PoolConflict>,
    #[serde(default)]
    pub conflict_count: i32,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    pub reason: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct PoolConflict {
    /// `namespace` or `clientId`.
    pub field: String,
    pub value: String,
    /// The other pool.
    pub pool: String,
}

/// The CRD as YAML, as committed under `manifests/`.
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt;
    let crd = AgentPool::crd();
    let header = "# Generated by `wi-webhook crd` from webhook/src/policy/crd.rs; do not edit.\n";
    format!("{header}{}", crate::yaml::to_string(&crd))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed CRD is what `wi-webhook crd` prints: regenerate it with
    /// `cargo run -p wi-webhook -- crd > manifests/base/crd-agentpools.yaml`.
    #[test]
    fn committed_crd_matches_the_type() {
        let committed = include_str!("../../../manifests/base/crd-agentpools.yaml");
        assert!(
            committed == crd_yaml(),
            "manifests/base/crd-agentpools.yaml is stale: run `cargo run -p wi-webhook -- crd > manifests/base/crd-agentpools.yaml`"
        );
    }

    #[test]
    fn enforcement_defaults_to_enforce() {
        let spec: AgentPoolSpec = serde_json::from_value(serde_json::json!({
            "team": "t", "identity": {"clientId": "6f1a3f4e-2b7c-4f0e-9a51-3c2d1e0f9a8b"},
            "namespaces": ["a"], "serviceAccounts": ["s"]
        }))
        .unwrap();
        assert_eq!(spec.enforcement, Enforcement::Enforce);
    }
}
