//! `pool-pod-origin`: pods created by hand in a pool's namespace.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use serde_json::json;
use wi_e2e::agentpools::AGENT_SA;
use wi_e2e::{Cluster, cluster};

use super::*;

/// `kubectl run` of an agent-like pod (ServiceAccount `agent`, so that only the origin is
/// wrong) as `user`.
async fn kubectl_run(cluster: &Cluster, user: &str, ns: &str, name: &str) -> wi_e2e::KubectlOutput {
    let overrides =
        json!({"spec": {"serviceAccountName": AGENT_SA, "automountServiceAccountToken": false}})
            .to_string();
    cluster
        .kubectl_as(
            user,
            &[],
            &[
                "run",
                name,
                "-n",
                ns,
                "--image=registry.invalid/shell:1",
                "--restart=Never",
                &format!("--overrides={overrides}"),
            ],
            "",
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn pool_pods_come_from_the_pools_workloads() {
    let cluster = cluster().await;
    let pool = cluster
        .pool_namespace(
            "origin",
            json!({"podCreators": [{"kind": "User", "name": "ci-bot"}]}),
            "Enforce",
        )
        .await;
    let ns = pool.name().to_string();
    allow(
        &cluster,
        &pool,
        "creators",
        json!([
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "create"]},
            {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "create", "patch"]},
        ]),
        &["dev", "ci-bot"],
        None,
    )
    .await;
    let pods = Api::<Pod>::namespaced(cluster.client.clone(), &ns);

    // `kubectl run` by a developer: refused, nothing stored.
    let out = kubectl_run(&cluster, "dev", &ns, "by-hand").await;
    assert!(
        !out.success
            && out.stderr.contains(&denied_by("pod-origin"))
            && out.stderr.contains("[pool-pod-origin]")
            && out.stderr.contains("user dev"),
        "{}",
        out.stderr
    );
    assert!(pods.get_opt("by-hand").await.unwrap().is_none());

    // The same developer's Deployment: its pods come from the ReplicaSet controller, and
    // get the pool's identity from the mutating webhook.
    let dev_yaml = serde_json::to_string(&json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "agents"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "agents"}},
            "template": {"metadata": {"labels": {"app": "agents", "azure.workload.identity/use": "true"}},
                "spec": {"serviceAccountName": AGENT_SA, "automountServiceAccountToken": false,
                    "containers": [{"name": "agent", "image": "registry.invalid/agent:1"}]}}},
    }))
    .unwrap();
    let out = cluster
        .kubectl_as("dev", &[], &["apply", "-n", &ns, "-f", "-"], &dev_yaml)
        .await
        .unwrap();
    assert!(out.success, "{}", out.stderr);
    let agent = cluster
        .wait_for_pod(&ns, "app=agents", Duration::from_secs(60))
        .await
        .unwrap();
    let env = &agent.spec.as_ref().unwrap().containers[0].env;
    assert!(
        env.iter()
            .flatten()
            .any(|e| e.name == "AZURE_CLIENT_ID"
                && e.value.as_deref() == Some(pool.client_id.as_str())),
        "the controller's pod is mutated: {env:?}"
    );
    let agent_name = agent.metadata.name.clone().unwrap();

    // `kubectl debug --copy-to`: a pod created by hand too.
    let out = cluster
        .kubectl_as(
            "dev",
            &[],
            &[
                "debug",
                "-n",
                &ns,
                &agent_name,
                "--copy-to=agent-copy",
                "--image=registry.invalid/shell:1",
                "--container=debugger",
            ],
            "",
        )
        .await
        .unwrap();
    assert!(
        !out.success && out.stderr.contains("[pool-pod-origin]"),
        "{}",
        out.stderr
    );
    assert!(pods.get_opt("agent-copy").await.unwrap().is_none());

    // A listed creator's labelled pod goes through the mutating webhook first (the
    // validating one sees the mutated pod): admitted, mutated, and recorded.
    let labelled =
        serde_json::to_string(&wi_e2e::pods::labelled_pod_json("by-ci", AGENT_SA, &[])).unwrap();
    let out = cluster
        .kubectl_as("ci-bot", &[], &["create", "-n", &ns, "-f", "-"], &labelled)
        .await
        .unwrap();
    assert!(out.success, "{}", out.stderr);
    let stored = pods.get("by-ci").await.unwrap();
    assert!(
        stored.spec.as_ref().unwrap().containers[0]
            .env
            .iter()
            .flatten()
            .any(|e| e.name == "AZURE_CLIENT_ID"),
        "not mutated"
    );
    event_on(
        &cluster,
        &pool.pool,
        &["BreakGlassAccess", "user ci-bot", "spec.access.podCreators"],
    )
    .await;
    // The developer's labelled pod is mutated, then refused by the validating webhook.
    let out = cluster
        .kubectl_as(
            "dev",
            &[],
            &["create", "-n", &ns, "-f", "-"],
            &labelled.replace("by-ci", "by-dev"),
        )
        .await
        .unwrap();
    assert!(
        !out.success && out.stderr.contains("[pool-pod-origin]"),
        "{}",
        out.stderr
    );

    // Warn: the pod is created and kubectl prints the warning.
    pool.set_enforcement(&cluster, "Warn").await;
    let out = kubectl_run(&cluster, "dev", &ns, "warned").await;
    assert!(out.success, "{}", out.stderr);
    assert!(
        out.stderr.contains("Warning:") && out.stderr.contains("[pool-pod-origin]"),
        "{}",
        out.stderr
    );
    assert!(pods.get_opt("warned").await.unwrap().is_some());
}
