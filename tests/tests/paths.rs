//! Every path to a pool pod's token besides the pod's own configuration, through the real
//! API server, as RBAC-limited users (impersonation) whose Roles allow the action, so that
//! a refusal is the webhook's: shell access (exec, attach, port-forward), TokenRequest,
//! pod UPDATE, and pods created by hand. Next to each refusal, the legitimate use that
//! must keep working: the break-glass lists, the kubelet, the workload controllers.
//!
//! There is no kubelet: the API server admits a CONNECT before it looks for the pod's node,
//! so a refused one carries the webhook's message and an allowed one fails afterwards,
//! because the pod has no node.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use serde_json::{Value, json};
use wi_e2e::agentpools::{AGENT_SA, PoolNamespace};
use wi_e2e::{Cluster, cluster, poll};

/// What the API server says of an allowed CONNECT to a pod without a node.
const NO_HOST: &str = "does not have a host assigned";

/// The API server's prefix of a denial by webhook `name`.
fn denied_by(name: &str) -> String {
    format!("admission webhook \"{name}.pool-namespaces.wi-webhook.dev\" denied the request")
}

/// POST to a pod's `exec`, `attach` or `portforward` as `user` in `groups`: the error text
/// (a CONNECT without an upgrade still goes through authorization and admission first).
async fn connect(
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
async fn allow(
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

async fn metrics(cluster: &Cluster) -> String {
    cluster.webhook().metrics().await.unwrap()
}

fn counted(metrics: &str, name: &str, labels: &[(&str, &str)]) -> bool {
    metrics.lines().any(|l| {
        l.starts_with(name)
            && labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
    })
}

/// The Events on AgentPool `pool` (kubectl's JSON), once one contains every part of `want`.
async fn event_on(cluster: &Cluster, pool: &str, want: &[&str]) -> String {
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

#[tokio::test]
async fn shell_access_is_the_pool_teams_break_glass() {
    let cluster = cluster().await;
    let pool = cluster
        .pool_namespace(
            "shell",
            json!({"shell": [{"kind": "Group", "name": "shell-oncall"}]}),
            "Enforce",
        )
        .await;
    let ns = pool.name().to_string();
    allow(
        &cluster,
        &pool,
        "shell",
        json!([
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
            {"apiGroups": [""], "resources": ["pods/exec", "pods/attach", "pods/portforward"], "verbs": ["get", "create"]},
        ]),
        &["dev"],
        Some("shell-oncall"),
    )
    .await;
    let agents = pool.agents(&cluster, "agents", 1, json!({})).await.unwrap();
    let agent = agents[0].metadata.name.clone().unwrap();

    for verb in ["exec", "attach", "portforward"] {
        // A developer of the team, with RBAC for it: refused by the webhook.
        let err = connect(&cluster, "dev", &[], &ns, &agent, verb).await;
        assert!(
            err.contains(&denied_by("shell"))
                && err.contains("[pool-shell-access]")
                && err.contains("user dev"),
            "{verb} as dev: {err}"
        );
        // A cluster admin is not on the list either.
        let err = connect(&cluster, "root", &["system:masters"], &ns, &agent, verb).await;
        assert!(
            err.contains("[pool-shell-access]"),
            "{verb} as a cluster admin: {err}"
        );
        // The on-call group is: admitted, then no node to reach.
        let err = connect(&cluster, "alice", &["shell-oncall"], &ns, &agent, verb).await;
        assert!(
            err.contains(NO_HOST) && !err.contains("denied"),
            "{verb} as on-call: {err}"
        );
    }
    // What kubectl prints for the refusal.
    let out = cluster
        .kubectl_as(
            "dev",
            &[],
            &[
                "exec",
                "-n",
                &ns,
                &agent,
                "-c",
                "agent",
                "--",
                "cat",
                "/var/run/secrets/azure/tokens/azure-identity-token",
            ],
            "",
        )
        .await
        .unwrap();
    assert!(
        !out.success && out.stderr.contains("[pool-shell-access]"),
        "{}",
        out.stderr
    );

    // Every break-glass use is recorded: a metric, and an Event on the pool naming the user
    // and the pod.
    assert!(
        counted(
            &metrics(&cluster).await,
            "wi_webhook_pool_access_grants_total",
            &[("pool", &pool.pool), ("rule", "pool-shell-access")]
        ),
        "no grant metric"
    );
    let events = event_on(
        &cluster,
        &pool.pool,
        &[
            "BreakGlassAccess",
            "user alice",
            &format!("exec into pod {ns}/{agent}"),
        ],
    )
    .await;
    assert!(events.contains("spec.access.shell"), "{events}");

    // Warn: admitted (the warning goes with the upgrade's response); Audit: admitted and
    // counted.
    pool.set_enforcement(&cluster, "Warn").await;
    let err = connect(&cluster, "dev", &[], &ns, &agent, "exec").await;
    assert!(err.contains(NO_HOST), "exec as dev in Warn mode: {err}");
    pool.set_enforcement(&cluster, "Audit").await;
    let err = connect(&cluster, "dev", &[], &ns, &agent, "portforward").await;
    assert!(
        err.contains(NO_HOST),
        "port-forward as dev in Audit mode: {err}"
    );
    assert!(
        counted(
            &metrics(&cluster).await,
            "wi_webhook_pool_violations_total",
            &[
                ("pool", &pool.pool),
                ("rule", "pool-shell-access"),
                ("enforcement", "Audit")
            ]
        ),
        "no Audit violation counted"
    );
}

#[tokio::test]
async fn only_kubelets_and_listed_subjects_get_a_pool_token() {
    let cluster = cluster().await;
    let pool = cluster
        .pool_namespace(
            "tokens",
            json!({"tokenRequesters": [{"kind": "User", "name": "minter"}]}),
            "Enforce",
        )
        .await;
    let ns = pool.name().to_string();
    allow(
        &cluster,
        &pool,
        "tokens",
        json!([{"apiGroups": [""], "resources": ["serviceaccounts/token"], "verbs": ["create"]}]),
        &["dev", "minter"],
        None,
    )
    .await;
    let token = |user: &'static str, groups: &'static [&'static str], sa: &'static str| {
        let (cluster, ns) = (&cluster, ns.clone());
        async move {
            cluster
                .kubectl_as(user, groups, &["create", "token", sa, "-n", &ns], "")
                .await
                .unwrap()
        }
    };

    let out = token("dev", &[], AGENT_SA).await;
    assert!(
        !out.success
            && out.stderr.contains(&denied_by("token-requests"))
            && out.stderr.contains("[pool-token-request]"),
        "{}",
        out.stderr
    );
    let out = token("admin", &["system:masters"], AGENT_SA).await;
    assert!(
        !out.success && out.stderr.contains("[pool-token-request]"),
        "cluster admin: {}",
        out.stderr
    );
    // A ServiceAccount of the namespace that is not the pool's: not this rule's.
    let out = token("dev", &[], "not-the-pools").await;
    assert!(out.success, "{}", out.stderr);
    // The listed requester, recorded.
    let out = token("minter", &[], AGENT_SA).await;
    assert!(
        out.success && out.stdout.starts_with("ey"),
        "{}",
        out.stderr
    );
    event_on(
        &cluster,
        &pool.pool,
        &[
            "BreakGlassAccess",
            "user minter",
            &format!("ServiceAccount {ns}/{AGENT_SA}"),
        ],
    )
    .await;

    // The kubelet of a node that runs one of the pool's pods: the Node authorizer lets it
    // mint tokens for that pod's ServiceAccount, and so does the webhook.
    pool.agents(&cluster, "on-n1", 1, json!({"nodeName": "n1"}))
        .await
        .unwrap();
    let out = poll(
        "a token for the kubelet of n1",
        Duration::from_secs(20),
        || async {
            let out = token("system:node:n1", &["system:nodes"], AGENT_SA).await;
            assert!(
                !out.stderr.contains("[pool-token-request]"),
                "{}",
                out.stderr
            );
            Ok(out.success.then_some(out))
        },
    )
    .await
    .unwrap();
    assert!(out.stdout.starts_with("ey"), "{}", out.stdout);
    // The kubelet of another node is stopped before admission, by the Node authorizer.
    let out = token("system:node:n2", &["system:nodes"], AGENT_SA).await;
    assert!(
        !out.success
            && out.stderr.contains("forbidden")
            && !out.stderr.contains("[pool-token-request]"),
        "{}",
        out.stderr
    );

    // Audit: the developer gets the token, and the request is counted.
    pool.set_enforcement(&cluster, "Audit").await;
    let out = token("dev", &[], AGENT_SA).await;
    assert!(out.success, "{}", out.stderr);
    assert!(
        counted(
            &metrics(&cluster).await,
            "wi_webhook_pool_violations_total",
            &[
                ("pool", &pool.pool),
                ("rule", "pool-token-request"),
                ("enforcement", "Audit")
            ]
        ),
        "no Audit violation counted"
    );
}

/// `kubectl run` of an agent-like pod (ServiceAccount `agent`, so that only the origin is
/// wrong) as `user`.
async fn kubectl_run(cluster: &Cluster, user: &str, ns: &str, name: &str) -> wi_e2e::KubectlOutput {
    let overrides =
        json!({"spec": {"serviceAccountName": AGENT_SA, "automountServiceAccountToken": false}})
            .to_string();
    cluster
        .kubectl_as(
            user,
            &[],
            &[
                "run",
                name,
                "-n",
                ns,
                "--image=registry.invalid/shell:1",
                "--restart=Never",
                &format!("--overrides={overrides}"),
            ],
            "",
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn pool_pods_come_from_the_pools_workloads() {
    let cluster = cluster().await;
    let pool = cluster
        .pool_namespace(
            "origin",
            json!({"podCreators": [{"kind": "User", "name": "ci-bot"}]}),
            "Enforce",
        )
        .await;
    let ns = pool.name().to_string();
    allow(
        &cluster,
        &pool,
        "creators",
        json!([
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "create"]},
            {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "create", "patch"]},
        ]),
        &["dev", "ci-bot"],
        None,
    )
    .await;
    let pods = Api::<Pod>::namespaced(cluster.client.clone(), &ns);

    // `kubectl run` by a developer: refused, nothing stored.
    let out = kubectl_run(&cluster, "dev", &ns, "by-hand").await;
    assert!(
        !out.success
            && out.stderr.contains(&denied_by("pod-origin"))
            && out.stderr.contains("[pool-pod-origin]")
            && out.stderr.contains("user dev"),
        "{}",
        out.stderr
    );
    assert!(pods.get_opt("by-hand").await.unwrap().is_none());

    // The same developer's Deployment: its pods come from the ReplicaSet controller, and
    // get the pool's identity from the mutating webhook.
    let dev_yaml = serde_yaml::to_string(&json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "agents"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "agents"}},
            "template": {"metadata": {"labels": {"app": "agents", "azure.workload.identity/use": "true"}},
                "spec": {"serviceAccountName": AGENT_SA, "automountServiceAccountToken": false,
                    "containers": [{"name": "agent", "image": "registry.invalid/agent:1"}]}}},
    }))
    .unwrap();
    let out = cluster
        .kubectl_as("dev", &[], &["apply", "-n", &ns, "-f", "-"], &dev_yaml)
        .await
        .unwrap();
    assert!(out.success, "{}", out.stderr);
    let agent = cluster
        .wait_for_pod(&ns, "app=agents", Duration::from_secs(60))
        .await
        .unwrap();
    let env = &agent.spec.as_ref().unwrap().containers[0].env;
    assert!(
        env.iter()
            .flatten()
            .any(|e| e.name == "AZURE_CLIENT_ID"
                && e.value.as_deref() == Some(pool.client_id.as_str())),
        "the controller's pod is mutated: {env:?}"
    );
    let agent_name = agent.metadata.name.clone().unwrap();

    // `kubectl debug --copy-to`: a pod created by hand too.
    let out = cluster
        .kubectl_as(
            "dev",
            &[],
            &[
                "debug",
                "-n",
                &ns,
                &agent_name,
                "--copy-to=agent-copy",
                "--image=registry.invalid/shell:1",
                "--container=debugger",
            ],
            "",
        )
        .await
        .unwrap();
    assert!(
        !out.success && out.stderr.contains("[pool-pod-origin]"),
        "{}",
        out.stderr
    );
    assert!(pods.get_opt("agent-copy").await.unwrap().is_none());

    // A listed creator's labelled pod goes through the mutating webhook first (the
    // validating one sees the mutated pod): admitted, mutated, and recorded.
    let labelled =
        serde_yaml::to_string(&wi_e2e::pods::labelled_pod_json("by-ci", AGENT_SA, &[])).unwrap();
    let out = cluster
        .kubectl_as("ci-bot", &[], &["create", "-n", &ns, "-f", "-"], &labelled)
        .await
        .unwrap();
    assert!(out.success, "{}", out.stderr);
    let stored = pods.get("by-ci").await.unwrap();
    assert!(
        stored.spec.as_ref().unwrap().containers[0]
            .env
            .iter()
            .flatten()
            .any(|e| e.name == "AZURE_CLIENT_ID"),
        "not mutated"
    );
    event_on(
        &cluster,
        &pool.pool,
        &["BreakGlassAccess", "user ci-bot", "spec.access.podCreators"],
    )
    .await;
    // The developer's labelled pod is mutated, then refused by the validating webhook.
    let out = cluster
        .kubectl_as(
            "dev",
            &[],
            &["create", "-n", &ns, "-f", "-"],
            &labelled.replace("by-ci", "by-dev"),
        )
        .await
        .unwrap();
    assert!(
        !out.success && out.stderr.contains("[pool-pod-origin]"),
        "{}",
        out.stderr
    );

    // Warn: the pod is created and kubectl prints the warning.
    pool.set_enforcement(&cluster, "Warn").await;
    let out = kubectl_run(&cluster, "dev", &ns, "warned").await;
    assert!(out.success, "{}", out.stderr);
    assert!(
        out.stderr.contains("Warning:") && out.stderr.contains("[pool-pod-origin]"),
        "{}",
        out.stderr
    );
    assert!(pods.get_opt("warned").await.unwrap().is_some());
}

#[tokio::test]
async fn pool_pods_stay_what_was_admitted() {
    let cluster = cluster().await;
    let pool = cluster
        .pool_namespace("updates", json!({}), "Enforce")
        .await;
    let ns = pool.name().to_string();
    allow(
        &cluster,
        &pool,
        "updaters",
        json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "patch", "update"]}]),
        &["dev"],
        None,
    )
    .await;
    let agents = pool.agents(&cluster, "agents", 1, json!({})).await.unwrap();
    let agent = agents[0].metadata.name.clone().unwrap();
    let pods = Api::<Pod>::namespaced(cluster.client.clone(), &ns);
    let as_dev = |args: Vec<String>| {
        let cluster = &cluster;
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            cluster.kubectl_as("dev", &[], &args, "").await.unwrap()
        }
    };
    let on_agent = |args: &[&str]| -> Vec<String> {
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        all.extend(["-n".to_string(), ns.clone()]);
        all
    };

    for (args, what) in [
        (
            vec![
                "set",
                "image",
                &format!("pod/{agent}"),
                "agent=registry.invalid/shell:1",
            ],
            "image of containers agent",
        ),
        (
            vec![
                "label",
                "pod",
                &agent,
                "--overwrite",
                "wi-webhook.dev/agent-pool=elsewhere",
            ],
            "label wi-webhook.dev/agent-pool",
        ),
        (
            vec!["label", "pod", &agent, "azure.workload.identity/use-"],
            "label azure.workload.identity/use",
        ),
        (
            vec![
                "annotate",
                "pod",
                &agent,
                "azure.workload.identity/skip-containers=agent",
            ],
            "annotation azure.workload.identity/skip-containers",
        ),
    ] {
        let out = as_dev(on_agent(&args)).await;
        assert!(
            !out.success
                && out.stderr.contains(&denied_by("pod-updates"))
                && out.stderr.contains("[pool-pod-update]")
                && out.stderr.contains(what),
            "{args:?}: {}",
            out.stderr
        );
    }
    let stored = pods.get(&agent).await.unwrap();
    assert_eq!(
        stored.spec.unwrap().containers[0].image.as_deref(),
        Some("registry.invalid/agent:1")
    );

    // Metadata nobody's checks read passes, and so does what the controllers do: taking
    // the selector's label away makes the ReplicaSet release the pod (an UPDATE of its
    // ownerReferences) and create a new one.
    let out = as_dev(on_agent(&[
        "annotate",
        "pod",
        &agent,
        "team.example/note=debugging",
    ]))
    .await;
    assert!(out.success, "{}", out.stderr);
    let out = as_dev(on_agent(&["label", "pod", &agent, "app-"])).await;
    assert!(out.success, "{}", out.stderr);
    poll(
        "the ReplicaSet releases the pod and replaces it",
        Duration::from_secs(30),
        || async {
            let released = pods
                .get(&agent)
                .await?
                .metadata
                .owner_references
                .unwrap_or_default()
                .is_empty();
            let replaced = !pods
                .list(&kube::api::ListParams::default().labels("app=agents"))
                .await?
                .items
                .is_empty();
            Ok((released && replaced).then_some(()))
        },
    )
    .await
    .unwrap();
}
