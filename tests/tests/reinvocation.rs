//! Reinvocation. A second mutating webhook, run by the test and called after
//! ours (its configuration's name sorts after `wi-webhook`), changes the pod; our webhook
//! (reinvocationPolicy IfNeeded) is called again by the API server and must leave a valid
//! pod: the new containers get the env and the mount, nothing is injected twice.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use wi_e2e::pods::*;

const CLIENT_ID: &str = "abababab-abab-abab-abab-abababababab";

fn identity() -> Identity<'static> {
    Identity {
        client_id: Some(CLIENT_ID),
        tenant_id: WEBHOOK_TENANT_ID,
    }
}

async fn setup(prefix: &str) -> (wi_e2e::Cluster, wi_e2e::TestNamespace, Api<Pod>) {
    let cluster = wi_e2e::cluster().await;
    let ns = cluster.namespace(prefix).await;
    Api::<ServiceAccount>::namespaced(cluster.client.clone(), &ns.name)
        .create(
            &PostParams::default(),
            &service_account("agent", CLIENT_ID, None),
        )
        .await
        .unwrap();
    let pods = Api::<Pod>::namespaced(cluster.client.clone(), &ns.name);
    (cluster, ns, pods)
}

/// `(name, decision)` of the pod decisions our webhook logged for the namespace (the extra
/// webhook's dry-run probes left out), once there are `n` of them.
async fn decisions(cluster: &wi_e2e::Cluster, ns: &str, n: usize) -> Vec<(String, String)> {
    wi_e2e::poll(
        "the webhook's decisions in its log",
        Duration::from_secs(5),
        || async {
            let d: Vec<_> = cluster
                .webhook_decisions(ns)?
                .into_iter()
                .filter(|d| d.kind == "Pod" && !d.dry_run && d.endpoint == "/mutate")
                .map(|d| (d.name, d.decision))
                .collect();
            Ok((d.len() >= n).then_some(d))
        },
    )
    .await
    .unwrap()
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

fn has_container(pod: &Value, name: &str) -> bool {
    pod["spec"]["containers"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["name"] == name))
}

/// (a) The other webhook adds a container after ours ran: the second call of ours gives it
/// the identity env and the token mount.
#[tokio::test]
async fn container_added_by_a_later_webhook_gets_the_identity() {
    let (cluster, ns, pods) = setup("e2e-reinvoke-add").await;
    let hook = cluster
        .extra_webhook(&format!("zz-e2e-{}", ns.name), &ns.name, |pod| {
            if has_container(pod, "added-later") {
                return vec![];
            }
            vec![json!({
                "op": "add",
                "path": "/spec/containers/-",
                "value": {"name": "added-later", "image": "registry.invalid/later:1"},
            })]
        })
        .await
        .unwrap();

    let pod = labelled_pod("agent", "agent", &[(INJECT_PROXY_ANNOTATION, "true")]);
    let stored = pods.create(&PostParams::default(), &pod).await.unwrap();
    let stored = pods
        .get(stored.metadata.name.as_deref().unwrap())
        .await
        .unwrap();

    assert_eq!(
        container_names(spec(&stored)),
        (vec![PROXY_INIT, PROXY], vec!["agent", "added-later"])
    );
    // Every container, added-later included, has the 4 env vars and the mount; one volume;
    // no name or mount path twice.
    assert_mutated(&stored, identity(), 3600);
    let later = container(spec(&stored), "added-later");
    assert_eq!(env_names(later), AZURE_ENV);

    // Order of the calls: ours first (the other webhook saw the mutated pod), then ours
    // again for the new container.
    let seen = hook.seen();
    assert_eq!(seen.len(), 1, "the other webhook is called once (Never)");
    assert!(
        seen[0]["spec"]["volumes"]
            .as_array()
            .is_some_and(|v| v.iter().any(|v| v["name"] == TOKEN_VOLUME)),
        "the other webhook runs after ours: {:#}",
        seen[0]
    );
    assert_eq!(
        decisions(&cluster, &ns.name, 2).await,
        pairs(&[("agent", "mutated"), ("agent", "mutated")]),
        "our webhook is called twice, and patches the new container the second time"
    );
    hook.remove(&cluster).await.unwrap();
}

/// (b) The other webhook names the pod (`generateName` is resolved after admission, so
/// webhooks see no name): our second call must be a no-op. Upstream keyed what it injected
/// on the pod name and injected again (its issue #1744).
#[tokio::test]
async fn pod_renamed_by_a_later_webhook_is_not_mutated_twice() {
    let (cluster, ns, pods) = setup("e2e-reinvoke-rename").await;
    let hook = cluster
        .extra_webhook(&format!("zz-e2e-{}", ns.name), &ns.name, |pod| {
            let meta = &pod["metadata"];
            match (meta["name"].as_str(), meta["generateName"].as_str()) {
                (None | Some(""), Some(prefix)) => vec![json!({
                    "op": "add",
                    "path": "/metadata/name",
                    "value": format!("{prefix}renamed"),
                })],
                _ => vec![],
            }
        })
        .await
        .unwrap();

    let mut pod = labelled_pod_json("", "agent", &[(INJECT_PROXY_ANNOTATION, "true")]);
    let meta = pod["metadata"].as_object_mut().unwrap();
    meta.remove("name");
    meta.insert("generateName".into(), "agent-".into());
    let pod: Pod = serde_json::from_value(pod).unwrap();
    let created = pods.create(&PostParams::default(), &pod).await.unwrap();
    assert_eq!(created.metadata.name.as_deref(), Some("agent-renamed"));
    let stored = pods.get("agent-renamed").await.unwrap();

    assert_eq!(
        container_names(spec(&stored)),
        (vec![PROXY_INIT, PROXY], vec!["agent"])
    );
    assert_mutated(&stored, identity(), 3600);

    let seen = hook.seen();
    assert_eq!(seen.len(), 1, "the other webhook is called once (Never)");
    assert!(
        seen[0]["metadata"]["name"]
            .as_str()
            .unwrap_or("")
            .is_empty(),
        "webhooks see a generateName pod without a name: {:#}",
        seen[0]["metadata"]
    );
    assert_eq!(
        decisions(&cluster, &ns.name, 2).await,
        pairs(&[("agent-*", "mutated"), ("agent-renamed", "allowed")]),
        "our webhook is called again after the rename and has nothing to add"
    );
    hook.remove(&cluster).await.unwrap();
}
