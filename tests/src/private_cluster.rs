//! A control plane of the test's own, for the fault tests that stop the API server or the
//! webhook: `run.sh up` in a temporary state directory (its own ports), then the webhook run
//! by the test as its child process, so the test can signal it, kill it, restart it with
//! other flags and read its exit status. Everything is stopped when the value drops, a
//! panic included; the state directory (logs) is kept after a failure.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

use crate::{Cluster, Webhook, admission_client, cluster_at};

/// `run.sh up` of several tests at once would race for the same free ports.
static STARTING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("the repository")
}

fn run_sh() -> PathBuf {
    repo().join("tests/cluster/run.sh")
}

pub struct PrivateCluster {
    pub cluster: Cluster,
    /// The state directory (`WI_CLUSTER_DIR` of `run.sh`).
    pub dir: PathBuf,
    /// Killed on drop (before the control plane stops).
    webhook: Option<Child>,
    /// Flags added to the webhook's (those of `run.sh`), for every start.
    webhook_flags: Vec<String>,
    _state: State,
}

/// The control plane's state directory: `run.sh down` when dropped, a panic included (also
/// one before the [`PrivateCluster`] exists); kept for the post-mortem after a panic.
struct State {
    dir: PathBuf,
    temp: Option<tempfile::TempDir>,
}

impl Drop for State {
    fn drop(&mut self) {
        let _ = std::process::Command::new(run_sh())
            .arg("down")
            .env("WI_CLUSTER_DIR", &self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if std::thread::panicking()
            && let Some(temp) = self.temp.take()
        {
            eprintln!(
                "private control plane kept for the post-mortem: {}",
                temp.keep().display()
            );
        }
    }
}

impl PrivateCluster {
    /// Starts etcd, kube-apiserver, kube-controller-manager and the webhook configurations
    /// with `run.sh up`, then replaces `run.sh`'s webhook by the test's own, started with
    /// `webhook_flags` added, and waits until it is ready. Panics on failure.
    pub async fn start(webhook_flags: &[&str]) -> PrivateCluster {
        let temp = tempfile::Builder::new()
            .prefix("wi-faults-")
            .tempdir()
            .expect("a temporary directory");
        // run.sh's log beside the state directory, which `up` clears of logs.
        let dir = temp.path().join("state");
        let state = State {
            dir: dir.clone(),
            temp: Some(temp),
        };
        {
            let _one_at_a_time = STARTING.lock().await;
            if let Err(e) = run(&dir, &["up"], Duration::from_secs(300)).await {
                panic!("private control plane: {e:#}");
            }
        }
        let mut private = PrivateCluster {
            cluster: cluster_at(&dir).await,
            dir,
            webhook: None,
            webhook_flags: webhook_flags.iter().map(|s| s.to_string()).collect(),
            _state: state,
        };
        private
            .run(&["stop", "wi-webhook"])
            .await
            .expect("stopping run.sh's webhook");
        private.start_webhook().await;
        private
    }

    /// `run.sh <args>` on this cluster.
    pub async fn run(&self, args: &[&str]) -> anyhow::Result<()> {
        run(&self.dir, args, Duration::from_secs(120)).await
    }

    /// The webhook's addresses (those the webhook configurations call).
    pub fn webhook(&self) -> Webhook {
        self.cluster.webhook()
    }

    /// `127.0.0.1:<port>` of the webhook's TLS listener.
    pub fn webhook_addr(&self) -> String {
        self.webhook()
            .mutate_url
            .trim_start_matches("https://")
            .trim_end_matches("/mutate")
            .to_string()
    }

    /// A TLS client configuration trusting the webhook's CA.
    pub fn webhook_tls(&self) -> Arc<rustls::ClientConfig> {
        admission_client::client_config(&self.dir.join("pki/webhook/ca.crt"))
            .expect("the webhook's CA")
    }

    /// The webhook's log: every start of this cluster's webhook, appended.
    pub fn webhook_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("wi-webhook.log")).unwrap_or_default()
    }

    /// Starts the webhook as `run.sh` does (same listeners, certificate, tenant and
    /// kubeconfig), plus the cluster's flags, and waits until `/readyz` answers 200.
    pub async fn start_webhook(&mut self) {
        assert!(self.webhook.is_none(), "the webhook is already running");
        let webhook = self.webhook();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("wi-webhook.log"))
            .expect("the webhook's log");
        let pki = self.dir.join("pki/webhook");
        let child = Command::new(repo().join("target/debug/wi-webhook"))
            .arg("serve")
            .args(["--listen", &self.webhook_addr()])
            .args(["--metrics-listen", &webhook.metrics_addr])
            .arg("--tls-cert-file")
            .arg(pki.join("tls.crt"))
            .arg("--tls-key-file")
            .arg(pki.join("tls.key"))
            .args(["--tenant-id", crate::pods::WEBHOOK_TENANT_ID])
            .arg("--kubeconfig")
            .arg(&self.cluster.kubeconfig)
            .args(&self.webhook_flags)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the log"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("starting wi-webhook serve");
        self.webhook = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.webhook_exited() {
                panic!(
                    "the webhook exited with {status} before it was ready:\n{}",
                    self.webhook_log()
                );
            }
            if matches!(webhook.get("/readyz").await, Ok((200, _))) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the webhook not ready after 60 s:\n{}",
                self.webhook_log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The running webhook's process id.
    pub fn webhook_pid(&self) -> u32 {
        self.webhook
            .as_ref()
            .and_then(Child::id)
            .expect("the webhook is running")
    }

    /// The webhook's exit status if it has exited (then it is no longer this cluster's).
    pub fn webhook_exited(&mut self) -> Option<ExitStatus> {
        let status = self
            .webhook
            .as_mut()?
            .try_wait()
            .expect("waiting on the webhook")?;
        self.webhook = None;
        Some(status)
    }

    /// Sends `signal` (`TERM`, `KILL`..) to the webhook.
    pub fn signal_webhook(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.webhook_pid().to_string())
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{signal} of the webhook failed");
    }

    /// Waits up to `timeout` for the webhook to exit; its status.
    pub async fn wait_webhook(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let child = self.webhook.as_mut().context("no webhook running")?;
        let status = tokio::time::timeout(timeout, child.wait())
            .await
            .with_context(|| format!("the webhook did not exit within {timeout:?}"))??;
        self.webhook = None;
        Ok(status)
    }
}

/// `run.sh <args>` with `WI_CLUSTER_DIR=dir`; its output goes to `run.sh.log` beside `dir`.
async fn run(dir: &Path, args: &[&str], timeout: Duration) -> anyhow::Result<()> {
    let log_path = dir.with_file_name("run.sh.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)?;
    let mut child = Command::new(run_sh())
        .args(args)
        .env("WI_CLUSTER_DIR", dir)
        .env_remove("WI_SKIP_WEBHOOK")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("starting run.sh")?;
    let status = tokio::time::timeout(timeout, child.wait())
        .await
        .with_context(|| format!("run.sh {args:?} not done within {timeout:?}"))??;
    if !status.success() {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!("run.sh {args:?} failed ({status}):\n{}", tail.join("\n"));
    }
    Ok(())
}
