//! `audit --cluster --credentials` against the live issuer and an AgentPool, and doctor
//! --pool on that pool's pod.

use std::path::PathBuf;

use kube::api::{Api, PostParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::{Value, json};
use wi_e2e::{cluster, pods};

use super::{agent, published_issuer, run, unique_client, write_credentials};

#[tokio::test]
async fn audit_cluster_checks_credentials_against_the_live_issuer_and_pools() {
    let cluster = cluster().await;
    let ns = cluster.namespace("fic-audit").await;
    let n = ns.name.clone();
    let client = unique_client(3);
    let issuer = published_issuer(&cluster).await;
    let pools: Api<DynamicObject> = Api::all_with(
        cluster.client.clone(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("wi-webhook.dev", "v1alpha1", "AgentPool"),
            "agentpools",
        ),
    );
    let pool_name = format!("{n}-pool");
    let pool: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "wi-webhook.dev/v1alpha1", "kind": "AgentPool",
        "metadata": {"name": pool_name},
        "spec": {"team": "platform", "identity": {"clientId": client},
                 "namespaces": [n], "serviceAccounts": ["agent"], "enforcement": "Audit"},
    }))
    .unwrap();
    pools.create(&PostParams::default(), &pool).await.unwrap();
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
    let tmp = tempfile::tempdir().unwrap();
    let audit = |dir: PathBuf| {
        let kubeconfig = cluster.kubeconfig.clone();
        let n = n.clone();
        async move {
            run(
                &kubeconfig,
                &[
                    "audit",
                    "--cluster",
                    "--namespace",
                    &n,
                    "-o",
                    "json",
                    "--credentials",
                    dir.to_str().unwrap(),
                    // The tenant the test control plane's webhook runs with.
                    "--tenant-id",
                    pods::WEBHOOK_TENANT_ID,
                ],
            )
            .await
        }
    };

    // The setup guide's slip: namespace and ServiceAccount joined by '-'.
    let hyphen = tmp.path().join("hyphen");
    write_credentials(
        &hyphen,
        &client,
        &issuer,
        &format!("system:serviceaccount:{n}-agent"),
        pods::AUDIENCE,
    );
    let (stdout, stderr, code) = audit(hyphen).await;
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    let findings: Vec<Value> = serde_json::from_str(&stdout).unwrap();
    let rules: Vec<&str> = findings
        .iter()
        .map(|f| f["rule"].as_str().unwrap())
        .collect();
    assert!(rules.contains(&"fic-subject-format"), "{rules:?}");
    assert!(
        rules.contains(&"fic-service-account-untrusted"),
        "{rules:?}"
    );
    assert!(
        !rules.contains(&"fic-issuer"),
        "the live issuer was used: {rules:?}"
    );
    let subject = findings
        .iter()
        .find(|f| f["rule"] == "fic-subject-format")
        .unwrap();
    assert!(
        subject["message"].as_str().unwrap().contains(&format!(
            "most likely means system:serviceaccount:{n}:agent"
        )),
        "{subject}"
    );
    assert_eq!(subject["pool"], pool_name.as_str());

    // The live issuer with a trailing slash added is another issuer.
    let slash = tmp.path().join("slash");
    write_credentials(
        &slash,
        &client,
        &format!("{issuer}/"),
        &format!("system:serviceaccount:{n}:agent"),
        pods::AUDIENCE,
    );
    let (stdout, stderr, code) = audit(slash).await;
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(stdout.contains("\"fic-issuer\""), "{stdout}");

    // Exactly right: clean (other tests' pools are only named in notes).
    let good = tmp.path().join("good");
    write_credentials(
        &good,
        &client,
        &issuer,
        &format!("system:serviceaccount:{n}:agent"),
        pods::AUDIENCE,
    );
    let (stdout, stderr, code) = audit(good.clone()).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");

    // doctor --pool picks the pool's pod. Whether an administrator may mint a token of a
    // pool's ServiceAccount is the pool's decision (spec.access.tokenRequesters): either way
    // the credential matches the claims the agent's token carries.
    agent(&cluster, &n, &client).await;
    let (stdout, stderr, code) = run(
        &cluster.kubeconfig,
        &[
            "doctor",
            "--pool",
            &pool_name,
            "--credentials",
            good.to_str().unwrap(),
        ],
    )
    .await;
    assert!(
        stderr.contains(&format!("doctor: pod {n}/agent-0")),
        "{stderr}"
    );
    let line = |name: &str| {
        stdout
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_default()
            .to_string()
    };
    assert!(line("pool").starts_with("ok"), "{stdout}");
    assert!(
        line("pool").contains(&format!("pool {pool_name} (team platform, Audit)")),
        "{stdout}"
    );
    let token = line("token");
    assert!(
        token.starts_with("ok") || token.starts_with("note"),
        "{stdout}"
    );
    assert!(line("credential").starts_with("ok"), "{stdout}");
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    ns.delete().await.unwrap();
}
