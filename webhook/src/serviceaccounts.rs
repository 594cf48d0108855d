//! ServiceAccount lookups: a watch-backed cache (kube-rs reflector, metadata only), and on a
//! miss one direct GET with a short timeout, since a ServiceAccount created a moment before
//! its pod may not have reached the cache yet.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use thiserror::Error;

pub type SaMeta = PartialObjectMeta<ServiceAccount>;

static NO_ANNOTATIONS: BTreeMap<String, String> = BTreeMap::new();

/// The annotations of a looked-up ServiceAccount (empty when it has none).
pub fn annotations(sa: &SaMeta) -> &BTreeMap<String, String> {
    sa.metadata.annotations.as_ref().unwrap_or(&NO_ANNOTATIONS)
}

#[derive(Debug, Error)]
pub enum LookupError {
    #[error("the API server did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the API server refused the lookup: {0}")]
    Api(#[from] kube::Error),
}

#[derive(Clone)]
pub struct ServiceAccounts {
    store: Store<SaMeta>,
    fallback: Option<(Client, Duration)>,
}

impl ServiceAccounts {
    /// Lookups answered from `store` alone (offline use: the `mutate` CLI and tests).
    pub fn from_store(store: Store<SaMeta>) -> Self {
        ServiceAccounts {
            store,
            fallback: None,
        }
    }

    /// Starts the reflector over all namespaces; returns at once. Use [`Self::wait_synced`]
    /// for readiness.
    pub fn watch(client: Client, fallback_timeout: Duration) -> Self {
        let (store, writer) = reflector::store();
        // An Api over PartialObjectMeta makes metadata-only list and watch requests.
        let api: Api<SaMeta> = Api::all(client.clone());
        let stream = reflector::reflector(
            writer,
            watcher(api, watcher::Config::default())
                .default_backoff()
                .modify(slim),
        );
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                if let Err(e) = event {
                    // The backoff retries; keep serving from the cache meanwhile.
                    tracing::warn!(error = %e, "ServiceAccount watch error");
                }
            }
        });
        ServiceAccounts {
            store,
            fallback: Some((client, fallback_timeout)),
        }
    }

    pub async fn wait_synced(&self) {
        // The writer lives in the spawned task for the process's lifetime.
        let _ = self.store.wait_until_ready().await;
    }

    pub fn cached(&self) -> usize {
        self.store.len()
    }

    /// The ServiceAccount `namespace/name`, `None` when it does not exist.
    pub async fn get(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<SaMeta>>, LookupError> {
        let key = ObjectRef::new(name).within(namespace);
        if let Some(sa) = self.store.get(&key) {
            return Ok(Some(sa));
        }
        let Some((client, timeout)) = &self.fallback else {
            return Ok(None);
        };
        let api: Api<SaMeta> = Api::namespaced(client.clone(), namespace);
        match tokio::time::timeout(*timeout, api.get_opt(name)).await {
            Err(_) => Err(LookupError::Timeout(*timeout)),
            Ok(result) => Ok(result?.map(Arc::new)),
        }
    }
}

/// The annotations the decisions read all start with this.
const ANNOTATION_PREFIX: &str = "azure.workload.identity/";

/// What the cache keeps of a ServiceAccount: its name and identity, and the
/// `azure.workload.identity/` annotations the decisions read. managedFields, labels and other
/// annotations (kubectl's last-applied-configuration, for one) are most of a ServiceAccount's
/// metadata and are never read: dropping them keeps 10,000 cached ServiceAccounts within a few
/// MiB (BENCHMARKS.md, memory).
pub fn slim(sa: &mut SaMeta) {
    let meta = &mut sa.metadata;
    meta.managed_fields = None;
    meta.labels = None;
    if let Some(annotations) = &mut meta.annotations {
        annotations.retain(|k, _| k.starts_with(ANNOTATION_PREFIX));
    }
}

/// A store filled from ServiceAccount objects, for offline use.
pub fn store_of(accounts: impl IntoIterator<Item = ServiceAccount>) -> Store<SaMeta> {
    store_of_meta(accounts.into_iter().map(|sa| SaMeta {
        types: None,
        metadata: sa.metadata,
        _phantom: Default::default(),
    }))
}

/// A store filled from ServiceAccount metadata (a listed cluster, offline).
pub fn store_of_meta(accounts: impl IntoIterator<Item = SaMeta>) -> Store<SaMeta> {
    use kube::runtime::watcher::Event;
    let mut writer = reflector::store::Writer::<SaMeta>::default();
    for sa in accounts {
        writer.apply_watcher_event(&Event::Apply(sa));
    }
    writer.as_reader()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, ObjectMeta};

    #[test]
    fn the_cache_keeps_the_workload_identity_annotations_only() {
        let mut sa = SaMeta {
            types: None,
            metadata: ObjectMeta {
                name: Some("agent".into()),
                namespace: Some("ns".into()),
                annotations: Some(BTreeMap::from([
                    (crate::keys::CLIENT_ID.to_string(), "c".to_string()),
                    (crate::keys::TENANT_ID.to_string(), String::new()),
                    (
                        crate::keys::TOKEN_EXPIRATION.to_string(),
                        "3600".to_string(),
                    ),
                    (
                        "kubectl.kubernetes.io/last-applied-configuration".to_string(),
                        "{}".to_string(),
                    ),
                ])),
                labels: Some(BTreeMap::from([("app".to_string(), "x".to_string())])),
                managed_fields: Some(vec![ManagedFieldsEntry::default()]),
                ..ObjectMeta::default()
            },
            _phantom: Default::default(),
        };
        slim(&mut sa);
        assert_eq!(sa.metadata.name.as_deref(), Some("agent"));
        assert_eq!(sa.metadata.namespace.as_deref(), Some("ns"));
        assert!(sa.metadata.managed_fields.is_none());
        assert!(sa.metadata.labels.is_none());
        let kept: Vec<&str> = annotations(&sa).keys().map(String::as_str).collect();
        assert_eq!(
            kept,
            [
                crate::keys::CLIENT_ID,
                crate::keys::TOKEN_EXPIRATION,
                crate::keys::TENANT_ID
            ]
        );
    }
}
