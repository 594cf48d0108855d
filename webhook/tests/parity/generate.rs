//! A deterministic generator of cluster states and objects for the parity test: two pools
//! (one always Enforce, one in each mode), ServiceAccounts with and without pool client ids,
//! pods and every workload kind, in pool and non-pool namespaces, with and without the
//! injection label, pool claims and identity env overrides.

use serde_json::{Value, json};

pub const CLIENT_A: &str = "aaaaaaaa-0000-4000-8000-00000000000a";
pub const CLIENT_B: &str = "bbbbbbbb-0000-4000-8000-00000000000b";
const CLIENT_OTHER: &str = "cccccccc-0000-4000-8000-00000000000c";
const TENANT_A: &str = "aaaaaaaa-1111-4111-8111-11111111111a";
const TENANT_OTHER: &str = "dddddddd-1111-4111-8111-11111111111d";
pub const TOKEN_FILE: &str = "/var/run/secrets/azure/tokens/azure-identity-token";

/// xorshift64*: the same cases on every run and machine.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

fn pool(name: &str, client: &str, tenant: Option<&str>, sas: &[&str], mode: &str) -> Value {
    let mut identity = json!({"clientId": client});
    if let Some(t) = tenant {
        identity["tenantId"] = t.into();
    }
    json!({
        "apiVersion": "wi-webhook.dev/v1alpha1", "kind": "AgentPool",
        "metadata": {"name": name},
        "spec": {"team": format!("team-{name}"), "identity": identity,
            "namespaces": [format!("ado-agents-{name}")], "serviceAccounts": sas,
            "enforcement": mode}
    })
}

fn account(namespace: &str, name: &str, annotations: &[(&str, &str)]) -> Value {
    let annotations: serde_json::Map<String, Value> = annotations
        .iter()
        .map(|(k, v)| (k.to_string(), Value::from(*v)))
        .collect();
    json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations}})
}

/// The cluster: pool `a` (Enforce, with a tenant) and pool `b` in `mode` (without one).
pub fn state(mode: &str) -> Vec<Value> {
    const CID: &str = "azure.workload.identity/client-id";
    const TID: &str = "azure.workload.identity/tenant-id";
    let braced_a = format!("{{{}}}", CLIENT_A.to_uppercase());
    vec![
        pool("a", CLIENT_A, Some(TENANT_A), &["agent-a"], "Enforce"),
        pool(
            "b",
            CLIENT_B,
            None,
            &["agent-b", "agent-b-unannotated", "agent-b-tenant"],
            mode,
        ),
        account("ado-agents-a", "agent-a", &[(CID, CLIENT_A)]),
        account("ado-agents-b", "agent-b", &[(CID, CLIENT_B)]),
        account("ado-agents-b", "agent-b-unannotated", &[]),
        account(
            "ado-agents-b",
            "agent-b-tenant",
            &[(CID, CLIENT_B), (TID, TENANT_OTHER)],
        ),
        account("ado-agents-b", "default", &[]),
        account("ado-agents-b", "thief", &[(CID, CLIENT_A)]),
        account("apps", "default", &[]),
        account("apps", "thief", &[(CID, &braced_a)]),
        account("apps", "app", &[(CID, CLIENT_OTHER)]),
    ]
}

/// (apiVersion, kind, where the pod template goes).
const KINDS: [(&str, &str, &str); 8] = [
    ("v1", "Pod", ""),
    ("apps/v1", "Deployment", "/spec/template"),
    ("apps/v1", "StatefulSet", "/spec/template"),
    ("apps/v1", "DaemonSet", "/spec/template"),
    ("apps/v1", "ReplicaSet", "/spec/template"),
    ("batch/v1", "Job", "/spec/template"),
    ("batch/v1", "CronJob", "/spec/jobTemplate/spec/template"),
    ("v1", "ReplicationController", "/spec/template"),
];

fn env_entry(rng: &mut Rng) -> Value {
    let literal = |name: &str, value: &str| json!({"name": name, "value": value});
    match rng.below(13) {
        0 => literal("AZURE_CLIENT_ID", CLIENT_A),
        1 => literal("AZURE_CLIENT_ID", CLIENT_B),
        2 => literal("AZURE_CLIENT_ID", &format!("({})", CLIENT_B.to_uppercase())),
        3 => literal("AZURE_TENANT_ID", TENANT_OTHER),
        4 => literal("AZURE_TENANT_ID", super::TENANT),
        5 => literal("AZURE_FEDERATED_TOKEN_FILE", TOKEN_FILE),
        6 => literal("AZURE_FEDERATED_TOKEN_FILE", "/tmp/token"),
        7 => json!({"name": "AZURE_CLIENT_ID",
            "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}),
        8 => literal("AZP_POOL", "a"),
        9 => literal("AZP_POOL", "b"),
        _ => literal("AZP_URL", "https://dev.azure.com/example"),
    }
}

fn container(rng: &mut Rng, name: &str) -> Value {
    let mut c = json!({"name": name, "image": "example.azurecr.io/agent:1"});
    let n = rng.below(3);
    if n > 0 {
        c["env"] = (0..n).map(|_| env_entry(rng)).collect::<Vec<_>>().into();
    }
    c
}

/// One Pod or workload.
pub fn object(rng: &mut Rng, index: usize) -> Value {
    let (api_version, kind, pointer) = *rng.pick(&KINDS);
    let namespace = *rng.pick(&["ado-agents-a", "ado-agents-b", "ado-agents-b", "apps"]);
    let service_account = *rng.pick(&[
        "agent-a",
        "agent-b",
        "agent-b-unannotated",
        "agent-b-tenant",
        "default",
        "",
        "thief",
        "app",
        "ghost",
    ]);
    let mut labels = serde_json::Map::new();
    labels.insert("app".into(), format!("app-{index}").into());
    // Asking for injection in a way the objectSelector does not select.
    if let Some(v) = [None, None, None, Some("True"), Some("false"), None][rng.below(6)] {
        labels.insert("azure.workload.identity/use".into(), v.into());
    }
    if rng.chance(55) {
        labels.insert("azure.workload.identity/use".into(), "true".into());
    }
    if rng.chance(12) {
        labels.insert(
            "wi-webhook.dev/agent-pool".into(),
            (*rng.pick(&["a", "b"])).into(),
        );
    }
    let mut annotations = serde_json::Map::new();
    if rng.chance(20) {
        annotations.insert(
            "azure.workload.identity/inject-proxy-sidecar".into(),
            "true".into(),
        );
    }
    if rng.chance(12) {
        annotations.insert(
            "azure.workload.identity/service-account-token-expiration".into(),
            "60".into(),
        );
    }
    let mut spec = json!({"containers": [container(rng, "agent")]});
    if !service_account.is_empty() {
        spec["serviceAccountName"] = service_account.into();
    }
    if rng.chance(25) {
        spec["initContainers"] = json!([container(rng, "setup")]);
    }
    if rng.chance(5) {
        spec["hostNetwork"] = true.into();
    }
    let name = format!("gen-{index}");
    let pod_metadata = json!({"labels": labels, "annotations": annotations});
    if pointer.is_empty() {
        let mut metadata = pod_metadata;
        metadata["name"] = name.into();
        metadata["namespace"] = namespace.into();
        return json!({"apiVersion": api_version, "kind": kind, "metadata": metadata, "spec": spec});
    }
    let template = json!({"metadata": pod_metadata, "spec": spec});
    let mut object = json!({"apiVersion": api_version, "kind": kind,
        "metadata": {"name": name, "namespace": namespace}, "spec": {}});
    let mut at = &mut object;
    let steps: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
    for (i, step) in steps.iter().enumerate() {
        if i + 1 == steps.len() {
            at[*step] = template.clone();
        } else {
            if at.get(*step).is_none() {
                at[*step] = json!({});
            }
            at = &mut at[*step];
        }
    }
    object
}
