//! Keeps the pool index current from the cluster (kube-rs reflector over AgentPools), logs
//! conflicts when they change, and writes each pool's conflicts into its status.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use serde_json::json;

use super::crd::{AgentPool, AgentPoolStatus, Condition, PoolConflict};
use super::{Policy, Pool, PoolIndex};

/// How long the stream must be quiet before a burst of events (1,000 pools created at once,
/// or the echoes of our own status writes) is indexed once, and the longest a burst may defer
/// the index.
const QUIET: Duration = Duration::from_millis(10);
const MAX_DEFER: Duration = Duration::from_millis(200);

/// Starts watching AgentPools; the returned store is ready after the first full list.
pub fn spawn(client: Client, policy: Policy) -> Store<AgentPool> {
    let api: Api<AgentPool> = Api::all(client);
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher(api.clone(), crate::serviceaccounts::list_config())
            .default_backoff()
            .modify(slim),
    );
    let reader = store.clone();
    // Status writes go to their own task, which always takes the newest snapshot: a burst of
    // events (1,000 pools created at once) must neither delay the index behind one PATCH per
    // pool per event nor queue writes that are already stale.
    type Snapshot = (
        Vec<Arc<AgentPool>>,
        BTreeMap<String, Vec<PoolConflict>>,
        BTreeSet<String>,
    );
    let (status_tx, mut status_rx) = tokio::sync::watch::channel::<Option<Snapshot>>(None);
    let status_api = api.clone();
    tokio::spawn(async move {
        while status_rx.changed().await.is_ok() {
            let snapshot = status_rx.borrow_and_update().clone();
            if let Some((pools, conflicts, denied)) = snapshot {
                write_status(&status_api, &pools, &conflicts, &denied).await;
            }
        }
    });
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        let mut last: BTreeMap<String, Vec<PoolConflict>> = BTreeMap::new();
        let mut pending = Pending::default();
        while let Some(event) = stream.next().await {
            pending.note(&event);
            if !pending.due() {
                continue;
            }
            // Index once the burst is over: the store already holds every event read.
            let deadline = tokio::time::Instant::now() + MAX_DEFER;
            while tokio::time::Instant::now() < deadline {
                match tokio::time::timeout(QUIET, stream.next()).await {
                    Ok(Some(event)) => pending.note(&event),
                    Ok(None) | Err(_) => break,
                }
            }
            if !pending.due() {
                continue;
            }
            pending.changed = false;
            let pools: Vec<Arc<AgentPool>> = reader.state();
            let index = PoolIndex::build(
                pools
                    .iter()
                    .filter_map(|p| Pool::from_resource(p))
                    .collect::<Vec<_>>()
                    .iter(),
            );
            let conflicts = index.all_conflicts();
            // The newer pool of each conflict: its pods are denied, the older keeps working.
            let denied: BTreeSet<String> = index
                .pools()
                .filter(|p| !index.losing_conflicts_of(p).is_empty())
                .map(|p| p.name.clone())
                .collect();
            if conflicts != last {
                for (pool, list) in conflicts.iter().filter(|(_, l)| !l.is_empty()) {
                    for c in list {
                        let denied = denied.contains(pool);
                        tracing::warn!(pool = %pool, field = %c.field, value = %c.value, other = %c.pool, denied, "AgentPool conflict: the newer pool's pods are denied until fixed");
                    }
                }
                last = conflicts.clone();
            }
            policy.replace(index);
            let _ = status_tx.send(Some((pools, conflicts, denied)));
        }
    });
    store
}

/// What the events read since the last index call for.
#[derive(Debug, Default)]
struct Pending {
    /// A (re-)list is in progress: the store is only complete after InitDone; until then keep
    /// the old index.
    listing: bool,
    /// The store changed since the index was built.
    changed: bool,
}

impl Pending {
    fn note(&mut self, event: &Result<watcher::Event<AgentPool>, watcher::Error>) {
        match event {
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => self.listing = true,
            Ok(_) => {
                self.listing = false;
                self.changed = true;
            }
            // The backoff retries.
            Err(e) => tracing::warn!(error = %e, "AgentPool watch error (is the CRD installed?)"),
        }
    }

    fn due(&self) -> bool {
        self.changed && !self.listing
    }
}

/// What the store keeps of an AgentPool: its name, spec and status. managedFields, labels and
/// annotations (kubectl's last-applied-configuration, for one) are never read.
pub fn slim(pool: &mut AgentPool) {
    let meta = &mut pool.metadata;
    meta.managed_fields = None;
    meta.labels = None;
    meta.annotations = None;
}

/// The status a pool should have for its conflicts; `denied` when it is the newer pool of
/// one of them.
pub fn desired_status(conflicts: &[PoolConflict], denied: bool) -> AgentPoolStatus {
    let condition = if conflicts.is_empty() {
        Condition {
            type_: "Conflict".into(),
            status: "False".into(),
            reason: "NoConflict".into(),
            message: "no other AgentPool shares a namespace or the client id".into(),
            last_transition_time: None,
        }
    } else {
        let what = conflicts
            .iter()
            .map(|c| format!("{} {} with pool {}", c.field, c.value, c.pool))
            .collect::<Vec<_>>()
            .join("; ");
        let effect = if denied {
            "this pool is the newer one: its pods are denied until fixed"
        } else {
            "this pool is the older one: its pods keep being admitted, the other pool's are denied"
        };
        Condition {
            type_: "Conflict".into(),
            status: "True".into(),
            reason: "SharedWithAnotherPool".into(),
            message: format!("shares {what}; {effect}"),
            last_transition_time: None,
        }
    };
    AgentPoolStatus {
        conditions: vec![condition],
        conflicts: conflicts.to_vec(),
        conflict_count: conflicts.len() as i32,
    }
}

/// Writes the status of each pool whose stored status differs (so our own writes, which come
/// back as watch events, settle at once). Failures are logged; the next event retries.
async fn write_status(
    api: &Api<AgentPool>,
    pools: &[Arc<AgentPool>],
    conflicts: &BTreeMap<String, Vec<PoolConflict>>,
    denied: &BTreeSet<String>,
) {
    for pool in pools {
        let Some(name) = pool.metadata.name.as_deref() else {
            continue;
        };
        let want = desired_status(
            conflicts.get(name).map_or(&[], Vec::as_slice),
            denied.contains(name),
        );
        let same = pool.status.as_ref().is_some_and(|have| {
            have.conflicts == want.conflicts
                && have.conditions.first().map(|c| (&c.status, &c.message))
                    == want.conditions.first().map(|c| (&c.status, &c.message))
        });
        if same {
            continue;
        }
        let mut status = want;
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        for c in &mut status.conditions {
            c.last_transition_time = Some(now.clone());
        }
        let patch = json!({"status": status});
        match api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            // Deleted since the event: nothing to report on.
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => tracing::warn!(pool = name, error = %e, "cannot write AgentPool status"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;

    fn pool(name: &str) -> AgentPool {
        let spec = serde_json::from_value(json!({
            "team": "t",
            "identity": {"clientId": "c"},
            "namespaces": ["ns"],
            "serviceAccounts": ["sa"],
        }))
        .unwrap();
        AgentPool::new(name, spec)
    }

    #[test]
    fn slim_keeps_name_spec_and_status() {
        let mut p = pool("p");
        p.metadata.managed_fields = Some(vec![ManagedFieldsEntry::default()]);
        p.metadata.labels = Some(BTreeMap::from([("a".into(), "b".into())]));
        p.metadata.annotations = Some(BTreeMap::from([("a".into(), "b".into())]));
        p.metadata.resource_version = Some("7".into());
        p.status = Some(desired_status(&[], false));
        let want_spec = p.spec.clone();
        let want_status = p.status.clone();
        slim(&mut p);
        assert_eq!(p.metadata.name.as_deref(), Some("p"));
        assert_eq!(p.metadata.resource_version.as_deref(), Some("7"));
        assert!(p.metadata.managed_fields.is_none());
        assert!(p.metadata.labels.is_none());
        assert!(p.metadata.annotations.is_none());
        assert_eq!(p.spec, want_spec);
        assert_eq!(p.status, want_status);
    }

    #[test]
    fn the_index_waits_for_a_complete_list_and_a_change() {
        use watcher::Event;
        let mut pending = Pending::default();
        assert!(!pending.due());
        pending.note(&Ok(Event::Init));
        pending.note(&Ok(Event::InitApply(pool("a"))));
        assert!(!pending.due());
        pending.note(&Ok(Event::InitDone));
        assert!(pending.due());
        pending.changed = false;
        // An error alone changes nothing.
        pending.note(&Err(watcher::Error::NoResourceVersion));
        assert!(!pending.due());
        pending.note(&Ok(Event::Apply(pool("a"))));
        assert!(pending.due());
        // A re-list starting defers the index even with a change pending.
        pending.note(&Ok(Event::Init));
        assert!(!pending.due());
        pending.note(&Ok(Event::InitDone));
        assert!(pending.due());
    }
}
