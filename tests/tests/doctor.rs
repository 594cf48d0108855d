//! `wi-webhook doctor` and `wi-webhook audit --cluster --credentials` through the real API
//! server: the token doctor shows is one the API server minted through TokenRequest, the
//! issuer is the one its discovery document publishes, and a user who may not mint a token
//! still sees the claims the agent's token carries.

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{Api, PostParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::{Value, json};
use wi_e2e::{Cluster, cluster, pods, poll};

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

#[tokio::test]
async fn doctor_walks_a_working_agent_and_names_each_credential_mismatch() {
    let cluster = cluster().await;
    let ns = cluster.namespace("doctor").await;
    let n = ns.name.clone();
    let client = unique_client(1);
    agent(&cluster, &n, &client).await;
    let issuer = published_issuer(&cluster).await;
    let subject = format!("system:serviceaccount:{n}:agent");
    let tmp = tempfile::tempdir().unwrap();

    let good = tmp.path().join("good");
    write_credentials(
        &good,
        &client.to_uppercase(),
        &issuer,
        &subject,
        pods::AUDIENCE,
    );
    let (stdout, stderr, code) = run(
        &cluster.kubeconfig,
        &[
            "doctor",
            "agent-0",
            "-n",
            &n,
            "--credentials",
            good.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 7, "{stdout}");
    for (line, step) in lines.iter().zip([
        "label",
        "mutation",
        "serviceaccount",
        "pool",
        "issuer",
        "token",
        "credential",
    ]) {
        assert!(
            line.starts_with("ok") || (step == "pool" && line.starts_with("note")),
            "{line}"
        );
        assert!(line.contains(step), "{line}");
    }
    // The minted token's claims, decoded.
    let token = lines[5];
    for claim in [
        format!("iss={issuer} "),
        format!("sub={subject} "),
        format!("aud={} ", pods::AUDIENCE),
    ] {
        assert!(token.contains(&claim), "{token}");
    }
    assert!(
        token.contains("(in 600 s)") || token.contains("(in 599 s)"),
        "{token}"
    );

    let cases = [
        (
            "subject",
            issuer.clone(),
            format!("system:serviceaccount:{n}-agent"),
            pods::AUDIENCE,
        ),
        (
            "issuer",
            format!("{issuer}/"),
            subject.clone(),
            pods::AUDIENCE,
        ),
        ("audience", issuer.clone(), subject.clone(), "api://other"),
    ];
    for (field, iss, sub, aud) in cases {
        let dir = tmp.path().join(field);
        write_credentials(&dir, &client, &iss, &sub, aud);
        let (stdout, stderr, code) = run(
            &cluster.kubeconfig,
            &[
                "doctor",
                "agent-0",
                "-n",
                &n,
                "--credentials",
                dir.to_str().unwrap(),
            ],
        )
        .await;
        assert_eq!(code, 1, "{field}: {stdout}\n{stderr}");
        let line = stdout.lines().last().unwrap();
        assert!(line.starts_with("FAIL  credential"), "{field}: {line}");
        assert!(
            line.contains(&format!("differs in {field} (")),
            "{field}: {line}"
        );
        assert!(line.contains("fix: "), "{line}");
    }

    // Unusable input: no such pod.
    let (_, stderr, code) = run(&cluster.kubeconfig, &["doctor", "no-such-pod", "-n", &n]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("not found"), "{stderr}");
    ns.delete().await.unwrap();
}

#[tokio::test]
async fn a_user_who_may_not_mint_the_token_still_sees_its_claims() {
    let cluster = cluster().await;
    let ns = cluster.namespace("doctor-ro").await;
    let n = ns.name.clone();
    let client = unique_client(2);
    agent(&cluster, &n, &client).await;
    let issuer = published_issuer(&cluster).await;
    // A reader of pods and ServiceAccounts, without create on serviceaccounts/token.
    cluster
        .apply_yaml(
            &n,
            r#"apiVersion: v1
kind: ServiceAccount
metadata: {name: reader}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: reader}
rules:
- apiGroups: [""]
  resources: [pods, serviceaccounts]
  verbs: [get, list]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: reader}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: reader}
subjects:
- kind: ServiceAccount
  name: reader
"#,
        )
        .await
        .unwrap();
    let subject = format!("system:serviceaccount:{n}:agent");
    let tmp = tempfile::tempdir().unwrap();
    write_credentials(tmp.path(), &client, &issuer, &subject, pods::AUDIENCE);
    let reader = format!("system:serviceaccount:{n}:reader");
    let (stdout, stderr, code) = run(
        &cluster.kubeconfig,
        &[
            "doctor",
            "agent-0",
            "-n",
            &n,
            "--as",
            &reader,
            "--credentials",
            tmp.path().to_str().unwrap(),
        ],
    )
    .await;
    let step = |name: &str| {
        stdout
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_default()
            .to_string()
    };
    let token = step("token");
    assert!(token.starts_with("note"), "{stdout}\n{stderr}");
    assert!(token.contains("you may not mint a token"), "{token}");
    assert!(
        token.contains("forbidden"),
        "the API server's answer: {token}"
    );
    assert!(
        token.contains(&format!(
            "iss={issuer} sub={subject} aud={}",
            pods::AUDIENCE
        )),
        "{token}"
    );
    // The reader cannot list AgentPools either: said, not a failure.
    let pool = step("pool");
    assert!(pool.starts_with("note"), "{pool}");
    assert!(pool.contains("cannot read the AgentPools"), "{pool}");
    // The credential is matched against the claims from the discovery document and the pod.
    let credential = stdout.lines().last().unwrap();
    assert!(credential.starts_with("ok    credential"), "{stdout}");
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    ns.delete().await.unwrap();
}

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
