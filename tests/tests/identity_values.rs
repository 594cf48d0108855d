//! Client ids and env read as Azure and the kubelet read them, through the real API server:
//! a pool's identity spelled another way, built by `$(VAR)` expansion or read from the pod's
//! own annotation is still that pool's identity, and a pool's pod cannot send its token to
//! another authority host.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use wi_e2e::agentpools::{Pools, guid, pool_spec, wait_pool_scoped};
use wi_e2e::pods;
use wi_e2e::{Cluster, cluster};

/// An unlabelled pod whose one container has `env`; `annotations` on the pod.
fn pod(name: &str, service_account: &str, env: Value, annotations: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": annotations},
        "spec": {
            "serviceAccountName": service_account,
            "automountServiceAccountToken": false,
            "containers": [{"name": "app", "image": "registry.invalid/app:1", "env": env}],
        },
    }))
    .expect("a Pod")
}

async fn create(cluster: &Cluster, ns: &str, pod: &Pod) -> kube::Result<Pod> {
    Api::<Pod>::namespaced(cluster.client.clone(), ns)
        .create(&PostParams::default(), pod)
        .await
}

/// Refused by the webhook with `rule` in the message.
#[track_caller]
fn assert_refused(result: kube::Result<Pod>, rule: &str, case: &str) {
    let denial = pods::webhook_denial(result);
    assert_eq!(denial.status.code, 403, "{case}: {denial:?}");
    assert!(
        denial.message.contains(&format!("[{rule}]")),
        "{case}: expected [{rule}]: {}",
        denial.message
    );
}

#[tokio::test]
async fn a_pools_identity_in_any_spelling_is_refused_outside_the_pool() {
    let cluster = cluster().await;
    let pool_ns = cluster.namespace("idv-pool").await;
    let elsewhere = cluster.namespace("idv-else").await;
    let id = guid("idv");
    let mut pools = Pools::new(&cluster);
    pools
        .create(
            pool_ns.name(),
            pool_spec("team-v", &id, &guid("t"), pool_ns.name(), "Enforce"),
        )
        .await
        .unwrap();
    wait_pool_scoped(&cluster, pool_ns.name()).await.unwrap();

    let upper = id.to_uppercase();
    let cases: Vec<(&str, Value, Value)> = vec![
        (
            "braces",
            json!([{"name": "AZURE_CLIENT_ID", "value": format!("{{{id}}}")}]),
            json!({}),
        ),
        (
            "parentheses",
            json!([{"name": "AZURE_CLIENT_ID", "value": format!("({upper})")}]),
            json!({}),
        ),
        (
            "no-hyphens",
            json!([{"name": "AZURE_CLIENT_ID", "value": id.replace('-', "")}]),
            json!({}),
        ),
        (
            "urn",
            json!([{"name": "AZURE_CLIENT_ID", "value": format!("urn:uuid:{id}")}]),
            json!({}),
        ),
        (
            "zero-width",
            json!([{"name": "AZURE_CLIENT_ID", "value": format!("{id}\u{200B}")}]),
            json!({}),
        ),
        (
            "expansion",
            json!([{"name": "X", "value": id}, {"name": "AZURE_CLIENT_ID", "value": "$(X)"}]),
            json!({}),
        ),
        (
            "field-ref",
            json!([{"name": "AZURE_CLIENT_ID",
                    "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['id']"}}}]),
            json!({"id": id}),
        ),
        (
            "last-wins",
            json!([{"name": "AZURE_CLIENT_ID", "value": ""}, {"name": "AZURE_CLIENT_ID", "value": id}]),
            json!({}),
        ),
    ];
    for (case, env, annotations) in cases {
        let result = create(
            &cluster,
            elsewhere.name(),
            &pod(case, "default", env, annotations),
        )
        .await;
        assert_refused(result, "identity-of-another-pool", case);
    }
    // What only looks like the identity is no identity: `$$(X)` is the literal text `$(X)`.
    let literal =
        json!([{"name": "X", "value": id}, {"name": "AZURE_CLIENT_ID", "value": "$$(X)"}]);
    create(
        &cluster,
        elsewhere.name(),
        &pod("escaped", "default", literal, json!({})),
    )
    .await
    .expect("an escaped reference names no identity");
}

#[tokio::test]
async fn a_pools_pod_keeps_its_token_and_its_client_id_readable() {
    let cluster = cluster().await;
    let ns = cluster.namespace("idv-own").await;
    let id = guid("own");
    let mut pools = Pools::new(&cluster);
    pools
        .create(
            ns.name(),
            pool_spec("team-w", &id, &guid("t"), ns.name(), "Enforce"),
        )
        .await
        .unwrap();
    Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(
        cluster.client.clone(),
        ns.name(),
    )
    .create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "agent"}})).unwrap(),
    )
    .await
    .unwrap();
    wait_pool_scoped(&cluster, ns.name()).await.unwrap();

    let evil = json!([{"name": "AZURE_AUTHORITY_HOST", "value": "https://login.evil.example/"}]);
    assert_refused(
        create(
            &cluster,
            ns.name(),
            &pod("evil-host", "agent", evil, json!({})),
        )
        .await,
        "identity-env-override",
        "authority host",
    );
    let via_ref = json!([
        {"name": "H", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
        {"name": "AZURE_AUTHORITY_HOST", "value": "$(H)"},
    ]);
    assert_refused(
        create(
            &cluster,
            ns.name(),
            &pod("ref-host", "agent", via_ref, json!({})),
        )
        .await,
        "identity-env-reference",
        "authority host from a Secret",
    );
    for (case, value) in [
        ("zero-width", format!("{id}\u{200B}")),
        ("not-a-guid", "pool".to_string()),
    ] {
        let env = json!([{"name": "AZURE_CLIENT_ID", "value": value}]);
        assert_refused(
            create(&cluster, ns.name(), &pod(case, "agent", env, json!({}))).await,
            "identity-client-id-format",
            case,
        );
    }
    // The pool's own id in another spelling, and the authority host the webhook injects:
    // the pool's own agent is admitted.
    let own = json!([
        {"name": "AZURE_CLIENT_ID", "value": format!("{{{}}}", id.to_uppercase())},
        {"name": "AZURE_AUTHORITY_HOST", "value": "https://login.microsoftonline.com/"},
    ]);
    create(&cluster, ns.name(), &pod("own", "agent", own, json!({})))
        .await
        .expect("the pool's own id in braces is the pool's");
}
