//! A second mutating webhook, served by the test process, to put the webhook under test in
//! the company of others: one that runs after it (reinvocation), one before it (changing
//! what it sees).
//!
//! It is served by the project's own TLS server (`wi_webhook::api::tls`) with a certificate
//! from `wi_certs`, on `127.0.0.1:<free port>`, and registered with a
//! MutatingWebhookConfiguration scoped to one test namespace. The API server calls
//! webhooks in the order of their configurations' names, so the name decides whether it
//! runs before or after `wi-webhook`.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::Json;
use axum::extract::State;
use axum::routing::post;
use base64::Engine as _;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::Cluster;

/// Annotation of the pods the harness creates to find out whether the API server calls the
/// extra webhook yet. The mutator never sees them.
pub const PROBE_ANNOTATION: &str = "wi-e2e/probe";

/// What the extra webhook does to a pod: JSON Patch operations (RFC 6902) computed from the
/// pod as the API server sends it (`request.object`). An empty list leaves the pod as is.
/// Async, so it may call the API server before it answers.
pub type Mutator = dyn Fn(Value) -> BoxFuture<Vec<Value>> + Send + Sync;

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

struct Shared {
    mutator: Box<Mutator>,
    /// AdmissionReviews answered, probes included.
    calls: AtomicUsize,
    /// Pods (not probes) the mutator saw, as the API server sent them.
    seen: std::sync::Mutex<Vec<Value>>,
}

/// A running extra webhook and its registration. Dropping it deletes the
/// MutatingWebhookConfiguration (blocking, so it also happens when the test panics) and
/// stops the server.
pub struct ExtraWebhook {
    /// Name of the MutatingWebhookConfiguration.
    pub name: String,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    kubectl: PathBuf,
    kubeconfig: PathBuf,
    removed: bool,
    _certs: tempfile::TempDir,
}

impl ExtraWebhook {
    /// Pods the mutator was given (probes excluded), in the order of the calls.
    pub fn seen(&self) -> Vec<Value> {
        self.shared
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Deletes the configuration now and reports a failure.
    pub async fn remove(mut self, cluster: &Cluster) -> anyhow::Result<()> {
        self.removed = true;
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        Api::<MutatingWebhookConfiguration>::all(cluster.client.clone())
            .delete(&self.name, &Default::default())
            .await
            .with_context(|| format!("deleting MutatingWebhookConfiguration {}", self.name))?;
        Ok(())
    }
}

impl Drop for ExtraWebhook {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if self.removed {
            return;
        }
        // Drop cannot await, and a panicking test's runtime may be gone: blocking kubectl
        // works in every case. The configuration only selects the test's namespace, so a
        // leftover could not disturb other tests, but it would call a dead server.
        let _ = std::process::Command::new(&self.kubectl)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["delete", "mutatingwebhookconfiguration", &self.name])
            .args(["--ignore-not-found", "--request-timeout=10s"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

async fn review(State(shared): State<Arc<Shared>>, Json(body): Json<Value>) -> Json<Value> {
    shared.calls.fetch_add(1, Ordering::SeqCst);
    let request = &body["request"];
    let object = &request["object"];
    let probe = object["metadata"]["annotations"][PROBE_ANNOTATION].is_string();
    let ops = if probe {
        Vec::new()
    } else {
        shared
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(object.clone());
        (shared.mutator)(object.clone()).await
    };
    let mut response = json!({"uid": request["uid"], "allowed": true});
    if !ops.is_empty() {
        let patch = serde_json::to_vec(&ops).unwrap_or_default();
        response["patchType"] = "JSONPatch".into();
        response["patch"] = base64::engine::general_purpose::STANDARD
            .encode(patch)
            .into();
    }
    Json(json!({
        "apiVersion": body["apiVersion"].as_str().unwrap_or("admission.k8s.io/v1"),
        "kind": "AdmissionReview",
        "response": response,
    }))
}

impl Cluster {
    /// Starts an extra mutating webhook on `127.0.0.1:<free port>` and registers it as the
    /// MutatingWebhookConfiguration `config_name`, for pod CREATE in namespace `ns` only,
    /// reinvocationPolicy Never, failurePolicy Fail. Returns once the API server calls it.
    pub async fn extra_webhook(
        &self,
        config_name: &str,
        ns: &str,
        mutator: impl Fn(&Value) -> Vec<Value> + Send + Sync + 'static,
    ) -> anyhow::Result<ExtraWebhook> {
        let mutator = Arc::new(mutator);
        self.extra_webhook_async(config_name, ns, move |pod| {
            let ops = mutator(&pod);
            Box::pin(async move { ops })
        })
        .await
    }

    /// [`Cluster::extra_webhook`] with a mutator that may await (call the API server)
    /// before it answers.
    pub async fn extra_webhook_async(
        &self,
        config_name: &str,
        ns: &str,
        mutator: impl Fn(Value) -> BoxFuture<Vec<Value>> + Send + Sync + 'static,
    ) -> anyhow::Result<ExtraWebhook> {
        // Certificate: a CA of its own and a serving certificate for 127.0.0.1.
        let bundle = wi_certs::generate(&wi_certs::GenerateOptions {
            dns_names: vec!["localhost".into()],
            ip_addresses: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
            ..Default::default()
        })?;
        let dir = tempfile::tempdir()?;
        bundle.write_dir(dir.path())?;
        let pair = wi_certs::load_pair(
            &dir.path().join(wi_certs::TLS_CERT_FILE),
            &dir.path().join(wi_certs::TLS_KEY_FILE),
        )?;
        let slot = wi_webhook::api::tls::CertSlot::new(pair.certified_key);
        let tls = Arc::new(wi_webhook::api::tls::server_config(slot, false)?);

        let shared = Arc::new(Shared {
            mutator: Box::new(mutator),
            calls: AtomicUsize::new(0),
            seen: Default::default(),
        });
        let app = axum::Router::new()
            .route("/mutate", post(review))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let port = listener.local_addr()?.port();
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(wi_webhook::api::tls::serve(
            listener,
            tls,
            app,
            async move {
                let _ = rx.await;
            },
            Duration::from_secs(1),
        ));

        let mut guard = ExtraWebhook {
            name: config_name.to_owned(),
            shared,
            shutdown: Some(tx),
            kubectl: self.kubectl_path(),
            kubeconfig: self.kubeconfig.clone(),
            // Nothing to delete until it is created.
            removed: true,
            _certs: dir,
        };
        let config: MutatingWebhookConfiguration = serde_json::from_value(json!({
            "metadata": {"name": config_name, "labels": {"wi-e2e": "true"}},
            "webhooks": [{
                "name": "extra.wi-e2e.test",
                "admissionReviewVersions": ["v1"],
                "clientConfig": {
                    "url": format!("https://127.0.0.1:{port}/mutate"),
                    "caBundle": bundle.ca_bundle(),
                },
                "rules": [{
                    "apiGroups": [""],
                    "apiVersions": ["v1"],
                    "operations": ["CREATE"],
                    "resources": ["pods"],
                    "scope": "Namespaced",
                }],
                "namespaceSelector": {
                    "matchLabels": {"kubernetes.io/metadata.name": ns},
                },
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "reinvocationPolicy": "Never",
                "timeoutSeconds": 10,
            }],
        }))?;
        Api::<MutatingWebhookConfiguration>::all(self.client.clone())
            .create(&PostParams::default(), &config)
            .await
            .with_context(|| format!("creating MutatingWebhookConfiguration {config_name}"))?;
        guard.removed = false;
        self.wait_until_called(&guard, ns).await?;
        Ok(guard)
    }

    /// The API server learns of a new webhook configuration through a watch: dry-run probe
    /// pods until one of them reaches the extra webhook.
    async fn wait_until_called(&self, hook: &ExtraWebhook, ns: &str) -> anyhow::Result<()> {
        let pods = Api::<Pod>::namespaced(self.client.clone(), ns);
        let probe: Pod = serde_json::from_value(json!({
            "metadata": {"name": "probe", "annotations": {PROBE_ANNOTATION: "true"}},
            "spec": {
                "automountServiceAccountToken": false,
                "containers": [{"name": "probe", "image": "registry.invalid/probe:1"}],
            },
        }))?;
        let params = PostParams {
            dry_run: true,
            ..Default::default()
        };
        let timeout = Duration::from_secs(30);
        let deadline = Instant::now() + timeout;
        let mut last_error = None;
        while hook.shared.calls.load(Ordering::SeqCst) == 0 {
            if Instant::now() >= deadline {
                bail!(
                    "the API server did not call webhook {} within {timeout:?} (last probe error: {last_error:?})",
                    hook.name
                );
            }
            // Fails while the namespace has no `default` ServiceAccount yet; that is fine.
            if let Err(e) = pods.create(&params, &probe).await {
                last_error = Some(e.to_string());
            }
            if hook.shared.calls.load(Ordering::SeqCst) == 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }
}
