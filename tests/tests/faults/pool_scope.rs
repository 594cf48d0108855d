//! Fail closed in the pools' namespaces, open elsewhere: the webhook scopes its fail-closed
//! webhooks to a new AgentPool's namespace within seconds and un-scopes it when the pool
//! goes (also after someone re-applies the configurations as generated); with the webhook
//! down, pods and workloads are refused in a pool's namespace and admitted in any other.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use serde_json::json;
use wi_e2e::agentpools::{
    Pools, guid, pool_scoped, pool_spec, wait_pool_scoped, wait_pool_unscoped,
};
use wi_e2e::pods;
use wi_e2e::private_cluster::PrivateCluster;

fn unlabelled_pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "automountServiceAccountToken": false,
            "containers": [{"name": "app", "image": "registry.invalid/app:1"}],
        },
    }))
    .unwrap()
}

fn deployment(name: &str) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1"}]},
            },
        },
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_namespaces_fail_closed_and_others_fail_open() {
    let mut private = PrivateCluster::start(&[]).await;
    let cluster = &private.cluster;
    let pool_ns = cluster.namespace("scope-pool").await;
    let other_ns = cluster.namespace("scope-other").await;
    let mut pools = Pools::new(cluster);
    let started = Instant::now();
    pools
        .create(
            pool_ns.name(),
            pool_spec(
                "team-s",
                &guid("scope"),
                &guid("t"),
                pool_ns.name(),
                "Enforce",
            ),
        )
        .await
        .unwrap();
    wait_pool_scoped(cluster, pool_ns.name()).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "scoped after {:?}",
        started.elapsed()
    );
    assert!(!pool_scoped(cluster, other_ns.name()).await.unwrap());

    // Re-applying the configurations as generated (placeholder only) is undone by the
    // webhook's resync.
    let out = cluster
        .kubectl(
            &[
                "get",
                "validatingwebhookconfiguration",
                "wi-webhook",
                "-o",
                "json",
            ],
            "",
        )
        .await
        .unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    for w in config["webhooks"].as_array_mut().unwrap() {
        let name = w["name"].as_str().unwrap().to_string();
        if let Some(exprs) = w["namespaceSelector"]["matchExpressions"].as_array_mut() {
            for e in exprs.iter_mut().filter(|e| {
                e["values"]
                    .as_array()
                    .is_some_and(|v| v.iter().any(|x| x == "no-pool.wi-webhook.dev"))
            }) {
                e["values"] = json!(["no-pool.wi-webhook.dev"]);
            }
        }
        assert!(!name.is_empty());
    }
    let out = cluster
        .kubectl(&["replace", "-f", "-"], &config.to_string())
        .await
        .unwrap();
    assert!(out.success, "{}", out.stderr);
    assert!(!pool_scoped(cluster, pool_ns.name()).await.unwrap());
    wait_pool_scoped(cluster, pool_ns.name()).await.unwrap();

    private.signal_webhook("KILL");
    private.wait_webhook(Duration::from_secs(10)).await.unwrap();
    let cluster = &private.cluster;
    let pods_in = |ns: &str| Api::<Pod>::namespaced(cluster.client.clone(), ns);
    let deployments_in = |ns: &str| Api::<Deployment>::namespaced(cluster.client.clone(), ns);

    let status = pods::api_error(
        pods_in(pool_ns.name())
            .create(&PostParams::default(), &unlabelled_pod("down"))
            .await,
    );
    assert_eq!(status.code, 500, "{status:?}");
    assert!(
        status
            .message
            // Either fail-closed pod webhook (unlabelled-pods or pod-origin) may be the one
            // the API server reports: it calls validating webhooks in parallel.
            .contains(".pool-namespaces.wi-webhook.dev"),
        "{}",
        status.message
    );
    let status = pods::api_error(
        deployments_in(pool_ns.name())
            .create(&PostParams::default(), &deployment("down"))
            .await,
    );
    assert!(
        status
            .message
            .contains("workloads.pool-namespaces.wi-webhook.dev"),
        "{}",
        status.message
    );
    // Elsewhere the checks fail open.
    pods_in(other_ns.name())
        .create(&PostParams::default(), &unlabelled_pod("down"))
        .await
        .expect("a pod of no pool is admitted while the webhook is down");
    deployments_in(other_ns.name())
        .create(&PostParams::default(), &deployment("down"))
        .await
        .expect("a workload of no pool is admitted while the webhook is down");

    private.start_webhook().await;
    let cluster = &private.cluster;
    // Removing the pool un-scopes its namespace.
    pools
        .api
        .delete(pool_ns.name(), &Default::default())
        .await
        .unwrap();
    wait_pool_unscoped(cluster, pool_ns.name()).await.unwrap();
}
