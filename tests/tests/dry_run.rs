//! `request.dryRun` is answered exactly as a real request, and a server-side dry
//! run stores nothing: the way to audit a manifest.

use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{Api, PostParams};
use wi_e2e::pods::*;

const CLIENT_ID: &str = "44444444-4444-4444-4444-444444444444";

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

fn identity() -> Identity<'static> {
    Identity {
        client_id: Some(CLIENT_ID),
        tenant_id: WEBHOOK_TENANT_ID,
    }
}

#[track_caller]
fn assert_dry_run_logged(cluster: &wi_e2e::Cluster, ns: &str) {
    let decisions: Vec<_> = cluster
        .webhook_decisions(ns)
        .unwrap()
        .into_iter()
        .filter(|d| d.kind == "Pod" && d.name == "audited" && d.endpoint == "/mutate")
        .collect();
    assert!(
        decisions.len() == 1 && decisions[0].dry_run && decisions[0].decision == "mutated",
        "the webhook logs one dry-run mutation: {decisions:#?}"
    );
}

/// `kubectl create --dry-run=server -o json` prints the mutated pod; nothing is stored.
#[tokio::test]
async fn kubectl_server_dry_run_returns_the_mutated_pod_and_stores_nothing() {
    let (cluster, ns, pods) = setup("e2e-dry-kubectl").await;
    let manifest = serde_json::to_string(&labelled_pod_json(
        "audited",
        "agent",
        &[(INJECT_PROXY_ANNOTATION, "true")],
    ))
    .unwrap();
    let out = cluster
        .kubectl(
            &[
                "create",
                "--dry-run=server",
                "-o",
                "json",
                "-n",
                &ns.name,
                "-f",
                "-",
            ],
            &manifest,
        )
        .await
        .unwrap();
    assert!(out.success, "kubectl failed: {}", out.stderr);
    let pod: Pod = serde_json::from_str(&out.stdout).unwrap();
    assert_mutated(&pod, identity(), 3600);
    assert_eq!(
        container_names(spec(&pod)),
        (vec![PROXY_INIT, PROXY], vec!["agent"])
    );
    assert!(pods.get_opt("audited").await.unwrap().is_none(), "stored");
    assert_dry_run_logged(&cluster, &ns.name);
}

/// The same through the API: `PostParams { dry_run: true }`.
#[tokio::test]
async fn api_dry_run_returns_the_mutated_pod_and_stores_nothing() {
    let (cluster, ns, pods) = setup("e2e-dry-api").await;
    let params = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let pod = pods
        .create(&params, &labelled_pod("audited", "agent", &[]))
        .await
        .unwrap();
    assert_mutated(&pod, identity(), 3600);
    assert_eq!(container_names(spec(&pod)), (vec![], vec!["agent"]));
    assert!(pods.get_opt("audited").await.unwrap().is_none(), "stored");
    assert_dry_run_logged(&cluster, &ns.name);
}
