//! Certificates through the real control plane: self-managed mode from an
//! empty caBundle to working admissions, two replicas converging on one Secret, rotation of
//! the serving certificate and of the CA while pods are created without pause, and file
//! mode reloading a Secret volume's `..data` symlink swap while requests flow.
//!
//! Each test starts its own `wi-webhook serve` processes (the binary `run.sh up` builds) on
//! free ports of 127.0.0.1, in its own namespace, registered by webhook configurations of its
//! own, scoped to that namespace and to a label of the test. The namespace is labelled
//! `wi-webhook.dev/ignore`, so the webhook `run.sh` started leaves its pods alone: a mutated
//! pod was mutated by the process under test.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, ServiceAccount};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use wi_e2e::pods::{Identity, assert_mutated, labelled_pod_json, service_account};
use wi_e2e::{Cluster, TestNamespace, Webhook, cluster, poll, state_dir};

/// The tenant of the processes these tests start: not `run.sh`'s, so a pod shows which
/// webhook mutated it.
const TENANT: &str = "22222222-2222-2222-2222-222222222222";
const CLIENT_ID: &str = "33333333-3333-3333-3333-333333333333";
const SECRET: &str = "wi-webhook-tls";
/// Label of the pods of one test; the webhook configurations select on it.
const TEST_LABEL: &str = "wi-e2e/certs";

fn binary() -> PathBuf {
    std::env::var_os("WI_WEBHOOK_BIN").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/wi-webhook"),
        PathBuf::from,
    )
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("a free port on 127.0.0.1")
        .port()
}

/// A `wi-webhook serve` process, killed when dropped (the test failing included); its log
/// is kept in the cluster's state directory and printed when the test fails.
struct Process {
    name: String,
    child: Child,
    port: u16,
    ops: Webhook,
    log: PathBuf,
}

impl Process {
    fn start(name: &str, cluster: &Cluster, extra: &[&str]) -> Process {
        Self::start_as(name, &cluster.kubeconfig, extra)
    }

    /// [`Process::start`] with the identity of another kubeconfig.
    fn start_as(name: &str, kubeconfig: &Path, extra: &[&str]) -> Process {
        let port = free_port();
        let metrics = free_port();
        let log = state_dir().join(format!("certs-{name}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let child = Command::new(binary())
            .arg("serve")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--metrics-listen", &format!("127.0.0.1:{metrics}")])
            .args(["--tenant-id", TENANT])
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(extra)
            .env("NO_COLOR", "1")
            .env_remove("POD_NAMESPACE")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "starting {} (built by tests/cluster/run.sh up): {e}",
                    binary().display()
                )
            });
        Process {
            name: name.to_owned(),
            child,
            port,
            ops: Webhook {
                mutate_url: format!("https://127.0.0.1:{port}/mutate"),
                metrics_addr: format!("127.0.0.1:{metrics}"),
            },
            log,
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!("{} exited with {status}:\n{}", self.name, self.log_text());
            }
            if let Ok((200, _)) = self.ops.get("/readyz").await {
                return Ok(started.elapsed());
            }
            if started.elapsed() > timeout {
                let why = self
                    .ops
                    .get("/readyz")
                    .await
                    .map(|(_, b)| b)
                    .unwrap_or_default();
                bail!(
                    "{} not ready after {timeout:?} ({why}):\n{}",
                    self.name,
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The `wi_webhook_serving_cert_expiry_seconds` gauge.
    async fn expiry_metric(&self) -> anyhow::Result<i64> {
        let text = self.ops.metrics().await?;
        text.lines()
            .find_map(|l| l.strip_prefix("wi_webhook_serving_cert_expiry_seconds "))
            .context("no wi_webhook_serving_cert_expiry_seconds in /metrics")?
            .trim()
            .parse()
            .context("gauge value")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let text = self.log_text();
            let tail: Vec<&str> = text.lines().rev().take(60).collect();
            eprintln!(
                "---- last lines of {} ({}) ----",
                self.name,
                self.log.display()
            );
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// The test's webhook configurations (Mutating `/mutate` on one process, and optionally
/// Validating `/validate` on another), created with an empty caBundle, deleted on drop.
struct Configurations {
    name: String,
    kubectl: PathBuf,
    kubeconfig: PathBuf,
}

impl Drop for Configurations {
    fn drop(&mut self) {
        for kind in [
            "mutatingwebhookconfiguration",
            "validatingwebhookconfiguration",
        ] {
            let _ = Command::new(&self.kubectl)
                .arg("--kubeconfig")
                .arg(&self.kubeconfig)
                .args(["delete", kind, &self.name])
                .args(["--ignore-not-found", "--request-timeout=10s"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn webhook_json(name: &str, url: String, ns: &str, ca_bundle: &str) -> Value {
    json!({
        "name": name,
        "admissionReviewVersions": ["v1"],
        "clientConfig": {"url": url, "caBundle": ca_bundle},
        "rules": [{
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "operations": ["CREATE"],
            "resources": ["pods"],
            "scope": "Namespaced",
        }],
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
        "objectSelector": {"matchLabels": {TEST_LABEL: ns}},
        "failurePolicy": "Fail",
        "sideEffects": "None",
        "timeoutSeconds": 10,
    })
}

async fn configurations(
    cluster: &Cluster,
    ns: &str,
    mutate_port: u16,
    validate_port: Option<u16>,
    ca_bundle: &str,
) -> anyhow::Result<Configurations> {
    let name = format!("wi-e2e-{ns}");
    let guard = Configurations {
        name: name.clone(),
        kubectl: cluster.kubectl_path(),
        kubeconfig: cluster.kubeconfig.clone(),
    };
    let mut mutating = webhook_json(
        "pods.certs.wi-e2e.test",
        format!("https://127.0.0.1:{mutate_port}/mutate"),
        ns,
        ca_bundle,
    );
    mutating["reinvocationPolicy"] = "Never".into();
    let mutating: MutatingWebhookConfiguration = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"wi-e2e": "true"}},
        "webhooks": [mutating],
    }))?;
    Api::<MutatingWebhookConfiguration>::all(cluster.client.clone())
        .create(&PostParams::default(), &mutating)
        .await
        .with_context(|| format!("creating MutatingWebhookConfiguration {name}"))?;
    if let Some(port) = validate_port {
        let validating: ValidatingWebhookConfiguration = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"wi-e2e": "true"}},
            "webhooks": [webhook_json(
                "pods.certs.wi-e2e.test",
                format!("https://127.0.0.1:{port}/validate"),
                ns,
                ca_bundle,
            )],
        }))?;
        Api::<ValidatingWebhookConfiguration>::all(cluster.client.clone())
            .create(&PostParams::default(), &validating)
            .await
            .with_context(|| format!("creating ValidatingWebhookConfiguration {name}"))?;
    }
    Ok(guard)
}

/// A namespace the webhook of `run.sh` ignores, with the ServiceAccount `agent`.
async fn namespace(cluster: &Cluster, prefix: &str) -> TestNamespace {
    let ns = cluster.namespace(prefix).await;
    Api::<Namespace>::all(cluster.client.clone())
        .patch(
            &ns.name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"wi-webhook.dev/ignore": "true"}}})),
        )
        .await
        .expect("labelling the namespace");
    Api::<ServiceAccount>::namespaced(cluster.client.clone(), &ns.name)
        .create(
            &PostParams::default(),
            &service_account("agent", CLIENT_ID, None),
        )
        .await
        .expect("creating the ServiceAccount");
    ns
}

fn pod(ns: &str, generate_name: &str) -> Pod {
    let mut pod = labelled_pod_json("unused", "agent", &[]);
    let meta = pod["metadata"].as_object_mut().expect("metadata");
    meta.remove("name");
    meta.insert("generateName".into(), generate_name.into());
    meta["labels"][TEST_LABEL] = ns.into();
    serde_json::from_value(pod).expect("a Pod")
}

fn identity() -> Identity<'static> {
    Identity {
        client_id: Some(CLIENT_ID),
        tenant_id: TENANT,
    }
}

/// The caBundle of every webhook of the test's configurations (PEM text).
async fn ca_bundles(cluster: &Cluster, name: &str) -> anyhow::Result<Vec<String>> {
    let text = |b: Option<k8s_openapi::ByteString>| {
        String::from_utf8_lossy(&b.map(|b| b.0).unwrap_or_default()).into_owned()
    };
    let mut out = Vec::new();
    let m = Api::<MutatingWebhookConfiguration>::all(cluster.client.clone())
        .get(name)
        .await?;
    out.extend(
        m.webhooks
            .into_iter()
            .flatten()
            .map(|w| text(w.client_config.ca_bundle)),
    );
    if let Some(v) = Api::<ValidatingWebhookConfiguration>::all(cluster.client.clone())
        .get_opt(name)
        .await?
    {
        out.extend(
            v.webhooks
                .into_iter()
                .flatten()
                .map(|w| text(w.client_config.ca_bundle)),
        );
    }
    Ok(out)
}

fn secret_key(secret: &Secret, key: &str) -> Vec<u8> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.clone())
        .unwrap_or_default()
}

fn serial_of_pem(pem: &[u8]) -> String {
    CertificateDer::from_pem_slice(pem)
        .map(|der| wi_certs::serial_hex(&der))
        .unwrap_or_default()
}

fn ca_serials(pem: &[u8]) -> Vec<String> {
    CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .map(|der| wi_certs::serial_hex(&der))
        .collect()
}

/// Connects to `127.0.0.1:port` trusting only the CAs of `ca_pem`, as the API server does,
/// and returns the serial of the certificate served. Fails when it is not trusted.
async fn served_serial(port: u16, ca_pem: &[u8]) -> anyhow::Result<String> {
    let mut roots = rustls::RootCertStore::empty();
    for der in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(der?)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await?;
    let name = ServerName::IpAddress(Ipv4Addr::LOCALHOST.into());
    let tls = tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp))
        .await
        .context("TLS handshake timed out")??;
    let (_, conn) = tls.get_ref();
    let leaf = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .context("no certificate served")?;
    Ok(wi_certs::serial_hex(leaf))
}

/// Creates pods one after the other until `stop`, counting successes and keeping failures.
#[derive(Default)]
struct Load {
    created: AtomicUsize,
    failures: Mutex<Vec<String>>,
}

fn spawn_load(
    cluster: &Cluster,
    ns: &str,
    workers: usize,
    stop: Arc<AtomicBool>,
) -> (Arc<Load>, Vec<tokio::task::JoinHandle<()>>) {
    let load = Arc::new(Load::default());
    let handles = (0..workers)
        .map(|w| {
            let pods = Api::<Pod>::namespaced(cluster.client.clone(), ns);
            let pod = pod(ns, &format!("load-{w}-"));
            let (load, stop) = (load.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    // About ten pods a second per worker: continuous, without filling etcd
                    // with pods that other tests' namespace deletions wait for.
                    let pace = tokio::time::sleep(Duration::from_millis(100));
                    match pods.create(&PostParams::default(), &pod).await {
                        Ok(_) => {
                            load.created.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => load
                            .failures
                            .lock()
                            .unwrap()
                            .push(format!("{:?}: {e}", Instant::now())),
                    }
                    pace.await;
                }
            })
        })
        .collect();
    (load, handles)
}

/// Creates one pod, retrying for a few seconds: the API server learns of a webhook
/// configuration's change (a new caBundle) through a watch, a moment after the write.
async fn first_pod(cluster: &Cluster, ns: &str, generate_name: &str) -> Pod {
    let pods = Api::<Pod>::namespaced(cluster.client.clone(), ns);
    poll("a pod admitted", Duration::from_secs(15), || {
        let pods = pods.clone();
        let pod = pod(ns, generate_name);
        async move { Ok(Some(pods.create(&PostParams::default(), &pod).await?)) }
    })
    .await
    .unwrap()
}

async fn get_secret(cluster: &Cluster, ns: &str) -> anyhow::Result<Secret> {
    Api::<Secret>::namespaced(cluster.client.clone(), ns)
        .get(SECRET)
        .await
        .with_context(|| format!("Secret {ns}/{SECRET}"))
}

fn self_managed_args<'a>(ns: &'a str, config: &'a str) -> Vec<&'a str> {
    vec![
        "--self-managed-certs",
        "--cert-namespace",
        ns,
        "--webhook-config-name",
        config,
        "--cert-extra-ip",
        "127.0.0.1",
        "--cert-reload-interval",
        "1s",
    ]
}

#[tokio::test]
async fn self_managed_fresh_install_from_empty_ca_bundle_admits_with_no_manual_step() {
    let cluster = cluster().await;
    let ns = namespace(&cluster, "certs-fresh").await;
    let t0 = Instant::now();
    let config_name = format!("wi-e2e-{}", ns.name);
    let mut webhook = Process::start(
        &format!("{}-a", ns.name),
        &cluster,
        &self_managed_args(&ns.name, &config_name),
    );
    // The configurations, with an empty caBundle, as the manifests install them.
    let _configs = configurations(&cluster, &ns.name, webhook.port, Some(webhook.port), "")
        .await
        .unwrap();
    assert!(
        ca_bundles(&cluster, &config_name)
            .await
            .unwrap()
            .iter()
            .all(String::is_empty)
    );
    let ready_after = webhook.wait_ready(Duration::from_secs(60)).await.unwrap();

    // The Secret: CA, key, serving certificate; the caBundle of both configurations holds
    // its CA.
    let secret = get_secret(&cluster, &ns.name).await.unwrap();
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    let keys: BTreeSet<&str> = secret
        .data
        .as_ref()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from(["ca.crt", "ca.key", "tls.crt", "tls.key"])
    );
    let ca = secret_key(&secret, "ca.crt");
    let bundles = ca_bundles(&cluster, &config_name).await.unwrap();
    assert_eq!(bundles.len(), 2, "mutating and validating");
    for bundle in &bundles {
        assert_eq!(bundle.as_bytes(), ca.as_slice());
    }
    // The certificate served is the Secret's, trusted by the caBundle.
    let served = served_serial(webhook.port, &ca).await.unwrap();
    assert_eq!(served, serial_of_pem(&secret_key(&secret, "tls.crt")));
    let not_after = CertificateDer::from_pem_slice(&secret_key(&secret, "tls.crt"))
        .map(|der| wi_certs::expiry::Validity::of_der(&der).unwrap().not_after)
        .unwrap();
    assert_eq!(
        webhook.expiry_metric().await.unwrap(),
        not_after.unix_timestamp()
    );

    // Admission works: the API server trusts the webhook it could not reach a moment ago.
    let pods = Api::<Pod>::namespaced(cluster.client.clone(), &ns.name);
    let mut attempts = 0;
    let created = poll("a pod admitted", Duration::from_secs(15), || {
        attempts += 1;
        let pods = pods.clone();
        let pod = pod(&ns.name, "fresh-");
        async move { Ok(Some(pods.create(&PostParams::default(), &pod).await?)) }
    })
    .await
    .unwrap();
    assert_mutated(&created, identity(), 3600);
    eprintln!(
        "fresh install: ready {ready_after:?} after start, first pod admitted after {attempts} attempt(s), {:?} in all",
        t0.elapsed()
    );
    let log = webhook.log_text();
    assert!(
        log.contains("created the self-managed CA and serving certificate"),
        "{log}"
    );
}

#[tokio::test]
async fn two_replicas_started_at_once_end_with_one_secret_and_serve_the_same_certificate() {
    let cluster = cluster().await;
    let ns = namespace(&cluster, "certs-two").await;
    let config_name = format!("wi-e2e-{}", ns.name);
    let args = self_managed_args(&ns.name, &config_name);
    let mut a = Process::start(&format!("{}-a", ns.name), &cluster, &args);
    let mut b = Process::start(&format!("{}-b", ns.name), &cluster, &args);
    let _configs = configurations(&cluster, &ns.name, a.port, Some(b.port), "")
        .await
        .unwrap();
    let (ra, rb) = tokio::join!(
        a.wait_ready(Duration::from_secs(60)),
        b.wait_ready(Duration::from_secs(60))
    );
    eprintln!(
        "two replicas: ready after {:?} and {:?}",
        ra.unwrap(),
        rb.unwrap()
    );

    let secrets = Api::<Secret>::namespaced(cluster.client.clone(), &ns.name)
        .list(&ListParams::default().labels("app.kubernetes.io/managed-by=wi-webhook"))
        .await
        .unwrap();
    assert_eq!(secrets.items.len(), 1, "{:?}", secrets.items);
    let secret = &secrets.items[0];
    let ca = secret_key(secret, "ca.crt");
    assert_eq!(ca_serials(&ca).len(), 1, "one CA");
    let leaf = serial_of_pem(&secret_key(secret, "tls.crt"));
    assert_eq!(served_serial(a.port, &ca).await.unwrap(), leaf);
    assert_eq!(served_serial(b.port, &ca).await.unwrap(), leaf);
    for bundle in ca_bundles(&cluster, &config_name).await.unwrap() {
        assert_eq!(bundle.as_bytes(), ca.as_slice());
    }
    // Exactly one of them created it (the other found it, or lost the create and read it).
    let created = [&a, &b]
        .iter()
        .filter(|p| {
            p.log_text()
                .contains("created the self-managed CA and serving certificate")
        })
        .count();
    assert_eq!(created, 1);

    // Both answer: the mutating configuration calls a, the validating one b.
    let pod = first_pod(&cluster, &ns.name, "two-").await;
    assert_mutated(&pod, identity(), 3600);
}

/// What the observer saw of the Secret and of the replicas during the rotation test.
#[derive(Default, Debug)]
struct Seen {
    leaves: BTreeSet<String>,
    cas: BTreeSet<String>,
    two_ca_states: usize,
    served: BTreeMap<u16, BTreeSet<String>>,
    /// Served certificates not trusted by the Secret's ca.crt read just before.
    untrusted: Vec<String>,
}

#[tokio::test]
async fn forced_rotation_of_certificate_and_ca_under_continuous_pod_creation_loses_no_admission() {
    let cluster = cluster().await;
    let ns = namespace(&cluster, "certs-rotate").await;
    let config_name = format!("wi-e2e-{}", ns.name);
    // Serving certificate renewed every ~20 s; CA renewed at ~38 s of its 60 s, with 5 s
    // overlaps: add (t+38), switch (t+43), drop (t+48).
    let mut args = self_managed_args(&ns.name, &config_name);
    args.extend(["--cert-lifetime", "30s", "--ca-lifetime", "60s"]);
    let mut a = Process::start(&format!("{}-a", ns.name), &cluster, &args);
    let mut b = Process::start(&format!("{}-b", ns.name), &cluster, &args);
    let _configs = configurations(&cluster, &ns.name, a.port, Some(b.port), "")
        .await
        .unwrap();
    let (ra, rb) = tokio::join!(
        a.wait_ready(Duration::from_secs(60)),
        b.wait_ready(Duration::from_secs(60))
    );
    ra.unwrap();
    rb.unwrap();
    assert_mutated(
        &first_pod(&cluster, &ns.name, "first-").await,
        identity(),
        3600,
    );

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let observer = {
        let (stop, seen) = (stop.clone(), seen.clone());
        let secrets = Api::<Secret>::namespaced(cluster.client.clone(), &ns.name);
        let ports = [a.port, b.port];
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(secret) = secrets.get(SECRET).await {
                    let ca = secret_key(&secret, "ca.crt");
                    let cas = ca_serials(&ca);
                    {
                        let mut g = seen.lock().unwrap();
                        g.leaves
                            .insert(serial_of_pem(&secret_key(&secret, "tls.crt")));
                        if cas.len() > 1 {
                            g.two_ca_states += 1;
                        }
                        g.cas.extend(cas);
                    }
                    for port in ports {
                        match served_serial(port, &ca).await {
                            Ok(serial) => {
                                seen.lock()
                                    .unwrap()
                                    .served
                                    .entry(port)
                                    .or_default()
                                    .insert(serial);
                            }
                            Err(e) => seen
                                .lock()
                                .unwrap()
                                .untrusted
                                .push(format!("{port}: {e:#}")),
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    let started = Instant::now();
    let (load, workers) = spawn_load(&cluster, &ns.name, 2, stop.clone());
    tokio::time::sleep(Duration::from_secs(80)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    observer.await.unwrap();
    let elapsed = started.elapsed();

    let created = load.created.load(Ordering::Relaxed);
    let failures = load.failures.lock().unwrap().clone();
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    eprintln!(
        "rotation: {created} pods in {elapsed:?} ({:.1}/s), {} failed; {} serving certificates, \
         {} CAs, {} observations with two CAs; served: {:?}",
        created as f64 / elapsed.as_secs_f64(),
        failures.len(),
        seen.leaves.len(),
        seen.cas.len(),
        seen.two_ca_states,
        seen.served
            .iter()
            .map(|(p, s)| (p, s.len()))
            .collect::<Vec<_>>()
    );
    assert!(failures.is_empty(), "failed creates: {failures:#?}");
    assert!(created > 500, "only {created} pods created");
    assert!(
        seen.untrusted.is_empty(),
        "a replica served a certificate its Secret's ca.crt does not trust: {:#?}",
        seen.untrusted
    );
    assert!(seen.leaves.len() >= 4, "{seen:?}");
    assert!(seen.cas.len() >= 2, "no CA rollover: {seen:?}");
    assert!(seen.two_ca_states > 0, "{seen:?}");
    for port in [a.port, b.port] {
        assert!(
            seen.served.get(&port).map_or(0, BTreeSet::len) >= 3,
            "replica on {port} did not swap certificates: {seen:?}"
        );
    }
    // The CA rollover finished: one CA again, in the Secret and in every caBundle.
    let secret = get_secret(&cluster, &ns.name).await.unwrap();
    let ca = secret_key(&secret, "ca.crt");
    let bundles = ca_bundles(&cluster, &config_name).await.unwrap();
    for bundle in &bundles {
        assert_eq!(
            ca_serials(bundle.as_bytes()),
            ca_serials(&ca),
            "caBundle and Secret disagree"
        );
    }
    let log = a.log_text() + &b.log_text();
    for step in [
        "added CA",
        "serving certificate re-issued by it",
        "dropped the older CA",
    ] {
        assert!(log.contains(step), "no {step:?} in the logs");
    }
}

/// A Secret volume as the kubelet writes it: `..<timestamp>/` directories, the `..data`
/// symlink to the current one, and `tls.crt` / `tls.key` symlinks through `..data`.
struct SecretVolume {
    dir: PathBuf,
    n: u32,
}

impl SecretVolume {
    fn new(dir: PathBuf, cert: &str, key: &str) -> Self {
        let mut volume = Self { dir, n: 0 };
        volume.publish(cert, key);
        for name in ["tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(format!("..data/{name}"), volume.dir.join(name)).unwrap();
        }
        volume
    }

    /// Writes a new timestamped directory and swaps `..data` onto it atomically
    /// (`ln -s` to a temporary name, then `rename`).
    fn publish(&mut self, cert: &str, key: &str) {
        self.n += 1;
        let ts = format!("..2025_06_01_12_00_{:02}.{}", self.n, 1000 + self.n);
        let dir = self.dir.join(&ts);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("tls.crt"), cert).unwrap();
        std::fs::write(dir.join("tls.key"), key).unwrap();
        let tmp = self.dir.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&ts, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
    }
}

#[tokio::test]
async fn file_mode_reloads_a_secret_volume_symlink_swap_while_requests_flow() {
    let cluster = cluster().await;
    let ns = namespace(&cluster, "certs-files").await;
    let now = wi_certs::default_not_before();
    let ca = wi_certs::Ca::generate(now, 30).unwrap();
    let leaf = || {
        ca.issue_serving(
            &["localhost".into()],
            &[Ipv4Addr::LOCALHOST.into()],
            now,
            10,
        )
        .unwrap()
    };
    let (one, two, three) = (leaf(), leaf(), leaf());
    let serial = |pem: &wi_certs::Pem| serial_of_pem(pem.cert.as_bytes());
    let dir = tempfile::tempdir().unwrap();
    let mut volume = SecretVolume::new(dir.path().to_owned(), &one.cert, &one.key);
    let cert_file = dir.path().join("tls.crt");
    let key_file = dir.path().join("tls.key");

    let mut webhook = Process::start(
        &format!("{}-files", ns.name),
        &cluster,
        &[
            "--tls-cert-file",
            cert_file.to_str().unwrap(),
            "--tls-key-file",
            key_file.to_str().unwrap(),
            "--cert-reload-interval",
            "200ms",
        ],
    );
    let ca_pem = ca.pem().cert.as_bytes().to_vec();
    let _configs = configurations(
        &cluster,
        &ns.name,
        webhook.port,
        None,
        &wi_certs::ca_bundle(&ca.pem().cert),
    )
    .await
    .unwrap();
    webhook.wait_ready(Duration::from_secs(60)).await.unwrap();
    assert_eq!(
        served_serial(webhook.port, &ca_pem).await.unwrap(),
        serial(&one)
    );
    // The API server calls it (its configuration is new): wait for a first admission.
    first_pod(&cluster, &ns.name, "first-").await;

    let stop = Arc::new(AtomicBool::new(false));
    let (load, workers) = spawn_load(&cluster, &ns.name, 2, stop.clone());
    tokio::time::sleep(Duration::from_secs(3)).await;

    // 1. The kubelet's atomic swap: picked up, new handshakes get the new certificate.
    let swapped = Instant::now();
    volume.publish(&two.cert, &two.key);
    let port = webhook.port;
    let reload =
        poll(
            "the new certificate served",
            Duration::from_secs(10),
            || {
                let ca_pem = ca_pem.clone();
                let want = serial(&two);
                async move {
                    Ok((served_serial(port, &ca_pem).await? == want).then(|| swapped.elapsed()))
                }
            },
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;

    // 2. A pair that does not match (a writer half-way: the new certificate, the old key):
    //    the previous one keeps serving.
    volume.publish(&three.cert, &two.key);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(served_serial(port, &ca_pem).await.unwrap(), serial(&two));

    // 3. Completed: taken.
    volume.publish(&three.cert, &three.key);
    poll(
        "the third certificate served",
        Duration::from_secs(10),
        || {
            let ca_pem = ca_pem.clone();
            let want = serial(&three);
            async move { Ok((served_serial(port, &ca_pem).await? == want).then_some(())) }
        },
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }

    let created = load.created.load(Ordering::Relaxed);
    let failures = load.failures.lock().unwrap().clone();
    eprintln!(
        "file mode: reload seen {reload:?} after the swap; {created} pods created during the swaps, {} failed",
        failures.len()
    );
    assert!(failures.is_empty(), "failed creates: {failures:#?}");
    assert!(created > 20, "only {created} pods created");
    let not_after = CertificateDer::from_pem_slice(three.cert.as_bytes())
        .map(|der| wi_certs::expiry::Validity::of_der(&der).unwrap().not_after)
        .unwrap();
    assert_eq!(
        webhook.expiry_metric().await.unwrap(),
        not_after.unix_timestamp()
    );
    let log = webhook.log_text();
    assert_eq!(
        log.matches("serving certificate reloaded from files")
            .count(),
        2,
        "{log}"
    );
    assert!(
        log.contains("private key does not match"),
        "the bad pair was not reported: {log}"
    );
}

#[tokio::test]
async fn self_managed_refuses_to_start_on_a_secret_whose_key_does_not_match() {
    let cluster = cluster().await;
    let ns = namespace(&cluster, "certs-bad").await;
    let settings = wi_certs::selfmanaged::Settings {
        namespace: ns.name.clone(),
        secret_name: SECRET.into(),
        webhook_config_name: "unused".into(),
        dns_names: vec!["localhost".into()],
        ip_addresses: vec![],
        cert_lifetime: Duration::from_secs(3600),
        ca_lifetime: Duration::from_secs(86_400),
        interval: Duration::from_secs(1),
    };
    let now = wi_certs::time::OffsetDateTime::now_utc();
    let a = wi_certs::selfmanaged::Material::fresh(&settings, now).unwrap();
    let b = wi_certs::selfmanaged::Material::fresh(&settings, now).unwrap();
    let mut secret = a.to_secret(&settings);
    secret.data.as_mut().unwrap().insert(
        "tls.key".into(),
        k8s_openapi::ByteString(b.leaf.key.clone().into_bytes()),
    );
    Api::<Secret>::namespaced(cluster.client.clone(), &ns.name)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let config_name = format!("wi-e2e-{}", ns.name);
    let mut webhook = Process::start(
        &format!("{}-bad", ns.name),
        &cluster,
        &self_managed_args(&ns.name, &config_name),
    );
    let status = poll("the webhook exits", Duration::from_secs(30), || {
        let status = webhook.child.try_wait();
        async move { Ok(status?) }
    })
    .await
    .unwrap();
    assert!(!status.success());
    let log = webhook.log_text();
    let expected = format!("Secret {}/{SECRET}", ns.name);
    assert!(
        log.contains(&expected) && log.contains("tls.key") && log.contains("does not match"),
        "{log}"
    );
    // The Secret is left as it was, for a human to look at.
    let kept = get_secret(&cluster, &ns.name).await.unwrap();
    assert_eq!(secret_key(&kept, "tls.key"), b.leaf.key.as_bytes());
}

#[tokio::test]
async fn self_managed_fills_an_empty_placeholder_secret() {
    let cluster = cluster().await;
    let ns = namespace(&cluster, "certs-empty").await;
    let placeholder: Secret = serde_json::from_value(json!({
        "metadata": {"name": SECRET, "labels": {"installed-by": "a-tool"}},
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": "", "tls.key": ""},
    }))
    .unwrap();
    Api::<Secret>::namespaced(cluster.client.clone(), &ns.name)
        .create(&PostParams::default(), &placeholder)
        .await
        .unwrap();
    let config_name = format!("wi-e2e-{}", ns.name);
    let mut webhook = Process::start(
        &format!("{}-empty", ns.name),
        &cluster,
        &self_managed_args(&ns.name, &config_name),
    );
    let _configs = configurations(&cluster, &ns.name, webhook.port, None, "")
        .await
        .unwrap();
    webhook.wait_ready(Duration::from_secs(60)).await.unwrap();
    let secret = get_secret(&cluster, &ns.name).await.unwrap();
    let ca = secret_key(&secret, "ca.crt");
    assert_eq!(
        served_serial(webhook.port, &ca).await.unwrap(),
        serial_of_pem(&secret_key(&secret, "tls.crt"))
    );
    // Its own labels are kept.
    assert_eq!(
        secret
            .metadata
            .labels
            .unwrap()
            .get("installed-by")
            .map(String::as_str),
        Some("a-tool")
    );
    assert!(
        webhook
            .log_text()
            .contains("the Secret held no certificate")
    );
}

#[tokio::test]
async fn replicas_creating_the_secret_at_the_same_moment_all_use_the_winners() {
    use wi_certs::selfmanaged::{Material, Settings, create_or_read};
    let cluster = cluster().await;
    let ns = namespace(&cluster, "certs-race").await;
    let settings = Settings {
        namespace: ns.name.clone(),
        secret_name: SECRET.into(),
        webhook_config_name: "unused".into(),
        dns_names: vec!["localhost".into()],
        ip_addresses: vec![],
        cert_lifetime: Duration::from_secs(3600),
        ca_lifetime: Duration::from_secs(86_400),
        interval: Duration::from_secs(1),
    };
    let secrets = Api::<Secret>::namespaced(cluster.client.clone(), &ns.name);
    let now = wi_certs::time::OffsetDateTime::now_utc();
    let mine: Vec<Material> = (0..4)
        .map(|_| Material::fresh(&settings, now).unwrap())
        .collect();
    // No read first: every replica creates, exactly one wins, the others get 409
    // AlreadyExists and read the winner's.
    let tasks: Vec<_> = mine
        .iter()
        .map(|m| {
            let (secrets, settings, m) = (secrets.clone(), settings.clone(), m.clone());
            tokio::spawn(async move { create_or_read(&secrets, &settings, &m).await })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    let results: Vec<(Secret, bool)> = results.into_iter().map(Result::unwrap).collect();
    let winners: Vec<usize> = (0..results.len()).filter(|&i| results[i].1).collect();
    assert_eq!(winners.len(), 1, "exactly one create succeeds");
    let leaf = mine[winners[0]].leaf.cert.as_bytes();
    for (secret, _) in &results {
        assert_eq!(secret_key(secret, "tls.crt"), leaf);
    }
    assert_eq!(
        secret_key(&get_secret(&cluster, &ns.name).await.unwrap(), "tls.crt"),
        leaf
    );
}

/// Cluster-scoped RBAC objects of a test, deleted on drop.
struct ClusterRbac {
    name: String,
    kubectl: PathBuf,
    kubeconfig: PathBuf,
}

impl Drop for ClusterRbac {
    fn drop(&mut self) {
        let _ = Command::new(&self.kubectl)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["delete", "clusterrole,clusterrolebinding", &self.name])
            .args(["--ignore-not-found", "--request-timeout=10s"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The Role and ClusterRole of `manifests/overlays/self-managed`, as `kubectl kustomize`
/// builds them.
async fn overlay_rbac(cluster: &Cluster) -> anyhow::Result<(Value, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/overlays/self-managed");
    let out = cluster
        .kubectl(&["kustomize", dir.to_str().context("path")?], "")
        .await?;
    if !out.success {
        bail!("kubectl kustomize {}: {}", dir.display(), out.stderr);
    }
    let mut role = None;
    let mut cluster_role = None;
    for v in serde_saphyr::from_multiple::<Value>(&out.stdout)? {
        match v["kind"].as_str() {
            Some("Role") if v["metadata"]["name"] == "wi-webhook" => role = Some(v),
            Some("ClusterRole") if v["metadata"]["name"] == "wi-webhook" => cluster_role = Some(v),
            _ => {}
        }
    }
    Ok((
        role.context("no Role wi-webhook in the overlay")?,
        cluster_role.context("no ClusterRole wi-webhook in the overlay")?,
    ))
}

#[tokio::test]
async fn self_managed_mode_needs_no_more_than_the_least_privilege_rbac_of_the_manifests() {
    let cluster = cluster().await;
    let ns = namespace(&cluster, "certs-rbac").await;
    let config_name = format!("wi-e2e-{}", ns.name);
    let user = format!("wi-e2e-{}", ns.name);

    // The overlay's rules, bound to a user of our own: the Secret rules in the test
    // namespace, the webhook configurations' names replaced by the test's.
    let (role, cluster_role) = overlay_rbac(&cluster).await.unwrap();
    let mut cluster_rules = cluster_role["rules"].clone();
    for rule in cluster_rules.as_array_mut().unwrap() {
        if let Some(names) = rule.get_mut("resourceNames") {
            assert_eq!(
                names,
                &json!(["wi-webhook"]),
                "only the configurations, by name"
            );
            *names = json!([config_name]);
        }
    }
    for rule in role["rules"].as_array().unwrap() {
        if let Some(names) = rule.get("resourceNames") {
            assert_eq!(names, &json!([SECRET]), "the Secret by name only: {rule}");
        }
    }
    let _rbac = ClusterRbac {
        name: user.clone(),
        kubectl: cluster.kubectl_path(),
        kubeconfig: cluster.kubeconfig.clone(),
    };
    let subject = json!([{"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}]);
    let yaml = serde_json::to_string(&json!({
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
             "metadata": {"name": user}, "rules": cluster_rules},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
             "metadata": {"name": user}, "subjects": subject,
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": user}},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
             "metadata": {"name": "wi-webhook", "namespace": ns.name}, "rules": role["rules"]},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
             "metadata": {"name": "wi-webhook", "namespace": ns.name}, "subjects": subject,
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "wi-webhook"}},
        ],
    }))
    .unwrap();
    cluster.apply_yaml(&ns.name, &yaml).await.unwrap();

    // A kubeconfig for that user: a client certificate from the control plane's CA.
    let pki = state_dir().join("pki/cp");
    let ca = wi_certs::Ca::from_dir(&pki).unwrap();
    let client = ca
        .issue_client(&user, None, wi_certs::default_not_before(), 1)
        .unwrap();
    let b64 = |s: &str| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(s)
    };
    let kubeconfig = serde_json::to_string(&json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {
            "server": cluster.apiserver_url(),
            "certificate-authority-data": b64(&ca.pem().cert),
        }}],
        "users": [{"name": "u", "user": {
            "client-certificate-data": b64(&client.cert),
            "client-key-data": b64(&client.key),
        }}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "c",
    }))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig_path = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig_path, kubeconfig).unwrap();
    // RBAC is read from a cache by the API server: wait until the user may read the Secret.
    poll(
        "the RBAC of the test user in effect",
        Duration::from_secs(15),
        || {
            let cluster = &cluster;
            let (ns, user) = (ns.name.clone(), user.clone());
            async move {
                let out = cluster
                    .kubectl(
                        &[
                            "auth",
                            "can-i",
                            "update",
                            &format!("secret/{SECRET}"),
                            "-n",
                            &ns,
                            "--as",
                            &user,
                        ],
                        "",
                    )
                    .await?;
                Ok((out.stdout.trim() == "yes").then_some(()))
            }
        },
    )
    .await
    .unwrap();

    let mut webhook = Process::start_as(
        &format!("{}-rbac", ns.name),
        &kubeconfig_path,
        &self_managed_args(&ns.name, &config_name),
    );
    let _configs = configurations(&cluster, &ns.name, webhook.port, Some(webhook.port), "")
        .await
        .unwrap();
    webhook.wait_ready(Duration::from_secs(60)).await.unwrap();
    let created = first_pod(&cluster, &ns.name, "rbac-").await;
    assert_mutated(&created, identity(), 3600);
    let log = webhook.log_text();
    assert!(
        !log.contains("Forbidden") && !log.contains("forbidden"),
        "{log}"
    );
}
