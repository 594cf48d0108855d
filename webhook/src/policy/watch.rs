//! Keeps the pool index current from the cluster (kube-rs reflector over AgentPools), logs
//! conflicts when they change, and writes each pool's conflicts into its status.

use std::collections::BTreeMap;

use futures::StreamExt;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use serde_json::json;

use super::crd::{AgentPool, AgentPoolStatus, Condition, PoolConflict};
use super::{Policy, Pool, PoolIndex};

/// Starts watching AgentPools; the returned store is ready after the first full list.
pub fn spawn(client: Client, policy: Policy) -> Store<AgentPool> {
    let api: Api<AgentPool> = Api::all(client);
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher(api.clone(), watcher::Config::default()).default_backoff(),
    );
    let reader = store.clone();
    // Status writes go to their own task, which always takes the newest snapshot: a burst of
    // events (1,000 pools created at once) must neither delay the index behind one PATCH per
    // pool per event nor queue writes that are already stale.
    type Snapshot = (Vec<AgentPool>, BTreeMap<String, Vec<PoolConflict>>);
    let (status_tx, mut status_rx) = tokio::sync::watch::channel::<Option<Snapshot>>(None);
    let status_api = api.clone();
    tokio::spawn(async move {
        while status_rx.changed().await.is_ok() {
            let snapshot = status_rx.borrow_and_update().clone();
            if let Some((pools, conflicts)) = snapshot {
                write_status(&status_api, &pools, &conflicts).await;
            }
        }
    });
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        let mut last: BTreeMap<String, Vec<PoolConflict>> = BTreeMap::new();
        while let Some(event) = stream.next().await {
            match event {
                // The store is only complete after InitDone; until then keep the old index.
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => continue,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "AgentPool watch error (is the CRD installed?)");
                    continue;
                }
            }
            let pools: Vec<AgentPool> = reader.state().iter().map(|p| (**p).clone()).collect();
            let index = PoolIndex::build(
                pools
                    .iter()
                    .filter_map(Pool::from_resource)
                    .collect::<Vec<_>>()
                    .iter(),
            );
            let conflicts = index.all_conflicts();
            if conflicts != last {
                for (pool, list) in conflicts.iter().filter(|(_, l)| !l.is_empty()) {
                    for c in list {
                        tracing::warn!(pool = %pool, field = %c.field, value = %c.value, other = %c.pool, "AgentPool conflict: pods of both pools are denied until fixed");
                    }
                }
                last = conflicts.clone();
            }
            policy.replace(index);
            let _ = status_tx.send(Some((pools, conflicts)));
        }
    });
    store
}

/// The status a pool should have for its conflicts.
pub fn desired_status(conflicts: &[PoolConflict]) -> AgentPoolStatus {
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
        Condition {
            type_: "Conflict".into(),
            status: "True".into(),
            reason: "SharedWithAnotherPool".into(),
            message: format!("shares {what}; this pool's pods are denied until fixed"),
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
    pools: &[AgentPool],
    conflicts: &BTreeMap<String, Vec<PoolConflict>>,
) {
    for pool in pools {
        let Some(name) = pool.metadata.name.as_deref() else {
            continue;
        };
        let want = desired_status(conflicts.get(name).map_or(&[], Vec::as_slice));
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
