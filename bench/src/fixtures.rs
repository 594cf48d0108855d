//! The pods and AgentPools of the benchmarks, shared by the criterion benches
//! (`webhook/benches/decision.rs` includes this file) and the load generator.
//!
//! Pods look the way the API server sends them to a webhook: defaults applied, owner
//! reference and managed fields set, no name yet (a ReplicaSet's pods have a generateName).

use serde_json::{Value, json};

pub const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
pub const NAMESPACE: &str = "ado-agents-omtest1";
pub const SERVICE_ACCOUNT: &str = "ado-agent-omtest1";
pub const POOL: &str = "omtest1";
pub const CLIENT_ID: &str = "6f1a3f4e-2b7c-4f0e-9a51-3c2d1e0f9a8b";

/// A distinct GUID-shaped client id for the `i`-th generated pool or ServiceAccount.
pub fn client_id(i: usize) -> String {
    format!(
        "{:08x}-0000-4000-8000-{:012x}",
        0xbe00_0000u32 as usize + i,
        i
    )
}

/// One container as the API server defaults it.
fn container(name: &str, env: Vec<Value>, mounts: Vec<Value>) -> Value {
    json!({
        "name": name,
        "image": format!("example.azurecr.io/{name}:1.0.0"),
        "env": env,
        "resources": {
            "limits": {"memory": "2Gi"},
            "requests": {"cpu": "100m", "memory": "512Mi"}
        },
        "volumeMounts": mounts,
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "imagePullPolicy": "IfNotPresent"
    })
}

fn metadata(app: &str) -> Value {
    json!({
        "generateName": format!("{app}-7b8d79dd65-"),
        "namespace": NAMESPACE,
        "creationTimestamp": null,
        "labels": {
            "app": app,
            "azure.workload.identity/use": "true",
            "pod-template-hash": "7b8d79dd65"
        },
        "annotations": {"azure.workload.identity/inject-proxy-sidecar": "true"},
        "ownerReferences": [{
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "name": format!("{app}-7b8d79dd65"),
            "uid": "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
            "controller": true,
            "blockOwnerDeletion": true
        }],
        "managedFields": [{
            "manager": "kube-controller-manager",
            "operation": "Update",
            "apiVersion": "v1",
            "time": "2025-01-01T00:00:00Z",
            "fieldsType": "FieldsV1",
            "fieldsV1": {
                "f:metadata": {
                    "f:annotations": {".": {}, "f:azure.workload.identity/inject-proxy-sidecar": {}},
                    "f:generateName": {},
                    "f:labels": {".": {}, "f:app": {}, "f:azure.workload.identity/use": {}, "f:pod-template-hash": {}},
                    "f:ownerReferences": {".": {}, "k:{\"uid\":\"0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0\"}": {}}
                },
                "f:spec": {
                    "f:automountServiceAccountToken": {},
                    "f:containers": {"k:{\"name\":\"ado-agent-omtest1\"}": {
                        ".": {}, "f:envFrom": {}, "f:image": {}, "f:imagePullPolicy": {}, "f:name": {},
                        "f:resources": {".": {}, "f:limits": {".": {}, "f:memory": {}},
                            "f:requests": {".": {}, "f:cpu": {}, "f:memory": {}}},
                        "f:terminationMessagePath": {}, "f:terminationMessagePolicy": {},
                        "f:volumeMounts": {".": {}, "k:{\"mountPath\":\"/mnt/work\"}": {".": {}, "f:mountPath": {}, "f:name": {}}}
                    }},
                    "f:dnsPolicy": {}, "f:enableServiceLinks": {}, "f:restartPolicy": {},
                    "f:schedulerName": {}, "f:securityContext": {}, "f:serviceAccount": {},
                    "f:serviceAccountName": {}, "f:terminationGracePeriodSeconds": {},
                    "f:volumes": {".": {}, "k:{\"name\":\"temp-data\"}": {".": {}, "f:emptyDir": {".": {}, "f:sizeLimit": {}}, "f:name": {}}}
                }
            }
        }]
    })
}

fn spec(containers: Vec<Value>, init_containers: Vec<Value>) -> Value {
    let mut spec = json!({
        "volumes": [{"name": "temp-data", "emptyDir": {"sizeLimit": "4Gi"}}],
        "containers": containers,
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 30,
        "dnsPolicy": "ClusterFirst",
        "serviceAccountName": SERVICE_ACCOUNT,
        "serviceAccount": SERVICE_ACCOUNT,
        "automountServiceAccountToken": false,
        "securityContext": {},
        "schedulerName": "default-scheduler",
        "enableServiceLinks": true,
        "preemptionPolicy": "PreemptLowerPriority",
        "priority": 0
    });
    if !init_containers.is_empty() {
        spec["initContainers"] = Value::Array(init_containers);
    }
    spec
}

fn pod(app: &str, spec: Value) -> Value {
    json!({"kind": "Pod", "apiVersion": "v1", "metadata": metadata(app), "spec": spec, "status": {}})
}

fn work_mount() -> Value {
    json!({"name": "temp-data", "mountPath": "/mnt/work"})
}

/// The agent pod of `examples/seed-agent.yaml`, as its ReplicaSet creates it.
pub fn seed_pod() -> Value {
    let mut agent = container("ado-agent-omtest1", vec![], vec![work_mount()]);
    let agent = agent.as_object_mut().expect("an object");
    agent.remove("env");
    agent.insert(
        "envFrom".into(),
        json!([{"secretRef": {"name": "ado-agent-omtest1"}}]),
    );
    pod(
        "ado-agent-omtest1",
        spec(vec![Value::Object(agent.clone())], vec![]),
    )
}

fn some_env(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| json!({"name": format!("SETTING_{i:02}"), "value": format!("value-{i}")}))
        .collect()
}

/// A pod with 12 containers and 3 init containers, each with a few env vars and a mount.
pub fn wide_pod() -> Value {
    let containers = (0..12)
        .map(|i| container(&format!("worker-{i:02}"), some_env(4), vec![work_mount()]))
        .collect();
    let inits = (0..3)
        .map(|i| container(&format!("setup-{i}"), some_env(2), vec![work_mount()]))
        .collect();
    pod("ado-agent-omtest1", spec(containers, inits))
}

/// A pod whose AdmissionReview is about `kib` KiB: four containers with thousands of env
/// vars (every one is read by the pool checks) and a large annotation.
pub fn large_pod(kib: usize) -> Value {
    let target = kib * 1024;
    let mut pod = seed_pod();
    let note = "x".repeat(16 * 1024);
    pod["metadata"]["annotations"]["example.com/notes"] = json!(note);
    let base = review(&pod, "uid").len();
    // Each env entry serialises to about 70 bytes.
    let per_entry =
        serde_json::to_vec(&json!({"name": "BULK_0000_00000", "value": "v".repeat(40)}))
            .map(|v| v.len() + 1)
            .unwrap_or(70);
    let entries = target.saturating_sub(base) / per_entry;
    let containers = 4;
    let mut list = Vec::new();
    for c in 0..containers {
        let env: Vec<Value> = (0..entries / containers)
            .map(|i| json!({"name": format!("BULK_{c:04}_{i:05}"), "value": "v".repeat(40)}))
            .collect();
        list.push(container(&format!("agent-{c}"), env, vec![work_mount()]));
    }
    pod["spec"]["containers"] = Value::Array(list);
    pod
}

/// An AdmissionReview v1 of a pod CREATE in the seed's namespace, as the API server sends it.
pub fn review(pod: &Value, uid: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "kind": "AdmissionReview",
        "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": NAMESPACE,
            "operation": "CREATE",
            "userInfo": {
                "username": "system:serviceaccount:kube-system:replicaset-controller",
                "uid": "5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"]
            },
            "object": pod,
            "oldObject": null,
            "dryRun": false,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}
        }
    }))
    .expect("JSON")
}

/// The seed's pool (Enforce) and `extra` more, each with its own namespace and identity.
/// As JSON AgentPool specs: `(name, spec)`.
pub fn pools(extra: usize) -> Vec<(String, Value)> {
    let mut out = vec![(
        POOL.to_string(),
        json!({
            "team": "platform",
            "identity": {"clientId": CLIENT_ID, "tenantId": TENANT},
            "namespaces": [NAMESPACE],
            "serviceAccounts": [SERVICE_ACCOUNT],
            "enforcement": "Enforce"
        }),
    )];
    for i in 0..extra {
        out.push((
            format!("bench-pool-{i:04}"),
            json!({
                "team": format!("team-{}", i % 50),
                "identity": {"clientId": client_id(i)},
                "namespaces": [format!("bench-pool-{i:04}")],
                "serviceAccounts": ["agent"],
                "enforcement": "Audit"
            }),
        ));
    }
    out
}
