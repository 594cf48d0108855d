//! `wi-webhook audit --cluster` through the real API server: violations in objects created
//! before the AgentPool that forbids them, found through the paged list API, and the
//! PolicyReport output accepted by the API server (with the project's test copy of the
//! wgpolicyk8s.io/v1alpha2 CRD).

use std::path::{Path, PathBuf};
use std::time::Duration;

use kube::api::{Api, PostParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::{Value, json};
use wi_e2e::{cluster, pods, poll};

fn binary() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/wi-webhook")
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

async fn audit(kubeconfig: &Path, args: &[&str]) -> (String, String, i32) {
    let out = tokio::process::Command::new(binary())
        .arg("audit")
        .arg("--cluster")
        // The tenant the test control plane's webhook runs with (tests/cluster/run.sh).
        .args(["--tenant-id", "00000000-0000-0000-0000-000000000000"])
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .await
        .expect("running wi-webhook audit");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.code().unwrap_or(-1),
    )
}

#[tokio::test]
async fn audit_cluster_finds_objects_created_before_the_pool_and_reports_are_accepted() {
    let cluster = cluster().await;
    let ns = cluster.namespace("audit").await;
    let n = ns.name.clone();
    // A client id unique to this test, used by a ServiceAccount before any pool owns it.
    let client = format!(
        "a0d17000-0000-4000-8000-{:012x}",
        std::process::id() as u64 ^ 0x5eed
    );
    let sa = pods::service_account("agent", &client, None);
    Api::namespaced(cluster.client.clone(), &n)
        .create(&PostParams::default(), &sa)
        .await
        .unwrap();
    cluster
        .apply_yaml(
            &n,
            r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: legacy}
spec:
  replicas: 2
  selector: {matchLabels: {app: legacy}}
  template:
    metadata: {labels: {app: legacy, azure.workload.identity/use: "true"}}
    spec:
      serviceAccountName: agent
      automountServiceAccountToken: false
      containers: [{name: agent, image: x}]
"#,
        )
        .await
        .unwrap();
    // A ReplicationController is a workload like a Deployment (no pods wanted from it).
    cluster
        .apply_yaml(
            &n,
            r#"apiVersion: v1
kind: ReplicationController
metadata: {name: legacy-rc}
spec:
  replicas: 0
  selector: {app: legacy-rc}
  template:
    metadata: {labels: {app: legacy-rc, azure.workload.identity/use: "true"}}
    spec:
      serviceAccountName: agent
      containers: [{name: agent, image: x}]
"#,
        )
        .await
        .unwrap();
    // Both pods exist (the ReplicaSet controller made them) before the pool.
    poll("two legacy pods", Duration::from_secs(30), || async {
        let pods = cluster
            .kubectl(&["get", "pods", "-n", &n, "-o", "name"], "")
            .await?;
        Ok((pods.stdout.lines().count() >= 2).then_some(()))
    })
    .await
    .unwrap();

    // Before the pool: nothing to report in this namespace.
    let (_, stderr, code) = audit(&cluster.kubeconfig, &["--namespace", &n]).await;
    assert_eq!(code, 0, "{stderr}");

    // The AgentPool now claims this client id for another namespace.
    let pools: Api<DynamicObject> = Api::all_with(
        cluster.client.clone(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("wi-webhook.dev", "v1alpha1", "AgentPool"),
            "agentpools",
        ),
    );
    let pool_name = format!("{n}-owner");
    let pool: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "wi-webhook.dev/v1alpha1", "kind": "AgentPool",
        "metadata": {"name": pool_name},
        "spec": {"team": "owners", "identity": {"clientId": client},
                 "namespaces": [format!("{n}-elsewhere")], "serviceAccounts": ["agent"]},
    }))
    .unwrap();
    pools.create(&PostParams::default(), &pool).await.unwrap();
    // Deleted also when the test fails; Drop cannot await, and the client's connection task
    // lives on this test's runtime: a blocking kubectl does it.
    struct Cleanup(PathBuf, PathBuf, String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::process::Command::new(&self.0)
                .arg("--kubeconfig")
                .arg(&self.1)
                .args([
                    "delete",
                    "agentpool",
                    &self.2,
                    "--ignore-not-found",
                    "--wait=false",
                ])
                .output();
        }
    }
    let _cleanup = Cleanup(
        cluster.kubectl_path(),
        cluster.kubeconfig.clone(),
        pool_name.clone(),
    );

    // One object per page, so the paging is exercised.
    let (stdout, stderr, code) = audit(
        &cluster.kubeconfig,
        &["--namespace", &n, "-o", "json", "--page-size", "1"],
    )
    .await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("Pod: 2 listed"), "progress: {stderr}");
    // Not a terminal: one line per kind, no carriage return in a CI log.
    assert!(!stderr.contains('\r'), "carriage return in: {stderr:?}");
    let findings: Vec<Value> = serde_json::from_str(&stdout).unwrap();
    let kinds: Vec<&str> = findings
        .iter()
        .map(|f| f["kind"].as_str().unwrap())
        .collect();
    for kind in ["Pod", "Deployment", "ReplicaSet", "ReplicationController"] {
        assert!(kinds.contains(&kind), "no {kind} finding: {kinds:?}");
    }
    assert_eq!(
        kinds.iter().filter(|k| **k == "Pod").count(),
        2,
        "{kinds:?}"
    );
    for f in &findings {
        assert_eq!(f["rule"], "identity-of-another-pool", "{f}");
        assert_eq!(f["pool"], pool_name.as_str(), "{f}");
        assert_eq!(f["namespace"], n.as_str(), "{f}");
    }

    // The PolicyReport output is accepted by the API server.
    cluster
        .kubectl(
            &[
                "apply",
                "-f",
                repo("tests/fixtures/policyreport-crd.yaml")
                    .to_str()
                    .unwrap(),
            ],
            "",
        )
        .await
        .unwrap();
    cluster
        .kubectl(
            &[
                "wait",
                "--for=condition=Established",
                "--timeout=30s",
                "crd/policyreports.wgpolicyk8s.io",
            ],
            "",
        )
        .await
        .unwrap();
    let (report, stderr, code) = audit(
        &cluster.kubeconfig,
        &["--namespace", &n, "-o", "policyreport"],
    )
    .await;
    assert_eq!(code, 1, "{stderr}");
    let applied = cluster
        .kubectl(&["apply", "-f", "-"], &report)
        .await
        .unwrap();
    assert!(
        applied.success,
        "PolicyReport refused: {}\n{report}",
        applied.stderr
    );
    let stored = cluster
        .kubectl(
            &[
                "get",
                "policyreports.wgpolicyk8s.io",
                "-n",
                &n,
                "wi-webhook-pool-isolation",
                "-o",
                "json",
            ],
            "",
        )
        .await
        .unwrap();
    let stored: Value = serde_json::from_str(&stored.stdout).unwrap();
    assert_eq!(stored["summary"]["fail"], findings.len() as u64);
    assert_eq!(stored["results"][0]["result"], "fail");
}
