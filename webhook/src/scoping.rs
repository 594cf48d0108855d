//! Keeps the fail-closed webhooks scoped to the pools' namespaces: whenever the AgentPool set
//! changes, at start (once the pools are listed) and every [`RESYNC`] (someone may have
//! re-applied the manifests), the webhook rewrites the scoping expression of its own
//! `*.pool-namespaces.*` and `*.other-namespaces.*` webhooks (`crate::webhookconfig`), and
//! nothing else of the configurations. Each change is one JSON patch per configuration that
//! first tests each webhook's name at its index, so a concurrent reorder fails the patch
//! instead of scoping the wrong webhook; a failure is logged, counted and retried.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::metrics::{Metrics, ScopeLabels};
use crate::policy::{Policy, PoolIndex};
use crate::webhookconfig::{scope_operator, scoped};

/// How often the configurations are checked even when no AgentPool changed.
pub const RESYNC: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The configurations to keep scoped, by name.
#[derive(Clone, Debug)]
pub struct Names {
    pub mutating: String,
    pub validating: String,
}

/// Every namespace some AgentPool names, sorted, once each.
pub fn pool_namespaces(index: &PoolIndex) -> Vec<String> {
    let mut out: Vec<String> = index
        .pools()
        .flat_map(|p| p.namespaces.iter().cloned())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The JSON patch that scopes `webhooks` (name and namespaceSelector, in order) to
/// `namespaces`; empty when they already are.
pub fn patch(webhooks: &[(&str, Option<&LabelSelector>)], namespaces: &[String]) -> Vec<Value> {
    let mut ops = Vec::new();
    for (i, (name, selector)) in webhooks.iter().enumerate() {
        let Some(operator) = scope_operator(name) else {
            continue;
        };
        let want = scoped(*selector, operator, namespaces);
        if Some(&want) != *selector {
            ops.push(json!({"op": "test", "path": format!("/webhooks/{i}/name"), "value": name}));
            ops.push(json!({"op": "add", "path": format!("/webhooks/{i}/namespaceSelector"), "value": want}));
        }
    }
    ops
}

/// Starts the task. It waits for the first complete list of AgentPools: scoping to an empty
/// set at start would open the pools' namespaces for as long as the list takes.
pub fn spawn(client: Client, policy: Policy, names: Names, metrics: Arc<crate::api::AppState>) {
    tokio::spawn(async move {
        let mut changes = policy.subscribe();
        if changes.wait_for(|n| *n > 0).await.is_err() {
            return;
        }
        let mut backoff = Duration::from_secs(1);
        loop {
            let namespaces = pool_namespaces(&policy.snapshot());
            let wait = match sync(&client, &names, &namespaces).await {
                Ok(patched) => {
                    let result = if patched { "patched" } else { "unchanged" };
                    count(&metrics.metrics, result);
                    metrics
                        .metrics
                        .scoped_namespaces
                        .set(namespaces.len() as i64);
                    if patched {
                        tracing::info!(
                            namespaces = namespaces.len(),
                            "webhooks scoped to the pools' namespaces"
                        );
                        tracing::debug!(namespaces = ?namespaces, "pool namespaces");
                    }
                    backoff = Duration::from_secs(1);
                    RESYNC
                }
                Err(e) => {
                    count(&metrics.metrics, "error");
                    tracing::warn!(error = %e, retry_in = ?backoff, "cannot scope the webhooks to the pools' namespaces");
                    let wait = backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    wait
                }
            };
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(wait) => {}
            }
        }
    });
}

fn count(metrics: &Metrics, result: &'static str) {
    metrics
        .scope_syncs
        .get_or_create(&ScopeLabels { result })
        .inc();
}

/// One pass over both configurations; whether anything was patched.
async fn sync(client: &Client, names: &Names, namespaces: &[String]) -> kube::Result<bool> {
    let mutating =
        sync_one::<MutatingWebhookConfiguration>(client, &names.mutating, namespaces, |c| {
            c.webhooks
                .iter()
                .flatten()
                .map(|w| (w.name.clone(), w.namespace_selector.clone()))
                .collect()
        })
        .await?;
    let validating =
        sync_one::<ValidatingWebhookConfiguration>(client, &names.validating, namespaces, |c| {
            c.webhooks
                .iter()
                .flatten()
                .map(|w| (w.name.clone(), w.namespace_selector.clone()))
                .collect()
        })
        .await?;
    Ok(mutating || validating)
}

type Selectors = Vec<(String, Option<LabelSelector>)>;

async fn sync_one<K>(
    client: &Client,
    name: &str,
    namespaces: &[String],
    webhooks: impl Fn(&K) -> Selectors,
) -> kube::Result<bool>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::all(client.clone());
    // A configuration that is not installed (yet) has nothing to scope.
    let Some(config) = api.get_opt(name).await? else {
        return Ok(false);
    };
    let list = webhooks(&config);
    let refs: Vec<(&str, Option<&LabelSelector>)> =
        list.iter().map(|(n, s)| (n.as_str(), s.as_ref())).collect();
    let ops = patch(&refs, namespaces);
    if ops.is_empty() {
        return Ok(false);
    }
    let ops: json_patch::Patch =
        serde_json::from_value(Value::Array(ops)).expect("well-formed operations");
    api.patch(name, &PatchParams::default(), &Patch::<()>::Json(ops))
        .await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhookconfig::{NO_POOL, Options, Target, validating};

    fn options() -> Options {
        Options {
            target: Target::Service {
                namespace: "wi-webhook-system".into(),
                name: "wi-webhook".into(),
                port: 443,
            },
            ca_bundle: None,
            timeout_seconds: 10,
        }
    }

    #[test]
    fn only_the_scoping_expression_of_the_twins_changes() {
        let config = validating(&options());
        let webhooks: Vec<(&str, Option<&LabelSelector>)> = config
            .webhooks
            .iter()
            .flatten()
            .map(|w| (w.name.as_str(), w.namespace_selector.as_ref()))
            .collect();
        // As generated: already scoped to no pool.
        assert!(patch(&webhooks, &[]).is_empty());
        let ops = patch(&webhooks, &["b".into(), "a".into(), "a".into()]);
        let mut doc = serde_json::to_value(&config).unwrap();
        let before = doc.clone();
        json_patch::patch(
            &mut doc,
            &serde_json::from_value::<json_patch::Patch>(json!(ops)).unwrap(),
        )
        .unwrap();
        for (i, w) in doc["webhooks"].as_array().unwrap().iter().enumerate() {
            let name = w["name"].as_str().unwrap();
            let exprs = w["namespaceSelector"]["matchExpressions"].clone();
            match scope_operator(name) {
                None => assert_eq!(w, &before["webhooks"][i], "{name} untouched"),
                Some(op) => {
                    let last = exprs.as_array().unwrap().last().unwrap().clone();
                    assert_eq!(
                        last,
                        json!({"key": "kubernetes.io/metadata.name", "operator": op, "values": [NO_POOL, "a", "b"]}),
                        "{name}"
                    );
                    // The manifests' exclusions are kept.
                    let kept = &before["webhooks"][i]["namespaceSelector"]["matchExpressions"];
                    let n = kept.as_array().unwrap().len();
                    assert_eq!(
                        exprs.as_array().unwrap()[..n - 1],
                        kept.as_array().unwrap()[..n - 1],
                        "{name}"
                    );
                }
            }
        }
        // Patched once, nothing more to do.
        let config: ValidatingWebhookConfiguration = serde_json::from_value(doc).unwrap();
        let again: Vec<(&str, Option<&LabelSelector>)> = config
            .webhooks
            .iter()
            .flatten()
            .map(|w| (w.name.as_str(), w.namespace_selector.as_ref()))
            .collect();
        assert!(patch(&again, &["a".into(), "b".into()]).is_empty());
        // A selector of no expression at all (a webhook added by hand) gains the scope.
        let ops = patch(&[("x.pool-namespaces.wi-webhook.dev", None)], &["a".into()]);
        assert_eq!(ops.len(), 2);
        assert_eq!(ops[1]["value"]["matchExpressions"][0]["operator"], "In");
    }
}
