//! The webhook down under failurePolicy Fail: labelled pods are refused with a message that
//! names the webhook, nothing is stored half-mutated, and pods are admitted (mutated) again
//! once it is back, those of a ReplicaSet that kept retrying included.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use wi_e2e::pods::{self, USE_LABEL};
use wi_e2e::poll;
use wi_e2e::private_cluster::PrivateCluster;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_down_refuses_labelled_pods_then_admits_them_mutated() {
    let mut private = PrivateCluster::start(&[]).await;
    let ns = namespace_with_agent(&private, "down").await;
    let pods_api = Api::<Pod>::namespaced(private.cluster.client.clone(), ns.name());
    let stored = create_pod(&private, ns.name(), "before", "agent")
        .await
        .unwrap();
    pods::assert_mutated(&stored, agent_identity(CLIENT_ID), 3600);

    // A crash: no drain, the port closed.
    private.signal_webhook("KILL");
    let status = private.wait_webhook(Duration::from_secs(10)).await.unwrap();
    assert!(!status.success(), "{status}");

    for i in 0..3 {
        let name = format!("while-down-{i}");
        let status = pods::api_error(create_pod(&private, ns.name(), &name, "agent").await);
        assert_eq!(status.code, 500, "{status:?}");
        assert!(
            status.message.contains(FAILED_CALLING)
                && status.message.contains("connection refused"),
            "the refusal names the webhook and the cause: {}",
            status.message
        );
        assert_eq!(
            pods_api.get_opt(&name).await.unwrap(),
            None,
            "{name} stored"
        );
    }
    // Unlabelled pods are not the webhook's: still admitted, as sent.
    let unlabelled: Pod = serde_json::from_value(json!({
        "metadata": {"name": "unlabelled"},
        "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1"}]},
    }))
    .unwrap();
    let unlabelled = pods_api
        .create(&PostParams::default(), &unlabelled)
        .await
        .unwrap();
    pods::assert_not_mutated(&unlabelled);
    // A Deployment created meanwhile: its ReplicaSet cannot create its pods yet.
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "agents"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "agents"}},
            "template": {
                "metadata": {"labels": {"app": "agents", USE_LABEL: "true"}},
                "spec": {
                    "serviceAccountName": "agent",
                    "automountServiceAccountToken": false,
                    "containers": [{"name": "agent", "image": "registry.invalid/agent:1"}],
                },
            },
        },
    }))
    .unwrap();
    Api::<Deployment>::namespaced(private.cluster.client.clone(), ns.name())
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    poll(
        "the ReplicaSet is refused by the API server",
        Duration::from_secs(30),
        || async {
            let events = Api::<k8s_openapi::api::core::v1::Event>::namespaced(
                private.cluster.client.clone(),
                ns.name(),
            )
            .list(&ListParams::default().fields("reason=FailedCreate"))
            .await?;
            Ok(events
                .items
                .iter()
                .any(|e| {
                    e.message
                        .as_deref()
                        .is_some_and(|m| m.contains(FAILED_CALLING))
                })
                .then_some(()))
        },
    )
    .await
    .unwrap();
    assert_eq!(assert_stored_pods_mutated(&private, ns.name()).await, 1);

    private.start_webhook().await;
    let mut n = 0;
    let pod = poll(
        "a labelled pod is admitted again",
        Duration::from_secs(30),
        || {
            n += 1;
            let name = format!("after-{n}");
            let private = &private;
            let ns = ns.name();
            async move { Ok(Some(create_pod(private, ns, &name, "agent").await?)) }
        },
    )
    .await
    .unwrap();
    pods::assert_mutated(&pod, agent_identity(CLIENT_ID), 3600);
    // The ReplicaSet's retries now succeed, mutated.
    poll(
        "the Deployment's two pods are created",
        Duration::from_secs(90),
        || async {
            let list = pods_api
                .list(&ListParams::default().labels("app=agents"))
                .await?;
            Ok((list.items.len() == 2).then_some(()))
        },
    )
    .await
    .unwrap();
    // "before", "after-1" and the two of the Deployment: every one fully mutated.
    assert_eq!(assert_stored_pods_mutated(&private, ns.name()).await, 4);
}
