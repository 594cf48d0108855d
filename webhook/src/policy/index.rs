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
    /// `metadata.creationTimestamp` (RFC 3339, as the API server writes it; empty when
    /// unknown): of two conflicting pools the older keeps working.
    pub created: String,
    /// Who else may reach the pool's token (break-glass lists).
    pub access: PoolAccess,
}

impl Pool {
    /// Whether `self` came after `other`: later created, or created in the same second with
    /// a later name. The newer of two conflicting pools is the one denied.
    pub fn is_newer_than(&self, other: &Pool) -> bool {
        (&self.created, &self.name) > (&other.created, &other.name)
    }

    pub fn from_resource(p: &AgentPool) -> Option<Pool> {
        Some(Pool {
            name: p.metadata.name.clone()?,
            team: p.spec.team.clone(),
            client_id: p.spec.identity.client_id.clone(),
            tenant_id: p.spec.identity.tenant_id.clone().filter(|t| !t.is_empty()),
            namespaces: p.spec.namespaces.clone(),
            service_accounts: p.spec.service_accounts.clone(),
            enforcement: p.spec.enforcement,
            created: p
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.to_string())
                .unwrap_or_default(),
            access: p.spec.access.clone(),
        })
    }
}

/// Client ids are GUIDs: compared as such in every spelling Azure reads (`crate::guid`),
/// invisible characters ignored; a value that is no GUID at all is compared as written.
pub fn client_key(id: &str) -> String {
    match crate::guid::loose(id) {
        Some(g) => g.to_string(),
        None => id.trim().to_ascii_lowercase(),
    }
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
        // Oldest first: the first pool of a namespace or client id is the one that owns it.
        for list in index
            .by_namespace
            .values_mut()
            .chain(index.by_client.values_mut())
        {
            list.sort_by(|a, b| (&a.created, &a.name).cmp(&(&b.created, &b.name)));
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

    /// The pools that list `namespace`, oldest first (more than one is a conflict).
    pub fn in_namespace(&self, namespace: &str) -> &[Arc<Pool>] {
        self.by_namespace.get(namespace).map_or(&[], Vec::as_slice)
    }

    /// The pools whose identity is `client_id`, oldest first (more than one is a conflict).
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

    /// The conflicts that deny `pool`'s pods: those with an older pool.
    pub fn losing_conflicts_of(&self, pool: &Pool) -> Vec<PoolConflict> {
        self.conflicts_of(pool)
            .into_iter()
            .filter(|c| self.get(&c.pool).is_some_and(|o| pool.is_newer_than(o)))
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
