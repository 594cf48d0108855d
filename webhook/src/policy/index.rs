//! The AgentPools as lookups: by name, by namespace and by client id, rebuilt on every change
//! of the watched pools, so a decision costs hash lookups, never a scan.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use super::crd::{AgentPool, Enforcement, PoolAccess, PoolConflict};

/// What the decision needs of one AgentPool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pool {
    pub name: String,
    pub team: String,
    pub client_id: String,
    pub tenant_id: Option<String>,
    pub namespaces: Vec<String>,
    pub service_accounts: Vec<String>,
    pub enforcement: Enforcement,
    /// Who else may reach the pool's token (break-glass lists).
    pub access: PoolAccess,
}

impl Pool {
    pub fn from_resource(p: &AgentPool) -> Option<Pool> {
        Some(Pool {
            name: p.metadata.name.clone()?,
            team: p.spec.team.clone(),
            client_id: p.spec.identity.client_id.clone(),
            tenant_id: p.spec.identity.tenant_id.clone().filter(|t| !t.is_empty()),
            namespaces: p.spec.namespaces.clone(),
            service_accounts: p.spec.service_accounts.clone(),
            enforcement: p.spec.enforcement,
            access: p.spec.access.clone(),
        })
    }
}

/// Client ids are GUIDs: compare them case-insensitively.
pub fn client_key(id: &str) -> String {
    id.trim().to_ascii_lowercase()
}

#[derive(Debug, Default)]
pub struct PoolIndex {
    by_name: HashMap<String, Arc<Pool>>,
    by_namespace: HashMap<String, Vec<Arc<Pool>>>,
    by_client: HashMap<String, Vec<Arc<Pool>>>,
}

impl PoolIndex {
    pub fn build<'a>(pools: impl IntoIterator<Item = &'a Pool>) -> Self {
        let mut index = PoolIndex::default();
        for pool in pools {
            let pool = Arc::new(pool.clone());
            for ns in pool.namespaces.iter().collect::<BTreeSet<_>>() {
                index
                    .by_namespace
                    .entry(ns.clone())
                    .or_default()
                    .push(pool.clone());
            }
            index
                .by_client
                .entry(client_key(&pool.client_id))
                .or_default()
                .push(pool.clone());
            index.by_name.insert(pool.name.clone(), pool);
        }
        // Deterministic order for messages.
        for list in index
            .by_namespace
            .values_mut()
            .chain(index.by_client.values_mut())
        {
            list.sort_by(|a, b| a.name.cmp(&b.name));
        }
        index
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    pub fn pools(&self) -> impl Iterator<Item = &Arc<Pool>> {
        self.by_name.values()
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Pool>> {
        self.by_name.get(name)
    }

    /// The pools that list `namespace` (more than one is a conflict).
    pub fn in_namespace(&self, namespace: &str) -> &[Arc<Pool>] {
        self.by_namespace.get(namespace).map_or(&[], Vec::as_slice)
    }

    /// The pools whose identity is `client_id` (more than one is a conflict).
    pub fn owning(&self, client_id: &str) -> &[Arc<Pool>] {
        self.by_client
            .get(&client_key(client_id))
            .map_or(&[], Vec::as_slice)
    }

    /// What `pool` shares with other pools: each namespace and client id listed elsewhere too.
    pub fn conflicts_of(&self, pool: &Pool) -> Vec<PoolConflict> {
        let mut out = BTreeSet::new();
        for ns in &pool.namespaces {
            for other in self.in_namespace(ns).iter().filter(|o| o.name != pool.name) {
                out.insert(PoolConflict {
                    field: "namespace".into(),
                    value: ns.clone(),
                    pool: other.name.clone(),
                });
            }
        }
        for other in self
            .owning(&pool.client_id)
            .iter()
            .filter(|o| o.name != pool.name)
        {
            out.insert(PoolConflict {
                field: "clientId".into(),
                value: pool.client_id.clone(),
                pool: other.name.clone(),
            });
        }
        out.into_iter().collect()
    }

    /// Every pool's conflicts, by pool name (pools without conflicts included, empty).
    pub fn all_conflicts(&self) -> BTreeMap<String, Vec<PoolConflict>> {
        self.by_name
            .values()
            .map(|p| (p.name.clone(), self.conflicts_of(p)))
            .collect()
    }

    /// Pools taking part in at least one conflict.
    pub fn conflicted_pools(&self) -> usize {
        self.all_conflicts()
            .values()
            .filter(|c| !c.is_empty())
            .count()
    }
}
