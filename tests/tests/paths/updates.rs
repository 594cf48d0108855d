//! `pool-pod-update`: UPDATE of a pool's pod.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use serde_json::json;
use wi_e2e::{cluster, poll};

use super::*;

#[tokio::test]
async fn pool_pods_stay_what_was_admitted() {
    let cluster = cluster().await;
    let pool = cluster
        .pool_namespace("updates", json!({}), "Enforce")
        .await;
    let ns = pool.name().to_string();
    allow(
        &cluster,
        &pool,
        "updaters",
        json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "patch", "update"]}]),
        &["dev"],
        None,
    )
    .await;
    let agents = pool.agents(&cluster, "agents", 1, json!({})).await.unwrap();
    let agent = agents[0].metadata.name.clone().unwrap();
    let pods = Api::<Pod>::namespaced(cluster.client.clone(), &ns);
    let as_dev = |args: Vec<String>| {
        let cluster = &cluster;
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            cluster.kubectl_as("dev", &[], &args, "").await.unwrap()
        }
    };
    let on_agent = |args: &[&str]| -> Vec<String> {
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        all.extend(["-n".to_string(), ns.clone()]);
        all
    };

    for (args, what) in [
        (
            vec![
                "set",
                "image",
                &format!("pod/{agent}"),
                "agent=registry.invalid/shell:1",
            ],
            "image of containers agent",
        ),
        (
            vec![
                "label",
                "pod",
                &agent,
                "--overwrite",
                "wi-webhook.dev/agent-pool=elsewhere",
            ],
            "label wi-webhook.dev/agent-pool",
        ),
        (
            vec!["label", "pod", &agent, "azure.workload.identity/use-"],
            "label azure.workload.identity/use",
        ),
        (
            vec![
                "annotate",
                "pod",
                &agent,
                "azure.workload.identity/skip-containers=agent",
            ],
            "annotation azure.workload.identity/skip-containers",
        ),
    ] {
        let out = as_dev(on_agent(&args)).await;
        assert!(
            !out.success
                && out.stderr.contains(&denied_by("pod-updates"))
                && out.stderr.contains("[pool-pod-update]")
                && out.stderr.contains(what),
            "{args:?}: {}",
            out.stderr
        );
    }
    let stored = pods.get(&agent).await.unwrap();
    assert_eq!(
        stored.spec.unwrap().containers[0].image.as_deref(),
        Some("registry.invalid/agent:1")
    );

    // Metadata nobody's checks read passes, and so does what the controllers do: taking
    // the selector's label away makes the ReplicaSet release the pod (an UPDATE of its
    // ownerReferences) and create a new one.
    let out = as_dev(on_agent(&[
        "annotate",
        "pod",
        &agent,
        "team.example/note=debugging",
    ]))
    .await;
    assert!(out.success, "{}", out.stderr);
    let out = as_dev(on_agent(&["label", "pod", &agent, "app-"])).await;
    assert!(out.success, "{}", out.stderr);
    poll(
        "the ReplicaSet releases the pod and replaces it",
        Duration::from_secs(30),
        || async {
            let released = pods
                .get(&agent)
                .await?
                .metadata
                .owner_references
                .unwrap_or_default()
                .is_empty();
            let replaced = !pods
                .list(&kube::api::ListParams::default().labels("app=agents"))
                .await?
                .items
                .is_empty();
            Ok((released && replaced).then_some(()))
        },
    )
    .await
    .unwrap();
}
