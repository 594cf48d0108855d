//! Harness of the end-to-end tests: a client for the local control plane started by
//! `tests/cluster/run.sh up`, throw-away namespaces, `kubectl apply`, and the webhook's
//! addresses.
//!
//! The tests never skip: without a running control plane they fail, so a green run always
//! means the webhook was exercised through a real API server.

pub mod admission_client;
pub mod agentpools;
pub mod extra_webhook;
pub mod h2_client;
pub mod pods;
pub mod pool_namespace;
pub mod private_cluster;

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Name of the webhook configurations `run.sh` registers for the webhook under test.
pub const WEBHOOK_CONFIGURATION: &str = "wi-webhook";

const NOT_RUNNING: &str = "control plane not running: run tests/cluster/run.sh up (see README)";

/// The state directory of `run.sh`: `$WI_CLUSTER_DIR`, else `<workspace>/.cluster`.
pub fn state_dir() -> PathBuf {
    match std::env::var_os("WI_CLUSTER_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cluster"),
    }
}

/// The running control plane.
pub struct Cluster {
    pub client: kube::Client,
    /// Absolute path of the admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// `KEY=VALUE` pairs of `cluster.env`: ports and the kubectl path.
    env: HashMap<String, String>,
}

/// Connects to the control plane of `run.sh up`. Panics when it is not running.
pub async fn cluster() -> Cluster {
    cluster_at(&state_dir()).await
}

/// Connects to the control plane whose state directory is `dir`. Panics when it is not
/// running.
pub async fn cluster_at(dir: &Path) -> Cluster {
    let kubeconfig = dir.join("kubeconfig");
    let env = std::fs::read_to_string(dir.join("cluster.env"))
        .map(|text| parse_env(&text))
        .unwrap_or_else(|e| panic!("{NOT_RUNNING} ({}: {e})", dir.display()));
    let client = connect(&kubeconfig)
        .await
        .unwrap_or_else(|e| panic!("{NOT_RUNNING} ({e:#})"));
    let kubeconfig = kubeconfig.canonicalize().unwrap_or(kubeconfig);
    Cluster {
        client,
        kubeconfig,
        env,
    }
}

async fn connect(kubeconfig: &Path) -> anyhow::Result<kube::Client> {
    let raw = Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(raw, &KubeConfigOptions::default()).await?;
    let client = kube::Client::try_from(config)?;
    // A stale kubeconfig (cluster stopped) must fail here, not in the middle of a test.
    tokio::time::timeout(Duration::from_secs(5), client.apiserver_version())
        .await
        .context("the API server did not answer within 5 s")?
        .context("the API server refused /version")?;
    Ok(client)
}

fn parse_env(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// Addresses of the webhook started by `run.sh up`.
#[derive(Clone, Debug)]
pub struct Webhook {
    /// `https://127.0.0.1:<port>/mutate`, what the MutatingWebhookConfiguration calls.
    pub mutate_url: String,
    /// `127.0.0.1:<port>` of the plain-HTTP port (`/metrics`, `/healthz`, `/readyz`).
    pub metrics_addr: String,
}

impl Webhook {
    /// `http://127.0.0.1:<port><path>` on the plain-HTTP port.
    pub fn metrics_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.metrics_addr)
    }

    /// GET on the plain-HTTP port: `(status, body)`. Enough HTTP/1.0 for Prometheus text;
    /// no client library for one local request.
    pub async fn get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let mut stream = tokio::net::TcpStream::connect(&self.metrics_addr)
            .await
            .with_context(|| format!("connecting to {}", self.metrics_addr))?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.metrics_addr);
        stream.write_all(request.as_bytes()).await?;
        let mut response = String::new();
        tokio::time::timeout(
            Duration::from_secs(10),
            stream.read_to_string(&mut response),
        )
        .await
        .context("no response within 10 s")??;
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line in {head:?}"))?;
        Ok((status, body.to_owned()))
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        match self.get("/metrics").await? {
            (200, body) => Ok(body),
            (status, body) => bail!("/metrics answered {status}: {body}"),
        }
    }
}

impl Cluster {
    fn env(&self, key: &str) -> Option<&str> {
        self.env.get(key).map(String::as_str)
    }

    /// The kubectl built with the control plane (a system one may be missing or too old).
    pub fn kubectl_path(&self) -> PathBuf {
        self.env("KUBECTL")
            .map_or_else(|| "kubectl".into(), PathBuf::from)
    }

    /// `https://127.0.0.1:<port>` of the API server.
    pub fn apiserver_url(&self) -> String {
        format!(
            "https://127.0.0.1:{}",
            self.env("APISERVER_PORT").unwrap_or("0")
        )
    }

    /// The webhook's addresses. Panics if `run.sh up` did not start it.
    pub fn webhook(&self) -> Webhook {
        let port = |key| {
            self.env(key)
                .unwrap_or_else(|| panic!("{key} missing from cluster.env: {NOT_RUNNING}"))
        };
        Webhook {
            mutate_url: format!("https://127.0.0.1:{}/mutate", port("WEBHOOK_PORT")),
            metrics_addr: format!("127.0.0.1:{}", port("WEBHOOK_METRICS_PORT")),
        }
    }

    /// Creates a namespace `<prefix>-<unique suffix>`, deleted when the value is dropped.
    pub async fn namespace(&self, prefix: &str) -> TestNamespace {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        // Unique across test threads (counter), and across test binaries and earlier runs
        // whose namespaces may still be terminating (pid and clock).
        let salt = ((std::process::id() << 12) ^ nanos) & 0xff_ffff;
        let name = format!("{prefix}-{salt:06x}-{n}");
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"wi-e2e": "true"}}
        }))
        .expect("static namespace object");
        Api::<Namespace>::all(self.client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
        TestNamespace {
            name,
            client: self.client.clone(),
            kubectl: self.kubectl_path(),
            kubeconfig: self.kubeconfig.clone(),
            deleted: false,
        }
    }

    /// Runs kubectl against this cluster with `stdin` as its input.
    pub async fn kubectl(&self, args: &[&str], stdin: &str) -> anyhow::Result<KubectlOutput> {
        let mut child = tokio::process::Command::new(self.kubectl_path())
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.kubectl_path().display()))?;
        let mut input = child.stdin.take().expect("stdin is piped");
        input.write_all(stdin.as_bytes()).await?;
        drop(input);
        let out = child.wait_with_output().await?;
        Ok(KubectlOutput {
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// `kubectl apply -n <ns> -f -` of (multi-document) YAML. The error carries kubectl's
    /// stderr, where admission denials and warnings are printed.
    pub async fn apply_yaml(&self, ns: &str, yaml: &str) -> anyhow::Result<KubectlOutput> {
        let out = self.kubectl(&["apply", "-n", ns, "-f", "-"], yaml).await?;
        if !out.success {
            bail!("kubectl apply -n {ns} failed: {}", out.stderr.trim());
        }
        Ok(out)
    }

    /// Waits until a pod matching `label_selector` exists in `ns` and returns it. Pods are
    /// stored, never run (no kubelet), so "exists" is the state to wait for.
    pub async fn wait_for_pod(
        &self,
        ns: &str,
        label_selector: &str,
        timeout: Duration,
    ) -> anyhow::Result<Pod> {
        let pods = Api::<Pod>::namespaced(self.client.clone(), ns);
        let params = ListParams::default().labels(label_selector);
        let deadline = Instant::now() + timeout;
        loop {
            let list = pods.list(&params).await?;
            if let Some(pod) = list.items.into_iter().next() {
                return Ok(pod);
            }
            if Instant::now() >= deadline {
                bail!("no pod matching {label_selector:?} in {ns} after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// What kubectl printed.
#[derive(Debug, Clone)]
pub struct KubectlOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// A namespace that lives as long as the test. Deleted on drop (best effort, without
/// waiting for its contents to go), or explicitly with [`TestNamespace::delete`].
pub struct TestNamespace {
    pub name: String,
    client: kube::Client,
    kubectl: PathBuf,
    kubeconfig: PathBuf,
    deleted: bool,
}

impl TestNamespace {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Deletes the namespace now and reports a failure.
    pub async fn delete(mut self) -> anyhow::Result<()> {
        self.deleted = true;
        Api::<Namespace>::all(self.client.clone())
            .delete(&self.name, &DeleteParams::background())
            .await?;
        Ok(())
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if self.deleted || std::env::var_os("WI_E2E_KEEP_NAMESPACES").is_some() {
            return;
        }
        // Drop cannot await and the test's runtime may be shutting down: a blocking kubectl
        // works in every case.
        let _ = std::process::Command::new(&self.kubectl)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["delete", "namespace", &self.name, "--wait=false"])
            .args(["--ignore-not-found", "--request-timeout=10s"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Polls `check` every 100 ms until it returns `Some`, for at most `timeout`; the error
/// names `what` and the last error `check` returned.
pub async fn poll<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last = None;
    loop {
        match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(e) => last = Some(e),
        }
        if Instant::now() >= deadline {
            match last {
                Some(e) => bail!("{what}: not after {timeout:?}; last error: {e:#}"),
                None => bail!("{what}: not after {timeout:?}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One admission decision of the webhook under test, from its log (one line per decision).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedDecision {
    /// Kind of the object (`Pod`, `Deployment`..).
    pub kind: String,
    /// Name of the object as the webhook saw it (`prefix-*` for a generateName pod).
    pub name: String,
    /// `mutated`, `allowed` or `denied`.
    pub decision: String,
    pub dry_run: bool,
    /// The webhook path that decided (`/mutate`, `/validate`, `/paths`).
    pub endpoint: String,
    pub line: String,
}

impl Cluster {
    /// Names of the webhooks of the webhook under test: the mutating and validating
    /// configurations named `wi-webhook` (their names are how the API server prefixes a
    /// denial).
    pub async fn wi_webhook_names(&self) -> anyhow::Result<Vec<String>> {
        use k8s_openapi::api::admissionregistration::v1::{
            MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
        };
        let mut names = Vec::new();
        let mutating = Api::<MutatingWebhookConfiguration>::all(self.client.clone())
            .get(WEBHOOK_CONFIGURATION)
            .await
            .with_context(|| format!("MutatingWebhookConfiguration {WEBHOOK_CONFIGURATION}"))?;
        names.extend(mutating.webhooks.into_iter().flatten().map(|w| w.name));
        let validating = Api::<ValidatingWebhookConfiguration>::all(self.client.clone())
            .get_opt(WEBHOOK_CONFIGURATION)
            .await?;
        names.extend(
            validating
                .and_then(|v| v.webhooks)
                .into_iter()
                .flatten()
                .map(|w| w.name),
        );
        Ok(names)
    }

    /// The decisions the webhook logged for pods of namespace `ns`, oldest first. Each test
    /// has its own namespace, so these are the test's alone. Reads `wi-webhook.log` of the
    /// state directory; plain or JSON log lines.
    pub fn webhook_decisions(&self, ns: &str) -> anyhow::Result<Vec<LoggedDecision>> {
        let path = state_dir().join("wi-webhook.log");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        Ok(text
            .lines()
            .filter_map(|line| parse_decision(line, ns))
            .collect())
    }
}

fn parse_decision(line: &str, ns: &str) -> Option<LoggedDecision> {
    // `key=value` tokens of a plain line, or the `fields` of a JSON line.
    let fields: HashMap<String, String> = if line.trim_start().starts_with('{') {
        let value: serde_json::Value = serde_json::from_str(line).ok()?;
        value["fields"]
            .as_object()?
            .iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => (k.clone(), s.clone()),
                other => (k.clone(), other.to_string()),
            })
            .collect()
    } else {
        line.split_whitespace()
            .filter_map(|token| token.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
            .collect()
    };
    let field = |key: &str| fields.get(key).cloned();
    if field("namespace")? != ns {
        return None;
    }
    Some(LoggedDecision {
        kind: field("kind").unwrap_or_default(),
        name: field("name").unwrap_or_default(),
        decision: field("decision")?,
        dry_run: field("dry_run").is_some_and(|v| v == "true"),
        endpoint: field("endpoint").unwrap_or_default(),
        line: line.to_owned(),
    })
}
