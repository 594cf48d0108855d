//! The committed install (`manifests/`) against what the webhook prints and expects, without
//! a cluster. The end-to-end tests (`tests/tests/install.rs`) apply the same files to a real
//! API server; these catch drift and broken invariants before that, in a second.
//!
//! Regenerate the generated files with:
//!   cargo run -p wi-webhook -- crd > manifests/base/crd-agentpools.yaml
//!   cargo run -p wi-webhook -- webhook-config --namespace wi-webhook-system \
//!     --service wi-webhook > manifests/base/webhook-configurations.yaml
//! and copy both, and manifests/observability's rules and dashboard, into the chart:
//!   cp manifests/base/{crd-agentpools,webhook-configurations}.yaml \
//!     manifests/observability/{prometheusrule.yaml,wi-webhook-dashboard.json} \
//!     charts/wi-webhook/files/

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const NAMESPACE: &str = "wi-webhook-system";
const NAME: &str = "wi-webhook";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// `wi-webhook ARGS...` (the binary of this build): its stdout.
fn wi_webhook(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_wi-webhook"))
        .args(args)
        .output()
        .expect("running wi-webhook");
    assert!(
        out.status.success(),
        "wi-webhook {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// Every document of a (multi-document) YAML file, as JSON values.
fn documents(path: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

#[test]
fn committed_webhook_configurations_are_what_the_webhook_prints() {
    let printed = wi_webhook(&[
        "webhook-config",
        "--namespace",
        NAMESPACE,
        "--service",
        NAME,
    ]);
    assert!(
        read("manifests/base/webhook-configurations.yaml") == printed,
        "manifests/base/webhook-configurations.yaml is stale: run `cargo run -p wi-webhook -- \
         webhook-config --namespace {NAMESPACE} --service {NAME} > \
         manifests/base/webhook-configurations.yaml`"
    );
}

#[test]
fn committed_crd_is_what_the_webhook_prints() {
    assert!(
        read("manifests/base/crd-agentpools.yaml") == wi_webhook(&["crd"]),
        "manifests/base/crd-agentpools.yaml is stale: run `cargo run -p wi-webhook -- crd > \
         manifests/base/crd-agentpools.yaml`"
    );
}

/// What the issue and the upstream users' incidents ask of the pod webhook.
#[test]
fn pod_webhook_is_scoped_and_fails_closed() {
    let docs = documents("manifests/base/webhook-configurations.yaml");
    let mutating = find(&docs, "MutatingWebhookConfiguration", NAME);
    let webhooks = mutating["webhooks"].as_array().unwrap();
    assert_eq!(webhooks.len(), 1);
    let pods = &webhooks[0];
    assert_eq!(
        pods["objectSelector"]["matchExpressions"][0],
        serde_json::json!({"key": "azure.workload.identity/use", "operator": "In", "values": ["true"]})
    );
    let excluded = &pods["namespaceSelector"]["matchExpressions"][0];
    assert_eq!(excluded["key"], "kubernetes.io/metadata.name");
    assert_eq!(excluded["operator"], "NotIn");
    let values: BTreeSet<&str> = excluded["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(values, BTreeSet::from(["kube-system", NAMESPACE]));
    assert_eq!(pods["failurePolicy"], "Fail");
    assert_eq!(pods["sideEffects"], "None");
    assert_eq!(pods["reinvocationPolicy"], "IfNeeded");
    assert_eq!(pods["matchPolicy"], "Equivalent");
    assert_eq!(pods["admissionReviewVersions"], serde_json::json!(["v1"]));
    // Measured p99 of an admission is well under a millisecond (README, Operations); a cache
    // miss adds one GET bounded by --sa-lookup-timeout-ms (2 s). 10 s leaves room for both
    // and for a slow API server, and stays below the API server's own 30 s maximum.
    let timeout = pods["timeoutSeconds"].as_i64().unwrap();
    assert!((5..=15).contains(&timeout), "timeoutSeconds {timeout}");
    // Every webhook of both configurations calls the Service on 443.
    let validating = find(&docs, "ValidatingWebhookConfiguration", NAME);
    for w in webhooks
        .iter()
        .chain(validating["webhooks"].as_array().unwrap())
    {
        let service = &w["clientConfig"]["service"];
        assert_eq!(service["name"], NAME, "{}", w["name"]);
        assert_eq!(service["namespace"], NAMESPACE, "{}", w["name"]);
        assert_eq!(service["port"], 443, "{}", w["name"]);
        assert!(
            w["clientConfig"].get("caBundle").is_none(),
            "{}: caBundle is injected",
            w["name"]
        );
    }
}

/// The Deployment the issue describes; the API server checks the schema (install.rs), this
/// checks the choices.
#[test]
fn deployment_is_highly_available_restricted_and_drains() {
    let docs = documents("manifests/base/deployment.yaml");
    let d = find(&docs, "Deployment", NAME);
    assert_eq!(d["metadata"]["namespace"], NAMESPACE);
    assert_eq!(d["spec"]["replicas"], 2);
    assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"], 0);
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], NAME);
    assert_eq!(pod["priorityClassName"], "system-cluster-critical");
    let spread = pod["topologySpreadConstraints"].as_array().unwrap();
    assert!(
        spread
            .iter()
            .any(|c| c["topologyKey"] == "kubernetes.io/hostname"
                && c["whenUnsatisfiable"] == "DoNotSchedule"),
        "one replica per node"
    );
    let sc = &pod["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["runAsUser"], 65532);
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");

    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    let csc = &c["securityContext"];
    assert_eq!(csc["allowPrivilegeEscalation"], false);
    assert_eq!(csc["readOnlyRootFilesystem"], true);
    assert_eq!(csc["runAsNonRoot"], true);
    assert_eq!(csc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(csc["seccompProfile"]["type"], "RuntimeDefault");

    // Ports and probes of the contract.
    let port = |name: &str| {
        c["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no port {name}"))["containerPort"]
            .as_i64()
            .unwrap()
    };
    assert_eq!(port("https"), 9443);
    assert_eq!(port("metrics"), 8095);
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], "metrics");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["livenessProbe"]["httpGet"]["port"], "metrics");

    // Requests and limits on memory, limit above request.
    let mem = |which: &str| mebibytes(c["resources"][which]["memory"].as_str().unwrap());
    assert!(mem("requests") > 0 && mem("limits") > mem("requests"));
    assert!(c["resources"]["requests"]["cpu"].is_string());

    // The tenant and the cloud from the ConfigMap.
    assert_eq!(c["envFrom"][0]["configMapRef"]["name"], "wi-webhook-config");
    let config = read("manifests/base/config.env");
    for key in ["AZURE_TENANT_ID=", "AZURE_ENVIRONMENT="] {
        assert!(
            config.lines().any(|l| l.starts_with(key)),
            "config.env has no {key}"
        );
    }

    // Termination: preStop sleep + the drain fit in the grace period, with room to spare.
    let env = |name: &str| {
        c["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("no env {name}"))
            .clone()
    };
    let drain: i64 = env("WI_DRAIN_SECONDS")["value"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_i64()
        .unwrap_or(0);
    let grace = pod["terminationGracePeriodSeconds"].as_i64().unwrap();
    assert!(
        grace > pre_stop + drain,
        "terminationGracePeriodSeconds {grace} <= preStop {pre_stop} + drain {drain}"
    );
    assert_eq!(
        env("POD_NAMESPACE")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );

    // The serving Secret where `serve` looks by default.
    let mount = &c["volumeMounts"][0];
    assert_eq!(mount["mountPath"], "/etc/wi-webhook/tls");
    assert_eq!(mount["readOnly"], true);
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    assert_eq!(volume["secret"]["secretName"], "wi-webhook-tls");
    // No API token for pods merely using the ServiceAccount; this pod asks for its one.
    assert_eq!(pod["automountServiceAccountToken"], true);
    let sa = &documents("manifests/base/serviceaccount.yaml")[0];
    assert_eq!(sa["automountServiceAccountToken"], false);
}

/// "128Mi" -> 128; "1Gi" -> 1024.
fn mebibytes(quantity: &str) -> u64 {
    if let Some(n) = quantity.strip_suffix("Mi") {
        n.parse().unwrap()
    } else if let Some(n) = quantity.strip_suffix("Gi") {
        n.parse::<u64>().unwrap() * 1024
    } else {
        panic!("memory quantity {quantity:?}: use Mi or Gi")
    }
}

#[test]
fn pdb_and_service_select_the_deployments_pods() {
    let deployment = &documents("manifests/base/deployment.yaml")[0];
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    let pdb = find(
        &documents("manifests/base/pdb.yaml"),
        "PodDisruptionBudget",
        NAME,
    )
    .clone();
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert_eq!(&pdb["spec"]["selector"]["matchLabels"], labels);
    let service = find(&documents("manifests/base/service.yaml"), "Service", NAME).clone();
    assert_eq!(&service["spec"]["selector"], labels);
    let https = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "https")
        .unwrap()
        .clone();
    assert_eq!(https["port"], 443);
    assert_eq!(https["targetPort"], "https");
}

/// Nothing under manifests/ is untested YAML: every file is part of a kustomization, and
/// the end-to-end tests apply both overlays (which include the base).
#[test]
fn every_manifest_is_part_of_a_kustomization() {
    let root = repo().join("manifests");
    let mut files = BTreeSet::new();
    let mut listed = BTreeSet::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let name = path.file_name().unwrap().to_str().unwrap();
            if name == "kustomization.yaml" {
                let k: Value =
                    serde_saphyr::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
                let mut refs: Vec<&str> = k["resources"]
                    .as_array()
                    .map(|r| r.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                for generator in k["configMapGenerator"].as_array().into_iter().flatten() {
                    refs.extend(
                        generator["envs"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(Value::as_str),
                    );
                    refs.extend(
                        generator["files"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(Value::as_str),
                    );
                }
                for r in refs {
                    let target = path.parent().unwrap().join(r);
                    let target = target
                        .canonicalize()
                        .unwrap_or_else(|e| panic!("{}: {r}: {e}", path.display()));
                    listed.insert(target);
                }
            } else {
                files.insert(path.canonicalize().unwrap());
            }
        }
    }
    let unlisted: Vec<_> = files.difference(&listed).collect();
    assert!(
        unlisted.is_empty(),
        "files under manifests/ no kustomization uses: {unlisted:?}"
    );
    // Both overlays build on the base.
    for overlay in ["self-managed", "cert-manager"] {
        let k: Value = serde_saphyr::from_str(&read(&format!(
            "manifests/overlays/{overlay}/kustomization.yaml"
        )))
        .unwrap();
        assert!(
            k["resources"]
                .as_array()
                .unwrap()
                .contains(&Value::from("../../base")),
            "{overlay} does not build on the base"
        );
    }
}

/// The self-managed overlay runs `serve` with flags of the self-managed certificate mode.
/// Until `serve` has that mode (`--self-managed-certs`), only the shape is checked; from
/// then on every flag the overlay passes, and the POD_NAMESPACE variable it relies on for
/// `--cert-namespace`, must be ones `serve --help` documents.
#[test]
fn self_managed_overlay_passes_flags_serve_knows() {
    let kustomization: Value =
        serde_saphyr::from_str(&read("manifests/overlays/self-managed/kustomization.yaml"))
            .unwrap();
    let args: Vec<String> = kustomization["patches"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["patch"].as_str())
        .filter_map(|text| serde_saphyr::from_str::<Value>(text).ok())
        .filter_map(|ops| ops.as_array().cloned())
        .flatten()
        .find(|op| op["path"] == "/spec/template/spec/containers/0/args")
        .expect("the overlay sets the container's args")["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(args[0], "serve");
    assert!(args.iter().any(|a| a == "--self-managed-certs"), "{args:?}");

    let help = wi_webhook(&["serve", "--help"]);
    if !help.contains("--self-managed-certs") {
        eprintln!("serve has no --self-managed-certs yet: flag names not checked");
        return;
    }
    for arg in &args[1..] {
        let flag = arg.split('=').next().unwrap();
        assert!(help.contains(flag), "serve --help does not know {flag}");
    }
    assert!(
        help.contains("POD_NAMESPACE"),
        "--cert-namespace does not read POD_NAMESPACE"
    );
}

/// The chart (charts/wi-webhook) renders these files of manifests/ (Helm reads only files
/// inside the chart): its copies must be the same bytes.
#[test]
fn the_charts_copies_are_the_committed_manifests() {
    for (chart, committed) in [
        (
            "charts/wi-webhook/files/crd-agentpools.yaml",
            "manifests/base/crd-agentpools.yaml",
        ),
        (
            "charts/wi-webhook/files/webhook-configurations.yaml",
            "manifests/base/webhook-configurations.yaml",
        ),
        (
            "charts/wi-webhook/files/prometheusrule.yaml",
            "manifests/observability/prometheusrule.yaml",
        ),
        (
            "charts/wi-webhook/files/wi-webhook-dashboard.json",
            "manifests/observability/wi-webhook-dashboard.json",
        ),
    ] {
        assert!(
            read(chart) == read(committed),
            "{chart} is stale: cp {committed} {chart}"
        );
    }
}

/// The monitoring is its own kustomization, outside the base: a cluster without the
/// Prometheus operator's CRDs installs the webhook, and the ServiceMonitor selects the
/// base's Service on its metrics port.
#[test]
fn observability_is_separate_and_scrapes_the_metrics_port() {
    let base: Value = serde_saphyr::from_str(&read("manifests/base/kustomization.yaml")).unwrap();
    assert!(
        !base["resources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r.as_str().unwrap().contains("observability")),
        "the base includes the monitoring"
    );
    let monitor = find(
        &documents("manifests/observability/servicemonitor.yaml"),
        "ServiceMonitor",
        NAME,
    )
    .clone();
    let service = find(&documents("manifests/base/service.yaml"), "Service", NAME).clone();
    for (key, value) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(&service["metadata"]["labels"][key], value, "label {key}");
    }
    assert_eq!(
        monitor["spec"]["namespaceSelector"]["matchNames"],
        serde_json::json!([NAMESPACE])
    );
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["path"], "/metrics");
    assert!(
        service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == endpoint["port"]),
        "the Service has no port {}",
        endpoint["port"]
    );
}

/// The chart installs the image of this version, as the kustomize base does.
#[test]
fn chart_and_base_install_this_version() {
    let chart: Value = serde_saphyr::from_str(&read("charts/wi-webhook/Chart.yaml")).unwrap();
    assert_eq!(chart["appVersion"], env!("CARGO_PKG_VERSION"));
    assert_eq!(chart["version"], env!("CARGO_PKG_VERSION"));
    let base: Value = serde_saphyr::from_str(&read("manifests/base/kustomization.yaml")).unwrap();
    assert_eq!(base["images"][0]["newTag"], env!("CARGO_PKG_VERSION"));
}
