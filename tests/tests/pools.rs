//! Pool isolation through the real API server: the CRD from `manifests/`,
//! AgentPools created and changed while the webhook runs, and the seed's setup extended to
//! two teams whose agents each get their own identity and cannot take the other's.
//!
//! AgentPools are cluster-scoped: every test makes its own (`wi_e2e::agentpools`).

use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{Api, DeleteParams, PostParams};
use kube::core::DynamicObject;
use serde_json::{Value, json};
use wi_e2e::agentpools::{Pools, guid, pool_resource, pool_spec, wait_pool_scoped};
use wi_e2e::pods::{self, Identity};
use wi_e2e::{Cluster, cluster, poll};

const POOL_LABEL: &str = "wi-webhook.dev/agent-pool";

/// A ServiceAccount without a client-id annotation (its pool's identity is injected).
fn plain_service_account(name: &str) -> ServiceAccount {
    serde_json::from_value(
        json!({"metadata": {"name": name}, "automountServiceAccountToken": false}),
    )
    .expect("static ServiceAccount")
}

async fn create_sa(cluster: &Cluster, ns: &str, sa: &ServiceAccount) {
    Api::<ServiceAccount>::namespaced(cluster.client.clone(), ns)
        .create(&PostParams::default(), sa)
        .await
        .unwrap_or_else(|e| panic!("creating ServiceAccount in {ns}: {e}"));
}

async fn create_pod(cluster: &Cluster, ns: &str, pod: Value) -> Result<Pod, kube::Error> {
    let pod: Pod = serde_json::from_value(pod).expect("a Pod");
    Api::<Pod>::namespaced(cluster.client.clone(), ns)
        .create(&PostParams::default(), &pod)
        .await
}

/// The denial message of a refused create, or a panic naming what was admitted instead.
fn denial(result: Result<Pod, kube::Error>, what: &str) -> String {
    match result {
        Ok(pod) => panic!(
            "{what}: admitted, but must be denied: {:?}",
            pod.metadata.name
        ),
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403, "{what}: {status:?}");
            status.message
        }
        Err(e) => panic!("{what}: unexpected error {e}"),
    }
}

fn client_id_of(pod: &Pod, container: &str) -> Option<String> {
    pods::env_value(
        pods::container(pods::spec(pod), container),
        "AZURE_CLIENT_ID",
    )
    .map(str::to_string)
}

#[tokio::test]
async fn two_teams_each_get_their_own_identity_and_cannot_take_the_others() {
    let cluster = cluster().await;
    let ns_a = cluster.namespace("team-a").await;
    let ns_b = cluster.namespace("team-b").await;
    let (a, b) = (ns_a.name.clone(), ns_b.name.clone());
    let (client_a, client_b) = (guid("a"), guid("b"));
    let (tenant_a, tenant_b) = (guid("ta"), guid("tb"));
    let mut pools = Pools::new(&cluster);
    pools
        .create(&a, pool_spec("team-a", &client_a, &tenant_a, &a, "Enforce"))
        .await
        .unwrap();
    pools
        .create(&b, pool_spec("team-b", &client_b, &tenant_b, &b, "Enforce"))
        .await
        .unwrap();
    // The fail-closed webhooks select both pools' namespaces before anything is created there.
    for ns in [&a, &b] {
        wait_pool_scoped(&cluster, ns).await.unwrap();
    }
    // Team A's ServiceAccount names no identity: the pool's is injected. Team B's names its own.
    create_sa(&cluster, &a, &plain_service_account("agent")).await;
    create_sa(
        &cluster,
        &b,
        &pods::service_account("agent", &client_b, Some(&tenant_b)),
    )
    .await;
    // A ServiceAccount in B's namespace that claims A's identity.
    create_sa(
        &cluster,
        &b,
        &pods::service_account("thief", &client_a, Some(&tenant_a)),
    )
    .await;

    // The agents: the seed's pod shape (AZP_POOL from the pool name), one per team.
    let agent = |name: &str, pool: &str, sa: &str| {
        let mut pod = pods::labelled_pod_json(name, sa, &[]);
        pod["spec"]["containers"][0]["env"] = json!([{"name": "AZP_POOL", "value": pool}]);
        pod
    };
    // The webhook's pool index follows the watch: the first pods may come before it caught
    // up, so wait until pool A's identity is injected and pool B's checks apply.
    let pod_a = poll(
        "team A's agent gets pool A's identity",
        Duration::from_secs(10),
        || async {
            let name = format!("agent-{}", &guid("x")[..8]);
            let pod = create_pod(&cluster, &a, agent(&name, &a, "agent"))
                .await
                .ok();
            Ok(pod.filter(|p| client_id_of(p, "agent").as_deref() == Some(client_a.as_str())))
        },
    )
    .await
    .unwrap();
    poll("pool B's checks apply", Duration::from_secs(10), || async {
        let mut pod = agent("probe", &b, "thief");
        pod["metadata"]["name"] = json!(format!("probe-{}", &guid("p")[..8]));
        let pod: Pod = serde_json::from_value(pod).expect("a Pod");
        let result = Api::<Pod>::namespaced(cluster.client.clone(), &b)
            .create(&PostParams { dry_run: true, ..Default::default() }, &pod)
            .await;
        Ok(matches!(result, Err(kube::Error::Api(s)) if s.message.contains("[pool-service-account]")).then_some(()))
    })
    .await
    .unwrap();
    let spec_a = pods::spec(&pod_a);
    pods::assert_identity_env(
        pods::container(spec_a, "agent"),
        Identity {
            client_id: Some(&client_a),
            tenant_id: &tenant_a,
        },
    );
    let pod_b = create_pod(&cluster, &b, agent("agent", &b, "agent"))
        .await
        .unwrap();
    assert_eq!(
        client_id_of(&pod_b, "agent").as_deref(),
        Some(client_b.as_str())
    );

    // 1. A ServiceAccount annotated with A's identity, in B's namespace.
    let msg = denial(
        create_pod(&cluster, &b, agent("thief-sa", &b, "thief")).await,
        "thief SA",
    );
    assert!(msg.contains("[identity-of-another-pool]"), "{msg}");
    assert!(
        msg.contains(&client_a) && msg.contains(&format!("pool {a}")),
        "{msg}"
    );

    // 2. A literal AZURE_CLIENT_ID of A's in an init container of B's agent.
    let mut pod = agent("literal-init", &b, "agent");
    pod["spec"]["initContainers"] = json!([{"name": "setup", "image": "x", "env": [{"name": "AZURE_CLIENT_ID", "value": client_a}]}]);
    let msg = denial(
        create_pod(&cluster, &b, pod).await,
        "literal env in an init container",
    );
    assert!(
        msg.contains("[identity-of-another-pool]") && msg.contains("container setup"),
        "{msg}"
    );

    // 3. AZURE_CLIENT_ID from a Secret reference, which the webhook cannot check.
    let mut pod = agent("secret-ref", &b, "agent");
    pod["spec"]["containers"][0]["env"] = json!([
        {"name": "AZP_POOL", "value": b},
        {"name": "AZURE_CLIENT_ID", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}
    ]);
    let msg = denial(create_pod(&cluster, &b, pod).await, "env from a Secret");
    assert!(msg.contains("[identity-env-reference]"), "{msg}");

    // 4. Skip the injection (no label) and set everything by hand, with a token volume.
    let mut pod = agent("by-hand", &b, "agent");
    pod["metadata"]["labels"] = json!({});
    pod["spec"]["containers"][0]["env"] = json!([
        {"name": "AZURE_CLIENT_ID", "value": client_a},
        {"name": "AZURE_FEDERATED_TOKEN_FILE", "value": "/t/token"}
    ]);
    pod["spec"]["containers"][0]["volumeMounts"] = json!([{"name": "t", "mountPath": "/t"}]);
    pod["spec"]["volumes"] = json!([{"name": "t", "projected": {"sources": [{"serviceAccountToken": {"audience": "api://AzureADTokenExchange", "path": "token"}}]}}]);
    let msg = denial(
        create_pod(&cluster, &b, pod).await,
        "unlabelled pod with A's identity by hand",
    );
    assert!(msg.contains("[identity-of-another-pool]"), "{msg}");

    // 5. The pool label, and AZP_POOL, naming A while running in B's namespace.
    let mut pod = agent("label-a", &b, "agent");
    pod["metadata"]["labels"][POOL_LABEL] = json!(a);
    let msg = denial(
        create_pod(&cluster, &b, pod).await,
        "pool label disagreeing with the namespace",
    );
    assert!(msg.contains("[pool-claims-disagree]"), "{msg}");
    let msg = denial(
        create_pod(&cluster, &b, agent("azp-a", &a, "agent")).await,
        "AZP_POOL disagreeing",
    );
    assert!(msg.contains("[pool-claims-disagree]"), "{msg}");

    // 6. A Deployment whose template takes A's identity fails at `kubectl apply`, at once.
    let deployment = r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: sneaky}
spec:
  selector: {matchLabels: {app: sneaky}}
  template:
    metadata: {labels: {app: sneaky, azure.workload.identity/use: "true"}}
    spec:
      serviceAccountName: thief
      containers: [{name: agent, image: x}]
"#;
    let err = cluster
        .apply_yaml(&b, deployment)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("workloads.pool-namespaces.wi-webhook.dev")
            && err.contains("[identity-of-another-pool]"),
        "{err}"
    );

    // A ReplicationController is such a workload too.
    let controller = r#"apiVersion: v1
kind: ReplicationController
metadata: {name: sneaky-rc}
spec:
  selector: {app: sneaky-rc}
  template:
    metadata: {labels: {app: sneaky-rc, azure.workload.identity/use: "true"}}
    spec:
      serviceAccountName: thief
      containers: [{name: agent, image: x}]
"#;
    let err = cluster
        .apply_yaml(&b, controller)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("workloads.pool-namespaces.wi-webhook.dev")
            && err.contains("sneaky-rc (ReplicationController pod template)")
            && err.contains("[identity-of-another-pool]"),
        "{err}"
    );

    // 7. An UPDATE of a good Deployment to A's identity is refused too.
    let good = deployment
        .replace("name: sneaky", "name: honest")
        .replace("app: sneaky", "app: honest")
        .replace("serviceAccountName: thief", "serviceAccountName: agent");
    cluster.apply_yaml(&b, &good).await.unwrap();
    let err = cluster
        .apply_yaml(
            &b,
            &good.replace("serviceAccountName: agent", "serviceAccountName: thief"),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("[identity-of-another-pool]"), "{err}");

    // 8. kubectl debug: an ephemeral container on team A's agent.
    let pods_a = Api::<Pod>::namespaced(cluster.client.clone(), &a);
    let name = pod_a.metadata.name.clone().unwrap();
    let mut debugged = pods_a.get(&name).await.unwrap();
    debugged.spec.as_mut().unwrap().ephemeral_containers = Some(vec![
        serde_json::from_value(json!({"name": "debugger", "image": "busybox"})).unwrap(),
    ]);
    let result = pods_a
        .replace_subresource(
            "ephemeralcontainers",
            &name,
            &PostParams::default(),
            &debugged,
        )
        .await;
    match result {
        Err(kube::Error::Api(status)) => assert!(
            status.message.contains("[ephemeral-container]"),
            "{status:?}"
        ),
        other => panic!("ephemeral container admitted: {other:?}"),
    }
}

#[tokio::test]
async fn agentpool_changes_are_seen_by_the_next_pod_and_audit_mode_records() {
    let cluster = cluster().await;
    let ns = cluster.namespace("pool-change").await;
    let n = ns.name.clone();
    let (c1, c2, tenant) = (guid("c1"), guid("c2"), guid("t"));
    let mut pools = Pools::new(&cluster);
    pools
        .create(&n, pool_spec("team-c", &c1, &tenant, &n, "Enforce"))
        .await
        .unwrap();
    create_sa(&cluster, &n, &plain_service_account("agent")).await;

    let client_of_new_pod = |i: u32| {
        let cluster = &cluster;
        let n = n.clone();
        async move {
            let pod = create_pod(
                cluster,
                &n,
                pods::labelled_pod_json(&format!("p{i}"), "agent", &[]),
            )
            .await?;
            Ok::<_, kube::Error>(client_id_of(&pod, "agent"))
        }
    };
    let mut i = 0;
    poll(
        "the pool's identity injected",
        Duration::from_secs(10),
        || {
            i += 1;
            let f = client_of_new_pod(i);
            let c1 = c1.clone();
            async move { Ok(f.await.ok().flatten().filter(|c| *c == c1)) }
        },
    )
    .await
    .unwrap();

    // The pool's identity changes while the webhook runs: the next pods get the new one.
    pools
        .patch_spec(
            &n,
            json!({"identity": {"clientId": c2, "tenantId": tenant}}),
        )
        .await
        .unwrap();
    poll(
        "the changed identity injected",
        Duration::from_secs(10),
        || {
            i += 1;
            let f = client_of_new_pod(i);
            let c2 = c2.clone();
            async move { Ok(f.await.ok().flatten().filter(|c| *c == c2)) }
        },
    )
    .await
    .unwrap();

    // Audit mode: a violating pod is admitted, and recorded as an Event on the AgentPool.
    pools
        .patch_spec(&n, json!({"enforcement": "Audit"}))
        .await
        .unwrap();
    create_sa(&cluster, &n, &plain_service_account("other")).await;
    poll(
        "violating pod admitted in Audit mode",
        Duration::from_secs(10),
        || {
            i += 1;
            let pod = pods::labelled_pod_json(&format!("audited{i}"), "other", &[]);
            let cluster = &cluster;
            let n = n.clone();
            async move { Ok(create_pod(cluster, &n, pod).await.ok()) }
        },
    )
    .await
    .unwrap();
    let out = poll(
        "an Event on the AgentPool",
        Duration::from_secs(15),
        || async {
            let out = cluster
                .kubectl(
                    &[
                        "get",
                        "events",
                        "-A",
                        "--field-selector",
                        &format!("involvedObject.name={n}"),
                        "-o",
                        "json",
                    ],
                    "",
                )
                .await?;
            Ok(out
                .stdout
                .contains("[pool-service-account]")
                .then_some(out.stdout))
        },
    )
    .await
    .unwrap();
    assert!(out.contains("PoolViolation"), "{out}");
    let metrics = cluster.webhook().metrics().await.unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("wi_webhook_pool_violations_total")
                && l.contains(&format!("pool=\"{n}\""))
                && l.contains("rule=\"pool-service-account\"")
                && l.contains("enforcement=\"Audit\"")),
        "no violation metric for pool {n}"
    );

    // Warn mode: admitted, and kubectl prints the warning.
    pools
        .patch_spec(&n, json!({"enforcement": "Warn"}))
        .await
        .unwrap();
    let out = poll("a warning from kubectl", Duration::from_secs(10), || {
        i += 1;
        let yaml = wi_webhook::yaml::to_string(&pods::labelled_pod_json(
            &format!("warned{i}"),
            "other",
            &[],
        ));
        let cluster = &cluster;
        let n = n.clone();
        async move {
            let out = cluster
                .kubectl(&["create", "-n", &n, "-f", "-"], &yaml)
                .await?;
            Ok((out.success && out.stderr.contains("Warning:")).then_some(out.stderr))
        }
    })
    .await
    .unwrap();
    assert!(out.contains("[pool-service-account]"), "{out}");

    // `kubectl apply --dry-run=server` shows the decision, the warning and the mutated
    // object, and stores nothing: how a manifest is audited against a live policy.
    let yaml = wi_webhook::yaml::to_string(&pods::labelled_pod_json("dry", "other", &[]));
    let out = cluster
        .kubectl(
            &[
                "apply",
                "--dry-run=server",
                "-n",
                &n,
                "-o",
                "json",
                "-f",
                "-",
            ],
            &yaml,
        )
        .await
        .unwrap();
    assert!(out.success, "{}", out.stderr);
    assert!(
        out.stderr.contains("Warning:") && out.stderr.contains("[pool-service-account]"),
        "{}",
        out.stderr
    );
    let shown: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        shown["spec"]["containers"][0]["env"][0]["value"],
        c2.as_str(),
        "the dry-run answer carries the mutation"
    );
    let stored = Api::<Pod>::namespaced(cluster.client.clone(), &n)
        .get_opt("dry")
        .await
        .unwrap();
    assert!(stored.is_none(), "a dry run stored the pod");
}

#[tokio::test]
async fn conflicting_agentpools_are_refused_and_status_is_written() {
    let cluster = cluster().await;
    let ns = cluster.namespace("pool-conflict").await;
    let n = ns.name.clone();
    let client = guid("shared");
    let mut pools = Pools::new(&cluster);
    pools
        .create(&n, pool_spec("team-d", &client, &guid("t"), &n, "Enforce"))
        .await
        .unwrap();

    // The same client id in a second pool: refused, naming the first.
    let second = format!("{n}-second");
    let err = pools
        .create(
            &second,
            pool_spec(
                "team-e",
                &client,
                &guid("t2"),
                &format!("{n}-elsewhere"),
                "Enforce",
            ),
        )
        .await
        .unwrap_err();
    let kube::Error::Api(status) = err else {
        panic!("unexpected error {err}")
    };
    assert!(
        status.message.contains("[pool-conflict]") && status.message.contains(&format!("pool {n}")),
        "{status:?}"
    );
    // The same namespace in a second pool: refused too.
    let err = pools
        .create(
            &second,
            pool_spec("team-e", &guid("other"), &guid("t2"), &n, "Enforce"),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("namespace"), "{err}");

    // The webhook writes each pool's conflicts into its status: none here.
    let api: Api<DynamicObject> = Api::all_with(cluster.client.clone(), &pool_resource());
    let status = poll(
        "the AgentPool's status",
        Duration::from_secs(10),
        || async {
            let pool = api.get(&n).await?;
            Ok(pool
                .data
                .get("status")
                .filter(|s| s["conditions"][0]["type"] == "Conflict")
                .cloned())
        },
    )
    .await
    .unwrap();
    assert_eq!(status["conditions"][0]["status"], "False", "{status}");
    assert_eq!(status["conflictCount"], 0, "{status}");
}

#[tokio::test]
async fn the_crd_from_manifests_validates_what_one_object_can_check() {
    let cluster = cluster().await;
    let mut pools = Pools::new(&cluster);
    let name = format!("bad-{}", &guid("bad")[..8]);
    for (spec, expected) in [
        (
            json!({"team": "t", "identity": {"clientId": "not-a-guid"}, "namespaces": ["a"], "serviceAccounts": ["s"]}),
            "clientId",
        ),
        (
            json!({"team": "t", "identity": {"clientId": guid("g")}, "namespaces": [], "serviceAccounts": ["s"]}),
            "namespaces",
        ),
        (
            json!({"team": "t", "identity": {"clientId": guid("g")}, "namespaces": ["Not_A_Label"], "serviceAccounts": ["s"]}),
            "namespaces",
        ),
        (
            json!({"team": "t", "identity": {"clientId": guid("g")}, "namespaces": ["a"], "serviceAccounts": ["s"], "enforcement": "Sometimes"}),
            "enforcement",
        ),
    ] {
        let err = pools
            .create(&name, spec.clone())
            .await
            .expect_err(&format!("accepted {spec}"));
        assert!(err.to_string().contains(expected), "{spec}: {err}");
    }
    // Enforcement defaults to Enforce.
    let created = pools
        .create(&name, json!({"team": "t", "identity": {"clientId": guid("ok")}, "namespaces": [format!("{name}-ns")], "serviceAccounts": ["s"]}))
        .await
        .unwrap();
    assert_eq!(created.data["spec"]["enforcement"], "Enforce");
    let _ = Api::<DynamicObject>::all_with(cluster.client.clone(), &pool_resource())
        .delete(&name, &DeleteParams::default())
        .await;
}
