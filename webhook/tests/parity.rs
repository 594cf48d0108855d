//! Parity: `wi-webhook mutate`, `wi-webhook audit` and the cluster decide alike.
//!
//! Every golden case of `tests/golden/` and a few hundred generated Pods and workloads go,
//! one object at a time with the same ServiceAccounts and AgentPools:
//! - through the webhook's router, called as the API server calls it (`parity/apiserver.rs`:
//!   the generated webhook configurations choose the webhooks; a workload is created, then a
//!   pod from its template as its controller would create it);
//! - through `wi-webhook mutate` (its library entry point, as the binary runs it);
//! - through `wi-webhook audit -f` (JSON findings), and again over what `mutate` printed,
//!   so an injected pod is judged as the pod it was before.
//!
//! Each must give the same verdict (denied or not; for `audit`, an Enforce finding or one
//! that is no pool's) and the same rule ids; a denied Pod gets the cluster's very message.
//! The test knows which kinds the API server creates pods from on its own (`API`), not from
//! the webhook's table, so a kind the table misses is a failure here too.

#[path = "parity/apiserver.rs"]
mod apiserver;
#[path = "parity/cases.rs"]
mod cases;
#[path = "parity/generate.rs"]
mod generate;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use apiserver::{ApiServer, Gvkr, rule_ids};
use cases::{Case, golden_cases, scratch, write_yaml};
use serde_json::Value;
use wi_webhook::cli::NativeSidecar;
use wi_webhook::cli::audit::audit_files;
use wi_webhook::cli::mutate::execute;

pub const TENANT: &str = "00000000-0000-0000-0000-000000000001";

/// What the API server creates pods from, who creates them, and where the template is.
const API: [(Gvkr, &str, &str); 8] = [
    (("", "v1", "Pod", "pods"), "", ""),
    (
        ("apps", "v1", "Deployment", "deployments"),
        "/spec/template",
        "replicaset-controller",
    ),
    (
        ("apps", "v1", "StatefulSet", "statefulsets"),
        "/spec/template",
        "statefulset-controller",
    ),
    (
        ("apps", "v1", "DaemonSet", "daemonsets"),
        "/spec/template",
        "daemon-set-controller",
    ),
    (
        ("apps", "v1", "ReplicaSet", "replicasets"),
        "/spec/template",
        "replicaset-controller",
    ),
    (
        ("batch", "v1", "Job", "jobs"),
        "/spec/template",
        "job-controller",
    ),
    (
        ("batch", "v1", "CronJob", "cronjobs"),
        "/spec/jobTemplate/spec/template",
        "job-controller",
    ),
    (
        ("", "v1", "ReplicationController", "replicationcontrollers"),
        "/spec/template",
        "replication-controller",
    ),
];

/// Whoever applies a manifest.
const PERSON: &str = "kubernetes-admin";

#[derive(Debug, PartialEq, Eq)]
struct Verdict {
    denied: bool,
    rules: BTreeSet<String>,
}

/// The API group and kind of an object, from its own fields.
fn api_entry(object: &Value) -> Option<&'static (Gvkr, &'static str, &'static str)> {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    API.iter()
        .find(|((g, v, k, _), _, _)| *g == group && *v == version && object["kind"] == *k)
}

/// The cluster's decision: the object's CREATE, then (a workload) its first pod's. The
/// message is the denial's, where `mutate` must print the same.
async fn cluster(server: &ApiServer, object: &Value, namespace: &str) -> (Verdict, Option<String>) {
    let &(resource, pointer, controller) = api_entry(object).expect("a known kind");
    let first = server
        .create(resource, namespace, PERSON, object.clone())
        .await;
    let mut verdict = Verdict {
        denied: first.denied.is_some(),
        rules: first.rules,
    };
    if first.denied.is_some() || pointer.is_empty() {
        return (verdict, first.denied);
    }
    let template = object.pointer(pointer).expect("a template");
    let mut pod = serde_json::json!({"apiVersion": "v1", "kind": "Pod"});
    pod["metadata"] = template.get("metadata").cloned().unwrap_or_default();
    pod["metadata"]["generateName"] =
        format!("{}-", object["metadata"]["name"].as_str().unwrap()).into();
    pod["spec"] = template["spec"].clone();
    let user = format!("system:serviceaccount:kube-system:{controller}");
    let second = server.create(API[0].0, namespace, &user, pod).await;
    verdict.denied = second.denied.is_some();
    verdict.rules.extend(second.rules);
    (verdict, None)
}

fn audit_verdict(file: &Path, case: &Case) -> Result<Verdict, String> {
    let run = audit_files(&case.audit_args(file));
    if run.code == 2 {
        return Err(run.stderr);
    }
    let findings: Vec<Value> = serde_json::from_str(&run.stdout).expect("JSON findings");
    // A client id that is no GUID outside every pool's namespaces is admitted by the cluster
    // and reported by the audit alone (a finding of no pool): the one designed difference.
    let findings: Vec<Value> = findings
        .into_iter()
        .filter(|f| !(f["rule"] == "identity-client-id-format" && f["pool"] == ""))
        .collect();
    Ok(Verdict {
        denied: findings
            .iter()
            .any(|f| f["enforcement"] == "Enforce" || f["enforcement"] == ""),
        rules: findings
            .iter()
            .map(|f| f["rule"].as_str().unwrap().to_string())
            .collect(),
    })
}

/// Every difference between the entry points over one case.
async fn compare(case: &Case) -> Vec<String> {
    let mut failures = Vec::new();
    let args = case.mutate_args(Path::new("-"), "yaml");
    let server = ApiServer::new(case.admitter(&args));
    for (i, object) in case.objects.iter().enumerate() {
        let what = format!(
            "{} #{} ({} {})",
            case.name,
            i + 1,
            object["kind"].as_str().unwrap_or("?"),
            object["metadata"]["name"].as_str().unwrap_or("?")
        );
        let file = scratch(&format!("{}-{}", case.name, i + 1));
        let mut docs: Vec<&Value> = case.state.iter().collect();
        docs.push(object);
        write_yaml(&file, &docs, "");
        let namespace = object["metadata"]["namespace"]
            .as_str()
            .map_or_else(|| case.default_namespace(), str::to_string);

        let (cluster, message) = cluster(&server, object, &namespace).await;
        let run = execute(&case.mutate_args(&file, "yaml")).await;
        let mutate = Verdict {
            denied: run.code == 1,
            rules: rule_ids(&run.stderr),
        };
        let audit = audit_verdict(&file, case).unwrap_or_else(|e| panic!("{what}: audit: {e}"));
        let mut report = String::new();
        if run.code == 2 {
            let _ = writeln!(report, "mutate exits 2: {}", run.stderr);
        }
        if mutate != cluster {
            let _ = writeln!(report, "mutate {mutate:?}, cluster {cluster:?}");
        }
        if audit != cluster {
            let _ = writeln!(report, "audit {audit:?}, cluster {cluster:?}");
        }
        if let Some(m) = message.filter(|m| !run.stderr.contains(m.as_str())) {
            let _ = writeln!(
                report,
                "the cluster's message\n  {m}\nis not mutate's\n  {}",
                run.stderr
            );
        }
        if run.code == 0 {
            // The injected object, audited as it is stored: the same findings.
            let stored = scratch(&format!("{}-{}-stored", case.name, i + 1));
            write_yaml(&stored, &case.state.iter().collect::<Vec<_>>(), &run.stdout);
            match audit_verdict(&stored, case) {
                Ok(after) if after == cluster => {}
                other => {
                    let _ = writeln!(
                        report,
                        "audit of the injected object {other:?}, cluster {cluster:?}"
                    );
                }
            }
        }
        if !report.is_empty() {
            failures.push(format!("--- {what}\n{report}"));
        }
    }
    failures
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn golden_cases_are_decided_alike_everywhere() {
    let rt = runtime();
    let cases = golden_cases();
    assert!(cases.len() >= 60, "only {} golden cases", cases.len());
    let mut failures = Vec::new();
    let mut objects = 0;
    for case in &cases {
        // A configuration `mutate` refuses (exit 2) is refused by `audit` too where it has
        // the flag; `serve` refuses to start with it.
        let config_error = {
            let args = case.mutate_args(Path::new("-"), "yaml");
            let native = args.mutation.native_sidecar != NativeSidecar::Never;
            args.mutation.config(native).err()
        };
        if let Some(e) = config_error {
            if !case.mutate_only_flags() {
                let file = scratch(&format!("{}-config", case.name));
                write_yaml(&file, &case.state.iter().collect::<Vec<_>>(), "");
                assert!(
                    audit_verdict(&file, case).is_err(),
                    "{}: mutate refuses its configuration ({e}), audit does not",
                    case.name
                );
            }
            continue;
        }
        objects += case.objects.len();
        failures.extend(rt.block_on(compare(case)));
    }
    assert!(objects >= 80, "only {objects} objects in the golden cases");
    assert!(
        failures.is_empty(),
        "{} object(s) decided differently:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn generated_pods_and_workloads_are_decided_alike_everywhere() {
    let rt = runtime();
    let mut rng = generate::Rng::new(0x5ca1ab1e);
    let mut failures = Vec::new();
    let mut denied = 0;
    for (n, mode) in ["Enforce", "Warn", "Audit"].iter().enumerate() {
        let case = Case {
            name: format!("generated-{}", mode.to_lowercase()),
            state: generate::state(mode),
            objects: (0..110)
                .map(|i| generate::object(&mut rng, n * 1000 + i))
                .collect(),
            args: Vec::new(),
        };
        failures.extend(rt.block_on(compare(&case)));
        let server = ApiServer::new(case.admitter(&case.mutate_args(Path::new("-"), "yaml")));
        for object in &case.objects {
            let ns = object["metadata"]["namespace"].as_str().unwrap();
            denied += usize::from(rt.block_on(cluster(&server, object, ns)).0.denied);
        }
    }
    // The generator must reach both outcomes, or the comparison proves little.
    assert!((60..270).contains(&denied), "{denied} of 330 denied");
    assert!(
        failures.is_empty(),
        "{} object(s) decided differently:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
