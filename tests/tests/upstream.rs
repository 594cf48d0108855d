//! Cut-over from the upstream webhook v1.6.0: while both are registered, upstream's
//! configuration sorts first and mutates the pod before ours. A pod created with exactly
//! what upstream's webhook leaves (its env vars, its `azure-workload-identity-reserved-*`
//! token volume at /var/run/secrets/azure/wi, its proxy containers where it puts them) goes
//! through the real API server and our webhook, which must recognise it and inject nothing:
//! one token volume, no mount or env var twice, the proxy containers as they were.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use wi_e2e::pods::*;

const CLIENT_ID: &str = "cdcdcdcd-cdcd-cdcd-cdcd-cdcdcdcdcdcd";
/// sha256("agent-0"), first 30 hex digits, after upstream's prefix.
const UPSTREAM_VOLUME: &str = "azure-workload-identity-reserved-4b341909fca84a97f5bf746cbcbf68";
const UPSTREAM_MOUNT: &str = "/var/run/secrets/azure/wi";
const UPSTREAM_TOKEN_FILE: &str = "/var/run/secrets/azure/wi/token/azure-identity-token";

fn upstream_env() -> Value {
    json!([
        {"name": "AZURE_CLIENT_ID", "value": CLIENT_ID},
        {"name": "AZURE_TENANT_ID", "value": WEBHOOK_TENANT_ID},
        {"name": "AZURE_FEDERATED_TOKEN_FILE", "value": UPSTREAM_TOKEN_FILE},
        {"name": "AZURE_AUTHORITY_HOST", "value": AUTHORITY_HOST},
    ])
}

fn upstream_mount() -> Value {
    json!([{"name": UPSTREAM_VOLUME, "mountPath": UPSTREAM_MOUNT, "readOnly": true}])
}

/// The pod as upstream v1.6.0 mutates it on Kubernetes 1.32+: the native proxy sidecar first
/// among the init containers, `azwi-proxy-init` appended after the pod's own init container,
/// env and mount on every container.
fn upstream_mutated_pod() -> Value {
    let with_identity = |mut c: Value| {
        let env = c["env"].as_array().cloned().unwrap_or_default();
        let mut all = env;
        all.extend(upstream_env().as_array().unwrap().iter().cloned());
        c["env"] = Value::Array(all);
        c["volumeMounts"] = upstream_mount();
        c
    };
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "agent-0",
            "labels": {USE_LABEL: "true"},
            "annotations": {INJECT_PROXY_ANNOTATION: "true"}
        },
        "spec": {
            "serviceAccountName": "agent",
            "initContainers": [
                with_identity(json!({
                    "name": PROXY, "image": PROXY_IMAGE, "imagePullPolicy": "IfNotPresent",
                    "args": ["--proxy-port=8000", "--log-level=info"],
                    "ports": [{"containerPort": 8000}],
                    "restartPolicy": "Always"
                })),
                with_identity(json!({"name": "setup", "image": "registry.invalid/setup:1"})),
                with_identity(json!({
                    "name": PROXY_INIT, "image": PROXY_INIT_IMAGE, "imagePullPolicy": "IfNotPresent",
                    "env": [{"name": "PROXY_PORT", "value": "8000"}],
                    "securityContext": {
                        "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]},
                        "privileged": true, "runAsNonRoot": false, "runAsUser": 0
                    }
                })),
            ],
            "containers": [
                with_identity(json!({"name": "agent", "image": "registry.invalid/agent:1"})),
            ],
            "volumes": [{
                "name": UPSTREAM_VOLUME,
                "projected": {"sources": [{"serviceAccountToken": {
                    "audience": AUDIENCE, "expirationSeconds": 3600,
                    "path": "token/azure-identity-token"
                }}]}
            }]
        }
    })
}

#[tokio::test]
async fn a_pod_upstream_already_mutated_is_not_injected_twice() {
    let cluster = wi_e2e::cluster().await;
    let ns = cluster.namespace("e2e-upstream-premutated").await;
    Api::<ServiceAccount>::namespaced(cluster.client.clone(), &ns.name)
        .create(
            &PostParams::default(),
            &service_account("agent", CLIENT_ID, None),
        )
        .await
        .unwrap();
    let pods = Api::<Pod>::namespaced(cluster.client.clone(), &ns.name);
    let sent: Pod = serde_json::from_value(upstream_mutated_pod()).unwrap();
    pods.create(&PostParams::default(), &sent).await.unwrap();
    let stored = pods.get("agent-0").await.unwrap();
    let stored_spec = spec(&stored);

    // Our webhook saw it (the label selects it) and left it as it was.
    let decisions = wi_e2e::poll("our decision in the log", Duration::from_secs(5), || {
        let cluster = &cluster;
        let ns = ns.name.clone();
        async move {
            let d = cluster.webhook_decisions(&ns)?;
            Ok((!d.is_empty()).then_some(d))
        }
    })
    .await
    .unwrap();
    assert_eq!(decisions[0].name, "agent-0");
    assert_eq!(decisions[0].decision, "allowed", "{}", decisions[0].line);

    let volumes: Vec<&str> = stored_spec
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(volumes, [UPSTREAM_VOLUME], "one token volume, upstream's");
    assert_eq!(
        container_names(stored_spec),
        (vec![PROXY, "setup", PROXY_INIT], vec!["agent"]),
        "the proxy containers stay where upstream put them"
    );
    for c in all_containers(stored_spec) {
        let mounts: Vec<(&str, &str)> = c
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| (m.name.as_str(), m.mount_path.as_str()))
            .collect();
        assert_eq!(mounts, [(UPSTREAM_VOLUME, UPSTREAM_MOUNT)], "{}", c.name);
        let names = env_names(c);
        for var in AZURE_ENV {
            assert_eq!(
                names.iter().filter(|n| **n == var).count(),
                1,
                "{}: {var} once: {names:?}",
                c.name
            );
        }
        assert_eq!(
            env_value(c, "AZURE_FEDERATED_TOKEN_FILE"),
            Some(UPSTREAM_TOKEN_FILE),
            "{}",
            c.name
        );
    }
}

/// The webhook started with upstream's Deployment arguments, unchanged: certificates from
/// `--webhook-cert-dir` (rotation disabled), probes on `--health-addr :PORT`, metrics on
/// `--metrics-addr`, `--metrics-backend prometheus`, Go's `-log-level=info`, the tenant from
/// `AZURE_TENANT_ID` as upstream's ConfigMap gives it. It connects to the API server, syncs
/// and turns ready on the probe port, which serves the probes and not the metrics.
#[tokio::test]
async fn serve_with_upstreams_arguments() {
    use std::net::{Ipv4Addr, TcpListener};
    use std::process::Stdio;

    let cluster = wi_e2e::cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    wi_certs::generate(&wi_certs::GenerateOptions {
        dns_names: vec!["localhost".into()],
        ip_addresses: vec![Ipv4Addr::LOCALHOST.into()],
        ..Default::default()
    })
    .unwrap()
    .write_dir(&certs)
    .unwrap();
    // Three free ports, bound at once so they differ.
    let listeners: Vec<TcpListener> = (0..3)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap())
        .collect();
    let ports: Vec<u16> = listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect();
    drop(listeners);

    let binary = std::fs::read_to_string(wi_e2e::state_dir().join("wi-webhook.bin"))
        .map(|s| std::path::PathBuf::from(s.trim()))
        .unwrap();
    let log = dir.path().join("wi-webhook.log");
    let mut child = tokio::process::Command::new(binary)
        .arg("serve")
        .arg(format!("--webhook-cert-dir={}", certs.display()))
        .arg("--disable-cert-rotation")
        .arg(format!("--health-addr=:{}", ports[0]))
        .arg(format!("--metrics-addr=127.0.0.1:{}", ports[1]))
        .arg("--metrics-backend=prometheus")
        .arg("-log-level=info")
        .arg(format!("--listen=127.0.0.1:{}", ports[2]))
        .arg("--kubeconfig")
        .arg(&cluster.kubeconfig)
        .env("AZURE_TENANT_ID", WEBHOOK_TENANT_ID)
        .env("AZURE_ENVIRONMENT", "AzurePublicCloud")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let probes = wi_e2e::Webhook {
        mutate_url: String::new(),
        metrics_addr: format!("127.0.0.1:{}", ports[0]),
    };
    let metrics = wi_e2e::Webhook {
        mutate_url: String::new(),
        metrics_addr: format!("127.0.0.1:{}", ports[1]),
    };
    let ready = wi_e2e::poll("ready on --health-addr", Duration::from_secs(30), || {
        let probes = &probes;
        async move { Ok(matches!(probes.get("/readyz").await, Ok((200, _))).then_some(())) }
    })
    .await;
    let stderr = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
    assert!(
        ready.is_ok(),
        "exited: {:?}; stderr: {stderr}",
        child.try_wait()
    );
    assert_eq!(probes.get("/healthz").await.unwrap().0, 200);
    assert_eq!(
        probes.get("/metrics").await.unwrap().0,
        404,
        "metrics stay on their port"
    );
    let text = metrics.metrics().await.unwrap();
    assert!(
        text.contains("wi_webhook_admission_duration_seconds_count"),
        "{text}"
    );
    assert_eq!(metrics.get("/readyz").await.unwrap().0, 200);
    child.kill().await.unwrap();
}
