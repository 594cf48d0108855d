//! The API server stops for 30 s: the webhook keeps deciding from its caches, stays up and
//! ready, and afterwards sees what changed without a restart.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::json;
use wi_e2e::admission_client::Connection;
use wi_e2e::pods::{self, CLIENT_ID_ANNOTATION};
use wi_e2e::poll;
use wi_e2e::private_cluster::PrivateCluster;

use super::*;

const OUTAGE: Duration = Duration::from_secs(30);
const NEW_CLIENT_ID: &str = "f1f1f1f1-0000-4000-8000-000000000002";
const POOL_CLIENT_ID: &str = "f1f1f1f1-0000-4000-8000-000000000003";
const POOL_TENANT_ID: &str = "f1f1f1f1-0000-4000-8000-0000000000aa";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_outage_admissions_continue_from_the_cache() {
    let mut private = PrivateCluster::start(&[]).await;
    let ns = namespace_with_agent(&private, "outage").await;
    // A second namespace whose ServiceAccount names no identity: an AgentPool created after
    // the outage gives it one.
    let pool_ns = private.cluster.namespace("outage-pool").await;
    Api::<ServiceAccount>::namespaced(private.cluster.client.clone(), pool_ns.name())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "agent"}})).unwrap(),
        )
        .await
        .unwrap();
    let pid = private.webhook_pid();
    let webhook = private.webhook();
    let (addr, tls) = (private.webhook_addr(), private.webhook_tls());

    private.run(&["stop", "kube-apiserver"]).await.unwrap();
    let down = Instant::now();
    assert!(
        private.cluster.client.apiserver_version().await.is_err(),
        "the API server still answers"
    );

    // Reviews straight to the webhook, readiness and the process, for the whole outage.
    let mut conn = Connection::open(&addr, tls.clone()).await.unwrap();
    let (mut reviews, mut ready_checks) = (0, 0);
    let mut next_ready_check = Instant::now();
    while down.elapsed() < OUTAGE {
        reviews += 1;
        let uid = format!("outage-{reviews}");
        let answer = tokio::time::timeout(
            Duration::from_secs(5),
            conn.send("/mutate", &review(&uid, ns.name())),
        )
        .await
        .unwrap_or_else(|_| panic!("review {uid}: no answer within 5 s"))
        .unwrap_or_else(|e| panic!("review {uid}: {e:#}"));
        check(&answer, &uid, Some(CLIENT_ID)).unwrap_or_else(|e| panic!("review {uid}: {e}"));
        if Instant::now() >= next_ready_check {
            assert_eq!(
                webhook.get("/readyz").await.unwrap().0,
                200,
                "/readyz during the outage ({:?} in)",
                down.elapsed()
            );
            assert_eq!(private.webhook_exited(), None, "the webhook exited");
            ready_checks += 1;
            next_ready_check += Duration::from_secs(1);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(reviews >= 100, "only {reviews} reviews in {OUTAGE:?}");
    assert!(ready_checks >= 25, "only {ready_checks} readiness checks");

    private
        .run(&["start", "kube-apiserver"])
        .await
        .expect("the API server back");
    // Changes made once it is back: a new client id on the ServiceAccount, a new AgentPool.
    Api::<ServiceAccount>::namespaced(private.cluster.client.clone(), ns.name())
        .patch(
            "agent",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {CLIENT_ID_ANNOTATION: NEW_CLIENT_ID}}}),
            ),
        )
        .await
        .unwrap();
    let pools = Api::<DynamicObject>::all_with(
        private.cluster.client.clone(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("wi-webhook.dev", "v1alpha1", "AgentPool"),
            "agentpools",
        ),
    );
    let pool: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "wi-webhook.dev/v1alpha1",
        "kind": "AgentPool",
        "metadata": {"name": "after-outage"},
        "spec": {
            "team": "after-outage",
            "identity": {"clientId": POOL_CLIENT_ID, "tenantId": POOL_TENANT_ID},
            "namespaces": [pool_ns.name()],
            "serviceAccounts": ["agent"],
            "enforcement": "Enforce",
            // The test creates the pool's pods directly, as the admin.
            "access": {"podCreators": [{"kind": "User", "name": "admin"}]},
        },
    }))
    .unwrap();
    pools.create(&PostParams::default(), &pool).await.unwrap();

    // The watches reconnect with back-off (up to 30 s between attempts): the new state
    // reaches the next pods 35 to 45 s after the API server returned, in the same process.
    let back = Instant::now();
    identity_reaches_new_pods(&private, ns.name(), NEW_CLIENT_ID).await;
    identity_reaches_new_pods(&private, pool_ns.name(), POOL_CLIENT_ID).await;
    let pod = create_pod(&private, ns.name(), "after", "agent")
        .await
        .unwrap();
    pods::assert_mutated(&pod, agent_identity(NEW_CLIENT_ID), 3600);
    let pool_pod = create_pod(&private, pool_ns.name(), "pooled", "agent")
        .await
        .unwrap();
    pods::assert_mutated(
        &pool_pod,
        pods::Identity {
            client_id: Some(POOL_CLIENT_ID),
            tenant_id: POOL_TENANT_ID,
        },
        3600,
    );
    eprintln!(
        "outage: {reviews} reviews answered from the cache in {OUTAGE:?}; changes seen {:?} after the API server returned",
        back.elapsed()
    );
    assert_eq!(private.webhook_exited(), None, "the webhook exited");
    assert_eq!(private.webhook_pid(), pid, "the webhook was restarted");
    assert_eq!(webhook.get("/readyz").await.unwrap().0, 200);
}

/// Waits (90 s at most) until a pod of ServiceAccount `agent` created in `ns` gets
/// `client_id`; server-side dry runs, so the misses store nothing.
async fn identity_reaches_new_pods(private: &PrivateCluster, ns: &str, client_id: &str) {
    let api =
        Api::<k8s_openapi::api::core::v1::Pod>::namespaced(private.cluster.client.clone(), ns);
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    poll(
        &format!("a new pod in {ns} gets client id {client_id}"),
        Duration::from_secs(90),
        || async {
            let pod = api
                .create(&dry_run, &pods::labelled_pod("probe", "agent", &[]))
                .await?;
            let agent = pods::container(pods::spec(&pod), "agent");
            if pods::env_value(agent, "AZURE_CLIENT_ID") == Some(client_id) {
                return Ok(Some(()));
            }
            tokio::time::sleep(Duration::from_millis(400)).await;
            Ok(None)
        },
    )
    .await
    .unwrap();
}
