//! AgentPools cannot be turned against each other, through the real API server: of two
//! conflicting pools created at the same moment (both may get past the admission check) only
//! the newer one's pods are denied; no pool may name a namespace the webhook does not guard;
//! a pool's namespace cannot be labelled out of the webhook's checks.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::core::DynamicObject;
use serde_json::json;
use wi_e2e::agentpools::{Pools, guid, pool_spec, wait_pool_scoped};
use wi_e2e::pods;
use wi_e2e::{Cluster, cluster, poll};

async fn agent_sa(cluster: &Cluster, ns: &str) {
    Api::<ServiceAccount>::namespaced(cluster.client.clone(), ns)
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "agent"}, "automountServiceAccountToken": false}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
}

async fn create_agent(cluster: &Cluster, ns: &str, name: &str) -> kube::Result<Pod> {
    Api::<Pod>::namespaced(cluster.client.clone(), ns)
        .create(
            &PostParams::default(),
            &pods::labelled_pod(name, "agent", &[]),
        )
        .await
}

/// `(creationTimestamp, name)`: the order that says which pool is older.
fn age(pool: &DynamicObject) -> (String, String) {
    let created = pool
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.to_string())
        .unwrap_or_default();
    (created, pool.metadata.name.clone().unwrap_or_default())
}

#[tokio::test]
async fn of_two_pools_created_at_once_the_older_keeps_working() {
    let cluster = cluster().await;
    let mut pools = Pools::new(&cluster);
    let mut both_admitted = 0;
    for round in 0..8 {
        let ns_a = cluster.namespace(&format!("race{round}-a")).await;
        let ns_b = cluster.namespace(&format!("race{round}-b")).await;
        for ns in [&ns_a, &ns_b] {
            agent_sa(&cluster, ns.name()).await;
        }
        let shared = guid(&format!("race-{round}"));
        let (a, b) = (ns_a.name().to_string(), ns_b.name().to_string());
        let spec_a = pool_spec("team-a", &shared, &guid("t"), &a, "Enforce");
        let spec_b = pool_spec("team-b", &shared, &guid("t"), &b, "Enforce");
        // Registered for deletion first, then created concurrently.
        pools.track(&a);
        pools.track(&b);
        let objects = [Pools::object(&a, spec_a), Pools::object(&b, spec_b)];
        let post = PostParams::default();
        let (ra, rb) = tokio::join!(
            pools.api.create(&post, &objects[0]),
            pools.api.create(&post, &objects[1]),
        );
        let mut created: Vec<DynamicObject> = [ra, rb].into_iter().filter_map(Result::ok).collect();
        assert!(
            !created.is_empty(),
            "round {round}: neither pool was admitted"
        );
        created.sort_by_key(age);
        let older = created[0].metadata.name.clone().unwrap();
        wait_pool_scoped(&cluster, &older).await.unwrap();
        // The older (or only) pool's agent gets its identity, now and after the index saw both.
        let mut n = 0;
        let pod = poll(
            "the older pool's agent is admitted",
            Duration::from_secs(20),
            || {
                n += 1;
                let (cluster, older) = (&cluster, older.clone());
                async move {
                    Ok(create_agent(cluster, &older, &format!("agent-{n}"))
                        .await
                        .ok())
                }
            },
        )
        .await
        .unwrap();
        assert_eq!(
            pods::env_value(
                pods::container(pods::spec(&pod), "agent"),
                "AZURE_CLIENT_ID"
            ),
            Some(shared.as_str())
        );
        if created.len() == 2 {
            both_admitted += 1;
            let newer = created[1].metadata.name.clone().unwrap();
            let mut n = 0;
            let message = poll(
                "the newer pool's agent is denied",
                Duration::from_secs(20),
                || {
                    n += 1;
                    let (cluster, newer) = (&cluster, newer.clone());
                    async move {
                        Ok(
                            match create_agent(cluster, &newer, &format!("agent-{n}")).await {
                                Err(kube::Error::Api(s)) if s.code == 403 => Some(s.message),
                                _ => None,
                            },
                        )
                    }
                },
            )
            .await
            .unwrap();
            assert!(message.contains("[pool-conflict]"), "{message}");
            create_agent(&cluster, &older, "agent-after")
                .await
                .expect("the older pool keeps working while the newer one exists");
        }
    }
    eprintln!("both pools admitted in {both_admitted} of 8 rounds");
}

#[tokio::test]
async fn a_pool_cannot_name_a_namespace_the_webhook_does_not_guard() {
    let cluster = cluster().await;
    let mut pools = Pools::new(&cluster);
    let ignored = cluster.namespace("reserved-ign").await;
    Api::<Namespace>::all(cluster.client.clone())
        .patch(
            ignored.name(),
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"wi-webhook.dev/ignore": "true"}}})),
        )
        .await
        .unwrap();
    for (name, ns) in [
        (format!("{}-ks", ignored.name()), "kube-system"),
        (format!("{}-ig", ignored.name()), ignored.name()),
    ] {
        let err = pools
            .create(
                &name,
                pool_spec("team-r", &guid(&name), &guid("t"), ns, "Enforce"),
            )
            .await
            .unwrap_err();
        let kube::Error::Api(status) = err else {
            panic!("{err}")
        };
        assert_eq!(status.code, 403, "{status:?}");
        assert!(
            status.message.contains("[pool-reserved-namespace]"),
            "{ns}: {}",
            status.message
        );
    }
}

#[tokio::test]
async fn a_pools_namespace_cannot_be_labelled_ignored() {
    let cluster = cluster().await;
    let ns = cluster.namespace("pool-ign").await;
    let mut pools = Pools::new(&cluster);
    pools
        .create(
            ns.name(),
            pool_spec("team-i", &guid("ign"), &guid("t"), ns.name(), "Enforce"),
        )
        .await
        .unwrap();
    wait_pool_scoped(&cluster, ns.name()).await.unwrap();
    let label = |value: &str| {
        let cluster = &cluster;
        let ns = ns.name().to_string();
        let value = value.to_string();
        async move {
            cluster
                .kubectl(
                    &[
                        "label",
                        "namespace",
                        &ns,
                        &format!("wi-webhook.dev/ignore={value}"),
                        "--overwrite",
                    ],
                    "",
                )
                .await
                .unwrap()
        }
    };
    // A namespace administrator whom RBAC lets label the namespace is refused by the webhook.
    let user = format!("ns-admin-{}", ns.name());
    let rbac = format!(
        "apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: {user}}}
rules: [{{apiGroups: [\"\"], resources: [namespaces], resourceNames: [{ns}], verbs: [get, patch]}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: {user}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: {user}}}
subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: {user}}}]
",
        ns = ns.name()
    );
    cluster.apply_yaml("default", &rbac).await.unwrap();
    let as_admin = |label: &str| {
        let (cluster, ns, user, label) = (
            &cluster,
            ns.name().to_string(),
            user.clone(),
            label.to_string(),
        );
        async move {
            let args = [
                "label",
                "namespace",
                &ns,
                &label,
                "--overwrite",
                "--as",
                &user,
                "--as-group",
                "system:authenticated",
            ];
            cluster.kubectl(&args, "").await.unwrap()
        }
    };
    poll(
        "RBAC lets the namespace administrator label it",
        Duration::from_secs(10),
        || async { Ok(as_admin("team=i").await.success.then_some(())) },
    )
    .await
    .unwrap();
    let out = as_admin("wi-webhook.dev/ignore=true").await;
    assert!(!out.success, "labelled: {}", out.stdout);
    assert!(
        out.stderr.contains("[pool-namespace-ignored]"),
        "{}",
        out.stderr
    );
    let _ = cluster
        .kubectl(
            &[
                "delete",
                "clusterrole,clusterrolebinding",
                &user,
                "--ignore-not-found",
            ],
            "",
        )
        .await;
    // Nor may the cluster administrator.
    let out = label("true").await;
    assert!(!out.success, "labelled: {}", out.stdout);
    assert!(
        out.stderr.contains("[pool-namespace-ignored]"),
        "{}",
        out.stderr
    );
    // Any other value does not opt the namespace out, and is allowed.
    assert!(label("false").await.success);
    // Once the namespace is no pool's, it may be ignored.
    pools
        .api
        .delete(ns.name(), &Default::default())
        .await
        .unwrap();
    poll(
        "the namespace may be ignored",
        Duration::from_secs(20),
        || async { Ok(label("true").await.success.then_some(())) },
    )
    .await
    .unwrap();
}
