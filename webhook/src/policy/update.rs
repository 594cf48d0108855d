//! `pool-pod-update`: a pool's pod stays what was admitted. An UPDATE that changes an image
//! (a running agent's container swapped for a shell), a pool claim, the injection label, an
//! identity annotation, or anything else the pool checks and the mutation read, is refused;
//! what controllers change (ownerReferences, finalizers, other labels and annotations)
//! passes. Status is a subresource and never reaches this rule.
//!
//! The API server itself refuses most pod spec changes (env, ServiceAccount, volumes); they
//! are compared here too, so the rule does not depend on which fields a release lets change.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::Value;

use super::crd::{AZP_POOL, POOL_LABEL};
use super::index::{Pool, PoolIndex};
use super::rules::{Violation, rule, violation};
use crate::keys;

/// The annotations the mutation and the pool checks read all share this prefix.
const IDENTITY_PREFIX: &str = "azure.workload.identity/";

fn labels(pod: &Value) -> Option<&serde_json::Map<String, Value>> {
    pod.pointer("/metadata/labels").and_then(Value::as_object)
}

fn containers<'a>(pod: &'a Value, list: &str) -> &'a [Value] {
    pod.get("spec")
        .and_then(|s| s.get(list))
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn name(c: &Value) -> &str {
    c.get("name").and_then(Value::as_str).unwrap_or("")
}

/// The pools `pod` claims: its namespace's, its pool label's, its literal `AZP_POOL`s'.
fn claimed(index: &PoolIndex, namespace: &str, pod: &Value, out: &mut BTreeSet<String>) {
    out.extend(index.in_namespace(namespace).iter().map(|p| p.name.clone()));
    if let Some(label) = labels(pod)
        .and_then(|l| l.get(POOL_LABEL))
        .and_then(Value::as_str)
    {
        out.insert(label.to_string());
    }
    for list in ["initContainers", "containers"] {
        for c in containers(pod, list) {
            for e in c.get("env").and_then(Value::as_array).into_iter().flatten() {
                if e.get("name").and_then(Value::as_str) == Some(AZP_POOL)
                    && let Some(v) = e.get("value").and_then(Value::as_str)
                {
                    out.insert(v.to_string());
                }
            }
        }
    }
}

/// What the checks read of a pod, by a readable name: compared between old and new.
fn read_fields(pod: &Value) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    let mut put = |what: String, v: Option<&Value>| {
        out.insert(what, v.cloned().unwrap_or(Value::Null));
    };
    for list in ["initContainers", "containers"] {
        for c in containers(pod, list) {
            let n = name(c);
            put(format!("image of {list} {n}"), c.get("image"));
            put(format!("env of {list} {n}"), c.get("env"));
            put(format!("volumeMounts of {list} {n}"), c.get("volumeMounts"));
        }
    }
    let spec = pod.get("spec");
    for field in [
        "serviceAccountName",
        "serviceAccount",
        "volumes",
        "hostNetwork",
    ] {
        put(format!("spec.{field}"), spec.and_then(|s| s.get(field)));
    }
    for key in [POOL_LABEL, keys::USE_LABEL] {
        put(format!("label {key}"), labels(pod).and_then(|l| l.get(key)));
    }
    let annotations = pod
        .pointer("/metadata/annotations")
        .and_then(Value::as_object);
    for (k, v) in annotations.into_iter().flatten() {
        if k.starts_with(IDENTITY_PREFIX) {
            put(format!("annotation {k}"), Some(v));
        }
    }
    out
}

/// What an UPDATE from `old` to `new` changes of what the checks read, one entry each.
pub fn changes(old: &Value, new: &Value) -> Vec<String> {
    let (before, after) = (read_fields(old), read_fields(new));
    let keys: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    keys.into_iter()
        .filter(|k| before.get(*k).unwrap_or(&Value::Null) != after.get(*k).unwrap_or(&Value::Null))
        .map(|k| match (before.get(k), after.get(k)) {
            (Some(Value::String(a)), Some(Value::String(b))) => format!("{k} ({a} -> {b})"),
            _ => k.clone(),
        })
        .collect()
}

/// The decision for an UPDATE of pod `display` in `namespace`: one violation per pool the
/// pod claims before or after, when it changes what the checks read.
pub fn check(
    index: &PoolIndex,
    namespace: &str,
    display: &str,
    old: &Value,
    new: &Value,
) -> Vec<Violation> {
    let mut names = BTreeSet::new();
    claimed(index, namespace, old, &mut names);
    claimed(index, namespace, new, &mut names);
    let pools: Vec<&Arc<Pool>> = names.iter().filter_map(|n| index.get(n)).collect();
    if pools.is_empty() {
        return Vec::new();
    }
    let changed = changes(old, new);
    if changed.is_empty() {
        return Vec::new();
    }
    let what = changed.join(", ");
    pools
        .into_iter()
        .map(|p| violation(p, rule::POD_UPDATE, format!(
            "pod {display} of pool {} (team {}): the update changes {what}; a pool's pod keeps what was admitted: change the workload and let it create a new pod",
            p.name, p.team
        )))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::access::test_pool;
    use serde_json::json;

    fn agent() -> Value {
        json!({
            "metadata": {
                "name": "a", "labels": {"app": "agent", keys::USE_LABEL: "true"},
                "annotations": {"azure.workload.identity/inject-proxy-sidecar": "true"},
            },
            "spec": {
                "serviceAccountName": "agent",
                "initContainers": [{"name": "init", "image": "i:1"}],
                "containers": [{"name": "agent", "image": "a:1",
                    "env": [{"name": "AZURE_CLIENT_ID", "value": "c"}]}],
            },
        })
    }

    fn with(mut pod: Value, pointer: &str, value: Value) -> Value {
        *pod.pointer_mut(pointer).unwrap() = value;
        pod
    }

    #[test]
    fn what_the_checks_read_cannot_change_and_the_rest_can() {
        let index = PoolIndex::build([&test_pool("p", "agents")]);
        let old = agent();
        let denied = [
            (
                with(old.clone(), "/spec/containers/0/image", json!("shell:1")),
                "image of containers agent (a:1 -> shell:1)",
            ),
            (
                with(old.clone(), "/spec/initContainers/0/image", json!("x")),
                "image of initContainers init",
            ),
            (
                with(old.clone(), "/metadata/labels", json!({"app": "agent"})),
                "label azure.workload.identity/use",
            ),
            (
                with(
                    old.clone(),
                    "/metadata/labels",
                    json!({"app": "agent", keys::USE_LABEL: "true", POOL_LABEL: "q"}),
                ),
                "label wi-webhook.dev/agent-pool",
            ),
            (
                with(old.clone(), "/metadata/annotations", json!({})),
                "annotation azure.workload.identity/inject-proxy-sidecar",
            ),
            (
                with(old.clone(), "/spec/containers/0/env/0/value", json!("d")),
                "env of containers agent",
            ),
            (
                with(old.clone(), "/spec/serviceAccountName", json!("other")),
                "spec.serviceAccountName (agent -> other)",
            ),
        ];
        for (new, what) in denied {
            let v = check(&index, "agents", "agents/a", &old, &new);
            assert_eq!(v.len(), 1, "{what}");
            assert_eq!(v[0].rule, "pool-pod-update");
            assert!(v[0].message.contains(what), "{what}: {}", v[0].message);
        }

        // What controllers and people change: ownerReferences, finalizers, other labels and
        // annotations, deletion metadata, status.
        let mut new = old.clone();
        new["metadata"]["ownerReferences"] = json!([{"kind": "ReplicaSet", "name": "rs"}]);
        new["metadata"]["finalizers"] = json!(["example.com/keep"]);
        new["metadata"]["labels"]["app"] = json!("orphaned");
        new["metadata"]["annotations"]["note"] = json!("x");
        new["status"] = json!({"phase": "Running"});
        assert!(check(&index, "agents", "agents/a", &old, &new).is_empty());
    }

    #[test]
    fn a_pod_outside_the_pools_is_checked_only_when_it_claims_one() {
        let index = PoolIndex::build([&test_pool("p", "agents")]);
        let old = agent();
        let new = with(old.clone(), "/spec/containers/0/image", json!("x"));
        assert!(check(&index, "elsewhere", "elsewhere/a", &old, &new).is_empty());
        // Gaining the pool label outside the pool's namespace is a change of a pool claim.
        let mut claiming = old.clone();
        claiming["metadata"]["labels"][POOL_LABEL] = json!("p");
        let v = check(&index, "elsewhere", "elsewhere/a", &old, &claiming);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].pool, "p");
    }
}
