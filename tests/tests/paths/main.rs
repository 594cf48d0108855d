//! Every path to a pool pod's token besides the pod's own configuration, through the real
//! API server, as RBAC-limited users (impersonation) whose Roles allow the action, so that
//! a refusal is the webhook's: shell access (exec, attach, port-forward), TokenRequest,
//! pod UPDATE, and pods created by hand. Next to each refusal, the legitimate use that
//! must keep working: the break-glass lists, the kubelet, the workload controllers.
//!
//! There is no kubelet: the API server admits a CONNECT before it looks for the pod's node,
//! so a refused one carries the webhook's message and an allowed one fails afterwards,
//! because the pod has no node.

mod origin;
mod shell;
mod tokens;
mod updates;

use std::time::Duration;

use serde_json::{Value, json};
use wi_e2e::agentpools::PoolNamespace;
use wi_e2e::{Cluster, poll};

/// What the API server says of an allowed CONNECT to a pod without a node.
pub const NO_HOST: &str = "does not have a host assigned";

/// The API server's prefix of a denial by webhook `name`.
pub fn denied_by(name: &str) -> String {
    format!("admission webhook \"{name}.pool-namespaces.wi-webhook.dev\" denied the request")
}

/// POST to a pod's `exec`, `attach` or `portforward` as `user` in `groups`: the error text
/// (a CONNECT without an upgrade still goes through authorization and admission first).
pub async fn connect(
    cluster: &Cluster,
    user: &str,
    groups: &[&str],
    ns: &str,
    pod: &str,
    verb: &str,
) -> String {
    let client = cluster.client_as(user, groups).await.unwrap();
    let query = match verb {
        "portforward" => "ports=8080",
        _ => "container=agent&command=true&stdout=true",
    };
    let request = http::Request::post(format!("/api/v1/namespaces/{ns}/pods/{pod}/{verb}?{query}"))
        .body(Vec::new())
        .unwrap();
    match client.request_text(request).await {
        Ok(body) => panic!("{verb} into {ns}/{pod} as {user}: no error, answered {body}"),
        Err(e) => e.to_string(),
    }
}

/// A Role allowing `rules` in the pool's namespace, bound to users `users` and group `group`.
pub async fn allow(
    cluster: &Cluster,
    pool: &PoolNamespace,
    name: &str,
    rules: Value,
    users: &[&str],
    group: Option<&str>,
) {
    let mut subjects: Vec<Value> = users
        .iter()
        .map(|u| json!({"kind": "User", "name": u, "apiGroup": "rbac.authorization.k8s.io"}))
        .collect();
    subjects.extend(
        group.map(|g| json!({"kind": "Group", "name": g, "apiGroup": "rbac.authorization.k8s.io"})),
    );
    cluster
        .grant(pool.name(), name, rules, Value::Array(subjects))
        .await
        .unwrap();
}

pub async fn metrics(cluster: &Cluster) -> String {
    cluster.webhook().metrics().await.unwrap()
}

pub fn counted(metrics: &str, name: &str, labels: &[(&str, &str)]) -> bool {
    metrics.lines().any(|l| {
        l.starts_with(name)
            && labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
    })
}

/// The Events on AgentPool `pool` (kubectl's JSON), once one contains every part of `want`.
pub async fn event_on(cluster: &Cluster, pool: &str, want: &[&str]) -> String {
    poll(
        &format!("an Event on AgentPool {pool} with {want:?}"),
        Duration::from_secs(15),
        || async {
            let selector = format!("involvedObject.name={pool},involvedObject.kind=AgentPool");
            let out = cluster
                .kubectl(
                    &[
                        "get",
                        "events",
                        "-A",
                        "--field-selector",
                        &selector,
                        "-o",
                        "json",
                    ],
                    "",
                )
                .await?;
            Ok(want
                .iter()
                .all(|w| out.stdout.contains(w))
                .then_some(out.stdout))
        },
    )
    .await
    .unwrap()
}

/// The CRD from `manifests/` checks the break-glass subjects: a ServiceAccount names its
/// namespace, a user or group names none.
#[tokio::test]
async fn the_crd_checks_the_break_glass_subjects() {
    let cluster = wi_e2e::cluster().await;
    let name = format!("subjects-{}", &wi_e2e::agentpools::guid("subjects")[..8]);
    let pool = |subject: Value| {
        serde_json::to_string(&json!({
            "apiVersion": "wi-webhook.dev/v1alpha1", "kind": "AgentPool",
            "metadata": {"name": name},
            "spec": {
                "team": "t", "identity": {"clientId": wi_e2e::agentpools::guid(&name)},
                "namespaces": [format!("{name}-ns")], "serviceAccounts": ["agent"],
                "access": {"shell": [subject]},
            },
        }))
        .unwrap()
    };
    for bad in [
        json!({"kind": "ServiceAccount", "name": "runner"}),
        json!({"kind": "User", "name": "alice", "namespace": "ci"}),
    ] {
        let out = cluster
            .kubectl(
                &["create", "--dry-run=server", "-f", "-"],
                &pool(bad.clone()),
            )
            .await
            .unwrap();
        assert!(
            !out.success
                && out
                    .stderr
                    .contains("namespace is set for a ServiceAccount, and only for one"),
            "{bad}: {}",
            out.stderr
        );
    }
    let good = json!({"kind": "ServiceAccount", "name": "runner", "namespace": "ci"});
    let out = cluster
        .kubectl(
            &["create", "--dry-run=server", "-o", "json", "-f", "-"],
            &pool(good),
        )
        .await
        .unwrap();
    assert!(out.success, "{}", out.stderr);
    let stored: Value = serde_json::from_str(&out.stdout).unwrap();
    // The lists the pool does not name default to empty.
    assert_eq!(
        stored["spec"]["access"]["tokenRequesters"],
        json!([]),
        "{stored}"
    );
}
