//! The Helm chart (charts/wi-webhook): it lints strictly, renders exactly the objects of the
//! kustomize install for the same settings (object by object, only Helm's own labels, the
//! release's names and the ConfigMap's hash suffix normalised), and installs, upgrades and
//! uninstalls on the real control plane with a labelled pod mutated through the chart's
//! own webhook configuration after each step.
//!
//! No kubelet: the chart's Deployment creates its pods (admission, Pod Security included)
//! but they never run. As in install.rs, the webhook that answers is the one `run.sh`
//! started: the release points its configurations at it (`webhook.url`, `webhook.caBundle`)
//! and scopes them to namespaces the `run.sh` configuration ignores (label
//! `wi-webhook.dev/ignore`), so a mutation there proves the release's configuration called.

mod release;
mod render;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::Value;

const CHART: &str = "charts/wi-webhook";
const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
/// Labels Helm adds that kustomize does not; nothing else is normalised away.
const HELM_LABELS: [&str; 4] = [
    "helm.sh/chart",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// helm, built by tests/cluster/build.sh next to kubectl.
fn helm_path(cluster: &wi_e2e::Cluster) -> PathBuf {
    let helm = cluster.kubectl_path().with_file_name("helm");
    assert!(
        helm.exists(),
        "{} missing: run tests/cluster/build.sh",
        helm.display()
    );
    helm
}

/// `helm ARGS` against the cluster, its caches and configuration in `home` (never the
/// user's).
async fn helm(cluster: &wi_e2e::Cluster, home: &Path, args: &[&str]) -> wi_e2e::KubectlOutput {
    let out = tokio::process::Command::new(helm_path(cluster))
        .args(args)
        .arg("--kubeconfig")
        .arg(&cluster.kubeconfig)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .current_dir(repo())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .expect("running helm");
    wi_e2e::KubectlOutput {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn yaml_documents(text: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(text)
        .expect("YAML")
        .into_iter()
        .filter(|v| !v.is_null())
        .collect()
}
