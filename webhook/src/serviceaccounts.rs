//! ServiceAccount lookups: a watch-backed cache of what the webhook reads of each
//! ServiceAccount (its three workload-identity annotations), and on a miss one direct GET with
//! a short timeout, since a ServiceAccount created a moment before its pod may not have
//! reached the cache yet.
//!
//! The cache is fed by a kube-rs metadata watcher whose events are applied to a compact map,
//! namespace -> name -> annotations, rather than kept in a reflector store: a store holds a
//! whole `ObjectMeta`, a B-tree of annotations and an `ObjectRef` key per ServiceAccount, some
//! 2 KiB each where this keeps about 150 bytes (BENCHMARKS.md, memory).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use thiserror::Error;

use crate::keys;

/// The annotations of a ServiceAccount the webhook reads: client id, tenant id and token
/// lifetime. Each is kept as it is, so a present but empty tenant id (how a ServiceAccount
/// opts out of the webhook's tenant) stays distinct from an absent one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SaAnnotations {
    client_id: Option<String>,
    tenant_id: Option<String>,
    token_expiration: Option<String>,
}

impl SaAnnotations {
    /// The value of annotation `key`; `None` when absent, and for every key the webhook does
    /// not read.
    pub fn get(&self, key: &str) -> Option<&String> {
        match key {
            keys::CLIENT_ID => self.client_id.as_ref(),
            keys::TENANT_ID => self.tenant_id.as_ref(),
            keys::TOKEN_EXPIRATION => self.token_expiration.as_ref(),
            _ => None,
        }
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Keeps `value` when `key` is one the webhook reads; other keys are dropped.
    pub fn insert(&mut self, key: &str, value: String) {
        let slot = match key {
            keys::CLIENT_ID => &mut self.client_id,
            keys::TENANT_ID => &mut self.tenant_id,
            keys::TOKEN_EXPIRATION => &mut self.token_expiration,
            _ => return,
        };
        *slot = Some(value);
    }

    /// What the webhook reads of `annotations`.
    pub fn of(annotations: &BTreeMap<String, String>) -> Self {
        let value = |k: &str| annotations.get(k).cloned();
        SaAnnotations {
            client_id: value(keys::CLIENT_ID),
            tenant_id: value(keys::TENANT_ID),
            token_expiration: value(keys::TOKEN_EXPIRATION),
        }
    }

    /// What the webhook reads of a ServiceAccount's metadata.
    pub fn of_meta(meta: &ObjectMeta) -> Self {
        meta.annotations.as_ref().map(Self::of).unwrap_or_default()
    }
}

impl<K: AsRef<str>, V: Into<String>> FromIterator<(K, V)> for SaAnnotations {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut out = SaAnnotations::default();
        for (k, v) in iter {
            out.insert(k.as_ref(), v.into());
        }
        out
    }
}

/// What the cache keeps of a ServiceAccount.
pub type SaMeta = SaAnnotations;

/// The annotations of a looked-up ServiceAccount.
pub fn annotations(sa: &SaMeta) -> &SaAnnotations {
    sa
}

#[derive(Debug, Error)]
pub enum LookupError {
    #[error("the API server did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the API server refused the lookup: {0}")]
    Api(#[from] kube::Error),
}

/// Lists in pages of 100 (kube-rs asks for 500): each page is decoded whole before its
/// objects are applied, and smaller pages leave less behind in the allocator (BENCHMARKS.md,
/// memory) for a few more requests at start.
pub fn list_config() -> watcher::Config {
    watcher::Config::default().page_size(100)
}

/// namespace -> name -> annotations.
#[derive(Debug, Default)]
struct Accounts {
    namespaces: HashMap<Box<str>, HashMap<Box<str>, Arc<SaMeta>>>,
    len: usize,
}

impl Accounts {
    fn get(&self, namespace: &str, name: &str) -> Option<Arc<SaMeta>> {
        self.namespaces.get(namespace)?.get(name).cloned()
    }

    fn insert(&mut self, namespace: &str, name: &str, sa: SaMeta) {
        let names = match self.namespaces.get_mut(namespace) {
            Some(names) => names,
            None => self.namespaces.entry(namespace.into()).or_default(),
        };
        match names.get_mut(name) {
            Some(slot) => *slot = Arc::new(sa),
            None => {
                names.insert(name.into(), Arc::new(sa));
                self.len += 1;
            }
        }
    }

    fn remove(&mut self, namespace: &str, name: &str) {
        let Some(names) = self.namespaces.get_mut(namespace) else {
            return;
        };
        if names.remove(name).is_some() {
            self.len -= 1;
        }
        if names.is_empty() {
            self.namespaces.remove(namespace);
        }
    }
}

/// The cached ServiceAccounts; clones share the cache.
#[derive(Clone, Debug, Default)]
pub struct SaCache(Arc<RwLock<Accounts>>);

impl SaCache {
    /// The cached ServiceAccount `namespace/name`.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<SaMeta>> {
        self.read(|a| a.get(namespace, name))
    }

    pub fn len(&self) -> usize {
        self.read(|a| a.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read<T>(&self, f: impl FnOnce(&Accounts) -> T) -> T {
        f(&self.0.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn write<T>(&self, f: impl FnOnce(&mut Accounts) -> T) -> T {
        f(&mut self.0.write().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Applies watcher events to a [`SaCache`]. A (re-)list (`Init`, `InitApply`..., `InitDone`)
/// is collected apart and replaces the cache at `InitDone`, so ServiceAccounts deleted while
/// the watch was down disappear and lookups meanwhile see the previous state.
#[derive(Debug, Default)]
pub struct Writer {
    cache: SaCache,
    relist: Option<Accounts>,
    synced: bool,
}

impl Writer {
    pub fn cache(&self) -> SaCache {
        self.cache.clone()
    }

    /// True once a first full list has been applied.
    pub fn synced(&self) -> bool {
        self.synced
    }

    /// Applies one event; returns true when it completed a list.
    pub fn apply(&mut self, event: watcher::Event<PartialObjectMeta<ServiceAccount>>) -> bool {
        use watcher::Event;
        let key = |m: &ObjectMeta| (m.namespace.clone().unwrap_or_default(), m.name.clone());
        match event {
            Event::Init => self.relist = Some(Accounts::default()),
            Event::InitApply(sa) => {
                let (ns, Some(name)) = key(&sa.metadata) else {
                    return false;
                };
                let relist = self.relist.get_or_insert_with(Accounts::default);
                relist.insert(&ns, &name, SaAnnotations::of_meta(&sa.metadata));
            }
            Event::InitDone => {
                let mut listed = self.relist.take().unwrap_or_default();
                listed.namespaces.shrink_to_fit();
                for names in listed.namespaces.values_mut() {
                    names.shrink_to_fit();
                }
                self.cache.write(|a| *a = listed);
                self.synced = true;
                return true;
            }
            Event::Apply(sa) => {
                if let (ns, Some(name)) = key(&sa.metadata) {
                    let meta = SaAnnotations::of_meta(&sa.metadata);
                    self.cache.write(|a| a.insert(&ns, &name, meta));
                }
            }
            Event::Delete(sa) => {
                if let (ns, Some(name)) = key(&sa.metadata) {
                    self.cache.write(|a| a.remove(&ns, &name));
                }
            }
        }
        false
    }
}

#[derive(Clone)]
pub struct ServiceAccounts {
    cache: SaCache,
    synced: tokio::sync::watch::Receiver<bool>,
    fallback: Option<(Client, Duration)>,
}

impl ServiceAccounts {
    /// Lookups answered from `cache` alone (offline use: the `mutate` CLI and tests).
    pub fn from_store(cache: SaCache) -> Self {
        ServiceAccounts {
            cache,
            synced: tokio::sync::watch::channel(true).1,
            fallback: None,
        }
    }

    /// Starts the watch over all namespaces; returns at once. Use [`Self::wait_synced`] for
    /// readiness.
    pub fn watch(client: Client, fallback_timeout: Duration) -> Self {
        let mut writer = Writer::default();
        let cache = writer.cache();
        let (synced_tx, synced) = tokio::sync::watch::channel(false);
        // An Api over PartialObjectMeta makes metadata-only list and watch requests.
        let api: Api<PartialObjectMeta<ServiceAccount>> = Api::all(client.clone());
        let stream = watcher(api, list_config()).default_backoff();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(event) => {
                        if writer.apply(event) {
                            synced_tx.send_replace(true);
                        }
                    }
                    // The backoff retries; keep serving from the cache meanwhile.
                    Err(e) => tracing::warn!(error = %e, "ServiceAccount watch error"),
                }
            }
        });
        ServiceAccounts {
            cache,
            synced,
            fallback: Some((client, fallback_timeout)),
        }
    }

    pub async fn wait_synced(&self) {
        let mut synced = self.synced.clone();
        // The sender lives in the watch task for the process's lifetime.
        let _ = synced.wait_for(|s| *s).await;
    }

    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    /// The ServiceAccount `namespace/name`, `None` when it does not exist.
    pub async fn get(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<SaMeta>>, LookupError> {
        if let Some(sa) = self.cache.get(namespace, name) {
            return Ok(Some(sa));
        }
        let Some((client, timeout)) = &self.fallback else {
            return Ok(None);
        };
        let api: Api<PartialObjectMeta<ServiceAccount>> =
            Api::namespaced(client.clone(), namespace);
        match tokio::time::timeout(*timeout, api.get_opt(name)).await {
            Err(_) => Err(LookupError::Timeout(*timeout)),
            Ok(result) => Ok(result?.map(|sa| Arc::new(SaAnnotations::of_meta(&sa.metadata)))),
        }
    }
}

/// A cache filled from ServiceAccount objects, for offline use.
pub fn store_of(accounts: impl IntoIterator<Item = ServiceAccount>) -> SaCache {
    store_of_meta(accounts.into_iter().map(|sa| PartialObjectMeta {
        types: None,
        metadata: sa.metadata,
        _phantom: Default::default(),
    }))
}

/// A cache filled from ServiceAccount metadata (a listed cluster, offline).
pub fn store_of_meta(
    accounts: impl IntoIterator<Item = PartialObjectMeta<ServiceAccount>>,
) -> SaCache {
    let mut writer = Writer::default();
    for sa in accounts {
        writer.apply(watcher::Event::Apply(sa));
    }
    writer.cache()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
    use watcher::Event;

    fn sa(ns: &str, name: &str, annotations: &[(&str, &str)]) -> PartialObjectMeta<ServiceAccount> {
        PartialObjectMeta {
            types: None,
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                labels: Some(BTreeMap::from([("app".to_string(), "x".to_string())])),
                managed_fields: Some(vec![ManagedFieldsEntry::default()]),
                ..ObjectMeta::default()
            },
            _phantom: Default::default(),
        }
    }

    fn client(id: &str) -> SaAnnotations {
        SaAnnotations::from_iter([(keys::CLIENT_ID, id)])
    }

    #[test]
    fn the_cache_keeps_the_three_annotations_the_webhook_reads() {
        let mut writer = Writer::default();
        writer.apply(Event::Apply(sa(
            "ns",
            "agent",
            &[
                (keys::CLIENT_ID, "c"),
                (keys::TENANT_ID, ""),
                (keys::TOKEN_EXPIRATION, "3600"),
                ("azure.workload.identity/use", "true"),
                ("kubectl.kubernetes.io/last-applied-configuration", "{}"),
            ],
        )));
        let got = writer.cache().get("ns", "agent").expect("cached");
        let a = annotations(&got);
        assert_eq!(a.get(keys::CLIENT_ID).map(String::as_str), Some("c"));
        // Present but empty stays present: the ServiceAccount opts out of a tenant.
        assert_eq!(a.get(keys::TENANT_ID).map(String::as_str), Some(""));
        assert!(a.contains_key(keys::TENANT_ID));
        assert_eq!(
            a.get(keys::TOKEN_EXPIRATION).map(String::as_str),
            Some("3600")
        );
        assert_eq!(a.get("azure.workload.identity/use"), None);
        assert_eq!(
            a.get("kubectl.kubernetes.io/last-applied-configuration"),
            None
        );
    }

    #[test]
    fn absent_annotations_stay_absent() {
        let mut writer = Writer::default();
        writer.apply(Event::Apply(sa("ns", "plain", &[])));
        let got = writer.cache().get("ns", "plain").expect("cached");
        assert_eq!(*got, SaAnnotations::default());
        assert!(!got.contains_key(keys::TENANT_ID));
        assert!(!got.contains_key(keys::CLIENT_ID));
        let mut no_map = sa("ns", "bare", &[]);
        no_map.metadata.annotations = None;
        writer.apply(Event::Apply(no_map));
        assert_eq!(
            writer.cache().get("ns", "bare").as_deref(),
            Some(&SaAnnotations::default())
        );
    }

    #[test]
    fn apply_replaces_and_delete_removes() {
        let mut writer = Writer::default();
        let cache = writer.cache();
        writer.apply(Event::Apply(sa("ns", "a", &[(keys::CLIENT_ID, "1")])));
        writer.apply(Event::Apply(sa("ns", "b", &[(keys::CLIENT_ID, "2")])));
        writer.apply(Event::Apply(sa("other", "a", &[(keys::CLIENT_ID, "3")])));
        assert_eq!(cache.len(), 3);
        writer.apply(Event::Apply(sa("ns", "a", &[(keys::CLIENT_ID, "1b")])));
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get("ns", "a").as_deref(), Some(&client("1b")));
        writer.apply(Event::Delete(sa("ns", "a", &[])));
        assert_eq!(cache.get("ns", "a"), None);
        assert_eq!(cache.get("other", "a").as_deref(), Some(&client("3")));
        assert_eq!(cache.len(), 2);
        // Deleting what is not cached changes nothing.
        writer.apply(Event::Delete(sa("ns", "a", &[])));
        writer.apply(Event::Delete(sa("gone", "x", &[])));
        assert_eq!(cache.len(), 2);
        writer.apply(Event::Delete(sa("other", "a", &[])));
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.get("ns", "b").as_deref(), Some(&client("2")));
    }

    #[test]
    fn a_relist_replaces_the_cache_at_init_done() {
        let mut writer = Writer::default();
        let cache = writer.cache();
        assert!(!writer.apply(Event::Init));
        writer.apply(Event::InitApply(sa("ns", "a", &[(keys::CLIENT_ID, "1")])));
        writer.apply(Event::InitApply(sa("ns", "b", &[(keys::CLIENT_ID, "2")])));
        // Not visible, nor synced, before the list is complete.
        assert!(!writer.synced());
        assert!(cache.is_empty());
        assert!(writer.apply(Event::InitDone));
        assert!(writer.synced());
        assert_eq!(cache.len(), 2);

        // The watch restarts: b was deleted meanwhile, a changed, c is new.
        writer.apply(Event::Init);
        writer.apply(Event::InitApply(sa("ns", "a", &[(keys::CLIENT_ID, "1b")])));
        writer.apply(Event::InitApply(sa("ns2", "c", &[(keys::CLIENT_ID, "3")])));
        // Lookups see the previous state until the list is complete.
        assert_eq!(cache.get("ns", "b").as_deref(), Some(&client("2")));
        assert_eq!(cache.get("ns", "a").as_deref(), Some(&client("1")));
        assert!(writer.apply(Event::InitDone));
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get("ns", "b"), None);
        assert_eq!(cache.get("ns", "a").as_deref(), Some(&client("1b")));
        assert_eq!(cache.get("ns2", "c").as_deref(), Some(&client("3")));

        // An empty re-list empties the cache.
        writer.apply(Event::Init);
        writer.apply(Event::InitDone);
        assert!(cache.is_empty());
        assert_eq!(cache.get("ns2", "c"), None);
    }

    #[test]
    fn offline_stores_and_lookups() {
        let cache = store_of([ServiceAccount {
            metadata: sa("ns", "agent", &[(keys::CLIENT_ID, "c")]).metadata,
            ..ServiceAccount::default()
        }]);
        let accounts = ServiceAccounts::from_store(cache);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            accounts.wait_synced().await;
            assert_eq!(
                accounts.get("ns", "agent").await.unwrap().as_deref(),
                Some(&client("c"))
            );
            assert_eq!(accounts.get("ns", "other").await.unwrap(), None);
            assert_eq!(accounts.cached(), 1);
        });
    }

    #[test]
    fn annotations_from_pairs_keep_only_what_is_read() {
        let a: SaAnnotations = [
            (keys::TENANT_ID, ""),
            ("example.com/other", "x"),
            (keys::TOKEN_EXPIRATION, "7200"),
        ]
        .into_iter()
        .collect();
        assert_eq!(a.get(keys::CLIENT_ID), None);
        assert_eq!(a.get(keys::TENANT_ID).map(String::as_str), Some(""));
        assert_eq!(a.get("example.com/other"), None);
        assert_eq!(
            SaAnnotations::of(&BTreeMap::from([(
                keys::TOKEN_EXPIRATION.to_string(),
                "7200".to_string()
            )])),
            SaAnnotations::from_iter([(keys::TOKEN_EXPIRATION, "7200")])
        );
    }
}
