//! The webhook's decision without a cluster: ServiceAccounts and AgentPools among the inputs
//! are the cluster state, and every Pod and workload is decided on as the cluster would
//! (`Admitter::decide`), the pod templates mutated as the webhook mutates their pods. Shared
//! by `wi-webhook mutate`, `wi-webhook audit` and the golden tests.

use k8s_openapi::api::core::v1::ServiceAccount;
use serde_json::Value;

use crate::admission::Admitter;
use crate::config::MutationConfig;
use crate::denial::Denial;
use crate::inputs::{Document, kind};
use crate::policy::crd::AgentPool;
use crate::policy::{Policy, Pool, Violation};
use crate::serviceaccounts::{ServiceAccounts, store_of};
use crate::workloads::ObjectId;

/// The result for one Pod or workload.
#[derive(Debug)]
pub struct Mutated {
    pub source: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// Operations relative to the pod (for a workload: to its pod template).
    pub patch: json_patch::Patch,
    /// The object with the patch applied (unchanged when denied).
    pub object: Value,
    pub denial: Option<Denial>,
    /// Admission warnings (pool violations in Warn mode).
    pub warnings: Vec<String>,
    /// Every pool violation, whatever its enforcement.
    pub violations: Vec<Violation>,
    pub pool: Option<String>,
}

/// The cluster state the offline commands judge against: ServiceAccounts and AgentPools.
pub struct ClusterState {
    pub accounts: crate::serviceaccounts::SaCache,
    pub policy: Policy,
}

impl ClusterState {
    /// The ServiceAccounts and AgentPools among `docs` (a namespace-less ServiceAccount is in
    /// `default_namespace`).
    pub fn from_documents(docs: &[Document], default_namespace: &str) -> Result<Self, String> {
        let mut accounts = Vec::new();
        for d in docs.iter().filter(|d| kind(&d.value) == "ServiceAccount") {
            let mut sa: ServiceAccount = serde_json::from_value(d.value.clone())
                .map_err(|e| format!("{}: not a ServiceAccount: {e}", d.source))?;
            sa.metadata
                .namespace
                .get_or_insert_with(|| default_namespace.to_string());
            accounts.push(sa);
        }
        let mut pools: Vec<(Pool, &str)> = Vec::new();
        for d in docs.iter().filter(|d| kind(&d.value) == "AgentPool") {
            let pool: AgentPool = serde_json::from_value(d.value.clone())
                .map_err(|e| format!("{}: not an AgentPool: {e}", d.source))?;
            let pool = Pool::from_resource(&pool)
                .ok_or_else(|| format!("{}: AgentPool without metadata.name", d.source))?;
            // A cluster holds one AgentPool of a name: two are a mistake to name, not to
            // settle by input order.
            if let Some((_, first)) = pools.iter().find(|(p, _)| p.name == pool.name) {
                return Err(format!(
                    "AgentPool {} is defined twice, in {first} and {}; keep one of them",
                    pool.name, d.source
                ));
            }
            pools.push((pool, &d.source));
        }
        let pools: Vec<Pool> = pools.into_iter().map(|(p, _)| p).collect();
        Ok(ClusterState {
            accounts: store_of(accounts),
            policy: Policy::of(&pools),
        })
    }
}

impl ClusterState {
    /// The webhook's decision over this state, with the webhook's configuration.
    pub fn admitter(self, config: MutationConfig) -> Admitter {
        Admitter {
            config,
            service_accounts: ServiceAccounts::from_store(self.accounts),
            policy: self.policy,
        }
    }
}

pub struct Offline {
    admitter: Admitter,
    default_namespace: String,
}

impl Offline {
    /// ServiceAccounts and AgentPools among `docs` become the cluster state.
    pub fn new(
        docs: &[Document],
        config: MutationConfig,
        default_namespace: &str,
    ) -> Result<Self, String> {
        let state = ClusterState::from_documents(docs, default_namespace)?;
        Ok(Offline {
            admitter: state.admitter(config),
            default_namespace: default_namespace.to_string(),
        })
    }

    /// Decides on every Pod and workload among `docs`, in input order, as the cluster would.
    pub async fn mutate_all(&self, docs: &[Document]) -> Vec<Mutated> {
        let mut out = Vec::new();
        for doc in docs {
            let Some(target) = ObjectId::of_document(&doc.value, &self.default_namespace) else {
                continue;
            };
            out.push(self.mutate_one(doc, target).await);
        }
        out
    }

    async fn mutate_one(&self, doc: &Document, target: ObjectId) -> Mutated {
        let decision = self.admitter.decide(&target, &doc.value).await;
        let (pointer, display) = (target.pod_pointer(), target.display);
        let mut result = Mutated {
            source: doc.source.clone(),
            kind: target.kind,
            namespace: target.namespace,
            name: target.name,
            patch: json_patch::Patch(vec![]),
            object: doc.value.clone(),
            denial: None,
            warnings: decision.verdict.warnings,
            violations: decision.verdict.violations,
            pool: decision.pool,
        };
        match decision.result {
            Err(denial) => result.denial = Some(denial),
            Ok(patch) => {
                let pod = result.object.pointer_mut(pointer).expect("decided on it");
                let applied = patch
                    .to_json_patch()
                    .map_err(|e| e.to_string())
                    .and_then(|p| {
                        json_patch::patch(pod, &p.0)
                            .map(|()| p)
                            .map_err(|e| e.to_string())
                    });
                match applied {
                    Ok(p) => result.patch = p,
                    // The patch is computed on this very object; failing to apply is a bug.
                    Err(e) => {
                        result.denial = Some(Denial {
                            code: 500,
                            rule: "internal",
                            message: format!(
                                "pod {display}: the computed patch does not apply: {e}"
                            ),
                        })
                    }
                }
            }
        }
        result
    }
}
