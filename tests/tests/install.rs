//! The install (`manifests/`) through the real control plane: both overlays are accepted by
//! the API server, the RBAC lets the webhook do its job under exactly its ServiceAccount's
//! permissions and nothing more, and the webhook configuration the base commits is the one
//! `run.sh` registers for the other tests.
//!
//! Safety of the shared control plane: the other tests rely on the webhook configurations
//! `wi-webhook` that `run.sh` registers (pointed at the local webhook). An installed
//! configuration pointing at the Service `wi-webhook` (no endpoints: no kubelet) with
//! failurePolicy Fail would deny every labelled pod of every other test. So the overlays'
//! webhook configurations are never stored: they go through the API server as a server-side
//! dry run (full validation and defaulting, nothing persisted) under a name of their own,
//! and every other object is applied for real and removed afterwards, except the AgentPool
//! CRD, which the running webhook and the other tests use (the overlay's CRD is the same
//! committed file, so applying it changes nothing). The two install tests share the fixed
//! namespace `wi-webhook-system` and take turns (`SERIAL`).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::bail;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::{Value, json};
use wi_e2e::pods::*;

const NAMESPACE: &str = "wi-webhook-system";
const NAME: &str = "wi-webhook";
const SERVICE_ACCOUNT_USER: &str = "system:serviceaccount:wi-webhook-system:wi-webhook";
const FIELD_MANAGER: &str = "wi-e2e-install";
/// The name the overlays' webhook configurations are dry-run under (never stored).
const DRY_RUN_CONFIGURATION: &str = "wi-webhook-install-check";
const AGENTPOOL_CRD: &str = "agentpools.wi-webhook.dev";
const SEED_CLIENT_ID: &str = "6f1a3f4e-2b7c-4f0e-9a51-3c2d1e0f9a8b";
const SEED_TENANT_ID: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const SEED_AGENT: &str = "ado-agent-omtest1";

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `kubectl kustomize manifests/overlays/<overlay>`: the objects `kubectl apply -k` sends.
async fn build(cluster: &wi_e2e::Cluster, overlay: &str) -> Vec<Value> {
    let dir = repo().join("manifests/overlays").join(overlay);
    let out = cluster
        .kubectl(&["kustomize", dir.to_str().unwrap()], "")
        .await
        .unwrap();
    assert!(out.success, "kustomize {overlay}: {}", out.stderr);
    yaml_documents(&out.stdout)
}

fn yaml_documents(text: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(text).expect("kustomize prints YAML")
}

fn to_yaml(docs: &[Value]) -> String {
    docs.iter()
        .map(wi_webhook::yaml::to_string)
        .collect::<Vec<_>>()
        .join("---\n")
}

fn is_webhook_configuration(doc: &Value) -> bool {
    matches!(
        doc["kind"].as_str(),
        Some("MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration")
    )
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in the build"))
}

/// What an install put in the cluster, removed on drop (blocking, so also when the test
/// panics) or with [`Installed::uninstall`], which waits for the namespace to be gone.
struct Installed {
    /// Every stored object but the shared AgentPool CRD, as YAML.
    objects: String,
    /// Test-only CRDs to delete too.
    extra_crds: Vec<String>,
    kubectl: PathBuf,
    kubeconfig: PathBuf,
    done: bool,
}

impl Installed {
    fn delete_blocking(&self) {
        let mut child = std::process::Command::new(&self.kubectl)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["delete", "-f", "-", "--ignore-not-found", "--wait=false"])
            .args(["--request-timeout=20s"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("kubectl");
        use std::io::Write;
        let _ = child
            .stdin
            .take()
            .unwrap()
            .write_all(self.objects.as_bytes());
        let _ = child.wait();
        for crd in &self.extra_crds {
            let _ = std::process::Command::new(&self.kubectl)
                .arg("--kubeconfig")
                .arg(&self.kubeconfig)
                .args(["delete", "crd", crd, "--ignore-not-found", "--wait=false"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }

    async fn uninstall(mut self, cluster: &wi_e2e::Cluster) {
        self.done = true;
        let out = cluster
            .kubectl(
                &["delete", "-f", "-", "--ignore-not-found", "--wait=false"],
                &self.objects,
            )
            .await
            .unwrap();
        assert!(out.success, "uninstall: {}", out.stderr);
        for crd in &self.extra_crds {
            let out = cluster
                .kubectl(&["delete", "crd", crd, "--ignore-not-found"], "")
                .await
                .unwrap();
            assert!(out.success, "deleting {crd}: {}", out.stderr);
        }
        namespace_gone(cluster).await;
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        if !self.done {
            self.delete_blocking();
        }
    }
}

/// Waits (bounded) until `wi-webhook-system` does not exist: a Terminating namespace from
/// an earlier install refuses new objects.
async fn namespace_gone(cluster: &wi_e2e::Cluster) {
    let namespaces = Api::<Namespace>::all(cluster.client.clone());
    wi_e2e::poll(
        "namespace wi-webhook-system deleted",
        Duration::from_secs(120),
        || {
            let namespaces = namespaces.clone();
            async move { Ok(namespaces.get_opt(NAMESPACE).await?.is_none().then_some(())) }
        },
    )
    .await
    .unwrap();
}

/// Applies a built overlay the safe way (module doc): every object but the webhook
/// configurations with server-side apply, the webhook configurations as a server-side dry
/// run under [`DRY_RUN_CONFIGURATION`], returned as the API server would have stored them.
async fn install(
    cluster: &wi_e2e::Cluster,
    docs: &[Value],
    extra_crds: Vec<String>,
) -> (Installed, Vec<Value>) {
    // A namespace left by an interrupted run is removed first.
    let leftover = cluster
        .kubectl(
            &[
                "delete",
                "namespace",
                NAMESPACE,
                "--ignore-not-found",
                "--wait=false",
            ],
            "",
        )
        .await
        .unwrap();
    assert!(leftover.success, "{}", leftover.stderr);
    namespace_gone(cluster).await;

    let (configurations, objects): (Vec<Value>, Vec<Value>) =
        docs.iter().cloned().partition(is_webhook_configuration);
    assert_eq!(
        configurations.len(),
        2,
        "a mutating and a validating configuration"
    );
    let stored: Vec<Value> = objects
        .iter()
        .filter(|d| {
            !(d["kind"] == "CustomResourceDefinition" && d["metadata"]["name"] == AGENTPOOL_CRD)
        })
        .cloned()
        .collect();
    let installed = Installed {
        objects: to_yaml(&stored),
        extra_crds,
        kubectl: cluster.kubectl_path(),
        kubeconfig: cluster.kubeconfig.clone(),
        done: false,
    };
    let out = cluster
        .kubectl(
            &[
                "apply",
                "--server-side",
                "--field-manager",
                FIELD_MANAGER,
                "-f",
                "-",
            ],
            &to_yaml(&objects),
        )
        .await
        .unwrap();
    assert!(out.success, "server-side apply refused:\n{}", out.stderr);

    let renamed: Vec<Value> = configurations
        .into_iter()
        .map(|mut c| {
            c["metadata"]["name"] = DRY_RUN_CONFIGURATION.into();
            c
        })
        .collect();
    let out = cluster
        .kubectl(
            &[
                "apply",
                "--server-side",
                "--dry-run=server",
                "--field-manager",
                FIELD_MANAGER,
                "-o",
                "json",
                "-f",
                "-",
            ],
            &to_yaml(&renamed),
        )
        .await
        .unwrap();
    assert!(
        out.success,
        "the API server refused the webhook configurations:\n{}",
        out.stderr
    );
    let list: Value = serde_json::from_str(&out.stdout).unwrap();
    let accepted = list["items"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| vec![list]);
    assert_eq!(accepted.len(), 2, "{}", out.stdout);
    for kind in [
        "mutatingwebhookconfigurations",
        "validatingwebhookconfigurations",
    ] {
        let out = cluster
            .kubectl(
                &["get", kind, DRY_RUN_CONFIGURATION, "--ignore-not-found"],
                "",
            )
            .await
            .unwrap();
        assert!(
            out.stdout.trim().is_empty(),
            "a dry run stored {kind} {DRY_RUN_CONFIGURATION}"
        );
    }
    (installed, accepted)
}

/// The Deployment's pods exist: its ReplicaSet created them through admission, the
/// namespace's Pod Security `restricted` enforcement included. No kubelet: they stay
/// Pending, which is all that admission proves.
async fn deployment_pods(cluster: &wi_e2e::Cluster) -> Vec<Pod> {
    let pods = Api::<Pod>::namespaced(cluster.client.clone(), NAMESPACE);
    let params = ListParams::default().labels("app.kubernetes.io/name=wi-webhook");
    let found = wi_e2e::poll(
        "the wi-webhook Deployment's two pods",
        Duration::from_secs(60),
        || {
            let (pods, params) = (pods.clone(), params.clone());
            async move {
                let list = pods.list(&params).await?;
                Ok((list.items.len() == 2).then_some(list.items))
            }
        },
    )
    .await;
    match found {
        Ok(pods) => pods,
        Err(e) => {
            // Why the ReplicaSet could not create them (Pod Security, quota, ...).
            let events = cluster
                .kubectl(&["-n", NAMESPACE, "get", "events"], "")
                .await
                .map(|o| o.stdout)
                .unwrap_or_default();
            panic!("{e:#}\n{events}")
        }
    }
}

fn check_installed_deployment(pods: &[Pod]) {
    for pod in pods {
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.service_account_name.as_deref(), Some(NAME));
        // The Priority admission plugin resolved the class.
        assert_eq!(
            spec.priority_class_name.as_deref(),
            Some("system-cluster-critical")
        );
        assert_eq!(spec.priority, Some(2_000_000_000));
        let owner = &pod.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(owner.kind, "ReplicaSet");
    }
}

/// A client of the admin kubeconfig acting as `user` (impersonation; the API server adds a
/// ServiceAccount user's groups itself).
async fn client_as(cluster: &wi_e2e::Cluster, user: &str) -> kube::Client {
    let raw = Kubeconfig::read_from(&cluster.kubeconfig).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(raw, &KubeConfigOptions::default())
        .await
        .unwrap();
    config.auth_info.impersonate = Some(user.into());
    kube::Client::try_from(config).unwrap()
}

/// One permission to check: verb, API group, resource (`resource/subresource`), namespace,
/// name.
#[derive(Clone, Copy, Debug)]
struct Access(
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
);

async fn allowed(client: &kube::Client, Access(verb, group, resource, ns, name): Access) -> bool {
    let (resource, subresource) = match resource.split_once('/') {
        Some((r, s)) => (r, Some(s)),
        None => (resource, None),
    };
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                group: Some(group.into()),
                resource: Some(resource.into()),
                subresource: subresource.map(Into::into),
                namespace: ns.map(Into::into),
                name: name.map(Into::into),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .unwrap();
    answer.status.is_some_and(|s| s.allowed)
}

/// Every `yes` is allowed and every `no` refused, for the webhook's ServiceAccount.
async fn check_permissions(cluster: &wi_e2e::Cluster, yes: &[Access], no: &[Access]) {
    let client = client_as(cluster, SERVICE_ACCOUNT_USER).await;
    let mut wrong = Vec::new();
    for access in yes {
        if !allowed(&client, *access).await {
            wrong.push(format!("cannot {access:?}"));
        }
    }
    for access in no {
        if allowed(&client, *access).await {
            wrong.push(format!("can {access:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{SERVICE_ACCOUNT_USER}:\n{}",
        wrong.join("\n")
    );
}

/// What the webhook does in every mode: the caches, the pool status, events.
#[rustfmt::skip]
const BASE_NEEDS: &[Access] = &[
    Access("list", "", "serviceaccounts", None, None),
    Access("watch", "", "serviceaccounts", None, None),
    Access("get", "", "serviceaccounts", Some("default"), Some("default")),
    Access("list", "wi-webhook.dev", "agentpools", None, None),
    Access("watch", "wi-webhook.dev", "agentpools", None, None),
    Access("patch", "wi-webhook.dev", "agentpools/status", None, Some("any-pool")),
    Access("create", "", "events", Some("default"), None),
    Access("create", "events.k8s.io", "events", Some("default"), None),
    // Scoping its own fail-closed webhooks to the pools' namespaces.
    Access("get", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", None, Some(NAME)),
    Access("patch", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", None, Some(NAME)),
    Access("get", "admissionregistration.k8s.io", "validatingwebhookconfigurations", None, Some(NAME)),
    Access("patch", "admissionregistration.k8s.io", "validatingwebhookconfigurations", None, Some(NAME)),
    // The labels of the namespaces an AgentPool names.
    Access("get", "", "namespaces", None, Some("any")),
];

/// Never, in any mode.
#[rustfmt::skip]
const NEVER: &[Access] = &[
    Access("get", "", "secrets", Some(NAMESPACE), Some("other-secret")),
    Access("list", "", "secrets", Some(NAMESPACE), None),
    Access("list", "", "secrets", None, None),
    Access("get", "", "secrets", Some("default"), Some("wi-webhook-tls")),
    Access("create", "", "secrets", Some("default"), None),
    Access("list", "", "pods", None, None),
    Access("get", "", "pods", Some("default"), Some("any")),
    Access("update", "", "serviceaccounts", Some("default"), Some("default")),
    Access("create", "", "serviceaccounts/token", Some("default"), Some("default")),
    Access("patch", "wi-webhook.dev", "agentpools", None, Some("any-pool")),
    Access("delete", "wi-webhook.dev", "agentpools", None, Some("any-pool")),
    Access("patch", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", None, Some("other")),
    Access("patch", "admissionregistration.k8s.io", "validatingwebhookconfigurations", None, Some("other")),
    Access("delete", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", None, Some(NAME)),
    Access("list", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", None, None),
    Access("list", "", "namespaces", None, None),
    Access("update", "", "namespaces", None, Some("any")),
    Access("update", "apiextensions.k8s.io", "customresourcedefinitions", None, Some(AGENTPOOL_CRD)),
    Access("create", "rbac.authorization.k8s.io", "clusterrolebindings", None, None),
];

/// What writing its own certificate needs (self-managed overlay).
#[rustfmt::skip]
const SELF_MANAGED_NEEDS: &[Access] = &[
    Access("get", "", "secrets", Some(NAMESPACE), Some("wi-webhook-tls")),
    Access("update", "", "secrets", Some(NAMESPACE), Some("wi-webhook-tls")),
    Access("patch", "", "secrets", Some(NAMESPACE), Some("wi-webhook-tls")),
    Access("create", "", "secrets", Some(NAMESPACE), None),
    Access("get", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", None, Some(NAME)),
    Access("patch", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", None, Some(NAME)),
    Access("update", "admissionregistration.k8s.io", "validatingwebhookconfigurations", None, Some(NAME)),
    Access("patch", "admissionregistration.k8s.io", "validatingwebhookconfigurations", None, Some(NAME)),
];

/// With cert-manager, the webhook touches neither the Secret nor its configurations' CA
/// (it patches their scoping expressions only, as in every mode).
#[rustfmt::skip]
const CERT_MANAGER_NEVER: &[Access] = &[
    Access("get", "", "secrets", Some(NAMESPACE), Some("wi-webhook-tls")),
    Access("update", "", "secrets", Some(NAMESPACE), Some("wi-webhook-tls")),
    Access("create", "", "secrets", Some(NAMESPACE), None),
    Access("update", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", None, Some(NAME)),
    Access("update", "admissionregistration.k8s.io", "validatingwebhookconfigurations", None, Some(NAME)),
];

fn no_wildcards(docs: &[Value]) {
    for doc in docs
        .iter()
        .filter(|d| matches!(d["kind"].as_str(), Some("ClusterRole" | "Role")))
    {
        for rule in doc["rules"].as_array().unwrap() {
            for field in ["apiGroups", "resources", "verbs"] {
                assert!(
                    !rule[field]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|v| v == "*"),
                    "{} {}: a wildcard in {field}",
                    doc["kind"],
                    doc["metadata"]["name"]
                );
            }
        }
    }
}

/// `kubectl apply -k manifests/overlays/self-managed`, the documented install: accepted by
/// the API server, the Deployment's pods pass admission (Pod Security restricted), the RBAC
/// is enough and no more, and a webhook running under exactly that ServiceAccount's
/// permissions (impersonated), behind the base's committed webhook configuration, mutates
/// the seed's agent pod.
#[tokio::test]
async fn self_managed_overlay_installs_with_least_privilege() {
    let _turn = SERIAL.lock().await;
    let cluster = wi_e2e::cluster().await;
    let docs = build(&cluster, "self-managed").await;
    no_wildcards(&docs);

    // The overlay's container runs the self-managed mode with the contract's names.
    let deployment = find(&docs, "Deployment", NAME);
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    for arg in [
        "serve",
        "--self-managed-certs",
        "--cert-secret-name=wi-webhook-tls",
        "--service-name=wi-webhook",
        "--webhook-config-name=wi-webhook",
    ] {
        assert!(args.contains(&arg), "{arg} missing from {args:?}");
    }

    let (installed, accepted) = install(&cluster, &docs, Vec::new()).await;
    for configuration in &accepted {
        assert!(
            configuration["webhooks"]
                .as_array()
                .is_some_and(|w| !w.is_empty()),
            "{configuration}"
        );
    }
    let stored = Api::<Deployment>::namespaced(cluster.client.clone(), NAMESPACE)
        .get(NAME)
        .await
        .unwrap();
    assert_eq!(stored.spec.as_ref().unwrap().replicas, Some(2));
    check_installed_deployment(&deployment_pods(&cluster).await);

    // Enough, and no more.
    check_permissions(&cluster, &[BASE_NEEDS, SELF_MANAGED_NEEDS].concat(), NEVER).await;

    webhook_does_its_job_as_its_service_account(&cluster).await;

    installed.uninstall(&cluster).await;
}

/// `kubectl apply -k manifests/overlays/cert-manager`, with stand-ins for cert-manager's
/// CRDs: accepted, the CA injection wired to the Certificate that issues the mounted Secret,
/// and no Secret access for the webhook (cert-manager writes it).
#[tokio::test]
async fn cert_manager_overlay_installs_without_secret_access() {
    let _turn = SERIAL.lock().await;
    let cluster = wi_e2e::cluster().await;

    let stubs =
        std::fs::read_to_string(repo().join("tests/fixtures/cert-manager-crds.yaml")).unwrap();
    let stub_names: Vec<String> = yaml_documents(&stubs)
        .iter()
        .map(|d| d["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    let out = cluster
        .kubectl(
            &[
                "apply",
                "--server-side",
                "--field-manager",
                FIELD_MANAGER,
                "-f",
                "-",
            ],
            &stubs,
        )
        .await
        .unwrap();
    assert!(out.success, "{}", out.stderr);
    let mut wait = vec!["wait", "--for=condition=Established", "--timeout=60s"];
    let crds: Vec<String> = stub_names.iter().map(|n| format!("crd/{n}")).collect();
    wait.extend(crds.iter().map(String::as_str));
    let out = cluster.kubectl(&wait, "").await.unwrap();
    assert!(out.success, "{}", out.stderr);

    let docs = build(&cluster, "cert-manager").await;
    no_wildcards(&docs);
    let (installed, accepted) = install(&cluster, &docs, stub_names).await;

    // Both configurations ask cert-manager's CA injector for the serving Certificate's CA,
    // and the API server kept the annotation.
    for configuration in &accepted {
        assert_eq!(
            configuration["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
            "wi-webhook-system/wi-webhook-serving",
            "{}",
            configuration["kind"]
        );
    }
    // That Certificate issues the Secret the Deployment mounts, for the Service's names,
    // from a CA Issuer whose CA is itself a Certificate of the overlay.
    let serving = find(&docs, "Certificate", "wi-webhook-serving");
    let deployment = find(&docs, "Deployment", NAME);
    let volume = &deployment["spec"]["template"]["spec"]["volumes"][0]["secret"];
    assert_eq!(serving["spec"]["secretName"], volume["secretName"]);
    assert_eq!(volume["secretName"], "wi-webhook-tls");
    let names: Vec<&str> = serving["spec"]["dnsNames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"wi-webhook.wi-webhook-system.svc"),
        "{names:?}"
    );
    let issuer = find(
        &docs,
        "Issuer",
        serving["spec"]["issuerRef"]["name"].as_str().unwrap(),
    );
    let ca_secret = issuer["spec"]["ca"]["secretName"].as_str().unwrap();
    let ca = docs
        .iter()
        .find(|d| d["kind"] == "Certificate" && d["spec"]["secretName"] == ca_secret)
        .expect("the CA Issuer's Secret is issued by a Certificate of the overlay");
    assert_eq!(ca["spec"]["isCA"], true);
    find(
        &docs,
        "Issuer",
        ca["spec"]["issuerRef"]["name"].as_str().unwrap(),
    );
    // The API server stored the cert-manager objects.
    for (resource, name) in [
        ("certificates.cert-manager.io", "wi-webhook-serving"),
        ("certificates.cert-manager.io", "wi-webhook-ca"),
        ("issuers.cert-manager.io", "wi-webhook-ca"),
        ("issuers.cert-manager.io", "wi-webhook-selfsigned"),
    ] {
        let out = cluster
            .kubectl(&["-n", NAMESPACE, "get", resource, name], "")
            .await
            .unwrap();
        assert!(out.success, "{resource} {name}: {}", out.stderr);
    }
    check_installed_deployment(&deployment_pods(&cluster).await);

    check_permissions(&cluster, BASE_NEEDS, &[NEVER, CERT_MANAGER_NEVER].concat()).await;

    installed.uninstall(&cluster).await;
}

/// `run.sh` registers, for every test, the configurations `wi-webhook webhook-config` prints
/// for a URL; the base commits what it prints for the Service (a drift test in
/// webhook/tests/manifests.rs). Both are the same webhooks but for where they call and the
/// webhook's own namespace (which only a Service target has), so what the other tests prove
/// through the registered one holds for the installed one.
#[tokio::test]
async fn registered_configurations_are_the_committed_ones_but_for_the_target() {
    let cluster = wi_e2e::cluster().await;
    let committed = yaml_documents(
        &std::fs::read_to_string(repo().join("manifests/base/webhook-configurations.yaml"))
            .unwrap(),
    );
    for (kind, resource) in [
        (
            "MutatingWebhookConfiguration",
            "mutatingwebhookconfigurations",
        ),
        (
            "ValidatingWebhookConfiguration",
            "validatingwebhookconfigurations",
        ),
    ] {
        let out = cluster
            .kubectl(&["get", resource, NAME, "-o", "json"], "")
            .await
            .unwrap();
        assert!(out.success, "{}", out.stderr);
        let registered: Value = serde_json::from_str(&out.stdout).unwrap();
        let committed = find(&committed, kind, NAME);
        let normalize = |webhooks: &Value| -> BTreeMap<String, Value> {
            webhooks
                .as_array()
                .unwrap()
                .iter()
                .map(|w| {
                    let mut w = w.clone();
                    w.as_object_mut().unwrap().remove("clientConfig");
                    for e in w["namespaceSelector"]["matchExpressions"]
                        .as_array_mut()
                        .into_iter()
                        .flatten()
                    {
                        if let Some(values) = e["values"].as_array_mut() {
                            values.retain(|v| v != NAMESPACE);
                            // The scoping expression holds the pools' namespaces of the
                            // moment (the webhook keeps it so): compare its placeholder.
                            if values.iter().any(|v| v == "no-pool.wi-webhook.dev") {
                                values.retain(|v| v == "no-pool.wi-webhook.dev");
                            }
                        }
                    }
                    (w["name"].as_str().unwrap().to_owned(), w)
                })
                .collect()
        };
        let (registered, committed) = (
            normalize(&registered["webhooks"]),
            normalize(&committed["webhooks"]),
        );
        assert_eq!(
            registered.keys().collect::<Vec<_>>(),
            committed.keys().collect::<Vec<_>>(),
            "{kind}"
        );
        for (name, want) in &committed {
            // Every field the committed webhook sets is registered with that value (the API
            // server may add defaults the generator leaves out).
            for (field, value) in want.as_object().unwrap() {
                assert_eq!(
                    &registered[name][field], value,
                    "{kind} webhook {name}: {field}"
                );
            }
        }
    }
}

/// `wi-webhook serve` (the binary `run.sh` runs) on free local ports, with a kubeconfig that
/// impersonates `user`: exactly that user's permissions. Killed on drop.
struct ImpersonatedWebhook {
    child: tokio::process::Child,
    addresses: wi_e2e::Webhook,
    port: u16,
    ca_bundle: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl ImpersonatedWebhook {
    async fn start(cluster: &wi_e2e::Cluster, user: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut kubeconfig: Value =
            serde_saphyr::from_str(&std::fs::read_to_string(&cluster.kubeconfig).unwrap()).unwrap();
        for entry in kubeconfig["users"].as_array_mut().unwrap() {
            entry["user"]["as"] = user.into();
        }
        let kubeconfig_path = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig_path, wi_webhook::yaml::to_string(&kubeconfig)).unwrap();

        let bundle = wi_certs::generate(&wi_certs::GenerateOptions {
            dns_names: vec!["localhost".into()],
            ip_addresses: vec![Ipv4Addr::LOCALHOST.into()],
            ..Default::default()
        })
        .unwrap();
        bundle.write_dir(dir.path()).unwrap();

        // Two free ports, both bound at once so they differ.
        let listeners: Vec<TcpListener> = (0..2)
            .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap())
            .collect();
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        drop(listeners);

        let log = dir.path().join("wi-webhook.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let child = tokio::process::Command::new(webhook_binary())
            .arg("serve")
            .args(["--listen", &format!("127.0.0.1:{}", ports[0])])
            .args(["--metrics-listen", &format!("127.0.0.1:{}", ports[1])])
            .arg("--tls-cert-file")
            .arg(dir.path().join(wi_certs::TLS_CERT_FILE))
            .arg("--tls-key-file")
            .arg(dir.path().join(wi_certs::TLS_KEY_FILE))
            .args(["--tenant-id", WEBHOOK_TENANT_ID])
            .arg("--kubeconfig")
            .arg(&kubeconfig_path)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        ImpersonatedWebhook {
            child,
            addresses: wi_e2e::Webhook {
                mutate_url: format!("https://127.0.0.1:{}/mutate", ports[0]),
                metrics_addr: format!("127.0.0.1:{}", ports[1]),
            },
            port: ports[0],
            ca_bundle: bundle.ca_bundle(),
            log,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn ready(&mut self) -> anyhow::Result<bool> {
        if let Some(status) = self.child.try_wait()? {
            bail!("exited with {status}:\n{}", self.log());
        }
        Ok(matches!(self.addresses.get("/readyz").await, Ok((200, _))))
    }
}

/// The binary `run.sh` started (it records its path), else the workspace's debug build.
fn webhook_binary() -> PathBuf {
    std::fs::read_to_string(wi_e2e::state_dir().join("wi-webhook.bin"))
        .ok()
        .map(|s| PathBuf::from(s.trim()))
        .filter(|p| p.exists())
        .unwrap_or_else(|| repo().join("target/debug/wi-webhook"))
}

/// A webhook configuration that deletes itself on drop (blocking, also on panic).
struct ScopedConfiguration {
    name: String,
    kubectl: PathBuf,
    kubeconfig: PathBuf,
}

impl Drop for ScopedConfiguration {
    fn drop(&mut self) {
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

async fn webhook_does_its_job_as_its_service_account(cluster: &wi_e2e::Cluster) {
    // Control: a ServiceAccount without the ClusterRole is refused its caches and never
    // becomes ready, so readiness below is proof of the RBAC, not of the admin's rights.
    let mut unbound =
        ImpersonatedWebhook::start(cluster, "system:serviceaccount:wi-webhook-system:no-rbac")
            .await;
    let mut webhook = ImpersonatedWebhook::start(cluster, SERVICE_ACCOUNT_USER).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !webhook.ready().await.unwrap() {
        assert!(
            std::time::Instant::now() < deadline,
            "the webhook as {SERVICE_ACCOUNT_USER} is not ready after 60 s:\n{}",
            webhook.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !unbound.log().to_lowercase().contains("forbidden") {
        assert!(
            std::time::Instant::now() < deadline,
            "the control webhook without RBAC logged no 'forbidden' in 30 s:\n{}",
            unbound.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        !unbound.ready().await.unwrap_or(false),
        "a webhook without the ClusterRole became ready: the test proves nothing"
    );
    drop(unbound);

    // The base's committed MutatingWebhookConfiguration, pointed at this webhook and scoped
    // to one namespace that the `run.sh` webhook ignores (label wi-webhook.dev/ignore), so
    // only the impersonated webhook mutates there.
    let ns = cluster.namespace("install-sa").await;
    Api::<Namespace>::all(cluster.client.clone())
        .patch(
            &ns.name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"wi-webhook.dev/ignore": "true"}}})),
        )
        .await
        .unwrap();
    let committed = yaml_documents(
        &std::fs::read_to_string(repo().join("manifests/base/webhook-configurations.yaml"))
            .unwrap(),
    );
    let mut configuration = find(&committed, "MutatingWebhookConfiguration", NAME).clone();
    let name = format!("wi-webhook-install-{}", ns.name);
    configuration["metadata"]["name"] = name.clone().into();
    configuration["metadata"]["labels"] = json!({"wi-e2e": "true"});
    for w in configuration["webhooks"].as_array_mut().unwrap() {
        w["clientConfig"] = json!({
            "url": format!("https://127.0.0.1:{}/mutate", webhook.port),
            "caBundle": webhook.ca_bundle,
        });
        w["namespaceSelector"] = json!({"matchLabels": {"kubernetes.io/metadata.name": ns.name}});
    }
    let configuration: MutatingWebhookConfiguration =
        serde_json::from_value(configuration).unwrap();
    let _scoped = ScopedConfiguration {
        name: name.clone(),
        kubectl: cluster.kubectl_path(),
        kubeconfig: cluster.kubeconfig.clone(),
    };
    Api::<MutatingWebhookConfiguration>::all(cluster.client.clone())
        .create(&PostParams::default(), &configuration)
        .await
        .unwrap();

    // The API server learns of the configuration through a watch: dry-run a labelled pod
    // until it comes back mutated.
    Api::<ServiceAccount>::namespaced(cluster.client.clone(), &ns.name)
        .create(
            &PostParams::default(),
            &service_account("probe", SEED_CLIENT_ID, Some(SEED_TENANT_ID)),
        )
        .await
        .unwrap();
    let pods = Api::<Pod>::namespaced(cluster.client.clone(), &ns.name);
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    wi_e2e::poll(
        "the scoped configuration calls the impersonated webhook",
        Duration::from_secs(30),
        || {
            let (pods, dry_run) = (pods.clone(), dry_run.clone());
            async move {
                let pod = pods
                    .create(&dry_run, &labelled_pod("probe", "probe", &[]))
                    .await?;
                let spec = spec(&pod);
                Ok(env_value(&spec.containers[0], "AZURE_CLIENT_ID").map(|_| ()))
            }
        },
    )
    .await
    .unwrap();

    // The seed's agent pool, as written: Deployment -> ReplicaSet -> the mutated agent pod.
    cluster
        .apply_yaml(&ns.name, &seed_manifests(&ns.name).unwrap())
        .await
        .unwrap();
    let pod = cluster
        .wait_for_pod(
            &ns.name,
            &format!("app={SEED_AGENT}"),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert_eq!(
        container_names(spec(&pod)),
        (vec![PROXY_INIT, PROXY], vec![SEED_AGENT])
    );
    assert_mutated(
        &pod,
        Identity {
            client_id: Some(SEED_CLIENT_ID),
            tenant_id: SEED_TENANT_ID,
        },
        3600,
    );
    assert!(
        cluster.webhook_decisions(&ns.name).unwrap().is_empty(),
        "the run.sh webhook decided in {}: the namespace is not the impersonated one's alone",
        ns.name
    );
    let log = webhook.log();
    assert!(
        log.contains(SEED_AGENT),
        "the impersonated webhook logged no decision:\n{log}"
    );
    assert!(
        !log.to_lowercase().contains("forbidden"),
        "the webhook was refused something as {SERVICE_ACCOUNT_USER}:\n{log}"
    );
}
