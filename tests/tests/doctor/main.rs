//! `wi-webhook doctor` and `wi-webhook audit --cluster --credentials` through the real API
//! server: the token doctor shows is one the API server minted through TokenRequest, the
//! issuer is the one its discovery document publishes, and a user who may not mint a token
//! still sees the claims the agent's token carries.

mod audit;
mod walk;

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use wi_e2e::{Cluster, pods, poll};

fn binary() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/wi-webhook")
}

async fn run(kubeconfig: &Path, args: &[&str]) -> (String, String, i32) {
    let out = tokio::process::Command::new(binary())
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .await
        .expect("running wi-webhook");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.code().unwrap_or(-1),
    )
}

/// The issuer as the API server publishes it, read by kubectl (not by the code under test).
async fn published_issuer(cluster: &Cluster) -> String {
    let out = cluster
        .kubectl(&["get", "--raw", "/.well-known/openid-configuration"], "")
        .await
        .unwrap();
    assert!(out.success, "{}", out.stderr);
    let document: Value = serde_json::from_str(&out.stdout).unwrap();
    document["issuer"].as_str().unwrap().to_string()
}

fn unique_client(salt: u64) -> String {
    format!(
        "d0c70000-0000-4000-8000-{:012x}",
        (std::process::id() as u64) << 8 ^ salt
    )
}

/// `az identity show` and `az identity federated-credential list` output, in one directory.
fn write_credentials(dir: &Path, client: &str, issuer: &str, subject: &str, audience: &str) {
    let identity = "/subscriptions/00000000-0000-0000-0000-0000000000aa/resourcegroups/rg-agents/providers/Microsoft.ManagedIdentity/userAssignedIdentities/mi-agents";
    std::fs::create_dir_all(dir).unwrap();
    let show = json!({
        "clientId": client, "id": identity, "name": "mi-agents", "location": "westeurope",
        "principalId": "99999999-0000-0000-0000-000000000001", "resourceGroup": "rg-agents",
        "tenantId": pods::WEBHOOK_TENANT_ID, "type": "Microsoft.ManagedIdentity/userAssignedIdentities",
    });
    let list = json!([{
        "audiences": [audience], "id": format!("{identity}/federatedIdentityCredentials/agents"),
        "issuer": issuer, "name": "agents", "resourceGroup": "rg-agents", "subject": subject,
        "systemData": null,
        "type": "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials",
    }]);
    std::fs::write(dir.join("identity.json"), show.to_string()).unwrap();
    std::fs::write(dir.join("credentials.json"), list.to_string()).unwrap();
}

/// A ServiceAccount of no AgentPool annotated with `client`, and a labelled pod using it,
/// stored after the webhook's mutation.
async fn agent(cluster: &Cluster, ns: &str, client: &str) -> Pod {
    let sa = pods::service_account("agent", client, None);
    Api::<ServiceAccount>::namespaced(cluster.client.clone(), ns)
        .create(&PostParams::default(), &sa)
        .await
        .unwrap();
    let pod: Pod =
        serde_json::from_value(pods::labelled_pod_json("agent-0", "agent", &[])).unwrap();
    let api = Api::<Pod>::namespaced(cluster.client.clone(), ns);
    // The ServiceAccount cache may lag the create by a moment.
    poll("the agent pod", Duration::from_secs(20), || async {
        Ok(api.create(&PostParams::default(), &pod).await.ok())
    })
    .await
    .unwrap()
}
