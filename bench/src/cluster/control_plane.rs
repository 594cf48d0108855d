//! The control plane of `tests/cluster/run.sh`: its client and kubectl, and the objects
//! the measurements create in it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;

use crate::fixtures;

/// The control plane in a state directory: its API server and its kubectl.
pub struct ControlPlane {
    pub state: PathBuf,
    pub client: kube::Client,
    kubectl: String,
}

impl ControlPlane {
    /// Connects to the control plane of `state` (started by `bench/run.sh`).
    pub async fn connect(state: &Path) -> anyhow::Result<ControlPlane> {
        let env = cluster_env(state)?;
        Ok(ControlPlane {
            state: state.to_owned(),
            client: client(state).await?,
            kubectl: env
                .get("KUBECTL")
                .cloned()
                .unwrap_or_else(|| "kubectl".into()),
        })
    }

    /// Runs kubectl on this control plane; its stdout.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&[u8]>) -> anyhow::Result<String> {
        kubectl(&self.kubectl, &self.state, args, stdin)
    }
}

fn cluster_env(state: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(state.join("cluster.env")).with_context(|| {
        format!(
            "no control plane in {}: start it with bench/run.sh",
            state.display()
        )
    })?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect())
}

async fn client(state: &Path) -> anyhow::Result<kube::Client> {
    let raw = Kubeconfig::read_from(state.join("kubeconfig"))?;
    let config = kube::Config::from_custom_kubeconfig(raw, &KubeConfigOptions::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

fn kubectl(
    path: &str,
    state: &Path,
    args: &[&str],
    stdin: Option<&[u8]>,
) -> anyhow::Result<String> {
    let mut child = Command::new(path)
        .arg("--kubeconfig")
        .arg(state.join("kubeconfig"))
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {path}"))?;
    if let Some(input) = stdin {
        use std::io::Write;
        child.stdin.take().context("stdin")?.write_all(input)?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn namespace(name: &str, labels: &[(&str, &str)]) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    }
}

pub fn service_account(
    ns: &str,
    name: &str,
    client_id: &str,
    tenant: Option<&str>,
) -> ServiceAccount {
    let mut annotations = BTreeMap::from([(
        "azure.workload.identity/client-id".to_string(),
        client_id.to_string(),
    )]);
    if let Some(t) = tenant {
        annotations.insert("azure.workload.identity/tenant-id".into(), t.into());
    }
    ServiceAccount {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        ..ServiceAccount::default()
    }
}

/// Creates, tolerating "already exists" (a re-run on the same control plane).
pub async fn create<K>(api: &Api<K>, object: &K) -> anyhow::Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    match api.create(&PostParams::default(), object).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The seed's agent pod, as its ReplicaSet would post it, in `ns`.
pub fn agent_pod(ns: &str) -> anyhow::Result<Pod> {
    let mut pod = fixtures::seed_pod();
    let meta = pod["metadata"].as_object_mut().context("metadata")?;
    for key in ["managedFields", "ownerReferences", "creationTimestamp"] {
        meta.remove(key);
    }
    meta.insert("namespace".into(), json!(ns));
    meta.insert("generateName".into(), json!("bench-agent-"));
    pod.as_object_mut().context("pod")?.remove("status");
    Ok(serde_json::from_value(pod)?)
}

pub fn injected(pod: &Pod) -> bool {
    pod.spec.as_ref().is_some_and(|s| {
        s.containers
            .iter()
            .any(|c| c.env.iter().flatten().any(|e| e.name == "AZURE_CLIENT_ID"))
    })
}
