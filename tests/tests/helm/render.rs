//! `helm lint` and `helm template` against the kustomize build.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::*;

#[tokio::test]
async fn chart_lints_strictly_and_refuses_bad_values() {
    let cluster = wi_e2e::cluster().await;
    let home = tempfile::tempdir().unwrap();
    for extra in [
        "certificates.source=self-managed",
        "certificates.source=cert-manager",
        "metrics.serviceMonitor.enabled=true,metrics.prometheusRule.enabled=true,metrics.dashboard.enabled=true",
    ] {
        let tenant = format!("azureTenantID={TENANT}");
        let out = helm(
            &cluster,
            home.path(),
            &["lint", "--strict", CHART, "--set", &tenant, "--set", extra],
        )
        .await;
        assert!(
            out.success,
            "helm lint {extra}:\n{}{}",
            out.stdout, out.stderr
        );
    }
    // A clear refusal, not a webhook that cannot start.
    for (set, needle) in [
        ("logLevel=info", "azureTenantID is required"),
        (
            "certificates.source=vault",
            "certificates.source must be self-managed or cert-manager",
        ),
    ] {
        let mut args = vec!["template", "wi-webhook", CHART, "--set", set];
        let tenant = format!("azureTenantID={TENANT}");
        if !set.starts_with("logLevel") {
            args.extend(["--set", &tenant]);
        }
        let out = helm(&cluster, home.path(), &args).await;
        assert!(!out.success, "{set} rendered:\n{}", out.stdout);
        assert!(out.stderr.contains(needle), "{set}: {}", out.stderr);
    }
}

/// `kubectl kustomize` of `overlay` plus manifests/observability, with the tenant merged
/// into the generated ConfigMap: the kustomize install with the chart's settings.
async fn kustomize(cluster: &wi_e2e::Cluster, overlay: &str) -> Vec<Value> {
    // kustomize takes only relative paths to other kustomizations: a directory in target/.
    let target = repo().join("target");
    std::fs::create_dir_all(&target).unwrap();
    let dir = tempfile::Builder::new()
        .prefix("helm-kustomize-")
        .tempdir_in(&target)
        .unwrap();
    std::fs::write(
        dir.path().join("kustomization.yaml"),
        format!(
            "resources:\n  - ../../manifests/overlays/{overlay}\n  - ../../manifests/observability\n\
             configMapGenerator:\n  - name: wi-webhook-config\n    namespace: wi-webhook-system\n\
             \x20   behavior: merge\n    literals:\n      - AZURE_TENANT_ID={TENANT}\n"
        ),
    )
    .unwrap();
    let out = cluster
        .kubectl(&["kustomize", dir.path().to_str().unwrap()], "")
        .await
        .unwrap();
    assert!(out.success, "kustomize {overlay}: {}", out.stderr);
    yaml_documents(&out.stdout)
}

/// Objects by (kind, namespace, name), with what legitimately differs normalised: Helm's
/// labels, the CRD's keep policy and the config checksum (Helm's side); the generated
/// ConfigMap's hash suffix (kustomize's); the Namespace, which Helm creates itself
/// (`--create-namespace`) and the chart leaves to the installer.
fn normalised(docs: Vec<Value>, from_helm: bool) -> BTreeMap<(String, String, String), Value> {
    let hashed = regex_free_hash_suffix;
    docs.into_iter()
        .filter(|d| d["kind"] != "Namespace")
        .map(|mut d| {
            if from_helm {
                let meta = d["metadata"].as_object_mut().unwrap();
                if let Some(labels) = meta.get_mut("labels").and_then(Value::as_object_mut) {
                    for label in HELM_LABELS {
                        labels.remove(label);
                    }
                }
                if let Some(annotations) =
                    meta.get_mut("annotations").and_then(Value::as_object_mut)
                {
                    annotations.remove("helm.sh/resource-policy");
                    if annotations.is_empty() {
                        meta.remove("annotations");
                    }
                }
                if d["kind"] == "Deployment" {
                    let template = d["spec"]["template"]["metadata"].as_object_mut().unwrap();
                    let annotations = template["annotations"].as_object_mut().unwrap();
                    assert!(annotations.remove("checksum/config").is_some());
                    if annotations.is_empty() {
                        template.remove("annotations");
                    }
                }
            } else {
                if d["kind"] == "ConfigMap" {
                    let name = d["metadata"]["name"].as_str().unwrap().to_owned();
                    d["metadata"]["name"] = hashed(&name).into();
                }
                if d["kind"] == "Deployment" {
                    for c in d["spec"]["template"]["spec"]["containers"]
                        .as_array_mut()
                        .unwrap()
                    {
                        for from in c["envFrom"].as_array_mut().into_iter().flatten() {
                            let name = from["configMapRef"]["name"].as_str().unwrap().to_owned();
                            from["configMapRef"]["name"] = hashed(&name).into();
                        }
                    }
                }
            }
            let key = (
                d["kind"].as_str().unwrap().to_owned(),
                d["metadata"]["namespace"].as_str().unwrap_or("").to_owned(),
                d["metadata"]["name"].as_str().unwrap().to_owned(),
            );
            (key, d)
        })
        .collect()
}

/// `wi-webhook-config-<10 hash characters>` -> `wi-webhook-config`; other names unchanged.
fn regex_free_hash_suffix(name: &str) -> String {
    match name.rsplit_once('-') {
        Some((base, hash))
            if base == "wi-webhook-config"
                && hash.len() == 10
                && hash.chars().all(|c| c.is_ascii_alphanumeric()) =>
        {
            base.to_owned()
        }
        _ => name.to_owned(),
    }
}

/// Every path where `a` and `b` differ.
fn differences(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for key in x.keys().chain(y.keys().filter(|k| !x.contains_key(*k))) {
                let p = format!("{path}/{key}");
                match (x.get(key), y.get(key)) {
                    (Some(v), Some(w)) => differences(&p, v, w, out),
                    (Some(v), None) => out.push(format!("{p}: only kustomize has {v}")),
                    (None, Some(w)) => out.push(format!("{p}: only helm has {w}")),
                    (None, None) => {}
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (v, w)) in x.iter().zip(y).enumerate() {
                differences(&format!("{path}/{i}"), v, w, out);
            }
        }
        _ if a != b => out.push(format!("{path}: kustomize {a}, helm {b}")),
        _ => {}
    }
}

#[tokio::test]
async fn chart_renders_the_kustomize_install_object_by_object() {
    let cluster = wi_e2e::cluster().await;
    let home = tempfile::tempdir().unwrap();
    for source in ["self-managed", "cert-manager"] {
        let kustomized = normalised(kustomize(&cluster, source).await, false);
        let out = helm(
            &cluster,
            home.path(),
            &[
                "template",
                "wi-webhook",
                CHART,
                "--namespace",
                "wi-webhook-system",
                "--set",
                &format!("azureTenantID={TENANT},certificates.source={source}"),
                "--set",
                "metrics.serviceMonitor.enabled=true,metrics.prometheusRule.enabled=true",
                "--set",
                "metrics.dashboard.enabled=true",
            ],
        )
        .await;
        assert!(out.success, "helm template ({source}): {}", out.stderr);
        let rendered = normalised(yaml_documents(&out.stdout), true);
        assert_eq!(
            kustomized.keys().collect::<Vec<_>>(),
            rendered.keys().collect::<Vec<_>>(),
            "{source}: not the same objects"
        );
        let mut diffs = Vec::new();
        for (key, want) in &kustomized {
            differences(&format!("{key:?}"), want, &rendered[key], &mut diffs);
        }
        assert!(diffs.is_empty(), "{source}:\n{}", diffs.join("\n"));
        // The comparison covers what matters: both sources, the webhooks, the monitoring.
        for kind in [
            "MutatingWebhookConfiguration",
            "CustomResourceDefinition",
            "ServiceMonitor",
            "PrometheusRule",
        ] {
            assert!(kustomized.keys().any(|(k, _, _)| k == kind), "{kind}");
        }
        let certificates = kustomized.keys().any(|(k, _, _)| k == "Certificate");
        assert_eq!(certificates, source == "cert-manager");
    }
}

/// `helm template` of the chart with `values` in namespace `ns`: the objects by kind/name.
async fn render(
    cluster: &wi_e2e::Cluster,
    home: &Path,
    ns: &str,
    values: &Value,
) -> BTreeMap<(String, String), Value> {
    let path = home.join("values.yaml");
    std::fs::write(&path, values.to_string()).unwrap();
    let out = helm(
        cluster,
        home,
        &[
            "template",
            "wi-webhook",
            CHART,
            "-n",
            ns,
            "-f",
            path.to_str().unwrap(),
        ],
    )
    .await;
    assert!(out.success, "helm template: {}", out.stderr);
    yaml_documents(&out.stdout)
        .into_iter()
        .map(|d| {
            let key = (
                d["kind"].as_str().unwrap().to_owned(),
                d["metadata"]["name"].as_str().unwrap().to_owned(),
            );
            (key, d)
        })
        .collect()
}

/// A values file written for the upstream chart renders with every value where the
/// upstream chart puts it; its keys this chart does not have are ignored, not refused.
#[tokio::test]
async fn upstream_chart_values_land_where_upstream_puts_them() {
    let cluster = wi_e2e::cluster().await;
    let home = tempfile::tempdir().unwrap();
    let toleration = json!([{"key": "CriticalAddonsOnly", "operator": "Exists"}]);
    let affinity = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": "agentpool", "operator": "In", "values": ["system"]}]}]}}});
    let spread = json!([{"maxSkew": 2, "topologyKey": "kubernetes.io/hostname",
        "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": {"matchLabels": {"app": "x"}}}]);
    let selector = json!({"matchLabels": {"azure-workload-identity": "enabled"}});
    let resources = json!({"limits": {"cpu": "100m", "memory": "30Mi"}, "requests": {"cpu": "100m", "memory": "20Mi"}});
    let values = json!({
        "replicaCount": 3,
        "image": {"repository": "registry.example/wi-webhook", "release": "v9.9.9", "pullPolicy": "Always"},
        "imagePullSecrets": [{"name": "pull"}],
        "nodeSelector": {"kubernetes.io/os": "linux", "pool": "system"},
        "resources": resources,
        "tolerations": toleration,
        "affinity": affinity,
        "topologySpreadConstraints": spread,
        "service": {"type": "ClusterIP", "port": 443, "targetPort": 9443},
        "azureEnvironment": "AzureChinaCloud",
        "azureTenantID": TENANT,
        "logLevel": "debug",
        "metricsAddr": ":8095",
        "metricsBackend": "prometheus",
        "priorityClassName": "platform-critical",
        "mutatingWebhookAnnotations": {"team": "platform"},
        "podLabels": {"team": "platform"},
        "podAnnotations": {"example.com/scrape": "true"},
        "mutatingWebhookNamespaceSelector": selector,
        "podDisruptionBudget": {"maxUnavailable": 1},
        "customTokenEndpoint": {"annotationSuffix": ""},
        "extraEnv": [{"name": "WI_MAX_IN_FLIGHT", "value": "64"}],
        "extraVolumes": [{"name": "extra", "emptyDir": {}}],
        "extraVolumeMounts": [{"name": "extra", "mountPath": "/extra"}],
    });
    let objects = render(&cluster, home.path(), "platform", &values).await;
    let named = |kind: &str, name: &str| &objects[&(kind.to_owned(), name.to_owned())];
    let get = |kind: &str| named(kind, "wi-webhook");

    let deployment = get("Deployment");
    assert_eq!(deployment["metadata"]["namespace"], "platform");
    assert_eq!(deployment["spec"]["replicas"], 3);
    let pod = &deployment["spec"]["template"];
    assert_eq!(pod["metadata"]["labels"]["team"], "platform");
    assert_eq!(pod["metadata"]["annotations"]["example.com/scrape"], "true");
    let spec = &pod["spec"];
    assert_eq!(spec["imagePullSecrets"], json!([{"name": "pull"}]));
    assert_eq!(spec["nodeSelector"], values["nodeSelector"]);
    assert_eq!(spec["tolerations"], toleration);
    assert_eq!(spec["affinity"], affinity);
    assert_eq!(spec["topologySpreadConstraints"], spread);
    assert_eq!(spec["priorityClassName"], "platform-critical");
    assert_eq!(spec["volumes"][1], json!({"name": "extra", "emptyDir": {}}));
    let container = &spec["containers"][0];
    assert_eq!(container["image"], "registry.example/wi-webhook:v9.9.9");
    assert_eq!(container["imagePullPolicy"], "Always");
    assert_eq!(container["resources"], resources);
    assert!(
        container["env"]
            .as_array()
            .unwrap()
            .contains(&json!({"name": "WI_MAX_IN_FLIGHT", "value": "64"}))
    );
    assert_eq!(
        container["volumeMounts"][1],
        json!({"name": "extra", "mountPath": "/extra"})
    );
    let config = &named("ConfigMap", "wi-webhook-config")["data"];
    assert_eq!(config["AZURE_TENANT_ID"], TENANT);
    assert_eq!(config["AZURE_ENVIRONMENT"], "AzureChinaCloud");
    assert_eq!(config["WI_LOG_LEVEL"], "debug");
    let pdb = &get("PodDisruptionBudget")["spec"];
    assert_eq!(pdb["maxUnavailable"], 1);
    assert!(pdb.get("minAvailable").is_none(), "{pdb}");

    let mutating = get("MutatingWebhookConfiguration");
    assert_eq!(mutating["metadata"]["annotations"]["team"], "platform");
    for kind in [
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ] {
        for w in get(kind)["webhooks"].as_array().unwrap() {
            assert_eq!(w["clientConfig"]["service"]["namespace"], "platform");
            let name = w["name"].as_str().unwrap();
            // The pool checks keep their own selector, which the webhook keeps scoped to the
            // pools' namespaces: a values selector must not take a pool's namespace out of them.
            if name.contains(".pool-namespaces.") || name.contains(".other-namespaces.") {
                let scope = w["namespaceSelector"]["matchExpressions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|e| {
                        e["values"]
                            .as_array()
                            .unwrap()
                            .contains(&json!("no-pool.wi-webhook.dev"))
                    });
                assert!(scope, "{kind} {name} lost its scoping expression");
            } else if w.get("namespaceSelector").is_some() {
                assert_eq!(w["namespaceSelector"], selector, "{kind} {name}");
            }
        }
    }

    // Without a selector, the webhooks skip the release's own namespace (not the default
    // wi-webhook-system) and kube-system.
    let objects = render(
        &cluster,
        home.path(),
        "platform",
        &json!({"azureTenantID": TENANT}),
    )
    .await;
    let pods = &objects[&(
        "MutatingWebhookConfiguration".to_owned(),
        "wi-webhook".to_owned(),
    )]["webhooks"][0];
    assert_eq!(
        pods["namespaceSelector"]["matchExpressions"][0]["values"],
        json!(["kube-system", "platform"])
    );
}
