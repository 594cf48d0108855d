//! `helm install`, `helm upgrade` and `helm uninstall` of the chart on the control plane.

use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, ServiceAccount};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use wi_e2e::pods::*;

use super::*;

const AGENTPOOL_CRD: &str = "agentpools.wi-webhook.dev";
const CLIENT_ID: &str = "6f1a3f4e-2b7c-4f0e-9a51-3c2d1e0f9a8b";
const UPGRADED_TENANT: &str = "0b7c2d1e-5a4f-4e3d-8c2b-1a0f9e8d7c6b";
const AGENT: &str = "agent";

/// The release of this test, uninstalled on drop if the test did not get that far
/// (blocking, so also on panic); the shared AgentPool CRD is always handed back (the
/// release adopted it, see [`adopt_crd`]).
struct Release {
    name: String,
    helm: PathBuf,
    home: PathBuf,
    kubectl: PathBuf,
    kubeconfig: PathBuf,
    uninstalled: bool,
}

impl Drop for Release {
    fn drop(&mut self) {
        if !self.uninstalled {
            let _ = std::process::Command::new(&self.helm)
                .args([
                    "uninstall",
                    &self.name,
                    "-n",
                    &self.name,
                    "--timeout",
                    "60s",
                ])
                .arg("--kubeconfig")
                .arg(&self.kubeconfig)
                .env("HELM_CACHE_HOME", self.home.join("cache"))
                .env("HELM_CONFIG_HOME", self.home.join("config"))
                .env("HELM_DATA_HOME", self.home.join("data"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let mut undo: Vec<String> = HELM_LABELS.iter().map(|l| format!("{l}-")).collect();
        undo.insert(0, "label".into());
        let annotations = [
            "annotate",
            "meta.helm.sh/release-name-",
            "meta.helm.sh/release-namespace-",
            "helm.sh/resource-policy-",
        ];
        for args in [undo, annotations.map(String::from).to_vec()] {
            let _ = std::process::Command::new(&self.kubectl)
                .arg("--kubeconfig")
                .arg(&self.kubeconfig)
                .args(&args[..1])
                .args(["crd", AGENTPOOL_CRD])
                .args(&args[1..])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// The AgentPool CRD exists (run.sh installs it; the running webhook needs it). Helm
/// installs over an existing object only when it carries the release's ownership marks, as
/// after `kubectl apply` of the kustomize install: what a user moving to the chart does.
async fn adopt_crd(cluster: &wi_e2e::Cluster, release: &str) {
    for args in [
        vec![
            "label",
            "crd",
            AGENTPOOL_CRD,
            "app.kubernetes.io/managed-by=Helm",
            "--overwrite",
        ],
        vec![
            "annotate",
            "crd",
            AGENTPOOL_CRD,
            &format!("meta.helm.sh/release-name={release}"),
            &format!("meta.helm.sh/release-namespace={release}"),
            "--overwrite",
        ],
    ] {
        let out = cluster.kubectl(&args, "").await.unwrap();
        assert!(out.success, "{args:?}: {}", out.stderr);
    }
}

fn values_file(home: &Path, revision: u32, values: Value) -> String {
    let path = home.join(format!("values-{revision}.yaml"));
    // JSON is YAML.
    std::fs::write(&path, values.to_string()).unwrap();
    path.to_str().unwrap().to_owned()
}

/// A dry-run create of a labelled pod in `ns`: whether the answer carries the identity.
async fn mutated_in(cluster: &wi_e2e::Cluster, ns: &str) -> anyhow::Result<bool> {
    let pods = Api::<Pod>::namespaced(cluster.client.clone(), ns);
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let pod = pods
        .create(&dry_run, &labelled_pod("probe", AGENT, &[]))
        .await?;
    Ok(env_value(&spec(&pod).containers[0], "AZURE_CLIENT_ID").is_some())
}

/// Waits until a labelled pod in `ns` is (or is not) mutated: the API server learns of a
/// changed webhook configuration through a watch, a moment after helm returns.
async fn until_mutated(cluster: &wi_e2e::Cluster, ns: &str, want: bool) {
    wi_e2e::poll(
        &format!("a labelled pod in {ns} mutated: {want}"),
        Duration::from_secs(30),
        || async move { Ok((mutated_in(cluster, ns).await? == want).then_some(())) },
    )
    .await
    .unwrap();
}

/// Creates a labelled pod in `ns` for real and checks it is mutated (or left alone).
async fn create_agent(cluster: &wi_e2e::Cluster, ns: &str, name: &str, mutated: bool) {
    let pod = Api::<Pod>::namespaced(cluster.client.clone(), ns)
        .create(&PostParams::default(), &labelled_pod(name, AGENT, &[]))
        .await
        .unwrap();
    if mutated {
        let identity = Identity {
            client_id: Some(CLIENT_ID),
            tenant_id: WEBHOOK_TENANT_ID,
        };
        assert_mutated(&pod, identity, 3600);
    } else {
        assert_not_mutated(&pod);
    }
}

/// `kubectl get KINDS -l app.kubernetes.io/instance=<release> -o name` (namespace `ns` or
/// cluster-wide).
async fn owned(cluster: &wi_e2e::Cluster, kinds: &str, release: &str, ns: Option<&str>) -> String {
    let selector = format!("app.kubernetes.io/instance={release}");
    let mut args = vec!["get", kinds, "-l", &selector, "-o", "name"];
    if let Some(ns) = ns {
        args.extend(["-n", ns]);
    }
    let out = cluster.kubectl(&args, "").await.unwrap();
    assert!(out.success, "{args:?}: {}", out.stderr);
    out.stdout.trim().to_owned()
}

#[tokio::test]
async fn install_upgrade_and_uninstall_mutate_through_the_releases_configuration() {
    let cluster = wi_e2e::cluster().await;
    let home = tempfile::tempdir().unwrap();
    // The release's namespace, restricted like the kustomize install's; its name is the
    // release's (unique per run, and its cluster-scoped objects with it).
    let release_ns = cluster.namespace("helm-release").await;
    let release = release_ns.name.clone();
    let fullname = format!("{release}-wi-webhook");
    let namespaces = Api::<Namespace>::all(cluster.client.clone());
    let label = |labels: Value| Patch::Merge(json!({"metadata": {"labels": labels}}));
    namespaces
        .patch(
            &release,
            &PatchParams::default(),
            &label(json!({"pod-security.kubernetes.io/enforce": "restricted"})),
        )
        .await
        .unwrap();
    // Two agent namespaces the run.sh webhook configuration ignores.
    let a = cluster.namespace("helm-a").await;
    let b = cluster.namespace("helm-b").await;
    for ns in [&a.name, &b.name] {
        namespaces
            .patch(
                ns,
                &PatchParams::default(),
                &label(json!({"wi-webhook.dev/ignore": "true"})),
            )
            .await
            .unwrap();
        Api::<ServiceAccount>::namespaced(cluster.client.clone(), ns)
            .create(
                &PostParams::default(),
                &service_account(AGENT, CLIENT_ID, None),
            )
            .await
            .unwrap();
    }
    assert!(
        !mutated_in(&cluster, &a.name).await.unwrap(),
        "mutated before the install"
    );

    // The run.sh webhook's address and CA.
    let webhook = cluster.webhook();
    let url = webhook.mutate_url.trim_end_matches("/mutate").to_owned();
    let ca = std::fs::read(wi_e2e::state_dir().join("pki/webhook/ca.crt")).unwrap();
    let ca_bundle = base64::engine::general_purpose::STANDARD.encode(ca);
    let selecting = |ns: &str| json!({"matchLabels": {"kubernetes.io/metadata.name": ns}});

    let mut guard = Release {
        name: release.clone(),
        helm: helm_path(&cluster),
        home: home.path().to_owned(),
        kubectl: cluster.kubectl_path(),
        kubeconfig: cluster.kubeconfig.clone(),
        uninstalled: false,
    };
    adopt_crd(&cluster, &release).await;

    // Install: the configuration selects namespace a.
    let values = values_file(
        home.path(),
        1,
        json!({
            "azureTenantID": TENANT,
            "webhook": {"url": url, "caBundle": ca_bundle},
            "mutatingWebhookNamespaceSelector": selecting(&a.name),
        }),
    );
    let out = helm(
        &cluster,
        home.path(),
        &[
            "install",
            &release,
            CHART,
            "-n",
            &release,
            "-f",
            &values,
            "--timeout",
            "2m",
        ],
    )
    .await;
    assert!(out.success, "helm install: {}{}", out.stdout, out.stderr);
    // The Deployment's pods passed admission (Pod Security restricted included).
    let pods = Api::<Pod>::namespaced(cluster.client.clone(), &release);
    let selector = ListParams::default().labels(&format!("app.kubernetes.io/name={fullname}"));
    wi_e2e::poll("the Deployment's two pods", Duration::from_secs(60), || {
        let (pods, selector) = (pods.clone(), selector.clone());
        async move { Ok((pods.list(&selector).await?.items.len() == 2).then_some(())) }
    })
    .await
    .unwrap();
    until_mutated(&cluster, &a.name, true).await;
    create_agent(&cluster, &a.name, "agent-installed", true).await;
    create_agent(&cluster, &b.name, "agent-installed", false).await;
    let deployments = Api::<Deployment>::namespaced(cluster.client.clone(), &release);
    let checksum = |d: &Deployment| {
        d.spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap()["checksum/config"]
            .clone()
    };
    let installed = checksum(&deployments.get(&fullname).await.unwrap());

    // Upgrade with changed values: namespace b instead of a, another tenant and log level,
    // three replicas.
    let values = values_file(
        home.path(),
        2,
        json!({
            "azureTenantID": UPGRADED_TENANT,
            "logLevel": "debug",
            "replicaCount": 3,
            "podLabels": {"team": "platform"},
            "webhook": {"url": url, "caBundle": ca_bundle},
            "mutatingWebhookNamespaceSelector": selecting(&b.name),
        }),
    );
    let out = helm(
        &cluster,
        home.path(),
        &[
            "upgrade",
            &release,
            CHART,
            "-n",
            &release,
            "-f",
            &values,
            "--timeout",
            "2m",
        ],
    )
    .await;
    assert!(out.success, "helm upgrade: {}{}", out.stdout, out.stderr);
    until_mutated(&cluster, &b.name, true).await;
    until_mutated(&cluster, &a.name, false).await;
    create_agent(&cluster, &b.name, "agent-upgraded", true).await;
    create_agent(&cluster, &a.name, "agent-upgraded", false).await;
    let config = Api::<ConfigMap>::namespaced(cluster.client.clone(), &release)
        .get(&format!("{fullname}-config"))
        .await
        .unwrap()
        .data
        .unwrap();
    assert_eq!(config["AZURE_TENANT_ID"], UPGRADED_TENANT);
    assert_eq!(config["WI_LOG_LEVEL"], "debug");
    let upgraded = deployments.get(&fullname).await.unwrap();
    assert_eq!(upgraded.spec.as_ref().unwrap().replicas, Some(3));
    assert_ne!(
        checksum(&upgraded),
        installed,
        "the settings change does not roll the pods"
    );
    let template_labels = upgraded
        .spec
        .as_ref()
        .unwrap()
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .clone()
        .unwrap();
    assert_eq!(template_labels["team"], "platform");
    let status = helm(&cluster, home.path(), &["status", &release, "-n", &release]).await;
    assert!(status.stdout.contains("REVISION: 2"), "{}", status.stdout);

    // Uninstall: everything of the release goes but the CRD (AgentPools would go with it).
    let out = helm(
        &cluster,
        home.path(),
        &[
            "uninstall",
            &release,
            "-n",
            &release,
            "--wait",
            "--timeout",
            "2m",
        ],
    )
    .await;
    assert!(out.success, "helm uninstall: {}{}", out.stdout, out.stderr);
    guard.uninstalled = true;
    assert!(
        out.stdout.contains(AGENTPOOL_CRD),
        "not reported as kept: {}",
        out.stdout
    );
    let namespaced = "deployments,replicasets,services,configmaps,serviceaccounts,roles,rolebindings,poddisruptionbudgets,secrets";
    assert_eq!(
        owned(&cluster, namespaced, &release, Some(&release)).await,
        ""
    );
    let cluster_wide = "clusterroles,clusterrolebindings,mutatingwebhookconfigurations,validatingwebhookconfigurations";
    assert_eq!(owned(&cluster, cluster_wide, &release, None).await, "");
    assert_eq!(
        owned(&cluster, "customresourcedefinitions", &release, None).await,
        format!("customresourcedefinition.apiextensions.k8s.io/{AGENTPOOL_CRD}")
    );
    let records = cluster
        .kubectl(
            &[
                "get",
                "secrets",
                "-n",
                &release,
                "-l",
                "owner=helm",
                "-o",
                "name",
            ],
            "",
        )
        .await
        .unwrap();
    assert_eq!(records.stdout.trim(), "", "helm's release records are left");
    // The Deployment's pods go with it (garbage collection).
    wi_e2e::poll(
        "the Deployment's pods deleted",
        Duration::from_secs(60),
        || {
            let (pods, selector) = (pods.clone(), selector.clone());
            async move { Ok(pods.list(&selector).await?.items.is_empty().then_some(())) }
        },
    )
    .await
    .unwrap();
    until_mutated(&cluster, &b.name, false).await;
    create_agent(&cluster, &b.name, "agent-uninstalled", false).await;
    drop(guard);
}
