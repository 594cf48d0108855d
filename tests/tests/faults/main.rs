//! Faults through the real control plane (docs/reliability.md, "Faults"): the API server
//! stopped for 30 s, SIGTERM under load, the webhook down under failurePolicy Fail (and the
//! pool checks failing closed in pools' namespaces only), and a flood beyond the webhook's
//! capacity.
//!
//! They stop the API server or the webhook, so each test starts a control plane of its own
//! (`wi_e2e::private_cluster`: `run.sh up` in a temporary directory, its own ports) and runs
//! the webhook as its child process; the shared control plane of the other tests is never
//! touched. Everything is stopped when the test ends, a failure included.

mod flood;
mod outage;
mod pool_scope;
mod sigterm;
mod webhook_down;

use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{Api, ListParams, PostParams};
use wi_e2e::admission_client::{self, Answer, Connection};
use wi_e2e::pods::{self, Identity, USE_LABEL, WEBHOOK_TENANT_ID};
use wi_e2e::private_cluster::PrivateCluster;
use wi_e2e::{TestNamespace, poll};

/// The client id of the ServiceAccount `agent` of every test's namespace.
const CLIENT_ID: &str = "f1f1f1f1-0000-4000-8000-000000000001";
/// The message the API server gives for a pod it could not get past the webhook.
const FAILED_CALLING: &str = "failed calling webhook \"pods.wi-webhook.dev\"";

/// A namespace with the ServiceAccount `agent` (client id [`CLIENT_ID`]), once the webhook
/// answers reviews for it with that identity.
async fn namespace_with_agent(private: &PrivateCluster, prefix: &str) -> TestNamespace {
    let cluster = &private.cluster;
    let ns = cluster.namespace(prefix).await;
    Api::<ServiceAccount>::namespaced(cluster.client.clone(), ns.name())
        .create(
            &PostParams::default(),
            &pods::service_account("agent", CLIENT_ID, None),
        )
        .await
        .expect("ServiceAccount created");
    let (addr, tls) = (private.webhook_addr(), private.webhook_tls());
    poll(
        "the webhook injects the agent's identity",
        Duration::from_secs(30),
        || async {
            let mut conn = Connection::open(&addr, tls.clone()).await?;
            let answer = conn.send("/mutate", &review("warm-up", ns.name())).await?;
            Ok(check(&answer, "warm-up", Some(CLIENT_ID)).ok())
        },
    )
    .await
    .unwrap();
    ns
}

/// The review of a labelled pod of ServiceAccount `agent` in `ns`.
fn review(uid: &str, ns: &str) -> Vec<u8> {
    admission_client::pod_review(uid, ns, &pods::labelled_pod_json("", "agent", &[]))
}

/// A 200 with the uid echoed, allowed, with a patch injecting `client_id`.
fn check(answer: &Answer, uid: &str, client_id: Option<&str>) -> Result<(), String> {
    admission_client::check_mutated(answer.status, &answer.body, uid)?;
    let injected = admission_client::injected_client_id(&answer.body);
    if injected.as_deref() != client_id {
        return Err(format!(
            "injected client id {injected:?}, expected {client_id:?}"
        ));
    }
    Ok(())
}

/// Creates the labelled pod `name` of ServiceAccount `sa` through the API server.
async fn create_pod(private: &PrivateCluster, ns: &str, name: &str, sa: &str) -> kube::Result<Pod> {
    Api::<Pod>::namespaced(private.cluster.client.clone(), ns)
        .create(&PostParams::default(), &pods::labelled_pod(name, sa, &[]))
        .await
}

/// The agent's identity with the webhook's tenant.
fn agent_identity(client_id: &str) -> Identity<'_> {
    Identity {
        client_id: Some(client_id),
        tenant_id: WEBHOOK_TENANT_ID,
    }
}

/// Every labelled pod stored in `ns` carries the whole mutation (nothing half-mutated);
/// their number.
async fn assert_stored_pods_mutated(private: &PrivateCluster, ns: &str) -> usize {
    let list = Api::<Pod>::namespaced(private.cluster.client.clone(), ns)
        .list(&ListParams::default().labels(&format!("{USE_LABEL}=true")))
        .await
        .expect("listing pods");
    for pod in &list.items {
        let client_id = pods::env_value(
            pods::spec(pod).containers.first().expect("a container"),
            "AZURE_CLIENT_ID",
        )
        .unwrap_or_else(|| panic!("pod {:?} stored without its identity", pod.metadata.name));
        pods::assert_mutated(pod, agent_identity(client_id), 3600);
    }
    list.items.len()
}
