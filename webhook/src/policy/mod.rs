//! Pool isolation: AgentPools say which namespaces, ServiceAccounts and
//! managed identity belong to which agent pool and team; every pod (and workload template)
//! is checked against them, and the owning pool's identity feeds the mutation.
//!
//! `rules` is the pure decision; `index` the lookups it runs on; `watch` keeps the index
//! current from the cluster and writes conflicts to the pools' status.

pub mod access;
pub mod crd;
pub mod env;
mod ephemeral;
pub mod events;
pub mod index;
pub mod origin;
pub mod reserved;
pub mod rules;
pub mod shell;
pub mod tokens;
pub mod update;
pub mod watch;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use crate::denial::Denial;
use crate::mutation::PoolIdentity;
use crd::Enforcement;
pub use index::{Pool, PoolIndex};
pub use rules::{Evaluation, Subject, Violation};

/// The pool policy, shared by every request; the index is swapped whole on every change.
#[derive(Clone)]
pub struct Policy {
    index: Arc<RwLock<Arc<PoolIndex>>>,
    /// For checking a new AgentPool against the pools stored right now rather than the
    /// watch's view, which may lag a create made a moment earlier (one `kubectl apply` of
    /// two conflicting pools).
    live: Option<kube::Api<crd::AgentPool>>,
    /// Counts index replacements, for whoever follows the pool set (`crate::scoping`).
    changes: Arc<tokio::sync::watch::Sender<u64>>,
    /// Namespaces no AgentPool may name (`reserved`).
    pub reserved: reserved::Reserved,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            index: Arc::default(),
            live: None,
            changes: Arc::new(tokio::sync::watch::channel(0).0),
            reserved: reserved::Reserved::default(),
        }
    }
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("pools", &self.snapshot().len())
            .finish()
    }
}

impl Policy {
    /// A policy over a fixed set of pools (offline commands and tests).
    pub fn of(pools: &[Pool]) -> Self {
        let policy = Policy::default();
        policy.replace(PoolIndex::build(pools));
        policy
    }

    /// A policy that reads AgentPools from the API for AgentPool admissions.
    pub fn with_live(mut self, api: kube::Api<crd::AgentPool>) -> Self {
        self.live = Some(api);
        self
    }

    /// Every pool as stored now: listed from the API where possible (bounded by a short
    /// timeout), else the watch's view.
    pub async fn current_pools(&self) -> Vec<Pool> {
        if let Some(api) = &self.live {
            let list = tokio::time::timeout(
                std::time::Duration::from_secs(2),
                api.list(&Default::default()),
            )
            .await;
            match list {
                Ok(Ok(list)) => return list.items.iter().filter_map(Pool::from_resource).collect(),
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot list AgentPools; using the cache"),
                Err(_) => tracing::warn!("listing AgentPools timed out; using the cache"),
            }
        }
        self.snapshot().pools().map(|p| (**p).clone()).collect()
    }

    pub fn snapshot(&self) -> Arc<PoolIndex> {
        self.index.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn replace(&self, index: PoolIndex) {
        *self.index.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(index);
        self.changes.send_modify(|n| *n += 1);
    }

    /// Changes on every index replacement; 0 until the first (a complete list of the pools).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    pub fn evaluate(&self, subject: &Subject<'_>) -> Evaluation {
        rules::evaluate(&self.snapshot(), subject)
    }
}

impl Evaluation {
    /// The owning pool's identity, for the mutation.
    pub fn pool_identity(&self) -> Option<PoolIdentity> {
        self.pool.as_ref().map(|p| PoolIdentity {
            client_id: p.client_id.clone(),
            tenant_id: p.tenant_id.clone(),
        })
    }
}

/// What the violations do: Enforce ones deny (all rules in one message), Warn ones become
/// admission warnings, Audit ones audit annotations; all are logged and counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    pub warnings: Vec<String>,
    pub audit_annotations: BTreeMap<String, String>,
    pub violations: Vec<Violation>,
}

/// The rule of a policy denial; the message lists each violated rule's own id.
pub const POLICY_RULE: &str = "pool-policy";

/// Key of the audit annotation (the API server prefixes it with the webhook's name).
pub const AUDIT_KEY: &str = "pool-violations";

pub fn verdict(
    display: &str,
    violations: Vec<Violation>,
) -> Result<Verdict, (Denial, Vec<Violation>)> {
    verdict_for(format_args!("pod {display}"), violations)
}

/// [`verdict`] for any request: `what` opens the denial (`pod ns/name`, `exec into pod
/// ns/name`).
pub fn verdict_for(
    what: impl std::fmt::Display,
    violations: Vec<Violation>,
) -> Result<Verdict, (Denial, Vec<Violation>)> {
    if violations
        .iter()
        .any(|v| v.enforcement == Enforcement::Enforce)
    {
        let all = violations
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        let denial = Denial {
            code: 403,
            rule: POLICY_RULE,
            message: format!("{what} violates pool isolation: {all}"),
        };
        return Err((denial, violations));
    }
    let warnings = violations
        .iter()
        .filter(|v| v.enforcement == Enforcement::Warn)
        .map(ToString::to_string)
        .collect();
    let audited: Vec<String> = violations
        .iter()
        .filter(|v| v.enforcement == Enforcement::Audit)
        .map(ToString::to_string)
        .collect();
    let mut audit_annotations = BTreeMap::new();
    if !audited.is_empty() {
        audit_annotations.insert(AUDIT_KEY.to_string(), audited.join("; "));
    }
    Ok(Verdict {
        warnings,
        audit_annotations,
        violations,
    })
}
