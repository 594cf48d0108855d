//! The mutation as the API server stores it: the seed's agent pool through its Deployment,
//! pods the webhook must not touch, and a field newer than the webhook's Kubernetes types.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::ApiResource;
use serde_json::json;
use wi_e2e::pods::*;

const SEED_CLIENT_ID: &str = "6f1a3f4e-2b7c-4f0e-9a51-3c2d1e0f9a8b";
const SEED_TENANT_ID: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const SEED_AGENT: &str = "ado-agent-omtest1";

/// The mutation on the example agent pool: `examples/seed-agent.yaml` applied as written
/// (in the test's namespace), Deployment -> ReplicaSet -> Pod, and the stored pod is the
/// one a mutated agent pod must look like, with the native sidecar of a 1.34 server.
#[tokio::test]
async fn seed_agent_pool_pod_gets_the_full_mutation() {
    let cluster = wi_e2e::cluster().await;
    let ns = cluster.namespace("e2e-seed").await;
    let manifests = seed_manifests(&ns.name).unwrap();
    assert!(
        !manifests.contains("ado-agents-omtest1") && !manifests.contains("kind: Namespace"),
        "the seed's namespace must be rewritten: {manifests}"
    );
    cluster.apply_yaml(&ns.name, &manifests).await.unwrap();

    let pod = cluster
        .wait_for_pod(
            &ns.name,
            &format!("app={SEED_AGENT}"),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    let owner = &pod.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        owner.kind, "ReplicaSet",
        "created by the ReplicaSet controller"
    );
    let spec = spec(&pod);

    // Proxy init container first, then the native sidecar (1.34 server); the agent alone in
    // containers.
    assert_eq!(
        container_names(spec),
        (vec![PROXY_INIT, PROXY], vec![SEED_AGENT])
    );
    let identity = Identity {
        client_id: Some(SEED_CLIENT_ID),
        tenant_id: SEED_TENANT_ID,
    };
    assert_mutated(&pod, identity, 3600);

    let init = &spec.init_containers.as_ref().unwrap()[0];
    assert_eq!(init.image.as_deref(), Some(PROXY_INIT_IMAGE));
    assert_eq!(init.image_pull_policy.as_deref(), Some("IfNotPresent"));
    assert_eq!(init.restart_policy, None, "a plain init container");
    assert_eq!(env_names(init)[0], "PROXY_PORT");
    assert_eq!(env_value(init, "PROXY_PORT"), Some("8000"));
    let security = init.security_context.as_ref().unwrap();
    let caps = security.capabilities.as_ref().unwrap();
    assert_eq!(caps.add.as_deref(), Some(&["NET_ADMIN".to_owned()][..]));
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_owned()][..]));
    assert_eq!(security.privileged, Some(true));
    assert_eq!(security.run_as_non_root, Some(false));
    assert_eq!(security.run_as_user, Some(0));

    let proxy = &spec.init_containers.as_ref().unwrap()[1];
    assert_eq!(
        proxy.restart_policy.as_deref(),
        Some("Always"),
        "native sidecar"
    );
    assert_eq!(proxy.image.as_deref(), Some(PROXY_IMAGE));
    assert_eq!(proxy.image_pull_policy.as_deref(), Some("IfNotPresent"));
    assert_eq!(
        proxy.args.as_deref(),
        Some(
            &[
                "--proxy-port=8000".to_owned(),
                "--log-level=info".to_owned()
            ][..]
        )
    );
    let ports: Vec<i32> = proxy
        .ports
        .iter()
        .flatten()
        .map(|p| p.container_port)
        .collect();
    assert_eq!(ports, [8000]);
    let post_start = proxy
        .lifecycle
        .as_ref()
        .and_then(|l| l.post_start.as_ref())
        .and_then(|h| h.exec.as_ref())
        .and_then(|e| e.command.clone())
        .unwrap_or_default();
    assert_eq!(
        post_start,
        ["/proxy", "--proxy-port=8000", "--probe", "--log-level=info"]
    );
    let security = proxy.security_context.as_ref().unwrap();
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(security.privileged, Some(false));
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.run_as_non_root, Some(true));
    let caps = security.capabilities.as_ref().unwrap();
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_owned()][..]));

    // The agent keeps what it had and gets exactly the identity env and the mount.
    let agent = &spec.containers[0];
    assert_eq!(
        agent.image.as_deref(),
        Some("example.azurecr.io/ado-agent:latest")
    );
    let env_from = agent.env_from.as_deref().unwrap_or_default();
    assert_eq!(env_from.len(), 1, "{env_from:?}");
    assert_eq!(
        env_from[0].secret_ref.as_ref().map(|s| s.name.as_str()),
        Some(SEED_AGENT)
    );
    assert_eq!(env_names(agent), AZURE_ENV);
    let mounts: Vec<(&str, &str, Option<bool>)> = agent
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| (m.name.as_str(), m.mount_path.as_str(), m.read_only))
        .collect();
    assert_eq!(
        mounts,
        [
            ("temp-data", "/mnt/work", None),
            (TOKEN_VOLUME, TOKEN_MOUNT_PATH, Some(true))
        ]
    );
    let limits = agent.resources.as_ref().unwrap().limits.as_ref().unwrap();
    assert_eq!(limits["memory"].0, "2Gi");

    let volumes: Vec<&str> = spec
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(volumes, ["temp-data", TOKEN_VOLUME]);
    assert_eq!(spec.service_account_name.as_deref(), Some(SEED_AGENT));
    assert_eq!(spec.automount_service_account_token, Some(false));
}

/// The pod the unlabelled-pod test sends; `labels` decides whether the webhook is called.
fn plain_pod(name: &str, labels: serde_json::Value) -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {INJECT_PROXY_ANNOTATION: "true"},
        },
        "spec": {
            "serviceAccountName": "agent",
            "automountServiceAccountToken": false,
            "initContainers": [{
                "name": "setup",
                "image": "registry.invalid/setup:1",
                "env": [{"name": "STEP", "value": "1"}],
            }],
            "containers": [{
                "name": "agent",
                "image": "registry.invalid/agent:1",
                "env": [{"name": "FOO", "value": "bar"}],
                "volumeMounts": [{"name": "work", "mountPath": "/work"}],
            }],
            "volumes": [{"name": "work", "emptyDir": {}}],
        },
    })
}

/// Pods without `azure.workload.identity/use: "true"` are stored as sent (apart from the
/// API server's defaults), though their ServiceAccount has an identity and they ask for the
/// proxy; the same pod labelled is mutated, so the comparison means something.
#[tokio::test]
async fn unlabelled_pods_are_stored_as_sent() {
    let cluster = wi_e2e::cluster().await;
    let ns = cluster.namespace("e2e-unlabelled").await;
    let sas = Api::<ServiceAccount>::namespaced(cluster.client.clone(), &ns.name);
    sas.create(
        &PostParams::default(),
        &service_account("agent", "11111111-1111-1111-1111-111111111111", None),
    )
    .await
    .unwrap();
    let pods = Api::<Pod>::namespaced(cluster.client.clone(), &ns.name);

    for (name, labels) in [
        ("no-labels", json!({})),
        ("other-label", json!({"app": "agent"})),
        ("use-false", json!({USE_LABEL: "false"})),
    ] {
        let sent: Pod = serde_json::from_value(plain_pod(name, labels)).unwrap();
        let stored = pods.create(&PostParams::default(), &sent).await.unwrap();
        let stored = pods.get(&stored.metadata.name.unwrap()).await.unwrap();
        assert_not_mutated(&stored);
        let (sent, stored) = (spec(&sent), spec(&stored));
        assert_eq!(container_names(stored), container_names(sent), "{name}");
        for (s, t) in all_containers(sent).zip(all_containers(stored)) {
            assert_eq!(t.image, s.image, "{name}");
            assert_eq!(t.env, s.env, "{name}: env of {}", s.name);
            assert_eq!(t.env_from, s.env_from, "{name}: envFrom of {}", s.name);
            assert_eq!(
                t.volume_mounts, s.volume_mounts,
                "{name}: mounts of {}",
                s.name
            );
        }
        assert_eq!(stored.volumes, sent.volumes, "{name}: volumes");
    }

    // Control: labelled, the same pod is mutated.
    let mut labelled = plain_pod("labelled", json!({USE_LABEL: "true"}));
    labelled["metadata"]["name"] = "labelled".into();
    let sent: Pod = serde_json::from_value(labelled).unwrap();
    let stored = pods.create(&PostParams::default(), &sent).await.unwrap();
    let identity = Identity {
        client_id: Some("11111111-1111-1111-1111-111111111111"),
        tenant_id: WEBHOOK_TENANT_ID,
    };
    assert_mutated(&stored, identity, 3600);
    assert_eq!(
        container_names(spec(&stored)),
        (vec![PROXY_INIT, PROXY, "setup"], vec!["agent"])
    );
}

/// The webhook is built against Kubernetes 1.33 types and the test API server is
/// 1.34 with the alpha field `spec.hostnameOverride` enabled (run.sh). A labelled pod that
/// sets it is mutated and keeps it: the patch is computed on the raw JSON, never by a round
/// trip through types that would drop the field.
#[tokio::test]
async fn pod_field_newer_than_the_webhook_types_survives_the_mutation() {
    let cluster = wi_e2e::cluster().await;
    let ns = cluster.namespace("e2e-newer-field").await;
    let sas = Api::<ServiceAccount>::namespaced(cluster.client.clone(), &ns.name);
    sas.create(
        &PostParams::default(),
        &service_account("agent", "22222222-2222-2222-2222-222222222222", None),
    )
    .await
    .unwrap();

    let resource = ApiResource::erase::<Pod>(&());
    let pods = Api::<DynamicObject>::namespaced_with(cluster.client.clone(), &ns.name, &resource);
    let with_field = |name: &str, labelled: bool| {
        let mut pod = labelled_pod_json(name, "agent", &[]);
        pod["spec"]["hostnameOverride"] = "agent-host".into();
        if !labelled {
            pod["metadata"]["labels"] = json!({});
        }
        serde_json::from_value::<DynamicObject>(pod).unwrap()
    };

    // Control: unlabelled, the webhook does not mutate it, and the API server keeps the
    // field (else the feature gate is off and the test proves nothing).
    pods.create(&PostParams::default(), &with_field("control", false))
        .await
        .unwrap();
    let control = serde_json::to_value(pods.get("control").await.unwrap()).unwrap();
    assert_eq!(
        control["spec"]["hostnameOverride"], "agent-host",
        "the API server drops spec.hostnameOverride: is --feature-gates=HostnameOverride=true \
         on kube-apiserver (run.sh)?"
    );

    pods.create(&PostParams::default(), &with_field("newer-field", true))
        .await
        .unwrap();
    let stored = serde_json::to_value(pods.get("newer-field").await.unwrap()).unwrap();
    assert_eq!(
        stored["spec"]["hostnameOverride"], "agent-host",
        "the mutation dropped spec.hostnameOverride: {stored:#}"
    );
    let typed: Pod = serde_json::from_value(stored.clone()).unwrap();
    let identity = Identity {
        client_id: Some("22222222-2222-2222-2222-222222222222"),
        tenant_id: WEBHOOK_TENANT_ID,
    };
    assert_mutated(&typed, identity, 3600);

    // Proof that the field is unknown to the webhook's Kubernetes types: a typed round trip
    // drops it (what the webhook would have done had it patched through typed structs).
    let round_trip = serde_json::to_value(&typed).unwrap();
    assert!(
        round_trip["spec"].get("hostnameOverride").is_none(),
        "k8s-openapi knows spec.hostnameOverride: pick a field newer than its feature"
    );
}
