//! Smoke tests of the test control plane itself: if these fail, the webhook's end-to-end
//! tests cannot mean anything.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::Api;

#[tokio::test]
async fn apiserver_reports_the_version_it_was_built_as() {
    let cluster = wi_e2e::cluster().await;
    let info = cluster.client.apiserver_version().await.unwrap();
    // The version stamp of build.sh: without it the server says v0.0.0-master and any
    // version-dependent behaviour (native sidecars on >= 1.32) is tested against nonsense.
    assert_eq!(info.git_version, "v1.34.4");
    assert_eq!((info.major.as_str(), info.minor.as_str()), ("1", "34"));
}

#[tokio::test]
async fn controller_manager_creates_the_default_service_account() {
    let cluster = wi_e2e::cluster().await;
    let ns = cluster.namespace("smoke-sa").await;
    let sas = Api::<ServiceAccount>::namespaced(cluster.client.clone(), &ns.name);
    let deadline = Instant::now() + Duration::from_secs(30);
    while sas.get_opt("default").await.unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "no default ServiceAccount in {} after 30 s: is kube-controller-manager running?",
            ns.name
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn deployment_creates_an_unmutated_pod_through_its_replicaset() {
    let cluster = wi_e2e::cluster().await;
    let ns = cluster.namespace("smoke-deploy").await;
    cluster
        .apply_yaml(
            &ns.name,
            r#"
apiVersion: v1
kind: ConfigMap
metadata:
  name: smoke
data:
  multi-document: "yes"
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: smoke
spec:
  replicas: 1
  selector:
    matchLabels: {app: smoke}
  template:
    metadata:
      labels: {app: smoke}
    spec:
      containers:
      - name: main
        image: registry.invalid/smoke:1
"#,
        )
        .await
        .unwrap();

    // Deployment -> ReplicaSet -> Pod: the deployment and replicaset controllers work, and
    // the pod passed admission (ServiceAccount plugin included) and was stored.
    let pod = cluster
        .wait_for_pod(&ns.name, "app=smoke", Duration::from_secs(60))
        .await
        .unwrap();
    let owner = &pod.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(owner.kind, "ReplicaSet");

    // Not labelled azure.workload.identity/use: the webhook's objectSelector skips it.
    let spec = pod.spec.unwrap();
    let container = &spec.containers[0];
    let env: Vec<&str> = container
        .env
        .iter()
        .flatten()
        .map(|e| e.name.as_str())
        .collect();
    assert!(
        !env.iter().any(|name| name.starts_with("AZURE_")),
        "{env:?}"
    );
    let volumes: Vec<&str> = spec
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    assert!(!volumes.contains(&"azure-identity-token"), "{volumes:?}");
    assert_eq!(spec.containers.len(), 1);
    assert!(spec.init_containers.unwrap_or_default().is_empty());
}
